"""CPU checks of the cuDNN RNN binding (runtime/cudnn/rnn.py): the knetc-side weight table equals
``rnnparam``'s layout, the weight plan gathers and scatters exactly, and the dispatch keeps NumPy
arrays on the NumPy path. The cuDNN calls themselves run in tests/gpu/test_gpu_cudnn_rnn.py."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from knetc.errors import KnetcError
from knetc.runtime import rnn as R
from knetc.runtime.cudnn import rnn as C
from knetc.runtime.cudnn.library import CudnnError

CONFIGS = list(itertools.product(("relu", "tanh", "lstm", "gru"), (1, 2), (False, True),
                                 ((3, 4), (4, 4))))


@pytest.mark.parametrize("mode,layers,bidir,sizes", CONFIGS)
def test_knet_table_matches_rnnparam(mode, layers, bidir, sizes):
    X, H = sizes
    r = R.RNN(mode, X, H, layers, bidir)
    table, size = C.knet_table(r)
    assert size == r.paramSize
    w = np.arange(size, dtype=np.int64)
    assert len(table) == r.numPseudoLayers * r.numIds * 2
    for j in range(r.numPseudoLayers):
        for i in range(r.numIds):
            for par in (0, 1):
                off, rows, cols = table[(j, i, par)]
                view = R.rnnparam(r, w, j, i, par)
                assert view.shape == ((rows, cols) if par == 0 else (rows,))
                np.testing.assert_array_equal(view.ravel(), np.arange(off, off + rows * cols))


def _cudnn_like(table, order):
    """A fabricated cuDNN table: the same blocks laid out in ``order`` (a list of keys)."""
    out, off = {}, 0
    for key in order:
        _, rows, cols = table[key]
        out[key] = (off, rows, cols)
        off += rows * cols
    return out, off


def _per_layer_order(r):
    """cuDNN 7's documented order: per pseudo-layer its matrices then its biases."""
    return [(j, i, par) for j in range(r.numPseudoLayers) for par in (0, 1)
            for i in range(r.numIds)]


def test_identical_tables_plan_identity():
    r = R.RNN("lstm", 3, 4, 2, True)
    table, size = C.knet_table(r)
    plan = C.plan_weights(table, size, dict(table), size)
    assert plan.identity
    w = np.arange(size, dtype=np.float32)
    assert plan.to_cudnn(np, w) is w
    assert plan.from_cudnn(np, w) is w


@pytest.mark.parametrize("mode,layers,bidir,sizes", CONFIGS)
def test_permuted_table_gathers_blocks(mode, layers, bidir, sizes):
    X, H = sizes
    r = R.RNN(mode, X, H, layers, bidir)
    table, size = C.knet_table(r)
    rng = np.random.default_rng(0)
    for order in (_per_layer_order(r), [list(table)[k] for k in rng.permutation(len(table))]):
        cud, csize = _cudnn_like(table, order)
        plan = C.plan_weights(table, size, cud, csize)
        if order == list(table):
            assert plan.identity
            continue
        assert not plan.identity
        w = rng.standard_normal(size).astype(np.float32)
        wc = plan.to_cudnn(np, w)
        for key, (off, rows, cols) in cud.items():   # every block where cuDNN reads it
            np.testing.assert_array_equal(
                wc[off:off + rows * cols], R.rnnparam(r, w, *key).ravel())
        np.testing.assert_array_equal(plan.from_cudnn(np, wc), w)   # the gradient's way back


def test_one_layer_unidirectional_per_layer_order_is_identity():
    """With one pseudo-layer both layouts are 'matrices then biases': no copy."""
    r = R.RNN("gru", 3, 5)
    table, size = C.knet_table(r)
    cud, csize = _cudnn_like(table, _per_layer_order(r))
    assert C.plan_weights(table, size, cud, csize).identity


