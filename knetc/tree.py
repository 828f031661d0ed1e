"""Nested parameter structures: THE one place that defines how knetc walks them.

Models, gradients, optimizer states and arguments are trees: containers (nodes) holding other
trees, down to leaves (arrays, floats, ...). Every walker over such structures (backend moves,
gradcheck, optimizers, and in time the compiler) should go through this module, so that they
all agree on what a container is, on the order of the leaves and on how a container is rebuilt.
The API is a small version of JAX's ``jax.tree_util``::

    leaves, treedef = flatten(tree)        # leaves in order, plus the structure
    tree2 = unflatten(treedef, leaves)     # the same structure, around (new) leaves
    map(fn, params, grads)                 # fn(w, g) on each pair of leaves, same structure
    for path, leaf in paths(tree): ...     # path: the keys from the root, e.g. ('layers', 0, 'w')
    get(tree, path); replace(tree, path, leaf)

Nodes. Exactly ``list``, ``tuple`` and ``dict`` (the type, not subclasses: an ``OrderedDict``,
a ``NamedTuple`` or a list subclass is a leaf unless registered), plus the classes given to
``register`` (or ``register_namedtuple``/``register_dataclass``). A dict keeps its insertion
order: its keys are part of the structure, in that order. Everything else is a leaf.

None is a LEAF (unlike JAX, where it is an empty node): gradients use None for "no gradient",
and a parameter set may hold None for an absent entry; with None as a leaf ``map(fn, params,
grads)`` pairs each parameter with its gradient or with None, and positions never shift.

Subclasses and dataclasses are leaves until registered: this module's walkers never guess.
``register_namedtuple(cls)`` and ``register_dataclass(cls)`` opt a class in (a registered
NamedTuple is rebuilt as its class); ``register_pytree(cls, flatten, unflatten)`` any class.

Automatic nodes (pytrees, as a JAX user expects). knetc's entry points (``knetc.grad``'s cache
key and specializer, ``optimizers``, ``update``) call ``node_type(cls)``/``auto_register(x)``,
which register every NamedTuple (a tuple subclass with ``_fields``) and every dataclass they
meet as a node the first time they see its class; from then on every walker agrees on it. Its
children are its fields (path keys: the field names, read as attributes); a dataclass is rebuilt
with its constructor, as JAX's ``register_dataclass`` does (its ``__post_init__`` computes what it
computes from the new fields), or, when the constructor raises (its checks refuse a gradient of
None, an optimizer), without it: the fields set directly, as Equinox does; fields with
``init=False`` are set directly. (The instance the compiler traces is made without it: see
``with_fields``.) knetc's own classes (``knetc.runtime``: the ``RNN`` spec, a
frozen dataclass used as a constant; ``BNMoments``, updated in place) are never made nodes
automatically.
Registering a class explicitly (``register*``) replaces its automatic registration.

A ``TreeDef`` is immutable, hashable (when the registered classes' aux data are hashable) and
compared by value, so it can go in cache keys. Paths are tuples of keys: list/tuple indices,
dict keys, and for registered classes the keys given by ``keys_fn`` (field names for
NamedTuples and dataclasses) or else the child positions.
"""
from __future__ import annotations

import dataclasses
import threading
from typing import Any, Callable, Hashable, Iterable, Sequence

__all__ = ["TreeDef", "Path", "flatten", "unflatten", "structure", "leaves", "map",
           "flatten_with_paths", "paths", "get", "replace", "register", "register_namedtuple",
           "register_dataclass", "register_pytree", "is_node", "node_type", "auto_register"]

Path = tuple  # keys from the root down to one leaf: list/tuple indices, dict keys, field names

# The structure is a nested tuple ("spec"): None for a leaf, (type, aux, children_specs) for a
# node, aux being None for list/tuple, the keys tuple for a dict, the class's aux data otherwise.

# type -> (flatten_fn, unflatten_fn, keys_fn or None); list, tuple and dict are handled inline.
_REGISTRY: dict[type, tuple[Callable, Callable, Callable | None]] = {}
# every node type, for one membership test per value on the hot paths
_NODES: set[type] = {list, tuple, dict}
# Classes whose children are attributes: type -> (data field names, meta field names). The
# NamedTuples and dataclasses registered (by register_namedtuple/register_dataclass or
# automatically): the compiler reads their children as ``x.name``.
_FIELDS: dict[type, tuple[tuple[str, ...], tuple[str, ...]]] = {}
# The classes registered automatically (an explicit registration may replace theirs).
_AUTO: set[type] = set()
_LOCK = threading.Lock()


