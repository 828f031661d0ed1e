"""Every derivative rule, gradient-checked in float64 against central finite differences.

Each test builds a small scalar loss with ``def`` (knetc reads the source), and checks it with
``knetc.gradcheck.gradcheck`` for the differentiated argument(s). Data are drawn away from the
points where a rule is not differentiable (ties of max/min, 0 for abs/relu, clip bounds).
"""
import operator

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import knetc
from knetc import elu, getval, logp, logsumexp, mat, nll, relu, selu, sigm, softmax
from knetc.gradcheck import gradcheck, numeric_grad
from knetc.rules.registry import adjoint
from gradtest import check, second_order

RNG = np.random.default_rng(1234)


def rnd(shape, lo=None, hi=None, dtype=np.float64):
    """Random data of ``shape`` (``"float"`` gives a Python float), normal or uniform in [lo, hi]."""
    if shape == "float":
        return float(rnd((), lo, hi))
    x = RNG.normal(size=shape) if lo is None else RNG.uniform(lo, hi, size=shape)
    return np.asarray(x, dtype=dtype)


def pos(shape, dtype=np.float64):
    return rnd(shape, 0.5, 2.0, dtype)


def away(shape, gap=0.1):
    """Normal data with no entry within ``gap`` of 0 (for abs, relu, sign-like kinks)."""
    x = rnd(shape)
    if shape == "float":
        return x if abs(x) > gap else x + np.copysign(2 * gap, x)
    return np.where(np.abs(x) < gap, np.copysign(2 * gap, x), x)


# ---------------------------------------------------------------------------------------------
# Binary arithmetic with broadcasting

def add_(a, b): return np.sum(np.sin(a + b))
def sub_(a, b): return np.sum(np.sin(a - b))
def mul_(a, b): return np.sum(np.sin(a * b))
def div_(a, b): return np.sum(np.sin(a / b))
def pow_(a, b): return np.sum(a ** b)
def np_add(a, b): return np.sum(np.sin(np.add(a, b)))
def np_sub(a, b): return np.sum(np.sin(np.subtract(a, b)))
def np_mul(a, b): return np.sum(np.sin(np.multiply(a, b)))
def np_div(a, b): return np.sum(np.sin(np.divide(a, b)))
def np_pow(a, b): return np.sum(np.power(a, b))
def maximum_(a, b): return np.sum(np.sin(np.maximum(a, b)))
def minimum_(a, b): return np.sum(np.sin(np.minimum(a, b)))


BINARY = {"add": add_, "sub": sub_, "mul": mul_, "div": div_, "pow": pow_, "np.add": np_add,
          "np.subtract": np_sub, "np.multiply": np_mul, "np.divide": np_div, "np.power": np_pow,
          "maximum": maximum_, "minimum": minimum_}

SHAPE_PAIRS = [((3, 4), (3, 4)), ((3, 4), (4,)), ((4,), (3, 4)), ((3, 4), (3, 1)), ((3, 1), (3, 4)),
               ((3, 4), (1, 4)), ((1, 4), (3, 4)), ((3, 4), ()), ((), (3, 4)), ((3, 4), "float"),
               ("float", (3, 4)), ((), ()), ((2, 3, 4), (3, 1)), ((3, 1), (1, 4)),
               ((2, 1, 4), (3, 1)), ((4,), ())]


def binary_data(name, sa, sb):
    if name in ("pow", "np.power"):
        return pos(sa), rnd(sb, -1.5, 1.5)
    if name in ("div", "np.divide"):
        return rnd(sa), pos(sb)
    return rnd(sa), rnd(sb)


@pytest.mark.parametrize("shapes", SHAPE_PAIRS, ids=str)
@pytest.mark.parametrize("name", list(BINARY))
def test_binary_broadcast(name, shapes):
    a, b = binary_data(name, *shapes)
    check(BINARY[name], a, b, argnums=(0, 1))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=3),
       name=st.sampled_from(["add", "sub", "mul", "div", "maximum"]))
def test_binary_broadcast_random_shapes(shapes, name):
    sa, sb = shapes.input_shapes
    a, b = binary_data(name, sa, sb)
    check(BINARY[name], a, b, argnums=(0, 1))


def x_times_float(x): return np.sum(np.sin(x * 0.5 + 1.5 - x / 3.0))
def float_times_x(x): return np.sum(np.sin(0.5 * x + 1.5 - 3.0 / x))


@pytest.mark.parametrize("f", [x_times_float, float_times_x])
def test_constant_operands(f):
    check(f, pos((3, 4)))


def same_twice(x): return np.sum(x * x + x - x / (x + 3.0))


def test_same_operand_twice():
    check(same_twice, pos((3, 4)))


# ---------------------------------------------------------------------------------------------
# Powers and unary minus

def pow2(x): return np.sum(np.sin(x ** 2))
def pow3(x): return np.sum(x ** 3)
def pow05(x): return np.sum(x ** 0.5)
def pow_neg(x): return np.sum(x ** -1.5)
def pow0(x): return np.sum(x ** 0 + x)
def np_pow3(x): return np.sum(np.power(x, 3))
def float_pow_x(x): return np.sum(2.0 ** x)
def neg_(x): return np.sum(np.sin(-x))
def np_neg(x): return np.sum(np.sin(np.negative(x)))


@pytest.mark.parametrize("f", [pow2, pow3, pow05, pow_neg, pow0, np_pow3, float_pow_x, neg_, np_neg])
@pytest.mark.parametrize("shape", [(), (4,), (3, 4), (2, 3, 4), "float"], ids=str)
def test_pow_and_neg(f, shape):
    check(f, pos(shape))


def pow_xy(x, y): return np.sum(x ** y)


@pytest.mark.parametrize("shapes", [((3, 4), (3, 4)), ((3, 4), (4,)), ((3, 4), "float"),
                                    ("float", (3, 4)), ((3, 1), (1, 4))], ids=str)
def test_pow_array_exponent(shapes):
    check(pow_xy, pos(shapes[0]), rnd(shapes[1], -2, 2), argnums=(0, 1))


# ---------------------------------------------------------------------------------------------
# Matrix products

def matmul_op(a, b): return np.sum(np.sin(a @ b))
def matmul_np(a, b): return np.sum(np.sin(np.matmul(a, b)))
def dot_np(a, b): return np.sum(np.sin(np.dot(a, b)))
def dot_method(a, b): return np.sum(np.sin(a.dot(b)))


MATMUL_SHAPES = [((3, 4), (4, 5)), ((4,), (4,)), ((4,), (4, 5)), ((3, 4), (4,)), ((2, 3, 4), (4, 5)),
                 ((3, 4), (2, 4, 5)), ((2, 3, 4), (2, 4, 5)), ((2, 1, 3, 4), (3, 4, 2)),
                 ((2, 3, 4), (4,)), ((4,), (2, 4, 5)), ((1, 3, 4), (2, 4, 5))]


