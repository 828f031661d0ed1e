"""Rules for statistics and cumulative functions: var, std, median, average; cumsum, cumprod, diff.

The helpers below (``_revcumsum``, ``_diff_back``) are called by the generated adjoint code and
have rules of their own, so gradients of gradients work; ``_median_weights`` only depends on the
order of the values and carries no gradient.
"""
import operator

import numpy as np

from ..errors import NoRuleError
from .registry import adjoint, nondifferentiable, static


# -- static helpers (shapes and axes, evaluated when code is generated) --------------------------

def _axes(ndim, axis):
    """``axis`` (None, an int or a tuple, negative allowed) as a sorted tuple of axes."""
    if axis is None:
        return tuple(range(ndim))
    parts = axis if isinstance(axis, (tuple, list)) else (axis,)
    return tuple(sorted(operator.index(a) % max(ndim, 1) for a in parts))


def _count(shape, axis):
    """How many values a reduction over ``axis`` of an array of ``shape`` combines."""
    return int(np.prod([shape[i] for i in _axes(len(shape), axis)], dtype=np.int64))


def _dof(shape, axis, ddof, correction):
    """N - ddof for var/std (NumPy 2's ``correction`` is another name for ``ddof``)."""
    if correction is not None:
        ddof = correction
    return _count(shape, axis) - ddof


def _inverse(n):
    return 1.0 / n if n > 0 else float("nan")


def _shape(v):
    return tuple(np.shape(getattr(v, "val", v)))


def _refuse(message):
    """In ``static(...)``: stop generating code with a NoRuleError (a form without a rule)."""
    raise NoRuleError("knetc: " + message)


# -- var, std ------------------------------------------------------------------------------------

@adjoint(np.var)
def var(y, a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, correction=None):
    if axis is None or keepdims:
        g = d[y] * static(2.0 * _inverse(_dof(a.shape, axis, ddof, correction)))
    else:
        g = np.expand_dims(d[y] * static(2.0 * _inverse(_dof(a.shape, axis, ddof, correction))),
                           axis)
    if dtype is None:
        d[a] = g * (a - np.mean(a, axis=axis, keepdims=True))
    else:
        d[a] = (g * (a - np.mean(a, axis=axis, keepdims=True))).astype(a.dtype)


@adjoint(np.std)
def std(y, a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, correction=None):
    # d std = d var / (2 std); undefined (nan) where the values are all equal, as for sqrt at 0
    if axis is None or keepdims:
        g = d[y] / (y * static(float(_dof(a.shape, axis, ddof, correction))))
    else:
        g = np.expand_dims(d[y] / (y * static(float(_dof(a.shape, axis, ddof, correction)))), axis)
    if dtype is None:
        d[a] = g * (a - np.mean(a, axis=axis, keepdims=True))
    else:
        d[a] = (g * (a - np.mean(a, axis=axis, keepdims=True))).astype(a.dtype)


# -- median --------------------------------------------------------------------------------------

