"""Matrix products of CuPy arrays through cuBLAS called with ctypes, so that they can be
captured into CUDA graphs.

CuPy (14) refuses every cuBLAS call while a stream is capturing (its ``cublas.setStream``
raises ``NotImplementedError``), and its matmul, dot, tensordot and einsum all go through it.
cuBLAS itself supports stream capture, provided it allocates nothing meanwhile: each handle here
gets a workspace of its own (``cublasSetWorkspace_v2``) after every ``cublasSetStream_v2``
(which resets the workspace to cuBLAS's default pool).  ``knetc.graph_step`` compiles the step's
gradient with ``@`` written as ``np.matmul`` and ``np`` bound to ``runtime.capturable``, whose
``matmul``/``dot`` are the ones here.

``matmul(a, b)`` has NumPy's semantics for float32/float64 arrays: 2-D@2-D, 1-D operands,
and stacks of matrices whose batch dimensions are equal or where one side has one matrix (or is
2-D).  Row-major products are column-major ones transposed (``C = A @ B`` is ``C^T = B^T A^T``),
so no operand is transposed in memory: a transposed view (``x.T``) is passed with cuBLAS's
transpose flag, other strided views are copied.  Anything else falls back to ``cupy.matmul``
outside a capture, and is a ``KnetcError`` inside one.  The math mode is
``CUBLAS_DEFAULT_MATH``: float32 products are IEEE float32 (no TF32), as CuPy's by default.

One workspace per device is shared by every stream: two graphs with products replayed at the
same time on two different streams would share it (``graph_step`` replays on the caller's
current stream, so one stream is the usual case).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import glob
import importlib.util
import os
import threading
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..errors import KnetcError

__all__ = ["matmul", "dot", "Gemm", "plan", "needs_copy", "layout", "load_library", "OP_N", "OP_T"]

OP_N, OP_T = 0, 1                   # cublasOperation_t: CUBLAS_OP_N, CUBLAS_OP_T
DEFAULT_MATH = 0                    # cublasMath_t: CUBLAS_DEFAULT_MATH (no TF32)
WORKSPACE_BYTES = 32 << 20          # NVIDIA's recommendation for Hopper
_INT_MAX = 2 ** 31 - 1              # m, n, k, ld and the batch count are C ints

_STATUS = {0: "CUBLAS_STATUS_SUCCESS", 1: "CUBLAS_STATUS_NOT_INITIALIZED",
           3: "CUBLAS_STATUS_ALLOC_FAILED", 7: "CUBLAS_STATUS_INVALID_VALUE",
           8: "CUBLAS_STATUS_ARCH_MISMATCH", 11: "CUBLAS_STATUS_MAPPING_ERROR",
           13: "CUBLAS_STATUS_EXECUTION_FAILED", 14: "CUBLAS_STATUS_INTERNAL_ERROR",
           15: "CUBLAS_STATUS_NOT_SUPPORTED", 16: "CUBLAS_STATUS_LICENSE_ERROR"}


# ----- the arguments of one GEMM (pure: tested against NumPy on the CPU) ----------------------

@dataclass(frozen=True)
class Gemm:
    """The arguments of ``cublas<t>gemmStridedBatched`` computing ``a @ b`` (row-major) as
    ``C^T = B^T A^T`` (column-major): cuBLAS's ``A`` is the right operand ``b``, its ``B`` the
    left operand ``a``.  Strides are in elements; a stride 0 repeats one matrix over the batch.
    ``shape`` is the result's (C-contiguous, with ``ldc = n`` and ``stride_c = m * n``)."""
    transa: int
    transb: int
    m: int
    n: int
    k: int
    lda: int
    ldb: int
    ldc: int
    stride_a: int
    stride_b: int
    stride_c: int
    batch: int
    shape: tuple


def layout(rows: int, cols: int, s0: int, s1: int) -> tuple[int, int] | None:
    """How cuBLAS reads the row-major matrix ``X`` (``rows x cols``, element strides ``s0, s1``)
    as the transpose ``X^T`` it needs: ``(OP_N, ld)`` when its memory is ``X^T`` column-major
    (rows contiguous), ``(OP_T, ld)`` when it is ``X`` column-major (a transposed view), or None
    (copy it first).  A dimension of size 1 takes any stride; an empty matrix is never read."""
    if rows == 0 or cols == 0:
        return OP_N, max(cols, 1)
    if (cols == 1 or s1 == 1) and (rows == 1 or s0 >= max(cols, 1)):
        return OP_N, (s0 if rows > 1 else max(cols, 1))
    if (rows == 1 or s0 == 1) and (cols == 1 or s1 >= max(rows, 1)):
        return OP_T, (s1 if cols > 1 else max(rows, 1))
    return None


