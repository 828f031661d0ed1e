"""rnnforw / rnnback on CuPy arrays through cuDNN 9 (runtime/cudnn/rnn.py) against knetc's NumPy
implementation, torch.nn.LSTM/GRU/RNN on CUDA, and knetc.grad of the char-LM loss."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import knetc
from knetc import tree
from knetc.runtime import rnn as R
from knetc.runtime.backend import cpu, gpu
from knetc.runtime.cudnn import rnn as C

T, B, X, H = 5, 3, 6, 4
CONFIGS = list(itertools.product(("lstm", "gru", "tanh", "relu"), (1, 2), (False, True)))


@pytest.fixture(scope="module")
def cdnn(cp):
    from knetc.runtime.cudnn import library
    if not library.available():
        pytest.skip("libcudnn.so.9 does not load")
    return cp


def _setup(mode, layers, bidir, dtype=np.float32, seed=0, state=True):
    r, w = R.rnninit(X, H, rnnType=mode, numLayers=layers, bidirectional=bidir, seed=seed)
    rng = np.random.default_rng(seed + 1)
    w = (w + 0.1 * rng.standard_normal(w.shape)).astype(dtype)   # non-zero biases too
    x = rng.standard_normal((T, B, X)).astype(dtype)
    LD = r.numPseudoLayers
    hx = rng.standard_normal((LD, B, H)).astype(dtype) if state else None
    cx = rng.standard_normal((LD, B, H)).astype(dtype) if state else None
    douts = (rng.standard_normal((T, B, r.numDirections * H)).astype(dtype),
             rng.standard_normal((LD, B, H)).astype(dtype),
             rng.standard_normal((LD, B, H)).astype(dtype) if mode == "lstm" else None)
    return r, w, x, hx, cx, douts


def _g(cp, a):
    return None if a is None else cp.asarray(a)


def _close(got, want, rtol=1e-4, atol=1e-5, what=""):
    if want is None:
        assert got is None, what
        return
    np.testing.assert_allclose(np.asarray(cpu(got), np.float64), np.asarray(want, np.float64),
                               rtol=rtol, atol=atol, err_msg=what)


def _numpy64(r, w, x, hx, cx, douts):
    """knetc's NumPy forward and backward in float64: the reference."""
    def f(a):
        return None if a is None else np.asarray(a, np.float64)
    w, x, hx, cx = f(w), f(x), f(hx), f(cx)
    out = R.rnnforw_reserve(r, w, x, hx, cx)
    grads = R.rnnback(r, w, x, hx, cx, out, tuple(f(d) for d in douts))
    return out[:3], grads


@pytest.mark.parametrize("mode,layers,bidir", CONFIGS)
def test_forward_backward_match_numpy(cdnn, mode, layers, bidir):
    cp = cdnn
    r, w, x, hx, cx, douts = _setup(mode, layers, bidir)
    (y0, hy0, cy0), (dw0, dx0, dhx0, dcx0) = _numpy64(r, w, x, hx, cx, douts)
    n = dict(C.calls)
    gw, gx, ghx, gcx = (_g(cp, a) for a in (w, x, hx, cx))
    out = R.rnnforw_reserve(r, gw, gx, ghx, gcx)
    assert isinstance(out[3], C.CudnnRNNReserve)
    assert C.calls["forward"] == n["forward"] + 1
    y, hy, cy = out[:3]
    assert isinstance(y, cp.ndarray) and y.dtype == np.float32
    _close(y, y0, what="y")
    _close(hy, hy0, what="hy")
    _close(cy, cy0 if mode == "lstm" else None, what="cy")
    dw, dx, dhx, dcx = R.rnnback(r, gw, gx, ghx, gcx, out, tuple(_g(cp, d) for d in douts))
    assert C.calls["backward"] == n["backward"] + 1
    assert dw.shape == w.shape and dw.dtype == np.float32
    _close(dx, dx0, what="dx")
    _close(dhx, dhx0, what="dhx")
    _close(dcx, dcx0, what="dcx")
    for j in range(r.numPseudoLayers):   # block by block, so a failure names the block
        for i in range(r.numIds):
            for par in (0, 1):
                _close(R.rnnparam(r, dw, j, i, par), R.rnnparam(r, dw0, j, i, par),
                       rtol=2e-4, atol=2e-5, what=f"dw pseudo-layer {j} id {i} par {par}")
    # inference mode (rnnforw): same results, nothing reserved
    y2, hy2, cy2 = R.rnnforw(r, gw, gx, ghx, gcx)
    _close(y2, y0, what="inference y")
    _close(hy2, hy0, what="inference hy")


