"""One-kernel GPU versions of the row-wise Knet primitives: logp, softmax, nll and nll_grad.

Written with CuPy array operations these launch 5 to 11 kernels each (max, subtract, exp, sum,
log, ..., an arange and a gather for the labels), and a small training step is bound by launch
time. Here each is one CUDA kernel (nll: one kernel and one ``sum``), for the common case only:
a C-contiguous 2-D float32/float64 array reduced along its last axis. ``runtime/prims.py``
decides when that case applies (``_rows_fast``); everything else runs the array code.

The kernels use one thread block per row: each thread strides over the row, then a block
reduction (warp butterflies with ``__shfl_xor_sync``, one shared slot per warp, then one more
butterfly) gives every thread the same row maximum and the same sum of ``exp(x - max)``, in the
input precision. The results equal NumPy's within rounding of that precision.

Labels out of range: NumPy raises IndexError; here the kernel cannot raise without a host
synchronisation, so a row whose label is outside ``[-classes, classes)`` gets NaN (its loss, or
its whole gradient row), and the loss is NaN — never a finite wrong value. Negative labels
count from the end, as in NumPy's indexing.

Nothing here imports CuPy: the functions receive CuPy arrays and take the module from them.
"""
from __future__ import annotations

import threading

import numpy as np

from .backend import array_module

# C types of the supported element and label dtypes (by ``dtype.char``; labels by kind and size).
REAL_CTYPES = {"f": "float", "d": "double"}
LABEL_CTYPES = {4: "int", 8: "long long"}

_PRELUDE = {
    "float": ("#define EXP expf\n#define LOG logf\n"
              "#define NEG_INF __int_as_float(0xff800000)\n"
              "#define NAN_ __int_as_float(0x7fc00000)\n"),
    "double": ("#define EXP exp\n#define LOG log\n"
               "#define NEG_INF __longlong_as_double(0xfff0000000000000LL)\n"
               "#define NAN_ __longlong_as_double(0x7ff8000000000000LL)\n"),
}

