"""Array-backend selection: the same code runs on NumPy arrays (CPU) and CuPy arrays (GPU)."""
from __future__ import annotations

import numpy as np

from .. import tree as _tree

try:  # CuPy is optional: CPU installs never import it successfully.
    import cupy as _cupy
except Exception:  # pragma: no cover - depends on the machine
    _cupy = None


def array_module(*arrays):
    """The module (numpy or cupy) that owns these arrays; numpy for Python scalars."""
    if _cupy is not None:
        for a in arrays:
            if isinstance(a, _cupy.ndarray):
                return _cupy
    return np


def is_array(x) -> bool:
    """Is ``x`` a NumPy or CuPy array (not a NumPy scalar, not a knetc traced value)?"""
    t = type(x)
    return t is np.ndarray or (_cupy is not None and t is _cupy.ndarray)


def cupy_module():
    """The cupy module when a CUDA device works, else None."""
    return _cupy if gpu_available() else None


def gpu_available() -> bool:
    """True when CuPy is installed and a CUDA device works."""
    if _cupy is None:
        return False
    try:
        return bool(_cupy.cuda.is_available())
    except Exception:  # pragma: no cover
        return False


def _is_array(x) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype") and not isinstance(x, np.generic)


def _map(fn, w):
    """Apply ``fn`` to every array leaf of a nested structure (lists, tuples, dicts,
    NamedTuples, dataclasses, registered classes), keeping the structure."""
    return _tree.map(lambda a: fn(a) if _is_array(a) else a, _tree.auto_register(w))


def gpu(w):
    """A deep copy of parameter structure ``w`` with every array moved to the GPU (CuPy)."""
    if not gpu_available():
        raise RuntimeError("knetc.gpu: no CUDA GPU is available (CuPy is not installed or finds "
                           "no device); keep the arrays on the CPU, or install knetc[gpu] on a GPU machine.")
    return _map(_cupy.asarray, w)


def cpu(w):
    """A deep copy of parameter structure ``w`` with every array as a NumPy array on the CPU."""
    return _map(lambda a: a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.array(a), w)


def atype():
    """Knet's default array type: CuPy's asarray when a GPU works, else NumPy float32 arrays."""
    xp = _cupy if gpu_available() else np

    def convert(a):
        a = np.asarray(a) if not hasattr(a, "dtype") else a
        dtype = np.float32 if np.issubdtype(a.dtype, np.floating) else a.dtype
        return xp.asarray(a, dtype=dtype)
    return convert


def devices_of(*values) -> set:
    """The array modules ('numpy', 'cupy') of the array leaves in ``values``."""
    return {type(a).__module__.split(".")[0] for a in _tree.leaves(_tree.auto_register(values))
            if _is_array(a)}
