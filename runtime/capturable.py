"""The namespace ``np`` names in GPU code compiled for a CUDA-graph capture.

It is CuPy's (as ``backend.device_namespace`` gives it), except that ``matmul`` and ``dot`` are
``runtime.cublas``'s: CuPy's own cuBLAS calls refuse stream capture, knetc's do not.  Generated
code compiled under ``settings.override(capture=True)`` writes ``a @ b`` as ``np.matmul(a, b)``
(knetc/compiler/capture.py) so that its products come here.  Submodules (``linalg``, ``random``,
``fft``), types and every other function are CuPy's own objects.
"""
from __future__ import annotations

import types
from typing import Any

from . import cublas
from .backend import device_namespace

__all__ = ["namespace"]

_NAMESPACES: dict[int, tuple[Any, types.ModuleType]] = {}


def namespace(xp: Any) -> types.ModuleType:
    """The capturable namespace for array module ``xp`` (built once per module)."""
    found = _NAMESPACES.get(id(xp))
    if found is not None and found[0] is xp:
        return found[1]
    base = device_namespace(xp)
    ns = types.ModuleType(f"knetc_capturable_{getattr(xp, '__name__', 'xp')}")
    ns.__dict__.update({k: v for k, v in vars(base).items() if not k.startswith("__")})
    ns.matmul = cublas.matmul
    ns.dot = cublas.dot
    _NAMESPACES[id(xp)] = (xp, ns)
    return ns
