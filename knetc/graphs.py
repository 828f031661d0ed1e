"""``knetc.graph_step``: one whole training step (gradient and optimizer update) captured into a
CUDA graph once, then replayed with one launch per step.

    step = knetc.graph_step(loss, w, opts, x, y)      # w: CuPy parameters, opts: optimizers(w, ...)
    for x, y in batches:                              # batches of the captured shapes and dtypes
        l = step(x, y)                                # w updated in place; l: a 0-d CuPy array

This is ``torch.cuda.graphs.make_graphed_callables`` / a jitted JAX train step for knetc: on the
GPU a small model's step is dominated by launching its kernels one by one from Python; a graph
launches them all at once.  What a step does is fixed when it is captured, so:

* Shapes and dtypes are fixed: every call copies its arrays into the graph's own (static) input
  buffers, which must have the same shape and dtype (else a ``KnetcError``: make one
  ``graph_step`` per batch shape, or pad the batch).  Inputs may be CuPy or NumPy arrays.
  Arguments that are not arrays (ints, floats, strings) are fixed too: each call must pass equal
  values.  ``loss_kwargs`` given to ``graph_step`` are passed to every step as they are.
* The parameters are the arrays captured: they are updated in place, and each call checks (by
  identity, cheaply) that ``w`` still holds them and that the optimizers still hold their state
  arrays; replace values in place (``w[i][...] = v``), not arrays, or make a new ``graph_step``.
* Python-level guards of the gradient's code (a global function, a steering int) are checked
  when the graph is captured, not at each replay.  Code that reads GPU values on the host (a
  branch on an array's value, shapes that depend on values) cannot be captured at all, nor can
  random numbers (dropout): a graph would replay the same ones every step.  Both are refused.
* The optimizers count their steps and read their hyper-parameters on the host at every call
  (``t``, a learning-rate schedule, Adam's bias correction): these per-step scalars are copied to
  the device before each replay, so a replayed step equals an ordinary ``update``.  Options that
  change the update's kernel (``gclip`` on/off, weight decay on/off) must not change.
* Matrix products (``a @ b``, ``np.matmul``, ``np.dot`` of vectors and matrices) go through
  knetc's own cuBLAS calls (runtime/cublas.py), since CuPy refuses its cuBLAS calls while a
  stream is capturing: the step's gradient is compiled for that (``settings`` switch
  ``capture``, a cache variant of its own).  Other cuBLAS users (``np.tensordot``,
  ``np.einsum``, ``np.linalg``) cannot be captured: a ``KnetcError`` says so.
* ``warmup`` calls of the gradient run first (on the capture stream, not updating ``w``), so the
  specialization is compiled and the memory pool holds its blocks; they count as calls of the
  loss (batchnorm's running statistics see them).  The graph's temporaries come from a memory
  pool of its own, which nothing else allocates from.

Graphs are GPU-only: NumPy parameters are refused (a ``KnetcError``), since silently running the
step uncaptured would mislead a benchmark; on the CPU write the loop as
``knetc.update(w, knetc.grad(loss)(w, x, y), opts)``.

The device work goes through a small backend object (``CupyBackend``); a test can pass another
one (``backend=``) that imitates streams and graphs with NumPy, to check everything but CUDA.
"""
from __future__ import annotations

import contextlib
import operator
import re
from typing import Any, Callable

import numpy as np

from . import api, errors, settings, tree
from .optim import Optimizer
from .optim_kernels import run_graph
from .runtime.backend import cupy_module

__all__ = ["graph_step", "GraphStep", "CupyBackend", "selftest"]

_HINT_EAGER = ("Without a graph the same step is: g, l = knetc.gradloss(loss)(w, x, y); "
               "knetc.update(w, g, opts).")


def _err(message: str, hint: str | None = None) -> errors.KnetcError:
    return errors.KnetcError(f"knetc.graph_step: {message}", hint=hint)


