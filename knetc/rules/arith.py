"""Rules for arithmetic: Python operators, NumPy's elementwise functions, matrix products."""
import operator

import numpy as np

from ..runtime import prims
from .registry import adjoint, static, unbroadcast


@adjoint(operator.add, np.add)
def add(y, a, b):
    d[a] = unbroadcast(d[y], a)
    d[b] = unbroadcast(d[y], b)


@adjoint(operator.sub, np.subtract)
def sub(y, a, b):
    d[a] = unbroadcast(d[y], a)
    d[b] = unbroadcast(-d[y], b)


@adjoint(operator.mul, np.multiply)
def mul(y, a, b):
    d[a] = unbroadcast(d[y] * b, a)
    d[b] = unbroadcast(d[y] * a, b)


@adjoint(operator.truediv, np.divide)
def div(y, a, b):
    d[a] = unbroadcast(d[y] / b, a)
    d[b] = unbroadcast(-d[y] * y / b, b)


@adjoint(operator.pow, np.power)
def pow_(y, a, b):
    # As JAX: x ** 0 has derivative 0 everywhere (no 0 * 0 ** -1), and the derivative wrt the
    # exponent takes log(0) as 0 (0 ** y is 0 for y > 0, whatever y does).
    if isinstance(b, (int, float)) and b == 0:
        d[a] = np.zeros(a.shape, a.dtype)
    elif isinstance(b, (int, float)) and b == 2:
        d[a] = unbroadcast(d[y] * (2 * a), a)
    elif isinstance(b, (int, float)):
        d[a] = unbroadcast(d[y] * (b * a ** static(b - 1)), a)
    else:
        d[a] = unbroadcast(d[y] * b * a ** (b - 1 + (b == 0)), a)   # b == 0: no 0 ** -1
    if isinstance(a, (int, float)):  # a constant base: log(a) as a literal (keeps float32)
        d[b] = unbroadcast(d[y] * y * static(_log_base(a)), b)
    else:
        d[b] = unbroadcast(d[y] * y * np.log(np.where(a == 0, 1, a)), b)


def _log_base(a) -> float:
    """log of a constant base, 0 for a zero base (as JAX: 0 ** y does not move with y > 0)."""
    return float(np.log(a)) if a > 0 else 0.0 if a == 0 else float("nan")


@adjoint(operator.neg, np.negative)
def neg(y, x):
    d[x] = -d[y]


@adjoint(operator.matmul, np.matmul)
def matmul(y, a, b):
    if a.ndim == 2 and b.ndim == 2:
        d[a] = d[y] @ b.T
        d[b] = a.T @ d[y]
    elif a.ndim == 1 and b.ndim == 1:
        d[a] = d[y] * b
        d[b] = d[y] * a
    elif a.ndim == 1 and b.ndim == 2:
        d[a] = b @ d[y]
        d[b] = np.outer(a, d[y])
    elif a.ndim == 2 and b.ndim == 1:
        d[a] = np.outer(d[y], b)
        d[b] = a.T @ d[y]
    elif b.ndim == 1:  # a stack of matrix-vector products
        d[a] = np.expand_dims(d[y], -1) * b
        d[b] = np.tensordot(d[y], a, static(a.ndim - 1))
    elif a.ndim == 1:  # a vector times a stack of matrices
        d[a] = np.tensordot(b, d[y], static(([*range(b.ndim - 2), b.ndim - 1], [*range(y.ndim)])))
        d[b] = np.expand_dims(a, -1) * np.expand_dims(d[y], -2)
    else:  # batched matrix products broadcast over the leading axes
        d[a] = unbroadcast(d[y] @ np.swapaxes(b, -1, -2), a)
        d[b] = unbroadcast(np.swapaxes(a, -1, -2) @ d[y], b)


@adjoint(prims.affine)
def affine(y, a, b, c):
    if a.ndim == 2:
        d[a] = d[y] @ b.T
        d[b] = a.T @ d[y]
    else:
        d[a] = b @ d[y]
        d[b] = np.outer(a, d[y])
    d[c] = unbroadcast(d[y], c)


@adjoint(np.dot)
def dot(y, a, b):
    if a.ndim >= 2 and b.ndim >= 3:  # not matmul: y's axes are a[:-1] + b[:-2] + b[-1:]
        d[a] = np.tensordot(d[y], b, static(([*range(a.ndim - 1, y.ndim)],
                                             [*range(b.ndim - 2), b.ndim - 1])))
        d[b] = np.moveaxis(np.tensordot(a, d[y], static(([*range(a.ndim - 1)],) * 2)), 0, -2)
    elif b.ndim == 1 and a.ndim >= 1:
        d[a] = np.expand_dims(d[y], -1) * b
        d[b] = np.tensordot(d[y], a, static(a.ndim - 1))
    elif a.ndim == 1 and b.ndim >= 2:
        d[a] = np.tensordot(b, d[y], static(([*range(b.ndim - 2), b.ndim - 1], [*range(y.ndim)])))
        d[b] = np.expand_dims(a, -1) * np.expand_dims(d[y], -2)
    elif a.ndim == 0 or b.ndim == 0:  # dot with a scalar multiplies
        d[a] = unbroadcast(d[y] * b, a)
        d[b] = unbroadcast(d[y] * a, b)
    else:  # a is N-D, b a matrix: as matmul
        d[a] = d[y] @ b.T
        d[b] = unbroadcast(np.swapaxes(a, -1, -2) @ d[y], b)


