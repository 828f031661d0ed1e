"""Rules for contractions and diagonals: np.einsum, np.inner, np.vdot, np.kron, np.cross,
np.convolve, np.correlate, np.trace, np.diag, np.diagonal, np.tril, np.triu; the ranges
np.linspace and np.arange; and ``%``.

np.outer, np.tensordot, np.dot and matmul are in arith.py.
"""
import functools
import operator
import string
from collections import Counter

import numpy as np

from ..runtime.backend import array_module
from .registry import adjoint, static, unbroadcast
from .support import ndim_of, normal_axis, refuse, shape_of, size_of, sum_to_shape

# d[...] is the template language's gradient table (see registry.py), never a Python name.
# ruff: noqa: F821


# ---------------------------------------------------------------------------------------------
# np.einsum: the gradient of each operand is another einsum, of d[y] and the other operands,
# whose subscripts are written when code is generated. A label the operand has but the result and
# the other operands lack (a sum over it), or a label repeated in the operand (a diagonal), is
# filled in afterwards by _spread, itself the adjoint of a one-operand einsum.
#
# The template names each operand (op0…op5: a template has no *args), so einsum is
# differentiable with up to six operands, subscripts given as a string.

@adjoint(np.einsum)
def einsum(y, subscripts, op0=None, op1=None, op2=None, op3=None, op4=None, op5=None, out=None,
           optimize=False, dtype=None, order="K", casting="safe"):
    if _operands(subscripts, out) == 1:
        d[op0] = _spread(np.einsum(static(_back(subscripts, 0, op0)), d[y]),
                         static(_fill(subscripts, 0, op0)), op0.shape)
    elif _operands(subscripts, out) == 2:
        if _fill(subscripts, 0, op0, op1) is None:
            d[op0] = np.einsum(static(_back(subscripts, 0, op0, op1)),
                               d[y], op1, optimize=static(_opt(optimize)))
        else:
            d[op0] = _spread(np.einsum(static(_back(subscripts, 0, op0, op1)),
                                       d[y], op1, optimize=static(_opt(optimize))),
                             static(_fill(subscripts, 0, op0, op1)), op0.shape)
        if _fill(subscripts, 1, op0, op1) is None:
            d[op1] = np.einsum(static(_back(subscripts, 1, op0, op1)),
                               op0, d[y], optimize=static(_opt(optimize)))
        else:
            d[op1] = _spread(np.einsum(static(_back(subscripts, 1, op0, op1)),
                                       op0, d[y], optimize=static(_opt(optimize))),
                             static(_fill(subscripts, 1, op0, op1)), op1.shape)
    elif _operands(subscripts, out) == 3:
        if _fill(subscripts, 0, op0, op1, op2) is None:
            d[op0] = np.einsum(static(_back(subscripts, 0, op0, op1, op2)),
                               d[y], op1, op2, optimize=static(_opt(optimize)))
        else:
            d[op0] = _spread(np.einsum(static(_back(subscripts, 0, op0, op1, op2)),
                                       d[y], op1, op2, optimize=static(_opt(optimize))),
                             static(_fill(subscripts, 0, op0, op1, op2)), op0.shape)
        if _fill(subscripts, 1, op0, op1, op2) is None:
            d[op1] = np.einsum(static(_back(subscripts, 1, op0, op1, op2)),
                               op0, d[y], op2, optimize=static(_opt(optimize)))
        else:
            d[op1] = _spread(np.einsum(static(_back(subscripts, 1, op0, op1, op2)),
                                       op0, d[y], op2, optimize=static(_opt(optimize))),
                             static(_fill(subscripts, 1, op0, op1, op2)), op1.shape)
        if _fill(subscripts, 2, op0, op1, op2) is None:
            d[op2] = np.einsum(static(_back(subscripts, 2, op0, op1, op2)),
                               op0, op1, d[y], optimize=static(_opt(optimize)))
        else:
            d[op2] = _spread(np.einsum(static(_back(subscripts, 2, op0, op1, op2)),
                                       op0, op1, d[y], optimize=static(_opt(optimize))),
                             static(_fill(subscripts, 2, op0, op1, op2)), op2.shape)
    elif _operands(subscripts, out) == 4:
        if _fill(subscripts, 0, op0, op1, op2, op3) is None:
            d[op0] = np.einsum(static(_back(subscripts, 0, op0, op1, op2, op3)),
                               d[y], op1, op2, op3, optimize=static(_opt(optimize)))
        else:
            d[op0] = _spread(np.einsum(static(_back(subscripts, 0, op0, op1, op2, op3)),
                                       d[y], op1, op2, op3, optimize=static(_opt(optimize))),
                             static(_fill(subscripts, 0, op0, op1, op2, op3)), op0.shape)
        if _fill(subscripts, 1, op0, op1, op2, op3) is None:
            d[op1] = np.einsum(static(_back(subscripts, 1, op0, op1, op2, op3)),
                               op0, d[y], op2, op3, optimize=static(_opt(optimize)))
        else:
            d[op1] = _spread(np.einsum(static(_back(subscripts, 1, op0, op1, op2, op3)),
                                       op0, d[y], op2, op3, optimize=static(_opt(optimize))),
                             static(_fill(subscripts, 1, op0, op1, op2, op3)), op1.shape)
        if _fill(subscripts, 2, op0, op1, op2, op3) is None:
            d[op2] = np.einsum(static(_back(subscripts, 2, op0, op1, op2, op3)),
                               op0, op1, d[y], op3, optimize=static(_opt(optimize)))
        else:
            d[op2] = _spread(np.einsum(static(_back(subscripts, 2, op0, op1, op2, op3)),
                                       op0, op1, d[y], op3, optimize=static(_opt(optimize))),
                             static(_fill(subscripts, 2, op0, op1, op2, op3)), op2.shape)
        if _fill(subscripts, 3, op0, op1, op2, op3) is None:
            d[op3] = np.einsum(static(_back(subscripts, 3, op0, op1, op2, op3)),
                               op0, op1, op2, d[y], optimize=static(_opt(optimize)))
        else:
            d[op3] = _spread(np.einsum(static(_back(subscripts, 3, op0, op1, op2, op3)),
                                       op0, op1, op2, d[y], optimize=static(_opt(optimize))),
                             static(_fill(subscripts, 3, op0, op1, op2, op3)), op3.shape)
    elif _operands(subscripts, out) == 5:
        if _fill(subscripts, 0, op0, op1, op2, op3, op4) is None:
            d[op0] = np.einsum(static(_back(subscripts, 0, op0, op1, op2, op3, op4)),
                               d[y], op1, op2, op3, op4, optimize=static(_opt(optimize)))
        else:
            d[op0] = _spread(np.einsum(static(_back(subscripts, 0, op0, op1, op2, op3, op4)),
                                       d[y], op1, op2, op3, op4, optimize=static(_opt(optimize))),
                             static(_fill(subscripts, 0, op0, op1, op2, op3, op4)), op0.shape)
        if _fill(subscripts, 1, op0, op1, op2, op3, op4) is None:
            d[op1] = np.einsum(static(_back(subscripts, 1, op0, op1, op2, op3, op4)),
                               op0, d[y], op2, op3, op4, optimize=static(_opt(optimize)))
        else:
            d[op1] = _spread(np.einsum(static(_back(subscripts, 1, op0, op1, op2, op3, op4)),
                                       op0, d[y], op2, op3, op4, optimize=static(_opt(optimize))),
                             static(_fill(subscripts, 1, op0, op1, op2, op3, op4)), op1.shape)
        if _fill(subscripts, 2, op0, op1, op2, op3, op4) is None:
            d[op2] = np.einsum(static(_back(subscripts, 2, op0, op1, op2, op3, op4)),
                               op0, op1, d[y], op3, op4, optimize=static(_opt(optimize)))
        else:
            d[op2] = _spread(np.einsum(static(_back(subscripts, 2, op0, op1, op2, op3, op4)),
                                       op0, op1, d[y], op3, op4, optimize=static(_opt(optimize))),
                             static(_fill(subscripts, 2, op0, op1, op2, op3, op4)), op2.shape)
        if _fill(subscripts, 3, op0, op1, op2, op3, op4) is None:
            d[op3] = np.einsum(static(_back(subscripts, 3, op0, op1, op2, op3, op4)),
                               op0, op1, op2, d[y], op4, optimize=static(_opt(optimize)))
        else:
            d[op3] = _spread(np.einsum(static(_back(subscripts, 3, op0, op1, op2, op3, op4)),
                                       op0, op1, op2, d[y], op4, optimize=static(_opt(optimize))),
                             static(_fill(subscripts, 3, op0, op1, op2, op3, op4)), op3.shape)
        if _fill(subscripts, 4, op0, op1, op2, op3, op4) is None:
            d[op4] = np.einsum(static(_back(subscripts, 4, op0, op1, op2, op3, op4)),
                               op0, op1, op2, op3, d[y], optimize=static(_opt(optimize)))
        else:
            d[op4] = _spread(np.einsum(static(_back(subscripts, 4, op0, op1, op2, op3, op4)),
                                       op0, op1, op2, op3, d[y], optimize=static(_opt(optimize))),
                             static(_fill(subscripts, 4, op0, op1, op2, op3, op4)), op4.shape)
    elif _operands(subscripts, out) == 6:
        if _fill(subscripts, 0, op0, op1, op2, op3, op4, op5) is None:
            d[op0] = np.einsum(static(_back(subscripts, 0, op0, op1, op2, op3, op4, op5)),
                               d[y], op1, op2, op3, op4, op5, optimize=static(_opt(optimize)))
        else:
            d[op0] = _spread(np.einsum(static(_back(subscripts, 0, op0, op1, op2, op3, op4, op5)),
                                       d[y], op1, op2, op3, op4, op5, optimize=static(_opt(optimize))),
                             static(_fill(subscripts, 0, op0, op1, op2, op3, op4, op5)), op0.shape)
        if _fill(subscripts, 1, op0, op1, op2, op3, op4, op5) is None:
            d[op1] = np.einsum(static(_back(subscripts, 1, op0, op1, op2, op3, op4, op5)),
                               op0, d[y], op2, op3, op4, op5, optimize=static(_opt(optimize)))
        else:
            d[op1] = _spread(np.einsum(static(_back(subscripts, 1, op0, op1, op2, op3, op4, op5)),
                                       op0, d[y], op2, op3, op4, op5, optimize=static(_opt(optimize))),
                             static(_fill(subscripts, 1, op0, op1, op2, op3, op4, op5)), op1.shape)
        if _fill(subscripts, 2, op0, op1, op2, op3, op4, op5) is None:
            d[op2] = np.einsum(static(_back(subscripts, 2, op0, op1, op2, op3, op4, op5)),
                               op0, op1, d[y], op3, op4, op5, optimize=static(_opt(optimize)))
        else:
            d[op2] = _spread(np.einsum(static(_back(subscripts, 2, op0, op1, op2, op3, op4, op5)),
                                       op0, op1, d[y], op3, op4, op5, optimize=static(_opt(optimize))),
                             static(_fill(subscripts, 2, op0, op1, op2, op3, op4, op5)), op2.shape)
        if _fill(subscripts, 3, op0, op1, op2, op3, op4, op5) is None:
            d[op3] = np.einsum(static(_back(subscripts, 3, op0, op1, op2, op3, op4, op5)),
                               op0, op1, op2, d[y], op4, op5, optimize=static(_opt(optimize)))
        else:
            d[op3] = _spread(np.einsum(static(_back(subscripts, 3, op0, op1, op2, op3, op4, op5)),
                                       op0, op1, op2, d[y], op4, op5, optimize=static(_opt(optimize))),
                             static(_fill(subscripts, 3, op0, op1, op2, op3, op4, op5)), op3.shape)
        if _fill(subscripts, 4, op0, op1, op2, op3, op4, op5) is None:
            d[op4] = np.einsum(static(_back(subscripts, 4, op0, op1, op2, op3, op4, op5)),
                               op0, op1, op2, op3, d[y], op5, optimize=static(_opt(optimize)))
        else:
            d[op4] = _spread(np.einsum(static(_back(subscripts, 4, op0, op1, op2, op3, op4, op5)),
                                       op0, op1, op2, op3, d[y], op5, optimize=static(_opt(optimize))),
                             static(_fill(subscripts, 4, op0, op1, op2, op3, op4, op5)), op4.shape)
        if _fill(subscripts, 5, op0, op1, op2, op3, op4, op5) is None:
            d[op5] = np.einsum(static(_back(subscripts, 5, op0, op1, op2, op3, op4, op5)),
                               op0, op1, op2, op3, op4, d[y], optimize=static(_opt(optimize)))
        else:
            d[op5] = _spread(np.einsum(static(_back(subscripts, 5, op0, op1, op2, op3, op4, op5)),
                                       op0, op1, op2, op3, op4, d[y], optimize=static(_opt(optimize))),
                             static(_fill(subscripts, 5, op0, op1, op2, op3, op4, op5)), op5.shape)


