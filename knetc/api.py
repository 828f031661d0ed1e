"""The public entry points: grad, gradloss, show."""
from __future__ import annotations

import contextlib
import functools
import gc
import inspect
import threading
import time
import weakref
from typing import Callable, Iterator

import numpy as np

from . import errors, settings
from .compiler.cache import CacheInfo, SpecCache
from .compiler.codegen import compile_function
from .compiler.parse import provide_source, watched, watching
from .compiler.pipeline import Entry, can_run_traced, compile_trace, describe, run_traced, trace
from .compiler import units
from .compiler.specialize import Closure, Inlinable
from .runtime import prims

_CACHES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()
MAX_ENTRIES = 512   # specializations kept per function: dynamic structures (trees) are unbounded
MAX_BRANCHES = 16   # guarded variants kept per argument key (branches, data-dependent shapes)
# Tier 0 (knetc/compiler/pipeline.py): once a function has missed the cache this many times and misses
# outnumber hits (a new structure every call, like a parse tree per sentence), a new
# specialization first runs uncompiled; it is compiled when its key comes back. KNETC_TIER0=0
# (or ``knetc show``) compiles every specialization (knetc.settings). 1: the first call compiles
# (a model of fixed shapes goes straight to its hits); a second key before any hit is taken as a
# dynamic structure (measured 2026-11-30 against 2: the DyNet treenn's 2nd and 3rd trees 36 → 13
# ms, traced with units; the tagger's first new sentence length 9-10 → 7 ms). The first call is
# traced with units, though: if it made and used some (helpers called again alike: a tree's
# nodes, an unrolled loop's steps), it runs at tier 0 with them, and its key, back at once as
# the second call (fixed shapes), is compiled written out whole (measured 2026-11-30 on the DyNet
# treenn: its first step after the first call 42 → 33-36 ms, torch 34-58; the first call, which
# now compiles the unit backwards, 60-66 ms either way).
TIER0_AFTER = 1
# A specialization whose trace (this call's forward pass, run while specializing) took this long
# runs at tier 0 even before that: its first call then costs one forward pass, not two (and
# compiles when its key comes back).
SLOW_TRACE = 0.1
# So does one whose forward pass computed this many bytes (counted, not timed, so that the
# choice does not depend on the machine's load): running that forward again in compiled code
# costs more than the trace's own overhead that compiling at once would save on a second call
# (measured 2026-11-30: the DyNet rnnlm's first gradient, 30 MB of values, traced in 50-100
# ms: compiled and run 257 ms, at tier 0 177 ms; torch 188).
HEAVY_TRACE = 1 << 23
# An entry compiled with units (a structure that came back while its function's calls mostly
# missed) is compiled again written out whole once it has been hit this many times: its units'
# backwards run their helpers' forward again, which code reused this often should not pay (a
# model of fixed shapes whose first keys alternated, or a tree seen in epoch after epoch). The
# count is where that pays off if an entry is hit as often again as it was: a 40-node tree's
# hits cost 9.5 ms with units and 7.4 ms written out (measured 2026-11-30), and writing it out
# costs 125 ms, the saving of about 60 hits (the ratio is about the same for any helper: both
# grow with the number of operations the units stand for).
WRITE_OUT_AFTER = 64
# A first sighting whose trace recorded this many operations runs at tier 0 too: compiling the
# whole function costs about as much as specializing it again (a parse tree of 60 nodes: 1300
# operations, 25 ms of compile() and a second forward pass), which a structure that never comes
# back never repays; one that does comes back compiled on its second call.
BIG_TRACE = 1000


