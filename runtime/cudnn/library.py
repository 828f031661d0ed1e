"""Loading libcudnn.so.9 with ctypes: discovery, prototypes, status checks, handles, workspaces.

This is the shared base of knetc's cuDNN binding (``descriptors``, ``layers`` and ``rnn`` build
on it). Everything here that does not touch the library (discovery order, status names, dtype
codes) is pure Python so the CPU test-suite can check it.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import os
import threading
from collections import OrderedDict

import numpy as np

from ...errors import KnetcError

INSTALL_HINT = ("install cuDNN 9 for CUDA with `pip install knetc[gpu]` (the nvidia-cudnn-cu13 "
                "wheel), or point KNETC_CUDNN_LIBRARY at libcudnn.so.9; KNETC_CUDNN=0 turns the "
                "cuDNN path off and keeps the plain CuPy kernels")


class CudnnUnavailable(KnetcError):
    """libcudnn.so.9 cannot be found or loaded on this machine."""


class CudnnError(KnetcError):
    """A cuDNN call returned a failure status, or was asked for something cuDNN cannot do.

    ``status`` is the cudnnStatus_t (None when knetc refused before calling cuDNN)."""

    status: int | None = None

    @property
    def not_supported(self) -> bool:
        """True for the CUDNN_STATUS_NOT_SUPPORTED family (3000-3999) and knetc's own refusals:
        the caller may run the plain CuPy implementation instead."""
        return self.status is None or 3000 <= self.status < 4000


# cudnnStatus_t values, copied from cudnn_graph_v9.h (cuDNN 9.28).
STATUS_NAMES: dict[int, str] = {
    0: "CUDNN_STATUS_SUCCESS",
    1001: "CUDNN_STATUS_NOT_INITIALIZED",
    1002: "CUDNN_STATUS_SUBLIBRARY_VERSION_MISMATCH",
    1003: "CUDNN_STATUS_SERIALIZATION_VERSION_MISMATCH",
    1004: "CUDNN_STATUS_DEPRECATED",
    1005: "CUDNN_STATUS_LICENSE_ERROR",
    1006: "CUDNN_STATUS_RUNTIME_IN_PROGRESS",
    1007: "CUDNN_STATUS_RUNTIME_FP_OVERFLOW",
    1008: "CUDNN_STATUS_SUBLIBRARY_LOADING_FAILED",
    2000: "CUDNN_STATUS_BAD_PARAM",
    2002: "CUDNN_STATUS_BAD_PARAM_NULL_POINTER",
    2003: "CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER",
    2004: "CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED",
    2005: "CUDNN_STATUS_BAD_PARAM_OUT_OF_BOUND",
    2006: "CUDNN_STATUS_BAD_PARAM_SIZE_INSUFFICIENT",
    2007: "CUDNN_STATUS_BAD_PARAM_STREAM_MISMATCH",
    2008: "CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH",
    2009: "CUDNN_STATUS_BAD_PARAM_DUPLICATED_ENTRIES",
    2010: "CUDNN_STATUS_BAD_PARAM_ATTRIBUTE_TYPE",
    2011: "CUDNN_STATUS_BAD_PARAM_CUDA_GRAPH_MISMATCH",
    2012: "CUDNN_STATUS_BAD_PARAM_DESCRIPTOR_TYPE",
    3000: "CUDNN_STATUS_NOT_SUPPORTED",
    3001: "CUDNN_STATUS_NOT_SUPPORTED_GRAPH_PATTERN",
    3002: "CUDNN_STATUS_NOT_SUPPORTED_SHAPE",
    3003: "CUDNN_STATUS_NOT_SUPPORTED_DATA_TYPE",
    3004: "CUDNN_STATUS_NOT_SUPPORTED_LAYOUT",
    3005: "CUDNN_STATUS_NOT_SUPPORTED_INCOMPATIBLE_CUDA_DRIVER",
    3006: "CUDNN_STATUS_NOT_SUPPORTED_INCOMPATIBLE_CUDART",
    3007: "CUDNN_STATUS_NOT_SUPPORTED_ARCH_MISMATCH",
    3008: "CUDNN_STATUS_NOT_SUPPORTED_RUNTIME_PREREQUISITE_MISSING",
    3009: "CUDNN_STATUS_NOT_SUPPORTED_SUBLIBRARY_UNAVAILABLE",
    3010: "CUDNN_STATUS_NOT_SUPPORTED_SHARED_MEMORY_INSUFFICIENT",
    3011: "CUDNN_STATUS_NOT_SUPPORTED_PADDING",
    3012: "CUDNN_STATUS_NOT_SUPPORTED_BAD_LAUNCH_PARAM",
    3013: "CUDNN_STATUS_NOT_SUPPORTED_CUDA_GRAPH_NATIVE_API",
    3014: "CUDNN_STATUS_NOT_SUPPORTED_INVALID_DYNAMIC_SHAPE",
    4000: "CUDNN_STATUS_INTERNAL_ERROR",
    4001: "CUDNN_STATUS_INTERNAL_ERROR_COMPILATION_FAILED",
    4002: "CUDNN_STATUS_INTERNAL_ERROR_UNEXPECTED_VALUE",
    4003: "CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED",
    4004: "CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED",
    4005: "CUDNN_STATUS_INTERNAL_ERROR_BAD_LAUNCH_PARAM",
    4006: "CUDNN_STATUS_INTERNAL_ERROR_TEXTURE_CREATION_FAILED",
    5000: "CUDNN_STATUS_EXECUTION_FAILED",
    5001: "CUDNN_STATUS_EXECUTION_FAILED_CUDA_DRIVER",
    5002: "CUDNN_STATUS_EXECUTION_FAILED_CUBLAS",
    5003: "CUDNN_STATUS_EXECUTION_FAILED_CUDART",
    5004: "CUDNN_STATUS_EXECUTION_FAILED_CURAND",
}

# cudnnDataType_t (cudnn_graph_v9.h): FLOAT=0, DOUBLE=1, HALF=2.
DATA_TYPES = {np.dtype(np.float32): 0, np.dtype(np.float64): 1, np.dtype(np.float16): 2}

# Short C type names used in prototype tables (all cuDNN handles/descriptors are opaque pointers).
P = ctypes.c_void_p
INT = ctypes.c_int
PI = ctypes.POINTER(ctypes.c_int)
S = ctypes.c_size_t
PS = ctypes.POINTER(ctypes.c_size_t)
D = ctypes.c_double
STATUS = ctypes.c_int  # cudnnStatus_t is a C enum: an int in the ABI

# name -> (restype, argtypes). Applied lazily, on first use of each name, by ``fn``.
# Every signature is copied from the cuDNN 9 headers; enums are ints, descriptors/handles void*.
PROTOTYPES: dict[str, tuple] = {
    "cudnnGetVersion": (S, []),
    "cudnnGetErrorString": (ctypes.c_char_p, [STATUS]),
    "cudnnCreate": (STATUS, [ctypes.POINTER(P)]),
    "cudnnDestroy": (STATUS, [P]),
    "cudnnSetStream": (STATUS, [P, P]),
    # tensors
    "cudnnCreateTensorDescriptor": (STATUS, [ctypes.POINTER(P)]),
    "cudnnSetTensorNdDescriptor": (STATUS, [P, INT, INT, PI, PI]),
    "cudnnDestroyTensorDescriptor": (STATUS, [P]),
    # filters: (desc, dataType, format, nbDims, filterDimA)
    "cudnnCreateFilterDescriptor": (STATUS, [ctypes.POINTER(P)]),
    "cudnnSetFilterNdDescriptor": (STATUS, [P, INT, INT, INT, PI]),
    "cudnnDestroyFilterDescriptor": (STATUS, [P]),
    # convolutions: (desc, arrayLength, padA, strideA, dilationA, mode, computeType)
    "cudnnCreateConvolutionDescriptor": (STATUS, [ctypes.POINTER(P)]),
    "cudnnSetConvolutionNdDescriptor": (STATUS, [P, INT, PI, PI, PI, INT, INT]),
    "cudnnSetConvolutionGroupCount": (STATUS, [P, INT]),
    "cudnnSetConvolutionMathType": (STATUS, [P, INT]),
    "cudnnDestroyConvolutionDescriptor": (STATUS, [P]),
    "cudnnGetConvolutionNdForwardOutputDim": (STATUS, [P, P, P, INT, PI]),
    # pooling: (desc, mode, nanOpt, nbDims, windowDimA, paddingA, strideA)
    "cudnnCreatePoolingDescriptor": (STATUS, [ctypes.POINTER(P)]),
    "cudnnSetPoolingNdDescriptor": (STATUS, [P, INT, INT, INT, PI, PI, PI]),
    "cudnnDestroyPoolingDescriptor": (STATUS, [P]),
    # convolution algorithms: perfResults are arrays of structs, passed as void*
    "cudnnGetConvolutionForwardAlgorithm_v7": (STATUS, [P, P, P, P, P, INT, PI, P]),
    "cudnnGetConvolutionBackwardDataAlgorithm_v7": (STATUS, [P, P, P, P, P, INT, PI, P]),
    "cudnnGetConvolutionBackwardFilterAlgorithm_v7": (STATUS, [P, P, P, P, P, INT, PI, P]),
    "cudnnGetConvolutionForwardWorkspaceSize": (STATUS, [P, P, P, P, P, INT, PS]),
    "cudnnGetConvolutionBackwardDataWorkspaceSize": (STATUS, [P, P, P, P, P, INT, PS]),
    "cudnnGetConvolutionBackwardFilterWorkspaceSize": (STATUS, [P, P, P, P, P, INT, PS]),
    # (handle, alpha, xDesc, x, wDesc, w, convDesc, algo, ws, wsBytes, beta, yDesc, y)
    "cudnnConvolutionForward": (STATUS, [P, P, P, P, P, P, P, INT, P, S, P, P, P]),
    "cudnnConvolutionBackwardData": (STATUS, [P, P, P, P, P, P, P, INT, P, S, P, P, P]),
    "cudnnConvolutionBackwardFilter": (STATUS, [P, P, P, P, P, P, P, INT, P, S, P, P, P]),
    # (handle, poolDesc, alpha, xDesc, x, beta, yDesc, y)
    "cudnnPoolingForward": (STATUS, [P, P, P, P, P, P, P, P]),
    # (handle, poolDesc, alpha, yDesc, y, dyDesc, dy, xDesc, x, beta, dxDesc, dx)
    "cudnnPoolingBackward": (STATUS, [P, P, P, P, P, P, P, P, P, P, P, P]),
    # batch normalization (legacy API, still in cuDNN 9's ops library)
    "cudnnDeriveBNTensorDescriptor": (STATUS, [P, P, INT]),
    # (handle, mode, alpha, beta, xDesc, x, yDesc, y, bnDesc, scale, bias, factor,
    #  runMean, runVar, eps, saveMean, saveInvVar)
    "cudnnBatchNormalizationForwardTraining": (
        STATUS, [P, INT, P, P, P, P, P, P, P, P, P, D, P, P, D, P, P]),
    # (handle, mode, alpha, beta, xDesc, x, yDesc, y, bnDesc, scale, bias, mean, var, eps)
    "cudnnBatchNormalizationForwardInference": (
        STATUS, [P, INT, P, P, P, P, P, P, P, P, P, P, P, D]),
    # (handle, mode, aData, bData, aParam, bParam, xDesc, x, dyDesc, dy, dxDesc, dx,
    #  bnDesc, scale, dScale, dBias, eps, savedMean, savedInvVar)
    "cudnnBatchNormalizationBackward": (
        STATUS, [P, INT, P, P, P, P, P, P, P, P, P, P, P, P, P, P, D, P, P]),
    # (handle, algo, mode, alpha, xDesc, x, beta, yDesc, y)
    "cudnnSoftmaxForward": (STATUS, [P, INT, INT, P, P, P, P, P, P]),
    # (handle, algo, mode, alpha, yDesc, y, dyDesc, dy, beta, dxDesc, dx)
    "cudnnSoftmaxBackward": (STATUS, [P, INT, INT, P, P, P, P, P, P, P, P]),
}

_lock = threading.RLock()
_lib: ctypes.CDLL | None = None
_load_error: str | None = None
_declared: set[str] = set()
_handles: dict[tuple[int, int], int] = {}
_fns: dict[str, tuple] = {}  # name -> (the CDLL it came from, the ctypes function, prototype set)


class LRU:
    """A bounded mapping that drops its least recently used entry past ``maxsize``. The caches of
    descriptors and per-shape plans use it: an evicted descriptor is destroyed only once nothing
    (a running call, a plan) holds it any more."""

    def __init__(self, maxsize: int = 512):
        self.maxsize = maxsize
        self._d: OrderedDict = OrderedDict()

    def get(self, key):
        """The value for ``key`` (None when absent), marked as recently used."""
        v = self._d.get(key)
        if v is not None:
            try:
                self._d.move_to_end(key)
            except KeyError:  # evicted by another thread in between: still a valid value
                pass
        return v

    def put(self, key, value) -> None:
        """Store ``value`` and evict the oldest entries beyond ``maxsize``."""
        with _lock:
            self._d[key] = value
            while len(self._d) > self.maxsize:
                self._d.popitem(last=False)

    def __len__(self) -> int:
        return len(self._d)

    def clear(self) -> None:
        """Drop every entry."""
        with _lock:
            self._d.clear()


def find_library() -> str:
    """Path (or soname) of libcudnn.so.9: ``$KNETC_CUDNN_LIBRARY``, else the ``nvidia.cudnn``
    wheel's ``lib/libcudnn.so.9``, else what the system loader knows as ``cudnn``."""
    env = os.environ.get("KNETC_CUDNN_LIBRARY")
    if env:
        return env
    try:  # the nvidia-cudnn-cu* wheels are namespace packages: no __init__.py, no __file__
        spec = importlib.util.find_spec("nvidia.cudnn")
    except (ImportError, ValueError):
        spec = None
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = os.path.join(folder, "lib", "libcudnn.so.9")
        if os.path.exists(path):
            return path
    return ctypes.util.find_library("cudnn") or "libcudnn.so.9"