def _operands(subscripts, out):
    """How many operands (decided when code is generated; refuses the forms without a rule)."""
    if not isinstance(subscripts, str):
        refuse("np.einsum is differentiable with its subscripts as a string "
                "(np.einsum('ij,jk->ik', a, b)), not in the operand/sublist form")
    n = subscripts.partition("->")[0].count(",") + 1
    if out is not None or n > 6:
        refuse("np.einsum is differentiable with at most 6 operands, and without out=")
    return n


def _back(subscripts, k, *ops):
    """The subscripts of the einsum giving operand k's gradient (d[y] in operand k's place)."""
    return _einsum_plan(subscripts, tuple(shape_of(o) for o in ops))[k][0]


def _fill(subscripts, k, *ops):
    """'src->dst' for _spread when operand k's gradient needs filling in, else None."""
    return _einsum_plan(subscripts, tuple(shape_of(o) for o in ops))[k][1]


def _opt(optimize):
    return True if isinstance(optimize, (list, tuple)) else optimize  # a path is the forward's


@functools.lru_cache(maxsize=1024)
def _einsum_plan(subscripts, shapes):
    """For each operand: (subscripts of its gradient einsum, 'src->dst' for _spread or None).

    The subscripts are first made explicit: '...' becomes labels of its own, the implicit
    output is written out, and a size-1 axis broadcast against a longer one gets a label of its
    own (summed over: size 1), so that every label has one size."""
    spec = subscripts.replace(" ", "")
    ins, arrow, out = spec.partition("->")
    ins = ins.split(",")
    if len(ins) != len(shapes):
        raise ValueError(f"einsum {subscripts!r}: {len(ins)} operands in the subscripts, "
                         f"{len(shapes)} given")
    free = iter([c for c in string.ascii_letters if c not in spec])

    def fresh():
        try:
            return next(free)
        except StopIteration:
            raise ValueError(f"einsum {subscripts!r}: too many axes to differentiate") from None

    widths = [len(s) - (len(sub) - 3) for sub, s in zip(ins, shapes) if "..." in sub]
    ell = "".join(fresh() for _ in range(max(widths, default=0)))
    subs = []
    for sub, s in zip(ins, shapes):
        if "..." in sub:
            width = len(s) - (len(sub) - 3)
            sub = sub.replace("...", ell[len(ell) - width:])
        subs.append(sub)
    if arrow:
        out = out.replace("...", ell)
    else:  # implicit output: the broadcast axes, then the labels used once, sorted
        counts = Counter(c for sub in ins for c in sub if c != ".")
        out = ell + "".join(sorted(c for c, m in counts.items() if m == 1))
    size: dict = {}
    for sub, s in zip(subs, shapes):
        for c, n in zip(sub, s):
            size[c] = max(size.get(c, 1), n)
    subs = ["".join(fresh() if n == 1 and size[c] > 1 else c for c, n in zip(sub, s))
            for sub, s in zip(subs, shapes)]
    plans = []
    for k, sub in enumerate(subs):
        have = set(out).union(*[set(t) for j, t in enumerate(subs) if j != k])
        src = "".join(c for c in dict.fromkeys(sub) if c in have)
        back = ",".join(out if j == k else t for j, t in enumerate(subs)) + "->" + src
        plans.append((back, None if src == sub else f"{src}->{sub}"))
    return tuple(plans)


