"""The one-kernel row primitives (runtime/rowkernels.py) on the GPU equal NumPy's code in prims."""
from __future__ import annotations

import numpy as np
import pytest

import knetc
from knetc import tree
from knetc.runtime import prims as P
from knetc.runtime.backend import cpu, gpu

SHAPES = [(1, 1), (3, 7), (100, 10), (64, 10001), (1000, 3)]
DTYPES = [np.float32, np.float64]


def _tol(dtype):
    return dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-13)


def _data(shape, dtype, seed=0):
    rng = np.random.default_rng(seed + shape[0] * 7 + shape[1])
    return (3 * rng.standard_normal(shape)).astype(dtype), rng.integers(0, shape[1], shape[0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_logp_softmax(cp, shape, dtype):
    x, _ = _data(shape, dtype)
    xc = cp.asarray(x)
    assert P._rows_fast(xc)
    for fn in (P.logp, P.softmax):
        y = fn(xc)
        assert isinstance(y, cp.ndarray) and y.dtype == dtype and y.shape == shape
        np.testing.assert_allclose(cp.asnumpy(y), fn(x), **_tol(dtype))
        np.testing.assert_allclose(cp.asnumpy(fn(xc, axis=1)), fn(x), **_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("ltype", [np.int32, np.int64])
def test_nll_and_grad(cp, shape, dtype, ltype):
    x, y = _data(shape, dtype, 1)
    y = y.astype(ltype)
    xc, yc = cp.asarray(x), cp.asarray(y)
    for average in (True, False):
        loss = P.nll(xc, yc, average)
        assert isinstance(loss, cp.ndarray) and loss.shape == () and loss.dtype == dtype
        np.testing.assert_allclose(float(loss), P.nll(x, y, average), **_tol(dtype))
        for dy, dyc in ((1.0, 1.0), (0.3, 0.3), (np.asarray(2.5, dtype), cp.asarray(2.5, dtype))):
            g = P.nll_grad(xc, yc, dyc, average)
            assert isinstance(g, cp.ndarray) and g.dtype == dtype and g.shape == shape
            np.testing.assert_allclose(cp.asnumpy(g), P.nll_grad(x, y, dy, average),
                                       **_tol(dtype))


def test_fallbacks_agree(cp, monkeypatch):
    x, y = _data((20, 12), np.float32, 2)
    xc, yc = cp.asarray(x), cp.asarray(y)
    strided = xc[:, ::2]                               # not contiguous: the array code
    assert not P._rows_fast(strided)
    np.testing.assert_allclose(cp.asnumpy(P.logp(strided)), P.logp(x[:, ::2]), rtol=1e-5,
                               atol=1e-6)
    fast = [cp.asnumpy(P.nll(xc, yc)), cp.asnumpy(P.nll_grad(xc, yc, 1.0)),
            cp.asnumpy(P.softmax(xc))]
    monkeypatch.setenv("KNETC_ROWKERNELS", "0")
    assert not P._rows_fast(xc)
    slow = [cp.asnumpy(P.nll(xc, yc)), cp.asnumpy(P.nll_grad(xc, yc, 1.0)),
            cp.asnumpy(P.softmax(xc))]
    for a, b in zip(fast, slow):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_bad_labels_give_nan(cp):
    x, y = _data((6, 4), np.float32, 3)
    y[2] = 4
    xc, yc = cp.asarray(x), cp.asarray(y)
    assert np.isnan(float(P.nll(xc, yc)))
    g = cp.asnumpy(P.nll_grad(xc, yc, 1.0))
    assert np.isnan(g[2]).all() and np.isfinite(np.delete(g, 2, axis=0)).all()
    y[2] = -1                                          # counts from the end, as in NumPy
    np.testing.assert_allclose(float(P.nll(xc, cp.asarray(y))), P.nll(x, y), rtol=1e-5)


def test_mnist_softmax_gradloss(cp):
    from examples import mnist_softmax
    rng = np.random.default_rng(4)
    w = mnist_softmax.initweights()
    x, y = rng.random((100, 1, 28, 28), np.float32), rng.integers(0, 10, 100)
    gw, lw = knetc.gradloss(mnist_softmax.loss)(w, x, y)
    dw, dl = knetc.gradloss(mnist_softmax.loss)(gpu(w), *gpu([x, y]))
    np.testing.assert_allclose(float(dl), float(lw), rtol=1e-5)
    for a, b in zip(tree.leaves(gw), tree.leaves(cpu(dw)), strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=2e-4, atol=2e-6)


def test_fewer_kernels_per_step(cp, monkeypatch):
    """Kernels of one knetc.grad call of the softmax model, counted by torch's profiler."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    from torch.profiler import ProfilerActivity, profile

    from examples import mnist_softmax
    rng = np.random.default_rng(5)
    w = gpu(mnist_softmax.initweights())
    x, y = gpu([rng.random((100, 1, 28, 28), np.float32), rng.integers(0, 10, 100)])
    g = knetc.grad(mnist_softmax.loss)

    def count():
        for _ in range(2):                             # compile (knetc, CuPy) outside the count
            g(w, x, y)
        cp.cuda.Device().synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            g(w, x, y)
            cp.cuda.Device().synchronize()
        kinds = {torch.autograd.DeviceType.CUDA}
        names = [e.name for e in prof.events() if e.device_type in kinds]
        return [n for n in names if "memcpy" not in n.lower() and "memset" not in n.lower()]

    monkeypatch.setenv("KNETC_ROWKERNELS", "1")
    fast = count()
    monkeypatch.setenv("KNETC_ROWKERNELS", "0")
    slow = count()
    print(f"\nsoftmax model, kernels per knetc.grad call: {len(fast)} with row kernels, "
          f"{len(slow)} without\n  with: {fast}\n  without: {slow}")
    assert any("knetc_nll" in n for n in fast) and not any("knetc_nll" in n for n in slow)
    assert len(fast) < len(slow)
