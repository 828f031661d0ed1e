"""The fusion pass (knetc/compiler/fusion) on real CuPy: an LSTM cell, relu/tanh chains and loss
tails give the same loss and gradients with fusion on, with fusion off, and with NumPy; and with
fusion on, the generated code really calls fused kernels (``out = _k3(...)`` statements, see
knetc/compiler/fusion/plan.py's ``kernel_call_stmt``).

Fusion is switched off with ``KNETC_FUSE=0`` and ``knetc.settings.override(fuse=False)`` together
(the pipeline reads the switch when it compiles); the cache does not key on the switch, so each
configuration starts from an empty cache for its function. The NumPy halves (``numpy_half``)
run on the CPU in tests/test_gpu_cases_cpu.py.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest

import knetc
from knetc.runtime.backend import gpu

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_helpers import assert_same, numpy_half, seeded  # noqa: E402

FUSED_CALL = re.compile(r"=\s*_k\d+\(")


# ------------------------------------------------------------------------------ the models
def lstm_cell(w, x, h, c):
    """One LSTM step written in plain NumPy style, Knet's gate layout (i, f, o, g)."""
    g = x @ w[0] + h @ w[1] + w[2]
    H = h.shape[1]
    i = knetc.sigm(g[:, 0:H])
    f = knetc.sigm(g[:, H:2 * H])
    o = knetc.sigm(g[:, 2 * H:3 * H])
    z = np.tanh(g[:, 3 * H:])
    c2 = f * c + i * z
    h2 = o * np.tanh(c2)
    return np.sum(h2 * h2) + np.sum(c2 * w[3])


def lstm_by_hand(w, x, h, c):
    """The same step with the sigmoid written out (all elementwise: one fusable run)."""
    g = x @ w[0] + h @ w[1] + w[2]
    i, f, o, z = np.split(g, 4, axis=1)
    i = 1 / (1 + np.exp(-i))
    f = 1 / (1 + np.exp(-f))
    o = 1 / (1 + np.exp(-o))
    c2 = f * c + i * np.tanh(z)
    h2 = o * np.tanh(c2)
    return np.sum(h2 * h2) + np.sum(c2 * w[3])


def relu_tanh_chain(w, x, y):
    h = np.maximum(x @ w[0] + w[1], 0)
    h = np.tanh(h @ w[2] + w[3]) * 0.5 + h * 0.25
    h = np.maximum(np.tanh(h) * 2 - 0.1, 0)
    return np.mean((h @ w[4] - y) ** 2)


def softmax_xent(w, x, labels):
    """Softmax cross-entropy written by hand, labels one-hot."""
    s = np.maximum(x @ w[0] + w[1], 0) @ w[2] + w[3]
    s = s - s.max(axis=1, keepdims=True)
    lp = s - np.log(np.sum(np.exp(s), axis=1, keepdims=True))
    return -np.sum(lp * labels) / labels.shape[0]


def mse(w, x, y):
    p = np.tanh(x @ w[0] + w[1]) @ w[2] + w[3]
    d = p - y
    return np.mean(d * d) + 0.01 * np.sum(w[0] * w[0])


def _lstm_args(rng, dtype, B=6, X=5, H=8):
    w = [rng.normal(size=(X, 4 * H)) * 0.5, rng.normal(size=(H, 4 * H)) * 0.5, rng.normal(size=(1, 4 * H)),
         rng.normal(size=(H,))]
    args = (w, rng.normal(size=(B, X)), rng.normal(size=(B, H)), rng.normal(size=(B, H)))
    return _cast(args, dtype)


def _mlp_args(rng, dtype, B=16, X=8, H=12, Y=4):
    w = [rng.normal(size=(X, H)) * 0.5, rng.normal(size=H) * 0.1, rng.normal(size=(H, H)) * 0.5,
         rng.normal(size=H) * 0.1, rng.normal(size=(H, Y)) * 0.5]
    return _cast((w, rng.normal(size=(B, X)), rng.normal(size=(B, Y))), dtype)


def _xent_args(rng, dtype, B=16, X=8, H=12, Y=5):
    w = [rng.normal(size=(X, H)) * 0.5, rng.normal(size=H) * 0.1, rng.normal(size=(H, Y)) * 0.5,
         rng.normal(size=Y) * 0.1]
    labels = np.eye(Y)[rng.integers(0, Y, B)]
    return _cast((w, rng.normal(size=(B, X)), labels), dtype)


def _mse_args(rng, dtype, B=16, X=8, H=12, Y=3):
    w = [rng.normal(size=(X, H)) * 0.5, rng.normal(size=H) * 0.1, rng.normal(size=(H, Y)) * 0.5,
         rng.normal(size=Y) * 0.1]
    return _cast((w, rng.normal(size=(B, X)), rng.normal(size=(B, Y))), dtype)


def _cast(args, dtype):
    def one(a):
        return a.astype(dtype) if isinstance(a, np.ndarray) and a.dtype == np.float64 else a
    return tuple([one(v) for v in a] if isinstance(a, list) else one(a) for a in args)


MODELS = {"lstm_cell": (lstm_cell, _lstm_args), "lstm_by_hand": (lstm_by_hand, _lstm_args),
          "relu_tanh_chain": (relu_tanh_chain, _mlp_args), "softmax_xent": (softmax_xent, _xent_args),
          "mse": (mse, _mse_args)}
DTYPES = {"float64": (np.float64, dict(rtol=1e-9, atol=1e-11)),
          "float32": (np.float32, dict(rtol=1e-4, atol=1e-5))}