@pytest.mark.parametrize("shapes", MATMUL_SHAPES, ids=str)
@pytest.mark.parametrize("f", [matmul_op, matmul_np])
def test_matmul(f, shapes):
    check(f, rnd(shapes[0]), rnd(shapes[1]), argnums=(0, 1))


DOT_SHAPES = [((3, 4), (4, 5)), ((4,), (4,)), ((4,), (4, 5)), ((3, 4), (4,)), ((2, 3, 4), (4, 5)),
              ((2, 3, 4), (4,)), ((3, 4), (2, 4, 5)), ((2, 3, 4), (2, 4, 5)), ((4,), (2, 4, 3)),
              ((), (3, 4)), ((3, 4), ())]


@pytest.mark.parametrize("shapes", DOT_SHAPES, ids=str)
@pytest.mark.parametrize("f", [dot_np, dot_method])
def test_dot(f, shapes):
    check(f, rnd(shapes[0]), rnd(shapes[1]), argnums=(0, 1))


def matmul_chain(w1, w2, x): return np.sum(np.tanh(w2 @ np.tanh(w1 @ x)))


def test_matmul_chain_three_args():
    check(matmul_chain, rnd((5, 4)), rnd((3, 5)), rnd((4, 6)), argnums=(0, 1, 2))


def outer_(a, b): return np.sum(np.sin(np.outer(a, b)))
def tensordot_(a, b, axes): return np.sum(np.sin(np.tensordot(a, b, axes)))


@pytest.mark.parametrize("shapes", [((4,), (3,)), ((2, 2), (3,)), ((4,), (1, 3))], ids=str)
def test_outer(shapes):
    check(outer_, rnd(shapes[0]), rnd(shapes[1]), argnums=(0, 1))


@pytest.mark.parametrize("shapes,axes", [
    (((3, 4), (4, 5)), 1), (((2, 3, 4), (3, 4, 5)), 2), (((2, 3), (4, 5)), 0),
    (((2, 3, 4), (4, 2, 5)), ([2, 0], [0, 1])), (((2, 3, 4), (5, 3)), (1, 1)),
    (((3, 4, 2), (2, 5, 4)), ([-1, 1], [0, -1])), (((3, 4), (3, 4)), ([1, 0], [1, 0]))], ids=str)
def test_tensordot(shapes, axes):
    check(tensordot_, rnd(shapes[0]), rnd(shapes[1]), axes, argnums=(0, 1))


# ---------------------------------------------------------------------------------------------
# Elementwise functions

def exp_(x): return np.sum(np.exp(x))
def log_(x): return np.sum(np.log(x))
def log1p_(x): return np.sum(np.log1p(x))
def expm1_(x): return np.sum(np.expm1(x))
def sqrt_(x): return np.sum(np.sqrt(x))
def abs_(x): return np.sum(np.sin(np.abs(x)))
def absolute_(x): return np.sum(np.sin(np.absolute(x)))
def builtin_abs(x): return np.sum(np.sin(abs(x)))
def sin_(x): return np.sum(np.sin(x))
def cos_(x): return np.sum(np.cos(x))
def tan_(x): return np.sum(np.tan(x))
def tanh_(x): return np.sum(np.tanh(x))
def sinh_(x): return np.sum(np.sinh(x))
def cosh_(x): return np.sum(np.cosh(x))
def arctan_(x): return np.sum(np.arctan(x))
def square_(x): return np.sum(np.sin(np.square(x)))


UNARY = [(exp_, rnd), (log_, pos), (log1p_, pos), (expm1_, rnd), (sqrt_, pos), (abs_, away),
         (absolute_, away), (builtin_abs, away), (sin_, rnd), (cos_, rnd),
         (tan_, lambda s: rnd(s, -1.0, 1.0)), (tanh_, rnd), (sinh_, rnd), (cosh_, rnd),
         (arctan_, rnd), (square_, rnd)]


@pytest.mark.parametrize("shape", [(), (5,), (3, 4), (2, 3, 4), "float"], ids=str)
@pytest.mark.parametrize("f,data", UNARY, ids=[f.__name__ for f, _ in UNARY])
def test_unary(f, data, shape):
    check(f, data(shape))


def composed(x): return np.sum(np.log(np.exp(np.tanh(x)) + np.sqrt(np.square(x) + 1.0)) * np.cos(x))


def test_composition():
    check(composed, rnd((3, 4)))


# maximum / minimum / where / clip ------------------------------------------------------------

def max_const(x): return np.sum(np.maximum(x, 0.3) + np.minimum(0.1, x) * 2.0)


def test_maximum_minimum_constant():
    x = rnd((3, 4))
    x[np.abs(x - 0.3) < 0.05] += 0.2
    x[np.abs(x - 0.1) < 0.05] += 0.2
    check(max_const, x)


def where_self(x): return np.sum(np.where(x > 0, np.sin(x), x * x))
def where_xy(c, x, y): return np.sum(np.sin(np.where(c, x, y)))
def where_mask(x, y): return np.sum(np.where(x > y, x, y * 2.0))


def test_where_condition_from_x():
    check(where_self, away((3, 4)))


@pytest.mark.parametrize("shapes", [((3, 4), (3, 4)), ((3, 4), (4,)), ((4,), (3, 4)), ((3, 1), (1, 4)),
                                    ((3, 4), ()), ((3, 4), "float")], ids=str)
def test_where_broadcast(shapes):
    sx, sy = shapes
    cond = rnd((3, 4)) > 0
    check(where_xy, cond, rnd(sx), rnd(sy), argnums=(1, 2))


def test_where_comparison_of_both():
    x, y = rnd((3, 4)), rnd((3, 4))
    y[np.abs(x - y) < 0.05] += 0.2
    check(where_mask, x, y, argnums=(0, 1))


def clip_both(x): return np.sum(np.sin(np.clip(x, -0.5, 0.5)) + x)
def clip_kw(x): return np.sum(np.sin(np.clip(x, a_min=-0.5, a_max=0.5)) * 3.0)
def clip_low(x): return np.sum(np.sin(np.clip(x, -0.5, None)))
def clip_high(x): return np.sum(np.sin(np.clip(x, None, 0.5)))
def clip_method(x): return np.sum(np.sin(x.clip(-0.5, 0.5)))
def clip_array_bounds(x, lo, hi): return np.sum(np.sin(np.clip(x, lo, hi)))


def clip_data(shape):
    x = rnd(shape, -1.0, 1.0)
    return np.where(np.abs(np.abs(x) - 0.5) < 0.05, x * 1.3, x)


@pytest.mark.parametrize("f", [clip_both, clip_kw, clip_low, clip_high, clip_method])
def test_clip(f):
    check(f, clip_data((3, 4)))


