"""Passes over the straight-line IR program: dead code, accumulation, frees.

The program has no control flow, so each pass is one walk over the statement list:
- ``eliminate_dead_code``: keep effects and what they (transitively) read;
- ``lower_accumulation``: turn gradient accumulation (``Accumulate``, ``ScatterAdd``) into
  in-place adds where the program owns the buffer, copies or new values elsewhere;
- ``insert_frees``: ``del`` each temporary after its last use;
- ``sparse_rows``: (``grad(f, sparse=True)``) an embedding's gradient as its rows, not zeros;
- ``fuse_picked_logp``: the gradient of picked log-probabilities without a dense zero array.
"""
from __future__ import annotations

import math

import numpy as np

from . import ir
from ..runtime import pool, prims, sparse


def eliminate_dead_code(stmts: list[ir.Stmt], live_out=()) -> list[ir.Stmt]:
    """Keep effects and statements whose results are used later (or returned)."""
    live = set(live_out)
    kept = []
    for s in reversed(stmts):
        if s.effect or any(d in live for d in s.defs):
            kept.append(s)
            live.difference_update(s.defs)
            live.update(s.uses)
    kept.reverse()
    return kept


def _memory_last_use(stmts: list[ir.Stmt], fresh_at: int = -1) -> dict[str, int]:
    """For each name, the index of the last statement that may read its memory: its own last
    use, or that of any value that may be a view of it (a slice, a reshape, a function that
    might return its argument; but the statement at ``fresh_at``)."""
    last: dict[str, int] = {}
    for i, s in enumerate(stmts):
        for n in s.uses:
            last[n] = i
    for i in range(len(stmts) - 1, -1, -1):
        s = stmts[i]
        if type(s) is ir.Assign and not s.fresh and i != fresh_at:
            end = max((last.get(t, i) for t in s.defs), default=i)
            for n in s.uses:
                if last.get(n, -1) < end:
                    last[n] = end
    return last


def lower_accumulation(stmts: list[ir.Stmt], pure: bool = False, keep=()) -> list[ir.Stmt]:
    """The one lowering of gradient accumulation.

    ``target = base + value`` adds in place (``base += value``, later statements reading
    ``target`` read ``base``) when the program owns ``base``: its memory was allocated by this
    program (arithmetic, a NumPy function that is not a view, a copy) and nothing reads it, or
    a view of it, afterwards. Otherwise it is a new value, and an indexed contribution first
    copies (``copy-on-first-write``). ``pure`` (code that will itself be differentiated) never
    writes in place. ``keep``: names read after the program (arguments): never owned.
    """
    last = _memory_last_use(stmts)
    owned: set[str] = set()
    rename: dict[str, str] = {}
    out: list[ir.Stmt] = []
    for i, s in enumerate(stmts):
        if rename and any(n in rename for n in s.uses):
            s = s.subst(rename)
        t = type(s)
        if t is ir.Assign:
            out.append(s)
            if s.fresh and len(s.defs) == 1:
                owned.add(s.defs[0])
            continue
        if t is ir.Accumulate:
            base = s.base
            if not pure and s.inplace_ok and type(base) is ir.Name and base.id in owned \
                    and base.id not in keep and last.get(base.id, -1) <= i:
                out.append(ir.AddInPlace(base.id, s.value, loc=s.loc))
                _carry(rename, last, s.target, base.id)
            else:
                out.append(ir.Assign(s.target, ir.BinOp("+", base, s.value), s.loc, back=True))
                owned.add(s.target)
            continue
        if t is ir.ScatterAdd:
            out.extend(_lower_scatter(s, pure, owned, keep, last, i, rename))
            continue
        out.append(s)
    return out


def _carry(rename, last, target, base):
    """Later statements read ``target`` as ``base``; base's memory lives as long as target's."""
    rename[target] = base
    if last.get(target, -1) > last.get(base, -1):
        last[base] = last[target]


