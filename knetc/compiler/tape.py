"""The straight-line program that specialization records: symbolic values (Sym) and operations (Op).

A Sym stands for a value computed by the generated code. It carries the concrete value seen while
specializing (so shapes, dtypes and branch outcomes are known) and whether it depends on the
differentiated argument. Python operators on Syms record operations on the current tape.
"""
from __future__ import annotations

import functools
import keyword as _keyword
import math
import operator
import random as _random
import warnings

import numpy as np

from .. import errors
from ..rules import registry
from ..runtime import prims
from ..runtime.backend import devices_of
from . import ir
from .selectors import plain


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
        try:
            return self.val.dtype
        except AttributeError:      # a Python scalar
            return np.dtype(type(self.val))

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

    def __array__(self, dtype=None, copy=None):
        # NumPy converting a traced value itself: inside a container it does not understand (an
        # object array, a set, np.r_ with directives) or in a call knetc does not record. Letting
        # it through would bake this trace's internal value into the generated code.
        self.tape.fail(errors.UnsupportedSyntax,
                       "knetc: a NumPy call received a traced array where knetc cannot record "
                       "it (inside an object array, a container NumPy converts element by "
                       "element, or a call without a rule)",
                       "Instead: build arrays with np.array/np.stack/np.concatenate of (nested) "
                       "lists of arrays, keep dtype=float, and call NumPy functions on arrays.")

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
    __slots__ = ("kind", "outs", "fn", "args", "kwargs", "loc", "rule", "saved", "expr", "stmt",
                 "saved_val")

    def __init__(self, kind, outs, fn=None, args=(), kwargs=None, loc=None, rule=None, expr=None,
                 stmt=None):
        self.kind, self.outs, self.fn, self.args = kind, outs, fn, args
        self.kwargs = kwargs or {}
        self.loc, self.rule, self.saved, self.expr, self.stmt = loc, rule, None, expr, stmt
        # what a pure ``forward=`` rule saved for the backward while tracing (None: not run so)
        self.saved_val = None


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
                                   "tuple", "list", "dict", "type", "_GuardFailed", "_", "d"}


_OPERATORS = {operator.add, operator.sub, operator.mul, operator.truediv, operator.floordiv,
              operator.mod, operator.pow, operator.matmul, operator.lt, operator.le, operator.gt,
              operator.ge, operator.eq, operator.ne, operator.and_, operator.or_, operator.xor,
              operator.neg, operator.invert, operator.pos, operator.getitem}


def _as_shape(args):
    """reshape/transpose accept varargs or one tuple: x.reshape(2, 3) == x.reshape((2, 3))."""
    return args[0] if len(args) == 1 else tuple(args)


def _as_function(f):
    """A method whose parameters are NumPy function ``f``'s after the array (x.std(axis,
    dtype, out, ddof) is np.std(x, axis, dtype, out, ddof))."""
    return lambda t, x: lambda *a, **k: t.apply(f, (x,) + a, k)


# Array methods: name -> function building the equivalent primitive call. Not here: those that
# change the array in place (sort, fill, put, resize), and ptp, which NumPy 2 arrays no longer
# have.
_METHODS = {
    **{name: _as_function(getattr(np, name)) for name in (
        "sum", "mean", "max", "min", "prod", "clip", "squeeze", "argmax", "argmin", "all", "any",
        "std", "var", "cumsum", "cumprod", "trace", "diagonal", "repeat", "take", "round",
        "argsort", "nonzero", "searchsorted")},
    "dot": lambda t, x: lambda b: t.apply(np.dot, (x, b)),
    "swapaxes": lambda t, x: lambda *a: t.apply(np.swapaxes, (x,) + a),
    "reshape": lambda t, x: lambda *a: t.apply(np.reshape, (x, _as_shape(a))),
    "transpose": lambda t, x: lambda *a: t.apply(np.transpose, (x, _as_shape(a)) if a else (x,)),
    "flatten": lambda t, x: lambda: t.apply(np.reshape, (x, (-1,))),
    "ravel": lambda t, x: lambda: t.apply(np.reshape, (x, (-1,))),
    "copy": lambda t, x: lambda: t.apply(np.copy, (x,)),
    "item": lambda t, x: lambda: t.apply(float, (x,)),
    "astype": lambda t, x: lambda dtype, **k: t.apply(prims.astype, (x, np.dtype(dtype))),
}




