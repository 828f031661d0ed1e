"""GPU kernel fusion: runs of elementwise statements become one generated CUDA kernel each.

On the GPU every NumPy-style array operation is one kernel launch (``dadd = dh * (1 - h * h)``
is three). This pass finds maximal groups of elementwise statements of the final straight-line
program (the forward's gate arithmetic, the adjoint's ``dx = dy * (1 - y * y)`` lines, loss
tails, in-place gradient accumulations) and rewrites each group into ONE statement

    out1, out2 = _k3(in1, in2, ...)

where ``_k3`` runs a CuPy ``ElementwiseKernel`` generated from the group (``kernel_source``).
Intermediate values used only inside the group become registers of the kernel; values used
later are its outputs.

Where it runs
    On the statement list after ``eliminate_dead_code`` (so "used later" is final) and BEFORE
    ``insert_frees``. It is correct after ``insert_frees`` too (a ``del`` is an ordinary use), but
    fuses less there. ``fuse_program(stmts, tape, adj)`` is the call for ``pipeline.compile_trace``
    (GPU specializations only; put the returned kernels in the namespace). It works on ``Stmt``
    objects only: each statement's code is parsed with
    ``ast``; a statement is elementwise when its code is ``name = expr`` or ``name op= expr``
    (op one of + - * /) and ``expr`` holds only names, int/float/bool constants, ``np.float32(c)``
    style constants, the operators + - * / (and ``** c``), unary -, one comparison,
    ``np.tanh/exp/log/sqrt/maximum/minimum/where`` and ``.astype(np.<dtype>)``, on values of
    known shape and dtype (float32/float64/int32/int64/bool) with at least one device array.

What may move
    The fused statement takes the place of the group's last member. A statement met between
    members either stays before it ("passed": it neither reads what the members define nor
    defines what they read or define) or moves after it ("deferred": e.g. ``s = a.sum()`` or
    ``dg[:, 0:8] += da`` reading a member's result; no later member may then read what it
    defines or define what it reads or defines); otherwise the group ends there. Effects
    (``Stmt.effect``: guards, stores, random draws, the return) and anything unparsable are
    barriers, and so are in-place writes (``x[i] = v``, ``x[i] += v``, ``np.add.at``) into a
    buffer that may have aliases, i.e. not made fresh by an allocation or an elementwise
    statement in this program, or handed since to a statement that could keep a view of it.
    Deferring and passing keep the relative order of the statements that are not fused.

In-place accumulation ``dx += e``
    Joins a group when ``dx`` is local to the group, or when its buffer is known fresh (made by an
    elementwise statement, an allocation such as ``np.full``, ``@`` or a copy, and not handed to
    any non-elementwise statement since, so no view of it can exist) and has the group's full
    shape: it is then an in-out parameter of the kernel, updated in place as before.

Shapes and dtypes
    ``shapes[name]`` is a tuple and ``dtypes[name]`` a NumPy dtype for device arrays (0-d
    included); ``dtypes[name]`` is the Python type ``float``/``int``/``bool`` for host scalars.
    Names missing from either are unknown; the pass infers the results of elementwise and
    host-scalar statements itself (NumPy 2 promotion rules: Python scalars are weak) and leaves
    statements touching unknown names alone. ``shapes_from_tape`` gives what the compiler knows
    statically; ``probe_shapes`` runs a program on the CPU and records every value (tests).

Results are NumPy's: kernel outputs are declared with the dtype NumPy would give, literals are
written in their operation's type (``1.0f`` for float32), Python scalars are converted the way
NumPy converts them; ``np.maximum/np.minimum`` become ``fmaxf/fminf`` guarded so that a NaN
operand gives NaN, as NumPy's and CuPy's own maximum/minimum do (bare fmaxf would drop it).

The default CPU path never calls this; on the CPU it is used by the tests, with ``KernelOnCPU``
(runs the group's original statements with NumPy) or ``KernelSourceOnCPU`` (interprets the
generated CUDA operation with NumPy) standing in for the GPU kernel.
"""
from __future__ import annotations

import ast
import hashlib
import operator
import re
import warnings
from typing import NamedTuple

import numpy as np

from .codegen import Stmt

__all__ = ["fuse", "fuse_program", "Group", "KernelSource", "kernel_source", "KernelOnCPU",
           "KernelSourceOnCPU", "CupyKernel", "KernelCache", "CACHE", "count_launches", "count_kernels",
           "shapes_from_tape", "probe_shapes"]

# ------------------------------------------------------------------------------------ types
# A value's type is a NumPy dtype (a device array, or a NumPy scalar: strong) or one of the
# Python types float/int/bool (a Python scalar: weak, converted to the other operand's dtype).
_CTYPE = {np.dtype(np.float32): "float", np.dtype(np.float64): "double",
          np.dtype(np.int32): "int", np.dtype(np.int64): "long long", np.dtype(np.bool_): "bool",
          float: "double", int: "long long", bool: "bool"}
_PARAM = {np.dtype(np.float32): "float32", np.dtype(np.float64): "float64",
          np.dtype(np.int32): "int32", np.dtype(np.int64): "int64", np.dtype(np.bool_): "bool",
          float: "float64", int: "int64", bool: "bool"}
