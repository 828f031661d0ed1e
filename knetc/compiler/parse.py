"""Source → gast tree, once per function, with the syntax fence.

The fence is an allow-list: every node of the function's tree must be of a type the specializer
handles (it passes its own dispatch table, ``specialize.SYNTAX``); anything else is rejected
before specialization starts, pointing at the user's file and line, with a hint where one is
known. Parsed trees are cached by code object.
"""
from __future__ import annotations

import inspect
import textwrap
import threading
from dataclasses import dataclass

import gast

from ..errors import UnsupportedSyntax

# Hints for constructs users meet most (any other unsupported node gets a generic one).
_HINTS = {
    gast.ClassDef: ("a class definition", "define classes outside the differentiated function"),
    gast.Try: ("try/except", "compute both cases and select with np.where, or move the try outside grad"),
    gast.With: ("a with block", "move the with statement outside the differentiated function"),
    gast.Yield: ("yield", "return a value or a list instead of a generator"),
    gast.YieldFrom: ("yield from", "return a value or a list instead of a generator"),
    gast.Await: ("await", "async code cannot be differentiated; call it outside grad"),
    gast.AsyncFunctionDef: ("an async function", "use a plain def"),
    gast.AsyncFor: ("async for", "use a plain for loop"),
    gast.AsyncWith: ("async with", "move it outside the differentiated function"),
    gast.Global: ("a global statement (writing a global)",
                  "return the value, or store it in a list or dict passed as an argument"),
    gast.Nonlocal: ("a nonlocal statement", "return the value, or store it in a list or dict"),
    gast.Import: ("an import inside the function", "import at module level"),
    gast.ImportFrom: ("an import inside the function", "import at module level"),
}


@dataclass(frozen=True)
class Parsed:
    """A function's tree: ``node`` is the FunctionDef (or Lambda); line numbers are file lines."""
    node: gast.AST
    filename: str
    name: str


_cache: dict = {}
_lock = threading.Lock()


def parse_function(fn, allowed: frozenset) -> Parsed:
    """The gast tree of a Python function, fenced by ``allowed`` node types, cached by its code
    object."""
    code = fn.__code__
    hit = _cache.get(code)
    if hit is not None:
        return hit
    filename = code.co_filename
    try:
        lines, first = inspect.getsourcelines(code)
    except (OSError, TypeError) as e:
        from ..errors import NoRuleError
        raise NoRuleError(
            f"knetc: cannot read the source of {fn.__qualname__} ({e})",
            filename=filename, lineno=code.co_firstlineno,
            hint="Define it in a .py file (not typed at an interactive prompt without source), "
                 "or register a derivative for it with knetc.adjoint.") from None
    source = textwrap.dedent("".join(lines))
    tree = gast.parse(source)
    gast.increment_lineno(tree, first - 1)
    node = _find_def(tree, code, len(lines[0]) - len(source.splitlines(True)[0]))
    fence(node, filename, allowed)
    parsed = Parsed(node, filename, fn.__qualname__)
    with _lock:
        _cache[code] = parsed
    return parsed


def _find_def(tree, code, indent=0):
    """The def (or lambda) of ``code`` inside the parsed source lines (dedented by ``indent``)."""
    if code.co_name == "<lambda>":
        lambdas = [n for n in gast.walk(tree) if isinstance(n, gast.Lambda)]
        if len(lambdas) == 1:
            return lambdas[0]
        # Several lambdas on one line: the one whose body the code's instructions span.
        positions = set(code.co_positions())
        for lam in lambdas:
            b = lam.body
            span = (b.lineno, b.end_lineno, b.col_offset + indent, b.end_col_offset + indent)
            if span in positions:
                return lam
        names = code.co_varnames[:code.co_argcount]
        for lam in lambdas:
            if tuple(a.id for a in lam.args.args) == names:
                return lam
        return lambdas[0]
    for n in gast.walk(tree):
        if isinstance(n, gast.FunctionDef) and n.name == code.co_name:
            return n
    return tree.body[0]


def fence(node, filename: str, allowed: frozenset) -> None:
    """Raise UnsupportedSyntax at the first node whose type is not in ``allowed``."""
    for sub in gast.walk(node):
        if type(sub) in allowed:
            continue
        what, hint = _HINTS.get(type(sub), (None, None))
        if what is None:
            what = f"the construct {type(sub).__name__}"
            hint = "rewrite it with assignments, if, for, while, function calls and NumPy"
        raise UnsupportedSyntax(f"knetc: {what} is not supported in a differentiated function",
                                filename=filename, lineno=_line(sub, node),
                                hint=f"Instead: {hint}.")


def _line(sub, root):
    """The line of ``sub``, or of the nearest enclosing statement (operators carry none)."""
    line = getattr(sub, "lineno", None)
    if line is not None:
        return line
    for n in gast.walk(root):
        if any(c is sub for c in gast.iter_child_nodes(n)):
            return _line(n, root)
    return getattr(root, "lineno", None)