class TreeDef:
    """The structure of a tree without its leaves: what ``flatten`` returns with the leaves.

    Immutable, compared by value (``==``) and hashable; ``num_leaves`` is the number of leaves.
    """

    __slots__ = ("_spec", "num_leaves", "_hash")

    def __init__(self, spec: Any, num_leaves: int) -> None:
        self._spec = spec
        self.num_leaves = num_leaves
        self._hash: int | None = None

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if type(other) is not TreeDef:
            return NotImplemented
        return self.num_leaves == other.num_leaves and self._spec == other._spec

    def __hash__(self) -> int:
        h = self._hash
        if h is None:
            h = self._hash = hash(self._spec)
        return h

    def __repr__(self) -> str:
        return f"TreeDef({_spec_str(self._spec)})"

    def __reduce__(self):  # picklable when the registered classes and aux data are
        return (TreeDef, (self._spec, self.num_leaves))

    def unflatten(self, leaves: Sequence[Any]) -> Any:
        """Same as ``unflatten(self, leaves)``."""
        return unflatten(self, leaves)

    def flatten_up_to(self, tree: Any) -> list:
        """The subtrees of ``tree`` at this structure's leaves, in order.

        ``tree`` must have this structure down to the leaves, where it may hold anything (a
        whole subtree is then one item). Raises ValueError naming the path where it differs.
        """
        spec = self._spec
        if spec is None:
            return [tree]
        out: list = []
        try:
            _up_to(spec, tree, out)
        except _Mismatch as e:
            raise ValueError(f"tree structures differ at {_where(tuple(reversed(e.keys)))}: "
                             f"{e}") from None
        return out


# -- flatten / unflatten ----------------------------------------------------------------------

def _flatten(x: Any, out: list) -> Any:
    t = type(x)
    if t is list or t is tuple:
        items, aux = x, None
    elif t is dict:
        items, aux = x.values(), tuple(x)
    else:
        reg = _REGISTRY.get(t)
        if reg is None:
            out.append(x)
            return None
        items, aux = reg[0](x)
    nodes = _NODES
    specs = []
    for v in items:
        if type(v) in nodes:
            specs.append(_flatten(v, out))
        else:
            out.append(v)
            specs.append(None)
    return (t, aux, tuple(specs))


def flatten(tree: Any) -> tuple[list, TreeDef]:
    """The leaves of ``tree`` in order (depth first, dicts in insertion order) and its structure.

    ``unflatten(treedef, leaves)`` rebuilds the tree. A leaf itself (array, float, None, ...)
    flattens to ``[tree]``.
    """
    out: list = []
    spec = _flatten(tree, out)
    return out, TreeDef(spec, len(out))


def _build(spec: Any, leaves: Sequence[Any], i: int) -> tuple[Any, int]:
    """The node of ``spec`` around ``leaves[i:]``, and the index of the next unused leaf."""
    t, aux, kids = spec
    items = []
    for k in kids:
        if k is None:
            items.append(leaves[i])
            i += 1
        else:
            v, i = _build(k, leaves, i)
            items.append(v)
    if t is list:
        return items, i
    if t is tuple:
        return tuple(items), i
    if t is dict:
        return dict(zip(aux, items)), i
    return _REGISTRY[t][1](aux, items), i


def unflatten(treedef: TreeDef, leaves: Iterable[Any]) -> Any:
    """The tree of structure ``treedef`` with ``leaves`` (in ``flatten``'s order) as its leaves.

    Containers are new objects; the leaves are put in as they are (not copied). Raises
    ValueError when the number of leaves differs from ``treedef.num_leaves``.
    """
    if type(leaves) is not list and type(leaves) is not tuple:
        leaves = list(leaves)
    if len(leaves) != treedef.num_leaves:
        raise ValueError(f"unflatten: the structure has {treedef.num_leaves} leaves, "
                         f"{len(leaves)} were given")
    spec = treedef._spec
    if spec is None:
        return leaves[0]
    return _build(spec, leaves, 0)[0]


def structure(tree: Any) -> TreeDef:
    """The ``TreeDef`` of ``tree`` (``flatten(tree)[1]``)."""
    return flatten(tree)[1]