_NP_DTYPES = {"float32": np.float32, "float64": np.float64, "int32": np.int32, "int64": np.int64,
              "bool_": np.bool_}
_WEAK = (float, int, bool)
_FUNCS = {"tanh": 1, "exp": 1, "log": 1, "sqrt": 1, "maximum": 2, "minimum": 2, "where": 3}
_BINOPS = {ast.Add: ("+", operator.add), ast.Sub: ("-", operator.sub),
           ast.Mult: ("*", operator.mul), ast.Div: ("/", operator.truediv),
           ast.Pow: ("**", operator.pow)}
_CMPOPS = {ast.Lt: ("<", operator.lt), ast.LtE: ("<=", operator.le), ast.Gt: (">", operator.gt),
           ast.GtE: (">=", operator.ge), ast.Eq: ("==", operator.eq), ast.NotEq: ("!=", operator.ne)}
_ALLOC = {"full", "zeros", "ones", "empty", "full_like", "zeros_like", "ones_like", "empty_like",
          "copy", "array"}


def _weak(t) -> bool:
    """Is type ``t`` a Python scalar type? (Not ``t in _WEAK``: np.dtype('bool') == bool.)"""
    return t is float or t is int or t is bool


def _type_of(v):
    if isinstance(v, (np.ndarray, np.generic)):
        return v.dtype
    t = type(v)
    if _weak(t):
        return t
    raise _NotFusible(f"value of type {t.__name__}")


def _supported(t) -> bool:
    return t in _CTYPE


class _NotFusible(Exception):
    pass


def _parse(code: str):
    try:
        body = ast.parse(code).body
    except SyntaxError:
        return None
    return body[0] if len(body) == 1 else None


# --------------------------------------------------------------------------------- analysis
class _Elem:
    """One elementwise statement: its parse, node types, shape and what it reads."""
    __slots__ = ("index", "stmt", "target", "aug", "expr", "shape", "dtype", "types", "consts",
                 "compute", "aug_type", "reads", "nops", "fresh_target")

    def __init__(self, index, stmt, target, aug, expr):
        self.index, self.stmt, self.target, self.aug, self.expr = index, stmt, target, aug, expr
        self.types, self.consts, self.compute = {}, {}, {}
        self.reads: dict[str, tuple] = {}       # name -> (shape or None, type), first-read order
        self.nops = 0
        self.aug_type = None
        self.fresh_target = False


class _Typer:
    """Types every node by evaluating it on one-element stand-ins (NumPy decides promotion)."""

    def __init__(self, env, elem):
        self.env, self.elem = env, elem

    def visit(self, node):
        elem = self.elem
        t = type(node)
        if t is ast.Name:
            info = self.env.get(node.id)
            if info is None:
                raise _NotFusible(f"unknown {node.id}")
            shape, typ = info
            elem.reads.setdefault(node.id, info)
            if shape is None:        # host scalar
                v = typ(1) if _weak(typ) else typ.type(1)
            else:
                v = np.ones(1, typ)
            return self._done(node, v, const=False)
        if t is ast.Constant:
            v = node.value
            if type(v) not in _WEAK or (type(v) is float and not np.isfinite(v)):
                raise _NotFusible("constant")
            return self._done(node, v, const=True)
        if t is ast.BinOp and type(node.op) in _BINOPS:
            a, ca = self.visit(node.left)
            b, cb = self.visit(node.right)
            v = _BINOPS[type(node.op)][1](a, b)
            return self._done(node, v, ca and cb, op=True)
        if t is ast.UnaryOp and type(node.op) in (ast.USub, ast.UAdd):
            a, ca = self.visit(node.operand)
            v = -a if type(node.op) is ast.USub else +a
            return self._done(node, v, ca, op=type(node.op) is ast.USub)
        if t is ast.Compare and len(node.ops) == 1 and type(node.ops[0]) in _CMPOPS:
            a, ca = self.visit(node.left)
            b, cb = self.visit(node.comparators[0])
            ct = np.result_type(a, b)
            if not _supported(ct):
                raise _NotFusible(f"dtype {ct}")
            self.elem.compute[id(node)] = ct
            v = _CMPOPS[type(node.ops[0])][1](a, b)
            return self._done(node, v, ca and cb, op=True)
        if t is ast.Call and not node.keywords and not any(type(a) is ast.Starred for a in node.args):
            f = node.func
            if type(f) is ast.Attribute and type(f.value) is ast.Name and f.value.id == "np":
                if f.attr in _FUNCS and len(node.args) == _FUNCS[f.attr]:
                    vals = [self.visit(a) for a in node.args]
                    v = getattr(np, f.attr)(*[x for x, _ in vals])
                    return self._done(node, v, all(c for _, c in vals), op=True)
                if f.attr in _NP_DTYPES and len(node.args) == 1 and type(node.args[0]) is ast.Constant:
                    c = node.args[0].value
                    if type(c) not in _WEAK or not np.isfinite(c):
                        raise _NotFusible("constant")
                    return self._done(node, _NP_DTYPES[f.attr](c), const=True)
            if (type(f) is ast.Attribute and f.attr == "astype" and len(node.args) == 1
                    and type(node.args[0]) is ast.Attribute and type(node.args[0].value) is ast.Name
                    and node.args[0].value.id == "np" and node.args[0].attr in _NP_DTYPES):
                a, ca = self.visit(f.value)
                if not isinstance(a, np.ndarray):
                    raise _NotFusible("astype of a scalar")
                return self._done(node, a.astype(_NP_DTYPES[node.args[0].attr]), False, op=True)
        raise _NotFusible(f"not elementwise: {ast.dump(node)[:40]}")

    def _done(self, node, v, const, op=False):
        typ = _type_of(v)
        if not _supported(typ):
            raise _NotFusible(f"dtype {typ}")
        self.elem.types[id(node)] = typ
        if const:
            self.elem.consts[id(node)] = v
        elif op and not (_weak(typ) or isinstance(v, np.generic)):
            self.elem.nops += 1          # an array operation: one launch when run unfused
        return v, const


