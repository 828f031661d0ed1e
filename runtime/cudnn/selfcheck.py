"""The layer checks behind ``runtime.cudnn.selftest``: each family once through cuDNN on tiny
CuPy arrays against direct formulas (forward) and adjoint identities (backward). Self-contained:
runtime.conv/layers import runtime.cudnn, so their implementations cannot be imported here; the
GPU test-suite compares with them in depth."""
from __future__ import annotations

import numpy as np

from . import layers as K


def _close(got, want, what: str, tol: float = 1e-4) -> None:
    if got is NotImplemented:
        raise RuntimeError(f"{what}: cuDNN declined (NotImplemented)")
    got, want = (np.asarray(a.get() if hasattr(a, "get") else a, np.float64) for a in (got, want))
    if got.shape != want.shape or not np.allclose(got, want, rtol=tol, atol=tol):
        err = np.max(np.abs(got - want)) if got.shape == want.shape else "shape"
        raise RuntimeError(f"{what}: mismatch (max abs error {err}; {got.shape} vs {want.shape})")


def _dot(a, b) -> float:
    return float((a.astype(np.float64) * b.astype(np.float64)).sum())


def _conv(cp, r):
    f32 = np.float32
    w, x = cp.asarray(r.standard_normal((4, 3, 3, 3)), f32), cp.asarray(r.standard_normal((2, 3, 6, 6)), f32)
    dy = cp.asarray(r.standard_normal((2, 4, 6, 6)), f32)
    xpad = cp.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    for mode in (0, 1):
        wk = w[:, :, ::-1, ::-1] if mode == 0 else w
        want = sum(cp.einsum("oc,ncij->noij", wk[:, :, p, q], xpad[:, :, p:p + 6, q:q + 6])
                   for p in range(3) for q in range(3))
        y = K.conv4(w, x, padding=1, mode=mode)
        _close(y, want, f"conv4 mode {mode}")
        ref = _dot(y, dy)
        _close(_dot(K.conv4_w(w, x, dy, padding=1, mode=mode), w), ref, f"conv4_w mode {mode}", 1e-3)
        _close(_dot(K.conv4_x(w, x, dy, padding=1, mode=mode), x), ref, f"conv4_x mode {mode}", 1e-3)
        _close(_dot(K.deconv4(w, dy, padding=1, mode=mode), x), ref, f"deconv4 mode {mode}", 1e-3)


def _pool(cp, r):
    x = cp.asarray(r.standard_normal((2, 3, 6, 6)), np.float32)
    blocks = x.reshape(2, 3, 3, 2, 3, 2)
    dy = cp.asarray(r.standard_normal((2, 3, 3, 3)), np.float32)
    ymax, yavg = K.pool(x), K.pool(x, mode=1)
    _close(ymax, blocks.max(axis=(3, 5)), "pool max")
    _close(yavg, blocks.mean(axis=(3, 5)), "pool average")
    dx = K.pool_x(x, ymax, dy)
    _close(dx.sum(), dy.sum(), "pool_x max (total)")
    _close(dx * (x == cp.repeat(cp.repeat(ymax, 2, 2), 2, 3)), dx, "pool_x max (positions)")
    _close(_dot(K.pool_x(x, yavg, dy, mode=1), x), _dot(yavg, dy), "pool_x average", 1e-3)
    _close(K.unpool(dy), cp.repeat(cp.repeat(dy, 2, 2), 2, 3), "unpool")
    _close(K.unpool_x(dy, None, x), blocks.sum(axis=(3, 5)), "unpool_x")


class _Moments:
    def __init__(self, cp, C):
        self.momentum, self.mean, self.var = 0.1, cp.zeros(C, np.float32), cp.ones(C, np.float32)


def _batchnorm(cp, r):
    x = cp.asarray(r.standard_normal((4, 3, 5, 5)), np.float32)
    p = cp.asarray(r.standard_normal(6), np.float32)
    dy = cp.asarray(r.standard_normal(x.shape), np.float32)
    m = _Moments(cp, 3)
    y, saved = K.batchnorm_train(x, m, p)
    mu, var = x.mean(axis=(0, 2, 3), keepdims=True), x.var(axis=(0, 2, 3), keepdims=True)
    xhat = (x - mu) / cp.sqrt(var + 1e-5)
    g, b = p[:3].reshape(1, 3, 1, 1), p[3:].reshape(1, 3, 1, 1)
    _close(y, xhat * g + b, "batchnorm training forward")
    _close(m.mean, 0.1 * mu.ravel(), "batchnorm running mean")
    _close(m.var, 0.9 + 0.1 * x.var(axis=(0, 2, 3), ddof=1), "batchnorm running var")
    gy = dy * g
    dx = (gy - gy.mean(axis=(0, 2, 3), keepdims=True)
          - xhat * (gy * xhat).mean(axis=(0, 2, 3), keepdims=True)) / cp.sqrt(var + 1e-5)
    _close(K.batchnorm_dx(x, p, saved, dy), dx, "batchnorm dx", 1e-3)
    _close(K.batchnorm_dparams(x, p, saved, dy),
           cp.concatenate([(dy * xhat).sum(axis=(0, 2, 3)), dy.sum(axis=(0, 2, 3))]),
           "batchnorm dparams", 1e-3)
    want = (x - m.mean.reshape(g.shape)) / cp.sqrt(m.var.reshape(g.shape) + 1e-5) * g + b
    _close(K.batchnorm_infer(x, m, p), want, "batchnorm inference")


def _softmax(cp, r):
    x = cp.asarray(r.standard_normal((3, 4, 5)), np.float32)
    dy = cp.asarray(r.standard_normal(x.shape), np.float32)
    for axis in (0, 1, -1):
        e = cp.exp(x - x.max(axis=axis, keepdims=True))
        y = e / e.sum(axis=axis, keepdims=True)
        _close(K.softmax(x, axis), y, f"softmax axis {axis}")
        _close(K.logsoftmax(x, axis), cp.log(y), f"logsoftmax axis {axis}")
        _close(K.softmax_backward(y, dy, axis), y * (dy - (dy * y).sum(axis=axis, keepdims=True)),
               f"softmax backward axis {axis}")
        _close(K.logsoftmax_backward(cp.log(y), dy, axis),
               dy - y * dy.sum(axis=axis, keepdims=True), f"logsoftmax backward axis {axis}")


def run() -> dict:
    """{family: 'ok' or the error text} for conv, pool, batchnorm, softmax."""
    import cupy as cp
    out = {}
    for name, check in (("conv", _conv), ("pool", _pool), ("batchnorm", _batchnorm),
                        ("softmax", _softmax)):
        try:
            check(cp, np.random.default_rng(0))
            out[name] = "ok"
        except Exception as e:  # noqa: BLE001 - reported, not raised
            out[name] = f"{type(e).__name__}: {e}"
    return out
