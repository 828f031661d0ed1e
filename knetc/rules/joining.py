"""Rules for tiling, reordering, joining, splitting and gathering: np.repeat, np.tile, np.pad,
np.roll, np.flip…, np.hstack…, np.append, np.hsplit…, np.take, np.take_along_axis, np.sort,
np.partition (and np.unique, np.bincount, whose values do have a derivative).

Where a template cannot write a gradient inline (a scatter-add, a list of pieces) it calls a
helper of this module; each helper has a rule of its own, so gradients of gradients work. The
helpers run on NumPy or CuPy arrays alike (``array_module``), like the rest of the runtime.
"""
import numpy as np

from ..runtime.backend import array_module
from .registry import adjoint, nondifferentiable, static
from .shape import unsplit
from .support import is_int, ndim_of, normal_axis, refuse, shape_of, size_of, sum_to_shape

# d[...] is the template language's gradient table (see registry.py), never a Python name.
# ruff: noqa: F821


# ---------------------------------------------------------------------------------------------
# Runtime helpers shared by several rules (with rules of their own).

def _scatter_add(out, index, values):
    """``out[index] += values`` in place, repeated indices accumulating."""
    xp = array_module(out)
    if hasattr(xp.add, "at"):
        xp.add.at(out, index, values)
    else:  # pragma: no cover - older CuPy spells it cupyx.scatter_add
        import cupyx
        cupyx.scatter_add(out, index, values)


def _along(indices, axis, shape, xp):
    """The advanced index of np.take_along_axis(·, indices, axis) into an array of ``shape``."""
    nd = len(shape)
    ax = normal_axis(axis, nd)
    return tuple(indices if i == ax else xp.arange(n).reshape([-1 if j == i else 1 for j in range(nd)])
                 for i, n in enumerate(shape))


def _untake(g, indices, axis, shape, mode="raise"):
    """The gradient of np.take: ``g`` added into zeros shaped like the input where its entries
    were taken from (an index taken twice receives both)."""
    xp = array_module(g)
    g = xp.asarray(g)
    out = xp.zeros(shape, g.dtype)
    n = out.size if axis is None else shape[normal_axis(axis, len(shape))]
    idx = xp.asarray(indices)
    if mode == "wrap":
        idx = xp.mod(idx, n)
    elif mode == "clip":
        idx = xp.clip(idx, 0, n - 1)
    if axis is None:
        _scatter_add(out.reshape(-1), idx, g)   # a view: zeros are contiguous
    else:
        _scatter_add(out, (slice(None),) * normal_axis(axis, len(shape)) + (idx,), g)
    return out


@adjoint(_untake)
def untake(y, g, indices, axis, shape, mode="raise"):
    d[g] = np.take(d[y], indices, axis, mode=mode)


def _untake_along(g, indices, axis, shape):
    """The gradient of np.take_along_axis: ``g`` added into zeros where it was taken from."""
    xp = array_module(g)
    g = xp.asarray(g)
    out = xp.zeros(shape, g.dtype)
    indices = xp.asarray(indices)
    if axis is None:
        _scatter_add(out.reshape(-1), indices, g)
    else:
        _scatter_add(out, _along(indices, axis, shape, xp), g)
    return out


@adjoint(_untake_along)
def untake_along(y, g, indices, axis, shape):
    d[g] = np.take_along_axis(d[y], indices, axis)


# The scatter-adds by name, for the other families' rules (np.interp, np.quantile).
scatter_take = _untake
scatter_take_along = _untake_along


# ---------------------------------------------------------------------------------------------
# Tiling and reordering

@adjoint(np.repeat)
def repeat(y, a, repeats, axis=None):
    if is_int(repeats) and axis is None:  # each element's copies are adjacent in d[y]
        d[a] = np.reshape(np.sum(np.reshape(d[y], static((size_of(a), int(repeats)))), axis=1),
                          a.shape)
    elif is_int(repeats):
        d[a] = np.sum(np.reshape(d[y], static(_repeat_split(a, repeats, axis))),
                      axis=static(normal_axis(axis, a.ndim) + 1))
    else:                                  # one count per element: a segment sum
        d[a] = _unrepeat(d[y], repeats, axis, a.shape)