def _is_array(x: Any) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype") and not isinstance(x, np.generic)


def _where(path: tuple) -> str:
    return "w" + "".join(f"[{k!r}]" for k in path)


# ----- the CUDA side -------------------------------------------------------------------------

class CupyBackend:
    """The device operations ``GraphStep`` needs, done with CuPy (14.x).

    Capture uses ``Stream.begin_capture()`` (CuPy's default mode, relaxed: the memory pool may
    still call ``cudaMalloc``) on a non-blocking stream, so work on the legacy default stream
    does not join it; the graph is launched on the caller's current stream, ordered with the
    caller's own work."""

    gpu = True

    def __init__(self, cupy: Any) -> None:
        self.cp = cupy
        self._pool = cupy.cuda.MemoryPool()   # the graph's own: kept as long as the step lives

    def is_array(self, x: Any) -> bool:
        return isinstance(x, self.cp.ndarray)

    def to_device(self, x: Any) -> Any:
        return self.cp.array(x, copy=True, order="C")

    def zeros(self, shape: tuple) -> Any:
        return self.cp.zeros(shape, np.float64)

    def new_stream(self) -> Any:
        return self.cp.cuda.Stream(non_blocking=True)

    def current_stream(self) -> Any:
        return self.cp.cuda.get_current_stream()

    def on_stream(self, stream: Any):
        return stream

    def memory(self):
        """Allocations inside the block come from the graph's own memory pool."""
        return self.cp.cuda.using_allocator(self._pool.malloc)

    def synchronize(self) -> None:
        self.cp.cuda.Device().synchronize()

    def capture(self, stream: Any, body: Callable[[], None], protect: list) -> Any:
        """Run ``body`` under stream capture on ``stream``; the ``cupy.cuda.Graph``.  (Nothing
        runs while capturing, so ``protect``, the arrays the body writes, needs no care.)"""
        with self.memory(), stream:
            stream.begin_capture()
            try:
                body()
            except BaseException:
                with contextlib.suppress(Exception):   # the capture is broken: end it anyway
                    stream.end_capture()
                raise
            return stream.end_capture()

    def capture_error(self, e: BaseException) -> bool:
        """Is ``e`` CUDA refusing an operation during capture (a host synchronisation)?"""
        runtime_error = getattr(self.cp.cuda.runtime, "CUDARuntimeError", ())
        return isinstance(e, runtime_error) or "captur" in str(e).lower()

    def launch(self, graph: Any, stream: Any) -> None:
        graph.launch(stream)

    def copy_in(self, static: Any, x: Any, stream: Any) -> None:
        if x is static:
            return
        if isinstance(x, self.cp.ndarray):
            with stream:
                self.cp.copyto(static, x)
        else:   # a NumPy batch: one host-to-device copy, ordered on the stream
            static.set(np.asarray(x), stream=stream)

    def set_scalars(self, dev: Any, host: np.ndarray, stream: Any) -> None:
        # From pageable host memory: CUDA stages the few bytes before returning, so ``host``
        # may be reused at once, and the copy is ordered before the replay on ``stream``.
        dev.set(host, stream=stream)

    def copy_out(self, x: Any, stream: Any) -> Any:
        with stream:
            return x.copy()

    def update(self, spec: Any, w: Any, g: Any, states: tuple, row: Any) -> None:
        run_graph(spec, w, g, states, row)


def _default_backend() -> CupyBackend:
    cp = cupy_module()
    if cp is None:
        raise _err("CUDA graphs need CuPy and a CUDA GPU, and none is available here",
                   hint=_HINT_EAGER)
    return CupyBackend(cp)


# ----- what a captured step must not do --------------------------------------------------------