# cuDNN 9 is a small core (libcudnn.so.9) that dlopen()s these by soname when first needed.
# Outside the system library path (the pip wheel's folder) they are found only if already
# loaded, so knetc loads those next to the core first, in dependency order, as PyTorch does.
SUBLIBRARIES = ("libcudnn_graph.so.9", "libcudnn_ops.so.9", "libcudnn_cnn.so.9",
                "libcudnn_adv.so.9", "libcudnn_heuristic.so.9",
                "libcudnn_engines_precompiled.so.9", "libcudnn_engines_runtime_compiled.so.9")
loaded_sublibraries: list[str] = []
_keep: list = []  # the sub-library handles, kept for the life of the process


def _load(path: str) -> ctypes.CDLL:
    folder = os.path.dirname(path)
    for name in SUBLIBRARIES if folder else ():
        sub = os.path.join(folder, name)
        if os.path.exists(sub):
            try:
                _keep.append(ctypes.CDLL(sub, mode=ctypes.RTLD_GLOBAL))
                loaded_sublibraries.append(name)
            except OSError:  # e.g. runtime-compiled engines without NVRTC: cuDNN copes
                pass
    return ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)


def lib() -> ctypes.CDLL:
    """The loaded libcudnn (cached); raises CudnnUnavailable with the install hint otherwise."""
    global _lib, _load_error
    if _lib is not None:
        return _lib
    with _lock:
        if _lib is None:
            if _load_error is not None:
                raise CudnnUnavailable(f"cuDNN is not available: {_load_error}", hint=INSTALL_HINT)
            path = find_library()
            try:
                loaded = _load(path)
                major = int(loaded.cudnnGetVersion()) // 10000
            except OSError as e:
                _load_error = f"cannot load {path!r} ({e})"
                raise CudnnUnavailable(f"cuDNN is not available: {_load_error}",
                                       hint=INSTALL_HINT) from None
            if major != 9:
                _load_error = f"{path!r} is cuDNN major version {major}; knetc needs cuDNN 9"
                raise CudnnUnavailable(f"cuDNN is not available: {_load_error}", hint=INSTALL_HINT)
            _declared.clear()
            _lib = loaded
    return _lib


