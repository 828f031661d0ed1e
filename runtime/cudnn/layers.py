"""knetc's layers through cuDNN on CuPy arrays: convolution (forward, backward data/filter,
deconv4), pooling/unpooling, batch normalization and (log-)softmax, each forward and backward.

The public functions mirror ``runtime.conv``/``runtime.layers`` (same arguments, same results).
They return ``NotImplemented`` where cuDNN cannot or should not do the job: a dtype or layout it
refuses, a CUDNN_STATUS_NOT_SUPPORTED* status, and also arguments that are simply wrong (bad
shapes or settings): the caller then runs its own code, which raises its usual error, so error
messages read the same on CPU and GPU. (This module does not import runtime.conv: that one
imports runtime.cudnn.) Any other cuDNN failure raises CudnnError naming the layer and shapes.
"""
from __future__ import annotations

import ctypes
import functools
import math
import os

import numpy as np

from . import descriptors as D
from . import library as L
from .library import CudnnError

BN_SPATIAL = 1  # CUDNN_BATCHNORM_SPATIAL
SOFTMAX_ACCURATE, SOFTMAX_LOG, SOFTMAX_CHANNEL = 1, 2, 1
FLOATS = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


def _cp():
    import cupy
    return cupy


def _fallback_ok(f):
    """``f``'s result, or NotImplemented when cuDNN cannot handle this case (see module doc)."""
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        try:
            return f(*args, **kwargs)
        except CudnnError as e:
            if e.not_supported:
                return NotImplemented
            raise
    return wrapper


def _refuse(message: str):
    """Decline (-> NotImplemented -> the caller's own code and its own error message)."""
    raise CudnnError(message)


def _contig(a):
    return a if a.flags.c_contiguous else _cp().ascontiguousarray(a)


def _same_float(*arrays):
    dt = arrays[0].dtype
    if dt not in FLOATS or any(a.dtype != dt for a in arrays):
        raise CudnnError(f"cuDNN path needs arrays of one float dtype, got "
                         f"{[str(a.dtype) for a in arrays]}")
    if any(a.size == 0 for a in arrays):
        raise CudnnError("cuDNN does not take empty arrays")
    return dt


def _tf32() -> bool:
    return os.environ.get("KNETC_CUDNN_TF32", "0") == "1"


def _shapes(**arrays) -> str:
    return ", ".join(f"{k} {getattr(v, 'dtype', '')}{tuple(getattr(v, 'shape', v))}"
                     for k, v in arrays.items())


# --------------------------------------------------------------------------- convolution algorithms

class AlgoPerf(ctypes.Structure):
    """cudnnConvolution{Fwd,BwdData,BwdFilter}AlgoPerf_t (the three share this layout)."""
    _fields_ = [("algo", ctypes.c_int), ("status", ctypes.c_int), ("time", ctypes.c_float),
                ("memory", ctypes.c_size_t), ("determinism", ctypes.c_int),
                ("mathType", ctypes.c_int), ("reserved", ctypes.c_int * 3)]


_ALGO_FUNCS = {
    "fwd": ("cudnnGetConvolutionForwardAlgorithm_v7", "cudnnGetConvolutionForwardWorkspaceSize"),
    "bwd_data": ("cudnnGetConvolutionBackwardDataAlgorithm_v7",
                 "cudnnGetConvolutionBackwardDataWorkspaceSize"),
    "bwd_filter": ("cudnnGetConvolutionBackwardFilterAlgorithm_v7",
                   "cudnnGetConvolutionBackwardFilterWorkspaceSize"),
}
_REQUEST = 10  # more than any of CUDNN_CONVOLUTION_{FWD,BWD_DATA,BWD_FILTER}_ALGO_COUNT (8, 6, 7)
_algos: dict[tuple, tuple[int, int]] = {}


def algo_key(kind: str, xshape, wshape, yshape, dtype, pads, strides, dils, mode: int,
             groups: int, math_type: int, device: int) -> tuple:
    """The key of the algorithm cache: everything cuDNN's choice depends on."""
    if kind not in _ALGO_FUNCS:
        raise ValueError(f"unknown convolution kind {kind!r}")
    return (kind, tuple(xshape), tuple(wshape), tuple(yshape), np.dtype(dtype).str, tuple(pads),
            tuple(strides), tuple(dils), int(mode), int(groups), int(math_type), int(device))


