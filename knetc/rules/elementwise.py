"""Rules for more of NumPy's elementwise functions: logarithms and powers of 2 and 10, inverse
trigonometric and hyperbolic functions, sinc, cbrt, positive, degree/radian conversions, and the
binary logaddexp, arctan2, hypot, fmax/fmin, float_power, fmod, copysign, heaviside; the
two-result divmod and modf; nan_to_num; np.interp.

Conventions at kinks and ties follow JAX: ``fmax``/``fmin`` give a tie to the first argument (as
``np.maximum``/``np.minimum`` do in arith.py) and a NaN operand's gradient to the other one;
``fabs`` has gradient 0 at 0 (as ``np.abs``); ``hypot`` has gradient 0 at (0, 0); ``nan_to_num``
passes the gradient where ``x`` is finite and 0 where it was replaced.

As in JAX: ``fmod`` and ``divmod``'s remainder have derivative 1 wrt ``x1`` and ``-trunc(x1 / x2)``
(``-floor``) wrt ``x2``, and ``divmod``'s quotient and ``modf``'s integral part have none;
``copysign(x1, x2)`` has derivative ``±sign(x1)`` wrt ``x1`` (0 at 0) and none wrt ``x2``.
``heaviside(x1, x2)`` is a step in ``x1`` (no derivative wrt it), and equals ``x2`` where ``x1 == 0``:
there its derivative wrt ``x2`` is 1 (JAX's rule), elsewhere 0. ``float_power`` computes in float64
whatever its inputs; the gradients are cast back to each input's dtype.

``np.interp(x, xp, fp, left, right)`` is differentiable wrt ``x``, ``fp``, ``left`` and ``right``;
``xp`` must be a constant (a traced ``xp`` is refused), ``period`` is refused. At a knot ``xp[i]``
the derivative wrt ``x`` is the slope of the segment to its right (the last segment at ``xp[-1]``),
outside ``[xp[0], xp[-1]]`` it is 0, as in JAX.
"""
import numpy as np

from ..compiler.tape import Sym, syms_in
from ..runtime.backend import array_module
from .joining import scatter_take
from .linalg import or_zeros
from .registry import adjoint, nondifferentiable, static, unbroadcast
from .support import refuse, shape_of, sum_to_shape

_LN2 = float(np.log(2.0))
_LN10 = float(np.log(10.0))
_PI2_3 = float(np.pi ** 2 / 3)       # sinc'(x) = -pi^2 x / 3 + pi^4 x^3 / 30 - ... near 0
_PI4_30 = float(np.pi ** 4 / 30)
_RAD = float(np.pi / 180)
_DEG = float(180 / np.pi)


def _dtype(v):
    """The dtype of a traced value or a constant (a Python float: float64)."""
    return v.dtype if isinstance(v, Sym) else np.asarray(v).dtype


def _is_f64(v) -> bool:
    return _dtype(v) == np.float64


def _is_const_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


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


@adjoint(np.positive)
def positive(y, x):
    d[x] = d[y]


@adjoint(np.deg2rad, np.radians)
def deg2rad(y, x):
    d[x] = d[y] * static(_RAD)


@adjoint(np.rad2deg, np.degrees)
def rad2deg(y, x):
    d[x] = d[y] * static(_DEG)


@adjoint(np.modf, outputs=2)   # (x - trunc(x), trunc(x)): the integral part has no gradient
def modf(y, x):
    d[x] = or_zeros(d[y][0], y[0])


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


@adjoint(np.float_power)
def float_power(y, x1, x2):
    # y = x1 ** x2 in float64: as np.power's rule, cast back to each input's dtype
    if _is_const_number(x2) and x2 == 0:
        pass    # y = 1: no gradient (x1 ** -1 would be inf at 0)
    elif _is_const_number(x2) and _is_f64(x1):
        d[x1] = unbroadcast(d[y] * (x2 * np.float_power(x1, static(x2 - 1))), x1)
    elif _is_const_number(x2):
        d[x1] = unbroadcast(d[y] * (x2 * np.float_power(x1, static(x2 - 1))), x1).astype(x1.dtype)
    elif _is_f64(x1):
        d[x1] = unbroadcast(d[y] * x2 * np.float_power(x1, x2 - 1), x1)
    else:
        d[x1] = unbroadcast(d[y] * x2 * np.float_power(x1, x2 - 1), x1).astype(x1.dtype)
    if _is_const_number(x1):   # a constant base: log(x1) as a literal
        d[x2] = unbroadcast(d[y] * y * static(float(np.log(x1))), x2).astype(x2.dtype)
    elif _is_f64(x2):
        d[x2] = unbroadcast(d[y] * y * np.log(x1), x2)
    else:
        d[x2] = unbroadcast(d[y] * y * np.log(x1), x2).astype(x2.dtype)


