"""Rule templates are read from their files by indentation (registry._block), not by
inspect's tokenizer: the text must parse to the same tree inspect's text does, for every
registered template, and a def whose text reaches back to its column falls back to inspect."""
import ast
import inspect
import os
import textwrap

import knetc  # noqa: F401  (registers the rules)
from knetc.rules import registry

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(registry.__file__)))


def _templates():
    for rule in list(registry._rules.values()):
        t = getattr(rule, "template", None)
        # knetc's own (other tests register users' rules: made by exec, or from files they
        # then change on purpose)
        if t is not None and hasattr(t, "__code__") and \
                t.__code__.co_filename.startswith(_PACKAGE):
            yield t


def test_every_template_reads_as_inspect_reads_it():
    seen = 0
    for t in _templates():
        src, node = registry._template_def(t)
        want = ast.parse(textwrap.dedent(inspect.getsource(t))).body[0]
        assert ast.dump(node) == ast.dump(want), t.__qualname__
        seen += 1
    assert seen > 200


def tricky(y, x):                   # a string back at column 0: read by inspect
    note = """
a line at column 0"""
    d[x] = d[y] * len(note)  # noqa: F821


def plain(y, x):
    # a comment

    d[x] = d[y]  # noqa: F821
# a comment after the body, at column 0, is not part of it


def test_a_def_read_by_indentation_and_one_it_cannot_read():
    assert registry._block(plain).rstrip().endswith("d[x] = d[y]  # noqa: F821")
    cut = registry._block(tricky)
    try:
        ast.parse(cut)
        parsed = True
    except SyntaxError:
        parsed = False
    assert not parsed                 # cut short inside the string: it does not parse
    registry._files[tricky.__code__.co_filename] = registry._stat(tricky.__code__.co_filename)
    src, node = registry._template_def(tricky)
    assert node.name == "tricky" and "a line at column 0" in src
