"""Rules of knetc/rules/elementwise.py and knetc/rules/stats.py, gradient-checked in float64.

Elementwise: log2 log10 exp2 arcsin arccos arcsinh arccosh arctanh reciprocal sinc fabs cbrt
nan_to_num; binary logaddexp logaddexp2 arctan2 hypot fmax fmin (with broadcasting).
Statistics: var std (axis, ddof, keepdims), median, average (weights); cumsum cumprod diff.

Each check runs twice (the first call of a new shape runs uncompiled, the second compiled), and
data are drawn away from kinks and ties (fmax/fmin ties and median ties are tested separately,
for their documented convention). Second derivatives: ``sum(sin(grad(f)(x)))`` is checked
against finite differences, and ``grad(grad(f))`` of scalar functions against analytic values.
"""
import numpy as np
import pytest

import knetc
from knetc.errors import NoRuleError
from knetc.gradcheck import gradcheck
from gradtest import check, second_order

RNG = np.random.default_rng(20261129)


def rnd(shape, lo=None, hi=None, dtype=np.float64):
    """Normal data of ``shape`` (or uniform in [lo, hi]); ``"float"`` gives a Python float."""
    if shape == "float":
        return float(rnd((), lo, hi))
    x = RNG.normal(size=shape) if lo is None else RNG.uniform(lo, hi, size=shape)
    return np.asarray(x, dtype=dtype)


def pos(shape, dtype=np.float64):
    return rnd(shape, 0.5, 2.0, dtype)


def away(shape, gap=0.1):
    """Normal data with no entry within ``gap`` of 0."""
    x = rnd(shape)
    if shape == "float":
        return x if abs(x) > gap else x + np.copysign(2 * gap, x)
    return np.where(np.abs(x) < gap, np.copysign(2 * gap, x), x)


def signed(shape):
    """Magnitudes in [0.5, 2] with random signs: away from 0, no ties."""
    return pos(shape) * RNG.choice([-1.0, 1.0], size=shape)


# ---------------------------------------------------------------------------------------------
# Elementwise functions of one argument

def log2_(x): return np.sum(np.sin(np.log2(x)))
def log10_(x): return np.sum(np.sin(np.log10(x)))
def exp2_(x): return np.sum(np.exp2(x))
def arcsin_(x): return np.sum(np.sin(np.arcsin(x)) * np.arcsin(x))
def arccos_(x): return np.sum(np.sin(np.arccos(x)))
def arcsinh_(x): return np.sum(np.sin(np.arcsinh(x)))
def arccosh_(x): return np.sum(np.sin(np.arccosh(x)))
def arctanh_(x): return np.sum(np.sin(np.arctanh(x)))
def reciprocal_(x): return np.sum(np.sin(np.reciprocal(x)))
def sinc_(x): return np.sum(np.sin(np.sinc(x)) + np.sinc(x))
def fabs_(x): return np.sum(np.sin(np.fabs(x)))
def cbrt_(x): return np.sum(np.sin(np.cbrt(x)))
def nan_to_num_(x): return np.sum(np.sin(np.nan_to_num(x)))
def nan_to_num_kw(x): return np.sum(np.sin(np.nan_to_num(x, copy=True, nan=0.5, posinf=2.0, neginf=-2.0)))


UNARY = [(log2_, pos), (log10_, pos), (exp2_, rnd), (arcsin_, lambda s: rnd(s, -0.9, 0.9)),
         (arccos_, lambda s: rnd(s, -0.9, 0.9)), (arcsinh_, rnd),
         (arccosh_, lambda s: rnd(s, 1.2, 3.0)), (arctanh_, lambda s: rnd(s, -0.9, 0.9)),
         (reciprocal_, away), (sinc_, rnd), (fabs_, away), (cbrt_, away), (nan_to_num_, rnd),
         (nan_to_num_kw, rnd)]
UNARY_IDS = [f.__name__ for f, _ in UNARY]
SHAPES = [(), (5,), (3, 4), (2, 3, 4), (1, 4), "float"]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("f,data", UNARY, ids=UNARY_IDS)
def test_unary(f, data, shape):
    check(f, data(shape))


def test_sinc_at_and_near_zero():
    x = np.array([0.0, 1e-4, -5e-4, 9e-4, 1.1e-3, -0.3, 0.5, 1.0, -2.5])
    g = knetc.grad(lambda_sinc)(x)
    t = np.pi * x
    with np.errstate(invalid="ignore", divide="ignore"):
        exact = np.where(x == 0, 0.0, (t * np.cos(t) - np.sin(t)) / (t * x))
    np.testing.assert_allclose(g, exact, rtol=1e-9, atol=1e-12)
    check(lambda_sinc, x)