def _leaves(x: Any, out: list) -> None:
    t = type(x)
    if t is list or t is tuple:
        items = x
    elif t is dict:
        items = x.values()
    else:
        items = _REGISTRY[t][0](x)[0]
    nodes = _NODES
    for v in items:
        if type(v) in nodes:
            _leaves(v, out)
        else:
            out.append(v)


def leaves(tree: Any) -> list:
    """The leaves of ``tree`` in ``flatten``'s order (without building the structure)."""
    if type(tree) not in _NODES:
        return [tree]
    out: list = []
    _leaves(tree, out)
    return out


def is_node(x: Any) -> bool:
    """True when ``x`` is a container (list, tuple, dict or a registered class), not a leaf."""
    return type(x) in _NODES


# -- map ----------------------------------------------------------------------------------------

def _map1(fn: Callable[[Any], Any], x: Any) -> Any:
    t = type(x)
    nodes = _NODES
    if t is list:
        return [_map1(fn, v) if type(v) in nodes else fn(v) for v in x]
    if t is tuple:
        return tuple([_map1(fn, v) if type(v) in nodes else fn(v) for v in x])
    if t is dict:
        return {k: _map1(fn, v) if type(v) in nodes else fn(v) for k, v in x.items()}
    reg = _REGISTRY.get(t)
    if reg is None:
        return fn(x)
    items, aux = reg[0](x)
    return reg[1](aux, [_map1(fn, v) if type(v) in nodes else fn(v) for v in items])


def map(fn: Callable[..., Any], tree: Any, *rest: Any) -> Any:  # noqa: A001 - jax.tree_util style
    """A tree of ``tree``'s structure whose leaves are ``fn(leaf, *matching leaves of rest)``.

    Each tree of ``rest`` must have ``tree``'s structure down to ``tree``'s leaves (dicts with
    the same keys, in any order); where ``tree`` has a leaf it may hold a whole subtree, which is
    passed to ``fn`` as one argument. ``fn`` is called on the leaves in ``flatten``'s order.
    Raises ValueError naming the first path where a tree of ``rest`` differs.
    """
    if not rest:
        return _map1(fn, tree)
    first, treedef = flatten(tree)
    others = [treedef.flatten_up_to(r) for r in rest]
    return unflatten(treedef, [fn(*xs) for xs in zip(first, *others)])


class _Mismatch(ValueError):
    """Raised by ``_up_to``; ``keys`` collects the path on the way up (root first at the end)."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.keys: list = []


def _where(path: Path) -> str:
    return "the root" if not path else "".join(f"[{k!r}]" for k in path)


def _up_to(spec: Any, x: Any, out: list) -> None:
    t, aux, kids = spec
    if type(x) is not t:
        raise _Mismatch(f"expected a {t.__name__}, got a {type(x).__name__}")
    if t is list or t is tuple:
        if len(x) != len(kids):
            raise _Mismatch(f"expected a {t.__name__} of length {len(kids)}, got length {len(x)}")
        items = x
    elif t is dict:
        keys = tuple(x)
        if keys == aux:
            items = x.values()
        elif len(keys) == len(aux) and set(keys) == set(aux):  # same keys, another order
            items = [x[key] for key in aux]
        else:
            raise _Mismatch(f"expected a dict with keys {list(aux)}, got keys {list(keys)}")
    else:
        items, aux2 = _REGISTRY[t][0](x)
        items = list(items)
        if aux2 != aux or len(items) != len(kids):
            raise _Mismatch(f"the {t.__qualname__} nodes differ (aux data or number of children)")
    i = 0
    for k, v in zip(kids, items):
        if k is None:
            out.append(v)
        else:
            try:
                _up_to(k, v, out)
            except _Mismatch as e:
                e.keys.append(aux[i] if t is dict else i if t is list or t is tuple
                              else _keys(t, x, len(items))[i])
                raise
        i += 1


# -- paths ----------------------------------------------------------------------------------------

def _keys(t: type, x: Any, n: int) -> Sequence[Any]:
    keys_fn = _REGISTRY[t][2]
    return range(n) if keys_fn is None else keys_fn(x)


def _with_paths(x: Any, path: Path, out: list) -> Any:
    t = type(x)
    if t is list or t is tuple:
        keyed, aux = enumerate(x), None
    elif t is dict:
        keyed, aux = x.items(), tuple(x)
    else:
        reg = _REGISTRY.get(t)
        if reg is None:
            out.append((path, x))
            return None
        items, aux = reg[0](x)
        items = list(items)
        keyed = zip(_keys(t, x, len(items)), items)
    return (t, aux, tuple([_with_paths(v, path + (k,), out) for k, v in keyed]))


def flatten_with_paths(tree: Any) -> tuple[list[tuple[Path, Any]], TreeDef]:
    """Like ``flatten``, but each leaf comes as ``(path, leaf)``: ``([(path, leaf), ...], treedef)``.

    ``unflatten(treedef, [f(p, x) for p, x in pairs])`` maps with the paths.
    """
    out: list = []
    spec = _with_paths(tree, (), out)
    return out, TreeDef(spec, len(out))


def paths(tree: Any) -> list[tuple[Path, Any]]:
    """``[(path, leaf), ...]`` in ``flatten``'s order; ``get(tree, path) is leaf`` for each."""
    return flatten_with_paths(tree)[0]