def test_clip_array_bounds():
    x = rnd((3, 4), -1.0, 1.0)
    lo, hi = rnd((4,), -0.6, -0.2), rnd((3, 1), 0.2, 0.6)
    x = np.where(np.abs(x - lo) < 0.05, x + 0.1, x)
    x = np.where(np.abs(x - hi) < 0.05, x - 0.1, x)
    check(clip_array_bounds, x, lo, hi, argnums=(0, 1, 2))


# ---------------------------------------------------------------------------------------------
# Reductions

def sum_ax(x, axis, keepdims): return np.sum(np.sin(np.sum(x, axis=axis, keepdims=keepdims)) * 2.0)
def mean_ax(x, axis, keepdims): return np.sum(np.sin(np.mean(x, axis=axis, keepdims=keepdims)))
def prod_ax(x, axis, keepdims): return np.sum(np.sin(np.prod(x, axis=axis, keepdims=keepdims)))
def max_ax(x, axis, keepdims): return np.sum(np.sin(np.max(x, axis=axis, keepdims=keepdims)))
def min_ax(x, axis, keepdims): return np.sum(np.sin(np.min(x, axis=axis, keepdims=keepdims)))
def amax_ax(x, axis, keepdims): return np.sum(np.sin(np.amax(x, axis=axis, keepdims=keepdims)))
def amin_ax(x, axis, keepdims): return np.sum(np.sin(np.amin(x, axis=axis, keepdims=keepdims)))


REDUCTIONS = [sum_ax, mean_ax, prod_ax, max_ax, min_ax, amax_ax, amin_ax]
AXES = [((5,), None), ((5,), 0), ((5,), -1), ((3, 4), None), ((3, 4), 0), ((3, 4), 1), ((3, 4), -1),
        ((3, 4), (0, 1)), ((2, 3, 4), 1), ((2, 3, 4), -2), ((2, 3, 4), (0, 2)), ((2, 3, 4), (0, -1)),
        ((2, 3, 4), (2, 0)), ((2, 3, 4), None)]


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("shape,axis", AXES, ids=str)
@pytest.mark.parametrize("f", REDUCTIONS, ids=lambda f: f.__name__)
def test_reductions(f, shape, axis, keepdims):
    x = pos(shape) * RNG.choice([-1.0, 1.0], size=shape)  # away from 0 (prod), no ties (max)
    check(f, x, axis, keepdims)


def sum_positional(x): return np.sum(np.sin(np.sum(x, 1))) + np.sum(np.mean(x, 0) ** 2)
def reduce_0d(x): return np.sum(x) + np.mean(x) * np.max(x) - np.min(x) * np.prod(x)
def sum_of_float(x): return np.sum(x) * 2.0


def test_reductions_positional_axis():
    check(sum_positional, rnd((3, 4)))


def test_reductions_of_0d_and_float():
    check(reduce_0d, pos(()))
    check(sum_of_float, 0.7)


# Array methods -----------------------------------------------------------------------------------

def m_sum(x): return np.sum(np.sin(x.sum(axis=0))) + x.sum()
def m_mean(x): return x.mean() + np.sum(np.sin(x.mean(axis=-1, keepdims=True)))
def m_max(x): return x.max() + np.sum(np.sin(x.max(axis=1))) + np.sum(x.min(0) ** 2)
def m_prod(x): return x.prod() + np.sum(x.prod(axis=1))
def m_reshape(x): return np.sum(np.sin(x.reshape(4, 3)) * np.arange(12.0).reshape(4, 3))
def m_reshape_tuple(x): return np.sum(np.sin(x.reshape((2, 6))) * np.arange(12.0).reshape(2, 6))
def m_reshape_neg(x): return np.sum(np.sin(x.reshape(-1)) * np.arange(12.0))
def m_flatten(x): return np.sum(np.sin(x.flatten()) * np.arange(12.0) + x.ravel())
def m_astype(x): return np.sum(np.sin(x.astype(np.float64)))
def m_T(x): return np.sum(np.sin(x.T) * np.arange(12.0).reshape(4, 3))
def m_transpose(x): return np.sum(np.sin(x.transpose()) * np.arange(12.0).reshape(4, 3))
def m_copy(x): return np.sum(np.sin(x.copy()) * x)
def m_item(x): return x[0, 1].item() * 3.0 + np.sum(x)


@pytest.mark.parametrize("f", [m_sum, m_mean, m_max, m_prod, m_reshape, m_reshape_tuple, m_reshape_neg,
                               m_flatten, m_astype, m_T, m_transpose, m_copy, m_item])
def test_array_methods(f):
    check(f, pos((3, 4)) * RNG.choice([-1.0, 1.0], size=(3, 4)))


def m_transpose_axes(x): return np.sum(np.sin(x.transpose(2, 0, 1)) * np.arange(24.0).reshape(4, 2, 3))
def m_transpose_tuple(x): return np.sum(np.sin(x.transpose((1, 0, 2))) * np.arange(24.0).reshape(3, 2, 4))
def m_swapaxes(x): return np.sum(np.sin(x.swapaxes(0, 2)) * np.arange(24.0).reshape(4, 3, 2))
def m_T3(x): return np.sum(np.sin(x.T) * np.arange(24.0).reshape(4, 3, 2))


@pytest.mark.parametrize("f", [m_transpose_axes, m_transpose_tuple, m_swapaxes, m_T3])
def test_array_methods_3d(f):
    check(f, rnd((2, 3, 4)))


def m_std(x): return x.std() + np.sum(np.sin(x.std(axis=0, ddof=1)))
def m_var(x): return np.sum(x.var(axis=1, keepdims=True) * x) + x.var()
def m_cumsum(x): return np.sum(np.sin(x.cumsum(axis=1))) + np.sum(x.cumsum() * np.arange(12.0))
def m_cumprod(x): return np.sum(np.sin(x.cumprod(axis=0))) + np.sum(x.cumprod(1))
def m_trace(x): return x.trace() + x.trace(offset=1) ** 2 + x.trace(1, 0, 1)
def m_diagonal(x): return np.sum(np.sin(x.diagonal()) + x.diagonal(1) ** 2)
def m_repeat(x): return np.sum(np.sin(x.repeat(2, axis=0)) * np.arange(24.0).reshape(6, 4))
def m_take(x): return np.sum(np.sin(x.take([2, 0, 2], axis=1))) + x.take(5) * 2.0
def m_round(x): return np.sum(x * x.round(1))              # round: derivative 0 where it has one
def m_argsort(x): return np.sum(np.sin(x[0][x[0].argsort()]) * np.arange(4.0))
def m_nonzero(x): return np.sum(np.sin(x[(x > 0.6).nonzero()]))
def m_searchsorted(x): return np.sum(x[1] * np.sort(x[0]).searchsorted(x[1]))


