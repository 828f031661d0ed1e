"""Where the source comes from, and float32 models that stay float32.

1. Functions typed in an interactive session (IPython's ``<ipython-input-N-…>`` cells, Python
   3.13's ``<python-input-N>`` REPL inputs, which keep their text in linecache, or per code object
   in newer Pythons) are differentiated like functions in files. Code Python kept no text of
   (``python -c``, ``exec`` of a string) is refused in one line saying what to do; its text can be
   passed with ``knetc.grad(f, source=text)``, checked against the running code like a file's.
2. A NumPy float64 scalar meeting float32 arrays (``x / np.sqrt(d)`` of an int d, under NumPy 2's
   rules) gives a ``knetc.PrecisionWarning`` once per line, naming it; Python floats, float64
   data and values computed from float64 data do not.
"""
import inspect
import linecache
import math
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import knetc
from knetc import KnetcError, MutationError, NoRuleError
from knetc.compiler import tape as tape_module

HERE = os.path.abspath(__file__)
rng = np.random.default_rng(3)

MODEL = """\
import numpy as np

def predict(w, x):
    h = np.tanh(x @ w[0] + w[1])
    return h @ w[2]

def loss(w, x, y):
    scale = [2.0]
    def err(p):
        return (p - y) * scale[0]
    return np.mean(err(predict(w, x)) ** 2)
"""


def params():
    return [rng.standard_normal((3, 4)), rng.standard_normal(4), rng.standard_normal((4, 1))]


XY = (rng.standard_normal((5, 3)), rng.standard_normal((5, 1)))


def run_text(text, filename, register=True):
    """Define the functions of ``text`` as an interactive session does: the text registered with
    linecache under ``filename`` (when ``register``), then compiled with that name and run."""
    if register:
        linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
    ns = {"__name__": "__main__"}
    exec(compile(text, filename, "exec"), ns)
    return ns


def assert_matches_numeric(f, w, *rest, **grad_kwargs):
    g = knetc.grad(f, **grad_kwargs)(w, *rest)
    ref = knetc.numeric_grad(f, w, *rest)
    for a, b in zip(g, ref):
        assert np.allclose(a, b, rtol=1e-5, atol=1e-7)


# -- 1. interactive sessions -----------------------------------------------------------------------

@pytest.mark.parametrize("filename", ["<python-input-7>", "<ipython-input-12-0123456789ab>"])
def test_interactive_inputs_kept_in_linecache(filename):
    ns = run_text(MODEL, filename)
    try:
        assert_matches_numeric(ns["loss"], params(), *XY)
        src = knetc.show(ns["loss"], params(), *XY)
        assert f"{filename}:11  return np.mean(err(predict(w, x)) ** 2)" in src
    finally:
        linecache.cache.pop(filename, None)


def test_interactive_errors_quote_the_input():
    text = "import numpy as np\n\ndef bad(w):\n    w[0] = 1.0\n    return np.sum(w)\n"
    filename = "<python-input-8>"
    ns = run_text(text, filename)
    try:
        with pytest.raises(MutationError) as info:
            knetc.grad(ns["bad"])(np.ones(3))
        e = info.value
        assert e.filename == filename and e.lineno == 4 and "w[0] = 1.0" in str(e)
    finally:
        linecache.cache.pop(filename, None)


def test_interactive_input_edited_is_refused():
    """The text registered for an input must be the code that runs (as for files)."""
    filename = "<python-input-9>"
    ns = run_text("import numpy as np\ndef f(w):\n    return np.sum(w * 2)\n", filename)
    other = "import numpy as np\ndef f(w):\n    return np.sum(w * 3)\n"
    linecache.cache[filename] = (len(other), None, other.splitlines(True), filename)
    try:
        with pytest.raises(KnetcError, match="differs from the running function"):
            knetc.grad(ns["f"])(np.ones(3))
    finally:
        linecache.cache.pop(filename, None)


def test_text_kept_per_code_object(monkeypatch):
    """Newer Pythons keep REPL inputs (and ``python -c``) per code object, not in linecache's
    cache by file name: ``linecache._getlines_from_code``. Simulated where Python has none."""
    filename = "<python-input-10>"
    ns = run_text(MODEL, filename, register=False)
    linecache.cache.pop(filename, None)
    lines = MODEL.splitlines(True)
    codes = {ns["loss"].__code__, ns["predict"].__code__}

    def from_code(code):
        return list(lines) if code in codes else []
    monkeypatch.setattr(linecache, "_getlines_from_code", from_code, raising=False)
    try:
        assert_matches_numeric(ns["loss"], params(), *XY)
        assert linecache.getline(filename, 4).strip() == "h = np.tanh(x @ w[0] + w[1])"
    finally:
        linecache.cache.pop(filename, None)