def _lower_scatter(s: ir.ScatterAdd, pure, owned, keep, last, i, rename) -> list[ir.Stmt]:
    base, loc = s.base, s.loc
    if pure:   # a value, never a write: index_add has a rule of its own (second derivatives)
        add = ir.Name("index_add")
        start = s.zeros if base is None else base
        return [ir.Assign(s.target, ir.call(add, start, s.index, s.value), loc, back=True)]
    out = []
    if base is None:
        name = s.target
        out.append(ir.Assign(name, s.zeros, loc, back=True))
        first = True
    elif type(base) is ir.Name and base.id in owned and base.id not in keep and last.get(base.id, -1) <= i:
        name = base.id
        _carry(rename, last, s.target, name)
        first = False
    else:   # copy on first write: base is shared (a view, another gradient, an argument)
        name = s.target
        out.append(ir.Assign(name, ir.call(ir.np_fn("copy"), base), loc, back=True))
        first = False
    owned.add(name)
    if s.mode == "rows":
        out.append(ir.Do(ir.call(ir.Name("add_rows"), ir.Name(name), s.index, s.value), (name,), loc))
    elif s.mode == "at":
        out.append(ir.Do(ir.call(ir.Attr(ir.np_fn("add"), "at"), ir.Name(name), s.index, s.value),
                         (name,), loc))
    else:   # basic indexing selects each element once: into zeros, assignment is addition
        out.append(ir.AddInPlace(name, s.value, s.index, assign=first, loc=loc))
    return out


def _reads_and_scatters(stmts: list[ir.Stmt]) -> tuple[dict, dict]:
    """``(uses, where)``: how many statements read each name; the index of the ScatterAdd
    that defines each name so defined."""
    uses: dict[str, int] = {}
    where: dict[str, int] = {}
    for i, s in enumerate(stmts):
        for n in s.uses:
            uses[n] = uses.get(n, 0) + 1
        if type(s) is ir.ScatterAdd:
            where[s.target] = i
    return uses, where


def sparse_rows(stmts: list[ir.Stmt], returned: set[str]) -> list[ir.Stmt]:
    """``grad(f, sparse=True)``: a gradient the program returns as it is (a name in
    ``returned``) and builds only from row scatters (``ScatterAdd`` of mode "rows" or "row"
    from zeros: the lookups ``E[ids]`` or ``E[i]`` of an embedding) becomes a
    ``knetc.SparseRows`` of those rows and values, with no zero fill of the whole table. Any
    other contribution (``h @ E.T``, a slice, a second use of a partial sum) leaves that
    gradient dense, as without the option.
    Runs before ``lower_accumulation``, on the program's statements."""
    uses, where = _reads_and_scatters(stmts)
    chains = []
    for name in returned:
        if uses.get(name) != 1:         # read by more than the return
            continue
        chain, n = [], name
        while True:
            i = where.get(n)
            s = stmts[i] if i is not None else None
            if s is None or s.mode not in ("rows", "row") or \
                    (s.base is not None and not isinstance(s.base, ir.Name)):
                chain = None
                break
            chain.append(i)
            if s.base is None:
                break
            n = s.base.id
            if uses.get(n) != 1:        # a partial sum read elsewhere too
                chain = None
                break
        if chain:
            chains.extend(chain)
    if not chains:
        return stmts
    out = list(stmts)
    for i in chains:
        s = stmts[i]
        if s.base is None:
            value = ir.call(ir.Name("sparse_rows"), *s.zeros.args, s.index, s.value)
        else:
            value = ir.call(ir.Name("sparse_rows_add"), s.base, s.index, s.value)
        out[i] = ir.Assign(s.target, value, s.loc, back=True)
    return out