METHODS_MORE = [m_std, m_var, m_cumsum, m_cumprod, m_trace, m_diagonal, m_repeat, m_take,
                m_round, m_argsort, m_nonzero, m_searchsorted]


@pytest.mark.parametrize("f", METHODS_MORE)
def test_more_array_methods(f):
    """Methods with the NumPy function's parameters: gradients against finite differences, and
    the loss as plain Python computes it."""
    x = pos((3, 4)) * RNG.choice([-1.0, 1.0], size=(3, 4))
    check(f, x)
    _, loss = knetc.gradloss(f)(x)
    assert loss == pytest.approx(f(x), rel=1e-12)


def test_methods_that_change_the_array_in_place_are_refused():
    def f(x):
        y = x * 2.0
        y.sort()
        return np.sum(y)
    with pytest.raises(knetc.KnetcError, match=r"\.sort"):
        knetc.grad(f)(rnd((4,)))


# ---------------------------------------------------------------------------------------------
# Shape manipulation

W24 = np.arange(24.0).reshape(2, 3, 4) / 10


def reshape_(x): return np.sum(np.sin(np.reshape(x, (6, 4))) * W24.reshape(6, 4))
def reshape_neg(x): return np.sum(np.sin(np.reshape(x, (4, -1))) * W24.reshape(4, 6))
def reshape_flat(x): return np.sum(np.sin(np.reshape(x, -1)) * W24.reshape(-1))
def transpose_(x): return np.sum(np.sin(np.transpose(x)) * W24.T)
def transpose_axes(x): return np.sum(np.sin(np.transpose(x, (1, 2, 0))) * np.transpose(W24, (1, 2, 0)))
def transpose_axes_kw(x): return np.sum(np.sin(np.transpose(x, axes=(2, 0, 1)))
                                        * np.transpose(W24, (2, 0, 1)))
def swapaxes_(x): return np.sum(np.sin(np.swapaxes(x, 0, 1)) * np.swapaxes(W24, 0, 1))
def swapaxes_neg(x): return np.sum(np.sin(np.swapaxes(x, -1, 0)) * np.swapaxes(W24, -1, 0))
def moveaxis_(x): return np.sum(np.sin(np.moveaxis(x, 0, -1)) * np.moveaxis(W24, 0, -1))
def moveaxis_multi(x): return np.sum(np.sin(np.moveaxis(x, (0, 1), (2, 0)))
                                     * np.moveaxis(W24, (0, 1), (2, 0)))
def expand_0(x): return np.sum(np.sin(np.expand_dims(x, 0)) * W24[None])
def expand_neg(x): return np.sum(np.sin(np.expand_dims(x, -1)) * W24[..., None])
def expand_tuple(x): return np.sum(np.sin(np.expand_dims(x, (0, 2))) * np.expand_dims(W24, (0, 2)))
def ravel_(x): return np.sum(np.sin(np.ravel(x)) * W24.ravel())
def broadcast_(x): return np.sum(np.sin(np.broadcast_to(x, (5, 2, 3, 4)))
                                 * np.arange(5.0)[:, None, None, None])


@pytest.mark.parametrize("f", [reshape_, reshape_neg, reshape_flat, transpose_, transpose_axes,
                               transpose_axes_kw, swapaxes_, swapaxes_neg, moveaxis_, moveaxis_multi,
                               expand_0, expand_neg, expand_tuple, ravel_, broadcast_])
def test_shape_ops(f):
    check(f, rnd((2, 3, 4)))


def squeeze_all(x): return np.sum(np.sin(np.squeeze(x)) * np.arange(12.0).reshape(3, 4))
def squeeze_axis(x): return np.sum(np.sin(np.squeeze(x, axis=0)) * np.arange(12.0).reshape(3, 1, 4))
def squeeze_method(x): return np.sum(np.sin(x.squeeze(2)) * np.arange(12.0).reshape(1, 3, 4))


@pytest.mark.parametrize("f", [squeeze_all, squeeze_axis, squeeze_method])
def test_squeeze(f):
    check(f, rnd((1, 3, 1, 4)))


def broadcast_to_(x): return np.sum(np.sin(np.broadcast_to(x, (3, 4))) * np.arange(12.0).reshape(3, 4))


@pytest.mark.parametrize("shape", [(4,), (3, 1), (1, 4), (), (1, 1), (3, 4)], ids=str)
def test_broadcast_to(shape):
    check(broadcast_to_, rnd(shape))


def concat0(a, b): return np.sum(np.sin(np.concatenate([a, b])) * np.arange(5.0)[:, None])
def concat1(a, b): return np.sum(np.sin(np.concatenate((a, b), axis=1)) * np.arange(7.0))
def concat_neg(a, b): return np.sum(np.sin(np.concatenate([a, b, a], axis=-1)) * np.arange(11.0))
def concat_const(a, b): return np.sum(np.sin(np.concatenate([a, np.ones((2, 3)), b], axis=0)))


def test_concatenate():
    check(concat0, rnd((2, 3)), rnd((3, 3)), argnums=(0, 1))
    check(concat1, rnd((2, 3)), rnd((2, 4)), argnums=(0, 1))
    check(concat_neg, rnd((2, 3)), rnd((2, 5)), argnums=(0, 1))
    check(concat_const, rnd((2, 3)), rnd((1, 3)), argnums=(0, 1))


def concat_1d(a, b): return np.sum(np.sin(np.concatenate([a, b, a])) * np.arange(8.0))


def test_concatenate_1d_repeated_operand():
    check(concat_1d, rnd((3,)), rnd((2,)), argnums=(0, 1))


def stack_(a, b, axis):
    s = np.stack([a, b, a], axis=axis)
    return np.sum(np.sin(s) * 2.0) + np.sum(s[0] ** 2)


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_stack(axis):
    check(stack_, rnd((2, 3)), rnd((2, 3)), axis, argnums=(0, 1))


def stack_list_param(ws): return np.sum(np.sin(np.stack(ws, axis=1)) * np.arange(3.0))


def test_stack_list_parameter():
    check(stack_list_param, [rnd((4,)), rnd((4,)), rnd((4,))])


def split_(x):
    a, b, c = np.split(x, 3, axis=1)
    return np.sum(np.tanh(a) * sigm(b) + c ** 2)


def split_halves(x):
    a, b = np.split(x, 2, axis=1)
    return np.sum(np.tanh(a) * sigm(b))


def split_points(x):
    a, b, c = np.split(x, [1, 3])
    return np.sum(np.sin(c)) + np.sum(a ** 2)  # b reaches no loss: its gradient is zero


def array_split_(x):
    p = np.array_split(x, 3, axis=-1)
    return np.sum(p[1] * p[2]) + np.sum(p[0] ** 2)


