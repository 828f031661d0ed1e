"""CPU stand-ins for the fusion pass's GPU side, and the counts the tests report.

Not part of knetc: the package never runs on the CPU (the CPU path does not fuse), so what only
the tests need lives here.

``KernelOnCPU``         a kernel that runs the group's original statements with NumPy
``KernelSourceOnCPU``   a kernel that interprets the generated CUDA operation with NumPy, in C's
                        types, so the kernel text itself is checked without a GPU
``count_launches``      statements that launch at least one device kernel
``count_kernels``       an estimate of the kernels a statement list launches
``probe_shapes``        shapes and dtypes by running a program on the CPU
``parse_stmt``          one line of Python as the IR statement the compiler would hold for it
                        (hand-written programs for the tests)
"""
from __future__ import annotations

import ast
import operator
import re

import numpy as np

from knetc.compiler import ir
from knetc.compiler.fusion import Group
from knetc.compiler.fusion.cuda import CTYPE, PREC_ADD, PREC_CMP, PREC_MUL, PREC_TERNARY
from knetc.compiler.fusion.plan import FUNCS, NP_DTYPES, names_in, record_value, statement_tree

_PY_SCALARS = (float, int, bool)


class KernelOnCPU:
    """CPU stand-in with CupyKernel's signature: runs the group's original statements."""

    def __init__(self, group: Group):
        self.group = group
        self.params = group.inputs + group.inouts
        self.outputs = group.outputs
        text = "\n".join(s.code for s in group.stmts)
        self.code = compile(text, f"<fused {group.source.name}>", "exec")

    def __call__(self, *args):
        ns = {"np": np}
        ns.update(zip(self.params, args))
        exec(self.code, ns)
        outs = tuple(ns[n] for n in self.outputs)
        return outs[0] if len(outs) == 1 else outs


# --- an interpreter of the generated CUDA operation, for testing the text on the CPU --------
_TOKEN = re.compile(r"\s*(?:(\d+\.\d*(?:e[-+]?\d+)?f?|\d+(?:e[-+]?\d+)f?|\d+(?:LL)?)|"
                    r"(long long|[A-Za-z_]\w*)|(<=|>=|==|!=|\|\||[-+*/<>?:(),;=]))")
_C2NP = {"float": np.float32, "double": np.float64, "int": np.int32, "long long": np.int64,
         "bool": np.bool_}
_CFUNCS = {"tanhf": np.tanh, "expf": np.exp, "logf": np.log, "sqrtf": np.sqrt, "tanh": np.tanh,
           "exp": np.exp, "log": np.log, "sqrt": np.sqrt, "fmaxf": np.fmax, "fminf": np.fmin,
           "fmax": np.fmax, "fmin": np.fmin, "max": np.maximum, "min": np.minimum,
           "powf": np.power, "pow": np.power, "isnan": np.isnan}
_CBIN = {"+": (PREC_ADD, operator.add), "-": (PREC_ADD, operator.sub),
         "*": (PREC_MUL, operator.mul), "/": (PREC_MUL, operator.truediv),
         "<": (PREC_CMP, operator.lt), "<=": (PREC_CMP, operator.le),
         ">": (PREC_CMP, operator.gt), ">=": (PREC_CMP, operator.ge),
         "==": (PREC_CMP, operator.eq), "!=": (PREC_CMP, operator.ne),
         "||": (2, np.logical_or)}


def _tokens(text):
    """One line of the operation as (kind, text) tokens: "num", "id" or "op"."""
    pos, out = 0, []
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise SyntaxError(f"cannot read CUDA text at {text[pos:pos + 20]!r}")
        num, ident, op = m.groups()
        out.append(("num", num) if num else ("id", ident) if ident else ("op", op))
        pos = m.end()
    return out