def test_plan_rejects_mismatches():
    r = R.RNN("lstm", 3, 4, 1)
    table, size = C.knet_table(r)
    with pytest.raises(CudnnError, match="elements"):
        C.plan_weights(table, size, table, size + 4)
    bad = dict(table)
    off, rows, cols = bad[(0, 0, 0)]
    bad[(0, 0, 0)] = (off, cols, rows)        # transposed shape
    with pytest.raises(CudnnError, match="knetc's is"):
        C.plan_weights(table, size, bad, size)
    bad = dict(table)
    del bad[(0, 7, 1)]
    with pytest.raises(CudnnError, match="differ in their blocks"):
        C.plan_weights(table, size, bad, size)
    bad = dict(table)
    bad[(0, 1, 0)] = bad[(0, 0, 0)]           # two blocks on top of each other
    with pytest.raises(CudnnError, match="overlap|gap"):
        C.plan_weights(table, size, bad, size)
    assert issubclass(CudnnError, KnetcError)


def test_numpy_arrays_never_use_cudnn(monkeypatch):
    r, w = R.rnninit(3, 4, rnnType="lstm", seed=0)
    x = np.random.default_rng(1).standard_normal((2, 2, 3)).astype(np.float32)
    assert not C.usable(r, w, x)

    def boom(*a, **k):
        raise AssertionError("cuDNN path taken for NumPy arrays")
    monkeypatch.setattr(C, "forward", boom)
    monkeypatch.setattr(C, "backward", boom)
    y, hy, cy, res = R.rnnforw_reserve(r, w, x)
    assert isinstance(res, R.RNNReserve)
    dw, dx, _, _ = R.rnnback(r, w, x, None, None, (y, hy, cy, res), (np.ones_like(y), None, None))
    assert dw.shape == w.shape and dx.shape == x.shape


def test_disabled_by_environment(monkeypatch):
    monkeypatch.setenv("KNETC_CUDNN", "0")
    r, w = R.rnninit(3, 4, seed=0)
    assert not C.usable(r, w, np.zeros((2, 2, 3), np.float32))


def test_backward_rejects_foreign_reserve():
    with pytest.raises(CudnnError, match="does not come from a cuDNN forward"):
        C.backward(None, None, None, None, None, (None, None, None, object()), None)


def test_numpy_reference_lstm_of_selftest_matches_rnnforw():
    """The self-test's tiny float64 LSTM (read through knet_table) is knetc's LSTM."""
    r, w = R.rnninit(3, 4, rnnType="lstm", seed=2)
    w = w + np.random.default_rng(3).standard_normal(w.shape).astype(np.float32) * 0.1
    x = np.random.default_rng(4).standard_normal((5, 2, 3)).astype(np.float32)
    table, _ = C.knet_table(r)
    y, _, _ = R.rnnforw(r, w, x)
    np.testing.assert_allclose(C.reference_lstm(table, w, x, 4), y, rtol=1e-5, atol=1e-6)


def test_selftest_reports_without_gpu():
    out = C.selftest()
    assert isinstance(out, dict) and isinstance(out["rnn_lstm"], str)


# --------------------------------------------------------------------------- emulated cuDNN
# The cuDNN entry points are replaced by ctypes callbacks built from the module's declared
# prototypes (so every argument goes through the same ctypes conversions as for libcudnn), and
# CuPy by NumPy arrays whose ``.data.ptr`` is their host address. The emulated library lays its
# weight space out per pseudo-layer (matrices, then biases: not knetc's layout), computes with
# knetc's NumPy RNN, and reads and writes the arrays through the pointers it is given.

import ctypes  # noqa: E402
import sys  # noqa: E402
import types  # noqa: E402

from knetc.runtime.cudnn import library as LIB  # noqa: E402


class _Ptr:
    def __init__(self, p):
        self.ptr = p


class FakeArray(np.ndarray):
    @property
    def data(self):
        return _Ptr(self.ctypes.data)


def _fa(a):
    return np.asarray(a).view(FakeArray)