def choose_algo(key: tuple, h: int, descs: tuple, what: str) -> tuple[int, int]:
    """``(algo, workspace bytes)`` for ``key``, asked once from cuDNN's heuristics
    (cudnnGet*Algorithm_v7; no benchmarking, so no data is overwritten) and cached. ``descs``
    are the four descriptors in the order the Get/WorkspaceSize calls take them."""
    hit = _algos.get(key)
    if hit is not None:
        return hit
    get, size = _ALGO_FUNCS[key[0]]
    perfs = (AlgoPerf * _REQUEST)()
    count = ctypes.c_int(0)
    L.call(get, h, *descs, _REQUEST, ctypes.byref(count), perfs, what=what)
    nbytes = ctypes.c_size_t(0)
    for perf in perfs[:count.value]:
        if perf.status != 0:
            continue
        status = L.fn(size)(h, *descs, perf.algo, ctypes.byref(nbytes))
        if status == 0:
            _algos[key] = (int(perf.algo), int(nbytes.value))
            return _algos[key]
    err = CudnnError(f"cuDNN has no {key[0]} convolution algorithm for {what}")
    err.status = 3000
    raise err


def _device() -> int:
    return L.device()


def _conv_setup(kind, xshape, wshape, yshape, dtype, padding, stride, dilation, mode, groups,
                tf32=None, device=None):
    pads, strides, dils, mode, groups = D.conv_args(len(xshape) - 2, padding, stride, dilation,
                                                    mode, groups)
    out = D.conv_output_shape(xshape, wshape, pads, strides, dils, groups)
    if tuple(yshape) != out:
        _refuse(f"conv: dy has shape {tuple(yshape)}, expected {out}")
    dev = _device() if device is None else device
    mt = D.math_type(dtype, _tf32() if tf32 is None else tf32)
    cd = D.conv(dtype, pads, strides, dils, mode, groups, mt, dev)
    key = algo_key(kind, xshape, wshape, yshape, dtype, pads, strides, dils, mode, groups, mt, dev)
    return cd, key


# Per-call plans: everything a convolution call derives from its arguments' dtypes, shapes and
# strides and its settings (output shape, descriptors, algorithm, workspace size), cached under
# a key holding all of them, so a repeated call does no argument computation or descriptor work.
_plans = L.LRU(512)
_CONV_CALLS = {"fwd": "cudnnConvolutionForward", "bwd_data": "cudnnConvolutionBackwardData",
               "bwd_filter": "cudnnConvolutionBackwardFilter"}


def _hk(v):
    """``v`` as part of a cache key: lists as tuples (the argument functions treat them alike);
    unhashable values make the key unhashable, and such calls are simply not cached."""
    return tuple(v) if type(v) is list else v


def _plan_get(key):
    try:
        return _plans.get(key), key
    except TypeError:  # an unhashable setting (an array as padding...): no caching
        return None, None


def _conv_plan(kind, dt, a, b, shape, settings, what):
    """``(out shape, desc of a, desc of b, conv desc, desc of out, algo, workspace bytes)`` for
    the convolution ``kind`` on C-contiguous ``a``, ``b`` (fwd: x, w; bwd_data: w, dy;
    bwd_filter: x, dy); ``shape`` is dx's (bwd_data) or dw's (bwd_filter) shape."""
    padding, stride, dilation, mode, groups, tf32 = settings
    dev = _device()
    if kind == "fwd":
        x, w = a, b
        pads, strides, dils, _, g = D.conv_args(x.ndim - 2, padding, stride, dilation, mode,
                                                groups)
        out = D.conv_output_shape(x.shape, w.shape, pads, strides, dils, g)
        xs, ws, ys = x.shape, w.shape, out
        da, db = D.tensor(x, device=dev), D.filt(dt, w.shape, dev)
    elif kind == "bwd_data":
        w, dy = a, b
        out = tuple(shape)
        xs, ws, ys = out, w.shape, dy.shape
        da, db = D.filt(dt, w.shape, dev), D.tensor(dy, device=dev)
    else:
        x, dy = a, b
        out = tuple(shape)
        xs, ws, ys = x.shape, out, dy.shape
        da, db = D.tensor(x, device=dev), D.tensor(dy, device=dev)
    cd, key = _conv_setup(kind, xs, ws, ys, dt, padding, stride, dilation, mode, groups, tf32,
                          dev)
    dout = D.filt(dt, out, dev) if kind == "bwd_filter" else D.tensor_nd(dt, out, dev)
    # (x, w, conv, y), (w, dy, conv, dx), (x, dy, conv, dw): the order cuDNN's calls take them
    algo, nbytes = choose_algo(key, L.handle(), (da, db, cd, dout), what())
    return (out, da, db, cd, dout, algo, nbytes)


