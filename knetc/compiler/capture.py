"""Generated code for CUDA-graph capture: ``a @ b`` becomes ``np.matmul(a, b)``.

CuPy's ``@`` calls cuBLAS through CuPy, which refuses while a stream is capturing; the code a
``knetc.graph_step`` captures is compiled with every matrix product as ``np.matmul`` and ``np``
bound to ``runtime.capturable``, whose matmul calls cuBLAS itself (runtime/cublas.py).  The
rewrite walks every expression of every statement; statements keep their other fields.
"""
from __future__ import annotations

import copy

from .. import errors
from . import ir

# The expression fields of each statement type (None where a field may be absent).
STMT_FIELDS: dict[type, tuple[str, ...]] = {
    ir.Assign: ("value",), ir.Accumulate: ("base", "value"),
    ir.ScatterAdd: ("base", "index", "value", "zeros"), ir.AddInPlace: ("value", "index"),
    ir.Do: ("value",), ir.Guard: ("test",), ir.Store: ("target", "value"),
    ir.Return: ("value",), ir.Free: (),
}


def matmul_calls(stmts: list[ir.Stmt]) -> list[ir.Stmt]:
    """``stmts`` with every ``a @ b`` written ``np.matmul(a, b)`` (unchanged statements kept)."""
    return [_stmt(s) for s in stmts]


def _stmt(s: ir.Stmt) -> ir.Stmt:
    fields = STMT_FIELDS.get(type(s))
    if fields is None:
        raise errors.KnetcError(f"knetc internal: the capture rewrite does not know the statement "
                                f"type {type(s).__name__} ({s.render()})")
    new = {f: _expr(getattr(s, f)) for f in fields}
    if all(new[f] is getattr(s, f) for f in fields):
        return s
    out = copy.copy(s)
    for f, v in new.items():
        setattr(out, f, v)
    out._uses = None                # recomputed from the new expressions
    if type(out) is ir.Assign:
        out._fresh = None
    return out


def _expr(e):
    if e is None:
        return None
    t = type(e)
    if t is ir.BinOp:
        left, right = _expr(e.left), _expr(e.right)
        if e.op == "@":
            return ir.Call(ir.np_fn("matmul"), [left, right])
        return e if left is e.left and right is e.right else ir.BinOp(e.op, left, right)
    if t is ir.Call:
        func = _expr(e.func)
        args = [_expr(a) for a in e.args]
        kwargs = [(k, _expr(v)) for k, v in e.kwargs]
        same = func is e.func and all(x is y for x, y in zip(args, e.args)) and \
            all(v is w for (_, v), (_, w) in zip(kwargs, e.kwargs))
        return e if same else ir.Call(func, args, kwargs)
    if t is ir.UnaryOp:
        x = _expr(e.operand)
        return e if x is e.operand else ir.UnaryOp(e.op, x)
    if t is ir.Attr:
        x = _expr(e.value)
        return e if x is e.value else ir.Attr(x, e.attr)
    if t is ir.Subscript:
        v, i = _expr(e.value), _expr(e.index)
        return e if v is e.value and i is e.index else ir.Subscript(v, i)
    if t is ir.Tuple or t is ir.List:
        elts = [_expr(x) for x in e.elts]
        return e if all(x is y for x, y in zip(elts, e.elts)) else t(elts)
    if t is ir.Dict:
        keys, values = [_expr(x) for x in e.keys], [_expr(x) for x in e.values]
        same = all(x is y for x, y in zip(keys + values, e.keys + e.values))
        return e if same else ir.Dict(keys, values)
    if t is ir.Slice:
        parts = [_expr(p) for p in e.parts()]
        return e if all(x is y for x, y in zip(parts, e.parts())) else ir.Slice(*parts)
    return e        # Name, Var, Const: no sub-expressions
