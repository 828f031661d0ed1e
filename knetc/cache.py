"""Cache keys: the structure, shapes, dtypes and steering Python values of a call's arguments."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

_ndarray = np.ndarray


def spec_of(v):
    """A hashable description of a value, equal for calls that share one specialization.

    Arrays contribute type, shape and dtype (never their values); Python floats only their type
    (they are symbolic); ints, strings, bools and other hashable objects their value (they may
    steer loops and branches); other objects their identity.
    """
    t = type(v)
    if t is _ndarray:
        return v.shape, v.dtype
    if t is list:
        return list, *map(spec_of, v)
    if t is tuple:
        return tuple, *map(spec_of, v)
    if t is float:
        return float
    if t is dict:
        return dict, *[(k, spec_of(x)) for k, x in v.items()]
    if t is int or t is str or t is bool or v is None:
        return (t, v)
    if hasattr(v, "__cuda_array_interface__") or isinstance(v, np.generic):
        return (t, v.shape, v.dtype)
    try:
        hash(v)
        return (t, v)
    except TypeError:
        return (t, id(v))


class CacheInfo(NamedTuple):
    """``knetc.cache_info(f)``: calls that reused compiled code (hits), calls that specialized
    anew (misses), compiled specializations held (entries), and misses run uncompiled (tier0)."""
    hits: int
    misses: int
    entries: int
    tier0: int


class SpecCache(dict):
    """The compiled specializations of one function: key (``spec_of`` the arguments) -> entries.

    It also counts hits and misses, and remembers keys that ran once uncompiled (tier 0), so
    that a key coming back is compiled."""

    def __init__(self):
        super().__init__()
        self.hits = 0
        self.misses = 0
        self.tier0 = 0
        self._once: dict = {}

    def info(self) -> CacheInfo:
        return CacheInfo(self.hits, self.misses, sum(len(v) for v in self.values()), self.tier0)

    def seen_once(self, key) -> bool:
        """Was ``key`` run at tier 0 before? (Records it if not; bounded, oldest dropped.)"""
        if key in self._once:
            del self._once[key]
            return True
        self._once[key] = None
        if len(self._once) > 4096:
            del self._once[next(iter(self._once))]
        return False
