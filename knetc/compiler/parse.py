"""Source → gast tree, once per code object, with the syntax fence.

The fence is an allow-list: every node of the function's tree must be of a type the specializer
handles (it passes its own dispatch table, ``specialize.SYNTAX``); anything else is rejected
before specialization starts, pointing at the user's file and line, with a hint where one is
known.

**Only the code that runs is differentiated.** The source knetc reads is the file's text now;
the function Python runs was compiled from the text when its module was imported (or its
``__code__`` was replaced, as IPython's autoreload does). So the def (or lambda) found in the
text is compiled again and compared with the running code object (bytecode, constants, names,
nested functions); when they differ, a ``KnetcError`` says to reload the module. The whole file
is compiled when it compiles (then qualified names, name mangling and closures are exactly
Python's); otherwise (an IPython cell with magics) the def's own lines are.

Parsed trees are cached by the identity of the code object (never by its value: equal code
objects of two files must not share a tree, whose line numbers name one file), for as long as
that code object lives. ``watching()`` records the (function, code object) pairs parsed while a
specialization runs, so that a cache of compiled code can notice a ``__code__`` replaced later.
"""
from __future__ import annotations

import __future__
import ast
import contextlib
import inspect
import linecache
import textwrap
import threading
import types
import weakref
from collections import OrderedDict
from dataclasses import dataclass

import gast

from ..errors import KnetcError, NoRuleError, UnsupportedSyntax

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


_cache: dict = {}      # id(code) -> (weakref to the code object, Parsed)
_lock = threading.Lock()
_local = threading.local()

# __future__ flags a code object carries (and its text must be compiled with); code flags that
# change what a function is (varargs, generators, coroutines).
_FUTURE_FLAGS = 0
for _feature in __future__.all_feature_names:
    if _feature != "nested_scopes":       # its flag is CO_NESTED, set on every nested function
        _FUTURE_FLAGS |= getattr(__future__, _feature).compiler_flag
_KIND_FLAGS = (inspect.CO_VARARGS | inspect.CO_VARKEYWORDS | inspect.CO_GENERATOR | inspect.CO_COROUTINE
               | inspect.CO_ITERABLE_COROUTINE | inspect.CO_ASYNC_GENERATOR)


@contextlib.contextmanager
def watching():
    """Record the ``(function, code object)`` pairs parsed inside the block (a nested block's
    pairs are also its enclosing block's): the code a specialization depends on."""
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    seen: list = []
    stack.append(seen)
    try:
        yield seen
    finally:
        stack.pop()
        if stack:
            stack[-1].extend(seen)


def watched() -> list | None:
    """The pairs recorded so far by the innermost ``watching()`` block of this thread (None
    outside any)."""
    stack = getattr(_local, "stack", None)
    return stack[-1] if stack else None


def parse_function(fn, allowed: frozenset) -> Parsed:
    """The gast tree of a Python function, fenced by ``allowed`` node types, cached by its code
    object; a ``KnetcError`` when the source text differs from the running code."""
    code = fn.__code__
    stack = getattr(_local, "stack", None)
    if stack:
        stack[-1].append((fn, code))
    hit = _cache.get(id(code))
    if hit is not None and hit[0]() is code:
        return hit[1]
    parsed = _parse(fn, code, allowed)
    with _lock:
        _cache[id(code)] = (weakref.ref(code, _forget(id(code))), parsed)
    return parsed


def _forget(key):
    def drop(ref):
        with _lock:
            hit = _cache.get(key)
            if hit is not None and hit[0] is ref:
                del _cache[key]
    return drop


