"""Cache keys: the structure, shapes, dtypes and steering Python values of a call's arguments;
the code objects compiled entries were specialized from."""
from __future__ import annotations

import weakref
from typing import NamedTuple

import numpy as np

from .. import errors, settings, tree
from ..rules import registry

_ndarray = np.ndarray


def spec_of(v):
    """A hashable description of a value, equal for calls that share one specialization.

    Arrays contribute type, shape and dtype (never their values); Python floats only their type
    (they are symbolic); ints, strings, bools and other hashable objects their value (they may
    steer loops and branches); other objects their identity. Nodes of ``knetc.tree`` (registered
    classes, NamedTuples and dataclasses, registered on first sight) their type, registration,
    aux data and children, like lists: new instances of one structure share a key.
    """
    t = type(v)
    if t is _ndarray:
        return v.shape, v.dtype
    if t is list:
        return list, *map(spec_of, v)
    if t is tuple:
        return tuple, *map(spec_of, v)
    if t is float:
        return float
    if t is dict:
        return dict, *[(k, spec_of(x)) for k, x in v.items()]
    if t is int or t is str or t is bool or v is None:
        return (t, v)
    if hasattr(v, "__cuda_array_interface__") or isinstance(v, np.generic):
        return (t, v.shape, v.dtype)
    reg = _registration(t)
    if reg is not None or tree.node_type(t):
        return _node_spec(v, t, reg or _registration(t))
    try:
        hash(v)
        return (t, v)
    except TypeError:
        return (t, id(v))


_registration = tree.registration


class _Everything:
    """The key paths of ``keyed_ints=None``: every int is keyed."""
    def __contains__(self, path):
        return True


_ALL = _Everything()


def erased_spec(v, keyed_ints: frozenset, path: tuple):
    """``spec_of`` of the arguments (``path`` is where ``v`` sits: ``(argument index, item,
    ...)``), with the value of an int leaf only where its path is in ``keyed_ints``: ints that
    only selected are data (selectors.IntArg), the rest steered and are keyed. (``spec_of``
    stays a walk of its own without paths: generated guards call it on every call.)"""
    t = type(v)
    if t is int:
        return (int, v) if path in keyed_ints else int
    if t is list or t is tuple:
        return t, *[erased_spec(x, keyed_ints, path + (i,)) for i, x in enumerate(v)]
    if t is dict:
        return dict, *[(k, erased_spec(x, keyed_ints, path + (k,))) for k, x in v.items()]
    if t is _ndarray or t is float or t is str or t is bool or v is None:
        return spec_of(v)
    reg = _registration(t)
    if reg is not None or tree.node_type(t):
        fields = tree.fields_of(t)
        return _node_spec(v, t, reg or _registration(t), lambda children: [
            erased_spec(c, keyed_ints, path + (k,)) for k, c in
            zip(fields[0] if fields is not None else range(len(children)), children)])
    return spec_of(v)


def _node_spec(v, t, reg, children_spec=None):
    """A node's key: "node", its type, its registered flatten (an explicit registration that
    replaced an automatic one makes other keys), its aux data and its children's keys
    (``children_spec(children)``; ``spec_of`` of each by default)."""
    flatten_fn = reg[0]
    children, aux = flatten_fn(v)
    try:
        hash(aux)
    except TypeError:
        raise errors.ArgumentError(
            f"knetc: the aux data of a {t.__qualname__} (what its registered flatten returns "
            f"beside the children) is not hashable: {aux!r}",
            hint="Return hashable aux data from flatten (a tuple, not a list; no arrays): it is "
                 "part of the cache key, as in JAX.") from None
    return ("node", t, flatten_fn, aux,
            *(map(spec_of, children) if children_spec is None else children_spec(children)))


# Guards in generated code call spec_of; when that code is itself specialized (grad of grad, a
# grad called inside a differentiated function), spec_of is called, never inlined.
registry.nondifferentiable(spec_of)


class CacheInfo(NamedTuple):
    """``knetc.cache_info(f)``: calls that reused compiled code (hits), calls that specialized
    anew (misses), compiled specializations held (entries), and misses run uncompiled (tier0)."""
    hits: int
    misses: int
    entries: int
    tier0: int


