"""Clean-up of the straight-line program: dead code removal and freeing temporaries when dead.

Because the program has no control flow, both are single passes over the statement list.
"""
from __future__ import annotations

from .codegen import Stmt


def eliminate_dead_code(stmts: list[Stmt], live_out) -> list[Stmt]:
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


# Arrays smaller than this are left to the function's exit: freeing them early saves no memory
# worth a statement (and each line costs compile time when every call specializes anew).
SMALL = 1 << 16


def insert_frees(stmts: list[Stmt], keep, nbytes=None) -> list[Stmt]:
    """``del`` each temporary right after its last use, so the memory peak stays low.

    ``nbytes`` maps names to their sizes where known; known-small temporaries are not freed."""
    nbytes = nbytes or {}
    last: dict[str, int] = {}
    for i, s in enumerate(stmts):
        for n in s.defs:
            last[n] = i
        for n in s.uses:
            last[n] = i
    frees: dict[int, list[str]] = {}
    defined = {n for s in stmts if not s.effect for n in s.defs}
    for name, i in last.items():
        if name in defined and name not in keep and nbytes.get(name, SMALL) >= SMALL:
            frees.setdefault(i, []).append(name)
    out = []
    for i, s in enumerate(stmts):
        out.append(s)
        names = frees.get(i)
        if names:
            out.append(Stmt("del " + ", ".join(sorted(names)), uses=names))
    return out
