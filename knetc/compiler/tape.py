"""The straight-line program that specialization records: symbolic values (Sym) and operations (Op).

A Sym stands for a value computed by the generated code. It carries the concrete value seen while
specializing (so shapes, dtypes and branch outcomes are known) and whether it depends on the
differentiated argument. Python operators on Syms record operations on the current tape.
"""
from __future__ import annotations

import keyword as _keyword
import operator

import numpy as np

from .. import errors
from ..rules import registry
from ..runtime import prims
from . import ir


class Sym:
    """A value of the generated program: name, concrete value of this trace, differentiability."""
    __slots__ = ("name", "val", "diff", "tape", "temp", "float_leaf")
    __array_ufunc__ = None      # make NumPy defer to our reflected operators
    __array_priority__ = 1000

    def __init__(self, tape, name, val, diff, temp=True):
        self.tape, self.name, self.val, self.diff, self.temp = tape, name, val, diff, temp
        self.float_leaf = False

    def __repr__(self):
        return f"<knetc value {self.name}: {self.shape} {self.dtype}>"

    # Static facts, known at specialization time.
    @property
    def shape(self):
        try:
            return self.val.shape
        except AttributeError:
            return np.shape(self.val)

    @property
    def ndim(self):
        try:
            return self.val.ndim
        except AttributeError:
            return np.ndim(self.val)

    @property
    def size(self):
        try:
            return self.val.size
        except AttributeError:
            return int(np.size(self.val))

    @property
    def dtype(self):
        return getattr(self.val, "dtype", np.dtype(type(self.val)))

    @property
    def nbytes(self) -> int:
        return getattr(self.val, "nbytes", 8)

    def __len__(self):
        if not self.shape:
            raise TypeError("len() of a 0-d array")
        return self.shape[0]

    def __iter__(self):
        return (self.tape.apply(operator.getitem, (self, i)) for i in range(len(self)))

    def __bool__(self):
        return bool(self.tape.concretize(self, bool))

    def __index__(self):
        return self.tape.concretize(self, operator.index)

    def __int__(self):
        return self.tape.concretize(self, int)

    def __float__(self):
        return self.tape.concretize(self, float)

    def __hash__(self):
        return id(self)

    def __setitem__(self, key, value):
        self.tape.mutation(f"{self.name}[...] = ...")

    @property
    def T(self):
        return self.tape.apply(np.transpose, (self,))

    def __getattr__(self, name):
        return self.tape.method(self, name)


def _binary(fn):
    return (lambda a, b: a.tape.apply(fn, (a, b)),
            lambda a, b: a.tape.apply(fn, (b, a)))


for _name, _fn in [("add", operator.add), ("sub", operator.sub), ("mul", operator.mul),
                   ("truediv", operator.truediv), ("pow", operator.pow), ("matmul", operator.matmul),
                   ("floordiv", operator.floordiv), ("mod", operator.mod), ("and", operator.and_),
                   ("or", operator.or_), ("xor", operator.xor)]:
    _f, _r = _binary(_fn)
    setattr(Sym, f"__{_name}__", _f)
    setattr(Sym, f"__r{_name}__", _r)
for _name, _fn in [("lt", operator.lt), ("le", operator.le), ("gt", operator.gt), ("ge", operator.ge),
                   ("eq", operator.eq), ("ne", operator.ne)]:
    setattr(Sym, f"__{_name}__", (lambda fn: lambda a, b: a.tape.apply(fn, (a, b)))(_fn))
Sym.__getitem__ = lambda a, idx: a.tape.apply(operator.getitem, (a, idx))
Sym.__neg__ = lambda a: a.tape.apply(operator.neg, (a,))
Sym.__pos__ = lambda a: a
Sym.__abs__ = lambda a: a.tape.apply(np.abs, (a,))
Sym.__invert__ = lambda a: a.tape.apply(operator.invert, (a,))
Sym.__hash__ = lambda a: id(a)  # comparisons are overloaded, identity hashing is kept


