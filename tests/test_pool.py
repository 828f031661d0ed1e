"""knetc.runtime.pool: large temporaries reused from call to call. A buffer is reused only when
nothing refers to it (a view, a view of a view, a gradient the user kept); results equal NumPy's
in value, shape and type; generated code that takes its large results from the pool gives the
same gradients, and gradients kept from an earlier call are never overwritten."""
import threading

import numpy as np
import pytest

import knetc
from knetc.runtime import pool


@pytest.fixture
def small_pool(monkeypatch):
    """Every array pooled (MIN_BYTES 0); the pool emptied before and after."""
    monkeypatch.setattr(pool, "MIN_BYTES", 0)
    pool.clear()
    yield
    pool.clear()


def test_a_buffer_is_reused_only_when_nothing_refers_to_it(small_pool):
    a = pool.empty((30, 20), np.float32)
    a[...] = 1
    v = a.reshape(-1)[::3]          # a view of a view: its base is the pool's owner
    del a
    b = pool.empty((30, 20), np.float32)
    assert not np.shares_memory(b, v)
    b[...] = 2
    assert np.all(v == 1)
    del v
    c = pool.empty((30, 20), np.float32)
    assert pool.stats()["buffers"] == 2       # the first owner again
    assert not np.shares_memory(b, c)
    del b, c
    assert pool.stats()["in_use"] == 0


def test_sizes_share_a_class_and_the_limit_holds(small_pool, monkeypatch):
    a = pool.empty((1000,), np.float64)
    del a
    b = pool.empty((990,), np.float64)        # the same size class: the same owner
    assert pool.stats()["buffers"] == 1 and b.shape == (990,) and b.flags.c_contiguous
    monkeypatch.setenv("KNETC_POOL_MB", "0")
    c = pool.empty((1000,), np.float64)       # over the limit: plain NumPy memory
    assert c.base is None and pool.stats()["buffers"] == 1


@pytest.mark.parametrize("a,b", [
    (np.arange(12.0).reshape(3, 4), np.arange(1.0, 5.0)),
    (np.ones((3, 1), np.float32), np.arange(1, 5, dtype=np.float32)),
    (np.ones((2, 3), np.float32), 2.5),                  # a Python float stays weak
    (3, np.arange(1, 7, dtype=np.int64).reshape(2, 3)),
    (np.ones((2, 3), np.float32), np.ones((2, 3), np.float64)),
])
@pytest.mark.parametrize("ufunc", [np.add, np.subtract, np.multiply, np.true_divide])
def test_binary_equals_numpy(small_pool, a, b, ufunc):
    want = ufunc(a, b)
    got = pool.binary(ufunc, a, b)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_unary_matmul_zeros_equal_numpy(small_pool):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 7)).astype(np.float32)
    y = rng.standard_normal((7, 3))
    for f in (np.exp, np.tanh, np.negative, np.square):
        got = pool.unary(f, x)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, f(x))
    np.testing.assert_array_equal(pool.unary(np.exp, np.arange(3)), np.exp(np.arange(3)))
    got = pool.matmul(x, y)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, x @ y)
    np.testing.assert_array_equal(pool.matmul(x[0], y), x[0] @ y)      # not 2-D: NumPy's
    z = pool.empty((4, 4), np.float32)
    z[...] = 7
    del z
    z = pool.zeros((4, 4), np.float32)
    assert not z.any() and z.dtype == np.float32


def test_threads_never_share_a_buffer(small_pool):
    seen, errors = [], []

    def work(k):
        for _ in range(200):
            a = pool.empty((64,), np.float64)
            a[...] = k
            seen.append(1)
            if not np.all(a == k):
                errors.append(k)
    ts = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors and len(seen) == 800


def mlp_loss(w, x, y):
    h = np.tanh(x @ w["W1"] + w["b1"])
    e = np.exp(h @ w["W2"])
    return np.sum((e - y) ** 2) / x.shape[0]


def test_generated_code_from_the_pool_keeps_earlier_gradients(small_pool):
    """With every array pooled, the gradient equals finite differences; the gradient of call 1,
    kept, is unchanged by calls 2 and 3 on other data; after the user lets go, buffers are
    reused."""
    rng = np.random.default_rng(1)
    w = {"W1": rng.standard_normal((4, 6)) * 0.5, "b1": rng.standard_normal(6),
         "W2": rng.standard_normal((6, 3)) * 0.5}
    x, y = rng.standard_normal((5, 4)), rng.standard_normal((5, 3))
    g = knetc.grad(mlp_loss)
    assert "pool_" in g.source(w, x, y)
    first = g(w, x, y)
    kept = {k: v.copy() for k, v in first.items()}
    for k, v in knetc.numeric_grad(mlp_loss, w, x, y).items():
        np.testing.assert_allclose(first[k], v, rtol=1e-6, atol=1e-9)
    for _ in range(2):
        other = g(w, rng.standard_normal((5, 4)), rng.standard_normal((5, 3)))
        assert not any(np.shares_memory(other[k], first[k]) for k in first)
    for k in first:
        np.testing.assert_array_equal(first[k], kept[k])
    del first, other
    before = pool.stats()["buffers"]
    for _ in range(3):
        g(w, x, y)
    assert pool.stats()["buffers"] == before        # reused, not grown


def test_python_numbers_stay_python_numbers(small_pool):
    """``1.0 * 2`` is a weak Python float (a float32 gradient stays float32 after it), not the
    NumPy float64 that ``np.multiply(1.0, 2)`` gives."""
    got = pool.binary(np.multiply, 1.0, 2)
    assert type(got) is float and got == 2.0
    assert (pool.binary(np.multiply, got, np.ones(3, np.float32))).dtype == np.float32


def test_nothing_is_pooled_inside_off(small_pool):
    """The compiler specializes and runs tier 0 under pool.off(): values of one call."""
    with pool.off():
        a = pool.empty((8, 8), np.float32)
        assert a.base is None and pool.binary(np.add, a, 1.0).base is None
    assert pool.empty((8, 8), np.float32).base is not None
