"""The compiler's one-way pipeline for one call: specialize → adjoint → optimize → codegen."""
from __future__ import annotations

import inspect
import linecache
import os
import time
from dataclasses import dataclass, field

import numpy as np

from .. import errors
from .reverse import Adjoint, base_name
from .codegen import Stmt, call_code, code_of, compile_function, register_source, render
from .optimize import eliminate_dead_code, insert_frees
from ..runtime import prims
from ..runtime.backend import devices_of
from .specialize import Specializer
from .tape import Sym, Tape


@dataclass
class Entry:
    """One cached specialization: the compiled adjoint and how it was made.

    ``fn`` is the generated function; ``run`` calls it, inside ``training_mode(True)`` when its
    code calls primitives that read the training flag (dropout, batchnorm, user rules)."""
    fn: object
    source: str
    name: str
    nops: int
    seconds: float
    info: dict = field(default_factory=dict)
    run: object = None

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
    argnum: int
    pure: bool
    xp: object
    tape: Tape
    adj: Adjoint
    wrt: object
    loss: object
    started: float


def trace(fn, params: list[str], kinds: list, args: tuple, argnum: int, pure: bool = False) -> Trace:
    """Specialize ``fn`` to ``args`` and write the adjoint wrt ``args[argnum]`` (no code yet)."""
    t0 = time.perf_counter()
    xp = _array_module(fn, params, args)
    tape = Tape()
    tape.taken.update(params)
    spec = Specializer(tape)
    mirrored = [spec.mirror_value(a, p, diff=(i == argnum)) for i, (p, a) in enumerate(zip(params, args))]
    wrt = mirrored[argnum]
    _check_parameter(wrt, params[argnum], fn)
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
    result = spec.run(fn, call_args, call_kwargs)
    loss = _check_loss(result, fn, spec.result_loc)
    # GPU fusion reads named values only: there, slices of gradients keep their own statements.
    adj = Adjoint(tape, pure, inline_views=not _fuses(xp))
    if type(loss) is Sym and loss.diff:
        adj.run(loss)
    return Trace(fn, params, args, argnum, pure, xp, tape, adj, wrt, loss, t0)


def compile_trace(tr: Trace) -> Entry:
    """Generate, optimize and compile the whole adjoint function of a trace."""
    fn, params, args, tape, adj, xp = tr.fn, tr.params, tr.args, tr.tape, tr.adj, tr.xp
    forward = [_forward_stmt(op, tape) for op in tape.ops]
    ret = _result_stmt(tr, "return ")
    uses = ret.uses
    stmts = eliminate_dead_code(forward + adj.stmts + [ret], ())
    # On the GPU, runs of elementwise statements become one fused CUDA kernel each (knetc/fuse.py;
    # KNETC_FUSE=0 turns it off). On the CPU, NumPy's one-call-per-op is already the fastest form.
    kernels = {}
    if _fuses(xp):
        from .fuse import fuse_program
        stmts, kernels = fuse_program(stmts, tape, adj)
    reads = {o.name for op in tape.ops if op.kind == "read"
             for o in (op.outs if type(op.outs) is tuple else (op.outs,))}
    sizes = dict(adj.nbytes)
    for op in tape.ops:
        if op.kind == "call":
            for o in (op.outs if type(op.outs) is tuple else (op.outs,)):
                if o is not None:
                    sizes[o.name] = o.nbytes
    stmts = insert_frees(stmts, keep=set(uses) | reads | set(params), nbytes=sizes)

    name = f"{_ident(fn.__name__)}_grad"
    shapes = ", ".join(_describe(a) for a in args)
    header = [f"knetc: gradient of {fn.__qualname__} ({_where(fn)}) wrt {params[tr.argnum]}",
              f"specialized to ({shapes})" + ("; pure (no in-place updates)" if tr.pure else "")]
    # Generated code says np.*; for CuPy arguments `np` is bound to cupy (the cache keys on the
    # array type, so CPU and GPU specializations never share code).
    if xp is not np:
        header.append("np = cupy: this specialization runs on the GPU")
    source = render(name, params, stmts, header)
    namespace = _namespace(tape, xp)
    namespace.update(kernels)
    compiled = compile_function(source, name, namespace)
    nops = sum(1 for s in stmts if not s.code.startswith(("del ", "return ")))
    run = _in_training(compiled) if _reads_training(tape) else compiled
    return Entry(compiled, source, name, nops, time.perf_counter() - tr.started, run=run)