def _parse(fn, code, allowed) -> Parsed:
    filename = code.co_filename
    try:
        lines = _file_lines(filename, code)    # the file's text now
    except (OSError, TypeError) as e:
        if "out of bounds" in str(e):        # the file is now shorter than the running code's
            raise _stale(fn, code) from None
        raise NoRuleError(
            f"knetc: cannot read the source of {fn.__qualname__} ({e})",
            filename=filename, lineno=code.co_firstlineno,
            hint="Define it in a .py file (not typed at an interactive prompt without source), "
                 "or register a derivative for it with knetc.adjoint.") from None
    flags = code.co_flags & _FUTURE_FLAGS
    whole = _whole_file(filename, "".join(lines), flags)
    if whole is not None:
        tree, module = whole
        node = _find_node(tree, code)
        if node is None or not any(same_code(c, code) for c in _compiled(module, code)):
            raise _stale(fn, code)
        node = gast.ast_to_gast(node)    # only this function's part of the file
    else:
        node = _parse_alone(fn, code, flags)
    fence(node, filename, allowed)
    return Parsed(node, filename, fn.__qualname__)


def _file_lines(filename: str, code) -> list[str]:
    """The lines of ``filename`` as they are now (linecache re-checks the file's size and time;
    generated and interactive sources registered there are kept)."""
    linecache.checkcache(filename)
    lines = linecache.getlines(filename)
    if not lines:
        raise OSError("could not get source code")
    if code.co_firstlineno > len(lines):
        raise OSError("lineno is out of bounds")
    return lines


# Whole files, parsed and compiled once per text (a few recent ones).
_files: OrderedDict = OrderedDict()
_MAX_FILES = 16


def _whole_file(filename: str, text: str, flags: int):
    """``(gast tree, compiled module code)`` of a file's text, or None when it does not compile
    as a whole (an IPython cell with magics, a file with a syntax error)."""
    key = (filename, flags)
    with _lock:
        hit = _files.get(key)
        if hit is not None and hit[0] == text:
            _files.move_to_end(key)
            return hit[1]
    try:   # both in C: a whole file costs a few milliseconds once per version of its text
        module = compile(text, filename, "exec", flags=flags, dont_inherit=True)
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        result = None
    else:
        result = (tree, module)
    with _lock:
        _files[key] = (text, result)
        while len(_files) > _MAX_FILES:
            _files.popitem(last=False)
    return result


def _compiled(module, code):
    """The code objects compiled from the file's text at ``code``'s place (name and first line)."""
    todo = [module]
    while todo:
        c = todo.pop()
        if c.co_name == code.co_name and c.co_firstlineno == code.co_firstlineno:
            yield c
        todo.extend(k for k in c.co_consts if type(k) is type(code))


def _find_node(tree, code, indent=0):
    """The def (or lambda) of ``code`` in a file's ``ast`` tree (first lines are file lines), or
    None."""
    line = code.co_firstlineno
    if code.co_name == "<lambda>":
        return _find_lambda([n for n in ast.walk(tree)
                             if isinstance(n, ast.Lambda) and n.lineno == line], code, indent)
    for n in ast.walk(tree):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == code.co_name:
            first = min([n.lineno] + [d.lineno for d in n.decorator_list])
            if line in (first, n.lineno):
                return n
    return None


def _find_lambda(lambdas, code, indent=0):
    if len(lambdas) <= 1:
        return lambdas[0] if lambdas else None
    # Several lambdas on one line: the one whose body the code's instructions span.
    positions = set(code.co_positions())
    for lam in lambdas:
        b = lam.body
        span = (b.lineno, b.end_lineno, b.col_offset + indent, b.end_col_offset + indent)
        if span in positions:
            return lam
    names = code.co_varnames[:code.co_argcount]
    for lam in lambdas:
        if tuple(getattr(a, "arg", None) or a.id for a in lam.args.args) == names:   # ast, gast
            return lam
    return lambdas[0]


