"""The optimizers' per-element update, written once: run as ONE fused CUDA kernel on CuPy
parameters, and evaluated with NumPy to check that kernel on a machine without a GPU.

Each optimizer's update of one element is a few assignments ``target = expression`` in a small
language that is both Python and (after a mechanical translation) C: names, float literals,
``+ - * /``, a comparison, and three functions: ``T(x)`` (cast to the parameter's dtype),
``sqrt(x)`` and ``sel(cond, a, b)`` (C's ``cond ? a : b``).  The translation to C writes every
operation fully parenthesized, in the order Python's parser groups it, so the kernel performs
the same IEEE operations in the same order as the NumPy evaluation, and both perform the ones
``knetc.optim``'s in-place NumPy path does (its ``_step`` methods say the same in NumPy calls).
Kernels are compiled with ``--fmad=false`` so that NVRTC does not contract ``a * b + c`` into a
fused multiply-add, which would round differently.

Operands: ``g`` (the gradient), ``w`` and the optimizer's state arrays (updated in place, named
as the optimizer's attributes: ``velocity``, ``G``, ``delta``, ``fstm``, ``scndm``), ``sq`` (the
gradient's sum of squares, only with ``gclip``) and the per-step scalars (Python floats, always
float64 in the kernel: the body casts them with ``T(...)`` exactly where the NumPy path uses a
0-d array of the parameter's dtype).  The scalars' values come from the optimizer
(``Optimizer.fused_step_scalars``): this module only says how the element is updated.

Two kernels per update: the scalars as kernel arguments (``graph=False``: a value change never
recompiles), or read from a float64 device row ``kscal`` (``graph=True``: a CUDA graph captures
kernel arguments by value, so values that change every step, such as Adam's bias correction or a
learning-rate schedule's, must live in device memory the host rewrites before each replay).
"""
from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

__all__ = ["UpdateSpec", "spec", "KINDS", "c_expr", "cuda_source", "run", "run_graph",
           "evaluate", "sumsq"]

# kind -> (state attributes updated in place, per-step scalars, statements).  ``gd`` is the
# gradient after clipping and L2 weight decay (see ``_prelude``).
KINDS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[tuple[str, str], ...]]] = {
    # w -= lr * g
    "SGD": ((), ("lr",), (
        ("w", "w - gd * T(lr)"),)),
    # v = gamma*v - lr*g;  w += v
    "Momentum": (("velocity",), ("gamma", "lr"), (
        ("velocity", "velocity * T(gamma) - gd * T(lr)"),
        ("w", "w + velocity"))),
    # v *= gamma; w -= v; v -= lr*g; w += (1+gamma)*v
    "Nesterov": (("velocity",), ("gamma", "lr", "gamma1"), (
        ("velocity", "velocity * T(gamma)"),
        ("w", "w - velocity"),
        ("velocity", "velocity - gd * T(lr)"),
        ("w", "w + velocity * T(gamma1)"))),
    # G += g^2;  w -= g / sqrt(G + eps) * lr
    "Adagrad": (("G",), ("eps", "lr"), (
        ("G", "G + gd * gd"),
        ("w", "w - gd / sqrt(G + T(eps)) * T(lr)"))),
    # G = rho*G + (1-rho)*g^2;  w -= g / sqrt(G + eps) * lr
    "Rmsprop": (("G",), ("rho", "rho1", "eps", "lr"), (
        ("G", "G * T(rho) + gd * gd * T(rho1)"),
        ("w", "w - gd / sqrt(G + T(eps)) * T(lr)"))),
    # G = rho*G + (1-rho)*g^2; dw = sqrt((delta+eps)/(G+eps)) * g;
    # delta = rho*delta + (1-rho)*dw^2; w -= dw * lr
    "Adadelta": (("G", "delta"), ("rho", "rho1", "eps", "lr"), (
        ("G", "G * T(rho) + gd * gd * T(rho1)"),
        ("dw", "sqrt((delta + T(eps)) / (G + T(eps))) * gd"),
        ("delta", "delta * T(rho) + dw * dw * T(rho1)"),
        ("w", "w - dw * T(lr)"))),
    # m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2; w -= m / (sqrt(v) + eps') * step, where
    # eps' = eps*sqrt(1-b2^t) and step = lr*sqrt(1-b2^t)/(1-b1^t) (Adam's bias correction)
    "Adam": (("fstm", "scndm"), ("b1", "b1c", "b2", "b2c", "keps", "kstep"), (
        ("fstm", "fstm * T(b1) + gd * T(b1c)"),
        ("scndm", "scndm * T(b2) + gd * gd * T(b2c)"),
        ("w", "w - fstm / (sqrt(scndm) + T(keps)) * T(kstep)"))),
}


