"""knetc's errors: each is a knetc exception naming the user's file, line and construct, with a
hint; the user's own Python errors propagate unchanged with a note naming the file and line."""
import inspect
import math
import os

import numpy as np
import pytest

import knetc
from knetc import KnetcError, LossError, MutationError, NoRuleError, UnsupportedSyntax

HERE = os.path.basename(__file__)


def line_of(fn, text):
    """The file line of ``fn``'s source that contains ``text``."""
    lines, first = inspect.getsourcelines(fn)
    hits = [first + i for i, ln in enumerate(lines) if text in ln]
    assert len(hits) == 1, (text, hits)
    return hits[0]


def raises(cls, fn, *args, line_text, hint_text, argnum=0, **kwargs):
    """Check grad(fn)(*args) raises exactly ``cls`` with file, line, construct and hint."""
    with pytest.raises(KnetcError) as info:
        knetc.grad(fn, argnum=argnum)(*args, **kwargs)
    e = info.value
    assert type(e) is cls, f"{type(e).__name__}: {e}"
    msg = str(e)
    line = line_of(fn, line_text)
    assert HERE in msg and f"line {line}" in msg, msg
    assert e.filename.endswith(HERE) and e.lineno == line
    assert line_text in msg, msg                      # the construct, quoted from the source
    assert hint_text in msg and e.hint, msg
    return e


x3 = np.array([1.0, 2.0, 3.0])


# -- mutation -----------------------------------------------------------------------

def _setitem(w):
    w[0] = 1.0
    return np.sum(w)


def _setitem_local(w):
    y = w * 2
    y[1:] = 0.0
    return np.sum(y)


def _augassign_argument(w, v):
    w += v
    return np.sum(w)


def _augassign_subscript(w):
    y = w * 1.0
    y[0] += 1.0
    return np.sum(y)


def _augassign_other_argument(w, v):
    v *= w
    return np.sum(v)


def _append_to_argument(w, hs):
    hs.append(w * 2)
    return np.sum(w)


@pytest.mark.parametrize("fn, args, text", [
    (_setitem, (x3,), "w[0] = 1.0"),
    (_setitem_local, (x3,), "y[1:] = 0.0"),
    (_augassign_argument, (x3, x3), "w += v"),
    (_augassign_subscript, (x3,), "y[0] += 1.0"),
    (_augassign_other_argument, (x3, x3), "v *= w"),
])
def test_array_mutation(fn, args, text):
    raises(MutationError, fn, *[a.copy() for a in args], line_text=text, hint_text="Instead")


def test_argument_is_not_changed_by_a_refused_mutation():
    w = x3.copy()
    with pytest.raises(MutationError):
        knetc.grad(_setitem)(w)
    np.testing.assert_array_equal(w, x3)


def test_list_method_on_argument_container():
    raises(MutationError, _append_to_argument, x3, [], line_text="hs.append(w * 2)",
           hint_text="Instead")


# -- syntax outside the subset --------------------------------------------------------

def _class(w):
    class A:
        pass
    return np.sum(w)


def _try(w):
    try:
        y = np.log(w)
    except ValueError:
        y = w
    return np.sum(y)


def _with(w):
    with np.errstate(all="ignore"):
        y = np.log(w)
    return np.sum(y)


def _yield(w):
    yield np.sum(w)


def _global(w):
    global _G
    _G = w
    return np.sum(w)


def _async(w):
    async def inner():
        return w
    return np.sum(w)


def _import(w):
    import math as m
    return np.sum(w) * m.pi


def _import_from(w):
    from math import pi
    return np.sum(w) * pi


def _nonlocal(w):
    y = w

    def inner():
        nonlocal y
        y = y * 2
    inner()
    return np.sum(y)


def _try_helper(v):
    try:
        return np.sum(v)
    finally:
        pass


def _calls_try_helper(w):
    return _try_helper(w) * 2


def _match(w, k):
    match k:
        case 1:
            return np.sum(w)
    return np.sum(w * 2)


def _try_star(w):
    try:
        v = np.sum(w)
    except* ValueError:
        v = 0.0
    return v


def _attribute_assign(w, obj):
    obj.value = w
    return np.sum(w)