def _fake_cupy():
    cp = types.ModuleType("cupy")
    cp.ndarray = FakeArray
    cp.int32, cp.uint8 = np.int32, np.uint8
    cp.empty = lambda shape, dtype=np.float32: _fa(np.full(shape, np.nan, dtype)
                                                   if np.dtype(dtype).kind == "f"
                                                   else np.zeros(shape, dtype))
    cp.zeros = lambda shape, dtype=np.float32: _fa(np.zeros(shape, dtype))
    cp.full = lambda shape, v, dtype=None: _fa(np.full(shape, v, dtype))
    cp.asarray = lambda a, dtype=None: _fa(np.array(a, dtype))
    cp.ascontiguousarray = lambda a, dtype=None: _fa(np.ascontiguousarray(a, dtype))
    cp.take = lambda a, i: _fa(np.take(a, i))
    cp.ones_like = lambda a: _fa(np.ones_like(a))
    cp.isfinite = np.isfinite
    cp.abs = np.abs
    cp.asnumpy = np.asarray
    stream = types.SimpleNamespace(ptr=5)
    cp.cuda = types.SimpleNamespace(Device=lambda: types.SimpleNamespace(id=0),
                                    runtime=types.SimpleNamespace(getDevice=lambda: 0),
                                    get_current_stream=lambda: stream)
    return cp


def _view(ptr, shape):
    n = int(np.prod(shape))
    return np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), (n,)).reshape(shape)