def _batch_stride(shape: tuple, strides: tuple) -> int | None:
    """The one element stride between consecutive matrices of a stack with batch dimensions
    ``shape`` (0 for one matrix), or None when the batch dimensions do not collapse to one."""
    dims = [(n, s) for n, s in zip(shape, strides) if n != 1]
    if not dims or any(n == 0 for n, _ in dims):   # one matrix, or none (nothing is read)
        return 0
    stride = dims[-1][1]
    expected = stride
    for n, s in reversed(dims):
        if s != expected or s < 0:
            return None
        expected = s * n
    return stride


def _promote(shape: tuple, strides: tuple, left: bool) -> tuple[tuple, tuple]:
    """A 1-D operand as a matrix: a row ``(1, K)`` on the left, a column ``(K, 1)`` on the right."""
    if len(shape) != 1:
        return tuple(shape), tuple(strides)
    (k,), (s,) = shape, strides
    return ((1, k), (s * k, s)) if left else ((k, 1), (s, s))


def needs_copy(shape: tuple, strides: tuple | None, left: bool) -> bool:
    """Must this operand (element ``strides``; None: not expressible in elements) be copied to a
    C-contiguous array before cuBLAS can read it?"""
    if len(shape) == 0 or 0 in shape:     # nothing is read (NumPy gives empty arrays 0 strides)
        return False
    if strides is None:
        return True
    shape, strides = _promote(tuple(shape), tuple(strides), left)
    if layout(shape[-2], shape[-1], strides[-2], strides[-1]) is None:
        return True
    return _batch_stride(shape[:-2], strides[:-2]) is None


def _contiguous(shape: tuple) -> tuple:
    out, step = [], 1
    for n in reversed(shape):
        out.append(step)
        step *= max(n, 1)
    return tuple(reversed(out))


def _stripped(batch: tuple) -> tuple:
    i = 0
    while i < len(batch) and batch[i] == 1:
        i += 1
    return batch[i:]


def plan(a_shape: tuple, a_strides: tuple, b_shape: tuple, b_strides: tuple) -> Gemm | None:
    """The GEMM computing ``np.matmul(a, b)`` for operands of these shapes and element strides
    (which ``needs_copy`` accepted), or None for what it does not cover (0-d operands, batch
    dimensions that broadcast other than one side having a single matrix, C int overflow).
    Raises ValueError when the inner dimensions differ (as NumPy does)."""
    if len(a_shape) == 0 or len(b_shape) == 0:
        return None
    if 0 in a_shape:        # never read: any valid strides will do
        a_strides = _contiguous(a_shape)
    if 0 in b_shape:
        b_strides = _contiguous(b_shape)
    sa, ta = _promote(tuple(a_shape), tuple(a_strides), True)
    sb, tb = _promote(tuple(b_shape), tuple(b_strides), False)
    big_m, k = sa[-2:]
    k2, big_n = sb[-2:]
    if k != k2:
        raise ValueError(f"matmul: mismatch in its core dimension: {tuple(a_shape)} @ "
                         f"{tuple(b_shape)} ({k} != {k2})")
    batch_a, batch_b = sa[:-2], sb[:-2]
    na, nb = int(np.prod(batch_a, dtype=np.int64)), int(np.prod(batch_b, dtype=np.int64))
    if not (na <= 1 or nb <= 1 or _stripped(batch_a) == _stripped(batch_b)):
        return None
    try:
        batch_shape = np.broadcast_shapes(batch_a, batch_b)
    except ValueError:
        raise ValueError(f"matmul: batch dimensions do not broadcast: {tuple(a_shape)} @ "
                         f"{tuple(b_shape)}") from None
    batch = int(np.prod(batch_shape, dtype=np.int64))
    la = layout(big_m, k, ta[-2], ta[-1])       # the left operand is cuBLAS's B
    lb = layout(k, big_n, tb[-2], tb[-1])       # the right operand is cuBLAS's A
    stride_left = 0 if na <= 1 else _batch_stride(batch_a, ta[:-2])
    stride_right = 0 if nb <= 1 else _batch_stride(batch_b, tb[:-2])
    if la is None or lb is None or stride_left is None or stride_right is None:
        raise AssertionError("knetc internal: plan() called on an operand needs_copy() refuses")
    shape = tuple(batch_shape)
    if len(a_shape) > 1:
        shape += (big_m,)
    if len(b_shape) > 1:
        shape += (big_n,)
    g = Gemm(transa=lb[0], transb=la[0], m=big_n, n=big_m, k=k, lda=lb[1], ldb=la[1],
             ldc=max(big_n, 1), stride_a=stride_right, stride_b=stride_left,
             stride_c=big_m * big_n, batch=batch, shape=shape)
    if max(g.m, g.n, g.k, g.lda, g.ldb, g.ldc, g.batch) > _INT_MAX:
        return None
    return g