def _print_array(w):
    print(w)
    return np.sum(w)


@pytest.mark.parametrize("fn, text", [
    (_class, "class A:"), (_try, "try:"), (_with, "with np.errstate"), (_yield, "yield np.sum"),
    (_global, "global _G"), (_async, "async def inner"), (_import, "import math as m"),
    (_import_from, "from math import pi"), (_nonlocal, "nonlocal y"),
    (_try_helper, "try:"), (_try_star, "try:"),
])
def test_unsupported_syntax(fn, text):
    raises(UnsupportedSyntax, fn, x3, line_text=text, hint_text="Instead")


def test_unsupported_syntax_in_a_called_helper_names_the_helper():
    e = raises(UnsupportedSyntax, _try_helper, x3, line_text="try:", hint_text="Instead")
    with pytest.raises(UnsupportedSyntax) as info:
        knetc.grad(_calls_try_helper)(x3)
    assert str(info.value) == str(e)


def test_match_statement():
    with pytest.raises(UnsupportedSyntax) as info:
        knetc.grad(_match)(x3, 1)
    assert HERE in str(info.value) and info.value.lineno == line_of(_match, "match k:")
    assert info.value.hint


class _Obj:
    pass


def test_attribute_assignment():
    raises(UnsupportedSyntax, _attribute_assign, x3, _Obj(), line_text="obj.value = w",
           hint_text="Instead")


def test_print_of_an_array():
    raises(UnsupportedSyntax, _print_array, x3, line_text="print(w)", hint_text="Instead")


# -- functions without rules --------------------------------------------------------------

def _eigvals(w):
    return np.sum(np.linalg.eigvals(w.reshape(2, 2)).real) * 2


def _fsum(w):
    return math.fsum(w)


def _math_exp_of_float(a):
    return math.exp(a) * 2.0


def _bessel_function(w):
    return np.sum(np.i0(w))


def _conj_method(w):
    return np.sum(w.conj())


@pytest.mark.parametrize("fn, arg, text, cls", [
    (_eigvals, np.arange(4.0) + 1, "np.linalg.eigvals", NoRuleError),
    (_fsum, x3, "math.fsum(w)", NoRuleError),
    (_math_exp_of_float, 0.5, "math.exp(a)", NoRuleError),
    (_bessel_function, x3, "np.i0(w)", NoRuleError),
])
def test_no_rule(fn, arg, text, cls):
    raises(cls, fn, arg, line_text=text, hint_text="knetc.adjoint")


def test_unknown_array_method():
    e = raises(UnsupportedSyntax, _conj_method, x3, line_text="w.conj()",
               hint_text="np.xxx(x")
    assert ".conj" in str(e)


def test_function_without_source():
    f = eval("lambda w: np.sum(w * 2)", {"np": np})
    with pytest.raises(NoRuleError) as info:
        knetc.grad(f)(x3)
    assert "source" in str(info.value) and info.value.hint


# -- the loss and the parameter -------------------------------------------------------

def _nonscalar(w):
    return w * 2


def _returns_tuple(w):
    return np.sum(w), np.sum(w * 2)


def _returns_none(w):
    np.sum(w)


def _helper_value(w):
    return w * 2


def _nonscalar_from_helper(w):
    h = w + 1
    return _helper_value(h)


def _int_param(n, w):
    return np.sum(w) * n


@pytest.mark.parametrize("fn, hint, line", [
    (_nonscalar, "np.sum", 1), (_returns_tuple, "scalar", 1), (_returns_none, "Return the loss", 1),
    (_nonscalar_from_helper, "np.sum", 2),
])
def test_loss_must_be_scalar(fn, hint, line):
    with pytest.raises(LossError) as info:
        knetc.grad(fn)(x3)
    e = info.value
    # It points at the differentiated function's statement that returned (or ended) it.
    assert HERE in str(e) and e.lineno == fn.__code__.co_firstlineno + line
    assert hint in str(e)