def test_split():
    check(split_, rnd((4, 6)))
    check(split_halves, rnd((3, 4)))
    check(split_points, rnd((4, 6)))
    check(array_split_, rnd((2, 7)))


def full_(x, v): return np.sum(np.sin(np.full((3, 4), v) * x))
def full_like_(x, v): return np.sum(np.sin(np.full_like(x, v) * x))


@pytest.mark.parametrize("f", [full_, full_like_])
@pytest.mark.parametrize("v", [pos(()), 0.7, pos((4,))], ids=["0d", "float", "(4,)"])
def test_full_fill_value(f, v):
    check(f, rnd((3, 4)), v, argnums=(0, 1))


# ---------------------------------------------------------------------------------------------
# Indexing

W34 = np.arange(1.0, 13.0).reshape(3, 4) / 5
IDX = np.array([0, 2, 0, 0])


def ix_int(x): return np.sum(np.sin(x[1]) * W34[1])
def ix_neg_int(x): return np.sum(np.sin(x[-1])) + x[0, 2] * 3.0
def ix_slice(x): return np.sum(np.sin(x[1:3]) * W34[1:3])
def ix_col(x): return np.sum(np.sin(x[:, 1]) * 2.0)
def ix_rev(x): return np.sum(np.sin(x[::-1]) * W34)
def ix_negstep(x): return np.sum(np.sin(x[1:, ::-2]) * W34[1:, ::-2])
def ix_none(x): return np.sum(np.sin(x[None, :, 1]) * np.arange(3.0))
def ix_ellipsis(x): return np.sum(np.sin(x[..., 0]) + x[..., -1] ** 2)
def ix_repeat(x): return np.sum(np.sin(x[IDX]) * np.arange(4.0)[:, None])
def ix_list(x): return np.sum(np.sin(x[[0, 2, 0]]) * np.arange(3.0)[:, None])
def ix_cols_repeat(x): return np.sum(np.sin(x[:, [1, 1, 3]]) * np.arange(3.0))
def ix_pair(x): return np.sum(np.sin(x[IDX, np.array([1, 1, 3, 1])]) * np.arange(4.0))
def ix_2d_int(x): return np.sum(np.sin(x[np.array([[0, 1], [1, 1]])]) * 2.0)
def ix_mask(x): return np.sum(np.sin(x[x > 0]) * 2.0)
def ix_mask_const(x): return np.sum(np.sin(x[W34 > 1.2]))
def ix_twice(x): return np.sum(x[0] * x[1] + x[:, 0] @ x[:, 1]) + x[0, 0] * x[0, 0]
def ix_mixed(x): return np.sum(np.sin(x[1:, IDX[:2]]) * 2.0)


INDEXING = [ix_int, ix_neg_int, ix_slice, ix_col, ix_rev, ix_negstep, ix_none, ix_ellipsis, ix_repeat,
            ix_list, ix_cols_repeat, ix_pair, ix_2d_int, ix_mask, ix_mask_const, ix_twice, ix_mixed]


@pytest.mark.parametrize("f", INDEXING, ids=lambda f: f.__name__)
def test_indexing(f):
    check(f, away((3, 4)))


def ix_3d(x): return np.sum(np.sin(x[1, ::-1, None, 1:3])) + np.sum(x[..., 1] ** 2) + np.sum(x[:, IDX[:3], 0])


def test_indexing_3d():
    check(ix_3d, rnd((2, 3, 4)))


def ix_arg(x, i): return np.sum(np.sin(x[i]) * 2.0)
def ix_arg_col(x, i): return np.sum(np.sin(x[:, i]) * np.arange(5.0))


def test_indexing_with_int_array_argument():
    x = rnd((3, 4))
    i = np.array([2, 0, 2, 2, 1])
    assert gradcheck(ix_arg, x, i)
    assert gradcheck(ix_arg_col, x, np.array([3, 3, 0, 1, 3]))
    g = knetc.grad(ix_arg)(x, i)  # repeated rows accumulate: row 2 appears three times
    np.testing.assert_allclose(g[2], 3 * 2 * np.cos(x[2]))


def ix_mask_arg(x, m): return np.sum(np.sin(x[m]) * 2.0)
def ix_int_arg(x, i): return np.sum(np.sin(x[i])) + np.sum(x[:, i] ** 2)


def test_indexing_with_mask_and_int_arguments():
    x = rnd((3, 4))
    assert gradcheck(ix_mask_arg, x, rnd((3, 4)) > 0)
    assert gradcheck(ix_int_arg, x, 1)
    assert gradcheck(ix_int_arg, x, -1)


def pick(x, idx): return np.sum(np.sin(x[idx]) * 2.0) + np.sum(x[idx] ** 2)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(idx=st.one_of(hnp.basic_indices(shape=(3, 4, 2), allow_newaxis=True, allow_ellipsis=True),
                     hnp.integer_array_indices(shape=(3, 4, 2))))
def test_indexing_random(idx):
    assert gradcheck(pick, rnd((3, 4, 2)), idx)


def rows_then_sum(x): return np.sum(x[np.array([1, 1, 1])])


def test_scatter_add_accumulates():
    g = knetc.grad(rows_then_sum)(rnd((3, 4)))
    np.testing.assert_array_equal(g, [[0] * 4, [3] * 4, [0] * 4])


def ix_list_param(ws): return np.sum(ws[0] * ws[1][2]) + ws[2] * 2.0


def test_indexing_into_parameter_structure():
    check(ix_list_param, [rnd((4,)), rnd((3, 4)), 0.3])


# ---------------------------------------------------------------------------------------------
# No gradient through comparisons, zeros_like/ones_like, sign, floor, argmax…

def relu_by_mask(x): return np.sum(x * (x > 0))
def mask_ops(x): return np.sum(x * ((x > 0.1) & (x < 1.0)) + x * np.logical_not(x >= 0.2))
def zeros_ones(x): return np.sum(np.zeros_like(x) + x * np.ones_like(x) + np.full_like(x, 2.0) * x)
def sign_floor(x): return np.sum(x * np.sign(x) + np.floor(x) * x + np.round(x) * x)
def argmax_pick(x): return x[np.argmax(x)] * 2.0 + np.sum(x)
def fresh_constants(x): return np.sum(x * np.ones(x.shape) + np.zeros((3, 4)) + np.eye(3) @ x)


@pytest.mark.parametrize("f", [relu_by_mask, mask_ops, zeros_ones, sign_floor, fresh_constants])
def test_nondifferentiable(f):
    x = away((3, 4), 0.15)
    x = np.where(np.abs(x - np.round(x)) < 0.05, x + 0.15, x)  # away from the steps of round/floor
    x = np.where(np.abs(x - 0.5 - np.floor(x)) < 0.05, x + 0.15, x)
    check(f, x)