def _reads_training(tape) -> bool:
    """May the generated code's primitives read ``training()`` when they run?"""
    return any(op.kind == "call" and (op.rule.impure or op.rule.forward is not None
                                      or not op.rule.builtin) for op in tape.ops)


def _in_training(fn):
    """``fn`` run with the training flag on (dropout active while differentiating), as when traced."""
    state = prims._state

    def run(*args):
        was = getattr(state, "training", False)
        state.training = True
        try:
            return fn(*args)
        finally:
            state.training = was
    return run


def _fuses(xp) -> bool:
    return xp is not np and os.environ.get("KNETC_FUSE", "1") != "0"


def _namespace(tape, xp) -> dict:
    """The globals of generated code: np, the guard exception, and every object it refers to."""
    namespace = {"np": xp, "_GuardFailed": errors.GuardFailed}
    namespace.update({code: obj for code, obj in tape.refs.values() if "." not in code})
    return namespace


# ---------------------------------------------------------------------------------------------
# Tier 0: a specialization's first run without compiling its whole function.
#
# Specializing already ran the forward pass on this call's arguments: every intermediate's value
# is on the tape. A model whose structure changes every call (a new parse tree per sentence)
# would compile a function to run it once; instead, tier 0 compiles only the adjoint statements
# (about half the lines) and runs them over the recorded values. The whole function is compiled
# when the same specialization is called again (knetc/api.py decides when tier 0 is used).

def can_run_traced(tr: Trace) -> bool:
    """Tier 0 needs the recorded values to be this call's: no primitive whose generated forward
    differs from the traced one (random draws, running statistics, saved values)."""
    if tr.pure:
        return False
    for op in tr.tape.ops:
        if op.kind == "call" and (op.rule.impure or op.rule.forward is not None):
            return False
    return True


def run_traced(tr: Trace) -> tuple:
    """``(gradient, loss)`` of the traced call: its stores, then its adjoint over the tape's values."""
    tape, adj = tr.tape, tr.adj
    env = _namespace(tape, tr.xp)
    env.update(zip(tr.params, tr.args))
    stores = []
    for op in tape.ops:
        kind = op.kind
        if kind == "call" or kind == "read":
            if type(op.outs) is tuple:
                for o in op.outs:
                    if o is not None:
                        env[o.name] = o.val
            else:
                env[op.outs.name] = op.outs.val
        elif kind == "store":
            stores.append(op.expr)
    stmts = eliminate_dead_code(adj.stmts + [_result_stmt(tr, "_result = ")], ())
    source = "\n".join(stores + [s.code for s in stmts]) + "\n"
    filename = register_source(source, f"{_ident(tr.fn.__name__)}_grad_tier0")
    # One dict for globals and locals: generated comprehensions see every name.
    exec(compile(source, filename, "exec"), env)
    linecache.cache.pop(filename, None)   # kept for the traceback only when it raised
    return env["_result"]


def _forward_stmt(op, tape) -> Stmt:
    if op.kind == "read":
        if type(op.outs) is tuple:
            names = [o.name for o in op.outs]
            target = ", ".join(names) + ("," if len(names) == 1 else "")
            return Stmt(f"{target} = {op.expr}", names, (), op.loc)
        return Stmt(f"{op.outs.name} = {op.expr}", (op.outs.name,), (), op.loc)
    if op.kind == "check":
        names = [s.name for s in op.uses]
        return Stmt(op.expr.format(*names), (), names, op.loc, effect=True)
    if op.kind in ("guard", "store"):
        return Stmt(op.expr, (), tuple(s.name if type(s) is Sym else s for s in op.uses), op.loc,
                    effect=True)
    outs = op.outs if type(op.outs) is tuple else (op.outs,)
    names = [o.name if o is not None else "_" for o in outs]
    fn = op.fn
    if op.saved is not None:
        fn = op.rule.forward
        names.append(op.saved.name)
    uses: list[str] = []
    text = call_code(fn, op.args, op.kwargs, tape, uses)
    target = ", ".join(names)
    # Impure primitives (random draws, running statistics) run even when their result is unused.
    return Stmt(f"{target} = {text}", [n for n in names if n != "_"], uses, op.loc,
                effect=op.rule.impure)


