"""The compiler's one-way pipeline for one call: specialize → adjoint → optimize → codegen."""
from __future__ import annotations

import inspect
import os
import time
import types
from dataclasses import dataclass, field

import numpy as np

from .. import errors, settings, tree
from ..runtime import pool, prims
from ..runtime.backend import device_namespace, devices_of, is_array
from . import interpret, ir
from .codegen import compile_function, render
from .optimize import (LOWERING_NAMES, eliminate_dead_code, fold_uniform_fills,
                       fuse_picked_logp, insert_frees, lower_accumulation, pool_large, sparse_rows)
from .shapes import shapes_from_tape
from .reverse import Adjoint
from .specialize import Specializer
from .tape import Sym, Tape, identifier
from .timings import stage, timed
from .values import call_expr, dtype_expr, value_expr


@dataclass
class Entry:
    """One cached specialization: the compiled adjoint and how it was made.

    ``fn`` is the generated function; ``run`` calls it, inside its training mode when its
    code calls primitives that read the training flag (dropout, batchnorm, user rules).
    ``info``: what it is (``function``, ``where``, ``wrt``, ``specialized``), for tools."""
    fn: object
    source: str
    name: str
    nops: int
    seconds: float
    info: dict = field(default_factory=dict)
    run: object = None
    on_device: bool = False   # generated for arrays not NumPy's (the GPU switches apply to it)
    used: bool = False        # hit since the cache's eviction last looked (knetc.api)
    units: bool = False       # calls helpers as units (compiler/units.py) instead of inlining them

    def __post_init__(self):
        if self.run is None:
            self.run = self.fn


@dataclass
class Trace:
    """One specialization before code generation: the forward tape (with this call's values)
    and the adjoint statements."""
    fn: object
    params: list
    args: tuple
    argnums: tuple        # the differentiated parameters (indices)
    pure: bool
    xp: object
    tape: Tape
    adj: Adjoint
    wrt: object           # the mirrored differentiated argument (a tuple of them: ``several``)
    loss: object
    started: float
    several: bool = False     # argnums given as a tuple: the gradient is a tuple
    aux: object = None        # has_aux: what the function returned beside the loss
    has_aux: bool = False
    training: bool = True     # the mode it was traced in (prims.training())
    keyed_ints: frozenset | None = None   # the argument ints keyed by value (see trace)
    sparse: bool = False      # embeddings' gradients as knetc.SparseRows (grad(f, sparse=True))
    with_loss: bool = True    # the generated code returns the loss (False: None, for grad)
    unit_calls: int = 0       # helper calls recorded as one operation each (compiler/units.py)

    def recorded_bytes(self) -> int:
        """The size of the values its forward pass computed (what running it again would
        compute again)."""
        return sum(o.nbytes for o in _call_outputs(self.tape))


def _call_outputs(tape):
    """The values the tape's primitive calls made (Syms)."""
    for op in tape.ops:
        if op.kind == "call":
            for o in (op.outs if type(op.outs) is tuple else (op.outs,)):
                if o is not None:
                    yield o


