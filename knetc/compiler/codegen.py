"""Code generation: forward ops and adjoint statements → Python source → compiled function.

Code is written as strings directly (faster than building and unparsing trees); every statement
is a ``Stmt`` carrying the names it defines and uses, so the optimizer can prune and free them.
The source is registered with ``linecache`` so tracebacks, debuggers and ``inspect`` show it.
"""
from __future__ import annotations

import itertools
import linecache
import operator
import os
import weakref

import numpy as np

from .tape import Sym

_INFIX = {operator.add: "+", operator.sub: "-", operator.mul: "*", operator.truediv: "/",
          operator.floordiv: "//", operator.mod: "%", operator.pow: "**", operator.matmul: "@",
          operator.lt: "<", operator.le: "<=", operator.gt: ">", operator.ge: ">=",
          operator.eq: "==", operator.ne: "!=", operator.and_: "&", operator.or_: "|",
          operator.xor: "^"}
_PREFIX = {operator.neg: "-", operator.invert: "~", operator.pos: "+"}
# Reductions written as methods (x.sum(axis=0)): the same result without np.sum's Python wrapper.
_METHOD_FORM = {np.sum: "sum", np.mean: "mean", np.max: "max", np.min: "min", np.prod: "prod"}
_METHOD_KW = {"axis", "keepdims", "dtype"}


class Stmt:
    """One line of generated code."""
    __slots__ = ("code", "defs", "uses", "loc", "effect", "back")

    def __init__(self, code, defs=(), uses=(), loc=None, effect=False, back=False):
        self.code, self.defs, self.uses, self.loc = code, tuple(defs), tuple(uses), loc
        self.effect, self.back = effect, back


