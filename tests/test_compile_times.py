"""knetc.compile_times(): seconds per compiler stage inside a block, each stage's own time."""
import time

import numpy as np

import knetc
from knetc.compiler import timings


def _helper(x):
    return np.tanh(x) * x


def _loss(w, x):
    h = _helper(x @ w)
    return np.sum(h * h)


def _encode(w, tree):
    if isinstance(tree, int):
        return np.tanh(w[tree])
    return np.tanh(_encode(w, tree[0]) + _encode(w, tree[1]))


def _loss_tree(w, tree):
    return np.sum(_encode(w, tree))


def test_first_call_is_split_by_stage_and_a_hit_compiles_nothing():
    w, x = np.ones((3, 2)), np.ones((4, 3))
    g = knetc.grad(_loss)
    start = time.perf_counter()
    with knetc.compile_times() as t:
        g(w, x)
    wall = time.perf_counter() - start
    assert t.counts["specialize"] == 1 and t.counts["adjoint"] == 1
    assert t.counts["compile"] + t.counts["tier 0"] == 1
    assert t["specialize"] > 0 and t["adjoint"] > 0
    # each stage's own time: together no more than the block took
    assert 0 < t.total <= wall
    with knetc.compile_times() as t2:
        g(w, x)
    assert t2.total == 0 and not any(t2.counts.values())
    text = str(t)
    assert "specialize" in text and "total" in text


def test_inner_stages_are_not_counted_twice():
    start = time.perf_counter()
    with knetc.compile_times() as t:
        with timings.stage("tier 0"):
            time.sleep(0.02)
            with timings.stage("compile"):
                time.sleep(0.03)
    wall = time.perf_counter() - start
    assert t["compile"] >= 0.03 and t["tier 0"] >= 0.02
    # counted once: the outer stage's own time leaves out the inner one
    assert t["tier 0"] + t["compile"] <= wall
    assert t.counts["tier 0"] == t.counts["compile"] == 1


def test_nothing_is_collected_outside_a_block():
    with knetc.compile_times() as t:
        pass
    knetc.grad(_loss)(np.ones((2, 2)), np.ones((5, 2)))
    assert t.total == 0 and not any(t.counts.values())


def test_nested_blocks_both_collect():
    w = np.ones((6, 3))
    with knetc.compile_times() as outer:
        with knetc.compile_times() as inner:
            knetc.grad(_loss_tree)(w, ((0, 1), (2, (3, 4))))
    assert inner.counts["specialize"] >= 1
    assert outer.counts == inner.counts
    assert abs(outer.total - inner.total) < 1e-9