def _repeat_split(a, repeats, axis):
    s = shape_of(a)
    ax = normal_axis(axis, len(s))
    return s[:ax] + (s[ax], int(repeats)) + s[ax + 1:]


def _unrepeat(g, repeats, axis, shape):
    """The gradient of np.repeat with one count per element: the copies of each summed."""
    xp = array_module(g)
    g = xp.asarray(g)
    n = int(np.prod(shape, dtype=np.int64)) if axis is None else shape[normal_axis(axis, len(shape))]
    ax = 0 if axis is None else normal_axis(axis, len(shape))
    counts = repeats.tolist() if hasattr(repeats, "tolist") else repeats
    owner = xp.asarray(np.repeat(np.arange(n), counts))   # the element each copy came from
    moved = xp.moveaxis(g, ax, 0)
    out = xp.zeros((n,) + moved.shape[1:], g.dtype)
    _scatter_add(out, owner, moved)
    return xp.moveaxis(out, 0, ax).reshape(shape)


@adjoint(_unrepeat)
def unrepeat(y, g, repeats, axis, shape):
    d[g] = np.repeat(d[y], repeats, axis)


@adjoint(np.tile)
def tile(y, A, reps):
    # d[y] reshaped to (reps0, n0, reps1, n1, …): summing the reps axes adds up the copies.
    d[A] = np.reshape(np.sum(np.reshape(d[y], static(_tile_split(A, reps)[0])),
                             axis=static(_tile_split(A, reps)[1])), A.shape)


def _tile_split(A, reps):
    reps = (int(reps),) if np.ndim(reps) == 0 else tuple(int(r) for r in reps)
    s = shape_of(A)
    nd = max(len(s), len(reps))
    s, reps = (1,) * (nd - len(s)) + s, (1,) * (nd - len(reps)) + reps
    return tuple(v for r, n in zip(reps, s) for v in (r, n)), tuple(range(0, 2 * nd, 2))


@adjoint(np.pad)
def pad(y, array, pad_width, mode="constant", stat_length=None, constant_values=0,
        end_values=0, reflect_type="even"):
    if mode == "constant":
        d[array] = d[y][static(_pad_inner(array, pad_width))]
        d[constant_values] = _pad_fill_grad(d[y], static(_pad_pairs(array, pad_width)),
                                            static(shape_of(constant_values)))
    elif _pad_gathers(mode, reflect_type):  # every entry copies an input entry (else refused)
        d[array] = _untake(d[y], static(_pad_sources(array, pad_width, mode)), None, array.shape)


def _pad_gathers(mode, reflect_type) -> bool:
    if mode in ("edge", "reflect", "symmetric", "wrap") and reflect_type == "even":
        return True
    refuse(f"np.pad(mode={mode!r}, reflect_type={reflect_type!r}) has no gradient rule: modes "
            f"'constant', 'edge', 'wrap', and 'reflect' and 'symmetric' with reflect_type='even' "
            f"are differentiable")


def _pad_pairs(array, pad_width):
    """pad_width as one (before, after) pair per axis (NumPy's broadcasting of it)."""
    nd = ndim_of(array)
    x = np.round(np.asarray(pad_width)).astype(np.int64)
    if x.size == 1:
        return ((int(x.ravel()[0]),) * 2,) * nd
    if x.size == 2 and x.shape != (2, 1):
        return (tuple(int(v) for v in x.ravel()),) * nd
    return tuple((int(b), int(a)) for b, a in np.broadcast_to(x, (nd, 2)))


def _pad_inner(array, pad_width):
    return tuple(slice(b, b + n) for (b, _), n in zip(_pad_pairs(array, pad_width), shape_of(array)))


def _pad_sources(array, pad_width, mode):
    """For each entry of the padded array, the flat index of the input entry it copies."""
    shape = shape_of(array)
    index = np.arange(int(np.prod(shape, dtype=np.int64))).reshape(shape)
    return np.pad(index, _pad_pairs(array, pad_width), mode=mode)