def lambda_sinc(x): return np.sum(np.sinc(x))


def test_nan_to_num_replaced_entries_have_zero_gradient():
    x = np.array([[1.0, np.nan, -np.inf], [np.inf, -0.5, 2.0]])
    for f in (nan_to_num_, nan_to_num_kw):
        g = knetc.grad(f)(x)
        finite = np.isfinite(x)
        np.testing.assert_array_equal(g[~finite], 0.0)
        np.testing.assert_allclose(g[finite], np.cos(x[finite]))


def fabs_cbrt_at_0(x): return np.sum(np.fabs(x) + np.cbrt(x + 1.0))


def test_fabs_at_zero_has_zero_gradient():
    g = knetc.grad(fabs_cbrt_at_0)(np.array([0.0, 1.0, -2.0]))
    np.testing.assert_allclose(g, [0.0 + 1 / 3, 1.0 + 1 / (3 * 2.0 ** (2 / 3)),
                                   -1.0 + 1 / (3 * np.cbrt(-1.0) ** 2)])


@pytest.mark.parametrize("f,data", UNARY, ids=UNARY_IDS)
def test_float32_unary(f, data):
    x = np.asarray(data((3, 4)), np.float32)
    g = knetc.grad(f)(x)
    assert g.dtype == np.float32
    assert gradcheck(f, x, rtol=2e-2, atol=2e-3, eps=1e-3)


# ---------------------------------------------------------------------------------------------
# Binary functions with broadcasting

def logaddexp_(a, b): return np.sum(np.sin(np.logaddexp(a, b)))
def logaddexp2_(a, b): return np.sum(np.sin(np.logaddexp2(a, b)))
def arctan2_(a, b): return np.sum(np.sin(np.arctan2(a, b)) * 2.0)
def hypot_(a, b): return np.sum(np.sin(np.hypot(a, b)))
def fmax_(a, b): return np.sum(np.sin(np.fmax(a, b)))
def fmin_(a, b): return np.sum(np.sin(np.fmin(a, b)))


BINARY = {"logaddexp": logaddexp_, "logaddexp2": logaddexp2_, "arctan2": arctan2_,
          "hypot": hypot_, "fmax": fmax_, "fmin": fmin_}
SHAPE_PAIRS = [((3, 4), (3, 4)), ((3, 4), (4,)), ((4,), (3, 4)), ((3, 4), (3, 1)), ((3, 1), (3, 4)),
               ((3, 4), (1, 4)), ((1, 4), (3, 4)), ((3, 4), ()), ((), (3, 4)), ((3, 4), "float"),
               ("float", (3, 4)), ((), ()), ((2, 3, 4), (3, 1)), ((3, 1), (1, 4)),
               ((2, 1, 4), (3, 1)), ((4,), ())]


def binary_data(name, sa, sb):
    if name in ("arctan2", "hypot"):
        return away(sa, 0.3), away(sb, 0.3)
    return rnd(sa), rnd(sb)


@pytest.mark.parametrize("shapes", SHAPE_PAIRS, ids=str)
@pytest.mark.parametrize("name", list(BINARY))
def test_binary_broadcast(name, shapes):
    a, b = binary_data(name, *shapes)
    check(BINARY[name], a, b, argnums=(0, 1))


def fmax_w(a, b): return np.sum(np.fmax(a, b) * np.arange(1.0, 5.0))
def fmin_w(a, b): return np.sum(np.fmin(a, b) * np.arange(1.0, 5.0))


@pytest.mark.parametrize("f", [fmax_w, fmin_w])
def test_fmax_fmin_ties_and_nan(f):
    # A tie goes to the first argument (as np.maximum's rule); a NaN operand's gradient to the other.
    w = np.arange(1.0, 5.0)
    a = np.array([1.0, 2.0, np.nan, 0.5])
    b = np.array([1.0, np.nan, 3.0, -0.5 if f is fmax_w else 1.5])
    ga, gb = knetc.grad(f, argnum=0)(a, b), knetc.grad(f, argnum=1)(a, b)
    np.testing.assert_array_equal(ga, [w[0], w[1], 0.0, w[3]])
    np.testing.assert_array_equal(gb, [0.0, 0.0, w[2], 0.0])
    c = np.array([0.3, -1.0, 2.0, 0.7])   # gradcheck away from the ties, NaNs in the other argument
    check(f, c, np.array([np.nan, 0.0, np.nan, 1.5]))


