"""Helpers the rule tests share: gradient checks against central finite differences in float64."""
import numpy as np

import knetc
from knetc.gradcheck import gradcheck


def check(f, *args, argnums=(0,), **kw):
    """``gradcheck`` of f wrt each argument in ``argnums``, twice: a function specialized for many
    shapes runs a new one uncompiled first (tier 0) and compiles it when it comes back; both must
    be right."""
    for i in argnums:
        assert gradcheck(f, *args, argnum=i, **kw)
        assert gradcheck(f, *args, argnum=i, **kw)


def second_order(f, *rest):
    """sum(sin(grad(f)(x, *rest))) as a function of x."""
    df = knetc.grad(f)

    def outer_loss(x):
        return np.sum(np.sin(df(x, *rest)))
    return outer_loss


def check2(f, x, *rest):
    """Second derivatives of f: the gradient of a function of its gradient."""
    check(second_order(f, *rest), x, rtol=1e-4, atol=1e-6)
