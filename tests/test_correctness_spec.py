"""Correctness cases found by outside suites: each gradient against central finite differences
(float64), called again with other values or shapes where a stale cache was the bug, or the exact
KnetcError (type, file, line) where knetc refuses."""
import functools
import inspect
import os
import random
import sys

import numpy as np
import pytest

import knetc
from knetc import KnetcError, MutationError, NoRuleError, UnsupportedSyntax

HERE = os.path.basename(__file__)


def line_of(fn, text):
    lines, first = inspect.getsourcelines(fn)
    hits = [first + i for i, ln in enumerate(lines) if text in ln]
    assert len(hits) == 1, (text, hits)
    return hits[0]


def refused(cls, fn, *args, line_text, argnum=0):
    """grad(fn)(*args) raises exactly ``cls``, naming this file and the line holding line_text."""
    with pytest.raises(KnetcError) as info:
        knetc.grad(fn, argnum=argnum)(*args)
    e = info.value
    assert type(e) is cls, f"{type(e).__name__}: {e}"
    assert e.filename is not None and e.filename.endswith(HERE), str(e)
    assert e.lineno == line_of(fn, line_text), str(e)
    assert e.hint
    return e


def check(f, *args, argnum=0, rtol=1e-5, atol=1e-7):
    """The gradient matches finite differences and has its parameter's structure and dtype."""
    g = knetc.grad(f, argnum=argnum)(*args)
    assert knetc.gradcheck(f, *args, argnum=argnum, rtol=rtol, atol=atol)
    x = args[argnum]
    if isinstance(x, np.ndarray):
        assert type(g) is np.ndarray and g.shape == x.shape and g.dtype == x.dtype, repr(g)
    return g


rng0 = np.random.default_rng(0)
x2 = np.array([0.5, 1.5])
x3 = np.array([0.3, -1.2, 2.0])


# -- 1. nested lists of traced values --------------------------------------------------------

def nested_array(x):
    return np.sum(np.array([[x[0], 2 * x[0]], [x[1] ** 2, 1.0]]) ** 2)


def nested_asarray(x):
    m = np.asarray([[x[0], x[1]], [x[1] * x[0], 3.0]])
    return np.sum(m @ m)


def nested_stack(x):
    return np.sum(np.stack([[x[0], x[1]], [x[1], x[0] ** 2]]) ** 3)


def nested_of_arrays(x):
    return np.sum(np.array([[x, 2 * x], [x ** 2, np.ones(2)]]) * np.arange(8).reshape(2, 2, 2))


def nested_scalar(s):
    return np.sum(np.array([[s, 2 * s], [s ** 2, 1.0]]) ** 2)


@pytest.mark.parametrize("f", [nested_array, nested_asarray, nested_stack, nested_of_arrays])
def test_nested_lists_of_traced_values(f):
    check(f, x2)


def test_nested_lists_of_a_float_parameter():
    g = knetc.grad(nested_scalar)(0.7)
    assert type(g) is float
    assert abs(g - knetc.numeric_grad(nested_scalar, 0.7)) < 1e-6


def test_nested_lists_keep_numpys_dtype():
    def f(w):
        return np.sum(np.array([[w[0], w[1]], [w[1], w[0]]]) ** 2)
    w = np.array([1.0, 2.0], np.float32)
    g = knetc.grad(f)(w)
    assert g.dtype == np.float32 and np.allclose(g, [4.0, 8.0])


# -- 2. np.r_, np.c_, object arrays: no internal value leaks ---------------------------------

def r_arrays(x):
    return np.sum(np.r_[x, 2.0 * x] ** 2)


def r_scalars(x):
    return np.sum(np.r_[x[0], x[1], 3.0, x] * np.arange(5.0))


def r_with_range(x):
    return np.sum(np.r_[x, 0:3] ** 2)


def c_columns(x):
    return np.sum(np.c_[x, x ** 2] @ np.array([1.0, 3.0]))


def c_matrices(x):
    m = x.reshape(1, 2)
    return np.sum(np.tanh(np.c_[m, m * 3.0, 1.0]))