@pytest.mark.skipif(not hasattr(linecache, "_register_code"), reason="Python keeps no code texts")
def test_python_registers_the_code_text():
    filename = "<python-input-11>"
    code = compile(MODEL, filename, "exec")
    linecache._register_code(code, MODEL, filename)
    ns = {"__name__": "__main__"}
    exec(code, ns)
    try:
        assert_matches_numeric(ns["loss"], params(), *XY)
    finally:
        linecache.cache.pop(filename, None)


# -- 1. no source, and source= ---------------------------------------------------------------------

def test_exec_without_source_is_one_line():
    # a text no test passes with source= (a text passed for "<string>" serves its defs too)
    ns = run_text(MODEL.replace("2.0", "3.0"), "<string>", register=False)
    with pytest.raises(NoRuleError) as info:
        knetc.grad(ns["loss"])(params(), *XY)
    e = info.value
    msg = str(e)
    assert "\n" not in msg, msg
    assert "no source" in msg and "python -c" in msg and ".py file" in msg and "source=text" in msg
    assert e.filename == "<string>" and e.lineno == 7 and e.hint


def test_python_dash_c():
    script = textwrap.dedent("""\
        import numpy as np, knetc
        def loss(w):
            return np.sum(w * w)
        try:
            print("GRAD", knetc.grad(loss)(np.ones(2)))
        except knetc.NoRuleError as e:
            print("ERROR", repr(str(e)))
        """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         cwd=os.path.dirname(os.path.dirname(HERE)))
    assert out.returncode == 0, out.stderr
    if out.stdout.startswith("GRAD"):     # a Python that keeps the text of python -c (3.14)
        assert "[2. 2.]" in out.stdout
    else:
        assert out.stdout.startswith("ERROR") and "\\n" not in out.stdout, out.stdout
        assert "no source" in out.stdout and "source=text" in out.stdout


def test_source_keyword_whole_text():
    ns = run_text(MODEL, "<string>", register=False)
    w = params()
    assert_matches_numeric(ns["loss"], w, *XY, source=MODEL)   # predict's def found there too
    g, loss = knetc.gradloss(ns["loss"], source=MODEL)(w, *XY)
    assert np.isclose(loss, ns["loss"](w, *XY))
    loss2, g2 = knetc.value_and_grad(ns["loss"], source=MODEL)(w, *XY)
    assert loss2 == loss and all(np.array_equal(a, b) for a, b in zip(g, g2))
    d = knetc.differentiable(ns["loss"], source=MODEL)
    assert all(np.array_equal(a, b) for a, b in zip(d.grad(w, *XY), g))
    assert knetc.grad(source=MODEL)(ns["loss"])(w, *XY) is not None    # the decorator form


def test_source_keyword_def_alone_keeps_its_lines():
    """Only the def's text: placed at the running code's lines, registered with linecache, so
    error messages and comments quote it at the line numbers Python's tracebacks use."""
    text = "import numpy as np\n\n\ndef bad(w):\n    y = w * 2\n    y[1:] = 0.0\n    return np.sum(y)\n"
    ns = run_text(text, "<string>", register=False)
    only_def = "def bad(w):\n    y = w * 2\n    y[1:] = 0.0\n    return np.sum(y)\n"
    with pytest.raises(MutationError) as info:
        knetc.grad(ns["bad"], source=only_def)(np.ones(3))
    e = info.value
    assert e.lineno == 6 and "y[1:] = 0.0" in str(e)
    assert e.filename.startswith("<knetc source of bad")
    assert linecache.getline(e.filename, 4).startswith("def bad")


def test_source_keyword_indented_lambda_and_closure():
    f = eval("lambda w: np.sum(np.sin(w) ** 3)", {"np": np})
    w = rng.standard_normal(4)
    g = knetc.grad(f, source="lambda w: np.sum(np.sin(w) ** 3)")(w)
    assert np.allclose(g, knetc.numeric_grad(f, w), rtol=1e-6)
    text = """
        def make(c):
            def scaled(w):
                return np.sum(np.exp(w * c))
            return scaled
    """
    ns = {"np": np}
    exec(compile(textwrap.dedent(text), "<string>", "exec"), ns)
    f = ns["make"](0.5)
    g = knetc.grad(f, source=text)(w)          # indented text: dedented
    assert np.allclose(g, knetc.numeric_grad(f, w), rtol=1e-6)