def _spread(g, spec, shape):
    """Operand k's gradient from the einsum labelled ``src`` (spec 'src->dst', the operand's
    labels ``dst``, its ``shape``): labels missing from ``src`` are broadcast, and a repeated
    label puts ``g`` on that diagonal (zeros elsewhere). The adjoint of einsum('dst->src')."""
    if spec is None:
        return g
    xp = array_module(g)
    src, dst = spec.split("->")
    uniq = "".join(dict.fromkeys(dst))
    size = dict(zip(dst, shape))
    g = xp.asarray(g).reshape([size[c] if c in src else 1 for c in uniq])
    g = xp.broadcast_to(g, [size[c] for c in uniq])
    if uniq == dst:
        return g
    out = xp.zeros(shape, g.dtype)
    # out[i, i, j] = g[i, j] for dst 'iij': one arange per label, broadcast along its own axis
    ar = {c: xp.arange(size[c]).reshape([-1 if u == c else 1 for u in uniq]) for c in uniq}
    out[tuple(ar[c] for c in dst)] = g
    return out


@adjoint(_spread)
def spread(y, g, spec, shape):
    if spec is None:
        d[g] = d[y]
    else:  # copied: a one-operand einsum may be a view of d[y], and einsum is not known as one
        d[g] = np.einsum(static(_reverse(spec)), d[y]).copy()


