"""The cuDNN binding without a GPU: library discovery and loading errors, status translation,
descriptor arguments, algorithm-cache keys, and the dispatch rule (NumPy never touches cuDNN)."""
from __future__ import annotations

import ctypes
import importlib.machinery
import types

import numpy as np
import pytest

from knetc.errors import KnetcError
from knetc.runtime import conv as C
from knetc.runtime import cudnn
from knetc.runtime import layers as LY
from knetc.runtime.cudnn import descriptors as D
from knetc.runtime.cudnn import layers as K
from knetc.runtime.cudnn import library as L


@pytest.fixture
def fresh(monkeypatch):
    """A library module with nothing loaded or cached (restored afterwards)."""
    monkeypatch.setattr(L, "_lib", None)
    monkeypatch.setattr(L, "_load_error", None)
    monkeypatch.setattr(L, "_declared", set())
    return L


# ------------------------------------------------------------------ discovery and loading

def test_env_var_wins(monkeypatch):
    monkeypatch.setenv("KNETC_CUDNN_LIBRARY", "/opt/x/libcudnn.so.9")
    assert L.find_library() == "/opt/x/libcudnn.so.9"


def test_wheel_namespace_package(monkeypatch, tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "libcudnn.so.9").write_bytes(b"")
    spec = importlib.machinery.ModuleSpec("nvidia.cudnn", None, is_package=True)
    spec.submodule_search_locations = [str(tmp_path)]
    monkeypatch.delenv("KNETC_CUDNN_LIBRARY", raising=False)
    monkeypatch.setattr(L.importlib.util, "find_spec", lambda name: spec)
    assert L.find_library() == str(tmp_path / "lib" / "libcudnn.so.9")


