"""Knet's convolution and pooling layers (``conv4``, ``deconv4``, ``pool``, ``unpool``) with their
hand-written backward functions, on NumPy (and, through ``array_module``, CuPy) arrays.

Shapes are Knet's reversed, batch first: images ``x`` are ``(N, C, H, W)``, convolution weights
``w`` are ``(O, C, kh, kw)``. ``padding``, ``stride``, ``dilation`` and ``window`` take an int or
an ``(h, w)`` pair. Output sizes follow cuDNN::

    Ho = 1 + (H + 2*ph - ((kh-1)*dh + 1)) // sh

``mode=0`` is true convolution (kernel flipped, Knet's and cuDNN's default), ``mode=1`` is the
cross-correlation that ``torch.nn.functional.conv2d`` computes. ``alpha`` scales the result.

Implementation: im2col through ``as_strided`` (one copy) and one BLAS matmul (batched over the
images, or a single one in the batch-last layout, see ``_batch_last``); col2im adds one strided
slice per kernel tap (kh*kw vectorised adds, no ``add.at``). Pooling loops over the window taps
the same way. The dtype of the inputs is preserved.

Max pooling under differentiation: ``pool_with_index`` (the forward the generated code calls, see
``knetc/rules/conv.py``) also returns, for every window, which tap holds its maximum; its backward
``pool_x_saved`` turns that into flat input indices and scatters ``dy`` once, as torch's saved
indices do, instead of recomputing the argmax from ``x`` and ``y`` like ``pool_x``.
"""
from __future__ import annotations

import os
from typing import Any, Iterator, NamedTuple

import numpy as np

from . import cudnn as _cudnn
from .backend import array_module

__all__ = ["conv4", "conv4_w", "conv4_x", "deconv4", "deconv4_w", "deconv4_x",
           "pool", "pool_x", "pool_with_index", "pool_x_saved", "pool_x_dy", "unpool", "unpool_x"]

IntPair = int | tuple[int, int]


def _via_cudnn(name: str, *args, **kwargs):
    """``runtime.cudnn.layers.<name>(*args, **kwargs)`` when its array arguments are CuPy arrays
    and cuDNN is enabled (see ``runtime.cudnn.enabled``), else NotImplemented: the caller then
    runs its own code. NumPy arrays return before anything of cuDNN is loaded."""
    if not _cudnn.enabled(*(a for a in args if hasattr(a, "shape"))):
        return NotImplemented
    from .cudnn import layers
    return getattr(layers, name)(*args, **kwargs)


Array = Any  # a numpy.ndarray, or a cupy.ndarray on the GPU


# --------------------------------------------------------------------------- geometry

class _Geo(NamedTuple):
    """Kernel size, padding, stride, dilation (each (h, w)) and the output size of one layer."""
    kh: int
    kw: int
    ph: int
    pw: int
    sh: int
    sw: int
    dh: int
    dw: int
    Ho: int
    Wo: int


def _pair(v: IntPair, name: str) -> tuple[int, int]:
    a, b = (v, v) if np.ndim(v) == 0 else tuple(v)
    if int(a) != a or int(b) != b:
        raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")
    return int(a), int(b)


def _geometry(H: int, W: int, kernel: IntPair, padding: IntPair, stride: IntPair,
              dilation: IntPair = 1) -> _Geo:
    (kh, kw), (ph, pw) = _pair(kernel, "kernel"), _pair(padding, "padding")
    (sh, sw), (dh, dw) = _pair(stride, "stride"), _pair(dilation, "dilation")
    if min(kh, kw, sh, sw, dh, dw) < 1 or min(ph, pw) < 0:
        raise ValueError("kernel, stride and dilation must be >= 1 and padding >= 0")
    Ho = 1 + (H + 2 * ph - ((kh - 1) * dh + 1)) // sh
    Wo = 1 + (W + 2 * pw - ((kw - 1) * dw + 1)) // sw
    if Ho < 1 or Wo < 1:
        raise ValueError(f"input {H}x{W} too small for kernel {kh}x{kw} (padding {ph},{pw}, "
                         f"dilation {dh},{dw})")
    return _Geo(kh, kw, ph, pw, sh, sw, dh, dw, Ho, Wo)


def _conv_geometry(wshape, xshape, padding, stride, dilation) -> _Geo:
    if len(wshape) != 4 or len(xshape) != 4:
        raise ValueError("conv4 expects 4-D w (O, C, kh, kw) and x (N, C, H, W)")
    if wshape[1] != xshape[1]:
        raise ValueError(f"w has {wshape[1]} input channels but x has {xshape[1]}")
    return _geometry(xshape[2], xshape[3], wshape[2:], padding, stride, dilation)


