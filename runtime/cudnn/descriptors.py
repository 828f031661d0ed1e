"""cuDNN descriptor objects (tensor, filter, convolution, pooling) and the pure-Python argument
computation behind them.

``*_args`` functions turn shapes/strides/settings into the exact int lists passed to the
``cudnnSet*Descriptor`` calls and validate them; they touch no library, so the CPU tests check
them. The ``*Desc`` classes own one cuDNN descriptor each (destroyed in ``__del__`` or on leaving a
``with`` block). ``tensor``/``filt``/``conv``/``pooling`` return cached descriptors: a descriptor
is immutable once set, and creating one costs a few microseconds per call otherwise.
"""
from __future__ import annotations

import ctypes

import numpy as np

from . import library as L
from .library import CudnnError

DIM_MAX = 8  # CUDNN_DIM_MAX
MIN_DIMS = 4  # legacy descriptors: pad short tensors with trailing unit dimensions
TENSOR_NCHW = 0  # cudnnTensorFormat_t
MATH = {"default": 0, "tensor_op": 1, "allow_conversion": 2, "fma": 3}  # cudnnMathType_t
PROPAGATE_NAN = 1  # cudnnNanPropagation_t: NumPy's maximum propagates NaN, and so do we


# --------------------------------------------------------------------------- argument computation

