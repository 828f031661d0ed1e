"""Python values and primitive calls of the trace, written as IR expressions.

A traced value (Sym) becomes a ``Var``; plain constants become literals; any other object (a
function, an array constant, a layer spec) is referred to by a name in the generated code's
namespace (``Tape.ref``). A primitive call is written the way one writes it by hand: operators
for operators, ``x[1:3, None]`` for indexing, ``x.sum(axis=0)`` for reductions.
"""
from __future__ import annotations

import operator

import numpy as np

from .. import tree
from . import ir
from .selectors import IntArg
from .tape import Sym

_INFIX = {operator.add: "+", operator.sub: "-", operator.mul: "*", operator.truediv: "/",
          operator.floordiv: "//", operator.mod: "%", operator.pow: "**", operator.matmul: "@",
          operator.lt: "<", operator.le: "<=", operator.gt: ">", operator.ge: ">=",
          operator.eq: "==", operator.ne: "!=", operator.and_: "&", operator.or_: "|",
          operator.xor: "^"}
_PREFIX = {operator.neg: "-", operator.invert: "~", operator.pos: "+"}
# Reductions written as methods (x.sum(axis=0)): the same result without np.sum's Python wrapper.
_METHOD_FORM = {np.sum: "sum", np.mean: "mean", np.max: "max", np.min: "min", np.prod: "prod"}
_METHOD_KW = {"axis", "keepdims", "dtype"}
_SCALARS = (bool, int, float, str, type(None))


def value_expr(value, tape) -> ir.Expr:
    """The expression for a value in generated code."""
    t = type(value)
    if t is Sym:
        return ir.Var(value)
    if t is IntArg:     # an argument's int written into the code: its value steers
        return ir.Const(value.steer())
    if t in _SCALARS or value is Ellipsis:
        return ir.Const(value)
    if t is tuple:
        return ir.Tuple([value_expr(v, tape) for v in value])
    if t is list:
        return ir.List([value_expr(v, tape) for v in value])
    if t is dict:
        return ir.Dict([value_expr(k, tape) for k in value], [value_expr(v, tape) for v in value.values()])
    if t is slice:
        return ir.Call(ir.Name("slice"), [value_expr(p, tape) for p in (value.start, value.stop, value.step)])
    if isinstance(value, np.dtype):
        return dtype_expr(value)
    if isinstance(value, np.generic) and value.ndim == 0 and not isinstance(value, np.void):
        return ir.Const(value)
    if tree.node_type(t) and any(type(v) is Sym for v in tree.leaves(value)):
        # A NamedTuple, dataclass or registered class holding traced values (has_aux returns
        # one): rebuilt by its registered unflatten around its children's expressions.
        children, aux = tree.node_flatten(value)
        make = ir.Name(tape.ref(tree.registration(t)[1], f"make_{t.__name__}"))
        aux_expr = ir.NONE if aux is None else ir.Name(tape.ref(aux, "aux"))
        return ir.call(make, aux_expr, ir.List([value_expr(v, tape) for v in children]))
    return ir.Name(tape.ref(value, _hint(value)))


_DTYPES: dict = {}


def dtype_expr(dtype) -> ir.Expr:
    """``np.float32`` for a dtype (cached: dtype.name is surprisingly slow)."""
    e = _DTYPES.get(dtype)
    if e is None:
        name = dtype.name
        numeric = dtype.kind in "biufc" and isinstance(getattr(np, name, None), type)
        e = _DTYPES[dtype] = (ir.np_fn(name) if numeric
                              else ir.call(ir.np_fn("dtype"), ir.Const(dtype.str)))
    return e


def _hint(value):
    if isinstance(value, np.ndarray) or hasattr(value, "__cuda_array_interface__"):
        return "const"
    name = getattr(value, "__name__", None)
    return name if isinstance(name, str) and name.isidentifier() else type(value).__name__.lower()


def index_expr(idx, tape) -> ir.Expr:
    """A subscript's index: slices as ``a:b``, several parts as a tuple."""
    if type(idx) is tuple:
        if not idx:     # x[()]: a 0-d array's element
            return ir.Const(())
        return ir.Tuple([_index_part(p, tape) for p in idx])
    return _index_part(idx, tape)


def _index_part(p, tape):
    if type(p) is slice:
        return ir.Slice(*(None if v is None else value_expr(v, tape) for v in (p.start, p.stop, p.step)))
    return value_expr(p, tape)


def call_expr(fn, args, kwargs, tape) -> ir.Expr:
    """A primitive call, in operator form where Python has one."""
    if fn is operator.getitem:
        return ir.Subscript(value_expr(args[0], tape), index_expr(args[1], tape))
    hashable = getattr(type(fn), "__hash__", None) is not None
    op = _INFIX.get(fn) if hashable else None
    if op is not None and len(args) == 2 and not kwargs:
        return ir.BinOp(op, value_expr(args[0], tape), value_expr(args[1], tape))
    op = _PREFIX.get(fn) if hashable else None
    if op is not None:
        return ir.UnaryOp(op, value_expr(args[0], tape))
    method = _METHOD_FORM.get(fn) if hashable else None
    if method is not None and args and type(args[0]) is Sym and hasattr(args[0].val, "ndim") \
            and len(args) <= 2 and set(kwargs) <= _METHOD_KW:
        x = value_expr(args[0], tape)
        rest = [value_expr(a, tape) for a in args[1:]]
        kw = [(k, value_expr(v, tape)) for k, v in kwargs.items()]
        count = _mean_count(args, kwargs) if fn is np.mean else None
        if count:   # the count is known: sum / n is mean's own arithmetic without its overhead
            return ir.BinOp("/", ir.Call(ir.Attr(x, "sum"), rest, kw), ir.Const(count))
        return ir.Call(ir.Attr(x, method), rest, kw)
    return ir.Call(value_expr(fn, tape), [value_expr(a, tape) for a in args],
                   [(k, value_expr(v, tape)) for k, v in kwargs.items()])


def _mean_count(args, kwargs) -> int | None:
    """How many elements each mean of a float32/float64 array averages, when code is written
    (None where mean computes differently: float16 accumulates in float32, ints give floats)."""
    x = args[0].val
    if "dtype" in kwargs or getattr(x, "dtype", None) not in (np.float32, np.float64):
        return None
    axis = args[1] if len(args) > 1 else kwargs.get("axis")
    if axis is None:
        return x.size or None
    try:
        axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
        return int(np.prod([x.shape[a] for a in axes])) or None
    except (TypeError, IndexError):
        return None
