"""The API never returns a gradient of code that is not running, and never a silently wrong one:
replaced ``__code__`` (autoreload), files edited on disk without a reload, identical text in two
files, complex and boolean losses, higher-order gradients (zeros, third and fourth order, grad
inside grad), ``show`` for guarded branches, and size-1 losses of any rank. Values are checked
against central finite differences in float64; errors by type, file and line."""
import inspect
import os
import textwrap

import numpy as np
import pytest

import knetc
from knetc import KnetcError, LossError, api, settings
from modfiles import edit, reload, write_module

HERE = os.path.abspath(__file__)
rng = np.random.default_rng(7)


def line_of(fn, text):
    """The file line of ``fn``'s source that contains ``text``."""
    lines, first = inspect.getsourcelines(fn)
    hits = [first + i for i, ln in enumerate(lines) if text in ln]
    assert len(hits) == 1, (text, hits)
    return hits[0]


def close_to_numeric(f, *args, argnum=0, rtol=1e-6, atol=1e-7):
    """grad(f)(*args) against central finite differences (float64), also its shape."""
    assert knetc.gradcheck(f, *args, argnum=argnum, rtol=rtol, atol=atol)


# -- 1. __code__ replaced in place (IPython's autoreload) ---------------------------------------

def _swap_helper(x):
    return x ** 2


def _uses_swap_helper(x):
    return np.sum(_swap_helper(x))


def _cube_text(x):
    return x ** 3


def test_replaced_code_is_respecialized():
    def f(x):
        return np.sum(np.sin(x) * x)

    def f2(x):
        return np.sum(np.cos(x) * x ** 2)

    x = rng.standard_normal(4)
    g = knetc.grad(f)
    np.testing.assert_allclose(g(x), np.cos(x) * x + np.sin(x))
    np.testing.assert_allclose(g(x), np.cos(x) * x + np.sin(x))      # cached
    f.__code__ = f2.__code__
    for grad_f in (g, knetc.grad(f)):                                 # shared cache too
        np.testing.assert_allclose(grad_f(x), -np.sin(x) * x ** 2 + 2 * x * np.cos(x))
    close_to_numeric(f, x)
    # The parse cache follows the code object: show names f2's lines.
    assert f"line {f2.__code__.co_firstlineno}" not in knetc.show(f, x)
    assert f":{f2.__code__.co_firstlineno}" in knetc.show(f, x)
    # Specialized once for the new code, then hits again.
    info = knetc.cache_info(f)
    g(x)
    assert knetc.cache_info(f).hits == info.hits + 1


def test_replaced_code_of_an_inlined_helper_is_respecialized():
    x = rng.standard_normal(3)
    g = knetc.grad(_uses_swap_helper)
    old = _swap_helper.__code__
    np.testing.assert_allclose(g(x), 2 * x)
    try:
        _swap_helper.__code__ = _cube_text.__code__
        np.testing.assert_allclose(g(x), 3 * x ** 2)
        close_to_numeric(_uses_swap_helper, x)
    finally:
        _swap_helper.__code__ = old
    np.testing.assert_allclose(g(x), 2 * x)


def test_autoreload_style_update_from_the_edited_file(tmp_path):
    mod, path = write_module(tmp_path, """
        import numpy as np

        def loss(w, x):
            return np.sum(np.tanh(x @ w) ** 2)
        """)
    w, x = rng.standard_normal((3, 2)), rng.standard_normal((5, 3))
    g = knetc.grad(mod.loss)
    g(w, x)
    new = """
        import numpy as np

        def loss(w, x):
            return np.sum(np.sin(x @ w) ** 3)
        """
    edit(path, new)
    ns = {}
    exec(compile(textwrap.dedent(new), path, "exec"), ns)
    mod.loss.__code__ = ns["loss"].__code__          # what IPython's autoreload does
    np.testing.assert_allclose(g(w, x), knetc.numeric_grad(mod.loss, w, x), rtol=1e-6, atol=1e-7)
    close_to_numeric(mod.loss, w, x)


# -- 2. the file edited on disk, the module not reloaded ----------------------------------------

_EDITABLE = """
    import numpy as np

    def helper(x):
        return x ** 2

    def loss(x):
        return np.sum(helper(x))

    def other(x):
        return np.sum(np.sin(x))

    def outer(a):
        def inner(x):
            return np.sum(x * a)
        return inner

    lam = lambda x: np.sum(x ** 3)
    """