def test_nondifferentiable_argmax():
    check(argmax_pick, rnd((6,)))


def test_comparison_gradient_values():
    x = away((3, 4))
    np.testing.assert_array_equal(knetc.grad(relu_by_mask)(x), (x > 0).astype(float))


# ---------------------------------------------------------------------------------------------
# Knet's primitives

def relu_(x): return np.sum(np.sin(relu(x)))
def sigm_(x): return np.sum(np.sin(sigm(x)))
def elu_(x): return np.sum(np.sin(elu(x)))
def elu_alpha(x): return np.sum(np.sin(elu(x, 0.5)))
def elu_alpha_kw(x): return np.sum(np.sin(elu(x, alpha=2.0)))
def selu_(x): return np.sum(np.sin(selu(x)))


@pytest.mark.parametrize("shape", [(), (5,), (3, 4), (2, 3, 4)], ids=str)
@pytest.mark.parametrize("f", [relu_, sigm_, elu_, elu_alpha, elu_alpha_kw, selu_])
def test_activations(f, shape):
    check(f, away(shape))


def softmax_ax(x, axis): return np.sum(softmax(x, axis=axis) * W24[: x.shape[0], : x.shape[1]])
def softmax_default(x): return np.sum(softmax(x) * W24[0, 0, :3])
def logp_ax(x, axis): return np.sum(logp(x, axis=axis) * W24[: x.shape[0], : x.shape[1]])
def logp_default(x): return np.sum(logp(x) * W24[0, 0, :3])
def logp_positional(x): return np.sum(logp(x, 0) * W24[0, 0, :3])


@pytest.mark.parametrize("axis", [-1, 0, 1])
@pytest.mark.parametrize("f", [softmax_ax, logp_ax])
def test_softmax_logp_axis(f, axis):
    check(f, rnd((2, 3, 4)), axis)


@pytest.mark.parametrize("f", [softmax_default, logp_default])
@pytest.mark.parametrize("shape", [(3,), (2, 3)], ids=str)
def test_softmax_logp_default(f, shape):
    check(f, rnd(shape))


def test_logp_positional_axis():
    check(logp_positional, rnd((3, 3)))


def lse(x, axis, keepdims): return np.sum(np.sin(logsumexp(x, axis=axis, keepdims=keepdims)))
def lse_default(x): return np.sum(np.sin(logsumexp(x)))


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("axis", [-1, 0, 1, None, (0, 2)], ids=str)
def test_logsumexp(axis, keepdims):
    check(lse, rnd((2, 3, 4)), axis, keepdims)


@pytest.mark.parametrize("shape", [(5,), (3, 4)], ids=str)
def test_logsumexp_default(shape):
    check(lse_default, rnd(shape))


def nll_(scores, labels, average):
    if average:
        return nll(scores, labels, average=True)
    total, count = nll(scores, labels, average=False)   # Knet: (total, count)
    return total / count


def nll_default(scores, labels): return nll(scores, labels)
def nll_positional(scores, labels): return nll(scores, labels, False)[0] * 0.5
def nll_model(w, x, labels): return nll(w @ x, labels)


@pytest.mark.parametrize("average", [True, False])
def test_nll(average):
    check(nll_, rnd((5, 3)), np.array([0, 2, 1, 2, 2]), average)


def test_nll_total_and_count():
    scores, labels = rnd((5, 3)), np.array([0, 2, 1, 2, 2])
    total, count = nll(scores, labels, average=False)
    assert count == 5
    np.testing.assert_allclose(total / count, nll(scores, labels))


def test_nll_variants():
    labels = np.array([1, 0, 3])
    check(nll_default, rnd((3, 4)), labels)
    check(nll_positional, rnd((3, 4)), labels)
    check(nll_model, rnd((5, 4)), rnd((4, 3)), np.array([0, 1, 2, 2, 0]), argnums=(0, 1))


def mat_(x): return np.sum(np.sin(mat(x)) * np.arange(12.0))


@pytest.mark.parametrize("shape", [(2, 3, 4), (2, 12), (2, 3, 2, 2)], ids=str)
def test_mat(shape):
    check(mat_, rnd(shape))


def getval_(x): return np.sum(x * getval(x))
def getval_all(x): return np.sum(x) + np.sum(getval(x) ** 2)


def test_getval_stops_gradient():
    x = rnd((3, 4))
    np.testing.assert_array_equal(knetc.grad(getval_)(x), x)
    np.testing.assert_array_equal(knetc.grad(getval_all)(x), np.ones((3, 4)))


def knet_mlp(w, x, labels):
    h = relu(w[0] @ x + w[1])
    return nll((w[2] @ h + w[3]).T, labels)


def test_knet_mlp():
    w = [rnd((5, 4)), rnd((5, 1)), rnd((3, 5)), rnd((3, 1))]
    check(knet_mlp, w, rnd((4, 6)), np.array([0, 1, 2, 2, 1, 0]))


# ---------------------------------------------------------------------------------------------
# float32 stays float32

def f32_mix(x, y):
    return np.sum(np.tanh(x @ y) * 0.5) + np.mean(np.exp(x)) + np.sum(softmax(x) * x) + \
        np.sum(x[IDX[:2]] ** 2) + np.sum(np.maximum(x, 0.0) / 3) + logsumexp(x, axis=None)


def f32_reduce(x): return np.sum(np.max(x, axis=0)) + np.prod(x) + np.sum(x.T) + np.sum(np.sqrt(x))
def f32_scalar(x): return x[0, 0] * 2.0 + np.sum(np.sin(x) ** 3)
def f32_nll(x): return nll(x, np.array([0, 1, 2])) + np.sum(relu(x)) + np.sum(sigm(x) * elu(x))
def f32_astype(x): return np.sum(np.sin(x.astype(np.float64)))


@pytest.mark.parametrize("f", [f32_reduce, f32_scalar, f32_nll, f32_astype])
def test_float32_gradients(f):
    x = pos((3, 4), dtype=np.float32)
    g = knetc.grad(f)(x)
    assert g.dtype == np.float32, f.__name__
    assert gradcheck(f, x, rtol=1e-3, atol=1e-4)


def test_float32_two_arguments():
    x, y = pos((3, 4), np.float32), pos((4, 2), np.float32)
    for i in (0, 1):
        g = knetc.grad(f32_mix, argnum=i)(x, y)
        assert g.dtype == np.float32
        assert gradcheck(f32_mix, x, y, argnum=i, rtol=1e-3, atol=1e-4)