def hypot_origin(a, b): return np.sum(np.hypot(a, b))


def test_hypot_at_origin_is_zero_not_nan():
    g = knetc.grad(hypot_origin)(np.array([0.0, 3.0]), np.array([0.0, 4.0]))
    np.testing.assert_allclose(g, [0.0, 0.6])


@pytest.mark.parametrize("name", list(BINARY))
def test_float32_binary(name):
    a, b = (np.asarray(v, np.float32) for v in binary_data(name, (3, 4), (4,)))
    assert knetc.grad(BINARY[name], argnum=0)(a, b).dtype == np.float32
    assert knetc.grad(BINARY[name], argnum=1)(a, b).dtype == np.float32
    assert knetc.grad(BINARY[name], argnum=0)(a, 0.7).dtype == np.float32


# ---------------------------------------------------------------------------------------------
# var, std

def var_(x, axis, ddof, keepdims): return np.sum(np.sin(np.var(x, axis=axis, ddof=ddof, keepdims=keepdims)))
def std_(x, axis, ddof, keepdims): return np.sum(np.sin(np.std(x, axis=axis, ddof=ddof, keepdims=keepdims)))


AXES = [((), None), ((5,), None), ((5,), 0), ((5,), -1), ((3, 4), None), ((3, 4), 0), ((3, 4), -1),
        ((3, 4), (0, 1)), ((2, 3, 4), 1), ((2, 3, 4), (0, 2)), ((2, 3, 4), (2, 0)),
        ((2, 3, 4), None), ((1, 4), 0), ((3, 1), -1), ((2, 1, 4), (1, 2))]


def _reduced(shape, axis):
    return int(np.prod(shape if axis is None else [shape[i] for i in np.atleast_1d(axis)]))


# (f, shape, axis, ddof) with a spread: var needs N > ddof; std also N > 1 (else not differentiable)
VAR_CASES = [(f, shape, axis, ddof) for f in (var_, std_) for shape, axis in AXES for ddof in (0, 1)
             if _reduced(shape, axis) > max(ddof, f is std_)]


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("f,shape,axis,ddof", VAR_CASES,
                         ids=lambda v: getattr(v, "__name__", str(v)))
def test_var_std(f, shape, axis, ddof, keepdims):
    check(f, rnd(shape), axis, ddof, keepdims)


def var_positional(x): return np.sum(np.var(x, 0, None, None, 1)) + np.sum(np.std(x, 1) ** 3)
def var_correction(x):
    return np.sum(np.var(x, axis=1, correction=1)) + np.sum(np.std(x, axis=0, correction=1.5))
def var_loss(x): return np.var(x)
def std_loss(x): return np.std(x, ddof=1)
def var_dtype(x): return np.sum(np.var(x, axis=0, dtype=np.float64)) + np.std(x, dtype=np.float64)


@pytest.mark.parametrize("f", [var_positional, var_correction, var_loss, std_loss, var_dtype])
def test_var_std_forms(f):
    check(f, rnd((3, 4)))


def test_var_std_values():
    x = rnd((3, 4))
    g = knetc.grad(var_loss)(x)
    np.testing.assert_allclose(g, 2 * (x - x.mean()) / x.size)
    g = knetc.grad(std_loss)(x)
    np.testing.assert_allclose(g, (x - x.mean()) / ((x.size - 1) * np.std(x, ddof=1)))


@pytest.mark.parametrize("f", [var_, std_])
def test_float32_var_std(f):
    x = pos((2, 3, 4), np.float32)
    for axis in (None, 1, (0, 2)):
        for keepdims in (False, True):
            assert knetc.grad(f)(x, axis, 1, keepdims).dtype == np.float32
    for g in (var_loss, std_loss, var_dtype):
        assert knetc.grad(g)(x[0]).dtype == np.float32
    assert gradcheck(f, x, (0, 2), 1, False, rtol=1e-2, atol=1e-3, eps=1e-3)


# ---------------------------------------------------------------------------------------------
# median, average

def median_(x, axis, keepdims): return np.sum(np.sin(np.median(x, axis=axis, keepdims=keepdims)))
def median_loss(x): return np.median(x)


MEDIAN_AXES = AXES + [((3, 5), 1), ((4, 3), 0), ((2, 3, 5), (0, 2))]   # odd and even counts


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("shape,axis", MEDIAN_AXES, ids=str)
def test_median(shape, axis, keepdims):
    check(median_, signed(shape), axis, keepdims)   # distinct values: no ties


