"""How much memory a training step uses: CuPy's memory pool on the GPU, the process on the CPU.

    >>> with knetc.runtime.memory.track_peak() as peak:
    ...     dw = grad(loss)(w, x, y)
    >>> peak.bytes, memory()

GPU (CuPy installed and a device works): ``memory()`` reports the default memory pool's
``used_bytes`` (held by live arrays) and ``total_bytes`` (held by the pool, used or cached), the
device's free/total memory, and ``peak_bytes``: the peak pool use of the last ``track_peak()``
block (None before one ran). ``track_peak()`` registers a CuPy ``MemoryHook`` for the block and
reads ``pool.used_bytes()`` after every allocation from the pool, so the peak is exact for
allocations through the default pool (pool use only rises at an allocation). The hook is
thread-local (CuPy's hooks are): allocations made by other threads are not sampled, although
their bytes are in the pool counts read at each sample. It costs one Python call per
allocation, so use it to measure, not in every step.

CPU: ``memory()`` gives ``{"device": "cpu", ...}`` with the process's peak resident set size
(``resource.getrusage``: a lifetime maximum, it never goes down), the current resident size where
/proc is readable, and tracemalloc's current/peak bytes when tracing is on (NumPy reports its
array buffers to tracemalloc). ``track_peak()`` on the CPU measures the tracemalloc peak of the
block when tracing is on (it resets tracemalloc's peak at entry) and reports None otherwise:
nothing is started behind your back.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tracemalloc

from . import backend

_last_peak: int | None = None


class Peak:
    """The result of ``track_peak()``: ``bytes`` (the peak during the block, None when it
    could not be measured), ``start_bytes`` (use at entry) and ``device``; filled at exit."""
    __slots__ = ("device", "bytes", "start_bytes")

    def __init__(self, device):
        self.device, self.bytes, self.start_bytes = device, None, None

    @property
    def delta_bytes(self):
        """How far above the use at entry the block went."""
        if self.bytes is None or self.start_bytes is None:
            return None
        return self.bytes - self.start_bytes

    def __repr__(self):
        return f"<peak on {self.device}: {self.bytes} bytes (start {self.start_bytes})>"


def _gpu():
    return backend.cupy_module()


def memory() -> dict:
    """Memory in use now (see the module docstring for what each key means)."""
    cupy = _gpu()
    if cupy is not None:
        pool = cupy.get_default_memory_pool()
        free, total = cupy.cuda.runtime.memGetInfo()
        return {"device": f"cuda:{cupy.cuda.Device().id}", "used_bytes": pool.used_bytes(),
                "total_bytes": pool.total_bytes(), "pool_free_bytes": pool.free_bytes(),
                "device_free_bytes": free, "device_total_bytes": total, "peak_bytes": _last_peak}
    out = {"device": "cpu", "max_rss_bytes": _max_rss(), "rss_bytes": rss_bytes(),
           "traced_bytes": None, "traced_peak_bytes": None, "peak_bytes": _last_peak}
    if tracemalloc.is_tracing():
        out["traced_bytes"], out["traced_peak_bytes"] = tracemalloc.get_traced_memory()
    return out


@contextlib.contextmanager
def track_peak():
    """Measure the peak memory use during the block: the CuPy pool's on the GPU, tracemalloc's on
    the CPU (when tracing). Yields a ``Peak`` filled in at exit; ``memory()["peak_bytes"]``
    then reports it too."""
    global _last_peak
    cupy = _gpu()
    if cupy is not None:
        pool = cupy.get_default_memory_pool()
        peak = Peak(f"cuda:{cupy.cuda.Device().id}")
        peak.start_bytes = pool.used_bytes()
        hook = _pool_hook(cupy, pool, peak.start_bytes)
        try:
            with hook:
                yield peak
        finally:
            peak.bytes = max(hook.peak, pool.used_bytes())
            _last_peak = peak.bytes
        return
    peak = Peak("cpu")
    tracing = tracemalloc.is_tracing()
    if tracing:
        tracemalloc.reset_peak()
        peak.start_bytes = tracemalloc.get_traced_memory()[0]
    try:
        yield peak
    finally:
        if tracing and tracemalloc.is_tracing():
            peak.bytes = tracemalloc.get_traced_memory()[1]
            _last_peak = peak.bytes


def _pool_hook(cupy, pool, start):
    class PoolPeak(cupy.cuda.MemoryHook):
        def __init__(self):
            self.name = f"knetc_track_peak_{id(self)}"   # unique: blocks may nest
            self.peak = start

        def malloc_postprocess(self, **kwargs):
            used = pool.used_bytes()
            if used > self.peak:
                self.peak = used
    return PoolPeak()


def _max_rss() -> int | None:
    try:
        import resource
    except ImportError:                                      # Windows
        return None
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024      # bytes on macOS, KiB on Linux


def rss_bytes() -> int | None:
    """The process's resident set size now, in bytes (Linux's /proc; None elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None
