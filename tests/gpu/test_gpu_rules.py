"""Every rule family on the GPU: ``knetc.gradloss`` on CuPy arrays equals the NumPy path on the
same float64 values (loss and every gradient leaf, same dtypes), and a float32 subset.

The cases reuse the CPU rule suites' losses where they take all their data as arguments
(tests/test_rules.py, tests/test_rules_numpy_a.py: UNARY, BINARY, REDUCTIONS, MATMUL_SHAPES...),
drawing their data with those modules' own domain generators under a seeded RNG
(``gpu_helpers.borrowed``); losses that need weights or indices take them as arguments here, so
that they move to the device too (a NumPy constant in a GPU loss is tested on its own, at the end).
Each GPU gradient is taken twice: the first call of a new specialization may run uncompiled
(tier 0), the second runs the compiled code, fused into CUDA kernels on the GPU.

tests/test_gpu_cases_cpu.py runs the NumPy half of every case here on the CPU.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import knetc
from knetc import batchnorm, dropout, logp, mat, softmax
from knetc.runtime.backend import cupy_module
from knetc.runtime.layers import bnmoments

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import test_pow_edges as PE  # noqa: E402
import test_rules as R  # noqa: E402
import test_rules_numpy_a as A  # noqa: E402
from gpu_helpers import F32_TOL, Case, as_f32, borrowed, compare_case, gpu_half, numpy_half  # noqa: E402


def _seed(rng):
    return int(rng.integers(2 ** 32))


def _w(rng, y):
    """Weights shaped like ``y``: every entry of a result counts differently in the loss."""
    return rng.normal(size=np.shape(y))


def _signed(rng, shape):
    """Magnitudes in [0.5, 2] with random signs: away from 0, no ties (max, min, prod)."""
    return rng.uniform(0.5, 2.0, size=shape) * rng.choice([-1.0, 1.0], size=shape)


# ---------------------------------------------------------------------------------------------
# Elementwise: one argument

UNARY_SHAPES = [(), (5,), (3, 4), (2, 3, 4)]
UNARY_FNS = [(R, f, d) for f, d in R.UNARY] + [(A, f, d) for f, d in A.UNARY]


def _unary(mod, f, data, shape, f32=False):
    def make(rng):
        x = borrowed(mod, data, shape, seed=_seed(rng))
        return as_f32((x,)) if f32 else (x,)
    tol = F32_TOL if f32 else {}
    return Case(f"{f.__name__}-{shape}{'-f32' if f32 else ''}", f, make, **tol)


UNARY_CASES = [_unary(m, f, d, s) for m, f, d in UNARY_FNS for s in UNARY_SHAPES] + \
    [_unary(m, f, d, (3, 4), f32=True) for m, f, d in UNARY_FNS]


# ---------------------------------------------------------------------------------------------
# Elementwise: two arguments, with broadcasting (and Python floats)

BINARY_PAIRS = [((3, 4), (3, 4)), ((3, 4), (4,)), ((3, 1), (1, 4)), ((3, 4), ()), ((3, 4), "float"),
                ("float", (3, 4)), ((2, 1, 4), (3, 1)), ((), ())]
BINARY_FNS = [(R, name, f) for name, f in R.BINARY.items()] + \
    [(A, name, f) for name, f in A.BINARY.items()]


def _binary(mod, name, f, sa, sb, f32=False):
    def make(rng):
        args = borrowed(mod, mod.binary_data, name, sa, sb, seed=_seed(rng))
        return as_f32(args) if f32 else args
    tol = F32_TOL if f32 else {}
    return Case(f"{name}-{sa}-{sb}{'-f32' if f32 else ''}", f, make, (0, 1), **tol)


BINARY_CASES = [_binary(m, n, f, sa, sb) for m, n, f in BINARY_FNS for sa, sb in BINARY_PAIRS] + \
    [_binary(m, n, f, (3, 4), (4,), f32=True) for m, n, f in BINARY_FNS]


# where, clip, maximum/minimum with constants, powers and their edges --------------------------

def where_weighted(c, x, y, w): return np.sum(np.sin(np.where(c, x, y)) * w)


def _where(sx, sy):
    def make(rng):
        return rng.normal(size=(3, 4)) > 0, rng.normal(size=sx), rng.normal(size=sy), \
            rng.normal(size=(3, 4))
    return Case(f"where-{sx}-{sy}", where_weighted, make, (1, 2))


def _clip_data(rng, shape=(3, 4)):
    x = rng.uniform(-1.0, 1.0, size=shape)
    return np.where(np.abs(np.abs(x) - 0.5) < 0.05, x * 1.3, x)


def _clip_bounds(rng):
    x, lo, hi = rng.uniform(-1.0, 1.0, (3, 4)), rng.uniform(-0.6, -0.2, (4,)), rng.uniform(0.2, 0.6, (3, 1))
    x = np.where(np.abs(x - lo) < 0.05, x + 0.1, x)
    return np.where(np.abs(x - hi) < 0.05, x - 0.1, x), lo, hi


def _away(rng, shape, gap=0.1):
    x = rng.normal(size=shape)
    return np.where(np.abs(x) < gap, np.copysign(2 * gap, x), x)


def _where_mask_data(rng):
    x, y = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    return x, np.where(np.abs(x - y) < 0.05, y + 0.2, y)


def _max_const_data(rng):
    x = rng.normal(size=(3, 4))
    x = np.where(np.abs(x - 0.3) < 0.05, x + 0.2, x)
    return (np.where(np.abs(x - 0.1) < 0.05, x + 0.2, x),)


POW_FNS = [R.pow2, R.pow3, R.pow05, R.pow_neg, R.pow0, R.np_pow3, R.float_pow_x, R.neg_, R.np_neg]

SELECT_CASES = [_where(sx, sy) for sx, sy in [((3, 4), (3, 4)), ((3, 4), (4,)), ((3, 1), (1, 4)),
                                              ((3, 4), ()), ((3, 4), "float")]
                if "float" not in (sx, sy)] + [
    Case("where-float", where_weighted, lambda rng: (rng.normal(size=(3, 4)) > 0,
                                                     rng.normal(size=(3, 4)), 0.7, rng.normal(size=(3, 4))),
         (1, 2)),
    Case("where_self", R.where_self, lambda rng: (_away(rng, (3, 4)),)),
    Case("where_mask", R.where_mask, _where_mask_data, (0, 1)),
    Case("max_const", R.max_const, _max_const_data),
    Case("clip_array_bounds", R.clip_array_bounds, _clip_bounds, (0, 1, 2)),
] + [Case(f.__name__, f, lambda rng: (_clip_data(rng),))
     for f in (R.clip_both, R.clip_kw, R.clip_low, R.clip_high, R.clip_method)] + \
    [Case(f"{f.__name__}-{s}", f, lambda rng, s=s: (rng.uniform(0.5, 2.0, size=s),))
     for f in POW_FNS for s in [(5,), (3, 4)]] + [
    Case("pow_xy", R.pow_xy, lambda rng: (rng.uniform(0.5, 2.0, (3, 4)), rng.uniform(-2, 2, (4,))), (0, 1)),
    Case("pow_xy-float", R.pow_xy, lambda rng: (rng.uniform(0.5, 2.0, (3, 4)), 1.7), (0, 1)),
    # x ** y at a zero base and a zero exponent: zero gradients (as JAX), no NaN from 0 * inf
    Case("pow-zero_base", PE.zero_base, lambda rng: (np.array([1.5, 2.0, 0.5]),)),
    Case("pow-zero_exponent", PE.zero_exponent, lambda rng: (np.array([0.0, 2.0, 0.5]),)),
    Case("pow-zero_exponent_array", PE.zero_exponent_array,
         lambda rng: (np.array([0.0, 2.0, 0.5]), np.array([0.0, 0.0, 1.5])), (0, 1)),
    Case("pow-f32-base-f64-exponent", PE.zero_exponent_array,
         lambda rng: (np.array([0.5, 2.0], np.float32), np.array([0.0, 1.5])), 0, **F32_TOL),
]


# ---------------------------------------------------------------------------------------------
# Reductions

RED_AXES = [((5,), None), ((5,), -1), ((3, 4), 0), ((3, 4), -1), ((2, 3, 4), 1), ((2, 3, 4), (0, 2)),
            ((2, 3, 4), None)]


def _reduction(f, shape, axis, keepdims, f32=False):
    def make(rng):
        x = _signed(rng, shape)
        return (x.astype(np.float32) if f32 else x), axis, keepdims
    tol = F32_TOL if f32 else {}
    return Case(f"{f.__name__}-{shape}-{axis}-{keepdims}{'-f32' if f32 else ''}", f, make, **tol)


VAR_AXES = [((3, 4), None), ((3, 4), 0), ((2, 3, 4), (0, 2)), ((2, 3, 4), -1)]

REDUCTION_CASES = [_reduction(f, s, a, k) for f in R.REDUCTIONS for s, a in RED_AXES
                   for k in (False, True)] + \
    [_reduction(f, (2, 3, 4), a, False, f32=True) for f in R.REDUCTIONS for a in (None, (0, 2))] + \
    [Case(f"{f.__name__}-{s}-{a}-ddof{d}", f, lambda rng, s=s, a=a, d=d: (rng.normal(size=s), a, d, False))
     for f in (A.var_, A.std_) for s, a in VAR_AXES for d in (0, 1)] + \
    [Case(f"{f.__name__}-keepdims", f, lambda rng: (rng.normal(size=(2, 3, 4)), 1, 1, True))
     for f in (A.var_, A.std_)] + \
    [Case(f"lse-{a}-{k}", R.lse, lambda rng, a=a, k=k: (rng.normal(size=(2, 3, 4)), a, k))
     for a in (-1, 0, None, (0, 2)) for k in (False, True)] + \
    [Case("lse_default", R.lse_default, lambda rng: (rng.normal(size=(3, 4)),)),
     Case("var_loss", A.var_loss, lambda rng: (rng.normal(size=(3, 4)),)),
     Case("std_loss", A.std_loss, lambda rng: (rng.normal(size=(3, 4)),))] + \
    [Case(f"median-{s}-{a}", A.median_, lambda rng, s=s, a=a: (rng.permutation(np.prod(s)).reshape(s)
                                                               + rng.uniform(0, 0.5, s), a, False))
     for s, a in [((3, 5), None), ((3, 5), 1), ((4, 3), 0)]]


# ---------------------------------------------------------------------------------------------
# Products: matmul, dot, outer, tensordot, einsum

def einsum1w(a, w, s): return np.sum(np.sin(np.einsum(s, a)) * w)
def einsum2w(a, b, w, s): return np.sum(np.sin(np.einsum(s, a, b)) * w)


EINSUMS = [("ij,jk->ik", [(2, 3), (3, 4)]), ("ij,jk", [(2, 3), (3, 4)]),
           ("bij,bjk->bik", [(2, 3, 4), (2, 4, 2)]), ("i,j->ij", [(3,), (4,)]),
           ("ij,ij->ij", [(3, 1), (3, 4)]), ("...ij,...jk->...ik", [(2, 3, 4), (4, 2)]),
           ("ij->j", [(2, 3)]), ("ii->i", [(3, 3)]), ("ij->ji", [(2, 3)]), ("i,i", [(4,), (4,)])]


def _einsum(spec, shapes):
    def make(rng):
        ops = [rng.normal(size=s) for s in shapes]
        return (*ops, _w(rng, np.einsum(spec, *ops)), spec)
    f = einsum1w if len(shapes) == 1 else einsum2w
    return Case(f"einsum-{spec}", f, make, tuple(range(len(shapes))))


TENSORDOT = [(((3, 4), (4, 5)), 1), (((2, 3, 4), (3, 4, 5)), 2), (((2, 3), (4, 5)), 0),
             (((2, 3, 4), (4, 2, 5)), ([2, 0], [0, 1])), (((3, 4, 2), (2, 5, 4)), ([-1, 1], [0, -1]))]

PRODUCT_CASES = \
    [Case(f"{f.__name__}-{sa}-{sb}", f, lambda rng, sa=sa, sb=sb: (rng.normal(size=sa), rng.normal(size=sb)),
          (0, 1)) for f in (R.matmul_op, R.matmul_np) for sa, sb in R.MATMUL_SHAPES] + \
    [Case(f"dot-{sa}-{sb}", R.dot_np, lambda rng, sa=sa, sb=sb: (rng.normal(size=sa), rng.normal(size=sb)),
          (0, 1)) for sa, sb in R.DOT_SHAPES] + \
    [Case(f"dot_method-{sa}-{sb}", R.dot_method,
          lambda rng, sa=sa, sb=sb: (rng.normal(size=sa), rng.normal(size=sb)), (0, 1))
     for sa, sb in R.DOT_SHAPES[:4]] + \
    [Case(f"outer-{sa}-{sb}", R.outer_, lambda rng, sa=sa, sb=sb: (rng.normal(size=sa), rng.normal(size=sb)),
          (0, 1)) for sa, sb in [((4,), (3,)), ((2, 2), (3,))]] + \
    [Case(f"tensordot-{sh}-{ax}", R.tensordot_,
          lambda rng, sh=sh, ax=ax: (rng.normal(size=sh[0]), rng.normal(size=sh[1]), ax), (0, 1))
     for sh, ax in TENSORDOT] + \
    [_einsum(s, shapes) for s, shapes in EINSUMS] + \
    [Case("matmul_chain", R.matmul_chain,
          lambda rng: (rng.normal(size=(5, 4)), rng.normal(size=(3, 5)), rng.normal(size=(4, 6))), (0, 1, 2)),
     Case("matmul-f32", R.matmul_op,
          lambda rng: as_f32((rng.normal(size=(2, 3, 4)), rng.normal(size=(4, 5)))), (0, 1), **F32_TOL),
     Case("einsum-f32", einsum2w, lambda rng: as_f32((rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 4, 2)),
                                                      rng.normal(size=(2, 3, 2)), "bij,bjk->bik")),
          (0, 1), **F32_TOL)]


# ---------------------------------------------------------------------------------------------
# Indexing: basic slices, negative steps, None, ellipsis, integer arrays (repeated indices must
# add up in the gradient: a scatter-add), boolean masks

def ix_int(x, w): return np.sum(np.sin(x[1]) * w) + x[0, 2] * 3.0
def ix_neg_int(x, w): return np.sum(np.sin(x[-1]) * w) + x[-2, -1] ** 2
def ix_slice(x, w): return np.sum(np.sin(x[1:3]) * w)
def ix_col(x, w): return np.sum(np.sin(x[:, 1]) * w)
def ix_rev(x, w): return np.sum(np.sin(x[::-1]) * w)
def ix_negstep(x, w): return np.sum(np.sin(x[1:, ::-2]) * w)
def ix_none(x, w): return np.sum(np.sin(x[None, :, 1]) * w)
def ix_ellipsis(x, w): return np.sum(np.sin(x[..., 0]) * w) + np.sum(x[..., -1] ** 2)
def ix_3d(x, w): return np.sum(np.sin(x[1, ::-1, None, 1:3]) * w) + np.sum(x[..., 1] ** 2)
def ix_list(x, w): return np.sum(np.sin(x[[0, 2, 0]]) * w)
def ix_twice(x): return np.sum(x[0] * x[1] + x[:, 0] @ x[:, 1]) + x[0, 0] * x[0, 0]
def ix_rows(x, i, w): return np.sum(np.sin(x[i]) * w)
def ix_cols(x, i, w): return np.sum(np.sin(x[:, i]) * w)
def ix_pair(x, i, j, w): return np.sum(np.sin(x[i, j]) * w)
def ix_mixed(x, i, w): return np.sum(np.sin(x[1:, i]) * w)
def ix_mask(x, m, w): return np.sum(np.sin(x[m]) * w)
def ix_mask_self(x): return np.sum(np.sin(x[x > 0]) * 2.0) + np.sum(x[x < 0] ** 2)
def rows_then_sum(x, i): return np.sum(x[i])
def ix_take(x, i, w): return np.sum(np.sin(np.take(x, i, axis=1)) * w)


def _ix(f, shape, index, *extra):
    """A case of ``f(x, *extra, w)``, ``w`` weights shaped like ``x[index]`` (index on NumPy)."""
    def make(rng):
        x = _away(rng, shape)
        ex = tuple(e(rng, x) if callable(e) else e for e in extra)
        return (x, *ex, _w(rng, index(x, *ex)))
    return Case(f"{f.__name__}-{shape}", f, make)


def _mask(rng, x):
    return rng.normal(size=x.shape) > 0


REPEATED = np.array([2, 0, 2, 2, 1])
INDEX_CASES = [
    _ix(ix_int, (3, 4), lambda x: x[1]),
    _ix(ix_neg_int, (3, 4), lambda x: x[-1]),
    _ix(ix_slice, (3, 4), lambda x: x[1:3]),
    _ix(ix_col, (3, 4), lambda x: x[:, 1]),
    _ix(ix_rev, (3, 4), lambda x: x[::-1]),
    _ix(ix_negstep, (3, 4), lambda x: x[1:, ::-2]),
    _ix(ix_negstep, (5, 7), lambda x: x[1:, ::-2]),
    _ix(ix_none, (3, 4), lambda x: x[None, :, 1]),
    _ix(ix_ellipsis, (2, 3, 4), lambda x: x[..., 0]),
    _ix(ix_3d, (2, 3, 4), lambda x: x[1, ::-1, None, 1:3]),
    _ix(ix_list, (3, 4), lambda x: x[[0, 2, 0]]),
    Case("ix_twice", ix_twice, lambda rng: (rng.normal(size=(3, 4)),)),
    _ix(ix_rows, (3, 4), lambda x, i: x[i], REPEATED),
    _ix(ix_rows, (3,), lambda x, i: x[i], REPEATED),
    _ix(ix_rows, (3, 2, 2), lambda x, i: x[i], np.array([[0, 1], [1, 1]])),
    _ix(ix_cols, (3, 4), lambda x, i: x[:, i], np.array([3, 3, 0, 1, 3])),
    _ix(ix_pair, (3, 4), lambda x, i, j: x[i, j], np.array([0, 2, 0, 0]), np.array([1, 1, 3, 1])),
    _ix(ix_mixed, (3, 4), lambda x, i: x[1:, i], np.array([0, 2, 2])),
    _ix(ix_mask, (3, 4), lambda x, m: x[m], _mask),
    _ix(ix_mask, (2, 3, 4), lambda x, m: x[m], _mask),
    _ix(ix_take, (3, 4), lambda x, i: np.take(x, i, axis=1), np.array([3, 0, 3, 3])),
    Case("ix_mask_self", ix_mask_self, lambda rng: (_away(rng, (3, 4)),)),
    Case("rows_then_sum", rows_then_sum, lambda rng: (rng.normal(size=(3, 4)), np.array([1, 1, 1]))),
    Case("ix_rows-f32", ix_rows, lambda rng: as_f32((rng.normal(size=(6, 5)), np.array([5, 0, 5, 5, 2]),
                                                     rng.normal(size=(5, 5)))), **F32_TOL),
]


# ---------------------------------------------------------------------------------------------
# Shape operations

def reshape_(x, w): return np.sum(np.sin(np.reshape(x, (6, 4))) * w)
def reshape_neg(x, w): return np.sum(np.sin(x.reshape(4, -1)) * w)
def transpose_(x, w): return np.sum(np.sin(np.transpose(x)) * w)
def transpose_axes(x, w): return np.sum(np.sin(np.transpose(x, (1, 2, 0))) * w)
def swapaxes_(x, w): return np.sum(np.sin(np.swapaxes(x, 0, 2)) * w)
def moveaxis_(x, w): return np.sum(np.sin(np.moveaxis(x, 0, -1)) * w)
def expand_(x, w): return np.sum(np.sin(np.expand_dims(x, 1)) * w)
def squeeze_all(x, w): return np.sum(np.sin(np.squeeze(x)) * w)
def squeeze_axis(x, w): return np.sum(np.sin(np.squeeze(x, axis=0)) * w)
def broadcast_to_(x, w): return np.sum(np.sin(np.broadcast_to(x, (2, 3, 4))) * w)
def ravel_(x, w): return np.sum(np.sin(np.ravel(x)) * w)
def flip_(x, axis, w): return np.sum(np.sin(np.flip(x, axis)) * w)
def roll_(x, shift, axis, w): return np.sum(np.sin(np.roll(x, shift, axis)) * w)
def pad_(x, width, w): return np.sum(np.sin(np.pad(x, width)) * w)
def pad_mode(x, width, mode, w): return np.sum(np.sin(np.pad(x, width, mode=mode)) * w)
def tile_(x, reps, w): return np.sum(np.sin(np.tile(x, reps)) * w)
def repeat_(x, r, axis, w): return np.sum(np.sin(np.repeat(x, r, axis)) * w)
def concat_(a, b, axis, w): return np.sum(np.sin(np.concatenate([a, b, a], axis=axis)) * w)
def stack_(a, b, axis, w): return np.sum(np.sin(np.stack([a, b, a], axis=axis)) * w)
def hstack_(a, b, w): return np.sum(np.sin(np.hstack([a, b])) * w)
def vstack_(a, b, w): return np.sum(np.sin(np.vstack([a, b])) * w)
def stack_list(ws, w): return np.sum(np.sin(np.stack(ws, axis=1)) * w)


def split_(x, w):
    a, b, c = np.split(x, 3, axis=1)
    return np.sum(np.tanh(a) * knetc.sigm(b) * w + c ** 2)


def split_points(x, w):
    a, b, c = np.split(x, [1, 3])
    return np.sum(np.sin(c) * w) + np.sum(a ** 2)    # b reaches no loss: a zero gradient


def array_split_(x):
    p = np.array_split(x, 3, axis=-1)
    return np.sum(p[1] * p[2]) + np.sum(p[0] ** 2)


def _shape(f, shape, op, *extra, argnums=0, name=""):
    """``f(x, *extra, w)`` with ``w`` weights shaped like ``op(x, *extra)`` (NumPy)."""
    def make(rng):
        x = rng.normal(size=shape)
        return (x, *extra, _w(rng, op(x, *extra)))
    return Case(f"{f.__name__}-{shape}{name}", f, make, argnums)


def _two(f, sa, sb, op, *extra, name=""):
    def make(rng):
        a, b = rng.normal(size=sa), rng.normal(size=sb)
        return (a, b, *extra, _w(rng, op(a, b, *extra)))
    return Case(f"{f.__name__}-{sa}-{sb}{name}", f, make, (0, 1))


SHAPE_CASES = [
    _shape(reshape_, (2, 3, 4), lambda x: np.reshape(x, (6, 4))),
    _shape(reshape_neg, (2, 3, 4), lambda x: x.reshape(4, -1)),
    _shape(transpose_, (2, 3, 4), np.transpose),
    _shape(transpose_, (3, 4), np.transpose),
    _shape(transpose_axes, (2, 3, 4), lambda x: np.transpose(x, (1, 2, 0))),
    _shape(swapaxes_, (2, 3, 4), lambda x: np.swapaxes(x, 0, 2)),
    _shape(moveaxis_, (2, 3, 4), lambda x: np.moveaxis(x, 0, -1)),
    _shape(expand_, (3, 4), lambda x: np.expand_dims(x, 1)),
    _shape(squeeze_all, (1, 3, 1, 4), np.squeeze),
    _shape(squeeze_axis, (1, 3, 1, 4), lambda x: np.squeeze(x, axis=0)),
    _shape(broadcast_to_, (3, 1), lambda x: np.broadcast_to(x, (2, 3, 4))),
    _shape(broadcast_to_, (4,), lambda x: np.broadcast_to(x, (2, 3, 4))),
    _shape(broadcast_to_, (), lambda x: np.broadcast_to(x, (2, 3, 4))),
    _shape(ravel_, (2, 3, 4), np.ravel),
    *[_shape(flip_, s, np.flip, a, name=f"-{a}") for s in [(5,), (2, 3, 4)] for a in [None, 0, -1]],
    _shape(flip_, (2, 3, 4), np.flip, (0, -1), name="-(0, -1)"),
    *[_shape(roll_, s, np.roll, sh, a, name=f"-{sh}-{a}") for s in [(5,), (2, 3, 4)]
      for sh, a in [(1, None), (-2, 0), (7, -1)]],
    _shape(roll_, (2, 3, 4), np.roll, (1, -2), (0, 2), name="-several"),
    *[_shape(pad_, s, np.pad, wd, name=f"-{wd}") for s in [(4,), (3, 4)] for wd in [1, (1, 2), 0]],
    _shape(pad_, (2, 3, 2), np.pad, ((0, 1), (1, 1), (2, 0)), name="-per-axis"),
    *[_shape(pad_mode, s, lambda x, wd, m: np.pad(x, wd, mode=m), (2, 3), m, name=f"-{m}")
      for s in [(4,), (3, 4)] for m in ["edge", "reflect", "symmetric", "wrap"]],
    *[_shape(tile_, s, np.tile, r, name=f"-{r}") for s in [(3,), (2, 3)] for r in [2, (2, 1), (2, 1, 2)]],
    *[_shape(repeat_, s, np.repeat, r, a, name=f"-{r}-{a}") for s in [(5,), (2, 3, 4)]
      for r, a in [(3, None), (2, 0), (2, -1)]],
    _shape(repeat_, (2, 3, 4), np.repeat, [1, 0, 3], 1, name="-counts"),
    *[_two(concat_, sa, sb, lambda a, b, ax: np.concatenate([a, b, a], axis=ax), ax, name=f"-{ax}")
      for sa, sb, ax in [((2, 3), (3, 3), 0), ((2, 3), (2, 4), 1), ((2, 3), (2, 5), -1), ((3,), (2,), 0)]],
    *[_two(stack_, (2, 3), (2, 3), lambda a, b, ax: np.stack([a, b, a], axis=ax), ax, name=f"-{ax}")
      for ax in (0, 1, 2, -1)],
    _two(hstack_, (2, 3), (2, 1), lambda a, b: np.hstack([a, b])),
    _two(vstack_, (3,), (3,), lambda a, b: np.vstack([a, b])),
    Case("stack_list", stack_list,
         lambda rng: ([rng.normal(size=4) for _ in range(3)], rng.normal(size=(4, 3)))),
    _shape(split_, (4, 6), lambda x: x[:, :2]),
    _shape(split_points, (4, 6), lambda x: x[3:]),
    Case("array_split", array_split_, lambda rng: (rng.normal(size=(2, 7)),)),
    Case("transpose-f32", transpose_axes,
         lambda rng: as_f32((rng.normal(size=(2, 3, 4)), rng.normal(size=(3, 4, 2)))), **F32_TOL),
    Case("pad-f32", pad_mode, lambda rng: as_f32((rng.normal(size=(3, 4)), (2, 3), "reflect",
                                                  rng.normal(size=(8, 9)))), **F32_TOL),
]


# ---------------------------------------------------------------------------------------------
# Knet's layer functions

def softmax_w(x, axis, w): return np.sum(softmax(x, axis=axis) * w)
def logp_w(x, axis, w): return np.sum(logp(x, axis=axis) * w)
def mat_w(x, w): return np.sum(np.sin(mat(x)) * w)
def dropout0(x, w): return np.sum(np.sin(dropout(x, 0.0)) * w)
def bn_eval(x, p, m, w): return np.sum(np.sin(batchnorm(x, m, p, training=False)) * w)
def bn_batch(x, p, w): return np.sum(np.sin(batchnorm(x, None, p)) * w)


def _bn_eval_args(rng, shape):
    C = shape[1]
    x = rng.normal(size=shape) * 2 + 0.5
    p = np.concatenate([rng.normal(size=C) + 1, rng.normal(size=C)])
    m = bnmoments(mean=rng.normal(size=C), var=np.abs(rng.normal(size=C)) + 0.5)
    return x, p, m, rng.normal(size=shape)


def _bn_eval_to_gpu(args):
    """knetc.gpu moves arrays, not batchnorm's moments object: build one on the device."""
    cupy = cupy_module()
    x, p, m, w = args
    return cupy.asarray(x), cupy.asarray(p), \
        bnmoments(mean=cupy.asarray(m.mean), var=cupy.asarray(m.var)), cupy.asarray(w)