def _reverse(spec):
    src, dst = spec.split("->")
    return f"{dst}->{src}"


# ---------------------------------------------------------------------------------------------

@adjoint(np.inner)
def inner(y, a, b):
    if ndim_of(a) == 0 or ndim_of(b) == 0:  # a product with a scalar
        d[a] = unbroadcast(d[y] * b, a)
        d[b] = unbroadcast(d[y] * a, b)
    else:  # y's axes: a's but the last, then b's but the last
        d[a] = np.tensordot(d[y], b, static(_inner_axes(a, b, 0)))
        d[b] = np.tensordot(d[y], a, static(_inner_axes(a, b, 1)))


def _inner_axes(a, b, which):
    na, nb = ndim_of(a) - 1, ndim_of(b) - 1
    if which == 0:
        return [list(range(na, na + nb)), list(range(nb))]
    return [list(range(na)), list(range(na))]


@adjoint(np.kron)
def kron(y, a, b):
    # d[y] reshaped to (a0, b0, a1, b1, …) is the outer product of a and b, axis by axis.
    d[a] = np.reshape(np.einsum(static(_kron(a, b)[1]), np.reshape(d[y], static(_kron(a, b)[0])),
                                np.reshape(b, static(_kron(a, b)[3]))), a.shape)
    d[b] = np.reshape(np.einsum(static(_kron(a, b)[2]), np.reshape(d[y], static(_kron(a, b)[0])),
                                np.reshape(a, static(_kron(a, b)[4]))), b.shape)