def fuse_picked_logp(stmts: list[ir.Stmt], logp_back: str, logp: str | None = None,
                     forward=None) -> list[ir.Stmt]:
    """``dy`` = zeros with ``v`` added at ``(rows, cols)``, then ``logp_back(dy, y, -1)`` (the
    gradient of ``logp(x)[rows, cols]``: a language model's picked log-probabilities), as one
    ``logp_back_picked(y, rows, cols, v, dtype)``: no zero fill and no read of an array as large as the
    scores. ``logp_back`` and ``logp`` are the names the program calls prims.logp_back and
    prims.logp by. Only where ``dy`` is read by nothing else and ``y`` is 2-D (NumPy code that is
    not ``pure``; before ``lower_accumulation``).

    When ``y`` is a result of ``logp`` (new memory) that nothing reads afterwards, nor any value
    that may be a view of it, the gradient is written into ``y`` itself (one array as large as
    the scores fewer). ``forward()``: the statements that ran before ``stmts`` (tier 0 runs only
    the adjoint; they may make views of ``y``), None when ``stmts`` is the whole program."""
    uses, where = _reads_and_scatters(stmts)
    out, dropped, fused = list(stmts), set(), []
    for i, s in enumerate(stmts):
        if type(s) is not ir.Assign or len(s.targets) != 1 or type(s.value) is not ir.Call:
            continue
        c = s.value
        if type(c.func) is not ir.Name or c.func.id != logp_back or c.kwargs or \
                len(c.args) != 3 or not isinstance(c.args[0], ir.Name):
            continue
        dy, axis = c.args[0].id, c.args[2]
        j = where.get(dy)
        if j is None or uses.get(dy) != 1:
            continue
        sc = stmts[j]
        shape = sc.zeros.args[0] if sc.base is None and type(sc.zeros) is ir.Call and \
            len(sc.zeros.args) == 2 else None
        if sc.mode != "at" or type(shape) is not ir.Tuple or len(shape.elts) != 2 or \
                type(sc.index) is not ir.Tuple or len(sc.index.elts) != 2 or \
                not all(isinstance(e, ir.Name) or (type(e) is ir.Const and type(e.value) is int)
                        for e in sc.index.elts) or \
                type(axis) is not ir.Const or axis.value not in (-1, 1):
            continue
        out[i] = ir.Assign(s.targets, ir.call(ir.Name("logp_back_picked"), c.args[1],
                                              *sc.index.elts, sc.value, sc.zeros.args[1]),
                           s.loc, back=True)
        dropped.add(j)
        fused.append(i)
    if not fused:
        return stmts
    if logp is not None:
        _write_into_dead_logp(stmts, out, fused, logp, forward)
    return [s for j, s in enumerate(out) if j not in dropped]


def _write_into_dead_logp(stmts, out, fused: list, logp: str, forward) -> None:
    """``fuse_picked_logp``'s in-place form, where it is safe (see there): ``out[i]`` for ``i``
    in ``fused`` gets ``inplace=True``."""
    before = forward() if forward is not None else []
    full = before + stmts
    made = {s.targets[0] for s in full if type(s) is ir.Assign and len(s.targets) == 1
            and not s.unpack and type(s.value) is ir.Call and type(s.value.func) is ir.Name
            and s.value.func.id == logp and not s.value.kwargs}
    for i in fused:
        s = out[i]
        y, at = s.value.args[0], len(before) + i
        # (the call's own result is meant to take y's memory: not a view that keeps it)
        if isinstance(y, ir.Name) and y.id in made and not _escapes(full, y.id) and \
                _memory_last_use(full, fresh_at=at).get(y.id, -1) <= at:
            out[i] = ir.Assign(s.targets, ir.call(s.value.func, *s.value.args, ir.Const(True)),
                               s.loc, back=True)


def _escapes(stmts: list[ir.Stmt], name: str) -> bool:
    """Is ``name``'s memory, or a value that may be a view of it, handed out of the program:
    stored into the caller's data, or returned (aux)?"""
    views = {name}
    for s in stmts:
        t = type(s)
        if (t is ir.Store or t is ir.Return) and not views.isdisjoint(s.uses):
            return True
        if t is ir.Assign and not s.fresh and not views.isdisjoint(s.uses):
            views.update(s.defs)
    return False