@functools.lru_cache(maxsize=4096, typed=True)     # (the same keys in every trace of a model)
def identifier(text) -> str:
    """A Python identifier made from ``text`` (a variable, a dict key, a function's name)."""
    if type(text) is str and text.isidentifier():
        return text
    s = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in str(text))
    return s if s and not s[0].isdigit() else f"v{s}"


def one_int(i) -> bool:
    """Is index ``i`` one int: a Python int (not a bool), or a traced 0-d integer value (an
    argument's int read as data, an element of an int array)? (A row of the first axis.)"""
    if type(i) is int:
        return True
    if type(i) is not Sym:
        return False
    v = i.val
    return type(v) is int or (getattr(v, "ndim", None) == 0 and v.dtype.kind in "iu")


# Products smaller than this keep ``x @ W + b`` as two operations: a Python call costs about a
# microsecond (an 8x8 layer's whole product and add take two), and below this size the array
# saved is not worth it; above, one fresh array fewer (a language model's (T*B, vocabulary)
# scores: 140 MB of first-touched memory) is.
AFFINE_MIN = 1 << 16


class Tape:
    """The forward program being recorded, its names, and the objects the code refers to."""

    def __init__(self):
        self.ops: list[Op] = []
        self.loc = (None, None)          # (filename, lineno) of the statement being specialized
        self.names: dict[str, int] = {}
        self._guards: dict = {}
        # Int leaves of the arguments (selectors.IntArg): how many were made, and the key paths
        # of those whose values steered this trace (guarded; the cache keys them from now on).
        self.intargs = 0
        self.steered: set = set()
        self.steers = 0          # every steering use (a helper that steers is not a unit)
        self.refs: dict = {}  # id(obj) or ('exact', id) -> (code name, obj): namespace of the code
        self.taken = set(RESERVED)
        # Arrays NumPy computed here from constants alone (np.zeros(3)): id -> array (kept
        # alive, so ids are not reused): ``acc += w`` may rebind such a name (specialize._owned).
        self.folded: dict[int, object] = {}
        # id(row) -> (array, int index) for each ``array[i]`` recorded with one int (a row of an
        # embedding): a stack of such rows of one array is recorded as one gather (_rows_of).
        self.rows: dict[int, tuple] = {}
        # ``x @ W + b`` of NumPy arrays is one operation, prims.affine (``affine_fits``); set by
        # the pipeline for NumPy code (GPU code keeps the add, which its fusion may join).
        self.affine = False

    def close(self) -> None:
        """Forget the recorded operations once the trace is compiled or run. A Sym names its
        tape and the tape its operations' Syms: without this, every finished trace would be a
        cycle of thousands of objects left to Python's garbage collector."""
        self.ops = []
        self.rows = {}
        self.folded = {}

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

    def ref(self, obj, hint: str | None = None, exact: bool = False) -> str:
        """The code name under which generated code refers to ``obj``. NumPy's own functions
        are named ``np.<name>`` (bound to cupy in GPU specializations); ``exact=True`` names
        the object itself, for identity guards that must hold on either device."""
        key = ("exact", id(obj)) if exact else id(obj)
        hit = self.refs.get(key)
        if hit is not None:
            return hit[0]
        name = None if exact else _numpy_path(obj)
        if name is None:
            base = hint or getattr(obj, "__name__", None) or "c"
            name = self.newname(base if str(base).isidentifier() else "c")
        self.refs[key] = (name, obj)
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
        if self.intargs:    # an argument's int given to a primitive: its value steers
            args, kwargs = plain(args), plain(kwargs)
        if fn is operator.getitem and not kwargs and len(args) == 2:
            row = self._row(args[0], args[1])
            if row is not None:
                return row
        syms = syms_in(args)
        if kwargs:
            syms_in(kwargs, syms)
        rule = registry.lookup(fn)
        if not syms and not (rule is not None and rule.impure):
            val = fn(*args, **kwargs)
            if type(val) is np.ndarray:
                self.folded[id(val)] = val
            if getattr(val, "dtype", None) is _F64:
                _check_promotion(self, fn, args, kwargs)
            if type(val) is np.ndarray and val.dtype == object and _hides_syms(val):
                self.fail(errors.UnsupportedSyntax,
                          f"knetc: {_fname(fn)} put traced values inside an object array (from a "
                          "set or another container NumPy does not convert)",
                          "Instead: pass arrays, or lists and tuples of them.")
            return val
        hashable = _hashable(fn)
        if hashable and fn in _STATIC_SHAPE:   # np.shape(x), np.ndim(x), np.size(x): known, as x.shape is
            return fn(*concrete(args), **concrete(kwargs))
        if fn is np.where and len(args) + len(kwargs) == 1:   # np.where(c) is np.nonzero(c)
            return self.apply(np.nonzero, tuple(args) + tuple(kwargs.values()))
        if rule is None and hashable and fn in _AS_INDEXING:
            return _AS_INDEXING[fn](self, *args, **kwargs)
        if rule is None:
            self.fail(errors.NoRuleError,
                      f"knetc: no derivative rule for {_fname(fn)}, and it has no Python source "
                      "to specialize",
                      "Register one with @knetc.adjoint(fn) (see knetc.adjoint's docstring), or "
                      "knetc.nondifferentiable(fn) if it has no gradient.")
        if rule.alias:           # getval: the same value, cut off from the gradient
            s = syms[0]
            return Sym(self, s.name, s.val, False, temp=False)
        if (fn is np.stack or fn is np.array) and type(args[0]) in (list, tuple):
            gathered = self._rows_of(fn, args, kwargs)
            if gathered is not None:
                return gathered
        if not rule.impure:
            stacked = self._stack_lists(fn, args, kwargs)
            if stacked is not None:
                return self._apply_stacked(fn, args, kwargs, *stacked)
        diff_in = any(s.diff for s in syms)
        if rule.impure and not rule.differentiable and diff_in:
            what = f"{type(args[0].val if type(args[0]) is Sym else args[0]).__name__}.{args[1]}" \
                if fn is draw else _fname(fn)
            self.fail(errors.NoRuleError,
                      f"knetc: the random draw {what} takes a value that depends on the "
                      "differentiated argument, and has no gradient wrt it",
                      "Instead: draw standard values and transform them (mu + sigma * "
                      "rng.standard_normal(shape), low + (high - low) * rng.random(shape)), or "
                      "pass knetc.getval(v).")
        cargs, ckwargs = concrete(args), concrete(kwargs)
        # A pure primitive whose backward reads what its forward saved (rnnforw's reserve, the
        # argmax of max pooling) runs that forward now, so that tier 0 can differentiate this
        # call from the recorded values without running the forward again.
        saving = rule.forward is not None and not rule.impure and rule.differentiable and diff_in
        saved_val = None
        try:    # side effects (running statistics) belong to the generated code
            with prims.tracing_mode(True):
                if saving:
                    *vals, saved_val = rule.forward(*cargs, **ckwargs)
                    val = tuple(vals) if rule.outputs > 1 else vals[0]
                else:
                    val = fn(*cargs, **ckwargs)
        except Exception as e:
            if isinstance(e, TypeError) and len(devices_of((cargs, ckwargs))) > 1:
                self.fail(errors.KnetcError,
                          f"knetc: {_fname(fn)} mixes NumPy (host) and CuPy (GPU) arrays: a NumPy "
                          "constant or global meets values on the GPU",
                          "Instead: make the constant on the device (cupy.asarray(c), or "
                          "knetc.array_module(x).arange(...)), or pass it as an argument moved "
                          "with knetc.gpu().")
            e.add_note(f'knetc: while specializing "{self.loc[0]}", line {self.loc[1]}')
            raise
        if getattr(val, "dtype", None) is _F64:   # a float32 model promoted by a float64 scalar?
            _check_promotion(self, fn, args, kwargs)
        diff = rule.differentiable and diff_in
        if fn not in _OPERATORS:
            self.ref(fn)   # the function takes its plain name before any result is named after it
        base = rule.name
        if rule.outputs > 1 or (type(val) is tuple and not diff):
            # several results (np.nonzero's index arrays, np.unique(..., return_counts=True)):
            # one value each, unpacked by the generated code
            outs = tuple(None if v is None else Sym(self, self.newname(base), v, diff)
                         for v in val)
        else:
            outs = Sym(self, self.newname(base), val, diff)
        if diff:
            for o in outs if type(outs) is tuple else (outs,):
                if o is not None and getattr(getattr(o.val, "dtype", None), "kind", None) == "O":
                    self.fail(errors.UnsupportedSyntax,
                              f"knetc: {_fname(fn)} made an object array (dtype=object) of "
                              "traced values, which has no gradient",
                              "Instead: keep float dtypes (np.array(items) without "
                              "dtype=object, np.stack, np.concatenate).")
        op = Op("call", outs, fn, args, kwargs, self.loc, rule)
        op.saved_val = saved_val
        self.ops.append(op)
        if fn is operator.getitem and type(outs) is Sym and type(args[0]) is Sym and \
                args[0].ndim and one_int(args[1]):     # (NumPy's rows take _row, above)
            self.rows[id(outs)] = (args[0], args[1])
        if _shape_from_data(fn, args, kwargs):
            # x[x > 0], np.nonzero(x), np.repeat(x, counts): the result's shape depends on
            # values, and the code after it was written for this shape: guard it (another shape
            # compiles another entry).
            for o in outs if type(outs) is tuple else (outs,):
                if o is not None:
                    self.guard_shape(o)
        return outs

    def draw(self, source, name, args, kwargs):
        """``source.name(*args, **kwargs)``, a random draw (or a reseeding) of a NumPy or Python
        generator: recorded as an impure operation, so the generated code draws anew on every
        call, as Python would; never this trace's draw baked into the code."""
        if name in _IN_PLACE_DRAWS:
            self.fail(errors.MutationError,
                      f"knetc: .{name}() shuffles an array in place, which the generated code "
                      "cannot replay", "Instead: x[rng.permutation(len(x))], or "
                      "rng.permutation(x).")
        return self.apply(draw, (source, name) + tuple(args), kwargs)

    def guard_shape(self, sym):
        """Guard the shape of a value whose shape this trace's data decided."""
        val = sym.val
        if isinstance(val, (bool, int, float, complex)):
            return      # Python scalars have no shape to change
        shape = ir.lit(tuple(np.shape(val)))
        if isinstance(val, (np.ndarray, np.generic)) or hasattr(val, "__cuda_array_interface__"):
            test = ir.BinOp("!=", ir.Attr(ir.Var(sym), "shape"), shape)
        else:
            test = ir.BinOp("!=", ir.call(ir.np_fn("shape"), ir.Var(sym)), shape)
        self.guard(test, self.loc[1])

    # -- Python lists where NumPy takes arrays ---------------------------------------------
    def affine_fits(self, a, b, c) -> bool:
        """May ``a @ b + c`` be recorded as one ``prims.affine(a, b, c)``? For NumPy float
        products of a matrix or vector by a matrix, at least one traced, and a ``c`` that
        broadcasts to the product's shape without changing it or its type (so adding it in
        place is what ``+`` computes)."""
        if not self.affine or (type(a) is not Sym and type(b) is not Sym):
            return False
        va = a.val if type(a) is Sym else a
        vb = b.val if type(b) is Sym else b
        if type(va) is not np.ndarray or type(vb) is not np.ndarray or vb.ndim != 2 or \
                va.ndim not in (1, 2) or va.shape[-1] != vb.shape[0]:
            return False
        dtype = np.result_type(va, vb)
        vc = c.val if type(c) is Sym else c
        tc = type(vc)
        if dtype.kind != "f" or not (tc is np.ndarray or tc is float or tc is int):
            return False
        shape = va.shape[:-1] + vb.shape[1:]
        if math.prod(shape) * dtype.itemsize < AFFINE_MIN:
            return False
        try:
            return np.result_type(dtype, vc) == dtype and \
                np.broadcast_shapes(shape, np.shape(vc)) == shape
        except (TypeError, ValueError):
            return False

    def _row(self, x, i):
        """``x[i]`` with one int ``i`` (a row of an embedding, a word of a sentence): the most
        frequent operation of a dynamic model's trace, recorded without ``apply``'s general
        checks, none of which applies (no container to build, no dtype promotion, no value
        that decides the shape, no knetc code run by NumPy's indexing). None: not that case."""
        if type(x) is not Sym or type(x.val) is not np.ndarray or x.val.ndim == 0 or \
                x.val.dtype.kind == "O" or not one_int(i):
            return None
        rule = registry.lookup(operator.getitem)
        try:
            val = x.val[i.val if type(i) is Sym else i]
        except Exception as e:
            e.add_note(f'knetc: while specializing "{self.loc[0]}", line {self.loc[1]}')
            raise
        out = Sym(self, self.newname(rule.name), val, rule.differentiable and x.diff)
        self.ops.append(Op("call", out, operator.getitem, (x, i), None, self.loc, rule))
        self.rows[id(out)] = (x, i)
        return out

    def _rows_of(self, fn, args, kwargs):
        """``np.stack([E[i] for i in words])`` (or ``np.array`` of them): rows of one array,
        each taken with one int, recorded as one gather ``E[np.asarray([i, ...])]``, which is
        the same array: the backward is then one scatter of rows into E's gradient, not a
        statement per word (and a trace of fewer operations). None when ``args`` are not so."""
        items = args[0]
        if len(items) < 2 or len(args) > (2 if fn is np.stack else 1):
            return None
        axis = args[1] if len(args) == 2 else kwargs.get("axis", 0)
        if type(axis) is not int or axis != 0 or \
                (kwargs and (fn is np.array or set(kwargs) != {"axis"})):
            return None
        rows = self.rows
        first = rows.get(id(items[0]))
        if first is None:
            return None
        base, idx = first[0], []
        for item in items:
            got = rows.get(id(item)) if type(item) is Sym else None
            if got is None or got[0] is not base:
                return None
            idx.append(got[1])
        return self.apply(operator.getitem, (base, self.apply(np.asarray, (idx,))))

    def _stack_lists(self, fn, args, kwargs):
        """``np.sum([w, 2 * w])``, ``np.array([[x, y], [z, 1.0]])``: the (nested) lists of
        traced values that ``fn`` reads as arrays, built first as arrays (np.array of
        arrays), so that every rule sees arrays. None when there is nothing to build."""
        if not any(type(a) is list or type(a) is tuple for a in args) and \
                not any(type(v) is list or type(v) is tuple for v in kwargs.values()):
            return None         # the usual case: nothing is a list (a fast exit, per operation)
        if not _hashable(fn):
            return None
        if fn in _BUILDERS or fn in _JOINERS:
            # np.array([[x, y], [z, w]]) and np.stack([[x, y], [z, w]]) take the top list as it
            # is (their rules split the gradient among its items): its inner lists become arrays
            if not args or type(args[0]) not in (list, tuple):
                return None
            first = args[0]
            items = [self.as_array(v) if _has_syms(v) else v for v in first]
            if all(a is b for a, b in zip(items, first)):
                return None
            return (type(first)(items),) + tuple(args[1:]), kwargs
        if fn is operator.getitem:
            return None
        if isinstance(fn, np.ufunc) or fn in _OPERATORS:
            positions = range(len(args))
        elif (getattr(fn, "__module__", None) or "").startswith("numpy"):
            positions = [i for i, a in enumerate(args) if i == 0 or _has_float_syms(a)]
        else:
            return None
        new_args, changed = list(args), False
        for i in positions:
            if _has_syms(args[i]):
                new_args[i], changed = self.as_array(args[i]), True
        new_kwargs = kwargs
        if isinstance(fn, np.ufunc) or fn in _OPERATORS:
            pass
        elif any(_has_float_syms(v) for v in kwargs.values()):
            new_kwargs = {k: self.as_array(v) if _has_float_syms(v) else v
                          for k, v in kwargs.items()}
            changed = True
        return (tuple(new_args), new_kwargs) if changed else None

    def _apply_stacked(self, fn, args, kwargs, new_args, new_kwargs):
        """``fn`` on the lists built as arrays; its result checked against NumPy's own result
        for the lists (same shape; the same dtype, cast where the built arrays differ)."""
        out = self.apply(fn, new_args, new_kwargs)
        try:
            expected = fn(*concrete(args), **concrete(kwargs))
        except Exception as e:
            e.add_note(f'knetc: while specializing "{self.loc[0]}", line {self.loc[1]}')
            raise
        if type(out) is Sym and hasattr(expected, "dtype"):
            if np.shape(out.val) != np.shape(expected):
                self.fail(errors.UnsupportedSyntax,
                          f"knetc: {_fname(fn)} of nested lists of traced arrays gave shape "
                          f"{np.shape(expected)}, which knetc cannot reproduce from the lists "
                          "built as arrays", "Instead: build the array with np.stack or "
                          "np.concatenate first, then call the function on it.")
            if out.dtype != expected.dtype:
                out = self.apply(prims.astype, (out, expected.dtype))
        return out

    def as_array(self, value):
        """A (nested) list or tuple holding traced values, as one traced array: the innermost
        lists first, then np.array of the results (what NumPy's conversion of it computes)."""
        if type(value) not in (list, tuple):
            return value
        items = [self.as_array(v) if _has_syms(v) else v for v in value]
        return self.apply(np.array, (items,))

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
        if is_random_source(sym.val):   # a generator made inside the function: rng.normal(...)
            if not callable(getattr(sym.val, name, None)):
                self.fail(errors.UnsupportedSyntax,
                          f"knetc: reading .{name} of a random generator made inside a "
                          "differentiated function is not supported",
                          "Call its drawing methods (rng.normal(...), rng.random(...)) only.")
            return lambda *a, **k: self.draw(sym, name, a, k)
        make = _METHODS.get(name)
        if make is None:
            self.fail(errors.UnsupportedSyntax,
                      f"knetc: array attribute or method .{name} is not supported",
                      "Use the NumPy function form (np.xxx(x, ...)), or register a rule for it.")
        return make(self, sym)


