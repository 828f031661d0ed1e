"""``y += alpha * x`` in one pass over memory: the BLAS ``axpy`` of the OpenBLAS that NumPy's
wheels carry, called with ctypes.

NumPy has no fused multiply-add, so ``w -= lr * g`` reads ``g``, writes a temporary, reads it
back and updates ``w``: twice the memory traffic of ``axpy`` (PyTorch's ``p.add_(g, alpha=-lr)``).
For a large parameter (a 20,000 x 128 embedding) that traffic is the optimizer step's whole cost.
The library is found beside NumPy (``numpy.libs/``, ``numpy/.dylibs/``); its ILP64 CBLAS entry
points are named ``scipy_cblas_?axpy64_`` in NumPy's wheels. A self-check against NumPy runs once
before first use; where the library or the symbol is missing, or the check fails, ``axpy`` says
so (returns False) and the caller uses NumPy.
"""
from __future__ import annotations

import ctypes
import glob
import os
import threading

import numpy as np

__all__ = ["axpy", "available", "openblas_libraries"]

# Below this many elements the ctypes call (a few µs) costs more than the pass it saves.
MIN_SIZE = 1 << 15

# (symbol prefix, integer type): NumPy's ILP64 OpenBLAS first, then plain CBLAS names.
_CANDIDATES = (("scipy_cblas_", "axpy64_", ctypes.c_int64), ("cblas_", "axpy64_", ctypes.c_int64),
               ("cblas_", "axpy", ctypes.c_int))
_state: dict = {}
_lock = threading.Lock()


def openblas_libraries() -> list[str]:
    """The OpenBLAS shared libraries NumPy's wheel carries (paths; empty for other builds)."""
    base = os.path.dirname(os.path.dirname(np.__file__))
    own = os.path.dirname(np.__file__)
    return sorted(glob.glob(os.path.join(base, "numpy.libs", "*openblas*")) +
                  glob.glob(os.path.join(own, ".dylibs", "*openblas*")))


def _load() -> dict:
    """``{np.float32: fn, np.float64: fn}`` of the axpy entry points found (empty if none)."""
    found = {}
    for path in openblas_libraries():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix, cint in _CANDIDATES:
            fns = {}
            for dtype, letter, real in ((np.dtype(np.float32), "s", ctypes.c_float),
                                        (np.dtype(np.float64), "d", ctypes.c_double)):
                fn = getattr(lib, f"{prefix}{letter}{suffix}", None)
                if fn is None:
                    break
                fn.restype = None
                fn.argtypes = [cint, real, ctypes.c_void_p, cint, ctypes.c_void_p, cint]
                fns[dtype] = fn
            if len(fns) == 2 and _selfcheck(fns):
                return fns
    return found


def _selfcheck(fns: dict) -> bool:
    """Does every entry point compute ``y + alpha * x`` as NumPy does (up to rounding)?"""
    rng = np.random.default_rng(0)
    for dtype, fn in fns.items():
        x = rng.standard_normal(1000).astype(dtype)
        y = rng.standard_normal(1000).astype(dtype)
        want = y + dtype.type(-0.3) * x
        fn(x.size, -0.3, x.ctypes.data, 1, y.ctypes.data, 1)
        if not np.allclose(y, want, rtol=1e-6, atol=1e-6):
            return False
    return True


def available() -> bool:
    """Was a working ``axpy`` found (loading and checking it on first use)?"""
    fns = _state.get("fns")
    if fns is None:
        with _lock:
            fns = _state.get("fns")
            if fns is None:
                fns = _state["fns"] = _load()
    return bool(fns)


def axpy(alpha: float, x, y) -> bool:
    """``y += alpha * x`` in place, for C-contiguous float32/float64 NumPy arrays of one shape
    and dtype of at least MIN_SIZE elements; False (nothing done) for anything else."""
    if type(x) is not np.ndarray or type(y) is not np.ndarray or x.size < MIN_SIZE \
            or x.dtype != y.dtype or x.shape != y.shape or not y.flags.writeable \
            or not (x.flags.c_contiguous and y.flags.c_contiguous) or not available():
        return False
    fn = _state["fns"].get(y.dtype)
    if fn is None or np.may_share_memory(x, y):
        return False
    fn(y.size, float(alpha), x.ctypes.data, 1, y.ctypes.data, 1)
    return True