def test_wrong_source_is_refused():
    ns = run_text(MODEL, "<string>", register=False)
    wrong = MODEL.replace("** 2", "** 3")
    with pytest.raises(KnetcError, match="not the code Python runs") as info:
        knetc.grad(ns["loss"], source=wrong)
    assert "unchanged" in str(info.value)
    with pytest.raises(KnetcError, match="not the code Python runs"):
        knetc.grad(ns["loss"], source="def other(w, x, y):\n    return 0.0\n")
    with pytest.raises(KnetcError, match="does not parse"):
        knetc.grad(ns["loss"], source="def loss(w, x, y):\n    return (\n")
    with pytest.raises(TypeError):
        knetc.grad(ns["loss"], source=ns["loss"])


def test_source_of_a_file_function_is_checked_too():
    def here(w):
        return np.sum(w * 4)
    text = textwrap.dedent(inspect.getsource(here))
    w = np.ones(2)
    assert np.allclose(knetc.grad(here, source=text)(w), 4.0)
    with pytest.raises(KnetcError, match="not the code Python runs"):
        knetc.grad(here, source=text.replace("4", "5"))


# -- 2. float32 stays float32 ----------------------------------------------------------------------

@pytest.fixture
def precision(monkeypatch):
    """Warnings recorded as they come (Python's own once-per-location filter off: knetc's own
    once-per-line is what is tested), each test starting with no line warned."""
    monkeypatch.setattr(tape_module, "_warned_lines", set())
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        yield lambda: [r for r in rec if issubclass(r.category, knetc.PrecisionWarning)]


def line_of(fn, text):
    lines, first = inspect.getsourcelines(fn)
    hits = [first + i for i, ln in enumerate(lines) if text in ln]
    assert len(hits) == 1, (text, hits)
    return hits[0]


def scaled_mlp(w, x):
    d = x.shape[1]
    h = np.tanh(x @ w[0] / np.sqrt(d))
    return np.mean(h @ w[1])


def f32(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def test_numpy_scalar_promotion_warned_once_with_line(precision):
    w, x = [f32(3, 4), f32(4, 1)], f32(5, 3)
    g = knetc.grad(scaled_mlp)(w, x)
    assert [a.dtype for a in g] == [np.float32, np.float32]
    got = precision()
    assert len(got) == 1, [str(r.message) for r in got]
    r = got[0]
    assert issubclass(r.category, UserWarning)
    assert r.filename == HERE and r.lineno == line_of(scaled_mlp, "np.sqrt(d)")
    msg = str(r.message)
    assert "float32" in msg and "float64" in msg and "np.float32(" in msg and "math.sqrt" in msg
    knetc.grad(scaled_mlp)(w, f32(7, 3))          # another specialization: not again
    knetc.grad(scaled_mlp)([f32(3, 2), f32(2, 1)], x)
    assert len(precision()) == 1


def weak_scalars(w, x):
    d = x.shape[1]
    h = np.tanh(x @ w / math.sqrt(d)) * 0.5 + float(np.sqrt(d)) + np.float32(np.sqrt(d))
    return np.mean(h * np.pi)


def float64_data(w, x64):
    s = np.sum(x64 * x64)                 # a value computed from float64 data, not a constant
    return np.mean((x64 @ w) * 2.0) + np.sum(w) * s


def test_python_floats_and_float64_data_do_not_warn(precision):
    g = knetc.grad(weak_scalars)(f32(3, 2), f32(4, 3))
    assert g.dtype == np.float32
    knetc.grad(float64_data)(f32(3, 2), rng.standard_normal((4, 3)))
    assert precision() == []


def promotes_in_a_loop(w):
    total = 0.0
    for i in range(4):
        total = total + np.sum(w * np.float64(0.5))
    return total


SCALE = 1.0 / np.sqrt(16)        # a global NumPy float64 scalar


def global_and_zero_d(w):
    a = np.sum(w * SCALE)
    b = np.sum(w + np.array(2.0))
    return a + b


def test_not_warned_twice_for_a_line_in_a_loop(precision):
    g = knetc.grad(promotes_in_a_loop)(f32(3))
    assert g.dtype == np.float32 and np.allclose(g, 2.0)
    got = precision()
    assert [r.lineno for r in got] == [line_of(promotes_in_a_loop, "np.float64(0.5)")]


def test_global_scalar_and_zero_d_array_warn(precision):
    knetc.grad(global_and_zero_d)(f32(3))
    got = precision()
    assert sorted(r.lineno for r in got) == [line_of(global_and_zero_d, "SCALE)"),
                                             line_of(global_and_zero_d, "np.array(2.0)")]
    assert any("0-d float64 array" in str(r.message) for r in got)


def test_precision_warning_can_be_an_error(monkeypatch):
    monkeypatch.setattr(tape_module, "_warned_lines", set())
    with warnings.catch_warnings():
        warnings.simplefilter("error", knetc.PrecisionWarning)
        with pytest.raises(knetc.PrecisionWarning):
            knetc.grad(scaled_mlp)([f32(3, 4), f32(4, 1)], f32(2, 3))