def test_system_fallback(monkeypatch):
    monkeypatch.delenv("KNETC_CUDNN_LIBRARY", raising=False)
    monkeypatch.setattr(L.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(L.ctypes.util, "find_library", lambda name: None)
    assert L.find_library() == "libcudnn.so.9"
    monkeypatch.setattr(L.ctypes.util, "find_library", lambda name: "libcudnn.so.9.1")
    assert L.find_library() == "libcudnn.so.9.1"


def test_missing_library_names_the_install(fresh, monkeypatch, tmp_path):
    monkeypatch.setenv("KNETC_CUDNN_LIBRARY", str(tmp_path / "nope.so"))
    with pytest.raises(L.CudnnUnavailable) as e:
        L.lib()
    assert "pip install knetc[gpu]" in str(e.value) and "nope.so" in str(e.value)
    assert isinstance(e.value, KnetcError)
    assert not L.available()
    with pytest.raises(L.CudnnUnavailable):  # cached: not retried on every call
        L.version()


class _FakeFn:
    def __init__(self, impl):
        self.impl, self.restype, self.argtypes = impl, None, None

    def __call__(self, *args):
        return self.impl(*args)


class _FakeLib:
    def __init__(self, **impls):
        for k, v in impls.items():
            setattr(self, k, _FakeFn(v))


def test_wrong_major_version(fresh, monkeypatch):
    monkeypatch.setattr(L, "_load", lambda path: _FakeLib(cudnnGetVersion=lambda: 8907))
    with pytest.raises(L.CudnnUnavailable, match="cuDNN 9"):
        L.lib()


def test_prototypes_are_set_lazily_and_declare_adds(fresh, monkeypatch):
    fake = _FakeLib(cudnnGetVersion=lambda: 92800, cudnnFoo=lambda h: 0)
    monkeypatch.setattr(L, "_load", lambda path: fake)
    assert L.available() and L.version() == 92800
    assert fake.cudnnGetVersion.restype is ctypes.c_size_t and fake.cudnnGetVersion.argtypes == []
    with pytest.raises(L.CudnnError, match="no ctypes prototype"):
        L.fn("cudnnFoo")
    monkeypatch.setitem(L.PROTOTYPES, "cudnnFoo", None)  # restored after the test
    L.declare("cudnnFoo", ctypes.c_int, [ctypes.c_void_p])
    L.call("cudnnFoo", None, what="foo")
    assert fake.cudnnFoo.restype is ctypes.c_int and fake.cudnnFoo.argtypes == [ctypes.c_void_p]


def test_every_prototype_is_well_formed():
    for name, (restype, argtypes) in L.PROTOTYPES.items():
        assert name.startswith("cudnn")
        assert all(isinstance(t, type) and issubclass(t, ctypes._SimpleCData | ctypes._Pointer)
                   for t in argtypes), name
    # spot checks against the cuDNN 9 headers
    assert len(L.PROTOTYPES["cudnnConvolutionForward"][1]) == 13
    assert len(L.PROTOTYPES["cudnnBatchNormalizationForwardTraining"][1]) == 17
    assert L.PROTOTYPES["cudnnBatchNormalizationForwardTraining"][1][11] is ctypes.c_double
    assert len(L.PROTOTYPES["cudnnBatchNormalizationBackward"][1]) == 19
    assert len(L.PROTOTYPES["cudnnPoolingBackward"][1]) == 12
    assert len(L.PROTOTYPES["cudnnSoftmaxBackward"][1]) == 11


# ------------------------------------------------------------------ status translation

def test_check_success_is_silent():
    L.check(0, "anything")


@pytest.mark.parametrize("status,name,supported", [
    (3000, "CUDNN_STATUS_NOT_SUPPORTED", True),
    (3003, "CUDNN_STATUS_NOT_SUPPORTED_DATA_TYPE", True),
    (2000, "CUDNN_STATUS_BAD_PARAM", False),
    (4000, "CUDNN_STATUS_INTERNAL_ERROR", False),
    (7777, "CUDNN_STATUS_7777", False),
])
def test_status_becomes_an_error_naming_the_layer(fresh, monkeypatch, status, name, supported):
    fake = _FakeLib(cudnnGetVersion=lambda: 92800, cudnnGetErrorString=lambda s: b"why it failed")
    monkeypatch.setattr(L, "_load", lambda path: fake)
    with pytest.raises(L.CudnnError) as e:
        L.check(status, "conv4 forward (w float32(4, 3, 3, 3), x float32(2, 3, 8, 8))",
                call="cudnnConvolutionForward")
    msg = str(e.value)
    assert name in msg and str(status) in msg and "why it failed" in msg
    assert "conv4 forward" in msg and "(2, 3, 8, 8)" in msg and "cudnnConvolutionForward" in msg
    assert "KNETC_CUDNN=0" in msg
    assert e.value.status == status and e.value.not_supported is (not not supported)


def test_status_error_without_the_library(fresh, monkeypatch, tmp_path):
    monkeypatch.setenv("KNETC_CUDNN_LIBRARY", str(tmp_path / "nope.so"))
    with pytest.raises(L.CudnnError, match="CUDNN_STATUS_BAD_PARAM_NULL_POINTER"):
        L.check(2002, "pool forward")


def test_dtype_codes():
    assert [L.dtype_code(t) for t in (np.float32, np.float64, np.float16)] == [0, 1, 2]
    with pytest.raises(L.CudnnError, match="int32"):
        L.dtype_code(np.int32)
    assert isinstance(L.scalar(2.0, np.float64), ctypes.c_double)
    assert isinstance(L.scalar(2.0, np.float16), ctypes.c_float)


# ------------------------------------------------------------------ descriptor arguments

def test_tensor_args_contiguous_and_transposed():
    a = np.empty((2, 3, 4, 5), np.float32)
    assert D.tensor_args(a.shape, a.strides, a.itemsize) == ([2, 3, 4, 5], [60, 20, 5, 1])
    t = a.transpose(0, 1, 3, 2)
    assert D.tensor_args(t.shape, t.strides, t.itemsize) == ([2, 3, 5, 4], [60, 20, 1, 5])
    b = np.empty((6, 7), np.float16)
    assert D.tensor_args(b.shape, b.strides, b.itemsize) == ([6, 7, 1, 1], [7, 1, 1, 1])
    c = np.empty((2, 1, 3), np.float64)[:, :, ::1]
    dims, strides = D.tensor_args(c.shape, c.strides, c.itemsize)
    assert dims == [2, 1, 3, 1] and strides[0] == 3 and strides[2] == 1 and min(strides) > 0
    assert D.packed_strides((2, 3, 4)) == [12, 4, 1]


@pytest.mark.parametrize("make", [
    lambda: np.empty((2, 3, 4, 5), np.float32)[:, ::-1],            # negative stride
    lambda: np.broadcast_to(np.empty((1, 3, 4, 5), np.float32), (2, 3, 4, 5)),  # zero stride
    lambda: np.empty((2, 0, 4, 5), np.float32),                     # empty
    lambda: np.empty((1,) * 9, np.float32),                         # too many dims
    lambda: np.empty(40, np.uint8)[1:].view(np.uint8).reshape(3, 13)[:, :12:3],  # fine (control)
])
def test_tensor_args_refusals(make):
    a = make()
    if a.dtype == np.uint8:
        assert D.tensor_args(a.shape, a.strides, a.itemsize)[1][:2] == [13, 3]
        return
    with pytest.raises(L.CudnnError):
        D.tensor_args(a.shape, a.strides, a.itemsize)


def test_filter_and_conv_args():
    assert D.filter_args((4, 3, 5, 5)) == [4, 3, 5, 5]
    with pytest.raises(L.CudnnError):
        D.filter_args((4, 3))
    assert D.conv_args(2, 1, (2, 3), 1, 0) == ([1, 1], [2, 3], [1, 1], 0, 1)
    assert D.conv_args(2, (0, 2), 1, 2, 1, groups=3) == ([0, 2], [1, 1], [2, 2], 1, 3)
    for bad in (dict(padding=-1), dict(stride=0), dict(dilation=0), dict(mode=2),
                dict(groups=0), dict(padding=(1, 2, 3)), dict(stride=1.5)):
        args = dict(padding=0, stride=1, dilation=1, mode=0) | bad
        groups = args.pop("groups", 1)
        with pytest.raises(L.CudnnError):
            D.conv_args(2, args["padding"], args["stride"], args["dilation"], args["mode"], groups)


@pytest.mark.parametrize("padding,stride,dilation", [(0, 1, 1), (1, 2, 1), ((2, 1), (1, 3), 2)])
def test_conv_output_shape_matches_runtime_conv(padding, stride, dilation):
    r = np.random.default_rng(0)
    w, x = r.standard_normal((4, 3, 3, 2)), r.standard_normal((2, 3, 11, 9))
    pads, strides, dils, _, _ = D.conv_args(2, padding, stride, dilation, 0)
    y = C.conv4(w, x, padding=padding, stride=stride, dilation=dilation)
    assert D.conv_output_shape(x.shape, w.shape, pads, strides, dils) == y.shape
    z = C.deconv4(w.transpose(1, 0, 2, 3), x, padding=padding, stride=stride, dilation=dilation)
    assert K.deconv_shape(w.transpose(1, 0, 2, 3).shape, x.shape, padding, stride,
                          dilation) == z.shape


def test_conv_output_shape_groups():
    assert D.conv_output_shape((2, 6, 8, 8), (4, 3, 3, 3), [1, 1], [1, 1], [1, 1], 2) == \
        (2, 4, 8, 8)
    with pytest.raises(L.CudnnError, match="groups"):
        D.conv_output_shape((2, 6, 8, 8), (4, 2, 3, 3), [1, 1], [1, 1], [1, 1], 2)
    with pytest.raises(L.CudnnError, match="groups"):
        D.conv_output_shape((2, 6, 8, 8), (5, 3, 3, 3), [1, 1], [1, 1], [1, 1], 2)
    with pytest.raises(L.CudnnError, match="too small"):
        D.conv_output_shape((2, 3, 2, 2), (4, 3, 3, 3), [0, 0], [1, 1], [1, 1])


def test_math_and_compute_types():
    assert D.math_type(np.float32) == D.MATH["fma"]  # no TF32: matches NumPy in float32
    assert D.math_type(np.float32, allow_tf32=True) == D.MATH["default"]
    assert D.math_type(np.float16) == D.MATH["tensor_op"]
    assert D.math_type(np.float64) == D.MATH["default"]
    assert [D.compute_type(t) for t in (np.float16, np.float32, np.float64)] == [0, 0, 1]


def test_pool_args_and_modes():
    assert D.pool_args(0, 2, 0, None) == (0, 1, [2, 2], [0, 0], [2, 2])
    assert D.pool_args(2, (3, 2), (1, 0), 1) == (2, 1, [3, 2], [1, 0], [1, 1])
    assert [D.pool_args(m, 2, 0, None)[0] for m in range(4)] == [0, 1, 2, 3]
    for bad in ((4, 2, 0, None), (0, 2, 2, None), (0, 0, 0, None), (0, 2, 0, 0)):
        with pytest.raises(L.CudnnError):
            D.pool_args(*bad)


@pytest.mark.parametrize("window,padding,stride", [(2, 0, None), (3, 1, 2), ((3, 2), (1, 0), 1)])
def test_pool_and_unpool_shapes_match_runtime_conv(window, padding, stride):
    x = np.random.default_rng(1).standard_normal((2, 3, 9, 8))
    kw = dict(window=window, padding=padding, stride=stride)
    assert K.pool_output_shape(x.shape, window, padding, stride) == C.pool(x, **kw).shape
    for mode in range(4):
        shape, pmode, _, size = K.unpool_setup(x.shape, window, padding, stride, mode)
        assert shape == C.unpool(x, mode=mode, **kw).shape
        assert pmode == (2 if mode == 1 else 1)
        assert size == np.prod(np.broadcast_to(window, 2))


def test_softmax_and_bn_shapes():
    assert K.softmax_shape((3, 4, 5), 1) == (3, 4, 5, 1)
    assert K.softmax_shape((3, 4, 5), -1) == (12, 5, 1, 1)
    assert K.softmax_shape((3, 4, 5), 0) == (1, 3, 20, 1)
    with pytest.raises(L.CudnnError):
        K.softmax_shape((3, 4), 2)
    assert K.bn_shape((8, 3)) == (8, 3, 1, 1) and K.bn_shape((8, 3, 7)) == (8, 3, 7, 1)
    assert K.bn_shape((8, 3, 2, 2, 2)) == (8, 3, 2, 2, 2)
    with pytest.raises(L.CudnnError):
        K.bn_shape((1, 2, 3, 4, 5, 6))
    assert K.bn_param_dtype(np.float16) == np.float32 and K.bn_param_dtype(np.float64) == np.float64


def test_perf_struct_layout():
    # cudnnConvolution*AlgoPerf_t: int, int, float, size_t, int, int, int[3] (x86-64: 48 bytes)
    assert ctypes.sizeof(K.AlgoPerf) == 48 and K.AlgoPerf.memory.offset == 16


# ------------------------------------------------------------------ algorithm cache

def test_algo_key_separates_everything():
    base = ("fwd", (2, 3, 8, 8), (4, 3, 3, 3), (2, 4, 8, 8), np.float32, [1, 1], [1, 1], [1, 1],
            0, 1, 3, 0)
    k = K.algo_key(*base)
    assert K.algo_key(*base) == k and hash(k) == hash(K.algo_key(*base))
    for i, other in enumerate([("bwd_data",), None, (4, 3, 5, 5), (2, 4, 6, 6), np.float16,
                               [0, 0], [2, 2], [2, 2], 1, 3, 1, 1]):
        if other is None:
            other = (3, 3, 8, 8)
        changed = list(base)
        changed[i] = other[0] if i == 0 else other
        assert K.algo_key(*changed) != k, i
    with pytest.raises(ValueError):
        K.algo_key("sideways", *base[1:])


def test_choose_algo_skips_failures_and_caches(monkeypatch):
    monkeypatch.setattr(K, "_algos", {})
    calls = []

    def fake_call(name, h, *rest, what=""):
        calls.append(name)
        count, perfs = rest[-2]._obj, rest[-1]
        perfs[0].algo, perfs[0].status = 7, 3000       # not supported: skipped
        perfs[1].algo, perfs[1].status = 2, 0          # its workspace query fails: skipped
        perfs[2].algo, perfs[2].status = 5, 0
        count.value = 3

    def fake_fn(name):
        def size(h, *rest):
            rest[-1]._obj.value = 1024
            return 0 if rest[-2] == 5 else 3000
        return size

    monkeypatch.setattr(L, "call", fake_call)
    monkeypatch.setattr(L, "fn", fake_fn)
    key = K.algo_key("fwd", (1, 1, 4, 4), (1, 1, 3, 3), (1, 1, 2, 2), np.float32, [0, 0],
                     [1, 1], [1, 1], 1, 1, 3, 0)
    assert K.choose_algo(key, 0, (1, 2, 3, 4), "test") == (5, 1024)
    assert K.choose_algo(key, 0, (1, 2, 3, 4), "test") == (5, 1024)
    assert calls == ["cudnnGetConvolutionForwardAlgorithm_v7"]


def test_choose_algo_none_usable_declines(monkeypatch):
    monkeypatch.setattr(K, "_algos", {})

    def fake_call(name, h, *rest, what=""):
        rest[-2]._obj.value = 0
    monkeypatch.setattr(L, "call", fake_call)
    key = K.algo_key("bwd_filter", (1,), (1,), (1,), np.float32, [0], [1], [1], 1, 1, 3, 0)
    with pytest.raises(L.CudnnError) as e:
        K.choose_algo(key, 0, (1, 2, 3, 4), "conv test")
    assert e.value.not_supported


# ------------------------------------------------------------------ dispatch

@pytest.fixture
def poisoned(monkeypatch):
    """Every way into cuDNN raises: NumPy calls must not take any of them."""
    def boom(*a, **k):
        raise AssertionError("cuDNN touched for NumPy arrays")
    for name in ("lib", "available", "handle", "fn", "call"):
        monkeypatch.setattr(L, name, boom)
    monkeypatch.setattr(cudnn, "available", boom)
    for name in ("conv4", "conv4_w", "conv4_x", "deconv4", "pool", "pool_x", "unpool",
                 "unpool_x", "batchnorm_train", "batchnorm_infer", "batchnorm_dx",
                 "batchnorm_dparams"):
        monkeypatch.setattr(K, name, boom)


def test_numpy_never_touches_cudnn(poisoned):
    r = np.random.default_rng(0)
    w, x = r.standard_normal((4, 3, 3, 3)), r.standard_normal((2, 3, 8, 8))
    y = C.conv4(w, x, padding=1)
    C.conv4_w(w, x, y, padding=1)
    C.conv4_x(w, x, y, padding=1)
    C.deconv4(w, y, padding=1)
    p = C.pool(x)
    C.pool_x(x, p, p)
    C.unpool_x(p, None, C.unpool(p))
    m = LY.bnmoments()
    yb, saved = LY.batchnorm_forward(x, m, LY.bnparams(3), training=True)
    LY.batchnorm_dx(x, LY.bnparams(3), saved, yb)
    LY.batchnorm_dparams(x, LY.bnparams(3), saved, yb)
    LY.batchnorm(x, m, LY.bnparams(3), training=False)
    assert not cudnn.enabled(x, w)
    K.softmax(x, 1)
    K.logsoftmax_backward(K.logsoftmax(x, 0), x, 0)


@pytest.fixture
def fake_gpu(monkeypatch):
    """Pretend the arrays are CuPy's and cuDNN loads; record which cuDNN layer is called."""
    monkeypatch.setattr(cudnn._backend, "array_module", lambda *a: types.SimpleNamespace())
    monkeypatch.setattr(cudnn, "available", lambda: True)
    monkeypatch.delenv("KNETC_CUDNN", raising=False)
    seen = []

    def make(name, result):
        def layer(*args, **kwargs):
            seen.append((name, kwargs))
            return result
        monkeypatch.setattr(K, name, layer)
    return seen, make


def test_cupy_arrays_take_the_cudnn_path(fake_gpu):
    seen, make = fake_gpu
    w, x = np.ones((4, 3, 3, 3)), np.ones((2, 3, 8, 8))
    for name in ("conv4", "deconv4", "pool", "unpool"):
        make(name, name)
    assert C.conv4(w, x, padding=1, mode=1) == "conv4"
    assert seen[-1] == ("conv4", dict(padding=1, stride=1, dilation=1, mode=1, alpha=1))
    assert C.deconv4(w, x) == "deconv4"
    assert C.pool(x, window=3, mode=2) == "pool"
    assert seen[-1] == ("pool", dict(window=3, padding=0, stride=None, mode=2, alpha=1))
    assert C.unpool(x) == "unpool"


def test_declined_layers_run_the_plain_code(fake_gpu):
    seen, make = fake_gpu
    for name in ("conv4", "conv4_x", "pool"):
        make(name, NotImplemented)
    r = np.random.default_rng(2)
    w, x = r.standard_normal((4, 3, 3, 3)), r.standard_normal((2, 3, 8, 8))
    y = C.conv4(w, x, padding=1)
    assert isinstance(y, np.ndarray) and y.shape == (2, 4, 8, 8)
    assert C.conv4_x(w, x, y, padding=1).shape == x.shape
    assert C.pool(x).shape == (2, 3, 4, 4)
    assert [s[0] for s in seen] == ["conv4", "conv4_x", "pool"]


def test_switch_off_with_env(fake_gpu, monkeypatch):
    seen, make = fake_gpu
    make("conv4", "conv4")
    monkeypatch.setenv("KNETC_CUDNN", "0")
    assert isinstance(C.conv4(np.ones((1, 1, 2, 2)), np.ones((1, 1, 3, 3))), np.ndarray)
    assert seen == []


def test_batchnorm_dispatch(fake_gpu):
    seen, make = fake_gpu
    x = np.random.default_rng(3).standard_normal((4, 3, 2, 2))
    m = LY.bnmoments()
    make("batchnorm_train", ("y", "saved"))
    make("batchnorm_infer", "y_eval")
    assert LY.batchnorm_forward(x, m, training=True) == ("y", "saved")
    assert seen[-1] == ("batchnorm_train", dict(eps=1e-5, momentum=None, update=True))
    assert LY.batchnorm(x, m, training=False) == "y_eval"
    y, saved = LY.batchnorm_forward(x, m, training=False)  # the gradient needs xhat: plain code
    assert isinstance(y, np.ndarray) and saved[2] is False
    assert [s[0] for s in seen] == ["batchnorm_train", "batchnorm_infer"]


def test_bnsaved_reads_as_the_plain_triple():
    r = np.random.default_rng(4)
    x = r.standard_normal((5, 3, 2)).astype(np.float32)
    p = r.standard_normal(6).astype(np.float32)
    dy = r.standard_normal(x.shape).astype(np.float32)
    _, plain = LY.batchnorm_forward(x, None, p)
    mean = x.mean(axis=(0, 2))
    invvar = 1 / np.sqrt(x.var(axis=(0, 2)) + 1e-5)
    saved = K.BNSaved(x, mean, invvar, 1e-5)
    xhat, invstd, batch = saved
    np.testing.assert_allclose(xhat, plain[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(invstd, plain[1], rtol=1e-5)
    assert batch is True and len(saved) == 3 and saved[2] is True
    # the plain backward accepts it (as after a declined cuDNN backward)
    np.testing.assert_allclose(LY.batchnorm_dparams(x, p, tuple(saved), dy),
                               LY.batchnorm_dparams(x, p, plain, dy), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_softmax_functions_on_numpy(axis):
    r = np.random.default_rng(5)
    x, dy = r.standard_normal((3, 4, 5)), r.standard_normal((3, 4, 5))
    y, ly = K.softmax(x, axis), K.logsoftmax(x, axis)
    np.testing.assert_allclose(y.sum(axis=axis), 1)
    np.testing.assert_allclose(np.log(y), ly, atol=1e-12)
    eps = 1e-6
    h = r.standard_normal(x.shape)  # directional derivatives vs the backward functions
    for f, back, out in ((K.softmax, K.softmax_backward, y), (K.logsoftmax,
                                                               K.logsoftmax_backward, ly)):
        num = ((f(x + eps * h, axis) - f(x - eps * h, axis)) / (2 * eps) * dy).sum()
        np.testing.assert_allclose((back(out, dy, axis) * h).sum(), num, rtol=1e-6)


def test_selftest_without_a_library(fresh, monkeypatch, tmp_path):
    monkeypatch.setenv("KNETC_CUDNN_LIBRARY", str(tmp_path / "nope.so"))
    out = cudnn.selftest()
    assert out["library"].endswith("nope.so") and "CudnnUnavailable" in out["version"]


# ------------------------------------------------------------------ emulated library: call counts
# libcudnn is replaced by ctypes callbacks built from the declared prototypes (every argument goes
# through the same ctypes conversions as for the real library) that record each call and fill the
# out-parameters; CuPy by NumPy arrays whose ``.data.ptr`` is their host address. The emulation
# computes nothing: it checks which cuDNN calls a layer call makes.

import sys  # noqa: E402


class _Ptr:
    def __init__(self, p):
        self.ptr = p


class _FakeArray(np.ndarray):
    @property
    def data(self):
        return _Ptr(self.ctypes.data)


def _fa(a):
    return np.asarray(a).view(_FakeArray)


def _fake_cupy(current_stream):
    cp = types.ModuleType("cupy")
    cp.ndarray = _FakeArray
    cp.uint8, cp.int32 = np.uint8, np.int32
    cp.empty = lambda shape, dtype=np.float32: _fa(np.zeros(shape, dtype))
    cp.empty_like = lambda a: _fa(np.zeros_like(a))
    cp.zeros = lambda shape, dtype=np.float32: _fa(np.zeros(shape, dtype))
    cp.ones = lambda shape, dtype=np.float32: _fa(np.ones(shape, dtype))
    cp.full = lambda shape, v, dtype=None: _fa(np.full(shape, v, dtype))
    cp.asarray = lambda a, dtype=None: _fa(np.array(a, dtype))
    cp.ascontiguousarray = lambda a, dtype=None: _fa(np.ascontiguousarray(a, dtype))
    cp.concatenate = lambda arrays: _fa(np.concatenate(arrays))
    cp.cuda = types.SimpleNamespace(
        Device=lambda: types.SimpleNamespace(id=0),
        runtime=types.SimpleNamespace(getDevice=lambda: 0),
        get_current_stream=current_stream)
    return cp


class _Emulator:
    """Records every cuDNN call by name; creates descriptors, reports one algorithm."""

    def __init__(self, wsbytes=256):
        self.calls, self.next, self.wsbytes = [], 1000, wsbytes

    def impl(self, name):
        def f(*args):
            self.calls.append(name)
            if name.startswith("cudnnCreate"):
                self.next += 1
                args[0][0] = self.next
            elif name.endswith("Algorithm_v7"):
                args[-2][0] = 1
                perf = K.AlgoPerf.from_address(args[-1])
                perf.algo, perf.status = 1, 0
            elif name.endswith("WorkspaceSize"):
                args[-1][0] = self.wsbytes
            return 0
        return f


@pytest.fixture
def emu(monkeypatch):
    """The emulated library and a fake CuPy, with every cache of the binding empty."""
    e = _Emulator()
    keep = {}

    def fn(name):
        if name not in keep:
            restype, argtypes = L.PROTOTYPES[name]
            keep[name] = ctypes.CFUNCTYPE(restype, *argtypes)(e.impl(name))
        return keep[name]
    e.stream = types.SimpleNamespace(ptr=5)
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(lambda: e.stream))
    monkeypatch.setattr(L, "fn", fn)
    for mod, name in _CACHES:
        monkeypatch.setattr(mod, name, type(getattr(mod, name))())
    return e


_CACHES = [(L, "_handles"), (L, "_workspaces"), (L, "_scalars"), (K, "_algos"), (K, "_plans"),
           (D, "_cache")]


def _layer_calls():
    r = np.random.default_rng(0)
    f32 = np.float32
    w, x = _fa(r.standard_normal((4, 3, 3, 3)).astype(f32)), _fa(r.standard_normal((2, 3, 8, 8)).astype(f32))
    dy = _fa(np.ones((2, 4, 8, 8), f32))
    p = _fa(np.ones((2, 3, 4, 4), f32))
    prm = _fa(np.ones(6, f32))
    m = types.SimpleNamespace(momentum=0.1, mean=_fa(np.zeros(3, f32)), var=_fa(np.ones(3, f32)))
    return {
        "conv_forward": (lambda: K.conv4(w, x, padding=1), ["cudnnConvolutionForward"]),
        "conv_backward_data": (lambda: K.conv4_x(w, x, dy, padding=1),
                               ["cudnnConvolutionBackwardData"]),
        "conv_backward_filter": (lambda: K.conv4_w(w, x, dy, padding=1),
                                 ["cudnnConvolutionBackwardFilter"]),
        "deconv4": (lambda: K.deconv4(w.transpose(1, 0, 2, 3).copy().view(_FakeArray), x),
                    ["cudnnConvolutionBackwardData"]),
        "pool": (lambda: K.pool(x), ["cudnnPoolingForward"]),
        "pool_x": (lambda: K.pool_x(x, p, p), ["cudnnPoolingBackward"]),
        "unpool": (lambda: K.unpool(p), ["cudnnPoolingBackward"]),
        "unpool_x": (lambda: K.unpool_x(p, None, x), ["cudnnPoolingForward"]),
        "batchnorm_train": (lambda: K.batchnorm_train(x, m, prm),
                            ["cudnnBatchNormalizationForwardTraining"]),
        "batchnorm_infer": (lambda: K.batchnorm_infer(x, m, prm),
                            ["cudnnBatchNormalizationForwardInference"]),
        "batchnorm_dx": (lambda: K.batchnorm_dx(x, prm, K.batchnorm_train(x, m, prm)[1], x),
                         ["cudnnBatchNormalizationForwardTraining",
                          "cudnnBatchNormalizationBackward"]),
        "softmax": (lambda: K._softmax_fwd(x, 1, K.SOFTMAX_ACCURATE), ["cudnnSoftmaxForward"]),
        "logsoftmax_backward": (lambda: K._softmax_bwd(x, x, -1, K.SOFTMAX_LOG),
                                ["cudnnSoftmaxBackward"]),
    }


@pytest.mark.parametrize("name", list(_layer_calls()))
def test_repeated_layer_call_makes_only_the_compute_call(emu, name):
    run, expected = _layer_calls()[name]
    assert run() is not NotImplemented
    assert any(c.startswith("cudnnSet") for c in emu.calls)  # the first call built descriptors
    emu.calls.clear()
    run()
    assert emu.calls == expected


def test_workspace_reused_per_stream_and_none_for_zero(emu):
    assert L.workspace(0) == (None, None)
    assert L._workspaces == {}                      # zero bytes allocate nothing
    b1, p1 = L.workspace(100)
    b2, p2 = L.workspace(64)
    assert b2 is b1 and p2 == p1                    # same stream: the same buffer
    b3, _ = L.workspace(1000)
    assert b3 is not b1 and b3.nbytes == 1000        # grown
    emu.stream = types.SimpleNamespace(ptr=6)       # another current stream: a fresh buffer
    b4, _ = L.workspace(10)
    assert b4 is not b3
    assert L.workspace(10)[0] is b4


def test_error_context_is_built_only_on_failure(emu, monkeypatch):
    built = []

    def what():
        built.append(1)
        return "conv4 forward (x float32(2, 3, 8, 8))"
    L.call("cudnnSetStream", None, None, what=what)
    assert built == []
    monkeypatch.setattr(emu, "impl", None)          # (callbacks already made keep working)
    fail = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)(lambda p: 3000)
    monkeypatch.setattr(L, "fn", lambda name: fail)
    with pytest.raises(L.CudnnError) as e:
        L.call("cudnnDestroy", None, what=what)
    assert built == [1] and "conv4 forward (x float32(2, 3, 8, 8))" in str(e.value)
    assert "in cudnnDestroy" in str(e.value) and e.value.not_supported
    with pytest.raises(L.CudnnError, match="for cudnnDestroy: CUDNN_STATUS_NOT_SUPPORTED"):
        L.call("cudnnDestroy", None)                # no context: the function's name


def test_descriptor_cache_keys_hold_dtype_strides_and_device(emu):
    a = _fa(np.zeros((2, 3, 4, 5), np.float32))
    t = a.transpose(0, 1, 3, 2).copy().transpose(0, 1, 3, 2).view(_FakeArray)  # same shape
    assert D.tensor(a) is D.tensor(a)
    assert D.tensor(t) is not D.tensor(a)
    assert D.tensor(a.astype(np.float64).view(_FakeArray)) is not D.tensor(a)
    assert D.tensor(a, device=1) is not D.tensor(a, device=0)
    assert D.filt(np.float32, (4, 3, 3, 3)) is not D.filt(np.float16, (4, 3, 3, 3))
    k1 = _layer_calls()["conv_forward"][0]
    y1 = k1()
    before = len(K._plans)
    K.conv4(_fa(np.zeros((4, 3, 3, 3), np.float64)), _fa(np.zeros((2, 3, 8, 8), np.float64)),
            padding=1)
    assert len(K._plans) == before + 1 and y1.dtype == np.float32