# fused against unfused, both on the GPU: the same operations, only grouped into other kernels
SAME_DEVICE = {"float64": dict(rtol=1e-11, atol=1e-13), "float32": dict(rtol=2e-5, atol=1e-6)}


def model_args(name: str, dtype_name: str) -> tuple:
    """The arguments of model ``name`` (NumPy, in the dtype) and the loss function."""
    fn, make = MODELS[name]
    return fn, make(seeded(f"{name}-{dtype_name}"), DTYPES[dtype_name][0])


def model_numpy_half(name: str, dtype_name: str):
    """``(gradient wrt w, loss)`` of the model on the CPU, and its arguments."""
    fn, args = model_args(name, dtype_name)
    return numpy_half(fn, args, 0), args


@contextlib.contextmanager
def fusion(on: bool):
    """Fusion on or off for the block (environment and settings override, the pipeline reads
    either); the function caches are emptied by the caller."""
    saved = os.environ.get("KNETC_FUSE")
    os.environ["KNETC_FUSE"] = "1" if on else "0"
    try:
        with knetc.settings.override(fuse=on):
            yield
    finally:
        if saved is None:
            os.environ.pop("KNETC_FUSE", None)
        else:
            os.environ["KNETC_FUSE"] = saved


def _fresh(fn):
    knetc.api._CACHES.pop(fn, None)   # every grad of fn shares one cache (knetc/api.py)


def gpu_run(fn, gargs, fuse: bool):
    """``((gradient, loss), generated source)`` of a freshly compiled GPU specialization."""
    _fresh(fn)
    try:
        with fusion(fuse):
            g = knetc.gradloss(fn)
            first = g(*gargs)              # compiles (the cache was empty: never tier 0)
            second = g(*gargs)             # the cached code again
            source = g.source(*gargs)
    finally:
        _fresh(fn)
    return first, second, source


@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("name", list(MODELS))
def test_fused_equals_unfused_equals_numpy(cp, name, dtype_name):
    want, args = model_numpy_half(name, dtype_name)
    fn = MODELS[name][0]
    gargs = tuple(gpu(list(args)))
    fused1, fused2, fsrc = gpu_run(fn, gargs, True)
    plain1, plain2, psrc = gpu_run(fn, gargs, False)
    assert FUSED_CALL.search(fsrc), f"nothing was fused in {name}:\n{fsrc}"
    assert not FUSED_CALL.search(psrc), f"fused although fusion is off:\n{psrc}"
    assert "np = cupy" in fsrc
    tol = DTYPES[dtype_name][1]
    for got, what in [(fused1, "fused"), (fused2, "fused, cached"), (plain1, "unfused"),
                      (plain2, "unfused, cached")]:
        assert_same(got, want, cp=cp, what=f"{name} {dtype_name} {what} vs NumPy", **tol)
    assert_same(fused1, plain1, cp=cp, what=f"{name} {dtype_name} fused vs unfused",
                **SAME_DEVICE[dtype_name])


@pytest.mark.parametrize("name", ["lstm_by_hand", "relu_tanh_chain", "softmax_xent"])
def test_fusion_reduces_the_statements_that_launch(cp, name):
    """Fewer array statements run with fusion on: each fused statement stands for several."""
    _, args = model_args(name, "float32")
    fn = MODELS[name][0]
    gargs = tuple(gpu(list(args)))
    *_, fsrc = gpu_run(fn, gargs, True)
    *_, psrc = gpu_run(fn, gargs, False)
    fused = len(FUSED_CALL.findall(fsrc))
    assert fused >= 1
    assert _statements(fsrc) < _statements(psrc), (fsrc, psrc)


def _statements(src: str) -> int:
    """Assignments and in-place updates in the generated body (comments, dels, guards apart)."""
    n = 0
    for line in src.splitlines()[1:]:
        t = line.strip()
        if t and not t.startswith(("#", "del ", "if ", "return", "raise")) and \
                re.match(r"^[\w, \[\]:]+\s*(=|\+=|-=|\*=|/=)\s", t):
            n += 1
    return n


def test_fused_kernels_are_cupy_kernels(cp):
    """The names the fused statements call are fusion.CupyKernel objects in the code's
    namespace, and one more call of the cached function still agrees with NumPy."""
    from knetc.compiler import fusion as F
    fn, args = model_args("lstm_by_hand", "float32")
    gargs = tuple(gpu(list(args)))
    _fresh(fn)
    try:
        with fusion(True):
            entry = knetc.grad(fn).specialize(gargs)
            names = {m.group(0).split("=")[-1].strip()[:-1] for m in FUSED_CALL.finditer(entry.source)}
            assert names
            ns = entry.fn.__globals__
            assert all(isinstance(ns[k], F.CupyKernel) for k in names), {k: type(ns[k]) for k in names}
            got = entry.run(*gargs)
    finally:
        _fresh(fn)
    want = numpy_half(fn, args, 0)
    assert_same(got, want, cp=cp, rtol=1e-4, atol=1e-5, what="lstm_by_hand entry")


def test_settings_override_alone_turns_fusion_off(cp):
    """``knetc.settings.override(fuse=False)`` is the documented switch (knetc/settings.py):
    without touching the environment, no fused kernel is generated."""
    fn, args = model_args("lstm_by_hand", "float32")
    gargs = tuple(gpu(list(args)))
    _fresh(fn)
    try:
        with knetc.settings.override(fuse=False):
            src = knetc.grad(fn).source(*gargs)
    finally:
        _fresh(fn)
    assert not FUSED_CALL.search(src), src
