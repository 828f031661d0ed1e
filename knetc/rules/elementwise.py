"""Rules for more of NumPy's elementwise functions: logarithms and powers of 2 and 10, inverse
trigonometric and hyperbolic functions, sinc, cbrt, and the binary logaddexp, arctan2, hypot,
fmax/fmin; nan_to_num.

Conventions at kinks and ties follow JAX: ``fmax``/``fmin`` give a tie to the first argument (as
``np.maximum``/``np.minimum`` do in arith.py) and a NaN operand's gradient to the other one;
``fabs`` has gradient 0 at 0 (as ``np.abs``); ``hypot`` has gradient 0 at (0, 0); ``nan_to_num``
passes the gradient where ``x`` is finite and 0 where it was replaced.
"""
import numpy as np

from .registry import adjoint, static, unbroadcast

_LN2 = float(np.log(2.0))
_LN10 = float(np.log(10.0))
_PI2_3 = float(np.pi ** 2 / 3)       # sinc'(x) = -pi^2 x / 3 + pi^4 x^3 / 30 - ... near 0
_PI4_30 = float(np.pi ** 4 / 30)


# -- one argument --------------------------------------------------------------------------------

@adjoint(np.log2)
def log2(y, x):
    d[x] = d[y] / (x * static(_LN2))


@adjoint(np.log10)
def log10(y, x):
    d[x] = d[y] / (x * static(_LN10))


@adjoint(np.exp2)
def exp2(y, x):
    d[x] = d[y] * y * static(_LN2)


@adjoint(np.arcsin)
def arcsin(y, x):
    d[x] = d[y] / np.sqrt((1 - x) * (1 + x))


@adjoint(np.arccos)
def arccos(y, x):
    d[x] = -d[y] / np.sqrt((1 - x) * (1 + x))


@adjoint(np.arcsinh)
def arcsinh(y, x):
    d[x] = d[y] / np.sqrt(x * x + 1)


@adjoint(np.arccosh)
def arccosh(y, x):
    d[x] = d[y] / np.sqrt((x - 1) * (x + 1))


@adjoint(np.arctanh)
def arctanh(y, x):
    d[x] = d[y] / ((1 - x) * (1 + x))


@adjoint(np.reciprocal)
def reciprocal(y, x):
    d[x] = -d[y] * y * y


@adjoint(np.sinc)
def sinc(y, x):
    # (cos(pi x) - sinc(x)) / x, and its Taylor series near 0 (exact there, to second order too)
    small = np.abs(x) < 1e-3
    d[x] = d[y] * np.where(small, x * (x * x * static(_PI4_30) - static(_PI2_3)),
                           (np.cos(np.pi * x) - y) / np.where(small, 1, x))


@adjoint(np.fabs)
def fabs(y, x):
    d[x] = d[y] * np.sign(x)


@adjoint(np.cbrt)
def cbrt(y, x):
    d[x] = d[y] / (3 * y * y)


# -- two arguments (broadcasting) ----------------------------------------------------------------

@adjoint(np.logaddexp)
def logaddexp(y, x1, x2):
    d[x1] = unbroadcast(d[y] * np.exp(x1 - y), x1)
    d[x2] = unbroadcast(d[y] * np.exp(x2 - y), x2)


@adjoint(np.logaddexp2)
def logaddexp2(y, x1, x2):
    d[x1] = unbroadcast(d[y] * np.exp2(x1 - y), x1)
    d[x2] = unbroadcast(d[y] * np.exp2(x2 - y), x2)


@adjoint(np.arctan2)
def arctan2(y, x1, x2):
    d[x1] = unbroadcast(d[y] * x2 / (x1 * x1 + x2 * x2), x1)
    d[x2] = unbroadcast(-d[y] * x1 / (x1 * x1 + x2 * x2), x2)


@adjoint(np.hypot)
def hypot(y, x1, x2):
    # at (0, 0): gradient 0, as np.abs has at 0
    d[x1] = unbroadcast(d[y] * x1 / np.where(y == 0, 1, y), x1)
    d[x2] = unbroadcast(d[y] * x2 / np.where(y == 0, 1, y), x2)


@adjoint(np.fmax)
def fmax(y, x1, x2):
    # as JAX's where((x1 < x2) | isnan(x1), x2, x1): a tie goes to x1, a NaN's to the other
    d[x1] = unbroadcast(d[y] * ((x1 >= x2) | np.isnan(x2)), x1)
    d[x2] = unbroadcast(d[y] * ((x1 < x2) | np.isnan(x1)), x2)


@adjoint(np.fmin)
def fmin(y, x1, x2):
    d[x1] = unbroadcast(d[y] * ((x1 <= x2) | np.isnan(x2)), x1)
    d[x2] = unbroadcast(d[y] * ((x1 > x2) | np.isnan(x1)), x2)


@adjoint(np.nan_to_num)
def nan_to_num(y, x, copy=True, nan=0.0, posinf=None, neginf=None):
    d[x] = d[y] * np.isfinite(x).astype(x.dtype)