def _conv_call(kind, dt, a, b, shape, padding, stride, dilation, mode, groups, alpha, what):
    """Run convolution ``kind`` (see ``_conv_plan``) and return its new output array."""
    tf32 = _tf32()
    key = (kind, _device(), dt.char, a.shape, a.strides, b.shape, b.strides,
           None if shape is None else tuple(shape), _hk(padding), _hk(stride), _hk(dilation),
           mode, groups, tf32)
    plan, key = _plan_get(key)
    if plan is None:
        plan = _conv_plan(kind, dt, a, b, shape, (padding, stride, dilation, mode, groups, tf32),
                          what)
        if key is not None:
            _plans.put(key, plan)
    out, da, db, cd, dout, algo, nbytes = plan
    y = _cp().empty(out, dtype=dt)
    h = L.handle()
    buf, ws = L.workspace(nbytes)
    al, be = L.scalars(dt, alpha)
    L.call(_CONV_CALLS[kind], h, al, da, a.data.ptr, db, b.data.ptr, cd, algo, ws, nbytes, be,
           dout, y.data.ptr, what=what)
    del buf  # (a per-stream reused buffer, or back to CuPy's stream-ordered pool)
    return y


@_fallback_ok
def conv_forward(w, x, *, padding=0, stride=1, dilation=1, mode=0, alpha=1.0, groups=1):
    """``y = alpha * conv(w, x)`` (cudnnConvolutionForward); w is (K, C/groups, kh, kw)."""
    dt = _same_float(w, x)
    w, x = _contig(w), _contig(x)

    def what():
        return (f"conv4 forward ({_shapes(w=w, x=x)}, padding {padding}, stride {stride}, "
                f"dilation {dilation}, mode {mode}, groups {groups})")
    return _conv_call("fwd", dt, x, w, None, padding, stride, dilation, mode, groups, alpha,
                      what)


@_fallback_ok
def conv_backward_data(w, dy, xshape, *, padding=0, stride=1, dilation=1, mode=0, alpha=1.0,
                       groups=1):
    """``dx`` of shape ``xshape`` (cudnnConvolutionBackwardData): the adjoint of conv_forward."""
    dt = _same_float(w, dy)
    w, dy = _contig(w), _contig(dy)

    def what():
        return (f"conv4 backward data ({_shapes(w=w, dy=dy, x=xshape)}, padding {padding}, "
                f"stride {stride}, dilation {dilation}, mode {mode}, groups {groups})")
    return _conv_call("bwd_data", dt, w, dy, xshape, padding, stride, dilation, mode, groups,
                      alpha, what)


@_fallback_ok
def conv_backward_filter(wshape, x, dy, *, padding=0, stride=1, dilation=1, mode=0, alpha=1.0,
                         groups=1):
    """``dw`` of shape ``wshape`` (cudnnConvolutionBackwardFilter)."""
    dt = _same_float(x, dy)
    x, dy = _contig(x), _contig(dy)

    def what():
        return (f"conv4 backward filter ({_shapes(w=wshape, x=x, dy=dy)}, padding {padding}, "
                f"stride {stride}, dilation {dilation}, mode {mode}, groups {groups})")
    return _conv_call("bwd_filter", dt, x, dy, wshape, padding, stride, dilation, mode, groups,
                      alpha, what)


# Knet's API (runtime.conv signatures, 4-D arrays, groups 1).

def _four_d(*arrays):
    if any(a.ndim != 4 for a in arrays):
        _refuse("Knet's conv/pool layers take 4-D arrays")


@_fallback_ok
def conv4(w, x, *, padding=0, stride=1, dilation=1, mode=0, alpha=1):
    """cuDNN ``runtime.conv.conv4``."""
    _four_d(w, x)
    return conv_forward(w, x, padding=padding, stride=stride, dilation=dilation, mode=mode,
                        alpha=alpha)