def _analyze(index, stmt, env):
    """(elem, env_update): elem for an elementwise array statement, else None; env_update is the
    (shape, type) of the statement's target for elementwise and host-scalar statements."""
    if stmt.effect:
        return None, None
    tree = _parse(stmt.code)
    if type(tree) is ast.Assign and len(tree.targets) == 1 and type(tree.targets[0]) is ast.Name:
        target, aug, expr = tree.targets[0].id, None, tree.value
    elif type(tree) is ast.AugAssign and type(tree.target) is ast.Name and \
            type(tree.op) in (ast.Add, ast.Sub, ast.Mult, ast.Div):
        target, aug, expr = tree.target.id, tree.op, tree.value
    else:
        return None, None
    if aug is None and type(expr) in (ast.Name, ast.Constant):
        return None, None           # an alias or a constant: no launch, and not a fresh buffer
    elem = _Elem(index, stmt, target, aug, expr)
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            v, _ = _Typer(env, elem).visit(expr)
            if aug is not None:
                info = env.get(target)
                if info is None or info[0] is None:
                    return None, None            # a host scalar's += is Python arithmetic
                old = np.ones(1, info[1])
                elem.aug_type = _type_of(_BINOPS[type(aug)][1](old, v))
                if not np.can_cast(elem.aug_type, info[1], "same_kind"):
                    return None, None
                elem.reads = {target: info, **elem.reads}
                elem.nops += 1
                v = old
    except _NotFusible:
        return None, None
    except Exception:          # NumPy refused the operation (e.g. - on bools): leave it alone
        return None, None
    typ = _type_of(v)
    arrays = [shape for shape, _ in elem.reads.values() if shape is not None]
    if not arrays:                               # Python / NumPy scalar arithmetic on the host
        return None, (None, typ) if aug is None else None
    try:
        shape = tuple(np.broadcast_shapes(*arrays))
    except ValueError:
        return None, None
    if aug is not None and shape != tuple(env[target][0]):
        return None, None
    if _weak(typ) or not _supported(typ):
        return None, None
    elem.shape, elem.dtype = shape, typ
    try:                                  # can the CUDA side say it? (e.g. no bool arithmetic)
        _single(elem).source
    except (_NotFusible, KeyError):
        return None, None
    return elem, (shape, typ)


def _single(elem):
    """A one-statement group (to check that a statement can be written as CUDA)."""
    inouts = [elem.target] if elem.aug is not None else []
    inputs = [n for n in elem.reads if n not in inouts]
    types = {n: elem.reads[n][1] for n in inputs}
    return Group([elem], elem.shape, inputs, types, inouts, [elem.target],
                 {elem.target: elem.dtype}, {0: True})


def _names(tree):
    """(names read, names written or deleted) anywhere in a statement."""
    loads, stores = set(), set()
    for n in ast.walk(tree):
        if type(n) is ast.Name:
            (loads if type(n.ctx) is ast.Load else stores).add(n.id)
    return loads, stores


def _is_fresh_producer(stmt, tree, elem) -> bool:
    """Does this statement bind its target to a new buffer nobody else references?"""
    if elem is not None:
        return elem.aug is None
    if type(tree) is not ast.Assign or len(tree.targets) != 1 or type(tree.targets[0]) is not ast.Name:
        return False
    v = tree.value
    if type(v) is ast.BinOp and type(v.op) is ast.MatMult:
        return True
    if type(v) is ast.Call:
        f = v.func
        if type(f) is ast.Attribute and type(f.value) is ast.Name and f.value.id == "np" \
                and f.attr in _ALLOC:
            return True
        if type(f) is ast.Attribute and f.attr == "copy" and not v.args:
            return True
    return False


# ----------------------------------------------------------------------------------- groups
class KernelSource(NamedTuple):
    """The four strings of ``cupy.ElementwiseKernel(in_params, out_params, operation, name)``."""
    in_params: str
    out_params: str
    operation: str
    name: str

    def __str__(self):
        return (f"// {self.name}\n// in:  {self.in_params}\n// out: {self.out_params}\n"
                f"{self.operation}\n")