class _CExpr:
    """Evaluates the C expression subset the emitter writes, with NumPy, in C's types."""

    def __init__(self, toks, env):
        self.toks, self.i, self.env = toks, 0, env

    def peek(self):
        return self.toks[self.i] if self.i < len(self.toks) else (None, None)

    def take(self, want=None):
        tok = self.toks[self.i]
        if want is not None and tok[1] != want:
            raise SyntaxError(f"expected {want!r}, got {tok[1]!r}")
        self.i += 1
        return tok

    def ternary(self):
        c = self.binary(PREC_TERNARY)
        if self.peek()[1] == "?":
            self.take()
            a = self.ternary()
            self.take(":")
            b = self.ternary()
            return np.where(c, a, b)
        return c

    def binary(self, minprec):
        left = self.unary()
        while True:
            kind, op = self.peek()
            if kind != "op" or op not in _CBIN or _CBIN[op][0] <= minprec:
                return left
            self.take()
            right = self.binary(_CBIN[op][0])
            a, b = np.asarray(left), np.asarray(right)
            if a.dtype != b.dtype:
                raise TypeError(f"mixed C types {a.dtype} {op} {b.dtype} (the emitter casts)")
            left = _CBIN[op][1](left, right)

    def unary(self):
        kind, tok = self.peek()
        if tok == "-":
            self.take()
            return -self.unary()
        if tok == "(" and self.toks[self.i + 1][1] in _C2NP and self.toks[self.i + 2][1] == ")":
            self.take()
            typ = _C2NP[self.take()[1]]
            self.take(")")
            return np.asarray(self.unary()).astype(typ)[()]
        return self.primary()

    def primary(self):
        kind, tok = self.take()
        if tok == "(":
            v = self.ternary()
            self.take(")")
            return v
        if kind == "num":
            if tok.endswith("f"):
                return np.float32(float(tok[:-1]))
            if tok.endswith("LL"):
                return np.int64(int(tok[:-2]))
            return np.float64(float(tok)) if ("." in tok or "e" in tok) else np.int32(int(tok))
        if tok in ("true", "false"):
            return np.bool_(tok == "true")
        if self.peek()[1] == "(":
            self.take()
            args = [self.ternary()]
            while self.peek()[1] == ",":
                self.take()
                args.append(self.ternary())
            self.take(")")
            return _CFUNCS[tok](*args)
        return self.env[tok]


class KernelSourceOnCPU:
    """CPU stand-in that interprets the generated CUDA operation itself with NumPy (the C types
    of every literal, cast and register are kept), so the kernel text can be checked on CPU."""

    def __init__(self, group: Group):
        self.source = group.source
        self.group_outputs = list(group.outputs)
        self.nin = len(group.inputs)
        self.inout = group.inout_positions
        self.out_dtypes = [group.out_types[n] for n in group.outputs]
        self.lines = [_tokens(line) for line in self.source.operation.split("\n") if line.strip()]

    def __call__(self, *args):
        ins, given = args[:self.nin], list(args[self.nin:])
        shape = np.broadcast_shapes(*[np.shape(a) for a in args])
        env = {f"x{k}": (a if type(a) not in _PY_SCALARS else
                         _C2NP[CTYPE[type(a)]](a)) for k, a in enumerate(ins)}
        for k, pos in enumerate(self.inout):
            env[f"z{pos}"] = given[k].copy()
        with np.errstate(all="ignore"):
            for toks in self.lines:
                typ = None
                if toks[0][1] in _C2NP and toks[1][0] == "id" and toks[2][1] == "=":
                    typ = _C2NP[toks[0][1]]
                    toks = toks[1:]
                name = toks[0][1]
                p = _CExpr(toks[2:], env)
                v = p.ternary()
                p.take(";")
                if typ is not None:
                    v = np.asarray(v).astype(typ)[()]
                elif name.startswith("z"):
                    v = np.asarray(v).astype(self.out_dtypes[int(name[1:])])[()]
                env[name] = v
        outs = []
        for k, dt in enumerate(self.out_dtypes):
            v = np.broadcast_to(np.asarray(env[f"z{k}"], dt), shape)
            if k in self.inout:
                arr = given[self.inout.index(k)]
                arr[...] = v
                outs.append(arr)
            else:
                outs.append(np.array(v))
        return outs[0] if len(outs) == 1 else tuple(outs)


# ---------------------------------------------------------------------------------- reports
_VIEWS = {"split", "array_split", "broadcast_to", "reshape", "transpose", "expand_dims",
          "squeeze", "ravel", "view", "swapaxes", "moveaxis"}
_HOST_FUNCS = {"float", "int", "bool", "len", "range", "tuple", "list", "isinstance"}


def _launches(tree, host: set) -> int:
    """0 or 1: does this statement launch a device kernel (roughly)?"""
    t = type(tree)
    if t in (ast.Delete, ast.If, ast.Pass, ast.Raise, ast.Assert):
        return 0
    if t is ast.Return:
        v = tree.value
        return int(v is not None and any(
            type(n) is ast.Call and not (type(n.func) is ast.Name and n.func.id in _HOST_FUNCS)
            for n in ast.walk(v)))
    if t is ast.Expr:
        return 1
    if t not in (ast.Assign, ast.AugAssign):
        return 1
    v = tree.value
    if t is ast.Assign and _is_view(v, host):
        return 0
    names = {n.id for n in ast.walk(v) if type(n) is ast.Name and type(n.ctx) is ast.Load}
    calls = [n for n in ast.walk(v) if type(n) is ast.Call]
    if names <= host | {"np"} and all(_host_call(c) for c in calls):
        return 0
    return 1