def test_median_even_count_splits():
    x = np.array([4.0, 1.0, 3.0, 2.0])
    np.testing.assert_array_equal(knetc.grad(median_loss)(x), [0.0, 0.0, 0.5, 0.5])
    np.testing.assert_array_equal(knetc.grad(median_loss)(x[:3]), [0.0, 0.0, 1.0])
    # Ties: one of the equal middle values gets the weight (the total stays 1).
    g = knetc.grad(median_loss)(np.array([2.0, 1.0, 2.0, 2.0, 5.0]))
    assert g.sum() == 1.0 and set(np.flatnonzero(g)) <= {0, 2, 3}


def avg_(x, w, axis, keepdims): return np.sum(np.sin(np.average(x, axis=axis, weights=w, keepdims=keepdims)))
def avg_plain(x, axis): return np.sum(np.sin(np.average(x, axis)))
def avg_loss(x, w): return np.average(x, weights=w)


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("shape,axis", AXES, ids=str)
def test_average(shape, axis, keepdims):
    x = rnd(shape)
    check(avg_, x, None, axis, keepdims)
    check(avg_, x, pos(shape), axis, keepdims, argnums=(0, 1))   # weights shaped like x
    if axis is not None and shape:
        axes = axis if isinstance(axis, tuple) else (axis,)
        w = pos(tuple(shape[i] for i in axes))   # weights along axis only (in axis's order)
        check(avg_, x, w, axis, keepdims, argnums=(0, 1))


def test_average_forms():
    x = rnd((3, 4))
    check(avg_plain, x, 1)
    check(avg_plain, x, None)
    check(avg_loss, x, pos((3, 4)), argnums=(0, 1))
    x32, w32 = pos((3, 4), np.float32), pos((4,), np.float32)
    for i in (0, 1):
        assert knetc.grad(avg_, argnum=i)(x32, w32, 1, False).dtype == np.float32
        assert knetc.grad(avg_, argnum=i)(x32, x32 + 1, None, False).dtype == np.float32
    assert knetc.grad(avg_plain)(x32, None).dtype == np.float32
    assert knetc.grad(median_)(x32, 1, False).dtype == np.float32
    assert knetc.grad(median_loss)(x32).dtype == np.float32


def avg_returned(x):
    m, s = np.average(x, axis=0, returned=True)
    return np.sum(m * s)


@pytest.mark.filterwarnings("ignore::FutureWarning")   # the tuple result's object dtype
def test_average_returned_is_refused():
    with pytest.raises(NoRuleError, match="returned=True"):
        knetc.grad(avg_returned)(rnd((3, 4)))


# ---------------------------------------------------------------------------------------------
# cumsum, cumprod, diff

def cumsum_(x, axis): return np.sum(np.sin(np.cumsum(x, axis=axis)))
def cumprod_(x, axis): return np.sum(np.sin(np.cumprod(x, axis=axis)) * 1.5)
def cumsum_pos(x): return np.sum(np.sin(np.cumsum(x, 1))) + np.sum(np.cumsum(x) ** 2)
def cumprod_pos(x): return np.sum(np.sin(np.cumprod(x, 0))) + np.sum(np.cumprod(x) ** 2)


CUM_AXES = [((), None), ((1,), None), ((5,), None), ((5,), 0), ((5,), -1), ((3, 4), None),
            ((3, 4), 0), ((3, 4), 1), ((3, 4), -1), ((2, 3, 4), 1), ((2, 3, 4), -1),
            ((2, 3, 4), None), ((1, 4), 0), ((3, 1), 1)]


@pytest.mark.parametrize("shape,axis", CUM_AXES, ids=str)
@pytest.mark.parametrize("f", [cumsum_, cumprod_], ids=lambda f: f.__name__)
def test_cumulative(f, shape, axis):
    x = rnd(shape) if f is cumsum_ else signed(shape) * 0.8
    check(f, x, axis)


def test_cumulative_positional():
    check(cumsum_pos, rnd((3, 4)))
    check(cumprod_pos, signed((3, 4)) * 0.8)


ZEROS = {"first": (0,), "middle": (2,), "last": (4,), "two": (1, 3), "adjacent": (2, 3),
         "all": (0, 1, 2, 3, 4)}