@pytest.mark.parametrize("f", [r_arrays, r_scalars, r_with_range, c_columns, c_matrices])
def test_r_and_c(f):
    check(f, x2)


def test_r_loss_is_a_number_not_an_internal_value():
    g, loss = knetc.gradloss(r_scalars)(x2)
    assert type(loss) in (float, np.float64) or isinstance(loss, np.ndarray)
    assert np.isclose(float(loss), r_scalars(x2))


def r_directive(x):
    return np.sum(np.r_["0,2", x, x])


def object_array(x):
    return np.sum(np.array([x[0], x[1]], dtype=object) * 2.0)


def sym_in_set(x):
    return np.sum(np.array({x[0], x[1]}))


def test_refused_object_arrays_and_directives():
    refused(UnsupportedSyntax, r_directive, x2, line_text='np.r_["0,2", x, x]')
    refused(UnsupportedSyntax, object_array, x2, line_text="dtype=object")
    refused(UnsupportedSyntax, sym_in_set, x2, line_text="np.array({x[0], x[1]})")


# -- 3. reductions over a Python list ---------------------------------------------------------

REDUCTIONS = [
    lambda w: np.sum([w, 2.0 * w]),
    lambda w: np.mean([w, w]),
    lambda w: np.mean([w, w + 2]),
    lambda w: np.max([w, w * 2]),
    lambda w: np.min([w * w, w + 1]),
    lambda w: np.prod([w, w + 3]),
    lambda w: np.sum(np.std([w, w ** 2], axis=0)),
    lambda w: np.var([w[0], w[1] * 2, 1.0]),
    lambda w: np.sum(np.sum([w, [1.0, 2.0, 3.0]], axis=1)),
    lambda w: np.average([w[0], w[1]], weights=np.array([1.0, 3.0])),
    lambda w: np.sum(np.tanh([w, w * 2])),
    lambda w: np.sum(np.maximum([w[0], w[1]], 0.0)),
]


@pytest.mark.parametrize("i", range(len(REDUCTIONS)))
def test_reductions_over_lists(i):
    check(REDUCTIONS[i], x3)


# -- 4. lst[i] += v where the item is the caller's array --------------------------------------

def list_item_is_param(w, v):
    lst = [w]
    lst[0] += v
    return np.sum(lst[0])


def list_param_item(w, v):
    w[0] += v
    return np.sum(w[0])


def dict_item_is_param(w, v):
    d = {"a": w}
    d["a"] *= v
    return np.sum(d["a"])


def list_item_shared(w, v):
    a = w * 2.0
    lst = [a]
    lst[0] += v
    return np.sum(lst[0] + a)


def list_item_fresh(w, v):
    lst = [w * 2.0, w]
    lst[0] += v * w
    lst[0] *= 3.0
    return np.sum(lst[0] ** 2)


def test_in_place_update_of_an_aliased_item_is_refused():
    w, v = np.ones(3), np.arange(3.0)
    refused(MutationError, list_item_is_param, w, v, line_text="lst[0] += v")
    refused(MutationError, list_param_item, [w], v, line_text="w[0] += v")
    refused(MutationError, dict_item_is_param, w, v, line_text='d["a"] *= v')
    refused(MutationError, list_item_shared, w, v, line_text="lst[0] += v")
    assert np.array_equal(w, np.ones(3))


def test_in_place_update_of_a_fresh_item():
    check(list_item_fresh, x3, x3 + 1)
    check(list_item_fresh, x3, x3 + 1, argnum=1)


def extend_caller_list(w):
    w += [1.0]
    return w[0] * 2.0


def extend_local_list(w):
    a = [w[0]]
    b = a
    a += [w[1] * 3.0]
    return b[0] + b[1]


def test_augmented_lists_are_changed_in_place():
    refused(MutationError, extend_caller_list, [2.0], line_text="w += [1.0]")
    check(extend_local_list, x2)
    assert np.allclose(knetc.grad(extend_local_list)(x2), [1.0, 3.0])


# -- 5. data-dependent shapes are guarded ------------------------------------------------------

