"""Python ints of the arguments that only select (knetc.compiler.selectors): one cached entry
serves every value, and an int that steers the code (a loop count, a branch, a shape, a dict key,
a value written into the result) is guarded and then keyed, so no call ever runs code made for
another value. Every gradient is checked against central finite differences in float64, on
calls with values other than the first trace's."""
import dataclasses
from typing import NamedTuple

import numpy as np
import pytest

import knetc
from knetc import settings
from knetc.gradcheck import numeric_grad

RNG = np.random.default_rng(0)
E = RNG.standard_normal((9, 4))
W = RNG.standard_normal((4, 3))


def agrees(g, f, *args, argnum=0):
    """``g(*args)`` (a knetc.grad of ``f``) equals finite differences of ``f``."""
    got = g(*args)
    want = numeric_grad(f, *args, argnum=argnum)
    for a, b in zip(knetc.tree.leaves(got), knetc.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)


def embed_loss(w, ids, label):
    x = np.stack([w["E"][i] for i in ids])
    return np.sum(np.tanh(x @ w["W"])[:, label]) + x[0, 0] * w["E"][ids[-1], 1]


def test_ints_that_only_select_share_one_entry():
    w = {"E": E.copy(), "W": W.copy()}
    g = knetc.grad(embed_loss)
    calls = [([3, 5, 3], 1), ([1, 2, 7], 2), ([4, 4, 4], 0), ([8, 0, 6], 1), ([-1, 2, 0], 2)]
    for ids, label in calls:
        agrees(g, embed_loss, w, ids, label)
    info = knetc.cache_info(g)
    assert info.entries == 1 and info.misses == 1 and info.hits == len(calls) - 1, info
    src = g.source(w, [1, 2, 3], 0)
    assert "ids[0]" in src and "label" in src and "[:, label]" in src


def test_select_ints_off_keys_every_value():
    def make():
        def f(w, ids, label):
            return embed_loss(w, ids, label)
        return f
    with settings.override(select_ints=False):
        f = make()
        g = knetc.grad(f)
        for ids, label in [([3, 5, 3], 1), ([1, 2, 7], 2)]:
            agrees(g, f, {"E": E.copy(), "W": W.copy()}, ids, label)
    assert knetc.cache_info(g).hits == 0


def loop_loss(w, n, k, flag):
    s = 0.0
    for t in range(n):                 # a loop count steers
        s = s + np.sum(np.tanh(w[k] * t))
    if flag > 0:                       # so does a branch
        s = s * 2
    return s + w[k + 1, 0]             # and arithmetic on an int


def test_ints_that_steer_are_guarded_then_keyed():
    w = RNG.standard_normal((6, 3))
    g = knetc.grad(loop_loss)
    calls = [(2, 1, 0), (3, 1, 0), (2, 2, 1), (2, 1, 1), (3, 4, 0), (3, 4, 0), (2, 1, 0)]
    for args in calls:
        agrees(g, loop_loss, w, *args)
    info = knetc.cache_info(g)
    assert info.hits == 1, info          # (2, 1, 0) again (the second (3, 4, 0) compiled)


def python_uses(w, i, j, names, table):
    s = np.sum(w[i] * table[j])            # a list indexed by an int: j steers, i selects
    s = s + w[names[j], 1]                 # names[j] is a plain int from the caller's list
    key = f"row{j}"
    bonus = {"row0": 1.0, "row1": 2.0, "row2": 3.0}[key]   # a string made from an int
    if isinstance(i, int) and type(j) is int:
        s = s * bonus
    return s + np.sum(np.zeros(i + 1)) + np.sum(w[:j + 1])   # a shape and a slice bound


def test_python_uses_of_an_int_steer():
    w = RNG.standard_normal((5, 3))
    table = [1.0, -2.0, 0.5]
    g = knetc.grad(python_uses)
    for i, j, names in [(0, 1, [2, 3, 4]), (1, 2, [0, 1, 3]), (0, 0, [4, 4, 4]),
                        (3, 1, [1, 0, 2]), (0, 1, [2, 3, 4])]:
        agrees(g, python_uses, w, i, j, names, table)


def test_isinstance_dispatch_on_mixed_items():
    def embed(w, word):
        if isinstance(word, int):
            return w["E"][word]
        return np.mean(np.stack([w["C"][c] for c in word]), axis=0)

    def f(w, words):
        return np.sum(np.tanh(np.stack([embed(w, x) for x in words]) @ w["W"]))
    w = {"E": E.copy(), "C": RNG.standard_normal((6, 4)), "W": W.copy()}
    g = knetc.grad(f)
    for words in [[1, (2, 3), 4], [5, (0, 0), 8], [2, (1, 5), 2]]:
        agrees(g, f, w, words)
    assert knetc.cache_info(g).hits == 2