ACTIVATIONS = [R.relu_, R.sigm_, R.elu_, R.elu_alpha, R.elu_alpha_kw, R.selu_]

KNET_CASES = [Case(f"{f.__name__}-{s}", f, lambda rng, s=s: (_away(rng, s),))
              for f in ACTIVATIONS for s in [(5,), (3, 4)]] + \
    [Case(f"{f.__name__}-f32", f, lambda rng: as_f32((_away(rng, (3, 4)),)), **F32_TOL)
     for f in ACTIVATIONS] + \
    [_shape(f, (2, 3, 4), lambda x, a: x, a, name=f"-{a}")
     for f in (softmax_w, logp_w) for a in (-1, 0, 1)] + \
    [Case(f"{f.__name__}-default", f, lambda rng: (rng.normal(size=(2, 3)),))
     for f in (R.softmax_default, R.logp_default)] + \
    [Case(f"nll-average-{a}", R.nll_,
          lambda rng, a=a: (rng.normal(size=(5, 3)), np.array([0, 2, 1, 2, 2]), a))
     for a in (True, False)] + \
    [Case("nll_default", R.nll_default, lambda rng: (rng.normal(size=(3, 4)), np.array([1, 0, 3]))),
     Case("nll_positional", R.nll_positional, lambda rng: (rng.normal(size=(3, 4)), np.array([1, 0, 3]))),
     Case("nll_model", R.nll_model, lambda rng: (rng.normal(size=(5, 4)), rng.normal(size=(4, 3)),
                                                 np.array([0, 1, 2, 2, 0])), (0, 1)),
     Case("knet_mlp", R.knet_mlp, lambda rng: ([rng.normal(size=s) for s in [(5, 4), (5, 1), (3, 5), (3, 1)]],
                                               rng.normal(size=(4, 6)), np.array([0, 1, 2, 2, 1, 0]))),
     Case("nll-f32", R.nll_model, lambda rng: as_f32((rng.normal(size=(5, 4)), rng.normal(size=(4, 3)),
                                                      np.array([0, 1, 2, 2, 0]))), (0, 1), **F32_TOL)] + \
    [_shape(mat_w, s, lambda x: mat(x)) for s in [(2, 3, 4), (2, 12), (2, 3, 2, 2)]] + \
    [_shape(dropout0, (3, 4), lambda x: x)] + \
    [Case(f"bn_eval-{s}", bn_eval, lambda rng, s=s: _bn_eval_args(rng, s), (0, 1), to_gpu=_bn_eval_to_gpu)
     for s in [(7, 3), (3, 2, 3, 2)]] + \
    [Case(f"bn_batch-{s}", bn_batch, lambda rng, s=s: (rng.normal(size=s) * 2 + 0.5,
                                                       np.concatenate([rng.normal(size=s[1]) + 1,
                                                                       rng.normal(size=s[1])]),
                                                       rng.normal(size=s)), (0, 1))
     for s in [(7, 3), (3, 2, 3, 2)]]