@_fallback_ok
def conv4_w(w, x, dy, *, padding=0, stride=1, dilation=1, mode=0, alpha=1):
    """cuDNN ``runtime.conv.conv4_w`` (only w's shape is read)."""
    _four_d(w, x, dy)
    return conv_backward_filter(w.shape, x, dy, padding=padding, stride=stride,
                                dilation=dilation, mode=mode, alpha=alpha)


@_fallback_ok
def conv4_x(w, x, dy, *, padding=0, stride=1, dilation=1, mode=0, alpha=1):
    """cuDNN ``runtime.conv.conv4_x`` (only x's shape is read)."""
    _four_d(w, x, dy)
    return conv_backward_data(w, dy, x.shape, padding=padding, stride=stride, dilation=dilation,
                              mode=mode, alpha=alpha)


def deconv_shape(wshape, xshape, padding, stride, dilation) -> tuple:
    """deconv4's output shape (N, Cy, Ho, Wo), ``Ho = sh*(H-1) + (kh-1)*dh + 1 - 2*ph``."""
    if len(wshape) != 4 or len(xshape) != 4 or wshape[0] != xshape[1]:
        _refuse(f"deconv4 expects w (Cx, Cy, kh, kw) and x (N, Cx, H, W); got {tuple(wshape)} "
                f"and {tuple(xshape)}")
    pads, strides, dils, _, _ = D.conv_args(2, padding, stride, dilation, 0)
    out = [s * (n - 1) + (k - 1) * d + 1 - 2 * p
           for n, k, p, s, d in zip(xshape[2:], wshape[2:], pads, strides, dils)]
    return (xshape[0], wshape[1], *out)


@_fallback_ok
def deconv4(w, x, *, padding=0, stride=1, dilation=1, mode=0, alpha=1):
    """cuDNN ``runtime.conv.deconv4``: the backward data of a conv whose filter is ``w``."""
    shape = deconv_shape(w.shape, x.shape, padding, stride, dilation)
    if min(shape) < 1:
        _refuse(f"deconv4 output shape {shape} is empty")
    return conv_backward_data(w, x, shape, padding=padding, stride=stride, dilation=dilation,
                              mode=mode, alpha=alpha)


# --------------------------------------------------------------------------- pooling

def _memo(f):
    """Cache the results of a pure argument function (shapes and settings in, tuple out) per
    argument tuple; unhashable arguments and raised errors are not cached."""
    cache = L.LRU(512)

    @functools.wraps(f)
    def wrapper(*args):
        try:
            key = tuple(_hk(a) for a in args)
            hit = cache.get(key)
        except TypeError:
            return f(*args)
        if hit is None:
            hit = f(*args)
            cache.put(key, hit)
        return hit
    wrapper.cache = cache
    return wrapper


def _pool_plan(kind, dt, arrays, mode, window, padding, stride):
    """Cached ``(pooling desc, tensor descs of arrays...)``, keyed by everything they depend on."""
    dev = _device()
    key = (kind, dev, dt.char, mode, _hk(window), _hk(padding), _hk(stride),
           *[(a.shape, a.strides) for a in arrays])
    plan, key = _plan_get(key)
    if plan is None:
        pd = D.pooling(*D.pool_args(mode, window, padding, stride), device=dev)
        plan = (pd, *[D.tensor(a, device=dev) for a in arrays])
        if key is not None:
            _plans.put(key, plan)
    return plan


def _pool_call_forward(x, out_shape, mode, window, padding, stride, alpha):
    dt = _same_float(x)
    x = _contig(x)
    y = _cp().empty(tuple(out_shape), dtype=dt)
    pd, xd, yd = _pool_plan("pool_fwd", dt, (x, y), mode, window, padding, stride)
    a, b = L.scalars(dt, alpha)
    L.call("cudnnPoolingForward", L.handle(), pd, a, xd, x.data.ptr, b, yd, y.data.ptr,
           what=lambda: f"pool forward ({_shapes(x=x)}, window {window}, padding {padding}, "
                        f"stride {stride}, mode {mode})")
    return y


def _pool_call_backward(x, y, dy, mode, window, padding, stride, alpha, dx=None):
    dt = _same_float(x, y, dy)
    x, y, dy = _contig(x), _contig(y), _contig(dy)
    dx = _cp().empty(x.shape, dtype=dt) if dx is None else dx
    pd, xd, yd, dyd, dxd = _pool_plan("pool_bwd", dt, (x, y, dy, dx), mode, window, padding,
                                      stride)
    a, b = L.scalars(dt, alpha)
    L.call("cudnnPoolingBackward", L.handle(), pd, a, yd, y.data.ptr, dyd, dy.data.ptr, xd,
           x.data.ptr, b, dxd, dx.data.ptr,
           what=lambda: f"pool backward ({_shapes(x=x, y=y, dy=dy)}, window {window}, padding "
                        f"{padding}, stride {stride}, mode {mode})")
    return dx


