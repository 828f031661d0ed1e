"""The compiled-adjoint cache: reuse, recompilation, globals read at run time, threads."""
import sys
import threading

import numpy as np
import pytest

import knetc
from knetc import api


_LOG: list = []


@pytest.fixture(autouse=True)
def _compile_every_specialization():
    """These tests count compilations (tier 0, first runs uncompiled, is tested on its own below:
    those tests turn it back on with knetc.settings.override(tier0=True))."""
    with api.recording() as log:
        _LOG.append(log)
        yield
        _LOG.pop()


def compiles():
    return len(_LOG[-1])


def entries(g):
    return sum(len(v) for v in g._cache.values())


def _loss(w, x):
    return np.sum(np.tanh(w @ x) ** 2)


def _dloss(w, x):
    t = np.tanh(w @ x)
    return (2 * t * (1 - t * t)) @ x.T if x.ndim == 2 else np.outer(2 * t * (1 - t * t), x)


rng = np.random.default_rng(1)


def test_same_shapes_do_not_recompile():
    g = knetc.grad(_loss)
    w, x = rng.standard_normal((3, 4)), rng.standard_normal((4, 2))
    n = compiles()
    np.testing.assert_allclose(g(w, x), _dloss(w, x))
    assert compiles() == n + 1 and entries(g) == 1
    for _ in range(3):
        w2, x2 = rng.standard_normal((3, 4)), rng.standard_normal((4, 2))
        np.testing.assert_allclose(g(w2, x2), _dloss(w2, x2))   # new values, same code
    assert compiles() == n + 1 and entries(g) == 1


def test_shape_dtype_structure_changes_recompile():
    g = knetc.grad(_loss)
    w, x = rng.standard_normal((3, 4)), rng.standard_normal((4, 2))
    g(w, x)
    n = compiles()
    x5 = rng.standard_normal((4, 5))
    np.testing.assert_allclose(g(w, x5), _dloss(w, x5))               # shape
    assert compiles() == n + 1
    x1 = rng.standard_normal(4)
    np.testing.assert_allclose(g(w, x1), _dloss(w, x1))               # ndim
    assert compiles() == n + 2
    w32, x32 = w.astype(np.float32), x.astype(np.float32)
    g32 = g(w32, x32)                                                 # dtype
    assert compiles() == n + 3
    assert g32.dtype == np.float32
    np.testing.assert_allclose(g32, _dloss(w, x), rtol=1e-4, atol=1e-5)
    g(w, x), g(w, x5), g(w, x1), g(w32, x32)                          # all still cached
    assert compiles() == n + 3 and entries(g) == 4


def _struct_loss(p, x):
    s = 0
    for w in p:
        s = s + np.sum(w * x)
    return s


def test_structure_change_recompiles():
    g = knetc.grad(_struct_loss)
    x = rng.standard_normal(3)
    n = compiles()
    ws = [rng.standard_normal(3), rng.standard_normal(3)]
    assert [a.tolist() for a in g(ws, x)] == [x.tolist()] * 2
    out = g(ws + [rng.standard_normal(3)], x)                         # longer list
    assert len(out) == 3 and compiles() == n + 2
    out = g(tuple(ws), x)                                             # tuple instead of list
    assert type(out) is tuple and compiles() == n + 3
    out = g({"a": ws[0]} and [ws[0]], x)
    assert len(out) == 1 and compiles() == n + 4


def _power_loss(w, n):
    h = w
    for _ in range(n):
        h = np.sin(h)
    return np.sum(h)


def _power_grad(w, n):
    d, h = np.ones_like(w), w
    for _ in range(n):
        d, h = d * np.cos(h), np.sin(h)
    return d


def test_int_argument_value_recompiles():
    g = knetc.grad(_power_loss)
    w = rng.standard_normal(3)
    n = compiles()
    for k in (1, 3, 1, 3, 0):
        np.testing.assert_allclose(g(w, k), _power_grad(w, k))
    assert compiles() == n + 3 and entries(g) == 3


# -- globals ---------------------------------------------------------------------------