class Group:
    """A fused group: its member statements and the kernel's interface.

    inputs   names read from outside (kernel input parameters x0, x1, ...)
    inouts   names accumulated in place (``dx += e`` on a fresh outside buffer): passed after
             the inputs and updated in place
    outputs  names defined here and used later, in output-parameter order (z0, z1, ...);
             the in-out names are among them
    """

    def __init__(self, elems, shape, inputs, input_types, inouts, outputs, out_types, is_output):
        self.elems, self.shape = elems, shape
        self.stmts = [e.stmt for e in elems]
        self.inputs, self.inouts, self.outputs = inputs, inouts, outputs
        self.input_types = input_types        # name -> dtype, or float/int/bool for host scalars
        self.out_types = out_types            # name -> dtype
        self._is_output = is_output           # member position -> its def is an output
        self.nops = sum(e.nops for e in elems)
        self.deferred: list[int] = []         # statement indices moved after the fused statement
        self._source = None

    @property
    def source(self) -> KernelSource:
        if self._source is None:
            self._source = _Emitter(self).source()
        return self._source

    @property
    def inout_positions(self) -> tuple:
        return tuple(i for i, n in enumerate(self.outputs) if n in self.inouts)

    def call_code(self, kname: str) -> str:
        args = ", ".join(self.inputs + self.inouts)
        target = ", ".join(self.outputs)
        return f"{target} = {kname}({args})"

    def __repr__(self):
        return (f"<fused group {self.outputs} <- {self.inputs + self.inouts}: {len(self.stmts)} "
                f"statements, {self.nops} array ops, shape {self.shape}>")


def kernel_source(group: Group) -> KernelSource:
    """The CUDA text of a group: ``(in_params, out_params, operation, name)`` for CuPy."""
    return group.source


def fuse(stmts: list[Stmt], shapes: dict, dtypes: dict, *, executor=None, min_ops: int = 2,
         prefix: str = "_k", live_out=()) -> tuple[list[Stmt], dict]:
    """Fuse runs of elementwise statements; returns ``(new statements, {kernel name: kernel})``.

    ``executor(group)`` makes the kernel object a fused statement calls (default ``CupyKernel``;
    ``KernelOnCPU`` / ``KernelSourceOnCPU`` for CPU tests). Groups with fewer than ``min_ops``
    array operations are left as they are. ``live_out``: names needed after the last statement
    (besides those the statements themselves use). The kernels must be put into the generated
    function's namespace under their names.
    """
    executor = executor or CupyKernel
    trees, elems, env, fresh, alias_free = [], [], {}, {}, []
    for name, shape in shapes.items():
        if name in dtypes:
            t = dtypes[name]
            env[name] = (None, t) if _weak(t) else (tuple(shape), np.dtype(t))
    for i, s in enumerate(stmts):
        tree = _parse(s.code)
        trees.append(tree)
        elem, update = _analyze(i, s, env)
        if elem is not None and elem.aug is not None:
            elem.fresh_target = fresh.get(elem.target, False)
        elems.append(elem)
        alias_free.append({k for k, v in fresh.items() if v})
        loads, stores = _names(tree) if tree is not None else (set(s.uses), set(s.defs))
        if elem is None:
            # A statement may keep a view or a reference of what it reads, except a store into
            # it (x[i] = v, x[i] += v, np.add.at(x, ...)), which returns nothing.
            for n in (set(s.uses) | loads) - _mutated(tree):
                fresh[n] = False
        is_fresh = tree is not None and _is_fresh_producer(s, tree, elem)
        rebinds = tree is not None and not _in_place(tree)   # x[i] = v, x += v keep x's shape
        for n in set(s.defs) | stores:
            if rebinds:
                fresh[n] = is_fresh
            if update is None and elem is None and rebinds:
                update = _static_alloc(tree)          # np.full((4, 32), v, np.float32) ...
            if update is not None and n == (elem.target if elem else _target_of(tree)):
                env[n] = update
            elif rebinds and not (n in shapes and n in dtypes):
                env.pop(n, None)     # unknown (a given fact stays: names are defined once)

    n = len(stmts)
    uses_at: dict[str, list[int]] = {}
    defs_at: dict[str, list[int]] = {}
    for i, (s, tree) in enumerate(zip(stmts, trees)):
        loads, stores = _names(tree) if tree is not None else (set(), set())
        for name in set(s.uses) | loads:
            uses_at.setdefault(name, []).append(i)
        for name in set(s.defs) | stores:
            defs_at.setdefault(name, []).append(i)
    live = set(live_out)

    def used_after(name, last, deferred):
        """Is ``name`` (as defined at ``last``) read later: by a statement after ``last``
        or by one deferred past it?"""
        if name in live and not any(d > last for d in defs_at.get(name, ())):
            return True
        redef = min((d for d in defs_at.get(name, ()) if d > last), default=n)
        return any(last < u <= redef or u in deferred for u in uses_at.get(name, ()))

    splits: set[int] = set()
    while True:
        groups, retry = [], False
        for members, deferred in _greedy(stmts, trees, elems, splits, alias_free):
            g = _finalize(members, deferred, used_after, splits)
            if isinstance(g, int):            # an output narrower than the group: split there
                splits.add(g)
                retry = True
                break
            if g is not None and g.nops >= min_ops:
                groups.append(g)
        if not retry:
            break

    taken = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", " ".join(s.code for s in stmts)))
    counter, kernels, at_last, member = 0, {}, {}, set()
    for g in groups:
        while f"{prefix}{counter}" in taken:
            counter += 1
        kname = f"{prefix}{counter}"
        counter += 1
        kernels[kname] = executor(g)
        first = g.stmts[0]
        fused = Stmt(g.call_code(kname), g.outputs, g.inputs + g.inouts, first.loc,
                     back=first.back)
        at_last[g.elems[-1].index] = [fused] + [stmts[j] for j in g.deferred]
        member.update(e.index for e in g.elems)
        member.update(g.deferred)
    out = []
    for i, s in enumerate(stmts):
        if i in at_last:
            out.extend(at_last[i])
        elif i not in member:
            out.append(s)
    return out, kernels


