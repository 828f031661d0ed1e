"""Test helpers: Python modules written to files and imported, edited on disk, run again."""
import importlib.util
import os
import sys
import textwrap

_counter = iter(range(10**6))


def write_module(tmp_path, text, name=None):
    """Write ``text`` (dedented) as a new module file and import it; returns (module, path)."""
    name = name or f"_knetc_tmp_mod_{next(_counter)}_{os.getpid()}"
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(text))
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod, str(path)


def reload(mod):
    """importlib.reload for a module loaded from a file outside sys.path: run it again."""
    mod.__spec__.loader.exec_module(mod)
    return mod


def edit(path, text):
    """Rewrite a file (dedented) and move its mtime on (linecache notices by size and mtime)."""
    st = os.stat(path)
    with open(path, "w") as f:
        f.write(textwrap.dedent(text))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
