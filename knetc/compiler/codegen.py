"""Code generation: the IR program → Python source → compiled function.

This is the one place the program becomes text. The source is registered with ``linecache`` so
tracebacks, debuggers and ``inspect`` show the generated lines, for as long as the function lives.
"""
from __future__ import annotations

import itertools
import linecache
import os
import weakref

from . import ir

_counter = itertools.count()


def render(name: str, params: list[str], stmts: list[ir.Stmt], header: list[str]) -> str:
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
        lines.append(f"    {s.render()}")
    return "\n".join(lines) + "\n"


def render_body(stmts: list[ir.Stmt]) -> str:
    """Statements as module-level code, with no comments (tier 0 runs them with exec)."""
    return "".join(s.render() + "\n" for s in stmts)


def register_source(source: str, name: str) -> str:
    """A unique pseudo-file name for generated source, registered with linecache so tracebacks,
    debuggers and ``inspect`` show the generated lines."""
    filename = f"<knetc-{next(_counter)}-{name}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    return filename


def compile_function(source: str, name: str, namespace: dict):
    """Compile generated source under a unique pseudo-file registered with linecache; the
    source leaves linecache together with the function (a model with a new structure every call
    would otherwise fill it without bound)."""
    filename = register_source(source, name)
    code = compile(source, filename, "exec")
    exec(code, namespace)
    fn = namespace[name]
    fn.__knetc_source__ = source
    weakref.finalize(fn, linecache.cache.pop, filename, None)
    return fn