# ---------------------------------------------------------------------------------------------
# A float32 model stays float32: NumPy float64 scalars that promote it are pointed out.

class PrecisionWarning(UserWarning):
    """A NumPy float64 scalar (``np.sqrt(d)`` of an int, ``np.float64(...)``, a 0-d float64 array)
    made float32 arrays float64 in the differentiated function: NumPy 2 promotes float32 arrays
    to float64 when they meet one; Python floats stay weak and do not. Warned once per line."""


_F64 = np.dtype(np.float64)
_NARROW = (np.dtype(np.float32), np.dtype(np.float16))
_OP_SYMBOLS = {operator.add: "+", operator.sub: "-", operator.mul: "*", operator.truediv: "/",
               operator.floordiv: "//", operator.mod: "%", operator.pow: "**", operator.matmul: "@"}
_warned_lines: set = set()


def _check_promotion(tape, fn, args, kwargs) -> None:
    """``fn(*args, **kwargs)`` gave float64: when an operand is a float32 (or float16) array or
    scalar and another a NumPy float64 scalar (a constant of the trace, or an argument or global
    leaf; not a value computed from float64 data, which meets float32 on purpose), the model
    silently left float32 here. Warn once per user line, saying what to write instead."""
    narrow = scalar = None
    sym_scalar, array = False, True
    for a in (*args, *kwargs.values()):
        v = a.val if type(a) is Sym else a
        dt = getattr(v, "dtype", None)
        if not isinstance(dt, np.dtype):
            continue
        if dt in _NARROW:
            narrow, array = dt, bool(getattr(v, "ndim", 0))
        elif dt is _F64 and (type(v) is np.float64 or getattr(v, "ndim", None) == 0) \
                and (scalar is None or (sym_scalar and type(a) is not Sym)):   # constants first
            scalar, sym_scalar = a, type(a) is Sym
    if narrow is None or scalar is None:
        return
    filename, lineno = tape.loc
    if filename is not None and filename.startswith("<knetc-"):
        return                          # knetc's own generated code (grad of grad)
    key = (filename, lineno)
    if key in _warned_lines or (sym_scalar and id(scalar) in _computed(tape)):
        return
    _warned_lines.add(key)
    scalar = scalar.val if sym_scalar else scalar
    what = _OP_SYMBOLS.get(fn) if _hashable(fn) else None
    what = f"'{what}'" if what else (_numpy_path(fn) or _fname(fn))
    kind = "np.float64 scalar" if type(scalar) is np.float64 else "0-d float64 array"
    operand = f"{narrow} {'array' if array else 'scalar'}"
    message = (f"knetc: {what} of a {operand} and a {kind} ({float(scalar)!r}) gives float64 "
               f"here: NumPy 2 promotes {narrow} arrays to float64 when they meet a NumPy float64 "
               f"scalar (np.sqrt(d) of an int is one). Write np.{narrow}(...) around the scalar, or "
               f"compute it with Python floats (math.sqrt(d), float(...)), which stay weak and keep "
               f"{narrow}.")
    warnings.warn_explicit(message, PrecisionWarning, filename or "<unknown>", lineno or 0)


