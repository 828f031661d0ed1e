"""knetc's settings, in one place: environment variables read when used, and overrides.

``KNETC_TIER0=0``  compile every specialization (no tier 0 runs; see knetc.api)
``KNETC_FUSE=0``   no GPU kernel fusion (knetc.compiler.fusion)
``KNETC_SELECT_INTS=0`` every Python int of the arguments keyed by value (by default an int that
                  only indexes arrays is data, and one that steered a trace is keyed: see
                  knetc.compiler.selectors); read when a function's cache is made
``KNETC_UNITS=0``  helpers are always inlined (by default, in code run at tier 0, a helper called
                  again with arguments of one kind is one operation: knetc.compiler.units)
``KNETC_CAPTURE=1`` GPU code written for CUDA-graph capture (matrix products through knetc's own
                  cuBLAS calls, runtime/cublas.py); off by default, ``knetc.graph_step`` turns
                  it on while it compiles and captures a step

``with knetc.settings.override(tier0=False):`` changes a setting for a block (``knetc show``
uses it to compile every specialization it records).
"""
from __future__ import annotations

import contextlib
import os
import threading

_ENV = {"tier0": "KNETC_TIER0", "fuse": "KNETC_FUSE", "capture": "KNETC_CAPTURE",
        "select_ints": "KNETC_SELECT_INTS", "units": "KNETC_UNITS"}
# without an environment variable
_DEFAULTS = {"tier0": True, "fuse": True, "capture": False, "select_ints": True, "units": True}
_lock = threading.Lock()
_overrides: dict[str, list] = {name: [] for name in _ENV}


def enabled(name: str) -> bool:
    """Is the switch ``name`` ("tier0", "fuse", "capture", "select_ints", "units") on? An
    override wins over the environment (a variable set to "0" is off, to anything else on),
    which wins over the default."""
    stack = _overrides[name]
    if stack:
        return stack[-1]
    value = os.environ.get(_ENV[name])
    return _DEFAULTS[name] if value is None else value != "0"


def overridden(*names: str) -> bool:
    """Is one of these switches overridden now (inside an ``override`` block setting it)?"""
    return any(_overrides[name] for name in names)


@contextlib.contextmanager
def override(**switches: bool):
    """Set switches (``tier0=False``) for the block, in every thread, then restore them."""
    with _lock:
        for name, value in switches.items():
            _overrides[name].append(bool(value))
    try:
        yield
    finally:
        with _lock:
            for name in switches:
                _overrides[name].pop()