def declare(name: str, restype, argtypes) -> None:
    """Register (or replace) the ctypes prototype of cuDNN function ``name``; applied on first
    use through ``fn``. Other modules (runtime.cudnn.rnn) add their own functions this way."""
    with _lock:
        PROTOTYPES[name] = (restype, list(argtypes))
        _declared.discard(name)
        _fns.pop(name, None)


def fn(name: str):
    """The ctypes function ``name`` of the loaded library with its prototype set (looked up once
    per library: getattr on a CDLL and setting argtypes cost microseconds per call)."""
    hit = _fns.get(name)
    if hit is not None and hit[0] is _lib and name in _declared:
        return hit[1]
    library = lib()
    f = getattr(library, name)
    if name not in _declared:
        if name not in PROTOTYPES:
            raise CudnnError(f"knetc has no ctypes prototype for {name}; declare() it first")
        f.restype, f.argtypes = PROTOTYPES[name]
        _declared.add(name)
    _fns[name] = (library, f)
    return f


def call(name: str, *args, what="") -> None:
    """Call cuDNN function ``name`` and ``check`` its status. ``what`` describes the layer: a
    string, or a callable returning one, called only when the status is a failure (formatting
    every shape on every call costs more than the call itself for small layers)."""
    status = fn(name)(*args)
    if status != 0:
        check(status, what, call=name)


