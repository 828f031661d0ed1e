"""Functions whose results carry no gradient (HIPS autograd's explicit list, for NumPy).

A function belongs here only if its derivative is zero wherever it exists: comparisons and
logical operations, integer-valued results (argmax, floor, sign, round), shape queries, constant
constructors. tests/test_rules_numpy_b.py checks the float-valued ones numerically. np.sort,
np.linspace, np.arange, np.unique, np.bincount and ``%`` have derivative rules instead
(joining.py, contract.py).
"""
import operator

import numpy as np

from .registry import nondifferentiable

NONDIFFERENTIABLE = (
    operator.lt, operator.le, operator.gt, operator.ge, operator.eq, operator.ne,
    operator.and_, operator.or_, operator.xor, operator.invert, operator.floordiv,
    np.less, np.less_equal, np.greater, np.greater_equal, np.equal, np.not_equal,
    np.logical_and, np.logical_or, np.logical_not, np.logical_xor, np.isnan, np.isinf,
    np.isfinite, np.sign, np.floor, np.ceil, np.round, np.rint, np.trunc, np.floor_divide,
    np.zeros_like, np.ones_like, np.empty_like, np.argmax, np.argmin, np.argsort,
    np.all, np.any, np.shape, np.size, np.ndim, np.nonzero, np.count_nonzero, np.array_equal,
    np.allclose, np.isclose, np.searchsorted,
    np.zeros, np.ones, np.eye,
)
nondifferentiable(*NONDIFFERENTIABLE)

# Random draws run every time (impure). Some results do depend on float arguments (normal's loc
# and scale, uniform's low and high: a reparameterization; the entries choice and permutation
# pick), which this declaration ignores: a template rule cannot be marked impure yet.
_rng = np.random
RANDOM = (
    _rng.rand, _rng.randn, _rng.random, _rng.uniform, _rng.normal, _rng.randint,
    _rng.permutation, _rng.choice, _rng.binomial, _rng.standard_normal, _rng.random_sample,
)
nondifferentiable(*RANDOM, impure=True)