class SpecCache(dict):
    """The compiled specializations of one function: key (``spec_of`` the arguments) -> entries.

    It also counts hits and misses, and remembers keys that ran once uncompiled (tier 0), so
    that a key coming back is compiled.

    ``watch``: ``(function, code object)`` for every function the entries were specialized from
    (the differentiated function, the helpers it inlined), the function held weakly. A call
    first checks that each function still runs that code (``f.__code__`` replaced in place, as
    IPython's autoreload does, leaves the function object and every guard on it unchanged); when
    one does not, ``revalidate`` drops every entry, and the call specializes anew.
    """

    def __init__(self, select_ints: bool | None = None):
        super().__init__()
        if select_ints is None:
            select_ints = settings.enabled("select_ints")
        # The key paths of the arguments' int leaves whose values are keyed (they steered a
        # trace); the other ints only selected (selectors.IntArg) and are left out of the key.
        # None: every int is keyed (KNETC_SELECT_INTS=0).
        self.keyed_ints: frozenset | None = frozenset() if select_ints else None
        self.hits = 0
        self.misses = 0
        self.tier0 = 0
        self._once: dict = {}
        self.opening = None     # the key of the function's first call (knetc.api)
        self._fast = None      # the generated key function for the first call's structure
        self.watch: tuple = ()  # (weakref.proxy(function), code object), read on every call
        # Some entry was generated for arrays not NumPy's: the GPU-only switches (fuse, capture)
        # may select other code for a call, so the call reads them (knetc.api.Grad.__call__).
        self.device_code = False
        self._watched: dict = {}  # id(proxy) -> (id(function), id(code)): what is watched

    def key(self, args: tuple):
        """The cache key of a call's arguments (bound to the parameters, one per parameter)."""
        fast = self._fast
        keyed = self.keyed_ints
        if fast is None:
            fast = self._fast = key_function(args, keyed) or self._nested
        k = fast(args)
        return self._nested(args) if k is None else k

    def _nested(self, args: tuple):
        keyed = self.keyed_ints
        return spec_of(args) if keyed is None else erased_spec(args, keyed, ())

    def learn(self, steered) -> bool:
        """Key the int leaves at ``steered`` (key paths a trace reported) by value from now on;
        True if that changed the key. Every entry is dropped then: keys made before and after
        must never meet (a flat key does not name its structure), and the guards of the old
        entries on those ints would fail half the time. Call under the owner's lock."""
        if self.keyed_ints is None or not steered or steered <= self.keyed_ints:
            return False
        self.keyed_ints = self.keyed_ints | frozenset(steered)
        self._fast = None
        self.clear()
        self._once.clear()
        return True

    def info(self) -> CacheInfo:
        return CacheInfo(self.hits, self.misses, sum(len(v) for v in self.values()), self.tier0)

    def seen_once(self, key, within: int) -> bool:
        """Was ``key`` run at tier 0 at most ``within`` misses ago? (Records this sighting if
        not; bounded, oldest dropped.) A key that comes back from further away is as good as
        new: compiled, its entry would be evicted before its next return (a dataset of more
        trees than the cache holds, epoch after epoch)."""
        then = self._once.pop(key, None)
        if then is not None and self.misses - then <= within:
            return True
        self._once[key] = self.misses
        if len(self._once) > 4096:
            del self._once[next(iter(self._once))]
        return False

    def fresh(self) -> bool:
        """Does every watched function still run the code its entries were made from?"""
        try:
            for fn, code in self.watch:
                if fn.__code__ is not code:
                    return False
        except ReferenceError:     # a function gone: nothing can call it any more
            pass
        return True

    def revalidate(self) -> bool:
        """Drop every entry if a watched function's code was replaced (True then); forget the
        functions that are gone. Call under the owner's lock."""
        live, changed = [], False
        for fn, code in self.watch:
            try:
                now = fn.__code__
            except ReferenceError:
                self._watched.pop(id(fn), None)
                continue
            changed = changed or now is not code
            live.append((fn, code))
        if changed:
            self.clear()
            self._once.clear()
            self.watch = ()
            self._watched.clear()
        else:
            self.watch = tuple(live)
        return changed

    def depend(self, pairs) -> None:
        """Record the ``(function, code)`` pairs an entry about to be stored was specialized
        from (call under the owner's lock). A function already watched with other code had its
        code replaced meanwhile: the entries made from the old code are dropped first."""
        self.revalidate()
        have = set(self._watched.values())
        add = []
        for fn, code in pairs:
            k = (id(fn), id(code))
            if k in have:
                continue
            have.add(k)
            try:
                proxy = weakref.proxy(fn, self._gone)
            except TypeError:      # not weakly referable: nothing to watch
                continue
            self._watched[id(proxy)] = k
            add.append((proxy, code))
        if add:
            self.watch = self.watch + tuple(add)

    def _gone(self, proxy) -> None:
        """A watched function was collected: stop checking it (a new tuple, never mutated)."""
        self.watch = tuple(p for p in self.watch if p[0] is not proxy)
        self._watched.pop(id(proxy), None)