def available() -> bool:
    """True when libcudnn.so.9 loads (it does not check that a GPU is present)."""
    try:
        lib()
        return True
    except CudnnUnavailable:
        return False


def version() -> int:
    """cudnnGetVersion(): e.g. 92800 for cuDNN 9.28.0."""
    return int(fn("cudnnGetVersion")())


def status_name(status: int) -> str:
    """The enum name of a cudnnStatus_t value (``CUDNN_STATUS_<code>`` for unknown codes)."""
    return STATUS_NAMES.get(int(status), f"CUDNN_STATUS_{int(status)}")


def _error_string(status: int) -> str:
    try:
        s = fn("cudnnGetErrorString")(int(status))
        return s.decode(errors="replace") if s else ""
    except Exception:  # the library may be the thing that is broken
        return ""


def check(status: int, what, call: str | None = None) -> None:
    """Raise CudnnError when ``status`` is not CUDNN_STATUS_SUCCESS; ``what`` (a string, or a
    callable returning one: formatted only on failure) names the layer, shapes and dtypes, so the
    message says which knetc call failed and on what (``call``, the function, when empty)."""
    status = int(status)
    if status == 0:
        return
    if callable(what):
        what = what()
    what = what or call or ""
    name = status_name(status)
    text = _error_string(status)
    detail = f"{name} ({status})" + (f": {text}" if text and text != name else "")
    where = f" in {call}" if call else ""
    err = CudnnError(f"cuDNN failed{where} for {what}: {detail}",
                     hint="set KNETC_CUDNN=0 to use the plain CuPy kernels instead, and report "
                          "the shapes above if they should be supported")
    err.status = status
    raise err