def sel_where(x, c):
    return np.sum(x[np.where(c > 0)] ** 2)


def sel_where_2d(x, c):
    i, j = np.where(c.reshape(2, 3) > 0)
    return np.sum(x.reshape(2, 3)[i, j] ** 3)


def sel_nonzero(x, c):
    return np.sum(x[np.nonzero(c > 0)[0]] ** 2)


def sel_flatnonzero(x, c):
    return np.sum(np.tanh(x[np.flatnonzero(c > 0)]))


def sel_argwhere(x, c):
    return np.sum(x[np.argwhere(c > 0)[:, 0]] ** 2)


def sel_mask(x, c):
    return np.sum(x[c > 0] * 3.0) + np.sum(x[x * c > 0] ** 2)


def sel_unique(x, c):
    return np.sum(x[np.unique(np.floor(np.abs(c))).astype(int) % 6] ** 2)


def sel_unique_values(x, c):
    return np.sum(np.unique(x * (c > 0)) ** 2)


def sel_extract(x, c):
    return np.sum(np.extract(c > 0, x) ** 2)


def sel_compress(x, c):
    return np.sum(np.compress(c > 0, x) ** 2)


def sel_repeat(x, c):
    return np.sum(np.repeat(x, (c > 0).astype(int) + 1) ** 2)


def sel_bincount(x, c):
    return np.sum(np.bincount((np.abs(c) * 2).astype(int), weights=x) ** 2)


def sel_slice(x, c):
    return np.sum(x[:np.sum(c > 0)] ** 2)


SELECTIONS = [sel_where, sel_where_2d, sel_nonzero, sel_flatnonzero, sel_argwhere, sel_mask, sel_unique,
              sel_unique_values, sel_extract, sel_compress, sel_repeat, sel_bincount, sel_slice]
CS = [np.array([1.0, -1, 2, -3, 0.5, -0.2]), np.array([1.0, 1, 1, 1, 1, 1]),
      np.array([-1.0, -1, 2.5, -3, -0.5, -0.2]), np.array([-1.0, -1, -1, -1, -1, -1]),
      np.array([1.0, -1, 2, -3, 0.5, -0.2])]


@pytest.mark.parametrize("f", SELECTIONS, ids=lambda f: f.__name__)
def test_data_dependent_shapes_are_guarded(f):
    g = knetc.grad(f)
    x = np.array([0.3, -0.7, 1.1, 0.4, -1.6, 0.9])
    for c in CS:
        got = g(x, c)
        want = knetc.numeric_grad(f, x, c)
        assert got.shape == x.shape and np.allclose(got, want, atol=1e-6), (c, got, want)


def test_guards_of_data_shapes_are_in_the_code():
    x, c = np.ones(6), CS[0]
    for f in (sel_where, sel_bincount, sel_repeat, sel_slice):
        assert "_GuardFailed" in knetc.show(f, x, c), f.__name__


# -- 6. random draws are made by every call ------------------------------------------------------

def draw_fresh(x):
    return np.sum(x * np.random.default_rng().normal(size=3))


def draw_seeded(x):
    return np.sum(x * np.random.default_rng(0).normal(size=3))


GEN = np.random.default_rng(5)
RS = np.random.RandomState(3)
PYRNG = random.Random(7)


def draw_global(x):
    return (np.sum(x * GEN.normal(size=3)) + np.sum(x * RS.uniform(size=3))
            + np.sum(x * np.random.gamma(2.0, size=3)) + PYRNG.random() * x[0] + random.gauss(0, 1) * x[1])


def draw_from_argument(x, gen):
    noise = gen.standard_normal(x.shape)
    return np.sum((x + 0.1 * noise) ** 2)


@pytest.mark.parametrize("f", [draw_fresh, draw_global])
def test_random_draws_are_new_each_call(f):
    g = knetc.grad(f)
    a, b, c = g(x3), g(x3), g(x3)
    assert not np.allclose(a, b) and not np.allclose(b, c)


def test_seeded_generator_inside_is_the_same_each_call_as_in_python():
    g = knetc.grad(draw_seeded)
    want = np.random.default_rng(0).normal(size=3)
    for _ in range(3):
        assert np.allclose(g(x3), want)