# Guards. A cached gradient's guards are not recorded by kind (knetc/compiler/pipeline.py's
# Entry keeps only the source), and the source cannot tell a guard on a device value
# (``if not gt:`` after ``gt = np.sum(x) > 0``) from one on a Python number (a float argument,
# fixed in a graph and checked at every call), nor a value-decided shape from a shape the rule
# could not infer (``if nll_1.shape != ():``).  So the capture itself decides: reading a device
# value on the host needs a device-to-host copy or a synchronisation, which CuPy refuses while
# capturing (RuntimeError 'the current stream is capturing ...', or CUDA's
# cudaErrorStreamCaptureUnsupported), and GraphStep turns that into a KnetcError.  Host-only
# guards (``_g['predict'] is not predict``) are checked once, when capturing.
# Random numbers are the one thing capture does not refuse (cuRAND's offset is a kernel
# argument: a replay draws the same numbers), so the source is searched for them.
_GUARD = re.compile(r"^\s*if .*: raise _GuardFailed\(")
_RANDOM = re.compile(r"\brandom\.|\bdropout(_with_mask)?\(|\brandn?\(|\bpermutation\(|"
                     r"\bdefault_rng\(|\bdraw\(")   # draw: knetc's call of a Generator method


def check_capturable(source: str) -> None:
    """Raise a ``KnetcError`` when generated gradient code draws random numbers (dropout, any
    ``random`` call): a CUDA graph would replay the same numbers at every step."""
    for line in source.splitlines():
        code = line.strip()
        if not code or code.startswith("#") or _GUARD.match(line):
            continue
        if _RANDOM.search(code):
            raise _err(
                f"the step draws random numbers (`{code}`); a CUDA graph would replay the same "
                "numbers at every step",
                hint="Capture the step without dropout (or pass the random mask as an input "
                     "array drawn outside the step), or run the step without a graph. "
                     + _HINT_EAGER)


# ----- the inputs --------------------------------------------------------------------------------

class _Input:
    """One positional argument of the step: a static device buffer per array leaf, the value of
    every other leaf (fixed)."""

    __slots__ = ("index", "bare", "treedef", "statics", "consts", "value")

    def __init__(self, index: int, arg: Any, backend: Any) -> None:
        self.index = index
        self.bare = _is_array(arg)      # the common case: the argument is one array
        leaves, self.treedef = tree.flatten(tree.auto_register(arg))
        self.statics = [backend.to_device(x) if _is_array(x) else None for x in leaves]
        self.consts = [None if _is_array(x) else x for x in leaves]
        self.value = tree.unflatten(self.treedef, [s if s is not None else c for s, c in
                                                   zip(self.statics, self.consts)])

    def leaves(self, arg: Any) -> list:
        """``arg``'s leaves, checked against the captured ones (nothing copied yet)."""
        if self.bare and _is_array(arg):
            leaves = [arg]
        else:
            leaves, td = tree.flatten(arg)
            if td != self.treedef:
                raise _err(f"argument {self.index} has the structure {td}, but the step was "
                           f"captured for {self.treedef}",
                           hint="Make another knetc.graph_step for this structure.")
        for x, s, c in zip(leaves, self.statics, self.consts):
            if s is None:
                if not _same_value(x, c):
                    raise _err(f"argument {self.index} holds {x!r} where the step was captured "
                               f"with {c!r}; values that are not arrays are fixed in a graph",
                               hint="Pass it as an array, or make another knetc.graph_step "
                                    "for this value.")
            elif not _is_array(x):
                raise _err(f"argument {self.index} holds a {type(x).__name__} where the step "
                           "was captured with an array")
            elif x.shape != s.shape or x.dtype != s.dtype:
                raise _err(
                    f"argument {self.index} has shape {tuple(x.shape)} and dtype {x.dtype}, "
                    f"but the step was captured for shape {tuple(s.shape)} and dtype {s.dtype}; "
                    "a CUDA graph replays fixed shapes",
                    hint=f"Make another knetc.graph_step for this shape (one per batch shape), "
                         f"or pad the batch to shape {tuple(s.shape)}.")
        return leaves

    def copy_in(self, leaves: list, backend: Any, stream: Any) -> None:
        for x, s in zip(leaves, self.statics):
            if s is not None:
                backend.copy_in(s, x, stream)


