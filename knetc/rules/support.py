"""Helpers shared by the rule families: static helpers (called when code is generated, on traced
values or constants, in templates' ``static(...)`` and ``if`` tests) and runtime helpers with
rules of their own (so that gradients of gradients work)."""
import numpy as np

from ..errors import NoRuleError
from ..runtime.backend import array_module
from .registry import adjoint

# d[...] is the template language's gradient table (see registry.py), never a Python name.
# ruff: noqa: F821


# ---------------------------------------------------------------------------------------------
# Static helpers: called when code is generated, on traced values (``.val``) or constants.

def shape_of(x) -> tuple:
    return tuple(np.shape(getattr(x, "val", x)))


def ndim_of(x) -> int:
    return len(shape_of(x))


def size_of(x) -> int:
    return int(np.prod(shape_of(x), dtype=np.int64))


def normal_axis(axis, ndim) -> int:
    if not -ndim <= axis < max(ndim, 1):
        raise np.exceptions.AxisError(axis, ndim)
    return axis % max(ndim, 1)


def refuse(message: str):
    """Stop generating code with a NoRuleError, for a form without a gradient rule (called by
    the static helpers that decide a template's ``if`` tests)."""
    raise NoRuleError("knetc: " + message)


def is_int(v) -> bool:
    """A constant integer (not a traced value)."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def sum_to_shape(x, shape):
    """``x`` summed down to ``shape`` (``x``'s shape is ``shape`` broadcast, NumPy's way)."""
    x = array_module(x).asarray(x)
    shape = tuple(shape)
    lead = x.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape)
                                      if n == 1 and x.shape[lead + i] != 1)
    return x.sum(axis=axes).reshape(shape) if axes else x


@adjoint(sum_to_shape)
def sum_to(y, x, shape):
    d[x] = np.broadcast_to(d[y], x.shape)


