"""Large NumPy temporaries reused from call to call, instead of fresh memory each time.

A training step of a large model makes the same large arrays every call (a language model's
(T*B, vocabulary) scores: 180 MB each, five of them per step). NumPy gets every array of 32 MB
or more from the operating system as fresh pages (glibc ``mmap``) and gives them back when it is
freed, so each step pays the page faults of its whole working set again: measured on the 2-core
machines, a step of five such arrays took 0.36 s with fresh arrays against 0.29 s with reused
ones, and the first step after a pause up to 1.5 s. (PyTorch's CUDA caching allocator is the
same idea on the GPU.)

The generated CPU code (``knetc.compiler.optimize.pool_large``) asks this module for the large
results of its arithmetic, matrix products and zero fills. A buffer is handed out as a view of an
owner array the pool keeps; it is free again when nothing refers to the owner but the pool (every
view of it, and every view of a view, holds a reference to the owner), so a result the user keeps
(a gradient) is never reused while it lives.

``KNETC_POOL_MB`` (default 2048) caps the bytes the pool keeps; 0 turns it off. ``clear()`` gives
the free buffers back to the operating system.
"""
from __future__ import annotations

import contextlib
import math
import operator
import os
import sys
import threading

import numpy as np

__all__ = ["empty", "zeros", "binary", "unary", "matmul", "off", "clear", "stats", "MIN_BYTES"]

MIN_BYTES = 1 << 22         # smaller arrays: NumPy's own allocation (the heap reuses them)
_lock = threading.Lock()
_local = threading.local()      # .off: no pooling in this thread (see off())
_owners: dict[int, list] = {}   # size class (bytes) -> owner arrays (uint8)
_kept = 0                       # bytes held by owners
_last: dict = {}                # id(owner) -> the request that last took it
_ticks = 0                      # requests so far
RECENT = 24     # requests: a free buffer not taken in this many is given back when one is made


_OPERATORS = {np.add: operator.add, np.subtract: operator.sub, np.multiply: operator.mul,
              np.true_divide: operator.truediv}


def _limit() -> int:
    return int(float(os.environ.get("KNETC_POOL_MB", "2048")) * (1 << 20))


def _size_class(nbytes: int) -> int:
    """``nbytes`` rounded up to a sixteenth of its power of two (sequences of one batch size but
    many lengths share buffers; at most 6% unused)."""
    step = 1 << max(nbytes.bit_length() - 4, 12)
    return -(-nbytes // step) * step


def _take(nbytes: int):
    """A free owner of ``nbytes``' size class, or a new one (None: over the limit)."""
    global _kept, _ticks
    c = _size_class(nbytes)
    with _lock:
        _ticks += 1
        owners = _owners.setdefault(c, [])
        o = _free(owners)
        if o is not None:
            _last[id(o)] = _ticks
            return o[:nbytes]
        _release_stale()
        if _kept + c > _limit():
            return None
        o = np.empty(c, np.uint8)
        owners.append(o)
        _last[id(o)] = _ticks
        _kept += c
        return o[:nbytes]


def _free(owners: list):
    """A free owner of ``owners``, or None. (A function of its own: a loop variable left in
    ``_take`` would hold one owner while ``_release_stale`` counts its references.)"""
    for o in owners:
        # the list, the loop variable and getrefcount's argument: nobody else holds it
        if sys.getrefcount(o) == 3:
            return o
    return None


def _release_stale() -> None:
    """Give back the free buffers not handed out in the last ``RECENT`` requests (a model whose
    shapes change every call, a language model's batch lengths, would otherwise keep a buffer per
    shape; fresh pages recycled by the system are cheaper than never-touched ones)."""
    _give_back(lambda o: _ticks - _last[id(o)] > RECENT)


def _give_back(which) -> None:
    """Drop the free owners for which ``which(owner)`` holds (the caller holds ``_lock``)."""
    global _kept
    for c, owners in _owners.items():
        keep = []
        for o in owners:
            # the list, the loop variable and getrefcount's argument: in use if more
            if sys.getrefcount(o) > 3 or not which(o):
                keep.append(o)
            else:
                del _last[id(o)]
                _kept -= c
        owners[:] = keep


def _pooled(shape, dtype):
    """A pooled array of ``shape`` and ``dtype`` (uninitialized), or None: small, or over the
    limit."""
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < MIN_BYTES or getattr(_local, "off", 0):
        return None
    raw = _take(nbytes)
    return None if raw is None else raw.view(dtype).reshape(shape)


def empty(shape, dtype) -> np.ndarray:
    """``np.empty(shape, dtype)``, from the pool when it is large."""
    dtype = np.dtype(dtype)
    shape = (shape,) if type(shape) is int else tuple(shape)
    a = _pooled(shape, dtype)
    return np.empty(shape, dtype) if a is None else a


def zeros(shape, dtype) -> np.ndarray:
    """``np.zeros(shape, dtype)``, from the pool when it is large."""
    dtype = np.dtype(dtype)
    shape = (shape,) if type(shape) is int else tuple(shape)
    a = _pooled(shape, dtype)
    if a is None:
        return np.zeros(shape, dtype)
    a.fill(0)
    return a


def binary(ufunc, a, b):
    """``ufunc(a, b)`` (``np.add``, ``np.subtract``, ``np.multiply``, ``np.true_divide``), its
    result from the pool when it is large. The result's shape and type are NumPy's own
    (broadcasting, promotion), found when it runs; only float results are pooled (where the
    promotion of the operands is the ufunc's result type: not ``int / int``)."""
    if type(a) is np.ndarray or type(b) is np.ndarray:
        dtype = np.result_type(a, b)
        if dtype.kind == "f":
            out = _pooled(np.broadcast_shapes(np.shape(a), np.shape(b)), dtype)
            if out is not None:
                return ufunc(a, b, out=out)
    return _OPERATORS[ufunc](a, b)    # the operator: Python numbers give Python numbers


def unary(ufunc, x):
    """``ufunc(x)`` of a float array (``np.exp``, ``np.tanh``, ...), from the pool when large."""
    if type(x) is np.ndarray and x.dtype.kind == "f":
        out = _pooled(x.shape, x.dtype)
        if out is not None:
            return ufunc(x, out=out)
    return ufunc(x)


def matmul(a, b):
    """``a @ b`` of two 2-D arrays, from the pool when large."""
    if type(a) is np.ndarray and type(b) is np.ndarray and a.ndim == 2 and b.ndim == 2 \
            and a.shape[1] == b.shape[0]:
        dtype = np.result_type(a, b)
        out = _pooled((a.shape[0], b.shape[1]), dtype) if dtype.kind == "f" else None
        if out is not None:
            return np.matmul(a, b, out=out)
    return a @ b


@contextlib.contextmanager
def off():
    """No pooling in this thread inside the block. The compiler specializes and runs tier 0
    under it: a call that meets its shapes once gains nothing from buffers kept for later, and
    on the 2-core machines memory the process has not touched lately costs several times more
    than memory it just freed (a language model's first steps: 1.4 s against 2.2 s)."""
    _local.off = getattr(_local, "off", 0) + 1
    try:
        yield
    finally:
        _local.off -= 1


def clear() -> None:
    """Forget the free buffers (those still in use stay with their users)."""
    with _lock:
        _give_back(lambda o: True)


def stats() -> dict:
    """``{"kept": bytes held, "buffers": count, "in_use": count}``."""
    with _lock:
        n = busy = 0
        for owners in _owners.values():
            for o in owners:
                n += 1
                busy += sys.getrefcount(o) > 3
        return {"kept": _kept, "buffers": n, "in_use": busy}