def _pad_fill_grad(g, pairs, shape):
    """The gradient of np.pad's constant_values (shaped ``shape``): the sums of ``g`` over the
    regions each value filled. NumPy pads axis after axis, so a corner belongs to the last axis
    whose pad it lies in."""
    xp = array_module(g)
    g = xp.asarray(g)
    inner = [slice(b, n - a) for (b, a), n in zip(pairs, g.shape)]
    sums = xp.zeros((len(pairs), 2), g.dtype)
    for i, (b, a) in enumerate(pairs):
        for side, part in enumerate((slice(0, b), slice(g.shape[i] - a, g.shape[i]))):
            region = (slice(None),) * i + (part,) + tuple(inner[i + 1:])
            sums[i, side] = g[region].sum()
    size = int(np.prod(shape, dtype=np.int64))
    if size == 1:       # one value for every pad
        return sums.sum().reshape(shape)
    if size == 2 and tuple(shape) != (2, 1):   # (before, after) for every axis
        return sums.sum(axis=0).reshape(shape)
    return sum_to_shape(sums, shape)


@adjoint(_pad_fill_grad)
def pad_fill_grad(y, g, pairs, shape):
    d[g] = np.pad(np.zeros(static(_padded_inner_shape(g, pairs)), g.dtype), pairs,
                  constant_values=d[y])


def _padded_inner_shape(g, pairs):
    return tuple(n - b - a for n, (b, a) in zip(shape_of(g), pairs))


@adjoint(np.roll)
def roll(y, a, shift, axis=None):
    if isinstance(shift, (int, np.integer, tuple, list)):
        d[a] = np.roll(d[y], static(_negated(shift)), axis)
    else:
        d[a] = np.roll(d[y], -shift, axis)


def _negated(shift):
    return (-np.asarray(shift)).tolist()


@adjoint(np.flip)
def flip(y, m, axis=None):
    d[m] = np.flip(d[y], axis)


@adjoint(np.flipud)
def flipud(y, m):
    d[m] = np.flipud(d[y])


@adjoint(np.fliplr)
def fliplr(y, m):
    d[m] = np.fliplr(d[y])


@adjoint(np.rot90)
def rot90(y, m, k=1, axes=(0, 1)):
    d[m] = np.rot90(d[y], static(-k), axes)


@adjoint(np.rollaxis)
def rollaxis(y, a, axis, start=0):
    d[a] = np.transpose(d[y], static(_rollaxis_inverse(a, axis, start)))


def _rollaxis_inverse(a, axis, start):
    """The permutation undoing np.rollaxis(a, axis, start) (NumPy's rule for ``start``)."""
    n = ndim_of(a)
    axis = normal_axis(axis, n)
    if start < 0:
        start += n
    if axis < start:
        start -= 1
    order = list(range(n))
    order.remove(axis)
    order.insert(start, axis)
    return tuple(int(i) for i in np.argsort(order))


@adjoint(np.atleast_1d, np.atleast_2d, np.atleast_3d)  # one array (several give a list)
def atleast_nd(y, arys):
    d[arys] = np.reshape(d[y], arys.shape)


# ---------------------------------------------------------------------------------------------
# Joining and splitting

class _Join:
    """How np.hstack/vstack/dstack/column_stack joined ``tup``: the pieces' shapes, their shapes
    once promoted (atleast_Nd), the axis and where d[y] splits back into pieces."""

    def __init__(self, kind, tup):
        self.array = not isinstance(tup, (list, tuple))  # an array: its rows are the pieces
        if self.array:
            s = shape_of(tup)
            self.shapes = [s[1:]] * s[0]
        else:
            self.shapes = [shape_of(a) for a in tup]
        self.joined = [_promote(kind, s) for s in self.shapes]
        if kind == "h":
            self.axis = 0 if len(self.joined[0]) == 1 else 1
        else:
            self.axis = {"v": 0, "d": 2, "c": 1}[kind]
        sizes = [s[self.axis] for s in self.joined]
        self.points = [int(p) for p in np.cumsum(sizes)[:-1]]
        self.plain = not self.array and self.shapes == self.joined


def _promote(kind, s):
    if kind == "h":
        return s if len(s) >= 1 else (1,)
    if kind == "v":
        return s if len(s) >= 2 else (1,) * (2 - len(s)) + s
    if kind == "c":
        return s if len(s) >= 2 else (s[0] if s else 1, 1)
    return {0: (1, 1, 1), 1: (1,) + s + (1,), 2: s + (1,)}.get(len(s), s)


