"""Specialization: walk the user's source for the given arguments and record a straight-line tape.

Python values (ints, tuples, dict keys, lengths, shapes) are known and computed here; arrays are
Syms, recorded on the tape with their concrete values from this call. Loops are unrolled, branches
on known values resolved, branches on array values decided by this call's values and guarded, user
functions, closures and lambdas inlined (recursion included).
"""
from __future__ import annotations

import ast
import builtins
import contextlib
import copy
import inspect
import operator
import sys
import threading
import types
import weakref

import gast
import numpy as np

from .. import errors, tree
from ..rules import registry
from ..runtime import prims
from ..runtime.backend import is_array
from . import ir
from .cache import spec_of
from .parse import Parsed, parse_function
from . import units
from .selectors import IntArg, as_index, plain
from .tape import RANDOM_MAKERS, Sym, Tape, concrete, identifier, is_random_source, new_generator, syms_in
from .values import dtype_expr, value_expr

_BINOPS = {gast.Add: operator.add, gast.Sub: operator.sub, gast.Mult: operator.mul,
           gast.Div: operator.truediv, gast.FloorDiv: operator.floordiv, gast.Mod: operator.mod,
           gast.Pow: operator.pow, gast.MatMult: operator.matmul, gast.BitAnd: operator.and_,
           gast.BitOr: operator.or_, gast.BitXor: operator.xor, gast.LShift: operator.lshift,
           gast.RShift: operator.rshift}
_CMPOPS = {gast.Eq: operator.eq, gast.NotEq: operator.ne, gast.Lt: operator.lt, gast.LtE: operator.le,
           gast.Gt: operator.gt, gast.GtE: operator.ge, gast.Is: operator.is_,
           gast.IsNot: operator.is_not, gast.In: lambda a, b: a in b,
           gast.NotIn: lambda a, b: a not in b}
_IOPS = {gast.Add: operator.iadd, gast.Mult: operator.imul, gast.BitOr: operator.ior}
_UNOPS = {gast.USub: operator.neg, gast.UAdd: operator.pos, gast.Not: operator.not_,
          gast.Invert: operator.invert}
_NO_INLINE = ("numpy", "cupy", "scipy", "knetc.runtime", "builtins", "math", "operator")
_RECORDING = ("knetc.compiler.tape",)   # knetc's own helpers (array methods) that record on the tape
_MAX_STEPS = 1_000_000
_NOTE = "knetc: while specializing"
_UNTRACKED = (int, float, complex, str, bytes, type(None), type, types.ModuleType,
              types.FunctionType, types.BuiltinFunctionType, types.MethodType, np.ufunc, np.generic)
_MUTATORS = {"append", "extend", "insert", "pop", "remove", "clear", "update", "setdefault",
             "popitem", "sort", "reverse"}


_recursion = {"active": 0, "old": None}
_recursion_lock = threading.Lock()
# Specializing one level of the user's recursion takes several frames of this interpreter
# (call, bind, body, statement, expression...): knetc's limit is the user's, scaled by this.
FRAMES_PER_LEVEL = 8
_MIN_LIMIT = 20000


@contextlib.contextmanager
def _deep_recursion():
    """Raise the recursion limit while any thread specializes (scaled from the user's own
    limit); restore it after the last one."""
    with _recursion_lock:
        if _recursion["active"] == 0:
            _recursion["old"] = sys.getrecursionlimit()
            sys.setrecursionlimit(max(_recursion["old"] * FRAMES_PER_LEVEL, _MIN_LIMIT))
        _recursion["active"] += 1
    try:
        yield
    finally:
        with _recursion_lock:
            _recursion["active"] -= 1
            if _recursion["active"] == 0:
                sys.setrecursionlimit(_recursion["old"])


class _Return(Exception):
    def __init__(self, value):
        self.value = value


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


class Inlinable:
    """A gradient function (``knetc.grad(g)``) called inside a differentiated function: the
    specializer inlines its generated code, ``specialize(args, kwargs, pure=True).fn``, called
    with ``bind(args, kwargs)``; ``prefix``: the first of those, bound by the callable itself
    (a bound method's ``self``, a partial's positional arguments)."""
    fun: object
    with_loss: bool
    prefix: tuple = ()

    def specialize(self, args, kwargs=None, *, pure: bool = False):
        raise NotImplementedError

    def finish(self, result):
        """What the gradient function returns, from its code's ``(gradient, loss[, aux])``."""
        raise NotImplementedError

    def bind(self, args, kwargs=None) -> tuple:
        """One value per parameter of the generated code (what ``specialize``'s entry takes):
        the call's arguments, after what a bound method or partial binds, defaults filled in."""
        return self._bind(tuple(args), dict(kwargs or {}))

    def _bind(self, args, kwargs) -> tuple:
        raise NotImplementedError


class Frame:
    """One activation of a user function: its variables, enclosing frame, globals and cells."""
    __slots__ = ("vars", "parent", "globals", "cells", "filename", "fn")

    def __init__(self, parent, globals_, cells, filename, fn):
        self.vars, self.parent, self.globals = {}, parent, globals_
        self.cells, self.filename, self.fn = cells, filename, fn


class Closure:
    """A def or lambda evaluated during specialization: its tree and its defining frame.

    Called by Python code (``functools.reduce``, ``sorted(key=...)``), it runs in the
    specializer that made it; ``as_function`` makes a real function of it (``knetc.grad`` of a
    function defined inside the differentiated function)."""

    def __init__(self, node, frame, defaults, kwdefaults, spec=None):
        self.node, self.frame, self.defaults, self.kwdefaults = node, frame, defaults, kwdefaults
        self.__name__ = getattr(node, "name", "<lambda>")
        self.spec = spec

    def __call__(self, *args, **kwargs):
        if self.spec is None:
            raise TypeError(f"{self.__name__} can only be called while it is specialized")
        return self.spec.call_closure(self, list(args), kwargs)

    def as_function(self, _made=None):
        """A Python function compiled from this def's tree, in the user's file and lines, whose
        closure holds the values it reads from the enclosing functions. These must not be
        traced values (they would be this trace's values, frozen): pass those as arguments."""
        made = {} if _made is None else _made
        if id(self) in made:
            return made[id(self)]
        made[id(self)] = None          # in progress (a cycle of closures is refused)
        frame, node = self.frame, copy.deepcopy(self.node)
        name = getattr(node, "name", None)
        # Defaults are this object's (evaluated already), annotations and decorators not needed.
        a = node.args
        a.defaults, a.kw_defaults = [], [None] * len(a.kwonlyargs)
        for arg in a.posonlyargs + a.args + a.kwonlyargs + [a.vararg, a.kwarg]:
            if arg is not None:
                arg.annotation = None
        if name is not None:
            node.decorator_list, node.returns = [], None
        visible: dict = {}
        f = frame
        while f is not None:
            for k, v in f.vars.items():
                visible.setdefault(k, v)
            for k, cell in (f.cells or {}).items():
                try:
                    visible.setdefault(k, cell.cell_contents)
                except ValueError:   # an empty cell
                    pass
            f = f.parent
        visible.pop(name, None)
        params = sorted(k for k in visible if k.isidentifier() and not k.startswith("__knetc"))
        if name is not None:
            body = [gast.gast_to_ast(node), ast.Return(ast.Name(name, ast.Load()))]
        else:
            body = [ast.Return(gast.gast_to_ast(node))]
        factory = ast.FunctionDef(name="__knetc_factory__", args=ast.arguments(
            posonlyargs=[], args=[ast.arg(p) for p in params], vararg=None, kwonlyargs=[],
            kw_defaults=[], kwarg=None, defaults=[]), body=body, decorator_list=[], returns=None,
            type_comment=None)
        module = ast.Module([factory], [])
        _locate(factory, self.node.lineno)
        ast.fix_missing_locations(module)
        ns: dict = {}
        exec(compile(module, frame.filename, "exec"), ns)
        free = set(ns["__knetc_factory__"](*[None] * len(params)).__code__.co_freevars)
        values = []
        for p in params:
            v = visible[p] if p in free else None
            if p in free and isinstance(v, Closure):
                v = v.as_function(made)
                if v is None:
                    self._refuse(f"{p} (a function that refers back to it)")
            if p in free and (syms_in(v) or _holds_closure(v)):
                self._refuse(p)
            values.append(v)
        for d in list(self.defaults) + list(self.kwdefaults.values()):
            if syms_in(d) or _holds_closure(d):
                self._refuse("a default argument")
        made_fn = ns["__knetc_factory__"](*values)
        fn = types.FunctionType(made_fn.__code__, frame.globals, made_fn.__name__,
                                tuple(self.defaults) or None, made_fn.__closure__)
        fn.__kwdefaults__ = dict(self.kwdefaults) or None
        fn.__qualname__ = made_fn.__qualname__.replace("__knetc_factory__.<locals>.", "")
        fn.__module__ = frame.globals.get("__name__")
        made[id(self)] = fn
        _MADE[fn.__code__] = Parsed(self.node, frame.filename, fn.__qualname__)
        return fn

    def _refuse(self, what):
        raise errors.UnsupportedSyntax(
            f"knetc: {self.__name__}, defined inside the differentiated function, reads {what}, "
            "a value computed from the differentiated function's arguments; knetc.grad of it "
            "would freeze this call's value",
            filename=self.frame.filename, lineno=self.node.lineno,
            hint="Instead: pass that value as an argument (knetc.grad(lambda v, c: ...)(x, c)), "
                 "or define the function at module level.")