def _result_stmt(tr: Trace, lead: str) -> Stmt:
    """``<lead>(gradient, loss)``: the statement that hands the result back."""
    uses: list[str] = []
    grads = _grad_structure(tr.wrt, tr.adj, uses, _widest_float(tr.tape))
    loss_code = code_of(tr.loss, tr.tape, uses)
    return Stmt(f"{lead}{grads}, {loss_code}", uses=uses, effect=True)


def _grad_structure(value, adj, uses, widest: int) -> str:
    """Code for the gradient, shaped like the differentiated argument. Each array's gradient has
    its parameter's dtype (as in PyTorch and JAX), also when wider data (float64) met a float32
    parameter: ``widest`` is the largest float itemsize on the tape."""
    t = type(value)
    if t is Sym:
        g = adj.grad_of(value) if value.diff else None
        if g is None:
            return "None"
        if g == "1.0":      # the loss is the parameter itself
            return "1.0" if value.float_leaf else f"np.ones_like({value.name})"
        uses.append(base_name(g))
        if value.float_leaf:
            return f"float({g})"
        dtype = value.dtype
        if dtype.kind == "f" and dtype.itemsize < widest:
            return f"{g}.astype({code_of(dtype, adj.tape, [])})"    # a copy, in the right dtype
        # A gradient that is a view or shared with another leaf is copied: users may update it.
        return g if adj.pure or adj.grads[id(value)][1] else f"np.copy({g})"
    if t is list:
        return "[" + ", ".join(_grad_structure(v, adj, uses, widest) for v in value) + "]"
    if t is tuple:
        inner = ", ".join(_grad_structure(v, adj, uses, widest) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if t is dict:
        return "{" + ", ".join(f"{k!r}: {_grad_structure(v, adj, uses, widest)}"
                               for k, v in value.items()) + "}"
    return "None"


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
    from .tape import syms_in
    if not any(s.diff for s in syms_in(wrt)):
        code = fn.__code__
        raise errors.LossError(
            f"knetc: the differentiated argument {name!r} holds no float array or Python float",
            filename=code.co_filename, lineno=code.co_firstlineno,
            hint="Differentiate with respect to float parameters (np.float32/np.float64 arrays, "
                 "Python floats, or lists/tuples/dicts of them); choose it with argnum=.")


def _check_loss(result, fn, loc):
    """The loss must be a scalar; the error points at the statement that returned it."""
    filename, lineno = loc if loc[1] is not None else (fn.__code__.co_filename, fn.__code__.co_firstlineno)

    def fail(what, hint):
        raise errors.LossError(f"knetc: {fn.__qualname__} returned {what}; grad needs a scalar loss",
                               filename=filename, lineno=lineno, hint=hint)
    if type(result) is Sym:
        if result.size != 1:
            fail(f"an array of shape {result.shape}",
                 "Reduce it to a scalar, e.g. return np.sum(...) or np.mean(...).")
        return result
    if result is None:
        fail("None", "Return the loss value.")
    if isinstance(result, (int, float, np.generic)):
        return result
    fail(f"a {type(result).__name__}",
         "Return one scalar (for several values, return their sum or use separate functions).")


def _describe(a) -> str:
    t = type(a)
    if hasattr(a, "shape") and hasattr(a, "dtype"):
        return f"{tuple(a.shape)} {a.dtype}"
    if t in (list, tuple):
        inner = ", ".join(_describe(x) for x in a[:4]) + (", …" if len(a) > 4 else "")
        return f"[{inner}]" if t is list else f"({inner})"
    if t is dict:
        return "{" + ", ".join(f"{k!r}: {_describe(v)}" for k, v in list(a.items())[:4]) + \
            (", …" if len(a) > 4 else "") + "}"
    if t is float:
        return "float"
    return repr(a) if len(repr(a)) < 30 else t.__name__


def _where(fn) -> str:
    code = fn.__code__
    return f"{os.path.basename(code.co_filename)}:{code.co_firstlineno}"


def _ident(name: str) -> str:
    s = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name)
    return s if s and not s[0].isdigit() else f"f{s}"