def _unjoin(g, points, axis, shapes):
    """The pieces of a joined gradient, each reshaped to its piece's own shape."""
    xp = array_module(g)
    return [p.reshape(s) for p, s in zip(xp.split(xp.asarray(g), points, axis), shapes)]


def _rejoin(grads, shapes, joined, axis, dtype):
    """The gradient of _unjoin: the pieces' gradients joined (zeros for those without one)."""
    xp = array_module(*[g for g in grads if g is not None])
    return xp.concatenate([xp.zeros(j, dtype) if g is None else xp.reshape(g, j)
                           for g, j in zip(grads, joined)], axis)


@adjoint(_unjoin, outputs=2)
def unjoin(ys, g, points, axis, shapes):
    d[g] = _rejoin(d[ys], shapes, static(_joined_shapes(g, points, axis, shapes)), axis, g.dtype)


def _joined_shapes(g, points, axis, shapes):
    """The shapes of the pieces np.split(g, points, axis) (before _unjoin reshapes them)."""
    s = shape_of(g)
    ax = normal_axis(axis, len(s))
    bounds = [0, *points, s[ax]]
    return [s[:ax] + (hi - lo,) + s[ax + 1:] for lo, hi in zip(bounds[:-1], bounds[1:])]


@adjoint(_rejoin)
def rejoin(y, grads, shapes, joined, axis, dtype):
    d[grads] = _unjoin(d[y], static([int(p) for p in np.cumsum([j[axis] for j in joined])[:-1]]),
                       axis, shapes)


@adjoint(np.hstack)
def hstack(y, tup, dtype=None, casting="same_kind"):
    if _Join("h", tup).plain:
        d[tup] = np.split(d[y], static(_Join("h", tup).points), static(_Join("h", tup).axis))
    elif _Join("h", tup).array:
        d[tup] = np.stack(_unjoin(d[y], static(_Join("h", tup).points),
                                  static(_Join("h", tup).axis), static(_Join("h", tup).shapes)))
    else:
        d[tup] = _unjoin(d[y], static(_Join("h", tup).points), static(_Join("h", tup).axis),
                         static(_Join("h", tup).shapes))


@adjoint(np.vstack)
def vstack(y, tup, dtype=None, casting="same_kind"):
    if _Join("v", tup).plain:
        d[tup] = np.split(d[y], static(_Join("v", tup).points), 0)
    elif _Join("v", tup).array:
        d[tup] = np.stack(_unjoin(d[y], static(_Join("v", tup).points), 0,
                                  static(_Join("v", tup).shapes)))
    else:
        d[tup] = _unjoin(d[y], static(_Join("v", tup).points), 0, static(_Join("v", tup).shapes))


@adjoint(np.dstack)
def dstack(y, tup):
    if _Join("d", tup).plain:
        d[tup] = np.split(d[y], static(_Join("d", tup).points), 2)
    elif _Join("d", tup).array:
        d[tup] = np.stack(_unjoin(d[y], static(_Join("d", tup).points), 2,
                                  static(_Join("d", tup).shapes)))
    else:
        d[tup] = _unjoin(d[y], static(_Join("d", tup).points), 2, static(_Join("d", tup).shapes))


@adjoint(np.column_stack)
def column_stack(y, tup):
    if _Join("c", tup).plain:
        d[tup] = np.split(d[y], static(_Join("c", tup).points), 1)
    elif _Join("c", tup).array:
        d[tup] = np.stack(_unjoin(d[y], static(_Join("c", tup).points), 1,
                                  static(_Join("c", tup).shapes)))
    else:
        d[tup] = _unjoin(d[y], static(_Join("c", tup).points), 1, static(_Join("c", tup).shapes))


@adjoint(np.append)
def append(y, arr, values, axis=None):
    if axis is None:  # both flattened
        d[arr] = np.reshape(d[y][static(slice(0, size_of(arr)))], arr.shape)
        d[values] = np.reshape(d[y][static(slice(size_of(arr), None))], values.shape)
    else:
        d[arr] = d[y][static(_append_part(arr, axis, 0))]
        d[values] = d[y][static(_append_part(arr, axis, 1))]


def _append_part(arr, axis, which):
    s = shape_of(arr)
    ax = normal_axis(axis, len(s))
    part = slice(0, s[ax]) if which == 0 else slice(s[ax], None)
    return (slice(None),) * ax + (part,)