def trace(fn, params: list[str], kinds: list, args: tuple, argnums, pure: bool = False,
          has_aux: bool = False, keyed_ints: frozenset | None = None,
          units: bool = False, sparse: bool = False, with_loss: bool = True) -> Trace:
    """Specialize ``fn`` to ``args`` and write the adjoint wrt ``args[i]`` for ``i`` in
    ``argnums`` (an int, or a tuple: then the gradient is a tuple), no code yet. ``has_aux``:
    ``fn`` returns ``(loss, aux)``; aux is handed back as a value, never differentiated.
    ``keyed_ints``: the key paths of the arguments' int leaves whose values the cache key holds
    (``SpecCache.keyed_ints``); every other int leaf is an ``IntArg`` (selectors), and the paths
    of those that steered are ``tape.steered``. None: every int is a plain value. ``units``:
    helpers called again with arguments of one kind may be one operation (compiler/units.py;
    for functions whose calls mostly miss, unless ``KNETC_UNITS=0``). ``sparse``: the gradient of an array
    read only by rows (an embedding) is a ``knetc.SparseRows`` (NumPy code that is not ``pure``;
    optimize.sparse_rows). ``with_loss=False``: the compiled code hands back None for the loss
    (``grad``: the operations that only compute the loss from the forward's values are
    dead code then, as in a unit's backward: its sum of outputs times their gradients)."""
    t0 = time.perf_counter()
    several = type(argnums) is tuple
    argnums = argnums if several else (argnums,)
    xp = _array_module(fn, params, args)
    tape = Tape()
    tape.affine = records_affine(xp)
    tape.taken.update(params)
    tape.taken.update(LOWERING_NAMES)    # the runtime's names in generated code: never a user's
    spec = Specializer(tape)
    spec.keyed_ints = keyed_ints
    # Every trace of NumPy code learns which helpers are self-contained (compiler/units.py);
    # only those the caller asks to (``units``: a function that mostly misses) use them.
    spec.learn_units = not pure and xp is np and settings.enabled("units")
    spec.units = units and spec.learn_units
    mirrored = [spec.mirror_value(a, ir.Name(p), diff=(i in argnums), keypath=(i,))
                for i, (p, a) in enumerate(zip(params, args))]
    for i in argnums:
        _check_parameter(mirrored[i], params[i], fn)
    wrt = tuple(mirrored[i] for i in argnums) if several else mirrored[argnums[0]]
    tape.loc = (fn.__code__.co_filename, fn.__code__.co_firstlineno)
    call_args, call_kwargs = [], {}
    for p, kind, value in zip(params, kinds, mirrored):
        if kind == inspect.Parameter.VAR_POSITIONAL:
            call_args.extend(value)
        elif kind == inspect.Parameter.VAR_KEYWORD:
            call_kwargs.update(value)
        elif kind == inspect.Parameter.KEYWORD_ONLY:
            call_kwargs[p] = value
        else:
            call_args.append(value)
    # (pool.off: the values of one call, no buffers kept for later; runtime/pool.py)
    with pool.off(), stage("specialize"):
        result = spec.run(fn, call_args, call_kwargs)
    aux = None
    if has_aux:
        result, aux = _split_aux(result, fn, spec.result_loc)
    loss = _check_loss(result, fn, spec.result_loc)
    # GPU fusion reads named values only: there, slices of gradients keep their own statements.
    adj = Adjoint(tape, pure, inline_views=not _fuses(xp))
    if type(loss) is Sym and loss.diff:
        with stage("adjoint"):
            adj.run(loss)
    return Trace(fn, params, args, argnums, pure, xp, tape, adj, wrt, loss, t0, several, aux,
                 has_aux, prims.training(),
                 None if keyed_ints is None else keyed_ints | frozenset(tape.steered),
                 sparse and not pure and xp is np, with_loss, spec.unit_calls)


def records_affine(xp) -> bool:
    """Is ``x @ W + b`` recorded as one ``prims.affine`` for arrays of ``xp``? On the CPU (one
    array fewer, the add in place); GPU code keeps the add, which its kernel fusion may join to
    what follows."""
    return xp is np


def _split_aux(result, fn, loc):
    """``(loss, aux)`` of a function differentiated with ``has_aux=True``."""
    if type(result) in (tuple, list) and len(result) == 2:
        return result[0], result[1]
    code = getattr(fn, "__code__", None)
    filename, lineno = loc if loc[1] is not None else \
        ((code.co_filename, code.co_firstlineno) if code is not None else (None, None))
    got = f"{len(result)} values" if type(result) in (tuple, list) else f"a {type(result).__name__}"
    raise errors.LossError(
        f"knetc: {getattr(fn, '__qualname__', fn)} was differentiated with has_aux=True but "
        f"returned {got}",
        filename=filename, lineno=lineno,
        hint="With has_aux=True, return a pair: return loss, aux (aux may hold arrays and Python "
             "values; it is returned as it is, never differentiated).")


