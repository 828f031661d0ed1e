"""Array-backend selection: the same code runs on NumPy arrays (CPU) and CuPy arrays (GPU)."""
from __future__ import annotations

import functools
import types

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


_PY_SCALARS = (bool, int, float, complex)
_NAMESPACES: dict = {}


def device_namespace(xp):
    """What ``np`` names in generated code that runs on arrays of module ``xp``.

    NumPy itself on the CPU. On the GPU, CuPy's namespace, except that its array functions also
    take a Python scalar as first argument where NumPy does: ``cupy.expand_dims(1.0, 0)`` and
    ``cupy.where(True, a, b)`` raise, and generated adjoints pass scalar gradients (``1.0``) and
    conditions to such functions. A call is retried with the scalar made an array only when it
    raised, so the usual call costs one Python frame more. Ufuncs (which take scalars), types and
    submodules are CuPy's own objects."""
    if xp is np:
        return np
    ns = _NAMESPACES.get(id(xp))
    if ns is None:
        ns = _NAMESPACES[id(xp)] = _scalar_tolerant(xp)
    return ns


_TWINS: dict = {}     # id of a device-namespace function -> (it, the NumPy function of its name)


def numpy_twin(fn):
    """The NumPy function that ``fn``, a function of a device namespace (``cupy.sin``, or its
    scalar-tolerant wrapper), stands for, or None. Derivative rules are registered for NumPy's
    functions; generated GPU code calls CuPy's, and differentiating it again (a gradient of a
    gradient) meets them."""
    hit = _TWINS.get(id(fn))
    return hit[1] if hit is not None and hit[0] is fn else None


def _scalar_tolerant(xp):
    ns = types.ModuleType(f"knetc_{xp.__name__}")
    asarray = xp.asarray
    numpy_names = vars(np)
    for name, own in vars(xp).items():
        value = own
        if isinstance(own, (types.FunctionType, types.BuiltinFunctionType)) \
                or type(own).__name__ == "cython_function_or_method":
            value = _tolerant(own, asarray)
        twin = numpy_names.get(name)
        if callable(twin) and not isinstance(twin, type):
            for f in (own, value):               # the function and its wrapper
                if f is not twin:
                    _TWINS[id(f)] = (f, twin)
        setattr(ns, name, value)
    return ns


def _tolerant(fn, asarray):
    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (TypeError, AttributeError):
            if args and type(args[0]) in _PY_SCALARS:
                return fn(asarray(args[0]), *args[1:], **kwargs)
            raise
    return call


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
    NamedTuples, dataclasses, registered classes), keeping the structure. A leaf object with a
    ``device_copy(fn)`` method (batchnorm's moments) is replaced by what that returns."""
    def leaf(a):
        if _is_array(a):
            return fn(a)
        copy = getattr(type(a), "device_copy", None)
        return a if copy is None else copy(a, fn)
    return _tree.map(leaf, _tree.auto_register(w))


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