def _shared_cache(fun, argnum, with_loss: bool, has_aux: bool = False,
                  training: bool = True, fuse: bool = True, capture: bool = False,
                  sparse: bool = False) -> SpecCache:
    """One cache per (function, argnums, with_loss, has_aux), shared by every grad(fun) made for it, so
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
    key = (argnum, with_loss) if not has_aux and training and fuse and not capture and \
        not sparse else (argnum, with_loss, has_aux, training, fuse, capture, sparse)
    cache = per_fun.get(key)
    if cache is None:
        cache = per_fun[key] = SpecCache()
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


_NO_HIT = object()


def _lookup(cache, args) -> tuple:
    """``(key, entries, result)`` of ``args`` in ``cache``: the result of the first entry whose
    guards hold for them (a hit), or _NO_HIT."""
    key = cache.key(args)
    entries = cache.get(key)
    return key, entries, _NO_HIT if entries is None else _run_entries(cache, entries, args)


def _run_entries(cache, entries, args):
    """The result of the first cached entry whose guards hold for ``args`` (a hit), or _NO_HIT."""
    for entry in entries:
        try:
            result = entry.run(*args)
        except errors.GuardFailed:
            continue
        cache.hits += 1
        entry.used = True       # (the eviction gives it a second chance: Grad._evict)
        return result
    return _NO_HIT


class Grad(Inlinable):
    """``grad(f)``: a callable returning the gradient of ``f`` wrt argument ``argnum``.

    Each call is specialized to its arguments' structure, shapes and dtypes (and the Python values
    that steer the code); the generated adjoint is compiled once and cached. (A function whose
    calls keep missing the cache runs a new specialization at tier 0 first: see ``TIER0_AFTER``.)
    ``grad(f)`` keeps ``f`` callable as ``.fun``; ``.source(*args)`` returns the generated code.
    """

    def __init__(self, fun: Callable, argnums=0, with_loss: bool = False, *, has_aux: bool = False,
                 order: str = "grad", source: str | None = None, sparse: bool = False):
        if isinstance(fun, Closure):   # a def or lambda made inside a differentiated function
            fun = fun.as_function()
        if not callable(fun):
            raise TypeError(f"knetc.grad expects a function, got {type(fun).__name__}")
        self.fun, self.with_loss, self.has_aux = fun, with_loss or order != "grad", has_aux
        self.sparse = bool(sparse)
        self.order = "gradloss" if with_loss and order == "grad" else order
        functools.update_wrapper(self, fun, updated=())  # keep our own __dict__
        if isinstance(fun, Grad):
            self._sig, self._target, self.prefix = fun._sig, fun, fun.prefix
            names = fun._params[:len(fun.prefix)]
        else:
            # A bound method, functools.partial or callable object is specialized as the Python
            # function under it; what it binds itself (self, a partial's positional arguments)
            # comes first, as parameters of their own (its keywords are defaults of its own).
            self._target, self.prefix = _specializable(fun)
            if source is not None:   # its text, where Python kept none (python -c, exec)
                provide_source(self._target, source)
            self._sig = _signature(fun)
            names = _prefix_names(self._target, len(self.prefix), self._sig)
        own = self._sig.parameters
        self._params = names + list(own)
        self._kinds = [inspect.Parameter.POSITIONAL_ONLY] * len(names) + [p.kind for p in own.values()]
        self._npos = sum(1 for k in self._kinds if k in (inspect.Parameter.POSITIONAL_ONLY,
                                                         inspect.Parameter.POSITIONAL_OR_KEYWORD))
        self._simple = self._npos == len(self._kinds) and not self.prefix
        # argnums count the callable's own parameters
        own_argnums = _check_argnums(argnums, list(own), fun)
        self.several = type(own_argnums) is tuple
        self.argnums = tuple(len(names) + i for i in (own_argnums if self.several else (own_argnums,)))
        self.argnum = self.argnums[0]
        self._wrt = self.argnums if self.several else self.argnum
        self._cache_of = fun if self._target is fun else self._target
        self._train_cache = _shared_cache(self._cache_of, self._wrt, self.with_loss, has_aux,
                                          sparse=self.sparse)
        self._variant_caches: dict = {}
        self._lock = _LOCK

    def _bind(self, args, kwargs) -> tuple:
        """One value per parameter of the function specialized: what the callable binds itself
        (``prefix``), then the call's arguments bound to its own parameters (defaults filled in)."""
        prefix = self.prefix
        if not kwargs and len(args) + len(prefix) == self._npos == len(self._kinds):
            return prefix + tuple(args) if prefix else args
        b = self._sig.bind(*args, **kwargs)
        b.apply_defaults()
        return prefix + tuple(b.arguments[p] for p in self._params[len(prefix):])

    @property
    def _cache(self) -> SpecCache:
        """The cache of this mode: gradients train (Knet's rule) unless the user asked for
        ``training_mode(False)`` (eval-mode gradients: another specialization, cached apart);
        code generated with GPU kernel fusion switched off (``settings.override(fuse=False)``)
        is cached apart too, and so is code written for CUDA-graph capture
        (``settings.override(capture=True)``, knetc.graph_step), so a switch never meets code
        generated under the other setting."""
        training = prims.training_requested() is not False
        fuse = settings.enabled("fuse")
        capture = settings.enabled("capture")
        if training and fuse and not capture:
            return self._train_cache
        variant = (training, fuse, capture)
        cache = self._variant_caches.get(variant)
        if cache is None:
            cache = self._variant_caches[variant] = _shared_cache(
                self._cache_of, self._wrt, self.with_loss, self.has_aux, training, fuse, capture,
                self.sparse)
        return cache

    def __call__(self, *args, **kwargs):
        if kwargs or not self._simple or len(args) != self._npos:
            args = self._bind(args, kwargs)
        # Code generated for NumPy arrays is the same whatever the GPU-only switches (fuse,
        # capture) say, so while the training cache holds only such code a hit there needs no
        # look at them (reading them from the environment costs more than a tiny step's
        # arithmetic); a miss, eval mode, an override block or GPU code takes the cache the
        # switches select (its hits are counted there).
        cache = self._train_cache
        if cache.device_code or prims.training_requested() is False or \
                settings.overridden("fuse", "capture"):
            cache = self._cache
        if cache.watch and not cache.fresh():   # a __code__ replaced in place (IPython's autoreload)
            self._revalidate()
        key, entries, result = _lookup(cache, args)
        if result is not _NO_HIT:
            return self.finish(result)
        selected = self._cache
        if selected is not cache:       # a switch selects another variant: look there
            key, entries, result = _lookup(selected, args)
            if result is not _NO_HIT:
                return self.finish(result)
        return self.finish(self._specialize_call(args, key, new_key=entries is None))

    def finish(self, result):
        """What the user gets from the generated code's ``(gradient, loss[, aux])``: the
        gradient (``grad``), ``(gradient, loss)`` (``gradloss``) or ``(loss, gradient)``
        (``value_and_grad``); with ``has_aux``, aux beside the loss as JAX places it."""
        order = self.order
        if self.has_aux:
            g, loss, aux = result
            if order == "grad":
                return g, aux
            return (g, loss, aux) if order == "gradloss" else ((loss, aux), g)
        if order == "grad":
            return result[0]
        return result if order == "gradloss" else (result[1], result[0])

    def _revalidate(self) -> None:
        """Drop every cached entry if a function they were made from now runs other code."""
        with self._lock:
            self._cache.revalidate()

    def _specialize_call(self, bound: tuple, key, new_key: bool) -> tuple:
        """``_miss``, recording the code objects the new entry depends on (``_store``); a guard
        that fails on the very call it was made for becomes a KnetcError naming the user's code."""
        with watching(), _collection_paused():
            try:
                return self._miss(bound, key, new_key)
            except errors.GuardFailed as e:
                raise _guard_error(self.fun, e) from None

    def _miss(self, bound: tuple, key, new_key: bool) -> tuple:
        """Specialize for a call no cached entry fits, and run it: ``(gradient, loss)``.

        A key never seen may run at tier 0; a known key whose guards all failed (another branch)
        is compiled, as branches of one structure tend to recur. While misses outnumber hits
        (a new tree most calls), traces use units (compiler/units.py), compiled ones too: a
        tree that comes back compiles its own operations and a call per helper, not every
        helper's operations again (measured 2026-11-30 on the DyNet treenn: a 40-node tree's
        compile 125 → 32 ms, its hits 7.4 → 9.5 ms; a 200-tree set's second epoch 57 → 17 ms
        a tree, torch 18)."""
        cache = self._cache
        cache.misses += 1    # counts are statistics: a race between threads may lose one
        if not settings.enabled("tier0") or isinstance(self.fun, Grad):
            return self._specialize_bound(bound, key=key).run(*bound)
        first = new_key
        if first:
            with self._lock:
                # a key that comes back is compiled, unless it came back from so far that
                # its entry would be evicted before its next return
                first = not cache.seen_once(key, MAX_ENTRIES)
        opening = cache.misses == 1      # the function's first call
        if opening:
            cache.opening = key
        dynamic = cache.misses > TIER0_AFTER and cache.hits < cache.misses
        if dynamic and cache.misses == 2 and key is not None and key == cache.opening:
            dynamic = False     # the first call's structure again at once: fixed shapes
        tier0 = first and dynamic
        with prims.training_mode(_training()):
            tr = self._trace(bound, units=dynamic or opening)
            if opening and tr.unit_calls:
                # The first call met helpers called again alike (a tree's nodes, an unrolled
                # loop's steps) and made them units: it runs at tier 0 with them, and is
                # compiled whole when its key comes back.
                if can_run_traced(tr):
                    tier0 = True
                else:
                    tr.tape.close()
                    tr = self._trace(bound, units=False)
            try:
                return self._run_trace(tr, bound, key, first, tier0)
            finally:
                tr.tape.close()

    def _trace(self, bound: tuple, units: bool):
        return trace(self._target, self._params, self._kinds, bound, self._wrt,
                     has_aux=self.has_aux, keyed_ints=self._cache.keyed_ints, units=units,
                     sparse=self.sparse, with_loss=self.with_loss)

    def _run_trace(self, tr, bound: tuple, key, first: bool, tier0: bool) -> tuple:
        """``_miss`` once traced: a first sighting runs at tier 0 when ``tier0`` said so, or its
        trace was big or its forward slow; otherwise the trace is compiled and the entry runs
        (after a slow trace, this call's gradient is taken from the trace all the same)."""
        if self._learn(tr):
            key = None
        # A trace whose forward pass was slow (a large model): this call's gradient comes from
        # the values it recorded, as at tier 0, whether or not the code is compiled now;
        # running that forward again in new code would cost it twice.
        slow = time.perf_counter() - tr.started >= SLOW_TRACE or \
            tr.recorded_bytes() >= HEAVY_TRACE
        big = len(tr.tape.ops) >= BIG_TRACE
        if first and (tier0 or slow or big) and can_run_traced(tr):
            self._cache.tier0 += 1
            return run_traced(tr)
        entry = self._specialize_bound(bound, key=key, traced=tr)
        if slow and can_run_traced(tr):
            return run_traced(tr)
        return entry.run(*bound)

    def specialize(self, args, kwargs=None, *, pure: bool = False) -> Entry:
        """Compile the adjoint for these arguments (as a call would pass them). ``pure`` avoids
        in-place updates so the generated code can itself be differentiated (grad of grad)."""
        bound = self._bind(tuple(args), kwargs or {})
        with watching():
            try:
                return self._specialize_bound(bound, pure=pure)
            except errors.GuardFailed as e:
                raise _guard_error(self.fun, e) from None

    def _specialize_bound(self, bound: tuple, *, pure: bool = False, key=None, traced=None) -> Entry:
        """Compile for arguments already bound to the parameters (one value per parameter);
        ``traced``: their trace, when it was already made."""
        if traced is None:
            fun = self._target
            if isinstance(fun, Grad):
                fun = _grad_as_function(fun, bound)
            with prims.training_mode(_training()):
                traced = trace(fun, self._params, self._kinds, bound, self._wrt, pure=pure,
                               has_aux=self.has_aux, keyed_ints=self._cache.keyed_ints,
                               sparse=self.sparse, with_loss=self.with_loss)
            if self._learn(traced):
                key = None
        entry = compile_trace(traced)
        if isinstance(self.fun, Grad):   # grad(grad(f)): zero, not None, where nothing depends
            entry.run = _zeros_for_none(entry.run, self.argnum)
        if pure:
            _log(entry)
        else:
            self._store(self._cache.key(bound) if key is None else key, entry)
        return entry

    def _learn(self, traced) -> bool:
        """Key from now on the ints of the arguments that steered this trace (True if the key
        changed: then a key computed before is stale)."""
        if not traced.tape.steered:
            return False
        with self._lock:
            return self._cache.learn(traced.tape.steered)

    def _store(self, key, entry: Entry) -> None:
        if entry.units:
            self._count_hits(key, entry)
        with self._lock:
            if entry.on_device:
                self._cache.device_code = True
            self._cache.depend(watched() or ())
            entries = self._cache.setdefault(key, [])
            # The same code again (``source`` re-specializes to find the branch these arguments
            # take): keep one copy, first.
            entries[:] = [e for e in entries if e.source != entry.source]
            entries.insert(0, entry)
            del entries[MAX_BRANCHES:]   # guarded variants of one key: keep the recent ones
            self._evict()
        _log(entry)

    def _count_hits(self, key, entry: Entry) -> None:
        """Make ``entry`` (compiled with units) count its hits: at WRITE_OUT_AFTER, the call's
        arguments are specialized again without units and that entry replaces it."""
        # (a weak reference: the shared cache must not keep its function alive; a Grad made
        # for one call, as in knetc.grad(f)(x) in a loop, is gone by then, and the entry stays)
        run, hits, owner = entry.run, [0], weakref.ref(self)

        def counted(*args):
            result = run(*args)     # (a guard that fails raises before anything is counted)
            hits[0] += 1
            if hits[0] == WRITE_OUT_AFTER:
                grad = owner()
                if grad is not None:
                    grad._write_out(args, key, entry)
            return result
        entry.run = counted

    def _write_out(self, bound: tuple, key, old: Entry) -> None:
        """Compile ``bound``'s specialization written out whole, in place of ``old``. This
        call's result is already made: if specializing fails, ``old`` stays."""
        with watching(), _collection_paused(), prims.training_mode(_training()):
            try:
                self._specialize_bound(bound, key=key)
            except (errors.KnetcError, errors.GuardFailed):
                return
        with self._lock:
            entries = self._cache.get(key)
            if entries and old in entries and len(entries) > 1:
                entries.remove(old)

    def _evict(self) -> None:
        """Keep at most MAX_ENTRIES keys: the oldest go first, but a key hit since it was last
        looked at here moves to the back instead (a second chance), so that code in use is kept
        while keys that came once, or twice and never again, are dropped."""
        cache = self._cache
        while len(cache) > MAX_ENTRIES:
            key = next(iter(cache))
            entries = cache.pop(key)
            if any(e.used for e in entries):
                for e in entries:
                    e.used = False
                cache[key] = entries

    def source(self, *args, **kwargs) -> str:
        """The generated adjoint source for these arguments: the code a call with them runs.

        A cached entry without guards is the only code for its key; when the key holds guarded
        variants (branches on values, value-dependent shapes), these arguments are specialized
        again to find theirs (as a miss would; the generated code is not run, so nothing is
        stored into the arguments)."""
        bound = self._bind(args, kwargs)
        cache = self._cache
        if not cache.fresh():
            self._revalidate()
        entries = cache.get(cache.key(bound))
        if entries and len(entries) == 1 and "_GuardFailed(" not in entries[0].source:
            return entries[0].source
        with watching():
            try:
                return self._specialize_bound(bound).source
            except errors.GuardFailed as e:
                raise _guard_error(self.fun, e) from None

    def __repr__(self):
        return f"<knetc.grad of {getattr(self.fun, '__qualname__', self.fun)} wrt argument {self.argnum}>"


