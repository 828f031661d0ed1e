"""knetc's settings, in one place: environment variables read when used, and overrides.

``KNETC_TIER0=0``  compile every specialization (no tier 0 runs; see knetc.api)
``KNETC_FUSE=0``   no GPU kernel fusion (knetc.compiler.fusion)

``with knetc.settings.override(tier0=False):`` changes a setting for a block (``knetc show``
uses it to compile every specialization it records).
"""
from __future__ import annotations

import contextlib
import os
import threading

_ENV = {"tier0": "KNETC_TIER0", "fuse": "KNETC_FUSE"}
_lock = threading.Lock()
_overrides: dict[str, list] = {name: [] for name in _ENV}


def enabled(name: str) -> bool:
    """Is the switch ``name`` ("tier0", "fuse") on? An override wins over the environment."""
    stack = _overrides[name]
    if stack:
        return stack[-1]
    return os.environ.get(_ENV[name], "1") != "0"


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
