"""A module-level def is read from its own lines (``parse._def_alone``): cut by indentation,
parsed, and compiled alone to compare with the running code, instead of compiling and parsing
its whole file. Every text the indentation reader gets wrong (a string or bracket reaching back
to column 0) must still give the right gradient, by the whole file; line numbers in errors
stay the file's; a stale def is still refused. Gradients against central finite differences."""

import numpy as np
import pytest

import knetc
from knetc import KnetcError, UnsupportedSyntax
from knetc.compiler import parse
from modfiles import edit, reload, write_module

rng = np.random.default_rng(3)


def check(f, x):
    assert knetc.gradcheck(f, x, rtol=1e-6, atol=1e-8)


@pytest.fixture
def no_whole_file(monkeypatch):
    """Fail if a whole file is compiled to find a def."""
    def refuse(*a, **k):
        raise AssertionError("the whole file was compiled")
    monkeypatch.setattr(parse, "_whole_file", refuse)


def test_plain_defs_are_read_without_their_whole_file(tmp_path, no_whole_file):
    mod, _ = write_module(tmp_path, '''
        import numpy as np
        import functools

        def same(f):
            return f

        def helper(x):
            """A docstring."""
            return np.tanh(x) * x   # a comment
        # a comment at column 0 inside the file
        @same
        @functools.wraps(helper)
        def loss(x):
            y = helper(x)
            return np.sum(y ** 2)
        z = 1
        ''')
    check(mod.loss, rng.standard_normal(4))


_CUT_SHORT = '''
import numpy as np

def doc(x):
    """A docstring whose second line
starts at column 0."""
    return np.sum(np.sin(x) * x)

def bracket(x):
    y = np.concatenate([
x, x * 2])
    return np.sum(y ** 3)

def text(x):
    s = """
not code
"""
    return np.sum(np.exp(x)) + len(s)
'''


@pytest.mark.parametrize("name", ["doc", "bracket", "text"])
def test_text_cut_short_falls_back_to_the_whole_file(tmp_path, name):
    mod, _ = write_module(tmp_path, _CUT_SHORT)
    check(getattr(mod, name), rng.standard_normal(3))


def test_redefined_name_reads_the_running_def(tmp_path, no_whole_file):
    mod, _ = write_module(tmp_path, '''
        import numpy as np

        def loss(x):
            return np.sum(np.cos(x))

        def loss(x):
            return np.sum(x ** 3)
        ''')
    x = rng.standard_normal(3)
    np.testing.assert_allclose(knetc.grad(mod.loss)(x), 3 * x ** 2)


def test_future_annotations_and_async_file_lines(tmp_path, no_whole_file):
    mod, _ = write_module(tmp_path, '''
        from __future__ import annotations
        import numpy as np

        def loss(x: np.ndarray) -> float:
            return np.sum(np.log1p(x * x))
        ''')
    check(mod.loss, rng.standard_normal(3))


def test_errors_name_the_file_line(tmp_path):
    mod, path = write_module(tmp_path, '''
        import numpy as np


        def loss(x):
            total = 0.0
            try:
                total = np.sum(x)
            except ValueError:
                pass
            return total
        ''')
    with pytest.raises(UnsupportedSyntax) as info:
        knetc.grad(mod.loss)(np.ones(2))
    assert info.value.filename == path and info.value.lineno == 7, str(info.value)


def test_stale_def_is_refused_and_reloaded_def_is_right(tmp_path):
    text = '''
        import numpy as np

        def loss(x):
            return np.sum(np.sin(x))
        '''
    mod, path = write_module(tmp_path, text)
    edit(path, text.replace("np.sin", "np.cos"))
    with pytest.raises(KnetcError) as info:
        knetc.grad(mod.loss)(np.ones(3))
    assert "differs from the running function" in str(info.value)
    mod = reload(mod)
    x = rng.standard_normal(3)
    np.testing.assert_allclose(knetc.grad(mod.loss)(x), -np.sin(x))


def test_file_that_does_not_compile_as_a_whole(tmp_path, no_whole_file):
    """A def in a file with a line Python cannot compile (an IPython magic kept in it after
    the module was loaded): the def alone decides."""
    mod, path = write_module(tmp_path, '''
        import numpy as np

        def loss(x):
            return np.sum(np.arctan(x))
        ''')
    with open(path, "a") as f:
        f.write("%timeit loss(x)\n")
    check(mod.loss, rng.standard_normal(3))


def test_def_block_reads_by_indentation():
    lines = ["@dec\n", "def f(x):\n", "    return x\n", "\n", "    # trailing\n", "y = 1\n"]
    assert parse.def_block(lines, 1) == "@dec\ndef f(x):\n    return x\n"
    assert parse.def_block(lines, 6) is None          # not a def
    assert parse.def_block(lines, 9) is None          # past the end
