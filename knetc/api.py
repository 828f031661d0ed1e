"""The public entry points: grad, gradloss, show."""
from __future__ import annotations

import contextlib
import functools
import inspect
import threading
import weakref
from typing import Callable, Iterator

from . import errors, settings
from .compiler.cache import CacheInfo, SpecCache
from .compiler.codegen import compile_function
from .compiler.pipeline import Entry, can_run_traced, compile_trace, run_traced, trace
from .compiler.specialize import Inlinable
from .runtime import prims

_CACHES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()
MAX_ENTRIES = 512   # specializations kept per function: dynamic structures (trees) are unbounded
MAX_BRANCHES = 16   # guarded variants kept per argument key (branches, data-dependent shapes)
# Tier 0 (knetc/compiler/pipeline.py): once a function has missed the cache this many times and misses
# outnumber hits (a new structure every call, like a parse tree per sentence), a new
# specialization first runs uncompiled; it is compiled when its key comes back. KNETC_TIER0=0
# (or ``knetc show``) compiles every specialization (knetc.settings).
TIER0_AFTER = 2


def _shared_cache(fun, argnum: int, with_loss: bool) -> SpecCache:
    """One cache per (function, argnum, with_loss), shared by every grad(fun) made for it, so
    ``knetc.grad(loss)(w, x, y)`` written inside a training loop compiles once, like a stored grad.

    Keyed by the function object (not only its code): closures of one def differ in their cells.
    """
    if isinstance(fun, Grad):
        return SpecCache()
    try:
        per_fun = _CACHES.get(fun)
        if per_fun is None:
            per_fun = _CACHES[fun] = {}
    except TypeError:   # not weak-referenceable: a cache of its own
        return SpecCache()
    cache = per_fun.get((argnum, with_loss))
    if cache is None:
        cache = per_fun[(argnum, with_loss)] = SpecCache()
    return cache


# Listeners told of every compiled entry, while a recording() block runs (nothing is kept
# otherwise: an entry lives exactly as long as its cache holds it).
_listeners: list[Callable[[Entry], None]] = []


@contextlib.contextmanager
def recording() -> Iterator[list[Entry]]:
    """Collect every adjoint compiled inside the block (``knetc show`` uses it).

    Tier 0 is off meanwhile: every specialization is compiled, so every one can be shown."""
    entries: list[Entry] = []
    _listeners.append(entries.append)
    try:
        with settings.override(tier0=False):
            yield entries
    finally:
        _listeners.remove(entries.append)


class Grad(Inlinable):
    """``grad(f)``: a callable returning the gradient of ``f`` wrt argument ``argnum``.

    Each call is specialized to its arguments' structure, shapes and dtypes (and the Python values
    that steer the code); the generated adjoint is compiled once and cached. (A function whose
    calls keep missing the cache runs a new specialization at tier 0 first: see ``TIER0_AFTER``.)
    ``grad(f)`` keeps ``f`` callable as ``.fun``; ``.source(*args)`` returns the generated code.
    """

    def __init__(self, fun: Callable, argnum: int = 0, with_loss: bool = False):
        if not callable(fun):
            raise TypeError(f"knetc.grad expects a function, got {type(fun).__name__}")
        self.fun, self.argnum, self.with_loss = fun, argnum, with_loss
        functools.update_wrapper(self, fun, updated=())  # keep our own __dict__
        if isinstance(fun, Grad):
            self._sig = fun._sig
        else:
            self._sig = inspect.signature(fun)
        params = self._sig.parameters
        self._params = list(params)
        self._kinds = [p.kind for p in params.values()]
        self._npos = sum(1 for k in self._kinds if k in (inspect.Parameter.POSITIONAL_ONLY,
                                                         inspect.Parameter.POSITIONAL_OR_KEYWORD))
        self._simple = self._npos == len(self._kinds)
        if argnum >= len(self._params):
            raise TypeError(f"knetc.grad: argnum={argnum} but {fun.__name__} takes "
                            f"{len(self._params)} arguments")
        self._cache = _shared_cache(fun, argnum, with_loss)
        self._lock = _LOCK

    def _bind(self, args, kwargs) -> tuple:
        if not kwargs and self._simple and len(args) == self._npos:
            return args
        b = self._sig.bind(*args, **kwargs)
        b.apply_defaults()
        return tuple(b.arguments[p] for p in self._params)

    def __call__(self, *args, **kwargs):
        if kwargs or not self._simple or len(args) != self._npos:
            args = self._bind(args, kwargs)
        key = self._cache.key(args)
        entries = self._cache.get(key)
        if entries is not None:
            for entry in entries:
                try:
                    result = entry.run(*args)
                except errors.GuardFailed:
                    continue
                self._cache.hits += 1
                return result if self.with_loss else result[0]
        result = self._miss(args, key, new_key=entries is None)
        return result if self.with_loss else result[0]

    def _miss(self, bound: tuple, key, new_key: bool) -> tuple:
        """Specialize for a call no cached entry fits, and run it: ``(gradient, loss)``.

        A key never seen may run at tier 0; a known key whose guards all failed (another branch)
        is compiled, as branches of one structure tend to recur."""
        cache = self._cache
        cache.misses += 1    # counts are statistics: a race between threads may lose one
        tier0 = new_key and cache.misses > TIER0_AFTER and cache.hits < cache.misses \
            and settings.enabled("tier0")
        if tier0:
            with self._lock:
                tier0 = not cache.seen_once(key)
        if tier0 and not isinstance(self.fun, Grad):
            with prims.training_mode(True):
                tr = trace(self.fun, self._params, self._kinds, bound, self.argnum)
                if can_run_traced(tr):
                    cache.tier0 += 1
                    return run_traced(tr)
            return self._specialize_bound(bound, key=key, traced=tr).run(*bound)
        return self._specialize_bound(bound, key=key).run(*bound)

    def specialize(self, args, kwargs=None, *, pure: bool = False) -> Entry:
        """Compile the adjoint for these arguments (as a call would pass them). ``pure`` avoids
        in-place updates so the generated code can itself be differentiated (grad of grad)."""
        return self._specialize_bound(self._bind(tuple(args), kwargs or {}), pure=pure)

    def _specialize_bound(self, bound: tuple, *, pure: bool = False, key=None, traced=None) -> Entry:
        """Compile for arguments already bound to the parameters (one value per parameter);
        ``traced``: their trace, when it was already made."""
        if traced is None:
            fun = self.fun
            if isinstance(fun, Grad):
                fun = _grad_as_function(fun, bound)
            with prims.training_mode(True):
                traced = trace(fun, self._params, self._kinds, bound, self.argnum, pure=pure)
        entry = compile_trace(traced)
        if pure:
            _log(entry)
        else:
            self._store(self._cache.key(bound) if key is None else key, entry)
        return entry

    def _store(self, key, entry: Entry) -> None:
        with self._lock:
            entries = self._cache.setdefault(key, [])
            entries.insert(0, entry)
            del entries[MAX_BRANCHES:]   # guarded variants of one key: keep the recent ones
            while len(self._cache) > MAX_ENTRIES:   # drop the oldest specialization
                del self._cache[next(iter(self._cache))]
        _log(entry)

    def source(self, *args, **kwargs) -> str:
        """The generated adjoint source for these arguments (compiling it if not cached yet;
        of several cached branches, the most recent)."""
        bound = self._bind(args, kwargs)
        entries = self._cache.get(self._cache.key(bound))
        return entries[0].source if entries else self._specialize_bound(bound).source

    def __repr__(self):
        return f"<knetc.grad of {getattr(self.fun, '__qualname__', self.fun)} wrt argument {self.argnum}>"


