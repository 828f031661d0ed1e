"""Helpers called again with arguments of the same kind: one operation, not their whole trace.

A tree LSTM calls ``node(w, h1, c1, h2, c2)`` and ``leaf(w, word)`` once per node of every new
tree; inlined, each call adds its 15-25 operations to the trace, and a function whose calls keep
missing the cache pays specializing, adjoint generation and compilation for all of them on
every call. Here a helper's first call with arguments of one kind (``signature``: the function,
the structure of its arguments, each array's shape, dtype and differentiability, the values of
its plain Python arguments; the arguments' ints that only select are data) is inlined and
watched; if it was *self-contained* (every operation a pure primitive call or a read of its own
ints as data; no guard but on the identity of the functions it calls, no store, read of a global
array, random draw or ``forward=`` primitive, no int that steered, no change to its arguments;
every global it and the helpers it inlined can name is a library module, a function or a class;
no closures) and that kind came back often enough (``UNIT_AFTER``, ``OPS_PER_SIGHTING``), later
calls of that kind become one operation (``Unit``): its forward calls the helper itself on
arrays, its backward is the gradient of ``sum(outputs * their gradients)`` with respect to the
array arguments it used, compiled once per kind by ``knetc.grad`` (so its forward runs again
there: a recomputation, not saved memory); an embedding it only indexes gets back the rows it
read (``_gathers``). Each trace that uses a unit guards the functions its helper calls, and a
unit is not used once one of them was rebound (``Unit.usable``). Every trace of NumPy code
learns (a compiled first call too: the next new structure, at tier 0, then starts with its
units); only the traces of functions whose calls mostly miss (knetc.api) use units, run at
tier 0 and compiled when a structure comes back alike (compiled whole, a big tree cost about
four tier-0 runs, and a cache of 512 entries dropped it before a dataset of more trees came
round again); code of functions whose calls mostly hit is written out whole.
``KNETC_UNITS=0`` turns them off.
"""
from __future__ import annotations

import math
import operator
import threading
import types

import numpy as np

from ..rules import registry
from . import ir
from .parse import define
from .selectors import IntArg
from .tape import Sym, syms_in

__all__ = ["use_gradient", "lookup", "learn", "contents", "Unit", "MIN_OPS"]

MIN_OPS = 4          # a helper of fewer operations is inlined (a unit costs about as much)
# A kind of call becomes a unit when seen self-contained this many times: its backward is
# compiled once (tens of ms), worth it for a helper called alike again and again (a tree's
# node), not for one that came back once (most subtrees of a recursive encoder).
UNIT_AFTER = 3
OPS_PER_SIGHTING = 2   # and, for a large helper, once per this many of its operations
PAD_BYTES = 1 << 16  # outputs without a gradient up to this size get zeros (Unit._padded)
MAX_UNITS = 4096     # kinds remembered (the oldest forgotten), units and refusals
MAX_SEEN = 16384     # kinds seen self-contained but not (yet) often enough to be units

_units: dict = {}    # signature -> Unit, or False (not self-contained)
_seen: dict = {}     # signature -> times seen self-contained
_lock = threading.Lock()
_local = threading.local()
_make_grad = None


def use_gradient(make) -> None:
    """Set the function making a unit's backward: ``make(f)`` is ``knetc.grad(f)`` (knetc.api
    sets it, so that this module imports nothing above the compiler)."""
    global _make_grad
    _make_grad = make


class _Not(Exception):
    """An argument a unit cannot take (an object, a set, a NumPy constant...)."""


def _kind(v, leaves: list, memo: dict):
    """The signature of one argument; its Syms and IntArgs appended to ``leaves`` in order.
    ``memo``: id(tuple) -> (tuple, kind, its leaves) and id(Sym) -> (Sym, kind), for one trace
    (a recursive encoder asks for every subtree's kind again at every level above it, and for
    the weights' at every call; tuples and traced values do not change)."""
    t = type(v)
    if t is Sym:
        leaves.append(v)
        hit = memo.get(id(v))       # (a Sym's value does not change while it is traced)
        if hit is None or hit[0] is not v:
            hit = memo[id(v)] = (v, ("S", type(v.val), v.shape, v.dtype.str, v.diff))
        return hit[1]
    if t is IntArg:
        leaves.append(v)
        return ("I",)
    if t is int or t is float or t is str or t is bool or v is None:
        return ("V", t, v)
    if t is tuple:
        hit = memo.get(id(v))
        if hit is None or hit[0] is not v:
            sub: list = []
            hit = memo[id(v)] = (v, (t, tuple(_kind(x, sub, memo) for x in v)), sub)
        leaves.extend(hit[2])
        return hit[1]
    if t is list:
        return (t, tuple(_kind(x, leaves, memo) for x in v))
    if t is dict:
        if not all(type(k) is str or type(k) is int for k in v):
            raise _Not
        return (dict, tuple((k, _kind(x, leaves, memo)) for k, x in v.items()))
    raise _Not


