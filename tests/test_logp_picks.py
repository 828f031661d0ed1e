"""The gradient of picked log-probabilities (``logp(x)[rows, labels]``) without a dense zero array:
prims.logp_back_picked, and the compiler's rewrite to it (optimize.fuse_picked_logp)."""
import types

import numpy as np
import pytest

import knetc
from knetc import api
from knetc.runtime import prims

rng = np.random.default_rng(3)
N, K = 48, 1500          # N * K >= prims.LOGP_BACK_MIN: the large-array path (logp_back)


def fresh(f):
    return types.FunctionType(f.__code__, f.__globals__, f.__name__, f.__defaults__, f.__closure__)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_logp_back_picked_is_logp_back_of_the_dense_gradient(dtype):
    y = prims.logp(rng.standard_normal((N, K)).astype(dtype))
    rows = np.concatenate([np.arange(N), [3, 3, -1]])       # repeats, a negative row
    cols = rng.integers(-K, K, rows.size)
    v = rng.standard_normal(rows.size).astype(dtype)
    dy = np.zeros((N, K), dtype)
    np.add.at(dy, (rows, cols), v)
    want = prims.logp_back(dy, y)
    got = prims.logp_back_picked(y, rows, cols, v, dtype)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5 if dtype == np.float32 else 1e-12,
                               atol=1e-6 if dtype == np.float32 else 1e-14)


def lm_loss(W, h, labels, mask):        # a language model's loss, written out
    lp = knetc.logp(h @ W)
    picked = lp[np.arange(h.shape[0]), labels]
    return -(picked * mask).sum() / mask.sum()


def two_picks(W, h, labels):             # picked twice: one scatter into the other, not fused
    lp = knetc.logp(h @ W)
    n = h.shape[0]
    return -lp[np.arange(n), labels].mean() - 0.5 * lp[np.arange(n), labels[::-1]].mean()


def picks_and_more(W, h, labels):        # and read as a whole too: the gradient stays dense
    lp = knetc.logp(h @ W)
    return -lp[np.arange(h.shape[0]), labels].mean() + 1e-3 * np.mean(lp ** 2)


@pytest.mark.parametrize("tier", ["compiled", "tier0"])
@pytest.mark.parametrize("f, fused", [(lm_loss, True), (two_picks, False),
                                      (picks_and_more, False)])
def test_picked_logp_gradients(f, fused, tier, monkeypatch):
    if tier == "tier0":
        monkeypatch.setattr(api, "TIER0_AFTER", -1)
    f = fresh(f)
    W = rng.standard_normal((3, K)) * 0.5
    h = rng.standard_normal((N, 3))
    labels = rng.integers(0, K, N)
    args = (h, labels, (rng.random(N) > 0.2).astype(float)) if f.__name__ == "lm_loss" else \
        (h, labels)
    assert ("logp_back_picked" in knetc.show(fresh(f), W, *args)) == fused
    g = knetc.grad(f)
    got = g(W, *args)
    again = g(W, *args)                  # a hit (compiled) after tier 0
    np.testing.assert_array_equal(got, again)
    for _ in range(3):                   # central differences along random directions
        d = rng.standard_normal(W.shape)
        eps = 1e-5
        num = (f(W + eps * d, *args) - f(W - eps * d, *args)) / (2 * eps)
        assert abs(num - np.vdot(got, d)) <= 1e-6 * max(1.0, abs(num))
    if f.__name__ == "lm_loss":          # a second implementation: the softmax formula
        h, labels, mask = args
        z = h @ W
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        dz = p * (mask / mask.sum())[:, None]
        dz[np.arange(N), labels] -= mask / mask.sum()
        np.testing.assert_allclose(got, h.T @ dz, rtol=1e-10, atol=1e-12)
    if tier == "tier0":
        assert knetc.cache_info(f).tier0 == 1


def lm_with_aux(W, h, labels):           # the log-probabilities handed back (aux)
    lp = knetc.logp(h @ W)
    return -lp[np.arange(h.shape[0]), labels].mean(), lp


def lm_with_view(W, h, labels):          # a view of them handed back
    lp = knetc.logp(h @ W)
    return -lp[np.arange(h.shape[0]), labels].mean(), lp[:, :5]


def lm_with_store(W, h, labels, cache):  # stored into the caller's dict
    lp = knetc.logp(h @ W)
    cache["lp"] = lp
    return -lp[np.arange(h.shape[0]), labels].mean()


@pytest.mark.parametrize("tier", ["compiled", "tier0"])
def test_the_gradient_takes_the_log_probabilities_memory_only_when_nothing_else_can_see_it(
        tier, monkeypatch):
    if tier == "tier0":
        monkeypatch.setattr(api, "TIER0_AFTER", -1)
    W = rng.standard_normal((3, K)) * 0.5
    h = rng.standard_normal((N, 3))
    labels = rng.integers(0, K, N)
    want_lp = prims.logp(h @ W)
    src = knetc.show(fresh(lm_loss), W, h, labels, np.ones(N))
    assert "logp_back_picked(lp, " in src and ", True)" in src         # written in place
    reference = knetc.grad(fresh(lm_loss))(W, h, labels, np.ones(N))
    for f in (lm_with_aux, lm_with_view):
        f = fresh(f)
        assert "logp_back_picked(" in knetc.grad(fresh(f), has_aux=True).source(W, h, labels)
        assert ", True)" not in knetc.grad(fresh(f), has_aux=True).source(W, h, labels)
        for _ in range(2):
            g, aux = knetc.grad(f, has_aux=True)(W, h, labels)
            np.testing.assert_allclose(g, reference, rtol=1e-12, atol=1e-15)
            np.testing.assert_array_equal(aux, want_lp if aux.shape == want_lp.shape
                                          else want_lp[:, :5])
    f = fresh(lm_with_store)
    for _ in range(2):
        cache = {}
        g = knetc.grad(f)(W, h, labels, cache)
        np.testing.assert_allclose(g, reference, rtol=1e-12, atol=1e-15)
        np.testing.assert_array_equal(cache["lp"], want_lp)


def masked_picks(W, h, keep, labels):   # a boolean mask beside the labels: not plain picks
    lp = knetc.logp(h @ W)
    return -lp[keep, labels].mean()


@pytest.mark.parametrize("tier", ["compiled", "tier0"])
def test_a_mask_in_the_index_takes_the_dense_path(tier, monkeypatch):
    if tier == "tier0":
        monkeypatch.setattr(api, "TIER0_AFTER", -1)
    f = fresh(masked_picks)
    W = rng.standard_normal((3, K)) * 0.5
    h = rng.standard_normal((N, 3))
    keep = rng.random(N) > 0.3
    labels = rng.integers(0, K, int(keep.sum()))
    got = knetc.grad(f)(W, h, keep, labels)
    for _ in range(3):
        d = rng.standard_normal(W.shape)
        eps = 1e-5
        num = (f(W + eps * d, h, keep, labels) - f(W - eps * d, h, keep, labels)) / (2 * eps)
        assert abs(num - np.vdot(got, d)) <= 1e-6 * max(1.0, abs(num))


def test_picks_of_another_dtype_are_cast_as_the_dense_gradient_would_be():
    y = prims.logp(rng.standard_normal((N, K)).astype(np.float32))
    rows, cols = np.arange(N), rng.integers(0, K, N)
    v = rng.standard_normal(N)                      # float64 picks, float32 dy
    dy = np.zeros((N, K), np.float32)
    np.add.at(dy, (rows, cols), v)
    want = prims.logp_back(dy, y)
    got = prims.logp_back_picked(y, rows, cols, v, np.float32)
    assert got.dtype == want.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
