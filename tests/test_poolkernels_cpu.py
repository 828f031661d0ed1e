"""The one-kernel max pooling of ``runtime/poolkernels.py`` without a GPU.

* A Python mirror of each kernel's per-thread body (same loops, index arithmetic, tie rule,
  offset encoding and roundings, line by line) run over NumPy arrays must reproduce
  ``runtime/conv.py``'s CPU results bit for bit, for many geometries, dtypes and inputs full of
  ties, zeros, -inf and NaN.
* The CUDA source itself is compiled with nvcc (when installed), and compiled for the CPU with
  g++ (CUDA's thread indices stubbed so one call runs every element) and run: the same results.
* Dispatch: NumPy arrays never reach the kernels; fake CuPy arrays do when the kernels apply (and
  the fake ``RawKernel`` runs the g++-compiled source, checking every argument's C type), and
  take the array code otherwise.
"""
from __future__ import annotations

import ctypes
import hashlib
import itertools
import re
import shutil
import subprocess
import types

import numpy as np
import pytest

from knetc.runtime import conv as C
from knetc.runtime import poolkernels as P

DTYPES = (np.float16, np.float32, np.float64)


def _geometries():
    """(H, W, window, padding, stride) for every valid combination of a varied set."""
    out = []
    for (H, W), k, p, s in itertools.product(((5, 7), (6, 6), (4, 5), (3, 3)), (2, 3, (2, 3)),
                                             (0, 1, (0, 1)), (1, 2, 3, (1, 2))):
        x = np.zeros((1, 1, H, W))
        try:
            C._pool_geometry(x, k, p, s)
        except ValueError:
            continue
        out.append((H, W, k, p, s))
    return out


GEOMETRIES = _geometries()


def _inputs(kind: str, shape, dtype, seed=0):
    r = np.random.default_rng(seed)
    if kind == "normal":
        x = r.standard_normal(shape)
    elif kind == "ties":  # few distinct values: most windows hold their maximum several times
        x = r.integers(0, 3, shape).astype(float)
    elif kind == "relu":  # relu'd activations: many +0.0 and -0.0 zeros
        z = r.standard_normal(shape)
        x = np.where(z > 0, z, np.where(r.random(shape) < 0.5, -0.0, 0.0))
    elif kind == "special":  # -inf everywhere in some windows, a NaN in others
        x = r.standard_normal(shape)
        x[..., :2, :] = -np.inf
        x.flat[r.integers(0, x.size, 3)] = np.nan
    else:
        raise ValueError(kind)
    return x.astype(dtype)


def _same(a, b, *, signed_zero=True):
    """Equal dtype, shape and values (NaN where NaN); with ``signed_zero`` also the sign bits."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape
    assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
    if signed_zero and a.dtype.kind == "f":
        assert np.array_equal(np.signbit(a), np.signbit(b))


# ------------------------------------------------------------------ the Python mirror

class _Arith:
    """The kernels' types for one element dtype: T (storage), F (arithmetic), LOAD/STORE/ROUND."""

    def __init__(self, dtype, odtype):
        self.T = np.dtype(dtype).type
        self.F = np.float64 if np.dtype(dtype) == np.float64 else np.float32
        self.half = np.dtype(dtype) == np.float16
        self.NONE = int(np.iinfo(odtype).max)
        self.NEG_INF = self.F(-np.inf)

    def LOAD(self, a):
        return self.F(a)

    def STORE(self, f):
        return self.T(f)

    def ROUND(self, f):
        return self.F(self.T(f)) if self.half else f