def _same_value(a: Any, b: Any) -> bool:
    if a is b:
        return True
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:
        return False


# ----- the step --------------------------------------------------------------------------------

class _Param:
    __slots__ = ("path", "w", "opt", "spec", "states", "row", "active")

    def __init__(self, path, w, opt, spec, states, row):
        self.path, self.w, self.opt, self.spec, self.states, self.row = \
            path, w, opt, spec, states, row
        self.active = False     # has a gradient in the captured step


def _gradient_at(grads: Any, path: tuple) -> Any:
    try:
        return tree.get(grads, path)
    except (KeyError, IndexError, TypeError):
        return None


class GraphStep:
    """A training step captured into a CUDA graph (made by ``knetc.graph_step``).

    ``step(*args)`` copies the arrays of ``args`` (the loss's arguments other than ``w``) into
    the static input buffers, counts one step of every optimizer, replays the graph (gradient
    and update; ``w`` and the optimizers' state change in place) and returns the loss as a 0-d
    device array, without waiting for the GPU.  Attributes: ``replays`` (calls so far),
    ``source`` (the generated gradient code captured), ``graph`` and ``stream`` (the capture
    stream), ``inputs`` (the static buffers, as the example arguments)."""

    def __init__(self, loss: Callable, w: Any, opts: Any, args: tuple, argnums: int,
                 warmup: int, backend: Any, loss_kwargs: dict) -> None:
        self.loss, self._w, self._opts, self._argnums = loss, w, opts, argnums
        self._kwargs = loss_kwargs
        self.replays = 0
        self._active: list[_Param] = []
        params = _parameters(w, opts)
        if backend is None:
            for path, p, _ in params:
                if isinstance(p, np.ndarray):
                    raise _err(f"CUDA graphs are GPU-only, and the parameter {_where(path)} is a "
                               "NumPy array",
                               hint="Move the model to the GPU first (w = knetc.gpu(w), then "
                                    "opts = knetc.optimizers(w, ...)). " + _HINT_EAGER)
            backend = _default_backend()
        self._backend = b = backend
        for path, p, _ in params:
            if not b.is_array(p):
                raise _err(f"the parameter {_where(path)} is a {type(p).__name__}, not an array "
                           "of the graph's device", hint="Move every parameter to the GPU.")
        self._w_leaves = tree.leaves(w)
        self._grad = api.gradloss(loss, argnums=argnums)
        self._inputs = [_Input(i, a, b) for i, a in enumerate(args)]
        self.inputs = tuple(x.value for x in self._inputs)
        nscal = 1
        prepared = []
        for path, p, o in params:
            fused = o.fused(p, gpu_only=b.gpu)
            if fused is None:
                raise _err(f"the parameter {_where(path)} ({p.dtype}) has no fused update: "
                           "graphs update float32 and float64 arrays whose optimizer state has "
                           "their dtype", hint=_HINT_EAGER)
            prepared.append((path, p, o) + fused)
            nscal = max(nscal, len(fused[0].scalars))
        self._scalars = b.zeros((len(prepared), nscal))
        self._params = [_Param(path, p, o, s, st, self._scalars[i])
                        for i, (path, p, o, s, st) in enumerate(prepared)]
        self._nscal = nscal
        self.stream = b.new_stream()
        self._holder: dict = {}
        b.synchronize()   # the static inputs are on the device before the warm-up reads them
        # The gradient is compiled for capture (its own cache variant): matrix products as
        # np.matmul through knetc's cuBLAS calls (runtime/cublas.py), which CuPy's refuse.
        with settings.override(capture=True):
            self.source = self._warm_up(warmup)
            self.graph = self._capture()
        b.synchronize()   # the warm-up's work is done before replays reuse its memory

    # -- construction --
    def _full_args(self) -> tuple:
        a = self.inputs
        return a[:self._argnums] + (self._w,) + a[self._argnums:]

    def _call_gradient(self):
        grads, loss = self._grad(*self._full_args(), **self._kwargs)
        return grads, loss

    def _warm_up(self, warmup: int) -> str:
        """Run the gradient on the capture stream until its cached code is hit; check that code;
        compile the update kernels (on copies: ``w`` is not changed).  The gradient's source."""
        b = self._backend
        with b.memory(), b.on_stream(self.stream):
            grads, _ = self._call_gradient()
            source = self._grad.source(*self._full_args(), **self._kwargs)
            check_capturable(source)
            for i in range(warmup + 3):
                hits = api.cache_info(self._grad).hits
                grads, loss = self._call_gradient()
                if i + 2 >= warmup and api.cache_info(self._grad).hits > hits:
                    break
            else:
                raise _err("the gradient's code is specialized anew at every call (its guards "
                           "keep failing), so there is no fixed code to capture",
                           hint=_HINT_EAGER)
            if not b.is_array(loss):
                raise _err(f"the loss is a {type(loss).__name__}, not an array of the graph's "
                           "device; the step's result must be computed on the GPU")
            for p in self._params:
                g = self._checked_gradient(grads, p)
                if g is not None:   # compile the kernel now, on copies of the arrays
                    b.update(p.spec, p.w.copy(), g, tuple(s.copy() for s in p.states), p.row)
        return source

    def _checked_gradient(self, grads: Any, p: _Param) -> Any:
        g = _gradient_at(grads, p.path)
        if g is None:
            return None
        if not self._backend.is_array(g) or g.shape != p.w.shape:
            raise _err(f"the gradient of {_where(p.path)} is not an array of its shape "
                       f"({type(g).__name__} {getattr(g, 'shape', '')})")
        return g if g.dtype == p.w.dtype else g.astype(p.w.dtype)

    def _capture(self) -> Any:
        b = self._backend
        holder = self._holder

        def body():
            grads, loss = self._call_gradient()
            for p in self._params:
                g = self._checked_gradient(grads, p)
                p.active = g is not None
                if g is not None:
                    b.update(p.spec, p.w, g, p.states, p.row)
            holder["loss"] = loss

        protect = [x for p in self._params for x in (p.w,) + tuple(p.states)]
        try:
            graph = b.capture(self.stream, body, protect)
        except errors.KnetcError:
            raise
        except Exception as e:
            if isinstance(e, NotImplementedError) and "cublas" in str(e).lower():
                raise _err(f"the step calls a CuPy function that uses cuBLAS, which CuPy refuses "
                           f"while capturing (CuPy said: {e})",
                           hint="knetc captures matrix products written a @ b, np.matmul or "
                                "np.dot of vectors and matrices (float32/float64); not "
                                "np.tensordot, np.einsum, np.linalg, x.dot(y) or N-D np.dot. "
                                "Write the product with @, or run the step without a graph. "
                                + _HINT_EAGER) from e
            if not b.capture_error(e):
                raise
            raise _err(f"the step cannot be captured into a CUDA graph: it synchronises with "
                       f"the host while capturing (CUDA said: {e})",
                       hint="Something in the loss reads a GPU value on the CPU: float(x), "
                            "x.item(), a branch on an array's value (if np.sum(x) > 0:), or "
                            "a shape the data decides (x[x > 0], np.nonzero). Keep those out "
                            "of the step (np.where for per-element choices). " + _HINT_EAGER
                       ) from e
        self._active = [p for p in self._params if p.active]
        return graph

    # -- the step --
    def _check_identity(self) -> None:
        now = tree.leaves(self._w)
        if len(now) != len(self._w_leaves) or not all(map(operator.is_, now, self._w_leaves)):
            raise _err("w no longer holds the arrays the graph was captured with (the graph "
                       "updates those arrays in place)",
                       hint="Change parameters in place (w[i][...] = value), not by replacing "
                            "arrays, or make a new knetc.graph_step.")
        for p in self._active:
            o = p.opt
            for name, a in zip(p.spec.states, p.states):
                if getattr(o, name) is not a:
                    raise _err(f"the optimizer of {_where(p.path)} no longer holds the state "
                               f"array {name!r} the graph was captured with (load_state?)",
                               hint="Make a new knetc.graph_step after changing optimizer state.")
            if o.fused_spec() is not p.spec:
                raise _err(f"the optimizer of {_where(p.path)} now has other options (gclip or "
                           "weight decay switched on or off) than when it was captured",
                           hint="Make a new knetc.graph_step after changing those options.")

    def __call__(self, *args: Any) -> Any:
        """One training step on the batch ``args``: the loss, a 0-d device array (not synced)."""
        if len(args) != len(self._inputs):
            raise errors.ArgumentError(
                f"knetc.graph_step: the step takes {len(self._inputs)} argument(s) (the loss's "
                f"arguments other than w), got {len(args)}")
        self._check_identity()
        leaves = [x.leaves(a) for x, a in zip(self._inputs, args)]   # all checked before anything
        b = self._backend
        stream = b.current_stream()
        for x, lv in zip(self._inputs, leaves):
            x.copy_in(lv, b, stream)
        host = np.zeros((len(self._params), self._nscal))
        for i, p in enumerate(self._params):
            if p.active:
                vals = p.opt.fused_step_scalars()
                host[i, :len(vals)] = vals
        b.set_scalars(self._scalars, host, stream)
        b.launch(self.graph, stream)
        self.replays += 1
        return b.copy_out(self._holder["loss"], stream)

    def __repr__(self) -> str:
        name = getattr(self.loss, "__qualname__", repr(self.loss))
        return (f"<knetc.graph_step of {name}: {len(self._active)} parameter update(s), "
                f"{self.replays} replay(s)>")


