"""The program representation every stage shares: typed expressions and statements.

Specialization records the forward program, the rules write the adjoint, and the passes (dead code,
accumulation, fusion, frees) read and rewrite it, all as these objects; ``codegen`` renders them to
Python text once, at the end. A statement says what it defines, reads and writes in place, so no
pass parses text.

Expressions are small immutable trees (``Name``, ``Const``, ``Call``, ``BinOp``...). ``Var`` names a
value of the traced program: its text is the value's final name, known only once specialization has
named it after the user's variable, which is why statements keep the value, not a string.

Gradient accumulation is one operation, ``Accumulate`` (``target = base + value``; ``ScatterAdd``
for indexed reads), written in single-assignment form by reverse mode; ``optimize.lower_accumulation``
decides, from what the whole program does with the buffer, whether it is added in place.
"""
from __future__ import annotations

import ast
import math

import numpy as np

# Python's operator precedence, loosest to tightest: a child is parenthesized only where needed.
_PREC = {"or": 2, "and": 3, "not ": 4, "<": 5, "<=": 5, ">": 5, ">=": 5, "==": 5, "!=": 5, "is": 5,
         "is not": 5, "in": 5, "not in": 5, "|": 6, "^": 7, "&": 8, "<<": 9, ">>": 9, "+": 10,
         "-": 10, "*": 11, "@": 11, "/": 11, "//": 11, "%": 11, "**": 13}
_UNARY = 12
_PRIMARY = 15
_ATOM = 16


class Expr:
    """An expression of generated code."""
    __slots__ = ()
    prec = _ATOM

    def render(self) -> str:
        raise NotImplementedError

    def names(self, out: list) -> list:
        """Append the names this expression reads (in order) to ``out``."""
        return out

    def subst(self, mapping: dict) -> Expr:
        """The expression with names renamed by ``mapping`` (self when nothing changes)."""
        return self

    def __repr__(self):
        return f"<{type(self).__name__} {self.render()}>"


def wrap(e: Expr, prec: int) -> str:
    text = e.render()
    return f"({text})" if e.prec < prec else text


class Name(Expr):
    """A name: a local value, a parameter, or an object of the generated code's namespace."""
    __slots__ = ("id",)

    def __init__(self, id: str):
        self.id = id

    def render(self):
        return self.id

    def names(self, out):
        out.append(self.id)
        return out

    def subst(self, mapping):
        new = mapping.get(self.id)
        return self if new is None else Name(new)


class Var(Name):
    """A value of the traced program, named by its final name (read when rendered)."""
    __slots__ = ("sym",)

    def __init__(self, sym):
        self.sym = sym

    @property
    def id(self):
        return self.sym.name

    def subst(self, mapping):
        new = mapping.get(self.sym.name)
        return self if new is None else Name(new)


class Const(Expr):
    """A Python scalar, string, None, Ellipsis or NumPy scalar, written as a literal."""
    __slots__ = ("value", "prec")

    def __init__(self, value):
        self.value = value
        v = value
        negative = isinstance(v, (int, float)) and not isinstance(v, bool) and v < 0
        self.prec = _UNARY if negative else _ATOM

    def render(self):
        v = self.value
        t = type(v)
        if t is float and not math.isfinite(v):
            return f"float({str(v)!r})"
        if v is Ellipsis:
            return "..."
        if isinstance(v, np.generic):
            return repr(v)      # np.float32(0.5): np is always in the generated code's scope
        return repr(v)


ONE = Const(1.0)
NONE = Const(None)


class Attr(Expr):
    __slots__ = ("value", "attr")
    prec = _PRIMARY

    def __init__(self, value: Expr, attr: str):
        self.value, self.attr = value, attr

    def render(self):
        v = self.value
        base = wrap(v, _PRIMARY)
        if type(v) is Const and type(v.value) is int:
            base = f"({base})"
        return f"{base}.{self.attr}"

    def names(self, out):
        return self.value.names(out)

    def subst(self, mapping):
        v = self.value.subst(mapping)
        return self if v is self.value else Attr(v, self.attr)


