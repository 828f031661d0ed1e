"""Rules for reductions: sum, mean, prod, max, min (axis and keepdims)."""
import numpy as np

from .registry import adjoint, static


@adjoint(np.sum)
def sum_(y, a, axis=None, dtype=None, out=None, keepdims=False):
    if axis is None or y.ndim == 0:  # a scalar spread over the input: one fill, in its dtype
        d[a] = np.full(a.shape, d[y], a.dtype)
    elif keepdims:
        d[a] = np.broadcast_to(d[y], a.shape)
    else:
        d[a] = np.broadcast_to(np.expand_dims(d[y], axis), a.shape)


@adjoint(np.mean)
def mean(y, a, axis=None, dtype=None, out=None, keepdims=False):
    if a.size == 0:   # the mean of nothing is nan; the gradient of no entries is empty
        d[a] = np.zeros(a.shape, a.dtype)
    elif axis is None or y.ndim == 0:
        d[a] = np.full(a.shape, d[y] / static(np.size(a.val) // max(np.size(y.val), 1)), a.dtype)
    elif keepdims:
        d[a] = np.broadcast_to(d[y] / static(np.size(a.val) // max(np.size(y.val), 1)), a.shape)
    else:
        d[a] = np.broadcast_to(np.expand_dims(d[y] / static(np.size(a.val) // np.size(y.val)), axis),
                               a.shape)


@adjoint(np.prod)
def prod(y, a, axis=None, dtype=None, out=None, keepdims=False):
    if axis is None or keepdims:
        d[a] = d[y] * y / a
    else:
        d[a] = np.expand_dims(d[y] * y, axis) / a


@adjoint(np.max, np.amax, np.min, np.amin)  # the extremum's positions, ties sharing
def extremum(y, a, axis=None, out=None, keepdims=False):
    if axis is None or keepdims:
        m = (a == y).astype(a.dtype)  # a float mask keeps float32 gradients float32
        d[a] = d[y] * m / np.sum(m, axis=axis, keepdims=True)
    else:
        m = (a == np.expand_dims(y, axis)).astype(a.dtype)
        d[a] = np.expand_dims(d[y], axis) * m / np.sum(m, axis=axis, keepdims=True)