def code_of(value, tape, uses) -> str:
    """Source text for a value in generated code; Sym names are appended to ``uses``."""
    t = type(value)
    if t is Sym:
        uses.append(value.name)
        return value.name
    if t is bool or value is None or t is str or t is int:
        return repr(value)
    if t is float:
        if value != value or value in (float("inf"), float("-inf")):
            return f"float({str(value)!r})"
        r = repr(value)
        return f"({r})" if value < 0 else r
    if t is tuple:
        inner = ", ".join(code_of(v, tape, uses) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if t is list:
        return "[" + ", ".join(code_of(v, tape, uses) for v in value) + "]"
    if t is dict:
        return "{" + ", ".join(f"{code_of(k, tape, uses)}: {code_of(v, tape, uses)}"
                               for k, v in value.items()) + "}"
    if t is slice:
        return f"slice({code_of(value.start, tape, uses)}, {code_of(value.stop, tape, uses)}, " \
               f"{code_of(value.step, tape, uses)})"
    if value is Ellipsis:
        return "..."
    if isinstance(value, np.dtype):
        return _dtype_code(value)
    if isinstance(value, np.generic) and value.ndim == 0 and not isinstance(value, np.void):
        r = repr(value)  # np.float32(0.5): valid code, np is always in scope
        return f"({r})" if value < 0 else r
    return tape.ref(value, _hint(value))


_DTYPES: dict = {}


def _dtype_code(dtype) -> str:
    """np.float32 for a dtype (cached: dtype.name is surprisingly slow)."""
    code = _DTYPES.get(dtype)
    if code is None:
        name = dtype.name
        code = _DTYPES[dtype] = f"np.{name}" if hasattr(np, name) else f"np.dtype({name!r})"
    return code


def _hint(value):
    if type(value).__name__ == "ndarray":
        return "const"
    name = getattr(value, "__name__", None)
    return name if isinstance(name, str) and name.isidentifier() else type(value).__name__.lower()


def index_code(idx, tape, uses) -> str:
    """Subscript text: x[1:3, None, ...] rather than x[(slice(1, 3, None), None, Ellipsis)]."""
    parts = idx if type(idx) is tuple else (idx,)
    out = []
    for p in parts:
        if type(p) is slice:
            a = "" if p.start is None else code_of(p.start, tape, uses)
            b = "" if p.stop is None else code_of(p.stop, tape, uses)
            s = f"{a}:{b}" + ("" if p.step is None else f":{code_of(p.step, tape, uses)}")
            out.append(s)
        elif p is Ellipsis:
            out.append("...")
        else:
            out.append(code_of(p, tape, uses))
    text = ", ".join(out)
    return text + "," if type(idx) is tuple and len(idx) == 1 else text


def call_code(fn, args, kwargs, tape, uses) -> str:
    """Source text of a primitive call, in operator form where Python has one."""
    if fn is operator.getitem:
        return f"{code_of(args[0], tape, uses)}[{index_code(args[1], tape, uses)}]"
    op = _INFIX.get(fn) if hashable(fn) else None
    if op is not None and len(args) == 2 and not kwargs:
        return f"{code_of(args[0], tape, uses)} {op} {code_of(args[1], tape, uses)}"
    op = _PREFIX.get(fn) if hashable(fn) else None
    if op is not None:
        return f"{op}{code_of(args[0], tape, uses)}"
    method = _METHOD_FORM.get(fn) if hashable(fn) else None
    if method is not None and args and type(args[0]) is Sym and hasattr(args[0].val, "ndim") \
            and len(args) <= 2 and set(kwargs) <= _METHOD_KW:
        parts = [code_of(a, tape, uses) for a in args[1:]]
        parts += [f"{k}={code_of(v, tape, uses)}" for k, v in kwargs.items()]
        count = _mean_count(args, kwargs) if fn is np.mean else None
        if count:   # the count is known: sum / n is mean's own arithmetic without its overhead
            return f"{code_of(args[0], tape, uses)}.sum({', '.join(parts)}) / {count}"
        return f"{code_of(args[0], tape, uses)}.{method}({', '.join(parts)})"
    name = code_of(fn, tape, uses)
    parts = [code_of(a, tape, uses) for a in args]
    parts += [f"{k}={code_of(v, tape, uses)}" for k, v in kwargs.items()]
    return f"{name}({', '.join(parts)})"


def _mean_count(args, kwargs) -> int | None:
    """How many elements each mean of a float32/float64 array averages, when code is written
    (None where mean computes differently: float16 accumulates in float32, ints give floats)."""
    x = args[0].val
    if "dtype" in kwargs or getattr(x, "dtype", None) not in (np.float32, np.float64):
        return None
    axis = args[1] if len(args) > 1 else kwargs.get("axis")
    if axis is None:
        return x.size or None
    try:
        axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
        return int(np.prod([x.shape[a] for a in axes])) or None
    except (TypeError, IndexError):
        return None


def hashable(f) -> bool:
    try:
        hash(f)
        return True
    except TypeError:
        return False


# ---------------------------------------------------------------------------------------------
_counter = itertools.count()


def render(name: str, params: list[str], stmts: list[Stmt], header: list[str]) -> str:
    """The function's source: header comments, statements with the user's lines as comments."""
    lines = [f"def {name}({', '.join(params)}):"]
    lines += [f"    # {h}" for h in header]
    last = None
    for s in stmts:
        if s.loc is not None and s.loc[1] is not None and (s.loc, s.back) != last:
            last = (s.loc, s.back)
            text = linecache.getline(s.loc[0], s.loc[1]).strip() if s.loc[0] else ""
            where = f"{os.path.basename(s.loc[0] or '?')}:{s.loc[1]}"
            lines.append(f"    # {'∂ ' if s.back else ''}{where}  {text}")
        lines.append(f"    {s.code}")
    return "\n".join(lines) + "\n"


def register_source(source: str, name: str) -> str:
    """A unique pseudo-file name for generated source, registered with linecache so tracebacks,
    debuggers and ``inspect`` show the generated lines."""
    filename = f"<knetc-{next(_counter)}-{name}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    return filename


def compile_function(source: str, name: str, namespace: dict):
    """Compile generated source under a unique pseudo-file registered with linecache."""
    filename = register_source(source, name)
    code = compile(source, filename, "exec")
    exec(code, namespace)
    fn = namespace[name]
    fn.__knetc_source__ = source
    # The source lives as long as the function (a model with a new structure every call would
    # otherwise fill linecache without bound).
    weakref.finalize(fn, linecache.cache.pop, filename, None)
    return fn