def _training() -> bool:
    """The mode a gradient is taken in: training unless the user asked for training_mode(False)."""
    return prims.training_requested() is not False


def _specializable(fun) -> tuple:
    """``(function, prefix)``: the Python function with source under a callable, and what the
    callable binds before its own parameters: ``fun(*a, **k) == function(*prefix, *a, **k)``
    once ``a`` and ``k`` are bound to ``fun``'s signature (a partial's keywords are defaults
    there). Bound methods bind their ``self`` (its attributes are then read like globals: arrays
    when the code runs, other values guarded), a partial its positional arguments, a callable
    object itself, for its ``__call__``."""
    import types
    if isinstance(fun, types.FunctionType):
        return fun, ()
    if isinstance(fun, types.MethodType):
        f, prefix = _specializable(fun.__func__)
        return f, prefix + (fun.__self__,)
    if isinstance(fun, functools.partial):
        f, prefix = _specializable(fun.func)
        return f, prefix + tuple(fun.args)
    call = getattr(type(fun), "__call__", None)
    if not isinstance(fun, type) and isinstance(call, types.FunctionType):
        f, prefix = _specializable(call)
        return f, prefix + (fun,)
    raise errors.NoRuleError(
        f"knetc.grad: {getattr(fun, '__qualname__', None) or type(fun).__name__} is not a Python "
        "function with source (a function, lambda, bound method, functools.partial of one, or "
        "an object with a __call__ method)",
        hint="Wrap it in a function: knetc.grad(lambda w, *rest: f(w, *rest)), where f has a "
             "derivative rule (knetc.adjoint) or Python source.")