class Call(Expr):
    __slots__ = ("func", "args", "kwargs")
    prec = _PRIMARY

    def __init__(self, func: Expr, args=(), kwargs=()):
        self.func, self.args, self.kwargs = func, tuple(args), tuple(kwargs)

    def render(self):
        parts = [a.render() for a in self.args]
        parts += [f"{k}={v.render()}" for k, v in self.kwargs]
        return f"{wrap(self.func, _PRIMARY)}({', '.join(parts)})"

    def names(self, out):
        self.func.names(out)
        for a in self.args:
            a.names(out)
        for _, v in self.kwargs:
            v.names(out)
        return out

    def subst(self, mapping):
        return Call(self.func.subst(mapping), [a.subst(mapping) for a in self.args],
                    [(k, v.subst(mapping)) for k, v in self.kwargs])


class BinOp(Expr):
    """A binary operator or a comparison (``op`` as Python writes it)."""
    __slots__ = ("op", "left", "right", "prec")

    def __init__(self, op: str, left: Expr, right: Expr):
        self.op, self.left, self.right = op, left, right
        self.prec = _PREC[op]

    def render(self):
        p = self.prec
        if self.op == "**":       # right-associative; a unary operand on the left needs parens
            return f"{wrap(self.left, p + 1)} ** {wrap(self.right, _UNARY)}"
        return f"{wrap(self.left, p if p > 5 else p + 1)} {self.op} {wrap(self.right, p + 1)}"

    def names(self, out):
        self.left.names(out)
        return self.right.names(out)

    def subst(self, mapping):
        return BinOp(self.op, self.left.subst(mapping), self.right.subst(mapping))


class UnaryOp(Expr):
    __slots__ = ("op", "operand", "prec")

    def __init__(self, op: str, operand: Expr):
        self.op, self.operand = op, operand
        self.prec = _PREC["not "] if op == "not " else _UNARY

    def render(self):
        return f"{self.op}{wrap(self.operand, self.prec)}"

    def names(self, out):
        return self.operand.names(out)

    def subst(self, mapping):
        return UnaryOp(self.op, self.operand.subst(mapping))


class Slice(Expr):
    """``lower:upper:step`` inside a subscript (``slice(...)`` anywhere else)."""
    __slots__ = ("lower", "upper", "step")

    def __init__(self, lower=None, upper=None, step=None):
        self.lower, self.upper, self.step = lower, upper, step

    def parts(self):
        return (self.lower, self.upper, self.step)

    def render(self):
        return "slice(" + ", ".join("None" if p is None else p.render() for p in self.parts()) + ")"

    def render_index(self):
        lo, hi, st = ("" if p is None else p.render() for p in self.parts())
        return f"{lo}:{hi}" + (f":{st}" if self.step is not None else "")

    def names(self, out):
        for p in self.parts():
            if p is not None:
                p.names(out)
        return out

    def subst(self, mapping):
        return Slice(*(None if p is None else p.subst(mapping) for p in self.parts()))


class Tuple(Expr):
    __slots__ = ("elts",)

    def __init__(self, elts):
        self.elts = tuple(elts)

    def render(self):
        inner = ", ".join(e.render() for e in self.elts)
        return f"({inner},)" if len(self.elts) == 1 else f"({inner})"

    def names(self, out):
        for e in self.elts:
            e.names(out)
        return out

    def subst(self, mapping):
        return type(self)([e.subst(mapping) for e in self.elts])


class List(Tuple):
    __slots__ = ()

    def render(self):
        return "[" + ", ".join(e.render() for e in self.elts) + "]"


class Dict(Expr):
    __slots__ = ("keys", "values")

    def __init__(self, keys, values):
        self.keys, self.values = tuple(keys), tuple(values)

    def render(self):
        return "{" + ", ".join(f"{k.render()}: {v.render()}" for k, v in zip(self.keys, self.values)) + "}"

    def names(self, out):
        for k, v in zip(self.keys, self.values):
            k.names(out)
            v.names(out)
        return out

    def subst(self, mapping):
        return Dict([k.subst(mapping) for k in self.keys], [v.subst(mapping) for v in self.values])