def _static_alloc(tree):
    """(shape, dtype) of ``np.zeros/ones/empty(shape, dtype)`` and ``np.full(shape, v, dtype)``
    with literal shapes and an ``np.<dtype>`` (the forms the adjoint writes), else None."""
    if type(tree) is not ast.Assign or type(tree.value) is not ast.Call:
        return None
    call = tree.value
    f = call.func
    if not (type(f) is ast.Attribute and type(f.value) is ast.Name and f.value.id == "np"):
        return None
    nargs = {"zeros": 2, "ones": 2, "empty": 2, "full": 3}.get(f.attr)
    if nargs is None or call.keywords or len(call.args) != nargs:
        return None
    shape_node, dt = call.args[0], call.args[-1]
    if not (type(dt) is ast.Attribute and type(dt.value) is ast.Name and dt.value.id == "np"
            and dt.attr in _NP_DTYPES):
        return None
    try:
        shape = ast.literal_eval(shape_node)
    except ValueError:
        return None
    shape = (shape,) if type(shape) is int else shape
    if type(shape) is not tuple or not all(type(d) is int for d in shape):
        return None
    return shape, np.dtype(_NP_DTYPES[dt.attr])


def _in_place(tree) -> bool:
    """Does the statement update something in place (rather than bind names)?"""
    if type(tree) is ast.AugAssign or type(tree) is ast.Expr:
        return True
    if type(tree) is ast.Assign:
        return not all(type(t) is ast.Name or (type(t) is ast.Tuple and
                                               all(type(x) is ast.Name for x in t.elts))
                       for t in tree.targets)
    return False


def _target_of(tree):
    if type(tree) is ast.Assign and len(tree.targets) == 1 and type(tree.targets[0]) is ast.Name:
        return tree.targets[0].id
    return None


def _greedy(stmts, trees, elems, splits, alias_free):
    """(members, deferred) of candidate groups. One group is open at a time. It grows by
    elementwise statements of compatible shape; the fused statement goes where its last member
    was. A statement met meanwhile either stays before it ("passed": it must not read what the
    members define nor define what they read or define, nor clash with a deferred statement),
    or moves after it ("deferred": later members must not read what it defines nor define what
    it reads or defines), or closes the group. Effects, unparsable statements and in-place
    updates of buffers that may have aliases do neither."""
    cur = None
    for i, (s, tree, e) in enumerate(zip(stmts, trees, elems)):
        if e is not None and e.aug is not None and not e.fresh_target and \
                (cur is None or e.target not in local):
            e = None                                   # in place on a buffer that may be shared
        if e is not None:
            joined = None
            if cur is not None and i not in splits and not (set(e.reads) & qdefs) and \
                    e.target not in (quses | qdefs):
                try:
                    joined = tuple(np.broadcast_shapes(shape, e.shape))
                except ValueError:
                    pass
            if joined is None:
                if cur:
                    yield cur, deferred
                cur, deferred, shape = [], [], e.shape
                gdefs, guses, local, qdefs, quses = set(), set(), set(), set(), set()
            else:
                shape = joined
            cur.append(e)
            gdefs.add(e.target)
            local.add(e.target)
            guses.update(e.reads)
            continue
        if cur is None:
            continue
        if _barrier(s, tree, alias_free[i]):
            yield cur, deferred
            cur = None
            continue
        loads, stores = _names(tree)
        ju, jd = set(s.uses) | loads, set(s.defs) | stores
        if not (ju & gdefs or jd & (guses | gdefs) or ju & qdefs or jd & (quses | qdefs)):
            continue                                   # passed
        deferred.append(i)
        qdefs |= jd
        quses |= ju
    if cur:
        yield cur, deferred


def _mutated(tree) -> set:
    """Names whose buffers the statement writes in place: x[i] = v, x[i] += v, x += v,
    np.add.at(x, ...)."""
    out = set()
    t = type(tree)
    if t is ast.Assign:
        for tg in tree.targets:
            if type(tg) is ast.Subscript and type(tg.value) is ast.Name:
                out.add(tg.value.id)
    elif t is ast.AugAssign:
        tg = tree.target
        if type(tg) is ast.Name:
            out.add(tg.id)
        elif type(tg) is ast.Subscript and type(tg.value) is ast.Name:
            out.add(tg.value.id)
    elif t is ast.Expr and type(tree.value) is ast.Call:
        f = tree.value.func
        if (type(f) is ast.Attribute and f.attr == "at" and type(f.value) is ast.Attribute
                and type(f.value.value) is ast.Name and f.value.value.id == "np"
                and tree.value.args and type(tree.value.args[0]) is ast.Name):
            out.add(tree.value.args[0].id)
    return out