class Mirror:
    """Where an argument's (or global's) containers live in the generated code."""

    def __init__(self):
        self.paths: dict[int, str] = {}
        self.keep: list = []

    def add(self, obj, path):
        self.paths[id(obj)] = path
        self.keep.append(obj)


class Specializer:
    """An interpreter of the user's Python that runs it once, on this call's values, and records
    the array operations on a tape: the straight-line forward program the adjoint is written for.

    **What is computed here and what is recorded.** Python values (ints, strings, tuples, dict
    keys, shapes, lengths) are computed by this interpreter: loops are unrolled, branches on them
    resolved, user functions inlined (``call_function``; lambdas and nested defs are ``Closure``
    objects). Arrays and float leaves of the arguments are ``Sym`` values: each operation on
    them is recorded on the tape (``Tape.apply``) with its concrete result, so shapes and dtypes
    are known when the adjoint is written. Calls to NumPy and knetc primitives need a rule
    (``knetc.rules``); anything else with Python source is inlined.

    **Never a stale gradient: where a value comes from decides how it enters the code.**
    The generated code is cached and reused for calls with the same key (``cache.spec_of`` of the
    arguments: structure, shapes, dtypes, and the values of ints/strings/bools). Whatever else
    steered this specialization must be checked when the cached code runs, by a ``Guard``:
    - *Arguments* (``mirror_value``): the structure of the caller's lists/tuples/dicts is in the
      key; their array and float leaves become ``read`` ops (``w_0, w_1 = w``) at the path where
      the generated code finds them; containers are remembered in ``self.mirror`` so that a store
      into them (``h[0] = v``) is replayed by the code (``emit_stores``). Nodes of ``knetc.tree``
      (NamedTuples, dataclasses, registered classes: pytrees) are walked the same way, their
      type and aux data in the key: the loss sees an instance of the same class around the
      mirrored children, read at run time as attributes (``p.w``) or, for registered classes,
      through their flatten (``_children(p)[0]``). A dataclass is made without its ``__init__``;
      its other data attributes (set by ``__init__``, class constants) are read from the caller's
      object like an outside object's (``_node_attribute``), its methods and properties run on
      the traced instance. An object of another class in a differentiated argument is a
      constant leaf, tracked (below); a loss that reads float arrays from it is refused
      (``LossError``): its weights would silently get no gradient.
    - *Globals and closure cells* (``outside``) are values the key does not see: ``reachable``
      reads arrays and floats at run time (``_g['W']``, ``cell.cell_contents``) and guards their
      type, shape and dtype (``_guard_kind``: the code after the read was written for them), and
      guards everything else: ints, strings and None by value, containers by their ``spec_of``,
      other objects (functions, modules' objects, layer specs) by identity.
    - *Objects from outside* (an argument that is a layer object, a global's attribute, a user's
      module, the ``self`` of a differentiated bound method) are tracked with their path
      (``_track``); reading an attribute (``attribute``) goes through ``reachable`` like a
      global, at ``path.attr``.
    - *Array values that steer Python* (``if np.sum(x) > 0``, ``int(n)``, ``x[x > 0]``'s shape):
      ``Tape.concretize`` takes this call's value and records a guard on it; ``Tape.apply`` guards
      every result shape that may depend on values (``tape._shape_from_data``: masks, traced
      slice bounds, np.nonzero/np.unique/np.bincount..., any call taking a traced count).
    - *Random draws* (np.random, a Generator, RandomState or random.Random, made here or from
      outside) are impure operations (``Tape.draw``): the code draws anew on every call.
    - *Traced values never leak*: NumPy converting a Sym itself (an object array, a container it
      does not understand) is refused (``Sym.__array__``); nested lists become arrays first
      (``Tape.as_array``).
    A cached entry whose guard fails raises ``GuardFailed``, and the call specializes anew.

    **In-place updates** are refused (``MutationError``) unless Python cannot tell them from a
    new value: ``s += v`` (or ``lst[i] += v``) on an array computed here that nothing else refers
    to (``_owned``, ``_owned_slot``).
    """

    def __init__(self, tape: Tape):
        self.tape = tape
        self.mirror = Mirror()
        self.steps = 0
        self._globals: dict = {}   # (id(dict), name) -> value already read this specialization
        self._gnames: dict = {}    # id(globals dict) -> code name
        self._external: dict = {}  # id(Sym) -> Sym read from outside (arguments, globals, cells)
        self.frames: list = []     # the active frames, innermost last
        self._stores: list = []    # (loc, container path, key, value) stored into the caller's data
        self._objects: dict = {}   # id(outside object) -> (its path in the code, the object)
        self._nodes: dict = {}     # id(mirrored node) -> (path, caller's object, mirror, diff,
        #                            its field names: NamedTuples and dataclasses; else None)
        self._opaque: dict = {}    # id(object of an unregistered class in a differentiated
        #                            argument) -> (the object, its path): not walked, see attribute
        self.result_loc = (None, None)   # the statement that returned the result
        self._depth = 0                  # the deepest nesting of user functions seen
        self._deepest = None             # where Python's recursion limit was hit
        # Int leaves of the arguments become IntArgs (selectors) unless their key path is here
        # (the cache keys their values); None: every int is a plain value (keyed).
        self.keyed_ints: frozenset | None = None
        self.units = False        # helpers called again alike become one operation (units)
        self.learn_units = False  # watch helpers' first calls of a kind (units.learn)
        self.unit_calls = 0       # calls recorded as one operation of a unit
        self._inlining: list | None = None   # functions inlined while a helper is watched
        self._unit_kinds: dict = {}          # units.lookup's memo of argument kinds
        self._fixed_tuples: dict = {}        # units.contents's memo: tuples that cannot change

    # -- entry --------------------------------------------------------------------------
    def run(self, fn, args, kwargs):
        try:
            with _deep_recursion():
                result = self.call_function(fn, list(args), kwargs)
        except RecursionError:
            self._too_deep()
        self.emit_stores()
        return result

    def _too_deep(self):
        """Python's recursion limit was hit while specializing: say how deep, and what to do."""
        filename, line = self._deepest or self.tape.loc
        user = _recursion["old"] if _recursion["active"] else sys.getrecursionlimit()
        raise errors.UnsupportedSyntax(
            f"knetc: specializing ran out of Python's recursion limit at {self._depth} nested "
            f"calls of the differentiated code's functions (knetc takes several interpreter "
            f"frames per call: it raised the limit to {max(user * FRAMES_PER_LEVEL, _MIN_LIMIT)} "
            f"from your sys.getrecursionlimit() = {user})",
            filename=filename, lineno=line,
            hint="Instead: raise the limit with sys.setrecursionlimit(n) before calling grad "
                 "(knetc then specializes about as deep as Python runs with that limit), or "
                 "write the recursion as a loop.") from None

    def emit_stores(self):
        """The stores into the caller's containers, after every guard of the forward code (a call
        whose guard fails must not have changed the caller's data), written with final names."""
        for loc, path, key, value in self._stores:
            self.tape.loc = loc
            target = ir.Subscript(path, value_expr(key, self.tape))
            self.tape.effect(ir.Store(target, value_expr(value, self.tape)))
        self._stores = []

    # -- calls --------------------------------------------------------------------------
    def call(self, f, args, kwargs):
        if isinstance(f, Closure):
            return self.call_closure(f, args, kwargs)
        if isinstance(f, Inlinable):
            return self.call_grad(f, plain(args), plain(kwargs))
        rule = registry.lookup(f)
        if rule is not None:    # (Tape.apply makes the arguments' ints plain: they steer)
            return self.tape.apply(f, tuple(args), kwargs)
        if self.tape.intargs and not _inlined(f):
            # An argument's int given to anything but inlined Python steers (its value decides),
            # except where only its type counts (isinstance, type: the key checks the type) or
            # where it passes through a container untouched (len, zip, list(...)).
            how = _INT_USE.get(f) if getattr(type(f), "__hash__", None) is not None else None
            if how is None:
                args, kwargs = plain(args), plain(kwargs)
            elif how == "type":
                args = [a.value if type(a) is IntArg else a for a in args]
        if getattr(type(f), "__hash__", None) is not None and f in RANDOM_MAKERS:
            return self.tape.apply(new_generator, (f,) + tuple(args), kwargs)
        owner = getattr(f, "__self__", None)
        if owner is not None and is_random_source(owner) and not isinstance(owner, type):
            return self.tape.draw(owner, f.__name__, args, kwargs)   # rng.normal(...), random.random()
        special = _BUILTINS.get(f) if getattr(type(f), "__hash__", None) is not None else None
        if special is not None:
            return special(self, args, kwargs)
        if isinstance(f, types.FunctionType) and f.__module__ in _RECORDING:
            return f(*args, **kwargs)   # e.g. the function x.sum stands for: records itself
        if isinstance(f, types.MethodType) and isinstance(f.__func__, types.FunctionType) \
                and _inlinable(f.__func__):
            return self.call_function(f.__func__, [f.__self__] + list(args), kwargs)
        if isinstance(f, types.FunctionType) and _inlinable(f):
            return self.call_function(f, args, kwargs)
        call = getattr(type(f), "__call__", None)   # a callable object (a layer)
        if isinstance(call, types.FunctionType) and _inlinable(call):
            return self.call_function(call, [f] + list(args), kwargs)
        if isinstance(f, (types.BuiltinMethodType, types.MethodWrapperType)):
            owner = getattr(f, "__self__", None)
            if id(owner) in self.mirror.paths and f.__name__ in _MUTATORS:
                self.tape.fail(errors.MutationError,
                               f"knetc: .{f.__name__}() on a container passed in from outside "
                               "changes the caller's data, which the cached code cannot replay",
                               "Instead: assign an element (h[0] = v), or build a new list.")
        if syms_in(list(args)) or (kwargs and syms_in(kwargs)):
            if isinstance(f, type) and f in (list, tuple, dict, zip, enumerate, reversed, sorted,
                                             map, filter, iter):
                return f(*args, **kwargs)
            if not isinstance(f, (types.BuiltinMethodType, types.MethodWrapperType, type)) or \
                    getattr(f, "__module__", None) in ("numpy", "cupy", "math", "cmath"):
                return self.tape.apply(f, tuple(args), kwargs)  # a no-rule error, unless translated
        return f(*args, **kwargs)

    def call_function(self, fn, args, kwargs):
        if self.learn_units and self.frames and not kwargs:
            unit, sig, leaves = units.lookup(fn, args, self._unit_kinds)
            if unit is not None:
                if self.units and unit.usable():
                    self.unit_calls += 1
                    return unit.apply(self, args)
            elif sig is not None:
                return self._watch(fn, args, sig, leaves)
        return self._inline_call(fn, args, kwargs)

    def _inline_call(self, fn, args, kwargs):
        if self._inlining is not None:
            self._inlining.append(fn)
        parsed = _MADE.get(fn.__code__) or parse_function(fn, SYNTAX)
        node = parsed.node
        cells = None
        if fn.__closure__:
            cells = dict(zip(fn.__code__.co_freevars, fn.__closure__))
        frame = Frame(None, fn.__globals__, cells, parsed.filename, fn)
        self.bind(node.args, frame, args, kwargs, fn.__defaults__ or (), fn.__kwdefaults__ or {},
                  fn.__qualname__)
        return self.run_body(node, frame)

    def _watch(self, fn, args, sig, leaves):
        """Inline a helper's first call of a kind, and tell ``units`` whether it was
        self-contained (then later calls of that kind are one operation)."""
        tape = self.tape
        start, steers, stores = len(tape.ops), tape.steers, len(self._stores)
        before = units.contents(args, self._fixed_tuples)
        outer, self._inlining = self._inlining, []
        try:
            result = self._inline_call(fn, args, {})
        finally:
            inlined, self._inlining = self._inlining, outer
            if outer is not None:
                outer.extend(inlined)
        clean = tape.steers == steers and len(self._stores) == stores and \
            units.contents(args, self._fixed_tuples) == before   # (one that changes them: never)
        units.learn(sig, fn, leaves, tape.ops[start:], result, [fn] + inlined, clean, _library)
        return result

    def call_closure(self, c, args, kwargs):
        if self._inlining is not None:
            self._inlining.append(None)     # a closure: never part of a unit
        frame = Frame(c.frame, c.frame.globals, None, c.frame.filename, c)
        self.bind(c.node.args, frame, args, kwargs, c.defaults, c.kwdefaults, c.__name__)
        return self.run_body(c.node, frame)

    def call_grad(self, g, args, kwargs):
        """grad(...) inside a differentiated function: inline the generated adjoint's source."""
        if isinstance(g.fun, type(g)):
            self.tape.fail(errors.UnsupportedSyntax,
                           "knetc: calling grad(grad(f)) inside a differentiated function is not supported",
                           "Differentiate the outer function with grad(grad(f)) directly.")
        entry = g.specialize(tuple(concrete(list(args))), concrete(kwargs), pure=True)
        bound = list(g.bind(args, kwargs))
        hit = self._objects.get(id(g))
        if hit is not None:
            # What a bound method or partial under g binds (self, fixed arguments) is reached
            # through g, like an outside object's attributes: arrays read when the code runs,
            # objects tracked (their attributes read there too), the rest guarded.
            for i, v in enumerate(g.prefix):
                if bound[i] is v:
                    bound[i] = self.reachable((id(g), "prefix", i), ir.Subscript(
                        ir.Attr(hit[0], "prefix"), ir.Const(i)), f"bound_{i}", v)
        return g.finish(self.call_function(entry.fn, bound, {}))

    def run_body(self, node, frame):
        saved = self.tape.loc
        self.frames.append(frame)
        if len(self.frames) > self._depth:
            self._depth = len(self.frames)
        try:
            if isinstance(node, gast.Lambda):
                return self.ev(node.body, frame)
            self.exec_block(node.body, frame)
            return None
        except _Return as r:
            return r.value
        finally:
            if len(self.frames) == 1:   # the differentiated function: where its result came from
                self.result_loc = self.tape.loc
            self.tape.loc = saved
            self.frames.pop()

    def bind(self, a, frame, args, kwargs, defaults, kwdefaults, name):
        """Python's argument binding: positional, keywords, defaults, *args, **kwargs."""
        params = [p.id for p in a.posonlyargs + a.args]
        v = frame.vars
        n = len(params)
        for p, x in zip(params, args):
            v[p] = x
        if len(args) > n:
            if a.vararg is None:
                raise TypeError(f"{name}() takes {n} positional arguments but {len(args)} were given")
            v[a.vararg.id] = tuple(args[n:])
        elif a.vararg is not None:
            v[a.vararg.id] = ()
        extra = {}
        kwonly = [p.id for p in a.kwonlyargs]
        for k, x in kwargs.items():
            if k in params or k in kwonly:
                if k in v:
                    raise TypeError(f"{name}() got multiple values for argument {k!r}")
                v[k] = x
            elif a.kwarg is not None:
                extra[k] = x
            else:
                raise TypeError(f"{name}() got an unexpected keyword argument {k!r}")
        first_default = n - len(defaults)
        for i, p in enumerate(params):
            if p not in v:
                if i >= first_default:
                    v[p] = defaults[i - first_default]
                else:
                    raise TypeError(f"{name}() missing required argument {p!r}")
        for p in kwonly:
            if p not in v:
                if p not in kwdefaults:
                    raise TypeError(f"{name}() missing keyword-only argument {p!r}")
                v[p] = kwdefaults[p]
        if a.kwarg is not None:
            v[a.kwarg.id] = extra

    # -- statements ---------------------------------------------------------------------
    def exec_block(self, stmts, frame):
        tape = self.tape
        for s in stmts:
            tape.loc = (frame.filename, s.lineno)
            self.steps += 1
            if self.steps > _MAX_STEPS:
                tape.fail(errors.UnsupportedSyntax,
                          "knetc: specialization ran more than a million statements",
                          "Is a loop unbounded? knetc unrolls loops; iterate over fewer items.")
            try:
                _STMTS[type(s)](self, s, frame)
            except (errors.KnetcError, _Return, _Break, _Continue):
                raise
            except RecursionError:
                if self._deepest is None:
                    self._deepest = (frame.filename, s.lineno)
                raise
            except Exception as e:   # the user's own error: say where (once, innermost)
                if not any(str(n).startswith(_NOTE) for n in getattr(e, "__notes__", ())):
                    e.add_note(f'{_NOTE} "{frame.filename}", line {s.lineno}')
                raise

    def s_expr(self, s, frame):
        self.ev(s.value, frame)

    def s_assign(self, s, frame):
        value = self.ev(s.value, frame)
        for t in s.targets:
            self.assign(t, value, frame)

    def s_annassign(self, s, frame):
        if s.value is not None:
            self.assign(s.target, self.ev(s.value, frame), frame)

    def s_augassign(self, s, frame):
        t = s.target
        if isinstance(t, gast.Name):
            old = self.lookup(t.id, frame)
            value = self.ev(s.value, frame)
            if is_array(old) and not self._owned_constant(old, t.id, frame) or type(old) is Sym \
                    and is_array(old.val) and not self._owned(old, t.id, frame):
                self.tape.mutation(t.id)
            self.assign(t, self._augmented(s, old, value), frame)
        elif isinstance(t, gast.Subscript):
            obj = self.ev(t.value, frame)
            key = self.ev_index(t.slice, frame)
            if isinstance(obj, Sym) or is_array(obj):
                self.tape.mutation("x[i] += v")
            old = obj[key]
            value = self.ev(s.value, frame)
            # lst[i] += v changes the array lst[i] in place: refused unless that array was
            # computed here and only this slot refers to it (then a new value is the same).
            if is_array(old) or type(old) is Sym and is_array(old.val) and \
                    not self._owned_slot(old, obj, key, frame):
                self.tape.fail(errors.MutationError,
                               "knetc: `container[i] += v` changes the array held in the "
                               "container in place (here an array from outside the function, "
                               "or one that another name also refers to)",
                               "Instead: container[i] = container[i] + v, which builds a new "
                               "array; knetc computes gradients of values, not of memory.")
            self.setitem(obj, key, self._augmented(s, old, value))
        else:
            self.tape.fail(errors.UnsupportedSyntax,
                           "knetc: augmented assignment to an attribute is not supported",
                           "Instead: assign to a local variable.")

    def _augmented(self, s, old, value):
        """``old op= value`` with Python's semantics: arrays keep their shape and dtype (NumPy's
        in-place operators), lists and dicts are changed in place (``+=``, ``*=``, ``|=``)."""
        if type(old) in (list, dict) and type(s.op) in _IOPS:
            if id(old) in self.mirror.paths:
                self.tape.fail(errors.MutationError,
                               "knetc: an augmented assignment extends a list or dict passed in "
                               "from outside, which the cached code cannot replay",
                               "Instead: build a new one (h = h + [v]), or assign an element.")
            return _IOPS[type(s.op)](old, value)
        new = _BINOPS[type(s.op)](old, value)
        if type(new) is Sym and (type(old) is Sym and is_array(old.val) or is_array(old)):
            new = self._like_inplace(new, old)
        return new

    def _owned_constant(self, arr, name, frame):
        """May ``name += v`` rebind ``name`` when it holds a plain array? Only one NumPy computed
        here from constants (``acc = np.zeros(3)``) that no other name or container refers to."""
        if self.tape.folded.get(id(arr)) is not arr:
            return False
        for f in self.frames:
            for k, v in f.vars.items():
                if f is frame and k == name:
                    continue
                for o in (v if type(v) in (list, tuple) else v.values() if type(v) is dict else (v,)):
                    if is_array(o) and np.may_share_memory(o, arr):
                        return False
        return True

    def _owned_slot(self, sym, obj, key, frame):
        """May ``obj[key] op= v`` rebind the slot instead of changing its array in place? As
        ``_owned``, with the slot itself not counted as a reference."""
        if type(sym) is not Sym or type(obj) not in (list, dict):
            return False
        obj[key] = None
        try:
            return self._owned(sym, None, frame)
        finally:
            obj[key] = sym

    def _like_inplace(self, new, old):
        """``s += v`` keeps s's shape and dtype, as NumPy's in-place operators do."""
        if new.shape != old.shape:
            raise ValueError(f"non-broadcastable output operand with shape {old.shape} doesn't "
                             f"match the broadcast shape {new.shape}")
        if new.dtype != old.dtype:
            if not np.can_cast(new.dtype, old.dtype, "same_kind"):
                raise TypeError(f"Cannot cast ufunc output from dtype('{new.dtype}') to "
                                f"dtype('{old.dtype}') with casting rule 'same_kind'")
            new = self.tape.apply(prims.astype, (new, old.dtype))
        return new

    def s_return(self, s, frame):
        raise _Return(None if s.value is None else self.ev(s.value, frame))

    def s_if(self, s, frame):
        self.exec_block(s.body if self.truth(self.ev(s.test, frame)) else s.orelse, frame)

    def s_for(self, s, frame):
        for item in self.ev(s.iter, frame):
            self.assign(s.target, item, frame)
            if self.loop_body(s, frame):
                return
        self.exec_block(s.orelse, frame)

    def s_while(self, s, frame):
        while self.truth(self.ev(s.test, frame)):
            if self.loop_body(s, frame):
                return
        self.exec_block(s.orelse, frame)

    def loop_body(self, s, frame) -> bool:
        """One iteration of a loop's body; True when it ends with break (else is skipped)."""
        try:
            self.exec_block(s.body, frame)
        except _Break:
            return True
        except _Continue:
            pass
        return False

    def s_break(self, s, frame):
        raise _Break()

    def s_continue(self, s, frame):
        raise _Continue()

    def s_pass(self, s, frame):
        pass

    def s_def(self, s, frame):
        a = s.args
        defaults = tuple(self.ev(d, frame) for d in a.defaults)
        kwdefaults = {p.id: self.ev(d, frame) for p, d in zip(a.kwonlyargs, a.kw_defaults)
                      if d is not None}
        c = Closure(s, frame, defaults, kwdefaults, self)
        for dec in reversed(s.decorator_list):
            c = self.call(self.ev(dec, frame), [c], {})
        frame.vars[s.name] = c

    def s_assert(self, s, frame):
        if not self.truth(self.ev(s.test, frame)):
            msg = self.ev(s.msg, frame) if s.msg is not None else None
            raise AssertionError(msg)

    def s_delete(self, s, frame):
        for t in s.targets:
            if isinstance(t, gast.Name):
                frame.vars.pop(t.id, None)
            else:
                self.tape.fail(errors.UnsupportedSyntax, "knetc: only `del name` is supported",
                               "Instead: build a new container without the item.")

    def s_raise(self, s, frame):
        exc = self.ev(s.exc, frame) if s.exc is not None else RuntimeError("re-raise")
        raise exc

    def truth(self, v):
        return bool(v)

    # -- assignment ---------------------------------------------------------------------
    def assign(self, t, value, frame):
        tt = type(t)
        if tt is gast.Name:
            if type(value) is Sym:
                self.tape.rename(value, t.id)
            frame.vars[t.id] = value
        elif tt is gast.Tuple or tt is gast.List:
            star = [i for i, e in enumerate(t.elts) if isinstance(e, gast.Starred)]
            items = list(value)
            if star:
                i = star[0]
                nafter = len(t.elts) - i - 1
                parts = items[:i] + [items[i:len(items) - nafter]] + items[len(items) - nafter:]
                for e, v in zip(t.elts, parts):
                    self.assign(e.value if isinstance(e, gast.Starred) else e, v, frame)
                return
            if len(items) != len(t.elts):
                raise ValueError(f"cannot unpack {len(items)} values into {len(t.elts)} names")
            for e, v in zip(t.elts, items):
                self.assign(e, v, frame)
        elif tt is gast.Subscript:
            obj = self.ev(t.value, frame)
            self.setitem(obj, self.ev_index(t.slice, frame), value)
        elif tt is gast.Attribute:
            self.tape.fail(errors.UnsupportedSyntax,
                           "knetc: assigning to an attribute is not supported in a differentiated "
                           "function", "Instead: keep the value in a local variable, a list or a dict.")
        else:
            self.tape.fail(errors.UnsupportedSyntax, f"knetc: cannot assign to {tt.__name__}")

    def setitem(self, obj, key, value):
        if isinstance(obj, Sym) or is_array(obj):
            self.tape.mutation("x[i] = v")
        if not isinstance(obj, (list, dict)):
            self.tape.fail(errors.UnsupportedSyntax,
                           f"knetc: cannot assign into a {type(obj).__name__}",
                           "Instead: use a list or dict, or build a new value.")
        path = self.mirror.paths.get(id(obj))
        if path is not None and _holds_closure(value):
            self.tape.fail(errors.UnsupportedSyntax,
                           "knetc: storing a function defined inside the differentiated function "
                           "into a container from outside would hand out knetc's internal object",
                           "Instead: define the function at module level and store that.")
        obj[key] = value
        if path is not None:  # a container the caller passed: the cached code must store too
            self._stores.append((self.tape.loc, path, key, value))

    # -- names --------------------------------------------------------------------------
    def lookup(self, name, frame):
        f = frame
        while f is not None:
            v = f.vars
            if name in v:
                return v[name]
            if f.cells is not None and name in f.cells:
                return self.outside(f, name, f.cells[name].cell_contents, cell=f.cells[name])
            f = f.parent
        g = frame.globals
        if name in g:
            return self.outside(frame, name, g[name])
        try:
            return getattr(builtins, name)
        except AttributeError:
            raise NameError(f"name {name!r} is not defined") from None

    def read_global(self, globals_dict: dict, name: str):
        """``name`` of a module's globals, as code of that module reads it (guarded, or read
        when the code runs): for a unit, the functions its helper calls."""
        return self.outside(types.SimpleNamespace(globals=globals_dict), name, globals_dict[name])

    def outside(self, frame, name, value, cell=None):
        """A global or closure variable: read at run time, or guarded, never silently baked."""
        key = (id(cell) if cell is not None else id(frame.globals), name)
        hit = self._globals.get(key)
        if hit is not None:
            return hit[0]
        tape = self.tape
        if cell is not None:
            where = ir.Attr(ir.Name(tape.ref(cell, 'cell_' + name)), "cell_contents")
        else:
            g = self._gnames.get(id(frame.globals))
            if g is None:
                g = self._gnames[id(frame.globals)] = tape.ref(frame.globals, "_g")
            where = ir.Subscript(ir.Name(g), ir.Const(name))
        return self.reachable(key, where, name, value)

    def reachable(self, key, where, name, value):
        """A value the generated code can reach at ``where`` (a global, a closure cell, an
        outside object's attribute): arrays and floats read there, the rest guarded."""
        hit = self._globals.get(key)
        if hit is not None:
            return hit[0]
        tape = self.tape
        if type(value) is IntArg:   # an outer trace's argument (a grad made inside): it steers
            value = value.steer()
        result = value
        if isinstance(value, types.ModuleType):
            if not _library(value):   # a user's module: its attributes are read like globals
                tape.guard(ir.BinOp("is not", where, ir.Name(tape.ref(value, name, exact=True))))
                self._objects[id(value)] = (where, value)
        elif type(value) is float or is_array(value):
            result = self._read(where, value, name=name)
            self._guard_kind(result)
        elif isinstance(value, (int, str, bool, type(None), bytes)):
            tape.guard(ir.BinOp("!=", where, value_expr(value, tape)))
        elif isinstance(value, (list, tuple, dict)):
            spec = spec_of(value)
            ref = ir.Name(tape.ref(spec, "spec"))
            tape.guard(ir.BinOp("!=", ir.call(ir.Name(tape.ref(spec_of, "spec_of")), where), ref))
            result = self.mirror_value(value, where, diff=False, name=name)
        else:
            tape.guard(ir.BinOp("is not", where, ir.Name(tape.ref(value, name, exact=True))))
            self._track(value, where)
        self._globals[key] = (result,)
        return result

    def _guard_kind(self, sym):
        """A global, cell or attribute read when the code runs: the code was written for this
        type, shape and dtype (the cache key does not see them), so the read is guarded."""
        tape = self.tape
        v = ir.Var(sym)
        val = sym.val
        cls = ir.Name("float") if type(val) is float else ir.Name(tape.ref(type(val), "array_type"))
        test = ir.BinOp("is not", ir.call(ir.Name("type"), v), cls)
        if type(val) is not float:
            test = ir.BinOp("or", test, ir.BinOp("or", ir.BinOp("!=", ir.Attr(v, "shape"),
                                                                ir.lit(tuple(val.shape))),
                                                 ir.BinOp("!=", ir.Attr(v, "dtype"),
                                                          dtype_expr(val.dtype))))
        tape.guard(test, tape.loc[1])

    def mirror_value(self, value, path, diff, name=None, keypath=None):
        """A copy of the caller's structure whose arrays are Syms read from ``path`` at run time.

        ``keypath``: where the value sits in the call's arguments, as the cache key sees it
        (``(argument index, item, ...)``); given, its int leaves become ``IntArg``s."""
        t = type(value)
        name = name or path.render()
        if t is int and keypath is not None and self.keyed_ints is not None \
                and keypath not in self.keyed_ints:
            self.tape.intargs += 1
            return IntArg(value, path, keypath, self.tape, identifier(name))
        sub = (lambda k: None) if keypath is None else (lambda k: keypath + (k,))
        if (t is list or t is tuple) and value and all(_is_leaf(v) for v in value):
            # A flat list of arrays (a layer's weights): one unpacking statement reads them all.
            names = [identifier(f"{name}_{i}") for i in range(len(value))]
            items = self.tape.read_many(path, value, diff, names)
            self._external.update((id(s), s) for s in items)
            out = items if t is list else tuple(items)
            if t is list:
                self.mirror.add(out, path)
            return out
        if t is list or t is tuple:
            items = [self.mirror_value(v, ir.Subscript(path, ir.Const(i)), diff, f"{name}_{i}",
                                       sub(i))
                     for i, v in enumerate(value)]
            out = items if t is list else tuple(items)
            if t is list:
                self.mirror.add(out, path)
            return out
        if t is dict:
            out = {k: self.mirror_value(v, ir.Subscript(path, ir.lit(k)), diff,
                                        f"{name}_{identifier(k)}", sub(k))
                   for k, v in value.items()}
            self.mirror.add(out, path)
            return out
        if t is float:
            return self._read(path, value, diff, name=identifier(name), float_leaf=diff)
        if is_array(value) or isinstance(value, np.generic) and t is not np.bool_:
            is_float = np.issubdtype(value.dtype, np.floating)
            return self._read(path, value, diff and is_float, name=identifier(name))
        if tree.node_type(t):
            return self._mirror_node(value, path, diff, name, sub)
        if diff and not isinstance(value, _UNTRACKED) and not tree.is_own_class(t):
            self._opaque[id(value)] = (value, path)
        return self._track(value, path)

    def _mirror_node(self, value, path, diff, name, sub):
        """A NamedTuple, dataclass or registered object: an instance of its class (its registered
        unflatten) around the mirrored children, read when the code runs: fields as attributes
        (``p.w``), a registered class's children through its flatten (``_children(p)[i]``)."""
        t = type(value)
        children, aux = tree.node_flatten(value)
        fields = tree.fields_of(t)
        if fields is not None:
            keys = fields[0]
            items = [self.mirror_value(c, ir.Attr(path, k), diff, f"{name}_{k}", sub(k))
                     for k, c in zip(keys, children)]
        else:
            base = ir.call(ir.Name(self.tape.ref(tree.node_children, "_children")), path)
            if children and all(_is_leaf(c) for c in children):
                names = [identifier(f"{name}_{i}") for i in range(len(children))]
                items = self.tape.read_many(base, children, diff, names)
                self._external.update((id(s), s) for s in items)
            else:
                items = [self.mirror_value(c, ir.Subscript(base, ir.Const(i)), diff,
                                           f"{name}_{i}", sub(i))
                         for i, c in enumerate(children)]
        if fields is not None and not isinstance(value, tuple):
            # a dataclass: its fields set directly (its __init__ is plain Python: a new random
            # generator, a cache made there would be this trace's); what __init__ sets besides
            # the fields is read from the caller's object (``attribute``)
            out = tree.with_fields(t, aux, items)
        else:
            out = tree.node_unflatten(t, aux, items)
        names = None if fields is None else frozenset(fields[0] + fields[1])
        self._nodes[id(out)] = (path, value, out, diff, names)
        return out

    def _track(self, obj, path):
        """Remember where the code finds an outside object, so its attributes are read there."""
        if not isinstance(obj, _UNTRACKED):
            self._objects[id(obj)] = (path, obj)
        return obj

    def attribute(self, obj, attr):
        """``obj.attr``; for an object from outside (an argument, a global), read when the code
        runs or guarded, like a global: never this call's value silently baked in."""
        node = self._nodes.get(id(obj))
        if node is not None and node[4] is not None and attr not in node[4]:
            static = inspect.getattr_static(type(obj), attr, _ABSENT)
            if static is _ABSENT or not hasattr(type(static), "__get__"):
                return self._node_attribute(node, attr)
        value = getattr(obj, attr)
        hit = self._objects.get(id(obj))
        if hit is None or callable(value) and getattr(value, "__self__", None) is obj:
            return value    # a method of the object (its own source, or a random draw)
        opaque = self._opaque.get(id(obj))
        if opaque is not None:
            self._opaque_attribute(opaque, attr, value)
        return self.reachable((id(obj), attr), ir.Attr(hit[0], attr), attr, value)

    def _node_attribute(self, node, attr):
        """A data attribute of a traced NamedTuple or dataclass that is not a field (set by its
        ``__init__``/``__post_init__``, or a class constant): read from the caller's object when
        the code runs, or guarded, like a global. Set by ``__init__`` from the fields, float
        arrays would get no gradient: refused in a differentiated argument."""
        path, original, _, diff, _ = node
        value = getattr(original, attr)
        if diff and attr in getattr(original, "__dict__", ()) and _holds_float_array(value):
            cls = type(original).__qualname__
            self.tape.fail(
                errors.LossError,
                f"knetc: the differentiated function reads .{attr} (float arrays) of the {cls} at "
                f"{path.render()}, which is not one of its fields (its __init__ or __post_init__ "
                "set it): knetc reads it from your object as it is, so it would get no gradient",
                f"Compute {attr} inside the differentiated function (a method or property of "
                f"{cls}), or make it a field.")
        return self.reachable((id(original), attr), ir.Attr(path, attr), attr, value)

    def _opaque_attribute(self, opaque, attr, value):
        """``obj.attr`` of an object of an unregistered class inside a differentiated argument:
        float arrays there are parameters the user meant, which knetc cannot see (refused);
        an object there is opaque too."""
        obj, path = opaque
        if _holds_float_array(value):
            cls = type(obj).__qualname__
            self.tape.fail(
                errors.LossError,
                f"knetc: the differentiated function reads .{attr} (float arrays) from an object of "
                f"class {cls} at {path.render()}, inside the differentiated argument; knetc does not "
                f"walk objects of unregistered classes, so {attr} would get no gradient",
                f"Register the class so that knetc walks it: knetc.register_pytree({cls}, flatten, "
                "unflatten) (flatten(x) -> (children, aux_data); unflatten(aux_data, children) -> "
                f"x, as JAX's register_pytree_node), or make {cls} a dataclass or NamedTuple "
                "(walked automatically). A constant belongs outside the differentiated argument.")
        if not isinstance(value, _UNTRACKED) and not is_array(value) and \
                not tree.is_own_class(type(value)) and not tree.node_type(type(value)):
            self._opaque[id(value)] = (value, ir.Attr(path, attr))

    def _read(self, *args, **kwargs):
        s = self.tape.read(*args, **kwargs)
        self._external[id(s)] = s
        return s

    def _owned(self, sym, name, frame):
        """May ``name += v`` rebind ``name`` instead of changing the array in place?

        Only when the array was computed inside the function and no other live value (another
        name, a container, a caller's variable, an argument, a global) shares its memory: then
        Python's in-place update and a new value cannot be told apart.
        """
        if id(sym) in self._external:
            return False
        val = sym.val

        def shares(other):
            if other is sym:
                return True
            o = other.val
            if type(o) is np.ndarray and type(val) is np.ndarray:
                return np.may_share_memory(val, o)
            return o is val
        if any(shares(e) for e in self._external.values()):
            return False
        for f in self.frames:
            for k, v in f.vars.items():
                if f is frame and k == name:
                    continue
                if any(shares(o) for o in syms_in(v)):
                    return False
        return True

    # -- expressions --------------------------------------------------------------------
    def ev(self, node, frame):
        return _EXPRS[type(node)](self, node, frame)

    def e_constant(self, n, frame):
        return n.value

    def e_name(self, n, frame):
        return self.lookup(n.id, frame)

    def e_binop(self, n, frame):
        if type(n.op) is gast.Add and self.tape.affine:
            left, right = n.left, n.right
            if type(left) is gast.BinOp and type(left.op) is gast.MatMult:
                a, b = self.ev(left.left, frame), self.ev(left.right, frame)
                return self._matmul_add(a, b, self.ev(right, frame), False)
            if type(right) is gast.BinOp and type(right.op) is gast.MatMult:
                c = self.ev(left, frame)
                return self._matmul_add(self.ev(right.left, frame), self.ev(right.right, frame),
                                        c, True)
        return _BINOPS[type(n.op)](self.ev(n.left, frame), self.ev(n.right, frame))

    def _matmul_add(self, a, b, c, c_first: bool):
        """``a @ b + c`` (``c + a @ b``): the product is a temporary of this expression, read
        by nothing else, so the sum may be written into it (prims.affine)."""
        if self.tape.affine_fits(a, b, c):
            return self.tape.apply(prims.affine, (a, b, c))
        ab = _BINOPS[gast.MatMult](a, b)
        return _BINOPS[gast.Add](c, ab) if c_first else _BINOPS[gast.Add](ab, c)

    def e_unaryop(self, n, frame):
        v = self.ev(n.operand, frame)
        if type(n.op) is gast.Not:
            return not self.truth(v)
        return _UNOPS[type(n.op)](v)

    def e_boolop(self, n, frame):
        is_and = type(n.op) is gast.And
        v = None
        for e in n.values:
            v = self.ev(e, frame)
            if self.truth(v) != is_and:
                return v
        return v

    def e_compare(self, n, frame):
        left = self.ev(n.left, frame)
        result = True
        for op, comp in zip(n.ops, n.comparators):
            right = self.ev(comp, frame)
            result = _CMPOPS[type(op)](left, right)
            if len(n.ops) > 1 and not self.truth(result):
                return result
            left = right
        return result

    def e_ifexp(self, n, frame):
        return self.ev(n.body if self.truth(self.ev(n.test, frame)) else n.orelse, frame)

    def e_call(self, n, frame):
        f = self.ev(n.func, frame)
        args = []
        for a in n.args:
            if type(a) is gast.Starred:
                args.extend(self.ev(a.value, frame))
            else:
                args.append(self.ev(a, frame))
        kwargs = {}
        for k in n.keywords:
            if k.arg is None:
                kwargs.update(self.ev(k.value, frame))
            else:
                kwargs[k.arg] = self.ev(k.value, frame)
        return self.call(f, args, kwargs)

    def e_attribute(self, n, frame):
        return self.attribute(self.ev(n.value, frame), n.attr)

    def e_subscript(self, n, frame):
        obj = self.ev(n.value, frame)
        idx = self.ev_index(n.slice, frame)
        if self.tape.intargs and type(obj) is Sym:   # E[i]: the argument's int selects, as data
            idx = as_index(idx)
        if isinstance(obj, _AXIS_CONCATENATOR) and syms_in(idx):
            return self.axis_concatenate(obj, idx)
        return obj[idx]

    def axis_concatenate(self, obj, key):
        """``np.r_[a, b]``, ``np.c_[a, b]`` of traced values: each item promoted as NumPy does
        (``ndmin``, ``trans1d``), then one np.concatenate; the result's shape and dtype are
        checked against NumPy's own (cast where its scalar rules give another dtype)."""
        tape = self.tape
        items = key if type(key) is tuple else (key,)
        if obj.matrix or any(isinstance(i, str) for i in items):
            tape.fail(errors.UnsupportedSyntax,
                      "knetc: np.r_/np.c_ with a string directive ('r', 'c', '0,2,1') is not "
                      "supported on traced values",
                      "Instead: np.concatenate / np.stack with axis=, and reshape the pieces.")
        ndmin, trans1d = obj.ndmin, obj.trans1d
        parts = []
        for item in items:
            if type(item) in (list, tuple) and syms_in(item):
                item = tape.as_array(item)
            if type(item) is not Sym:
                if syms_in(item):
                    tape.fail(errors.UnsupportedSyntax,
                              "knetc: np.r_/np.c_ with a traced slice bound is not supported",
                              "Instead: np.arange/np.linspace with int(...) bounds.")
                parts.append(obj[(item,)])   # a constant (or a range): promoted by NumPy
                continue
            nd = item.ndim
            if nd < ndmin:
                item = tape.apply(np.reshape, (item, (1,) * (ndmin - nd) + tuple(item.shape)))
                if trans1d != -1:
                    k2, k1 = ndmin - nd, trans1d
                    if k1 < 0:
                        k1 += k2 + 1
                    axes = list(range(ndmin))
                    axes = tuple(axes[:k1] + axes[k2:] + axes[k1:k2])
                    if axes != tuple(range(ndmin)):
                        item = tape.apply(np.transpose, (item, axes))
            parts.append(item)
        out = tape.apply(np.concatenate, (parts,), {"axis": obj.axis})
        expected = obj[concrete(key)]
        if type(out) is Sym:
            if out.shape != expected.shape:
                tape.fail(errors.UnsupportedSyntax,
                          "knetc: this np.r_/np.c_ of traced values is not supported",
                          "Instead: np.concatenate / np.stack with axis=.")
            if out.dtype != expected.dtype:
                out = tape.apply(prims.astype, (out, expected.dtype))
        return out

    def ev_index(self, n, frame):
        if type(n) is gast.Slice:
            return slice(*(None if x is None else self.ev(x, frame) for x in (n.lower, n.upper, n.step)))
        if type(n) is gast.Tuple:
            return tuple(self.ev_index(e, frame) for e in n.elts)
        return self.ev(n, frame)

    def e_slice(self, n, frame):
        return self.ev_index(n, frame)

    def e_tuple(self, n, frame):
        return tuple(self._elts(n.elts, frame))

    def e_list(self, n, frame):
        return self._elts(n.elts, frame)

    def e_set(self, n, frame):
        return set(self._elts(n.elts, frame))

    def _elts(self, elts, frame):
        out = []
        for e in elts:
            if type(e) is gast.Starred:
                out.extend(self.ev(e.value, frame))
            else:
                out.append(self.ev(e, frame))
        return out

    def e_dict(self, n, frame):
        out = {}
        for k, v in zip(n.keys, n.values):
            if k is None:
                out.update(self.ev(v, frame))
            else:
                out[self.ev(k, frame)] = self.ev(v, frame)
        return out

    def e_lambda(self, n, frame):
        a = n.args
        return Closure(n, frame, tuple(self.ev(d, frame) for d in a.defaults),
                       {p.id: self.ev(d, frame) for p, d in zip(a.kwonlyargs, a.kw_defaults)
                        if d is not None}, self)

    def _comprehension(self, gens, frame, emit):
        inner = Frame(frame, frame.globals, None, frame.filename, frame.fn)
        self.frames.append(inner)
        try:
            self._generate(gens, frame, inner, emit)
        finally:
            self.frames.pop()

    def _generate(self, gens, frame, inner, emit):
        def loop(i):
            if i == len(gens):
                emit(inner)
                return
            g = gens[i]
            for item in self.ev(g.iter, inner if i else frame):
                self.assign(g.target, item, inner)
                if all(self.truth(self.ev(c, inner)) for c in g.ifs):
                    loop(i + 1)
        loop(0)

    def e_listcomp(self, n, frame):
        out = []
        self._comprehension(n.generators, frame, lambda f: out.append(self.ev(n.elt, f)))
        return out

    def e_generatorexp(self, n, frame):
        return iter(self.e_listcomp(n, frame))

    def e_setcomp(self, n, frame):
        return set(self.e_listcomp(n, frame))

    def e_dictcomp(self, n, frame):
        out = {}

        def emit(f):
            out[self.ev(n.key, f)] = self.ev(n.value, f)
        self._comprehension(n.generators, frame, emit)
        return out

    def e_joinedstr(self, n, frame):
        return "".join(str(self.ev(v, frame)) for v in n.values)

    def e_formattedvalue(self, n, frame):
        v = self.ev(n.value, frame)
        spec = self.ev(n.format_spec, frame) if n.format_spec is not None else ""
        if isinstance(v, Sym):   # the text depends on this call's value: guard it
            if v.size != 1:
                self.tape.fail(errors.UnsupportedSyntax,
                               "knetc: formatting an array inside a differentiated function would "
                               "show this trace's value, not the value of each call",
                               "Instead: format it outside grad (return it with gradloss).")
            kind = np.dtype(v.dtype).kind
            v = self.tape.concretize(v, bool if kind == "b" else int if kind in "iu" else float)
        if n.conversion in (ord("r"), ord("s"), ord("a")):
            v = {"r": repr, "s": str, "a": ascii}[chr(n.conversion)](v)
        return format(v, spec)

    def e_namedexpr(self, n, frame):
        v = self.ev(n.value, frame)
        self.assign(n.target, v, frame)
        return v

    def e_starred(self, n, frame):
        self.tape.fail(errors.UnsupportedSyntax, "knetc: a starred expression is not allowed here")