def _prelude(clip: bool, l2: bool, decoupled: bool) -> tuple[tuple[str, str], ...]:
    """The gradient's preparation, in ``Optimizer._apply``'s order: clip (Knet's per-array
    ``gclip``: scale to norm ``gclip`` when above it; ``g * 1`` is ``g`` exactly), then the L2
    weight decay ``w * wd + g`` (torch's ``weight_decay``), or the decoupled decay
    ``w *= 1 - lr*wd`` (AdamW; ``wdf`` is that factor, computed on the host in float64)."""
    out = []
    src = "g"
    if clip:
        out.append(("gc", "g * T(sel(sqrt(sq) > gclip, gclip / sqrt(sq), 1.0))"))
        src = "gc"
    if l2:
        out.append(("gd", f"w * T(wd) + {src}"))
    else:
        out.append(("gd", src))
    if decoupled:
        out.append(("w", "w * T(wdf)"))
    return tuple(out)


@dataclass(frozen=True)
class UpdateSpec:
    """One fused update: the optimizer ``kind`` (a key of ``KINDS``) and the options that change
    its statements (not its values): ``clip`` (gclip > 0), ``l2`` (torch-style weight decay),
    ``decoupled`` (AdamW's weight decay)."""
    kind: str
    clip: bool = False
    l2: bool = False
    decoupled: bool = False

    @property
    def states(self) -> tuple[str, ...]:
        """The optimizer's state attributes the kernel updates in place, in argument order."""
        return KINDS[self.kind][0]

    @property
    def scalars(self) -> tuple[str, ...]:
        """The per-step scalars, in argument (and ``kscal`` row) order."""
        extra = (("gclip",) if self.clip else ()) + (("wd",) if self.l2 else ()) + \
            (("wdf",) if self.decoupled else ())
        return KINDS[self.kind][1] + extra

    @property
    def statements(self) -> tuple[tuple[str, str], ...]:
        return _prelude(self.clip, self.l2, self.decoupled) + KINDS[self.kind][2]

    @property
    def name(self) -> str:
        flags = "".join(c for c, on in zip("cld", (self.clip, self.l2, self.decoupled)) if on)
        return f"knetc_{self.kind.lower()}{'_' + flags if flags else ''}"


@functools.lru_cache(maxsize=None)
def spec(kind: str, clip: bool = False, l2: bool = False, decoupled: bool = False) -> UpdateSpec:
    """The (interned) ``UpdateSpec`` of an optimizer kind and its options."""
    if kind not in KINDS:
        raise KeyError(f"no fused update for optimizer kind {kind!r}")
    if l2 and decoupled:
        raise ValueError("an update has either L2 or decoupled weight decay, not both")
    return UpdateSpec(kind, bool(clip), bool(l2), bool(decoupled))


# ----- the translation to C -------------------------------------------------------------------

_BINOPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
_CMPOPS = {ast.Gt: ">", ast.Lt: "<", ast.GtE: ">=", ast.LtE: "<="}


def c_expr(expr: str) -> str:
    """The C of one expression of the update language, fully parenthesized.

    >>> c_expr("w - gd / sqrt(G + T(eps)) * T(lr)")
    '(w - ((gd / sqrt((G + ((T)(eps))))) * ((T)(lr))))'
    """
    return _c(ast.parse(expr, mode="eval").body)