F32_SHAPE_OPS = [
    lambda x: np.sum(np.sin(np.reshape(x, (6, 4)))), lambda x: np.sum(np.sin(np.transpose(x, (1, 2, 0)))),
    lambda x: np.sum(np.sin(np.swapaxes(x, 0, 2))), lambda x: np.sum(np.sin(np.moveaxis(x, 0, -1))),
    lambda x: np.sum(np.sin(np.expand_dims(x, 1))), lambda x: np.sum(np.sin(x.T)),
    lambda x: np.sum(np.sin(np.broadcast_to(x, (2, 2, 3, 4)))), lambda x: np.sum(np.sin(mat(x))),
    lambda x: np.sum(np.sin(np.concatenate([x, x], axis=1))), lambda x: np.sum(np.sin(np.stack([x, x]))),
    lambda x: np.sum(np.sin(x[1, ::-1])), lambda x: np.sum(np.sin(x[:, [0, 0, 2]])),
    lambda x: np.sum(np.sin(x[x > 1])), lambda x: np.sum(np.split(x, 2, axis=-1)[1] ** 2),
    lambda x: np.sum(np.tensordot(x, x, 3)), lambda x: np.sum(np.sin(x @ np.swapaxes(x, 1, 2))),
    lambda x: np.sum(np.sin(softmax(x, axis=1)) + logp(x) * 0.5) + logsumexp(x, axis=None),
    lambda x: (np.sum(np.sin(np.max(x, axis=(0, 2)))) + np.sum(np.mean(x, axis=1))
               + np.sum(np.prod(x, axis=-1))),
    lambda x: np.sum(np.sin(np.where(x > 1, x, 0.5)) + np.clip(x, 0.7, 1.5) ** 2),
    lambda x: np.sum(relu(x - 1) + sigm(x) * elu(x - 1) + selu(x) + np.maximum(x, 1.0) * 0.5),
    lambda x: np.sum(np.full_like(x, x[0, 0, 0]) * x),
]


@pytest.mark.parametrize("f", F32_SHAPE_OPS)
def test_float32_more_rules(f):
    x = pos((2, 3, 4), np.float32)
    assert knetc.grad(f)(x).dtype == np.float32


@pytest.mark.parametrize("f,data", UNARY, ids=[f.__name__ for f, _ in UNARY])
def test_float32_unary(f, data):
    x = np.asarray(data((3, 4)), dtype=np.float32)
    assert knetc.grad(f)(x).dtype == np.float32


@pytest.mark.parametrize("name", list(BINARY))
def test_float32_binary(name):
    a, b = (np.asarray(v, np.float32) for v in binary_data(name, (3, 4), (4,)))
    assert knetc.grad(BINARY[name], argnum=0)(a, b).dtype == np.float32
    assert knetc.grad(BINARY[name], argnum=1)(a, b).dtype == np.float32
    assert knetc.grad(BINARY[name], argnum=0)(a, 0.7).dtype == np.float32


@pytest.mark.parametrize("f", REDUCTIONS, ids=lambda f: f.__name__)
def test_float32_reductions(f):
    x = pos((2, 3, 4), np.float32)
    for axis in (None, 1, (0, 2)):
        for keepdims in (False, True):
            assert knetc.grad(f)(x, axis, keepdims).dtype == np.float32


# ---------------------------------------------------------------------------------------------
# Gradients of gradients: differentiating a function that calls knetc.grad runs each rule's
# generated code (pure, no in-place updates) through the rules again.

SECOND_ORDER = [
    (exp_, rnd), (log_, pos), (log1p_, pos), (expm1_, rnd), (sqrt_, pos), (abs_, away), (sin_, rnd),
    (cos_, rnd), (tan_, lambda s: rnd(s, -1.0, 1.0)), (tanh_, rnd), (sinh_, rnd), (cosh_, rnd),
    (arctan_, rnd), (square_, rnd), (pow2, pos), (pow3, pos), (pow05, pos), (float_pow_x, pos),
    (neg_, rnd), (relu_, away), (sigm_, rnd), (elu_, away), (selu_, away), (same_twice, pos),
    (composed, rnd), (clip_both, clip_data), (where_self, away), (max_const, away),
    (m_sum, rnd), (m_mean, rnd), (m_max, rnd), (m_prod, away), (m_T, rnd), (m_reshape, rnd),
    (m_astype, rnd), (m_item, rnd), (ix_int, rnd), (ix_col, rnd), (ix_rev, rnd), (ix_negstep, rnd),
    (ix_none, rnd), (ix_ellipsis, rnd), (ix_repeat, rnd), (ix_cols_repeat, rnd), (ix_pair, rnd),
    (ix_mask, away), (ix_twice, rnd), (ix_mixed, rnd), (split_halves, rnd), (softmax_default, rnd),
    (logp_default, rnd), (lse_default, rnd), (sum_of_float, rnd), (reduce_0d, pos)]


