"""Knet's primitives as plain array functions (NumPy or CuPy, chosen by the argument's type).

Their derivatives live in knetc/rules/knet.py; the compiler treats each as one operation.
"""
from __future__ import annotations

import contextlib
import threading

import numpy as np

from .backend import array_module

# Per-thread flags, private to this module: read them with training() / tracing(), set them with
# training_mode() / tracing_mode().
_state = threading.local()


def training() -> bool:
    """True while knetc is differentiating (or inside ``training_mode(True)``): dropout is active."""
    return getattr(_state, "training", False)


@contextlib.contextmanager
def training_mode(flag: bool = True):
    """Turn training behaviour (dropout, batchnorm statistics) on or off in this thread."""
    old = getattr(_state, "training", False)
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


@contextlib.contextmanager
def tracing_mode(flag: bool = True):
    """Mark this thread as specializing (``tracing()`` is ``flag``) in the block, then restore.

    For the compiler: wrap the run of a primitive whose result the specializer records.
    """
    old = getattr(_state, "tracing", False)
    _state.tracing = flag
    try:
        yield
    finally:
        _state.tracing = old


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


def logp(x, axis=-1):
    """Log-softmax: x - logsumexp(x) along ``axis`` (Knet's logp; classes on the last axis)."""
    xp = array_module(x)
    m = xp.max(x, axis=axis, keepdims=True)
    z = x - m
    return z - xp.log(xp.sum(xp.exp(z), axis=axis, keepdims=True))


def softmax(x, axis=-1):
    """exp(x) / sum(exp(x)) along ``axis``."""
    xp = array_module(x)
    e = xp.exp(x - xp.max(x, axis=axis, keepdims=True))
    return e / xp.sum(e, axis=axis, keepdims=True)


def nll(scores, labels, average=True):
    """Negative log likelihood of 0-based integer ``labels`` (N,) under ``scores`` (N, classes).

    The scores are unnormalized (logp is applied), as in Knet. ``average=True`` returns the mean;
    ``average=False`` returns the total (use ``len(labels)`` as the count).
    """
    xp = array_module(scores)
    lp = logp(scores, axis=-1)
    total = -xp.sum(lp[xp.arange(lp.shape[0]), labels])
    return total / lp.shape[0] if average else total


def nll_grad(scores, labels, dy, average=True):
    """Gradient of nll wrt the scores: (softmax(scores) - onehot(labels)) * dy [/ N]."""
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
    if xp is not np or v.shape != tuple(np.shape(idx)) + out.shape[1:] or i.size == 0:
        xp.add.at(out, idx, v)
        return out
    i = np.where(i < 0, i + out.shape[0], i)
    order = np.argsort(i, kind="stable")
    si = i[order]
    starts = np.flatnonzero(np.concatenate(([True], si[1:] != si[:-1])))
    rows = v.reshape(i.size, -1)[order]
    out.reshape(out.shape[0], -1)[si[starts]] += np.add.reduceat(rows, starts, axis=0)
    return out


def relu_grad(y, dy):
    """dy where y > 0."""
    return dy * (y > 0)
