"""Fused optimizer kernels and CUDA-graph steps on the GPU, against the NumPy path."""
from __future__ import annotations

import numpy as np
import pytest

import knetc
from knetc import errors, graphs, optim_kernels, schedules
from knetc.optim import OPTIMIZERS

OPTIONS = {
    "plain": {},
    "clip_wd": {"gclip": 0.05, "weight_decay": 0.1},
    "schedule": {"lr": schedules.step(0.01, every=2, gamma=0.5), "gclip": 1e6},
}


@pytest.mark.parametrize("option", sorted(OPTIONS))
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_fused_update_matches_numpy(cp, name, option):
    kw = dict(OPTIONS[option])
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((33, 17)).astype(np.float32)
    grads = [rng.standard_normal(w0.shape).astype(np.float32) for _ in range(5)]
    a, b = w0.copy(), cp.asarray(w0)
    oa, ob = OPTIMIZERS[name](**kw), OPTIMIZERS[name](**kw)
    for g in grads:
        oa.update(a, g)
        ob.update(b, cp.asarray(g))
        np.testing.assert_allclose(cp.asnumpy(b), a, rtol=1e-5, atol=1e-6)
    assert "_apply" in ob.__dict__            # the fused path was taken
    assert ob.t == oa.t == 5
    for k in OPTIMIZERS[name].states:
        va = getattr(oa, k)
        if isinstance(va, np.ndarray):
            np.testing.assert_allclose(cp.asnumpy(getattr(ob, k)), va, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["Adam", "AdamW", "Adadelta"])
def test_fused_update_float64_and_graph_variant(cp, name):
    """float64 parameters; and the graph kernels (scalars read from a device row)."""
    rng = np.random.default_rng(1)
    w0 = rng.standard_normal((10, 3))
    grads = [rng.standard_normal(w0.shape) for _ in range(5)]
    a, b = w0.copy(), cp.asarray(w0)
    oa, ob = OPTIMIZERS[name](gclip=0.5), OPTIMIZERS[name](gclip=0.5)
    s, states = ob.fused(b)
    for g in grads:
        oa.update(a, g)
        row = cp.asarray(np.array(ob.fused_step_scalars()))
        optim_kernels.run_graph(s, b, cp.asarray(g), states, row)
        np.testing.assert_allclose(cp.asnumpy(b), a, rtol=1e-10, atol=1e-12)


def _kernel_names(cp, fn):
    """Names of the CUDA kernels ``fn()`` launches (torch.profiler's CUDA activity, which
    records CuPy's kernels too), or skip when torch cannot profile CUDA here."""
    try:
        import torch
        from torch.profiler import ProfilerActivity, profile
        if not torch.cuda.is_available():
            pytest.skip("torch without CUDA: cannot count kernels")
    except Exception as e:   # noqa: BLE001 - any import problem means: not measurable here
        pytest.skip(f"torch.profiler unavailable: {e}")
    cp.cuda.Device().synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        cp.cuda.Device().synchronize()
    names = []
    for e in prof.events():
        dt = str(getattr(e, "device_type", ""))
        if dt.endswith("CUDA") and not e.name.lower().startswith(("memcpy", "memset")):
            names.append(e.name)
    return names


@pytest.mark.parametrize("gclip", [0.0, 1.0])
def test_one_kernel_per_parameter(cp, gclip):
    rng = np.random.default_rng(2)
    w = [cp.asarray(rng.standard_normal(s).astype(np.float32)) for s in [(64, 32), (32,), (8,)]]
    g = [cp.asarray(rng.standard_normal(x.shape).astype(np.float32)) for x in w]
    opts = knetc.optimizers(w, knetc.Adam, gclip=gclip)
    knetc.update(w, g, opts)            # compile and prepare first
    names = _kernel_names(cp, lambda: knetc.update(w, g, opts))
    # one update kernel per parameter, and nothing else without gclip; with gclip the sum of
    # squares comes first: one reduction, which CuPy's default CUB accelerator may run in two
    # passes (two kernels)
    assert sum(n.startswith("knetc_adam") for n in names) == len(w), names
    if gclip:
        assert 2 * len(w) <= len(names) <= 3 * len(w), names
    else:
        assert len(names) == len(w), names


def _mlp(cp, seed=0, n=100, batches=10):
    from examples import mnist_mlp
    rng = np.random.default_rng(seed)
    w = mnist_mlp.initweights()
    data = [(rng.random((n, 1, 28, 28), np.float32), rng.integers(0, 10, n))
            for _ in range(batches)]
    return mnist_mlp.loss, w, data


def test_graph_step_mlp_adam_equals_ordinary_steps(cp):
    loss, w, data = _mlp(cp)
    wa = [cp.asarray(a) for a in w]
    wb = [cp.asarray(a) for a in w]
    oa, ob = knetc.optimizers(wa, knetc.Adam), knetc.optimizers(wb, knetc.Adam)
    gl = knetc.gradloss(loss)
    expected = []
    for x, y in data:
        g, lo = gl(wa, cp.asarray(x), cp.asarray(y))
        knetc.update(wa, g, oa)
        expected.append(float(lo))
    step = knetc.graph_step(loss, wb, ob, cp.asarray(data[0][0]), cp.asarray(data[0][1]))
    assert "np.matmul(" in step.source        # products through knetc's cuBLAS calls
    for a, c in zip(w, wb):    # capturing ran nothing: w as it was
        np.testing.assert_array_equal(cp.asnumpy(c), a)
    got = []
    for i, (x, y) in enumerate(data):
        # NumPy batches (copied in with one transfer) and CuPy batches both work
        lo = step(x, y) if i % 2 else step(cp.asarray(x), cp.asarray(y))
        assert isinstance(lo, cp.ndarray) and lo.shape == ()
        got.append(float(lo))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    for a, c in zip(wa, wb):
        np.testing.assert_allclose(cp.asnumpy(c), cp.asnumpy(a), rtol=1e-5, atol=1e-6)
    assert [o.t for o in ob] == [len(data)] * 4
    with pytest.raises(errors.KnetcError, match="pad the batch"):
        step(cp.asarray(data[0][0][:50]), cp.asarray(data[0][1][:50]))


def test_graph_step_refusals(cp):
    rng = np.random.default_rng(3)
    x = cp.asarray(rng.standard_normal((8, 3)).astype(np.float32))

    def branchy(w, x):
        s = np.sum(x @ w[0])
        if s > 0:            # reads a GPU value on the host
            return s
        return -s

    def masked(w, x):
        y = x @ w[0]
        return np.sum(y[y > 0])   # a shape the data decides

    def dropped(w, x):
        return np.sum(knetc.dropout(x @ w[0], 0.5))

    for f, match in ((branchy, "synchronises with the host"),
                     (masked, "synchronises with the host"),
                     (dropped, "random numbers")):
        w = [cp.asarray(rng.standard_normal((3, 2)).astype(np.float32))]
        before = cp.asnumpy(w[0])
        with pytest.raises(errors.KnetcError, match=match):
            knetc.graph_step(f, w, knetc.optimizers(w, knetc.SGD), x)
        np.testing.assert_array_equal(cp.asnumpy(w[0]), before)
    wn = [rng.standard_normal((3, 2)).astype(np.float32)]
    with pytest.raises(errors.KnetcError, match="GPU-only"):
        knetc.graph_step(branchy, wn, knetc.optimizers(wn, knetc.SGD), cp.asnumpy(x))
    # a refused capture leaves CuPy usable: a good step still captures and runs
    assert graphs.selftest() == "ok"


def test_selftest(cp):
    assert graphs.selftest() == "ok"