def _computed(tape) -> set:
    """The ids of the values the tape's operations computed so far (not arguments or reads),
    gathered incrementally (only asked for when a traced float64 scalar meets float32)."""
    seen, ids = getattr(tape, "_computed_ids", (0, set()))
    ops = tape.ops
    if len(ops) < seen:
        seen, ids = 0, set()
    for op in ops[seen:]:
        if op.kind == "call":
            for o in op.outs if type(op.outs) is tuple else (op.outs,):
                ids.add(id(o))
    tape._computed_ids = (len(ops), ids)
    return ids


# ---------------------------------------------------------------------------------------------
# Random draws from any generator: recorded, never folded (see Tape.draw).

_RANDOM_SOURCES = (np.random.Generator, np.random.RandomState, np.random.BitGenerator,
                   np.random.SeedSequence, _random.Random)
# Making a generator inside the function makes a new one on every call (from its seed, or fresh).
RANDOM_MAKERS = {np.random.default_rng, np.random.Generator, np.random.RandomState,
                 np.random.SeedSequence, np.random.PCG64, np.random.MT19937, np.random.Philox,
                 np.random.SFC64, _random.Random}
if hasattr(np.random, "PCG64DXSM"):
    RANDOM_MAKERS.add(np.random.PCG64DXSM)