def _barrier(s, tree, alias_free) -> bool:
    """Can nothing move across this statement?"""
    if s.effect or tree is None:
        return True
    if type(tree) is ast.Delete:
        return False
    if not _in_place(tree):
        return type(tree) is not ast.Assign
    # An in-place update may be moved (by name-based checks) only when the buffers it writes
    # have no aliases (no view of them can be read under another name).
    written = _mutated(tree)
    if not written or not written <= alias_free:
        return True
    if type(tree) is ast.Expr:       # np.add.at(x, idx, v): only that form is understood
        return False
    targets = tree.targets if type(tree) is ast.Assign else [tree.target]
    return not all(type(tg) is ast.Name or (type(tg) is ast.Subscript and
                                              type(tg.value) is ast.Name) for tg in targets)


def _finalize(members, deferred, used_after, splits):
    """A Group, None (nothing to fuse), or the statement index where a split is needed."""
    if not members:
        return None
    shape = tuple(np.broadcast_shapes(*[e.shape for e in members]))
    last = members[-1].index
    deferred = {j for j in deferred if j < last}      # those after the last member stay put
    final = {e.target: k for k, e in enumerate(members)}
    defined, inputs, types, inouts = set(), [], {}, []
    for e in members:
        for name in e.reads:
            if name in defined or name in inouts:
                continue
            if e.aug is not None and name == e.target:
                # accumulated in place on an outside buffer: reads of the old value (here or in
                # earlier members) read the output parameter before it is written
                inouts.append(name)
                if name in inputs:
                    inputs.remove(name)
                continue
            if name not in inputs:
                inputs.append(name)
                types[name] = e.reads[name][1]
        defined.add(e.target)
    is_output, outputs, out_types = {}, [], {}
    for k, e in enumerate(members):
        out = final[e.target] == k and (e.target in inouts or
                                        used_after(e.target, last, deferred))
        is_output[k] = out
        if not out:
            continue
        if e.shape != shape:
            # An output narrower than the kernel would come out broadcast: split the group where
            # it outgrew this output (never at its first member, so splitting terminates).
            running, grow = e.shape, None
            for m in members:
                running = tuple(np.broadcast_shapes(running, m.shape))
                if running != e.shape:
                    grow = m.index
                    break
            split = max(grow, e.index)
            return None if split in splits else split
        outputs.append(e.target)
        out_types[e.target] = e.dtype
    if not outputs:
        return None
    g = Group(members, shape, inputs, types, inouts, outputs, out_types, is_output)
    g.deferred = sorted(deferred)
    return g


# ------------------------------------------------------------------------------ CUDA source
_PREC_TERNARY, _PREC_CMP, _PREC_ADD, _PREC_MUL, _PREC_UNARY, _PREC_ATOM = 1, 3, 4, 5, 6, 7
_FLOAT_FN = {"tanh": "tanh", "exp": "exp", "log": "log", "sqrt": "sqrt", "maximum": "fmax",
             "minimum": "fmin"}


def _literal(value, typ) -> str:
    c = _CTYPE[typ]
    if c == "float":
        v = float(np.float32(value))
        if not np.isfinite(v):
            raise _NotFusible("literal")
        text = repr(v)
        return f"{text}f"
    if c == "double":
        return repr(float(value))
    if c == "bool":
        return "true" if value else "false"
    if float(value) != int(value):
        raise _NotFusible("literal")
    return f"{int(value)}LL" if c == "long long" else str(int(value))


