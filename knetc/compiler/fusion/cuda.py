"""The CUDA side of fusion: a group's statements written as one CuPy ``ElementwiseKernel``.

``Emitter`` turns a ``plan.Group`` into the four strings CuPy compiles (``KernelSource``):
inputs ``x0, x1, ...``, outputs ``z0, z1, ...`` and registers ``t0, t1, ...``, one C line per
statement. Types follow NumPy: outputs are declared with the dtype NumPy would give, literals are
written in their operation's type (``1.0f`` for float32), Python scalars are converted the way
NumPy converts them, and ``x op= e`` is computed in NumPy's type and cast back. What C cannot
say the NumPy way (bool arithmetic, integer powers, ``tanh`` of an int) raises ``NotFusible``,
which the planner takes as "leave this statement alone".

``KernelCache`` compiles each distinct source once; ``CupyKernel`` is what a fused statement
calls on the GPU.
"""
from __future__ import annotations

import ast
import hashlib
from typing import NamedTuple

import numpy as np



class NotFusible(Exception):
    """A statement or group that cannot be fused (raised while typing it or writing its C)."""


# A value's type is a NumPy dtype (a device array, or a NumPy scalar) or one of the Python types
# float/int/bool (a Python scalar). These are the types a kernel can take and make.
CTYPE = {np.dtype(np.float32): "float", np.dtype(np.float64): "double",
         np.dtype(np.int32): "int", np.dtype(np.int64): "long long", np.dtype(np.bool_): "bool",
         float: "double", int: "long long", bool: "bool"}
_PARAM = {np.dtype(np.float32): "float32", np.dtype(np.float64): "float64",
          np.dtype(np.int32): "int32", np.dtype(np.int64): "int64", np.dtype(np.bool_): "bool",
          float: "float64", int: "int64", bool: "bool"}
_CBINOP = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**"}
_CCMP = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!="}
# C operator precedences, as the emitter uses them to decide on parentheses
PREC_TERNARY, PREC_CMP, PREC_ADD, PREC_MUL, PREC_UNARY, PREC_ATOM = 1, 3, 4, 5, 6, 7
_FLOAT_FN = {"tanh": "tanh", "exp": "exp", "log": "log", "sqrt": "sqrt", "maximum": "fmax",
             "minimum": "fmin"}


class KernelSource(NamedTuple):
    """The four strings of ``cupy.ElementwiseKernel(in_params, out_params, operation, name)``."""
    in_params: str
    out_params: str
    operation: str
    name: str

    def __str__(self):
        return (f"// {self.name}\n// in:  {self.in_params}\n// out: {self.out_params}\n"
                f"{self.operation}\n")


def kernel_source(group) -> KernelSource:
    """The CUDA text of a group: ``(in_params, out_params, operation, name)`` for CuPy."""
    return group.source


# ------------------------------------------------------------------------------ CUDA source
def _literal(value, typ) -> str:
    """``value`` as a C literal of type ``typ`` (NotFusible if it cannot be written exactly)."""
    c = CTYPE[typ]
    if c == "float":
        v = float(np.float32(value))
        if not np.isfinite(v):
            raise NotFusible("literal")
        text = repr(v)
        return f"{text}f"
    if c == "double":
        return repr(float(value))
    if c == "bool":
        return "true" if value else "false"
    if float(value) != int(value):
        raise NotFusible("literal")
    return f"{int(value)}LL" if c == "long long" else str(int(value))