class Subscript(Expr):
    """``value[index]``; a Tuple index is written without parentheses, slices as ``a:b``."""
    __slots__ = ("value", "index")
    prec = _PRIMARY

    def __init__(self, value: Expr, index: Expr):
        self.value, self.index = value, index

    def render(self):
        return f"{wrap(self.value, _PRIMARY)}[{render_index(self.index)}]"

    def names(self, out):
        self.value.names(out)
        return self.index.names(out)

    def subst(self, mapping):
        return Subscript(self.value.subst(mapping), self.index.subst(mapping))


def render_index(idx: Expr) -> str:
    if type(idx) is Slice:
        return idx.render_index()
    if type(idx) is Tuple:
        if not idx.elts:
            return "()"
        parts = [p.render_index() if type(p) is Slice else p.render() for p in idx.elts]
        return ", ".join(parts) + ("," if len(parts) == 1 else "")
    return idx.render()


def children(e: Expr) -> tuple:
    """The sub-expressions of ``e``."""
    t = type(e)
    if t is Call:
        return (e.func, *e.args, *(v for _, v in e.kwargs))
    if t is BinOp:
        return (e.left, e.right)
    if t is UnaryOp or t is Attr:
        return (e.operand,) if t is UnaryOp else (e.value,)
    if t is Subscript:
        return (e.value, e.index)
    if t is Tuple or t is List:
        return e.elts
    if t is Dict:
        return e.keys + e.values
    if t is Slice:
        return tuple(p for p in e.parts() if p is not None)
    return ()


def walk(e: Expr):
    """``e`` and every expression inside it, outermost first."""
    yield e
    for c in children(e):
        yield from walk(c)


def call(func: Expr, *args: Expr, **kwargs: Expr) -> Call:
    return Call(func, args, kwargs.items())


NP = Name("np")


def np_fn(name: str) -> Attr:
    """``np.<name>`` (np is bound to cupy in GPU specializations)."""
    return Attr(NP, name)


def method(obj: Expr, name: str, *args: Expr, **kwargs: Expr) -> Call:
    return Call(Attr(obj, name), args, kwargs.items())


# Functions whose result may share memory with an argument (never accumulated into in place).
VIEWS = frozenset({"reshape", "transpose", "swapaxes", "expand_dims", "squeeze", "broadcast_to",
                   "moveaxis", "rollaxis", "ravel", "asarray", "asanyarray", "ascontiguousarray",
                   "T", "diagonal", "atleast_1d", "atleast_2d", "atleast_3d", "flip", "flipud",
                   "fliplr", "rot90", "real", "imag", "view", "split", "array_split", "hsplit",
                   "vsplit", "dsplit", "broadcast_arrays"})
_FRESH_METHODS = frozenset({"sum", "mean", "astype", "copy", "max", "min", "prod", "dot", "cumsum",
                            "cumprod", "var", "std"})


def is_fresh(e: Expr) -> bool:
    """Does ``e`` certainly evaluate to new memory that nothing else refers to? Arithmetic and
    NumPy's functions do (except views); any other function might return one of its arguments."""
    t = type(e)
    if t is BinOp or t is UnaryOp:
        return True
    if t is Call:
        f = e.func
        if type(f) is Attr:
            if f.value is NP or (type(f.value) is Name and f.value.id == "np"):
                return f.attr not in VIEWS
            return f.attr in _FRESH_METHODS
    return False


# ---------------------------------------------------------------------------------------------
# Statements