_IN_PLACE_DRAWS = {"shuffle"}


def is_random_source(obj) -> bool:
    """A NumPy Generator/RandomState/bit generator or a Python random.Random (and subclasses)."""
    return isinstance(obj, _RANDOM_SOURCES)


def draw(source, method, *args, **kwargs):
    """``source.method(*args, **kwargs)``: a random draw, run anew by every call of the code."""
    return getattr(source, method)(*args, **kwargs)


def new_generator(make, *args, **kwargs):
    """``make(*args, **kwargs)``: a random generator made inside the differentiated function."""
    return make(*args, **kwargs)


registry.nondifferentiable(draw, new_generator, impure=True)


# Selections written as indexing (which has a rule, and guards the selection's shape).

def _extract(tape, condition, arr):
    """np.extract(condition, arr): arr's entries where condition (raveled) is nonzero."""
    flat = tape.apply(np.reshape, (arr, (-1,)))
    cond = tape.apply(np.reshape, (condition, (-1,))) if type(condition) is Sym \
        else np.reshape(condition, -1)
    index = tape.apply(np.nonzero, (cond,))
    return tape.apply(operator.getitem, (flat, index if type(index) is tuple else (index,)))


def _compress(tape, condition, a, axis=None, out=None):
    """np.compress(condition, a, axis): a's slices along axis where condition is nonzero."""
    if out is not None:
        tape.mutation("np.compress(..., out=...)")
    if axis is None:
        a, axis = tape.apply(np.reshape, (a, (-1,))), 0
    positions = tape.apply(np.nonzero, (condition,))[0]
    ax = axis % max(np.ndim(a.val if type(a) is Sym else a), 1)
    return tape.apply(operator.getitem, (a, (slice(None),) * ax + (positions,)))