def _child(x: Any, key: Any, path: Path) -> tuple[list, Any, int]:
    """For a registered node: (its children, its aux, the position of ``key``)."""
    t = type(x)
    reg = _REGISTRY.get(t)
    if reg is None:
        raise KeyError(f"path {path!r} goes through a {t.__name__} leaf (at the key {key!r})")
    items, aux = reg[0](x)
    items = list(items)
    keys = list(_keys(t, x, len(items)))
    try:
        return items, aux, keys.index(key)
    except ValueError:
        raise KeyError(f"path {path!r}: the {t.__name__} has no key {key!r} "
                       f"(keys {keys})") from None


def get(tree: Any, path: Path) -> Any:
    """The subtree (or leaf) of ``tree`` at ``path``, a tuple of keys as ``paths`` gives them.

    Raises KeyError or IndexError when ``path`` is not in ``tree`` (KeyError when it goes through
    a leaf).
    """
    for key in path:
        t = type(tree)
        if t is list or t is tuple or t is dict:
            tree = tree[key]
        else:
            items, _, i = _child(tree, key, path)
            tree = items[i]
    return tree


def replace(tree: Any, path: Path, leaf: Any) -> Any:
    """A copy of ``tree`` with the subtree at ``path`` replaced by ``leaf``.

    Only the containers along ``path`` are copied (rebuilt with their types); everything else is
    shared with ``tree``. ``replace(tree, (), x)`` is ``x``. Raises as ``get`` does.
    """
    if not path:
        return leaf
    key, rest = path[0], path[1:]
    t = type(tree)
    if t is dict:
        out = dict(tree)
        out[key] = replace(tree[key], rest, leaf)
        return out
    if t is list or t is tuple:
        items = list(tree)
        items[key] = replace(tree[key], rest, leaf)
        return items if t is list else tuple(items)
    items, aux, i = _child(tree, key, path)
    items[i] = replace(items[i], rest, leaf)
    return _REGISTRY[t][1](aux, items)


# -- registration ---------------------------------------------------------------------------------

def register(cls: type, flatten_fn: Callable[[Any], tuple[Iterable[Any], Hashable]],
             unflatten_fn: Callable[[Hashable, list], Any], *,
             keys_fn: Callable[[Any], Sequence[Any]] | None = None) -> None:
    """Make instances of exactly ``cls`` (not its subclasses) nodes, as JAX's
    ``register_pytree_node``.

    ``flatten_fn(x) -> (children, aux)``: the children (subtrees, in order) and the data that is
    not a child, which becomes part of the structure: it must be hashable and comparable for
    the ``TreeDef`` to be. ``unflatten_fn(aux, children: list) -> x`` rebuilds an instance.
    ``keys_fn(x)`` gives the path keys of the children (default: their positions 0, 1, ...).
    Raises ValueError for list/tuple/dict or an already registered class (a class registered
    automatically, a NamedTuple or dataclass knetc met, may be registered again: the explicit
    registration replaces the automatic one).
    """
    _register(cls, flatten_fn, unflatten_fn, keys_fn, None)


def _register(cls, flatten_fn, unflatten_fn, keys_fn, fields, auto: bool = False) -> None:
    if not isinstance(cls, type):
        raise TypeError(f"register: expected a class, got {cls!r}")
    with _LOCK:
        if cls in _NODES and not (cls in _AUTO and not auto):
            if auto:        # another thread registered it meanwhile
                return
            raise ValueError(f"register: {cls.__qualname__} is already a tree node type")
        _AUTO.discard(cls)
        if auto:
            _AUTO.add(cls)
        if fields is None:
            _FIELDS.pop(cls, None)
        else:
            _FIELDS[cls] = fields
        _REGISTRY[cls] = (flatten_fn, unflatten_fn, keys_fn)
        _NODES.add(cls)