def _expect_stale(thunk, path, line):
    with pytest.raises(KnetcError) as info:
        thunk()
    e = info.value
    msg = str(e)
    assert e.filename == path and e.lineno == line, msg
    assert "source on disk differs from the running function" in msg and "reload" in msg, msg
    return e


@pytest.mark.parametrize("change", ["body", "line_above"])
def test_edited_file_not_reloaded_is_an_error(tmp_path, change):
    mod, path = write_module(tmp_path, _EDITABLE)
    x = rng.standard_normal(3)
    if change == "body":
        edit(path, _EDITABLE.replace("x ** 2", "x ** 4").replace("np.sin(x)", "np.cos(x)")
             .replace("x * a", "x * a * 2").replace("x ** 3", "x ** 5"))
    else:
        edit(path, "# a new first line\n" + textwrap.dedent(_EDITABLE))
    lines = {f: f.__code__.co_firstlineno for f in (mod.helper, mod.loss, mod.other, mod.lam)}
    inner = mod.outer(2.0)
    # The differentiated function, a helper it calls, a nested def, a lambda: each is refused.
    _expect_stale(lambda: knetc.grad(mod.other)(x), path, lines[mod.other])
    _expect_stale(lambda: knetc.grad(mod.loss)(x), path,
                  lines[mod.loss] if change == "line_above" else lines[mod.helper])
    _expect_stale(lambda: knetc.grad(inner)(x), path, inner.__code__.co_firstlineno)
    _expect_stale(lambda: knetc.grad(mod.lam)(x), path, lines[mod.lam])
    # After a reload, the new text is the running code.
    mod = reload(mod)
    for f in (mod.loss, mod.other, mod.outer(2.0), mod.lam):
        close_to_numeric(f, x)


@pytest.mark.parametrize("compiles", [True, False])
def test_edits_elsewhere_in_the_file_are_fine(tmp_path, compiles):
    """Only the functions' own code is compared. A file that no longer compiles as a whole (an
    IPython cell with a magic) is checked function by function."""
    mod, path = write_module(tmp_path, _EDITABLE)
    x = rng.standard_normal(3)
    tail = "\n# a comment at the end\n" if compiles else "\n%timeit loss(x)\n"
    edit(path, textwrap.dedent(_EDITABLE).replace("np.sin(x)", "np.cos(x)") + tail)
    close_to_numeric(mod.loss, x)                   # loss and helper are unchanged
    close_to_numeric(mod.outer(3.0), x)
    close_to_numeric(mod.lam, x)
    _expect_stale(lambda: knetc.grad(mod.other)(x), path, mod.other.__code__.co_firstlineno)


def test_code_parsed_before_the_edit_stays_right(tmp_path):
    mod, path = write_module(tmp_path, _EDITABLE)
    x = rng.standard_normal(3)
    np.testing.assert_allclose(knetc.grad(mod.other)(x), np.cos(x))
    edit(path, _EDITABLE.replace("np.sin(x)", "np.tanh(x)"))
    # Its tree was read from the text it runs; a shape that specializes anew still uses it.
    x5 = rng.standard_normal(5)
    np.testing.assert_allclose(knetc.grad(mod.other)(x5), np.cos(x5))


def test_lambdas_inside_a_larger_expression_are_found():
    cases = [(lambda x: np.sum(np.sin(x)), np.ones(2)),
             (lambda x: np.sum(x ** 3) * 2.0, np.ones(2)), (lambda x: x * x, 1.5)]
    for f, x in cases:
        close_to_numeric(f, x)


# -- 3. identical text in two files ------------------------------------------------------------

_TWIN = """
    import numpy as np

    def bad(x):
        return np.tanh(x) * 2.0

    def good(x):
        return np.sum(np.tanh(x) * 2.0)
    """


def test_identical_functions_in_two_files_name_their_own_file(tmp_path):
    a, path_a = write_module(tmp_path, _TWIN)
    b, path_b = write_module(tmp_path, _TWIN)
    assert a.bad.__code__ == b.bad.__code__        # equal by value: the parse must not be shared
    x = rng.standard_normal(3)
    for mod, path in ((a, path_a), (b, path_b), (a, path_a)):
        with pytest.raises(LossError) as info:
            knetc.grad(mod.bad)(x)
        assert info.value.filename == path and info.value.lineno == mod.bad.__code__.co_firstlineno + 1
    assert os.path.basename(path_a) in knetc.show(a.good, x)
    assert os.path.basename(path_b) in knetc.show(b.good, x)
    assert os.path.basename(path_a) not in knetc.show(b.good, x)