# Objects lowered statements name (bound in the generated code's namespace).
LOWERING_NAMES = {"index_add": prims.index_add, "add_rows": prims.add_rows,
                  "logp_back_picked": prims.logp_back_picked, "sparse_rows": sparse.sparse_rows,
                  "sparse_rows_add": sparse.sparse_rows_add,
                  "pool_binary": pool.binary, "pool_unary": pool.unary,
                  "pool_matmul": pool.matmul, "pool_zeros": pool.zeros}

# Arrays smaller than this are left to the function's exit. Measured (2026-11-30, one thread):
# freeing every temporary at its last use is as fast or faster for every size tried (a 32-layer
# MLP 630 vs 658 us per gradient, a 100-step RNN 1344 vs 1387 us, the tiny and medium MLPs equal),
# because NumPy then reuses the freed blocks, still warm in cache, for the next results; so
# nothing is left to the exit. (Tier 0, where each new structure compiles its code once, renders
# only arrays of 64 KiB or more: pipeline.TIER0_FREE.)
SMALL = 0


def insert_frees(stmts: list[ir.Stmt], keep, nbytes=None, given=(), small: int = SMALL
                 ) -> list[ir.Stmt]:
    """``del`` each temporary right after its last use, so the memory peak stays low and NumPy
    reuses warm memory.

    ``nbytes`` maps names to their sizes where known; temporaries known to be under ``small``
    bytes are not freed. ``given``: names bound before the program runs that it may free too
    (tier 0's recorded forward values)."""
    nbytes = nbytes or {}
    last: dict[str, int] = {}
    defined = set(given)
    for i, s in enumerate(stmts):
        for n in s.defs:
            last[n] = i
            if not s.effect:
                defined.add(n)
        for n in s.uses:
            last[n] = i
    frees: dict[int, list[str]] = {}
    for name, i in last.items():
        if name in defined and name not in keep and nbytes.get(name, small) >= small:
            frees.setdefault(i, []).append(name)
    out = []
    for i, s in enumerate(stmts):
        out.append(s)
        names = frees.get(i)
        if names:
            out.append(ir.Free(sorted(names)))
    return out


# -- uniform fills --------------------------------------------------------------------------------
#
# The gradient of a sum or mean over a whole array is the same number everywhere:
# ``dpow = np.full(shape, c, dtype)``. Its usual consumer multiplies it elementwise,
# ``dsub = dpow * (2 * sub)``: one allocation and one pass more than ``dsub = (2 * sub) * c``. A
# fill read once, by such a product whose other factor already has the fill's shape and dtype,
# becomes that scalar. Only a Python number (a literal, or a name known to hold a Python float)
# replaces it: NumPy treats those as weak, so the product keeps the array's dtype, and float32
# arithmetic rounds ``c`` to float32 exactly as the fill did.

def fold_uniform_fills(stmts: list[ir.Stmt], shapes: dict, dtypes: dict) -> list[ir.Stmt]:
    """``stmts`` with single-use ``np.full`` gradients multiplied in as scalars (see above)."""
    uses = _use_counts(stmts)
    fills = {}
    for i, s in enumerate(stmts):
        fill = _uniform_fill(s, dtypes)
        if fill is not None and uses.get(s.targets[0]) == 1:
            fills[s.targets[0]] = (i, fill)
    if not fills:
        return stmts
    out = list(stmts)
    dropped = set()
    for j, s in enumerate(stmts):
        if type(s) is not ir.Assign or type(s.value) is not ir.BinOp or s.value.op != "*":
            continue
        left, right = s.value.left, s.value.right
        for mine, other in ((left, right), (right, left)):
            if type(mine) is not ir.Name or mine.id not in fills:
                continue
            i, (shape, dtype, c) = fills[mine.id]
            if i > j or _names_redefined(stmts[i + 1:j], c) or \
                    _elementwise_type(other, shapes, dtypes) != (shape, dtype):
                continue
            out[j] = ir.Assign(s.targets, ir.BinOp("*", other, c), s.loc, s.back, s.effect, s.unpack)
            dropped.add(i)
            break
    return _fold_negation([s for k, s in enumerate(out) if k not in dropped], dtypes)