class Stmt:
    """One statement. ``loc``: the user's (file, line) it comes from; ``back``: part of the
    adjoint. ``defs``: names it binds; ``uses()``: names it reads; ``effect``: kept even when
    nothing reads what it defines (guards, stores, random draws, the result)."""
    __slots__ = ("loc", "back", "_uses", "defs")
    effect = False

    @property
    def uses(self) -> tuple:
        """The names the statement reads."""
        u = self._uses
        if u is None:
            u = self._uses = tuple(self.read_names())
        return u

    def read_names(self) -> list:
        raise NotImplementedError

    def render(self) -> str:
        raise NotImplementedError

    def subst(self, mapping: dict) -> Stmt:
        raise NotImplementedError

    def _init(self, loc, back, defs=()):
        self.loc, self.back, self._uses, self.defs = loc, back, None, defs

    @property
    def code(self) -> str:
        return self.render()

    def to_ast(self) -> ast.stmt:
        """The statement as a Python ``ast`` node (for passes that analyse Python syntax)."""
        return ast.parse(self.render()).body[0]

    def __repr__(self):
        return f"<{type(self).__name__} {self.render()}>"


class Assign(Stmt):
    """``a, b = value`` (a target ``_`` discards that result). ``unpack``: the value is a sequence
    unpacked into the targets, also when there is one (``a, = value``). ``fresh``: the value is
    certainly new memory (``is_fresh``)."""
    __slots__ = ("targets", "value", "effect", "unpack", "_fresh")

    def __init__(self, targets, value: Expr, loc=None, back=False, effect=False, unpack=None):
        self.targets = (targets,) if type(targets) is str else tuple(targets)
        self._init(loc, back, tuple(t for t in self.targets if t != "_"))
        self.value, self.effect = value, effect
        self.unpack = len(self.targets) > 1 if unpack is None else unpack
        self._fresh = None

    @property
    def fresh(self) -> bool:
        f = self._fresh
        if f is None:
            f = self._fresh = is_fresh(self.value)
        return f

    def read_names(self):
        return self.value.names([])

    def render(self):
        comma = "," if self.unpack and len(self.targets) == 1 else ""
        return f"{', '.join(self.targets)}{comma} = {self.value.render()}"

    def subst(self, mapping):
        return Assign([mapping.get(t, t) for t in self.targets], self.value.subst(mapping), self.loc,
                      self.back, self.effect, self.unpack)


class Accumulate(Stmt):
    """``target = base + value``: a further contribution to a gradient (lowered later)."""
    __slots__ = ("target", "base", "value", "inplace_ok")

    def __init__(self, target: str, base: Expr, value: Expr, inplace_ok: bool, loc=None, back=True):
        self._init(loc, back, (target,))
        self.target, self.base, self.value, self.inplace_ok = target, base, value, inplace_ok

    def read_names(self):
        return self.value.names(self.base.names([]))

    def render(self):
        return f"{self.target} = {BinOp('+', self.base, self.value).render()}"

    def subst(self, mapping):
        return Accumulate(mapping.get(self.target, self.target), self.base.subst(mapping),
                          self.value.subst(mapping), self.inplace_ok, self.loc, self.back)


class ScatterAdd(Stmt):
    """``target = base`` with ``value`` added at ``index`` (base None: zeros of ``zeros``).

    mode: "basic" (slices, ints: each element at most once; "row" when the index is one int,
    a row of the first axis), "rows" (one integer array on the first axis: an embedding's
    gradient), "at" (other advanced indices: repeats accumulate)."""
    __slots__ = ("target", "base", "index", "value", "mode", "zeros")

    def __init__(self, target, base, index: Expr, value: Expr, mode: str, zeros: Expr, loc=None,
                 back=True):
        self._init(loc, back, (target,))
        self.target, self.base, self.index, self.value = target, base, index, value
        self.mode, self.zeros = mode, zeros

    def read_names(self):
        out = [] if self.base is None else self.base.names([])
        return self.value.names(self.index.names(out))

    def render(self):
        base = self.zeros if self.base is None else self.base
        return f"{self.target} = index_add({base.render()}, {self.index.render()}, {self.value.render()})"

    def subst(self, mapping):
        return ScatterAdd(mapping.get(self.target, self.target),
                          None if self.base is None else self.base.subst(mapping),
                          self.index.subst(mapping), self.value.subst(mapping), self.mode,
                          self.zeros, self.loc, self.back)