SCALE = np.array([1.0, 2.0, 3.0])
DEPTH = 2
FLOAT = 0.5


def _global_array_loss(w):
    return np.sum(w * SCALE) * FLOAT


def test_global_array_read_at_run_time():
    global SCALE, FLOAT
    old = SCALE, FLOAT
    try:
        g = knetc.grad(_global_array_loss)
        w = rng.standard_normal(3)
        np.testing.assert_allclose(g(w), SCALE * FLOAT)
        n = compiles()
        SCALE = np.array([-1.0, 5.0, 7.0])            # rebind the global
        np.testing.assert_allclose(g(w), SCALE * FLOAT)
        SCALE[0] = 10.0                               # change it in place
        np.testing.assert_allclose(g(w), [5.0, 2.5, 3.5])
        FLOAT = 2.0                                   # a Python float global
        np.testing.assert_allclose(g(w), [20.0, 10.0, 14.0])
        assert compiles() == n                        # read at run time, not recompiled
    finally:
        SCALE, FLOAT = old


PAIR = (np.array([1.0, 2.0, 3.0]), 3)


def _global_tuple_loss(w):
    return np.sum(w * PAIR[0]) * PAIR[1]


def test_global_tuple_of_arrays():
    global PAIR
    old = PAIR
    try:
        g = knetc.grad(_global_tuple_loss)
        w = rng.standard_normal(3)
        np.testing.assert_allclose(g(w), [3.0, 6.0, 9.0])
        PAIR[0][0] = 10.0                                  # in place
        np.testing.assert_allclose(g(w), [30.0, 6.0, 9.0])
        PAIR = (np.array([1.0, 1.0, 1.0]), 2)              # rebound, new int: guarded
        np.testing.assert_allclose(g(w), [2.0, 2.0, 2.0])
        PAIR = (np.array([5.0, 1.0, 1.0]), 2)              # rebound array: read at run time
        np.testing.assert_allclose(g(w), [10.0, 2.0, 2.0])
    finally:
        PAIR = old


def _global_int_loss(w):
    h = w
    for _ in range(DEPTH):
        h = np.sin(h)
    return np.sum(h)


def test_global_int_steering_a_loop_is_guarded():
    global DEPTH
    try:
        g = knetc.grad(_global_int_loss)
        w = rng.standard_normal(3)
        np.testing.assert_allclose(g(w), _power_grad(w, 2))
        n = compiles()
        DEPTH = 4
        np.testing.assert_allclose(g(w), _power_grad(w, 4))
        assert compiles() == n + 1
        DEPTH = 2
        np.testing.assert_allclose(g(w), _power_grad(w, 2))
        assert compiles() == n + 1                    # the first specialization is reused
    finally:
        DEPTH = 2


def _act(x):
    return np.sin(x)


def _global_function_loss(w):
    return np.sum(_act(w))


def test_rebound_global_function_is_used():
    global _act
    old = _act
    try:
        g = knetc.grad(_global_function_loss)
        w = rng.standard_normal(3)
        np.testing.assert_allclose(g(w), np.cos(w))

        def _act(x):                                  # noqa: F811 (rebinding is the point)
            return x ** 3
        np.testing.assert_allclose(g(w), 3 * w ** 2)
        _act = np.tanh
        np.testing.assert_allclose(g(w), 1 - np.tanh(w) ** 2)
        _act = old
        np.testing.assert_allclose(g(w), np.cos(w))
    finally:
        _act = old


def test_global_bound_to_a_numpy_function_is_guarded():
    global _act
    old = _act
    try:
        _act = np.tanh
        g = knetc.grad(_global_function_loss)
        w = rng.standard_normal(3)
        np.testing.assert_allclose(g(w), 1 - np.tanh(w) ** 2)
        _act = np.sin
        np.testing.assert_allclose(g(w), np.cos(w))
        _act = knetc.relu
        np.testing.assert_allclose(g(w), (w > 0) * 1.0)
    finally:
        _act = old