def _use_counts(stmts) -> dict[str, int]:
    """How many statements read each name."""
    uses: dict[str, int] = {}
    for s in stmts:
        for n in s.uses:
            uses[n] = uses.get(n, 0) + 1
    return uses


def _plain_assign(s) -> bool:
    """``name = value``: one target, nothing unpacked, no effect."""
    return type(s) is ir.Assign and len(s.targets) == 1 and not s.unpack and not s.effect


def _fold_negation(stmts, dtypes):
    """``t = -n`` where ``n = e * c`` (a weak scalar c) is read only there: ``t = e * -c``, one
    pass less, exactly the same numbers (negation is exact)."""
    uses = _use_counts(stmts)
    scaled = {}
    for i, s in enumerate(stmts):
        if _plain_assign(s) and type(s.value) is ir.BinOp and s.value.op == "*" and \
                _weak_scalar(s.value.right, dtypes) and uses.get(s.targets[0]) == 1:
            scaled[s.targets[0]] = i
    out, dropped = list(stmts), set()
    for j, s in enumerate(stmts):
        if type(s) is not ir.Assign or type(s.value) is not ir.UnaryOp or s.value.op != "-" or \
                type(s.value.operand) is not ir.Name:
            continue
        i = scaled.get(s.value.operand.id)
        if i is None or i > j:
            continue
        e, c = stmts[i].value.left, stmts[i].value.right
        if _names_redefined(stmts[i + 1:j], stmts[i].value):
            continue
        out[j] = ir.Assign(s.targets, ir.BinOp("*", e, ir.UnaryOp("-", c)), s.loc, s.back, s.effect,
                           s.unpack)
        dropped.add(i)
    return [s for k, s in enumerate(out) if k not in dropped]


def _uniform_fill(s, dtypes):
    """``(shape, dtype, scalar expression)`` of ``name = np.full(shape, c, dtype)`` with a weak c."""
    if not _plain_assign(s):
        return None
    v = s.value
    if type(v) is not ir.Call or type(v.func) is not ir.Attr or v.func.attr != "full" or \
            type(v.func.value) is not ir.Name or v.func.value.id != "np" or len(v.args) != 3 or v.kwargs:
        return None
    shape, c, dt = v.args
    if type(shape) is not ir.Tuple or not all(type(e) is ir.Const and type(e.value) is int
                                              for e in shape.elts):
        return None
    dtype = _dtype_of_expr(dt)
    if dtype is None or not _weak_scalar(c, dtypes):
        return None
    return tuple(e.value for e in shape.elts), dtype, c


def _dtype_of_expr(e):
    """The dtype an expression such as ``np.float32`` names, or None."""
    if type(e) is ir.Attr and type(e.value) is ir.Name and e.value.id == "np":
        t = getattr(np, e.attr, None)
        if isinstance(t, type) and issubclass(t, np.generic):
            return np.dtype(t)
    return None


def _weak_scalar(e, dtypes) -> bool:
    """Is ``e`` certainly a Python int or float (NumPy's weak scalars)?"""
    t = type(e)
    if t is ir.Const:
        return type(e.value) in (int, float)
    if t is ir.Name:
        return dtypes.get(e.id) in (int, float)
    if t is ir.BinOp and e.op in ("+", "-", "*", "/"):
        return _weak_scalar(e.left, dtypes) and _weak_scalar(e.right, dtypes)
    if t is ir.UnaryOp and e.op == "-":
        return _weak_scalar(e.operand, dtypes)
    return False


def _names_redefined(stmts, e) -> bool:
    names = set(e.names([]))
    return any(names.intersection(s.defs) for s in stmts)


