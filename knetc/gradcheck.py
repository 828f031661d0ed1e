"""Gradient checking: compare knetc's generated gradient with central finite differences.

    >>> def loss(w, x): return np.sum(np.tanh(x @ w))
    >>> knetc.gradcheck(loss, w, x)            # True, or AssertionError naming the entry
    >>> knetc.gradcheck(loss, w, x, argnum=1)  # check another argument

The float leaves of the differentiated argument are NumPy float arrays (and NumPy float scalars)
and Python floats, alone or nested in lists, tuples and dicts, the structures ``knetc.grad``
accepts. The numeric gradient is computed in float64 (float arrays of every argument are
converted for the finite differences), whatever the dtype of the inputs; the analytic gradient is
computed on the arguments as given, so loosen ``rtol``/``atol`` when checking float32 inputs.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from . import tree

__all__ = ["gradcheck", "numeric_grad"]

Path = tree.Path  # keys (list/tuple indices, dict keys) from the argument down to one leaf


def gradcheck(f: Callable[..., Any], *args: Any, argnum: int = 0, eps: float | None = None,
              rtol: float = 1e-5, atol: float = 1e-7, samples: int | None = None,
              seed: int = 0) -> bool:
    """Check ``knetc.grad(f, argnum)(*args)`` against central finite differences.

    Every float leaf of ``args[argnum]`` is perturbed by ``±eps`` (default ``1e-6``, in float64)
    and ``(f(x + eps) - f(x - eps)) / (2 eps)`` is compared with the analytic gradient: an entry
    passes when ``|analytic - numeric| <= atol + rtol * |numeric|``. With ``samples=k`` only ``k``
    randomly chosen entries of each array are checked (chosen with ``seed``), which keeps the check
    cheap for big parameters. A leaf whose analytic gradient is ``None`` (it does not reach the
    loss) must have a zero numeric gradient.

    Returns True; raises AssertionError naming the parameter path (e.g. ``w['layers'][0]``), the
    index and both values for the first entry that differs, or when the gradient's structure or
    shapes differ from the argument's.
    """
    from .api import grad as _grad  # imported here: knetc imports this module while loading

    if not 0 <= argnum < len(args):
        raise ValueError(f"gradcheck: argnum={argnum} but {len(args)} arguments were given")
    eps = 1e-6 if eps is None else float(eps)
    tree.auto_register(args)      # NamedTuple and dataclass parameters are walked as nodes
    analytic = _grad(f, argnum=argnum)(*args)
    name = _param_name(f, argnum)
    base = _to_float64(args)
    rng = np.random.default_rng(seed)
    for path in _leaf_paths(args[argnum]):
        where = name + _path_str(path)
        x = tree.get(args[argnum], path)
        g = _analytic_leaf(analytic, path, where)
        shape = np.shape(x)
        if g is not None and np.shape(g) != shape:
            raise AssertionError(f"gradcheck: the gradient for {where} has shape {np.shape(g)}, "
                                 f"the parameter has shape {shape}")
        g = np.zeros(shape) if g is None else np.asarray(g, dtype=np.float64)
        size = int(np.prod(shape, dtype=np.int64))
        if samples is not None and size > samples:
            flat = rng.choice(size, size=samples, replace=False)
        else:
            flat = range(size)
        for k in flat:
            index = np.unravel_index(int(k), shape) if shape else ()
            numeric = _numeric_entry(f, base, argnum, path, index, eps)
            a = float(g[index])
            if not abs(a - numeric) <= atol + rtol * abs(numeric):  # also catches NaN
                at = f"{where}[{', '.join(str(int(i)) for i in index)}]" if shape else where
                raise AssertionError(
                    f"gradcheck: gradient of {_fname(f)} wrt {at} differs: analytic {a!r}, "
                    f"numeric {numeric!r} (difference {abs(a - numeric):.3g}, allowed "
                    f"{atol + rtol * abs(numeric):.3g}; eps={eps:g})")
    return True


def numeric_grad(f: Callable[..., Any], *args: Any, argnum: int = 0, eps: float = 1e-6) -> Any:
    """The central finite-difference gradient of scalar ``f`` wrt ``args[argnum]``, in float64.

    The result has the structure of ``args[argnum]``: a float64 array for each float array, a
    Python float for each float, and ``None`` for the leaves that are not floats (ints, strings,
    integer arrays…), as ``knetc.grad`` returns them.
    """
    tree.auto_register(args)      # NamedTuple and dataclass parameters are walked as nodes
    base = _to_float64(args)

    def numeric(path: Path, value: Any) -> Any:
        if not _is_float_leaf(value):
            return None
        shape = np.shape(value)
        if not shape:
            return _numeric_entry(f, base, argnum, path, (), eps)
        out = np.empty(shape, dtype=np.float64)
        for index in np.ndindex(*shape):
            out[index] = _numeric_entry(f, base, argnum, path, index, eps)
        return out

    pairs, treedef = tree.flatten_with_paths(args[argnum])
    return tree.unflatten(treedef, [numeric(path, value) for path, value in pairs])


# -- helpers ------------------------------------------------------------------------------------

def _is_float_leaf(value: Any) -> bool:
    if type(value) is float:
        return True
    return isinstance(value, (np.ndarray, np.generic)) and np.issubdtype(value.dtype, np.floating)


def _leaf_paths(value: Any) -> list:
    """Paths to the float leaves of ``value`` (the leaves knetc differentiates), in order."""
    return [path for path, leaf in tree.paths(value) if _is_float_leaf(leaf)]


def _leaf_to_float64(value: Any) -> Any:
    if isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.floating):
        return value.astype(np.float64, copy=True)
    if isinstance(value, np.generic) and np.issubdtype(value.dtype, np.floating):
        return np.float64(value)
    return value


def _to_float64(value: Any) -> Any:
    """A copy of ``value`` whose float arrays and NumPy float scalars are float64 (copied)."""
    return tree.map(_leaf_to_float64, value)


def _call(f: Callable[..., Any], args: tuple) -> float:
    out = np.asarray(f(*args), dtype=np.float64)
    if out.size != 1:
        raise ValueError(f"gradcheck: {_fname(f)} returned shape {out.shape}, not a scalar loss")
    return float(out.reshape(()))


def _numeric_entry(f, base: tuple, argnum: int, path: Path, index: tuple, eps: float) -> float:
    """(f(x + eps e) - f(x - eps e)) / 2 eps for the entry ``index`` of the leaf at ``path``."""
    leaf = tree.get(base[argnum], path)
    if isinstance(leaf, np.ndarray):
        x0 = leaf[index]
        try:
            leaf[index] = x0 + eps
            hi = _call(f, base)
            leaf[index] = x0 - eps
            lo = _call(f, base)
        finally:
            leaf[index] = x0
    else:  # an immutable scalar: rebuild the argument around the perturbed value
        make = type(leaf) if isinstance(leaf, np.generic) else float
        def at(v):
            args = list(base)
            args[argnum] = tree.replace(base[argnum], path, make(v))
            return _call(f, tuple(args))
        hi, lo = at(float(leaf) + eps), at(float(leaf) - eps)
    return (hi - lo) / (2 * eps)


def _analytic_leaf(g: Any, path: Path, where: str) -> Any:
    """The analytic gradient's leaf at ``path``, checking the structure on the way down."""
    for depth, key in enumerate(path):
        if g is None:  # a whole sub-structure without gradient
            return None
        ok = (type(g) is dict and key in g) or (type(g) in (list, tuple) and isinstance(key, int)
                                                and key < len(g))
        if not ok:
            raise AssertionError(f"gradcheck: the gradient has no entry "
                                 f"{_path_str(path[:depth + 1])} (parameter {where}); "
                                 f"got a {type(g).__name__}")
        g = g[key]
    if type(g) in (list, tuple, dict):
        raise AssertionError(f"gradcheck: the gradient for {where} is a {type(g).__name__}, "
                             "the parameter is an array or float")
    return g


def _path_str(path: Path) -> str:
    return "".join(f"[{k!r}]" for k in path)


def _param_name(f: Callable[..., Any], argnum: int) -> str:
    try:
        import inspect
        params = list(inspect.signature(f).parameters)
        if argnum < len(params):
            return params[argnum]
    except (TypeError, ValueError):
        pass
    return f"args[{argnum}]"


def _fname(f: Callable[..., Any]) -> str:
    return getattr(f, "__qualname__", None) or getattr(f, "__name__", None) or repr(f)
