"""Knet's RNNs (``rnnforw`` / ``rnnback`` of ``knetc.runtime.rnn``) on CuPy arrays through cuDNN 9's
v8 RNN API: ``cudnnRNNForward``, ``cudnnRNNBackwardData_v8``, ``cudnnRNNBackwardWeights_v8``.

``runtime.rnn`` calls :func:`usable` at the top of ``rnnforw_reserve``/``rnnforw`` and, when it
says yes, :func:`forward`; ``rnnback`` calls :func:`backward` when the reserve it is given is a
:class:`CudnnRNNReserve`. Everything else (shapes, the flat weight layout, dropout) is knetc's.

Weights. knetc's flat ``w`` has the layout documented in ``runtime/rnn.py`` (all matrices first,
pseudo-layer by pseudo-layer, then all biases). cuDNN 9 places each matrix and bias where
``cudnnGetRNNWeightParams`` says, which need not be the same place. So a :class:`WeightPlan`
compares two offset tables, knetc's (:func:`knet_table`, pure Python, checked against
``rnnparam`` by the CPU tests) and cuDNN's (:func:`cudnn_table`, asked from the library once per
RNN shape): when every block sits at the same offset, ``w`` itself is the weight space (no
copy); otherwise one gather per call builds cuDNN's weight space and one gather turns cuDNN's
weight gradient back into knetc's layout.

This module must not import ``runtime.rnn`` (that module imports this one), so the knetc layout
is computed here from the spec's five fields and the tests hold it to ``rnnparam``.
"""
from __future__ import annotations

import ctypes
import dataclasses
import os
import threading
from typing import Any, Optional

import numpy as np

from . import library as L
from .descriptors import Owned, TensorDesc, int_array, math_type
from .library import CudnnError, CudnnUnavailable

__all__ = ["usable", "forward", "backward", "CudnnRNNReserve", "knet_table", "WeightPlan",
           "plan_weights", "cudnn_table", "selftest", "calls"]

# ------------------------------------------------------------------ enums (cudnn_adv_v9.h)
ALGO_STANDARD = 0                     # cudnnRNNAlgo_t
FWD_INFERENCE, FWD_TRAINING = 0, 1    # cudnnForwardMode_t
CELL_MODES = {"relu": 0, "tanh": 1, "lstm": 2, "gru": 3}   # cudnnRNNMode_t
DOUBLE_BIAS = 2                       # cudnnRNNBiasMode_t: bW and bR, like knetc
UNIDIRECTIONAL, BIDIRECTIONAL = 0, 1  # cudnnDirectionMode_t
LINEAR_INPUT = 0                      # cudnnRNNInputMode_t
SEQ_MAJOR_UNPACKED = 0                # cudnnRNNDataLayout_t: (T, B, X), C-contiguous
PADDED_IO_DISABLED = 0                # auxFlags
WGRAD_MODE_ADD = 0                    # cudnnWgradMode_t
GATES = {"relu": 1, "tanh": 1, "lstm": 4, "gru": 3}
DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))

# How often each cuDNN entry point ran (the GPU tests check that the cuDNN path was taken).
calls: dict[str, int] = {"forward": 0, "backward": 0, "gathered": 0}