def _host_call(c) -> bool:
    f = c.func
    return (type(f) is ast.Name and f.id in _HOST_FUNCS) or (
        type(f) is ast.Attribute and type(f.value) is ast.Name and f.value.id == "np"
        and f.attr in NP_DTYPES)


def _is_view(v, host) -> bool:
    t = type(v)
    if t in (ast.Name, ast.Constant):
        return True
    if t is ast.Tuple:
        return all(_is_view(x, host) for x in v.elts)
    if t is ast.Attribute:                        # x.T, obj.attr
        return _is_view(v.value, host)
    if t is ast.Subscript:                        # basic indexing: ints, slices, None, ...
        idx = v.slice
        parts = idx.elts if type(idx) is ast.Tuple else [idx]
        return _is_view(v.value, host) and all(_basic_index(p, host) for p in parts)
    if t is ast.Call:
        f = v.func
        if type(f) is ast.Attribute and f.attr in _VIEWS:
            if type(f.value) is ast.Name and f.value.id == "np":    # np.split(x, 4, axis=1)
                base, rest = v.args[:1], v.args[1:]
            else:                                                   # x.reshape((4, 1))
                base, rest = [f.value], list(v.args)
            rest += [k.value for k in v.keywords]
            return all(_is_view(b, host) for b in base) and all(
                _is_const(a) or (type(a) is ast.Name and a.id in host) for a in rest)
    return False


def _is_const(n) -> bool:
    return all(type(x) in (ast.Constant, ast.Tuple, ast.UnaryOp, ast.USub, ast.Load)
               for x in ast.walk(n))


def _basic_index(p, host) -> bool:
    if type(p) is ast.Slice:
        return all(x is None or _is_const(x) or (type(x) is ast.Name and x.id in host)
                   for x in (p.lower, p.upper, p.step))
    if type(p) is ast.Name:
        return p.id in host
    return _is_const(p)


def _host_names(stmts, host=()):
    """Names bound to host scalars: the given ones, and results of constant/host arithmetic."""
    host = set(host)
    for s in stmts:
        tree = statement_tree(s)
        if type(tree) is ast.Assign and len(tree.targets) == 1 and \
                type(tree.targets[0]) is ast.Name:
            v = tree.value
            names = {n.id for n in ast.walk(v) if type(n) is ast.Name and type(n.ctx) is ast.Load}
            calls = [n for n in ast.walk(v) if type(n) is ast.Call]
            if names <= host | {"np"} and all(_host_call(c) for c in calls) and \
                    type(v) is not ast.Name:
                host.add(tree.targets[0].id)
            else:
                host.discard(tree.targets[0].id)
    return host


def count_launches(stmts: list, host=()) -> int:
    """Statements that launch at least one device kernel: all but ``del``, guards, reads and
    views (``a, b = w``, ``x.T``, ``x[:, 0:8]``, ``np.split``, ``.reshape``), and pure
    host-scalar arithmetic (constants and the ``host`` names, and what is computed from them).
    A ``.reshape`` of a non-contiguous array does copy on the device: an approximation."""
    host = _host_names(stmts, host)
    n = 0
    for s in stmts:
        tree = statement_tree(s)
        n += 1 if tree is None else _launches(tree, host)
    return n


def count_kernels(stmts: list, host=()) -> int:
    """An estimate of kernels launched (not statements): each array operation of an
    elementwise statement counts one, a fused statement one, other launching statements one."""
    host = _host_names(stmts, host)
    n = 0
    for s in stmts:
        tree = statement_tree(s)
        if tree is None:
            n += 1
            continue
        k = _launches(tree, host)
        if k and type(tree) in (ast.Assign, ast.AugAssign) and _elementwise_syntax(tree.value):
            ops = sum(1 for x in ast.walk(tree.value) if _is_op(x) and _touches_array(x, host))
            n += max(1, ops + (type(tree) is ast.AugAssign))
        else:
            n += k
    return n


def _is_op(x) -> bool:
    return type(x) in (ast.BinOp, ast.Compare, ast.Call) or (
        type(x) is ast.UnaryOp and type(x.op) is ast.USub)


