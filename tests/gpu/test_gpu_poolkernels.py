"""The one-kernel max pooling (runtime/poolkernels.py) on the GPU: y, the saved offsets, dx and
pool_x_dy equal the NumPy path's bit for bit (y up to the sign of tied zeros) for many
geometries, dtypes and tie-heavy inputs; the kernels are really the path taken; LeNet's
gradient matches NumPy's; torch agrees where there are no ties. Timings are printed (-s)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import knetc
from knetc import tree
from knetc.runtime import conv as C
from knetc.runtime import poolkernels as P
from knetc.runtime.backend import cpu, gpu

DTYPES = (np.float16, np.float32, np.float64)
KINDS = ("normal", "ties", "relu", "special")


def _geometries():
    out = []
    for (H, W), k, p, s in itertools.product(((5, 7), (6, 6), (9, 8)), (2, 3, (2, 3)),
                                             (0, 1, (0, 1)), (1, 2, 3, (1, 2))):
        try:
            C._pool_geometry(np.zeros((1, 1, H, W)), k, p, s)
        except ValueError:
            continue
        out.append((H, W, k, p, s))
    return out


GEOMETRIES = _geometries()


def _inputs(kind, shape, dtype, seed=0):
    r = np.random.default_rng(seed)
    if kind == "normal":
        x = r.standard_normal(shape)
    elif kind == "ties":
        x = r.integers(0, 3, shape).astype(float)
    elif kind == "relu":
        z = r.standard_normal(shape)
        x = np.where(z > 0, z, np.where(r.random(shape) < 0.5, -0.0, 0.0))
    else:  # special: -inf rows (windows all -inf, some reaching into the padding) and NaNs
        x = r.standard_normal(shape)
        x[..., :2, :] = -np.inf
        x.flat[r.integers(0, x.size, 3)] = np.nan
    return x.astype(dtype)


def _same(a, b, *, signed_zero=True):
    a, b = cpu(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape
    assert np.array_equal(a, b, equal_nan=True)
    if signed_zero:
        assert np.array_equal(np.signbit(a), np.signbit(b))


@pytest.fixture
def calls(monkeypatch):
    """Records which poolkernels entry points ran."""
    seen = []
    for name in ("maxpool_index", "maxpool_route", "maxpool_pick"):
        fn = getattr(P, name)

        def wrapped(*a, _fn=fn, _name=name, **k):
            seen.append(_name)
            return _fn(*a, **k)
        monkeypatch.setattr(P, name, wrapped)
    monkeypatch.delenv("KNETC_POOLKERNELS", raising=False)
    return seen


def _all_three(x, dy, ddx, **kw):
    y, saved = C.pool_with_index(x, **kw)
    return y, saved, C.pool_x_saved(x, y, dy, saved, **kw), C.pool_x_dy(x, y, ddx, saved, **kw)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
def test_kernels_equal_the_cpu(cp, calls, kind, dtype):
    r = np.random.default_rng(0)
    for n, (H, W, k, p, s) in enumerate(GEOMETRIES):
        x = _inputs(kind, (3, 4, H, W), dtype, n)
        kw = dict(window=k, padding=p, stride=s)
        y = C.pool_with_index(x, **kw)[0]
        dy = r.standard_normal(y.shape).astype(dtype)
        dy.flat[::5] = -0.0
        ddx = r.standard_normal(x.shape).astype(dtype)
        with np.errstate(invalid="ignore"):
            want = _all_three(x, dy, ddx, **kw)
        calls.clear()
        got = _all_three(cp.asarray(x), cp.asarray(dy), cp.asarray(ddx), **kw)
        assert calls == ["maxpool_index", "maxpool_route", "maxpool_pick"], (n, calls)
        ctx = (kind, np.dtype(dtype).name, H, W, k, p, s)
        for a, b, what in zip(got, want, ("y", "saved", "dx", "pool_x_dy")):
            try:
                _same(a, b, signed_zero=what != "y")  # y: +0/-0 ties, see poolkernels
            except AssertionError:
                raise AssertionError(f"{what} differs for {ctx}") from None
        _same(C.pool_x_dy(cp.asarray(x), None, cp.asarray(ddx), None, **kw), want[3])


@pytest.mark.parametrize("alpha,mode", [(0.5, 0), (1, 3)])
def test_alpha_mode3_and_wide_images(cp, calls, alpha, mode):
    x = _inputs("ties", (2, 3, 7, 300), np.float32)  # uint16 offsets
    kw = dict(window=3, padding=1, stride=2, alpha=alpha, mode=mode)
    y = C.pool_with_index(x, **kw)[0]
    dy = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
    want = _all_three(x, dy, x, **kw)
    got = _all_three(cp.asarray(x), cp.asarray(dy), cp.asarray(x), **kw)
    assert got[1].dtype == np.uint16 and calls
    for a, b in zip(got, want):
        _same(a, b, signed_zero=False)


@pytest.mark.parametrize("shape,kw", [((64, 20, 24, 24), dict(window=2)),
                                      ((4, 64, 112, 112), dict(window=3, stride=2, padding=1))])
def test_large_layers_equal_the_cpu_and_the_old_path(cp, calls, monkeypatch, shape, kw):
    x = np.maximum(_inputs("normal", shape, np.float32), 0)  # relu'd: many tied zeros
    y = C.pool_with_index(x, **kw)[0]
    dy = np.random.default_rng(2).standard_normal(y.shape).astype(np.float32)
    want = _all_three(x, dy, x, **kw)
    got = _all_three(cp.asarray(x), cp.asarray(dy), cp.asarray(x), **kw)
    for a, b in zip(got, want):
        _same(a, b, signed_zero=False)
    monkeypatch.setenv("KNETC_POOLKERNELS", "0")
    calls.clear()
    old = _all_three(cp.asarray(x), cp.asarray(dy), cp.asarray(x), **kw)
    assert calls == []
    # the old path adds overlapping windows' gradients in another order than the CPU's add.at:
    # equal to float32 rounding, not bit for bit (the kernels above are bit for bit)
    for a, b in zip(old, want):
        np.testing.assert_allclose(cpu(a), b, rtol=1e-5, atol=1e-6)


def test_torch_agrees_without_ties(cp, calls):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    x = _inputs("normal", (8, 16, 33, 31), np.float32)
    k, p, s = 3, 1, 2
    y, saved = C.pool_with_index(cp.asarray(x), window=k, padding=p, stride=s)
    tx = torch.tensor(x, device="cuda", requires_grad=True)
    ty, tidx = torch.nn.functional.max_pool2d(tx, k, s, p, return_indices=True)
    np.testing.assert_array_equal(cpu(y), ty.detach().cpu().numpy())
    # saved offset -> flat index into H*W, torch's format
    g = C._pool_geometry(x, k, p, s)
    Wp = x.shape[3] + 2 * p
    off = cpu(saved).astype(np.int64)
    i = np.arange(g.Ho)[:, None]
    j = np.arange(g.Wo)
    flat = (i * s - p + off // Wp) * x.shape[3] + (j * s - p + off % Wp)
    np.testing.assert_array_equal(flat, tidx.cpu().numpy())
    dy = np.random.default_rng(3).standard_normal(y.shape).astype(np.float32)
    dx = C.pool_x_saved(cp.asarray(x), y, cp.asarray(dy), saved, window=k, padding=p, stride=s)
    ty.backward(torch.tensor(dy, device="cuda"))
    np.testing.assert_allclose(cpu(dx), tx.grad.cpu().numpy(), rtol=1e-6, atol=1e-6)


def test_lenet_gradloss(cp, calls):
    from examples import lenet
    rng = np.random.default_rng(4)
    w = lenet.initweights()
    x, y = rng.random((32, 1, 28, 28), np.float32), rng.integers(0, 10, 32)
    gw, lw = knetc.gradloss(lenet.loss)(w, x, y)
    dw, dl = knetc.gradloss(lenet.loss)(gpu(w), gpu(x), gpu(y))
    assert "maxpool_index" in calls and "maxpool_route" in calls
    np.testing.assert_allclose(float(dl), float(lw), rtol=1e-4)
    for a, b in zip(tree.leaves(gw), tree.leaves(cpu(dw)), strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("shape,kw", [((128, 20, 24, 24), dict(window=2)),
                                      ((128, 64, 112, 112), dict(window=3, stride=2, padding=1))])
def test_print_timings(cp, monkeypatch, shape, kw):
    """Forward + backward, kernels vs the array code (not asserted: printed for the log)."""
    x = cp.maximum(cp.random.standard_normal(shape, dtype=cp.float32), 0)
    y0 = C.pool_with_index(x, **kw)[0]
    dy = cp.random.standard_normal(y0.shape, dtype=cp.float32)

    def step():
        y, saved = C.pool_with_index(x, **kw)
        return C.pool_x_saved(x, y, dy, saved, **kw)

    def ms():
        step()
        cp.cuda.Device().synchronize()
        start, end = cp.cuda.Event(), cp.cuda.Event()
        start.record()
        for _ in range(20):
            step()
        end.record()
        end.synchronize()
        return cp.cuda.get_elapsed_time(start, end) / 20

    monkeypatch.setenv("KNETC_POOLKERNELS", "1")
    new = ms()
    monkeypatch.setenv("KNETC_POOLKERNELS", "0")
    old = ms()
    print(f"\npoolkernels {shape} {kw}: kernels {new:.3f} ms, array code {old:.3f} ms")
