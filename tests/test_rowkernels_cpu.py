"""The row kernels (runtime/rowkernels.py) without a GPU.

* dispatch: NumPy arrays never reach the kernels; a CuPy-like array does only in the supported
  case (2-D, C-contiguous, float32/64, last axis, KNETC_ROWKERNELS not 0), and a declined call
  runs the array code;
* the kernel source itself: compiled for the GPU with ``nvcc -ptx`` when nvcc is installed, and
  run on the CPU by g++ with a small shim (one POSIX thread per CUDA thread, a barrier for
  ``__syncthreads``, shuffles through memory): the Python functions of ``rowkernels`` launch it
  exactly as they launch the CuPy kernel (each argument checked against the kernel's C
  parameter list), and the results are compared with NumPy's code in ``prims``.
"""
from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
import types

import numpy as np
import pytest

from knetc.runtime import prims as P
from knetc.runtime import rowkernels as R

SHAPES = [(1, 1), (3, 7), (5, 33), (3, 300), (1, 5000), (9, 3)]


def _numpy_reference(name, x, labels=None, dy=1.0, average=True):
    """The prims function run with rowkernels switched off (the array code)."""
    fn = getattr(P, name)
    if name in ("logp", "softmax"):
        return fn(x)
    if name == "nll":
        return fn(x, labels, average)
    return fn(x, labels, dy, average)


# ------------------------------------------------------------------ dispatch