@timed("compile")
def compile_trace(tr: Trace) -> Entry:
    """Generate, optimize and compile the whole adjoint function of a trace."""
    fn, params, args, tape, adj, xp = tr.fn, tr.params, tr.args, tr.tape, tr.adj, tr.xp
    forward = [_forward_stmt(op, tape) for op in tape.ops]
    returned: set[str] = set()
    ret = ir.Return(_result_expr(tr, returned))
    stmts = eliminate_dead_code(forward + adj.stmts + [ret])
    stmts = _rewrite_gradients(tr, stmts, returned)
    stmts = lower_accumulation(stmts, pure=tr.pure)
    if xp is np:    # (on the GPU the fused kernel absorbs the fill, and a batch-dependent
        known = shapes_from_tape(tape, adj)          # constant would split kernels)
        stmts = fold_uniform_fills(stmts, *known)
    # On the GPU, runs of elementwise statements become one fused CUDA kernel each
    # (knetc/compiler/fusion; KNETC_FUSE=0 turns it off). On the CPU, NumPy's one call per
    # operation is already the fastest form.
    kernels = {}
    if _fuses(xp):
        from .fusion import fuse_program
        stmts, kernels = fuse_program(stmts, tape, adj)
    capture = _captures(xp)
    if capture:     # products through runtime.cublas: CuPy's `@` refuses stream capture
        from .capture import matmul_calls
        stmts = matmul_calls(stmts)
    reads = {o.name for op in tape.ops if op.kind == "read"
             for o in (op.outs if type(op.outs) is tuple else (op.outs,))}
    sizes = dict(adj.nbytes)
    sizes.update((o.name, o.nbytes) for o in _call_outputs(tape))
    stmts = insert_frees(stmts, keep=set(stmts[-1].uses) | reads | set(params), nbytes=sizes)
    if xp is np and not tr.pure:
        stmts = pool_large(stmts, *known)   # large results reuse memory (knetc/runtime/pool.py)

    name = f"{identifier(fn.__name__)}_grad"
    info = {"function": fn.__qualname__, "where": _where(fn),
            "wrt": ", ".join(params[i] for i in tr.argnums),
            "specialized": "(" + ", ".join(describe(a, tr.keyed_ints, (i,))
                                           for i, a in enumerate(args)) + ")", "pure": tr.pure}
    header = [f"knetc: gradient of {info['function']} ({info['where']}) wrt {info['wrt']}",
              f"specialized to {info['specialized']}" + ("; pure (no in-place updates)" if tr.pure else "")]
    # Generated code says np.*; for CuPy arguments `np` is bound to cupy (the cache keys on the
    # array type, so CPU and GPU specializations never share code).
    if xp is not np:
        header.append("np = cupy: this specialization runs on the GPU")
    if capture:
        header.append("np.matmul = runtime.cublas.matmul: written for CUDA-graph capture")
    source = render(name, params, stmts, header)
    namespace = _namespace(tape, xp, capture)
    namespace.update(kernels)
    compiled = compile_function(source, name, namespace)
    nops = sum(1 for s in stmts if type(s) not in (ir.Free, ir.Return))
    run = _in_mode(compiled, tr.training) if _reads_training(tape) else compiled
    return Entry(compiled, source, name, nops, time.perf_counter() - tr.started, info=info, run=run,
                 on_device=xp is not np, units=tr.unit_calls > 0)


def _reads_training(tape) -> bool:
    """May the generated code's primitives read ``training()`` when they run?"""
    return any(op.kind == "call" and (op.rule.impure or op.rule.forward is not None
                                      or not op.rule.builtin) for op in tape.ops)


def _in_mode(fn, training: bool):
    """``fn`` run in the training mode it was traced in (dropout active while differentiating,
    unless the user asked for eval-mode gradients)."""
    def run(*args):
        with prims.training_mode(training):
            return fn(*args)
    return run


def _fuses(xp) -> bool:
    return xp is not np and settings.enabled("fuse")


def _captures(xp) -> bool:
    """Is GPU code being written for CUDA-graph capture (knetc.graph_step)?"""
    return xp is not np and settings.enabled("capture")


def _namespace(tape, xp, capture: bool = False) -> dict:
    """The globals of generated code: np, the guard exception, and every object it refers to.
    ``capture``: np's matmul and dot are runtime.cublas's (runtime/capturable.py)."""
    if capture:
        from ..runtime.capturable import namespace as capturable
        np_ = capturable(xp)
    else:
        np_ = device_namespace(xp)
    namespace = {"np": np_, "_GuardFailed": errors.GuardFailed, **LOWERING_NAMES}
    namespace.update({code: obj for code, obj in tape.refs.values() if "." not in code})
    return namespace


