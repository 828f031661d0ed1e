"""Rules for the everyday NumPy functions added last: elementwise (float_power, positive, the
degree/radian conversions, fmod, divmod, modf, heaviside, copysign, interp), statistics (ptp, the
nan-functions, quantile, percentile, nanmedian), vdot, partition, convolve, correlate, and
np.linalg's qr, lstsq, matrix_power and multi_dot.

Every check compares knetc's gradient with central finite differences in float64, twice (the
first call of a new shape runs uncompiled, the second compiled). Data avoid the points where a
rule is not differentiable (ties for partition and the order statistics, the jumps of fmod and
divmod, knots for interp); nan-function data hold NaNs, which must get a zero gradient.
"""
import numpy as np
import pytest

import knetc
from knetc.errors import NoRuleError
from knetc.gradcheck import numeric_grad
from knetc.rules import catalog, linalg
from knetc.rules.registry import lookup
from gradtest import check, second_order, check2

RNG = np.random.default_rng(20260301)


def rnd(shape, dtype=np.float64):
    return np.asarray(RNG.normal(size=shape), dtype=dtype)


def pos(shape, dtype=np.float64):
    return np.asarray(RNG.uniform(0.5, 2.0, size=shape), dtype=dtype)


def w(y):
    """A fixed weighting of a result: each entry counts differently (loss = sum(sin(y) * w))."""
    return np.sum(np.sin(y) * np.cos(np.arange(np.size(y)).reshape(np.shape(y))))