# Every function of a block is called by all its threads (the reductions contain
# __syncthreads and full-warp shuffles); blockDim.x is a multiple of 32, at most 1024.
_BODY = r"""
#define FULL_MASK 0xffffffffu

// NumPy's max propagates NaN: keep b when it is larger or NaN.
__device__ __forceinline__ real knetc_max2(real a, real b) {
    return (b > a || b != b) ? b : a;
}

// Butterfly: lane i and lane i^o add the same two numbers, so every lane ends with the same value.
__device__ __forceinline__ real knetc_warp_max(real v) {
    for (int o = 16; o > 0; o >>= 1) v = knetc_max2(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

__device__ __forceinline__ real knetc_warp_sum(real v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

// The block's maximum / sum, returned to every thread (every warp reduces the warps' results).
__device__ real knetc_block_max(real v, real* buf) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = knetc_warp_max(v);
    if (lane == 0) buf[warp] = v;
    __syncthreads();
    v = knetc_warp_max(lane < nwarps ? buf[lane] : NEG_INF);
    __syncthreads();  // buf is written again by the next reduction
    return v;
}

__device__ real knetc_block_sum(real v, real* buf) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = knetc_warp_sum(v);
    if (lane == 0) buf[warp] = v;
    __syncthreads();
    v = knetc_warp_sum(lane < nwarps ? buf[lane] : (real)0);
    __syncthreads();
    return v;
}

// Row maximum m and sum of exp(x - m) of the row xr (n entries).
__device__ void knetc_row_stats(const real* xr, const int n, real* buf, real& m, real& s) {
    real v = NEG_INF;
    for (int j = threadIdx.x; j < n; j += blockDim.x) v = knetc_max2(v, xr[j]);
    m = knetc_block_max(v, buf);
    real t = 0;
    for (int j = threadIdx.x; j < n; j += blockDim.x) t += EXP(xr[j] - m);
    s = knetc_block_sum(t, buf);
}

// The row's label as a column, wrapped like NumPy's negative indices; -1 when out of range.
__device__ __forceinline__ long long knetc_column(const label_t* labels, const int n) {
    long long c = (long long)labels[blockIdx.x];
    if (c < 0) c += n;
    return (c < 0 || c >= n) ? -1 : c;
}

extern "C" __global__ void knetc_logp_rows(const real* __restrict__ x, real* __restrict__ y,
                                           const int n) {
    __shared__ real buf[32];
    const long long off = (long long)blockIdx.x * n;
    real m, s;
    knetc_row_stats(x + off, n, buf, m, s);
    const real lse = LOG(s);
    for (int j = threadIdx.x; j < n; j += blockDim.x) y[off + j] = (x[off + j] - m) - lse;
}

extern "C" __global__ void knetc_softmax_rows(const real* __restrict__ x, real* __restrict__ y,
                                              const int n) {
    __shared__ real buf[32];
    const long long off = (long long)blockIdx.x * n;
    real m, s;
    knetc_row_stats(x + off, n, buf, m, s);
    for (int j = threadIdx.x; j < n; j += blockDim.x) y[off + j] = EXP(x[off + j] - m) / s;
}

// out[row] = (logsumexp(row) - row[label]) / div: the row's term of the loss.
extern "C" __global__ void knetc_nll_rows(const real* __restrict__ x,
                                          const label_t* __restrict__ labels,
                                          real* __restrict__ out, const int n, const double div) {
    __shared__ real buf[32];
    const long long off = (long long)blockIdx.x * n;
    real m, s;
    knetc_row_stats(x + off, n, buf, m, s);
    if (threadIdx.x == 0) {
        const long long c = knetc_column(labels, n);
        out[blockIdx.x] = c < 0 ? NAN_ : (LOG(s) - (x[off + c] - m)) / (real)div;
    }
}

// y = (softmax(row) - onehot(label)) * scale, scale = (use_ptr ? *dyp : dyval) / div.
extern "C" __global__ void knetc_nll_grad_rows(const real* __restrict__ x,
                                               const label_t* __restrict__ labels,
                                               const real* __restrict__ dyp, const double dyval,
                                               const int use_ptr, const double div,
                                               real* __restrict__ y, const int n) {
    __shared__ real buf[32];
    const long long off = (long long)blockIdx.x * n;
    real m, s;
    knetc_row_stats(x + off, n, buf, m, s);
    const long long c = knetc_column(labels, n);
    const real scale = (use_ptr ? dyp[0] : (real)dyval) / (real)div;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        const real p = EXP(x[off + j] - m) / s;
        y[off + j] = c < 0 ? NAN_ : (p - (j == c ? (real)1 : (real)0)) * scale;
    }
}
"""

KERNEL_NAMES = ("knetc_logp_rows", "knetc_softmax_rows", "knetc_nll_rows", "knetc_nll_grad_rows")


def kernel_source(real: str, label: str = "long long") -> str:
    """The CUDA C source of the four kernels for element type ``real`` ("float" or "double")
    and label type ``label`` ("int" or "long long")."""
    if real not in _PRELUDE or label not in LABEL_CTYPES.values():
        raise ValueError(f"rowkernels: no kernels for element type {real!r}, labels {label!r}")
    return f"typedef {real} real;\ntypedef {label} label_t;\n{_PRELUDE[real]}{_BODY}"


def block_size(n: int) -> int:
    """Threads per block for rows of ``n`` entries: a multiple of 32, at most 512."""
    for b in (32, 64, 128):
        if n <= b:
            return b
    return 256 if n <= 4096 else 512


_KERNELS: dict = {}
_LOCK = threading.Lock()