def _taps(g: _Geo) -> Iterator[tuple[int, int, slice, slice]]:
    """For each kernel tap (p, q): the rows and columns of the padded input it meets, one per
    output pixel."""
    for p in range(g.kh):
        rows = slice(p * g.dh, p * g.dh + g.sh * (g.Ho - 1) + 1, g.sh)
        for q in range(g.kw):
            yield p, q, rows, slice(q * g.dw, q * g.dw + g.sw * (g.Wo - 1) + 1, g.sw)


def _pad(xp, x, g: _Geo, value=0, axes=(2, 3)):
    """``x`` with ``g.ph``/``g.pw`` cells of ``value`` around the two spatial ``axes``."""
    if g.ph == 0 and g.pw == 0:
        return x
    shape = list(x.shape)
    shape[axes[0]] += 2 * g.ph
    shape[axes[1]] += 2 * g.pw
    out = xp.full(tuple(shape), value, dtype=x.dtype)
    out[_spatial(axes, slice(g.ph, g.ph + x.shape[axes[0]]),
                 slice(g.pw, g.pw + x.shape[axes[1]]))] = x
    return out


def _crop(a, g: _Geo, H: int, W: int, axes=(2, 3)):
    if g.ph == 0 and g.pw == 0 and a.shape[axes[0]] == H and a.shape[axes[1]] == W:
        return a
    return a[_spatial(axes, slice(g.ph, g.ph + H), slice(g.pw, g.pw + W))]


def _spatial(axes, rows, cols) -> tuple:
    idx = [slice(None)] * (axes[1] + 1)
    idx[axes[0]], idx[axes[1]] = rows, cols
    return tuple(idx)


# --------------------------------------------------------------------------- im2col / col2im
# Two layouts. Batch first: x is (N, C, H, W), patches (N, C, kh, kw, Ho, Wo), one small matmul
# per image. Batch last: x is transposed to (C, H, W, N), patches (C, kh, kw, Ho, Wo, N), one big
# matmul. NumPy's copies and adds cost a fixed overhead per contiguous run, and the runs are Wo
# long batch first but Wo*N (stride 1) or N long batch last; batch last pays instead for
# transposing the activations in and out. _batch_last weighs the two.

_RUN_OVERHEAD = 5  # per contiguous run, in element copies (measured on NumPy 2.4, AVX2)


def _batch_last(N: int, C: int, H: int, W: int, Co: int, g: _Geo) -> bool:
    P = g.Ho * g.Wo
    run_last = N * (g.Wo if g.sw == 1 else 1)
    saved = C * g.kh * g.kw * P * N * _RUN_OVERHEAD * (1 / g.Wo - 1 / run_last)
    return saved > N * (C * H * W + Co * P)


def _patches(xp, xpad, g: _Geo, lead: int):
    """Strided view ``(*lead dims, kh, kw, Ho, Wo, *trailing dims)`` of ``xpad``, whose spatial
    axes are ``lead`` and ``lead + 1``. No copy."""
    s = xpad.strides
    sr, sc = s[lead], s[lead + 1]
    shape = xpad.shape[:lead] + (g.kh, g.kw, g.Ho, g.Wo) + xpad.shape[lead + 2:]
    strides = s[:lead] + (g.dh * sr, g.dw * sc, g.sh * sr, g.sw * sc) + s[lead + 2:]
    return xp.lib.stride_tricks.as_strided(xpad, shape, strides)


def _col2im(xp, cols, g: _Geo, lead: int, padded_shape):
    """Adjoint of ``_patches``: sum every patch back onto a zero array of ``padded_shape``."""
    out = xp.zeros(padded_shape, dtype=cols.dtype)
    pre = (slice(None),) * lead
    for p, q, rows, cs in _taps(g):
        out[pre + (rows, cs)] += cols[pre + (p, q)]
    return out


def _im2col_last(xp, x, g: _Geo):
    """Patches of x in the batch-last layout, as a contiguous (C*kh*kw, Ho*Wo*N) matrix."""
    xt = x.transpose(1, 2, 3, 0)
    # _pad copies into the (C, Hp, Wp, N) layout; without padding the copy is still needed.
    xt = _pad(xp, xt, g, axes=(1, 2)) if g.ph or g.pw else xp.ascontiguousarray(xt)
    return _patches(xp, xt, g, 1).reshape(-1, g.Ho * g.Wo * x.shape[0])


def _check_conv_mode(mode: int) -> None:
    if mode not in (0, 1):
        raise ValueError(f"conv mode must be 0 (convolution) or 1 (cross-correlation), got {mode}")


def _wmat(w, mode: int, alpha):
    """w as the (O, C*kh*kw) matrix of a cross-correlation, scaled by alpha."""
    _check_conv_mode(mode)
    if mode == 0:
        w = w[:, :, ::-1, ::-1]
    return _scaled(w.reshape(w.shape[0], -1), alpha)