# -- 4. complex and boolean losses, complex parameters -----------------------------------------

def _complex_loss(x):
    return np.sum(x) * 1j


def _complex_python_loss(x):
    return 2j


def _complex_of_float(x):
    return x * 1j


def _bool_loss(x):
    return np.sum(x) > 0


def _bool_python_loss(x):
    return True


def _bool_of_float(x):
    return x > 0


def _real_loss(x):
    return np.sum(x)


@pytest.mark.parametrize("fn, x, what", [
    (_complex_loss, np.ones(3), "complex"), (_complex_python_loss, np.ones(3), "complex"),
    (_complex_of_float, 1.5, "complex"), (_bool_loss, np.ones(3), "boolean"),
    (_bool_python_loss, np.ones(3), "boolean"), (_bool_of_float, 1.5, "boolean"),
])
def test_complex_and_boolean_losses_are_loss_errors(fn, x, what):
    with pytest.raises(LossError) as info:
        knetc.grad(fn)(x)
    e = info.value
    assert e.filename == HERE and e.lineno == fn.__code__.co_firstlineno + 1, str(e)
    assert what in str(e) and "real scalar loss" in str(e)


@pytest.mark.parametrize("x", [np.ones(3) + 1j, np.complex128(1 + 2j), 1 + 2j,
                               [np.ones(2), 1.0 + 1j], {"a": np.ones(2), "b": np.ones(2, np.complex64)}])
def test_complex_parameters_are_loss_errors(x):
    def f(x):
        return 1.0
    with pytest.raises(LossError) as info:
        knetc.grad(_real_loss if not isinstance(x, (list, dict)) else f)(x)
    e = info.value
    assert "complex" in str(e) and e.filename == HERE


def test_integer_and_real_losses_still_work():
    close_to_numeric(_real_loss, rng.standard_normal(3))
    assert knetc.grad(lambda x: np.sum(x > 0))(np.ones(3)) is None     # piecewise constant


# -- 5. second and higher order -----------------------------------------------------------------

def _linear(x):
    return 3.0 * x


def _constant(x):
    return 5.0


def _sum_linear(x):
    return np.sum(2.0 * x)


def _sin3(x):
    return np.sum(np.sin(x) ** 3)


def _pow4(x):
    return x ** 4


def test_second_order_of_a_constant_gradient_is_zero():
    G = knetc.grad
    assert G(G(_linear))(2.0) == 0.0 and type(G(G(_linear))(2.0)) is float
    assert G(G(_constant))(2.0) == 0.0                 # the inner gradient is None: still zero
    for shape in ((1,), (), (1, 1)):
        x = np.full(shape, 2.0)
        for f in (_sum_linear, _constant):
            d2 = G(G(f))(x)
            assert type(d2) is np.ndarray and d2.shape == shape and d2.dtype == x.dtype
            np.testing.assert_array_equal(d2, 0.0)
    d2, d1 = knetc.gradloss(G(_constant))(np.array([2.0]))
    np.testing.assert_array_equal(d2, [0.0])
    np.testing.assert_array_equal(d1, [0.0])


def test_third_and_fourth_order_match_finite_differences():
    G = knetc.grad
    x = 0.7
    for f in (_sin3, _pow4):
        d2 = G(G(f))
        d3 = G(d2)
        np.testing.assert_allclose(d3(x), knetc.numeric_grad(d2, x), rtol=1e-6)
        assert knetc.gradcheck(d2, x, rtol=1e-6)                     # grad of it: third order
    np.testing.assert_allclose(G(G(G(_pow4)))(2.0), 48.0)
    np.testing.assert_allclose(G(G(G(G(_pow4))))(2.0), 24.0)
    # Fourth order of _sin3: right, or a KnetcError naming the user's function (never an
    # internal exception).
    try:
        d4 = G(G(G(G(_sin3))))(x)
    except KnetcError as e:
        assert e.filename == HERE and e.lineno == _sin3.__code__.co_firstlineno, str(e)
    else:
        np.testing.assert_allclose(d4, knetc.numeric_grad(G(G(G(_sin3))), x), rtol=1e-5)
    s = np.sin(x)
    np.testing.assert_allclose(G(G(G(_sin3)))(x), 6 * np.cos(x) ** 3 - 21 * s * s * np.cos(x), rtol=1e-12)