def dtype_code(dtype) -> int:
    """cudnnDataType_t of a NumPy/CuPy dtype (float32, float64, float16)."""
    d = np.dtype(dtype)
    if d not in DATA_TYPES:
        raise CudnnError(f"cuDNN does not handle arrays of dtype {d}; use float32, float16 or "
                         "float64 (or KNETC_CUDNN=0)")
    return DATA_TYPES[d]


def _cupy():
    import cupy  # imported lazily: CPU installs have no CuPy
    return cupy


def handle() -> int:
    """The cudnnHandle_t (as an int) for the current CuPy device and stream, created once per
    (device, stream) and bound to that stream with cudnnSetStream."""
    cp = _cupy()
    dev = cp.cuda.runtime.getDevice()
    stream = cp.cuda.get_current_stream().ptr
    key = (dev, stream)
    h = _handles.get(key)
    if h is None:
        with _lock:
            h = _handles.get(key)
            if h is None:
                p = P()
                call("cudnnCreate", ctypes.byref(p), what=f"cudnnCreate on device {dev}")
                call("cudnnSetStream", p, P(stream), what=f"cudnnSetStream on device {dev}")
                h = _handles[key] = p.value
    return h


def device() -> int:
    """The current CUDA device's id (CuPy's), part of every cache key of this binding."""
    return _cupy().cuda.runtime.getDevice()


