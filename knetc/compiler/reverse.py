"""Reverse mode over the tape: each differentiable op's rule writes its adjoint statements (IR).

Only what is needed is written: ops whose result reaches the loss and depends on the
differentiated argument, gradients only for inputs that need one. A value's first gradient
contribution names it (or is used as it is, when it is a name or a constant slice of one); further
ones are ``Accumulate`` statements, which ``optimize.lower_accumulation`` turns into in-place adds
where the program owns the buffer. No zero-initialised accumulators; unbroadcasting is written only
where shapes differ.
"""
from __future__ import annotations

import numpy as np

from . import ir
from .tape import Sym, syms_in
from .values import dtype_expr, value_expr


def _constant_view(e: ir.Expr) -> bool:
    """``dh[0:64]``, ``dh[:, 3:5]``: a constant basic slice of a named value, read inline by
    whatever uses it rather than named by a statement of its own."""
    if type(e) is not ir.Subscript or type(e.value) is not ir.Name:
        return False
    parts = e.index.elts if type(e.index) is ir.Tuple else (e.index,)
    for p in parts:
        if type(p) is ir.Slice:
            if any(q is not None and type(q) is not ir.Const for q in p.parts()):
                return False
        elif type(p) is not ir.Const or type(p.value) is not int:
            return False
    return True


class Adjoint:
    """The adjoint statements of one trace, and the gradient expression of each value."""

    def __init__(self, tape, pure=False, inline_views=True):
        self.tape, self.pure, self.inline_views = tape, pure, inline_views
        self.stmts: list[ir.Stmt] = []
        self.grads: dict[int, ir.Expr] = {}   # id(sym) -> the expression of its gradient
        self.nbytes: dict[str, int] = {}      # gradient name -> size, for the freeing pass

    def run(self, loss: Sym):
        self.seed(loss)
        for op in reversed(self.tape.ops):
            if op.kind != "call" or not op.rule.differentiable:
                continue
            outs = op.outs if type(op.outs) is tuple else (op.outs,)
            if not any(o is not None and o.diff and id(o) in self.grads for o in outs):
                continue
            Emit(self, op).run()
        return self

    def seed(self, loss: Sym):
        """d(loss)/d(loss): the float 1.0 for a scalar, ones for a size-1 array (shape (1, 1))."""
        if loss.ndim == 0:
            self.grads[id(loss)] = ir.ONE
            return
        name = self.tape.newname("d" + loss.name)
        ones = ir.call(ir.np_fn("ones"), ir.lit(tuple(loss.shape)), dtype_expr(loss.dtype))
        self.emit(ir.Assign(name, ones, back=True))
        self.grads[id(loss)] = ir.Name(name)

    def grad_of(self, sym) -> ir.Expr | None:
        return self.grads.get(id(sym))

    def emit(self, stmt: ir.Stmt):
        self.stmts.append(stmt)

    def contribute(self, sym: Sym, value: ir.Expr, loc):
        """Add ``value`` (shaped like ``sym``) to sym's gradient."""
        g = self.grads.get(id(sym))
        if g is None:
            if type(value) in (ir.Name, ir.Const) or (self.inline_views and _constant_view(value)):
                self.grads[id(sym)] = value
                return
            name = self.tape.newname("d" + sym.name)
            self.emit(ir.Assign(name, value, loc, back=True))
        else:
            name = self.tape.newname("d" + sym.name)
            inplace_ok = isinstance(sym.val, np.ndarray) and sym.val.ndim > 0
            self.emit(ir.Accumulate(name, g, value, inplace_ok, loc))
        self.grads[id(sym)] = ir.Name(name)
        self.nbytes[name] = sym.nbytes

    def scatter(self, sym: Sym, index: ir.Expr, value: ir.Expr, mode: str, loc):
        """Gradient of an indexing read ``sym[index]``: add ``value`` at ``index``."""
        base = self.grads.get(id(sym))
        zeros = None if base is not None else \
            ir.call(ir.np_fn("zeros"), ir.lit(tuple(sym.shape)), dtype_expr(sym.dtype))
        name = self.tape.newname("d" + sym.name)
        self.emit(ir.ScatterAdd(name, base, index, value, mode, zeros, loc))
        self.grads[id(sym)] = ir.Name(name)
        self.nbytes[name] = sym.nbytes


