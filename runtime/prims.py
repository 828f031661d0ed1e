"""Knet's primitives as plain array functions (NumPy or CuPy, chosen by the argument's type).

Their derivatives live in knetc/rules/knet.py; the compiler treats each as one operation.
"""
from __future__ import annotations

import contextlib
import os
import threading

import numpy as np

from . import backend as _backend
from . import pool, rowkernels
from .backend import array_module

# Per-thread flags, private to this module: read them with training() / tracing(), set them with
# training_mode() / tracing_mode().
_state = threading.local()


def training() -> bool:
    """True while knetc is differentiating (or inside ``training_mode(True)``): dropout is active."""
    return bool(getattr(_state, "training", False))


def training_requested() -> bool | None:
    """The mode the user asked for with ``training_mode(flag)`` around this code, or None when
    nobody did: ``knetc.grad`` then trains (Knet's rule), and under ``training_mode(False)`` it
    gives eval-mode gradients (running moments used and kept, no dropout)."""
    return getattr(_state, "training", None)


@contextlib.contextmanager
def training_mode(flag: bool = True):
    """Turn training behaviour (dropout, batchnorm statistics) on or off in this thread."""
    old = getattr(_state, "training", None)
    _state.training = flag
    try:
        yield
    finally:
        _state.training = old


def tracing() -> bool:
    """True while knetc is specializing in this thread (inside ``tracing_mode(True)``).

    The specializer runs each primitive once to learn its result; the generated code then runs
    it again on every call. A primitive with a side effect (batchnorm's running moments) must
    skip it when ``tracing()`` is true, or the first call of ``knetc.grad`` would apply it twice.
    """
    return getattr(_state, "tracing", False)


class tracing_mode:
    """Mark this thread as specializing (``tracing()`` is ``flag``) in the block, then restore.

    For the compiler: wrap the run of a primitive whose result the specializer records (a class,
    not a generator: it is entered once per recorded operation).
    """
    __slots__ = ("flag", "old")

    def __init__(self, flag: bool = True):
        self.flag = flag

    def __enter__(self):
        self.old = getattr(_state, "tracing", False)
        _state.tracing = self.flag

    def __exit__(self, *exc):
        _state.tracing = self.old


def relu(x):
    """max(x, 0)."""
    return array_module(x).maximum(x, 0)


def sigm(x):
    """The logistic sigmoid 1 / (1 + exp(-x)), computed without overflow."""
    xp = array_module(x)
    return 0.5 * (xp.tanh(0.5 * x) + 1)


def elu(x, alpha=1.0):
    """x if x > 0 else alpha * (exp(x) - 1)."""
    xp = array_module(x)
    return xp.where(x > 0, x, alpha * xp.expm1(xp.minimum(x, 0)))


SELU_ALPHA, SELU_SCALE = 1.6732632423543772, 1.0507009873554805


def selu(x):
    """Scaled ELU (Klambauer et al. 2017)."""
    return SELU_SCALE * elu(x, SELU_ALPHA)


def logsumexp(x, axis=-1, keepdims=False):
    """log(sum(exp(x), axis)), stable. Knet's default reduces over the class axis (-1 here)."""
    xp = array_module(x)
    m = xp.max(x, axis=axis, keepdims=True)
    y = xp.log(xp.sum(xp.exp(x - m), axis=axis, keepdims=True)) + m
    return y if keepdims else xp.squeeze(y, axis=axis) if axis is not None else y.reshape(())


def _rows_fast(x, axis=-1) -> bool:
    """Does ``x`` take the one-kernel GPU code of ``rowkernels``? Only a CuPy array (never a
    NumPy one: the CPU code stays as it is), 2-D, C-contiguous, float32/float64, non-empty,
    reduced along its last axis, unless ``KNETC_ROWKERNELS=0``."""
    return (_backend.array_module(x) is not np and getattr(x, "ndim", 0) == 2
            and axis in (-1, 1) and x.dtype.char in rowkernels.REAL_CTYPES
            and x.flags.c_contiguous and x.size > 0
            and os.environ.get("KNETC_ROWKERNELS", "1") != "0")


# Rows of exp() computed at a time by _log_sum_exp: about this many numbers (256 KB of float32),
# so that the exponentials never make an array as large as the scores (a language model's
# (T*B, 10,001) scores are 144 MB: one pass and one fresh array fewer).
_LSE_BLOCK = 1 << 16


def _last_axis(x, axis) -> bool:
    """A NumPy array reduced along its last axis, C-contiguous: the blocked CPU code applies."""
    return type(x) is np.ndarray and x.ndim >= 1 and axis in (-1, x.ndim - 1) \
        and x.flags.c_contiguous and x.size > 0


