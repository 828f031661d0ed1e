"""Tests for knetc.runtime.rnn: Knet's rnninit / rnnforw / rnnback on NumPy."""
from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from knetc.runtime import rnn as R
from knetc.runtime.rnn import RNN, rnnback, rnnforw, rnnforw_reserve, rnninit, rnnparam, rnnparams

MODES = ("relu", "tanh", "lstm", "gru")
X, H, B, T = 3, 4, 2, 3


# --------------------------------------------------------------------------- reference


def _sigm(a):
    return 1.0 / (1.0 + np.exp(-a))


def ref_rnnforw(r, w, x, hx=None, cx=None, masks=None):
    """Textbook unrolled RNN, one gate at a time, weights read through rnnparam."""
    single = x.ndim == 2
    if single:
        x = x[None]
    Tn, Bn, _ = x.shape
    Hn, D, L = r.hiddenSize, r.numDirections, r.numLayers
    G = r.numGates
    hy = np.zeros((L * D, Bn, Hn))
    cy = np.zeros((L * D, Bn, Hn))
    inp = x
    for layer in range(L):
        if masks is not None and masks[layer] is not None:
            inp = inp * masks[layer]
        outs = []
        for d in range(D):
            j = layer * D + d

            def W(g, v):  # input part of gate g
                return v @ rnnparam(r, w, j, g, 0).T + rnnparam(r, w, j, g, 1)

            def Rm(g, v):  # recurrent part of gate g
                return v @ rnnparam(r, w, j, G + g, 0).T + rnnparam(r, w, j, G + g, 1)

            h = np.zeros((Bn, Hn)) if hx is None else hx[j].copy()
            c = np.zeros((Bn, Hn)) if cx is None else cx[j].copy()
            ys = [None] * Tn
            for t in (range(Tn) if d == 0 else reversed(range(Tn))):
                xt = inp[t]
                if r.mode == "tanh":
                    h = np.tanh(W(0, xt) + Rm(0, h))
                elif r.mode == "relu":
                    h = np.maximum(W(0, xt) + Rm(0, h), 0)
                elif r.mode == "lstm":
                    i = _sigm(W(0, xt) + Rm(0, h))
                    f = _sigm(W(1, xt) + Rm(1, h))
                    g = np.tanh(W(2, xt) + Rm(2, h))
                    o = _sigm(W(3, xt) + Rm(3, h))
                    c = f * c + i * g
                    h = o * np.tanh(c)
                else:  # gru
                    rr = _sigm(W(0, xt) + Rm(0, h))
                    z = _sigm(W(1, xt) + Rm(1, h))
                    n = np.tanh(W(2, xt) + rr * Rm(2, h))
                    h = (1 - z) * n + z * h
                ys[t] = h
            hy[j], cy[j] = h, c
            outs.append(np.stack(ys))
        inp = np.concatenate(outs, axis=2)
    y = inp[0] if single else inp
    return y, hy, (cy if r.mode == "lstm" else None)


def _init(mode, layers, bidir, dtype=np.float64, seed=0, **kw):
    r, w = rnninit(X, H, rnnType=mode, numLayers=layers, bidirectional=bidir, dtype=dtype,
                   seed=seed, **kw)
    # random biases too, so that every parameter matters
    rng = np.random.default_rng(seed + 100)
    w[:] = rng.uniform(-0.8, 0.8, w.shape)
    return r, w


def _data(r, seed=1, single=False):
    rng = np.random.default_rng(seed)
    LD = r.numPseudoLayers
    x = rng.standard_normal((B, X) if single else (T, B, X))
    hx = rng.standard_normal((LD, B, H)) * 0.5
    cx = rng.standard_normal((LD, B, H)) * 0.5
    return x, hx, cx


CONFIGS = list(itertools.product(MODES, (1, 2), (False, True)))


# --------------------------------------------------------------------------- forward vs reference