class _Emitter:
    """Writes the kernel: x0.. inputs, z0.. outputs, t0.. registers, one line per statement.
    (Not y0/y1: those are Bessel functions of the CUDA math library.)"""

    def __init__(self, group: Group):
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
                sym = _BINOPS[type(e.aug)][0]
                prec = _PREC_ADD if sym in "+-" else _PREC_MUL
                a, pa = self.cast(old, _PREC_ATOM, told, ct)
                b, pb = self.operand(e.expr, ct, vars_)
                a = f"({a})" if pa < prec else a
                b = f"({b})" if pb <= prec else b
                code, _ = self.cast(f"{a} {sym} {b}", prec, ct, e.dtype)
            later_reads = any(e.target in m.reads for m in members[k + 1:])
            if g._is_output[k] and not later_reads:
                self.lines.append(f"{outvar[e.target]} = {code};")
                vars_[e.target] = (outvar[e.target], e.dtype)
            else:
                t = self.temp()
                self.lines.append(f"{_CTYPE[e.dtype]} {t} = {code};")
                vars_[e.target] = (t, e.dtype)
                if g._is_output[k]:
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
        if _CTYPE[frm] == _CTYPE[to]:
            return code, prec
        inner = code if prec >= _PREC_ATOM else f"({code})"
        return f"({_CTYPE[to]}){inner}", _PREC_UNARY

    def operand(self, node, to, vars_):
        """Code for ``node`` converted to type ``to``: (text, precedence)."""
        e = self.e
        if id(node) in e.consts:
            text = _literal(e.consts[id(node)], to)
            return (f"({text})", _PREC_ATOM) if text.startswith("-") else (text, _PREC_ATOM)
        code, prec = self.expr(node, vars_)
        return self.cast(code, prec, e.types[id(node)], to)

    def expr(self, node, vars_):
        e = self.e
        typ = e.types[id(node)]
        t = type(node)
        if id(node) in e.consts:
            return self.operand(node, typ, vars_)
        if t is ast.Name:
            return vars_[node.id][0], _PREC_ATOM
        if t is ast.BinOp:
            sym = _BINOPS[type(node.op)][0]
            if typ == np.dtype(np.bool_):
                raise _NotFusible("bool arithmetic")
            if sym == "**":
                return self.power(node, typ, vars_)
            prec = _PREC_ADD if sym in "+-" else _PREC_MUL
            a, pa = self.operand(node.left, typ, vars_)
            b, pb = self.operand(node.right, typ, vars_)
            a = f"({a})" if pa < prec else a
            b = f"({b})" if pb <= prec else b
            return f"{a} {sym} {b}", prec
        if t is ast.UnaryOp:
            a, pa = self.operand(node.operand, typ, vars_)
            if type(node.op) is ast.UAdd:
                return a, pa
            a = f"({a})" if pa < _PREC_UNARY or a.startswith("-") else a
            return f"-{a}", _PREC_UNARY
        if t is ast.Compare:
            ct = e.compute[id(node)]
            a, pa = self.operand(node.left, ct, vars_)
            b, pb = self.operand(node.comparators[0], ct, vars_)
            a = f"({a})" if pa <= _PREC_CMP else a
            b = f"({b})" if pb <= _PREC_CMP else b
            return f"{a} {_CMPOPS[type(node.ops[0])][0]} {b}", _PREC_CMP
        if t is ast.Call:
            f = node.func
            if f.attr == "astype":
                return self.operand(f.value, typ, vars_)
            c = _CTYPE[typ]
            if f.attr == "where":
                cond, _ = self.operand(node.args[0], np.dtype(np.bool_), vars_)
                a, _ = self.operand(node.args[1], typ, vars_)
                b, _ = self.operand(node.args[2], typ, vars_)
                return f"({cond} ? {a} : {b})", _PREC_ATOM
            if c in ("float", "double") and f.attr in ("maximum", "minimum"):
                return self.nan_max(f.attr, node.args, typ, vars_)
            if c in ("float", "double"):
                name = _FLOAT_FN[f.attr] + ("f" if c == "float" else "")
            elif f.attr in ("maximum", "minimum") and c in ("int", "long long"):
                name = "max" if f.attr == "maximum" else "min"
            else:
                raise _NotFusible(f"{f.attr} on {c}")
            args = ", ".join(self.operand(a, typ, vars_)[0] for a in node.args)
            return f"{name}({args})", _PREC_ATOM
        raise _NotFusible(ast.dump(node)[:40])

    def atom(self, node, typ, vars_):
        """``node`` as a variable or literal (a register is written for anything else)."""
        code, prec = self.operand(node, typ, vars_)
        if prec < _PREC_ATOM or "(" in code:
            t = self.temp()
            self.lines.append(f"{_CTYPE[typ]} {t} = {code};")
            code = t
        return code

    def nan_max(self, fn, args, typ, vars_):
        """np.maximum/minimum: fmaxf/fminf, but a NaN operand gives NaN as in NumPy and CuPy
        (CuPy's maximum is ``isnan(a) | isnan(b) ? NAN : max(a, b)``); literals are not NaN."""
        e = self.e
        a, b = (self.atom(x, typ, vars_) for x in args)
        name = _FLOAT_FN[fn] + ("f" if _CTYPE[typ] == "float" else "")
        call = f"{name}({a}, {b})"
        maybe_nan = [x for x, node in ((a, args[0]), (b, args[1])) if id(node) not in e.consts]
        if not maybe_nan:
            return call, _PREC_ATOM
        if len(maybe_nan) == 1:
            return f"(isnan({maybe_nan[0]}) ? {maybe_nan[0]} : {call})", _PREC_ATOM
        return f"(isnan({a}) || isnan({b}) ? {a} + {b} : {call})", _PREC_ATOM

    def power(self, node, typ, vars_):
        c = _CTYPE[typ]
        if c not in ("float", "double"):
            raise _NotFusible("integer power")
        e = self.e
        base, pb = self.operand(node.left, typ, vars_)
        k = e.consts.get(id(node.right))
        if k is not None and k == 2:
            if pb < _PREC_ATOM:
                t = self.temp()
                self.lines.append(f"{c} {t} = {base};")
                base = t
            return f"{base} * {base}", _PREC_MUL
        if k is not None and k == 0.5:
            return f"{'sqrtf' if c == 'float' else 'sqrt'}({base})", _PREC_ATOM
        expo, _ = self.operand(node.right, typ, vars_)
        return f"{'powf' if c == 'float' else 'pow'}({base}, {expo})", _PREC_ATOM


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

    def __init__(self, group: Group, cache: KernelCache | None = None):
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
_CBIN = {"+": (_PREC_ADD, operator.add), "-": (_PREC_ADD, operator.sub),
         "*": (_PREC_MUL, operator.mul), "/": (_PREC_MUL, operator.truediv),
         "<": (_PREC_CMP, operator.lt), "<=": (_PREC_CMP, operator.le),
         ">": (_PREC_CMP, operator.gt), ">=": (_PREC_CMP, operator.ge),
         "==": (_PREC_CMP, operator.eq), "!=": (_PREC_CMP, operator.ne),
         "||": (2, np.logical_or)}