def _scaled(a, alpha):
    """alpha * a in a's dtype (a NumPy float64 alpha would otherwise promote float32 arrays)."""
    return a * a.dtype.type(alpha) if alpha != 1 else a


# --------------------------------------------------------------------------- convolution

def conv4(w: Array, x: Array, *, padding: IntPair = 0, stride: IntPair = 1, dilation: IntPair = 1,
          mode: int = 0, alpha: float = 1) -> Array:
    """Knet's ``conv4``: convolve images ``x`` (N, C, H, W) with filters ``w`` (O, C, kh, kw).

    Returns ``y`` of shape (N, O, Ho, Wo); ``mode=0`` flips the kernel (convolution), ``mode=1``
    does not (cross-correlation); ``alpha`` scales ``y``.
    """
    r = _via_cudnn("conv4", w, x, padding=padding, stride=stride, dilation=dilation, mode=mode, alpha=alpha)
    if r is not NotImplemented:
        return r
    xp = array_module(w, x)
    g = _conv_geometry(w.shape, x.shape, padding, stride, dilation)
    N, C, H, W = x.shape
    Co = w.shape[0]
    w2 = _wmat(w, mode, alpha)
    if _batch_last(N, C, H, W, Co, g):
        yt = w2 @ _im2col_last(xp, x, g)
        return xp.ascontiguousarray(yt.reshape(Co, g.Ho, g.Wo, N).transpose(3, 0, 1, 2))
    cols = _patches(xp, _pad(xp, x, g), g, 2).reshape(N, -1, g.Ho * g.Wo)
    return xp.matmul(w2, cols).reshape(N, Co, g.Ho, g.Wo)


def conv4_w(w: Array, x: Array, dy: Array, *, padding: IntPair = 0, stride: IntPair = 1,
            dilation: IntPair = 1, mode: int = 0, alpha: float = 1) -> Array:
    """Gradient of ``sum(conv4(w, x, ...) * dy)`` with respect to ``w`` (only w's shape is read)."""
    r = _via_cudnn("conv4_w", w, x, dy,
                   padding=padding, stride=stride, dilation=dilation, mode=mode, alpha=alpha)
    if r is not NotImplemented:
        return r
    xp = array_module(w, x, dy)
    _check_conv_mode(mode)
    g = _conv_geometry(w.shape, x.shape, padding, stride, dilation)
    N, C, H, W = x.shape
    Co = w.shape[0]
    if _batch_last(N, C, H, W, Co, g):
        dyt = dy.transpose(1, 2, 3, 0).reshape(Co, -1)
        dw2 = dyt @ _im2col_last(xp, x, g).T
    else:
        cols = _patches(xp, _pad(xp, x, g), g, 2).reshape(N, -1, g.Ho * g.Wo)
        dw2 = xp.matmul(dy.reshape(N, Co, -1), cols.transpose(0, 2, 1)).sum(axis=0)
    dw = dw2.reshape(w.shape)
    if mode == 0:
        dw = dw[:, :, ::-1, ::-1]
    return xp.ascontiguousarray(_scaled(dw, alpha))


def _conv_x(w, xshape, dy, padding, stride, dilation, mode, alpha):
    """Gradient of conv4 with respect to an x of shape ``xshape`` (x itself is not needed)."""
    xp = array_module(w, dy)
    g = _conv_geometry(w.shape, xshape, padding, stride, dilation)
    N, C, H, W = xshape
    Co = w.shape[0]
    if dy.shape != (N, Co, g.Ho, g.Wo):
        raise ValueError(f"dy has shape {dy.shape}, expected {(N, Co, g.Ho, g.Wo)}")
    w2t = _wmat(w, mode, alpha).T
    Hp, Wp = H + 2 * g.ph, W + 2 * g.pw
    if _batch_last(N, C, H, W, Co, g):
        cols = (w2t @ dy.transpose(1, 2, 3, 0).reshape(Co, -1))
        cols = cols.reshape(C, g.kh, g.kw, g.Ho, g.Wo, N)
        dxt = _col2im(xp, cols, g, 1, (C, Hp, Wp, N))
        return xp.ascontiguousarray(_crop(dxt, g, H, W, axes=(1, 2)).transpose(3, 0, 1, 2))
    cols = xp.matmul(w2t, dy.reshape(N, Co, -1)).reshape(N, C, g.kh, g.kw, g.Ho, g.Wo)
    dx = _col2im(xp, cols, g, 2, (N, C, Hp, Wp))
    return xp.ascontiguousarray(_crop(dx, g, H, W))