def _closure_loss_factory(c):
    def loss(w):
        return np.sum(w * c)
    return loss


def test_closures_with_different_cells():
    w = rng.standard_normal(3)
    c1, c2 = rng.standard_normal(3), rng.standard_normal(3)
    np.testing.assert_allclose(knetc.grad(_closure_loss_factory(c1))(w), c1)
    np.testing.assert_allclose(knetc.grad(_closure_loss_factory(c2))(w), c2)


# -- attributes of objects from outside --------------------------------------------------

class _Config:
    def __init__(self, scale, n, act):
        self.scale, self.n, self.act = scale, n, act


class _Dense:
    """A Knet-style callable layer holding constants (not differentiated)."""

    def __init__(self, mask, config):
        self.mask, self.config = mask, config

    def __call__(self, w, x):
        h = (w * self.mask) @ x
        return np.tanh(h) if self.config.act == "tanh" else h


def _attr_loss(w, cfg):
    s = 0
    for _ in range(cfg.n):
        s = s + np.sum(w * cfg.scale)
    return s


def test_attributes_of_an_argument_object_are_never_stale():
    g = knetc.grad(_attr_loss)
    w = rng.standard_normal(2)
    cfg = _Config(np.array([1.0, 2.0]), 1, "id")
    np.testing.assert_allclose(g(w, cfg), [1.0, 2.0])
    n = compiles()
    cfg.scale = np.array([5.0, 5.0])          # an array attribute: read at run time
    np.testing.assert_allclose(g(w, cfg), [5.0, 5.0])
    cfg.scale[1] = 7.0
    np.testing.assert_allclose(g(w, cfg), [5.0, 7.0])
    assert compiles() == n
    cfg.n = 2                                 # an int attribute steering a loop: guarded
    np.testing.assert_allclose(g(w, cfg), [10.0, 14.0])
    assert compiles() == n + 1


def _layer_loss(w, layer, x):
    return np.sum(layer(w, x))


_LAYER = _Dense(np.ones((2, 3)), _Config(None, 0, "tanh"))


def _global_layer_loss(w, x):
    return np.sum(_LAYER(w, x))


def test_callable_layer_objects():
    w, x = rng.standard_normal((2, 3)), rng.standard_normal(3)
    layer = _Dense(np.ones((2, 3)), _Config(None, 0, "tanh"))
    cases = ((knetc.grad(_layer_loss), (w, layer, x)), (knetc.grad(_global_layer_loss), (w, x)))
    for g, args in cases:
        obj = layer if len(args) == 3 else _LAYER
        obj.mask, obj.config.act = np.ones((2, 3)), "tanh"
        t = np.tanh(w @ x)
        np.testing.assert_allclose(g(*args), np.outer(1 - t * t, x))
        obj.config.act = "id"                 # a nested object's attribute: guarded
        np.testing.assert_allclose(g(*args), np.outer(np.ones(2), x))
        obj.mask = np.array([[1.0, 0, 1], [0, 1, 0]])      # read at run time
        np.testing.assert_allclose(g(*args), np.outer(np.ones(2), x) * obj.mask)
        obj.config = _Config(None, 0, "tanh")               # a new nested object
        t = np.tanh((w * obj.mask) @ x)
        np.testing.assert_allclose(g(*args), np.outer(1 - t * t, x) * obj.mask)


# -- threads ---------------------------------------------------------------------------

def _branchy(w, x):
    if np.sum(x) > 0:
        return np.sum(np.tanh(w @ x) ** 2)
    return np.sum(np.sin(w @ x))


def _branchy_grad(w, x):
    if np.sum(x) > 0:
        t = np.tanh(w @ x)
        return np.outer(2 * t * (1 - t * t), x)
    return np.outer(np.cos(w @ x), x)