def _touches_array(x, host) -> bool:
    return any(type(n) is ast.Name and n.id not in host and n.id != "np" for n in ast.walk(x))


def _elementwise_syntax(v) -> bool:
    for x in ast.walk(v):
        t = type(x)
        if t is ast.Call:
            f = x.func
            ok = type(f) is ast.Attribute and (
                f.attr == "astype" or (type(f.value) is ast.Name and f.value.id == "np"
                                       and (f.attr in FUNCS or f.attr in NP_DTYPES)))
            if not ok:
                return False
        elif t is ast.Attribute:
            if not (type(x.value) is ast.Name and x.value.id == "np") and x.attr != "astype":
                return False
        elif t not in (ast.Name, ast.Constant, ast.BinOp, ast.UnaryOp, ast.Compare, ast.Load,
                       ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow, ast.USub, ast.UAdd, ast.Lt,
                       ast.LtE, ast.Gt, ast.GtE, ast.Eq, ast.NotEq):
            return False
    return True


# ---------------------------------------------------------------------------- shape probe
def probe_shapes(stmts: list, params, args, namespace) -> tuple[dict, dict]:
    """Run the straight-line program on the CPU statement by statement and record the shape
    and dtype of every value (tests and diagnostics; never on the GPU path: it would repeat
    the program's effects)."""
    ns = dict(namespace)
    ns.update(zip(params, args))
    shapes, dtypes = {}, {}
    for name, val in zip(params, args):
        record_value(shapes, dtypes, name, val)
    for s in stmts:
        if s.code.startswith("return "):
            break
        exec(compile(s.code, "<probe>", "exec"), ns)
        tree = statement_tree(s)
        names = set(s.defs) | (names_in(tree)[1] if tree is not None else set())
        for name in names:
            if name in ns:
                record_value(shapes, dtypes, name, ns[name])
    return shapes, dtypes


# ---------------------------------------------------------------------- hand-written programs
class AugAssign(ir.Stmt):
    """``name op= value`` for op ``-``, ``*``, ``/``: forms the compiler never writes (its only
    in-place update is ``ir.AddInPlace``, ``+=``), but which the fusion pass accepts and the
    random programs exercise."""
    __slots__ = ("name", "op", "value")

    def __init__(self, name: str, op: str, value: ir.Expr, loc=None, back=False):
        self._init(loc, back, (name,))
        self.name, self.op, self.value = name, op, value

    def read_names(self):
        return self.value.names([self.name])

    def render(self):
        return f"{self.name} {self.op}= {self.value.render()}"

    def subst(self, mapping):
        return AugAssign(mapping.get(self.name, self.name), self.op, self.value.subst(mapping),
                         self.loc, self.back)


_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//",
        ast.Mod: "%", ast.Pow: "**", ast.MatMult: "@", ast.BitAnd: "&", ast.BitOr: "|",
        ast.BitXor: "^", ast.LShift: "<<", ast.RShift: ">>", ast.Lt: "<", ast.LtE: "<=",
        ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=", ast.Is: "is",
        ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in"}
_UNARY = {ast.USub: "-", ast.UAdd: "+", ast.Not: "not ", ast.Invert: "~"}


def parse_expr(node: ast.expr) -> ir.Expr:
    """A Python expression (its ``ast``) as an IR expression."""
    t = type(node)
    if t is ast.Name:
        return ir.Name(node.id)
    if t is ast.Constant:
        return ir.Const(node.value)
    if t is ast.Attribute:
        return ir.Attr(parse_expr(node.value), node.attr)
    if t is ast.Call:
        if any(type(a) is ast.Starred for a in node.args) or any(k.arg is None for k in node.keywords):
            raise ValueError("*args and **kwargs are not IR expressions")
        return ir.Call(parse_expr(node.func), [parse_expr(a) for a in node.args],
                       [(k.arg, parse_expr(k.value)) for k in node.keywords])
    if t is ast.BinOp:
        return ir.BinOp(_OPS[type(node.op)], parse_expr(node.left), parse_expr(node.right))
    if t is ast.Compare and len(node.ops) == 1:
        return ir.BinOp(_OPS[type(node.ops[0])], parse_expr(node.left),
                        parse_expr(node.comparators[0]))
    if t is ast.UnaryOp:
        return ir.UnaryOp(_UNARY[type(node.op)], parse_expr(node.operand))
    if t is ast.Subscript:
        return ir.Subscript(parse_expr(node.value), _index(node.slice))
    if t is ast.Tuple:
        return ir.Tuple([parse_expr(e) for e in node.elts])
    if t is ast.List:
        return ir.List([parse_expr(e) for e in node.elts])
    if t is ast.Dict and None not in node.keys:
        return ir.Dict([parse_expr(k) for k in node.keys], [parse_expr(v) for v in node.values])
    raise ValueError(f"no IR expression for {ast.dump(node)[:60]}")