_AS_INDEXING = {np.extract: _extract, np.compress: _compress}


# Functions whose result's shape is decided by the values of their (array) arguments.
_DATA_SHAPED = {np.nonzero, np.flatnonzero, np.argwhere, np.unique, np.extract, np.compress,
                np.bincount, np.arange, np.histogram, np.histogram_bin_edges, np.trim_zeros,
                np.setdiff1d, np.intersect1d, np.union1d, np.setxor1d}
for _name in ("unique_values", "unique_counts", "unique_inverse", "unique_all"):
    if hasattr(np, _name):
        _DATA_SHAPED.add(getattr(np, _name))
# Functions whose result's shape follows from their arguments' shapes (and constant arguments),
# whatever the values of their integer or boolean array arguments.
_SHAPE_FROM_SHAPES = {np.sum, np.mean, np.prod, np.max, np.min, np.amax, np.amin, np.any, np.all,
                      np.count_nonzero, np.argmax, np.argmin, np.cumsum, np.cumprod, np.where,
                      np.take, np.take_along_axis, np.searchsorted, np.sort, np.argsort, np.clip,
                      np.isin, np.zeros_like, np.ones_like, np.empty_like, np.copy, np.transpose,
                      np.squeeze, np.expand_dims, np.dot, np.einsum, np.array, np.asarray,
                      np.stack, np.concatenate, prims.astype, float, np.logical_not}