def _kron(a, b):
    """(split shape of d[y], subscripts for d[a], for d[b], b's and a's shapes padded)."""
    sa, sb = shape_of(a), shape_of(b)
    nd = max(len(sa), len(sb))
    sa, sb = (1,) * (nd - len(sa)) + sa, (1,) * (nd - len(sb)) + sb
    la, lb = string.ascii_letters[:nd], string.ascii_letters[nd:2 * nd]
    split = tuple(v for p in zip(sa, sb) for v in p)
    ly = "".join(p + q for p, q in zip(la, lb))
    return split, f"{ly},{lb}->{la}", f"{ly},{la}->{lb}", sb, sa


@adjoint(np.cross)
def cross(y, a, b, axisa=-1, axisb=-1, axisc=-1, axis=None):
    if _cross_last(a, b, y, axisa, axisb, axisc, axis):
        d[a] = unbroadcast(np.cross(b, d[y]), a)
        d[b] = unbroadcast(np.cross(d[y], a), b)


def _cross_last(a, b, y, axisa, axisb, axisc, axis):
    """Are the vectors 3-vectors along the last axes? (Refuses the other forms.)"""
    if axis is not None:
        axisa = axisb = axisc = axis
    sa, sb = shape_of(a), shape_of(b)
    last = (normal_axis(axisa, len(sa)) == len(sa) - 1 and normal_axis(axisb, len(sb)) == len(sb) - 1
            and normal_axis(axisc, ndim_of(y)) == ndim_of(y) - 1)
    if not last or sa[-1] != 3 or sb[-1] != 3:
        refuse("np.cross is differentiable for 3-vectors along the last axis (axis=-1); "
                "move the vector axis last with np.moveaxis")
    return True