def _parameters(w: Any, opts: Any) -> list[tuple[tuple, Any, Optimizer]]:
    """``(path, array, optimizer)`` for every parameter array of ``w``; KnetcErrors for what a
    graph cannot update (floats, shared or missing optimizers)."""
    tree.auto_register(w)
    out, seen = [], set()
    for path, p in tree.paths(w):
        is_float = isinstance(p, (float, np.floating)) and not isinstance(p, (bool, np.ndarray))
        if not (_is_array(p) or is_float):
            continue
        if isinstance(opts, Optimizer):   # one optimizer: fine for one array, else shared
            o = opts
        else:
            try:
                o = tree.get(opts, path)
            except (KeyError, IndexError, TypeError):
                o = None
        if is_float:
            raise _err(f"the parameter {_where(path)} is a number ({p!r}); a graph updates arrays "
                       "in place and cannot replace a number",
                       hint="Hold it as a 1-element (or 0-d) CuPy array.")
        if not isinstance(o, Optimizer):
            raise _err(f"no optimizer for the parameter {_where(path)} (found {o!r})",
                       hint="Make them with opts = knetc.optimizers(w, knetc.Adam, ...).")
        if id(o) in seen:
            raise _err(f"one {type(o).__name__} is shared by several parameters (at "
                       f"{_where(path)}); each array needs its own optimizer",
                       hint="Make them with opts = knetc.optimizers(w, ...).")
        seen.add(id(o))
        out.append((path, p, o))
    if not out:
        raise _err("w holds no parameter arrays")
    return out