@pytest.mark.parametrize("fresh", [True, False])
def test_threads_share_one_grad(fresh):
    g = knetc.grad(_branchy)
    if not fresh:
        g(rng.standard_normal((3, 4)), np.ones(4))       # compiled before the threads start
    cases = []
    for i in range(40):
        x = rng.standard_normal(4) + (1.0 if i % 2 else -1.0)
        cases.append((rng.standard_normal((3, 4)), x, [4, 5][i % 2]))
    errors = []
    barrier = threading.Barrier(4)

    def work(k):
        try:
            barrier.wait()
            for j in range(k, len(cases), 4):
                w, x, m = cases[j]
                x = x if m == 4 else np.concatenate([x, [0.5]])
                w = w if m == 4 else np.concatenate([w, np.ones((3, 1))], axis=1)
                np.testing.assert_allclose(g(w, x), _branchy_grad(w, x), rtol=1e-10)
        except Exception as e:     # noqa: BLE001 (reported below)
            errors.append(e)

    limit = sys.getrecursionlimit()
    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert sys.getrecursionlimit() == limit     # raised while specializing, then restored
    assert entries(g) <= 8      # 2 shapes x 2 branches, perhaps compiled twice by racing threads


def _masked(x):
    return np.sum(np.sin(x[x > 0]))


def test_boolean_mask_shape_is_guarded():
    g = knetc.grad(_masked)
    for x in (np.array([1.0, -1.0, 2.0]), np.array([1.0, 1.0, 2.0]), np.array([-1.0, -1.0, 2.0])):
        np.testing.assert_allclose(g(x), np.where(x > 0, np.cos(x), 0.0))


# -- tier 0: a new structure every call runs uncompiled first ------------------------------

def _encode(w, tree):
    if isinstance(tree, tuple):
        return np.tanh(np.concatenate([_encode(w, tree[0]), _encode(w, tree[1])]) @ w["W"] + w["b"])
    return w["E"][tree]


def _tree_loss(w, tree, label):
    return -knetc.logp(_encode(w, tree) @ w["U"])[label]


def _tree_params():
    r = np.random.default_rng(5)
    return {"E": r.standard_normal((7, 3)), "W": r.standard_normal((6, 3)) * 0.5,
            "b": r.standard_normal(3), "U": r.standard_normal((3, 4))}


TREES = [((0, 1), 2), (0, (1, (2, 3))), ((4, 5), (6, 0)), (((1, 1), 2), 3), (2, (5, 6)),
         ((3, (4, 5)), 6), (((0, 1), (2, 3)), 4), (1, ((2, 6), 4))]


@pytest.fixture
def tier0():
    # units (helpers as one operation, whose backward compiles once: tests/test_units.py) off:
    # these tests count the differentiated function's own compilations
    with knetc.settings.override(tier0=True, units=False):
        yield


def test_new_structures_run_at_tier_0_and_match_finite_differences(tier0):
    def loss(w, tree, label):      # a function of its own: a cache that starts empty
        return _tree_loss(w, tree, label)
    w = _tree_params()
    g = knetc.grad(loss)
    n = compiles()
    for i, tree in enumerate(TREES):
        got = g(w, tree, i % 4)
        want = knetc.numeric_grad(loss, w, tree, i % 4)
        for k in w:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-6, atol=1e-8)
    info = knetc.cache_info(loss)
    assert info.misses == len(TREES) and info.hits == 0
    assert info.tier0 == len(TREES) - api.TIER0_AFTER         # the first ones were compiled
    assert compiles() == n + api.TIER0_AFTER and info.entries == api.TIER0_AFTER


def test_a_big_first_trace_runs_at_tier_0(tier0, monkeypatch):
    """A first call whose trace recorded BIG_TRACE operations or more runs at tier 0 even
    before TIER0_AFTER misses (compiling it would cost as much again); when it comes back it is
    compiled, and both gradients match finite differences."""
    def loss(w, tree, label):
        return _tree_loss(w, tree, label)
    w = _tree_params()
    tree = TREES[6]
    g = knetc.grad(loss)
    want = knetc.numeric_grad(loss, w, tree, 2)
    monkeypatch.setattr(api, "BIG_TRACE", 10 ** 6)
    g(w, TREES[0], 0)                                   # small: compiled
    assert knetc.cache_info(loss).tier0 == 0
    monkeypatch.setattr(api, "BIG_TRACE", 10)           # (this tree records about 30)
    for _ in range(2):
        got = g(w, tree, 2)
        for k in w:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-6, atol=1e-8)
    info = knetc.cache_info(loss)
    assert info.tier0 == 1 and info.entries == 2 and info.misses == 3