_STMTS = {gast.Expr: Specializer.s_expr, gast.Assign: Specializer.s_assign,
          gast.AnnAssign: Specializer.s_annassign, gast.AugAssign: Specializer.s_augassign,
          gast.Return: Specializer.s_return, gast.If: Specializer.s_if, gast.For: Specializer.s_for,
          gast.While: Specializer.s_while, gast.Break: Specializer.s_break,
          gast.Continue: Specializer.s_continue, gast.Pass: Specializer.s_pass,
          gast.FunctionDef: Specializer.s_def, gast.Assert: Specializer.s_assert,
          gast.Delete: Specializer.s_delete, gast.Raise: Specializer.s_raise}

_EXPRS = {gast.Constant: Specializer.e_constant, gast.Name: Specializer.e_name,
          gast.BinOp: Specializer.e_binop, gast.UnaryOp: Specializer.e_unaryop,
          gast.BoolOp: Specializer.e_boolop, gast.Compare: Specializer.e_compare,
          gast.IfExp: Specializer.e_ifexp, gast.Call: Specializer.e_call,
          gast.Attribute: Specializer.e_attribute, gast.Subscript: Specializer.e_subscript,
          gast.Slice: Specializer.e_slice, gast.Tuple: Specializer.e_tuple,
          gast.List: Specializer.e_list, gast.Set: Specializer.e_set, gast.Dict: Specializer.e_dict,
          gast.Lambda: Specializer.e_lambda, gast.ListComp: Specializer.e_listcomp,
          gast.GeneratorExp: Specializer.e_generatorexp, gast.SetComp: Specializer.e_setcomp,
          gast.DictComp: Specializer.e_dictcomp, gast.JoinedStr: Specializer.e_joinedstr,
          gast.FormattedValue: Specializer.e_formattedvalue,
          gast.NamedExpr: Specializer.e_namedexpr, gast.Starred: Specializer.e_starred}