class AddInPlace(Stmt):
    """``name += value`` or ``name[index] += value`` (``assign``: ``=``), into a buffer this
    program owns (the lowering of Accumulate and ScatterAdd)."""
    __slots__ = ("name", "index", "value", "assign")

    def __init__(self, name: str, value: Expr, index: Expr | None = None, assign=False, loc=None,
                 back=True):
        self._init(loc, back, (name,))
        self.name, self.value, self.index, self.assign = name, value, index, assign

    def read_names(self):
        out = [self.name]
        if self.index is not None:
            self.index.names(out)
        return self.value.names(out)

    def render(self):
        op = "=" if self.assign else "+="
        if self.index is None:
            return f"{self.name} {op} {self.value.render()}"
        return f"{self.name}[{render_index(self.index)}] {op} {self.value.render()}"

    def subst(self, mapping):
        return AddInPlace(mapping.get(self.name, self.name), self.value.subst(mapping),
                          None if self.index is None else self.index.subst(mapping), self.assign,
                          self.loc, self.back)


class Do(Stmt):
    """An expression run for its effect on ``writes`` (``add_rows(dw, idx, v)``)."""
    __slots__ = ("value", "writes")

    def __init__(self, value: Expr, writes=(), loc=None, back=True):
        self._init(loc, back, tuple(writes))
        self.value, self.writes = value, tuple(writes)

    def read_names(self):
        return self.value.names([])

    def render(self):
        return self.value.render()

    def subst(self, mapping):
        return Do(self.value.subst(mapping), [mapping.get(w, w) for w in self.writes], self.loc,
                  self.back)


class Guard(Stmt):
    """``if test: raise _GuardFailed(line)``: this cached code does not fit the call."""
    __slots__ = ("test", "line")
    effect = True

    def __init__(self, test: Expr, line=None, loc=None):
        self._init(loc, False)
        self.test, self.line = test, line

    def read_names(self):
        return self.test.names([])

    def render(self):
        arg = "" if self.line is None else repr(self.line)
        return f"if {self.test.render()}: raise _GuardFailed({arg})"

    def subst(self, mapping):
        return Guard(self.test.subst(mapping), self.line, self.loc)


class Store(Stmt):
    """``container[key] = value`` into the caller's data (an effect the cached code repeats)."""
    __slots__ = ("target", "value")
    effect = True

    def __init__(self, target: Expr, value: Expr, loc=None):
        self._init(loc, False)
        self.target, self.value = target, value

    def read_names(self):
        return self.value.names(self.target.names([]))

    def render(self):
        return f"{self.target.render()} = {self.value.render()}"

    def subst(self, mapping):
        return Store(self.target.subst(mapping), self.value.subst(mapping), self.loc)


class Free(Stmt):
    """``del a, b``: temporaries past their last use."""
    __slots__ = ("names_",)

    def __init__(self, names):
        self._init(None, False)
        self.names_ = tuple(names)

    def read_names(self):
        return list(self.names_)

    def render(self):
        return "del " + ", ".join(self.names_)

    def subst(self, mapping):
        return Free([mapping.get(n, n) for n in self.names_])


class Return(Stmt):
    """``return value`` (tier 0 binds it to ``target`` instead)."""
    __slots__ = ("value", "target")
    effect = True

    def __init__(self, value: Expr, target: str | None = None):
        self._init(None, False)
        self.value, self.target = value, target

    def read_names(self):
        return self.value.names([])

    def render(self):
        v = self.value
        text = ", ".join(e.render() for e in v.elts) if type(v) is Tuple and len(v.elts) > 1 \
            else v.render()
        return f"{self.target} = {text}" if self.target is not None else f"return {text}"

    def subst(self, mapping):
        return Return(self.value.subst(mapping), self.target)


def lit(value) -> Expr:
    """A plain Python constant (nested tuples, lists, dicts of scalars) as an expression."""
    t = type(value)
    if t is tuple:
        return Tuple([lit(v) for v in value])
    if t is list:
        return List([lit(v) for v in value])
    if t is dict:
        return Dict([lit(k) for k in value], [lit(v) for v in value.values()])
    if t is slice:
        return Call(Name("slice"), [lit(value.start), lit(value.stop), lit(value.step)])
    return Const(value)