# ------------------------------------------------------------------ prototypes
_P, _I, _S = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t
_PP, _PI, _PS = ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_size_t)
_ST = ctypes.c_int
_I32, _U32 = ctypes.c_int32, ctypes.c_uint32
_PROTOTYPES = {
    "cudnnCreateRNNDescriptor": [_PP],
    "cudnnDestroyRNNDescriptor": [_P],
    # (rnnDesc, algo, cellMode, biasMode, dirMode, inputMode, dataType, mathPrec, mathType,
    #  inputSize, hiddenSize, projSize, numLayers, dropoutDesc, auxFlags)
    "cudnnSetRNNDescriptor_v8": [_P, _I, _I, _I, _I, _I, _I, _I, _I, _I32, _I32, _I32, _I32, _P, _U32],
    "cudnnCreateDropoutDescriptor": [_PP],
    "cudnnDestroyDropoutDescriptor": [_P],
    # (dropoutDesc, handle, dropout, states, stateSizeInBytes, seed)
    "cudnnSetDropoutDescriptor": [_P, _P, ctypes.c_float, _P, _S, ctypes.c_ulonglong],
    "cudnnCreateRNNDataDescriptor": [_PP],
    "cudnnDestroyRNNDataDescriptor": [_P],
    # (desc, dataType, layout, maxSeqLength, batchSize, vectorSize, seqLengthArray, paddingFill)
    "cudnnSetRNNDataDescriptor": [_P, _I, _I, _I, _I, _I, _PI, _P],
    "cudnnGetRNNWeightSpaceSize": [_P, _P, _PS],
    # (handle, rnnDesc, fwdMode, xDesc, workSpaceSize*, reserveSpaceSize*)
    "cudnnGetRNNTempSpaceSizes": [_P, _P, _I, _P, _PS, _PS],
    # (handle, rnnDesc, pseudoLayer, weightSpaceSize, weightSpace, linLayerID,
    #  mDesc, mAddr*, bDesc, bAddr*)
    "cudnnGetRNNWeightParams": [_P, _P, _I32, _S, _P, _I32, _P, _PP, _P, _PP],
    # (desc, nbDimsRequested, dataType*, nbDims*, dimA, strideA)
    "cudnnGetTensorNdDescriptor": [_P, _I, _PI, _PI, _PI, _PI],
    # (handle, rnnDesc, fwdMode, devSeqLengths, xDesc, x, yDesc, y, hDesc, hx, hy, cDesc, cx, cy,
    #  weightSpaceSize, weightSpace, workSpaceSize, workSpace, reserveSpaceSize, reserveSpace)
    "cudnnRNNForward": [_P, _P, _I, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P,
                        _S, _P, _S, _P, _S, _P],
    # (handle, rnnDesc, devSeqLengths, yDesc, y, dy, xDesc, dx, hDesc, hx, dhy, dhx, cDesc, cx,
    #  dcy, dcx, weightSpaceSize, weightSpace, workSpaceSize, workSpace, reserveSpaceSize,
    #  reserveSpace)
    "cudnnRNNBackwardData_v8": [_P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P,
                                _S, _P, _S, _P, _S, _P],
    # (handle, rnnDesc, addGrad, devSeqLengths, xDesc, x, hDesc, hx, yDesc, y, weightSpaceSize,
    #  dweightSpace, workSpaceSize, workSpace, reserveSpaceSize, reserveSpace)
    "cudnnRNNBackwardWeights_v8": [_P, _P, _I, _P, _P, _P, _P, _P, _P, _P, _S, _P, _S, _P, _S, _P],
}
for _name, _args in _PROTOTYPES.items():
    L.declare(_name, _ST, _args)


# ------------------------------------------------------------------ pure Python: the weight plan

def _config(r: Any) -> tuple[str, int, int, int, bool]:
    """``(mode, X, H, L, bidirectional)`` of an RNN spec (``runtime.rnn.RNN`` or any object with
    those five attributes)."""
    mode = str(r.mode).lstrip(":").lower()
    if mode not in GATES:
        raise CudnnError(f"cuDNN RNN mode must be one of {tuple(GATES)}, got {r.mode!r}")
    return mode, int(r.inputSize), int(r.hiddenSize), int(r.numLayers), bool(r.bidirectional)


def knet_table(r: Any) -> tuple[dict[tuple[int, int, int], tuple[int, int, int]], int]:
    """knetc's layout of the flat ``w`` as ``({(pseudo_layer, id, par): (offset, rows, cols)},
    size)``: ``par`` 0 is the matrix ``(rows, cols) = (H, Xin)`` or ``(H, H)`` (row-major), ``par``
    1 the bias ``(H, 1)``; ids ``0..G-1`` input, ``G..2G-1`` recurrent. The formula of
    ``runtime/rnn.py``'s module docstring (all matrices first, then all biases)."""
    mode, X, H, nl, bidir = _config(r)
    G, D = GATES[mode], 2 if bidir else 1
    table: dict[tuple[int, int, int], tuple[int, int, int]] = {}
    off = 0
    for layer in range(nl):
        xin = X if layer == 0 else D * H
        for d in range(D):
            j = layer * D + d
            for i in range(2 * G):
                cols = xin if i < G else H
                table[(j, i, 0)] = (off, H, cols)
                off += H * cols
    for j in range(nl * D):
        for i in range(2 * G):
            table[(j, i, 1)] = (off, H, 1)
            off += H
    return table, off