# ---------------------------------------------------------------------------------------------
# Second derivatives: the gradient of a function of a gradient (the generated code differentiated)

_D_TANH, _D_SIGM, _D_PROD = knetc.grad(R.tanh_), knetc.grad(R.sigm_), knetc.grad(R.m_prod)
_D_MATMUL, _D_LSE = knetc.grad(R.matmul_op), knetc.grad(R.lse_default)
_D_IX = knetc.grad(ix_rows)


def so_tanh(x): return np.sum(np.sin(_D_TANH(x)))
def so_sigm(x): return np.sum(np.sin(_D_SIGM(x)))
def so_prod(x): return np.sum(np.sin(_D_PROD(x)))
def so_matmul(a, b): return np.sum(np.sin(_D_MATMUL(a, b)))
def so_lse(x): return np.sum(np.sin(_D_LSE(x)))
def so_ix(x, i, w): return np.sum(np.sin(_D_IX(x, i, w)))


SECOND_ORDER_CASES = [
    Case("so_tanh", so_tanh, lambda rng: (rng.normal(size=(3, 4)),), rtol=1e-8),
    Case("so_sigm", so_sigm, lambda rng: (rng.normal(size=(3, 4)),), rtol=1e-8),
    Case("so_prod", so_prod, lambda rng: (_signed(rng, (3, 4)),), rtol=1e-8),
    Case("so_matmul", so_matmul, lambda rng: (rng.normal(size=(3, 4)), rng.normal(size=(4, 5))), (0, 1),
         rtol=1e-8),
    Case("so_lse", so_lse, lambda rng: (rng.normal(size=(3, 4)),), rtol=1e-8),
    Case("so_ix", so_ix, lambda rng: (rng.normal(size=(3, 4)), REPEATED, rng.normal(size=(5, 4))), rtol=1e-8),
]