WORKSPACE_KEEP_MAX = 256 << 20  # larger workspaces are not kept between calls
_workspaces: dict[int, tuple] = {}  # device -> (buffer, the stream object it was last used on)


def workspace(nbytes: int):
    """(buffer, pointer): ``nbytes`` of device memory, (None, None) for zero bytes; keep
    ``buffer`` alive until the cuDNN call using it has been enqueued.

    One buffer per device is reused while the current stream is the one it was last used on:
    work on one stream runs in order, so the next call's kernels start after the previous
    call's are done with it. On another stream a fresh buffer comes from CuPy's (stream-ordered)
    pool and replaces it. The stream object is held so that its handle cannot be recycled by a
    new stream while the buffer is cached."""
    nbytes = int(nbytes)
    if nbytes <= 0:
        return None, None
    cp = _cupy()
    dev = cp.cuda.runtime.getDevice()
    stream = cp.cuda.get_current_stream()
    hit = _workspaces.get(dev)
    if hit is not None and hit[1].ptr == stream.ptr and hit[0].nbytes >= nbytes:
        return hit[0], hit[0].data.ptr
    buf = cp.empty((nbytes,), dtype=np.uint8)
    if nbytes <= WORKSPACE_KEEP_MAX:
        _workspaces[dev] = (buf, stream)
    return buf, buf.data.ptr


def scalar(value: float, dtype) -> ctypes.Array:
    """The host-side alpha/beta scaling factor: double for float64 data, float otherwise
    (cuDNN's rule for alpha/beta pointers)."""
    if np.dtype(dtype) == np.float64:
        return ctypes.c_double(value)
    return ctypes.c_float(value)


_scalars = LRU(256)


def scalars(dtype, alpha: float = 1.0, beta: float = 0.0) -> tuple:
    """Cached ``(byref(alpha), byref(beta))`` host scaling factors for ``dtype`` (never mutated,
    so sharing them between calls is safe)."""
    key = (np.dtype(dtype).char, float(alpha), float(beta))
    hit = _scalars.get(key)
    if hit is None:
        a, b = scalar(float(alpha), dtype), scalar(float(beta), dtype)
        hit = (ctypes.byref(a), ctypes.byref(b), a, b)  # the scalars stay referenced
        _scalars.put(key, hit)
    return hit[0], hit[1]


def ptr(a) -> int:
    """Device pointer of a CuPy array (0/None for None)."""
    return None if a is None else a.data.ptr