def _check_cover(table: dict, size: int, side: str) -> None:
    """The blocks of ``table`` tile ``[0, size)`` exactly (no gap, no overlap)."""
    spans = sorted((o, o + rows * cols, key) for key, (o, rows, cols) in table.items())
    pos = 0
    for start, end, key in spans:
        if start != pos:
            raise CudnnError(f"{side} RNN weight layout: block {key} starts at {start}, expected "
                             f"{pos} ({'overlap' if start < pos else 'gap'})")
        pos = end
    if pos != size:
        raise CudnnError(f"{side} RNN weight layout covers {pos} elements, its size is {size}")


@dataclasses.dataclass
class WeightPlan:
    """How knetc's flat ``w`` becomes cuDNN's weight space: ``identity`` (same layout: use ``w``)
    or, with ``where[k]`` = cuDNN's position of knetc's element ``k`` (a permutation),
    ``cudnn_w = w[inverse]`` and ``knet_dw = cudnn_dw[where]``."""

    identity: bool
    size: int
    where: Optional[np.ndarray] = None     # knetc element -> cuDNN element
    inverse: Optional[np.ndarray] = None   # cuDNN element -> knetc element
    _device: dict = dataclasses.field(default_factory=dict, repr=False)

    def _index(self, xp: Any, name: str) -> Any:
        if xp is np:
            return getattr(self, name)
        key = (name, xp.cuda.Device().id)
        a = self._device.get(key)
        if a is None:
            a = self._device[key] = xp.asarray(getattr(self, name))
        return a

    def to_cudnn(self, xp: Any, w: Any) -> Any:
        """cuDNN's weight space holding the values of knetc's ``w`` (``w`` itself if identity)."""
        if self.identity:
            return w
        return xp.take(w, self._index(xp, "inverse"))

    def from_cudnn(self, xp: Any, dw: Any) -> Any:
        """knetc's flat layout of a gradient ``dw`` in cuDNN's weight-space layout."""
        if self.identity:
            return dw
        return xp.take(dw, self._index(xp, "where"))


def plan_weights(knet: dict, knet_size: int, cudnn: dict, cudnn_size: int) -> WeightPlan:
    """Compare knetc's and cuDNN's offset tables (``{(j, id, par): (offset, rows, cols)}``, in
    elements) and return the :class:`WeightPlan`. Raises CudnnError when the two disagree on the
    set of blocks, a block's shape, or the total size (then knetc's ``w`` cannot be cuDNN's
    weights: a cuDNN version with another RNN parametrisation)."""
    if cudnn_size != knet_size:
        raise CudnnError(f"cuDNN's RNN weight space holds {cudnn_size} elements but knetc's flat "
                         f"w has {knet_size}: this cuDNN parametrises the RNN differently",
                         hint="set KNETC_CUDNN=0 to run RNNs with the plain CuPy kernels, and "
                              "report the cuDNN version (knetc.runtime.cudnn.version())")
    if set(knet) != set(cudnn):
        missing = sorted(set(knet) ^ set(cudnn))[:4]
        raise CudnnError(f"cuDNN and knetc RNN weight tables differ in their blocks, e.g. {missing}")
    for key, (_, rows, cols) in knet.items():
        if cudnn[key][1:] != (rows, cols):
            raise CudnnError(f"cuDNN's RNN weight block {key} (pseudo-layer, id, 0=matrix/1=bias) "
                             f"is {cudnn[key][1:]}, knetc's is {(rows, cols)}")
    _check_cover(knet, knet_size, "knetc")
    _check_cover(cudnn, cudnn_size, "cuDNN")
    if all(cudnn[key][0] == off for key, (off, _, _) in knet.items()):
        return WeightPlan(True, knet_size)
    where = np.empty(knet_size, np.int64)
    for key, (off, rows, cols) in knet.items():
        n = rows * cols
        where[off:off + n] = np.arange(cudnn[key][0], cudnn[key][0] + n)
    inverse = np.empty_like(where)
    inverse[where] = np.arange(knet_size)
    return WeightPlan(False, knet_size, where, inverse)


# ------------------------------------------------------------------ dispatch

def usable(r: Any, w: Any, x: Any, hx: Any = None, cx: Any = None, train: bool = False) -> bool:
    """Should ``rnnforw`` on these arrays run through cuDNN? Yes when they are all CuPy arrays of
    one float dtype cuDNN takes, ``KNETC_CUDNN`` is not ``0``, libcudnn.so.9 loads, and no
    dropout is due (a multi-layer RNN with ``dropout > 0`` while training runs on the plain CuPy
    kernels: knetc draws its own masks, which cuDNN's reserve space cannot hold)."""
    if os.environ.get("KNETC_CUDNN", "1") == "0":
        return False
    try:
        import cupy
    except Exception:  # no CuPy: nothing to do here
        return False
    arrays = [a for a in (w, x, hx, cx) if a is not None]
    if not all(isinstance(a, cupy.ndarray) for a in arrays):
        return False
    dt = w.dtype
    if dt not in DTYPES or any(a.dtype != dt for a in arrays):
        return False
    if float(getattr(r, "dropout", 0.0)) > 0 and int(r.numLayers) > 1 and train:
        return False
    return L.available()