_STATIC_SHAPE = {np.shape, np.ndim, np.size}
_BUILDERS = {np.array, np.asarray, np.asanyarray, np.ascontiguousarray, np.asfortranarray}
# Functions whose first argument is a list of arrays their rules take item by item.
_JOINERS = {np.concatenate, np.stack, np.vstack, np.hstack, np.dstack, np.column_stack, np.block,
            np.linalg.multi_dot}
if hasattr(np, "row_stack"):
    _JOINERS.add(np.row_stack)


def _hides_syms(arr) -> bool:
    """Does an object array hold traced values (directly or inside sets, lists, tuples)?"""
    def holds(v):
        if type(v) is Sym:
            return True
        if isinstance(v, (set, frozenset, list, tuple)):
            return any(holds(u) for u in v)
        if type(v) is dict:
            return any(holds(u) for u in v.values())
        return False
    return any(holds(v) for v in arr.flat)


def _has_syms(v) -> bool:
    return type(v) in (list, tuple) and bool(syms_in(v))


def _has_float_syms(v) -> bool:
    return type(v) in (list, tuple) and any(_kind(s) in "fc" for s in syms_in(v))


def _kind(sym) -> str:
    """The dtype kind of a traced value ('f', 'i', 'b'...; 'O' for other objects)."""
    try:
        return np.dtype(sym.dtype).kind
    except TypeError:
        return "O"