@pytest.mark.parametrize("mode,layers,bidir", CONFIGS)
@pytest.mark.parametrize("with_state", [False, True])
def test_forward_matches_reference(mode, layers, bidir, with_state):
    r, w = _init(mode, layers, bidir)
    x, hx, cx = _data(r)
    if not with_state:
        hx = cx = None
    y, hy, cy = rnnforw(r, w, x, hx, cx)
    ry, rhy, rcy = ref_rnnforw(r, w, x, hx, cx)
    D = r.numDirections
    assert y.shape == (T, B, D * H) and hy.shape == (layers * D, B, H)
    np.testing.assert_allclose(y, ry, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(hy, rhy, rtol=1e-12, atol=1e-12)
    if mode == "lstm":
        assert cy.shape == (layers * D, B, H)
        np.testing.assert_allclose(cy, rcy, rtol=1e-12, atol=1e-12)
    else:
        assert cy is None
    # the final states are the last (forward) / first (backward) outputs of the top layer
    j = (layers - 1) * D
    np.testing.assert_array_equal(y[-1, :, :H], hy[j])
    if bidir:
        np.testing.assert_array_equal(y[0, :, H:], hy[j + 1])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bidir", [False, True])
def test_single_step_input(mode, bidir):
    r, w = _init(mode, 2, bidir)
    x, hx, cx = _data(r, single=True)
    y, hy, cy = rnnforw(r, w, x, hx, cx)
    assert y.shape == (B, r.numDirections * H)
    ry, rhy, rcy = ref_rnnforw(r, w, x, hx, cx)
    np.testing.assert_allclose(y, ry, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(hy, rhy, rtol=1e-12, atol=1e-12)
    # same as a length-1 sequence
    y3, hy3, _ = rnnforw(r, w, x[None], hx, cx)
    np.testing.assert_array_equal(y, y3[0])
    np.testing.assert_array_equal(hy, hy3)


def test_state_is_used_and_not_modified():
    r, w = _init("lstm", 1, False)
    x, hx, cx = _data(r)
    hx0, cx0, x0, w0 = hx.copy(), cx.copy(), x.copy(), w.copy()
    y1, _, _ = rnnforw(r, w, x, hx, cx)
    y0, _, _ = rnnforw(r, w, x)
    assert not np.allclose(y0, y1)
    out = rnnforw_reserve(r, w, x, hx, cx)
    rnnback(r, w, x, hx, cx, out, (np.ones_like(out[0]), np.ones_like(out[1]), np.ones_like(out[2])))
    for a, b in ((hx, hx0), (cx, cx0), (x, x0), (w, w0)):
        np.testing.assert_array_equal(a, b)


def test_float32_default():
    r, w = rnninit(5, 6, seed=0)
    assert r.dtype == np.float32 and w.dtype == np.float32
    x = np.random.default_rng(0).standard_normal((4, 3, 5)).astype(np.float32)
    y, hy, cy = rnnforw(r, w, x)
    assert y.dtype == hy.dtype == cy.dtype == np.float32
    out = rnnforw_reserve(r, w, x)
    dw, dx, dhx, dcx = rnnback(r, w, x, None, None, out, (np.ones_like(y), None, None))
    assert dw.dtype == dx.dtype == np.float32 and dhx is None and dcx is None
    ry, _, _ = ref_rnnforw(r, w.astype(np.float64), x.astype(np.float64))
    np.testing.assert_allclose(y, ry, rtol=1e-4, atol=1e-5)


def test_bad_shapes_raise():
    r, w = _init("gru", 1, False)
    x, hx, _ = _data(r)
    with pytest.raises(ValueError):
        rnnforw(r, w, x[:, :, :2])
    with pytest.raises(ValueError):
        rnnforw(r, w, x, hx[:, :1])
    with pytest.raises(ValueError):
        rnnforw(r, w[:-1], x)


# --------------------------------------------------------------------------- against PyTorch


@pytest.mark.parametrize("mode,layers,bidir", CONFIGS)
def test_against_torch(mode, layers, bidir):
    torch = pytest.importorskip("torch")
    r, w = _init(mode, layers, bidir)
    x, hx, cx = _data(r)
    kw = dict(num_layers=layers, bidirectional=bidir)
    if mode == "lstm":
        m = torch.nn.LSTM(X, H, **kw)
    elif mode == "gru":
        m = torch.nn.GRU(X, H, **kw)
    else:
        m = torch.nn.RNN(X, H, nonlinearity=mode, **kw)
    m = m.double()
    G, D = r.numGates, r.numDirections
    with torch.no_grad():
        for layer in range(layers):
            for d in range(D):
                j = layer * D + d
                sfx = f"_l{layer}" + ("_reverse" if d else "")

                def cat(ids, par, j=j):
                    return np.concatenate([rnnparam(r, w, j, i, par) for i in ids])

                getattr(m, "weight_ih" + sfx).copy_(torch.from_numpy(cat(range(G), 0)))
                getattr(m, "weight_hh" + sfx).copy_(torch.from_numpy(cat(range(G, 2 * G), 0)))
                getattr(m, "bias_ih" + sfx).copy_(torch.from_numpy(cat(range(G), 1)))
                getattr(m, "bias_hh" + sfx).copy_(torch.from_numpy(cat(range(G, 2 * G), 1)))
        tx, th, tc = (torch.from_numpy(a) for a in (x, hx, cx))
        if mode == "lstm":
            ty, (thy, tcy) = m(tx, (th, tc))
        else:
            ty, thy = m(tx, th)
    y, hy, cy = rnnforw(r, w, x, hx, cx)
    np.testing.assert_allclose(y, ty.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(hy, thy.numpy(), rtol=1e-10, atol=1e-12)
    if mode == "lstm":
        np.testing.assert_allclose(cy, tcy.numpy(), rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- backward vs finite differences


def _loss(r, w, x, hx, cx, Rs):
    y, hy, cy = rnnforw(r, w, x, hx, cx)
    s = 0.0
    for a, Rm in zip((y, hy, cy), Rs):
        if Rm is not None:
            s += float(np.sum(a * Rm))
    return s


def _numgrad(f, a, eps=1e-6):
    g = np.zeros_like(a)
    flat, gflat = a.reshape(-1), g.reshape(-1)
    for k in range(flat.size):
        old = flat[k]
        flat[k] = old + eps
        fp = f()
        flat[k] = old - eps
        fm = f()
        flat[k] = old
        gflat[k] = (fp - fm) / (2 * eps)
    return g


def _check_grads(r, w, x, hx, cx, Rs, seed_each_call=None):
    def f():
        if seed_each_call is not None:
            np.random.seed(seed_each_call)
        return _loss(r, w, x, hx, cx, Rs)

    if seed_each_call is not None:
        np.random.seed(seed_each_call)
    out = rnnforw_reserve(r, w, x, hx, cx)
    dw, dx, dhx, dcx = rnnback(r, w, x, hx, cx, out, Rs)
    assert dw.shape == w.shape and dx.shape == x.shape
    assert (dhx is None) == (hx is None)
    assert (dcx is None) == (cx is None or r.mode != "lstm")
    pairs = [(dw, w), (dx, x)]
    if hx is not None:
        pairs.append((dhx, hx))
    if dcx is not None:
        pairs.append((dcx, cx))
    for got, arg in pairs:
        num = _numgrad(f, arg)
        assert np.abs(num).max() > 1e-3  # the check is not vacuous
        np.testing.assert_allclose(got, num, rtol=1e-6, atol=1e-8)
    return dw, dx, dhx, dcx


def _Rs(r, seed=2, single=False):
    rng = np.random.default_rng(seed)
    LD, D = r.numPseudoLayers, r.numDirections
    Ry = rng.standard_normal((B, D * H) if single else (T, B, D * H))
    Rh = rng.standard_normal((LD, B, H))
    Rc = rng.standard_normal((LD, B, H)) if r.mode == "lstm" else None
    return Ry, Rh, Rc


@pytest.mark.parametrize("mode,layers,bidir", CONFIGS)
def test_backward_finite_differences(mode, layers, bidir):
    r, w = _init(mode, layers, bidir)
    x, hx, cx = _data(r)
    _check_grads(r, w, x, hx, cx, _Rs(r))


PARTIAL = [(m, k) for m in MODES for k in ("y", "hy", "cy", "y+cy") if m == "lstm" or "cy" not in k]


@pytest.mark.parametrize("mode,which", PARTIAL)
def test_backward_partial_douts(mode, which):
    r, w = _init(mode, 2, True, seed=3)
    x, hx, cx = _data(r, seed=4)
    Ry, Rh, Rc = _Rs(r, seed=5)
    Rs = (Ry if "y" in which.split("+") else None, Rh if which == "hy" else None,
          Rc if "cy" in which else None)
    _check_grads(r, w, x, hx, cx, Rs)


@pytest.mark.parametrize("mode", MODES)
def test_backward_without_initial_state(mode):
    r, w = _init(mode, 2, True, seed=6)
    x, _, _ = _data(r, seed=7)
    dw, dx, dhx, dcx = _check_grads(r, w, x, None, None, _Rs(r, seed=8))
    assert dhx is None and dcx is None


def test_backward_lstm_hx_without_cx():
    r, w = _init("lstm", 1, False, seed=9)
    x, hx, _ = _data(r)
    dw, dx, dhx, dcx = _check_grads(r, w, x, hx, None, _Rs(r))
    assert dhx is not None and dcx is None


@pytest.mark.parametrize("mode", MODES)
def test_backward_single_step(mode):
    r, w = _init(mode, 2, True, seed=10)
    x, hx, cx = _data(r, single=True)
    _check_grads(r, w, x, hx, cx, _Rs(r, single=True))


def test_backward_all_douts_none_is_zero():
    r, w = _init("lstm", 2, True)
    x, hx, cx = _data(r)
    out = rnnforw_reserve(r, w, x, hx, cx)
    dw, dx, dhx, dcx = rnnback(r, w, x, hx, cx, out, (None, None, None))
    for a in (dw, dx, dhx, dcx):
        assert not np.any(a)


# --------------------------------------------------------------------------- dropout


def test_dropout_only_in_training():
    r, w = _init("lstm", 2, True, dropout=0.5)
    x, hx, cx = _data(r)
    r0 = dataclasses.replace(r, dropout=0.0)
    assert not R.training()
    y, _, _ = rnnforw(r, w, x, hx, cx)
    y0, _, _ = rnnforw(r0, w, x, hx, cx)
    np.testing.assert_array_equal(y, y0)
    with R.set_training(True):
        assert R.training()
        np.random.seed(0)
        yt, _, _, res = rnnforw_reserve(r, w, x, hx, cx)
        with R.set_training(False):
            assert not R.training()
        assert R.training()
    assert not R.training()
    assert not np.allclose(yt, y0)
    assert res.masks[0] is None and res.masks[1] is not None
    m = res.masks[1]
    assert set(np.unique(m)) <= {0.0, 2.0} and 0 < np.count_nonzero(m) < m.size
    ry, _, _ = ref_rnnforw(r, w, x, hx, cx, masks=res.masks)
    np.testing.assert_allclose(yt, ry, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_dropout_backward_finite_differences(mode):
    r, w = _init(mode, 2, True, dropout=0.4, seed=11)
    x, hx, cx = _data(r)
    with R.set_training(True):
        _check_grads(r, w, x, hx, cx, _Rs(r), seed_each_call=1234)


# --------------------------------------------------------------------------- spec, layout, init


def test_spec_hashable_and_immutable():
    a = RNN("lstm", 3, 4, 2, True, 0.1, np.float32)
    b = RNN("lstm", 3, 4, 2, True, 0.1, "float32")
    c = RNN("gru", 3, 4, 2, True, 0.1, np.float32)
    assert a == b and hash(a) == hash(b) and a != c
    cache = {a: 1}
    assert cache[b] == 1 and c not in cache
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.hiddenSize = 5
    with pytest.raises(ValueError):
        RNN("lstmx", 3, 4)
    r, _ = rnninit(3, 4, rnnType="gru", seed=0)
    r2, _ = rnninit(3, 4, rnnType="gru", seed=1)
    assert r == r2 and hash(r) == hash(r2)


def _knet_size(mode, Xn, Hn, L, bidir):
    G = {"relu": 1, "tanh": 1, "lstm": 4, "gru": 3}[mode]
    D = 2 if bidir else 1
    n, xin = 0, Xn
    for _ in range(L):
        n += G * D * (Hn * Hn + Hn * xin + 2 * Hn)
        xin = D * Hn
    return n


@pytest.mark.parametrize("mode,layers,bidir", CONFIGS)
def test_layout(mode, layers, bidir):
    r, w = rnninit(5, 7, rnnType=mode, numLayers=layers, bidirectional=bidir, seed=0)
    assert w.ndim == 1 and w.size == r.paramSize == _knet_size(mode, 5, 7, layers, bidir)
    ps = rnnparams(r, w)
    LD, N, G, D = r.numPseudoLayers, r.numIds, r.numGates, r.numDirections
    assert len(ps) == 2 * LD * N
    # the params tile w exactly, in the documented order: all matrices, then all biases
    base = w.__array_interface__["data"][0]
    off = 0
    for k, p in enumerate(ps):
        assert np.shares_memory(p, w)
        assert (p.__array_interface__["data"][0] - base) // w.itemsize == off
        off += p.size
        par, rest = divmod(k, LD * N)
        j, i = divmod(rest, N)
        assert p is not None and p.ndim == (2 if par == 0 else 1)
        if par == 0:
            xin = 5 if j < D else D * 7
            assert p.shape == ((7, xin) if i < G else (7, 7))
        else:
            assert p.shape == (7,)
    assert off == w.size
    # views are writable into w
    rnnparam(r, w, LD - 1, N - 1, 1)[:] = 42
    assert np.all(w[-7:] == 42)
    with pytest.raises(IndexError):
        rnnparam(r, w, LD, 0, 0)
    with pytest.raises(IndexError):
        rnnparam(r, w, 0, N, 0)
    with pytest.raises(IndexError):
        rnnparam(r, w, 0, 0, 2)


@pytest.mark.parametrize("mode", MODES)
def test_init(mode):
    r, w = rnninit(5, 7, rnnType=mode, numLayers=2, bidirectional=True, seed=0)
    LD, N = r.numPseudoLayers, r.numIds
    scaled = []  # every matrix divided by its xavier bound: U(-1, 1) pooled
    for j in range(LD):
        for i in range(N):
            m = rnnparam(r, w, j, i, 0)
            s = np.sqrt(6 / sum(m.shape))
            assert np.abs(m).max() <= s and np.abs(m).max() > 0.5 * s
            scaled.append((m / s).ravel())
            b = rnnparam(r, w, j, i, 1)
            forget = mode == "lstm" and i in (1, 5)
            np.testing.assert_array_equal(b, np.ones(7) if forget else np.zeros(7))
    u = np.concatenate(scaled)
    assert u.size > 400 and abs(u.mean()) < 0.1 and 0.28 < u.var() < 0.39  # var of U(-1,1): 1/3
    _, w2 = rnninit(5, 7, rnnType=mode, numLayers=2, bidirectional=True, seed=0)
    _, w3 = rnninit(5, 7, rnnType=mode, numLayers=2, bidirectional=True, seed=1)
    np.testing.assert_array_equal(w, w2)
    assert not np.array_equal(w, w3)
    _, w64 = rnninit(5, 7, rnnType=mode, dtype=np.float64, seed=0)
    assert w64.dtype == np.float64


@pytest.mark.parametrize("layers,bidir", [(1, False), (2, True)])
@pytest.mark.parametrize("douts", ["y", "all"])
def test_lstm_backward_paths_agree(monkeypatch, layers, bidir, douts):
    """The LSTM backward for small states (factors for all steps first) and for large ones (per
    step, in place) compute the same gradients; the finite-difference tests above run the small
    one, so the large one is checked against it here."""
    r, w = _init("lstm", layers, bidir, seed=11)
    x, hx, cx = _data(r, seed=12)
    out = rnnforw_reserve(r, w, x, hx, cx)
    Ry, Rh, Rc = _Rs(r, seed=13)
    dout = (Ry, None, None) if douts == "y" else (Ry, Rh, Rc)
    small = rnnback(r, w, x, hx, cx, out, dout)
    monkeypatch.setattr(R, "_SMALL_STATE", 0)
    large = rnnback(r, w, x, hx, cx, out, dout)
    for a, b in zip(small, large):
        if a is None or b is None:
            assert a is None and b is None
        else:
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)