def lookup(fn, args, memo: dict):
    """``(unit, signature, leaves)`` for a call of helper ``fn`` (``memo``: see ``_kind``, one
    per trace): the unit when that kind of call
    was self-contained before, None and the signature to ``learn`` under when it is new; None
    for the signature when the call is never a unit (off, an argument it cannot take, nothing
    differentiable, or known not to be self-contained)."""
    if getattr(_local, "off", 0) or fn.__code__.co_filename.startswith("<"):
        return None, None, None     # (a unit's backward; generated code: a grad's adjoint)
    leaves: list = []
    try:
        sig = (fn, tuple(_kind(a, leaves, memo) for a in args))
        unit = _units.get(sig)
    except (_Not, TypeError):       # TypeError: an unhashable plain value
        return None, None, None
    if unit is False or not any(type(s) is Sym and s.diff for s in leaves):
        return None, None, None
    return unit, sig, leaves


def _names_ok(fn, library) -> bool:
    """Is ``fn`` a function without closure cells or mutable defaults, each global name its code
    loads holding a library module (``library(module)``), a function or a class: nothing whose
    value could change the trace in a way a unit would not see?"""
    if fn is None or not isinstance(fn, types.FunctionType) or fn.__closure__:
        return False
    if fn.__defaults__ and not all(type(d) in (int, float, str, bool, type(None))
                                   for d in fn.__defaults__):
        return False
    if fn.__kwdefaults__:
        return False
    g = fn.__globals__
    builtins = g.get("__builtins__", {})
    builtins = builtins if isinstance(builtins, dict) else vars(builtins)
    for name in fn.__code__.co_names:
        v = g.get(name, builtins.get(name, _MISSING))
        if v is _MISSING:
            continue        # an attribute name (x.shape), not a global
        if isinstance(v, types.ModuleType):
            if not library(v):
                return False
        elif not isinstance(v, (types.FunctionType, types.BuiltinFunctionType, type, np.ufunc)):
            return False
    return True


_MISSING = object()


