"""Planning: which statements fuse into which kernel, and the rewritten statement list.

``fuse`` reads every statement once (``statement_tree``), types the elementwise ones
(``_analyze``: shapes and dtypes by NumPy's own promotion, evaluated on one-element stand-ins),
grows groups greedily (``_greedy``: what may be passed or deferred, what is a barrier), turns each
into a ``Group`` (``_finalize``: inputs, in-outs, outputs) and replaces it by one statement
(``kernel_call_stmt``). Statements are read only through ``statement_tree`` and built only
through ``kernel_call_stmt``; the package's docstring says what it needs of a statement.
"""
from __future__ import annotations

import ast
import operator
import re
import warnings

import numpy as np

from .. import ir
from ..shapes import record_value, shapes_from_tape  # noqa: F401  (part of this package's API)
from .cuda import CTYPE, CupyKernel, KernelSource, NotFusible, Emitter

# ------------------------------------------------------------------------------------ types
# A value's type is a NumPy dtype (a device array, or a NumPy scalar: strong) or one of the
# Python types float/int/bool (a Python scalar: weak, converted to the other operand's dtype).
NP_DTYPES = {"float32": np.float32, "float64": np.float64, "int32": np.int32, "int64": np.int64,
             "bool_": np.bool_}
_WEAK = (float, int, bool)
FUNCS = {"tanh": 1, "exp": 1, "log": 1, "sqrt": 1, "maximum": 2, "minimum": 2, "where": 3}
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.Pow: operator.pow}
_CMPOPS = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
           ast.Eq: operator.eq, ast.NotEq: operator.ne}
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
    raise NotFusible(f"value of type {t.__name__}")


def _supported(t) -> bool:
    return t in CTYPE


# ------------------------------------------------------------------------------- statements
def statement_tree(stmt) -> ast.stmt | None:
    """The statement as a Python ``ast`` statement; None when it is not exactly one statement
    the parser reads. The one place the package looks inside a statement's code."""
    try:
        return stmt.to_ast()
    except SyntaxError:
        return None


def kernel_call_stmt(kname: str, outputs, inputs, inouts, loc, back) -> ir.Stmt:
    """The fused statement ``out1, out2 = _k3(in1, in2, acc)``: the kernel ``kname`` called on
    the inputs, then the in-out buffers it updates in place. The one place the package makes a
    statement."""
    args = [ir.Name(n) for n in (*inputs, *inouts)]
    return ir.Assign(list(outputs), ir.Call(ir.Name(kname), args), loc, back=back)


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
                raise NotFusible(f"unknown {node.id}")
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
                raise NotFusible("constant")
            return self._done(node, v, const=True)
        if t is ast.BinOp and type(node.op) in _BINOPS:
            a, ca = self.visit(node.left)
            b, cb = self.visit(node.right)
            v = _BINOPS[type(node.op)](a, b)
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
                raise NotFusible(f"dtype {ct}")
            self.elem.compute[id(node)] = ct
            v = _CMPOPS[type(node.ops[0])](a, b)
            return self._done(node, v, ca and cb, op=True)
        if t is ast.Call and not node.keywords and not any(type(a) is ast.Starred for a in node.args):
            f = node.func
            if type(f) is ast.Attribute and type(f.value) is ast.Name and f.value.id == "np":
                if f.attr in FUNCS and len(node.args) == FUNCS[f.attr]:
                    vals = [self.visit(a) for a in node.args]
                    v = getattr(np, f.attr)(*[x for x, _ in vals])
                    return self._done(node, v, all(c for _, c in vals), op=True)
                if f.attr in NP_DTYPES and len(node.args) == 1 and type(node.args[0]) is ast.Constant:
                    c = node.args[0].value
                    if type(c) not in _WEAK or not np.isfinite(c):
                        raise NotFusible("constant")
                    return self._done(node, NP_DTYPES[f.attr](c), const=True)
            if (type(f) is ast.Attribute and f.attr == "astype" and len(node.args) == 1
                    and type(node.args[0]) is ast.Attribute and type(node.args[0].value) is ast.Name
                    and node.args[0].value.id == "np" and node.args[0].attr in NP_DTYPES):
                a, ca = self.visit(f.value)
                if not isinstance(a, np.ndarray):
                    raise NotFusible("astype of a scalar")
                return self._done(node, a.astype(NP_DTYPES[node.args[0].attr]), False, op=True)
        raise NotFusible(f"not elementwise: {ast.dump(node)[:40]}")

    def _done(self, node, v, const, op=False):
        typ = _type_of(v)
        if not _supported(typ):
            raise NotFusible(f"dtype {typ}")
        self.elem.types[id(node)] = typ
        if const:
            self.elem.consts[id(node)] = v
        elif op and not (_weak(typ) or isinstance(v, np.generic)):
            self.elem.nops += 1          # an array operation: one launch when run unfused
        return v, const