def test_generator_argument_advances():
    g = knetc.grad(draw_from_argument)
    gen = np.random.default_rng(1)
    a, b = g(x3, gen), g(x3, gen)
    assert not np.allclose(a, b)


def draw_depends_on_parameter(x):
    return np.sum(np.random.default_rng().normal(x, 1.0))


def draw_shuffles(x):
    r = np.random.default_rng()
    i = np.arange(3)
    r.shuffle(i)
    return np.sum(x[i])


def test_random_draws_refused_where_wrong():
    refused(NoRuleError, draw_depends_on_parameter, x3, line_text="normal(x, 1.0)")
    refused(MutationError, draw_shuffles, x3, line_text="r.shuffle(i)")


# -- 7. arrays from outside the arguments: shape and dtype guarded ------------------------------

W_GLOBAL = np.ones(3)


def uses_global(x):
    return np.sum(x * W_GLOBAL)


def make_closure():
    box = {"w": np.ones(3)}
    w = box["w"]

    def uses_cell(x):
        return np.sum(np.tanh(x * w))

    def rebind(v):
        nonlocal w
        w = v
    return uses_cell, rebind


class Holder:
    def __init__(self):
        self.w = np.ones(3)


HOLDER = Holder()


def uses_attribute(x):
    return np.sum(x * HOLDER.w)


def test_global_array_rebound_with_another_shape_or_dtype():
    global W_GLOBAL
    g = knetc.grad(uses_global)
    for w in (np.ones(3), np.ones((2, 3)), np.arange(3.0).astype(np.float32), np.ones((4, 1)), 2.5):
        W_GLOBAL = w
        got = g(x3)
        want = knetc.numeric_grad(uses_global, x3)
        assert got.shape == x3.shape and np.allclose(got, want, atol=1e-6), (w, got)
    W_GLOBAL = np.ones(3)


def test_closure_array_rebound_with_another_shape():
    f, rebind = make_closure()
    g = knetc.grad(f)
    for w in (np.ones(3), np.full((2, 3), 0.5), np.ones(1, np.float32) * 0.3):
        rebind(w)
        assert np.allclose(g(x3), knetc.numeric_grad(f, x3), atol=1e-6)


def test_attribute_array_rebound_with_another_shape():
    g = knetc.grad(uses_attribute)
    for w in (np.ones(3), np.ones((5, 3)), np.arange(3)):
        HOLDER.w = w
        assert np.allclose(g(x3), knetc.numeric_grad(uses_attribute, x3), atol=1e-6)
    HOLDER.w = np.ones(3)


# -- 8. 0-d parameters and dtypes ------------------------------------------------------------------

ZERO_D = [
    lambda w, d: np.sum(w * d),
    lambda w, d: w * w,
    lambda w, d: w,
    lambda w, d: np.sum(w),
    lambda w, d: w * 3.0 + np.sum(d),
    lambda w, d: np.tanh(w) * d[0],
]


@pytest.mark.parametrize("i", range(len(ZERO_D)))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_zero_d_parameters(i, dtype):
    f = ZERO_D[i]
    d = np.array([1.0, 2.0, 3.0])
    w = np.array(0.7, dtype)
    g = knetc.grad(f)(w, d)
    assert type(g) is np.ndarray and g.shape == () and g.dtype == dtype, repr(g)
    assert np.isclose(g, knetc.numeric_grad(f, np.array(0.7), d), rtol=1e-4)
    s = dtype(0.7)       # a NumPy scalar parameter: a NumPy scalar gradient
    gs = knetc.grad(f)(s, d)
    assert type(gs) is dtype, repr(gs)
    gf = knetc.grad(f)(0.7, d)   # a Python float: a Python float
    assert type(gf) is float


def test_reductions_keep_float32():
    for f in (lambda w: w.sum(0), lambda w: w.mean(0), lambda w: np.sum(w, axis=0),
              lambda w: w.reshape(()) if w.size == 1 else w.sum(), lambda w: np.squeeze(w[:1])):
        w = np.ones(3, np.float32)
        g = knetc.grad(f)(w)
        assert g.dtype == np.float32 and g.shape == (3,)


