"""One-kernel GPU versions of max pooling under differentiation: ``pool_with_index``,
``pool_x_saved`` and ``pool_x_dy`` of ``runtime/conv.py``.

With CuPy array operations each of these launches several kernels per window tap (a strided
copy, a compare, a maximum, a multiply, ...). Here each is one CUDA kernel with one thread per
element, for C-contiguous 4-D (N, C, H, W) float16/float32/float64 CuPy arrays; ``conv.py``
decides when that case applies (``_pool_kernels``) and everything else runs the array code.

The kernels compute exactly what the NumPy code computes (cuDNN's pooling backward is not used
because its choice among tied maxima is undocumented):

* forward (``knetc_maxpool_index``, one thread per window): the taps are scanned row-major over
  the padded input, padded cells reading -inf; the first tap starts the maximum and a later tap
  replaces it only when strictly greater, so the first (row-major) cell holding the maximum
  wins, and its offset ``p*(W+2pw) + q`` from the window's first cell is saved, as the unsigned
  type ``conv._offset_dtype`` chose. A NaN propagates into the maximum (as ``numpy.maximum``)
  and the window's offset becomes the type's largest value, the "no cell" sentinel.
* backward (``knetc_maxpool_route``, one thread per input cell, no atomics): the windows that
  contain the cell are visited row-major and the ``dy`` of each window whose saved offset names
  this cell is added, starting from 0 (overlapping windows) or assigned (disjoint windows, at
  most one can name it) -- the order and the roundings of NumPy's ``add.at`` in
  ``conv._route_flat``; float16 sums are rounded to float16 after every add, as NumPy does.
* second derivative (``knetc_maxpool_pick``, one thread per window): ``ddx`` at the saved cell,
  0 for the sentinel and for cells in the padding.

Known difference: where +0.0 and -0.0 tie for a window's maximum, ``y`` keeps the first one
while NumPy's ``maximum`` may return either (it differs between float16 and float32); the value,
the saved offset and every gradient are the same.

Geometry is passed as kernel arguments, so one binary per (element type, offset type) serves
every layer. Nothing here imports CuPy: the functions take the module from their arrays.
"""
from __future__ import annotations

import threading

import numpy as np

from .backend import array_module

# Element types (by dtype.char): the C storage type, the arithmetic type, and how to convert.
# float16 is stored as its 16 bits and converted with the PTX instructions cuda_fp16.h uses, so
# the source needs no header (NVRTC's include paths differ between installations).
_PRELUDE = {
    "e": ("typedef unsigned short T;\ntypedef float F;\n"
          "__device__ __forceinline__ float knetc_h2f(unsigned short h) {\n"
          "    float f; asm(\"cvt.f32.f16 %0, %1;\" : \"=f\"(f) : \"h\"(h)); return f; }\n"
          "__device__ __forceinline__ unsigned short knetc_f2h(float f) {\n"
          "    unsigned short h; asm(\"cvt.rn.f16.f32 %0, %1;\" : \"=h\"(h) : \"f\"(f)); return h; }\n"
          "#define LOAD(a) knetc_h2f(a)\n#define STORE(f) knetc_f2h(f)\n"
          "#define ROUND(f) knetc_h2f(knetc_f2h(f))\n"
          "#define NEG_INF __int_as_float(0xff800000)\n"),
    "f": ("typedef float T;\ntypedef float F;\n"
          "#define LOAD(a) (a)\n#define STORE(f) (f)\n#define ROUND(f) (f)\n"
          "#define NEG_INF __int_as_float(0xff800000)\n"),
    "d": ("typedef double T;\ntypedef double F;\n"
          "#define LOAD(a) (a)\n#define STORE(f) (f)\n#define ROUND(f) (f)\n"
          "#define NEG_INF __longlong_as_double(0xfff0000000000000LL)\n"),
}

# Saved-offset types (by itemsize): conv._offset_dtype's uint8 ... uint64.
OFFSET_CTYPES = {1: "unsigned char", 2: "unsigned short", 4: "unsigned int", 8: "unsigned long long"}

