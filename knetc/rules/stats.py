"""Rules for statistics and cumulative functions: var, std, median, average, ptp, quantile,
percentile; the NaN-ignoring nansum, nanmean, nanmax, nanmin, nanprod, nanvar, nanstd, nanmedian;
cumsum, cumprod, diff.

The helpers below (``_revcumsum``, ``_diff_back``) are called by the generated adjoint code and
have rules of their own, so gradients of gradients work; ``_median_weights`` (and
``_nanmedian_weights``, ``_quantile_index``) only depend on the order of the values and carry no
gradient.

Conventions, as in JAX: the nan-functions give NaN entries a zero gradient (an all-NaN slice
gives its entries 0); ``ptp``, ``nanmax`` and ``nanmin`` share the gradient equally between tied
extrema (as ``np.max``); ``nanprod``'s gradient is the product of the other entries
(``reduce.prod_others``, exact at zeros). ``quantile`` and ``percentile`` (``method="linear"``
only) split the gradient between the two order statistics they interpolate, ``1 - t`` and
``t``; they are differentiable wrt ``q`` as well (the slope between those two values).
``where=``, ``out=``, ``mean=`` and a traced ``initial`` (but nansum's) are refused.
"""
import operator

import numpy as np

from ..compiler.tape import Sym, syms_in
from .reduce import prod_others
from ..errors import NoRuleError
from ..runtime.backend import array_module
from .joining import scatter_take_along
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
    xp = array_module(a)
    a = xp.asarray(a)
    dtype = a.dtype if a.dtype.kind == "f" else np.float64
    axes = _axes(a.ndim, axis)
    if not axes:
        return xp.ones(a.shape, dtype)
    rest = [i for i in range(a.ndim) if i not in axes]
    moved = xp.transpose(a, rest + list(axes))
    flat = moved.reshape(moved.shape[:len(rest)] + (-1,))
    k = flat.shape[-1]
    rank = xp.argsort(xp.argsort(flat, axis=-1, kind="stable"), axis=-1, kind="stable")
    w = ((rank == (k - 1) // 2).astype(dtype) + (rank == k // 2).astype(dtype)) * 0.5
    w = w.reshape(moved.shape)
    return xp.transpose(w, [int(i) for i in np.argsort(rest + list(axes))])


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
    xp = array_module(g)
    g = xp.asarray(g)                   # g may be the scalar 1.0 (a one-element result)
    if shape[axis] <= n:
        return xp.zeros(shape, g.dtype)
    out_shape = list(shape)
    out_shape[axis] -= n
    g = xp.broadcast_to(g, out_shape)
    out_shape[axis] = n
    zeros = xp.zeros(out_shape, g.dtype)
    out = xp.diff(xp.concatenate([zeros, g, zeros], axis), n, axis)
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


# -- ptp and the NaN-ignoring reductions ---------------------------------------------------------

def _plain(name, where=None, out=None, initial=None, mean=None):
    """Refuses the forms without a rule (decided when code is generated)."""
    if where is not None and where is not True:
        _refuse(f"{name}(..., where=...) has no gradient rule; select with np.where(mask, a, np.nan) "
                "instead")
    if out is not None:
        _refuse(f"{name}(..., out=...) is not differentiable (it writes in place)")
    if mean is not None:
        _refuse(f"{name}(..., mean=...) has no gradient rule; leave the mean to NumPy")
    if any(isinstance(v, Sym) and v.diff for v in syms_in(initial)):
        _refuse(f"{name}: initial= is differentiable only in np.nansum; pass a constant")
    return True


def _ddof(ddof, correction):
    return ddof if correction is None else correction


@adjoint(np.ptp)    # max - min: ties share, as in np.max's rule
def ptp(y, a, axis=None, out=None, keepdims=False):
    if _plain("np.ptp", out=out):
        if axis is None or keepdims or y.ndim == 0:
            g = d[y]
        else:
            g = np.expand_dims(d[y], axis)
        hi = (a == np.max(a, axis=axis, keepdims=True)).astype(a.dtype)
        lo = (a == np.min(a, axis=axis, keepdims=True)).astype(a.dtype)
        d[a] = g * (hi / np.sum(hi, axis=axis, keepdims=True) - lo / np.sum(lo, axis=axis, keepdims=True))


@adjoint(np.nansum)
def nansum(y, a, axis=None, dtype=None, out=None, keepdims=False, initial=None, where=None):
    if _plain("np.nansum", where, out):
        if axis is None or keepdims or y.ndim == 0:
            g = d[y]
        else:
            g = np.expand_dims(d[y], axis)
        if dtype is None:
            d[a] = (~np.isnan(a)).astype(a.dtype) * g
        else:
            d[a] = ((~np.isnan(a)).astype(a.dtype) * g).astype(a.dtype)
        d[initial] = np.sum(d[y])


@adjoint(np.nanmean)
def nanmean(y, a, axis=None, dtype=None, out=None, keepdims=False, where=None):
    if _plain("np.nanmean", where, out):
        if axis is None or keepdims or y.ndim == 0:
            g = d[y]
        else:
            g = np.expand_dims(d[y], axis)
        m = (~np.isnan(a)).astype(a.dtype)
        if dtype is None:
            d[a] = m * g / np.maximum(np.sum(m, axis=axis, keepdims=True), 1)
        else:
            d[a] = (m * g / np.maximum(np.sum(m, axis=axis, keepdims=True), 1)).astype(a.dtype)


@adjoint(np.nanmax, np.nanmin)   # NaNs never equal the result: no gradient
def nanextremum(y, a, axis=None, out=None, keepdims=False, initial=None, where=None):
    if _plain("np.nanmax/np.nanmin", where, out, initial):
        if axis is None or keepdims or y.ndim == 0:
            m = (a == y).astype(a.dtype)
            d[a] = d[y] * m / np.maximum(np.sum(m, axis=axis, keepdims=True), 1)
        else:
            m = (a == np.expand_dims(y, axis)).astype(a.dtype)
            d[a] = np.expand_dims(d[y], axis) * m / np.maximum(np.sum(m, axis=axis, keepdims=True), 1)


@adjoint(np.nanprod)
def nanprod(y, a, axis=None, dtype=None, out=None, keepdims=False, initial=None, where=None):
    if _plain("np.nanprod", where, out, initial):
        # the product of the other non-NaN entries (exact where entries are 0: no y / a)
        if axis is None or keepdims or y.ndim == 0:
            gy = d[y]
        else:
            gy = np.expand_dims(d[y], axis)
        if dtype is None:
            d[a] = np.where(np.isnan(a), 0, gy * prod_others(np.where(np.isnan(a), 1, a), axis))
        else:
            d[a] = np.where(np.isnan(a), 0,
                            gy * prod_others(np.where(np.isnan(a), 1, a), axis)).astype(a.dtype)


@adjoint(np.nanvar)
def nanvar(y, a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, where=None, mean=None,
           correction=None):
    # 2 (a - nanmean) / (count - ddof), the count of each slice's non-NaN entries; 0 where the
    # result is NaN (count <= ddof)
    if _plain("np.nanvar", where, out, mean=mean):
        if axis is None or keepdims or y.ndim == 0:
            g = d[y] * 2
        else:
            g = np.expand_dims(d[y] * 2, axis)
        n = np.sum((~np.isnan(a)).astype(a.dtype), axis=axis, keepdims=True)
        c = n - static(_ddof(ddof, correction))
        skip = np.isnan(a) | (c <= 0)      # NaNs, and slices whose result is NaN (count <= ddof)
        a0 = np.where(np.isnan(a), 0, a)   # finite: no NaN * 0 in second derivatives
        dev = (a0 - np.sum(a0, axis=axis, keepdims=True) / np.maximum(n, 1)) / np.where(c > 0, c, 1)
        if dtype is None:
            d[a] = np.where(skip, 0, g * dev)
        else:
            d[a] = np.where(skip, 0, g * dev).astype(a.dtype)


@adjoint(np.nanstd)
def nanstd(y, a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, where=None, mean=None,
           correction=None):
    # d std = d var / (2 std)
    if _plain("np.nanstd", where, out, mean=mean):
        if axis is None or keepdims or y.ndim == 0:      # (a NaN result: no gradient, below)
            g = d[y] / np.where(np.isnan(y), 1, y)
        else:
            g = np.expand_dims(d[y] / np.where(np.isnan(y), 1, y), axis)
        n = np.sum((~np.isnan(a)).astype(a.dtype), axis=axis, keepdims=True)
        c = n - static(_ddof(ddof, correction))
        skip = np.isnan(a) | (c <= 0)      # NaNs, and slices whose result is NaN (count <= ddof)
        a0 = np.where(np.isnan(a), 0, a)   # finite: no NaN * 0 in second derivatives
        dev = (a0 - np.sum(a0, axis=axis, keepdims=True) / np.maximum(n, 1)) / np.where(c > 0, c, 1)
        if dtype is None:
            d[a] = np.where(skip, 0, g * dev)
        else:
            d[a] = np.where(skip, 0, g * dev).astype(a.dtype)


def _nanmedian_weights(a, axis=None):
    """As ``_median_weights``, among each slice's non-NaN entries (NaNs weigh 0)."""
    xp = array_module(a)
    a = xp.asarray(a)
    dtype = a.dtype if a.dtype.kind == "f" else np.float64
    axes = _axes(a.ndim, axis)
    if not axes:
        return (~xp.isnan(a)).astype(dtype)
    rest = [i for i in range(a.ndim) if i not in axes]
    moved = xp.transpose(a, rest + list(axes))
    flat = moved.reshape(moved.shape[:len(rest)] + (-1,))
    k = xp.sum(~xp.isnan(flat), axis=-1, keepdims=True)           # NaNs sort last
    rank = xp.argsort(xp.argsort(flat, axis=-1, kind="stable"), axis=-1, kind="stable")
    w = ((rank == (k - 1) // 2).astype(dtype) + (rank == k // 2).astype(dtype)) * 0.5
    w = xp.where(rank < k, w, 0).reshape(moved.shape)
    return xp.transpose(w, [int(i) for i in np.argsort(rest + list(axes))])


nondifferentiable(_nanmedian_weights)


@adjoint(np.nanmedian)
def nanmedian(y, a, axis=None, out=None, overwrite_input=False, keepdims=False):
    if _plain("np.nanmedian", out=out):
        if axis is None or keepdims or y.ndim == 0:
            d[a] = d[y] * _nanmedian_weights(a, axis)
        else:
            d[a] = np.expand_dims(d[y], axis) * _nanmedian_weights(a, axis)


# -- quantile, percentile ------------------------------------------------------------------------
# The reduced axes of a are moved last and flattened: am, shaped rest + (n,). With q raveled to
# (Q,), the value is am's order statistics lo and hi (indices into am's last axis, shaped
# rest + (Q,)) weighted 1 - t and t, t the fractional part of q (n - 1). d[y] is brought to the
# same rest + (Q,) layout, scattered back into am's layout, then into a's.

class _QLayout:
    def __init__(self, a, q, axis):
        shape = _shape(a)
        nd = len(shape)
        red = _axes(nd, axis)
        rest = tuple(i for i in range(nd) if i not in red)
        self.perm = rest + red
        self.rest = tuple(shape[i] for i in rest)
        self.n = int(np.prod([shape[i] for i in red], dtype=np.int64))
        self.flat = self.rest + (self.n,)
        self.moved = self.rest + tuple(shape[i] for i in red)
        self.inverse = tuple(int(i) for i in np.argsort(self.perm))
        qs = _shape(q)
        self.qshape = qs
        self.Q = int(np.prod(qs, dtype=np.int64))
        nq, nr = len(qs), len(self.rest)
        self.g_in = qs + self.rest                                   # d[y] without kept axes
        self.g_perm = tuple(range(nq, nq + nr)) + tuple(range(nq))    # q's axes last
        self.g_flat = self.rest + (self.Q,)
        self.rest_axes = tuple(range(nr))


def _layout(a, q, axis):
    return _QLayout(a, q, axis)


def _linear(name, method, weights, out):
    if method != "linear":
        _refuse(f"{name}(..., method={method!r}) has no gradient rule; method='linear' (the "
                "default) is differentiable")
    if weights is not None:
        _refuse(f"{name}(..., weights=...) has no gradient rule")
    if out is not None:
        _refuse(f"{name}(..., out=...) is not differentiable (it writes in place)")
    return True


def _dtype_of(v):
    return v.dtype if isinstance(v, Sym) else np.asarray(v).dtype


def _quantile_index(am, qq, upper):
    """Where in am's last axis the lower (``upper=0``) or upper (1) order statistic of each
    quantile qq (in [0, 1], shaped (Q,)) is: integers shaped am.shape[:-1] + (Q,)."""
    xp = array_module(am)
    am = xp.asarray(am)
    n = am.shape[-1]
    h = xp.asarray(qq, dtype=np.float64) * (n - 1)
    i = xp.clip(xp.floor(h).astype(np.intp), 0, n - 1)
    if upper:
        i = xp.minimum(i + 1, n - 1)
    order = xp.argsort(am, axis=-1, kind="stable")
    return xp.take(order, i, axis=-1)


nondifferentiable(_quantile_index)   # integer positions


@adjoint(np.quantile)
def quantile(y, a, q, axis=None, out=None, overwrite_input=False, method="linear", keepdims=False,
             weights=None):
    if _linear("np.quantile", method, weights, out):
        am = np.reshape(np.transpose(a, static(_layout(a, q, axis).perm)), static(_layout(a, q, axis).flat))
        qq = np.ravel(q)
        lo = _quantile_index(am, qq, 0)
        hi = _quantile_index(am, qq, 1)
        h = qq * static(float(_layout(a, q, axis).n - 1))
        t = (h - np.floor(h)).astype(static(_dtype_of(a)))
        if y.ndim == 0:
            g = d[y]
        else:
            g = np.reshape(np.transpose(np.reshape(d[y], static(_layout(a, q, axis).g_in)),
                                        static(_layout(a, q, axis).g_perm)),
                           static(_layout(a, q, axis).g_flat))
        ga = np.transpose(np.reshape(scatter_take_along(g * (1 - t), lo, -1, static(_layout(a, q, axis).flat))
                                     + scatter_take_along(g * t, hi, -1, static(_layout(a, q, axis).flat)),
                                     static(_layout(a, q, axis).moved)),
                          static(_layout(a, q, axis).inverse))
        if _dtype_of(y) == _dtype_of(a):
            d[a] = ga
        else:
            d[a] = ga.astype(static(_dtype_of(a)))
        d[q] = np.reshape(np.sum(g * (np.take_along_axis(am, hi, -1) - np.take_along_axis(am, lo, -1)),
                                 axis=static(_layout(a, q, axis).rest_axes))
                          * static(float(_layout(a, q, axis).n - 1)),
                          q.shape).astype(static(_dtype_of(q)))


@adjoint(np.percentile)   # quantile(a, q / 100)
def percentile(y, a, q, axis=None, out=None, overwrite_input=False, method="linear", keepdims=False,
               weights=None):
    if _linear("np.percentile", method, weights, out):
        am = np.reshape(np.transpose(a, static(_layout(a, q, axis).perm)), static(_layout(a, q, axis).flat))
        qq = np.ravel(q) / 100
        lo = _quantile_index(am, qq, 0)
        hi = _quantile_index(am, qq, 1)
        h = qq * static(float(_layout(a, q, axis).n - 1))
        t = (h - np.floor(h)).astype(static(_dtype_of(a)))
        if y.ndim == 0:
            g = d[y]
        else:
            g = np.reshape(np.transpose(np.reshape(d[y], static(_layout(a, q, axis).g_in)),
                                        static(_layout(a, q, axis).g_perm)),
                           static(_layout(a, q, axis).g_flat))
        ga = np.transpose(np.reshape(scatter_take_along(g * (1 - t), lo, -1, static(_layout(a, q, axis).flat))
                                     + scatter_take_along(g * t, hi, -1, static(_layout(a, q, axis).flat)),
                                     static(_layout(a, q, axis).moved)),
                          static(_layout(a, q, axis).inverse))
        if _dtype_of(y) == _dtype_of(a):
            d[a] = ga
        else:
            d[a] = ga.astype(static(_dtype_of(a)))
        d[q] = np.reshape(np.sum(g * (np.take_along_axis(am, hi, -1) - np.take_along_axis(am, lo, -1)),
                                 axis=static(_layout(a, q, axis).rest_axes))
                          * static(float(_layout(a, q, axis).n - 1) / 100),
                          q.shape).astype(static(_dtype_of(q)))
