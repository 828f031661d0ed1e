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