# The syntax fence (parse.fence) lets through exactly the node types handled above, and the
# operators, contexts and parts those nodes are made of.
SYNTAX = frozenset(_STMTS) | frozenset(_EXPRS) | frozenset(_BINOPS) | frozenset(_CMPOPS) | \
    frozenset(_UNOPS) | {gast.And, gast.Or, gast.Load, gast.Store, gast.Del, gast.Param, gast.arguments,
                         gast.comprehension, gast.keyword}


_AXIS_CONCATENATOR = type(np.r_).__mro__[1]   # np.r_ and np.c_ are its instances


# The trees of functions made by Closure.as_function (their source is a part of a def's).
_MADE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _locate(node, line):
    """Give the factory's own nodes the def's line (its def keeps its own positions)."""
    for n in ast.walk(node):
        if "lineno" in n._attributes and getattr(n, "lineno", None) is None:
            n.lineno, n.col_offset = line, 0
            n.end_lineno, n.end_col_offset = line, 0


def _library(module) -> bool:
    """NumPy, knetc, the standard library...: modules whose attributes are taken as fixed."""
    name = getattr(module, "__name__", "") or ""
    return name.startswith(_NO_INLINE + ("knetc", "gast")) or \
        name.split(".")[0] in sys.stdlib_module_names


def _holds_closure(v) -> bool:
    t = type(v)
    if t is Closure:
        return True
    if t in (list, tuple):
        return any(_holds_closure(x) for x in v)
    if t is dict:
        return any(_holds_closure(x) for x in v.values())
    return False