def _shape_from_data(fn, args, kwargs=None) -> bool:
    """Might the shape of fn(*args, **kwargs) differ on another call whose arguments have the
    same shapes? Then the code after it, written for this shape, needs a guard on it.

    Yes for boolean masks and traced slice bounds (``x[x > 0]``, ``x[:n]``), for the functions
    that select by value (np.nonzero, np.unique, np.bincount...), and, unless the function is
    known to shape its result from shapes alone (elementwise operations, reductions, gathers),
    for every call taking a traced integer or boolean value: a count, a size or a repeat."""
    if fn is operator.getitem:
        idx = args[1]
        for p in idx if type(idx) is tuple else (idx,):
            if type(p) is Sym and _kind(p) == "b":   # a mask (also 0-d: x[True], x[False])
                return True
            if type(p) is slice and syms_in(p):
                return True
            if type(p) is list and any(type(q) is Sym and _kind(q) == "b" for q in p):
                return True
        return False
    if _hashable(fn) and fn in _DATA_SHAPED:
        return True
    if isinstance(fn, np.ufunc) or (_hashable(fn) and fn in _OPERATORS):
        return False
    if getattr(fn, "knetc_shapes_from_shapes", False):  # a unit: shapes from its signature
        return False
    # the items of np.array([i, j]) are its values; only a further argument can be a count
    syms = syms_in(args[1:] if _hashable(fn) and fn in _BUILDERS else args)
    if kwargs:
        syms_in(kwargs, syms)
    counts = [s for s in syms if _kind(s) in "biu"]
    if not counts:
        return False
    if _hashable(fn) and fn in _SHAPE_FROM_SHAPES:
        return any(s.ndim == 0 for s in counts)
    return True


def _hashable(fn) -> bool:
    return getattr(type(fn), "__hash__", None) is not None


def _fname(fn):
    mod = getattr(fn, "__module__", None)
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    return f"{mod}.{name}" if mod and mod != "builtins" else name


def _numpy_path(obj):
    """'np.tanh' for NumPy's own functions, so generated code reads like hand-written code."""
    name = getattr(obj, "__name__", None)
    if name is None:
        return None
    # The modules' own dicts: getattr would run NumPy's deprecation hooks (np.bytes...).
    if vars(np).get(name) is obj:
        return f"np.{name}"
    for sub in ("linalg", "random", "fft"):
        if vars(getattr(np, sub)).get(name) is obj:
            return f"np.{sub}.{name}"
    return None