def tensor_args(shape, strides_bytes, itemsize: int, min_dims: int = MIN_DIMS):
    """``(dims, strides)`` in elements for cudnnSetTensorNdDescriptor, from a shape and NumPy
    (byte) strides. Strides must be positive multiples of the item size (cuDNN has no negative or
    zero strides); size-1 axes get a harmless stride. Short tensors are padded with trailing unit
    axes to ``min_dims``."""
    shape, strides_bytes = tuple(int(n) for n in shape), tuple(int(s) for s in strides_bytes)
    if len(shape) != len(strides_bytes):
        raise CudnnError(f"shape {shape} and strides {strides_bytes} differ in length")
    if any(n < 1 for n in shape):
        raise CudnnError(f"cuDNN needs every dimension >= 1, got shape {shape}")
    dims, strides = list(shape), []
    for n, s in zip(shape, strides_bytes):
        if n == 1:
            s = max(s, itemsize)  # the stride of a unit axis is never used: any positive value
        if s <= 0 or s % itemsize:
            raise CudnnError(f"cuDNN needs positive strides that are multiples of the item size; "
                             f"shape {shape} has byte strides {strides_bytes}")
        strides.append(s // itemsize)
    while len(dims) < min_dims:
        dims.append(1)
        strides.append(1)
    if len(dims) > DIM_MAX:
        raise CudnnError(f"cuDNN tensors have at most {DIM_MAX} dimensions, got shape {shape}")
    return dims, strides


def packed_strides(shape) -> list[int]:
    """C-contiguous strides, in elements, of ``shape``."""
    strides, acc = [], 1
    for n in reversed(tuple(shape)):
        strides.append(acc)
        acc *= max(int(n), 1)
    return strides[::-1]


def filter_args(shape) -> list[int]:
    """Filter dims (K, C/groups, kh, kw[, kd]) for cudnnSetFilterNdDescriptor (packed NCHW)."""
    dims = [int(n) for n in shape]
    if not 3 <= len(dims) <= DIM_MAX or min(dims) < 1:
        raise CudnnError(f"cuDNN filters need 3..{DIM_MAX} dimensions >= 1, got {tuple(shape)}")
    return dims


def _tuple(v, n: int, name: str) -> list[int]:
    vals = [v] * n if np.ndim(v) == 0 else list(v)
    if len(vals) != n or any(int(a) != a for a in vals):
        raise CudnnError(f"{name} must be an int or {n} ints, got {v!r}")
    return [int(a) for a in vals]


def conv_args(nspatial: int, padding, stride, dilation, mode: int, groups: int = 1):
    """``(pads, strides, dilations, mode, groups)`` for cudnnSetConvolutionNdDescriptor /
    cudnnSetConvolutionGroupCount. ``mode`` is Knet's and cuDNN's: 0 = CUDNN_CONVOLUTION (the
    kernel flipped, Knet's default), 1 = CUDNN_CROSS_CORRELATION (torch's conv2d)."""
    pads = _tuple(padding, nspatial, "padding")
    strides = _tuple(stride, nspatial, "stride")
    dils = _tuple(dilation, nspatial, "dilation")
    if min(pads) < 0 or min(strides) < 1 or min(dils) < 1:
        raise CudnnError(f"conv needs padding >= 0, stride >= 1 and dilation >= 1; got padding "
                         f"{pads}, stride {strides}, dilation {dils}")
    if mode not in (0, 1):
        raise CudnnError(f"conv mode must be 0 (convolution) or 1 (cross-correlation), got {mode}")
    if int(groups) != groups or groups < 1:
        raise CudnnError(f"conv groups must be a positive int, got {groups!r}")
    return pads, strides, dils, int(mode), int(groups)


def conv_output_shape(xshape, wshape, pads, strides, dils, groups: int = 1) -> tuple:
    """cuDNN's output shape of a forward convolution (N, K, *spatial); validates channels."""
    N, C = xshape[:2]
    K, Cg = wshape[:2]
    if C != Cg * groups or K % groups:
        raise CudnnError(f"conv with {groups} group(s): x has {C} channels, w has shape "
                         f"{tuple(wshape)} (needs C == w.shape[1]*groups and K divisible by "
                         "groups)")
    out = [1 + (n + 2 * p - ((k - 1) * d + 1)) // s
           for n, k, p, s, d in zip(xshape[2:], wshape[2:], pads, strides, dils)]
    if min(out) < 1:
        raise CudnnError(f"conv input {tuple(xshape)} is too small for filter {tuple(wshape)}")
    return (N, K, *out)


def compute_type(dtype) -> int:
    """The convolution compute type: double for float64, float for float32 and float16 (float
    accumulation for half data, as PyTorch does)."""
    return 1 if np.dtype(dtype) == np.float64 else 0


def math_type(dtype, allow_tf32: bool = False) -> int:
    """cudnnMathType_t: FMA-only for float32 (CUDNN_DEFAULT_MATH may use TF32 tensor cores on
    Ampere and later, ~1e-3 relative error, unlike NumPy) unless ``allow_tf32``; tensor cores for
    float16; default for float64."""
    d = np.dtype(dtype)
    if d == np.float16:
        return MATH["tensor_op"]
    if d == np.float32:
        return MATH["default"] if allow_tf32 else MATH["fma"]
    return MATH["default"]


# Knet's pool modes are cuDNN's cudnnPoolingMode_t values: 0 max, 1 average counting padded
# cells, 2 average over real cells only, 3 deterministic max.
POOL_MODES = {0: 0, 1: 1, 2: 2, 3: 3}


def pool_args(mode: int, window, padding, stride, nspatial: int = 2):
    """``(mode, nan, windows, pads, strides)`` for cudnnSetPoolingNdDescriptor; ``stride`` None
    means the window (Knet's default)."""
    if mode not in POOL_MODES:
        raise CudnnError(f"pool mode must be 0, 1, 2 or 3, got {mode}")
    win = _tuple(window, nspatial, "window")
    pads = _tuple(padding, nspatial, "padding")
    strides = _tuple(window if stride is None else stride, nspatial, "stride")
    if min(win) < 1 or min(strides) < 1 or min(pads) < 0:
        raise CudnnError(f"pool needs window >= 1, stride >= 1, padding >= 0; got {win}, "
                         f"{strides}, {pads}")
    if any(p >= k for p, k in zip(pads, win)):
        raise CudnnError("pool padding must be smaller than the window")
    return POOL_MODES[mode], PROPAGATE_NAN, win, pads, strides


def int_array(values):
    """A ctypes int array of ``values``."""
    values = list(values)
    return (ctypes.c_int * len(values))(*values)


# --------------------------------------------------------------------------- descriptor objects

class Owned:
    """Owns one cuDNN object, made by the C function named ``create`` and destroyed (when this
    object goes) by ``destroy``; ``value`` is its pointer as an int (also what ctypes passes for
    the object itself, through ``_as_parameter_``). Subclasses name the two in class attributes."""

    _create = _destroy = ""

    def __init__(self, create: str | None = None, destroy: str | None = None):
        self.value = self._as_parameter_ = None
        if create is not None:
            self._create, self._destroy = create, destroy
        p = ctypes.c_void_p()
        L.call(self._create, ctypes.byref(p), what=create or type(self).__name__)
        self.value = self._as_parameter_ = p.value

    def close(self) -> None:
        """Destroy the descriptor now (idempotent)."""
        v, self.value, self._as_parameter_ = self.value, None, None
        if v is not None:
            try:
                L.fn(self._destroy)(ctypes.c_void_p(v))
            except Exception:  # interpreter shutdown: the library may be gone
                pass

    def __del__(self):
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class TensorDesc(Owned):
    """cudnnTensorDescriptor_t for a dtype, dims and element strides."""

    _create, _destroy = "cudnnCreateTensorDescriptor", "cudnnDestroyTensorDescriptor"

    def __init__(self, dtype, dims, strides):
        super().__init__()
        self.dims, self.strides = list(dims), list(strides)
        L.call("cudnnSetTensorNdDescriptor", self, L.dtype_code(dtype), len(self.dims),
               int_array(self.dims), int_array(self.strides),
               what=f"tensor {np.dtype(dtype)} dims {self.dims} strides {self.strides}")


class FilterDesc(Owned):
    """cudnnFilterDescriptor_t (packed NCHW) for a dtype and filter shape."""

    _create, _destroy = "cudnnCreateFilterDescriptor", "cudnnDestroyFilterDescriptor"

    def __init__(self, dtype, shape):
        super().__init__()
        dims = filter_args(shape)
        L.call("cudnnSetFilterNdDescriptor", self, L.dtype_code(dtype), TENSOR_NCHW, len(dims),
               int_array(dims), what=f"filter {np.dtype(dtype)} {tuple(shape)}")


class ConvDesc(Owned):
    """cudnnConvolutionDescriptor_t with padding, stride, dilation, mode, groups, math type."""

    _create, _destroy = "cudnnCreateConvolutionDescriptor", "cudnnDestroyConvolutionDescriptor"

    def __init__(self, dtype, pads, strides, dils, mode, groups, math):
        super().__init__()
        what = f"conv pads {pads} strides {strides} dilation {dils} mode {mode} groups {groups}"
        L.call("cudnnSetConvolutionNdDescriptor", self, len(pads), int_array(pads),
               int_array(strides), int_array(dils), mode, compute_type(dtype), what=what)
        if groups != 1:
            L.call("cudnnSetConvolutionGroupCount", self, groups, what=what)
        L.call("cudnnSetConvolutionMathType", self, math, what=what)


class PoolDesc(Owned):
    """cudnnPoolingDescriptor_t."""

    _create, _destroy = "cudnnCreatePoolingDescriptor", "cudnnDestroyPoolingDescriptor"

    def __init__(self, mode, nan, win, pads, strides):
        super().__init__()
        L.call("cudnnSetPoolingNdDescriptor", self, mode, nan, len(win), int_array(win),
               int_array(pads), int_array(strides),
               what=f"pool mode {mode} window {win} padding {pads} stride {strides}")


# --------------------------------------------------------------------------- cached constructors
# Keys hold everything a descriptor depends on: the device, the dtype and the exact shape and
# (byte) strides of the array it describes. The fast path keys on the array's own shape and
# strides, so a hit does no argument computation at all.

_CACHE_MAX = 512
_cache = L.LRU(_CACHE_MAX)


def _cached(key, make):
    d = _cache.get(key)
    if d is None:
        d = make()
        _cache.put(key, d)
    return d


def tensor(a, shape=None, device: int | None = None) -> TensorDesc:
    """Cached tensor descriptor of CuPy array ``a`` (optionally viewed with another ``shape``
    of the same C-contiguous data) on ``device`` (the current one when None)."""
    dev = L.device() if device is None else device
    if shape is None:
        key = ("t", dev, a.dtype.char, tuple(a.shape), tuple(a.strides))
    else:
        key = ("v", dev, a.dtype.char, tuple(int(n) for n in shape))
    d = _cache.get(key)
    if d is None:
        if shape is None:
            dims, strides = tensor_args(a.shape, a.strides, a.itemsize)
        else:
            dims, strides = tensor_args(shape, [s * a.itemsize for s in packed_strides(shape)],
                                        a.itemsize)
        d = TensorDesc(a.dtype, dims, strides)
        _cache.put(key, d)
    return d


def tensor_nd(dtype, shape, device: int | None = None) -> TensorDesc:
    """Cached descriptor of a packed tensor of ``shape`` and ``dtype``."""
    dt = np.dtype(dtype)
    dev = L.device() if device is None else device
    key = ("v", dev, dt.char, tuple(int(n) for n in shape))
    d = _cache.get(key)
    if d is None:
        dims, strides = tensor_args(shape, [s * dt.itemsize for s in packed_strides(shape)],
                                    dt.itemsize)
        d = TensorDesc(dt, dims, strides)
        _cache.put(key, d)
    return d


def filt(dtype, shape, device: int | None = None) -> FilterDesc:
    """Cached filter descriptor (filters are packed: dtype and shape say everything)."""
    dev = L.device() if device is None else device
    key = ("f", dev, np.dtype(dtype).char, tuple(int(n) for n in shape))
    return _cached(key, lambda: FilterDesc(dtype, shape))


def conv(dtype, pads, strides, dils, mode, groups, math, device: int | None = None) -> ConvDesc:
    """Cached convolution descriptor."""
    dev = L.device() if device is None else device
    key = ("c", dev, np.dtype(dtype).char, tuple(pads), tuple(strides), tuple(dils), int(mode),
           int(groups), int(math))
    return _cached(key, lambda: ConvDesc(dtype, pads, strides, dils, mode, groups, math))


def pooling(mode, nan, win, pads, strides, device: int | None = None) -> PoolDesc:
    """Cached pooling descriptor."""
    dev = L.device() if device is None else device
    key = ("p", dev, int(mode), int(nan), tuple(win), tuple(pads), tuple(strides))
    return _cached(key, lambda: PoolDesc(mode, nan, win, pads, strides))
