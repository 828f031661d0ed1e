"""Knet's metrics and binary losses: accuracy, bce and logistic.

``bce`` and ``logistic`` are primitives for the compiler (their rules are in
``knetc/rules/layers.py``); ``accuracy`` has no gradient. Classes are on the last axis of the
scores and labels are 0-based integers, as everywhere in knetc.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .runtime import prims as _prims
from .runtime.backend import array_module

__all__ = ["nll", "accuracy", "bce", "bce_grad", "bce_dlabels", "logistic", "logistic_grad",
           "logistic_dlabels"]


def nll(scores, labels, average: bool = True):
    """Negative log likelihood of 0-based int ``labels`` under unnormalized ``scores``.

    Classes are on the last axis of ``scores`` and every other axis indexes instances, as in
    Knet's ``nll`` (which has them on its first, column-major axis): ``scores`` (N, C) with
    ``labels`` (N,), or a sequence model's (B, T, V) with (B, T) (any shape of labels with one
    label per row of ``scores.reshape(-1, C)``; a vector of C scores takes one label).

    Knet's convention: ``average=True`` returns the mean over all the instances;
    ``average=False`` returns ``(total, count)``, count the number of labels. Differentiable in
    both forms (differentiate ``total``).
    """
    if not hasattr(scores, "ndim"):      # nested lists of scores
        scores = np.asarray(scores)
    if scores.ndim != 2:   # known when specializing: (..., C) scores become rows of one matrix
        if scores.ndim == 0:
            raise ValueError("nll: scores must have a class axis (the last one), got a scalar")
        scores = scores.reshape(-1, scores.shape[-1])
        labels = np.reshape(labels, -1)
    if len(labels) != scores.shape[0]:
        raise ValueError(f"nll: {len(labels)} labels for {scores.shape[0]} rows of scores (scores "
                         "have the classes on the last axis and one label per other position)")
    if average:
        return _prims.nll(scores, labels, True)
    return _prims.nll(scores, labels, False), len(labels)


def _check_scores(scores, who: str):
    """``scores`` if it is an array of class scores, else a clear error; ``who`` is the subject
    of the message, e.g. "the model predict returned"."""
    want = "an array of class scores (N, classes)"
    if scores is None:
        raise TypeError(f"accuracy: {who} None, not {want}")
    if isinstance(scores, (tuple, list)):
        raise TypeError(f"accuracy: {who} a {type(scores).__name__} of {len(scores)} items, not "
                        f"{want}; return the scores alone")
    if isinstance(scores, (bool, int, float, complex, np.generic)) or (
            hasattr(scores, "shape") and len(scores.shape) == 0):
        raise ValueError(f"accuracy: {who} the scalar {scores!r}, not {want}; return the scores "
                         "before any loss or reduction")
    if not hasattr(scores, "shape"):
        raise TypeError(f"accuracy: {who} a {type(scores).__name__}, not {want}")
    return scores


def _correct(scores, labels, who: str | None = None) -> tuple[int, int]:
    if who is None:                       # accuracy(scores, labels): lists are fine
        who = "scores is"
        if isinstance(scores, (tuple, list)):
            scores = np.asarray(scores)
    scores = _check_scores(scores, who)
    xp = array_module(scores)
    labels = xp.asarray(labels)
    pred = xp.argmax(scores, axis=-1)
    if pred.shape != labels.shape:
        raise ValueError(f"accuracy: scores {tuple(np.shape(scores))} give predictions of shape "
                         f"{tuple(pred.shape)}, labels have shape {tuple(labels.shape)}")
    return int(xp.sum(pred == labels)), int(labels.size)


def _batches(data, predict_one, who: str) -> tuple[int, int]:
    """(correct, count) of ``predict_one(x)`` over the minibatches ``(x, y)`` of ``data``."""
    correct = count = 0
    for batch in data:
        try:
            x, y = batch
        except (TypeError, ValueError):
            what = (f"a {type(batch).__name__} of {len(batch)} items"
                    if isinstance(batch, (tuple, list)) else f"a {type(batch).__name__}")
            raise TypeError(f"accuracy: each minibatch of data must be a pair (x, y), got "
                            f"{what}") from None
        c, n = _correct(predict_one(x), y, who)
        correct += c
        count += n
    return correct, count


def accuracy(*args: Any, data: Any = None, average: bool = True):
    """Classification accuracy, in Knet's forms.

    ``accuracy(scores, labels)``: the fraction of rows whose ``argmax(scores, axis=-1)`` equals
    the 0-based integer label (``scores`` ``(N, classes)``, ``labels`` ``(N,)``; more leading axes
    are allowed, each label counting once).

    ``accuracy(model, data)`` or ``accuracy(model, data=data)`` (Knet's ``accuracy(model;
    data)``): the accuracy of the scores ``model(x)`` over the minibatches ``(x, y)`` of ``data``,
    weighted by the number of labels in each minibatch; ``model`` is any callable.

    ``accuracy(w, data, predict)``: the same with the scores ``predict(w, x)``.

    A model or predict function that returns no scores (``None``, a Python or NumPy scalar, a
    0-d array, a tuple) is an error naming what it returned (``TypeError``, or ``ValueError`` for
    a scalar), never an accuracy of 0.

    ``average=False`` returns ``(correct, count)`` instead of the fraction (Knet's convention).
    No gradient flows through the accuracy.
    """
    if data is not None:
        if len(args) != 1:
            raise TypeError("accuracy(model, data=data) takes the model alone positionally, got "
                            f"{len(args)} positional arguments")
        args = (args[0], data)
    if len(args) == 2 and callable(args[0]):
        model, batches = args
        correct, count = _batches(batches, model, f"the model {_name(model)} returned")
    elif len(args) == 2:
        correct, count = _correct(*args)
    elif len(args) == 3:
        w, batches, predict = args
        if not callable(predict):
            raise TypeError("accuracy(w, data, predict): predict must be callable")
        correct, count = _batches(batches, lambda x: predict(w, x),
                                  f"predict {_name(predict)} returned")
    else:
        raise TypeError("accuracy takes (scores, labels), (model, data) or (w, data, predict), "
                        f"got {len(args)} arguments")
    if not average:
        return correct, count
    return correct / count if count else float("nan")


def _name(f) -> str:
    return getattr(f, "__qualname__", None) or type(f).__name__


def _softplus(z, xp):
    """log(1 + exp(z)) without overflow."""
    return xp.maximum(z, 0) + xp.log1p(xp.exp(-xp.abs(z)))


def _sigm(z, xp):
    return 0.5 * (xp.tanh(0.5 * z) + 1)


def _labels_like(labels, scores, xp):
    y = xp.asarray(labels)
    dt = scores.dtype if np.issubdtype(scores.dtype, np.floating) else np.dtype(np.float64)
    y = y.astype(dt, copy=False)
    if y.shape != scores.shape:
        raise ValueError(f"labels of shape {tuple(y.shape)} do not match scores of shape "
                         f"{tuple(scores.shape)}")
    return y


def _scale(dy, n, average):
    return dy / n if average else dy


def bce(scores, labels, average: bool = True):
    """Binary cross-entropy of unnormalized ``scores`` and ``labels`` in {0, 1} (Knet's ``bce``).

    The mean over all elements of ``-(y log σ(x) + (1 - y) log(1 - σ(x)))``, computed stably as
    ``softplus(x) - y x``. ``labels`` has the shape of ``scores`` (soft labels in [0, 1] work too).
    ``average=False`` returns the sum.
    """
    xp = array_module(scores)
    scores = xp.asarray(scores)
    y = _labels_like(labels, scores, xp)
    total = xp.sum(_softplus(scores, xp) - y * scores)
    return total / scores.size if average else total


def bce_grad(scores, labels, dy, average: bool = True):
    """d bce / d scores: ``(σ(x) - y) * dy`` (divided by the element count when averaging)."""
    xp = array_module(scores)
    y = _labels_like(labels, scores, xp)
    g = _sigm(scores, xp) - y
    return g * _scale(dy, scores.size, average)


def bce_dlabels(scores, labels, dy, average: bool = True):
    """d bce / d labels: ``-x * dy`` (divided by the element count when averaging)."""
    return scores * (-_scale(dy, scores.size, average))


def logistic(scores, labels, average: bool = True):
    """Logistic loss of ``scores`` and ``labels`` in {-1, 1} (Knet's ``logistic``, the soft margin
    loss): the mean over all elements of ``log(1 + exp(-y x))``, computed without overflow.
    ``average=False`` returns the sum.
    """
    xp = array_module(scores)
    scores = xp.asarray(scores)
    y = _labels_like(labels, scores, xp)
    total = xp.sum(_softplus(-y * scores, xp))
    return total / scores.size if average else total


def logistic_grad(scores, labels, dy, average: bool = True):
    """d logistic / d scores: ``-y σ(-y x) * dy`` (divided by the count when averaging)."""
    xp = array_module(scores)
    y = _labels_like(labels, scores, xp)
    return -y * _sigm(-y * scores, xp) * _scale(dy, scores.size, average)


def logistic_dlabels(scores, labels, dy, average: bool = True):
    """d logistic / d labels: ``-x σ(-y x) * dy`` (divided by the count when averaging)."""
    xp = array_module(scores)
    y = _labels_like(labels, scores, xp)
    return -scores * _sigm(-y * scores, xp) * _scale(dy, scores.size, average)
