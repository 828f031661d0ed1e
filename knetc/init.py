"""Parameter initializers after Knet.jl: ``xavier``, ``gaussian``, ``bilinear``, ``param(0)``.

Shapes follow knetc's convention, Knet's shapes reversed: a dense weight used as ``x @ w`` with
``x`` of shape (N, fanin) is ``(fanin, fanout)``; a conv weight is ``(out, in, kh, kw)``.

As in Knet, an element type may come FIRST: ``xavier(np.float64, 3, 4)``,
``gaussian(np.float16, 10)``, ``param(np.float64, 3, 4)``, ``param0(np.float64, 5)`` (Knet's
``xavier(Float64, 4, 3)`` etc., dims reversed); a NumPy scalar type, a ``np.dtype``, Python
``float`` or a dtype string such as ``"float64"``.  It may instead be given as ``dtype=`` (not
both).  Without either, arrays are float32.  Integer positional arguments are always dimensions,
and the dimensions may also be given as one tuple: ``xavier(np.float32, (20, 1, 5, 5))``.

Every initializer draws from one module-level ``numpy.random.Generator``; ``seed(n)`` resets it
(``knetc.data.minibatch`` and ``knetc.rnninit`` draw from it too), and ``rng=`` overrides it per
call.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

__all__ = ["seed", "default_rng", "xavier", "xavier_uniform", "xavier_normal", "gaussian",
           "bilinear", "param", "param0"]

_rng: np.random.Generator = np.random.default_rng()


def seed(n: int | None) -> None:
    """Seed knetc's default random generator (used by all initializers, ``rnninit`` and
    minibatch shuffling)."""
    global _rng
    _rng = np.random.default_rng(n)


def default_rng() -> np.random.Generator:
    """knetc's current default random generator."""
    return _rng


def _is_eltype(a: Any) -> bool:
    """Whether ``a`` names an element type (``np.float32``, ``np.dtype(...)``, ``float``, "f4")."""
    return isinstance(a, (type, np.dtype, str))


def _split(name: str, dims: tuple, dtype: Any, default: Any = np.float32,
           floating: bool = True) -> tuple[np.dtype, tuple[Any, ...]]:
    """Knet's optional leading element type: ``(dtype, remaining dims)``."""
    if dims and _is_eltype(dims[0]):
        if dtype is not None:
            raise TypeError(f"{name}: the element type is given twice, as the first argument "
                            f"({dims[0]!r}) and as dtype={dtype!r}")
        dtype, dims = dims[0], dims[1:]
    try:
        dt = np.dtype(default if dtype is None else dtype)
    except TypeError as e:
        raise TypeError(f"{name}: {dtype!r} is not an element type") from e
    if floating and not np.issubdtype(dt, np.floating):
        raise TypeError(f"{name}: random weights need a floating-point element type, got {dt}")
    return dt, dims


def _dims(dims: tuple) -> tuple[int, ...]:
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = tuple(dims[0])
    for d in dims:
        if _is_eltype(d):
            raise TypeError(f"the element type {d!r} must be the first argument")
    return tuple(int(d) for d in dims)


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fanin, fanout) with knetc's reversed shapes (Knet's rule, mirrored)."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:          # a bias vector: fanin = length, fanout = 1 (as Knet)
        return shape[0], 1
    if len(shape) == 2:          # (fanin, fanout), used as x @ w
        return shape[0], shape[1]
    size = int(np.prod(shape))   # conv (out, in, kh, kw): fanin = in*kh*kw, fanout = out*kh*kw
    return size // max(shape[0], 1), size // max(shape[1], 1)


def _uniform(shape, dt, rng) -> np.ndarray:
    if dt in (np.float32, np.float64):
        return rng.random(shape, dtype=dt)
    return rng.random(shape).astype(dt)


def _normal(shape, dt, rng) -> np.ndarray:
    if dt in (np.float32, np.float64):
        return rng.standard_normal(shape, dtype=dt)
    return rng.standard_normal(shape).astype(dt)


def xavier_uniform(*dims: Any, dtype: Any = None, gain: float = 1.0,
                   rng: np.random.Generator | None = None) -> np.ndarray:
    """Uniform weights in ``± gain*sqrt(6/(fanin+fanout))``, Knet's ``xavier`` (Glorot 2010).

    ``xavier([eltype,] dims...)``: an optional element type first, as in Knet (or ``dtype=``;
    default float32).  With knetc's reversed shapes: 1-D ``(n,)``: fanin=n, fanout=1; 2-D
    ``(fanin, fanout)``; >2-D conv ``(out, in, kh, kw)``: fanin = in*kh*kw, fanout = out*kh*kw
    (Knet's rule for its ``(kw, kh, in, out)`` weights).  ``dims`` may also be given as one tuple.
    """
    dt, dims = _split("xavier", dims, dtype)
    shape = _dims(dims)
    fanin, fanout = _fans(shape)
    s = gain * np.sqrt(6.0 / (fanin + fanout))
    w = _uniform(shape, dt, rng or _rng)
    w *= 2 * s
    w -= s
    return w