def _kernel(cp, name: str, real: str, label: str = "long long"):
    """The ``cupy.RawKernel`` ``name`` for these types, made once (CuPy compiles it once per
    device, and caches the binary on disk)."""
    key = (name, real, label)
    k = _KERNELS.get(key)
    if k is None:
        with _LOCK:
            k = _KERNELS.get(key)
            if k is None:
                k = _KERNELS[key] = cp.RawKernel(kernel_source(real, label), name)
    return k


def label_ctype(scores, labels) -> str | None:
    """The C type of ``labels`` when the kernels can read them for ``scores``: an array of the
    same module, 1-D, C-contiguous, one int32/int64 per row. None otherwise (use the array code)."""
    if type(labels) is not type(scores) or labels.ndim != 1 or labels.shape[0] != scores.shape[0]:
        return None
    if labels.dtype.kind != "i" or not labels.flags.c_contiguous:
        return None
    return LABEL_CTYPES.get(labels.dtype.itemsize)


def _launch(cp, name, x, args, label="long long"):
    rows, n = x.shape
    _kernel(cp, name, REAL_CTYPES[x.dtype.char], label)((rows,), (block_size(n),), args)


def logp_rows(x):
    """log-softmax of each row of a C-contiguous 2-D CuPy float array: one kernel."""
    cp = array_module(x)
    y = cp.empty_like(x)
    _launch(cp, "knetc_logp_rows", x, (x, y, np.int32(x.shape[1])))
    return y


def softmax_rows(x):
    """softmax of each row of a C-contiguous 2-D CuPy float array: one kernel."""
    cp = array_module(x)
    y = cp.empty_like(x)
    _launch(cp, "knetc_softmax_rows", x, (x, y, np.int32(x.shape[1])))
    return y


def nll_rows(scores, labels, average=True):
    """``prims.nll`` on a C-contiguous 2-D CuPy float array: one kernel writes each row's
    ``logsumexp - score[label]`` (divided by N when ``average``), then one ``sum``, deterministic.
    A 0-d array of the scores' dtype. NotImplemented when the labels do not fit the kernel."""
    label = label_ctype(scores, labels)
    if label is None:
        return NotImplemented
    cp = array_module(scores)
    rows, n = scores.shape
    terms = cp.empty(rows, dtype=scores.dtype)
    div = np.float64(rows if average else 1)
    _launch(cp, "knetc_nll_rows", scores, (scores, labels, terms, np.int32(n), div), label)
    return terms.sum()


def nll_grad_rows(scores, labels, dy, average=True):
    """``prims.nll_grad`` on a C-contiguous 2-D CuPy float array: one kernel writes
    ``(softmax(row) - onehot(label)) * dy [/ N]``. ``dy`` is a Python or NumPy number (used as
    a kernel argument) or a 0-d CuPy array (read by the kernel: no host synchronisation).
    NotImplemented when the labels or ``dy`` do not fit the kernel."""
    label = label_ctype(scores, labels)
    if label is None:
        return NotImplemented
    cp = array_module(scores)
    rows, n = scores.shape
    if type(dy) is type(scores):
        if dy.ndim != 0:
            return NotImplemented
        if dy.dtype != scores.dtype:  # the kernel reads *dy as the scores' type
            if dy.dtype.kind not in "fiub":
                return NotImplemented
            dy = dy.astype(scores.dtype)
        dyp, dyval, use_ptr, div = dy, 0.0, 1, float(rows if average else 1)
    elif isinstance(dy, (int, float, np.integer, np.floating)) and not isinstance(dy, bool):
        # NumPy's code scales by the Python number dy / N (rounded once to the scores' type).
        dyp, dyval, use_ptr, div = scores, float(dy) / rows if average else float(dy), 0, 1.0
    else:
        return NotImplemented
    y = cp.empty_like(scores)
    args = (scores, labels, dyp, np.float64(dyval), np.int32(use_ptr), np.float64(div), y,
            np.int32(n))
    _launch(cp, "knetc_nll_grad_rows", scores, args, label)
    return y
