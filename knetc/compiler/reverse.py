"""Reverse mode over the tape: each differentiable op's rule writes its adjoint statements.

Only what is needed is written: ops whose result reaches the loss and depends on the
differentiated argument, gradients only for inputs that need one. Contributions to one value are
accumulated in place when the buffer is known to be fresh (never a view or another gradient),
with no zero-initialised accumulators; unbroadcasting is written only where shapes differ.
"""
from __future__ import annotations

import re

import numpy as np

from .codegen import Stmt, code_of
from ..runtime import prims
from .tape import Sym, syms_in


# A constant basic slice of a named gradient (dh[0:64], the part of a concatenation): used
# inline by whatever reads it rather than named by a statement of its own.
_VIEW = re.compile(r"[A-Za-z_]\w*\[[0-9:, -]+\]")


def base_name(code: str) -> str:
    """The variable a gradient's code reads: ``dh`` for ``dh[0:64]``."""
    return code.partition("[")[0]


class Adjoint:
    def __init__(self, tape, pure=False, inline_views=True):
        self.tape, self.pure, self.inline_views = tape, pure, inline_views
        self.stmts: list[Stmt] = []
        self.grads: dict[int, list] = {}   # id(sym) -> [code name, owned]
        self.nbytes: dict[str, int] = {}   # gradient name -> size, for the freeing pass

    def run(self, loss: Sym):
        self.grads[id(loss)] = ["1.0", False]
        for op in reversed(self.tape.ops):
            if op.kind != "call" or not op.rule.differentiable:
                continue
            outs = op.outs if type(op.outs) is tuple else (op.outs,)
            if not any(o is not None and o.diff and id(o) in self.grads for o in outs):
                continue
            Emit(self, op).run()
        return self

    def grad_of(self, sym):
        g = self.grads.get(id(sym))
        return None if g is None else g[0]

    def emit(self, code, defs, uses, loc):
        self.stmts.append(Stmt(code, defs, uses, loc, back=True))

    def contribute(self, sym: Sym, code: str, fresh: bool, uses, loc):
        """Add ``code`` (shaped like ``sym``) to sym's gradient."""
        g = self.grads.get(id(sym))
        if g is None:
            if code.isidentifier() or code == "1.0" or (self.inline_views and _VIEW.fullmatch(code)):
                self.grads[id(sym)] = [code, False]
            else:
                name = self.tape.newname("d" + sym.name)
                self.emit(f"{name} = {code}", (name,), uses, loc)
                self.grads[id(sym)] = [name, fresh]
                self.nbytes[name] = sym.nbytes
            return
        name, owned = g
        if owned and not self.pure and isinstance(sym.val, np.ndarray) and sym.val.ndim > 0:
            self.emit(f"{name} += {code}", (name,), tuple(uses) + (name,), loc)
        else:
            new = self.tape.newname("d" + sym.name)
            self.emit(f"{new} = {name} + {code}", (new,), tuple(uses) + (base_name(name),), loc)
            self.grads[id(sym)] = [new, True]
            self.nbytes[new] = sym.nbytes

    def scatter(self, sym: Sym, idx_code: str, value_code: str, repeats, uses, loc):
        """Gradient of an indexing read: add ``value`` into sym's gradient at ``idx``.

        ``repeats``: False (basic index: assign/add in place), "rows" (one integer array on the
        first axis: prims.add_rows), or True (other advanced indices: np.add.at)."""
        shape, dtype = sym.shape, code_of(sym.dtype, self.tape, [])
        g = self.grads.get(id(sym))
        if self.pure:
            add = self.tape.ref(prims.index_add, "index_add")
            base = g[0] if g is not None else f"np.zeros({shape!r}, {dtype})"
            name = self.tape.newname("d" + sym.name)
            u = tuple(uses) + ((base_name(g[0]),) if g else ())
            self.emit(f"{name} = {add}({base}, ({idx_code}), {value_code})", (name,), u, loc)
            self.grads[id(sym)] = [name, True]
            return
        if g is None or not g[1]:
            name = self.tape.newname("d" + sym.name)
            init = f"np.zeros({shape!r}, {dtype})" if g is None else f"{g[0]}.copy()"
            self.emit(f"{name} = {init}", (name,), () if g is None else (base_name(g[0]),), loc)
            g = self.grads[id(sym)] = [name, True]
            first = True
        else:
            first = False
        name = g[0]
        if repeats == "rows":
            add = self.tape.ref(prims.add_rows, "add_rows")
            self.emit(f"{add}({name}, {idx_code}, {value_code})", (name,), tuple(uses) + (name,), loc)
        elif repeats:
            self.emit(f"np.add.at({name}, ({idx_code}), {value_code})", (name,),
                      tuple(uses) + (name,), loc)
        else:
            op = "=" if first else "+="
            self.emit(f"{name}[{idx_code}] {op} {value_code}", (name,), tuple(uses) + (name,), loc)