def conv4_x(w: Array, x: Array, dy: Array, *, padding: IntPair = 0, stride: IntPair = 1,
            dilation: IntPair = 1, mode: int = 0, alpha: float = 1) -> Array:
    """Gradient of ``sum(conv4(w, x, ...) * dy)`` with respect to ``x`` (only x's shape is read)."""
    r = _via_cudnn("conv4_x", w, x, dy,
                   padding=padding, stride=stride, dilation=dilation, mode=mode, alpha=alpha)
    if r is not NotImplemented:
        return r
    return _conv_x(w, x.shape, dy, padding, stride, dilation, mode, alpha)


def _deconv_shape(w, x, padding, stride, dilation) -> tuple[int, int, int, int]:
    if w.ndim != 4 or x.ndim != 4 or w.shape[0] != x.shape[1]:
        raise ValueError(f"deconv4 expects w (Cx, Cy, kh, kw) and x (N, Cx, H, W); got "
                         f"{w.shape} and {x.shape}")
    (kh, kw), (ph, pw) = w.shape[2:], _pair(padding, "padding")
    (sh, sw), (dh, dw) = _pair(stride, "stride"), _pair(dilation, "dilation")
    H, W = x.shape[2:]
    return (x.shape[0], w.shape[1], sh * (H - 1) + (kh - 1) * dh + 1 - 2 * ph,
            sw * (W - 1) + (kw - 1) * dw + 1 - 2 * pw)


def deconv4(w: Array, x: Array, *, padding: IntPair = 0, stride: IntPair = 1, dilation: IntPair = 1,
            mode: int = 0, alpha: float = 1) -> Array:
    """Knet's ``deconv4`` (transposed convolution): the x-gradient of ``conv4`` with weights
    ``w`` (Cx, Cy, kh, kw), ``x`` (N, Cx, H, W) playing the part of dy. The result is
    (N, Cy, Ho, Wo) with ``Ho = sh*(H-1) + (kh-1)*dh + 1 - 2*ph``; ``mode=1`` matches
    ``torch.nn.functional.conv_transpose2d``."""
    r = _via_cudnn("deconv4", w, x, padding=padding, stride=stride, dilation=dilation, mode=mode, alpha=alpha)
    if r is not NotImplemented:
        return r
    shape = _deconv_shape(w, x, padding, stride, dilation)
    return _conv_x(w, shape, x, padding, stride, dilation, mode, alpha)


def deconv4_w(w: Array, x: Array, dy: Array, *, padding: IntPair = 0, stride: IntPair = 1,
              dilation: IntPair = 1, mode: int = 0, alpha: float = 1) -> Array:
    """Gradient of ``sum(deconv4(w, x, ...) * dy)`` with respect to ``w``: ``conv4_w(w, dy, x)``."""
    return conv4_w(w, dy, x, padding=padding, stride=stride, dilation=dilation, mode=mode,
                   alpha=alpha)


def deconv4_x(w: Array, x: Array, dy: Array, *, padding: IntPair = 0, stride: IntPair = 1,
              dilation: IntPair = 1, mode: int = 0, alpha: float = 1) -> Array:
    """Gradient of ``sum(deconv4(w, x, ...) * dy)`` with respect to ``x``: ``conv4(w, dy)``."""
    return conv4(w, dy, padding=padding, stride=stride, dilation=dilation, mode=mode, alpha=alpha)


# --------------------------------------------------------------------------- pooling

def _pool_geometry(x, window, padding, stride) -> _Geo:
    if x.ndim != 4:
        raise ValueError(f"pool expects 4-D x (N, C, H, W), got shape {x.shape}")
    g = _geometry(x.shape[2], x.shape[3], window, padding, window if stride is None else stride)
    if g.ph >= g.kh or g.pw >= g.kw:
        raise ValueError("pool padding must be smaller than the window")
    return g


def _check_pool_mode(mode: int) -> None:
    if mode not in (0, 1, 2, 3):
        raise ValueError(f"pool mode must be 0, 1, 2 (average) or 3, got {mode}")


def _window_counts(xp, g: _Geo, H: int, W: int, dtype):
    """(Ho, Wo): how many cells of each window are real input, not padding."""
    def counts(n, k, p, s, no):
        start = np.arange(no) * s - p
        return np.minimum(start + k, n) - np.maximum(start, 0)
    c = np.outer(counts(H, g.kh, g.ph, g.sh, g.Ho), counts(W, g.kw, g.pw, g.sw, g.Wo))
    return xp.asarray(c, dtype=dtype)


def _avgpool(xp, x, g: _Geo, exclude_pad: bool, scale):
    """scale * average over every window (padding counted unless ``exclude_pad``)."""
    xpad = _pad(xp, x, g)
    y = None
    for _, _, rows, cols in _taps(g):
        y = xpad[..., rows, cols].copy() if y is None else xp.add(y, xpad[..., rows, cols], out=y)
    if exclude_pad and (g.ph or g.pw):
        y *= scale
        y /= _window_counts(xp, g, x.shape[2], x.shape[3], y.dtype)
    else:
        y *= scale / (g.kh * g.kw)
    return y