def test_differentiating_a_non_float_parameter():
    for bad in (3, np.array([1, 2, 3]), [1, 2], "abc"):
        with pytest.raises(LossError) as info:
            knetc.grad(_int_param)(bad, x3)
        e = info.value
        assert HERE in str(e) and e.lineno == _int_param.__code__.co_firstlineno
        assert "argnum" in str(e)
    np.testing.assert_allclose(knetc.grad(_int_param, argnum=1)(3, x3), [3.0, 3.0, 3.0])


# -- the user's own errors propagate, with a note -------------------------------------

def _shape_mismatch(w, x):
    h = np.tanh(w)
    y = h @ x
    return np.sum(y)


def _helper_with_bug(v):
    return v @ np.ones((5, 2))


def _calls_buggy_helper(w):
    y = w * 2
    return np.sum(_helper_with_bug(y))


def _key_error(w, d):
    return np.sum(w * d["missing"])


def _name_error(w):
    return np.sum(w * undefined_name)  # noqa: F821


def _user_raise(w, n):
    if n > 2:
        raise ValueError("n must be at most 2")
    return np.sum(w)


def _python_zero_division(w, n):
    k = 1 // n
    return np.sum(w) * k


def _unpack_error(w):
    a, b = w, w, w  # noqa: F841  (fails on purpose: too many values)
    return np.sum(a)


def _augassign_broadcast(w, x):
    s = w * 2
    s += x                          # (3,) += (2, 3): NumPy cannot do this in place
    return np.sum(s)


def _note(e):
    return "\n".join(getattr(e, "__notes__", []))


@pytest.mark.parametrize("fn, args, cls, text", [
    (_shape_mismatch, (np.ones((2, 3)), np.ones((2, 3))), ValueError, "y = h @ x"),
    (_calls_buggy_helper, (np.ones((2, 3)),), ValueError, (_helper_with_bug, "return v @ np.ones")),
    (_key_error, (x3, {"a": x3}), KeyError, 'd["missing"]'),
    (_name_error, (x3,), NameError, "undefined_name"),
    (_user_raise, (x3, 3), ValueError, "raise ValueError"),
    (_python_zero_division, (x3, 0), ZeroDivisionError, "k = 1 // n"),
    (_unpack_error, (x3,), ValueError, "a, b = w, w, w"),
    (_augassign_broadcast, (x3, np.ones((2, 3))), ValueError, "s += x"),
])
def test_user_errors_propagate_with_a_note(fn, args, cls, text):
    with pytest.raises(cls) as info:
        knetc.grad(fn)(*args)
    e = info.value
    assert type(e) is cls and not isinstance(e, KnetcError)
    note = _note(e)
    where, text = text if isinstance(text, tuple) else (fn, text)
    assert HERE in note and f"line {line_of(where, text)}" in note, note
    assert note.count("knetc:") == 1, note          # one note: the innermost statement


def test_user_error_leaves_nothing_cached():
    g = knetc.grad(_user_raise)
    with pytest.raises(ValueError):
        g(x3, 3)
    assert not g._cache
    np.testing.assert_allclose(g(x3, 1), np.ones(3))


def test_a_rule_whose_file_changed_after_import_is_refused(tmp_path, monkeypatch):
    """Rule templates are compiled from their text on first use; if the file changed since it
    was imported (a package upgraded under a running process), the text at the rule's line is
    another function's: knetc refuses it instead of differentiating that text."""
    import importlib
    import sys
    mod = tmp_path / "myrules_changed.py"
    mod.write_text("import numpy as np\nimport knetc\n\n\ndef cube(x):\n    return x ** 3\n\n\n"
                   "@knetc.adjoint(cube)\ndef _cube(y, x):\n    d[x] = d[y] * 3 * x * x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    m = importlib.import_module("myrules_changed")
    try:
        x = np.linspace(0.5, 1.5, 4)
        mod.write_text("import numpy as np\nimport knetc\n\n\n\n\n\n\n"   # the rule moved down
                       "def other(y, x):\n    d[x] = -d[y]\n\n\n"
                       "@knetc.adjoint(m.cube)\ndef _cube(y, x):\n    d[x] = d[y] * 3 * x * x\n")
        with pytest.raises(knetc.KnetcError, match="differs from the running function"):
            knetc.grad(lambda x: np.sum(m.cube(x)))(x)
    finally:
        sys.modules.pop("myrules_changed", None)