@pytest.fixture
def poisoned(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("rowkernels reached with NumPy arrays")
    for name in ("logp_rows", "softmax_rows", "nll_rows", "nll_grad_rows", "_kernel"):
        monkeypatch.setattr(R, name, boom)


def test_numpy_never_takes_the_row_kernels(poisoned):
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal((6, 5)).astype(dtype)
        y = rng.integers(0, 5, 6)
        lp = P.logp(x)
        np.testing.assert_allclose(np.exp(lp).sum(1), 1, rtol=1e-5)
        np.testing.assert_allclose(P.softmax(x), np.exp(lp), rtol=1e-5)
        assert np.isclose(P.nll(x, y), -lp[np.arange(6), y].mean(), rtol=1e-5)
        g = P.nll_grad(x, y, 1.0)
        assert g.dtype == dtype and g.shape == x.shape
    assert not P._rows_fast(np.ones((2, 3), np.float32))


class Fake(np.ndarray):
    """Stands for a CuPy array: ``backend.array_module`` is made to say it is not NumPy's."""


def _fake(a):
    return np.ascontiguousarray(a).view(Fake)


@pytest.fixture
def fake_gpu(monkeypatch):
    """``Fake`` arrays look like CuPy's to the dispatch; record which row kernel is called."""
    real = P._backend.array_module
    cupy_like = types.SimpleNamespace(__name__="cupy_like")
    monkeypatch.setattr(P._backend, "array_module",
                        lambda *a: cupy_like if any(isinstance(v, Fake) for v in a) else real(*a))
    monkeypatch.delenv("KNETC_ROWKERNELS", raising=False)
    seen = []

    def make(name, result):
        def fn(*args):
            seen.append(name)
            return result
        monkeypatch.setattr(R, name, fn)
    for name in ("logp_rows", "softmax_rows", "nll_rows", "nll_grad_rows"):
        make(name, name)
    return seen, make


def test_cupy_like_arrays_take_the_row_kernels(fake_gpu):
    seen, _ = fake_gpu
    for dtype in (np.float32, np.float64):
        x, y = _fake(np.ones((4, 3), dtype)), _fake(np.zeros(4, np.int64))
        assert P.logp(x) == "logp_rows" and P.logp(x, axis=1) == "logp_rows"
        assert P.softmax(x) == "softmax_rows"
        assert P.nll(x, y) == "nll_rows"
        assert P.nll_grad(x, y, 1.0) == "nll_grad_rows"
    assert len(seen) == 10


@pytest.mark.parametrize("why, x, axis", [
    ("numpy", np.ones((4, 3), np.float32), -1),
    ("axis 0", _fake(np.ones((4, 3), np.float32)), 0),
    ("3-D", _fake(np.ones((2, 4, 3), np.float32)), -1),
    ("1-D", _fake(np.ones(3, np.float32)), -1),
    ("not contiguous", _fake(np.ones((4, 6), np.float32))[:, ::2], -1),
    ("transposed", _fake(np.ones((3, 4), np.float32)).T, -1),
    ("float16", _fake(np.ones((4, 3), np.float16)), -1),
    ("int", _fake(np.ones((4, 3), np.int64)), -1),
    ("empty", _fake(np.ones((0, 3), np.float32)), -1),
    ("no classes", _fake(np.ones((4, 0), np.float32)), -1),
])
def test_other_arrays_run_the_array_code(fake_gpu, why, x, axis):
    seen, _ = fake_gpu
    assert not P._rows_fast(x, axis), why
    if x.size:
        assert isinstance(P.softmax(x, axis=axis), np.ndarray)
        assert isinstance(P.logp(x, axis=axis), np.ndarray)
    assert seen == []


def test_switch_off_with_env(fake_gpu, monkeypatch):
    seen, _ = fake_gpu
    x = _fake(np.ones((4, 3), np.float32))
    monkeypatch.setenv("KNETC_ROWKERNELS", "0")
    assert isinstance(P.softmax(x), np.ndarray) and isinstance(P.nll(x, np.zeros(4, int)), Fake)
    assert seen == []
    monkeypatch.setenv("KNETC_ROWKERNELS", "1")
    assert P.softmax(x) == "softmax_rows"


def test_declined_nll_runs_the_array_code(fake_gpu, monkeypatch):
    seen, make = fake_gpu
    make("nll_rows", NotImplemented)
    make("nll_grad_rows", NotImplemented)
    # the array code of nll calls logp / softmax, which take the row kernels: NumPy's here
    monkeypatch.setattr(R, "logp_rows", lambda x: P.logp(np.asarray(x)))
    monkeypatch.setattr(R, "softmax_rows", lambda x: P.softmax(np.asarray(x)))
    rng = np.random.default_rng(1)
    s, y = rng.standard_normal((5, 4)), rng.integers(0, 4, 5)
    np.testing.assert_allclose(P.nll(_fake(s), y), P.nll(s, y))
    np.testing.assert_allclose(P.nll_grad(_fake(s), y, 2.0), P.nll_grad(s, y, 2.0))
    assert seen == ["nll_rows", "nll_grad_rows"]


def test_label_and_dy_checks():
    s = np.ones((4, 3), np.float32)
    assert R.label_ctype(s, np.zeros(4, np.int64)) == "long long"
    assert R.label_ctype(s, np.zeros(4, np.int32)) == "int"
    for bad in (np.zeros(4, np.uint8), np.zeros(4, np.int16), np.zeros(3, np.int64),
                np.zeros((4, 1), np.int64), np.zeros(8, np.int64)[::2], [0, 1, 2, 0],
                np.zeros(4, np.float32)):
        assert R.label_ctype(s, bad) is None
    y = np.zeros(4, np.int64)
    assert R.nll_rows(s, y[::1].astype(np.uint8)) is NotImplemented
    assert R.nll_grad_rows(s, y, np.ones(1, np.float32)) is NotImplemented  # not 0-d
    assert R.nll_grad_rows(s, y, np.array(1 + 2j)) is NotImplemented
    assert R.nll_grad_rows(s, y, "1") is NotImplemented


def test_block_sizes():
    assert [R.block_size(n) for n in (1, 32, 33, 64, 65, 128, 129, 4096, 4097, 10**6)] == \
        [32, 32, 64, 64, 128, 128, 256, 256, 512, 512]
    assert all(R.block_size(n) % 32 == 0 for n in range(1, 9000, 37))


# ------------------------------------------------------------------ the kernel source

_DECL = re.compile(r'extern "C" __global__ void (\w+)\(([^)]*)\)')


def _signatures(src):
    """Each kernel's parameters as type words, e.g. ['const', 'real*'] (no __restrict__)."""
    return {name: [[w for w in q.split()[:-1] if w != "__restrict__"] for q in params.split(",")]
            for name, params in _DECL.findall(src)}


def test_source_declares_the_four_kernels():
    for real in ("float", "double"):
        for label in ("int", "long long"):
            sig = _signatures(R.kernel_source(real, label))
            assert set(sig) == set(R.KERNEL_NAMES)
            assert [" ".join(p) for p in sig["knetc_nll_grad_rows"]] == [
                "const real*", "const label_t*", "const real*", "const double", "const int",
                "const double", "real*", "const int"]
            assert f"typedef {real} real;" in R.kernel_source(real, label)
    with pytest.raises(ValueError):
        R.kernel_source("half")


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc (compiles only, no GPU)")
@pytest.mark.parametrize("real, label", [("float", "int"), ("double", "long long")])
def test_source_compiles_for_the_gpu(tmp_path, real, label):
    cu = tmp_path / "rows.cu"
    cu.write_text(R.kernel_source(real, label))
    r = subprocess.run(["nvcc", "-ptx", "-arch=sm_90", "-Werror", "all-warnings", str(cu), "-o",
                        str(tmp_path / "rows.ptx")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    ptx = (tmp_path / "rows.ptx").read_text()
    for name in R.KERNEL_NAMES:
        assert f".entry {name}(" in ptx


# The CUDA built-ins the kernels use, for g++: one POSIX thread per CUDA thread of one block at
# a time, __syncthreads a barrier, __shfl_xor_sync an exchange through memory between two
# barriers (the kernels call it from every thread of the block together), __shared__ static.
_SHIM = r"""
#include <cmath>
#include <cstring>
#include <functional>
#include <pthread.h>
#include <thread>
#include <vector>
struct knetc_dim3 { unsigned x, y, z; };
static thread_local knetc_dim3 threadIdx, blockIdx;
static knetc_dim3 blockDim, gridDim;
static pthread_barrier_t knetc_barrier;
static double knetc_slots[1024];
static void __syncthreads() { pthread_barrier_wait(&knetc_barrier); }
template <class T> static T knetc_shfl_xor(T v, int o) {
    knetc_slots[threadIdx.x] = (double)v;
    __syncthreads();
    T r = (T)knetc_slots[threadIdx.x ^ o];
    __syncthreads();
    return r;
}
static float __shfl_xor_sync(unsigned, float v, int o) { return knetc_shfl_xor(v, o); }
static double __shfl_xor_sync(unsigned, double v, int o) { return knetc_shfl_xor(v, o); }
static float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
static double __longlong_as_double(long long i) { double f; std::memcpy(&f, &i, 8); return f; }
using std::exp; using std::log;
static void knetc_run(int rows, int block, std::function<void()> body) {
    blockDim = {(unsigned)block, 1, 1};
    gridDim = {(unsigned)rows, 1, 1};
    pthread_barrier_init(&knetc_barrier, nullptr, block);
    for (int b = 0; b < rows; ++b) {
        std::vector<std::thread> ts;
        for (int t = 0; t < block; ++t)
            ts.emplace_back([=] { threadIdx = {(unsigned)t, 0, 0}; blockIdx = {(unsigned)b, 0, 0};
                                  body(); });
        for (auto& t : ts) t.join();
    }
    pthread_barrier_destroy(&knetc_barrier);
}
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
"""

_LAUNCHERS = r"""
extern "C" void run_knetc_logp_rows(int rows, int block, const real* x, real* y, int n) {
    knetc_run(rows, block, [&] { knetc_logp_rows(x, y, n); }); }
extern "C" void run_knetc_softmax_rows(int rows, int block, const real* x, real* y, int n) {
    knetc_run(rows, block, [&] { knetc_softmax_rows(x, y, n); }); }
extern "C" void run_knetc_nll_rows(int rows, int block, const real* x, const label_t* l,
                                   real* out, int n, double div) {
    knetc_run(rows, block, [&] { knetc_nll_rows(x, l, out, n, div); }); }
extern "C" void run_knetc_nll_grad_rows(int rows, int block, const real* x, const label_t* l,
                                        const real* dyp, double dyval, int use_ptr, double div,
                                        real* y, int n) {
    knetc_run(rows, block, [&] { knetc_nll_grad_rows(x, l, dyp, dyval, use_ptr, div, y, n); }); }
"""

_NP_OF_C = {"float": np.float32, "double": np.float64, "int": np.int32, "long long": np.int64}


class _CPUKernel:
    """Stands for ``cupy.RawKernel(kernel_source(real, label), name)``: checks each argument
    against the kernel's C parameter (arrays for pointers, of the pointed type; np.int32 for
    int; np.float64 for double) and runs the source compiled by g++."""

    def __init__(self, lib, name, real, label):
        self.fn = getattr(lib, "run_" + name)
        self.params = _signatures(R.kernel_source(real, label))[name]
        self.types = {"real": real, "label_t": label}

    def __call__(self, grid, block, args):
        assert len(grid) == 1 and len(block) == 1 and block[0] % 32 == 0 and block[0] <= 1024
        assert len(args) == len(self.params)
        cargs = [ctypes.c_int(grid[0]), ctypes.c_int(block[0])]
        for a, p in zip(args, self.params):
            base = p[-1].rstrip("*")
            if p[-1].endswith("*"):
                assert isinstance(a, np.ndarray) and a.flags.c_contiguous, p
                assert a.dtype == _NP_OF_C[self.types[base]], (p, a.dtype)
                cargs.append(ctypes.c_void_p(a.ctypes.data))
            elif base == "int":
                assert type(a) is np.int32, (p, type(a))
                cargs.append(ctypes.c_int(int(a)))
            else:
                assert base == "double" and type(a) is np.float64, (p, type(a))
                cargs.append(ctypes.c_double(float(a)))
        self.fn(*cargs)


@pytest.fixture(scope="module")
def cpu_kernels(tmp_path_factory):
    """``rowkernels._kernel`` replaced by the g++ build of the same source (NumPy arrays)."""
    if shutil.which("g++") is None:
        pytest.skip("needs g++ to run the kernel source on the CPU")
    libs = {}
    d = tmp_path_factory.mktemp("rowkernels")
    for real in ("float", "double"):
        for label in ("int", "long long"):
            tag = f"{real}_{label.replace(' ', '_')}"
            src = d / f"{tag}.cpp"
            src.write_text(_SHIM + R.kernel_source(real, label) + _LAUNCHERS)
            so = d / f"{tag}.so"
            r = subprocess.run(["g++", "-O1", "-std=c++17", "-shared", "-fPIC", "-pthread",
                                "-w", str(src), "-o", str(so)], capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
            libs[real, label] = ctypes.CDLL(str(so))
    mp = pytest.MonkeyPatch()
    mp.setattr(R, "_kernel", lambda cp, name, real, label="long long":
               _CPUKernel(libs[real, label], name, real, label))
    yield
    mp.undo()


def _tol(dtype):
    return dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_kernels_match_numpy(cpu_kernels, dtype, shape):
    rng = np.random.default_rng(sum(shape))
    x = (3 * rng.standard_normal(shape)).astype(dtype)
    labels = rng.integers(0, shape[1], shape[0])
    for fn, name in ((R.logp_rows, "logp"), (R.softmax_rows, "softmax")):
        y = fn(x)
        assert y.dtype == dtype and y.shape == shape
        np.testing.assert_allclose(y, _numpy_reference(name, x), **_tol(dtype))
    # (each launch here starts a thread per CUDA thread: the cases are few)
    for ltype, averages, dys in ((np.int32, (True,), (1.0,)),
                                 (np.int64, (True, False),
                                  (1.0, 3, dtype(2.5 / 3), np.array(-1.5, dtype)))):
        lab = labels.astype(ltype)
        for average in averages:
            y = R.nll_rows(x, lab, average)
            assert y.dtype == dtype and y.shape == ()
            np.testing.assert_allclose(y, _numpy_reference("nll", x, lab, average=average),
                                       **_tol(dtype))
            for dy in dys:
                g = R.nll_grad_rows(x, lab, dy, average)
                assert g.dtype == dtype and g.shape == shape
                ref = _numpy_reference("nll_grad", x, lab, dy, average)
                np.testing.assert_allclose(g, ref, **_tol(dtype))


def test_dy_array_of_another_dtype(cpu_kernels):
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((3, 4)).astype(np.float32), rng.integers(0, 4, 3)
    g = R.nll_grad_rows(x, y, np.array(2.0, np.float64))
    np.testing.assert_allclose(g, P.nll_grad(x, y, np.array(2.0)), rtol=1e-6)


def test_extreme_rows(cpu_kernels):
    x = np.array([[1000.0, 0.0, -1000.0], [-1e30, -1e30, -1e30], [0.0, np.nan, 1.0],
                  [np.inf, 0.0, 1.0], [-np.inf, 0.0, 1.0]], np.float32)
    with np.errstate(invalid="ignore"):
        for fn, name in ((R.logp_rows, "logp"), (R.softmax_rows, "softmax")):
            np.testing.assert_allclose(fn(x), _numpy_reference(name, x), rtol=1e-6)


def test_labels_out_of_range_give_nan(cpu_kernels):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((4, 3))
    ok = np.array([0, 1, 2, 1])
    neg = np.array([-1, -3, 2, 1])           # NumPy's negative indices count from the end
    np.testing.assert_allclose(R.nll_rows(x, neg), P.nll(x, neg), rtol=1e-12)
    np.testing.assert_allclose(R.nll_grad_rows(x, neg, 1.0), P.nll_grad(x, neg, 1.0), rtol=1e-12)
    for bad in (3, -4, 2**40):
        lab = ok.copy()
        lab[2] = bad
        with pytest.raises(IndexError):      # what NumPy's code does
            P.nll(x, lab)
        assert np.isnan(R.nll_rows(x, lab))
        g = R.nll_grad_rows(x, lab, 1.0)
        assert np.isnan(g[2]).all() and np.isfinite(np.delete(g, 2, axis=0)).all()
    lab32 = ok.astype(np.int32)
    lab32[0] = -2**31
    assert np.isnan(R.nll_rows(x, lab32))


def test_prims_through_the_cpu_kernels(cpu_kernels, monkeypatch):
    """prims' dispatch and the kernels together: a Fake (CuPy-like) array through P.nll etc."""
    real = P._backend.array_module
    cupy_like = types.SimpleNamespace(__name__="cupy_like")
    monkeypatch.setattr(P._backend, "array_module",
                        lambda *a: cupy_like if any(isinstance(v, Fake) for v in a) else real(*a))
    calls = []
    monkeypatch.setattr(R, "array_module", lambda *a: calls.append(1) or np)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((8, 10)).astype(np.float32)
    y = rng.integers(0, 10, 8)
    np.testing.assert_allclose(P.nll(_fake(x), _fake(y)), P.nll(x, y), rtol=1e-5)
    np.testing.assert_allclose(P.nll_grad(_fake(x), _fake(y), 1.0), P.nll_grad(x, y, 1.0),
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(P.logp(_fake(x)), P.logp(x), rtol=1e-5)
    assert len(calls) == 3
