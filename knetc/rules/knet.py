"""Rules for Knet's primitives (knetc.runtime.prims)."""
import numpy as np

from ..runtime import prims as P
from .registry import adjoint, alias, static


@adjoint(P.relu)
def relu(y, x):
    d[x] = d[y] * (y > 0)


@adjoint(P.sigm)
def sigm(y, x):
    d[x] = d[y] * y * (1 - y)


@adjoint(P.elu)
def elu(y, x, alpha=1.0):
    d[x] = d[y] * np.where(x > 0, 1, y + alpha)


@adjoint(P.selu)
def selu(y, x):
    d[x] = d[y] * np.where(x > 0, static(P.SELU_SCALE), y + static(P.SELU_SCALE * P.SELU_ALPHA))


@adjoint(P.softmax)
def softmax(y, x, axis=-1):
    d[x] = y * (d[y] - np.sum(d[y] * y, axis=axis, keepdims=True))


@adjoint(P.logp)
def logp(y, x, axis=-1):
    if y.size >= P.LOGP_BACK_MIN:     # one new array, not three (a language model's scores)
        d[x] = P.logp_back(d[y], y, axis)
    else:
        d[x] = d[y] - np.exp(y) * np.sum(d[y], axis=axis, keepdims=True)


@adjoint(P.logp_back)   # (gradients of gradients)
def logp_back(g, dy, y, axis=-1):
    e = np.exp(y)
    d[dy] = d[g] - np.sum(d[g] * e, axis=axis, keepdims=True)
    d[y] = -(d[g] * e) * np.sum(dy, axis=axis, keepdims=True)


@adjoint(P.logsumexp)
def logsumexp(y, x, axis=-1, keepdims=False):
    if keepdims or axis is None:
        d[x] = d[y] * np.exp(x - y)
    else:
        d[x] = np.expand_dims(d[y], axis) * np.exp(x - np.expand_dims(y, axis))


@adjoint(P.nll)
def nll(y, scores, labels, average=True):
    d[scores] = P.nll_grad(scores, labels, d[y], average)


@adjoint(P.nll_grad)  # so that gradients of gradients go through nll
def nll_grad(g, scores, labels, dy, average=True):
    p = P.softmax(scores)
    jvp = p * (d[g] - np.sum(d[g] * p, axis=-1, keepdims=True))  # softmax's Jacobian times d[g]
    if average:
        d[scores] = jvp * (dy / static(scores.shape[0]))
    else:
        d[scores] = jvp * dy
    d[dy] = np.sum(d[g] * P.nll_grad(scores, labels, 1.0, average))


@adjoint(P.mat)
def mat(y, x):
    d[x] = np.reshape(d[y], x.shape)


alias(P.getval)