class Emit:
    """What a rule's emitter sees: the op's arguments by parameter name, and ways to write code.

    Every method returns or takes IR expressions (``knetc.compiler.ir``)."""

    def __init__(self, adj: Adjoint, op):
        self.adj, self.op, self.tape, self.rule = adj, op, adj.tape, op.rule
        self.bound = op.rule.bind(op.args, op.kwargs)
        self.pure = adj.pure

    def run(self):
        rule, op = self.rule, self.op
        statics = [op.outs]
        if rule.forward is not None:
            if op.saved is None:
                op.saved = Sym(self.tape, self.tape.newname(rule.out_params[1]), op.saved_val, False,
                               False)
            statics.append(op.saved)
        statics += [self.bound[p] for p in rule.params]
        rule.emitter(self, *statics)

    # -- reading ------------------------------------------------------------------------
    def a(self, p) -> ir.Expr:
        """Argument ``p`` (or the result / saved value)."""
        rule = self.rule
        if p == rule.out_params[0]:
            return value_expr(self.op.outs, self.tape)
        if len(rule.out_params) > 1 and p == rule.out_params[1]:
            return ir.Var(self.op.saved)
        return value_expr(self.bound[p], self.tape)

    def dout(self) -> ir.Expr:
        """The result's gradient (a tuple for several results, None where none)."""
        outs = self.op.outs
        if type(outs) is tuple:
            return ir.Tuple([(self.adj.grad_of(o) if o is not None else None) or ir.NONE
                             for o in outs])
        return self.adj.grad_of(outs)

    def static(self, p, attr) -> ir.Expr:
        v = self.bound.get(p, self.op.outs if p == self.rule.out_params[0] else None)
        value = getattr(v, attr) if isinstance(v, Sym) else getattr(np.asarray(v), attr)
        return self.lit(value if attr != "shape" else tuple(value))

    def lit(self, value) -> ir.Expr:
        return value_expr(value, self.tape)

    def ref(self, obj) -> ir.Expr:
        return ir.Name(self.tape.ref(obj))

    def needs(self, p) -> bool:
        v = self.bound.get(p)
        if type(v) is Sym:
            return v.diff
        return any(s.diff for s in syms_in(v)) if v is not None else False

    # -- writing ------------------------------------------------------------------------
    def temp(self, name, value: ir.Expr) -> ir.Name:
        t = self.tape.newname(name)
        self.adj.emit(ir.Assign(t, value, self.op.loc, back=True))
        return ir.Name(t)

    def grad(self, p, value: ir.Expr):
        v = self.bound[p]
        if type(v) is Sym:
            self.adj.contribute(v, value, self.op.loc)
        else:  # a list/tuple of arrays (concatenate, stack): split the result
            t = self.temp("d" + p, value)
            for i, s in enumerate(v):
                if type(s) is Sym and s.diff:
                    self.adj.contribute(s, ir.Subscript(t, ir.Const(i)), self.op.loc)

    def grad_of_piece(self, sym: Sym, value: ir.Expr):
        """Contribute ``value`` to the gradient of ``sym`` (one of a list argument's items)."""
        self.adj.contribute(sym, value, self.op.loc)

    def grads(self, ps, value: ir.Expr):
        t = self.temp("d" + self.rule.name, value)
        for i, p in enumerate(ps):
            if p is not None and self.needs(p):
                self.grad(p, ir.Subscript(t, ir.Const(i)))

    def scatter(self, p, index: ir.Expr, value: ir.Expr, mode: str):
        self.adj.scatter(self.bound[p], index, value, mode, self.op.loc)

    def unbroadcast(self, value: ir.Expr, p) -> ir.Expr:
        """Sum ``value`` (shaped like the result) down to argument p's shape; as is if equal."""
        out_shape = np.shape(self.op.outs.val)
        v = self.bound[p]
        shape = v.shape if isinstance(v, Sym) else np.shape(v)
        if tuple(shape) == tuple(out_shape):
            return value
        lead = len(out_shape) - len(shape)
        axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape)
                                          if n == 1 and out_shape[lead + i] != 1)
        if not axes and shape:   # same rank, no size-1 axis broadcast (matmul's batch axes)
            return value
        if not shape:
            return ir.method(value, "sum")
        total = ir.method(value, "sum", axis=ir.lit(axes[0] if len(axes) == 1 else axes))
        if len(axes) > lead:    # size-1 axes summed away: restore them
            total = ir.method(total, "reshape", ir.lit(tuple(shape)))
        return total