def _log(entry: Entry) -> None:
    for listener in list(_listeners):
        listener(entry)


def _grad_as_function(g: Grad, bound):
    """grad(grad(f)): the inner gradient's generated code, pure, as the function to differentiate."""
    if g.with_loss:
        raise errors.KnetcError("knetc: grad(gradloss(f)) is not supported; use grad(grad(f))")
    # The inner code returns (gradient, loss); the outer function is the gradient alone.
    return _first(g._specialize_bound(bound, pure=True).fn)


def _first(inner):
    """A function with source that returns inner(...)[0] (specialized like any user function)."""
    ns = {"_inner": inner}
    params = list(inspect.signature(inner).parameters)
    src = f"def gradient({', '.join(params)}):\n    return _inner({', '.join(params)})[0]\n"
    return compile_function(src, "gradient", ns)


def grad(fun: Callable | None = None, argnum: int = 0) -> Grad:
    """The gradient of scalar function ``fun`` wrt its argument ``argnum`` (also a decorator).

    >>> dw = knetc.grad(loss)(w, x, y)     # same structure as w
    """
    if fun is None:
        return lambda f: Grad(f, argnum)
    return Grad(fun, argnum)


def gradloss(fun: Callable, argnum: int = 0) -> Grad:
    """Like grad, but returns ``(gradient, loss)`` from one pass."""
    return Grad(fun, argnum, with_loss=True)


def show(fun: Callable, *args, argnum: int = 0, **kwargs) -> str:
    """The generated adjoint source of ``fun`` for these arguments."""
    g = fun if isinstance(fun, Grad) else Grad(fun, argnum)
    return g.source(*args, **kwargs)


def cache_info(fun: Callable, argnum: int = 0, with_loss: bool = False) -> CacheInfo:
    """Hits, misses, compiled entries and uncompiled (tier 0) runs of ``grad(fun, argnum)``
    (``with_loss=True``: of ``gradloss``; a ``Grad`` or ``@differentiable`` function: its own).

    Many misses mean the arguments' shapes, structure or steering values keep changing."""
    if isinstance(fun, Differentiable):
        return fun._g._cache.info()
    if isinstance(fun, Grad):
        return fun._cache.info()
    return _shared_cache(fun, argnum, with_loss).info()


class Differentiable:
    """``@knetc.differentiable``: the function stays callable and gains ``.grad``, ``.gradloss``
    and ``.source``, sharing one cache (gradient and loss come from the same generated code).

    >>> @knetc.differentiable
    ... def loss(w, x, y): ...
    >>> loss(w, x, y); loss.grad(w, x, y); loss.gradloss(w, x, y); print(loss.source(w, x, y))
    """

    def __init__(self, fun: Callable, argnum: int = 0):
        self.fun = fun
        self._g = Grad(fun, argnum, with_loss=True)
        functools.update_wrapper(self, fun, updated=())

    def __call__(self, *args, **kwargs):
        return self.fun(*args, **kwargs)

    def grad(self, *args, **kwargs):
        """The gradient wrt argument ``argnum`` (same structure as that argument)."""
        return self._g(*args, **kwargs)[0]

    def gradloss(self, *args, **kwargs):
        """``(gradient, loss)`` from one pass."""
        return self._g(*args, **kwargs)

    def source(self, *args, **kwargs) -> str:
        """The generated adjoint for these arguments."""
        return self._g.source(*args, **kwargs)


def differentiable(fun: Callable | None = None, argnum: int = 0):
    """Decorator keeping ``fun`` callable while exposing ``.grad``, ``.gradloss`` and ``.source``."""
    if fun is None:
        return lambda f: Differentiable(f, argnum)
    return Differentiable(fun, argnum)