def graph_step(loss: Callable, w: Any, opts: Any, *example_args: Any, argnums: int = 0,
               warmup: int = 2, backend: Any = None, **loss_kwargs: Any) -> GraphStep:
    """Capture one training step of ``loss`` into a CUDA graph: ``step(*args) -> loss``.

    ``loss(..., w, ...)`` is called with ``w`` at position ``argnums`` among ``example_args``
    (``loss(w, x, y)`` with ``argnums=0``, the default); ``opts`` are ``w``'s optimizers
    (``knetc.optimizers(w, ...)``, or one optimizer when ``w`` is one array).  The example
    arguments fix the shapes and dtypes (and non-array values) of every later call.  ``warmup``
    gradient calls run before the capture; ``loss_kwargs`` go to every call of ``loss``.
    ``backend`` is for tests (see the module docstring).

    ``step(*args)`` takes the arguments other than ``w``, updates ``w`` in place as
    ``knetc.update(w, knetc.grad(loss)(w, *args), opts)`` would, and returns the loss as a 0-d
    CuPy array without synchronising (``float(l)`` waits for it).

    >>> w = knetc.gpu(w); opts = knetc.optimizers(w, knetc.Adam)
    >>> step = knetc.graph_step(loss, w, opts, x[:100], y[:100])
    >>> for x1, y1 in knetc.minibatch(x, y, 100):
    ...     l = step(x1, y1)

    Raises ``KnetcError`` for NumPy parameters (graphs are GPU-only), code that cannot be
    captured (host reads of GPU values, value-dependent branches or shapes, random numbers) and
    parameters without a fused update (float16, Python floats).
    """
    if not callable(loss):
        raise errors.ArgumentError(f"knetc.graph_step: loss must be a function, got "
                                   f"{type(loss).__name__}")
    n = len(example_args) + 1
    if isinstance(argnums, bool) or not isinstance(argnums, (int, np.integer)) or \
            not -n <= argnums < n:
        raise errors.ArgumentError(
            f"knetc.graph_step: argnums={argnums!r} must be the position of w among the loss's "
            f"{n} positional arguments (an int from {-n} to {n - 1}); one w per step")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 1:
        raise errors.ArgumentError(f"knetc.graph_step: warmup={warmup!r} must be an int >= 1")
    return GraphStep(loss, w, opts, example_args, int(argnums) % n, warmup, backend, loss_kwargs)