def _tokens(text):
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
        c = self.binary(_PREC_TERNARY)
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
        env = {f"x{k}": (a if type(a) not in _WEAK else
                         _C2NP[_CTYPE[type(a)]](a)) for k, a in enumerate(ins)}
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
        and f.attr in _NP_DTYPES)


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
        tree = _parse(s.code)
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


def count_launches(stmts: list[Stmt], host=()) -> int:
    """Statements that launch at least one device kernel: all but ``del``, guards, reads and
    views (``a, b = w``, ``x.T``, ``x[:, 0:8]``, ``np.split``, ``.reshape``), and pure
    host-scalar arithmetic (constants and the ``host`` names, and what is computed from them).
    A ``.reshape`` of a non-contiguous array does copy on the device: an approximation."""
    host = _host_names(stmts, host)
    n = 0
    for s in stmts:
        tree = _parse(s.code)
        n += 1 if tree is None else _launches(tree, host)
    return n


def count_kernels(stmts: list[Stmt], host=()) -> int:
    """An estimate of kernels launched (not statements): each array operation of an
    elementwise statement counts one, a fused statement one, other launching statements one."""
    host = _host_names(stmts, host)
    n = 0
    for s in stmts:
        tree = _parse(s.code)
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
                                       and (f.attr in _FUNCS or f.attr in _NP_DTYPES)))
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


# ---------------------------------------------------------------------------- shape sources
def _record(shapes, dtypes, name, val):
    if type(val) in _WEAK:
        shapes[name], dtypes[name] = (), type(val)
    elif isinstance(val, np.generic):              # a 0-d device array on the GPU
        shapes[name], dtypes[name] = (), val.dtype
    elif hasattr(val, "shape") and hasattr(val, "dtype"):
        shapes[name], dtypes[name] = tuple(val.shape), np.dtype(val.dtype)


def fuse_program(stmts: list[Stmt], tape, adj, **kw) -> tuple[list[Stmt], dict]:
    """The pipeline's entry: ``fuse`` with the shapes the specialization knows. Call it on the
    statements after ``eliminate_dead_code`` and before ``insert_frees``, and add the returned
    kernels to the generated function's namespace."""
    shapes, dtypes = shapes_from_tape(tape, adj)
    return fuse(stmts, shapes, dtypes, **kw)


def shapes_from_tape(tape, adj=None) -> tuple[dict, dict]:
    """What the compiler knows without running anything: every forward value (its Sym's
    concrete value) and each gradient's final name (the shape of its value). The pass adds the
    results of elementwise statements and of ``np.full/zeros/ones/empty`` with literal shapes;
    other adjoint temporaries (a gradient's intermediate name, ``x.sum(axis=0)``) stay unknown,
    and elementwise statements reading them are not fused."""
    from .tape import Sym, syms_in
    shapes, dtypes, by_id = {}, {}, {}
    for op in tape.ops:
        outs = op.outs if type(op.outs) is tuple else (op.outs,)
        found = [o for o in outs if type(o) is Sym]
        found += syms_in(op.args) + syms_in(list(op.kwargs.values()))
        found += [u for u in (op.uses or ()) if type(u) is Sym]
        if type(op.saved) is Sym:
            found.append(op.saved)
        for s in found:
            by_id[id(s)] = s
            if s.val is not None:
                _record(shapes, dtypes, s.name, s.val)
    if adj is not None:
        for key, (name, _) in adj.grads.items():
            s = by_id.get(key)
            if s is not None and s.val is not None and name.isidentifier():
                _record(shapes, dtypes, name, s.val)
    return shapes, dtypes


def probe_shapes(stmts: list[Stmt], params, args, namespace) -> tuple[dict, dict]:
    """Run the straight-line program on the CPU statement by statement and record the shape
    and dtype of every value (tests and diagnostics; never on the GPU path: it would repeat
    the program's effects)."""
    ns = dict(namespace)
    ns.update(zip(params, args))
    shapes, dtypes = {}, {}
    for name, val in zip(params, args):
        _record(shapes, dtypes, name, val)
    for s in stmts:
        if s.code.startswith("return "):
            break
        exec(compile(s.code, "<probe>", "exec"), ns)
        tree = _parse(s.code)
        names = set(s.defs) | (_names(tree)[1] if tree is not None else set())
        for name in names:
            if name in ns:
                _record(shapes, dtypes, name, ns[name])
    return shapes, dtypes