xavier = xavier_uniform


def xavier_normal(*dims: Any, dtype: Any = None, gain: float = 1.0,
                  rng: np.random.Generator | None = None) -> np.ndarray:
    """Normal weights with mean 0 and std ``gain*sqrt(2/(fanin+fanout))``; fans as in ``xavier``.

    ``xavier_normal([eltype,] dims...)``, like ``xavier``."""
    dt, dims = _split("xavier_normal", dims, dtype)
    shape = _dims(dims)
    fanin, fanout = _fans(shape)
    w = _normal(shape, dt, rng or _rng)
    w *= gain * np.sqrt(2.0 / (fanin + fanout))
    return w


def gaussian(*dims: Any, mean: float = 0.0, std: float = 0.01, dtype: Any = None,
             rng: np.random.Generator | None = None) -> np.ndarray:
    """Normal random array with the given mean and standard deviation (Knet's ``gaussian``).

    ``gaussian([eltype,] dims...; mean=0, std=0.01)``: an optional element type first, as in
    Knet (or ``dtype=``; default float32)."""
    dt, dims = _split("gaussian", dims, dtype)
    w = _normal(_dims(dims), dt, rng or _rng)
    w *= std
    w += mean
    return w


def bilinear(dtype: Any, out: int, inp: int, fh: int, fw: int) -> np.ndarray:
    """Bilinear-upsampling kernel for initializing a deconvolution (Knet's ``bilinear``).

    Knet's ``bilinear(T, fw, fh, IN, ON)`` with the arguments reversed like our shapes (the
    element type stays first and is required, as in Knet): ``out`` and ``inp`` channel counts
    (must be equal) and the upscale factors ``fh``, ``fw`` (must be equal, ``f``).  Returns an
    ``(out, inp, k, k)`` array, ``k = 2f - f % 2``, holding the 2-D bilinear kernel on the
    diagonal channel pairs ``[i, i]`` and zeros elsewhere.
    """
    if fh != fw:
        raise ValueError(f"bilinear: the filter must be square, got fh={fh}, fw={fw}")
    if out != inp:
        raise ValueError(f"bilinear: channel counts must be equal, got out={out}, inp={inp}")
    f = int(fh)
    k = 2 * f - f % 2
    center = f - 1 if k % 2 == 1 else f - 0.5
    r = 1 - np.abs(np.arange(k) - center) / f
    w = np.zeros((out, inp, k, k), dtype=dtype)
    idx = np.arange(out)
    w[idx, idx] = np.outer(r, r).astype(dtype)
    return w


def _default_atype(a: Any) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


def param(*dims: Any, init: Callable[..., Any] = xavier,
          atype: Callable[[Any], Any] | None = None, dtype: Any = None) -> Any:
    """A parameter array, like Knet's ``param``.

    ``param(d1, d2, ...)`` returns ``atype(init(d1, d2, ...))``; ``param(array)`` returns
    ``atype(array)``.  ``atype`` turns the array into the wanted array type (e.g.
    ``cupy.asarray``); the default makes a NumPy float32 array.

    ``param(eltype, d1, d2, ...)`` (or ``dtype=eltype``) calls ``init(eltype, d1, d2, ...)``, the
    element type first as Knet does (so ``init`` must accept it, as knetc's initializers do), and
    the default ``atype`` then keeps that element type.  (Knet's default ``atype`` would convert
    to ``Array{Float32}`` again; knetc honours the type you asked for.)  knetc has no ``Param``
    wrapper: parameters are plain arrays.
    """
    if len(dims) == 1 and hasattr(dims[0], "shape"):
        if dtype is not None:
            return (atype or (lambda a: np.asarray(a, dtype=dtype)))(dims[0])
        return (atype or _default_atype)(dims[0])
    if (dims and _is_eltype(dims[0])) or dtype is not None:
        dt, dims = _split("param", dims, dtype, floating=False)
        return (atype or (lambda a: np.asarray(a, dtype=dt)))(init(dt.type, *dims))
    return (atype or _default_atype)(init(*dims))


def _zeros(*dims: Any) -> np.ndarray:
    dt, dims = _split("param0", dims, None, floating=False)
    return np.zeros(_dims(dims), dtype=dt)


def param0(*dims: Any, atype: Callable[[Any], Any] | None = None, dtype: Any = None) -> Any:
    """A zero-filled parameter array, like Knet's ``param0`` (``param(dims...; init=zeros)``);
    ``param0(eltype, dims...)`` or ``dtype=`` for another element type than float32."""
    return param(*dims, init=_zeros, atype=atype, dtype=dtype)