# ---------------------------------------------------------------------------------------------
# Tier 0: a specialization's first run without compiling its whole function.
#
# Specializing already ran the forward pass on this call's arguments: every intermediate's value
# is on the tape. A model whose structure changes every call (a new parse tree per sentence)
# would compile a function to run it once; instead, tier 0 walks only the adjoint statements
# (about half the lines; knetc/compiler/interpret.py, no compile()) over the recorded values.
# The whole function is compiled when the same specialization is called again (knetc/api.py
# decides when tier 0 is used).

TIER0_FREE = 1 << 16     # bytes: tier 0 deletes values at least this large after their last use


def can_run_traced(tr: Trace) -> bool:
    """Tier 0 needs the recorded values to be this call's: no primitive whose generated forward
    differs from the traced one (random draws, running statistics; a ``forward=`` primitive
    whose saved value was not kept while tracing). Code for CUDA-graph capture is always
    compiled (tier 0 would run CuPy's own matrix products)."""
    if tr.pure or _captures(tr.xp):
        return False
    for op in tr.tape.ops:
        if op.kind == "call" and (op.rule.impure or (op.saved is not None and op.saved_val is None)):
            return False
    return True


@timed("tier 0")
def run_traced(tr: Trace) -> tuple:
    """``(gradient, loss)`` of the traced call: its stores, then its adjoint over the tape's values."""
    tape, adj = tr.tape, tr.adj
    # the result first: the gradient's NamedTuples and dataclasses name their makers in tape.refs
    returned: set[str] = set()
    stmts = eliminate_dead_code(adj.stmts + [ir.Return(_result_expr(tr, returned), target="_result")])
    stmts = _rewrite_gradients(tr, stmts, returned,
                               lambda: [_forward_stmt(op, tape) for op in tape.ops])
    env = _namespace(tape, tr.xp)
    env.update(zip(tr.params, tr.args))
    stores = []
    recorded = {}       # name -> size of the forward's values
    for op in tape.ops:
        kind = op.kind
        if kind == "call" or kind == "read":
            for o in (op.outs if type(op.outs) is tuple else (op.outs,)):
                if o is not None:
                    env[o.name] = o.val
                    recorded[o.name] = o.nbytes
            if op.saved is not None:        # what a forward= primitive saved while tracing
                env[op.saved.name] = op.saved_val
                recorded[op.saved.name] = getattr(op.saved_val, "nbytes", 0)
        elif type(op.stmt) is ir.Store:
            stores.append(op.stmt)
    sizes = dict(adj.nbytes)
    sizes.update(recorded)
    # Large values are deleted after their last use, the recorded ones included (the tape lets
    # go of them below), and those the backward never reads are not kept at all: the backward's
    # peak memory is then the compiled code's, not the whole forward's plus the backward's.
    # Small ones are left (a `del` costs more to compile than it saves).
    body = insert_frees(stores + lower_accumulation(stmts), keep={"_result", *tr.params},
                        nbytes=sizes, given=recorded, small=TIER0_FREE)
    used = {n for s in body for n in s.uses}
    for name in recorded:
        if name not in used and recorded[name] >= TIER0_FREE:
            del env[name]
    _release(tape)
    # Walked, not compiled: it runs once (knetc/compiler/interpret.py).
    with pool.off():
        interpret.run(body, env)
    return env["_result"]


def _release(tape) -> None:
    """Drop the tape's references to the recorded values (run_traced is their last reader)."""
    for op in tape.ops:
        if op.kind == "call" or op.kind == "read":
            for o in (op.outs if type(op.outs) is tuple else (op.outs,)):
                if o is not None:
                    o.val = None
            op.saved_val = None


def _rewrite_gradients(tr: Trace, stmts: list, returned: set, forward=None) -> list:
    """The NumPy rewrites of accumulated gradients, before their lowering: embeddings' as
    SparseRows (``sparse=True``), picked log-probabilities' without a dense zero array.
    ``forward()``: the forward's statements when ``stmts`` is the adjoint alone (tier 0)."""
    if tr.xp is not np or tr.pure:
        return stmts
    if tr.sparse:
        stmts = sparse_rows(stmts, returned)
    tape = tr.tape
    hit = tape.refs.get(id(prims.logp_back))
    if hit is None:
        return stmts
    made = tape.refs.get(id(prims.logp))
    return fuse_picked_logp(stmts, hit[0], None if made is None else made[0], forward)