def _index_thread(A, t, x, y, saved, total, H, W, Ho, Wo, kh, kw, ph, pw, sh, sw):
    """knetc_maxpool_index's loop body for element t (x, y, saved are flat)."""
    Wp = W + 2 * pw
    ow = t % Wo
    oh = (t // Wo) % Ho
    img = t // (Ho * Wo)
    xi = img * H * W
    h0 = oh * sh - ph
    w0 = ow * sw - pw
    best = A.NEG_INF
    off = 0
    for p in range(kh):
        h = h0 + p
        for q in range(kw):
            w = w0 + q
            v = A.LOAD(x[xi + h * W + w]) if (h >= 0 and h < H and w >= 0 and w < W) else A.NEG_INF
            if p == 0 and q == 0:
                best = v
            elif v > best:
                best = v
                off = p * Wp + q
            elif v != v:
                best = v
    if best != best:
        off = A.NONE
    y[t] = A.STORE(best)
    saved[t] = off


def _route_thread(A, t, gy, saved, dx, total, H, W, Ho, Wo, kh, kw, ph, pw, sh, sw, disjoint):
    """knetc_maxpool_route's loop body for input element t."""
    Wp = W + 2 * pw
    w = t % W
    h = (t // W) % H
    img = t // (H * W)
    hp = h + ph
    wp = w + pw
    i0 = (hp - kh) // sh + 1 if hp >= kh else 0
    i1 = hp // sh if hp // sh < Ho - 1 else Ho - 1
    j0 = (wp - kw) // sw + 1 if wp >= kw else 0
    j1 = wp // sw if wp // sw < Wo - 1 else Wo - 1
    si = img * Ho * Wo
    gi = img * Ho * Wo
    acc = A.F(0)
    for i in range(i0, i1 + 1):
        for j in range(j0, j1 + 1):
            k = i * Wo + j
            if int(saved[si + k]) == (hp - i * sh) * Wp + (wp - j * sw):
                acc = A.LOAD(gy[gi + k]) if disjoint else A.ROUND(acc + A.LOAD(gy[gi + k]))
    dx[t] = A.STORE(acc)


def _pick_thread(A, t, ddx, saved, out, total, H, W, Ho, Wo, ph, pw, sh, sw):
    """knetc_maxpool_pick's loop body for element t."""
    Wp = W + 2 * pw
    ow = t % Wo
    oh = (t // Wo) % Ho
    img = t // (Ho * Wo)
    o = int(saved[t])
    v = A.F(0)
    if o != A.NONE:
        pos = oh * sh * Wp + ow * sw + o
        h = pos // Wp - ph
        w = pos % Wp - pw
        if h >= 0 and h < H and w >= 0 and w < W:
            v = A.LOAD(ddx[img * H * W + h * W + w])
    out[t] = A.STORE(v)


def _mirror_run(body, A, total, flat_arrays, scalars):
    with np.errstate(all="ignore"):
        for t in range(total):
            body(A, t, *flat_arrays, total, *scalars)


def _mirror(x, dy, ddx, g):
    """(y, saved, dx, pick) as the kernels compute them, by the Python mirror."""
    N, Cc, H, W = x.shape
    odt = C._offset_dtype(g, W + 2 * g.pw)
    A = _Arith(x.dtype, odt)
    y = np.empty((N, Cc, g.Ho, g.Wo), x.dtype)
    saved = np.empty(y.shape, odt)
    geo = (H, W, g.Ho, g.Wo, g.kh, g.kw, g.ph, g.pw, g.sh, g.sw)
    _mirror_run(_index_thread, A, y.size, (x.reshape(-1), y.reshape(-1), saved.reshape(-1)), geo)
    dx = np.empty(x.shape, dy.dtype)
    disjoint = int(g.sh >= g.kh and g.sw >= g.kw)
    _mirror_run(_route_thread, _Arith(dy.dtype, odt), dx.size,
                (dy.reshape(-1), saved.reshape(-1), dx.reshape(-1)), geo + (disjoint,))
    pick = np.empty(y.shape, ddx.dtype)
    _mirror_run(_pick_thread, _Arith(ddx.dtype, odt), pick.size,
                (ddx.reshape(-1), saved.reshape(-1), pick.reshape(-1)),
                (H, W, g.Ho, g.Wo, g.ph, g.pw, g.sh, g.sw))
    return y, saved, dx, pick


def _cpu(x, dy, ddx, H, W, k, p, s):
    """conv.py's NumPy results: (y, saved, dx, pool_x_dy)."""
    kw = dict(window=k, padding=p, stride=s)
    with np.errstate(invalid="ignore"):
        y, saved = C.pool_with_index(x, **kw)
        dx = C.pool_x_saved(x, y, dy, saved, **kw)
        pick = C.pool_x_dy(x, y, ddx, saved, **kw)
    return y, saved, dx, pick


def _check(got, want):
    y, saved, dx, pick = got
    _same(y, want[0], signed_zero=False)  # +0/-0 ties: see poolkernels' docstring
    _same(saved, want[1])
    _same(dx, want[2])
    _same(pick, want[3])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["normal", "ties", "relu", "special"])
def test_mirror_matches_cpu(kind, dtype):
    r = np.random.default_rng(1)
    for n, (H, W, k, p, s) in enumerate(GEOMETRIES):
        if dtype is not np.float32 and n % 3:  # every geometry in float32, a third in the others
            continue
        x = _inputs(kind, (2, 2, H, W), dtype, n)
        g = C._pool_geometry(x, k, p, s)
        dy = r.standard_normal((2, 2, g.Ho, g.Wo)).astype(dtype)
        dy.flat[::5] = -0.0
        ddx = r.standard_normal(x.shape).astype(dtype)
        _check(_mirror(x, dy, ddx, g), _cpu(x, dy, ddx, H, W, k, p, s))


def test_mirror_sees_the_tie_rule_and_the_sentinel():
    x = np.zeros((1, 1, 4, 4), np.float32)
    x[0, 0, 1, 1] = x[0, 0, 1, 0] = 5  # a tie: the first (row-major) cell, (1, 0), wins
    x[0, 0, 3, 3] = np.nan             # the last window's maximum is NaN: sentinel, no gradient
    g = C._pool_geometry(x, 2, 0, 2)
    dy = np.ones((1, 1, 2, 2), np.float32)
    y, saved, dx, pick = _mirror(x, dy, x.copy(), g)
    assert saved.dtype == np.uint8 and saved[0, 0].tolist() == [[4, 0], [0, 255]]  # 4 = 1*Wp + 0
    assert dx[0, 0, 1, 0] == 1 and dx[0, 0, 1, 1] == 0 and not dx[0, 0, 2:, 2:].any()
    assert pick[0, 0, 1, 1] == 0 and np.isnan(y[0, 0, 1, 1])


def test_float16_sums_round_after_every_add():
    # Three windows route to one cell: 2048 + 1 + 1 in float16 is 2048 (each +1 rounds away);
    # summed in float32 and rounded once it would be 2050.
    x = np.zeros((1, 1, 3, 5), np.float16)
    x[0, 0, 1, 2] = 9
    g = C._pool_geometry(x, 3, 0, 1)
    dy = np.array([[[[2048, 1, 1]]]], np.float16)
    _, saved, dx, _ = _mirror(x, dy, x, g)
    assert dx[0, 0, 1, 2] == 2048
    _same(dx, C.pool_x_saved(x, None, dy, saved, window=3, stride=1))


# ------------------------------------------------------------------ the CUDA source itself

def test_kernel_source_names_and_types():
    src = P.kernel_source("f", 1)
    for name in P.KERNEL_NAMES:
        assert f'extern "C" __global__ void {name}(' in src
    assert "typedef unsigned char O;" in src and "typedef float T;" in src
    assert "#include" not in P.kernel_source("e", 8)  # NVRTC needs no include path
    with pytest.raises(ValueError):
        P.kernel_source("i", 1)
    with pytest.raises(ValueError):
        P.kernel_source("f", 3)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc")
@pytest.mark.parametrize("char", "efd")
def test_sources_compile_with_nvcc(tmp_path, char):
    for size in P.OFFSET_CTYPES:
        cu = tmp_path / f"k{char}{size}.cu"
        cu.write_text(P.kernel_source(char, size))
        r = subprocess.run(["nvcc", "-ptx", "-arch=sm_90", str(cu), "-o", str(cu) + ".ptx"],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert "warning" not in r.stderr.lower(), r.stderr


_HOST_PRELUDE = r"""
#include <cstring>
struct knetc_dim { unsigned x; };
static knetc_dim blockIdx = {0}, threadIdx = {0}, blockDim = {1}, gridDim = {1};
#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__ __restrict
static inline float __int_as_float(unsigned i) { float f; memcpy(&f, &i, 4); return f; }
static inline double __longlong_as_double(long long i) { double f; memcpy(&f, &i, 8); return f; }
static inline float knetc_h2f(unsigned short h) { _Float16 v; memcpy(&v, &h, 2); return (float)v; }
static inline unsigned short knetc_f2h(float f) {
    _Float16 v = (_Float16)f; unsigned short h; memcpy(&h, &v, 2); return h; }
"""

_SIGNATURE = re.compile(r'extern "C" __global__ void (\w+)\((.*?)\)\s*\{', re.S)


def _signatures(src):
    """{kernel: [(C type, name)]} parsed from the source."""
    out = {}
    for name, params in _SIGNATURE.findall(src):
        out[name] = [tuple(p.strip().rsplit(None, 1)) for p in params.split(",")]
    return out


def _host_source(src):
    """The CUDA source made plain C++: the PTX float16 conversions replaced by _Float16 ones."""
    src = re.sub(r"__device__ __forceinline__ [\w ]+? knetc_(h2f|f2h)\([^)]*\) \{\n[^\n]*\n", "", src)
    assert "asm(" not in src
    return _HOST_PRELUDE + src


_HOST_LIBS: dict = {}


def _host_lib(src, tmp_dir):
    key = hashlib.sha1(src.encode()).hexdigest()
    if key not in _HOST_LIBS:
        cpp = tmp_dir / f"{key}.cpp"
        cpp.write_text(_host_source(src))
        so = tmp_dir / f"{key}.so"
        r = subprocess.run(["g++", "-O1", "-shared", "-fPIC", "-o", str(so), str(cpp)],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        _HOST_LIBS[key] = ctypes.CDLL(str(so))
    return _HOST_LIBS[key]


class _HostKernel:
    """A fake ``cupy.RawKernel``: runs the source compiled for the CPU, after checking that every
    argument fits its C parameter (arrays of the right element type, np.int32 for int, np.int64
    for long long) and that the launch shape is a valid 1-D grid."""

    def __init__(self, src, name, tmp_dir):
        self.fn = getattr(_host_lib(src, tmp_dir), name)
        self.params = _signatures(src)[name]
        elem = re.search(r"typedef (.+) T;", src).group(1)
        offset = re.search(r"typedef (.+) O;", src).group(1)
        self.sizes = {"T": {"float": 4, "double": 8, "unsigned short": 2}[elem],
                      "O": [k for k, v in P.OFFSET_CTYPES.items() if v == offset][0]}
        self.kinds = {"T": "f", "O": "u"}
        self.launches = []

    def __call__(self, grid, block, args):
        assert len(grid) == 1 and len(block) == 1 and 1 <= grid[0] <= P.MAX_BLOCKS
        assert block[0] == P.BLOCK and len(args) == len(self.params)
        cargs, argtypes = [], []
        for (ctype, name), a in zip(self.params, args):
            if "*" in ctype:
                elem = ctype.replace("const", "").replace("*", " ").split()[0]
                assert isinstance(a, np.ndarray) and a.flags.c_contiguous, name
                assert a.dtype.kind == self.kinds[elem] and a.dtype.itemsize == self.sizes[elem], name
                cargs.append(a.ctypes.data)
                argtypes.append(ctypes.c_void_p)
            elif "long long" in ctype:
                assert type(a) is np.int64, name
                cargs.append(int(a))
                argtypes.append(ctypes.c_longlong)
            else:
                assert ctype == "const int" and type(a) is np.int32, name
                cargs.append(int(a))
                argtypes.append(ctypes.c_int)
        self.fn.argtypes, self.fn.restype = argtypes, None
        self.launches.append(grid[0])
        self.fn(*cargs)


needs_gxx = pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")


def _host_results(x, dy, ddx, g, tmp_dir):
    """(y, saved, dx, pick) from the kernel source compiled for the CPU."""
    odt = C._offset_dtype(g, x.shape[3] + 2 * g.pw)
    y = np.empty((*x.shape[:2], g.Ho, g.Wo), x.dtype)
    saved = np.empty(y.shape, odt)
    geo = tuple(np.int32(v) for v in (x.shape[2], x.shape[3], g.Ho, g.Wo, g.kh, g.kw, g.ph, g.pw,
                                      g.sh, g.sw))

    def run(name, dtype, args):
        src = P.kernel_source(np.dtype(dtype).char, odt.itemsize)
        _HostKernel(src, name, tmp_dir)((1,), (P.BLOCK,), args)
    run("knetc_maxpool_index", x.dtype, (x, y, saved, np.int64(y.size)) + geo)
    dx = np.empty(x.shape, dy.dtype)
    run("knetc_maxpool_route", dy.dtype,
        (dy, saved, dx, np.int64(dx.size)) + geo + (np.int32(g.sh >= g.kh and g.sw >= g.kw),))
    pick = np.empty(y.shape, ddx.dtype)
    run("knetc_maxpool_pick", ddx.dtype, (ddx, saved, pick, np.int64(pick.size)) + geo[:4] + geo[6:])
    return y, saved, dx, pick


@needs_gxx
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["normal", "ties", "relu", "special"])
def test_host_compiled_source_matches_cpu(kind, dtype, tmp_path_factory):
    tmp = tmp_path_factory.getbasetemp()
    r = np.random.default_rng(2)
    for n, (H, W, k, p, s) in enumerate(GEOMETRIES):
        x = _inputs(kind, (3, 2, H, W), dtype, n)
        g = C._pool_geometry(x, k, p, s)
        dy = r.standard_normal((3, 2, g.Ho, g.Wo)).astype(dtype)
        dy.flat[::5] = -0.0
        ddx = r.standard_normal(x.shape).astype(dtype)
        _check(_host_results(x, dy, ddx, g, tmp), _cpu(x, dy, ddx, H, W, k, p, s))


@needs_gxx
def test_host_compiled_source_wide_offsets(tmp_path_factory):
    # A wide image: offsets need uint16 (window 3 over 300 columns: 2*302 + 2 > 255).
    x = _inputs("ties", (1, 2, 5, 300), np.float32)
    g = C._pool_geometry(x, 3, 1, 2)
    dy = np.random.default_rng(3).standard_normal((1, 2, g.Ho, g.Wo)).astype(np.float32)
    got = _host_results(x, dy, x, g, tmp_path_factory.getbasetemp())
    assert got[1].dtype == np.uint16
    _check(got, _cpu(x, dy, x, 5, 300, 3, 1, 2))


# ------------------------------------------------------------------ dispatch

class _FakeArray(np.ndarray):
    """Stands for a CuPy array: not a NumPy array to ``array_module``."""


def _fa(a):
    return np.asarray(a).view(_FakeArray)


@pytest.fixture
def fake_gpu(monkeypatch, tmp_path_factory):
    """conv.py and poolkernels see ``_FakeArray``s as CuPy arrays of a NumPy-like module whose
    RawKernel runs the g++-compiled source; records the kernels launched."""
    if shutil.which("g++") is None:
        pytest.skip("needs g++")
    tmp = tmp_path_factory.getbasetemp()
    cp = types.ModuleType("fakecupy")
    cp.__dict__.update({k: v for k, v in vars(np).items() if not k.startswith("__")})
    cp.ndarray = _FakeArray
    cp.empty = lambda shape, dtype=np.float64: _fa(np.full(shape, 77, dtype))  # garbage, not zeros
    launched = []

    def raw_kernel(src, name):
        kernel = _HostKernel(src, name, tmp)

        def launch(grid, block, args):
            launched.append(name)
            kernel(grid, block, args)
        return launch
    cp.RawKernel = raw_kernel

    def module(*arrays):
        return cp if any(isinstance(a, _FakeArray) for a in arrays) else np
    monkeypatch.setattr(C, "array_module", module)
    monkeypatch.setattr(P, "array_module", module)
    monkeypatch.setattr(P, "_KERNELS", {})
    monkeypatch.delenv("KNETC_POOLKERNELS", raising=False)
    return launched


def _forbid_kernels(monkeypatch, *, usable=True):
    def boom(*a, **k):
        raise AssertionError("reached poolkernels")
    for name in ("maxpool_index", "maxpool_route", "maxpool_pick") + (("usable",) if usable else ()):
        monkeypatch.setattr(P, name, boom)


def _all_three(x, dy, ddx, **kw):
    y, saved = C.pool_with_index(x, **kw)
    return y, saved, C.pool_x_saved(x, y, dy, saved, **kw), C.pool_x_dy(x, y, ddx, saved, **kw)


def test_numpy_never_reaches_the_kernels(monkeypatch):
    _forbid_kernels(monkeypatch)
    x = _inputs("normal", (2, 3, 6, 6), np.float32)
    dy = np.ones((2, 3, 3, 3), np.float32)
    for mode in (0, 3):
        _, saved, dx, pick = _all_three(x, dy, x, window=2, mode=mode)
        assert isinstance(dx, np.ndarray) and pick.shape == dy.shape
        assert C.pool_x_dy(x, None, x, None, mode=mode).shape == dy.shape


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("alpha", [1, 0.5])
def test_fake_cupy_arrays_take_the_kernels(fake_gpu, dtype, alpha):
    r = np.random.default_rng(4)
    for k, p, s in ((2, 0, 2), (3, 1, 2), (3, 1, 1), ((2, 3), (1, 0), (1, 3))):
        x = _inputs("relu", (2, 3, 7, 8), dtype, 5)
        kw = dict(window=k, padding=p, stride=s, alpha=alpha)
        y = C.pool_with_index(x, **kw)[0]
        dy = r.standard_normal(y.shape).astype(dtype)
        ddx = r.standard_normal(x.shape).astype(dtype)
        want = _all_three(x, dy, ddx, **kw)
        fake_gpu.clear()
        got = _all_three(_fa(x), _fa(dy), _fa(ddx), **kw)
        assert all(isinstance(a, _FakeArray) for a in got)
        _check(got, want)
        # second derivatives without saved: the forward kernel finds the offsets again
        _same(C.pool_x_dy(_fa(x), None, _fa(ddx), None, **kw), want[3])
        assert fake_gpu == list(P.KERNEL_NAMES) + ["knetc_maxpool_index", "knetc_maxpool_pick"]


def test_fake_cupy_mode3_and_empty_batch(fake_gpu):
    x = _inputs("ties", (0, 3, 6, 6), np.float32)
    y, saved = C.pool_with_index(_fa(x), mode=3)
    assert y.shape == saved.shape == (0, 3, 3, 3)
    x = _inputs("ties", (1, 3, 6, 6), np.float32)
    _same(C.pool_with_index(_fa(x), mode=3)[1], C.pool_with_index(x, mode=3)[1])
    assert "knetc_maxpool_index" in fake_gpu


def test_fake_cupy_arrays_the_kernels_cannot_read_take_the_array_code(fake_gpu, monkeypatch):
    _forbid_kernels(monkeypatch, usable=False)
    x = _inputs("normal", (2, 3, 6, 8), np.float32)
    dy = np.random.default_rng(5).standard_normal((2, 3, 3, 4)).astype(np.float32)
    want = _all_three(x, dy, x)

    def strided(a):  # same values, not C-contiguous
        return _fa(np.ascontiguousarray(a.transpose(0, 1, 3, 2))).transpose(0, 1, 3, 2)
    y, saved = C.pool_with_index(strided(x))
    _same(y, want[0])
    _same(saved, want[1])
    # the array code's CuPy route (_route_taps) writes 0 * dy: -0.0 where dy < 0
    _same(C.pool_x_saved(_fa(x), None, strided(dy), _fa(want[1])), want[2], signed_zero=False)
    _same(C.pool_x_saved(_fa(x), None, _fa(dy), strided(want[1])), want[2], signed_zero=False)
    _same(C.pool_x_dy(_fa(x), None, strided(x), _fa(want[1])), want[3])
    xi = (x * 10).astype(np.int32)  # integers
    yi, si = C.pool_with_index(_fa(xi))
    assert yi.dtype == np.int32 and np.array_equal(si, C.pool_with_index(xi)[1])
    assert C.pool_with_index(_fa(x), mode=1)[1] is None  # average modes
    _same(C.pool_x_saved(_fa(x), None, _fa(dy), None, mode=2),
          C.pool_x_saved(x, None, dy, None, mode=2))
    monkeypatch.setenv("KNETC_POOLKERNELS", "0")  # switched off
    for a, b in zip(_all_three(_fa(x), _fa(dy), _fa(x)), want):
        _same(a, b, signed_zero=False)
    assert fake_gpu == []


def test_usable():
    x = _fa(np.zeros((1, 1, 4, 4), np.float16))
    s = _fa(np.zeros((1, 1, 2, 2), np.uint8))
    assert P.usable((x,)) and P.usable((x,), s) and P.usable((x, x), s)
    assert not P.usable((np.zeros((1, 1, 4, 4)),), s)            # mixed array types
    assert not P.usable((x,), _fa(np.zeros((1, 1, 2, 2), np.int8)))
    assert not P.usable((_fa(np.zeros((4, 4), np.float32)),))     # not 4-D
    assert not P.usable((_fa(np.zeros((1, 1, 4, 4), np.complex64)),))
    assert not P.usable((_fa(np.zeros((1, 1, 4, 8), np.float32)[..., ::2]),))