def _prefix_names(target, n: int, own: inspect.Signature) -> list:
    """Parameter names for the ``n`` values a callable binds itself: the target's own names for
    them (``self``) where they do not clash with the callable's parameters."""
    taken = set(own.parameters)
    try:
        names = [p.name for p in inspect.signature(target).parameters.values()
                 if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)][:n]
    except (TypeError, ValueError):
        names = []
    names += [f"bound_{i}" for i in range(len(names), n)]
    out = []
    for name in names:
        while name in taken:
            name += "_"
        taken.add(name)
        out.append(name)
    return out


def _signature(fun) -> inspect.Signature:
    try:
        return inspect.signature(fun)
    except (TypeError, ValueError) as e:
        raise errors.NoRuleError(f"knetc.grad: cannot read the parameters of {fun!r} ({e})",
                                 hint="Differentiate a Python function with source.") from None


def _log(entry: Entry) -> None:
    for listener in list(_listeners):
        listener(entry)


def _grad_as_function(g: Grad, bound):
    """grad(grad(f)): the inner gradient's generated code, pure, as the function to differentiate."""
    if g.with_loss or g.several or g.has_aux:
        filename, lineno = _user_code(g)
        raise errors.KnetcError(
            "knetc: grad of gradloss, value_and_grad, a tuple of argnums or has_aux is not supported",
            filename=filename, lineno=lineno,
            hint="Differentiate grad(f) with one int argnum: grad(grad(f, argnums=i), argnums=j).")
    x = bound[g.argnum]
    if not _is_scalar(x):
        name = getattr(_innermost(g), "__qualname__", "f")
        filename, lineno = _user_code(g)
        raise errors.LossError(
            f"knetc: grad(grad({name})) needs the gradient of {name} to be a scalar, but it has the "
            f"shape of the argument {g._params[g.argnum]!r} it is taken with respect to: "
            f"{describe(x)}", filename=filename, lineno=lineno,
            hint="Differentiate a scalar function of the gradient, e.g. "
                 f"knetc.grad(lambda x: np.sum(knetc.grad({name})(x))), or differentiate with "
                 "respect to a scalar argument (argnum=).")
    # The inner code returns (gradient, loss); the outer function is the gradient alone.
    return _first(g._specialize_bound(bound, pure=True).fn, type(x) is float, g._params[g.argnum])