class Op:
    """One step of the recorded forward program.

    kind: 'call' (outs = fn(*args, **kwargs), with this call's values), 'read' (outs = a value
    read when the code runs, from ``expr``, an IR expression), 'effect' (an IR statement kept
    whatever its result: a guard, a store into the caller's data).
    """
    __slots__ = ("kind", "outs", "fn", "args", "kwargs", "loc", "rule", "saved", "expr", "stmt")

    def __init__(self, kind, outs, fn=None, args=(), kwargs=None, loc=None, rule=None, expr=None,
                 stmt=None):
        self.kind, self.outs, self.fn, self.args = kind, outs, fn, args
        self.kwargs = kwargs or {}
        self.loc, self.rule, self.saved, self.expr, self.stmt = loc, rule, None, expr, stmt


def syms_in(value, out=None):
    """All Syms inside a (possibly nested) list/tuple/dict/slice value, in order."""
    if out is None:
        out = []
    t = type(value)
    if t is Sym:
        out.append(value)
    elif t in (list, tuple):
        for v in value:
            syms_in(v, out)
    elif t is dict:
        for v in value.values():
            syms_in(v, out)
    elif t is slice:
        syms_in((value.start, value.stop, value.step), out)
    return out


def concrete(value):
    """The value with every Sym replaced by its concrete value from this trace."""
    t = type(value)
    if t is Sym:
        return value.val
    if t is list:
        return [concrete(v) for v in value]
    if t is tuple:
        return tuple(concrete(v) for v in value)
    if t is dict:
        return {k: concrete(v) for k, v in value.items()}
    if t is slice:
        return slice(concrete(value.start), concrete(value.stop), concrete(value.step))
    return value


# ---------------------------------------------------------------------------------------------
# The tape: records operations while the specializer walks the user's code.

RESERVED = set(_keyword.kwlist) | {"np", "float", "int", "bool", "len", "range", "print", "isinstance",
                                   "tuple", "list", "dict", "_GuardFailed", "_", "d"}


_OPERATORS = {operator.add, operator.sub, operator.mul, operator.truediv, operator.floordiv,
              operator.mod, operator.pow, operator.matmul, operator.lt, operator.le, operator.gt,
              operator.ge, operator.eq, operator.ne, operator.and_, operator.or_, operator.xor,
              operator.neg, operator.invert, operator.pos, operator.getitem}


def _as_shape(args):
    """reshape/transpose accept varargs or one tuple: x.reshape(2, 3) == x.reshape((2, 3))."""
    return args[0] if len(args) == 1 else tuple(args)


# Array methods: name -> function building the equivalent primitive call.
_METHODS = {
    "sum": lambda t, x: lambda *a, **k: t.apply(np.sum, (x,) + a, k),
    "mean": lambda t, x: lambda *a, **k: t.apply(np.mean, (x,) + a, k),
    "max": lambda t, x: lambda *a, **k: t.apply(np.max, (x,) + a, k),
    "min": lambda t, x: lambda *a, **k: t.apply(np.min, (x,) + a, k),
    "prod": lambda t, x: lambda *a, **k: t.apply(np.prod, (x,) + a, k),
    "dot": lambda t, x: lambda b: t.apply(np.dot, (x, b)),
    "clip": lambda t, x: lambda *a, **k: t.apply(np.clip, (x,) + a, k),
    "squeeze": lambda t, x: lambda *a, **k: t.apply(np.squeeze, (x,) + a, k),
    "swapaxes": lambda t, x: lambda *a: t.apply(np.swapaxes, (x,) + a),
    "argmax": lambda t, x: lambda *a, **k: t.apply(np.argmax, (x,) + a, k),
    "argmin": lambda t, x: lambda *a, **k: t.apply(np.argmin, (x,) + a, k),
    "all": lambda t, x: lambda *a, **k: t.apply(np.all, (x,) + a, k),
    "any": lambda t, x: lambda *a, **k: t.apply(np.any, (x,) + a, k),
    "reshape": lambda t, x: lambda *a: t.apply(np.reshape, (x, _as_shape(a))),
    "transpose": lambda t, x: lambda *a: t.apply(np.transpose, (x, _as_shape(a)) if a else (x,)),
    "flatten": lambda t, x: lambda: t.apply(np.reshape, (x, (-1,))),
    "ravel": lambda t, x: lambda: t.apply(np.reshape, (x, (-1,))),
    "copy": lambda t, x: lambda: t.apply(np.copy, (x,)),
    "item": lambda t, x: lambda: t.apply(float, (x,)),
    "astype": lambda t, x: lambda dtype, **k: t.apply(prims.astype, (x, np.dtype(dtype))),
}