def test_an_int_in_aux_and_stored_into_the_callers_list_is_this_calls():
    def f(w, i, out):
        out[0] = i                       # stored into the caller's list
        return np.sum(w[i] ** 2), i      # returned beside the loss
    g = knetc.grad(f, has_aux=True)
    w = RNG.standard_normal((4, 2))
    for i in (0, 3, 1):
        out = [None]
        grad, aux = g(w, i, out)
        assert aux == i and out[0] == i
        want = np.zeros_like(w)
        want[i] = 2 * w[i]
        np.testing.assert_allclose(grad, want)


class Example(NamedTuple):
    x: np.ndarray
    label: int


@dataclasses.dataclass
class Tagged:
    word: int
    tag: int


def test_int_fields_of_pytrees_select():
    def f(w, ex, t):
        return -knetc.logp(ex.x @ w["W"])[ex.label] + np.sum(w["E"][t.word] * t.tag)
    w = {"E": E.copy(), "W": W.copy()}
    g = knetc.grad(f)
    for label, word, tag in [(0, 3, 2), (2, 5, 2), (1, 3, 1)]:
        agrees(g, f, w, Example(RNG.standard_normal(4), label), Tagged(word, tag))


def encode(w, tree):
    if len(tree) == 2:
        h = np.tanh(w["E"][tree[1]])
    else:
        h = np.tanh((encode(w, tree[1]) + encode(w, tree[2])) @ w["U"])
    return h


def tree_loss(w, tree):
    return -knetc.logp(encode(w, tree) @ w["S"])[tree[0]]


def test_trees_of_one_shape_share_an_entry():
    w = {"E": E.copy(), "U": RNG.standard_normal((4, 4)), "S": W.copy()}
    g = knetc.grad(tree_loss)
    trees = [(1, (0, 3), (2, (1, 5), (0, 7))), (2, (1, 8), (0, (2, 2), (1, 0))),
             (0, (2, 4), (1, (0, 4), (2, 4)))]
    for t in trees:
        agrees(g, tree_loss, w, t)
    assert knetc.cache_info(g).entries == 1


def test_an_int_that_steers_only_on_another_path():
    def f(w, i, double):
        k = i * 2 if double else i       # i steers only when double is True
        return np.sum(w[k] ** 3)
    w = RNG.standard_normal((8, 2))
    g = knetc.grad(f)
    for i, double in [(1, False), (2, False), (1, True), (3, True), (3, False), (0, False)]:
        agrees(g, f, w, i, double)


def test_ints_inside_the_differentiated_argument():
    def f(p, j):
        return np.sum(p["W"][p["row"]] * p["scale"]) + p["W"][j, 0]
    g = knetc.grad(f)
    for row, j in [(0, 1), (2, 1), (1, 0)]:
        p = {"W": RNG.standard_normal((3, 2)), "row": row, "scale": 1.5}
        got = g(p, j)
        assert got["row"] is None or np.all(np.asarray(got["row"]) == 0)
        want = np.zeros((3, 2))
        want[row] += 1.5
        want[j, 0] += 1
        np.testing.assert_allclose(got["W"], want)


def test_a_grad_made_inside_sees_the_outer_int():
    def f(x, n):
        def inner(v):
            return np.sum(np.sin(v) ** n)
        return np.sum(knetc.grad(inner)(x) ** 2)
    g = knetc.grad(f)
    x = RNG.standard_normal(3)
    for n in (2, 3, 2):
        agrees(g, f, x, n)


def test_an_int_where_a_float_was_is_another_key():
    def f(w, s):
        return np.sum(w[1] * s) if isinstance(s, float) else np.sum(w[s])
    g = knetc.grad(f)
    w = RNG.standard_normal((3, 2))
    np.testing.assert_allclose(g(w, 2)[2], [1, 1])
    np.testing.assert_allclose(g(w, 2.0)[1], [2, 2])
    np.testing.assert_allclose(g(w, 0)[0], [1, 1])


@pytest.mark.parametrize("index", ["x[i]", "x[:, i]", "x[i, 1:]", "x[-i]"])
def test_index_forms(index):
    ns = {"np": np}
    exec(f"def f(x, i):\n    return np.sum(np.tanh({index}) ** 2)\n", ns)
    f = ns["f"]
    knetc.api.provide_source(f, f"def f(x, i):\n    return np.sum(np.tanh({index}) ** 2)\n")
    g = knetc.grad(f)
    x = RNG.standard_normal((4, 3))
    for i in (1, 2, 0, 3 if index != "x[:, i]" else 2):
        agrees(g, f, x, i)