def test_a_first_trace_that_computed_many_bytes_runs_at_tier_0(tier0, monkeypatch):
    """A first call whose forward pass computed HEAVY_TRACE bytes or more (counted, not timed)
    runs at tier 0: compiled, its forward would run twice. Back, it is compiled, and its
    gradient is still the trace's. Below the threshold the first call compiles."""
    def loss(w, x):
        return np.sum(np.tanh(x @ w) ** 2)
    rng = np.random.default_rng(4)
    w, x = rng.standard_normal((8, 8)), rng.standard_normal((64, 8))
    want = knetc.numeric_grad(loss, w, x)
    g = knetc.grad(loss)
    monkeypatch.setattr(api, "HEAVY_TRACE", 8 * 64 * 8)     # one (64, 8) float64 result
    for calls in (1, 2, 3):
        np.testing.assert_allclose(g(w, x), want, rtol=1e-6, atol=1e-8)
        info = knetc.cache_info(loss)
        assert (info.tier0, info.entries) == ((1, 0), (1, 1), (1, 1))[calls - 1]
    light = knetc.grad(lambda w, x: loss(w, x))
    monkeypatch.setattr(api, "HEAVY_TRACE", 1 << 30)
    np.testing.assert_allclose(light(w, x), want, rtol=1e-6, atol=1e-8)
    assert knetc.cache_info(light).tier0 == 0 and knetc.cache_info(light).entries == 1


def test_a_tier_0_key_that_comes_back_is_compiled(tier0):
    def loss(w, tree, label):
        return _tree_loss(w, tree, label)
    w = _tree_params()
    g = knetc.gradloss(loss)
    for tree in TREES:
        g(w, tree, 1)
    before = knetc.cache_info(loss, with_loss=True)
    tree = TREES[-1]                                  # ran at tier 0
    (d0, l0) = g(w, tree, 1)                          # comes back: compiled now
    (d1, l1) = g(w, tree, 1)                          # and reused
    after = knetc.cache_info(loss, with_loss=True)
    assert after.entries == before.entries + 1 and after.tier0 == before.tier0
    assert after.hits == before.hits + 1
    with knetc.settings.override(tier0=False):
        want, lw = knetc.gradloss(_tree_loss)(w, tree, 1)
    for k in w:
        np.testing.assert_allclose(d0[k], want[k], rtol=1e-12)
        np.testing.assert_allclose(d1[k], want[k], rtol=1e-12)
    assert l0 == l1 == pytest.approx(lw, rel=1e-12)


def test_a_key_that_comes_back_from_beyond_the_cache_stays_at_tier_0(tier0, monkeypatch):
    """Epochs over more trees than the cache holds: a tree comes back after more misses than
    MAX_ENTRIES, and its compiled entry would be evicted before its next return, so it runs at
    tier 0 again (compiling it every other epoch cost more than tier 0 every epoch). Over
    fewer trees, the second epoch compiles them and the third hits."""
    monkeypatch.setattr(api, "MAX_ENTRIES", 4)

    def far(w, tree, label):
        return _tree_loss(w, tree, label)

    def near(w, tree, label):
        return _tree_loss(w, tree, label)
    w = _tree_params()
    trees = TREES[1:]                   # seven structures: more than 4
    g = knetc.grad(far)
    for epoch in range(3):
        for t in trees:
            got = g(w, t, 1)
    info = knetc.cache_info(far)
    # only the very first call compiled (TIER0_AFTER), and hits in the epochs after
    assert info.entries == api.TIER0_AFTER and info.hits == 2 * api.TIER0_AFTER
    assert info.tier0 == info.misses - api.TIER0_AFTER == 3 * len(trees) - 3 * api.TIER0_AFTER
    want = knetc.numeric_grad(far, w, trees[-1], 1)
    for k in w:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-6, atol=1e-8)
    g = knetc.grad(near)
    for epoch in range(3):
        for t in trees[:3]:
            g(w, t, 1)
    info = knetc.cache_info(near)
    # the first compiled on its first call; the other two at tier 0, compiled in epoch two
    assert info.entries == 3 and info.tier0 == 2 and info.hits == 2 + 2