def _forward_stmt(op, tape) -> ir.Stmt:
    if op.kind == "read":
        if type(op.outs) is tuple:
            return ir.Assign([o.name for o in op.outs], op.expr, op.loc, unpack=True)
        return ir.Assign(op.outs.name, op.expr, op.loc)
    if op.kind == "effect":
        return op.stmt
    several = type(op.outs) is tuple
    outs = op.outs if several else (op.outs,)
    names = [o.name if o is not None else "_" for o in outs]
    fn = op.fn
    if op.saved is not None:
        fn = op.rule.forward
        names.append(op.saved.name)
    # Impure primitives (random draws, running statistics) run even when their result is unused.
    return ir.Assign(names, call_expr(fn, op.args, op.kwargs, tape), op.loc, effect=op.rule.impure,
                     unpack=several or op.saved is not None)


def _result_expr(tr: Trace, returned: set | None = None) -> ir.Expr:
    """``(gradient, loss)``: what the generated function hands back. ``returned`` collects the
    names of the arrays' gradients handed back as they are (not copied, cast or wrapped)."""
    fresh = {s.defs[0] for s in tr.adj.stmts
             if type(s) in (ir.Accumulate, ir.ScatterAdd) or (type(s) is ir.Assign and s.fresh)}
    given: set[str] = set()
    bare = set() if returned is None else returned
    widest = _widest_float(tr.tape)
    if tr.several:
        grads = ir.Tuple([_grad_structure(w, tr.adj, widest, fresh, given, bare) for w in tr.wrt])
    else:
        grads = _grad_structure(tr.wrt, tr.adj, widest, fresh, given, bare)
    out = [grads, value_expr(tr.loss, tr.tape) if tr.with_loss else ir.NONE]
    if tr.has_aux:
        out.append(value_expr(tr.aux, tr.tape))
    return ir.Tuple(out)


def _grad_structure(value, adj, widest: int, fresh: set, given: set, bare: set) -> ir.Expr:
    """The gradient, shaped like the differentiated argument. Each array's gradient has its
    parameter's dtype (as in PyTorch and JAX), also when wider data (float64) met a float32
    parameter: ``widest`` is the largest float itemsize on the tape. A gradient that is not
    fresh memory of its own (a view, shared with another leaf) is copied: users may update it.
    ``bare`` collects the names handed back as they are."""
    t = type(value)
    if t is Sym:
        g = adj.grad_of(value) if value.diff else None
        if g is None:
            return ir.NONE
        if g is ir.ONE and value.float_leaf:     # the loss is the parameter itself
            return ir.ONE
        if value.float_leaf:
            return ir.call(ir.Name("float"), g)
        dtype = value.dtype
        if value.ndim == 0:
            # A 0-d array or NumPy scalar parameter: 0-d arithmetic gives NumPy or Python
            # scalars, so the gradient is made anew with the parameter's type and dtype.
            g = ir.Const(1.0) if g is ir.ONE else g
            new = ir.call(ir.np_fn("array"), g, dtype_expr(dtype))
            return ir.Subscript(new, ir.Const(())) if isinstance(value.val, np.generic) else new
        if g is ir.ONE:      # the loss is the parameter itself
            return ir.call(ir.np_fn("ones_like"), ir.Var(value))
        if dtype.kind == "f" and dtype.itemsize < widest:
            return ir.method(g, "astype", dtype_expr(dtype))    # a copy, in the right dtype
        own = type(g) is ir.Name and g.id in fresh and g.id not in given
        if type(g) is ir.Name:
            given.add(g.id)
        if own:
            bare.add(g.id)
        return g if adj.pure or own else ir.call(ir.np_fn("copy"), g)
    if t is list or t is tuple:
        items = [_grad_structure(v, adj, widest, fresh, given, bare) for v in value]
        return ir.List(items) if t is list else ir.Tuple(items)
    if t is dict:
        return ir.Dict([ir.lit(k) for k in value],
                       [_grad_structure(v, adj, widest, fresh, given, bare) for v in value.values()])
    if tree.is_node(value):
        # A NamedTuple, dataclass or registered class (the mirror is one): the same class around
        # the gradients of its children, made by its registered unflatten.
        children, aux = tree.node_flatten(value)
        items = [_grad_structure(v, adj, widest, fresh, given, bare) for v in children]
        tape = adj.tape
        make = ir.Name(tape.ref(tree.registration(t)[1], identifier(f"make_{t.__name__}")))
        aux_expr = ir.NONE if aux is None else ir.Name(tape.ref(aux, "aux"))
        return ir.call(make, aux_expr, ir.List(items))
    return ir.NONE