def _analyze(index, stmt, tree, env):
    """(elem, env_update): elem for an elementwise array statement, else None; env_update is the
    (shape, type) of the statement's target for elementwise and host-scalar statements.
    ``tree`` is ``statement_tree(stmt)``."""
    if stmt.effect:
        return None, None
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
                elem.aug_type = _type_of(_BINOPS[type(aug)](old, v))
                if not np.can_cast(elem.aug_type, info[1], "same_kind"):
                    return None, None
                elem.reads = {target: info, **elem.reads}
                elem.nops += 1
                v = old
    except NotFusible:
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
    except (NotFusible, KeyError):
        return None, None
    return elem, (shape, typ)


def _single(elem):
    """A one-statement group (to check that a statement can be written as CUDA)."""
    inouts = [elem.target] if elem.aug is not None else []
    inputs = [n for n in elem.reads if n not in inouts]
    types = {n: elem.reads[n][1] for n in inputs}
    return Group([elem], elem.shape, inputs, types, inouts, [elem.target],
                 {elem.target: elem.dtype}, {0: True})


def names_in(tree):
    """(names read, names written or deleted) anywhere in a statement."""
    loads, stores = set(), set()
    for n in ast.walk(tree):
        if type(n) is ast.Name:
            (loads if type(n.ctx) is ast.Load else stores).add(n.id)
    return loads, stores


def _is_fresh_producer(tree, elem) -> bool:
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
        self.is_output = is_output            # member position -> its def is an output
        self.nops = sum(e.nops for e in elems)
        self.deferred: list[int] = []         # statement indices moved after the fused statement
        self._source = None

    @property
    def source(self) -> KernelSource:
        if self._source is None:
            self._source = Emitter(self).source()
        return self._source

    @property
    def inout_positions(self) -> tuple:
        return tuple(i for i, n in enumerate(self.outputs) if n in self.inouts)

    def __repr__(self):
        return (f"<fused group {self.outputs} <- {self.inputs + self.inouts}: {len(self.stmts)} "
                f"statements, {self.nops} array ops, shape {self.shape}>")


# ------------------------------------------------------------------------------------- fuse
def fuse(stmts: list[ir.Stmt], shapes: dict, dtypes: dict, *, executor=None, min_ops: int = 2,
         prefix: str = "_k", live_out=()) -> tuple[list[ir.Stmt], dict]:
    """Fuse runs of elementwise statements; returns ``(new statements, {kernel name: kernel})``.

    ``executor(group)`` makes the kernel object a fused statement calls (default ``CupyKernel``;
    the tests pass CPU stand-ins). Groups with fewer than ``min_ops`` array operations are left
    as they are. ``live_out``: names needed after the last statement (besides those the
    statements themselves use). The kernels must be put into the generated function's namespace
    under their names.
    """
    executor = executor or CupyKernel
    trees, elems, env, fresh, alias_free = [], [], {}, {}, []
    for name, shape in shapes.items():
        if name in dtypes:
            t = dtypes[name]
            env[name] = (None, t) if _weak(t) else (tuple(shape), np.dtype(t))
    for i, s in enumerate(stmts):
        tree = statement_tree(s)
        trees.append(tree)
        elem, update = _analyze(i, s, tree, env)
        if elem is not None and elem.aug is not None:
            elem.fresh_target = fresh.get(elem.target, False)
        elems.append(elem)
        alias_free.append({k for k, v in fresh.items() if v})
        loads, stores = names_in(tree) if tree is not None else (set(s.uses), set(s.defs))
        if elem is None:
            # A statement may keep a view or a reference of what it reads, except a store into
            # it (x[i] = v, x[i] += v, np.add.at(x, ...)), which returns nothing.
            for n in (set(s.uses) | loads) - _mutated(tree):
                fresh[n] = False
        is_fresh = tree is not None and _is_fresh_producer(tree, elem)
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
        loads, stores = names_in(tree) if tree is not None else (set(), set())
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
        fused = kernel_call_stmt(kname, g.outputs, g.inputs, g.inouts, first.loc, first.back)
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
            and dt.attr in NP_DTYPES):
        return None
    try:
        shape = ast.literal_eval(shape_node)
    except ValueError:
        return None
    shape = (shape,) if type(shape) is int else shape
    if type(shape) is not tuple or not all(type(d) is int for d in shape):
        return None
    return shape, np.dtype(NP_DTYPES[dt.attr])


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
    cur, deferred, shape = None, [], ()
    gdefs, guses, local, qdefs, quses = set(), set(), set(), set(), set()
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
        loads, stores = names_in(tree)
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




# ---------------------------------------------------------------------------- shape sources
def fuse_program(stmts: list[ir.Stmt], tape, adj, **kw) -> tuple[list[ir.Stmt], dict]:
    """The pipeline's entry: ``fuse`` with the shapes the specialization knows. Call it on the
    statements after ``eliminate_dead_code`` and before ``insert_frees``, and add the returned
    kernels to the generated function's namespace."""
    shapes, dtypes = shapes_from_tape(tape, adj)
    return fuse(stmts, shapes, dtypes, **kw)


