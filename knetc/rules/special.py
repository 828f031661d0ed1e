"""Rules for special functions: knetc's own ``erf`` and ``gelu`` (knetc.runtime.prims, no SciPy
needed) and, when SciPy imports, ``scipy.special``'s erf, erfc, erfinv, ndtr, log_ndtr, expit,
log_expit, logit, logsumexp, softmax, log_softmax, gammaln, digamma (psi), polygamma, xlogy and
xlog1py.

SciPy stays optional: without it this module registers knetc's two rules and nothing else.
Every derivative below is written with functions that have rules themselves (digamma's is
polygamma(1, x), polygamma(n, x)'s is polygamma(n + 1, x)), so gradients of gradients work.

Where a derivative is not defined the formulas are JAX's (``jax.scipy.special``) as written:
``xlogy(x1, x2)``'s gradient is ``(log x2, x1 / x2)``, so at ``xlogy(0, 0) = 0`` it is
``(-inf, nan)`` (likewise xlog1py at x2 = -1); logit's is infinite at 0 and 1. digamma's and
polygamma's derivatives are computed by scipy in float64 and cast back to the input's dtype.
"""
import math

import numpy as np

from ..runtime import prims as P
from .registry import adjoint, static, unbroadcast
from .support import refuse, shape_of, sum_to_shape

# d[...] is the template language's gradient table (see registry.py), never a Python name.
# ruff: noqa: F821

_TWO_OVER_SQRT_PI = 2 / math.sqrt(math.pi)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)
_SQRT_HALF = math.sqrt(0.5)
_TANH_SCALE, _TANH_CUBIC = math.sqrt(2 / math.pi), 0.044715   # gelu's tanh form (prims.gelu)


# ---------------------------------------------------------------------------------------------
# knetc.erf and knetc.gelu

@adjoint(P.erf)
def erf(y, x):
    d[x] = d[y] * (static(_TWO_OVER_SQRT_PI) * np.exp(-(x * x)))


@adjoint(P.gelu)
def gelu(y, x, approximate="none"):
    if approximate == "tanh":   # u = c (x + k x^3), y = x (1 + tanh u) / 2
        t = np.tanh(static(_TANH_SCALE) * (x + static(_TANH_CUBIC) * (x * x * x)))
        du = static(_TANH_SCALE) * (1 + static(3 * _TANH_CUBIC) * (x * x))
        d[x] = d[y] * (0.5 * (1 + t) + (0.5 * x) * ((1 - t * t) * du))
    else:                       # y = x Phi(x): Phi(x) + x phi(x)
        cdf = 0.5 + 0.5 * P.erf(x * static(_SQRT_HALF))
        d[x] = d[y] * (cdf + x * (static(_INV_SQRT_2PI) * np.exp(-0.5 * (x * x))))


# ---------------------------------------------------------------------------------------------
# scipy.special, only when SciPy imports

try:
    import scipy.special as sp
except ImportError:  # pragma: no cover - depends on the installation
    sp = None


def _lse_plain(b, return_sign):
    """Decided when code is generated: scipy's logsumexp without weights or sign output."""
    if return_sign:
        refuse("no gradient rule for scipy.special.logsumexp(..., return_sign=True)")
    return b is None


def _expand(axis, keepdims):
    """Decided when code is generated: must the reduced axes be put back (expand_dims)?"""
    return axis is not None and not keepdims


if sp is not None:
    @adjoint(sp.erf)
    def sp_erf(y, x):
        d[x] = d[y] * (static(_TWO_OVER_SQRT_PI) * np.exp(-(x * x)))

    @adjoint(sp.erfc)
    def sp_erfc(y, x):
        d[x] = d[y] * (static(-_TWO_OVER_SQRT_PI) * np.exp(-(x * x)))

    @adjoint(sp.erfinv)
    def sp_erfinv(y, x):
        d[x] = d[y] * (static(math.sqrt(math.pi) / 2) * np.exp(y * y))

    @adjoint(sp.ndtr)
    def sp_ndtr(y, x):
        d[x] = d[y] * (static(_INV_SQRT_2PI) * np.exp(-0.5 * (x * x)))

    @adjoint(sp.log_ndtr)
    def sp_log_ndtr(y, x):
        d[x] = d[y] * (static(_INV_SQRT_2PI) * np.exp(-0.5 * (x * x) - y))

    @adjoint(sp.expit)
    def sp_expit(y, x):
        d[x] = d[y] * (y * (1 - y))

    @adjoint(sp.log_expit)
    def sp_log_expit(y, x):
        d[x] = d[y] * sp.expit(-x)

    @adjoint(sp.logit)
    def sp_logit(y, x):
        d[x] = d[y] / (x * (1 - x))

    @adjoint(sp.gammaln)
    def sp_gammaln(y, x):
        d[x] = d[y] * sp.digamma(x)

    @adjoint(sp.digamma, sp.psi)
    def sp_digamma(y, x):   # polygamma computes in float64: cast back (float32 stays float32)
        d[x] = d[y] * sp.polygamma(1, x).astype(x.dtype)

    @adjoint(sp.polygamma)
    def sp_polygamma(y, n, x):
        d[x] = d[y] * sp.polygamma(n + 1, x).astype(x.dtype)

    @adjoint(sp.xlogy)
    def sp_xlogy(y, x1, x2):
        d[x1] = unbroadcast(d[y] * np.log(x2), x1)
        d[x2] = unbroadcast(d[y] * x1 / x2, x2)

    @adjoint(sp.xlog1py)
    def sp_xlog1py(y, x1, x2):
        d[x1] = unbroadcast(d[y] * np.log1p(x2), x1)
        d[x2] = unbroadcast(d[y] * x1 / (1 + x2), x2)

    @adjoint(sp.logsumexp)
    def sp_logsumexp(y, a, axis=None, b=None, keepdims=False, return_sign=False):
        if _expand(axis, keepdims):
            g = np.expand_dims(d[y], axis)
            p = np.exp(a - np.expand_dims(y, axis))
        else:
            g = d[y]
            p = np.exp(a - y)
        if _lse_plain(b, return_sign):
            d[a] = g * p
        else:   # y = log sum(b exp(a)): d[a] = g b exp(a - y), d[b] = g exp(a - y)
            d[a] = sum_to_shape(g * (b * p), static(shape_of(a)))
            d[b] = sum_to_shape(g * p, static(shape_of(b)))

    @adjoint(sp.softmax)
    def sp_softmax(y, x, axis=None):
        d[x] = y * (d[y] - np.sum(d[y] * y, axis=axis, keepdims=True))

    @adjoint(sp.log_softmax)
    def sp_log_softmax(y, x, axis=None):
        d[x] = d[y] - np.exp(y) * np.sum(d[y], axis=axis, keepdims=True)