def register_namedtuple(cls: type) -> type:
    """Register the NamedTuple class ``cls`` as a node (path keys: its field names); returns it.

    Its instances are rebuilt as ``cls``, never as plain tuples. Usable as a class decorator.
    """
    if not (isinstance(cls, type) and issubclass(cls, tuple) and hasattr(cls, "_fields")):
        raise TypeError(f"register_namedtuple: {cls!r} is not a NamedTuple class")
    fields = tuple(cls._fields)
    _register(cls, lambda x: (x, None), lambda aux, items: cls(*items), lambda x: fields,
              (fields, ()))
    return cls


def register_dataclass(cls: type, data_fields: Sequence[str] | None = None,
                       meta_fields: Sequence[str] = ()) -> type:
    """Register the dataclass ``cls`` as a node; returns it (usable as a class decorator).

    ``data_fields`` are the children (default: every field not in ``meta_fields``), with their
    names as path keys; ``meta_fields`` are static data, part of the structure (hashable).
    Instances are rebuilt with ``cls(**fields)``, so every field must be an ``__init__`` field.
    """
    import dataclasses

    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"register_dataclass: {cls!r} is not a dataclass")
    fields = dataclasses.fields(cls)
    names = [f.name for f in fields]
    meta = tuple(meta_fields)
    data = tuple(n for n in names if n not in meta) if data_fields is None else tuple(data_fields)
    if sorted(data + meta) != sorted(names):
        raise ValueError(f"register_dataclass: data_fields {list(data)} and meta_fields "
                         f"{list(meta)} must split the fields {names} of {cls.__qualname__}")
    if any(not f.init for f in fields):
        raise ValueError(f"register_dataclass: {cls.__qualname__} has fields with init=False")

    def flatten_fn(x):
        return [getattr(x, n) for n in data], tuple([getattr(x, n) for n in meta])

    def unflatten_fn(aux, items):
        return cls(**dict(zip(data, items)), **dict(zip(meta, aux)))

    _register(cls, flatten_fn, unflatten_fn, lambda x: data, (data, meta))
    return cls


def register_pytree(cls: type, flatten: Callable[[Any], tuple[Iterable[Any], Hashable]],
                    unflatten: Callable[[Hashable, list], Any], *,
                    keys: Callable[[Any], Sequence[Any]] | None = None) -> type:
    """Make ``cls`` a node of parameter trees, with JAX's ``register_pytree_node`` signature.

    ``flatten(x) -> (children, aux_data)``: the children (subtrees: arrays, lists, other nodes),
    and the static data, which must be hashable and comparable: calls whose arguments hold
    instances with equal aux data and children of the same structure share one compiled
    gradient. ``unflatten(aux_data, children) -> x`` rebuilds an instance; knetc calls it with
    traced values while specializing (the loss sees such an instance), with gradients (None
    for a child that gets no gradient) and with optimizers (``knetc.optimizers``). In the
    generated code the children are read with ``flatten`` when it runs, never baked in.
    ``keys(x)``: the path keys of the children (default: their positions). Returns ``cls``::

        class Affine:
            def __init__(self, W, b):
                self.W, self.b = W, b

        knetc.register_pytree(Affine, lambda a: ((a.W, a.b), None), lambda aux, ch: Affine(*ch))
    """
    _register(cls, flatten, unflatten, keys, None)
    return cls


# -- automatic nodes: NamedTuples and dataclasses ----------------------------------------------

# Types that are leaves, whatever happens: the common ones answer node_type at once.
_LEAF_TYPES = frozenset([float, int, bool, str, bytes, complex, type(None), type])


def registration(cls: type) -> tuple[Callable, Callable, Callable | None] | None:
    """``(flatten_fn, unflatten_fn, keys_fn)`` of a registered class (not list/tuple/dict), or
    None. The tuple is made anew by each registration: its identity names the registration."""
    return _REGISTRY.get(cls)


def is_own_class(cls: type) -> bool:
    """A class of knetc's own (its runtime's RNN spec, BNMoments...): never a node automatically."""
    mod = getattr(cls, "__module__", None) or ""
    return mod == "knetc" or mod.startswith("knetc.")