@pytest.mark.parametrize("mode,bidir", [("lstm", False), ("gru", True), ("tanh", False)])
def test_no_state_partial_douts_single_step(cdnn, mode, bidir):
    cp = cdnn
    r, w, x, _, _, douts = _setup(mode, 2, bidir, state=False)
    for xs, dy in ((x, douts[0]), (x[0], douts[0][0])):        # (T, B, X) and one step (B, X)
        (y0, hy0, _), (dw0, dx0, dhx0, dcx0) = _numpy64(r, w, xs, None, None, (dy, None, None))
        out = R.rnnforw_reserve(r, cp.asarray(w), cp.asarray(xs))
        assert isinstance(out[3], C.CudnnRNNReserve)
        _close(out[0], y0, what="y")
        dw, dx, dhx, dcx = R.rnnback(r, cp.asarray(w), cp.asarray(xs), None, None, out,
                                     (cp.asarray(dy), None, None))
        assert dhx is None and dcx is None and dx.shape == xs.shape
        _close(dw, dw0, rtol=2e-4, atol=2e-5, what="dw")
        _close(dx, dx0, what="dx")
    # only dhy flows (dy None): cuDNN gets a zero dy
    (_, _, _), (dw0, dx0, _, _) = _numpy64(r, w, x, None, None, (None, douts[1], None))
    out = R.rnnforw_reserve(r, cp.asarray(w), cp.asarray(x))
    dw, dx, _, _ = R.rnnback(r, cp.asarray(w), cp.asarray(x), None, None, out,
                             (None, cp.asarray(douts[1]), None))
    _close(dw, dw0, rtol=2e-4, atol=2e-5, what="dw from dhy only")
    _close(dx, dx0, what="dx from dhy only")


def test_non_contiguous_inputs(cdnn):
    cp = cdnn
    r, w, x, hx, cx, _ = _setup("lstm", 1, True)
    (y0, hy0, cy0), _ = _numpy64(r, w, x, hx, cx, (None, None, None))
    gx = cp.asarray(np.ascontiguousarray(x.transpose(1, 0, 2))).transpose(1, 0, 2)
    big = cp.zeros(w.size + 3, np.float32)
    big[1:1 + w.size] = cp.asarray(w)
    gw = big[1:1 + w.size]        # a misaligned view
    y, hy, cy = R.rnnforw(r, gw, gx, cp.asarray(hx), cp.asarray(cx))
    _close(y, y0, what="y")
    _close(cy, cy0, what="cy")


def test_float64_and_float16(cdnn):
    cp = cdnn
    r, w, x, hx, cx, douts = _setup("lstm", 2, True, dtype=np.float64)
    (y0, _, _), (dw0, _, _, _) = _numpy64(r, w, x, hx, cx, douts)
    out = R.rnnforw_reserve(r, *(cp.asarray(a) for a in (w, x, hx, cx)))
    assert isinstance(out[3], C.CudnnRNNReserve)
    _close(out[0], y0, rtol=1e-10, atol=1e-12, what="float64 y")
    dw = R.rnnback(r, *(cp.asarray(a) for a in (w, x, hx, cx)), out,
                   tuple(cp.asarray(d) for d in douts))[0]
    _close(dw, dw0, rtol=1e-9, atol=1e-11, what="float64 dw")
    h16 = [cp.asarray(a.astype(np.float16)) for a in (w, x, hx, cx)]
    y16 = R.rnnforw(r, *h16)[0]
    assert y16.dtype == np.float16
    _close(y16, y0, rtol=3e-2, atol=3e-2, what="float16 y")


def test_dropout_while_training_runs_on_cupy_kernels(cdnn):
    cp = cdnn
    r, w = R.rnninit(X, H, numLayers=2, dropout=0.5, seed=0)
    x = cp.asarray(np.random.default_rng(0).standard_normal((T, B, X)).astype(np.float32))
    with R.set_training(True):
        out = R.rnnforw_reserve(r, cp.asarray(w), x)
    assert isinstance(out[3], R.RNNReserve)
    with R.set_training(False):
        out = R.rnnforw_reserve(r, cp.asarray(w), x)
    assert isinstance(out[3], C.CudnnRNNReserve)      # no dropout due: cuDNN


def test_knetc_cudnn_0_forces_cupy_kernels(cdnn, monkeypatch):
    cp = cdnn
    r, w, x, hx, cx, douts = _setup("gru", 2, True)
    monkeypatch.setenv("KNETC_CUDNN", "0")
    out = R.rnnforw_reserve(r, *(cp.asarray(a) for a in (w, x, hx, cx)))
    assert isinstance(out[3], R.RNNReserve)
    monkeypatch.setenv("KNETC_CUDNN", "1")
    out2 = R.rnnforw_reserve(r, *(cp.asarray(a) for a in (w, x, hx, cx)))
    assert isinstance(out2[3], C.CudnnRNNReserve)
    _close(out2[0], cpu(out[0]), what="cuDNN vs CuPy kernels")


