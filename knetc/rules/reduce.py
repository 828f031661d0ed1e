"""Rules for reductions: sum, mean, prod, max, min (axis and keepdims)."""
import numpy as np

from ..runtime.backend import array_module
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


def prod_others(a, axis=None):
    """For each entry, the product of the other entries of its slice along ``axis`` (all of
    ``a`` for None): the gradient of np.prod, exact where entries are 0 (no ``y / a``)."""
    xp = array_module(a)
    zero = a == 0
    b = xp.where(zero, 1, a)
    z = xp.sum(zero, axis=axis, keepdims=True)
    p = xp.prod(b, axis=axis, keepdims=True)
    return xp.where(z == 0, p / b, xp.where((z == 1) & zero, p, 0)).astype(a.dtype, copy=False)


def prod_others_vjp(a, g, axis=None):
    """``sum_i g_i * d(prod_others(a)_i) / d a_k`` for every k: the products of the entries other
    than i and k, counted by how many zeros the slice holds."""
    xp = array_module(a)
    zero = a == 0
    b = xp.where(zero, 1, a)
    z = xp.sum(zero, axis=axis, keepdims=True)
    p = xp.prod(b, axis=axis, keepdims=True)
    t = xp.sum(g / b, axis=axis, keepdims=True)
    gz = xp.sum(xp.where(zero, g, 0), axis=axis, keepdims=True)   # g at the zero(s)
    none = p / b * (t - g / b)
    one = xp.where(zero, p * (t - gz), gz * p / b)
    two = xp.where(zero, (gz - g) * p, 0)
    return xp.where(z == 0, none, xp.where(z == 1, one, xp.where(z == 2, two, 0))) \
        .astype(a.dtype, copy=False)


@adjoint(np.prod)
def prod(y, a, axis=None, dtype=None, out=None, keepdims=False):
    if axis is None or keepdims:
        d[a] = d[y] * prod_others(a, axis)
    else:
        d[a] = np.expand_dims(d[y], axis) * prod_others(a, axis)


@adjoint(prod_others)
def prod_others_(y, a, axis=None):
    d[a] = prod_others_vjp(a, d[y], axis)


@adjoint(np.max, np.amax, np.min, np.amin)  # the extremum's positions, ties sharing
def extremum(y, a, axis=None, out=None, keepdims=False):
    if axis is None or keepdims:
        m = (a == y).astype(a.dtype)  # a float mask keeps float32 gradients float32
        d[a] = d[y] * m / np.sum(m, axis=axis, keepdims=True)
    else:
        m = (a == np.expand_dims(y, axis)).astype(a.dtype)
        d[a] = np.expand_dims(d[y], axis) * m / np.sum(m, axis=axis, keepdims=True)