def _tree_with_state(w, tree, state):
    h = _encode(w, tree)
    state[0] = knetc.getval(h)          # a store into the caller's list, as charlm's loss does
    return np.sum(h * h)


def test_tier_0_performs_the_stores_into_the_callers_data(tier0):
    w = _tree_params()
    g = knetc.grad(_tree_with_state)
    for tree in TREES:
        state = [None]
        dw = g(w, tree, state)
        np.testing.assert_allclose(state[0], _encode(w, tree), rtol=1e-12)
        want = knetc.numeric_grad(lambda w: np.sum(_encode(w, tree) ** 2), w)
        np.testing.assert_allclose(dw["W"], want["W"], rtol=1e-6, atol=1e-8)
    assert knetc.cache_info(_tree_with_state).tier0 > 0


def _tree_dropout(w, tree):
    return np.sum(knetc.dropout(_encode(w, tree), 0.5) ** 2)


def test_random_primitives_are_always_compiled(tier0):
    # The generated forward draws its own mask: the traced values are not this call's.
    w = _tree_params()
    g = knetc.grad(_tree_dropout)
    for tree in TREES:
        dw = g(w, tree)
        assert np.all(np.isfinite(dw["W"]))
    info = knetc.cache_info(_tree_dropout)
    assert info.tier0 == 0 and info.entries == len(TREES)


def _rnn_pool_loss(w, x):
    """An LSTM over a sequence of its own length, max pooling of its outputs: two pure
    primitives whose backward reads what their forward saved (the reserve, the argmax)."""
    y, _, _ = knetc.rnnforw(w["r"], w["w"], x)
    img = y.reshape(1, 1, y.shape[0], -1)
    return np.sum(knetc.pool(img, window=(1, 2)) ** 2)


def test_saved_forwards_run_at_tier_0(tier0):
    """rnnforw and max pooling keep their reserve/argmax from the trace: a new length every call
    runs at tier 0 (no compile, no second forward) with the compiled code's gradient."""
    r, wr = knetc.rnninit(3, 4, rnnType="lstm", dtype=np.float64, seed=1)
    g = knetc.grad(_rnn_pool_loss)
    for T in range(2, 9):
        x = rng.standard_normal((T, 2, 3))
        got = g({"r": r, "w": wr}, x)["w"]
        with knetc.settings.override(tier0=False):
            want = knetc.grad(lambda w, x: _rnn_pool_loss(w, x))({"r": r, "w": wr}, x)["w"]
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    assert knetc.cache_info(_rnn_pool_loss).tier0 == 7 - api.TIER0_AFTER


def test_a_function_whose_calls_hit_the_cache_keeps_compiling(tier0):
    def loss(w, x):
        return np.sum(np.tanh(w * x))
    g = knetc.grad(loss)
    for n in range(1, 12):      # a new length now and then, each reused many times
        w, x = rng.standard_normal(n), rng.standard_normal(n)
        for _ in range(3):
            np.testing.assert_allclose(g(w, x), x * (1 - np.tanh(w * x) ** 2))
    info = knetc.cache_info(loss)
    assert info == (22, 11, 11, 0)


def test_cache_info_of_grad_objects_and_differentiable_functions():
    @knetc.differentiable
    def f(w):
        return np.sum(w * w)
    f.grad(np.ones(2)), f.grad(np.ones(2)), f.gradloss(np.ones(3))
    assert knetc.cache_info(f) == (1, 2, 2, 0)
    g = knetc.grad(_loss)
    assert knetc.cache_info(g) == knetc.cache_info(_loss)