@pytest.mark.parametrize("f,data", SECOND_ORDER, ids=[f.__name__ for f, _ in SECOND_ORDER])
def test_second_order(f, data):
    shape = {reduce_0d: (), sum_of_float: (), softmax_default: (2, 3), logp_default: (2, 3)}.get(f, (3, 4))
    x = data(shape)
    check(second_order(f), x, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("f,args", [
    (sum_ax, (None, False)), (sum_ax, (1, False)), (sum_ax, ((0, 2), True)), (mean_ax, (None, True)),
    (mean_ax, (-1, False)), (prod_ax, (1, False)), (max_ax, ((0, 2), False)), (min_ax, (None, True)),
    (lse, (1, False)), (lse, (None, False)), (softmax_ax, (0,)), (logp_ax, (1,)),
    (reshape_, ()), (transpose_axes, ()), (swapaxes_, ()), (moveaxis_multi, ()), (expand_tuple, ()),
    (broadcast_, ()), (ravel_, ()), (mat_, ()), (ix_3d, ())], ids=lambda v: getattr(v, "__name__", str(v)))
def test_second_order_3d(f, args):
    x = pos((2, 3, 4)) * RNG.choice([-1.0, 1.0], size=(2, 3, 4))
    check(second_order(f, *args), x, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("f,other", [
    (add_, (4,)), (sub_, (3, 1)), (mul_, ()), (div_, "float"), (maximum_, (1, 4)),
    (pow_xy, (4,)), (matmul_op, (4, 5)), (dot_np, (2, 4, 5)), (outer_, (3,)),
    (concat1, (3, 3)), (where_mask, (3, 4)), (clip_array_bounds, None), (nll_, None),
    (ix_arg, None), (full_like_, "float"), (stack_list_param, None)],
    ids=lambda v: getattr(v, "__name__", str(v)))
def test_second_order_binary(f, other):
    x = pos((3, 4))
    rest = {clip_array_bounds: (-0.6, 0.6), nll_: (np.array([0, 1, 3]), True),
            ix_arg: (np.array([0, 2, 2]),), pow_xy: (rnd((4,), -1.0, 1.0),),
            stack_list_param: ()}.get(f)
    if rest is None:
        rest = (pos(other) if other != (2, 4, 5) else rnd(other),)
    if f is outer_:
        x = pos((4,))
    if f is stack_list_param:
        x = [pos((4,)), pos((4,)), pos((4,))]
    if f is clip_array_bounds:
        x = clip_data((3, 4)) * 1.2
    check(second_order(f, *rest), x, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# User rules: knetc.adjoint and knetc.nondifferentiable

def mycube(x):
    return x ** 3


@adjoint(mycube)
def _mycube_rule(y, x):
    d[x] = d[y] * 3 * x * x  # noqa: F821  (d is the template's gradient table)


def myscale(x, s=2.0):
    return x * s


@adjoint(myscale)
def _myscale_rule(y, x, s=2.0):
    d[x] = d[y] * s  # noqa: F821
    d[s] = np.sum(d[y] * x)  # noqa: F821


def stopgrad(x):
    return x * 1.0


knetc.nondifferentiable(stopgrad)


def use_mycube(x): return np.sum(np.sin(mycube(x)))
def use_myscale(x, s): return np.sum(np.sin(myscale(x, s)) + myscale(x))
def use_stopgrad(x): return np.sum(x * stopgrad(x))


def test_user_rule():
    x = rnd((3, 4))
    check(use_mycube, x)
    assert "mycube" in knetc.show(use_mycube, x)
    check(use_myscale, x, 0.7, argnums=(0, 1))


def test_user_nondifferentiable():
    x = rnd((3, 4))
    np.testing.assert_array_equal(knetc.grad(use_stopgrad)(x), x)


# ---------------------------------------------------------------------------------------------
# gradcheck itself

def badsquare(x):
    return x * x


@adjoint(badsquare)
def _badsquare_rule(y, x):
    d[x] = d[y] * x  # noqa: F821  (wrong on purpose: should be 2 * x)


def use_badsquare(w): return np.sum(badsquare(w["layers"][1]))
def nested(w): return w["a"] * np.sum(w["layers"][0] ** 2) + np.sum(np.sin(w["layers"][1])) * w["b"][0]


def test_gradcheck_reports_the_wrong_entry():
    w = {"layers": [rnd((2,)), pos((2, 3))]}
    with pytest.raises(AssertionError, match=r"w\['layers'\]\[1\]\[0, 0\].*analytic.*numeric"):
        gradcheck(use_badsquare, w)


def test_gradcheck_nested_and_numeric_grad():
    w = {"a": 0.5, "layers": [rnd((2, 3)), rnd((4,))], "b": (1.5, 3, "x")}
    assert gradcheck(nested, w)
    assert gradcheck(nested, w, samples=2)
    n = numeric_grad(nested, w)
    assert isinstance(n["a"], float) and n["b"][1] is None and n["b"][2] is None
    assert isinstance(n["b"], tuple) and n["layers"][1].shape == (4,)
    np.testing.assert_allclose(n["layers"][0], 2 * 0.5 * w["layers"][0], rtol=1e-6)


def test_gradcheck_samples_big_parameter():
    x = rnd((40, 50))
    assert gradcheck(sin_, x, samples=5)


def test_gradcheck_float_argument():
    assert gradcheck(sin_, 0.3)
    assert numeric_grad(sin_, 0.3) == pytest.approx(np.cos(0.3))


def test_operator_rules_registered():
    from knetc.rules.registry import lookup
    for fn in (operator.add, operator.sub, operator.mul, operator.truediv, operator.pow,
               operator.matmul, operator.neg, operator.getitem, np.dot, np.clip, np.where):
        assert lookup(fn) is not None and lookup(fn).differentiable


def only_first(w): return np.sum(np.sin(w[0])) + 0.0 * len(w)


def test_gradcheck_leaf_without_gradient():
    w = [rnd((3,)), rnd((2,)), 0.5]
    g = knetc.grad(only_first)(w)
    assert g[1] is None or not np.any(g[1])
    assert gradcheck(only_first, w)


def badshape(x):
    return x * 2.0


@adjoint(badshape)
def _badshape_rule(y, x):
    d[x] = np.sum(d[y], axis=0)  # noqa: F821  (wrong on purpose: drops an axis)


def use_badshape(x): return np.sum(badshape(x))


def test_gradcheck_reports_shape_mismatch():
    with pytest.raises(AssertionError, match=r"gradient for x has shape \(4,\).*\(3, 4\)"):
        gradcheck(use_badshape, rnd((3, 4)))


def test_gradcheck_options():
    x = rnd((2, 3))
    assert gradcheck(sin_, x, eps=1e-4, rtol=1e-6)
    assert gradcheck(sin_, np.array(0.4), samples=3)
    n = numeric_grad(sin_, x, eps=1e-5)
    assert n.dtype == np.float64 and n.shape == (2, 3)
    np.testing.assert_allclose(n, np.cos(x), rtol=1e-8)
    assert gradcheck(where_xy, rnd((3, 4)) > 0, rnd((3, 4)), 0.5, argnum=2)
    with pytest.raises(ValueError):
        gradcheck(sin_, x, argnum=1)


def _means(x):
    return np.mean(x) + np.sum(np.mean(x, axis=(0, 2)) ** 2) + np.sum(x.mean(1, keepdims=True) * x)


@pytest.mark.parametrize("dtype, form", [(np.float64, "sum() / 24"), (np.float32, "sum() / 24"),
                                         (np.float16, ".mean()")])
def test_mean_is_written_as_sum_over_its_count(dtype, form):
    # The count is known when code is generated: mean's Python overhead is dropped (float32 and
    # float64 only; float16 means accumulate in float32 and keep np.mean).
    x = rnd((2, 3, 4)).astype(dtype)
    source = knetc.gradloss(_means).source(x)   # (the loss's own mean too: grad drops it)
    assert form in source and ("sum(axis=(0, 2)) / 8" in source) == (dtype != np.float16)
    dx, loss = knetc.gradloss(_means)(x)
    assert loss == _means(x) and loss.dtype == dtype and dx.dtype == dtype
    if dtype == np.float64:
        check(_means, x)


def _concat_use(a, b, W):
    h = np.tanh(np.concatenate([a, b]) @ W)
    return np.sum(np.tanh(a) * h[:3]) + np.sum(b * b)


def test_slices_of_a_gradient_are_read_inline():
    # The parts of a concatenation's gradient are views: their readers use dh[0:3] directly,
    # with no statement of their own (and a later contribution makes a new array, never +=).
    a, b, W = rnd(3), rnd(2), rnd((5, 4))
    source = knetc.show(_concat_use, a, b, W)
    lines = [line.strip() for line in source.splitlines()]
    assert "da += dconcatenate[0:3]" in lines
    assert not any(line.split(" = ")[-1].startswith("dconcatenate[") for line in lines)
    check(_concat_use, a, b, W, argnums=(0, 1, 2))