class FakeCudnn:
    """The RNN entry points of libcudnn, emulated on the host for float32."""

    def __init__(self):
        self.next, self.rnn, self.data, self.tensors = 100, {}, {}, {}
        self.reserves, self.pending, self.calls = {}, None, []

    def _new(self, out):
        self.next += 1
        out[0] = self.next
        return 0

    def spec(self, d):
        mode, X, H, nl, bidir = self.rnn[d]
        return R.RNN(mode, X, H, nl, bidir)

    def layout(self, d):
        r = self.spec(d)
        table, size = C.knet_table(r)
        cud, _ = _cudnn_like(table, _per_layer_order(r))
        return r, table, cud, size

    def to_knet(self, d, wc):
        r, table, cud, size = self.layout(d)
        w = np.empty(size, np.float32)
        for key, (off, rows, cols) in table.items():
            w[off:off + rows * cols] = wc[cud[key][0]:cud[key][0] + rows * cols]
        return w

    def to_cudnn(self, d, w):
        r, table, cud, size = self.layout(d)
        wc = np.empty(size, np.float32)
        for key, (off, rows, cols) in table.items():
            wc[cud[key][0]:cud[key][0] + rows * cols] = w[off:off + rows * cols]
        return wc

    # entry points: name -> python function with the C arguments
    def cudnnGetVersion(self): return 92800
    def cudnnCreateRNNDescriptor(self, p): return self._new(p)
    def cudnnCreateDropoutDescriptor(self, p): return self._new(p)
    def cudnnCreateRNNDataDescriptor(self, p): return self._new(p)
    def cudnnCreateTensorDescriptor(self, p): return self._new(p)
    def cudnnDestroyRNNDescriptor(self, d): return 0
    def cudnnDestroyDropoutDescriptor(self, d): return 0
    def cudnnDestroyRNNDataDescriptor(self, d): return 0
    def cudnnDestroyTensorDescriptor(self, d): return 0

    def cudnnSetDropoutDescriptor(self, d, h, p, states, n, seed):
        assert p == 0.0 and not states and n == 0
        return 0

    def cudnnSetRNNDescriptor_v8(self, d, algo, cell, bias, dirm, inp, dt, prec, math, X, H,
                                 proj, nl, drop, aux):
        assert (algo, bias, inp, dt, prec, aux) == (0, 2, 0, 0, 0, 0) and proj == H
        assert math == 3 and drop  # FMA math for float32, a dropout descriptor
        self.rnn[d] = (["relu", "tanh", "lstm", "gru"][cell], X, H, nl, dirm == 1)
        return 0

    def cudnnSetTensorNdDescriptor(self, d, dt, nd, dims, strides):
        self.tensors[d] = ([dims[k] for k in range(nd)], [strides[k] for k in range(nd)])
        return 0

    def cudnnSetRNNDataDescriptor(self, d, dt, layout, T, B, n, lens, fill):
        assert layout == 0 and [lens[k] for k in range(B)] == [T] * B and not fill
        self.data[d] = (T, B, n)
        return 0

    def cudnnGetRNNWeightSpaceSize(self, h, d, out):
        out[0] = self.layout(d)[3] * 4
        return 0

    def cudnnGetRNNTempSpaceSizes(self, h, d, mode, xd, ws, rs):
        ws[0], rs[0] = 64, (256 if mode == 1 else 0)
        return 0

    def cudnnGetRNNWeightParams(self, h, d, j, nbytes, base, i, md, maddr, bd, baddr):
        r, table, cud, size = self.layout(d)
        assert nbytes == size * 4 and base
        off, rows, cols = cud[(j, i, 0)]
        maddr[0] = base + 4 * off
        self.tensors[md] = ([1, rows, cols], [rows * cols, cols, 1])
        off, _, _ = cud[(j, i, 1)]
        baddr[0] = base + 4 * off
        self.tensors[bd] = ([1, rows, 1], [rows, 1, 1])
        return 0

    def cudnnGetTensorNdDescriptor(self, d, n, dt, nd, dims, strides):
        ds, ss = self.tensors[d]
        dt[0], nd[0] = 0, len(ds)
        for k in range(len(ds)):
            dims[k], strides[k] = ds[k], ss[k]
        return 0

    def _states(self, d, B, *ptrs):
        r = self.spec(d)
        return [None if not p else _view(p, (r.numPseudoLayers, B, r.hiddenSize)) for p in ptrs]

    def cudnnRNNForward(self, h, d, mode, seq, xd, x, yd, y, hd, hx, hy, cd, cx, cy, wn, w,
                        wsn, ws, rsn, rs):
        T, B, X = self.data[xd]
        r = self.spec(d)
        assert self.data[yd] == (T, B, r.numDirections * r.hiddenSize)
        assert np.array_equal(_view(seq, (B,)).view(np.int32)[:B], np.full(B, T, np.int32))
        assert wsn == 64 and ws and (rsn == 256 and rs if mode == 1 else rsn == 0 and not rs)
        hx_, hy_, cx_, cy_ = self._states(d, B, hx, hy, cx, cy)
        wk = self.to_knet(d, _view(w, (wn // 4,)))
        xa = _view(x, (T, B, X)).copy()
        out = R.rnnforw_reserve(r, wk, xa, None if hx_ is None else hx_.copy(),
                                None if cx_ is None else cx_.copy())
        _view(y, out[0].shape)[...] = out[0]
        hy_[...] = out[1]
        if cy_ is not None:
            cy_[...] = out[2]
        if mode == 1:
            self.reserves[rs] = (wk, xa, hx_, cx_, out)
        self.calls.append("forward")
        return 0

    def cudnnRNNBackwardData_v8(self, h, d, seq, yd, y, dy, xd, dx, hd, hx, dhy, dhx, cd, cx,
                                dcy, dcx, wn, w, wsn, ws, rsn, rs):
        T, B, X = self.data[xd]
        r = self.spec(d)
        wk, xa, hx_, cx_, out = self.reserves[rs]
        np.testing.assert_array_equal(_view(y, out[0].shape), out[0])
        dhy_, dcy_, dhx_, dcx_ = self._states(d, B, dhy, dcy, dhx, dcx)
        dy_ = _view(dy, out[0].shape).copy()
        g = R.rnnback(r, wk, xa, hx_, cx_, out, (dy_, dhy_, dcy_))
        _view(dx, (T, B, X))[...] = g[1]
        if dhx_ is not None:
            dhx_[...] = g[2] if g[2] is not None else 0
        if dcx_ is not None:
            dcx_[...] = g[3] if g[3] is not None else 0
        self.pending = (rs, g[0])
        self.calls.append("backward_data")
        return 0

    def cudnnRNNBackwardWeights_v8(self, h, d, add, seq, xd, x, hd, hx, yd, y, wn, dw, wsn, ws,
                                   rsn, rs):
        assert add == 0 and self.pending[0] == rs
        target = _view(dw, (wn // 4,))
        assert not target.any()        # zeroed before CUDNN_WGRAD_MODE_ADD
        target += self.to_cudnn(d, self.pending[1])
        self.calls.append("backward_weights")
        return 0


@pytest.fixture
def fake(monkeypatch):
    emu = FakeCudnn()
    keep = {}

    emu.every = []   # every entry point called, by name

    def fn(name):
        if name not in keep:
            restype, argtypes = LIB.PROTOTYPES[name]
            impl = getattr(emu, name)

            def counted(*args, impl=impl, name=name):
                emu.every.append(name)
                return impl(*args)
            keep[name] = ctypes.CFUNCTYPE(restype, *argtypes)(counted)
        return keep[name]
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy())
    monkeypatch.setattr(LIB, "fn", fn)
    monkeypatch.setattr(LIB, "handle", lambda: 7)
    for name in ("_rnns", "_hdescs", "_shapes", "_seqlens"):
        monkeypatch.setattr(C, name, LIB.LRU())
    monkeypatch.setattr(LIB, "_workspaces", {})
    return emu


@pytest.mark.parametrize("mode,layers,bidir", [("lstm", 2, True), ("gru", 1, False),
                                               ("tanh", 2, False), ("relu", 1, True)])
@pytest.mark.parametrize("state", [True, False])
def test_emulated_cudnn_round_trip(fake, mode, layers, bidir, state):
    r, w = R.rnninit(3, 4, rnnType=mode, numLayers=layers, bidirectional=bidir, seed=1)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    LD = r.numPseudoLayers
    hx = rng.standard_normal((LD, 2, 4)).astype(np.float32) if state else None
    cx = rng.standard_normal((LD, 2, 4)).astype(np.float32) if state else None
    douts = (rng.standard_normal((5, 2, r.numDirections * 4)).astype(np.float32),
             rng.standard_normal((LD, 2, 4)).astype(np.float32), None)
    ref = R.rnnforw_reserve(r, w, x, hx, cx)
    refg = R.rnnback(r, w, x, hx, cx, ref, douts)
    g = [None if a is None else _fa(a) for a in (w, x, hx, cx)]
    out = C.forward(r, *g, training=True)
    assert isinstance(out[3], C.CudnnRNNReserve)
    assert out[3].rnn.plan.identity == (LD == 1)   # per-layer order differs once LD > 1
    for a, b in zip(out[:3], ref[:3]):
        if b is None:
            assert a is None
        else:
            np.testing.assert_allclose(a, b, rtol=1e-6)
    grads = C.backward(r, *g, out, tuple(None if d is None else _fa(d) for d in douts))
    for a, b in zip(grads, refg):
        if b is None:
            assert a is None
        else:
            np.testing.assert_allclose(np.asarray(a), b, rtol=1e-6, atol=1e-7)
    assert fake.calls == ["forward", "backward_data", "backward_weights"]
    y, hy, cy, res = C.forward(r, *g, training=False)      # inference: no reserve
    assert res is None
    np.testing.assert_allclose(y, ref[0], rtol=1e-6)


def test_emulated_cudnn_single_step_and_no_dy(fake):
    r, w = R.rnninit(3, 4, rnnType="lstm", numLayers=2, seed=1)
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    dhy = np.ones((2, 2, 4), np.float32)
    ref = R.rnnforw_reserve(r, w, x)
    refg = R.rnnback(r, w, x, None, None, ref, (None, dhy, None))
    out = C.forward(r, _fa(w), _fa(x))
    assert out[0].shape == (2, 4)
    np.testing.assert_allclose(out[0], ref[0], rtol=1e-6)
    grads = C.backward(r, _fa(w), _fa(x), None, None, out, (None, _fa(dhy), None))
    np.testing.assert_allclose(grads[0], refg[0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(grads[1], refg[1], rtol=1e-6, atol=1e-7)
    assert grads[1].shape == (2, 3) and grads[2] is None and grads[3] is None


def test_emulated_selftest(fake):
    out = C.selftest()
    assert out["rnn_lstm"] == "ok", out
    assert out["rnn_layout_lstm_L2_bi"] == "permuted (gather per call)"


def test_emulated_dispatch_in_runtime_rnn(fake, monkeypatch):
    """runtime.rnn's rnnforw_reserve / rnnforw / rnnback route CuPy arrays through cuDNN, and
    fall back to the array code for KNETC_CUDNN=0 and for dropout while training."""
    from knetc.runtime import backend
    monkeypatch.setattr(backend, "_cupy", sys.modules["cupy"])
    monkeypatch.setattr(LIB, "available", lambda: True)
    r, w = R.rnninit(3, 4, rnnType="gru", numLayers=2, seed=1)
    x = np.random.default_rng(0).standard_normal((4, 2, 3)).astype(np.float32)
    ref = R.rnnforw_reserve(r, w, x)
    out = R.rnnforw_reserve(r, _fa(w), _fa(x))
    assert isinstance(out[3], C.CudnnRNNReserve)
    np.testing.assert_allclose(out[0], ref[0], rtol=1e-6)
    dy = np.ones_like(ref[0])
    g = R.rnnback(r, _fa(w), _fa(x), None, None, out, (_fa(dy), None, None))
    np.testing.assert_allclose(g[0], R.rnnback(r, w, x, None, None, ref, (dy, None, None))[0],
                               rtol=1e-6, atol=1e-7)
    assert fake.calls == ["forward", "backward_data", "backward_weights"]
    np.testing.assert_allclose(R.rnnforw(r, _fa(w), _fa(x))[0], ref[0], rtol=1e-6)
    assert fake.calls[-1] == "forward"
    monkeypatch.setenv("KNETC_CUDNN", "0")
    assert not C.usable(r, _fa(w), _fa(x))     # (the fake CuPy cannot run the array code)
    monkeypatch.setenv("KNETC_CUDNN", "1")
    rd = R.RNN("gru", 3, 4, 2, dropout=0.5)
    with R.set_training(True):
        assert not C.usable(rd, _fa(w), _fa(x), train=True)
    assert C.usable(rd, _fa(w), _fa(x), train=False)
    assert not C.usable(r, _fa(w), _fa(x.astype(np.float64)))    # mixed dtypes: array code


def test_emulated_repeated_calls_make_only_the_compute_calls(fake):
    """A second forward/backward of the same RNN and shapes creates, sets and queries nothing:
    descriptors, temp-space sizes and sequence lengths are cached."""
    r, w = R.rnninit(3, 4, rnnType="lstm", numLayers=2, bidirectional=True, seed=1)
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32)
    dy = _fa(np.ones((5, 2, 8), np.float32))
    out = C.forward(r, _fa(w), _fa(x), training=True)
    assert "cudnnSetRNNDataDescriptor" in fake.every    # the first call made the descriptors
    C.backward(r, _fa(w), _fa(x), None, None, out, (dy, None, None))
    fake.every.clear()
    out = C.forward(r, _fa(w), _fa(x), training=True)
    assert fake.every == ["cudnnRNNForward"]
    fake.every.clear()
    C.backward(r, _fa(w), _fa(x), None, None, out, (dy, None, None))
    assert fake.every == ["cudnnRNNBackwardData_v8", "cudnnRNNBackwardWeights_v8"]
    fake.every.clear()
    C.forward(r, _fa(w), _fa(x), training=False)   # inference: its sizes once, then cached
    C.forward(r, _fa(w), _fa(x), training=False)
    assert fake.every == ["cudnnGetRNNTempSpaceSizes", "cudnnRNNForward", "cudnnRNNForward"]