def _avgpool_t(xp, dy, xshape, g: _Geo, exclude_pad: bool, scale):
    """Adjoint of ``_avgpool``: spread ``dy`` evenly over each window of an x of ``xshape``."""
    N, C, H, W = xshape
    if exclude_pad and (g.ph or g.pw):
        share = _scaled(dy, scale) / _window_counts(xp, g, H, W, dy.dtype)
    else:
        share = _scaled(dy, scale / (g.kh * g.kw))

    def spread(tap, target, disjoint):
        if disjoint:
            target[...] = share
        else:
            target += share
    return _scatter(xp, dy.dtype, g, xshape, spread)


def _scatter(xp, dtype, g: _Geo, xshape, write):
    """dx of ``xshape``, filled by ``write(tap, target, disjoint)`` for every window tap, where
    ``target`` is the strided view of the cells tap ``(p, q, rows, cols)`` meets and ``disjoint``
    says whether it may be overwritten (no two windows overlap) or must be added to."""
    N, C, H, W = xshape
    Hp, Wp = H + 2 * g.ph, W + 2 * g.pw
    disjoint = g.sh >= g.kh and g.sw >= g.kw
    tiled = disjoint and g.sh == g.kh and g.sw == g.kw and Hp == g.kh * g.Ho and Wp == g.kw * g.Wo
    # When the windows tile the padded input exactly, every cell is written once: no zero fill.
    dx = (xp.empty if tiled else xp.zeros)((N, C, Hp, Wp), dtype=dtype)
    for tap in _taps(g):
        write(tap, dx[..., tap[2], tap[3]], disjoint)
    return xp.ascontiguousarray(_crop(dx, g, H, W))


def _maxpool(xp, x, g: _Geo):
    xpad = _pad(xp, x, g, value=-np.inf)  # padded cells never win
    y = None
    for _, _, rows, cols in _taps(g):
        win = xpad[..., rows, cols]
        y = win.copy() if y is None else xp.maximum(y, win, out=y)
    return y


def pool(x: Array, *, window: IntPair = 2, padding: IntPair = 0, stride: IntPair | None = None,
         mode: int = 0, alpha: float = 1) -> Array:
    """Knet's ``pool``: max (``mode`` 0 or 3) or average pooling (``mode=1`` counts padded cells,
    ``mode=2`` does not) of ``x`` (N, C, H, W) over ``window``; ``stride`` defaults to
    ``window``. Returns (N, C, Ho, Wo) scaled by ``alpha``."""
    r = _via_cudnn("pool", x, window=window, padding=padding, stride=stride, mode=mode, alpha=alpha)
    if r is not NotImplemented:
        return r
    xp = array_module(x)
    _check_pool_mode(mode)
    g = _pool_geometry(x, window, padding, stride)
    if mode in (1, 2):
        return _avgpool(xp, x, g, mode == 2, alpha)
    y = _maxpool(xp, x, g)
    return _scaled(y, alpha)


def pool_x(x: Array, y: Array, dy: Array, *, window: IntPair = 2, padding: IntPair = 0,
           stride: IntPair | None = None, mode: int = 0, alpha: float = 1) -> Array:
    """Gradient of ``sum(pool(x, ...) * dy)`` with respect to ``x``; ``y`` is ``pool(x, ...)``.

    Max pooling sends each window's gradient to the first (row-major) cell equal to the window's
    maximum, so ties are broken the same way in every call.
    """
    r = _via_cudnn("pool_x", x, y, dy, window=window, padding=padding, stride=stride, mode=mode, alpha=alpha)
    if r is not NotImplemented:
        return r
    xp = array_module(x, y, dy)
    _check_pool_mode(mode)
    g = _pool_geometry(x, window, padding, stride)
    if mode in (1, 2):
        return _avgpool_t(xp, dy, x.shape, g, mode == 2, alpha)
    # y / alpha may round away from the true maximum: recompute it instead.
    ymax = y if alpha == 1 else _maxpool(xp, x, g)
    gy = _scaled(dy, alpha)
    xpad = _pad(xp, x, g, value=-np.inf)
    taken = None  # windows whose maximum has already been routed
    last = (g.kh - 1, g.kw - 1)

    def route(tap, target, disjoint):
        nonlocal taken
        hit = xpad[..., tap[2], tap[3]] == ymax
        if taken is None:
            taken = hit
        else:
            xp.greater(hit, taken, out=hit)  # hit and not taken: the first maximum wins
            if tap[:2] != last:
                taken |= hit
        if disjoint:
            xp.multiply(hit, gy, out=target)
        else:
            target += hit * gy

    return _scatter(xp, gy.dtype, g, x.shape, route)


