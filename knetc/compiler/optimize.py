"""Passes over the straight-line IR program: dead code, accumulation, frees.

The program has no control flow, so each pass is one walk over the statement list:
- ``eliminate_dead_code``: keep effects and what they (transitively) read;
- ``lower_accumulation``: turn gradient accumulation (``Accumulate``, ``ScatterAdd``) into
  in-place adds where the program owns the buffer, copies or new values elsewhere;
- ``insert_frees``: ``del`` each temporary after its last use.
"""
from __future__ import annotations

from . import ir
from ..runtime import prims


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


def _memory_last_use(stmts: list[ir.Stmt]) -> dict[str, int]:
    """For each name, the index of the last statement that may read its memory: its own last
    use, or that of any value that may be a view of it (a slice, a reshape, a function that
    might return its argument)."""
    last: dict[str, int] = {}
    for i, s in enumerate(stmts):
        for n in s.uses:
            last[n] = i
    for i in range(len(stmts) - 1, -1, -1):
        s = stmts[i]
        if type(s) is ir.Assign and not s.fresh:
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


# Objects lowered statements name (bound in the generated code's namespace).
LOWERING_NAMES = {"index_add": prims.index_add, "add_rows": prims.add_rows}

# Arrays smaller than this are left to the function's exit: freeing them early saves no memory
# worth a statement (and each line costs compile time when every call specializes anew).
SMALL = 1 << 16


def insert_frees(stmts: list[ir.Stmt], keep, nbytes=None) -> list[ir.Stmt]:
    """``del`` each temporary right after its last use, so the memory peak stays low.

    ``nbytes`` maps names to their sizes where known; known-small temporaries are not freed."""
    nbytes = nbytes or {}
    last: dict[str, int] = {}
    defined = set()
    for i, s in enumerate(stmts):
        for n in s.defs:
            last[n] = i
            if not s.effect:
                defined.add(n)
        for n in s.uses:
            last[n] = i
    frees: dict[int, list[str]] = {}
    for name, i in last.items():
        if name in defined and name not in keep and nbytes.get(name, SMALL) >= SMALL:
            frees.setdefault(i, []).append(name)
    out = []
    for i, s in enumerate(stmts):
        out.append(s)
        names = frees.get(i)
        if names:
            out.append(ir.Free(sorted(names)))
    return out