@adjoint(np.vdot)   # the dot product of the flattened arrays (real: no conjugate)
def vdot(y, a, b):
    d[a] = np.reshape(d[y] * b, a.shape)
    d[b] = np.reshape(d[y] * a, b.shape)


# ---------------------------------------------------------------------------------------------
# 1-D convolution and correlation. The full convolution y[k] = sum_i a[i] v[k - i] has gradients
# correlate(g, v, 'valid') and correlate(g, a, 'valid'); modes 'same' and 'valid' are slices of
# it, so their d[y] is first padded with zeros to the full length. correlate(a, v) is
# convolve(a, v[::-1]) in full mode (its 'same' slice is placed differently).

def _conv_pads(a, v, mode, correlate):
    """(before, after): where ``mode``'s result lies in the full one (NumPy's placement)."""
    na, nv = size_of(a), size_of(v)
    full = na + nv - 1
    m = min(na, nv)
    if mode == "full":
        return (0, 0)
    if mode == "same":
        before = m // 2 if correlate and na < nv else (m - 1) // 2
        return (before, full - max(na, nv) - before)
    if mode == "valid":
        return (m - 1, m - 1)
    refuse(f"np.convolve/np.correlate: unknown mode {mode!r}")


@adjoint(np.convolve)
def convolve(y, a, v, mode="full"):
    gf = np.pad(d[y], static(_conv_pads(a, v, mode, False)))
    d[a] = np.correlate(gf, v, "valid")
    d[v] = np.correlate(gf, a, "valid")


@adjoint(np.correlate)
def correlate(y, a, v, mode="valid"):
    gf = np.pad(d[y], static(_conv_pads(a, v, mode, True)))
    d[a] = np.correlate(gf, np.flip(v), "valid")
    d[v] = np.flip(np.correlate(gf, a, "valid"))


# ---------------------------------------------------------------------------------------------
# Diagonals and triangles

def _undiagonal(g, shape, offset, axis1, axis2):
    """The gradient of np.diagonal: zeros shaped like the input, ``g`` on that diagonal."""
    xp = array_module(g)
    g = xp.asarray(g)
    out = xp.zeros(shape, g.dtype)
    nd = len(shape)
    view = xp.moveaxis(out, (normal_axis(axis1, nd), normal_axis(axis2, nd)), (-2, -1))  # writable
    n1, n2 = view.shape[-2:]
    r0, c0 = max(-offset, 0), max(offset, 0)
    k = max(0, min(n1 - r0, n2 - c0))
    view[..., xp.arange(r0, r0 + k), xp.arange(c0, c0 + k)] = g
    return out


@adjoint(_undiagonal)
def undiagonal(y, g, shape, offset, axis1, axis2):
    d[g] = np.diagonal(d[y], offset, axis1, axis2)


@adjoint(np.diagonal)
def diagonal(y, a, offset=0, axis1=0, axis2=1):
    d[a] = _undiagonal(d[y], a.shape, offset, axis1, axis2)


@adjoint(np.trace)
def trace(y, a, offset=0, axis1=0, axis2=1, dtype=None, out=None):
    d[a] = _undiagonal(np.broadcast_to(np.expand_dims(d[y], -1),
                                       static(_diagonal_shape(a, offset, axis1, axis2))),
                       a.shape, offset, axis1, axis2)