# -- 9. empty reductions --------------------------------------------------------------------

def mean_of_selection(w):
    return np.mean(w[w > 10])


def test_mean_of_an_empty_selection():
    g = knetc.grad(mean_of_selection)
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        got, loss = knetc.gradloss(mean_of_selection)(np.ones(3))
    assert np.isnan(loss) and got.shape == (3,) and np.array_equal(got, np.zeros(3))
    w = np.array([11.0, 1.0, 13.0])
    assert np.allclose(g(w), [0.5, 0.0, 0.5])
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        assert np.array_equal(g(np.ones(3)), np.zeros(3))


# -- 10. deep recursion ------------------------------------------------------------------------

def deep(x, n):
    if n == 0:
        return x
    return deep(x * 1.0001, n - 1)


def deep_loss(x, n):
    return np.sum(deep(x, n))


def test_recursion_as_deep_as_the_users_limit_allows():
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(10000)
    try:
        g = knetc.grad(deep_loss)(x2, 3000)
        assert np.allclose(g, 1.0001 ** 3000)
        with pytest.raises(UnsupportedSyntax) as info:
            knetc.grad(deep_loss)(x2, 200000)
        e = info.value
        assert "recursion" in str(e) and "setrecursionlimit" in e.hint
        assert e.filename.endswith(HERE) and e.lineno in range(line_of(deep, "def deep"),
                                                               line_of(deep, "return deep(") + 1)
        assert sys.getrecursionlimit() == 10000
    finally:
        sys.setrecursionlimit(old)


# -- 11. knetc.grad of a function defined inside the differentiated one -------------------------

def grad_of_inner_lambda(x):
    g = knetc.grad(lambda v: np.sum(v ** 3))
    return np.sum(g(x) * x)


def grad_of_inner_def(x, n):
    def inner(v, k=2.0):
        return np.sum(np.sin(v) ** n) * k
    g = knetc.grad(inner)
    return np.sum(g(x) ** 2)


def grad_of_inner_decorated(x):
    @knetc.grad
    def inner(v):
        return np.sum(np.tanh(v))
    return np.sum(inner(x) * x)


def grad_of_inner_reading_traced(x):
    s = np.sum(x)
    g = knetc.grad(lambda v: np.sum(v * s))
    return np.sum(g(x))


def test_grad_of_a_function_defined_inside():
    check(grad_of_inner_lambda, x2)
    check(grad_of_inner_def, x2, 3)
    check(grad_of_inner_decorated, x2)
    refused(UnsupportedSyntax, grad_of_inner_reading_traced, x2, line_text="lambda v: np.sum(v * s)")


def closures_called_by_python(x):
    total = functools.reduce(lambda a, b: a + b, [x, x * 2, x ** 2])
    top = sorted([x[0], x[1] * 3.0], key=lambda v: -v)[0]
    return np.sum(total) + top


def test_closures_called_by_python_code():
    check(closures_called_by_python, x2)


# -- 12. callables: partial, bound methods, callable objects --------------------------------------

def fxy(w, x, y=1.0):
    return np.sum((w * x - y) ** 2)


class Model:
    def __init__(self):
        self.W = np.array([[1.0, 2.0], [3.0, 4.0]])
        self.scale = 2

    def loss(self, v, t):
        return np.sum((self.W @ v - t) ** 2) * self.scale

    def __call__(self, v):
        return np.sum(np.tanh(self.W @ v))

    @classmethod
    def cls_loss(cls, v):
        return np.sum(v ** 2)


def test_partial():
    p = functools.partial(fxy, y=1.5)
    check(p, x2, x2 + 1)
    check(p, x2, x2 + 1, argnum=1)
    assert np.allclose(knetc.grad(p)(x2, x2, y=0.5), knetc.numeric_grad(fxy, x2, x2, 0.5))
    q = functools.partial(fxy, x2)          # argnum counts the partial's own parameters
    assert np.allclose(knetc.grad(q)(x2 + 1), knetc.numeric_grad(fxy, x2, x2 + 1, argnum=1))
    r = functools.partial(functools.partial(fxy, y=2.0), x2)
    assert np.allclose(knetc.grad(r)(x2 + 1), knetc.numeric_grad(fxy, x2, x2 + 1, 2.0, argnum=1))