@pytest.mark.parametrize("where", list(ZEROS))
@pytest.mark.parametrize("axis", [None, 0, 1])
def test_cumprod_with_zeros(where, axis):
    x = signed((3, 5)) * 0.8
    if axis == 0:
        x = x.T.copy()
        x[list(ZEROS[where]), 1] = 0.0
    else:
        x[1, list(ZEROS[where])] = 0.0
    g = knetc.grad(cumprod_)(x, axis)
    assert np.all(np.isfinite(g))
    check(cumprod_, x, axis)


def cumprod_loss(x): return np.sum(np.cumprod(x))


def test_cumprod_zero_values():
    # d/dx_j sum(cumprod(x)) = sum_{i >= j} prod_{k <= i, k != j} x_k
    x = np.array([2.0, 0.0, 3.0, 0.0, 5.0])
    exact = [1.0, 2.0 + 6.0, 0.0, 0.0, 0.0]
    np.testing.assert_array_equal(knetc.grad(cumprod_loss)(x), exact)
    np.testing.assert_array_equal(knetc.grad(cumprod_loss)(np.array([0.0, 2.0, 3.0])), [1 + 2 + 6, 0, 0])


def diff_(x, n, axis): return np.sum(np.sin(np.diff(x, n=n, axis=axis)) * 1.5)
def diff_default(x): return np.sum(np.sin(np.diff(x)))
def diff_positional(x): return np.sum(np.sin(np.diff(x, 2, 0)))


DIFF_CASES = [((5,), 1, -1), ((5,), 2, 0), ((5,), 4, 0), ((5,), 5, 0), ((5,), 7, 0), ((5,), 0, 0),
              ((3, 4), 1, 0), ((3, 4), 1, -1), ((3, 4), 2, 1), ((3, 4), 3, -1), ((2, 3, 4), 1, 1),
              ((2, 3, 4), 2, -1), ((2, 3, 4), 1, -3), ((1, 4), 1, 1), ((3, 1), 1, 0)]


@pytest.mark.parametrize("shape,n,axis", DIFF_CASES, ids=str)
def test_diff(shape, n, axis):
    check(diff_, rnd(shape), n, axis)


def diff_pre(x, p): return np.sum(np.sin(np.diff(x, axis=0, prepend=p)))
def diff_app(x, q): return np.sum(np.sin(np.diff(x, 2, append=q)))
def diff_both(x, p, q): return np.sum(np.sin(np.diff(x, 2, 1, p, q)) * 2.0)


def test_diff_prepend_append():
    x = rnd((3, 4))
    check(diff_default, x)
    check(diff_positional, x)
    check(diff_pre, x, 0.5, argnums=(0, 1))
    check(diff_pre, x, rnd((2, 4)), argnums=(0, 1))
    check(diff_pre, x, rnd(()), argnums=(0, 1))
    check(diff_app, x, rnd((3, 1)), argnums=(0, 1))
    check(diff_app, x, -0.3, argnums=(0, 1))
    check(diff_both, x, rnd((3, 2)), 0.25, argnums=(0, 1, 2))
    check(diff_both, x, rnd(()), rnd((3, 3)), argnums=(0, 1, 2))


def cumsum_loss(x): return np.cumsum(x)
def cumprod_loss1(x): return np.cumprod(x)
def diff_loss(x): return np.diff(x)


def test_one_element_results_as_the_loss():
    check(cumsum_loss, rnd((1,)))
    check(cumsum_loss, rnd(()))
    check(cumprod_loss1, rnd((1,)))
    check(diff_loss, rnd((2,)))


@pytest.mark.parametrize("f,args", [(cumsum_, (None,)), (cumsum_, (1,)), (cumprod_, (None,)),
                                    (cumprod_, (0,)), (diff_, (2, 1)), (diff_, (1, 0))],
                         ids=lambda v: getattr(v, "__name__", str(v)))
def test_float32_cumulative(f, args):
    x = pos((3, 4), np.float32)
    x[1, 1] = 0.0
    assert knetc.grad(f)(x, *args).dtype == np.float32
    assert gradcheck(f, x, *args, rtol=1e-2, atol=1e-3, eps=1e-3)


# ---------------------------------------------------------------------------------------------
# Gradients of gradients

SECOND_ORDER = [(f, d) for f, d in UNARY if f not in (fabs_, nan_to_num_kw)] + [(fabs_, away)]


@pytest.mark.parametrize("f,data", SECOND_ORDER, ids=[f.__name__ for f, _ in SECOND_ORDER])
def test_second_order_unary(f, data):
    check(second_order(f), data((3, 4)), rtol=1e-4, atol=1e-6)