def learn(sig, fn, leaves, ops, result, inlined, clean: bool, library) -> None:
    """Record whether the call just inlined (``ops``: what it recorded; ``inlined``: the
    functions it inlined, None for a closure; ``clean``: no int steered, nothing stored) was
    self-contained; if so, later calls of its kind are units. ``library(module)``: a module
    whose attributes are fixed (the specializer's judgement)."""
    reads = {id(a.data_sym) for a in leaves if type(a) is IntArg and a.data_sym is not None}
    ok = clean and len(ops) >= MIN_OPS and all(_allowed(op, reads) for op in ops)
    outs: list = []
    if ok:
        try:
            shape = _result_kind(result, outs)
        except _Not:
            ok = False
    ok = ok and bool(outs) and all(_names_ok(f, library) for f in set(inlined))
    seen = _seen.get(sig, 0) + 1 if ok else 0
    after = max(UNIT_AFTER, len(ops) // OPS_PER_SIGHTING)
    if ok and seen >= after:
        # What the outputs depend on, walking back from them: an argument handed back as it
        # is (``return a``) is used (its gradient passes through the unit; dropping it was a
        # wrong gradient), one read only by dead code is not (no gradient, None, as inlined).
        used = set(map(id, outs))
        for op in reversed(ops):
            made = op.outs if type(op.outs) is tuple else (op.outs,)
            if not any(o is not None and id(o) in used for o in made):
                continue
            inner = getattr(op.fn, "knetc_unit", None)
            syms = syms_in(op.args) + syms_in(op.kwargs)
            if inner is not None:       # what a unit inside uses of what it was given
                syms = [syms[p] for p in inner.diff_idx]
            used.update(map(id, syms))
        unit = Unit(fn, sig, leaves, used, shape, outs, _bindings(inlined, library),
                    _gathers(ops, leaves))
    with _lock:
        if ok and seen < after:
            _seen[sig] = seen
            while len(_seen) > MAX_SEEN:
                del _seen[next(iter(_seen))]
            return
        _seen.pop(sig, None)
        _units[sig] = unit if ok else False
        while len(_units) > MAX_UNITS:
            old = _units.pop(next(iter(_units)))
            if old is not False:
                registry.forget(old.prim)


def contents(v, fixed: dict) -> tuple:
    """What the lists and dicts inside ``v`` hold, by identity: equal before and after a call
    that did not change them (a helper that appends to a list it was given is not a unit).
    ``fixed``: id(tuple) -> the tuple, for tuples known to hold no list or dict (one trace's)."""
    t = type(v)
    if t is tuple:
        if fixed.get(id(v)) is v:
            return ()
        inner = tuple(contents(x, fixed) for x in v if type(x) in (list, tuple, dict))
        if not any(inner):
            fixed[id(v)] = v        # nothing in it can change
            return ()
        return inner
    if t is list:
        return (id(v), tuple(map(id, v))) + tuple(contents(x, fixed) for x in v
                                                  if type(x) in (list, tuple, dict))
    if t is dict:
        return (id(v), tuple((k, id(x)) for k, x in v.items())) + tuple(
            contents(x, fixed) for x in v.values() if type(x) in (list, tuple, dict))
    return ()


def _allowed(op, reads: set) -> bool:
    """May a unit's helper have recorded ``op``? Pure primitive calls; the reads of its own
    ints as data; identity guards (a global function the helper calls: ``Unit.apply`` guards
    them again in each trace)."""
    kind = op.kind
    if kind == "call":
        return not op.rule.impure and op.rule.forward is None
    if kind == "read":
        return id(op.outs) in reads
    stmt = op.stmt
    return type(stmt) is ir.Guard and type(stmt.test) is ir.BinOp and stmt.test.op == "is not"


def _gathers(ops, leaves) -> dict:
    """``{leaf position: [index, ...]}`` for the differentiated array leaves that the helper only
    indexes with ints (``E[word]``), each index ``("leaf", position)`` (an int of its arguments,
    read as data) or ``("const", int)``: their gradient is a few rows, added into the caller's
    gradient where they are (a scatter), not a dense array of the leaf's size per call. A
    position is ``"leaf"`` when nothing else uses that int (``"shared"`` otherwise): then the
    unit's backward can take just the rows read, the ints renumbered (``Unit._make_vjp``).
    A unit called inside (``leaf`` inside a recurring subtree's ``encode``) indexes with the
    gathers it was learned with."""
    where = {id(a.data_sym): i for i, a in enumerate(leaves)
             if type(a) is IntArg and a.data_sym is not None}
    uses: dict = {}
    built = {}      # id(an index array np.asarray([i, j, ...]) built here) -> its items
    for op in ops:
        for x in syms_in(op.args) + syms_in(op.kwargs):
            uses.setdefault(id(x), []).append(op)
        if op.fn is np.asarray and len(op.args) == 1 and not op.kwargs and \
                type(op.args[0]) is list and type(op.outs) is Sym:
            built[id(op.outs)] = op.args[0]     # (a stack of rows: tape.Tape._rows_of)

    def indexes(o, idx, s) -> bool:     # is ``o[idx]`` a gather from ``s`` (directly or built)?
        if o.fn is operator.getitem and o.args[0] is s:
            return o.args[1] is idx
        if o.fn is np.asarray and id(o.outs) in built:
            return all(indexes(u, o.outs, s) for u in uses.get(id(o.outs), ()))
        return False

    def only_indexes(idx, s) -> bool:       # is every use of int ``idx`` an index into ``s``?
        for o in uses[id(idx)]:
            inner = getattr(o.fn, "knetc_unit", None)
            if inner is None:
                if not indexes(o, idx, s):
                    return False
            elif not inner.indexes_only(o.args, idx, s):
                return False
        return True

    def specs_of(op, s):        # how ``op`` indexes leaf ``s``: specs, or None (not only so)
        inner = getattr(op.fn, "knetc_unit", None)
        if inner is not None:
            indices = inner.indices_into(op.args, s)
        elif op.fn is operator.getitem and len(op.args) == 2 and op.args[0] is s \
                and not op.kwargs:
            i = op.args[1]
            indices = built[id(i)] if type(i) is Sym and id(i) in built else [i]
        else:
            return None
        if indices is None:
            return None
        specs = []
        for idx in indices:
            if type(idx) is int:
                specs.append(("const", idx))
            elif type(idx) is Sym and id(idx) in where:
                specs.append(("leaf" if only_indexes(idx, s) else "shared", where[id(idx)]))
            else:
                return None
        return specs

    out = {}
    for i, s in enumerate(leaves):
        if type(s) is not Sym or not s.diff or id(s) not in uses or not s.ndim:
            continue
        specs = []
        for op in uses[id(s)]:
            found = specs_of(op, s)
            if found is None:
                break
            specs += found
        else:
            if specs:
                out[i] = specs
    return out


def _bindings(inlined, library) -> list:
    """``(globals, name, value)`` for every global the inlined functions can name that is not
    a library module (their functions, classes): each trace using the unit reads them (so the
    generated code guards them) and the unit is used only while they are the same objects."""
    out, seen = [], set()
    for fn in inlined:
        g = fn.__globals__
        for name in fn.__code__.co_names:
            if name in g and (id(g), name) not in seen:
                v = g[name]
                if not (isinstance(v, types.ModuleType) and library(v)):
                    seen.add((id(g), name))
                    out.append((g, name, v))
    return out


def _result_kind(v, outs: list):
    """The shape of a helper's result: its Syms (appended to ``outs``) and plain Python values,
    in tuples and lists; anything else is not a unit's."""
    t = type(v)
    if t is Sym:
        outs.append(v)
        return None
    if t is int or t is float or t is str or t is bool or v is None:
        return ("V", v)
    if t is tuple or t is list:
        return (t, [_result_kind(x, outs) for x in v])
    raise _Not


def _rebuild(shape, outs: list):
    """The helper's result from a unit's outputs (consumed from the front of ``outs``)."""
    if shape is None:
        return outs.pop(0)
    if shape[0] == "V":
        return shape[1]
    t, items = shape
    return t(_rebuild(s, outs) for s in items)


class Unit:
    """One kind of call of a helper as one primitive: its forward calls the helper, its rule
    writes one call of the backward (``vjp``)."""

    def __init__(self, fn, sig, leaves, used, shape, outs, bindings, gathers):
        nout = len(outs)
        self.fn, self.sig, self.shape, self.nout = fn, sig, shape, nout
        # each output's (shape, dtype): its gradient's zeros, where a call's is missing (vjp)
        self.out_zeros = [(tuple(o.shape), o.dtype) for o in outs]
        self.bindings = bindings
        self.kinds = sig[1]
        self.nargs = len(self.kinds)
        self.diff_idx = [i for i, s in enumerate(leaves)
                         if type(s) is Sym and s.diff and id(s) in used]
        self.rest_idx = [i for i in range(len(leaves)) if i not in set(self.diff_idx)]
        # j (among the differentiated leaves) -> the indices it is gathered at (see _gathers)
        self.gathers = {j: gathers[i] for j, i in enumerate(self.diff_idx) if i in gathers}
        # those whose indices are ints used for nothing else: the backward takes only the rows
        self.compact = {j for j, specs in self.gathers.items()
                        if all(how == "leaf" for how, _ in specs)}
        self._diff_pos = {i: j for j, i in enumerate(self.diff_idx)}
        # position of an int used only to index one gathered leaf -> that leaf's j
        self._only_into = {p: j for j, specs in self.gathers.items()
                           for how, p in specs if how == "leaf"}
        self._vjps: dict = {}
        name = getattr(fn, "__name__", "helper")

        def prim(*a):
            flat = _outputs(shape, fn(*a), [])
            return tuple(flat) if nout > 1 else flat[0]
        prim.__name__ = prim.__qualname__ = name
        # its result's shapes follow from its signature (the helper was self-contained: no
        # shape decided by values), so none is guarded (knetc.compiler.tape._shape_from_data)
        prim.knetc_shapes_from_shapes = True
        prim.knetc_unit = self      # (a unit inside another gathers as it did: _gathers)
        self.prim = prim
        params = ", ".join(f"a{i}" for i in range(self.nargs))
        ns = {"_emit": self._emit}
        exec(f"def emit(E, y{', ' if params else ''}{params}):\n"    # noqa: S102
             f"    return _emit(E, y, ({params}{',' if self.nargs == 1 else ''}))\n", ns)
        registry.adjoint_emitter(prim, outputs=nout)(ns["emit"])

    def indices_into(self, args, s):
        """The indices (ints, int Syms) with which a call of this unit on ``args`` reads the
        leaf ``s``, if it only gathers rows of it (or does not use it); else None."""
        leaves = syms_in(list(args))
        found = []
        for p, x in enumerate(leaves):
            if x is not s or p not in self._diff_pos:
                continue
            specs = self.gathers.get(self._diff_pos[p])
            if specs is None:
                return None
            found.extend(q if how == "const" else leaves[q] for how, q in specs)
        return found

    def indexes_only(self, args, idx, s) -> bool:
        """Does a call of this unit on ``args`` use the int ``idx`` only to index ``s``?"""
        leaves = syms_in(list(args))
        for p, x in enumerate(leaves):
            if x is idx:
                j = self._only_into.get(p)
                if j is None or leaves[self.diff_idx[j]] is not s:
                    return False
        return True

    def usable(self) -> bool:
        """Are the globals its helper named still the objects they were when it was learned?"""
        return all(g.get(name, _MISSING) is v for g, name, v in self.bindings)

    def apply(self, spec, args):
        """Record one call of the unit on the trace; the helper's result."""
        tape = spec.tape
        for g, name, _ in self.bindings:
            spec.read_global(g, name)
        args = tuple(_data(a) for a in args)
        out = tape.apply(self.prim, args)
        flat = list(out) if self.nout > 1 else [out]
        return _rebuild(self.shape, flat)

    # -- the backward ------------------------------------------------------------------------
    def _emit(self, E, y, args):
        outs = y if type(y) is tuple else (y,)
        grads = [E.adj.grad_of(o) if o is not None else None for o in outs]
        mask = tuple(g is not None for g in grads)
        leaves = syms_in(list(args))
        diff = [leaves[i] for i in self.diff_idx]
        if not any(mask) or not diff:
            return
        call = ir.call(E.ref(self.vjp(mask)), *[E.lit(a) for a in args],
                       *[g for g in grads if g is not None])
        t = E.temp("d" + self.prim.__name__, call)
        for j, s in enumerate(diff):
            g = ir.Subscript(t, ir.Const(j))
            if j in self.gathers:     # (rows, their gradient): added where they are
                E.adj.scatter(s, ir.Subscript(g, ir.Const(0)), ir.Subscript(g, ir.Const(1)),
                              "rows", E.op.loc)
            else:
                E.grad_of_piece(s, g)

    def vjp(self, mask: tuple):
        """``vjp(*args, *output gradients)``: the gradients of the array arguments the helper
        used, for the outputs marked in ``mask``."""
        fn = self._vjps.get(mask)
        if fn is None:
            fn = self._vjps[mask] = self._padded(mask) or self._make_vjp(mask)
        return fn

    def _padded(self, mask: tuple):
        """The backward of every output, given zeros for the small outputs ``mask`` leaves out
        (a tree's root node: its cell state goes nowhere), or None: one backward compiled per
        kind, not one per mask. Exact: a backward is linear in its output gradients, so the
        zeros add nothing (0 * finite), unless an intermediate was infinite (0 * inf is nan);
        then a result is not finite and the call is made again with the backward of ``mask``
        itself."""
        full = (True,) * self.nout
        missing = [z for z, m in zip(self.out_zeros, mask) if not m]
        if mask == full or sum(math.prod(shape) * dtype.itemsize
                               for shape, dtype in missing) > PAD_BYTES:
            return None
        everything, zeros_of, n = self.vjp(full), self.out_zeros, self.nargs
        exact = []

        def vjp(*vals):
            given = iter(vals[n:])
            grads = [next(given) if m else np.zeros(shape, dtype)
                     for m, (shape, dtype) in zip(mask, zeros_of)]
            out = everything(*vals[:n], *grads)
            if all(np.isfinite(np.sum(g[1] if type(g) is tuple else g)) for g in out):
                return out
            if not exact:
                exact.append(self._make_vjp(mask))
            return exact[0](*vals)
        vjp.__name__ = f"{self.prim.__name__}_vjp"
        return vjp

    def _make_vjp(self, mask):
        grad = _make_grad(self._wrapper(mask))
        kinds, n, diff_idx, rest_idx = self.kinds, self.nargs, self.diff_idx, self.rest_idx
        gathers = self.gathers
        # The rows read, in a small array: a row per int argument that indexes the leaf (the
        # same word in two arguments is two rows, whose gradients the caller's scatter adds
        # up), so that the array's shape, and the backward compiled for it, is the same on
        # every call of the kind (rows made unique had a new shape, and a new compile, for
        # each new count of repeated words: 17 compiles in 150 trees of the DyNet treenn).
        compact = {j: list(dict.fromkeys(p for _, p in gathers[j])) for j in self.compact}

        def vjp(*vals):
            leaves: list = []
            for k, v in zip(kinds, vals[:n]):
                _values(k, v, leaves)
            taken = {}
            for j, ints in compact.items():     # the ints renumbered: positions in the rows
                rows = np.asarray([leaves[p] for p in ints], np.intp)
                i = diff_idx[j]
                leaves[i] = leaves[i][rows]
                for k, p in enumerate(ints):
                    leaves[p] = k
                taken[j] = rows
            D = tuple(leaves[i] for i in diff_idx)
            R = tuple(leaves[i] for i in rest_idx)
            # no units inside a unit's backward: nested ones would each recompute their forward
            # again, once per level of nesting
            _local.off = getattr(_local, "off", 0) + 1
            try:
                g = grad(D, R, vals[n:])
            finally:
                _local.off -= 1
            out = [np.zeros_like(d) if x is None else x for x, d in zip(g, D)]
            for j, specs in gathers.items():
                if j in taken:
                    out[j] = (taken[j], out[j])
                else:
                    rows = np.unique(np.asarray([p if how == "const" else leaves[p]
                                                 for how, p in specs], np.intp))
                    out[j] = (rows, out[j][rows])
            return tuple(out)
        vjp.__name__ = f"{self.prim.__name__}_vjp"
        return vjp

    def _wrapper(self, mask):
        """``f(D, R, G) = sum(output * gradient)`` over the marked outputs, with the helper's
        arguments rebuilt from its differentiated leaves D and its other leaves R."""
        where = {i: f"D[{j}]" for j, i in enumerate(self.diff_idx)}
        where.update({i: f"R[{j}]" for j, i in enumerate(self.rest_idx)})
        count = iter(range(1 << 30))
        args = ", ".join(_source(k, where, count) for k in self.kinds)
        paths = _paths(self.shape, "out", [])      # where each output is in the result
        terms = [f"np.sum({paths[j]} * G[{i}])" for i, j in enumerate(j for j, m in
                                                                       enumerate(mask) if m)]
        name = f"{self.prim.__name__}_unit"
        text = (f"def {name}(D, R, G):\n"
                f"    out = _helper({args})\n"
                f"    return {' + '.join(terms)}\n")
        return define(name, text, {"np": np, "_helper": self.fn}, f"unit {name}")


def _data(a):
    """An argument of a unit: its ints that only select passed as data (int Syms)."""
    t = type(a)
    if t is IntArg:
        return a.data()
    if t is list or t is tuple:
        return t(_data(x) for x in a)
    if t is dict:
        return {k: _data(x) for k, x in a.items()}
    return a


def _values(kind, v, leaves: list) -> None:
    """The leaves of a runtime argument, walked by its kind (where the trace had Syms and
    IntArgs), in the order of ``_kind``."""
    tag = kind[0]
    if tag == "S" or tag == "I":
        leaves.append(v)
    elif tag == "V":
        return
    elif tag is dict:
        for (k, sub) in kind[1]:
            _values(sub, v[k], leaves)
    else:
        for sub, x in zip(kind[1], v):
            _values(sub, x, leaves)


def _source(kind, where: dict, count) -> str:
    """Python source rebuilding an argument of this kind from the wrapper's D and R."""
    tag = kind[0]
    if tag == "S" or tag == "I":
        return where[next(count)]
    if tag == "V":
        return repr(kind[2])
    if tag is dict:
        return "{" + ", ".join(f"{k!r}: {_source(s, where, count)}" for k, s in kind[1]) + "}"
    items = [_source(s, where, count) for s in kind[1]]
    if tag is tuple:
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    return "[" + ", ".join(items) + "]"


def _paths(shape, at: str, out: list) -> list:
    """Python expressions (``out[0][1]``) of the outputs in a result of this shape."""
    if shape is None:
        out.append(at)
    elif shape[0] != "V":
        for i, sub in enumerate(shape[1]):
            _paths(sub, f"{at}[{i}]", out)
    return out


def _outputs(shape, v, out: list) -> list:
    """The values of a helper's result where its traced result had Syms (``_result_kind``)."""
    if shape is None:
        out.append(v)
    elif shape[0] != "V":
        for sub, x in zip(shape[1], v):
            _outputs(sub, x, out)
    return out