def test_bound_method_reads_self_when_called():
    m = Model()
    g = knetc.grad(m.loss)
    t = np.array([0.5, -1.0])
    for W, scale in ((m.W, 2), (np.ones((2, 2)), 2), (np.ones((2, 2)), 3), (np.ones((3, 2)), 3)):
        m.W, m.scale = W, scale
        t = np.ones(W.shape[0])
        assert np.allclose(g(x2, t), knetc.numeric_grad(m.loss, x2, t), atol=1e-6)
    m.W = np.ones((2, 2))
    assert np.allclose(knetc.grad(m.loss, argnum=1)(x2, x2), knetc.numeric_grad(m.loss, x2, x2, argnum=1))
    other = Model()
    assert np.allclose(knetc.grad(other.loss)(x2, x2), knetc.numeric_grad(other.loss, x2, x2))
    check(Model.cls_loss, x2)


def test_callable_object():
    m = Model()
    check(m, x2)
    m.W = np.eye(2) * 0.5
    assert np.allclose(knetc.grad(m)(x2), knetc.numeric_grad(m, x2))


def test_callables_without_source_are_refused():
    for f in (np.sin, len, Model):
        with pytest.raises(KnetcError):
            knetc.grad(f)(x2)
    with pytest.raises(TypeError):
        knetc.grad(functools.partial(fxy, y=1.0), argnum=3)


MODEL = Model()
GRAD_OF_OBJECT = knetc.grad(MODEL)
W_BOUND = np.ones(2)
GRAD_OF_PARTIAL = knetc.grad(functools.partial(lambda w, v: np.sum(w * v * v), W_BOUND))


def uses_grad_of_object(x):
    return np.sum(GRAD_OF_OBJECT(x) ** 2)


def uses_grad_of_method(x):
    return np.sum(knetc.grad(MODEL.loss)(x, x * 2.0) * x)


def uses_grad_of_partial(x):
    return np.sum(GRAD_OF_PARTIAL(x) ** 2)


@pytest.mark.parametrize("f", [uses_grad_of_object, uses_grad_of_method, uses_grad_of_partial])
def test_grad_of_a_callable_inside_reads_what_it_binds_when_called(f):
    g = knetc.grad(f)
    for _ in range(3):
        assert np.allclose(g(x2), knetc.numeric_grad(f, x2), rtol=1e-5)
        MODEL.W = MODEL.W * 1.5
        np.multiply(W_BOUND, 2.0, out=W_BOUND)    # the partial's own array, changed in place
    MODEL.W = np.array([[1.0, 2.0], [3.0, 4.0]])


class Counted:
    def __init__(self):
        self.W = np.eye(2)

    def loss(self, v):
        return np.sum((self.W @ v) ** 2)


def test_grad_of_a_bound_method_in_a_loop_compiles_once():
    m = Counted()
    for _ in range(5):
        knetc.grad(m.loss)(x2)
    info = knetc.cache_info(Counted.loss, argnum=1)   # self comes first
    assert info.misses == 1 and info.hits == 4


def wrapping(f):
    @functools.wraps(f)
    def wrapper(*a, **k):
        return 2.0 * f(*a, **k)
    return wrapper


@wrapping
def wrapped_loss(w, x):
    return np.sum(np.sin(w) * x)


@knetc.differentiable
def differentiable_loss(w, x, y=2.0):
    return np.sum((w * x - y) ** 2)


def test_wrapped_and_differentiable_callables():
    check(wrapped_loss, x2, x2 + 1)
    check(wrapped_loss, x2, x2 + 1, argnum=1)
    check(differentiable_loss, x2, x2 + 1)
    check(differentiable_loss, x2, x2 + 1, argnum=1)