# Max pooling under differentiation. pool_with_index saves, for every window, the offset of its
# routed cell from the window's first cell in the padded input (row-major: p*Wp + q for tap
# (p, q)), in the smallest unsigned type that holds every offset and a "no cell" sentinel (its
# largest value). The backward adds each window's first-cell index and scatters dy once.

def _tap_offsets(g: _Geo, Wp: int) -> list[int]:
    """The offset ``p*Wp + q`` of every tap in row-major order (strictly increasing)."""
    return [p * Wp + q for p in range(g.kh) for q in range(g.kw)]


def _offset_dtype(g: _Geo, Wp: int) -> np.dtype:
    last = (g.kh - 1) * Wp + g.kw - 1
    for t in (np.uint8, np.uint16, np.uint32):
        if last < np.iinfo(t).max:
            return np.dtype(t)
    return np.dtype(np.uint64)


def _maxpool_index(xp, x, g: _Geo):
    """``(y, off)``: the maximum of every window and the offset of the first cell (row-major)
    that holds it, ``_offset_dtype``'s largest value where none does (a NaN maximum: ``pool_x``
    routes no gradient there either).

    Taps are visited in row-major order and ``off`` is raised to a tap's offset only where the tap
    is strictly greater than the running maximum; offsets increase with the taps, so the last tap
    that raised the maximum, the first cell equal to it, is what remains."""
    xpad = _pad(xp, x, g, value=-np.inf)  # padded cells never win (unless the window is all -inf)
    offsets = _tap_offsets(g, xpad.shape[3])
    odt = _offset_dtype(g, xpad.shape[3])
    y = off = buf = hit = step = None
    for o, (_, _, rows, cols) in zip(offsets, _taps(g)):
        win = xpad[..., rows, cols]
        if y is None:
            y = win.copy()
            off = xp.zeros(y.shape, odt)
            continue
        if buf is None:
            buf, hit, step = xp.empty_like(y), xp.empty(y.shape, bool), xp.empty(y.shape, odt)
        xp.copyto(buf, win)  # one strided read; the compare and maximum then run on contiguous data
        xp.greater(buf, y, out=hit)
        xp.maximum(y, buf, out=y)
        xp.multiply(hit.view(np.uint8), odt.type(o), out=step)
        xp.maximum(off, step, out=off)
    if y.size and xp.isnan(y.max()):
        off[xp.isnan(y)] = np.iinfo(odt).max
    return y, off


def _check_saved(saved, g: _Geo, xshape) -> None:
    expected = tuple(xshape[:2]) + (g.Ho, g.Wo)
    odt = _offset_dtype(g, xshape[3] + 2 * g.pw)
    if getattr(saved, "shape", None) != expected or getattr(saved, "dtype", None) != odt:
        raise ValueError(f"saved is {getattr(saved, 'dtype', type(saved).__name__)} of shape "
                         f"{getattr(saved, 'shape', None)}, expected {odt} of shape {expected}: "
                         f"pass what pool_with_index returned with the same settings")


def _without_sentinel(xp, off, *others):
    """``off`` with the "no cell" windows pointed at their first cell, and ``others`` (arrays
    shaped like ``off``) zeroed there; unchanged when there are none (the usual case)."""
    none = np.iinfo(off.dtype).max
    if off.size == 0 or off.max() < none:
        return (off,) + others
    bad = off == none
    return (xp.where(bad, off.dtype.type(0), off),) + tuple(
        xp.where(bad, a.dtype.type(0), a) for a in others)


_BLOCK = 16000  # windows per block of indices: under 128 KiB of intp, which stays in cache and is
# reused by malloc (multi-megabyte temporaries are mapped and faulted in afresh on every call)


