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

**Where the text comes from.** ``linecache``: files, and the sources interactive sessions keep
there (IPython's ``<ipython-input-N-…>`` cells, the ``<python-input-N>`` inputs of Python 3.13's
REPL; newer Pythons keep them per code object, ``linecache._getlines_from_code``). Code with no
text anywhere (``python -c``, ``exec`` of a string) is refused in one line saying what to do: put
it in a file, or pass its text, ``knetc.grad(f, source=text)`` (``provide_source``): that text is
checked against the running code exactly as a file's is, and registered with linecache under a
pseudo-file (lines placed where the running code has them) that messages and comments quote.

Parsed trees are cached by the identity of the code object (never by its value: equal code
objects of two files must not share a tree, whose line numbers name one file), for as long as
that code object lives. ``watching()`` records the (function, code object) pairs parsed while a
specialization runs, so that a cache of compiled code can notice a ``__code__`` replaced later.
"""
from __future__ import annotations

import __future__
import ast
import contextlib
import hashlib
import inspect
import linecache
import re
import textwrap
import threading
import types
import weakref
from collections import OrderedDict
from dataclasses import dataclass

import gast

from ..errors import ArgumentError, KnetcError, NoRuleError, UnsupportedSyntax
from .timings import timed

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
        _cache[id(code)] = (weakref.ref(code, _forget(_cache, id(code))), parsed)
    return parsed


def _forget(table: dict, key):
    """A weakref callback dropping ``table[key]`` when its code object dies, unless the entry
    was replaced meanwhile."""
    def drop(ref):
        with _lock:
            hit = table.get(key)
            if hit is not None and hit[0] is ref:
                del table[key]
    return drop


@timed("parse")
def _parse(fn, code, allowed) -> Parsed:
    with _lock:
        given = _given.get(id(code))
    if given is not None and given[0]() is code:     # knetc.grad(fn, source=text), checked
        node, filename = given[1], given[2]
    else:
        node, filename = _find_source(fn, code)
    fence(node, filename, allowed)
    return Parsed(node, filename, fn.__qualname__)


def source_text(fn) -> str:
    """The text of function ``fn`` (with its decorators, dedented), checked to compile to the
    code Python runs: a ``KnetcError`` when its file changed since it was loaded (the rule
    templates, compiled from their text on first use, read it so)."""
    code = fn.__code__
    flags = code.co_flags & _FUTURE_FLAGS
    lines = _file_lines(code.co_filename, code)
    whole = _whole_file(code.co_filename, "".join(lines), flags)
    if whole is not None:
        tree, module = whole
        node = _find_node(tree, code)
        if node is not None and any(same_code(c, code) for c in _compiled(module, code)):
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            return textwrap.dedent("".join(lines[first - 1:node.end_lineno]))
        raise _stale(fn, code)
    # a text that does not compile as a whole (a notebook cell with magics): as inspect reads it
    return textwrap.dedent(inspect.getsource(fn))


def _find_source(fn, code) -> tuple:
    """``(gast node, filename)`` of the running ``code``: from its file (or linecache entry), else
    from the texts interactive sessions keep per code object or the user passed (``source=``)."""
    filename = code.co_filename
    try:
        lines = _file_lines(filename, code)    # the file's text now
    except (OSError, TypeError) as e:
        if "out of bounds" in str(e):        # the file is now shorter than the running code's
            raise _stale(fn, code) from None
        found = _from_texts(fn, code)
        if found is None:
            raise _no_source(fn, code) from None
        return found
    return _node_from_lines(fn, code, lines), filename


def _node_from_lines(fn, code, lines):
    """The def (or lambda) of ``code`` in its file's ``lines``, as gast; a KnetcError when the
    text does not compile to the running code."""
    filename = code.co_filename
    flags = code.co_flags & _FUTURE_FLAGS
    alone = _def_alone(fn, code, lines, flags)
    if alone is not None:
        return alone
    whole = _whole_file(filename, "".join(lines), flags)
    if whole is not None:
        tree, module = whole
        node = _find_node(tree, code)
        if node is None or not any(same_code(c, code) for c in _compiled(module, code)):
            raise _stale(fn, code)
        return gast.ast_to_gast(node)    # only this function's part of the file
    return _parse_alone(fn, code, flags)


def def_block(lines: list[str], first: int) -> str | None:
    """The text of the def whose first line (its first decorator's) is line ``first`` of
    ``lines``, read by indentation: the decorators, the def line, then the lines after it while
    they are blank, comments, or indented deeper than the def. None when line ``first`` does not
    start one. A string or bracket reaching back to the def's column cuts the text short; it then
    fails to parse or to compile to the running code, and the caller reads the whole file."""
    start = first - 1
    if not 0 <= start < len(lines):
        return None
    head = lines[start]
    base = len(head) - len(head.lstrip())
    end = start
    while True:                     # the decorators: lines of "@" or deeper, up to the def
        if end >= len(lines):
            return None
        line = lines[end]
        text = line.lstrip()
        depth = len(line) - len(text)
        if depth == base and text.startswith(("def ", "async def ")):
            break
        if text and not text.startswith("#") and depth <= base and not text.startswith("@"):
            return None
        end += 1
    end += 1
    last = end
    while end < len(lines):
        line = lines[end]
        text = line.lstrip()
        if text and not text.startswith("#"):
            if len(line) - len(text) <= base:
                break
            last = end + 1          # (comments and blank lines after the body are left out)
        end += 1
    return "".join(lines[start:last])


def _def_alone(fn, code, lines, flags):
    """The gast node of a module-level def, from its own lines compiled alone and compared with
    the running code, or None (then the whole file decides). Compiling and parsing a whole file
    cost 1.5-3 ms (a model's file, knetc's metrics.py), most of a small model's first gradient;
    one def costs a tenth of that. Lambdas, closures and methods (their text alone compiles to
    other code: free variables, ``__class__``, mangled names) always take the whole file."""
    if code.co_name == "<lambda>" or code.co_freevars:
        return None
    text = def_block(lines, code.co_firstlineno)
    if text is None or text[:1].isspace():
        return None
    try:    # (the blank lines put the def on its line in the file, without a walk to move it)
        tree = ast.parse("\n" * (code.co_firstlineno - 1) + text)
    except (SyntaxError, ValueError):
        return None
    node = tree.body[0] if len(tree.body) == 1 else None
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or node.name != code.co_name:
        return None
    if not any(_compiles_to(t, code.co_filename, flags, code) for t in _variants(fn, code, text)):
        return None
    return gast.ast_to_gast(node)


def _no_source(fn, code) -> NoRuleError:
    """No text of ``code`` anywhere: one line saying why and what to do."""
    how = "put it in a .py file, or pass the text that defines it: knetc.grad(f, source=text)"
    e = NoRuleError(
        f"knetc: Python kept no source text for {fn.__qualname__} (\"{code.co_filename}\", line "
        f"{code.co_firstlineno}: run by python -c, or exec of a string): {how}")
    # Set after the message is made: they stay out of its one line.
    e.filename, e.lineno, e.hint = code.co_filename, code.co_firstlineno, how[0].upper() + how[1:] + "."
    return e


# -- Source texts from elsewhere: kept by interactive sessions per code object, or passed with
# knetc.grad(f, source=text). Each is registered with linecache under a pseudo-file and checked
# against the running code as a file's text is.

_given: dict = {}           # id(code) -> (weakref to the code, gast node, pseudo-file, text)
_texts: OrderedDict = OrderedDict()   # code's co_filename -> {pseudo-file: lines}, recent last
_MAX_TEXTS = 16
# Interactive inputs whose name is unique to one input (so the name itself can hold its lines).
_INTERACTIVE = re.compile(r"<(python|ipython)-input-[^>]*>\Z")


def provide_source(fn, text) -> None:
    """``knetc.grad(fn, source=text)``: ``text`` (Python source holding ``fn``'s def or lambda,
    possibly more: the defs of the helpers it calls) is what ``fn`` runs. Checked now against the
    running code exactly as a file's text is (a KnetcError when it differs), registered with
    linecache under a pseudo-file, and used for ``fn`` and for functions defined in the same
    place (``co_filename``) that have no other source."""
    code = fn.__code__
    if not isinstance(text, str):
        raise ArgumentError(f"knetc.grad: source= takes the text of {fn.__qualname__}'s def (a str), "
                            f"not {type(text).__name__}")
    with _lock:
        hit = _given.get(id(code))
    if hit is not None and hit[0]() is code and hit[3] == text:
        return
    src = textwrap.dedent(text)
    try:
        tree = ast.parse(src)
    except (SyntaxError, ValueError) as e:
        raise KnetcError(f"knetc: the source= text given for {fn.__qualname__} does not parse ({e})",
                         hint="Pass the text of its def (or lambda) as Python runs it.") from None
    nodes = _candidates(tree, code)
    # Place the def where the running code has it, so that line numbers agree with Python's.
    firsts = [_first_line(n) for n in nodes]
    pad = 0 if not firsts or code.co_firstlineno in firsts else max(0, code.co_firstlineno - firsts[0])
    pseudo, lines = _register(fn.__qualname__, "\n" * pad + src, code.co_filename)
    found = _match(fn, code, pseudo, lines)
    if found is None:
        _unregister(pseudo, code.co_filename)
        what = f"def {code.co_name}" if code.co_name != "<lambda>" else "lambda"
        raise KnetcError(
            f"knetc: the source= text given for {fn.__qualname__} is not the code Python runs for it",
            filename=code.co_filename, lineno=code.co_firstlineno,
            hint=f"Pass the text {fn.__qualname__} was defined from, unchanged: this one holds no "
                 f"{what} that compiles to the running code (knetc differentiates only the code "
                 "Python runs).")
    with _lock:
        _given[id(code)] = (weakref.ref(code, _forget(_given, id(code))), found, pseudo, text)


@timed("parse")
def define(name: str, text: str, namespace: dict, label: str):
    """The function ``name`` that knetc itself writes as ``text`` (one def), run in
    ``namespace``: its code is compiled from the very tree registered as its source, so the
    check ``provide_source`` makes of a user's text has nothing to find (a unit's wrapper,
    whose gradient is its backward, is made this way: compiler/units.py). The text is kept in linecache
    under ``<knetc label>`` for tracebacks."""
    tree = ast.parse(text)
    pseudo = f"<knetc {label} #{hashlib.sha1(text.encode()).hexdigest()[:8]}>"
    linecache.cache[pseudo] = (len(text), None, text.splitlines(True), pseudo)
    exec(compile(tree, pseudo, "exec", dont_inherit=True), namespace)     # noqa: S102
    fn = namespace[name]
    code = fn.__code__
    node = gast.ast_to_gast(tree.body[0])
    with _lock:
        _given[id(code)] = (weakref.ref(code, _forget(_given, id(code))), node, pseudo, text)
    return fn


def _register(name: str, text: str, origin: str, pseudo: str | None = None) -> tuple:
    """``(pseudo-file, lines)``: ``text`` registered with linecache (under ``pseudo``, or a
    name of its own made from ``name`` and the text), remembered as a source for ``origin``."""
    lines = text.splitlines(True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    if pseudo is None:
        digest = hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        pseudo = f"<knetc source of {name} #{digest}>"
    linecache.cache[pseudo] = (len(text), None, lines, pseudo)
    with _lock:
        per_file = _texts.pop(origin, None) or {}
        per_file.pop(pseudo, None)
        per_file[pseudo] = lines
        while len(per_file) > _MAX_TEXTS:
            del per_file[next(iter(per_file))]
        _texts[origin] = per_file
        while len(_texts) > _MAX_TEXTS:
            _texts.popitem(last=False)
    return pseudo, lines


def _unregister(pseudo: str, origin: str) -> None:
    linecache.cache.pop(pseudo, None)
    with _lock:
        _texts.get(origin, {}).pop(pseudo, None)


def _from_texts(fn, code):
    """``(gast node, pseudo-file)`` of ``code`` from a text kept elsewhere, or None: the lines
    an interactive session keeps per code object (Python 3.13's REPL and later, ``python -c`` in
    3.14), then the texts passed with ``source=`` for code defined in the same place."""
    filename = code.co_filename
    from_code = getattr(linecache, "_getlines_from_code", None)
    if from_code is not None:
        try:
            lines = from_code(code)
        except Exception:    # a private function: its signature may change
            lines = None
        if lines and isinstance(lines, list):
            unique = filename if _INTERACTIVE.match(filename) else None
            pseudo, lines = _register(fn.__qualname__, "".join(lines), filename, unique)
            found = _match(fn, code, pseudo, lines)
            if found is not None:
                return found, pseudo
    with _lock:
        texts = list(reversed(_texts.get(filename, {}).items()))
    for pseudo, lines in texts:
        entry = linecache.cache.get(pseudo)
        if entry is None or len(entry) < 3 or entry[2] is not lines:     # linecache was cleared
            linecache.cache[pseudo] = (sum(map(len, lines)), None, lines, pseudo)
        found = _match(fn, code, pseudo, lines)
        if found is not None:
            return found, pseudo
    return None


def _candidates(tree, code) -> list:
    """The defs named like ``code`` (or every lambda, for a lambda) in an ``ast`` tree."""
    if code.co_name == "<lambda>":
        return [n for n in ast.walk(tree) if isinstance(n, ast.Lambda)]
    return [n for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == code.co_name]


def _first_line(node) -> int:
    return min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", ())])


def _match(fn, code, pseudo: str, lines: list):
    """The gast node of the def (or lambda) in the pseudo-file's ``lines`` that compiles to the
    running ``code`` (wherever it stands in the text), or None."""
    try:
        tree = ast.parse("".join(lines))
    except (SyntaxError, ValueError):
        return None
    seen = set()
    for node in _candidates(tree, code):
        line = _first_line(node)
        if line in seen:
            continue
        seen.add(line)
        # The running code as if compiled from this place of the pseudo-file (its positions
        # move with its first line; same_code does not compare places).
        view = code.replace(co_filename=pseudo, co_firstlineno=line)
        try:
            return _node_from_lines(fn, view, lines)
        except KnetcError:
            pass
        try:   # the def alone, as its module compiled it (imports, enclosing function)
            return _parse_alone(fn, view, code.co_flags & _FUTURE_FLAGS)
        except KnetcError:
            continue
    return None


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
    if node is None or not any(_compiles_to(text, filename, flags, code)
                               for text in _variants(fn, code, wrapped)):
        raise _stale(fn, code)
    return node


def _variants(fn, code, source):
    """The text ``source`` as the code's file compiles it. How Python compiles ``np.sum(x)``
    depends on whether the module imported ``np`` (a module's attribute is loaded, not a
    method): when the function names modules of its globals, first with those names declared
    imported, then as it is."""
    names = set()
    todo = [code]
    while todo:
        c = todo.pop()
        names.update(c.co_names)
        todo.extend(k for k in c.co_consts if type(k) is type(code))
    imported = sorted(n for n in names if isinstance(getattr(fn, "__globals__", {}).get(n), types.ModuleType))
    if imported:
        yield "".join(f"import sys as {n}\n" for n in imported) + source
    yield source


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