def element_strides(strides: tuple, itemsize: int) -> tuple | None:
    """Byte strides as element strides, or None when one is not a multiple of the item size."""
    out = []
    for s in strides:
        if s % itemsize:
            return None
        out.append(s // itemsize)
    return tuple(out)


# ----- the library -----------------------------------------------------------------------------

_SONAMES = ("libcublas.so.13", "libcublas.so.12")
_PACKAGES = ("nvidia.cu13", "nvidia.cublas")


def _loaded_paths(maps: str = "/proc/self/maps") -> list[str]:
    """Paths of libcublas copies already mapped into this process (CuPy's own, normally)."""
    found: list[str] = []
    try:
        with open(maps) as f:
            for line in f:
                path = line.rsplit(None, 1)[-1] if "/" in line else ""
                name = os.path.basename(path)
                if name.startswith("libcublas.so") and path not in found:
                    found.append(path)
    except OSError:
        pass
    return found


def _package_paths(packages: tuple = _PACKAGES) -> list[str]:
    """libcublas.so.* under the ``lib/`` folder of the NVIDIA wheels' namespace packages."""
    out: list[str] = []
    for name in packages:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        for folder in (spec.submodule_search_locations or []) if spec is not None else []:
            out += sorted(glob.glob(os.path.join(folder, "lib", "libcublas.so.*")), reverse=True)
    return out


def library_candidates(maps: str = "/proc/self/maps", packages: tuple = _PACKAGES,
                       find_library: Callable[[str], str | None] = ctypes.util.find_library
                       ) -> list[str]:
    """Where to look for cuBLAS, in order: the copy already loaded (by CuPy), its sonames (dlopen
    returns a loaded copy), the NVIDIA wheels, the system's linker path."""
    out = _loaded_paths(maps) + list(_SONAMES) + _package_paths(packages)
    system = find_library("cublas")
    if system:
        out.append(system)
    return list(dict.fromkeys(out))


def load_library(candidates: list[str] | None = None,
                 loader: Callable[[str], Any] = ctypes.CDLL) -> Any:
    """The cuBLAS library (a ctypes CDLL): the first candidate that loads and has the functions
    used here; a KnetcError listing every attempt otherwise."""
    if candidates is None:
        try:    # make CuPy load its cuBLAS first (its extension links it): the same copy is found
            import cupy_backends.cuda.libs.cublas  # noqa: F401
        except Exception:
            pass
        candidates = library_candidates()
    tried = []
    for path in candidates:
        try:
            lib = loader(path)
            getattr(lib, "cublasSgemmStridedBatched")
            getattr(lib, "cublasSetWorkspace_v2")
            return lib
        except (OSError, AttributeError) as e:
            tried.append(f"{path}: {e}")
    raise KnetcError("knetc: cannot load cuBLAS (for matrix products captured into CUDA graphs); "
                     "tried " + "; ".join(tried or ["nothing"]),
                     hint="Install the CUDA libraries CuPy uses (pip install cupy-cuda13x with "
                          "nvidia-cublas), or put libcublas.so on LD_LIBRARY_PATH.")


_P = ctypes.c_void_p
_I = ctypes.c_int
_LL = ctypes.c_longlong
_PF = ctypes.POINTER(ctypes.c_float)
_PD = ctypes.POINTER(ctypes.c_double)

# Prototypes from cublas_api.h (CUDA 12 and 13).  Every enum is a C int; cublasHandle_t and
# cudaStream_t are pointers.  The legacy API (cublas.h) exports cublasSgemm and cublasCreate
# with other signatures: only the _v2 names are bound.
PROTOTYPES: dict[str, list] = {
    "cublasCreate_v2": [ctypes.POINTER(_P)],
    "cublasDestroy_v2": [_P],
    "cublasSetStream_v2": [_P, _P],
    "cublasSetWorkspace_v2": [_P, _P, ctypes.c_size_t],
    "cublasSetMathMode": [_P, _I],
    "cublasSgemm_v2": [_P, _I, _I, _I, _I, _I, _PF, _P, _I, _P, _I, _PF, _P, _I],
    "cublasDgemm_v2": [_P, _I, _I, _I, _I, _I, _PD, _P, _I, _P, _I, _PD, _P, _I],
    "cublasSgemmStridedBatched": [_P, _I, _I, _I, _I, _I, _PF, _P, _I, _LL, _P, _I, _LL,
                                  _PF, _P, _I, _LL, _I],
    "cublasDgemmStridedBatched": [_P, _I, _I, _I, _I, _I, _PD, _P, _I, _LL, _P, _I, _LL,
                                  _PD, _P, _I, _LL, _I],
}


class Api:
    """The bound cuBLAS functions (argtypes and an int status result set on each)."""

    def __init__(self, lib: Any) -> None:
        self.lib = lib
        for name, argtypes in PROTOTYPES.items():
            fn = getattr(lib, name)
            fn.argtypes = argtypes
            fn.restype = ctypes.c_int
            setattr(self, name, fn)


def check(status: int, call: str, detail: str = "") -> None:
    """A KnetcError naming the cuBLAS call, its status and what it was asked, unless success."""
    if status != 0:
        name = _STATUS.get(status, "unknown status")
        raise KnetcError(f"knetc: cuBLAS {call} failed: {name} ({status})"
                         + (f" for {detail}" if detail else ""),
                         hint="A GPU that is out of memory, or a CUDA/cuBLAS version mismatch "
                              "(the cuBLAS loaded must be the one CuPy uses).")


class Handle:
    """A cuBLAS handle with its own workspace on one device; ``gemm`` runs one product on a
    stream.  A lock makes set-stream, set-workspace and the call one step per handle."""

    def __init__(self, api: Api, workspace_ptr: int, workspace_bytes: int,
                 keep: Any = None) -> None:
        self.api, self.workspace_ptr, self.workspace_bytes = api, workspace_ptr, workspace_bytes
        self._keep = keep               # the workspace's memory object: alive with the handle
        self._lock = threading.Lock()
        h = _P()
        check(api.cublasCreate_v2(ctypes.byref(h)), "cublasCreate_v2")
        self.ptr = h
        check(api.cublasSetMathMode(h, DEFAULT_MATH), "cublasSetMathMode")

    def gemm(self, g: Gemm, dtype: np.dtype, a_ptr: int, b_ptr: int, c_ptr: int,
             stream_ptr: int) -> None:
        """``C = A @ B`` (row-major ``a``, ``b`` at these device addresses) as planned by ``g``."""
        api, h = self.api, self.ptr
        if dtype == np.float32:
            one, zero = ctypes.c_float(1.0), ctypes.c_float(0.0)
            single, strided = api.cublasSgemm_v2, api.cublasSgemmStridedBatched
            names = ("cublasSgemm_v2", "cublasSgemmStridedBatched")
        elif dtype == np.float64:
            one, zero = ctypes.c_double(1.0), ctypes.c_double(0.0)
            single, strided = api.cublasDgemm_v2, api.cublasDgemmStridedBatched
            names = ("cublasDgemm_v2", "cublasDgemmStridedBatched")
        else:
            raise KnetcError(f"knetc internal: cuBLAS gemm of {dtype}")
        with self._lock:
            # cublasSetStream resets the workspace to cuBLAS's own pool, which would allocate
            # while capturing: set ours after it, every time.
            check(api.cublasSetStream_v2(h, stream_ptr), "cublasSetStream_v2")
            check(api.cublasSetWorkspace_v2(h, self.workspace_ptr, self.workspace_bytes),
                  "cublasSetWorkspace_v2")
            if g.batch == 1:
                status = single(h, g.transa, g.transb, g.m, g.n, g.k, ctypes.byref(one),
                                b_ptr, g.lda, a_ptr, g.ldb, ctypes.byref(zero), c_ptr, g.ldc)
                name = names[0]
            else:
                status = strided(h, g.transa, g.transb, g.m, g.n, g.k, ctypes.byref(one),
                                 b_ptr, g.lda, g.stride_a, a_ptr, g.ldb, g.stride_b,
                                 ctypes.byref(zero), c_ptr, g.ldc, g.stride_c, g.batch)
                name = names[1]
        check(status, name, f"a product of shape {g.shape} ({dtype}; {g})")


# ----- CuPy arrays -----------------------------------------------------------------------------

_api: Api | None = None
_handles: dict[int, Handle] = {}
_init_lock = threading.Lock()


def _handle(cp: Any, device_id: int) -> Handle:
    h = _handles.get(device_id)
    if h is None:
        global _api
        with _init_lock:
            h = _handles.get(device_id)
            if h is None:
                if _api is None:
                    _api = Api(load_library())
                with cp.cuda.Device(device_id):
                    # Not from CuPy's memory pool: graph_step allocates from a pool of its own,
                    # and this buffer outlives every graph that uses it.
                    mem = cp.cuda.Memory(WORKSPACE_BYTES)
                    h = Handle(_api, mem.ptr, WORKSPACE_BYTES, keep=mem)
                _handles[device_id] = h
    return h


def _cupy_of(*arrays: Any) -> Any:
    from .backend import array_module
    xp = array_module(*arrays)
    return None if xp is np else xp


def _capturing(cp: Any) -> bool:
    try:
        return bool(cp.cuda.get_current_stream().is_capturing())
    except Exception:       # a query CUDA refuses: assume a capture (the safe answer)
        return True


def _fallback(cp: Any, fn: str, a: Any, b: Any, out: Any, why: str) -> Any:
    if _capturing(cp):
        raise KnetcError(
            f"knetc: np.{fn} of shapes {np.shape(a)} and {np.shape(b)} "
            f"({getattr(a, 'dtype', type(a).__name__)}, {getattr(b, 'dtype', type(b).__name__)})"
            f" cannot be captured into a CUDA graph: {why}",
            hint="knetc captures float32/float64 products of vectors, matrices and stacks of "
                 "matrices (equal batch dimensions, or one matrix on one side); CuPy's own "
                 "cuBLAS calls refuse capture. Reshape to such a product, or run the step "
                 "without a graph.")
    return getattr(cp, fn)(a, b) if out is None else getattr(cp, fn)(a, b, out=out)


def matmul(a: Any, b: Any, out: Any = None) -> Any:
    """``np.matmul(a, b)`` on CuPy arrays through knetc's own cuBLAS calls (capturable); NumPy
    arrays go to NumPy.  See the module docstring for what is covered."""
    cp = _cupy_of(a, b)
    if cp is None:
        return np.matmul(a, b) if out is None else np.matmul(a, b, out=out)
    if not (isinstance(a, cp.ndarray) and isinstance(b, cp.ndarray)):
        return _fallback(cp, "matmul", a, b, out, "an operand is not a CuPy array")
    dtype = np.result_type(a.dtype, b.dtype)
    if dtype not in (np.float32, np.float64):
        return _fallback(cp, "matmul", a, b, out, f"its dtype is {dtype}, not float32/float64")
    if a.ndim == 0 or b.ndim == 0:
        return _fallback(cp, "matmul", a, b, out, "an operand is 0-d")
    a = a if a.dtype == dtype else a.astype(dtype)
    b = b if b.dtype == dtype else b.astype(dtype)
    size = dtype.itemsize
    if needs_copy(a.shape, element_strides(a.strides, size), True):
        a = cp.ascontiguousarray(a)
    if needs_copy(b.shape, element_strides(b.strides, size), False):
        b = cp.ascontiguousarray(b)
    g = plan(a.shape, element_strides(a.strides, size), b.shape, element_strides(b.strides, size))
    if g is None:
        return _fallback(cp, "matmul", a, b, out,
                         "its batch dimensions broadcast other than one side holding one matrix")
    direct = out is not None and out.shape == g.shape and out.dtype == dtype and \
        out.flags.c_contiguous
    c = out if direct else cp.empty(g.shape, dtype)
    if c.size == 0:
        pass
    elif g.k == 0:
        c.fill(0)
    else:
        device = a.data.device_id
        if device != b.data.device_id or device != c.data.device_id:
            raise KnetcError(f"knetc: np.matmul of arrays on devices {device} and "
                             f"{b.data.device_id}", hint="Move both to one GPU.")
        _handle(cp, device).gemm(g, dtype, a.data.ptr, b.data.ptr, c.data.ptr,
                                 cp.cuda.get_current_stream().ptr)
    if out is not None and c is not out:
        out[...] = c
        return out
    return c


def dot(a: Any, b: Any, out: Any = None) -> Any:
    """``np.dot(a, b)``: the products of vectors and matrices (where dot is matmul) through
    ``matmul``; a 0-d operand multiplies; N-D operands go to CuPy's dot outside a capture."""
    cp = _cupy_of(a, b)
    if cp is None:
        return np.dot(a, b) if out is None else np.dot(a, b, out=out)
    if np.ndim(a) == 0 or np.ndim(b) == 0:
        return cp.multiply(a, b) if out is None else cp.multiply(a, b, out=out)
    if a.ndim <= 2 and b.ndim <= 2:
        return matmul(a, b, out=out)
    return _fallback(cp, "dot", a, b, out, "np.dot of N-D arrays is not a matrix product")
