"""knetc.tree: flatten/unflatten, map, paths, get/replace, registration, TreeDef equality/hash."""
from __future__ import annotations

import dataclasses
import pickle
from collections import OrderedDict
from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from knetc import tree


def same(a, b) -> bool:
    """Structural equality: same container types and dict key order, leaves identical (``is``)."""
    if type(a) is not type(b):
        return False
    if type(a) in (list, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if type(a) is dict:
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return a is b


def nested():
    return {"layers": [{"w": np.ones((2, 3)), "b": np.zeros(3)}, {"w": np.ones((3, 1)), "b": None}],
            "scale": 0.5, "pair": (1.5, [np.float32(2.0)]), "empty": [], "none": None, "t": ()}


# -- flatten / unflatten ---------------------------------------------------------------------------

def test_round_trip_nested():
    t = nested()
    leaves, td = tree.flatten(t)
    assert td.num_leaves == len(leaves) == 8
    assert leaves[0] is t["layers"][0]["w"] and leaves[3] is None and leaves[4] == 0.5
    back = tree.unflatten(td, leaves)
    assert same(back, t)
    assert back is not t and back["layers"] is not t["layers"]  # new containers, same leaves
    assert tree.leaves(t) == leaves or all(x is y for x, y in zip(tree.leaves(t), leaves))
    assert td.unflatten(leaves) is not None and same(td.unflatten(leaves), t)


@pytest.mark.parametrize("leaf", [None, 1.0, 3, "s", np.zeros(2), np.float64(1.0)])
def test_leaf_alone(leaf):
    leaves, td = tree.flatten(leaf)
    assert leaves == [leaf] or leaves[0] is leaf
    assert tree.unflatten(td, [leaf]) is leaf
    assert tree.leaves(leaf)[0] is leaf
    assert tree.paths(leaf) == [((), leaf)] or tree.paths(leaf)[0][0] == ()
    assert not tree.is_node(leaf)


def test_none_is_a_leaf_and_empty_containers_are_nodes():
    leaves, td = tree.flatten([None, [], {}, ()])
    assert leaves == [None]
    assert same(tree.unflatten(td, [7]), [7, [], {}, ()])
    assert tree.flatten({"a": None})[1] != tree.flatten({"a": []})[1]


def test_dict_keeps_insertion_order():
    a, b = {"x": 1, "y": 2}, {"y": 2, "x": 1}
    assert tree.leaves(a) == [1, 2] and tree.leaves(b) == [2, 1]
    assert list(tree.unflatten(tree.structure(b), [5, 6])) == ["y", "x"]
    assert tree.structure(a) != tree.structure(b)


def test_subclasses_are_leaves_unless_registered():
    class P(NamedTuple):
        w: object
        b: object
    od = OrderedDict(a=1)
    assert tree.leaves([P(1, 2), od])[0] == P(1, 2)
    assert tree.leaves([P(1, 2), od])[1] is od


def test_unflatten_wrong_count():
    _, td = tree.flatten([1, [2, 3]])
    with pytest.raises(ValueError, match="has 3 leaves, 2 were given"):
        tree.unflatten(td, [1, 2])
    assert tree.unflatten(td, iter([4, 5, 6])) == [4, [5, 6]]


# -- TreeDef -------------------------------------------------------------------------------------

def test_treedef_equality_and_hash():
    t1, t2 = nested(), nested()
    t2["scale"] = np.zeros(5)  # leaves differ, structure does not
    d1, d2 = tree.structure(t1), tree.structure(t2)
    assert d1 == d2 and hash(d1) == hash(d2) and len({d1, d2}) == 1
    assert {d1: "cached"}[d2] == "cached"
    others = [[1, 2], (1, 2), [1, [2]], {"a": 1, "b": 2}, {"a": 1, "c": 2}, [1, 2, 3], [None, 2]]
    defs = [tree.structure(o) for o in others]
    assert len(set(defs[:-1])) == len(defs) - 1  # all different ...
    assert defs[-1] == defs[0]                    # ... but None is a leaf like 1
    assert d1 != 3 and d1 != None  # noqa: E711
    assert repr(tree.structure({"a": [1, (2,)], "b": None})) == "TreeDef({'a': [*, (*,)], 'b': *})"
    assert pickle.loads(pickle.dumps(d1)) == d1


# -- map -----------------------------------------------------------------------------------------

def test_map_one_tree():
    t = nested()
    out = tree.map(lambda x: None if x is None else np.asarray(x) * 2, t)
    assert tree.structure(out) == tree.structure(t)
    np.testing.assert_array_equal(out["layers"][0]["w"], 2 * np.ones((2, 3)))
    assert out["layers"][1]["b"] is None and out["scale"] == 1.0 and type(out["pair"]) is tuple


def test_map_two_trees():
    w = {"a": [np.ones(2), 2.0], "b": (3.0, None)}
    g = {"b": (1.0, None), "a": [np.ones(2), 0.5]}  # same keys, another order: fine
    out = tree.map(lambda x, y: None if y is None else x - y, w, g)
    assert list(out) == ["a", "b"] and out["b"] == (2.0, None) and out["a"][1] == 1.5
    np.testing.assert_array_equal(out["a"][0], np.zeros(2))
    calls = []
    tree.map(lambda *xs: calls.append(xs), [1, 2], [3, 4], [5, 6])
    assert calls == [(1, 3, 5), (2, 4, 6)]


def test_map_subtree_at_a_leaf_of_the_first_tree():
    got = tree.map(lambda g, w: (g, w), [None, 1.0], [{"x": 1}, 2.0])
    assert got == [(None, {"x": 1}), (1.0, 2.0)]


@pytest.mark.parametrize("other,msg", [
    ({"a": [1], "b": 2}, r"differ at \['a'\]: expected a list of length 2, got length 1"),
    ({"a": [1, (2,)], "b": 2}, r"differ at \['a'\]\[1\]: expected a list, got a tuple"),
    ({"a": [1, [2]], "c": 2}, r"differ at the root: expected a dict with keys \['a', 'b'\]"),
    ([1, 2], r"differ at the root: expected a dict, got a list"),
])
def test_map_mismatch_names_the_path(other, msg):
    calls = []
    with pytest.raises(ValueError, match=msg):
        tree.map(lambda x, y: calls.append(x), {"a": [1, [2]], "b": 2}, other)
    assert calls == []  # fn is never called when the structures differ


# -- paths / get / replace ---------------------------------------------------------------------------

def test_paths_get_replace():
    t = nested()
    ps = tree.paths(t)
    assert [p for p, _ in ps] == [("layers", 0, "w"), ("layers", 0, "b"), ("layers", 1, "w"),
                                  ("layers", 1, "b"), ("scale",), ("pair", 0), ("pair", 1, 0),
                                  ("none",)]
    for p, leaf in ps:
        assert tree.get(t, p) is leaf
    assert tree.get(t, ("layers", 1)) is t["layers"][1] and tree.get(t, ()) is t
    pairs, td = tree.flatten_with_paths(t)
    assert pairs == ps or [p for p, _ in pairs] == [p for p, _ in ps]
    assert td == tree.structure(t)
    r = tree.replace(t, ("pair", 1, 0), "new")
    assert r["pair"] == (1.5, ["new"]) and type(r["pair"]) is tuple
    assert t["pair"][1][0] == np.float32(2.0)  # the original is untouched
    assert r["layers"] is t["layers"]           # what is off the path is shared
    assert tree.replace(t, (), 1) == 1
    with pytest.raises(KeyError):
        tree.get(t, ("nope",))
    with pytest.raises(IndexError):
        tree.get(t, ("layers", 5))
    with pytest.raises(KeyError, match="goes through a float leaf"):
        tree.get(t, ("scale", 0))


# -- registration ----------------------------------------------------------------------------------

class Box:
    """A user class holding two children and a static tag."""

    def __init__(self, tag, a, b):
        self.tag, self.a, self.b = tag, a, b


tree.register(Box, lambda x: ((x.a, x.b), x.tag), lambda tag, ch: Box(tag, *ch),
              keys_fn=lambda x: ("a", "b"))


@tree.register_namedtuple
class Layer(NamedTuple):
    w: object
    b: object


@tree.register_dataclass
@dataclasses.dataclass
class Dense:
    w: object
    b: object
    act: str = "relu"


tree.register_dataclass(dataclasses.make_dataclass("Static", ["x", "name"]), meta_fields=["name"])


def test_registered_class():
    t = [Box("t", 1.0, {"k": np.zeros(2)}), 3]
    leaves, td = tree.flatten(t)
    assert leaves[0] == 1.0 and leaves[2] == 3
    back = tree.unflatten(td, [10, 20, 30])
    assert type(back[0]) is Box and back[0].tag == "t" and back[0].a == 10 and back[0].b == {"k": 20}
    assert td == tree.structure([Box("t", 0, {"k": 0}), 0])
    assert td != tree.structure([Box("u", 0, {"k": 0}), 0])  # aux data is part of the structure
    assert [p for p, _ in tree.paths(t)] == [(0, "a"), (0, "b", "k"), (1,)]
    assert tree.get(t, (0, "b", "k")) is leaves[1]
    r = tree.replace(t, (0, "a"), 5)
    assert type(r[0]) is Box and r[0].a == 5 and r[0].b is t[0].b and t[0].a == 1.0
    assert tree.map(lambda x, y: x + y, t[0], Box("t", 1, {"k": 2})).a == 2.0
    with pytest.raises(ValueError, match="differ at \\['b'\\]"):
        tree.map(lambda x, y: x, t[0], Box("t", 1, [2]))
    with pytest.raises(ValueError, match="Box nodes differ"):
        tree.map(lambda x, y: x, t[0], Box("other", 1, {"k": 2}))
    with pytest.raises(ValueError, match="already"):
        tree.register(Box, lambda x: ((), None), lambda aux, ch: Box(None, None, None))
    with pytest.raises(ValueError, match="already"):
        tree.register(dict, lambda x: ((), None), lambda aux, ch: {})


def test_namedtuple_is_rebuilt_as_its_class():
    t = {"l": Layer(np.ones(2), None)}
    leaves, td = tree.flatten(t)
    assert leaves[1] is None and len(leaves) == 2
    back = tree.unflatten(td, [1, 2])
    assert type(back["l"]) is Layer and back["l"] == Layer(1, 2)
    assert td != tree.structure({"l": (1, 2)})
    assert [p for p, _ in tree.paths(t)] == [("l", "w"), ("l", "b")]
    assert type(tree.map(lambda x: x, t)["l"]) is Layer
    assert type(tree.replace(t, ("l", "b"), 0)["l"]) is Layer
    with pytest.raises(TypeError):
        tree.register_namedtuple(tuple)


def test_dataclass():
    d = Dense(np.ones(2), 0.5, act="tanh")
    leaves, td = tree.flatten(d)
    assert len(leaves) == 3 and leaves[2] == "tanh"  # act is a child unless declared meta
    back = tree.unflatten(td, [1, 2, "x"])
    assert back == Dense(1, 2, "x")
    assert [p for p, _ in tree.paths(d)] == [("w",), ("b",), ("act",)]
    Static = next(c for c in tree._REGISTRY if c.__name__ == "Static")
    s = Static(x=np.zeros(1), name="n")
    assert len(tree.leaves(s)) == 1
    assert tree.structure(s) != tree.structure(Static(x=0, name="m"))
    assert tree.map(lambda x: 1, s) == Static(x=1, name="n")
    with pytest.raises(TypeError):
        tree.register_dataclass(Box)
    with pytest.raises(ValueError, match="must split"):
        tree.register_dataclass(dataclasses.make_dataclass("D2", ["a"]), data_fields=["b"])


# -- random structures -----------------------------------------------------------------------------

_leaf = st.one_of(st.none(), st.floats(allow_nan=True), st.integers(), st.text(max_size=3),
                  st.builds(np.zeros, st.integers(0, 3)), st.just(np.float32(1.5)))
_key = st.one_of(st.text(max_size=4), st.integers(-3, 30))
_trees = st.recursive(
    _leaf,
    lambda kids: st.one_of(st.lists(kids, max_size=4), st.lists(kids, max_size=4).map(tuple),
                           st.dictionaries(_key, kids, max_size=4),
                           st.builds(Layer, kids, kids)),
    max_leaves=25)


@settings(max_examples=300, deadline=None)
@given(_trees)
def test_random_round_trip(t):
    leaves, td = tree.flatten(t)
    assert td.num_leaves == len(leaves)
    assert all(x is y for x, y in zip(tree.leaves(t), leaves)) and len(tree.leaves(t)) == len(leaves)
    back = tree.unflatten(td, leaves)
    assert _same_reg(back, t)
    assert tree.structure(back) == td and hash(tree.structure(back)) == hash(td)
    assert _same_reg(tree.map(lambda x: x, t), t)
    assert _same_reg(tree.map(lambda x, y: x, t, t), t)
    ps = tree.paths(t)
    assert len(ps) == len(leaves)
    for (p, leaf), x in zip(ps, leaves):
        assert leaf is x and tree.get(t, p) is x
    if ps:
        p, _ = ps[-1]
        marker = object()
        r = tree.replace(t, p, marker)
        assert tree.get(r, p) is marker and tree.structure(r) == td
    # new leaves in the same structure: each position gets its own leaf
    ids = tree.unflatten(td, range(len(leaves)))
    assert tree.leaves(ids) == list(range(len(leaves)))


def _same_reg(a, b) -> bool:
    if type(a) is not type(b):
        return False
    if type(a) in (list, tuple, Layer):
        return len(a) == len(b) and all(_same_reg(x, y) for x, y in zip(a, b))
    if type(a) is dict:
        return list(a) == list(b) and all(_same_reg(a[k], b[k]) for k in a)
    return a is b