@adjoint(np.hsplit, outputs=2)
def hsplit(ys, ary, indices_or_sections):
    d[ary] = unsplit(d[ys], static([v.shape for v in ys]), static(1 if ndim_of(ary) > 1 else 0),
                      ary.dtype)


@adjoint(np.vsplit, outputs=2)
def vsplit(ys, ary, indices_or_sections):
    d[ary] = unsplit(d[ys], static([v.shape for v in ys]), 0, ary.dtype)


@adjoint(np.dsplit, outputs=2)
def dsplit(ys, ary, indices_or_sections):
    d[ary] = unsplit(d[ys], static([v.shape for v in ys]), 2, ary.dtype)


# ---------------------------------------------------------------------------------------------
# Gathers

@adjoint(np.take)
def take(y, a, indices, axis=None, out=None, mode="raise"):
    d[a] = _untake(d[y], indices, axis, a.shape, mode)


@adjoint(np.take_along_axis)
def take_along_axis(y, arr, indices, axis=-1):
    d[arr] = _untake_along(d[y], indices, axis, arr.shape)


@adjoint(np.sort)  # each sorted value came from one entry: put back through argsort
def sort(y, a, axis=-1, kind=None, order=None, stable=None):
    d[a] = _unsort(d[y], np.argsort(a, axis=axis), axis, a.shape)


def _unsort(g, order, axis, shape):
    """The gradient of np.sort: ``g`` put back where np.argsort says each value came from (a
    permutation: each place receives one value, no accumulation needed)."""
    xp = array_module(g)
    g = xp.asarray(g)
    out = xp.empty(shape, g.dtype)
    order = xp.asarray(order)
    if axis is None:
        out.reshape(-1)[order] = g
    else:
        out[_along(order, axis, shape, xp)] = g
    return out


@adjoint(_unsort)
def unsort(y, g, order, axis, shape):
    d[g] = np.take_along_axis(d[y], order, axis)


@adjoint(np.partition)
def partition(y, a, kth, axis=-1, kind="introselect", order=None):
    # y is a permutation of a: its k-th smallest value came from a's k-th smallest, whatever
    # order partition left the others in (ties aside, where any assignment is as good)
    if _no_order(order):
        if axis is None:
            d[a] = _unsort(np.take_along_axis(d[y], np.argsort(y), 0), np.argsort(a, axis=None),
                           None, a.shape)
        else:
            d[a] = _unsort(np.take_along_axis(d[y], np.argsort(y, axis=axis), axis),
                           np.argsort(a, axis=axis), axis, a.shape)


def _no_order(order) -> bool:
    if order is not None:
        refuse("np.partition(..., order=...) (fields of a structured array) has no gradient rule")
    return True


@adjoint(np.unique)  # the values are the distinct entries sorted: each from its first occurrence
def unique(y, ar, return_index=False, return_inverse=False, return_counts=False, axis=None,
           equal_nan=True, sorted=True):
    if _values_only(return_index, return_inverse, return_counts, sorted):  # (else refused)
        d[ar] = _untake(d[y], _unique_index(ar, axis), axis, ar.shape)


def _values_only(return_index, return_inverse, return_counts, sorted_) -> bool:
    if return_index or return_inverse or return_counts or not sorted_:
        refuse("np.unique is differentiable only as np.unique(ar) or np.unique(ar, axis=k) "
                "(sorted, without return_index/return_inverse/return_counts)")
    return True


def _unique_index(ar, axis):
    """Where np.unique's values come from (their first occurrences)."""
    xp = array_module(ar)
    if axis is None:
        return xp.unique(ar, return_index=True)[1]
    return xp.unique(ar, return_index=True, axis=axis)[1]


nondifferentiable(_unique_index)  # integer positions


@adjoint(np.bincount)  # with weights: a scatter-add of the weights, so d[weights] gathers
def bincount(y, x, weights=None, minlength=0):
    if shape_of(weights) and np.asarray(getattr(weights, "val", weights)).dtype != np.float64:
        d[weights] = d[y][x].astype(static(weights.dtype))  # bincount counts in float64
    else:
        d[weights] = d[y][x]