class Emitter:
    """Writes the kernel: x0.. inputs, z0.. outputs, t0.. registers, one line per statement.
    (Not y0/y1: those are Bessel functions of the CUDA math library.)"""

    def __init__(self, group):
        self.g = group
        self.lines: list[str] = []
        self.ntemp = 0

    def source(self) -> KernelSource:
        g = self.g
        vars_, in_params, out_params, outvar = {}, [], [], {}
        for k, name in enumerate(g.inputs):
            typ = g.input_types[name]
            vars_[name] = (f"x{k}", typ)
            in_params.append(f"{_PARAM[typ]} x{k}")
        for k, name in enumerate(g.outputs):
            outvar[name] = f"z{k}"
            out_params.append(f"{_PARAM[g.out_types[name]]} z{k}")
            if name in g.inouts:
                vars_[name] = (f"z{k}", g.out_types[name])
        members = g.elems
        for k, e in enumerate(members):
            self.e = e
            if e.aug is None:
                code, _ = self.operand(e.expr, e.dtype, vars_)
            else:                                     # x op= e: computed in NumPy's type, cast back
                old, told = vars_[e.target]
                ct = e.aug_type
                sym = _CBINOP[type(e.aug)]
                prec = PREC_ADD if sym in "+-" else PREC_MUL
                a, pa = self.cast(old, PREC_ATOM, told, ct)
                b, pb = self.operand(e.expr, ct, vars_)
                a = f"({a})" if pa < prec else a
                b = f"({b})" if pb <= prec else b
                code, _ = self.cast(f"{a} {sym} {b}", prec, ct, e.dtype)
            later_reads = any(e.target in m.reads for m in members[k + 1:])
            if g.is_output[k] and not later_reads:
                self.lines.append(f"{outvar[e.target]} = {code};")
                vars_[e.target] = (outvar[e.target], e.dtype)
            else:
                t = self.temp()
                self.lines.append(f"{CTYPE[e.dtype]} {t} = {code};")
                vars_[e.target] = (t, e.dtype)
                if g.is_output[k]:
                    self.lines.append(f"{outvar[e.target]} = {t};")
        operation = "\n".join(self.lines)
        ins, outs = ", ".join(in_params), ", ".join(out_params)
        digest = hashlib.sha1(f"{ins}|{outs}|{operation}".encode()).hexdigest()[:12]
        return KernelSource(ins, outs, operation, f"knetc_fused_{digest}")

    def temp(self):
        t = f"t{self.ntemp}"
        self.ntemp += 1
        return t

    @staticmethod
    def cast(code, prec, frm, to):
        if CTYPE[frm] == CTYPE[to]:
            return code, prec
        inner = code if prec >= PREC_ATOM else f"({code})"
        return f"({CTYPE[to]}){inner}", PREC_UNARY

    def operand(self, node, to, vars_):
        """Code for ``node`` converted to type ``to``: (text, precedence)."""
        e = self.e
        if id(node) in e.consts:
            text = _literal(e.consts[id(node)], to)
            return (f"({text})", PREC_ATOM) if text.startswith("-") else (text, PREC_ATOM)
        code, prec = self.expr(node, vars_)
        return self.cast(code, prec, e.types[id(node)], to)

    def expr(self, node, vars_):
        e = self.e
        typ = e.types[id(node)]
        t = type(node)
        if id(node) in e.consts:
            return self.operand(node, typ, vars_)
        if t is ast.Name:
            return vars_[node.id][0], PREC_ATOM
        if t is ast.BinOp:
            sym = _CBINOP[type(node.op)]
            if typ == np.dtype(np.bool_):
                raise NotFusible("bool arithmetic")
            if sym == "**":
                return self.power(node, typ, vars_)
            prec = PREC_ADD if sym in "+-" else PREC_MUL
            a, pa = self.operand(node.left, typ, vars_)
            b, pb = self.operand(node.right, typ, vars_)
            a = f"({a})" if pa < prec else a
            b = f"({b})" if pb <= prec else b
            return f"{a} {sym} {b}", prec
        if t is ast.UnaryOp:
            a, pa = self.operand(node.operand, typ, vars_)
            if type(node.op) is ast.UAdd:
                return a, pa
            a = f"({a})" if pa < PREC_UNARY or a.startswith("-") else a
            return f"-{a}", PREC_UNARY
        if t is ast.Compare:
            ct = e.compute[id(node)]
            a, pa = self.operand(node.left, ct, vars_)
            b, pb = self.operand(node.comparators[0], ct, vars_)
            a = f"({a})" if pa <= PREC_CMP else a
            b = f"({b})" if pb <= PREC_CMP else b
            return f"{a} {_CCMP[type(node.ops[0])]} {b}", PREC_CMP
        if t is ast.Call:
            f = node.func
            if f.attr == "astype":
                return self.operand(f.value, typ, vars_)
            c = CTYPE[typ]
            if f.attr == "where":
                cond, _ = self.operand(node.args[0], np.dtype(np.bool_), vars_)
                a, _ = self.operand(node.args[1], typ, vars_)
                b, _ = self.operand(node.args[2], typ, vars_)
                return f"({cond} ? {a} : {b})", PREC_ATOM
            if c in ("float", "double") and f.attr in ("maximum", "minimum"):
                return self.nan_max(f.attr, node.args, typ, vars_)
            if c in ("float", "double"):
                name = _FLOAT_FN[f.attr] + ("f" if c == "float" else "")
            elif f.attr in ("maximum", "minimum") and c in ("int", "long long"):
                name = "max" if f.attr == "maximum" else "min"
            else:
                raise NotFusible(f"{f.attr} on {c}")
            args = ", ".join(self.operand(a, typ, vars_)[0] for a in node.args)
            return f"{name}({args})", PREC_ATOM
        raise NotFusible(ast.dump(node)[:40])

    def atom(self, node, typ, vars_):
        """``node`` as a variable or literal (a register is written for anything else)."""
        code, prec = self.operand(node, typ, vars_)
        if prec < PREC_ATOM or "(" in code:
            t = self.temp()
            self.lines.append(f"{CTYPE[typ]} {t} = {code};")
            code = t
        return code

    def nan_max(self, fn, args, typ, vars_):
        """np.maximum/minimum: fmaxf/fminf, but a NaN operand gives NaN as in NumPy and CuPy
        (CuPy's maximum is ``isnan(a) | isnan(b) ? NAN : max(a, b)``); literals are not NaN."""
        e = self.e
        a, b = (self.atom(x, typ, vars_) for x in args)
        name = _FLOAT_FN[fn] + ("f" if CTYPE[typ] == "float" else "")
        call = f"{name}({a}, {b})"
        maybe_nan = [x for x, node in ((a, args[0]), (b, args[1])) if id(node) not in e.consts]
        if not maybe_nan:
            return call, PREC_ATOM
        if len(maybe_nan) == 1:
            return f"(isnan({maybe_nan[0]}) ? {maybe_nan[0]} : {call})", PREC_ATOM
        return f"(isnan({a}) || isnan({b}) ? {a} + {b} : {call})", PREC_ATOM

    def power(self, node, typ, vars_):
        c = CTYPE[typ]
        if c not in ("float", "double"):
            raise NotFusible("integer power")
        e = self.e
        base, pb = self.operand(node.left, typ, vars_)
        k = e.consts.get(id(node.right))
        if k is not None and k == 2:
            if pb < PREC_ATOM:
                t = self.temp()
                self.lines.append(f"{c} {t} = {base};")
                base = t
            return f"{base} * {base}", PREC_MUL
        if k is not None and k == 0.5:
            return f"{'sqrtf' if c == 'float' else 'sqrt'}({base})", PREC_ATOM
        expo, _ = self.operand(node.right, typ, vars_)
        return f"{'powf' if c == 'float' else 'pow'}({base}, {expo})", PREC_ATOM