def with_nans(shape):
    """Normal data with NaNs: a few scattered ones and, for 2-D and more, one all-NaN row."""
    x = rnd(shape)
    flat = x.reshape(-1)
    flat[RNG.choice(flat.size, size=max(1, flat.size // 6), replace=False)] = np.nan
    if x.ndim >= 2:
        x[(0,) * (x.ndim - 1)] = np.nan
    return x


SHAPES = [(5,), (3, 4), (2, 3, 4)]


# ---------------------------------------------------------------------------------------------
# Elementwise

def float_power_(a, b): return w(np.float_power(a, b))
def float_power_const(a): return w(np.float_power(a, 2.5) + np.float_power(a, 3) + np.float_power(a, 0))
def float_power_base(b): return w(np.float_power(1.7, b))
def positive_(x): return w(np.positive(x) * x)
def angles(x): return w(np.deg2rad(x * 40.0) + np.rad2deg(x) * 0.01 + np.degrees(x) * 0.02
                        + np.radians(x * 30.0))
def fmod_(a, b): return w(np.fmod(a, b))
def divmod_rem(a, b): return w(np.divmod(a, b)[1])
def divmod_both(a, b):
    q, r = np.divmod(a, b)
    return w(r * 1.5 + q)          # the quotient has no gradient
def divmod_quotient(a, b): return w(np.divmod(a, b)[0] * a)
def modf_(x):
    frac, whole = np.modf(x)
    return w(frac * 2.0 + whole)
def modf_whole(x): return w(np.modf(x)[1] * x)
def copysign_(a, b): return w(np.copysign(a, b))
def heaviside_(x2, x1): return w(np.heaviside(x1, x2))
def heaviside_x1(x1, x2): return w(np.heaviside(x1, x2) * x1)


def away_from_jumps(a, b):
    """a / b at least 0.05 from an integer (fmod, divmod and modf jump there)."""
    r = a / b
    return np.where(np.abs(r - np.round(r)) < 0.05, a + 0.2 * b, a)


BINARY_SHAPES = [((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 1, 4), (3, 1)), ((5,), ())]


@pytest.mark.parametrize("shapes", BINARY_SHAPES, ids=str)
def test_float_power(shapes):
    check(float_power_, pos(shapes[0]), rnd(shapes[1]), argnums=(0, 1))
    check(float_power_const, pos(shapes[0]))
    check(float_power_base, rnd(shapes[1]))


def test_positive_and_angles():
    for shape in [(), (5,), (3, 4)]:
        check(positive_, rnd(shape))
        check(angles, rnd(shape))
    check(angles, 0.3)


@pytest.mark.parametrize("shapes", BINARY_SHAPES, ids=str)
@pytest.mark.parametrize("f", [fmod_, divmod_rem, divmod_both, divmod_quotient])
def test_fmod_divmod(f, shapes):
    b = pos(shapes[1]) * RNG.choice([-1.0, 1.0], size=shapes[1])
    a = away_from_jumps(rnd(shapes[0]) * 4.0, b)
    check(f, a, b, argnums=(0, 1))


def test_modf():
    for shape in [(), (7,), (3, 4)]:
        x = away_from_jumps(rnd(shape) * 3.0, 1.0)
        check(modf_, x)
        check(modf_whole, x)


@pytest.mark.parametrize("shapes", BINARY_SHAPES, ids=str)
def test_copysign(shapes):
    a = pos(shapes[0]) * RNG.choice([-1.0, 1.0], size=shapes[0])
    check(copysign_, a, rnd(shapes[1]), argnums=(0, 1))
    g = knetc.grad(sum_copysign)(np.array([0.0, 1.5, -1.5, 0.0, 2.0]),
                                 np.array([1.0, -2.0, -2.0, -1.0, 0.5]))
    np.testing.assert_array_equal(g, [0.0, -1.0, 1.0, 0.0, 1.0])    # 0 at x1 = 0, as abs


def sum_copysign(a, b): return np.sum(np.copysign(a, b))


def test_heaviside():
    x1 = np.array([[-1.0, 0.0, 2.0, 0.0], [0.5, -0.3, 0.0, 1.0], [0.0, 0.0, -2.0, 3.0]])
    check(heaviside_, rnd((4,)), x1)     # wrt x2: where x1 == 0 the value is x2 (JAX's rule)
    np.testing.assert_array_equal(knetc.grad(sum_heaviside)(rnd((4,)), x1), [1.0, 2.0, 1.0, 1.0])
    x1 = np.where(x1 == 0, 0.7, x1)      # away from the step: no derivative wrt x1 but x1's own
    check(heaviside_x1, x1, rnd((4,)))
    check(heaviside_, 0.4, 0.0)


def sum_heaviside(x2, x1): return np.sum(np.heaviside(x1, x2))


def interp_(x, xp, fp): return w(np.interp(x, xp, fp))
def interp_fp(fp, x, xp): return w(np.interp(x, xp, fp))
def interp_lr(lr, x, xp, fp): return w(np.interp(x, xp, fp, left=lr[0], right=lr[1] * 2.0))
def interp_xp(xp, x, fp): return w(np.interp(x, xp, fp))
def interp_period(x, xp, fp): return w(np.interp(x, xp, fp, period=3.0))


@pytest.mark.parametrize("shape", [(), (9,), (3, 4)], ids=str)
def test_interp(shape):
    xp = np.array([-1.5, -0.5, 0.2, 0.9, 1.7])
    x = rnd(shape) * 1.5
    x = np.where(np.min(np.abs(np.asarray(x)[..., None] - xp), axis=-1) < 0.05, x + 0.1, x)
    fp = rnd((5,))
    check(interp_, x, xp, fp)
    check(interp_fp, fp, x, xp)
    check(interp_lr, [0.3, -0.8], x, xp, fp)
    check(interp_, float(np.ravel(x)[0]), list(xp), fp)


def test_interp_at_knots_and_outside():
    xp, fp = np.array([0.0, 1.0, 3.0]), np.array([1.0, 3.0, -1.0])
    x = np.array([-1.0, 0.0, 1.0, 2.0, 3.0, 4.0])
    g = knetc.grad(lambda_interp)(x, xp, fp)
    # at a knot the slope of the segment to its right (the last one at xp[-1]); 0 outside
    np.testing.assert_allclose(g, [0.0, 2.0, -2.0, -2.0, -2.0, 0.0])
    gfp = knetc.grad(lambda_interp_fp)(fp, x, xp)
    np.testing.assert_allclose(gfp, [2.0, 1.5, 2.5])   # outside: fp[0] and fp[-1] take all


def lambda_interp(x, xp, fp): return np.sum(np.interp(x, xp, fp))
def lambda_interp_fp(fp, x, xp): return np.sum(np.interp(x, xp, fp))


def test_interp_refusals():
    xp, fp = np.array([0.0, 1.0, 3.0]), np.array([1.0, 3.0, -1.0])
    with pytest.raises(NoRuleError, match="xp"):
        knetc.grad(interp_xp)(xp, np.array([0.5, 2.0]), fp)
    with pytest.raises(NoRuleError, match="period"):
        knetc.grad(interp_period)(np.array([0.5, 2.0]), xp, fp)


# ---------------------------------------------------------------------------------------------
# ptp and the nan-functions

def ptp_(x, axis, keepdims): return w(np.ptp(x, axis=axis, keepdims=keepdims))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("axis", [None, 0, -1, (0, -1)], ids=str)
def test_ptp(shape, axis):
    if axis == (0, -1) and len(shape) == 1:
        axis = (0,)
    for keepdims in (False, True):
        check(ptp_, rnd(shape), axis, keepdims)


def test_ptp_ties_share():
    g = knetc.grad(lambda_ptp)(np.array([1.0, 3.0, 3.0, -2.0, -2.0, 0.5]))
    np.testing.assert_allclose(g, [0.0, 0.5, 0.5, -0.5, -0.5, 0.0])


def lambda_ptp(x): return np.ptp(x)


NAN_FUNCTIONS = {   # nan_to_num: an all-NaN slice's NaN result (or a count <= ddof) counts 0
    "nansum": lambda x, axis, kd: w(np.nansum(x, axis=axis, keepdims=kd)),
    "nanmean": lambda x, axis, kd: w(np.nan_to_num(np.nanmean(x, axis=axis, keepdims=kd))),
    "nanmax": lambda x, axis, kd: w(np.nan_to_num(np.nanmax(x, axis=axis, keepdims=kd))),
    "nanmin": lambda x, axis, kd: w(np.nan_to_num(np.nanmin(x, axis=axis, keepdims=kd))),
    "nanprod": lambda x, axis, kd: w(np.nanprod(x, axis=axis, keepdims=kd)),
    "nanvar": lambda x, axis, kd: w(np.nan_to_num(np.nanvar(x, axis=axis, keepdims=kd))),
    "nanstd": lambda x, axis, kd: w(np.nan_to_num(np.nanstd(x, axis=axis, keepdims=kd, ddof=1))),
    "nanmedian": lambda x, axis, kd: w(np.nan_to_num(np.nanmedian(x, axis=axis, keepdims=kd))),
}
PLAIN = {"nansum": np.sum, "nanmean": np.mean, "nanmax": np.max, "nanmin": np.min,
         "nanprod": np.prod, "nanvar": np.var, "nanstd": np.std, "nanmedian": np.median}


@pytest.mark.filterwarnings("ignore::RuntimeWarning")     # NumPy's, on all-NaN slices
@pytest.mark.parametrize("name", list(NAN_FUNCTIONS))
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_nan_functions(name, shape):
    f = NAN_FUNCTIONS[name]
    for axis in [None, 0, -1] + ([(0, 2)] if len(shape) == 3 else []):
        kd = axis == -1
        check(f, rnd(shape), axis, kd)          # no NaN
        x = with_nans(shape)                    # NaNs, and an all-NaN slice
        check(f, x, axis, kd)
        g = knetc.grad(f)(x, axis, kd)
        assert np.all(g[np.isnan(x)] == 0) and np.all(np.isfinite(g)), name


@pytest.mark.parametrize("name", list(NAN_FUNCTIONS))
def test_nan_functions_without_nans_match_the_plain_ones(name):
    x = rnd((3, 4))
    g = knetc.grad(NAN_FUNCTIONS[name])(x, 1, False)
    plain = PLAIN[name]

    def ref(x, axis, kd):
        if name == "nanstd":
            return w(plain(x, axis=axis, keepdims=kd, ddof=1))
        return w(plain(x, axis=axis, keepdims=kd))
    np.testing.assert_allclose(g, knetc.grad(ref)(x, 1, False), rtol=1e-12, atol=1e-14)


def nansum_initial(x, init): return w(np.nansum(x, axis=0, initial=init))
def nanmax_where(x): return np.nanmax(x, where=x > 0, initial=-1.0)
def nanmax_initial(x, init): return np.nanmax(x, initial=init)
def nansum_where_true(x): return w(np.nansum(x, axis=1, where=True))
def nanvar_ddof(x, ddof): return w(np.nanvar(x, axis=1, ddof=ddof))
def nanstd_correction(x): return w(np.nanstd(x, axis=0, correction=1))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nan_function_arguments():
    x = with_nans((4, 5))
    x[0] = rnd(5)
    check(nansum_initial, x, 0.4, argnums=(0, 1))
    check(nanvar_ddof, x, 1)
    check(nanstd_correction, x)
    check(nansum_where_true, x)
    with pytest.raises(NoRuleError, match="where"):
        knetc.grad(nanmax_where)(rnd((3, 4)))
    with pytest.raises(NoRuleError, match="initial"):
        knetc.grad(nanmax_initial, argnum=1)(rnd((3, 4)), 5.0)


# ---------------------------------------------------------------------------------------------
# quantile, percentile

def quantile_(x, q, axis, keepdims): return w(np.quantile(x, q, axis=axis, keepdims=keepdims))
def quantile_q(q, x, axis, keepdims): return w(np.quantile(x, q, axis=axis, keepdims=keepdims))
def percentile_(x, q, axis, keepdims): return w(np.percentile(x, q, axis, keepdims=keepdims))
def percentile_q(q, x, axis): return w(np.percentile(x, q, axis=axis))
def quantile_method(x): return np.quantile(x, 0.3, method="nearest")


QS = [0.37, 1.0, 0.0, [0.1, 0.55, 0.93], np.array([[0.2, 0.71], [0.05, 0.45]])]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("axis", [None, 0, -1, (0, -1)], ids=str)
def test_quantile(shape, axis):
    if axis == (0, -1) and len(shape) == 1:
        axis = (-1,)
    x = rnd(shape)
    for q in QS:
        kd = isinstance(q, float) and q > 0.5
        check(quantile_, x, q, axis, kd)
        check(percentile_, x, np.asarray(q) * 100.0, axis, kd)
    check(quantile_q, np.array([0.13, 0.62]), x, axis, False)
    check(quantile_q, 0.41, x, axis, True)
    check(percentile_q, np.array([[13.0], [71.0]]), x, axis)


def test_quantile_splits_between_neighbours():
    x = np.array([4.0, 1.0, 3.0, 2.0, 5.0])     # sorted: 1 2 3 4 5; q = 0.3: h = 1.2
    g = knetc.grad(lambda_quantile)(x)
    np.testing.assert_allclose(g, [0.0, 0.0, 0.2, 0.8, 0.0])


def lambda_quantile(x): return np.quantile(x, 0.3)


def test_quantile_other_methods_refused():
    with pytest.raises(NoRuleError, match="method"):
        knetc.grad(quantile_method)(rnd((6,)))


# ---------------------------------------------------------------------------------------------
# vdot, partition, convolve, correlate

def vdot_(a, b): return np.sin(np.vdot(a, b))


def test_vdot():
    check(vdot_, rnd((3, 4)), rnd((12,)), argnums=(0, 1))
    check(vdot_, rnd((5,)), rnd((5,)), argnums=(0, 1))
    check(vdot_, rnd(()), 0.7, argnums=(0, 1))


def partition_(x, kth, axis): return w(np.partition(x, kth, axis))
def partition_kw(x, kth): return w(np.partition(x, kth=kth, axis=0, kind="introselect"))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("axis", [None, 0, -1])
def test_partition(shape, axis):
    n = int(np.prod(shape)) if axis is None else shape[axis]
    for kth in (0, n // 2, -1, [1, n - 1]):
        check(partition_, rnd(shape), kth, axis)     # normal draws: no ties
    check(partition_kw, rnd(shape), 0)


def convolve_(a, v, mode): return w(np.convolve(a, v, mode))
def correlate_(a, v, mode): return w(np.correlate(a, v, mode))
def convolve_default(a, v): return w(np.convolve(a, v)) + w(np.correlate(a, v))


@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.parametrize("f", [convolve_, correlate_])
def test_convolve_correlate(f, mode):
    for na, nv in [(1, 1), (5, 3), (3, 5), (4, 4), (6, 1), (2, 5), (4, 7)]:
        check(f, rnd((na,)), rnd((nv,)), mode, argnums=(0, 1))
    check(convolve_default, rnd((6,)), rnd((3,)), argnums=(0, 1))


# ---------------------------------------------------------------------------------------------
# np.linalg: qr, lstsq, matrix_power, multi_dot

def qr_both(a):
    q, r = np.linalg.qr(a)
    return w(q) + w(r)
def qr_q(a): return w(np.linalg.qr(a)[0])
def qr_r(a): return w(np.linalg.qr(a, mode="reduced")[1])
def qr_complete(a): return w(np.linalg.qr(a, mode="complete")[1])
def qr_wide(a): return w(np.linalg.qr(a)[1])
def qr_raw(a): return w(np.linalg.qr(a, mode="r"))


@pytest.mark.parametrize("shape", [(3, 3), (5, 3), (4, 1), (2, 4, 3), (2, 3, 3)], ids=str)
@pytest.mark.parametrize("f", [qr_both, qr_q, qr_r])
def test_qr(f, shape):
    check(f, rnd(shape))


def test_qr_forms():
    check(qr_complete, rnd((3, 3)))
    with pytest.raises(NoRuleError, match="wide"):
        knetc.grad(qr_wide)(rnd((2, 4)))
    with pytest.raises(NoRuleError, match="mode"):
        knetc.grad(qr_raw)(rnd((4, 3)))


def lstsq_x(a, b): return w(np.linalg.lstsq(a, b)[0])
def lstsq_all(a, b):
    x, res, rank, s = np.linalg.lstsq(a, b, rcond=None)
    return w(x) + w(res) * 0.5 + w(s) * 0.3 + 0.0 * rank
def lstsq_res_only(a, b): return w(np.linalg.lstsq(a, b)[1])
def lstsq_sv_second(a, b): return w(np.linalg.lstsq(a, b)[3])


@pytest.mark.parametrize("shapes", [((5, 3), (5,)), ((5, 3), (5, 2)), ((3, 3), (3, 2)),
                                    ((2, 4), (2,)), ((2, 4), (2, 3))], ids=str)
def test_lstsq(shapes):
    a, b = rnd(shapes[0]), rnd(shapes[1])
    check(lstsq_x, a, b, argnums=(0, 1))
    check(lstsq_all, a, b, argnums=(0, 1))
    if shapes[0][0] > shapes[0][1]:
        check(lstsq_res_only, a, b, argnums=(0, 1))


def matrix_power_(a, n): return w(np.linalg.matrix_power(a, n))
def matrix_power_traced(a, n): return w(np.linalg.matrix_power(a, n))


@pytest.mark.parametrize("shape", [(3, 3), (2, 3, 3), (1, 1)], ids=str)
def test_matrix_power(shape):
    a = np.eye(shape[-1]) + 0.2 * rnd(shape)      # near I: powers stay moderate
    for n in (0, 1, 2, 3, 6, -1, -2, -3):
        check(matrix_power_, a, n)


def test_matrix_power_traced_exponent_refused():
    with pytest.raises(NoRuleError, match="constant integer"):
        knetc.grad(matrix_power_traced)(rnd((3, 3)), np.array(2))


def multi_dot3(a, b, c): return w(np.linalg.multi_dot([a, b, c]))
def multi_dot2(a, b): return w(np.linalg.multi_dot((a, b)))


def test_multi_dot_same_shapes():
    # knetc's tracer stacks a list of equally shaped arrays into one array: the stacked form
    a, b, c = rnd((3, 3)), rnd((3, 3)), rnd((3, 3))
    check(multi_dot3, a, b, c, argnums=(0, 1, 2))
    check(multi_dot2, rnd((2, 2)), rnd((2, 2)), argnums=(0, 1))


def test_multi_dot_shapes_and_vectors():
    check(multi_dot3, rnd((2, 3)), rnd((3, 4)), rnd((4, 2)), argnums=(0, 1, 2))
    check(multi_dot3, rnd((3,)), rnd((3, 4)), rnd((4,)), argnums=(0, 1, 2))


@pytest.mark.parametrize("shapes", [[(2, 3), (3, 4), (4, 2)], [(3,), (3, 4), (4,)],
                                    [(3,), (3, 2)], [(2, 5), (5,)], [(3, 3)] * 4], ids=str)
def test_multi_dot_gradient_helpers(shapes):
    # the helpers the rule calls, for lists of any shapes, against finite differences
    arrays = [rnd(s) for s in shapes]
    g = rnd(np.shape(np.linalg.multi_dot(arrays)))

    def loss(*arrays): return np.sum(g * np.linalg.multi_dot(list(arrays)))
    grads = linalg.multi_dot_grads(g, arrays)
    for i, gi in enumerate(grads):
        np.testing.assert_allclose(gi, numeric_grad(loss, *arrays, argnum=i), rtol=1e-6, atol=1e-8)
    # and the gradients of the helper (second derivatives): <gz, grads> wrt g and the arrays
    gz = [rnd(np.shape(a)) if i != 1 else None for i, a in enumerate(arrays)]

    def inner(g, *arrays):
        return sum(np.sum(z * gi) for z, gi in zip(gz, linalg.multi_dot_grads(g, list(arrays)))
                   if z is not None)
    dg, darr = linalg.multi_dot_grads_back(gz, g, arrays)
    np.testing.assert_allclose(dg, numeric_grad(inner, g, *arrays), rtol=1e-6, atol=1e-8)
    for i, di in enumerate(darr):
        np.testing.assert_allclose(di, numeric_grad(inner, g, *arrays, argnum=i + 1), rtol=1e-6,
                                   atol=1e-8)


def test_linalg_refusals():
    with pytest.raises(NoRuleError, match="singular values"):
        knetc.grad(second_order(lstsq_sv_second, rnd((4,))))(rnd((4, 2)))


# ---------------------------------------------------------------------------------------------
# float32 stays float32

def f32_elementwise(x):
    return w(np.float_power(np.abs(x) + 1.0, 1.5) + np.positive(x) + np.deg2rad(x) + np.fmod(x, 0.7)
             + np.divmod(x, 0.7)[1] + np.modf(x)[0] + np.copysign(x, x[0]) + np.rad2deg(x) * 0.01)
def f32_stats(x):
    return w(np.ptp(x, axis=0) + np.nansum(x, axis=0) + np.nanmean(x, axis=0) + np.nanmax(x, axis=0)
             + np.nanmin(x, axis=0) + np.nanprod(x, axis=0) + np.nanvar(x, axis=0)
             + np.nanstd(x, axis=0) + np.nanmedian(x, axis=0))
def f32_scalars(x):
    return np.nansum(x) + np.nanmean(x) + np.nanmax(x) + np.nanstd(x) + np.nanmedian(x) + np.ptp(x)
def f32_quantile(x): return w(np.quantile(x, [0.3, 0.8], axis=1) + np.percentile(x, 40.0, axis=1))
def f32_quantile_scalar(x): return np.quantile(x, 0.3) + np.percentile(x, 55.0)
def f32_misc(x):
    return w(np.partition(x, 1, axis=1)) + np.sin(np.vdot(x, x)) + w(np.convolve(x[0], x[1], "same")) \
        + w(np.correlate(x[0], x[2], "full")) + w(np.interp(x, [-1.0, 0.0, 2.0], [0.5, 1.0, -1.0]))
def f32_linalg(x):
    q, r = np.linalg.qr(x)
    return w(q) + w(r) + w(np.linalg.matrix_power(x[:3], 3)) + w(np.linalg.lstsq(x, x[:, 0] * 2.0)[0]) \
        + w(np.linalg.matrix_power(x[:3] + 3.0 * np.eye(3, dtype=x.dtype), -2))


@pytest.mark.parametrize("f", [f32_elementwise, f32_stats, f32_scalars, f32_quantile,
                               f32_quantile_scalar, f32_misc, f32_linalg])
def test_float32_gradients(f):
    x = rnd((3, 4), np.float32)
    if f is f32_linalg:
        x = rnd((4, 3), np.float32) + np.eye(4, 3, dtype=np.float32) * 3
    g = knetc.grad(f)(x)
    assert g.dtype == np.float32, f.__name__
    np.testing.assert_allclose(g, knetc.grad(f)(x.astype(np.float64)), rtol=2e-3, atol=2e-3)


def interp_f32_fp(fp, x): return w(np.interp(x, [-1.0, 0.0, 2.0], fp))


def test_float32_interp_fp():
    fp = rnd((3,), np.float32)
    assert knetc.grad(interp_f32_fp)(fp, rnd((5,))).dtype == np.float32


# ---------------------------------------------------------------------------------------------
# Second order: grad(grad(f)) goes through the rules the adjoints are written with

def so_float_power(x): return w(np.float_power(x, 2.5) * x + np.float_power(x, x))
def so_fmod(x): return w(np.fmod(x * x, 0.7) * x)
def so_ptp(x): return w(np.ptp(x * x, axis=1) ** 2)
def so_nan(x):
    # NaNs reach the nan-functions directly (x ** 3 of a NaN would have a NaN derivative)
    return w(np.nanmean(x, axis=0) ** 3 + np.nanstd(x, axis=0) ** 2) \
        + w(np.nanvar(x, axis=1) ** 2 + np.nanprod(x, axis=1)) + np.sin(np.nansum(x) ** 2) \
        + w(np.nanmax(x, axis=1) ** 2) + w(np.nanmedian(x, axis=0) ** 3)
def so_quantile(x): return w(np.quantile(np.sin(x) * x, [0.3, 0.65], axis=1) ** 2)
def so_quantile_q(q): return w(np.quantile(np.sqrt(np.arange(6.0)), q ** 2) ** 2)
def so_partition(x): return w(np.partition(x ** 3, 2, axis=1) * x)
def so_conv(x):
    return w(np.convolve(x[0] ** 2, x[1], "same") * x[2]) + w(np.correlate(x[1], x[2] ** 2, "full"))
def so_interp(x): return w(np.interp(x[0] ** 2, [0.0, 0.5, 1.5, 4.0], x[1] ** 2) * x[2])
def so_vdot(x): return np.sin(np.vdot(x ** 2, x))
def so_qr(x):
    q, r = np.linalg.qr(x)
    return w(q ** 2) + w(r ** 3)
def so_lstsq(x): return w(np.linalg.lstsq(x, np.arange(4.0) * 0.3)[0] ** 2)
def so_lstsq_wide(x): return w(np.linalg.lstsq(x.T, np.arange(3.0) * 0.3)[0] ** 2)
def so_matrix_power(x):
    return w(np.linalg.matrix_power(x[:3], 3)) + w(np.linalg.matrix_power(x[:3] + 3 * np.eye(3), -2))
def so_multi_dot(x): return w(np.linalg.multi_dot([x[:3], x[1:] ** 2, x[:3].T]))


@pytest.mark.parametrize("f", [so_float_power, so_fmod, so_ptp, so_nan, so_quantile, so_partition,
                               so_conv, so_interp, so_vdot, so_qr, so_lstsq, so_lstsq_wide,
                               so_matrix_power, so_multi_dot])
def test_second_order(f):
    x = rnd((4, 3))
    if f in (so_float_power, so_fmod):
        x = pos((3, 4))
        if f is so_fmod:
            x = np.sqrt(away_from_jumps(x * x, 0.7))
    if f is so_nan:
        x[0, 1] = np.nan
    if f is so_interp:
        x = pos((3, 4))
    if f in (so_qr, so_lstsq, so_lstsq_wide, so_matrix_power, so_multi_dot):
        x = rnd((4, 3)) * 0.3 + np.eye(4, 3)     # well conditioned: moderate derivatives
    check2(f, x)


def test_second_order_quantile_q():
    check2(so_quantile_q, np.array([0.5, 0.8]))


# ---------------------------------------------------------------------------------------------

def test_rules_registered():
    for fn in (np.float_power, np.positive, np.deg2rad, np.rad2deg, np.degrees, np.radians,
               np.fmod, np.divmod, np.modf, np.heaviside, np.copysign, np.ptp, np.nansum,
               np.nanmean, np.nanmax, np.nanmin, np.nanprod, np.nanstd, np.nanvar, np.quantile,
               np.percentile, np.nanmedian, np.vdot, np.partition, np.interp, np.convolve,
               np.correlate, np.linalg.qr, np.linalg.lstsq, np.linalg.matrix_power,
               np.linalg.multi_dot):
        assert lookup(fn) is not None and lookup(fn).differentiable, fn
    assert set(catalog.missing()) == {"np.linalg.eig", "np.linalg.eigvals"}


def eig_(a): return np.sum(np.linalg.eigvals(a))


def test_eig_has_no_rule():
    with pytest.raises(NoRuleError, match="eigvals"):
        knetc.grad(eig_)(rnd((3, 3)))