def _torch_module(torch, r, w, dtype):
    kw = dict(num_layers=r.numLayers, bidirectional=r.bidirectional)
    if r.mode == "lstm":
        m = torch.nn.LSTM(r.inputSize, r.hiddenSize, **kw)
    elif r.mode == "gru":
        m = torch.nn.GRU(r.inputSize, r.hiddenSize, **kw)
    else:
        m = torch.nn.RNN(r.inputSize, r.hiddenSize, nonlinearity=r.mode, **kw)
    m = m.to(device="cuda", dtype=dtype)
    G, D = r.numGates, r.numDirections
    with torch.no_grad():
        for layer in range(r.numLayers):
            for d in range(D):
                j = layer * D + d
                sfx = f"_l{layer}" + ("_reverse" if d else "")

                def cat(ids, par, j=j):
                    return torch.from_numpy(np.concatenate([R.rnnparam(r, w, j, i, par)
                                                            for i in ids]))
                getattr(m, "weight_ih" + sfx).copy_(cat(range(G), 0))
                getattr(m, "weight_hh" + sfx).copy_(cat(range(G, 2 * G), 0))
                getattr(m, "bias_ih" + sfx).copy_(cat(range(G), 1))
                getattr(m, "bias_hh" + sfx).copy_(cat(range(G, 2 * G), 1))
    return m


@pytest.mark.parametrize("mode,layers,bidir", [c for c in CONFIGS if c[1] == 2 or c[0] == "lstm"])
def test_against_torch_cuda(cdnn, mode, layers, bidir):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA")
    cp = cdnn
    r, w, x, hx, cx, douts = _setup(mode, layers, bidir, dtype=np.float64)
    m = _torch_module(torch, r, w, torch.float64)
    tx = torch.tensor(x, device="cuda", requires_grad=True)
    th = torch.tensor(hx, device="cuda", requires_grad=True)
    tc = torch.tensor(cx, device="cuda", requires_grad=True)
    if mode == "lstm":
        ty, (thy, tcy) = m(tx, (th, tc))
    else:
        ty, thy = m(tx, th)
        tcy = None
    out = R.rnnforw_reserve(r, *(cp.asarray(a) for a in (w, x, hx, cx)))
    assert isinstance(out[3], C.CudnnRNNReserve)
    for got, want, name in zip(out[:3], (ty, thy, tcy), ("y", "hy", "cy")):
        _close(got, None if want is None else want.detach().cpu().numpy(), rtol=1e-9,
               atol=1e-11, what=name)
    loss = (ty * torch.from_numpy(douts[0]).cuda()).sum() + \
        (thy * torch.from_numpy(douts[1]).cuda()).sum()
    if mode == "lstm":
        loss = loss + (tcy * torch.from_numpy(douts[2]).cuda()).sum()
    loss.backward()
    dw, dx, dhx, dcx = R.rnnback(r, *(cp.asarray(a) for a in (w, x, hx, cx)), out,
                                 tuple(_g(cp, d) for d in douts))
    _close(dx, tx.grad.cpu().numpy(), rtol=1e-9, atol=1e-11, what="dx")
    _close(dhx, th.grad.cpu().numpy(), rtol=1e-9, atol=1e-11, what="dhx")
    if mode == "lstm":
        _close(dcx, tc.grad.cpu().numpy(), rtol=1e-9, atol=1e-11, what="dcx")
    dwn = cpu(dw)
    G = r.numGates
    for layer in range(layers):
        for d in range(r.numDirections):
            j = layer * r.numDirections + d
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            for name, ids, par in (("weight_ih", range(G), 0), ("weight_hh", range(G, 2 * G), 0),
                                   ("bias_ih", range(G), 1), ("bias_hh", range(G, 2 * G), 1)):
                mine = np.concatenate([R.rnnparam(r, dwn, j, i, par) for i in ids])
                _close(mine, getattr(m, name + sfx).grad.cpu().numpy(), rtol=1e-9, atol=1e-11,
                       what=name + sfx)


def test_charlm_grad_through_cudnn(cdnn):
    from examples import charlm
    rng = np.random.default_rng(4)
    model = charlm.initmodel(40, embed=16, hidden=24, seed=0)
    x, y = rng.integers(0, 40, (10, 8)), rng.integers(0, 40, 80)
    h0, c0 = rng.standard_normal((2, 1, 8, 24)).astype(np.float32)

    def f(model, x, y, h0, c0):
        return charlm.loss(model, x, y, [h0, c0])
    gw, lw = knetc.gradloss(f)(model, x, y, h0, c0)
    n = dict(C.calls)
    dw, dl = knetc.gradloss(f)(gpu(model), *gpu([x, y, h0, c0]))
    assert C.calls["forward"] > n["forward"] and C.calls["backward"] > n["backward"]
    np.testing.assert_allclose(float(dl), float(lw), rtol=1e-4)
    for a, b in zip(tree.leaves(gw), tree.leaves(cpu(dw))):
        if isinstance(a, np.ndarray):
            np.testing.assert_allclose(np.asarray(b), a, rtol=1e-3, atol=1e-5)


def test_selftest(cdnn):
    out = C.selftest()
    assert out["rnn_lstm"] == "ok", out