def test_cache_info_by_function_of_argnums_tuples_and_has_aux():
    def f(a, b):
        return np.sum(a * b), {"n": a.shape[0]}
    g = knetc.grad(f, argnums=(0, 1), has_aux=True)
    g(np.ones(2), np.ones(2)), g(np.ones(2), np.ones(2)), g(np.ones(3), np.ones(3))
    assert knetc.cache_info(f, argnum=(0, 1), has_aux=True) == knetc.cache_info(g)
    assert knetc.cache_info(f, argnum=(0, 1), has_aux=True)[:3] == (1, 2, 2)
    assert knetc.cache_info(f, argnum=(0, 1)) == (0, 0, 0, 0)       # another cache


# -- the generated key function agrees with spec_of ------------------------------------------

from hypothesis import given, settings, strategies as st   # noqa: E402

from knetc.compiler.cache import key_function, spec_of              # noqa: E402

_leaf = st.one_of(
    st.builds(lambda s, d: np.zeros(s, d), st.lists(st.integers(1, 3), max_size=2).map(tuple),
              st.sampled_from([np.float32, np.float64, np.int64])),
    st.floats(-2, 2), st.integers(-2, 2), st.booleans(), st.sampled_from(["a", "b"]), st.none())
_arg = st.one_of(_leaf, st.lists(_leaf, max_size=3), st.lists(_leaf, max_size=3).map(tuple),
                 st.dictionaries(st.sampled_from(["x", "y", "z"]), _leaf, max_size=3))
_args = st.lists(_arg, min_size=0, max_size=3).map(tuple)


@settings(max_examples=300, deadline=None)
@given(_args, _args)
def test_key_function_agrees_with_spec_of(a, b):
    key = key_function(a)
    assert key is not None and key(a) is not None
    kb = key(b)
    if kb is None:      # another structure: the caller falls back to spec_of
        return
    assert (key(a) == kb) == (spec_of(a) == spec_of(b))
    assert kb != spec_of(b)          # flat keys never collide with nested ones


def test_key_function_declines_what_it_cannot_describe():
    assert key_function((object(),)) is None
    assert key_function(([np.ones(2)] * 100,)) is None
    assert key_function(([[np.ones(2)]],)) is None            # nested containers