FAMILIES = {"unary": UNARY_CASES, "binary": BINARY_CASES, "select": SELECT_CASES,
            "reduction": REDUCTION_CASES, "product": PRODUCT_CASES, "index": INDEX_CASES,
            "shape": SHAPE_CASES, "knet": KNET_CASES, "second_order": SECOND_ORDER_CASES}
ALL_CASES = [c for cases in FAMILIES.values() for c in cases]


def _params(cases):
    return [pytest.param(c, id=c.id) for c in cases]


@pytest.mark.parametrize("case", _params(UNARY_CASES))
def test_unary(cp, case):
    compare_case(case, cp)


@pytest.mark.parametrize("case", _params(BINARY_CASES))
def test_binary(cp, case):
    compare_case(case, cp)


@pytest.mark.parametrize("case", _params(SELECT_CASES))
def test_where_clip_pow(cp, case):
    compare_case(case, cp)


@pytest.mark.parametrize("case", _params(REDUCTION_CASES))
def test_reductions(cp, case):
    compare_case(case, cp)


@pytest.mark.parametrize("case", _params(PRODUCT_CASES))
def test_products(cp, case):
    compare_case(case, cp)


@pytest.mark.parametrize("case", _params(INDEX_CASES))
def test_indexing(cp, case):
    compare_case(case, cp)