def _median_weights(a, axis=None):
    """How much each value of ``a`` counts in ``np.median(a, axis)``: 1 for the middle value of an
    odd count, 1/2 for each of the two middle values of an even count, 0 elsewhere (in ``a``'s
    float dtype). Among equal values, the one a stable sort puts in the middle is chosen."""
    a = np.asarray(a)
    dtype = a.dtype if a.dtype.kind == "f" else np.float64
    axes = _axes(a.ndim, axis)
    if not axes:
        return np.ones(a.shape, dtype)
    rest = [i for i in range(a.ndim) if i not in axes]
    moved = np.transpose(a, rest + list(axes))
    flat = moved.reshape(moved.shape[:len(rest)] + (-1,))
    k = flat.shape[-1]
    rank = np.argsort(np.argsort(flat, axis=-1, kind="stable"), axis=-1, kind="stable")
    w = ((rank == (k - 1) // 2).astype(dtype) + (rank == k // 2).astype(dtype)) * 0.5
    w = w.reshape(moved.shape)
    return np.transpose(w, np.argsort(rest + list(axes)))


nondifferentiable(_median_weights)


@adjoint(np.median)
def median(y, a, axis=None, out=None, overwrite_input=False, keepdims=False):
    if axis is None or keepdims:
        d[a] = d[y] * _median_weights(a, axis)
    else:
        d[a] = np.expand_dims(d[y], axis) * _median_weights(a, axis)


# -- average -------------------------------------------------------------------------------------

def _weights_perm(a, weights, axis):
    """np.average's weights shaped like ``a`` along ``axis`` only are transposed to the sorted
    order of ``axis``, then reshaped with size-1 axes to broadcast against ``a``. Returns (that
    permutation, the broadcastable shape, the other axes of ``a``, the inverse permutation)."""
    shape = _shape(a)
    axes = axis if isinstance(axis, (tuple, list)) else (axis,)
    axes = tuple(operator.index(i) % len(shape) for i in axes)
    perm = tuple(int(i) for i in np.argsort(axes))
    wide = tuple(s if i in axes else 1 for i, s in enumerate(shape))
    others = tuple(i for i in range(len(shape)) if i not in axes)
    return perm, wide, others, tuple(int(i) for i in np.argsort(perm))


def _same_shape(a, weights):
    return _shape(a) == _shape(weights)


@adjoint(np.average)
def average(y, a, axis=None, weights=None, returned=False, keepdims=False):
    if returned:
        t = static(_refuse("np.average(..., returned=True) is not differentiable: compute the "  # noqa: F841
                           "sum of the weights separately"))
    elif weights is None:  # the mean
        if axis is None:
            d[a] = np.full(a.shape, d[y] * static(_inverse(_count(a.shape, axis))), a.dtype)
        elif keepdims:
            d[a] = np.broadcast_to(d[y] * static(_inverse(_count(a.shape, axis))), a.shape)
        else:
            d[a] = np.broadcast_to(
                np.expand_dims(d[y] * static(_inverse(_count(a.shape, axis))), axis), a.shape)
    elif _same_shape(a, weights):
        # y = sum(a w) / sum(w): dy/da = w / sum(w), dy/dw = (a - y) / sum(w)
        if axis is None or keepdims:
            d[a] = d[y] * weights / np.sum(weights, axis=axis, keepdims=True)
            d[weights] = d[y] * (a - y) / np.sum(weights, axis=axis, keepdims=True)
        else:
            d[a] = np.expand_dims(d[y], axis) * weights / np.sum(weights, axis=axis, keepdims=True)
            d[weights] = (np.expand_dims(d[y], axis) * (a - np.expand_dims(y, axis))
                          / np.sum(weights, axis=axis, keepdims=True))
    elif keepdims:  # weights along ``axis`` only (then axis is given), summing to sum(weights)
        d[a] = d[y] * np.reshape(np.transpose(weights, static(_weights_perm(a, weights, axis)[0])),
                                 static(_weights_perm(a, weights, axis)[1])) / np.sum(weights)
        d[weights] = np.transpose(
            np.sum(d[y] * (a - y), axis=static(_weights_perm(a, weights, axis)[2])),
            static(_weights_perm(a, weights, axis)[3])) / np.sum(weights)
    else:
        d[a] = (np.expand_dims(d[y], axis) * np.reshape(
            np.transpose(weights, static(_weights_perm(a, weights, axis)[0])),
            static(_weights_perm(a, weights, axis)[1])) / np.sum(weights))
        d[weights] = np.transpose(
            np.sum(np.expand_dims(d[y], axis) * (a - np.expand_dims(y, axis)),
                   axis=static(_weights_perm(a, weights, axis)[2])),
            static(_weights_perm(a, weights, axis)[3])) / np.sum(weights)


# -- cumulative sums and products, differences ---------------------------------------------------

def _revcumsum(g, axis):
    """The reversed cumulative sum along ``axis``: out[i] = sum(g[i:]) (cumsum's adjoint)."""
    if np.ndim(g) == 0:   # the gradient of a one-element result that is the loss
        return g
    return np.flip(np.cumsum(np.flip(g, axis), axis), axis)


@adjoint(_revcumsum)
def revcumsum(z, g, axis):
    d[g] = np.cumsum(d[z], axis)


@adjoint(np.cumsum)
def cumsum(y, a, axis=None, dtype=None, out=None):
    if axis is None:
        d[a] = np.reshape(_revcumsum(d[y], 0), a.shape)
    else:
        d[a] = _revcumsum(d[y], axis)


@adjoint(np.cumprod)
def cumprod(y, a, axis=None, dtype=None, out=None):
    # d a[j] = sum_{i >= j} d y[i] * prod_{k <= i, k != j} a[k]. Where a[j] != 0 that is
    # revcumsum(dy * y)[j] / a[j]; at the first zero of a slice it is revcumsum(dy * y')[j] with
    # y' the cumprod with that zero replaced by 1; after it, 0. No division by zero is evaluated.
    # (Second derivatives are exact with at most one zero per slice.)
    if axis is None:
        first = (np.ravel(a) == 0) & (np.cumsum(np.ravel(a) == 0) == 1)
        d[a] = np.reshape(np.where(
            np.ravel(a) != 0, _revcumsum(d[y] * y, 0) / np.where(np.ravel(a) != 0, np.ravel(a), 1),
            np.where(first, _revcumsum(d[y] * np.cumprod(np.where(first, 1, np.ravel(a))), 0), 0)),
            a.shape)
    else:
        first = (a == 0) & (np.cumsum(a == 0, axis) == 1)
        d[a] = np.where(
            a != 0, _revcumsum(d[y] * y, axis) / np.where(a != 0, a, 1),
            np.where(first, _revcumsum(d[y] * np.cumprod(np.where(first, 1, a), axis), axis), 0))


def _diff_back(g, n, axis, shape):
    """The adjoint of ``np.diff(., n, axis)`` for an input of ``shape``: (-1)^n diff(g padded
    with n zeros on both ends, n); zeros when the difference was empty."""
    if shape[axis] <= n:
        return np.zeros(shape, np.asarray(g).dtype)
    out_shape = list(shape)
    out_shape[axis] -= n
    g = np.broadcast_to(g, out_shape)   # g may be the scalar 1.0 (a one-element result)
    out_shape[axis] = n
    zeros = np.zeros(out_shape, g.dtype)
    out = np.diff(np.concatenate([zeros, g, zeros], axis), n, axis)
    return -out if n % 2 else out


@adjoint(_diff_back)
def diff_back(z, g, n, axis, shape):
    d[g] = np.diff(d[z], n, axis)   # the adjoint of an adjoint: diff itself


def _extent(v, ndim, axis):
    """How long np.diff's ``prepend``/``append`` value is along ``axis`` (0-d: 1, None: 0)."""
    if v is None:
        return 0
    s = _shape(v)
    return 1 if not s else s[axis % ndim]


def _joined(a, prepend, append, axis):
    """The shape of what np.diff differences: [prepend, a, append] joined along ``axis``."""
    shape = list(_shape(a))
    ax = axis % len(shape)
    shape[ax] += _extent(prepend, len(shape), ax) + _extent(append, len(shape), ax)
    return tuple(shape)


def _part(which, a, prepend, append, axis):
    """The index of ``which`` ("prepend", "a" or "append") in the joined array."""
    shape = _shape(a)
    ax = axis % len(shape)
    start = {"prepend": 0, "a": _extent(prepend, len(shape), ax),
             "append": _extent(prepend, len(shape), ax) + shape[ax]}[which]
    size = shape[ax] if which == "a" else _extent(prepend if which == "prepend" else append,
                                                   len(shape), ax)
    return (slice(None),) * ax + (slice(start, start + size),)


@adjoint(np.diff)
def diff(y, a, n=1, axis=-1, prepend=None, append=None):
    if n == 0:
        d[a] = d[y]
    elif prepend is None and append is None:
        d[a] = _diff_back(d[y], n, static(axis % a.ndim), a.shape)
    else:  # the gradient of the joined [prepend, a, append], cut back into its parts
        d[a] = _diff_back(d[y], n, static(axis % a.ndim),
                          static(_joined(a, prepend, append, axis)))[
            static(_part("a", a, prepend, append, axis))]
        if _shape(prepend):
            d[prepend] = _diff_back(d[y], n, static(axis % a.ndim),
                                    static(_joined(a, prepend, append, axis)))[
                static(_part("prepend", a, prepend, append, axis))]
        else:   # a scalar, broadcast along the other axes
            d[prepend] = np.sum(_diff_back(d[y], n, static(axis % a.ndim),
                                           static(_joined(a, prepend, append, axis)))[
                static(_part("prepend", a, prepend, append, axis))])
        if _shape(append):
            d[append] = _diff_back(d[y], n, static(axis % a.ndim),
                                   static(_joined(a, prepend, append, axis)))[
                static(_part("append", a, prepend, append, axis))]
        else:
            d[append] = np.sum(_diff_back(d[y], n, static(axis % a.ndim),
                                          static(_joined(a, prepend, append, axis)))[
                static(_part("append", a, prepend, append, axis))])