def identifier(text) -> str:
    """A Python identifier made from ``text`` (a variable, a dict key, a function's name)."""
    s = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in str(text))
    return s if s and not s[0].isdigit() else f"v{s}"


class Tape:
    """The forward program being recorded, its names, and the objects the code refers to."""

    def __init__(self):
        self.ops: list[Op] = []
        self.loc = (None, None)          # (filename, lineno) of the statement being specialized
        self.names: dict[str, int] = {}
        self._guards: dict = {}
        self.refs: dict[int, tuple] = {}  # id(obj) -> (code name, obj): namespace of the code
        self.taken = set(RESERVED)

    # -- names ---------------------------------------------------------------------------
    def newname(self, base: str) -> str:
        base = base if base.isidentifier() else "t"
        n = self.names.get(base, 0)
        while True:
            name = base if n == 0 else f"{base}_{n}"
            n += 1
            if name not in self.taken:
                self.names[base] = n
                self.taken.add(name)
                return name

    def ref(self, obj, hint: str | None = None) -> str:
        """The code name under which generated code refers to ``obj``."""
        hit = self.refs.get(id(obj))
        if hit is not None:
            return hit[0]
        name = _numpy_path(obj)
        if name is None:
            base = hint or getattr(obj, "__name__", None) or "c"
            name = self.newname(base if str(base).isidentifier() else "c")
        self.refs[id(obj)] = (name, obj)
        return name

    def rename(self, sym: Sym, name: str) -> None:
        """Name an intermediate after the user's variable it is assigned to."""
        if sym.temp:
            sym.name, sym.temp = self.newname(name), False

    # -- errors --------------------------------------------------------------------------
    def fail(self, cls, message, hint=None):
        raise cls(message, filename=self.loc[0], lineno=self.loc[1], hint=hint)

    def mutation(self, what):
        self.fail(errors.MutationError,
                  "knetc: arrays cannot be changed in place inside a differentiated function",
                  "Instead: build a new array (x = x + v, np.where(mask, v, x), np.concatenate…); "
                  "knetc computes gradients of values, not of memory.")

    # -- recording -----------------------------------------------------------------------
    def apply(self, fn, args, kwargs=None):
        """Record ``fn(*args, **kwargs)``; fold it when no argument is symbolic."""
        kwargs = kwargs or {}
        syms = syms_in(args)
        if kwargs:
            syms_in(kwargs, syms)
        rule = registry.lookup(fn)
        if not syms and not (rule is not None and rule.impure):
            return fn(*args, **kwargs)
        if rule is None:
            self.fail(errors.NoRuleError,
                      f"knetc: no derivative rule for {_fname(fn)}, and it has no Python source "
                      "to specialize",
                      "Register one with @knetc.adjoint(fn) (see knetc.adjoint's docstring), or "
                      "knetc.nondifferentiable(fn) if it has no gradient.")
        if rule.alias:           # getval: the same value, cut off from the gradient
            s = syms[0]
            return Sym(self, s.name, s.val, False, temp=False)
        try:    # side effects (running statistics) belong to the generated code
            with prims.tracing_mode(True):
                val = fn(*concrete(args), **concrete(kwargs))
        except Exception as e:
            e.add_note(f'knetc: while specializing "{self.loc[0]}", line {self.loc[1]}')
            raise
        diff = rule.differentiable and any(s.diff for s in syms)
        if fn not in _OPERATORS:
            self.ref(fn)   # the function takes its plain name before any result is named after it
        base = rule.name
        if rule.outputs > 1:
            outs = tuple(None if v is None else Sym(self, self.newname(base), v, diff)
                         for v in val)
        else:
            outs = Sym(self, self.newname(base), val, diff)
        self.ops.append(Op("call", outs, fn, args, kwargs, self.loc, rule))
        if _shape_from_data(fn, args):
            # x[x > 0], np.nonzero(x): the result's shape depends on values, and the code after
            # it was written for this shape: guard it (another shape compiles another entry).
            for o in outs if type(outs) is tuple else (outs,):
                if o is not None:
                    shape = ir.lit(tuple(np.shape(o.val)))
                    self.guard(ir.BinOp("!=", ir.Attr(ir.Var(o), "shape"), shape), self.loc[1])
        return outs

    def read(self, expr: ir.Expr, val, diff=False, name="t", float_leaf=False):
        """A value read when the generated code runs (an argument leaf, a global array)."""
        if type(expr) is ir.Name:   # an argument itself: no statement, same name
            s = Sym(self, expr.id, val, diff, temp=False)
            s.float_leaf = float_leaf
            return s
        s = Sym(self, self.newname(name), val, diff, temp=False)
        s.float_leaf = float_leaf
        self.ops.append(Op("read", s, expr=expr, loc=self.loc))
        return s

    def read_many(self, expr: ir.Expr, values, diff, names):
        """Several values unpacked at once from a list/tuple when the code runs."""
        outs = []
        for v, n in zip(values, names):
            is_float = type(v) is float or np.issubdtype(v.dtype, np.floating)
            s = Sym(self, self.newname(n), v, diff and is_float, temp=False)
            s.float_leaf = diff and type(v) is float
            outs.append(s)
        self.ops.append(Op("read", tuple(outs), expr=expr, loc=self.loc))
        return outs

    def effect(self, stmt: ir.Stmt):
        """A statement kept whatever its result: a store into an argument, a guard."""
        stmt.loc = self.loc
        self.ops.append(Op("effect", None, loc=self.loc, stmt=stmt))

    def guard(self, test: ir.Expr, line=None):
        """``if test: raise _GuardFailed(line)`` in the forward code."""
        self.effect(ir.Guard(test, line))

    def concretize(self, sym, conv):
        """A Python value from a symbolic one: use this trace's value, guard it in the code."""
        try:
            value = conv(sym.val)
        except Exception as e:
            e.add_note(f'knetc: while specializing "{self.loc[0]}", line {self.loc[1]}')
            raise
        key = (id(sym), conv)
        if key not in self._guards:
            self._guards[key] = value
            # Var(sym) is written with the value's final name (an assignment may yet rename it).
            v = ir.Var(sym)
            if conv is bool:
                test = ir.UnaryOp("not ", v) if value else v
            else:
                test = ir.BinOp("!=", ir.call(ir.Name("float" if conv is float else "int"), v),
                                ir.Const(value))
            self.guard(test, self.loc[1])
        return value

    def method(self, sym, name):
        if name.startswith("__"):
            raise AttributeError(name)
        make = _METHODS.get(name)
        if make is None:
            self.fail(errors.UnsupportedSyntax,
                      f"knetc: array attribute or method .{name} is not supported",
                      "Use the NumPy function form (np.xxx(x, ...)), or register a rule for it.")
        return make(self, sym)


_DATA_SHAPED = {np.nonzero, np.flatnonzero, np.argwhere, np.unique, np.extract, np.compress}


def _shape_from_data(fn, args) -> bool:
    """Is the shape of fn(*args) decided by array values (boolean masks, nonzero, unique)?"""
    if fn is operator.getitem:
        idx = args[1]
        for p in idx if type(idx) is tuple else (idx,):
            if type(p) is Sym and getattr(p.val, "dtype", None) == np.bool_ and np.ndim(p.val) > 0:
                return True
        return False
    return fn in _DATA_SHAPED


def _fname(fn):
    mod = getattr(fn, "__module__", None)
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    return f"{mod}.{name}" if mod and mod != "builtins" else name


def _numpy_path(obj):
    """'np.tanh' for NumPy's own functions, so generated code reads like hand-written code."""
    name = getattr(obj, "__name__", None)
    if name is None:
        return None
    if getattr(np, name, None) is obj:
        return f"np.{name}"
    for sub in ("linalg", "random", "fft"):
        if getattr(getattr(np, sub), name, None) is obj:
            return f"np.{sub}.{name}"
    return None
