"""The NumPy paths of logp / softmax / nll that avoid arrays as large as the scores (the blocked
log-sum-exp) against the textbook formulas, with blocks of one row up to all rows; and a slow
first call run at tier 0 (knetc.api.SLOW_TRACE)."""
import numpy as np
import pytest

import knetc
from knetc import api
from knetc.runtime import prims


def ref_logp(x):
    z = x - x.max(axis=-1, keepdims=True)
    return z - np.log(np.sum(np.exp(z), axis=-1, keepdims=True))


@pytest.mark.parametrize("block", [1, 7, 1 << 16])
@pytest.mark.parametrize("shape", [(5, 3), (13, 11), (2, 3, 4), (1, 9), (6,)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_blocked_rows_equal_the_textbook_formulas(monkeypatch, block, shape, dtype):
    monkeypatch.setattr(prims, "_LSE_BLOCK", block)
    x = (np.random.default_rng(1).standard_normal(shape) * 4).astype(dtype)
    np.testing.assert_array_equal(prims.logp(x), ref_logp(x))
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    np.testing.assert_allclose(prims.softmax(x), e / e.sum(axis=-1, keepdims=True), rtol=1e-6)
    if x.ndim == 2:
        y = np.random.default_rng(2).integers(0, x.shape[1], x.shape[0])
        lp = ref_logp(x)[np.arange(x.shape[0]), y]
        np.testing.assert_allclose(prims.nll(x, y), -lp.mean(), rtol=1e-6)
        np.testing.assert_allclose(prims.nll(x, y, average=False), -lp.sum(), rtol=1e-6)


def test_views_and_other_axes_take_the_general_path():
    x = np.random.default_rng(3).standard_normal((4, 6))
    np.testing.assert_allclose(prims.logp(x.T), ref_logp(x.T), rtol=1e-12)
    np.testing.assert_allclose(prims.logp(x, axis=0), ref_logp(x.T).T, rtol=1e-12)


def test_a_slow_first_call_runs_at_tier_0_and_compiles_when_it_comes_back(monkeypatch):
    monkeypatch.setattr(api, "SLOW_TRACE", 0.0)

    def loss(w, x):
        return np.sum(knetc.logp(x @ w) ** 2)
    rng = np.random.default_rng(4)
    w, x = rng.standard_normal((3, 5)), rng.standard_normal((4, 3))
    g = knetc.grad(loss)
    first = g(w, x)
    info = knetc.cache_info(g)
    assert info.tier0 == 1 and info.entries == 0
    np.testing.assert_allclose(first, knetc.numeric_grad(loss, w, x), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(g(w, x), first, rtol=1e-12)        # compiled now
    assert knetc.cache_info(g).entries == 1


@pytest.mark.parametrize("block", [1, 5, 1 << 16])
@pytest.mark.parametrize("shape,axis", [((7, 9), -1), ((3, 4, 5), -1), ((7, 9), 0), ((6,), -1)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_logp_back_equals_the_formula(monkeypatch, block, shape, axis, dtype):
    monkeypatch.setattr(prims, "_LSE_BLOCK", block)
    rng = np.random.default_rng(5)
    y = prims.logp(rng.standard_normal(shape).astype(dtype), axis)
    dy = rng.standard_normal(shape).astype(dtype)
    want = dy - np.exp(y) * np.sum(dy, axis=axis, keepdims=True)
    got = prims.logp_back(dy, y, axis)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-6 if dtype == np.float32 else 1e-13,
                               atol=1e-7 if dtype == np.float32 else 1e-15)
    # a gradient that is not an array of y's shape (a broadcast constant) takes the formula
    two = np.asarray(2.0, dtype)
    np.testing.assert_allclose(prims.logp_back(two, y, axis),
                               two - np.exp(y) * np.sum(two, axis=None), rtol=1e-6)


def picked(x, c):
    return np.sum(knetc.logp(x, axis=-1)[..., :3] * c) + np.sum(knetc.logp(x, axis=0) ** 2)


def picked_sq(x, c):
    return np.sum(knetc.grad(picked)(x, c) ** 2)


@pytest.mark.parametrize("shape", [(5, 7), (2, 3, 6)])
def test_logp_gradient_through_logp_back_first_and_second_order(monkeypatch, shape):
    """The rule writes logp_back for large arrays: with the threshold at 1 (before these functions
    are first compiled) every logp takes it; first and second derivatives against central
    differences."""
    monkeypatch.setattr(prims, "LOGP_BACK_MIN", 1)
    rng = np.random.default_rng(6)
    x, c = rng.standard_normal(shape), rng.standard_normal(shape[:-1] + (3,))
    g = knetc.grad(picked)
    assert "logp_back" in g.source(x, c)
    np.testing.assert_allclose(g(x, c), knetc.numeric_grad(picked, x, c), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(knetc.grad(picked_sq)(x, c), knetc.numeric_grad(picked_sq, x, c),
                               rtol=1e-5, atol=1e-8)


def test_a_compile_after_a_slow_trace_does_not_run_the_forward_again(monkeypatch):
    """A key seen before is compiled; when its trace was slow, that call's gradient comes from the
    recorded values: the forward runs once per call (the trace's), then once per hit."""
    monkeypatch.setattr(api, "SLOW_TRACE", 0.0)
    calls = []

    def counted(x):
        calls.append(1)
        return np.tanh(x)

    @knetc.adjoint(counted)
    def _counted(y, x):
        d[x] = d[y] * (1 - y * y)  # noqa: F821

    def loss(w, x):
        return np.sum(counted(x @ w) ** 2)
    rng = np.random.default_rng(8)
    w, x = rng.standard_normal((3, 5)), rng.standard_normal((4, 3))
    g = knetc.grad(loss)
    want = knetc.numeric_grad(loss, w, x)
    calls.clear()
    for n in (1, 2, 3):
        np.testing.assert_allclose(g(w, x), want, rtol=1e-6, atol=1e-9)
        assert len(calls) == n
    assert knetc.cache_info(g).entries == 1 and knetc.cache_info(g).hits == 1


def ref_nll_grad(x, y, average):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    p = e / e.sum(axis=-1, keepdims=True)
    p[np.arange(x.shape[0]), y] -= 1
    return p / x.shape[0] if average else p


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("spread", [1.0, 30.0, 300.0])
def test_small_nll_and_its_gradient_equal_the_row_maximum_formulas(dtype, spread):
    """Small batches take the whole array's maximum and a product with ones for the row sums;
    rows far below the maximum (spread 300: beyond float32's exponent range) fall back to the
    per-row computation. Negative labels index from the end, as NumPy's indexing does."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((40, 7))
    x[::3] += spread * rng.standard_normal((14, 1))       # rows at very different levels
    x = x.astype(dtype)
    y = rng.integers(-7, 7, 40)
    lp = ref_logp(x.astype(np.float64))[np.arange(40), y]
    tol = 2e-6 if dtype == np.float32 else 1e-12
    for average in (True, False):
        want = -lp.mean() if average else -lp.sum()
        np.testing.assert_allclose(prims.nll(x, y, average), want, rtol=tol * 10, atol=tol)
        got = prims.nll_grad(x, y, 1.0, average)
        assert got.dtype == dtype
        np.testing.assert_allclose(got, ref_nll_grad(x.astype(np.float64), y, average),
                                   rtol=tol * 10, atol=tol)
