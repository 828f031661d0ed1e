"""grad(f, sparse=True): embeddings' gradients as knetc.SparseRows, and the updates that take them.

Each gradient is checked three ways: its type (sparse exactly where the array is read only by
rows), its dense form against grad(f) without the option (the same additions in the same order:
equal), and against central finite differences in float64.
"""
import math
import types

import numpy as np
import pytest

import knetc
from knetc import api
from knetc.gradcheck import numeric_grad

rng = np.random.default_rng(7)
V, D = 13, 4


def table(dtype=np.float64):
    return rng.standard_normal((V, D)).astype(dtype)


def f_ids(E, ids):                       # one integer array, rows repeated
    return np.sum(np.tanh(E[ids]) ** 2)


def f_ids2d(E, ids):                     # a (T, B) batch of ids
    h = E[ids]
    return np.sum(h[:, :, 0] * h[:, :, 1]) + np.sum(h ** 2) / 3.0


def f_loop(E, words):                    # Python ints, a stack of rows (recorded as one gather)
    x = np.stack([E[i] for i in words])
    return np.sum(np.sin(x) @ np.arange(D, dtype=x.dtype))


def f_ints(E, words):                    # one row at a time, each used on its own
    total = 0.0
    for k, i in enumerate(words):
        total = total + (k + 1.0) * np.sum(E[i] ** 3)
    return total


def f_two(E, a, b):                      # two lookups of one table: two parts
    return np.sum(E[a] * 2.0) + np.sum(np.exp(E[b]))


def f_negative(E, ids):                  # negative ids count from the end
    return np.sum(E[ids] ** 2) + np.sum(E[-1] * E[2])


def f_dense_too(E, ids):                 # tied: read as a matrix too, so the gradient is dense
    h = E[ids]
    return np.sum(np.tanh(h @ E.T))


def f_dict(w, words):                    # a model's dict: only the table is sparse
    x = np.stack([w["E"][i] for i in words])
    return np.sum(np.tanh(x @ w["W"]) ** 2)


CASES = [
    (f_ids, lambda: (np.array([3, 1, 3, 7, 3]),), True),
    (f_ids2d, lambda: (rng.integers(0, V, (4, 3)),), True),
    (f_loop, lambda: ([5, 0, 5, 12, 2],), True),
    (f_ints, lambda: ([4, 4, 9],), True),
    (f_two, lambda: (np.array([1, 2]), np.array([2, 11, 2])), True),
    (f_negative, lambda: (np.array([-1, 0, -13, 5]),), True),
    (f_dense_too, lambda: (np.array([2, 6, 2]),), False),
]


def fresh(f):
    """A new function object of ``f``'s code: a cache of its own (caches are per function)."""
    return types.FunctionType(f.__code__, f.__globals__, f.__name__, f.__defaults__, f.__closure__)