def _c(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return repr(float(node.value))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        return f"({_c(node.left)} {_BINOPS[type(node.op)]} {_c(node.right)})"
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return f"(-{_c(node.operand)})"
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _CMPOPS:
        return f"({_c(node.left)} {_CMPOPS[type(node.ops[0])]} {_c(node.comparators[0])})"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        f, args = node.func.id, [_c(a) for a in node.args]
        if f == "T" and len(args) == 1:
            return f"((T)({args[0]}))"
        if f == "sqrt" and len(args) == 1:
            return f"sqrt({args[0]})"
        if f == "sel" and len(args) == 3:
            return f"(({args[0]}) ? ({args[1]}) : ({args[2]}))"
    raise ValueError(f"not in the update language: {ast.unparse(node)}")


def cuda_source(s: UpdateSpec, graph: bool = False) -> tuple[str, str, str, str]:
    """``(in_params, out_params, operation, name)`` of the ``cupy.ElementwiseKernel`` of ``s``.

    Inputs: ``g``, ``sq`` (with clip), then the scalars (``graph=False``) or the raw float64
    row ``kscal`` holding them (``graph=True``); outputs (updated in place): ``w``, the states.
    """
    ins = ["T g"] + (["float64 sq"] if s.clip else [])
    body = []
    if graph:
        ins.append("raw float64 kscal")
        body += [f"const double {n} = kscal[{k}];" for k, n in enumerate(s.scalars)]
    else:
        ins += [f"float64 {n}" for n in s.scalars]
    outputs = ("w",) + s.states
    local: set[str] = set()
    for target, expr in s.statements:
        c = c_expr(expr)
        if target in outputs or target in local:
            body.append(f"{target} = {c};")
        else:
            local.add(target)
            body.append(f"T {target} = {c};")
    outs = ", ".join(f"T {n}" for n in outputs)
    return ", ".join(ins), outs, "\n".join(body), s.name + ("_graph" if graph else "")


# ----- the CuPy kernels -------------------------------------------------------------------------

_KERNELS: dict[tuple[UpdateSpec, bool], Any] = {}
_SUMSQ: list = []
# No contraction into fused multiply-adds: the kernel rounds as the NumPy path does.
_OPTIONS = ("--fmad=false",)


def _kernel(s: UpdateSpec, graph: bool):
    """The ``cupy.ElementwiseKernel`` of ``s`` (made once; CuPy compiles it once per dtype)."""
    k = _KERNELS.get((s, graph))
    if k is None:
        import cupy
        ins, outs, op, name = cuda_source(s, graph)
        k = _KERNELS[(s, graph)] = cupy.ElementwiseKernel(
            ins, outs, op, name, no_return=True, options=_OPTIONS)
    return k


def sumsq(g: Any) -> Any:
    """``sum(g*g)`` of a CuPy array as a 0-d float64 device array: one reduction launch, and no
    transfer to the host (so it can be captured in a CUDA graph)."""
    if not _SUMSQ:
        import cupy
        _SUMSQ.append(cupy.ReductionKernel(
            "T x", "float64 y", "(double)x * (double)x", "a + b", "y = a", "0",
            "knetc_sumsq", reduce_type="double"))
    return _SUMSQ[0](g)


def run(s: UpdateSpec, w: Any, g: Any, states: Sequence[Any], scalars: Sequence[float]) -> None:
    """Update CuPy ``w`` and ``states`` in place from ``g`` (same dtype as ``w``): one kernel
    launch (two with clip: the sum of squares first); ``scalars`` in ``s.scalars`` order."""
    k = _kernel(s, False)
    if s.clip:
        k(g, sumsq(g), *scalars, w, *states)
    else:
        k(g, *scalars, w, *states)


def run_graph(s: UpdateSpec, w: Any, g: Any, states: Sequence[Any], kscal: Any) -> None:
    """``run`` with the scalars read from the float64 device row ``kscal`` (capturable)."""
    k = _kernel(s, True)
    if s.clip:
        k(g, sumsq(g), kscal, w, *states)
    else:
        k(g, kscal, w, *states)


# ----- the NumPy evaluation (the check on the CPU) ---------------------------------------------

@functools.lru_cache(maxsize=None)
def _compiled(s: UpdateSpec) -> tuple:
    return tuple((t, compile(ast.parse(e, mode="eval"), f"<{s.name}: {t}>", "eval"))
                 for t, e in s.statements)


def evaluate(s: UpdateSpec, w: np.ndarray, g: np.ndarray, states: Sequence[np.ndarray],
             scalars: Sequence[float]) -> None:
    """The update ``s`` evaluated with NumPy on whole arrays, in place: what the CUDA kernel
    computes for each element, operation for operation (the sum of squares as the NumPy path
    takes it, ``np.dot`` in the parameter's dtype)."""
    dt = w.dtype

    def cast(x):
        return np.asarray(x).astype(dt, copy=False)[()]

    env: dict[str, Any] = dict(zip(s.scalars, (float(v) for v in scalars)))
    env.update(zip(s.states, states))
    env.update(w=w, g=g, T=cast, sqrt=np.sqrt, sel=np.where)
    if s.clip:
        r = g.ravel()
        env["sq"] = float(np.dot(r, r))
    with np.errstate(all="ignore"):   # sel evaluates both branches (gclip / 0 when sq is 0)
        for target, code in _compiled(s):
            env[target] = eval(code, env)  # noqa: S307 - our own statements
    for name, arr in zip(("w",) + s.states, (w,) + tuple(states)):
        arr[...] = env[name]