def _is_scalar(x) -> bool:
    if type(x) is float:
        return True
    shape = getattr(x, "shape", None)
    return shape is not None and hasattr(x, "dtype") and int(np.prod(shape)) == 1


def _first(inner, float_param: bool, param: str):
    """A function with source that returns inner(...)[0] (specialized like any user function).
    A gradient of None (the function does not depend on the argument) is zero: 0.0 for a float,
    zeros shaped like the argument for an array."""
    ns = {"_inner": inner, "np": np}
    params = list(inspect.signature(inner).parameters)
    zero = "0.0" if float_param else f"np.zeros_like({param})"
    src = (f"def gradient({', '.join(params)}):\n"
           f"    g = _inner({', '.join(params)})[0]\n"
           f"    if g is None:\n"
           f"        return {zero}\n"
           f"    return g\n")
    return compile_function(src, "gradient", ns)


def _zeros_for_none(run, argnum: int):
    """The entry of grad(grad(f)) returning zeros where the gradient is None: the derivative of
    a gradient that does not depend on the argument is zero (as in JAX)."""
    def zeros_run(*args):
        grads, loss = run(*args)
        return _zeros_where_none(grads, args[argnum]), loss
    return zeros_run


def _zeros_where_none(g, x):
    t = type(x)
    if g is None:
        if t is float:
            return 0.0
        dtype = getattr(x, "dtype", None)
        if dtype is not None and getattr(dtype, "kind", None) == "f" and hasattr(x, "shape"):
            if isinstance(x, np.generic):
                return dtype.type(0)
            return np.zeros(x.shape, dtype) if type(x) is np.ndarray else np.zeros_like(x)
        if t is list or t is tuple:
            g = t(None for _ in x)
        elif t is dict:
            g = dict.fromkeys(x)
        else:
            return None
    if t is list or t is tuple:
        return t(_zeros_where_none(gi, xi) for gi, xi in zip(g, x))
    if t is dict:
        return {k: _zeros_where_none(g[k], v) for k, v in x.items()}
    return g