@adjoint(np.outer)
def outer(y, a, b):
    d[a] = np.reshape(d[y] @ np.ravel(b), a.shape)
    d[b] = np.reshape(np.ravel(a) @ d[y], b.shape)


@adjoint(np.tensordot)
def tensordot(y, a, b, axes=2):
    d[a] = np.transpose(np.tensordot(d[y], b, static(_tensordot_back(a, b, axes)[0])),
                        static(_tensordot_back(a, b, axes)[1]))
    d[b] = np.transpose(np.tensordot(a, d[y], static(_tensordot_back(a, b, axes)[2])),
                        static(_tensordot_back(a, b, axes)[3]))


def _tensordot_back(a, b, axes):
    """(axes, permutation) of the tensordots giving d[a] and d[b]: y's axes are a's free axes
    then b's; contracting y with b (a with y) leaves the contracted axes in sorted order."""
    na, nb = np.ndim(getattr(a, "val", a)), np.ndim(getattr(b, "val", b))
    if isinstance(axes, int):
        ax_a, ax_b = list(range(na - axes, na)), list(range(axes))
    else:
        ax_a, ax_b = ([x] if isinstance(x, int) else list(x) for x in axes)
    ax_a, ax_b = [i % na for i in ax_a], [i % nb for i in ax_b]
    free_a = [i for i in range(na) if i not in ax_a]
    free_b = [i for i in range(nb) if i not in ax_b]
    ny = len(free_a) + len(free_b)
    src_a = free_a + [ax_a[ax_b.index(k)] for k in sorted(ax_b)]
    src_b = [ax_b[ax_a.index(k)] for k in sorted(ax_a)] + free_b
    return ((list(range(len(free_a), ny)), free_b), tuple(src_a.index(i) for i in range(na)),
            (free_a, list(range(len(free_a)))), tuple(src_b.index(i) for i in range(nb)))


@adjoint(np.exp)
def exp(y, x):
    d[x] = d[y] * y


@adjoint(np.log)
def log(y, x):
    d[x] = d[y] / x


@adjoint(np.log1p)
def log1p(y, x):
    d[x] = d[y] / (1 + x)


@adjoint(np.expm1)
def expm1(y, x):
    d[x] = d[y] * (y + 1)


@adjoint(np.sqrt)
def sqrt(y, x):
    d[x] = d[y] / (2 * y)


@adjoint(np.square)
def square(y, x):
    d[x] = d[y] * (2 * x)


@adjoint(np.abs, np.absolute)
def abs_(y, x):
    d[x] = d[y] * np.sign(x)


@adjoint(np.sin)
def sin(y, x):
    d[x] = d[y] * np.cos(x)


@adjoint(np.cos)
def cos(y, x):
    d[x] = -d[y] * np.sin(x)


@adjoint(np.tan)
def tan(y, x):
    d[x] = d[y] * (1 + y * y)


@adjoint(np.tanh)
def tanh(y, x):
    d[x] = d[y] * (1 - y * y)


@adjoint(np.sinh)
def sinh(y, x):
    d[x] = d[y] * np.cosh(x)


@adjoint(np.cosh)
def cosh(y, x):
    d[x] = d[y] * np.sinh(x)


@adjoint(np.arctan)
def arctan(y, x):
    d[x] = d[y] / (1 + x * x)


@adjoint(np.maximum)
def maximum(y, a, b):
    d[a] = unbroadcast(d[y] * (a >= b), a)
    d[b] = unbroadcast(d[y] * (a < b), b)


@adjoint(np.minimum)
def minimum(y, a, b):
    d[a] = unbroadcast(d[y] * (a <= b), a)
    d[b] = unbroadcast(d[y] * (a > b), b)


@adjoint(np.where)
def where(y, condition, x, y_):
    d[x] = unbroadcast(np.where(condition, d[y], 0), x)
    d[y_] = unbroadcast(np.where(condition, 0, d[y]), y_)


@adjoint(np.clip)
def clip(y, a, a_min=None, a_max=None):
    if a_min is None:
        d[a] = unbroadcast(d[y] * (a <= a_max), a)
    elif a_max is None:
        d[a] = unbroadcast(d[y] * (a >= a_min), a)
    else:
        d[a] = unbroadcast(d[y] * ((a >= a_min) & (a <= a_max)), a)
    d[a_min] = unbroadcast(d[y] * (a < a_min), a_min)  # array bounds have gradients too
    d[a_max] = unbroadcast(d[y] * (a > a_max), a_max)


@adjoint(float)
def float_(y, x):
    d[x] = d[y]


@adjoint(np.copy)
def copy(y, a):
    d[a] = d[y]