def _is_leaf(v) -> bool:
    return type(v) is float or is_array(v)


_ABSENT = object()


def _holds_float_array(v) -> bool:
    """Is ``v`` a float array, or a structure (lists, dicts, NamedTuples...) holding one?"""
    for x in tree.leaves(tree.auto_register(v)):
        if is_array(x) and np.issubdtype(x.dtype, np.floating):
            return True
    return False




def _inlinable(fn) -> bool:
    mod = getattr(fn, "__module__", "") or ""
    return not mod.startswith(_NO_INLINE)


# Builtins an argument's int may reach without steering: "type" (they see its type only, so its
# plain value, unguarded), "through" (containers of them pass through, as they are).
_INT_USE = {isinstance: "type", type: "type", len: "through", list: "through",
            tuple: "through", zip: "through", enumerate: "through", reversed: "through",
            iter: "through", dict: "through"}


def _inlined(f) -> bool:
    """Is ``f`` Python that ``Specializer.call`` inlines (a function, a method, a callable
    object), so that the values passed to it stay as they are?"""
    if isinstance(f, types.MethodType):
        f = f.__func__
    elif not isinstance(f, (types.FunctionType, type)):
        f = getattr(type(f), "__call__", None)
    return isinstance(f, types.FunctionType) and _inlinable(f)


# Builtins that need to know about symbolic values.
def _b_len(self, args, kwargs):
    return len(args[0])


def _b_isinstance(self, args, kwargs):
    obj, cls = args
    if isinstance(obj, Sym):
        return isinstance(obj.val, cls)
    return isinstance(obj, cls)


def _b_getattr(self, args, kwargs):
    if len(args) == 2 and not kwargs and isinstance(args[1], str):
        return self.attribute(*args)
    return getattr(*args, **kwargs)


def _b_print(self, args, kwargs):
    if syms_in(list(args)):
        self.tape.fail(errors.UnsupportedSyntax,
                       "knetc: print() of an array inside a differentiated function would show "
                       "this trace's value, not the value of each call",
                       "Instead: return the value (gradloss) or print outside grad.")
    print(*args, **kwargs)


def _b_type(self, args, kwargs):
    if len(args) == 1 and isinstance(args[0], Sym):
        return type(args[0].val)
    return type(*args)


# (float has a derivative rule and abs(x) is Sym.__abs__: both need nothing here.)
_BUILTINS = {len: _b_len, isinstance: _b_isinstance, getattr: _b_getattr, print: _b_print,
             type: _b_type}