class Emit:
    """What a rule's emitter sees: the op's arguments by parameter name, and ways to write code."""

    def __init__(self, adj: Adjoint, op):
        self.adj, self.op, self.tape, self.rule = adj, op, adj.tape, op.rule
        self.bound = op.rule.bind(op.args, op.kwargs)
        self.uses: list[str] = []
        self.summed = False
        self.pure = adj.pure

    def run(self):
        rule, op = self.rule, self.op
        statics = [op.outs]
        if rule.forward is not None:
            if op.saved is None:
                op.saved = Sym(self.tape, self.tape.newname(rule.out_params[1]), None, False, False)
            statics.append(op.saved)
        statics += [self.bound[p] for p in rule.params]
        rule.emitter(self, *statics)

    # -- reading ------------------------------------------------------------------------
    def a(self, p):
        """Code for argument ``p`` (or the result / saved value)."""
        rule = self.rule
        if p == rule.out_params[0]:
            return code_of(self.op.outs, self.tape, self.uses)
        if len(rule.out_params) > 1 and p == rule.out_params[1]:
            return code_of(self.op.saved, self.tape, self.uses)
        return code_of(self.bound[p], self.tape, self.uses)

    def dout(self):
        """Code for the result's gradient (a tuple for several results, None where none)."""
        outs = self.op.outs
        if type(outs) is tuple:
            parts = []
            for o in outs:
                g = self.adj.grad_of(o) if o is not None else None
                if g is not None and g != "1.0":
                    self.uses.append(base_name(g))
                parts.append(g or "None")
            return "(" + ", ".join(parts) + ")"
        g = self.adj.grad_of(outs)
        if g != "1.0":
            self.uses.append(base_name(g))
        return g

    def static(self, p, attr):
        v = self.bound.get(p, self.op.outs if p == self.rule.out_params[0] else None)
        value = getattr(v, attr) if isinstance(v, Sym) else getattr(np.asarray(v), attr)
        return code_of(value if attr != "shape" else tuple(value), self.tape, [])

    def lit(self, value):
        return code_of(value, self.tape, [])

    def ref(self, obj):
        return self.tape.ref(obj)

    def needs(self, p):
        v = self.bound.get(p)
        if type(v) is Sym:
            return v.diff
        return any(s.diff for s in syms_in(v)) if v is not None else False

    # -- writing ------------------------------------------------------------------------
    def _take_uses(self):
        u, self.uses = tuple(self.uses), []
        return u

    def temp(self, name, code):
        t = self.tape.newname(name)
        self.adj.emit(f"{t} = {code}", (t,), self._take_uses(), self.op.loc)
        self.uses.append(t)
        return t

    def grad(self, p, code, fresh):
        v = self.bound[p]
        uses = self._take_uses()
        if type(v) is Sym:
            self.adj.contribute(v, code, bool(fresh), uses, self.op.loc)
        else:  # a list/tuple of arrays (concatenate, stack): split the result
            t = self.tape.newname("d" + p)
            self.adj.emit(f"{t} = {code}", (t,), uses, self.op.loc)
            for i, s in enumerate(v):
                if type(s) is Sym and s.diff:
                    self.adj.contribute(s, f"{t}[{i}]", False, (t,), self.op.loc)
        self.summed = False

    def grads(self, ps, code):
        t = self.tape.newname("d" + self.rule.name)
        self.adj.emit(f"{t} = {code}", (t,), self._take_uses(), self.op.loc)
        for i, p in enumerate(ps):
            if p is None or not self.needs(p):
                continue
            self.uses.append(t)
            self.grad(p, f"{t}[{i}]", False)

    def scatter(self, p, idx_code, value_code, repeats):
        v = self.bound[p]
        self.adj.scatter(v, idx_code, value_code, repeats, self._take_uses(), self.op.loc)

    def unbroadcast(self, code, p):
        """Sum ``code`` (shaped like the result) down to argument p's shape; no-op if equal."""
        out_shape = np.shape(self.op.outs.val)
        v = self.bound[p]
        shape = v.shape if isinstance(v, Sym) else np.shape(v)
        if tuple(shape) == tuple(out_shape):
            return code
        lead = len(out_shape) - len(shape)
        axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape)
                                          if n == 1 and out_shape[lead + i] != 1)
        if not axes and shape:   # same rank, no size-1 axis broadcast (matmul's batch axes)
            return code
        self.summed = True       # a sum is written: the result is fresh memory
        base = code if code.isidentifier() else f"({code})"
        if not shape:
            return f"{base}.sum()"
        text = f"{base}.sum(axis={axes[0] if len(axes) == 1 else axes!r})"
        if len(axes) > lead:    # size-1 axes summed away: restore them
            text = f"{text}.reshape({tuple(shape)!r})"
        return text