def _log_sum_exp(z, m=None):
    """``log(sum(exp(z - m), axis=-1, keepdims=True))`` of a C-contiguous NumPy array (``m``:
    a row maximum, keepdims; None: z is already shifted), the exponentials computed a block of
    rows at a time into one small buffer (the same sums as NumPy's, row by row)."""
    k = z.shape[-1]
    z2 = z.reshape(-1, k)
    m2 = None if m is None else m.reshape(-1, 1)
    n = z2.shape[0]
    out = np.empty((n, 1), z.dtype)
    rows = max(1, _LSE_BLOCK // k)
    buf = np.empty((min(rows, n), k), z.dtype)
    for i in range(0, n, rows):
        blk = z2[i:i + rows]
        b = buf[:len(blk)]
        if m2 is None:
            np.exp(blk, out=b)
        else:
            np.subtract(blk, m2[i:i + rows], out=b)
            np.exp(b, out=b)
        np.sum(b, axis=1, keepdims=True, out=out[i:i + rows])
    np.log(out, out=out)
    return out.reshape(z.shape[:-1] + (1,))


def affine(a, b, c):
    """``a @ b + c`` in one array: the product's, ``c`` added into it. The compiler records a
    ``x @ W + b`` expression of NumPy float arrays so (compiler/tape.py): the product is a
    temporary nothing else reads, so its memory can take the sum (a language model's scores,
    (T*B, vocabulary), are then one array, not two). ``c`` broadcasts to the product's shape
    and has its type (the compiler checks both)."""
    y = pool.matmul(a, b)
    y += c
    return y


def logp(x, axis=-1):
    """Log-softmax: x - logsumexp(x) along ``axis`` (Knet's logp; classes on the last axis)."""
    if _rows_fast(x, axis):
        return rowkernels.logp_rows(x)
    xp = array_module(x)
    m = xp.max(x, axis=axis, keepdims=True)
    z = pool.binary(np.subtract, x, m) if type(x) is np.ndarray and x.nbytes >= pool.MIN_BYTES \
        else x - m
    if type(z) is np.ndarray:   # NumPy: in place, one new array fewer (large ones: blocked)
        z -= _log_sum_exp(z) if z.size > _LSE_BLOCK and _last_axis(z, axis) else \
            np.log(np.sum(np.exp(z), axis=axis, keepdims=True))
        return z
    return z - xp.log(xp.sum(xp.exp(z), axis=axis, keepdims=True))


LOGP_BACK_MIN = _LSE_BLOCK    # logp's gradient of arrays at least this large: logp_back


def logp_back(dy, y, axis=-1):
    """The gradient of logp's input, ``dy - exp(y) * sum(dy, axis)``, from the gradient ``dy``
    of its output ``y``. One new array; a large C-contiguous NumPy one is written a block of
    rows at a time (each block's exp, scale and difference in cache), not in three passes over
    three arrays as large as the scores."""
    xp = array_module(y)
    s = xp.sum(dy, axis=axis, keepdims=True)
    if not (_last_axis(y, axis) and type(dy) is np.ndarray and dy.shape == y.shape
            and dy.flags.c_contiguous):
        return dy - xp.exp(y) * s
    k = y.shape[-1]
    y2, dy2, s2 = y.reshape(-1, k), dy.reshape(-1, k), s.reshape(-1, 1)
    out = pool.empty(y2.shape, np.result_type(dy.dtype, y.dtype))
    _exp_scaled_rows(y2, s2, out, dy2)
    return out.reshape(y.shape)


def _exp_scaled_rows(y2, s2, out, dy2=None) -> None:
    """``out = exp(y2) * s2`` (``s2``: one factor per row), or ``dy2 - exp(y2) * s2`` when
    ``dy2`` is given, for 2-D NumPy arrays: a block of rows at a time, each block's exp, scale
    and difference done while it is in cache (one pass over ``out``, not three)."""
    rows = max(1, _LSE_BLOCK // y2.shape[1])
    for i in range(0, y2.shape[0], rows):
        o = out[i:i + rows]
        np.exp(y2[i:i + rows], out=o)
        o *= s2[i:i + rows]
        if dy2 is not None:
            np.subtract(dy2[i:i + rows], o, out=o)


def logp_back_picked(y, rows, cols, v, dtype, inplace=False):
    """``logp_back(dy, y)`` for a ``dy`` of ``dtype`` that is zeros but for ``v`` added at
    ``(rows, cols)``: the gradient of a log-softmax's entries picked by index
    (``logp(x)[np.arange(n), labels]``, a language model's loss), from the picks, with no dense
    ``dy`` (a zero fill and a read of an array as large as the scores). ``y`` is 2-D; the result
    equals logp_back's: ``-exp(y) * s`` (``s`` each row's sum of picks), ``v`` then added at its
    places (the compiler writes this for NumPy code: optimize.fuse_picked_logp). ``inplace``:
    the compiler found that nothing reads ``y`` afterwards; the result is then written into it."""
    rows, cols = np.asarray(rows), np.asarray(cols)
    v = np.asarray(v).astype(dtype, copy=False)     # as np.add.at into dy would cast it
    if rows.dtype.kind not in "iu" or cols.dtype.kind not in "iu":   # (a mask: not picks)
        dy = np.zeros(y.shape, dtype)
        np.add.at(dy, (rows, cols), v)
        return logp_back(dy, y)
    n, k = y.shape
    r, _, w = np.broadcast_arrays(rows, cols, v)
    r = r.ravel()
    s = np.bincount(np.where(r < 0, r + n, r), weights=w.ravel(), minlength=n)
    s = (-s).astype(np.result_type(dtype, y.dtype)).reshape(n, 1)
    out = y if inplace and y.dtype == s.dtype and y.flags.c_contiguous and y.flags.writeable \
        else pool.empty((n, k), s.dtype)
    _exp_scaled_rows(y, s, out)
    np.add.at(out, (rows, cols), v)
    return out


def softmax(x, axis=-1):
    """exp(x) / sum(exp(x)) along ``axis``."""
    if _rows_fast(x, axis):
        return rowkernels.softmax_rows(x)
    xp = array_module(x)
    e = xp.exp(x - xp.max(x, axis=axis, keepdims=True))
    if type(e) is np.ndarray:     # in place: one new array, not two
        e /= xp.sum(e, axis=axis, keepdims=True)
        return e
    return e / xp.sum(e, axis=axis, keepdims=True)


_ONES: dict = {}     # (classes, dtype) -> a vector of ones: row sums as one matrix-vector product


def _small_rows(x, labels) -> bool:
    """Small C-contiguous 2-D NumPy float scores and an array of one label per row
    (``_exp_rows`` applies)."""
    return type(x) is np.ndarray and x.ndim == 2 and x.dtype.kind == "f" and \
        x.flags.c_contiguous and 0 < x.size <= _LSE_BLOCK and type(labels) is np.ndarray \
        and labels.shape == x.shape[:1]


def _exp_rows(x, labels):
    """``(e, sums)``: ``e = exp(x - x[i, labels[i]])`` row by row and its row sums, or None when
    a sum overflows (a label's score far below its row's largest). For small batches NumPy's
    reductions along a short row axis cost more than the arithmetic (``x.max(axis=1)`` of a
    100x10 array: 7 us), so each row is shifted by its label's score instead of its maximum:
    the loss of a row is then ``log(sums)`` with no cancellation (a confident prediction's small
    loss keeps its digits, as with the maximum, which is the label's score there), it depends on
    that row alone (a batch split across processes gives the same numbers), and its terms
    include exp(0) = 1, so no sum underflows. The row sums are one product with ones."""
    k = x.shape[1]
    ones = _ONES.get((k, x.dtype))
    if ones is None:
        ones = _ONES[(k, x.dtype)] = np.ones(k, x.dtype)
    e = x - x[np.arange(x.shape[0]), labels][:, None]
    np.exp(e, out=e)
    sums = e @ ones
    if not sums.max() < np.inf:     # overflow (or NaN): the row-maximum path
        return None
    return e, sums


def nll(scores, labels, average=True):
    """Negative log likelihood of 0-based integer ``labels`` (N,) under ``scores`` (N, classes).

    The scores are unnormalized (logp is applied), as in Knet. ``average=True`` returns the mean;
    ``average=False`` returns the total (use ``len(labels)`` as the count).
    """
    if _rows_fast(scores):
        y = rowkernels.nll_rows(scores, labels, average)
        if y is not NotImplemented:
            return y
    if _small_rows(scores, labels):
        found = _exp_rows(scores, labels)
        if found is not None:
            total = np.sum(np.log(found[1]))
            return total / scores.shape[0] if average else total
    xp = array_module(scores)
    if _last_axis(scores, -1) and scores.ndim == 2 and scores.size > _LSE_BLOCK:
        # NumPy: the picked log-probabilities only (x[y] - max - logsumexp), no (N, classes)
        # array of log-probabilities
        rows = np.arange(scores.shape[0])
        m = scores.max(axis=1, keepdims=True)
        picked = (scores[rows, labels] - m[:, 0]) - _log_sum_exp(scores, m)[:, 0]
        total = -np.sum(picked)
        return total / scores.shape[0] if average else total
    lp = logp(scores, axis=-1)
    total = -xp.sum(lp[xp.arange(lp.shape[0]), labels])
    return total / lp.shape[0] if average else total


def nll_grad(scores, labels, dy, average=True):
    """Gradient of nll wrt the scores: (softmax(scores) - onehot(labels)) * dy [/ N]."""
    if _rows_fast(scores):
        g = rowkernels.nll_grad_rows(scores, labels, dy, average)
        if g is not NotImplemented:
            return g
    found = _exp_rows(scores, labels) if _small_rows(scores, labels) else None
    if found is not None:
        g = found[0]
        g /= found[1][:, None]
        g[np.arange(g.shape[0]), labels] -= 1
    else:
        xp = array_module(scores)
        g = softmax(scores, axis=-1)
        g[xp.arange(g.shape[0]), labels] -= 1
    scale = dy / g.shape[0] if average else dy
    if not (isinstance(scale, (int, float)) and scale == 1):
        g *= scale
    return g


def mat(x):
    """Flatten all but the first (batch) axis: (N, ...) → (N, prod(...)). Knet's mat, reversed."""
    return x.reshape(x.shape[0], -1)


def getval(x):
    """The value of x, cut off from the gradient (Knet's value/getval)."""
    return x


def astype(x, dtype):
    """x converted to dtype (the gradient converts back)."""
    return x.astype(dtype)


def index_add(base, idx, v):
    """A copy of ``base`` with ``v`` added at ``idx`` (repeated indices accumulate)."""
    xp = array_module(base)
    out = base.copy()
    if hasattr(xp, "add") and hasattr(xp.add, "at"):
        xp.add.at(out, idx, v)
    else:  # pragma: no cover - CuPy spells it scatter_add
        xp.cupyx.scatter_add(out, idx, v)
    return out


def add_rows(out, idx, v):
    """``out[idx] += v`` in place for an integer index array on the first axis, repeated indices
    accumulating (the gradient of an embedding lookup ``E[tokens]``).

    On the CPU, sorting the indices and summing runs of equal ones with ``np.add.reduceat`` is
    about 4x faster than ``np.add.at``; other array modules use their native scatter-add.
    """
    xp = array_module(out)
    i = xp.asarray(idx).ravel()
    v = xp.asarray(v)
    # The fast path writes through out.reshape(rows, -1), a view only when out is C-contiguous
    # (a copy of a broadcast or transposed array is not: the writes would be lost).
    if xp is not np or v.shape != tuple(np.shape(idx)) + out.shape[1:] or i.size == 0 \
            or not out.flags.c_contiguous:
        xp.add.at(out, idx, v)
        return out
    rows, sums = sum_by_row(i, v.reshape(i.size, -1), out.shape[0])
    out.reshape(out.shape[0], -1)[rows] += sums
    return out


def sum_by_row(i, v, n: int) -> tuple:
    """``(rows, sums)`` for a non-empty flat NumPy int index ``i`` into ``n`` rows (negative
    counting from the end) and ``v``, one row of values per index: each row once, in increasing
    order, with the sum of its values (in the order given). Sorting, then ``np.add.reduceat``
    over runs of equal rows: ``add_rows``, and ``SparseRows.coalesce``."""
    i = np.where(i < 0, i + n, i)
    order = np.argsort(i, kind="stable")
    si = i[order]
    starts = np.flatnonzero(np.concatenate(([True], si[1:] != si[:-1])))
    return si[starts], np.add.reduceat(v[order], starts, axis=0)


def relu_grad(y, dy):
    """dy where y > 0."""
    return dy * (y > 0)


# ---------------------------------------------------------------------------------------------
# erf and gelu without SciPy (their rules are in knetc/rules/special.py). Plain array
# arithmetic, so they run on NumPy and CuPy arrays alike and keep float32 inputs float32.
#
# The coefficients were fitted with mpmath.chebyfit at 50 digits (knetc's own fit, not copied):
#   _ERF_P:  erf(x) / x as a degree-11 polynomial in s = x*x on 0 <= s <= 1;
#   _ERFC_Q: (1 + 2x) exp(x*x) erfc(x) as a degree-21 polynomial in t = (x - 3) / (x + 3) on
#            x >= 1 (the mapping of Shepherd and Laframboise, Math. Comp. 36, 1981).
# Against mpmath in float64: erf within 3e-16 relative everywhere; erfc within 1e-14 relative
# for x < 10 and 2e-13 up to its underflow near 27 (the rounding of x*x in exp(-x*x)).

_ERF_P = (
    -7.795898827002142e-10, 1.3720064546777686e-08, -1.6208483801871705e-07, 1.6447424703317362e-06,
    -1.492473690741966e-05, 0.00012055294904839707, -0.0008548325975389692, 0.0052239776071164225,
    -0.02686617064323777, 0.11283791670945006, -0.37612638903183543, 1.1283791670955126,
)
_ERFC_Q = (
    1.5504321773485521e-09, -5.184683363570991e-08, 2.1986612110427302e-07, -1.3938183948257097e-07,
    -7.289923069677295e-07, 4.181196395900433e-07, 3.5065703904458455e-06, -7.690089674810581e-07,
    -2.0102065166314844e-05, 4.959869356387292e-06, 0.0001250979497506351, -0.00010516139264961774,
    -0.0007798319219984895, 0.0018886905008598507, 0.0025293917794136714, -0.02377051492581398,
    0.0683080273458274, -0.1192736634151192, 0.1296451587027206, -0.04756229435345284,
    -0.13562110612458092, 1.2530080582697296,
)
_SQRT_HALF = 0.7071067811865476      # 1 / sqrt(2)
_SQRT_2_OVER_PI = 0.7978845608028654  # sqrt(2 / pi), gelu's tanh form
_GELU_CUBIC = 0.044715


def _horner(coefs, t):
    acc = coefs[0] * t + coefs[1]
    for c in coefs[2:]:
        acc = acc * t + c
    return acc


def _erf_near0(x, a, xp):
    """erf(x) where |x| < 1 (``a`` is |x|; other entries are finite and unused)."""
    s = xp.minimum(a, 1.0)
    return x * _horner(_ERF_P, s * s)


def _erfc_tail(a, xp):
    """erfc(|x|) where |x| >= 1 (``a`` is |x|; other entries are finite and unused)."""
    b = xp.minimum(xp.maximum(a, 1.0), 40.0)   # erfc(40) underflows; keeps t finite at inf
    return xp.exp(-(b * b)) * _horner(_ERFC_Q, (b - 3.0) / (b + 3.0)) / (1 + 2 * b)


def _float_array(x, xp):
    x = xp.asarray(x)
    return x if x.dtype.kind in "fc" else x.astype(np.float64)


def erf(x):
    """The error function 2/sqrt(pi) * integral of exp(-t^2) from 0 to x, elementwise.

    No SciPy needed: a polynomial for |x| < 1 and a polynomial in (|x| - 3) / (|x| + 3) times
    exp(-x^2) beyond, accurate to a few units in the last place in float64 (float32 inputs stay
    float32). Works on NumPy and CuPy arrays and on Python numbers.
    """
    xp = array_module(x)
    x = _float_array(x, xp)
    a = xp.abs(x)
    out = xp.where(a < 1, _erf_near0(x, a, xp), xp.copysign(1 - _erfc_tail(a, xp), x))
    return out[()] if out.ndim == 0 and xp is np else out


def _erfc(x, xp):
    """1 - erf(x), keeping its relative accuracy for large positive x (gelu's left tail)."""
    a = xp.abs(x)
    tail = _erfc_tail(a, xp)
    return xp.where(a < 1, 1 - _erf_near0(x, a, xp), xp.where(x < 0, 2 - tail, tail))


def gelu(x, approximate="none"):
    """The Gaussian error linear unit (Hendrycks and Gimpel 2016), elementwise.

    ``approximate="none"`` (the default) is the exact ``x * Phi(x)``, Phi the standard normal
    CDF, computed as ``x/2 * erfc(-x/sqrt(2))`` so that the left tail keeps its relative accuracy;
    ``approximate="tanh"`` is ``x/2 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))`` (BERT, GPT-2).
    The names follow PyTorch's ``gelu(x, approximate=...)``. No SciPy needed.
    """
    xp = array_module(x)
    x = _float_array(x, xp)
    if approximate == "tanh":
        out = 0.5 * x * (1 + xp.tanh(_SQRT_2_OVER_PI * (x + _GELU_CUBIC * (x * x * x))))
    elif approximate == "none":
        out = 0.5 * x * _erfc(-_SQRT_HALF * x, xp)
    else:
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', not {approximate!r}")
    return out[()] if out.ndim == 0 and xp is np else out