@pytest.mark.parametrize("case", _params(SHAPE_CASES))
def test_shape_ops(cp, case):
    compare_case(case, cp)


@pytest.mark.parametrize("case", _params(KNET_CASES))
def test_knet_layers(cp, case):
    compare_case(case, cp)


@pytest.mark.parametrize("case", _params(SECOND_ORDER_CASES))
def test_second_order(cp, case):
    compare_case(case, cp)


def test_scatter_add_accumulates_on_the_gpu(cp):
    """A row gathered three times gets three times the gradient (cupy's add.at, not a plain
    assignment, which would keep one contribution)."""
    x = cp.asarray(np.arange(12.0).reshape(3, 4))
    g = knetc.grad(rows_then_sum)(x, cp.asarray(np.array([1, 1, 1])))
    assert isinstance(g, cp.ndarray)
    np.testing.assert_array_equal(cp.asnumpy(g), [[0] * 4, [3] * 4, [0] * 4])
    w = cp.asarray(np.ones((5, 4)))
    g = knetc.grad(ix_rows)(cp.zeros((3, 4)), cp.asarray(REPEATED), w)   # sin'(0) = 1
    np.testing.assert_array_equal(cp.asnumpy(g), [[1] * 4, [1] * 4, [3] * 4])


def const_weighted(x): return np.sum(np.sin(x) * np.arange(12.0).reshape(3, 4))


def numpy_constant_case():
    """A loss whose weights NumPy builds from constants alone: on the host, once, while the
    arguments are on the device."""
    return Case("numpy-constant", const_weighted, lambda rng: (rng.normal(size=(3, 4)),))


def test_numpy_constant_in_a_gpu_loss_is_right_or_refused(cp):
    """Never a wrong answer: either knetc moves the constant to the device (the right gradient)
    or it refuses with a KnetcError naming the line. Any other exception (CuPy's TypeError on a
    NumPy operand) means the user gets no knetc message."""
    case = numpy_constant_case()
    args = case.args()
    want = numpy_half(case.f, args)
    try:
        got = gpu_half(case.f, args)
    except knetc.KnetcError:
        return
    np.testing.assert_allclose(float(got[1]), float(want[1]), rtol=1e-9)
    np.testing.assert_allclose(cp.asnumpy(got[0]), want[0], rtol=1e-9, atol=1e-11)