def test_threads_with_new_trees_at_tier_0(tier0):
    def loss(w, tree, label):
        return _tree_loss(w, tree, label)
    w = _tree_params()
    want = {}
    with knetc.settings.override(tier0=False):
        for i, tree in enumerate(TREES):
            want[i] = knetc.grad(_tree_loss)(w, tree, i % 4)
    for tree in [(0, 0), (1, 1), (2, 2)]:    # three misses first: the threads' first miss is tier 0
        knetc.grad(loss)(w, tree, 0)
    errors, barrier = [], threading.Barrier(4)

    def work(k):
        try:
            barrier.wait()
            for _ in range(3):
                for i in range(k, len(TREES), 2):
                    got = knetc.grad(loss)(w, TREES[i], i % 4)
                    for key in w:
                        np.testing.assert_allclose(got[key], want[i][key], rtol=1e-12)
        except Exception as e:     # noqa: BLE001 (reported below)
            errors.append(e)
    threads = [threading.Thread(target=work, args=(k % 2,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert knetc.cache_info(loss).tier0 > 0


def test_many_shapes_keep_the_cache_and_linecache_bounded():
    """600 shapes: the cache keeps its bounded number of entries, and generated sources stay in
    linecache only while their functions live (no log keeps evicted entries alive)."""
    import gc
    import linecache

    def bounded_loss(w):
        return np.sum(w * w)
    g = knetc.grad(bounded_loss)
    for n in range(1, 601):
        w = np.ones(n)
        assert np.array_equal(g(w), 2 * w)
    _LOG[-1].clear()        # this module's recording fixture holds what it saw
    gc.collect()
    held = sum(len(v) for v in g._cache.values())
    assert held <= api.MAX_ENTRIES
    live = [f for f in linecache.cache if str(f).startswith("<knetc-")
            and str(f).endswith("-bounded_loss_grad>")]
    assert len(live) <= held + 1


def test_eviction_keeps_the_keys_in_use(monkeypatch):
    """Past MAX_ENTRIES keys the oldest is dropped, unless it was hit since the eviction last
    looked at it: code in use stays, keys seen once go."""
    monkeypatch.setattr(api, "MAX_ENTRIES", 4)

    def evicted_loss(w):
        return np.sum(w * w)
    g = knetc.grad(evicted_loss)
    hot = np.ones(1)
    g(hot)
    for n in range(2, 12):
        np.testing.assert_array_equal(g(hot), 2 * hot)      # a hit every call
        g(np.ones(n))
    info = knetc.cache_info(evicted_loss)
    assert info.entries <= 4 and info.misses == 11 and info.hits == 10, info
    keys = [k for k in g._cache]
    assert g._cache.key((hot,)) in keys


def _fast_path_loss(w, x):
    return np.sum(np.tanh(x @ w) ** 2)


def test_numpy_code_is_hit_whatever_the_gpu_switches_say(monkeypatch):
    """Code generated for NumPy arrays does not depend on the GPU-only switches (fuse,
    capture): a call hits it without reading them, and the same gradient comes back. Eval mode
    still selects its own specialization."""
    import knetc
    from knetc.runtime import prims
    rng = np.random.default_rng(0)
    w, x = rng.standard_normal((3, 2)), rng.standard_normal((4, 3))
    g = knetc.grad(_fast_path_loss)
    first = g(w, x)
    info = knetc.cache_info(g)
    monkeypatch.setenv("KNETC_FUSE", "0")
    monkeypatch.setenv("KNETC_CAPTURE", "1")
    np.testing.assert_array_equal(g(w, x), first)
    monkeypatch.delenv("KNETC_FUSE")
    monkeypatch.delenv("KNETC_CAPTURE")
    after = knetc.cache_info(g)     # (the defaults' cache: the entry that served the call)
    assert after.hits == info.hits + 1 and after.misses == info.misses
    with prims.training_mode(False):
        np.testing.assert_allclose(g(w, x), first)
    assert knetc.cache_info(g).hits == after.hits        # eval mode: the other cache
    np.testing.assert_allclose(first, knetc.numeric_grad(_fast_path_loss, w, x), rtol=1e-6)


def test_a_miss_pauses_the_garbage_collector_and_restores_it():
    """The collector is off while a miss specializes and runs (its many short-lived objects
    would start it over and over), on again after it (also after an error), left off when the
    user turned it off, and the trace's cycles are collected afterwards."""
    import gc
    import weakref
    seen = []

    def probed(x):
        seen.append(gc.isenabled())
        return np.tanh(x)

    @knetc.adjoint(probed)
    def _probed(y, x):
        d[x] = d[y] * (1 - y * y)  # noqa: F821

    def loss(x, n):
        return np.sum(probed(x) ** n)
    x = np.linspace(-1, 1, 5)
    g = knetc.grad(loss)
    want = knetc.numeric_grad(loss, x, 2)
    seen.clear()
    assert gc.isenabled()
    np.testing.assert_allclose(g(x, 2), want, rtol=1e-6)
    assert seen and not any(seen) and gc.isenabled()
    with pytest.raises(ValueError):
        g(np.ones((2, 2)), np.ones(3))          # a miss that fails while specializing
    assert gc.isenabled()
    gc.disable()
    try:
        g(x, 3)
        assert not gc.isenabled()
    finally:
        gc.enable()
    # nothing of a miss's trace outlives it once the collector ran
    traced = []
    real = knetc.compiler.pipeline.Tape.__init__

    def keep(self):
        real(self)
        traced.append(weakref.ref(self))
    try:
        knetc.compiler.pipeline.Tape.__init__ = keep
        g(x, 4)
    finally:
        knetc.compiler.pipeline.Tape.__init__ = real
    gc.collect()
    assert traced and all(r() is None for r in traced)
