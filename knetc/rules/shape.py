"""Rules for shape manipulation and indexing."""
import operator

import numpy as np

from ..compiler import ir
from ..compiler.tape import Sym, one_int
from ..compiler.values import index_expr, value_expr
from ..runtime import prims
from ..runtime.backend import array_module
from .registry import adjoint, adjoint_emitter, nondifferentiable, static, unbroadcast


@adjoint(np.reshape)
def reshape(y, a, shape=None, order="C"):
    if y.ndim == 0:   # d[y] may be a Python float (the loss's seed): keep a's dtype
        d[a] = np.full(a.shape, d[y], a.dtype)
    else:
        d[a] = np.reshape(d[y], a.shape)


@adjoint(np.transpose)
def transpose(y, a, axes=None):
    if axes is None:
        d[a] = np.transpose(d[y])
    else:
        d[a] = np.transpose(d[y], static(tuple(int(i) for i in np.argsort(axes))))


@adjoint(np.swapaxes)
def swapaxes(y, a, axis1, axis2):
    d[a] = np.swapaxes(d[y], axis1, axis2)


@adjoint(np.moveaxis)
def moveaxis(y, a, source, destination):
    d[a] = np.moveaxis(d[y], destination, source)


@adjoint(np.expand_dims, np.squeeze, np.ravel)
def expand_dims(y, a, axis=None):
    if y.ndim == 0:
        d[a] = np.full(a.shape, d[y], a.dtype)
    else:
        d[a] = np.reshape(d[y], a.shape)


@adjoint(np.broadcast_to)
def broadcast_to(y, array, shape):
    d[array] = unbroadcast(d[y], array)


@adjoint(np.full)
def full(y, shape, fill_value, dtype=None, order="C"):
    d[fill_value] = unbroadcast(d[y], fill_value)


@adjoint(np.full_like)
def full_like(y, a, fill_value, dtype=None, order="K", subok=True, shape=None):
    d[fill_value] = unbroadcast(d[y], fill_value)


@adjoint_emitter(np.concatenate)
def concatenate(E, y, arrays, axis=0):
    """Each piece's gradient is a slice of d[y] (a view: no np.split, one statement per piece)."""
    dy = E.dout()
    start = 0
    for a in arrays:
        shape = np.shape(a.val if isinstance(a, Sym) else a)
        n = int(np.prod(shape)) if axis is None else shape[axis]
        if isinstance(a, Sym) and a.diff:
            part = ir.Slice(ir.Const(start), ir.Const(start + n))
            if axis is None:
                piece = ir.method(ir.Subscript(dy, part), "reshape", ir.lit(tuple(shape)))
            else:
                ax = axis % y.ndim
                piece = ir.Subscript(dy, ir.Tuple([ir.Slice()] * ax + [part]) if ax else part)
            E.grad_of_piece(a, piece)
        start += n


@adjoint(np.split, np.array_split, outputs=2)  # outputs > 1: one result per piece, however many
def split(ys, ary, indices_or_sections, axis=0):
    d[ary] = unsplit(d[ys], static([v.shape for v in ys]), axis, ary.dtype)


def unsplit(grads, shapes, axis, dtype):
    """The gradient of np.split: the pieces' gradients joined, zeros for those without one
    (made on the pieces' device)."""
    xp = array_module(*[g for g in grads if g is not None])
    return xp.concatenate([xp.zeros(s, dtype) if g is None else g for g, s in zip(grads, shapes)],
                          axis)


@adjoint(unsplit)  # gradients of gradients
def unsplit_adjoint(y, grads, shapes, axis, dtype):
    d[grads] = np.split(d[y], static(_split_points(shapes, axis)), axis)


@adjoint(np.stack)
def stack(y, arrays, axis=0):
    d[arrays] = np.moveaxis(d[y], axis, 0)


def _split_points(arrays, axis):
    """Where to split d[y] back into pieces shaped like ``arrays`` (arrays or shapes)."""
    sizes = [(a if type(a) is tuple else np.shape(a.val if isinstance(a, Sym) else a))[axis]
             for a in arrays]
    return [int(s) for s in np.cumsum(sizes)[:-1]]


def _scatter_mode(idx):
    """Can this index select one element twice (integer arrays, lists)? Then the gradient must
    accumulate: "rows" for one integer array on the first axis (an embedding lookup), "at" for
    other advanced indices (np.add.at), "basic" for basic indexing and boolean masks ("row"
    when it is one int: one row of the first axis, an embedding's ``E[i]``)."""
    parts = idx if type(idx) is tuple else (idx,)
    for p in parts:
        v = p.val if isinstance(p, Sym) else p
        if isinstance(v, list) or (hasattr(v, "dtype") and np.ndim(v) > 0 and v.dtype != bool):
            return "rows" if type(idx) is not tuple and not isinstance(v, list) else "at"
    if one_int(idx):
        return "row"
    return "basic"


@adjoint_emitter(operator.getitem)
def getindex(E, y, x, idx):
    if E.needs("x"):
        mode = _scatter_mode(idx)
        # np.add.at and index_add take the index as a value (slice(...)); basic indexing a:b
        index = index_expr(idx, E.tape) if mode in ("basic", "row") and not E.pure \
            else value_expr(idx, E.tape)
        E.scatter("x", index, E.dout(), mode)


@adjoint(prims.index_add)
def index_add(y, base, idx, v):
    d[base] = d[y]
    d[v] = d[y][idx]


@adjoint(prims.astype)
def astype(y, x, dtype):
    d[x] = d[y].astype(static(x.dtype))


@adjoint(np.asarray, np.array, np.ascontiguousarray)
def asarray(y, a, dtype=None):
    d[a] = d[y]


# Selections by value: integer positions (no gradient); np.extract and np.compress are gathers
# (specialize.Tape.apply writes them as indexing). Their shapes depend on the data: guarded.
nondifferentiable(np.flatnonzero, np.argwhere)
