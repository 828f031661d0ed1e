"""The house rules, checked: imports point one way (no cycle among knetc's modules, lazy imports
included) and no module reads another module's private names."""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Source folder -> the package it is installed as (runtime/ is installed as knetc.runtime).
PACKAGES = {"knetc": "knetc", "runtime": "knetc.runtime"}


def _modules():
    """{module name: path} for every module of the installed packages."""
    out = {}
    for folder, package in PACKAGES.items():
        base = os.path.join(ROOT, folder)
        for dirpath, _, files in os.walk(base):
            if "__pycache__" in dirpath:
                continue
            rel = os.path.relpath(dirpath, base)
            parts = [package] + ([] if rel == "." else rel.split(os.sep))
            if folder == "knetc" and len(parts) > 1 and parts[1] == "runtime":
                continue
            for f in files:
                if f.endswith(".py"):
                    name = ".".join(parts + ([] if f == "__init__.py" else [f[:-3]]))
                    out[name] = os.path.join(dirpath, f)
    return out


MODULES = _modules()


def _resolve(module, node):
    """The absolute module an ImportFrom refers to."""
    if node.level == 0:
        return node.module or ""
    is_package = MODULES[module].endswith("__init__.py")
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module):
    """(imported module, imported names, line) for every import in ``module``, lazy ones too."""
    tree = ast.parse(open(MODULES[module], encoding="utf-8").read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            for a in node.names:
                sub = f"{target}.{a.name}"
                if sub in MODULES:       # `from . import ir`: the submodule itself
                    yield sub, [], node.lineno
                else:
                    yield target, [a.name], node.lineno


def _graph():
    graph = {m: set() for m in MODULES}
    for m in MODULES:
        for target, _, _ in _imports(m):
            if target in MODULES and target != m:
                graph[m].add(target)
    return graph


def test_no_import_cycle():
    """A module never imports (directly or through others) a module that imports it: the
    packages' __init__ files re-export their children, so edges into an __init__ from inside
    its own package (``from knetc import init`` in knetc.data) do not count."""
    graph = _graph()
    for m, targets in graph.items():
        for t in list(targets):
            if MODULES[t].endswith("__init__.py") and m.startswith(t + "."):
                targets.discard(t)
    state, stack = {}, []

    def visit(m):
        state[m] = "active"
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == "active":
                pytest.fail("import cycle: " + " -> ".join(stack[stack.index(n):] + [n]))
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = "done"
    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_no_private_names_across_modules():
    bad = []
    for m in MODULES:
        tree = ast.parse(open(MODULES[m], encoding="utf-8").read())
        aliases = {}
        for target, names, line in _imports(m):
            for n in names:
                if n.startswith("_") and not n.startswith("__") and target in MODULES and target != m:
                    bad.append(f"{m}:{line} imports {target}.{n}")
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                target = _resolve(m, node)
                for a in node.names:
                    if f"{target}.{a.name}" in MODULES:
                        aliases[a.asname or a.name] = f"{target}.{a.name}"
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name in MODULES:
                        aliases[a.asname or a.name.split(".")[0]] = a.name
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and \
                    node.value.id in aliases and node.attr.startswith("_") and \
                    not node.attr.startswith("__") and aliases[node.value.id] != m:
                bad.append(f"{m}:{node.lineno} reads {aliases[node.value.id]}.{node.attr}")
    assert not bad, "\n".join(bad)


def test_the_compiler_stages_import_downwards():
    """knetc.compiler's stages never import the user-facing modules above them."""
    above = {"knetc.api", "knetc.cli"}
    for m in MODULES:
        if m.startswith("knetc.compiler") or m.startswith("knetc.rules") or m.startswith("knetc.runtime"):
            for target, _, line in _imports(m):
                assert target not in above, f"{m}:{line} imports {target}"