def _fd_check(f, E, args, g):
    num = numeric_grad(lambda e: f(e, *args), E.copy())
    np.testing.assert_allclose(np.asarray(g), num, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("f, make, sparse", CASES, ids=[c[0].__name__ for c in CASES])
@pytest.mark.parametrize("tier", ["compiled", "tier0"])
def test_sparse_gradient_is_the_dense_one(f, make, sparse, tier, monkeypatch):
    if tier == "tier0":
        monkeypatch.setattr(api, "TIER0_AFTER", -1)
    f = fresh(f)
    E, args = table(), make()
    gs = knetc.grad(f, sparse=True)
    gd = knetc.grad(f)
    for _ in range(2):                   # the miss, then the cached entry
        a, b = gs(E, *args), gd(E, *args)
        assert type(a) is (knetc.SparseRows if sparse else np.ndarray)
        assert type(b) is np.ndarray
        assert a.shape == E.shape and a.dtype == E.dtype
        np.testing.assert_array_equal(np.asarray(a), b)
    _fd_check(f, E, args, a)
    if tier == "tier0":
        assert knetc.cache_info(f, sparse=True).tier0 >= 1


def test_only_the_table_of_a_dict_is_sparse():
    w = {"E": table(), "W": rng.standard_normal((D, 3))}
    words = [3, 3, 8, 0]
    g = knetc.grad(f_dict, sparse=True)(w, words)
    assert type(g["E"]) is knetc.SparseRows and type(g["W"]) is np.ndarray
    dense = knetc.grad(f_dict)(w, words)
    np.testing.assert_array_equal(np.asarray(g["E"]), dense["E"])
    np.testing.assert_array_equal(g["W"], dense["W"])


def test_float32_keeps_its_dtype():
    E = table(np.float32)
    g = knetc.grad(f_ids, sparse=True)(E, np.array([1, 1, 4]))
    assert g.dtype == np.float32 and np.asarray(g).dtype == np.float32
    np.testing.assert_array_equal(np.asarray(g), knetc.grad(f_ids)(E, np.array([1, 1, 4])))


def test_the_option_keys_its_own_cache():
    def f(E, ids):
        return np.sum(E[ids] ** 2)
    E, ids = table(), np.array([0, 4])
    assert type(knetc.grad(f)(E, ids)) is np.ndarray
    assert type(knetc.grad(f, sparse=True)(E, ids)) is knetc.SparseRows
    assert type(knetc.grad(f)(E, ids)) is np.ndarray          # not the sparse entry
    assert knetc.cache_info(f).hits == 1 and knetc.cache_info(f, sparse=True).misses == 1
    loss, g = knetc.value_and_grad(f, sparse=True)(E, ids)
    g2, loss2 = knetc.gradloss(f, sparse=True)(E, ids)
    assert type(g) is type(g2) is knetc.SparseRows and loss == loss2


def test_a_sparse_grad_inside_a_differentiated_function_is_dense_there():
    """Differentiated again (grad of grad), the inner gradient is traced as values: dense."""
    inner = knetc.grad(f_ids, sparse=True)
    ids, E = np.array([2, 5, 2]), table()
    assert type(inner(E, ids)) is knetc.SparseRows
    g = knetc.grad(lambda E, ids: np.sum(inner(E, ids) ** 2))(E, ids)
    assert type(g) is np.ndarray
    num = numeric_grad(lambda e: np.sum(knetc.grad(f_ids)(e, ids) ** 2), E.copy())
    np.testing.assert_allclose(g, num, rtol=1e-5, atol=1e-6)


# ---- the object itself -------------------------------------------------------------------

def test_sparse_rows_arithmetic_and_coalesce():
    parts = ((np.array([3, 1, 3]), np.ones((3, 2))), (np.array(-1), np.full(2, 5.0)))
    g = knetc.SparseRows((5, 2), np.float64, parts)
    d = g.dense()
    assert d.tolist() == [[0, 0], [1, 1], [0, 0], [2, 2], [5, 5]]
    rows, values = g.coalesce()
    assert rows.tolist() == [1, 3, 4] and values[:, 0].tolist() == [1, 2, 5]
    np.testing.assert_array_equal(np.asarray(2 * g), 2 * d)
    np.testing.assert_array_equal(np.asarray(g / 4), d / 4)
    np.testing.assert_array_equal(np.asarray(-g), -d)
    np.testing.assert_array_equal(np.asarray(g + g), 2 * d)
    assert type(g + g) is knetc.SparseRows
    np.testing.assert_array_equal(g + np.ones((5, 2)), d + 1)
    np.testing.assert_array_equal(np.ones((5, 2)) + g, d + 1)
    assert np.allclose(g, d) and "5 rows" not in repr(g) and "4 rows in 2 parts" in repr(g)
    with pytest.raises(TypeError):
        np.add(g, 1.0)                   # ufuncs do not see it as an array: densify first
    h = g + g
    h *= 0.5                             # in place on h only: g keeps its values
    np.testing.assert_array_equal(np.asarray(h), d)
    np.testing.assert_array_equal(np.asarray(g), d)


# ---- updates -----------------------------------------------------------------------------

def _pair(seed=0, n=40, d=6, dtype=np.float32):
    r = np.random.default_rng(seed)
    w = r.standard_normal((n, d)).astype(dtype)
    idx = r.integers(-n, n, 25)
    vals = r.standard_normal((25, d)).astype(dtype)
    g = knetc.SparseRows(w.shape, dtype, ((idx[:10], vals[:10]), (idx[10:], vals[10:])))
    return w, g


@pytest.mark.parametrize("opt", [
    lambda: knetc.SGD(lr=0.3),
    lambda: knetc.SGD(lr=0.3, gclip=0.5),
    lambda: knetc.SGD(lr=lambda t: 0.1 * t),
    lambda: knetc.SGD(lr=0.3, weight_decay=0.01),
    lambda: knetc.Adam(lr=0.01),
    lambda: knetc.Momentum(lr=0.05),
], ids=["sgd", "sgd-gclip", "sgd-schedule", "sgd-decay", "adam", "momentum"])
def test_an_update_with_sparse_rows_is_the_dense_update(opt):
    w, g = _pair()
    w2 = w.copy()
    o1, o2 = opt(), opt()
    for _ in range(3):
        o1.update(w, g)
        o2.update(w2, g.dense())
    assert o1.t == o2.t == 3
    np.testing.assert_allclose(w, w2, rtol=2e-6, atol=2e-6)
    untouched = np.setdiff1d(np.arange(40), g.coalesce()[0])
    if type(o1) is knetc.SGD and not o1.weight_decay:
        np.testing.assert_array_equal(w[untouched], _pair()[0][untouched])


def test_update_of_a_model_with_a_sparse_table():
    w = {"E": table(np.float32), "W": rng.standard_normal((D, 3)).astype(np.float32)}
    w2 = {k: v.copy() for k, v in w.items()}
    o, o2 = knetc.optimizers(w, knetc.SGD, lr=0.1), knetc.optimizers(w2, knetc.SGD, lr=0.1)
    gs, gd = knetc.grad(f_dict, sparse=True), knetc.grad(f_dict)
    for words in ([1, 2, 1], [0, 12], [5, 5, 5, 5], [1, 2, 1]):
        knetc.update(w, gs(w, words), o)
        knetc.update(w2, gd(w2, words), o2)
    for k in w:
        np.testing.assert_allclose(w[k], w2[k], rtol=1e-6, atol=1e-6)


def test_update_refuses_a_sparse_gradient_of_another_shape():
    w, g = _pair()
    with pytest.raises(ValueError, match="does not match"):
        knetc.SGD().update(w[:10], g)


def test_clip_grad_norm_scales_sparse_rows():
    w, g = _pair(dtype=np.float64)
    dense = [g.dense(), np.ones(3)]
    sparse = [g, np.ones(3)]
    n1 = knetc.clip_grad_norm(dense, 1.0)
    n2 = knetc.clip_grad_norm(sparse, 1.0)
    assert math.isclose(n1, n2, rel_tol=1e-12)
    np.testing.assert_allclose(np.asarray(sparse[0]), dense[0], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(sparse[1], dense[1])


def test_allreduce_refuses_sparse_rows_by_name():
    from knetc import distributed as dist
    _, g = _pair()
    with pytest.raises(dist.DistributedError, match="sparse=True"):
        dist.allreduce({"E": g})


def add_rows(x):                         # a user's function named like a runtime helper
    return x * 3.0


def clashing(E, ids):
    """Variables and a helper named like the names generated code binds for the runtime
    (add_rows, sparse_rows, pool_zeros): they must not replace them."""
    sparse_rows = E[ids]
    pool_zeros = add_rows(np.tanh(sparse_rows))
    return np.sum(pool_zeros ** 2)


@pytest.mark.parametrize("sparse", [False, True])
def test_user_names_do_not_shadow_the_runtime(sparse):
    E, ids = table(), np.array([1, 4, 1])
    g = knetc.grad(fresh(clashing), sparse=sparse)(E, ids)
    _fd_check(clashing, E, (ids,), g)