@_memo
def pool_output_shape(xshape, window, padding, stride) -> tuple:
    """(N, C, Ho, Wo) of pooling a 4-D ``xshape``; ``stride`` None means the window."""
    if len(xshape) != 4:
        _refuse(f"pool expects 4-D x (N, C, H, W), got shape {tuple(xshape)}")
    _, _, win, pads, strides = D.pool_args(0, window, padding, stride)
    out = [1 + (n + 2 * p - k) // s for n, k, p, s in zip(xshape[2:], win, pads, strides)]
    if min(out) < 1:
        _refuse(f"pool input {tuple(xshape)} too small for window {win}")
    return (*xshape[:2], *out)


@_fallback_ok
def pool(x, *, window=2, padding=0, stride=None, mode=0, alpha=1):
    """cuDNN ``runtime.conv.pool`` (cudnnPoolingForward; Knet's modes are cuDNN's)."""
    shape = pool_output_shape(x.shape, window, padding, stride)
    return _pool_call_forward(x, shape, mode, window, padding, stride, alpha)


@_fallback_ok
def pool_x(x, y, dy, *, window=2, padding=0, stride=None, mode=0, alpha=1):
    """cuDNN ``runtime.conv.pool_x`` (cudnnPoolingBackward)."""
    shape = pool_output_shape(x.shape, window, padding, stride)
    if tuple(y.shape) != shape or tuple(dy.shape) != shape:
        _refuse(f"pool_x: y {y.shape} and dy {dy.shape} should be {shape}")
    if mode in (0, 3) and alpha != 1:
        # cuDNN finds each window's maximum by comparing x with y: y/alpha may have rounded.
        y = _pool_call_forward(x, shape, mode, window, padding, stride, 1)
    return _pool_call_backward(x, y, dy, mode, window, padding, stride, alpha)


# Knet's unpool runs the average-pool backward with these pool modes (as runtime.conv does).
UNPOOL_MODE = {0: 1, 1: 2, 2: 1, 3: 1}


@_memo
def unpool_setup(xshape, window, padding, stride, mode):
    """``(unpooled shape, pool mode, (window, padding, stride), window size)`` for unpool; the
    unpooled shape pools back to ``xshape``."""
    if mode not in UNPOOL_MODE or len(xshape) != 4:
        _refuse(f"unpool takes 4-D x and mode 0..3, got shape {tuple(xshape)}, mode {mode}")
    _, _, win, pads, strides = D.pool_args(0, window, padding, stride)
    N, C, H, W = xshape
    shape = (N, C, (H - 1) * strides[0] + win[0] - 2 * pads[0],
             (W - 1) * strides[1] + win[1] - 2 * pads[1])
    if min(shape) < 1 or pool_output_shape(shape, win, pads, strides) != tuple(xshape):
        _refuse(f"unpool geometry that pooling does not invert ({tuple(xshape)})")
    return shape, UNPOOL_MODE[mode], (win, pads, strides), win[0] * win[1]


@_fallback_ok
def unpool(x, *, window=2, padding=0, stride=None, mode=0, alpha=1):
    """cuDNN ``runtime.conv.unpool``: average-pool backward of ``x`` times window size/alpha."""
    shape, pmode, geo, size = unpool_setup(x.shape, window, padding, stride, mode)
    dx = _cp().empty(shape, dtype=x.dtype)
    # Average pooling's backward reads neither x nor y: dx and x stand in for them.
    return _pool_call_backward(dx, x, x, pmode, *geo, size / alpha, dx=dx)


@_fallback_ok
def unpool_x(x, y, dy, *, window=2, padding=0, stride=None, mode=0, alpha=1):
    """cuDNN ``runtime.conv.unpool_x``: average pooling of ``dy`` times window size/alpha."""
    shape, pmode, geo, size = unpool_setup(x.shape, window, padding, stride, mode)
    if tuple(dy.shape) != shape:
        _refuse(f"dy has shape {dy.shape}, expected {shape}")
    return _pool_call_forward(dy, x.shape, pmode, *geo, size / alpha)


# --------------------------------------------------------------------------- batch normalization

def bn_shape(shape) -> tuple:
    """The 4-D/5-D shape cuDNN normalizes (spatial mode) for knetc's (N, C[, ...]) input."""
    shape = tuple(shape)
    if len(shape) == 2:
        return shape + (1, 1)
    if len(shape) == 3:
        return shape + (1,)
    if len(shape) in (4, 5):
        return shape
    raise CudnnError(f"cuDNN batchnorm takes 2..5-D inputs, got shape {shape}")


def bn_param_dtype(dtype) -> np.dtype:
    """cuDNN's dtype for scale, bias, running and saved statistics: double for double data,
    float otherwise (float16 inputs keep float32 statistics)."""
    return np.dtype(np.float64) if np.dtype(dtype) == np.float64 else np.dtype(np.float32)


class BNSaved:
    """What ``batchnorm_forward`` saves on the cuDNN path: cuDNN's per-channel mean and inverse
    std. It also reads as runtime.layers' ``(xhat, invstd, batch)`` triple (computed on demand),
    so the plain backward still works with it."""

    cudnn = True
    batch = True

    def __init__(self, x, mean, invvar, eps):
        self.x, self.mean, self.invvar, self.eps = x, mean, invvar, eps
        self._grads = None  # (dy, dx, dparams-pair) of the last cuDNN backward

    def _bshape(self):
        return (1, self.x.shape[1]) + (1,) * (self.x.ndim - 2)

    @property
    def invstd(self):
        return self.invvar.reshape(self._bshape()).astype(self.x.dtype, copy=False)

    @property
    def xhat(self):
        return (self.x - self.mean.reshape(self._bshape()).astype(self.x.dtype)) * self.invstd

    def __iter__(self):
        return iter((self.xhat, self.invstd, True))

    def __len__(self):
        return 3

    def __getitem__(self, i):
        return (self.xhat, self.invstd, True)[i]


def _scale_bias(params, C, pdt):
    cp = _cp()
    if params is None:
        return cp.ones(C, dtype=pdt), cp.zeros(C, dtype=pdt)
    return (cp.ascontiguousarray(params[:C], dtype=pdt),
            cp.ascontiguousarray(params[C:], dtype=pdt))


def _bn_descs(x, pdt):
    """Cached (x's descriptor in bn_shape, the per-channel parameter descriptor)."""
    dev = _device()
    key = ("bn", dev, x.dtype.char, x.shape, x.strides, pdt.char)
    plan = _plans.get(key)
    if plan is None:
        shape = bn_shape(x.shape)
        plan = (D.tensor(x, shape, dev),
                D.tensor_nd(pdt, (1, x.shape[1]) + (1,) * (len(shape) - 2), dev))
        _plans.put(key, plan)
    return plan


def _running(arr, C, pdt):
    """(buffer cuDNN updates, whether it must be copied back into ``arr``)."""
    cp = _cp()
    if isinstance(arr, cp.ndarray) and arr.dtype == pdt and arr.flags.c_contiguous \
            and arr.size == C:
        return arr, False
    return cp.ascontiguousarray(cp.asarray(arr).reshape(C), dtype=pdt), True


@_fallback_ok
def batchnorm_train(x, moments=None, params=None, *, eps=1e-5, momentum=None, update=True):
    """``(y, BNSaved)``: batch statistics (cudnnBatchNormalizationForwardTraining), with
    ``moments`` updated in place as runtime.layers does: ``m*batch + (1-m)*running``, the
    unbiased batch variance for the running variance (cuDNN's own convention too)."""
    cp = _cp()
    dt = _same_float(x)
    if params is not None:
        _same_float(params)
    x = _contig(x)
    C = x.shape[1]
    n = x.size // C
    if n < 2 and moments is not None and update:
        raise CudnnError("batchnorm over one value per channel")  # CPU divides by max(n-1, 1)
    if eps < 0:
        raise CudnnError("batchnorm eps must be >= CUDNN_BN_MIN_EPSILON (0)")
    pdt = bn_param_dtype(dt)
    xd, bnd = _bn_descs(x, pdt)
    scale, bias = _scale_bias(params, C, pdt)
    y = cp.empty_like(x)
    mean, invvar = cp.empty(C, dtype=pdt), cp.empty(C, dtype=pdt)
    rm = rv = None
    factor = 0.0
    if moments is not None and update:
        factor = moments.momentum if momentum is None else float(momentum)
        (rm, copy_m), (rv, copy_v) = _running(moments.mean, C, pdt), _running(moments.var, C, pdt)
    a, b = L.scalars(dt)
    L.call("cudnnBatchNormalizationForwardTraining", L.handle(), BN_SPATIAL, a, b, xd, x.data.ptr,
           xd, y.data.ptr, bnd, scale.data.ptr, bias.data.ptr, float(factor), L.ptr(rm),
           L.ptr(rv), float(eps), mean.data.ptr, invvar.data.ptr,
           what=lambda: f"batchnorm training forward ({_shapes(x=x)})")
    if rm is not None:
        for name, buf, copy in (("mean", rm, copy_m), ("var", rv, copy_v)):
            if copy:
                old = getattr(moments, name)
                new = buf.reshape(old.shape).astype(old.dtype)
                old[...] = new.get() if isinstance(old, np.ndarray) else new
    return y, BNSaved(x, mean, invvar, float(eps))


@_fallback_ok
def batchnorm_infer(x, moments, params=None, *, eps=1e-5):
    """``y`` normalized with the running statistics (cudnnBatchNormalizationForwardInference)."""
    cp = _cp()
    dt = _same_float(x)
    if eps < 0:
        raise CudnnError("batchnorm eps must be >= 0")
    x = _contig(x)
    C = x.shape[1]
    pdt = bn_param_dtype(dt)
    xd, bnd = _bn_descs(x, pdt)
    scale, bias = _scale_bias(params, C, pdt)
    mean = cp.ascontiguousarray(cp.asarray(moments.mean).reshape(C), dtype=pdt)
    var = cp.ascontiguousarray(cp.asarray(moments.var).reshape(C), dtype=pdt)
    y = cp.empty_like(x)
    a, b = L.scalars(dt)
    L.call("cudnnBatchNormalizationForwardInference", L.handle(), BN_SPATIAL, a, b, xd,
           x.data.ptr, xd, y.data.ptr, bnd, scale.data.ptr, bias.data.ptr, mean.data.ptr,
           var.data.ptr, float(eps), what=lambda: f"batchnorm inference forward ({_shapes(x=x)})")
    return y


def _bn_backward(params, saved: BNSaved, dy):
    """(dx, dgamma, dbeta) by cudnnBatchNormalizationBackward; cached on ``saved`` for this dy."""
    if saved._grads is not None and saved._grads[0] is dy:
        return saved._grads[1:]
    cp = _cp()
    x, key = saved.x, dy
    dt = _same_float(x, dy)
    dy = _contig(dy)
    C = x.shape[1]
    pdt = bn_param_dtype(dt)
    xd, bnd = _bn_descs(x, pdt)
    scale, _ = _scale_bias(params, C, pdt)
    dx = cp.empty_like(x)
    dscale, dbias = cp.empty(C, dtype=pdt), cp.empty(C, dtype=pdt)
    a, b = L.scalars(dt)
    L.call("cudnnBatchNormalizationBackward", L.handle(), BN_SPATIAL, a, b, a, b, xd, x.data.ptr,
           xd, dy.data.ptr, xd, dx.data.ptr, bnd, scale.data.ptr, dscale.data.ptr,
           dbias.data.ptr, saved.eps, saved.mean.data.ptr, saved.invvar.data.ptr,
           what=lambda: f"batchnorm backward ({_shapes(x=x, dy=dy)})")
    saved._grads = (key, dx, dscale, dbias)
    return dx, dscale, dbias


@_fallback_ok
def batchnorm_dx(x, params, saved: BNSaved, dy):
    """cuDNN ``runtime.layers.batchnorm_dx`` for a ``BNSaved``."""
    return _bn_backward(params, saved, dy)[0]


@_fallback_ok
def batchnorm_dparams(x, params, saved: BNSaved, dy):
    """cuDNN ``runtime.layers.batchnorm_dparams`` (``[dgamma; dbeta]``) for a ``BNSaved``;
    reuses the backward already run by ``batchnorm_dx`` for the same ``dy``."""
    _, dscale, dbias = _bn_backward(params, saved, dy)
    saved._grads = None  # the pair (dx, dparams) is done: drop the references
    return _cp().concatenate([dscale, dbias]).astype(params.dtype, copy=False)


# --------------------------------------------------------------------------- softmax

@_memo
def softmax_shape(shape, axis: int) -> tuple[int, int, int, int]:
    """``(pre, n, post, 1)``: ``shape`` viewed so that ``axis`` is cuDNN's channel dimension."""
    shape = tuple(shape)
    if not shape:
        raise CudnnError("softmax of a 0-d array")
    axis = axis + len(shape) if axis < 0 else axis
    if not 0 <= axis < len(shape):
        _refuse(f"softmax axis {axis} out of range for shape {shape}")
    pre, post = math.prod(shape[:axis]), math.prod(shape[axis + 1:])
    dims = (pre, shape[axis], post, 1)
    if max(dims) > 2**31 - 1 or math.prod(dims) > 2**31 - 1:
        raise CudnnError(f"softmax shape {shape} exceeds cuDNN's int dimensions")
    return dims


def _softmax_fwd(x, axis, algo):
    cp = _cp()
    dt = _same_float(x)
    x = _contig(x)
    xd = D.tensor(x, softmax_shape(x.shape, axis))
    y = cp.empty_like(x)
    a, b = L.scalars(dt)
    L.call("cudnnSoftmaxForward", L.handle(), algo, SOFTMAX_CHANNEL, a, xd, x.data.ptr, b, xd,
           y.data.ptr, what=lambda: f"softmax forward ({_shapes(x=x)}, axis {axis})")
    return y


def _softmax_bwd(y, dy, axis, algo):
    cp = _cp()
    dt = _same_float(y, dy)
    y, dy = _contig(y), _contig(dy)
    yd = D.tensor(y, softmax_shape(y.shape, axis))
    dx = cp.empty_like(y)
    a, b = L.scalars(dt)
    L.call("cudnnSoftmaxBackward", L.handle(), algo, SOFTMAX_CHANNEL, a, yd, y.data.ptr, yd,
           dy.data.ptr, b, yd, dx.data.ptr,
           what=lambda: f"softmax backward ({_shapes(y=y, dy=dy)}, axis {axis})")
    return dx


def _xp(a):
    from ..backend import array_module
    return array_module(a)


def _use(a) -> bool:
    from . import enabled
    return enabled(a)


def softmax(x, axis: int = -1):
    """``exp(x) / sum(exp(x), axis)`` (cudnnSoftmaxForward, ACCURATE, on CuPy arrays; the
    array-module formula otherwise or where cuDNN refuses)."""
    if _use(x):
        y = _fallback_ok(_softmax_fwd)(x, axis, SOFTMAX_ACCURATE)
        if y is not NotImplemented:
            return y
    xp = _xp(x)
    e = xp.exp(x - xp.max(x, axis=axis, keepdims=True))
    return e / xp.sum(e, axis=axis, keepdims=True)


def logsoftmax(x, axis: int = -1):
    """``x - logsumexp(x, axis)`` (cudnnSoftmaxForward with CUDNN_SOFTMAX_LOG)."""
    if _use(x):
        y = _fallback_ok(_softmax_fwd)(x, axis, SOFTMAX_LOG)
        if y is not NotImplemented:
            return y
    xp = _xp(x)
    z = x - xp.max(x, axis=axis, keepdims=True)
    return z - xp.log(xp.sum(xp.exp(z), axis=axis, keepdims=True))


def softmax_backward(y, dy, axis: int = -1):
    """Gradient wrt x of ``sum(softmax(x) * dy)`` given ``y = softmax(x)``:
    ``y * (dy - sum(dy * y, axis))``."""
    if _use(y):
        dx = _fallback_ok(_softmax_bwd)(y, dy, axis, SOFTMAX_ACCURATE)
        if dx is not NotImplemented:
            return dx
    xp = _xp(y)
    return y * (dy - xp.sum(dy * y, axis=axis, keepdims=True))


def logsoftmax_backward(y, dy, axis: int = -1):
    """Gradient wrt x of ``sum(logsoftmax(x) * dy)`` given ``y = logsoftmax(x)``:
    ``dy - exp(y) * sum(dy, axis)``."""
    if _use(y):
        dx = _fallback_ok(_softmax_bwd)(y, dy, axis, SOFTMAX_LOG)
        if dx is not NotImplemented:
            return dx
    xp = _xp(y)
    return dy - xp.exp(y) * xp.sum(dy, axis=axis, keepdims=True)