# ---------------------------------------------------------------------------------- kernels
def _cupy_compile(source: KernelSource):
    import cupy
    return cupy.ElementwiseKernel(source.in_params, source.out_params, source.operation,
                                  source.name)


class KernelCache:
    """Compiled kernels by source text: identical groups (in one program or across
    specializations) share one compiled kernel."""

    def __init__(self, compile=None):
        self._compile = compile or _cupy_compile
        self.kernels: dict = {}
        self.hits = self.misses = 0

    def get(self, source: KernelSource):
        k = self.kernels.get(source)
        if k is None:
            self.misses += 1
            k = self.kernels[source] = self._compile(source)
        else:
            self.hits += 1
        return k

    def __len__(self):
        return len(self.kernels)


CACHE = KernelCache()


class CupyKernel:
    """What a fused statement calls on the GPU: ``_k3(*inputs, *inouts)`` -> output(s).

    The CuPy ``ElementwiseKernel`` comes from ``CACHE`` on the first call. Inputs broadcast by
    CuPy's elementwise rules; outputs are new arrays of the broadcast shape, except in-out
    accumulators, which are passed in and updated in place (then all outputs are passed: the
    others are allocated here with the in-out's shape, which is the kernel's shape)."""

    def __init__(self, group, cache: KernelCache | None = None):
        self.source = group.source
        self.nin = len(group.inputs)
        self.inout = group.inout_positions
        self.out_dtypes = [group.out_types[n] for n in group.outputs]
        self.cache = cache or CACHE
        self._kernel = None

    def __call__(self, *args):
        k = self._kernel
        if k is None:
            k = self._kernel = self.cache.get(self.source)
        if not self.inout:
            return k(*args)
        import cupy
        ins, given = args[:self.nin], iter(args[self.nin:])
        shape = args[self.nin].shape
        outs = [next(given) if i in self.inout else cupy.empty(shape, dt)
                for i, dt in enumerate(self.out_dtypes)]
        return k(*ins, *outs)

    def __repr__(self):
        return f"<fused kernel {self.source.name}>"