@adjoint(np.fmod)
def fmod(y, x1, x2):
    # y = x1 - x2 * trunc(x1 / x2) (JAX's lax.rem rule)
    d[x1] = unbroadcast(d[y], x1)
    d[x2] = unbroadcast(-d[y] * np.trunc(x1 / x2), x2)


@adjoint(np.divmod, outputs=2)
def divmod_(y, x1, x2):
    # (floor(x1 / x2), x1 - x2 * floor(x1 / x2)): only the remainder has a gradient
    g = or_zeros(d[y][1], y[1])
    if shape_of(x1) == shape_of(y[1]):
        d[x1] = g
    else:
        d[x1] = sum_to_shape(g, static(shape_of(x1)))
    if shape_of(x2) == shape_of(y[1]):
        d[x2] = -g * y[0]
    else:
        d[x2] = sum_to_shape(-g * y[0], static(shape_of(x2)))


@adjoint(np.copysign)
def copysign(y, x1, x2):
    # |x1| with x2's sign: ±sign(x1), the sign of y where x1 != 0 (0 at x1 = 0); none wrt x2
    d[x1] = unbroadcast(d[y] * np.sign(x1) * np.sign(y), x1)


@adjoint(np.heaviside)
def heaviside(y, x1, x2):
    # a step in x1 (no gradient); x2 is the value where x1 == 0
    d[x2] = unbroadcast(d[y] * (x1 == 0), x2)


# -- np.interp -----------------------------------------------------------------------------------

def _interp_form(xp, period) -> bool:
    """np.interp's forms with a rule (decided when code is generated; refuses the others)."""
    if period is not None:
        refuse("np.interp(..., period=...) has no gradient rule; map x into one period first "
               "(np.mod) and interpolate without period")
    if any(s.diff for s in syms_in(xp)):
        refuse("np.interp is differentiable wrt x, fp, left and right, not wrt the knots xp: "
               "pass a constant xp (or knetc.getval(xp))")
    return True


def _interp_lower(x, xp):
    """The index i of the segment [xp[i], xp[i + 1]] that np.interp's value at x comes from
    (JAX's: the segment right of a knot, the first one below xp[0], the last one from xp[-1])."""
    m = array_module(x, xp)
    xp = m.asarray(xp)
    return m.clip(m.searchsorted(xp, x, side="right"), 1, xp.shape[0] - 1) - 1


nondifferentiable(_interp_lower)   # integer positions


@adjoint(np.interp)
def interp(y, x, xp, fp, left=None, right=None, period=None):
    if _interp_form(xp, period):
        i = _interp_lower(x, xp)
        x0 = np.take(xp, i)
        dx = np.take(xp, i + 1) - x0
        flat = dx == 0                      # a repeated knot: the right value, slope 0
        sdx = np.where(flat, 1, dx)
        t = np.where(flat, 1, (x - x0) / sdx)
        below = x < np.take(xp, 0)
        above = x > np.take(xp, -1)
        inside = ~(below | above)
        slope = np.where(flat, 0, (np.take(fp, i + 1) - np.take(fp, i)) / sdx)
        if _is_f64(x):
            d[x] = d[y] * np.where(inside, slope, 0)
        else:
            d[x] = (d[y] * np.where(inside, slope, 0)).astype(x.dtype)
        # fp[i] weighs 1 - t, fp[i + 1] t; below xp[0] (above xp[-1]) the value is fp[0]
        # (fp[-1]) unless left (right) is given
        w0 = np.where(below, static(1.0 if left is None else 0.0), np.where(above, 0.0, 1 - t))
        w1 = np.where(above, static(1.0 if right is None else 0.0), np.where(below, 0.0, t))
        if _is_f64(fp):
            d[fp] = (scatter_take(d[y] * w0, i, None, fp.shape)
                     + scatter_take(d[y] * w1, i + 1, None, fp.shape))
        else:
            d[fp] = (scatter_take(d[y] * w0, i, None, fp.shape)
                     + scatter_take(d[y] * w1, i + 1, None, fp.shape)).astype(fp.dtype)
        d[left] = np.sum(d[y] * below)
        d[right] = np.sum(d[y] * above)