def _widest_float(tape) -> int:
    """The largest itemsize of the float arrays the traced code computed or read (0: none)."""
    widest = 0
    for op in tape.ops:
        if op.kind == "call" or op.kind == "read":
            for o in op.outs if type(op.outs) is tuple else (op.outs,):
                dtype = getattr(getattr(o, "val", None), "dtype", None)
                if dtype is not None and dtype.kind == "f" and dtype.itemsize > widest:
                    widest = dtype.itemsize
    return widest


def _array_module(fn, params, args):
    """numpy or cupy: the one device all arrays of this call live on (no silent host<->device
    copies: a call mixing them is an error naming the arguments)."""
    where = {p: devices_of(a) for p, a in zip(params, args)}
    found = set().union(*where.values()) if where else set()
    if len(found) > 1:
        code = fn.__code__
        detail = ", ".join(f"{p}: {'+'.join(sorted(d))}" for p, d in where.items() if d)
        raise errors.KnetcError(
            f"knetc: the arguments of {fn.__qualname__} mix CPU (numpy) and GPU (cupy) arrays ({detail})",
            filename=code.co_filename, lineno=code.co_firstlineno,
            hint="Move them to one device first: knetc.gpu(w) / knetc.cpu(w), or minibatch(..., xtype=...).")
    if "cupy" in found:
        import cupy
        return cupy
    return np


def _check_parameter(wrt, name, fn):
    code = getattr(fn, "__code__", None)
    where = dict(filename=code.co_filename, lineno=code.co_firstlineno) if code is not None else {}
    leaves = tree.leaves(wrt)
    found = _complex_leaf(leaves)
    if found is not None:
        raise errors.LossError(
            f"knetc: the differentiated argument {name!r} holds complex values ({found}); knetc "
            "differentiates real float parameters", **where,
            hint="Pass the real and imaginary parts as separate float arrays (np.real(z), np.imag(z)) "
                 "and build the complex value inside the function; differentiate with respect to them.")
    if not any(type(s) is Sym and s.diff for s in leaves):
        obj = _parameter_object(leaves)
        if obj is not None:
            cls = type(obj).__qualname__
            raise errors.LossError(
                f"knetc: the differentiated argument {name!r} holds float values only inside an "
                f"object of class {cls}, and knetc does not walk objects of unregistered classes", **where,
                hint=f"Register the class so that knetc walks it: knetc.register_pytree({cls}, "
                     "flatten, unflatten) (flatten(x) -> (children, aux_data); unflatten(aux_data, "
                     f"children) -> x, as JAX's register_pytree_node), or make {cls} a dataclass "
                     "or NamedTuple (walked automatically).")
        raise errors.LossError(
            f"knetc: the differentiated argument {name!r} holds no float array or Python float", **where,
            hint="Differentiate with respect to float parameters (np.float32/np.float64 arrays, "
                 "Python floats, or lists/tuples/dicts, NamedTuples or dataclasses of them); choose "
                 "it with argnum=.")


def _complex_leaf(leaves):
    """A description of the first complex leaf of a (mirrored) argument's leaves, or None."""
    for value in leaves:
        if type(value) is Sym:
            if value.dtype.kind == "c":
                return f"{value.shape} {value.dtype}"
        elif isinstance(value, (complex, np.complexfloating)) or \
                getattr(getattr(value, "dtype", None), "kind", None) == "c":
            return f"a {type(value).__name__}"
    return None


# Values that are not objects holding parameters (numbers, strings, functions, modules, classes).
_UNTRACKED = (int, float, complex, str, bytes, type(None), type, types.ModuleType,
              types.FunctionType, types.BuiltinFunctionType, types.MethodType, np.ufunc, np.generic)


def _parameter_object(leaves):
    """The first leaf of a (mirrored) argument that is an object of an unregistered class holding
    float arrays or floats among its attributes: parameters knetc cannot see, or None."""
    for leaf in leaves:
        if type(leaf) is not Sym and not isinstance(leaf, _UNTRACKED) and \
                not is_array(leaf) and not tree.is_own_class(type(leaf)) and _holds_floats(leaf, 2):
            return leaf
    return None