def _innermost(fun):
    """The user's function under grad(grad(...)) wrappers."""
    while isinstance(fun, Grad):
        fun = fun.fun
    return fun


def _user_code(fun) -> tuple:
    """``(filename, first line)`` of the user's function under grad wrappers (None, None)."""
    f = _innermost(fun)
    f = getattr(f, "__func__", f)
    f = getattr(f, "func", f)          # functools.partial
    code = getattr(f, "__code__", None) or getattr(getattr(type(f), "__call__", None), "__code__", None)
    return (code.co_filename, code.co_firstlineno) if code is not None else (None, None)


@contextlib.contextmanager
def _collection_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused while a miss specializes, compiles and runs.

    A miss makes tens of thousands of short-lived objects (the trace, its IR, the adjoint), so
    the collector would start every few hundred of them and, now and then, walk every object of
    the process (a process that imported torch or jax holds hundreds of thousands): a fifth of a
    new tree's cost in treenn. Paused, they cost one young-generation collection after the miss.
    Nested misses (a unit's own gradient) leave it to the outermost; nothing is lost, as the
    collector finds any cycles left in that first collection. The switch is the process's: a
    ``gc.disable()`` made by another thread while a miss runs is undone when the miss ends."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _guard_error(fun, e: errors.GuardFailed) -> errors.KnetcError:
    """A guard that failed while specializing, or on the very call its code was made for: the
    code knetc generated contradicts itself. Say where in the user's code it was made."""
    filename, lineno = _user_code(fun)
    for note in getattr(e, "__notes__", ()):
        # 'knetc: while specializing "FILE", line N': the innermost user statement, if not knetc's
        if note.startswith("knetc: while specializing") and '"<knetc-' not in note:
            try:
                filename = note.split('"')[1]
                lineno = int(note.rsplit("line", 1)[1])
            except (IndexError, ValueError):
                pass
            break
    name = getattr(_innermost(fun), "__qualname__", repr(fun))
    return errors.KnetcError(
        f"knetc: the gradient code generated for {name} does not fit the call it was generated for "
        "(one of its guards failed at once)", filename=filename, lineno=lineno,
        hint="This is a knetc bug; please report it. Meanwhile, compute the inner gradient outside "
             "the differentiated function, or pass the values it reads as arguments.")


def _check_argnums(argnums, params: list, fun):
    """``argnums`` as an index (an int) or a tuple of indices into ``params``; negative values
    count from the end. Anything else is a KnetcError saying what is allowed."""
    name = getattr(fun, "__qualname__", None) or type(fun).__name__
    allowed = (f"an int from {-len(params)} to {len(params) - 1} or a tuple of them "
               f"({name} takes {', '.join(params) or 'no arguments'})")

    def one(i):
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise errors.ArgumentError(f"knetc.grad: argnums={argnums!r} is not {allowed}")
        if not -len(params) <= i < len(params):
            raise errors.ArgumentError(f"knetc.grad: argnums={argnums!r} is out of range: use {allowed}")
        return int(i) % len(params)
    if isinstance(argnums, (tuple, list)):
        if not argnums:
            raise errors.ArgumentError(f"knetc.grad: argnums=() names no argument: use {allowed}")
        out = tuple(one(i) for i in argnums)
        if len(set(out)) != len(out):
            raise errors.ArgumentError(f"knetc.grad: argnums={argnums!r} names an argument twice")
        return out
    return one(argnums)


def _argnums(argnums, argnum):
    """``argnum`` is the older spelling of ``argnums`` (Knet's, and this package's first)."""
    return argnums if argnum is None else argnum


def grad(fun: Callable | None = None, argnums=0, *, argnum=None, has_aux: bool = False,
         source: str | None = None, sparse: bool = False) -> Grad:
    """The gradient of scalar function ``fun`` wrt its argument ``argnums`` (also a decorator).

    ``argnums``: an int, or a tuple of ints for a tuple of gradients (negative: from the end);
    ``argnum`` is an alias. ``has_aux=True``: ``fun`` returns ``(loss, aux)`` and the call
    returns ``(gradient, aux)``; aux may hold arrays and Python values, never differentiated.
    ``source``: the text of ``fun``'s def (it may hold the helpers' defs too), for code Python
    kept no text of (``python -c``, ``exec`` of a string); checked against the running code.
    ``sparse=True``: the gradient of an array the function reads only by rows (an embedding,
    ``E[ids]`` or ``np.stack([E[i] for i in words])``) is a ``knetc.SparseRows``, the rows and
    what to add to them, not a dense array of zeros (Knet's ``Sparse``, PyTorch's
    ``nn.Embedding(sparse=True)``). ``knetc.update`` takes it (SGD touches those rows only);
    ``np.asarray(g)`` or ``g.dense()`` is the dense gradient. NumPy arrays only: on the GPU
    every gradient is dense.

    >>> dw = knetc.grad(loss)(w, x, y)                         # same structure as w
    >>> dw, dx = knetc.grad(loss, argnums=(0, 1))(w, x, y)
    >>> dw, aux = knetc.grad(loss_and_stats, has_aux=True)(w, x, y)
    """
    argnums = _argnums(argnums, argnum)
    if fun is None:
        return lambda f: Grad(f, argnums, has_aux=has_aux, source=source, sparse=sparse)
    return Grad(fun, argnums, has_aux=has_aux, source=source, sparse=sparse)


def gradloss(fun: Callable, argnums=0, *, argnum=None, has_aux: bool = False,
             source: str | None = None, sparse: bool = False) -> Grad:
    """Like grad, but returns ``(gradient, loss)`` from one pass (``(gradient, loss, aux)`` with
    ``has_aux``)."""
    return Grad(fun, _argnums(argnums, argnum), order="gradloss", has_aux=has_aux, source=source,
                sparse=sparse)


def value_and_grad(fun: Callable, argnums=0, *, argnum=None, has_aux: bool = False,
                   source: str | None = None, sparse: bool = False) -> Grad:
    """JAX's order: ``(loss, gradient)``, or ``((loss, aux), gradient)`` with ``has_aux``.

    >>> loss, dw = knetc.value_and_grad(loss_fn)(w, x, y)
    """
    return Grad(fun, _argnums(argnums, argnum), order="value_and_grad", has_aux=has_aux, source=source,
                sparse=sparse)


def show(fun: Callable, *args, argnum: int = 0, argnums=None, **kwargs) -> str:
    """The generated adjoint source of ``fun`` for these arguments."""
    g = fun if isinstance(fun, Grad) else Grad(fun, argnum if argnums is None else argnums)
    return g.source(*args, **kwargs)


def cache_info(fun: Callable, argnum: int | tuple = 0, with_loss: bool = False,
               sparse: bool = False, has_aux: bool = False) -> CacheInfo:
    """Hits, misses, compiled entries and uncompiled (tier 0) runs of ``grad(fun, argnum)``
    (``argnum`` a tuple for ``grad(fun, argnums=(...))``; ``with_loss=True``: of ``gradloss``
    and ``value_and_grad``; ``sparse=True``: of ``grad(fun, sparse=True)``; ``has_aux=True``:
    of ``grad(fun, has_aux=True)``; a ``Grad`` or ``@differentiable`` function: its own).

    Many misses mean the arguments' shapes, structure or steering values keep changing."""
    if isinstance(fun, Differentiable):
        return fun._g._cache.info()
    if isinstance(fun, Grad):
        return fun._cache.info()
    return _shared_cache(fun, argnum, with_loss, has_aux, sparse=sparse).info()


class Differentiable:
    """``@knetc.differentiable``: the function stays callable and gains ``.grad``, ``.gradloss``
    and ``.source``, sharing one cache (gradient and loss come from the same generated code).

    >>> @knetc.differentiable
    ... def loss(w, x, y): ...
    >>> loss(w, x, y); loss.grad(w, x, y); loss.gradloss(w, x, y); print(loss.source(w, x, y))
    """

    def __init__(self, fun: Callable, argnums=0, *, has_aux: bool = False, source: str | None = None):
        self.fun = fun
        self._g = Grad(fun, argnums, order="gradloss", has_aux=has_aux, source=source)
        functools.update_wrapper(self, fun, updated=())

    def __call__(self, *args, **kwargs):
        return self.fun(*args, **kwargs)

    def grad(self, *args, **kwargs):
        """The gradient wrt argument ``argnums`` (same structure as that argument); with
        ``has_aux``, ``(gradient, aux)``."""
        out = self._g(*args, **kwargs)
        return (out[0], out[2]) if self._g.has_aux else out[0]

    def gradloss(self, *args, **kwargs):
        """``(gradient, loss)`` from one pass."""
        return self._g(*args, **kwargs)

    def source(self, *args, **kwargs) -> str:
        """The generated adjoint for these arguments."""
        return self._g.source(*args, **kwargs)


def differentiable(fun: Callable | None = None, argnums=0, *, argnum=None, has_aux: bool = False,
                   source: str | None = None):
    """Decorator keeping ``fun`` callable while exposing ``.grad``, ``.gradloss`` and ``.source``
    (``source``: as for ``grad``)."""
    argnums = _argnums(argnums, argnum)
    if fun is None:
        return lambda f: Differentiable(f, argnums, has_aux=has_aux, source=source)
    return Differentiable(fun, argnums, has_aux=has_aux, source=source)


# A helper called again alike at tier 0 is one operation whose backward is a gradient of its own
# (knetc/compiler/units.py): made with grad, given to the compiler from here, above it.
units.use_gradient(grad)