def _index_blocks(xp, off, g: _Geo, xshape):
    """Blocks ``(images, index)`` over the N*C images: ``index`` (intp, shaped like
    ``off[images]``) holds the flat indices, into those images of the padded input (N, C, Hp, Wp)
    counted from the first one, of the cells that ``off`` names."""
    N, C, H, W = xshape
    Hp, Wp = H + 2 * g.ph, W + 2 * g.pw
    n = max(1, _BLOCK // (g.Ho * g.Wo))
    first = (xp.arange(min(n, N * C), dtype=np.intp)[:, None, None] * (Hp * Wp) +
             xp.arange(g.Ho, dtype=np.intp)[:, None] * (g.sh * Wp) +
             xp.arange(g.Wo, dtype=np.intp) * g.sw)  # each window's first cell
    off3 = off.reshape(N * C, g.Ho, g.Wo)
    index = xp.empty_like(first)
    for i in range(0, N * C, n):
        j = min(i + n, N * C)
        yield slice(i, j), xp.add(first[:j - i], off3[i:j], out=index[:j - i])


def _route_flat(xp, off, gy, g: _Geo, xshape):
    """Max-pool backward from the saved offsets (NumPy): ``gy`` scattered by flat index,
    assigned when no two windows overlap, else added with ``add.at`` (summing where they do)."""
    N, C, H, W = xshape
    Hp, Wp = H + 2 * g.ph, W + 2 * g.pw
    off, gy = _without_sentinel(xp, off, gy)
    gy3 = gy.reshape(N * C, g.Ho, g.Wo)
    dx = xp.zeros((N * C, Hp * Wp), dtype=gy.dtype)
    disjoint = g.sh >= g.kh and g.sw >= g.kw
    for images, index in _index_blocks(xp, off, g, xshape):
        target = dx[images].reshape(-1)  # a view: the images are contiguous rows of dx
        if disjoint:
            target[index.reshape(-1)] = gy3[images].reshape(-1)
        else:
            xp.add.at(target, index.reshape(-1), gy3[images].reshape(-1))
    return xp.ascontiguousarray(_crop(dx.reshape(N, C, Hp, Wp), g, H, W))


def _route_taps(xp, off, gy, g: _Geo, xshape):
    """Max-pool backward from the saved offsets for any array module: a masked pass per tap."""
    hit = xp.empty(off.shape, bool)
    Wp = xshape[3] + 2 * g.pw

    def route(tap, target, disjoint):
        xp.equal(off, tap[0] * Wp + tap[1], out=hit)
        if disjoint:
            xp.multiply(hit, gy, out=target)
        else:
            target += hit * gy

    return _scatter(xp, gy.dtype, g, xshape, route)


def _pool_kernels(mode: int, values: tuple, saved=None):
    """``runtime.poolkernels`` when ``values`` (and ``saved``, if given) are CuPy arrays its
    one-kernel max pooling reads (see ``poolkernels.usable``), ``mode`` is a max mode and
    ``KNETC_POOLKERNELS`` is not ``0``; else None and the caller runs its array code. NumPy
    arrays return None before anything else is looked at."""
    if mode not in (0, 3) or array_module(*values) is np:
        return None
    if os.environ.get("KNETC_POOLKERNELS", "1") == "0":
        return None
    from . import poolkernels
    return poolkernels if poolkernels.usable(values, saved) else None


def pool_with_index(x: Array, *, window: IntPair = 2, padding: IntPair = 0,
                    stride: IntPair | None = None, mode: int = 0, alpha: float = 1):
    """``(pool(x, ...), saved)``: the forward pass the generated code runs when differentiating
    ``pool``, for ``pool_x_saved``. For max pooling (``mode`` 0 or 3) ``saved`` says, for every
    window (N, C, Ho, Wo), where its first (row-major) maximum is: the offset ``p*(W+2pw) + q``
    from the window's first cell, as the smallest unsigned integers that hold it (uint8 for
    small images). For average pooling ``saved`` is None."""
    xp = array_module(x)
    _check_pool_mode(mode)
    g = _pool_geometry(x, window, padding, stride)
    if mode in (1, 2):
        return _avgpool(xp, x, g, mode == 2, alpha), None
    pk = _pool_kernels(mode, (x,))
    if pk is not None:  # one CUDA kernel, same y and offsets
        y, off = pk.maxpool_index(x, g, _offset_dtype(g, x.shape[3] + 2 * g.pw))
        return _scaled(y, alpha), off
    y, off = _maxpool_index(xp, x, g)
    return _scaled(y, alpha), off


def pool_x_saved(x: Array, y: Array, dy: Array, saved, *, window: IntPair = 2,
                 padding: IntPair = 0, stride: IntPair | None = None, mode: int = 0,
                 alpha: float = 1) -> Array:
    """``pool_x(x, y, dy, ...)`` given ``saved`` from ``pool_with_index(x, ...)``: the maxima are
    not searched again, ``dy`` goes to the recorded cells (the same ones as in ``pool_x``: the
    first maximum of each window). With ``saved`` None (average pooling) this is ``pool_x``."""
    if saved is None or mode in (1, 2):
        return pool_x(x, y, dy, window=window, padding=padding, stride=stride, mode=mode,
                      alpha=alpha)
    xp = array_module(x, dy)
    _check_pool_mode(mode)
    g = _pool_geometry(x, window, padding, stride)
    _check_saved(saved, g, x.shape)
    if dy.shape != saved.shape:
        raise ValueError(f"dy has shape {dy.shape}, expected {saved.shape}")
    gy = _scaled(dy, alpha)
    pk = _pool_kernels(mode, (gy,), saved)
    if pk is not None:  # one CUDA kernel gathering into each input cell, no atomics
        return pk.maxpool_route(gy, saved, g, x.shape)
    route = _route_flat if xp is np else _route_taps
    return route(xp, saved, gy, g, x.shape)


def pool_x_dy(x: Array, y: Array, ddx: Array, saved=None, *, window: IntPair = 2,
              padding: IntPair = 0, stride: IntPair | None = None, mode: int = 0,
              alpha: float = 1) -> Array:
    """Gradient of ``sum(pool_x(x, y, dy, ...) * ddx)`` (or of ``pool_x_saved``) with respect to
    ``dy``, for gradients of gradients: the backward is linear in ``dy``, and this is its
    adjoint. Max pooling reads ``ddx`` at each window's routed cell (from ``saved``, or searched
    again in ``x`` when None) times alpha; average pooling is ``pool(ddx, ...)``."""
    xp = array_module(x, ddx)
    _check_pool_mode(mode)
    g = _pool_geometry(x, window, padding, stride)
    if ddx.shape != x.shape:
        raise ValueError(f"ddx has shape {ddx.shape}, expected {x.shape}")
    if mode in (1, 2):
        return _avgpool(xp, ddx, g, mode == 2, alpha)
    pk = _pool_kernels(mode, (ddx,) if saved is not None else (ddx, x), saved)
    if saved is None:
        saved = (_maxpool_index(xp, x, g) if pk is None else
                 pk.maxpool_index(x, g, _offset_dtype(g, x.shape[3] + 2 * g.pw)))[1]
    _check_saved(saved, g, x.shape)
    if pk is not None:  # one CUDA kernel reading ddx at each window's saved cell
        return _scaled(pk.maxpool_pick(ddx, saved, g), alpha)
    N, C = x.shape[:2]
    off, = _without_sentinel(xp, saved)
    dpad = _pad(xp, ddx, g).reshape(N * C, (x.shape[2] + 2 * g.ph) * (x.shape[3] + 2 * g.pw))
    out = xp.empty((N * C, g.Ho, g.Wo), dtype=ddx.dtype)
    for images, index in _index_blocks(xp, off, g, x.shape):
        out[images] = dpad[images].reshape(-1).take(index)
    if off is not saved:
        out[(saved == np.iinfo(saved.dtype).max).reshape(out.shape)] = 0
    return _scaled(out.reshape(N, C, g.Ho, g.Wo), alpha)


# Knet's unpool runs the average-pool backward with these pool modes (pool0 => unpool1, …).
_UNPOOL_MODE = {0: 1, 1: 2, 2: 1, 3: 1}


def _unpool_setup(x, window, padding, stride, mode):
    if x.ndim != 4:
        raise ValueError(f"unpool expects 4-D x (N, C, H, W), got shape {x.shape}")
    if mode not in _UNPOOL_MODE:
        raise ValueError(f"unpool mode must be 0..3, got {mode}")
    (kh, kw), (ph, pw) = _pair(window, "window"), _pair(padding, "padding")
    sh, sw = _pair(window if stride is None else stride, "stride")
    N, C, H, W = x.shape
    shape = (N, C, (H - 1) * sh + kh - 2 * ph, (W - 1) * sw + kw - 2 * pw)
    g = _geometry(shape[2], shape[3], (kh, kw), (ph, pw), (sh, sw))
    return shape, g, _UNPOOL_MODE[mode] == 2, kh * kw


def unpool(x: Array, *, window: IntPair = 2, padding: IntPair = 0, stride: IntPair | None = None,
           mode: int = 0, alpha: float = 1) -> Array:
    """Knet's ``unpool``, the reverse of pooling (``pool(unpool(x)) == x``): each value is spread
    over its window, i.e. average-pool backward times the window size, divided by ``alpha``.
    With the default non-overlapping window this is nearest-neighbour upsampling."""
    r = _via_cudnn("unpool", x, window=window, padding=padding, stride=stride, mode=mode, alpha=alpha)
    if r is not NotImplemented:
        return r
    xp = array_module(x)
    shape, g, exclude_pad, size = _unpool_setup(x, window, padding, stride, mode)
    return _avgpool_t(xp, x, shape, g, exclude_pad, size / alpha)


def unpool_x(x: Array, y: Array, dy: Array, *, window: IntPair = 2, padding: IntPair = 0,
             stride: IntPair | None = None, mode: int = 0, alpha: float = 1) -> Array:
    """Gradient of ``sum(unpool(x, ...) * dy)`` with respect to ``x``: average pooling of ``dy``
    times the window size (block sums for the default window), divided by ``alpha``."""
    r = _via_cudnn("unpool_x", x, y, dy, window=window,
                   padding=padding, stride=stride, mode=mode, alpha=alpha)
    if r is not NotImplemented:
        return r
    xp = array_module(x, dy)
    shape, g, exclude_pad, size = _unpool_setup(x, window, padding, stride, mode)
    if dy.shape != shape:
        raise ValueError(f"dy has shape {dy.shape}, expected {shape}")
    return _avgpool(xp, dy, g, exclude_pad, size / alpha)
