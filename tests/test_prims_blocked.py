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