def _diagonal_shape(a, offset, axis1, axis2):
    """The shape of np.diagonal(a, offset, axis1, axis2): the other axes, then the diagonal."""
    s = shape_of(a)
    i, j = normal_axis(axis1, len(s)), normal_axis(axis2, len(s))
    k = max(0, min(s[i] - max(-offset, 0), s[j] - max(offset, 0)))
    return tuple(n for m, n in enumerate(s) if m not in (i, j)) + (k,)


@adjoint(np.diag)
def diag(y, v, k=0):
    if ndim_of(v) == 1:  # v on the k-th diagonal of a matrix
        d[v] = np.diagonal(d[y], k)
    else:              # the k-th diagonal of the matrix v
        d[v] = _undiagonal(d[y], v.shape, k, 0, 1)


@adjoint(np.tril)
def tril(y, m, k=0):
    if ndim_of(m) == 1:  # a vector is broadcast to the rows of a square matrix
        d[m] = np.sum(np.tril(d[y], k), axis=0)
    else:
        d[m] = np.tril(d[y], k)


@adjoint(np.triu)
def triu(y, m, k=0):
    if ndim_of(m) == 1:
        d[m] = np.sum(np.triu(d[y], k), axis=0)
    else:
        d[m] = np.triu(d[y], k)


# ---------------------------------------------------------------------------------------------
# Ranges: y = start + (stop - start) * t with t = i / (num - 1) (i / num without the endpoint)

@adjoint(np.linspace)
def linspace(y, start, stop, num=50, endpoint=True, retstep=False, dtype=None, axis=0,
             device=None):
    if _float_result(y, retstep):  # an integer dtype rounds: no gradient
        if shape_of(start) == _broadcast_shape(y, axis):
            d[start] = np.tensordot(d[y], np.linspace(1.0, 0.0, num, endpoint=endpoint,
                                                      dtype=static(y.dtype)),
                                    static(([normal_axis(axis, y.ndim)], [0])))
        else:
            d[start] = sum_to_shape(np.tensordot(d[y], np.linspace(1.0, 0.0, num, endpoint=endpoint,
                                                              dtype=static(y.dtype)),
                                            static(([normal_axis(axis, y.ndim)], [0]))), start.shape)
        if shape_of(stop) == _broadcast_shape(y, axis):
            d[stop] = np.tensordot(d[y], np.linspace(0.0, 1.0, num, endpoint=endpoint,
                                                     dtype=static(y.dtype)),
                                   static(([normal_axis(axis, y.ndim)], [0])))
        else:
            d[stop] = sum_to_shape(np.tensordot(d[y], np.linspace(0.0, 1.0, num, endpoint=endpoint,
                                                             dtype=static(y.dtype)),
                                           static(([normal_axis(axis, y.ndim)], [0]))), stop.shape)


def _float_result(y, retstep=False) -> bool:
    if retstep:
        refuse("np.linspace(..., retstep=True) is not differentiable: compute the step from "
                "start and stop")
    dtype = getattr(y, "dtype", None)   # (a dtype is falsy: no `or`)
    return dtype is None or np.issubdtype(dtype, np.floating)


def _broadcast_shape(y, axis):
    s = list(shape_of(y))
    s.pop(normal_axis(axis, len(s)))
    return tuple(s)


@adjoint(np.arange)  # arange(start, stop, step): start + step * i, i < ceil((stop - start) / step)
def arange(y, start_or_stop, stop=None, step=1, dtype=None, device=None, like=None):
    if stop is not None and _float_result(y):  # arange(stop) starts at 0: no gradient
        d[start_or_stop] = np.sum(d[y])
        d[step] = np.sum(d[y] * np.arange(y.size, dtype=y.dtype))


# ---------------------------------------------------------------------------------------------
# a % b = a - b * floor(a / b): taken off the non-differentiable list (its derivative in a is 1).

@adjoint(operator.mod, np.remainder)
def mod(y, a, b):
    d[a] = unbroadcast(d[y], a)
    d[b] = unbroadcast(-d[y] * np.floor_divide(a, b), b)