# Every kernel is a grid-stride loop over its elements t (long long: N*C*H*W may pass 2**31).
_BODY = r"""
// The "no cell" sentinel: the offset type's largest value, never a valid offset.
#define KNETC_NONE ((O)~(O)0)

extern "C" __global__ void knetc_maxpool_index(
        const T* __restrict__ x, T* __restrict__ y, O* __restrict__ saved,
        const long long total, const int H, const int W, const int Ho, const int Wo,
        const int kh, const int kw, const int ph, const int pw, const int sh, const int sw) {
    const int Wp = W + 2 * pw;
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < total;
         t += (long long)gridDim.x * blockDim.x) {
        const int ow = (int)(t % Wo);
        const int oh = (int)((t / Wo) % Ho);
        const long long img = t / ((long long)Ho * Wo);
        const T* xi = x + img * H * W;
        const int h0 = oh * sh - ph;
        const int w0 = ow * sw - pw;
        F best = NEG_INF;
        O off = 0;
        for (int p = 0; p < kh; ++p) {
            const int h = h0 + p;
            for (int q = 0; q < kw; ++q) {
                const int w = w0 + q;
                // Padded cells read -inf: they never win unless the whole window is -inf.
                const F v = (h >= 0 && h < H && w >= 0 && w < W) ? LOAD(xi[(long long)h * W + w])
                                                               : NEG_INF;
                if (p == 0 && q == 0) {
                    best = v;
                } else if (v > best) {  // strictly greater: the first maximum keeps its place
                    best = v;
                    off = (O)((long long)p * Wp + q);
                } else if (v != v) {    // numpy.maximum propagates NaN
                    best = v;
                }
            }
        }
        if (best != best) off = KNETC_NONE;
        y[t] = STORE(best);
        saved[t] = off;
    }
}

extern "C" __global__ void knetc_maxpool_route(
        const T* __restrict__ gy, const O* __restrict__ saved, T* __restrict__ dx,
        const long long total, const int H, const int W, const int Ho, const int Wo,
        const int kh, const int kw, const int ph, const int pw, const int sh, const int sw,
        const int disjoint) {
    const int Wp = W + 2 * pw;
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < total;
         t += (long long)gridDim.x * blockDim.x) {
        const int w = (int)(t % W);
        const int h = (int)((t / W) % H);
        const long long img = t / ((long long)H * W);
        const int hp = h + ph;
        const int wp = w + pw;
        // Windows i with i*sh <= hp <= i*sh + kh - 1 (and j likewise), inside the output.
        const int i0 = hp >= kh ? (hp - kh) / sh + 1 : 0;
        const int i1 = hp / sh < Ho - 1 ? hp / sh : Ho - 1;
        const int j0 = wp >= kw ? (wp - kw) / sw + 1 : 0;
        const int j1 = wp / sw < Wo - 1 ? wp / sw : Wo - 1;
        const O* si = saved + img * Ho * Wo;
        const T* gi = gy + img * Ho * Wo;
        F acc = 0;
        for (int i = i0; i <= i1; ++i) {
            for (int j = j0; j <= j1; ++j) {
                const long long k = (long long)i * Wo + j;
                // The sentinel never equals an offset inside the window: it routes nothing.
                if ((unsigned long long)si[k] ==
                        (unsigned long long)((long long)(hp - i * sh) * Wp + (wp - j * sw))) {
                    acc = disjoint ? LOAD(gi[k]) : ROUND(acc + LOAD(gi[k]));
                }
            }
        }
        dx[t] = STORE(acc);
    }
}

extern "C" __global__ void knetc_maxpool_pick(
        const T* __restrict__ ddx, const O* __restrict__ saved, T* __restrict__ out,
        const long long total, const int H, const int W, const int Ho, const int Wo,
        const int ph, const int pw, const int sh, const int sw) {
    const int Wp = W + 2 * pw;
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < total;
         t += (long long)gridDim.x * blockDim.x) {
        const int ow = (int)(t % Wo);
        const int oh = (int)((t / Wo) % Ho);
        const long long img = t / ((long long)Ho * Wo);
        const O o = saved[t];
        F v = 0;
        if (o != KNETC_NONE) {
            // The flat padded index first-cell + offset, as conv._index_blocks forms it.
            const long long pos = (long long)oh * sh * Wp + (long long)ow * sw + (long long)o;
            const int h = (int)(pos / Wp) - ph;
            const int w = (int)(pos % Wp) - pw;
            if (h >= 0 && h < H && w >= 0 && w < W) v = LOAD(ddx[img * H * W + (long long)h * W + w]);
        }
        out[t] = STORE(v);
    }
}
"""

KERNEL_NAMES = ("knetc_maxpool_index", "knetc_maxpool_route", "knetc_maxpool_pick")
BLOCK = 256
MAX_BLOCKS = 1 << 20  # the grid-stride loops cover the rest