def test_second_order_sinc_near_zero():
    check(second_order(lambda_sinc), np.array([0.0, 2e-4, -7e-4, 0.4, -1.2]), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", list(BINARY))
def test_second_order_binary(name):
    a, b = binary_data(name, (3, 4), (4,))
    check(second_order(BINARY[name], b), a, rtol=1e-4, atol=1e-6)
    f = BINARY[name]
    check(second_order(_swap, f, a), b, rtol=1e-4, atol=1e-6)   # wrt the second argument


def _swap(b, f, a): return f(a, b)


@pytest.mark.parametrize("f,args", [
    (var_, (None, 0, False)), (var_, (1, 1, False)), (var_, ((0, 2), 0, True)), (std_, (None, 1, False)),
    (std_, (-1, 0, False)), (std_, ((2, 0), 1, True)), (median_, (None, False)), (median_, (1, False)),
    (median_, ((0, 2), True)), (avg_plain, (1,)), (cumsum_, (None,)), (cumsum_, (1,)),
    (cumprod_, (None,)), (cumprod_, (-1,)), (diff_, (1, 1)), (diff_, (2, -1)), (diff_, (3, 2))],
    ids=lambda v: getattr(v, "__name__", str(v)))
def test_second_order_stats(f, args):
    x = signed((2, 3, 4)) * 0.8
    check(second_order(f, *args), x, rtol=1e-4, atol=1e-6)


def test_second_order_average_and_diff_parts():
    x, w = rnd((3, 4)), pos((4,))
    check(second_order(avg_, w, 1, False), x, rtol=1e-4, atol=1e-6)
    check(second_order(_avg_w, x, 1, True), w, rtol=1e-4, atol=1e-6)
    check(second_order(_avg_w, x, None, False), pos((3, 4)), rtol=1e-4, atol=1e-6)
    check(second_order(diff_both, rnd((3, 2)), 0.25), x, rtol=1e-4, atol=1e-6)


def _avg_w(w, x, axis, keepdims): return avg_(x, w, axis, keepdims)


@pytest.mark.parametrize("axis", [None, 1])
def test_second_order_cumprod_with_one_zero(axis):
    # Exact with at most one zero per slice (the flattened array for axis=None).
    x = signed((3, 5)) * 0.8
    x[1, 2] = 0.0
    if axis is not None:
        x[2, 0] = 0.0
    check(second_order(cumprod_, axis), x, rtol=1e-4, atol=1e-6)


C3 = np.array([1.0, 2.0, 4.0])


def s_cumprod(x): return np.sum(np.cumprod(x * C3))         # 1*x + 2x^2 + 8x^3
def s_var(x): return np.var(x * C3, ddof=1)                 # x^2 var(C3, ddof=1)
def s_std(x): return np.std(x * C3) * x                     # x^2 std(C3) for x > 0
def s_diff(x): return np.sum(np.diff(x * x * C3) ** 2)      # x^4 * (1 + 4)
def s_median(x): return np.median(C3 * x ** 3)              # 2 x^3 for x > 0
def s_cumsum(x): return np.sum(np.cumsum(x ** 3 * C3) * C3)  # x^3 * (1*7 + 2*6 + 4*4)
def s_log2(x): return np.log2(x)
def s_arcsin(x): return np.arcsin(x)
def s_hypot(x): return np.hypot(x, 2.0)
def s_average(x): return np.average(C3 * x * x, weights=C3)


@pytest.mark.parametrize("f,exact", [
    (s_cumprod, lambda x: 4 + 48 * x), (s_var, lambda x: 2 * np.var(C3, ddof=1)),
    (s_std, lambda x: 2 * np.std(C3)), (s_diff, lambda x: 60 * x * x), (s_median, lambda x: 12 * x),
    (s_cumsum, lambda x: 6 * x * 35), (s_log2, lambda x: -1 / (x * x * np.log(2))),
    (s_arcsin, lambda x: x / (1 - x * x) ** 1.5), (s_hypot, lambda x: 4 / (x * x + 4) ** 1.5),
    (s_average, lambda x: 2 * np.average(C3, weights=C3))],
    ids=lambda v: "exact" if v.__name__ == "<lambda>" else v.__name__)
@pytest.mark.parametrize("x", [0.3, np.float64(0.7)], ids=["float", "0d"])
def test_grad_grad_scalar(f, exact, x):
    h = knetc.grad(knetc.grad(f))
    np.testing.assert_allclose(h(x), exact(x), rtol=1e-9)
    np.testing.assert_allclose(h(x), exact(x), rtol=1e-9)   # the compiled entry