def node_type(cls: type) -> bool:
    """Is ``cls`` a node type? A NamedTuple or dataclass class not yet registered is registered
    first (automatic nodes, see the module docstring), unless it is one of knetc's own."""
    if cls in _NODES:
        return True
    if cls in _LEAF_TYPES:
        return False
    if issubclass(cls, tuple) and isinstance(getattr(cls, "_fields", None), tuple):
        if is_own_class(cls):
            return False
        fields = tuple(cls._fields)
        _register(cls, lambda x: (x, None), lambda aux, items: cls(*items), lambda x: fields,
                  (fields, ()), auto=True)
        return True
    if isinstance(getattr(cls, "__dataclass_fields__", None), dict) and not is_own_class(cls):
        fields = dataclasses.fields(cls)
        names = tuple(f.name for f in fields)
        init = [f.init for f in fields]

        def flatten_fn(x):
            return [getattr(x, n) for n in names], None

        def unflatten_fn(aux, items):
            try:
                obj = cls(**{n: v for n, v, i in zip(names, items, init) if i})
            except Exception:   # noqa: BLE001 - __post_init__ refused None, a traced value...
                obj = object.__new__(cls)
                init_ = [False] * len(names)
            else:
                init_ = init
            for n, v, i in zip(names, items, init_):
                if not i:
                    object.__setattr__(obj, n, v)   # frozen or not
            return obj

        _register(cls, flatten_fn, unflatten_fn, lambda x: names, (names, ()), auto=True)
        return True
    return False


def auto_register(tree: Any) -> Any:
    """Register (``node_type``) the NamedTuple and dataclass classes found in ``tree``, walking
    its nodes and theirs; returns ``tree``. Afterwards every walker sees those classes as nodes."""
    t = type(tree)
    if t is list or t is tuple:
        items = tree
    elif t is dict:
        items = tree.values()
    elif t in _LEAF_TYPES or not node_type(t):
        return tree
    else:
        items = _REGISTRY[t][0](tree)[0]
    for v in items:
        if type(v) not in _LEAF_TYPES:
            auto_register(v)
    return tree


def fields_of(cls: type) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """``(data field names, meta field names)`` of a node class whose children are attributes
    (NamedTuples, dataclasses), else None (lists, tuples, dicts, other registered classes)."""
    return _FIELDS.get(cls)


def node_flatten(x: Any) -> tuple[list, Any]:
    """``(children, aux)`` of a node of a registered class (its registered flatten)."""
    items, aux = _REGISTRY[type(x)][0](x)
    return list(items), aux


def node_children(x: Any) -> list:
    """The children of a node of a registered class, in order (what generated code reads)."""
    return list(_REGISTRY[type(x)][0](x)[0])


def node_unflatten(cls: type, aux: Any, children: Sequence[Any]) -> Any:
    """A node of the registered class ``cls`` around ``children`` (its registered unflatten)."""
    return _REGISTRY[cls][1](aux, list(children))


def with_fields(cls: type, aux: Any, children: Sequence[Any]) -> Any:
    """An instance of the registered dataclass ``cls`` whose fields are set directly, without
    calling its ``__init__``/``__post_init__``: ``children`` its data fields, ``aux`` (the meta
    fields' values, as its flatten returns them) the others. The compiler's traced instances
    are made so: a constructor runs plain Python, whose side effects (a new random generator, a
    cache) would be this trace's, not the caller's object's."""
    data, meta = _FIELDS[cls]
    obj = object.__new__(cls)
    for n, v in zip(data, children):
        object.__setattr__(obj, n, v)
    for n, v in zip(meta, aux or ()):
        object.__setattr__(obj, n, v)
    return obj


# -- repr -----------------------------------------------------------------------------------------

def _spec_str(spec: Any) -> str:
    if spec is None:
        return "*"
    t, aux, kids = spec
    inner = [_spec_str(k) for k in kids]
    if t is list:
        return "[" + ", ".join(inner) + "]"
    if t is tuple:
        return "(" + ", ".join(inner) + ("," if len(inner) == 1 else "") + ")"
    if t is dict:
        return "{" + ", ".join(f"{k!r}: {s}" for k, s in zip(aux, inner)) + "}"
    return f"{t.__qualname__}[{aux!r}](" + ", ".join(inner) + ")"