def _holds_floats(obj, depth: int) -> bool:
    """Do ``obj``'s attributes hold float arrays or floats (in structures, in objects ``depth``
    levels down)?"""
    try:
        attrs = list(vars(obj).values())
    except TypeError:
        attrs = []
    for cls in type(obj).__mro__:
        slots = cls.__dict__.get("__slots__", ())
        for slot in (slots,) if isinstance(slots, str) else slots:
            if slot not in ("__dict__", "__weakref__") and hasattr(obj, slot):
                attrs.append(getattr(obj, slot))
    for x in tree.leaves(tree.auto_register(attrs)):
        if type(x) is float or is_array(x) and x.dtype.kind == "f":
            return True
        if depth > 1 and not isinstance(x, _UNTRACKED) and not is_array(x) and _holds_floats(x, depth - 1):
            return True
    return False


def _check_loss(result, fn, loc):
    """The loss must be a real scalar; the error points at the statement that returned it."""
    code = getattr(fn, "__code__", None)
    if loc[1] is not None:
        filename, lineno = loc
    else:
        filename, lineno = (code.co_filename, code.co_firstlineno) if code is not None else (None, None)
    name = getattr(fn, "__qualname__", type(fn).__name__)

    def fail(what, hint, need="a scalar loss"):
        raise errors.LossError(f"knetc: {name} returned {what}; grad needs {need}",
                               filename=filename, lineno=lineno, hint=hint)
    complex_hint = "Return a real scalar, e.g. np.abs(z) ** 2 or np.real(z) of the complex value."
    bool_hint = ("A comparison has no gradient (it is a step): return a float loss, e.g. a smooth "
                 "surrogate such as np.maximum(0, margin), or select with np.where.")
    def check_array(shape, dtype, size):
        if dtype.kind == "c":
            fail(f"a complex value ({shape} {dtype})", complex_hint, "a real scalar loss")
        if dtype.kind == "b":
            fail(f"a boolean ({shape} bool)", bool_hint, "a real scalar loss")
        if size != 1:
            fail(f"an array of shape {shape}",
                 "Reduce it to a scalar, e.g. return np.sum(...) or np.mean(...).")
    if type(result) is Sym:
        check_array(result.shape, result.dtype, result.size)
        return result
    if result is None:
        fail("None", "Return the loss value.")
    if isinstance(result, (bool, np.bool_)):
        fail(f"a boolean ({result!r})", bool_hint, "a real scalar loss")
    if isinstance(result, (complex, np.complexfloating)):
        fail(f"a complex value ({result!r})", complex_hint, "a real scalar loss")
    if isinstance(result, (int, float, np.integer, np.floating)):
        return result
    if isinstance(result, np.ndarray):     # a constant: it does not depend on the parameter
        check_array(result.shape, result.dtype, result.size)
        if result.dtype.kind in "iuf":
            return result
    fail(f"a {type(result).__name__}",
         "Return one scalar (for several values, return their sum or use separate functions).")


def describe(a, keyed_ints: frozenset | None = None, path: tuple | None = None) -> str:
    """A short description of an argument; with ``keyed_ints`` and its key ``path``, an int that
    the code reads as data (selectors.IntArg) is "int", one keyed by value its value."""
    t = type(a)
    if hasattr(a, "shape") and hasattr(a, "dtype"):
        return f"{tuple(a.shape)} {a.dtype}"
    sub = (lambda k: None) if path is None else (lambda k: path + (k,))
    if t in (list, tuple):
        inner = ", ".join(describe(x, keyed_ints, sub(i)) for i, x in enumerate(a[:4])) + \
            (", …" if len(a) > 4 else "")
        return f"[{inner}]" if t is list else f"({inner})"
    if t is dict:
        return "{" + ", ".join(f"{k!r}: {describe(v, keyed_ints, sub(k))}"
                               for k, v in list(a.items())[:4]) + (", …" if len(a) > 4 else "") + "}"
    if t is float:
        return "float"
    if t is int and keyed_ints is not None and path is not None and path not in keyed_ints:
        return "int"
    return repr(a) if len(repr(a)) < 30 else t.__name__


def _where(fn) -> str:
    code = fn.__code__
    return f"{os.path.basename(code.co_filename)}:{code.co_firstlineno}"