# ------------------------------------------------------------------ descriptors

_Owned = Owned    # a cuDNN object destroyed with its owner


def _data_desc(dt: np.dtype, T: int, B: int, n: int) -> _Owned:
    """An RNN data descriptor for a (T, B, n) C-contiguous array, every sequence of length T."""
    d = _Owned("cudnnCreateRNNDataDescriptor", "cudnnDestroyRNNDataDescriptor")
    lengths = int_array([T] * B)
    L.call("cudnnSetRNNDataDescriptor", d, L.dtype_code(dt), SEQ_MAJOR_UNPACKED, T, B, n,
           lengths, None, what=f"RNN data {dt} (T={T}, B={B}, {n})")
    return d


class _Rnn:
    """One RNN shape and dtype on one device: its RNN descriptor (no dropout), the size of its
    weight space and the :class:`WeightPlan`."""

    def __init__(self, config: tuple, dt: np.dtype) -> None:
        import cupy
        mode, X, H, nl, bidir = config
        self.config, self.dtype = config, dt
        self.what = (f"{mode.upper()}(input={X}, hidden={H}, layers={nl}"
                     f"{', bidirectional' if bidir else ''}) {dt}")
        h = L.handle()
        # PyTorch's set_no_dropout: dropout 0 needs no RNG states.
        self.dropout = _Owned("cudnnCreateDropoutDescriptor", "cudnnDestroyDropoutDescriptor")
        L.call("cudnnSetDropoutDescriptor", self.dropout, _P(h), 0.0, None, 0, 0, what=self.what)
        self.desc = _Owned("cudnnCreateRNNDescriptor", "cudnnDestroyRNNDescriptor")
        # mathPrec: float accumulation for half data; math type FMA for float32 (the default math
        # type would allow TF32 on Ampere and later, far from NumPy's results).
        prec = L.dtype_code(np.float32 if dt == np.float16 else dt)
        # projSize = hiddenSize: no LSTM projection (PyTorch passes the same).
        L.call("cudnnSetRNNDescriptor_v8", self.desc, ALGO_STANDARD, CELL_MODES[mode], DOUBLE_BIAS,
               BIDIRECTIONAL if bidir else UNIDIRECTIONAL, LINEAR_INPUT, L.dtype_code(dt), prec,
               math_type(dt), X, H, H, nl, self.dropout, PADDED_IO_DISABLED, what=self.what)
        size = ctypes.c_size_t()
        L.call("cudnnGetRNNWeightSpaceSize", _P(h), self.desc, ctypes.byref(size), what=self.what)
        self.wbytes = int(size.value)
        knet, knet_size = knet_table(_Spec(*config))
        if self.wbytes != knet_size * dt.itemsize:
            raise CudnnError(f"cuDNN's weight space for {self.what} is {self.wbytes} bytes, knetc's "
                             f"flat w is {knet_size} x {dt.itemsize} bytes",
                             hint="set KNETC_CUDNN=0 to run RNNs with the plain CuPy kernels")
        probe = cupy.empty(knet_size, dt)   # cuDNN 9 wants a real weight space to point into
        table = cudnn_table(self, probe)
        self.plan = plan_weights(knet, knet_size, table, self.wbytes // dt.itemsize)

    def temp_sizes(self, h: int, mode: int, xdesc: _Owned) -> tuple[int, int]:
        ws, rs = ctypes.c_size_t(), ctypes.c_size_t()
        L.call("cudnnGetRNNTempSpaceSizes", _P(h), self.desc, mode, xdesc, ctypes.byref(ws),
               ctypes.byref(rs), what=self.what)
        return int(ws.value), int(rs.value)


def cudnn_table(rnn: _Rnn, weights: Any) -> dict[tuple[int, int, int], tuple[int, int, int]]:
    """cuDNN's layout of its weight space, as :func:`knet_table`'s ``{(j, id, par): (offset, rows,
    cols)}`` in elements, from ``cudnnGetRNNWeightParams`` on the buffer ``weights`` (a CuPy array
    of the weight-space size; cuDNN only computes addresses in it)."""
    mode, X, H, nl, bidir = rnn.config
    G, D = GATES[mode], 2 if bidir else 1
    item = rnn.dtype.itemsize
    base = int(weights.data.ptr)
    h = L.handle()
    mdesc = _Owned("cudnnCreateTensorDescriptor", "cudnnDestroyTensorDescriptor")
    bdesc = _Owned("cudnnCreateTensorDescriptor", "cudnnDestroyTensorDescriptor")
    table = {}
    for j in range(nl * D):
        for i in range(2 * G):
            maddr, baddr = ctypes.c_void_p(), ctypes.c_void_p()
            what = f"{rnn.what} pseudo-layer {j} linLayerID {i}"
            L.call("cudnnGetRNNWeightParams", _P(h), rnn.desc, j, rnn.wbytes, _P(base), i,
                   mdesc, ctypes.byref(maddr), bdesc, ctypes.byref(baddr), what=what)
            for par, desc, addr in ((0, mdesc, maddr), (1, bdesc, baddr)):
                if not addr.value:
                    raise CudnnError(f"cuDNN reported no {'bias' if par else 'matrix'} for {what}")
                dims = _tensor_dims(desc, what)
                if par == 0:
                    rows, cols = dims[-2], dims[-1]
                    if int(np.prod(dims)) != rows * cols:
                        raise CudnnError(f"cuDNN weight matrix of {what} has dims {dims}")
                else:
                    rows, cols = int(np.prod(dims)), 1
                delta = int(addr.value) - base
                if delta % item:
                    raise CudnnError(f"cuDNN weight block of {what} is not element-aligned")
                table[(j, i, par)] = (delta // item, rows, cols)
    return table


def _tensor_dims(desc: _Owned, what: str) -> list[int]:
    """Dims of a (packed, row-major) tensor descriptor that cuDNN filled in."""
    dt, nd = ctypes.c_int(), ctypes.c_int()
    dims, strides = (ctypes.c_int * 8)(), (ctypes.c_int * 8)()
    L.call("cudnnGetTensorNdDescriptor", desc, 8, ctypes.byref(dt), ctypes.byref(nd), dims,
           strides, what=what)
    n = int(nd.value)
    d, s = list(dims[:n]), list(strides[:n])
    expect, acc = [], 1
    for k in reversed(d):
        expect.append(acc)
        acc *= k
    if any(dk > 1 and sk != ek for dk, sk, ek in zip(d, s, expect[::-1])):
        raise CudnnError(f"cuDNN weight block of {what} is not packed row-major: dims {d}, "
                         f"strides {s}")
    return d


@dataclasses.dataclass(frozen=True)
class _Spec:
    """The five fields of an RNN spec that the cuDNN descriptors need."""

    mode: str
    inputSize: int
    hiddenSize: int
    numLayers: int
    bidirectional: bool


_lock = threading.Lock()
_rnns = L.LRU(64)   # (config, dtype, device) -> _Rnn (a reserve keeps its own _Rnn alive)


def _rnn_for(config: tuple, dt: np.dtype) -> _Rnn:
    key = (config, dt.char, L.device())
    rnn = _rnns.get(key)
    if rnn is None:
        with _lock:
            rnn = _rnns.get(key)
            if rnn is None:
                rnn = _Rnn(config, dt)
                _rnns.put(key, rnn)
    return rnn


_hdescs = L.LRU(256)


def _state_desc(dt: np.dtype, LD: int, B: int, H: int) -> TensorDesc:
    """Cached 3-D packed descriptor of a (L*D, B, H) state."""
    key = (dt.char, LD, B, H, L.device())
    d = _hdescs.get(key)
    if d is None:
        d = TensorDesc(dt, [LD, B, H], [B * H, H, 1])
        _hdescs.put(key, d)
    return d


class _Shapes:
    """What one RNN needs per (T, B): its x and y data descriptors, its (L*D, B, H) state
    descriptor and cuDNN's workspace and reserve sizes per forward mode (asked once)."""

    def __init__(self, rnn: _Rnn, T: int, B: int) -> None:
        mode, X, H, nl, bidir = rnn.config
        D = 2 if bidir else 1
        self.xdesc, self.ydesc = _data_desc(rnn.dtype, T, B, X), _data_desc(rnn.dtype, T, B, D * H)
        self.hdesc = _state_desc(rnn.dtype, nl * D, B, H)
        self.sizes: dict[int, tuple[int, int]] = {}

    def temp_sizes(self, rnn: _Rnn, h: int, mode: int) -> tuple[int, int]:
        hit = self.sizes.get(mode)
        if hit is None:
            hit = self.sizes[mode] = rnn.temp_sizes(h, mode, self.xdesc)
        return hit


_shapes = L.LRU(256)   # (config, dtype, device, T, B) -> _Shapes


def _shapes_for(rnn: _Rnn, T: int, B: int) -> _Shapes:
    key = (rnn.config, rnn.dtype.char, L.device(), T, B)
    sh = _shapes.get(key)
    if sh is None:
        sh = _Shapes(rnn, T, B)
        _shapes.put(key, sh)
    return sh


_seqlens = L.LRU(64)   # (device, stream, T, B) -> (int32 device array of B times T, stream)


def _seq_lengths(cp: Any, T: int, B: int) -> Any:
    """devSeqLengths (every sequence of length T), made once per device, stream and (T, B): the
    kernels only read it, and it was filled on this stream before any call using it here. The
    stream object is kept with it, so that its handle cannot be recycled while cached."""
    stream = cp.cuda.get_current_stream()
    key = (L.device(), stream.ptr, T, B)
    hit = _seqlens.get(key)
    if hit is None:
        hit = (cp.full((B,), T, dtype=cp.int32), stream)
        _seqlens.put(key, hit)
    return hit[0]


# ------------------------------------------------------------------ forward and backward

class CudnnRNNReserve:
    """What :func:`backward` needs from a training :func:`forward`: cuDNN's reserve space and the
    contiguous arrays the forward ran on (do not modify ``x`` or ``y`` in place in between)."""

    __slots__ = ("rnn", "x", "y", "hx", "cx", "w", "reserve", "seqlens", "single")

    def __init__(self, rnn, x, y, hx, cx, w, reserve, seqlens, single) -> None:
        self.rnn, self.x, self.y, self.hx, self.cx = rnn, x, y, hx, cx
        self.w, self.reserve, self.seqlens, self.single = w, reserve, seqlens, single

    def __repr__(self) -> str:
        return f"CudnnRNNReserve({self.rnn.what}, x={tuple(self.x.shape)})"


def _ptr(a: Any) -> Optional[int]:
    return None if a is None else int(a.data.ptr)


def _contiguous(cp: Any, a: Any, dt: np.dtype) -> Any:
    if a is None:
        return None
    return cp.ascontiguousarray(a, dtype=dt)


def forward(r: Any, w: Any, x: Any, hx: Any = None, cx: Any = None,
            training: bool = True) -> tuple[Any, Any, Optional[Any], Optional[CudnnRNNReserve]]:
    """``rnnforw`` on CuPy arrays through cuDNN: ``(y, hy, cy, reserve)`` (shapes of
    ``runtime.rnn.rnnforw``); ``reserve`` is None unless ``training`` (then cuDNN runs in
    CUDNN_FWD_MODE_TRAINING and keeps what :func:`backward` needs)."""
    import cupy as cp
    config = _config(r)
    mode, X, H, nl, bidir = config
    D = 2 if bidir else 1
    LD = nl * D
    single = x.ndim == 2
    x3 = x[None] if single else x
    if x3.ndim != 3:
        raise ValueError(f"rnnforw: x must be (T, B, X) or (B, X), got shape {tuple(x.shape)}")
    T, B, Xn = (int(n) for n in x3.shape)
    if Xn != X:
        raise ValueError(f"rnnforw: x has {Xn} features, {r} expects {X}")
    dt = np.dtype(w.dtype)
    rnn = _rnn_for(config, dt)
    if w.ndim != 1 or w.shape[0] != rnn.plan.size:
        raise ValueError(f"rnnforw: w must be 1-D of length {rnn.plan.size}, got {tuple(w.shape)}")
    lstm = mode == "lstm"
    for name, s in (("hx", hx), ("cx", cx if lstm else None)):
        if s is not None and tuple(s.shape) != (LD, B, H):
            raise ValueError(f"rnnforw: {name} must have shape {(LD, B, H)} (L*D, B, H), got "
                             f"{tuple(s.shape)}")
    x3 = _contiguous(cp, x3, dt)
    hx = _contiguous(cp, hx, dt)
    cx = _contiguous(cp, cx, dt) if lstm else None
    w = _contiguous(cp, w, dt)
    if w.data.ptr % 256:    # a view into a larger array: give cuDNN an aligned weight space
        w = w.copy()
    wc = rnn.plan.to_cudnn(cp, w)
    if not rnn.plan.identity:
        calls["gathered"] += 1
    y3 = cp.empty((T, B, D * H), dt)
    hy = cp.empty((LD, B, H), dt)
    cy = cp.empty((LD, B, H), dt) if lstm else None
    seqlens = _seq_lengths(cp, T, B)   # devSeqLengths: read by the kernels, on device
    sh = _shapes_for(rnn, T, B)
    xdesc, ydesc, hdesc = sh.xdesc, sh.ydesc, sh.hdesc
    h = L.handle()
    fmode = FWD_TRAINING if training else FWD_INFERENCE
    wsbytes, rsbytes = sh.temp_sizes(rnn, h, fmode)
    work, work_ptr = L.workspace(wsbytes)
    reserve = cp.empty((rsbytes,), cp.uint8) if training and rsbytes > 0 else None
    L.call("cudnnRNNForward", _P(h), rnn.desc, fmode, _ptr(seqlens), xdesc, _ptr(x3), ydesc,
           _ptr(y3), hdesc, _ptr(hx), _ptr(hy), hdesc, _ptr(cx), _ptr(cy), rnn.wbytes, _ptr(wc),
           wsbytes, work_ptr, rsbytes if reserve is not None else 0, _ptr(reserve),
           what=lambda: f"rnnforw {rnn.what} on x {(T, B, X)}")
    calls["forward"] += 1
    del work  # back to CuPy's stream-ordered pool after the call was enqueued
    y = y3[0] if single else y3
    res = None
    if training:
        res = CudnnRNNReserve(rnn, x3, y3, hx, cx, wc, reserve, seqlens, single)
    return y, hy, cy, res


def backward(r: Any, w: Any, x: Any, hx: Any, cx: Any, out: Any,
             dout: Any) -> tuple[Any, Any, Optional[Any], Optional[Any]]:
    """``rnnback`` for a :func:`forward` in training mode: ``(dw, dx, dhx, dcx)`` as the NumPy
    implementation returns them (``dhx`` None when ``hx`` was None, ``dcx`` None when ``cx`` was
    None or the RNN is not an LSTM). ``out = (y, hy, cy, reserve)``; ``dout = (dy, dhy, dcy)``
    with Nones for results that receive no gradient."""
    res = out[3]
    if not isinstance(res, CudnnRNNReserve):
        raise CudnnError(f"rnnback: the reserve {res!r} does not come from a cuDNN forward")
    import cupy as cp
    rnn = res.rnn
    dt = rnn.dtype
    mode, X, H, nl, bidir = rnn.config
    D = 2 if bidir else 1
    LD = nl * D
    lstm = mode == "lstm"
    dy, dhy, dcy = (None, None, None) if dout is None else tuple(dout)
    if not lstm:
        dcy = None
    x3, y3 = res.x, res.y
    T, B = int(x3.shape[0]), int(x3.shape[1])
    if dy is None:
        dy3 = cp.zeros(y3.shape, dt)   # cuDNN needs dy; a zero one adds nothing
    else:
        dy3 = _contiguous(cp, dy[None] if res.single else dy, dt)
    dhy = _contiguous(cp, dhy, dt)
    dcy = _contiguous(cp, dcy, dt)
    dx3 = cp.empty(x3.shape, dt)
    dhx = cp.empty((LD, B, H), dt) if hx is not None else None
    dcx = cp.empty((LD, B, H), dt) if (cx is not None and lstm) else None
    sh = _shapes_for(rnn, T, B)
    xdesc, ydesc, hdesc = sh.xdesc, sh.ydesc, sh.hdesc
    h = L.handle()
    wsbytes, rsbytes = sh.temp_sizes(rnn, h, FWD_TRAINING)
    if res.reserve is not None and int(res.reserve.nbytes) != rsbytes:
        raise CudnnError(f"rnnback {rnn.what}: reserve space is {res.reserve.nbytes} bytes, cuDNN "
                         f"now asks for {rsbytes}")
    rsbytes = 0 if res.reserve is None else rsbytes
    work, work_ptr = L.workspace(wsbytes)
    def what() -> str:
        return f"rnnback {rnn.what} on x {(T, B, X)}"
    L.call("cudnnRNNBackwardData_v8", _P(h), rnn.desc, _ptr(res.seqlens), ydesc, _ptr(y3),
           _ptr(dy3), xdesc, _ptr(dx3), hdesc, _ptr(res.hx), _ptr(dhy), _ptr(dhx), hdesc,
           _ptr(res.cx), _ptr(dcy), _ptr(dcx), rnn.wbytes, _ptr(res.w), wsbytes, work_ptr,
           rsbytes, _ptr(res.reserve), what=what)
    # CUDNN_WGRAD_MODE_ADD accumulates into dweightSpace: start from zeros.
    dwc = cp.zeros((rnn.plan.size,), dt)
    L.call("cudnnRNNBackwardWeights_v8", _P(h), rnn.desc, WGRAD_MODE_ADD, _ptr(res.seqlens),
           xdesc, _ptr(x3), hdesc, _ptr(res.hx), ydesc, _ptr(y3), rnn.wbytes, _ptr(dwc), wsbytes,
           work_ptr, rsbytes, _ptr(res.reserve), what=what)
    calls["backward"] += 1
    del work
    dw = rnn.plan.from_cudnn(cp, dwc)
    if w is not None and w.dtype != dt:
        dw = dw.astype(w.dtype)
    dx = dx3[0] if res.single else dx3
    return dw, dx, dhx, dcx


# ------------------------------------------------------------------ diagnostics

def reference_lstm(table: dict, w: np.ndarray, x: np.ndarray, H: int) -> np.ndarray:
    """A one-layer unidirectional LSTM in float64 read through ``table`` (the GPU self-test's
    reference): gates i, f, g, o; returns y (T, B, H)."""
    def blk(i, par):
        off, rows, cols = table[(0, i, par)]
        a = w[off:off + rows * cols].astype(np.float64)
        return a.reshape(rows, cols) if par == 0 else a

    def sig(a):
        return 1 / (1 + np.exp(-a))
    T, B, _ = x.shape
    h, c = np.zeros((B, H)), np.zeros((B, H))
    ys = []
    for t in range(T):
        pre = [x[t] @ blk(g, 0).T + blk(g, 1) + h @ blk(4 + g, 0).T + blk(4 + g, 1)
               for g in range(4)]
        i, f, g, o = sig(pre[0]), sig(pre[1]), np.tanh(pre[2]), sig(pre[3])
        c = f * c + i * g
        h = o * np.tanh(c)
        ys.append(h)
    return np.stack(ys)


def selftest() -> dict:
    """One tiny LSTM forward + backward through cuDNN, for the GPU check script: ``{'rnn_lstm':
    'ok' or the error, 'rnn_layout': which weight plan cuDNN needs, ...}``."""
    out: dict = {}
    try:
        import cupy as cp
        out["cudnn_version"] = L.version()
        spec = _Spec("lstm", 3, 4, 1, False)
        table, n = knet_table(spec)
        rng = np.random.default_rng(0)
        w = (rng.standard_normal(n) * 0.5).astype(np.float32)
        x = rng.standard_normal((5, 2, 3)).astype(np.float32)
        y, hy, cy, res = forward(spec, cp.asarray(w), cp.asarray(x), training=True)
        ref = reference_lstm(table, w, x, 4)
        err = float(np.max(np.abs(cp.asnumpy(y) - ref)))
        dw, dx, dhx, dcx = backward(spec, cp.asarray(w), cp.asarray(x), None, None,
                                    (y, hy, cy, res), (cp.ones_like(y), None, None))
        finite = bool(cp.isfinite(dw).all()) and bool(cp.isfinite(dx).all())
        nonzero = float(cp.abs(dw).sum()) > 0
        out["rnn_lstm"] = ("ok" if err < 1e-4 and finite and nonzero else
                           f"forward max error {err:.3g}, finite grads {finite}, dw nonzero {nonzero}")
        for cfg in (_Spec("lstm", 3, 4, 2, True), _Spec("gru", 5, 4, 2, False)):
            rnn = _rnn_for(_config(cfg), np.dtype(np.float32))
            out[f"rnn_layout_{cfg.mode}_L{cfg.numLayers}{'_bi' if cfg.bidirectional else ''}"] = (
                "knetc layout (no copy)" if rnn.plan.identity else "permuted (gather per call)")
    except (CudnnError, CudnnUnavailable) as e:
        out["rnn_lstm"] = f"{type(e).__name__}: {e}"
    except Exception as e:  # the diagnostics must report, not raise
        out["rnn_lstm"] = f"{type(e).__name__}: {e}"
    return out