# ---------------------------------------------------------------------------------------------
# A key function generated for one argument structure (the cached call's hot path): the same
# facts as spec_of, read with no recursion into a flat tuple, or None when the structure differs.
# Flat keys never equal spec_of's nested ones (those start with the type ``tuple``), and one
# structure always takes the same path, so a specialization is never cached under both.

_MAX_ITEMS = 64


def key_function(args: tuple, keyed_ints: frozenset | None = None):
    """A function computing the key of calls shaped like ``args``, or None if it is not simple
    (arrays, floats, ints, strings, and flat lists/tuples/dicts, NamedTuples and dataclasses
    of them). With ``keyed_ints`` (not None), an int leaf's value is in the key only if its key
    path is there (``erased_spec``)."""
    keyed = _ALL if keyed_ints is None else keyed_ints
    top, unpack, leaves, parts, consts = [], [], [], [], {}
    for i, a in enumerate(args):
        name = f"a{i}"
        t = type(a)
        if t is list or t is tuple or t is dict:
            if len(a) > _MAX_ITEMS:
                return None
            top.append(f"type({name}) is {t.__name__} and len({name}) == {len(a)}")
            if t is dict:
                consts[f"K{i}"] = tuple(a)
                top.append(f"tuple({name}) == K{i}")     # keys and their order
            names = [f"{name}_{j}" for j in range(len(a))]
            if names:
                unpack.append(f"{', '.join(names)}, = {name}{'.values()' if t is dict else ''}")
            for k, n, v in zip(a if t is dict else range(len(a)), names,
                               a.values() if t is dict else a):
                if not _leaf(n, v, leaves, parts, (i, k) in keyed):
                    return None
        elif not _leaf(name, a, top, parts, (i,) in keyed) and not (
                tree.node_type(t) and
                _fields_node(i, name, a, top, unpack, leaves, parts, consts, keyed)):
            return None
    lines = ["def key(args):", f"    if len(args) != {len(args)}:", "        return None"]
    if args:
        lines.append(f"    {', '.join(f'a{i}' for i in range(len(args)))}, = args")
    lines.append(f"    if {' and '.join(top) or 'True'}:")
    lines += [f"        {u}" for u in unpack]
    lines.append(f"        if {' and '.join(leaves) or 'True'}:")
    lines.append(f"            return ({', '.join(parts)}{',' if len(parts) == 1 else ''})")
    namespace = {"_nd": _ndarray, **consts}
    exec("\n".join(lines) + "\n", namespace)
    return namespace["key"]


def _fields_node(i, name, v, top, unpack, leaves, parts, consts, keyed) -> bool:
    """A NamedTuple or dataclass argument whose fields are leaves: its type checked, its data
    fields read as attributes, its meta fields' values in the key (its aux data)."""
    fields = tree.fields_of(type(v))
    if fields is None or len(fields[0]) > _MAX_ITEMS:
        return False
    data, meta = fields
    try:
        hash(tuple(getattr(v, m) for m in meta))
    except TypeError:
        return False
    consts[f"T{i}"] = type(v)
    consts[f"R{i}"] = tree.registration(type(v))     # this registration (one may replace it)
    consts["_reg"] = tree.registration
    top.append(f"type({name}) is T{i} and _reg(T{i}) is R{i}")
    names = [f"{name}_{j}" for j in range(len(data))]
    for n, f in zip(names, data):
        unpack.append(f"{n} = {name}.{f}")
        if not _leaf(n, getattr(v, f), leaves, parts, (i, f) in keyed):
            return False
    parts += [f"{name}.{m}" for m in meta]
    return True


def _leaf(name, v, checks, parts, keyed: bool) -> bool:
    t = type(v)
    if t is _ndarray:
        checks.append(f"type({name}) is _nd")
        parts += [f"{name}.shape", f"{name}.dtype"]
    elif t is float:
        checks.append(f"type({name}) is float")
    elif t is int or t is str or t is bool:
        checks.append(f"type({name}) is {t.__name__}")
        if keyed or t is not int:
            parts.append(name)
    elif v is None:
        checks.append(f"{name} is None")
    else:
        return False
    return True