def _index(node):
    t = type(node)
    if t is ast.Slice:
        return ir.Slice(*(None if p is None else parse_expr(p)
                          for p in (node.lower, node.upper, node.step)))
    if t is ast.Tuple:
        return ir.Tuple([_index(e) for e in node.elts])
    return parse_expr(node)


def _written(call: ast.Call) -> tuple:
    """The buffer ``np.add.at(x, ...)`` / ``add_rows(x, ...)`` updates in place."""
    f = call.func
    at = type(f) is ast.Attribute and f.attr == "at" and ast.unparse(f.value) == "np.add"
    rows = type(f) is ast.Name and f.id == "add_rows"
    if (at or rows) and call.args and type(call.args[0]) is ast.Name:
        return (call.args[0].id,)
    return ()


def parse_stmt(code: str, effect: bool = False) -> ir.Stmt:
    """One line of Python as the IR statement the compiler would hold for it:

    ``a = e``, ``a, b = e``      ``ir.Assign`` (``effect``: kept and never moved, a random draw)
    ``a += e``, ``a[i] += e``   ``ir.AddInPlace``; ``a[i] = e`` too (``assign``), or ``ir.Store``
                                into the caller's data when ``effect``
    ``a -= e`` (``*=``, ``/=``)  ``AugAssign`` above
    ``if t: raise _GuardFailed()``  ``ir.Guard``;  ``return a, b``  ``ir.Return``
    ``del a, b``                ``ir.Free``;  an expression  ``ir.Do`` (writing the first
                                argument of ``np.add.at`` / ``add_rows``)

    Guards and returns are effects whatever ``effect`` says. The statement is checked to
    render as the same Python (up to redundant parentheses)."""
    (tree,) = ast.parse(code).body
    t = type(tree)
    s = None
    if t is ast.Assign and len(tree.targets) == 1:
        tg, value = tree.targets[0], parse_expr(tree.value)
        if type(tg) is ast.Name:
            s = ir.Assign(tg.id, value, effect=effect)
        elif type(tg) is ast.Tuple and all(type(e) is ast.Name for e in tg.elts):
            s = ir.Assign([e.id for e in tg.elts], value, effect=effect, unpack=True)
        elif type(tg) is ast.Subscript and effect:
            s = ir.Store(parse_expr(tg), value)
        elif type(tg) is ast.Subscript and type(tg.value) is ast.Name:
            s = ir.AddInPlace(tg.value.id, value, _index(tg.slice), assign=True)
    elif t is ast.AugAssign and not effect:
        tg, value = tree.target, parse_expr(tree.value)
        if type(tree.op) is ast.Add and type(tg) is ast.Name:
            s = ir.AddInPlace(tg.id, value)
        elif type(tree.op) is ast.Add and type(tg) is ast.Subscript and type(tg.value) is ast.Name:
            s = ir.AddInPlace(tg.value.id, value, _index(tg.slice))
        elif type(tg) is ast.Name and type(tree.op) in (ast.Sub, ast.Mult, ast.Div):
            s = AugAssign(tg.id, _OPS[type(tree.op)], value)
    elif t is ast.If and len(tree.body) == 1 and not tree.orelse and \
            type(tree.body[0]) is ast.Raise and type(tree.body[0].exc) is ast.Call and \
            ast.unparse(tree.body[0].exc.func) == "_GuardFailed":
        args = tree.body[0].exc.args
        if not args or (len(args) == 1 and type(args[0]) is ast.Constant):
            s = ir.Guard(parse_expr(tree.test), args[0].value if args else None)
    elif t is ast.Return and tree.value is not None:
        s = ir.Return(parse_expr(tree.value))
    elif t is ast.Delete and all(type(n) is ast.Name for n in tree.targets):
        s = ir.Free([n.id for n in tree.targets])
    elif t is ast.Expr and not effect and type(tree.value) is ast.Call:
        s = ir.Do(parse_expr(tree.value), _written(tree.value))
    if s is None:
        raise ValueError(f"no IR statement for {code!r}" + (" (effect)" if effect else ""))
    if ast.dump(s.to_ast()) != ast.dump(tree):
        raise AssertionError(f"{code!r} renders as {s.render()!r}")
    return s