def _parse_alone(fn, code, flags):
    """The def's own lines, when its file does not compile as a whole: parsed, and compiled
    (inside a function that defines its free variables) to compare with the running code."""
    filename = code.co_filename
    try:
        lines, first = inspect.getsourcelines(code)
        source = textwrap.dedent("".join(lines))
        tree = gast.parse(source)
    except (OSError, TypeError, SyntaxError, ValueError) as e:
        raise NoRuleError(
            f"knetc: cannot read the source of {fn.__qualname__} ({e})",
            filename=filename, lineno=code.co_firstlineno,
            hint="Define it with def (a lambda inside a larger expression may not parse alone), "
                 "in a file whose text is the code Python runs.") from None
    gast.increment_lineno(tree, first - 1)
    indent = len(lines[0]) - len(source.splitlines(True)[0])
    if code.co_name == "<lambda>":
        node = _find_lambda([n for n in gast.walk(tree) if isinstance(n, gast.Lambda)], code, indent)
    else:
        node = next((n for n in gast.walk(tree) if isinstance(n, (gast.FunctionDef, gast.AsyncFunctionDef))
                     and n.name == code.co_name), None)
    wrapped = source
    if code.co_freevars:     # a closure: its free variables are the enclosing function's locals
        wrapped = "def _knetc_enclosing_():\n" + "".join(f"    {v} = None\n" for v in code.co_freevars) \
            + textwrap.indent(source, "    ")
    # How Python compiles ``np.sum(x)`` depends on whether the module imported ``np`` (a module's
    # attribute is loaded, not a method): the names of modules in the function's globals are
    # declared imported in a second try.
    names = set()
    todo = [code]
    while todo:
        c = todo.pop()
        names.update(c.co_names)
        todo.extend(k for k in c.co_consts if type(k) is type(code))
    imported = sorted(n for n in names if isinstance(getattr(fn, "__globals__", {}).get(n), types.ModuleType))
    tries = [wrapped] + (["".join(f"import sys as {n}\n" for n in imported) + wrapped] if imported else [])
    if node is None or not any(_compiles_to(text, filename, flags, code) for text in tries):
        raise _stale(fn, code)
    return node


def _compiles_to(text, filename, flags, code) -> bool:
    """Does ``text`` compile to a function that does what ``code`` does?"""
    try:
        module = compile(text, filename, "exec", flags=flags, dont_inherit=True)
    except (SyntaxError, ValueError):
        return False
    todo = [module]
    while todo:
        c = todo.pop()
        if c.co_name == code.co_name and same_code(c, code):
            return True
        todo.extend(k for k in c.co_consts if type(k) is type(code))
    return False


def _stale(fn, code) -> KnetcError:
    module = getattr(inspect.getmodule(fn), "__name__", None)
    how = f"importlib.reload({module})" if module not in (None, "__main__") else "re-run it"
    return KnetcError(
        f"knetc: the source on disk differs from the running function {fn.__qualname__}: "
        "reload the module",
        filename=code.co_filename, lineno=code.co_firstlineno,
        hint=f"The file was edited after the function was defined, and knetc differentiates only "
             f"the code Python runs. Reload it ({how}, %autoreload in IPython, or restart), "
             "then call grad again.")


def same_code(a, b) -> bool:
    """Do two code objects do the same thing? Bytecode, constants (nested functions compared the
    same way), names and kind; not line numbers (a line added above moves them all)."""
    if a is b:
        return True
    if (a.co_code != b.co_code or a.co_names != b.co_names or a.co_varnames != b.co_varnames
            or a.co_freevars != b.co_freevars or a.co_cellvars != b.co_cellvars
            or a.co_argcount != b.co_argcount or a.co_posonlyargcount != b.co_posonlyargcount
            or a.co_kwonlyargcount != b.co_kwonlyargcount or a.co_name != b.co_name
            or (a.co_flags & _KIND_FLAGS) != (b.co_flags & _KIND_FLAGS)
            or a.co_exceptiontable != b.co_exceptiontable or len(a.co_consts) != len(b.co_consts)):
        return False
    return all(_same_const(x, y) for x, y in zip(a.co_consts, b.co_consts))


def _same_const(x, y) -> bool:
    t = type(x)
    if t is not type(y):
        return False
    if t is type(_same_const.__code__):
        return same_code(x, y)
    if t is tuple:
        return len(x) == len(y) and all(_same_const(u, v) for u, v in zip(x, y))
    if t is float or t is complex:
        return repr(x) == repr(y)        # -0.0 and nan as Python writes them
    return x == y


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