def _elementwise_type(e, shapes, dtypes):
    """``(shape, dtype)`` of an arithmetic expression over names of known arrays and Python
    numbers, by NumPy's promotion rules; None when anything in it is unknown."""
    t = type(e)
    if t is ir.Name or t is ir.Var:
        shape, dtype = shapes.get(e.id), dtypes.get(e.id)
        if shape is None or dtype is None:
            return None
        return shape, dtype            # a Python scalar type stays a type: weak
    if t is ir.Const:
        return ((), type(e.value)) if type(e.value) in (int, float) else None
    if t is ir.UnaryOp and e.op == "-":
        return _elementwise_type(e.operand, shapes, dtypes)
    if t is ir.BinOp and e.op in ("+", "-", "*", "/"):
        a = _elementwise_type(e.left, shapes, dtypes)
        b = _elementwise_type(e.right, shapes, dtypes)
        if a is None or b is None:
            return None
        try:
            shape = np.broadcast_shapes(a[0], b[0])
            dtype = np.result_type(_probe(a[1]), _probe(b[1]))
            if e.op == "/" and dtype.kind in "iub":
                dtype = np.result_type(dtype, np.float64)
        except (ValueError, TypeError):
            return None
        if a[1] in (int, float) and b[1] in (int, float):
            return shape, float if float in (a[1], b[1]) or e.op == "/" else int
        return shape, dtype
    return None


def _probe(t):
    """What np.result_type needs for a dtype, or a Python type (weak: a Python value)."""
    return {int: 1, float: 1.0}.get(t, t) if t in (int, float) else t


# -- large results from the pool ------------------------------------------------------------------
#
# NumPy takes every array of 32 MB or more as fresh pages from the operating system and returns
# them when it is freed, so a large model pays its working set's page faults again every step
# (see knetc/runtime/pool.py: 0.36 s against 0.29 s for five 180 MB arrays). Generated CPU code
# gets its large arithmetic, matrix products and zero fills from knetc.runtime.pool instead. The
# sizes below come from the shapes known when generating (a hint: the pool functions take the
# shape and type NumPy would give, when they run, so a hint that is wrong costs nothing but the
# pool).

_POOL_BINARY = {"+": "add", "-": "subtract", "*": "multiply", "/": "true_divide"}
_POOL_UNARY = {"exp", "tanh", "log", "sqrt", "negative", "square"}


def pool_large(stmts: list[ir.Stmt], shapes: dict, dtypes: dict) -> list[ir.Stmt]:
    """``stmts`` with the large results of ``a + b`` (``- * /``), ``a @ b``, ``np.exp(x)`` (and
    other one-argument float ufuncs) and ``np.zeros(shape, dtype)`` taken from the pool."""
    out = []
    for s in stmts:
        if _plain_assign(s) and _large(s.targets[0], shapes, dtypes):
            v = _pooled(s.value)
            if v is not None:
                s = ir.Assign(s.targets, v, s.loc, s.back, s.effect, s.unpack)
        out.append(s)
    return out


def _large(name, shapes, dtypes) -> bool:
    shape, dtype = shapes.get(name), dtypes.get(name)
    return bool(shape) and isinstance(dtype, np.dtype) and \
        math.prod(shape) * dtype.itemsize >= pool.MIN_BYTES     # (Python ints: no overflow)


def _pooled(v):
    """The pooled form of value ``v``, or None."""
    t = type(v)
    if t is ir.BinOp:
        if v.op == "@":
            return ir.call(ir.Name("pool_matmul"), v.left, v.right)
        name = _POOL_BINARY.get(v.op)
        return None if name is None else \
            ir.call(ir.Name("pool_binary"), ir.np_fn(name), v.left, v.right)
    if t is ir.Call and type(v.func) is ir.Attr and type(v.func.value) is ir.Name \
            and v.func.value.id == "np" and not v.kwargs:
        f = v.func.attr
        if f in _POOL_UNARY and len(v.args) == 1:
            return ir.call(ir.Name("pool_unary"), v.func, v.args[0])
        if f == "zeros" and len(v.args) == 2:
            return ir.call(ir.Name("pool_zeros"), *v.args)
    return None