def test_second_order_of_a_vector_gradient_names_the_users_function():
    with pytest.raises(LossError) as info:
        knetc.grad(knetc.grad(_sin3))(np.ones(3))
    e = info.value
    assert e.filename == HERE and e.lineno == _sin3.__code__.co_firstlineno
    assert "_sin3" in str(e) and "scalar" in str(e)


# -- 6. grad called inside the function of grad(grad(f)) ----------------------------------------

_W6 = [np.array([1.0, 2.0, 3.0])]


def _cubic(x):
    return np.sum(_W6[0] * x ** 3)


def _calls_grad(x):
    return np.sum(knetc.grad(_cubic)(x)) * x


def _branchy(x):
    if x > 1.0:
        return x ** 3
    return x ** 2


def _calls_branchy_grad(x):
    g = knetc.grad(_branchy)
    return g(x) * g(x * 0.5)


def test_grad_of_grad_of_a_function_that_calls_grad():
    G = knetc.grad
    for f, xs in ((_calls_grad, (0.8, 1.5)), (_calls_branchy_grad, (2.5, 1.5, 3.0, 0.5))):
        d2 = G(G(f))
        for x in xs:
            np.testing.assert_allclose(d2(x), knetc.numeric_grad(G(f), x), rtol=1e-6, atol=1e-8)
            close_to_numeric(f, x)
    # The global the inner gradient reads is read at run time at every order.
    d2 = G(G(_calls_grad))
    old = _W6[0]
    try:
        _W6[0] = old * 2.0
        np.testing.assert_allclose(d2(1.5), knetc.numeric_grad(G(_calls_grad), 1.5), rtol=1e-6)
    finally:
        _W6[0] = old


def test_a_guard_failing_at_once_is_a_knetc_error():
    err = api._guard_error(_calls_grad, knetc.errors.GuardFailed())
    assert isinstance(err, KnetcError) and err.filename == HERE
    assert err.lineno == _calls_grad.__code__.co_firstlineno


# -- 7. show picks the branch these arguments take ----------------------------------------------

def _two_branches(x):
    if x > 3:
        return x ** 3
    return np.sin(x)


def test_show_picks_the_entry_whose_guards_hold():
    g = knetc.grad(_two_branches)
    assert "sin" in knetc.show(g, 2.0) and "sin" not in knetc.show(g, 5.0)
    assert "sin" in knetc.show(g, 2.0)
    g(2.0), g(5.0)
    assert "sin" not in knetc.show(g, 5.0) and "sin" in knetc.show(g, 2.0)
    assert "sin" in knetc.show(_two_branches, 2.0) and "sin" not in knetc.show(_two_branches, 5.0)
    assert knetc.cache_info(g).entries == 2            # showing adds no duplicates
    for x in (2.0, 5.0):
        close_to_numeric(_two_branches, x)


# -- 8. size-1 losses of any rank ----------------------------------------------------------------

def _matmul_loss(a, b):
    return a @ b


def _row_sum_loss(x):
    return np.sum(np.tanh(x), axis=1)


def _kept_dims_loss(x):
    return np.sum(x * x, axis=(0, 1), keepdims=True)


def _float_to_matrix(t):
    return np.reshape(t * np.ones(1), (1, 1))


@pytest.mark.parametrize("tier0", [False, True])
def test_size_one_losses_give_gradients_of_the_parameters_shape(tier0):
    a, b = rng.standard_normal((1, 4)), rng.standard_normal((4, 1))
    cases = [(_matmul_loss, (a, b), 0), (_matmul_loss, (a, b), 1),
             (_row_sum_loss, (rng.standard_normal((1, 3)),), 0),
             (_kept_dims_loss, (rng.standard_normal((2, 3)),), 0), (_float_to_matrix, (1.5,), 0)]
    with settings.override(tier0=tier0):
        for _ in range(4 if tier0 else 1):
            for f, args, argnum in cases:
                g, loss = knetc.gradloss(f, argnum)(*args)
                assert np.shape(g) == np.shape(args[argnum])
                expected = f(*args)
                assert np.shape(loss) == np.shape(expected)
                np.testing.assert_allclose(loss, expected)
                close_to_numeric(f, *args, argnum=argnum)
    g32 = knetc.grad(_matmul_loss)(a.astype(np.float32), b.astype(np.float32))
    assert g32.shape == (1, 4) and g32.dtype == np.float32
