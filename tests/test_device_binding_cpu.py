"""Generated code must not depend on `np` being NumPy itself.

GPU specializations run the same generated code with ``np`` bound to cupy, whose functions are
other objects than NumPy's. The first GPU run found identity guards written as ``np.sin`` (true
on the CPU, false at once on the GPU). Here, on the CPU, ``np`` is bound to a *shadow* of NumPy
(every function wrapped in a new object, the same results) and random programs must still give
the CPU results: any code that compares NumPy functions by identity through ``np`` fails.
"""
from __future__ import annotations

import types

import numpy as np
import pytest

import randprog
from knetc.compiler import pipeline


class _Shadow:
    """A callable standing for a NumPy function (ufunc methods such as ``.at`` delegate)."""

    def __init__(self, fn):
        self._fn = fn

    def __call__(self, *args, **kwargs):
        return self._fn(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._fn, name)


def _shadow_module(mod, name, depth=0):
    shadow = types.ModuleType(name)
    for k, v in vars(mod).items():
        if k.startswith("__"):
            continue
        if isinstance(v, type) or not callable(v):
            setattr(shadow, k, v)
        else:
            setattr(shadow, k, _Shadow(v))
    if depth == 0:
        for sub in ("linalg", "random", "fft"):
            setattr(shadow, sub, _shadow_module(getattr(mod, sub), f"{name}.{sub}", 1))
    return shadow


SHADOW = _shadow_module(np, "shadow_numpy")




def test_shadow_module_is_not_numpy():
    assert SHADOW.sin is not np.sin and SHADOW.sin(0.5) == np.sin(0.5)


@pytest.mark.parametrize("seed", range(60))
def test_random_program_with_np_bound_elsewhere(monkeypatch, seed, tmp_path):
    """The same outcome as with NumPy itself: a program rejected only under the shadow (e.g.
    "the gradient code does not fit the call": a guard failing at once) is a bug."""
    prog = randprog.generate(seed)
    plain = randprog.check(prog, str(tmp_path), tag="plain")
    monkeypatch.setattr(pipeline, "_array_module", lambda fn, params, args: SHADOW)
    monkeypatch.setenv("KNETC_FUSE", "0")     # fusion generates CUDA: GPU only
    shadow = randprog.check(prog, str(tmp_path), tag="shadow")
    assert shadow.status == plain.status and shadow.status in ("ok", "rejected"), shadow.report()


def _strict_expand_dims(a, axis):
    if not isinstance(a, np.ndarray):          # CuPy's: "Argument 'a' has incorrect type"
        raise TypeError(f"Argument 'a' has incorrect type (expected ndarray, got {type(a).__name__})")
    return np.expand_dims(a, axis)


def _strict_where(condition, x, y):
    return np.where(condition.astype(bool), x, y)   # CuPy's: a Python bool has no .astype


def test_device_namespace_takes_python_scalars_where_numpy_does():
    from knetc.runtime.backend import device_namespace
    fake = types.ModuleType("fakecupy")
    fake.expand_dims, fake.where, fake.asarray = _strict_expand_dims, _strict_where, np.asarray
    fake.sin, fake.float32 = np.sin, np.float32
    ns = device_namespace(fake)
    assert device_namespace(np) is np and device_namespace(fake) is ns
    assert ns.expand_dims(1.0, 0).shape == (1,)
    assert ns.where(True, np.ones(2), np.zeros(2)).tolist() == [1.0, 1.0]
    assert ns.sin is np.sin and ns.float32 is np.float32          # ufuncs and types: the same
    with pytest.raises(TypeError):                               # a real error still raises
        ns.expand_dims([1.0], 0)


def test_gpu_and_cpu_carry_batchnorm_moments():
    """knetc.cpu (like knetc.gpu) copies a model's batchnorm statistics with its arrays."""
    import knetc
    m = knetc.bnmoments(momentum=0.2, mean=np.arange(3.0), var=np.ones(3))
    w = {"conv": np.zeros((2, 2)), "m": m}
    c = knetc.cpu(w)
    assert c["m"] is not m and c["m"].momentum == 0.2
    np.testing.assert_array_equal(c["m"].mean, m.mean)
    assert c["m"].mean is not m.mean and c["conv"] is not w["conv"]


def _so_tanh(x):
    return np.sum(np.tanh(x) ** 2 * x)


def _so_matmul(x, w):
    return np.sum(np.sin(x @ w) * np.exp(x @ w * 0.1))


def _opaque(fn):
    """A wrapper of ``fn`` without Python source, like CuPy's compiled functions: the
    specializer cannot read into it, so it needs a rule of its own."""
    env = {"fn": fn}
    exec(compile("def opaque(*args, **kwargs):\n    return fn(*args, **kwargs)\n",
                 "<compiled shadow>", "exec"), env)
    return env["opaque"]


def _opaque_module():
    shadow = types.ModuleType("opaque_numpy")
    for k, v in vars(np).items():
        if k.startswith("__"):
            continue
        setattr(shadow, k, v if isinstance(v, type) or not callable(v) else _opaque(v))
    for sub in ("linalg", "random", "fft"):
        setattr(shadow, sub, getattr(np, sub))
    return shadow


OPAQUE = _opaque_module()


@pytest.mark.parametrize("f,extra", [(_so_tanh, ()), (_so_matmul, (np.linspace(-1, 1, 12).reshape(4, 3),))])
def test_second_order_with_np_bound_elsewhere(monkeypatch, f, extra):
    """A gradient of a gradient differentiates generated code, which calls the device
    namespace's functions (cupy.sin on the GPU, which has no Python source): they take their
    NumPy twins' rules (the GPU run refused these with "no derivative rule for cupy_sin")."""
    from gradtest import second_order

    import knetc
    x = np.linspace(-0.8, 0.9, 8).reshape(2, 4)
    want = knetc.grad(second_order(f, *extra))(x)
    monkeypatch.setattr(pipeline, "_array_module", lambda fn, params, args: OPAQUE)
    monkeypatch.setenv("KNETC_FUSE", "0")
    got = knetc.grad(second_order(f, *extra))(x)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