# ----- a diagnostic for the GPU machine -----------------------------------------------------------

def _selftest_loss(w, x):
    return np.sum((x @ w[0] + w[1]) ** 2) / x.shape[0]


def selftest() -> str:
    """Capture one tiny step on this machine's GPU and replay it 3 times against 3 ordinary
    steps: ``'ok'``, or what went wrong (for a GPU check script's diagnostics)."""
    import traceback

    from .optim import Adam, optimizers, update
    cp = cupy_module()
    if cp is None:
        return "no CuPy with a working CUDA device"
    try:
        rng = np.random.default_rng(0)
        w0 = [rng.standard_normal((4, 3)).astype(np.float32), np.zeros(3, np.float32)]
        x = rng.standard_normal((8, 4)).astype(np.float32)
        wa = [cp.asarray(a) for a in w0]
        wb = [cp.asarray(a) for a in w0]
        oa, ob = optimizers(wa, Adam, lr=0.01), optimizers(wb, Adam, lr=0.01)
        gl = api.gradloss(_selftest_loss)
        step = graph_step(_selftest_loss, wb, ob, cp.asarray(x))
        xd = cp.asarray(x)
        for _ in range(3):
            g, la = gl(wa, xd)
            update(wa, g, oa)
            lb = step(x)
            if not np.allclose(float(lb), float(la), rtol=1e-5):
                return f"loss differs: graph {float(lb)} vs ordinary {float(la)}"
        for a, c in zip(wa, wb):
            if not np.allclose(cp.asnumpy(c), cp.asnumpy(a), rtol=1e-5, atol=1e-7):
                return "parameters differ after 3 replays"
        return "ok"
    except Exception as e:
        return f"{type(e).__name__}: {e}\n{traceback.format_exc()}"
