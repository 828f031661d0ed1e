"""The ``knetc`` command line: look at the adjoint code knetc generates.

Two forms of ``knetc show``::

    knetc show SCRIPT.py [--function NAME] [-o DIR] [-- SCRIPT_ARGS...]
    knetc show MODULE_OR_FILE:FUNCTION --args SPEC [--argnum N] [-o DIR]

The first runs SCRIPT.py as ``__main__`` (with ``sys.argv = [SCRIPT.py, *SCRIPT_ARGS]``) and records
every adjoint that ``knetc.grad``/``gradloss``/``show`` compiles while it runs; it then prints each
one's source, after a header comment line naming the generated function, the user function and
the argument shapes (``--function NAME`` keeps only adjoints of user function NAME). Identical
adjoints (same generated source) are shown once. The script's own standard output is sent to
standard error, so standard output holds only generated code.

The second imports FUNCTION from a module (a path to a ``.py`` file, whose directory is put on
``sys.path``, or an importable module name; FUNCTION may be dotted, e.g. ``Model.loss``) without
running its ``if __name__ == "__main__"`` block, builds arguments from SPEC, and shows the adjoint
wrt argument ``--argnum`` (default 0).

SPEC mini-language
------------------
SPEC is one Python expression, evaluated with no builtins and only these names:

    f32(*shape)                     random normal float32 array of that shape
    f64(*shape)                     random normal float64 array
    i64(*shape, high=10, low=0)     random int64 array with values in [low, high)
    zeros32(*shape), zeros64(*shape), ones32(*shape), ones64(*shape)

plus literals (ints, floats, strings, True/False/None, lists, tuples, dicts), unary minus and
integer arithmetic (``f32(28*28, 64)``). ``shape`` may also be one tuple: ``f32((3, 4))``; ``f32()``
is a 0-d array. A tuple result is the positional arguments; any other result is the single
argument (so ``--args "f32(10)"`` works for a one-argument function; a single tuple argument needs
a trailing comma: ``--args "(f32(3), f32(3)),"``). Only array shapes and dtypes, and the values of
ints/strings/bools, matter to the generated code; random values are drawn with seed 0. Example::

    knetc show model.py:loss \\
        --args "[f32(784,64), f32(64), f32(64,10), f32(10)], f32(100,784), i64(100, high=10)"

Options
-------
``-o DIR`` writes each adjoint to ``DIR/<name>.py`` (``<name>_1.py``, ``<name>_2.py``, … for further
adjoints with the same name), creating DIR if needed, and prints the paths written.

Exit status: 0 on success; 1 when the script raised an exception (its traceback is printed); 2
for usage errors, a file/module/function that cannot be found, a bad SPEC, a ``knetc.KnetcError``
while compiling, or when no adjoint was compiled/matched.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import importlib.util
import os
import re
import runpy
import sys
import traceback

_SPEC_HELP = """\
SPEC is one Python expression evaluated with no builtins and only the names
  f32(*shape)  f64(*shape)           random normal float32 / float64 arrays
  i64(*shape, high=10, low=0)        random int64 array with values in [low, high)
  zeros32 zeros64 ones32 ones64      constant arrays (same call form)
plus literals (numbers, strings, True/False/None, lists, tuples, dicts) and
integer arithmetic. A shape may also be one tuple: f32((3, 4)). A tuple result
gives the positional arguments; any other result is the single argument.
Example:
  knetc show model.py:loss --args \\
    "[f32(784,64), f32(64), f32(64,10), f32(10)], f32(100,784), i64(100, high=10)"