def kernel_source(dtype_char: str, offset_itemsize: int) -> str:
    """The CUDA C source of the three kernels for elements of ``dtype_char`` ("e", "f", "d")
    and saved offsets of ``offset_itemsize`` bytes (unsigned)."""
    if dtype_char not in _PRELUDE or offset_itemsize not in OFFSET_CTYPES:
        raise ValueError(f"poolkernels: no kernels for dtype {dtype_char!r}, "
                         f"offsets of {offset_itemsize} bytes")
    return (f"{_PRELUDE[dtype_char]}typedef {OFFSET_CTYPES[offset_itemsize]} O;\n{_BODY}")


def usable(values: tuple, saved=None) -> bool:
    """Can the kernels read these arrays: all of one CuPy-like array type, 4-D and C-contiguous,
    the ``values`` float16/float32/float64 and ``saved`` (when not None) unsigned integers?"""
    arrays = tuple(values) + (() if saved is None else (saved,))
    for a in arrays:
        if type(a) is not type(arrays[0]) or getattr(a, "ndim", None) != 4:
            return False
        if not a.flags.c_contiguous:
            return False
    return (all(a.dtype.char in _PRELUDE for a in values)
            and (saved is None or (saved.dtype.kind == "u" and saved.dtype.itemsize in OFFSET_CTYPES)))


_KERNELS: dict = {}
_LOCK = threading.Lock()


def _kernel(cp, name: str, dtype_char: str, offset_itemsize: int):
    """The ``cupy.RawKernel`` ``name`` for these types, made once (CuPy compiles it on first
    launch, once per device, and caches the binary on disk)."""
    key = (name, dtype_char, offset_itemsize)
    k = _KERNELS.get(key)
    if k is None:
        with _LOCK:
            k = _KERNELS.get(key)
            if k is None:
                k = _KERNELS[key] = cp.RawKernel(kernel_source(dtype_char, offset_itemsize), name)
    return k


def _launch(cp, name, dtype_char, offset_itemsize, total, args):
    if total == 0:
        return
    blocks = min((total + BLOCK - 1) // BLOCK, MAX_BLOCKS)
    _kernel(cp, name, dtype_char, offset_itemsize)((blocks,), (BLOCK,), args)


def _geo_args(xshape, g, with_kernel=True):
    _, _, H, W = xshape
    dims = (H, W, g.Ho, g.Wo) + ((g.kh, g.kw) if with_kernel else ()) + (g.ph, g.pw, g.sh, g.sw)
    return tuple(np.int32(v) for v in dims)


def maxpool_index(x, g, offset_dtype):
    """``(y, saved)`` of ``conv._maxpool_index`` (before ``alpha``) in one kernel, for a
    C-contiguous 4-D CuPy float array ``x`` and the pool geometry ``g`` (``conv._Geo``);
    ``saved`` has ``offset_dtype`` (``conv._offset_dtype``)."""
    cp = array_module(x)
    N, C = x.shape[:2]
    y = cp.empty((N, C, g.Ho, g.Wo), dtype=x.dtype)
    saved = cp.empty((N, C, g.Ho, g.Wo), dtype=offset_dtype)
    total = N * C * g.Ho * g.Wo
    _launch(cp, "knetc_maxpool_index", x.dtype.char, np.dtype(offset_dtype).itemsize, total,
            (x, y, saved, np.int64(total)) + _geo_args(x.shape, g))
    return y, saved


def maxpool_route(gy, saved, g, xshape):
    """dx of ``xshape`` (``conv._route_flat``'s result) in one kernel: ``gy`` (the scaled dy)
    routed to the cells ``saved`` names, summed where windows overlap."""
    cp = array_module(gy)
    dx = cp.empty(tuple(xshape), dtype=gy.dtype)
    total = int(np.prod(xshape))
    disjoint = np.int32(g.sh >= g.kh and g.sw >= g.kw)
    _launch(cp, "knetc_maxpool_route", gy.dtype.char, saved.dtype.itemsize, total,
            (gy, saved, dx, np.int64(total)) + _geo_args(xshape, g) + (disjoint,))
    return dx


def maxpool_pick(ddx, saved, g):
    """``pool_x_dy``'s result before ``alpha`` in one kernel: ``ddx`` (C-contiguous, 4-D) at
    each window's saved cell, 0 for the sentinel and for padded cells."""
    cp = array_module(ddx)
    out = cp.empty(saved.shape, dtype=ddx.dtype)
    total = int(np.prod(saved.shape))
    _launch(cp, "knetc_maxpool_pick", ddx.dtype.char, saved.dtype.itemsize, total,
            (ddx, saved, out, np.int64(total)) + _geo_args(ddx.shape, g, with_kernel=False))
    return out