"""


class CliError(Exception):
    """A user-facing error: printed as ``knetc: error: <message>``, exit status 2."""


# ---------------------------------------------------------------------------------------------
# SPEC evaluation

def _shape(name, shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    for d in shape:
        if type(d) is not int or d < 0:
            raise CliError(f"--args: {name}{tuple(shape)!r}: dimensions must be non-negative ints")
    return tuple(shape)


def spec_namespace(seed: int = 0) -> dict:
    """The names SPEC may use (fresh random generator with ``seed``)."""
    import numpy as np
    rng = np.random.default_rng(seed)

    def f32(*shape):
        return rng.standard_normal(_shape("f32", shape), dtype=np.float32)

    def f64(*shape):
        return rng.standard_normal(_shape("f64", shape), dtype=np.float64)

    def i64(*shape, high=10, low=0):
        if type(high) is not int or type(low) is not int or high <= low:
            raise CliError(f"--args: i64(...): need ints low < high, got low={low!r}, high={high!r}")
        return rng.integers(low, high, size=_shape("i64", shape), dtype=np.int64)

    def const(name, fill, dtype):
        def make(*shape):
            return np.full(_shape(name, shape), fill, dtype=dtype)
        make.__name__ = name
        return make

    return {"f32": f32, "f64": f64, "i64": i64,
            "zeros32": const("zeros32", 0, np.float32), "zeros64": const("zeros64", 0, np.float64),
            "ones32": const("ones32", 1, np.float32), "ones64": const("ones64", 1, np.float64)}


_ALLOWED_NODES = (ast.Expression, ast.Tuple, ast.List, ast.Dict, ast.Constant, ast.Call,
                  ast.Name, ast.Load, ast.keyword, ast.Starred, ast.UnaryOp, ast.UAdd, ast.USub,
                  ast.BinOp, ast.Add, ast.Sub, ast.Mult, ast.FloorDiv, ast.Div, ast.Mod, ast.Pow)


def eval_spec(spec: str, seed: int = 0) -> tuple:
    """The positional arguments described by SPEC (see the module docstring)."""
    names = spec_namespace(seed)
    text = spec.strip()
    if not text:
        raise CliError("--args: empty SPEC")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as e:
        col = (e.offset or 1)
        raise CliError(f"--args: invalid syntax at column {col} ({e.msg}) in {text!r}") from None
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED_NODES):
            snippet = ast.get_source_segment(text, node) or type(node).__name__
            raise CliError(f"--args: {snippet!r} is not allowed in SPEC (only literals and calls "
                           f"to {', '.join(names)})")
        if isinstance(node, ast.Name) and node.id not in names and node.id not in (
                "True", "False", "None"):
            raise CliError(f"--args: unknown name {node.id!r} in SPEC (allowed: {', '.join(names)})")
        if isinstance(node, ast.Call) and not isinstance(node.func, ast.Name):
            raise CliError(f"--args: only calls to {', '.join(names)} are allowed in SPEC")
    try:
        value = eval(compile(tree, "<--args>", "eval"), {"__builtins__": {}}, names)
    except CliError:
        raise
    except Exception as e:  # noqa: BLE001 (any failure of the user's expression)
        raise CliError(f"--args: evaluating {text!r} failed: {type(e).__name__}: {e}") from None
    return value if type(value) is tuple else (value,)


# ---------------------------------------------------------------------------------------------
# Recording and formatting adjoints

def header_line(entry, index: int | None = None, total: int | None = None) -> str:
    """One comment line naming the adjoint, the user function and the argument shapes."""
    info = entry.info
    parts = [entry.name]
    if info.get("function"):
        parts.append(f": gradient of {info['function']} ({info['where']}) wrt {info['wrt']}")
    if info.get("specialized"):
        parts.append(f"; specialized to {info['specialized']}")
    count = f"[{index}/{total}] " if index is not None else ""
    stats = f"  ({entry.nops} ops, compiled in {entry.seconds * 1e3:.0f} ms)"
    return f"# ==== {count}{''.join(parts)}{stats}"


def _dedupe(entries):
    seen, out = set(), []
    for e in entries:
        key = (e.name, e.source)
        if key not in seen:
            seen.add(key)
            out.append(e)
    return out


def _matches(entry, function: str) -> bool:
    """Is ``entry`` an adjoint of ``function`` (its qualified name, its last part, or the
    generated function's name)?"""
    from knetc.compiler.tape import identifier
    last = function.rsplit(".", 1)[-1]
    return function == entry.info.get("function") or entry.name in (f"{identifier(last)}_grad", function)


def emit(entries, outdir: str | None, out) -> None:
    """Print the entries' sources (with header lines), or write them to ``outdir``."""
    n = len(entries)
    if outdir is None:
        for i, e in enumerate(entries, 1):
            if i > 1:
                out.write("\n\n")
            out.write(header_line(e, i, n) + "\n")
            out.write(e.source if e.source.endswith("\n") else e.source + "\n")
        out.flush()
        return
    try:
        os.makedirs(outdir, exist_ok=True)
    except OSError as e:
        raise CliError(f"cannot create output directory {outdir!r}: {e.strerror or e}") from None
    used: dict[str, int] = {}
    for e in entries:
        k = used.get(e.name, 0)
        used[e.name] = k + 1
        path = os.path.join(outdir, f"{e.name}.py" if k == 0 else f"{e.name}_{k}.py")
        text = header_line(e) + "\n" + e.source + ("" if e.source.endswith("\n") else "\n")
        try:
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as err:
            raise CliError(f"cannot write {path!r}: {err.strerror or err}") from None
        out.write(path + "\n")
    out.flush()


# ---------------------------------------------------------------------------------------------
# The two forms of `show`

@contextlib.contextmanager
def _saved_interpreter_state(module_name: str | None = None):
    """Restore sys.argv, sys.path (and one sys.modules key) afterwards: main() may run in-process."""
    argv, path = sys.argv[:], sys.path[:]
    had = module_name in sys.modules if module_name else False
    old = sys.modules.get(module_name) if module_name else None
    try:
        yield
    finally:
        sys.argv[:] = argv
        sys.path[:] = path
        if module_name:
            if had:
                sys.modules[module_name] = old
            else:
                sys.modules.pop(module_name, None)


def _knetc_message(e) -> str:
    """A KnetcError's text without its own "knetc: " prefix (the CLI adds "knetc: error: ")."""
    text = str(e)
    return text[len("knetc: "):] if text.startswith("knetc: ") else text


def _user_traceback(exc: BaseException, script: str) -> str:
    """The exception's traceback without the frames of knetc's command line and runpy."""
    tb = exc.__traceback__
    frames = traceback.extract_tb(tb)
    skip = 0
    script_abs = os.path.abspath(script)
    for i, fr in enumerate(frames):
        if os.path.abspath(fr.filename) == script_abs:
            skip = i
            break
    while tb is not None and skip > 0:
        tb, skip = tb.tb_next, skip - 1
    return "".join(traceback.format_exception(type(exc), exc, tb))


def show_script(script: str, script_args: list[str], function: str | None, outdir: str | None,
                out, err) -> int:
    from knetc import api
    from knetc.errors import KnetcError
    if not os.path.exists(script):
        raise CliError(f"no such file: {script!r}")
    if os.path.isdir(script):
        raise CliError(f"{script!r} is a directory, not a Python script")
    with _saved_interpreter_state(), api.recording() as entries:
        sys.argv[:] = [script, *script_args]
        sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
        try:
            with contextlib.redirect_stdout(err):
                runpy.run_path(script, run_name="__main__")
        except SystemExit as e:
            code = e.code
            if code not in (None, 0):
                if not isinstance(code, int):
                    err.write(f"{code}\n")
                    code = 1
                err.write(f"knetc: error: {script} exited with status {code}\n")
                return code
        except KnetcError as e:
            raise CliError(f"while running {script}: {_knetc_message(e)}") from None
        except SyntaxError as e:
            raise CliError(f"{script} has a syntax error: {e.msg} "
                           f"(line {e.lineno})") from None
        except Exception as e:  # noqa: BLE001 (the user's script failed)
            err.write(_user_traceback(e, script))
            err.write(f"knetc: error: {script} raised {type(e).__name__}: {e}\n")
            err.flush()
            return 1
    entries = _dedupe(entries)
    if not entries:
        raise CliError(f"{script} ran but compiled no adjoint (did it call knetc.grad, "
                       "knetc.gradloss or knetc.show?)")
    if function is not None:
        chosen = [e for e in entries if _matches(e, function)]
        if not chosen:
            names = ", ".join(sorted({e.name for e in entries}))
            raise CliError(f"no adjoint of function {function!r} was compiled by {script} "
                           f"(compiled: {names})")
        entries = chosen
    emit(entries, outdir, out)
    return 0


def _module_name(path: str) -> str:
    name = os.path.splitext(os.path.basename(path))[0]
    return name if name.isidentifier() else "_knetc_cli_" + re.sub(r"\W", "_", name)


def _load_module(target: str):
    """The module for a .py path (registered in sys.modules under its stem) or a module name."""
    looks_like_path = target.endswith(".py") or os.sep in target or "/" in target
    if looks_like_path or os.path.isfile(target):
        if not os.path.isfile(target):
            raise CliError(f"no such file: {target!r}")
        path = os.path.abspath(target)
        name = _module_name(path)
        sys.path.insert(0, os.path.dirname(path))
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise CliError(f"cannot import {target!r} as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module
    sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as e:
        if e.name and (target == e.name or target.startswith(e.name + ".")):
            raise CliError(f"no module named {target!r} (and no such file)") from None
        raise


def _describe_args(args) -> str:
    try:
        from knetc.compiler.pipeline import describe
        return "(" + ", ".join(describe(a) for a in args) + ")"
    except Exception:  # noqa: BLE001 (only a description)
        return f"({len(args)} arguments)"


def show_function(target: str, spec: str, argnum: int | None, outdir: str | None, out,
                  err) -> int:
    from knetc.api import Grad
    from knetc.errors import KnetcError
    modname, _, fname = target.rpartition(":")
    if not modname or not fname:
        raise CliError(f"expected MODULE_OR_FILE:FUNCTION, got {target!r}")
    if argnum is not None and argnum < 0:
        raise CliError(f"--argnum must be >= 0, got {argnum}")
    args = eval_spec(spec)   # check SPEC before importing anything
    stem = _module_name(os.path.abspath(modname)) if os.path.isfile(modname) else None
    with _saved_interpreter_state(stem):
        try:
            with contextlib.redirect_stdout(err):
                module = _load_module(modname)
        except CliError:
            raise
        except KnetcError as e:
            raise CliError(f"while importing {modname}: {_knetc_message(e)}") from None
        except SyntaxError as e:
            raise CliError(f"{modname} has a syntax error: {e.msg} (line {e.lineno})") from None
        except Exception as e:  # noqa: BLE001 (the user's module failed to import)
            raise CliError(f"importing {modname} raised {type(e).__name__}: {e}") from None
        obj = module
        for part in fname.split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                raise CliError(f"{modname} has no function {fname!r}") from None
        if not callable(obj):
            raise CliError(f"{modname}:{fname} is a {type(obj).__name__}, not a function")
        try:
            if isinstance(obj, Grad):
                g = obj if argnum is None else Grad(obj.fun, argnum, obj.with_loss)
            else:
                g = Grad(obj, 0 if argnum is None else argnum)
            entry = g.specialize(args)
        except KnetcError as e:
            raise CliError(_knetc_message(e)) from None
        except Exception as e:  # noqa: BLE001 (the function failed on these arguments)
            notes = [n.strip() for n in getattr(e, "__notes__", ()) if n.strip()]
            where = f" ({'; '.join(notes)})" if notes else ""
            raise CliError(f"{fname} failed on --args {_describe_args(args)}: "
                           f"{type(e).__name__}: {e}{where}") from None
    emit([entry], outdir, out)
    return 0


# ---------------------------------------------------------------------------------------------
# argparse

def _version() -> str:
    try:
        from knetc import __version__
    except Exception:  # noqa: BLE001
        __version__ = "unknown"
    return f"knetc {__version__}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="knetc",
        description="knetc: Knet for Python, a source-to-source autodiff compiler. "
                    "The command line shows the adjoint code knetc generates.",
        epilog="Run 'knetc show --help' for the forms of show and the --args SPEC language.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    show = sub.add_parser(
        "show", formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="knetc show SCRIPT.py [--function NAME] [-o DIR] [-- SCRIPT_ARGS ...]\n"
              "       knetc show MODULE_OR_FILE:FUNCTION --args SPEC [--argnum N] [-o DIR]",
        help="print the generated adjoint code",
        description="Print the adjoint (gradient) code knetc generates.\n\n"
                    "  SCRIPT.py: run the script as __main__ (arguments after '--' become its\n"
                    "  sys.argv[1:]) and show every adjoint compiled while it runs. The script's\n"
                    "  stdout goes to stderr, so stdout holds only generated code.\n\n"
                    "  MODULE_OR_FILE:FUNCTION: import FUNCTION (may be dotted) from a .py file\n"
                    "  or a module name, without running its __main__ block, and show its\n"
                    "  adjoint for the arguments described by --args.\n\n" + _SPEC_HELP,
        epilog="Exit status: 0 ok; 1 the script raised an exception; 2 usage error, missing\n"
               "file/function, bad SPEC, knetc error, or no adjoint compiled/matched.")
    show.add_argument("target", metavar="SCRIPT.py | MODULE_OR_FILE:FUNCTION",
                      help="a script to run, or the function to show")
    show.add_argument("--function", "-f", metavar="NAME",
                      help="(script form) show only adjoints of user function NAME")
    show.add_argument("--args", "-a", dest="spec", metavar="SPEC",
                      help="(function form) the arguments, in the SPEC language above")
    show.add_argument("--argnum", "-n", type=int, metavar="N",
                      help="(function form) differentiate wrt argument N (default 0)")
    show.add_argument("-o", "--output", dest="outdir", metavar="DIR",
                      help="write each adjoint to DIR/<name>.py instead of printing it")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (``--help``/``--version`` return 0)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    script_args: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, script_args = argv[:i], argv[i + 1:]
    parser = build_parser()
    try:
        ns = parser.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    out, err = sys.stdout, sys.stderr
    if ns.command is None:
        parser.print_help(out)
        return 2
    try:
        target = ns.target
        function_form = ns.spec is not None or (":" in target and not os.path.exists(target)
                                                and not target.endswith(".py"))
        if function_form:
            if ns.spec is None:
                raise CliError(f"{target} names a function: describe its arguments with "
                               "--args SPEC (see knetc show --help)")
            if ns.function is not None:
                raise CliError("--function applies to the script form; with "
                               "MODULE:FUNCTION the function is already named")
            if script_args:
                raise CliError("arguments after '--' apply to the script form only")
            return show_function(target, ns.spec, ns.argnum, ns.outdir, out, err)
        if ns.argnum is not None:
            raise CliError("--argnum applies to the MODULE:FUNCTION --args SPEC form; in the "
                           "script form the script's own knetc.grad calls choose it")
        return show_script(target, script_args, ns.function, ns.outdir, out, err)
    except CliError as e:
        err.write(f"knetc: error: {e}\n")
        err.flush()
        return 2
    except KeyboardInterrupt:
        err.write("knetc: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
