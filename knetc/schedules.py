"""Learning-rate schedules: callables of the step number, for an optimizer's ``lr``.

Any optimizer of ``knetc.optim`` takes ``lr=`` as a number or as a callable ``lr(t) -> float``
of the step number ``t``: 1 for the first update, counted by the optimizer itself (its state
``t``, saved with it).  With ``optimizers(w, Adam, lr=schedule)`` every parameter's optimizer
calls the same schedule with its own count, which is the number of updates so far unless some
gradients were None.  The schedules here are small immutable objects with a readable ``repr``::

    from knetc import schedules
    opts = knetc.optimizers(w, knetc.Adam,
                            lr=schedules.linear_warmup(1e-3, 500, then=schedules.cosine(1e-3, 9500)))

``step(lr, every, gamma)``     ``lr * gamma ** ((t - 1) // every)`` (torch's ``StepLR``)
``cosine(lr, total, min_lr)``  from ``lr`` at step 1 down to ``min_lr`` at step ``total + 1``
                               (torch's ``CosineAnnealingLR``), then ``min_lr``
``linear_warmup(lr, warmup, then)``  ``lr * t / warmup`` up to step ``warmup``; then ``lr``, or
                               the schedule ``then`` counted from the end of the warm-up

PyTorch's schedulers count epochs from 0 (``scheduler.step()`` after each epoch); these count
updates from 1, so torch's value at epoch ``e`` is this value at step ``e + 1``.  For a schedule
by epochs, divide: ``lr=lambda t: sched((t - 1) // steps_per_epoch + 1)``.
"""
from __future__ import annotations

import math
import numbers
from typing import Callable, Union

__all__ = ["Schedule", "step", "cosine", "linear_warmup"]


def _number(name: str, v: object) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real):   # NumPy scalars are Real
        raise TypeError(f"{name} must be a number, got {v!r}")
    return float(v)


def _count(name: str, v: object, least: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < least:
        raise ValueError(f"{name} must be an int >= {least}, got {v!r}")
    return v


def _check_step(t: int) -> None:
    if t < 1:
        raise ValueError(f"schedules count steps from 1 (the first update), got step {t}")


class Schedule:
    """Base class of the schedules: ``s(t)`` is the learning rate at step ``t`` (1-based).

    Equal when of the same kind with equal parameters; immutable.

    >>> s = step(0.1, every=10)
    >>> [s(t) for t in (1, 10, 11)]
    [0.1, 0.1, 0.010000000000000002]
    >>> s == step(0.1, 10, 0.1)
    True
    """

    __slots__ = ()
    _fields: tuple[str, ...] = ()

    def __call__(self, t: int) -> float:  # pragma: no cover
        raise NotImplementedError

    def _values(self) -> tuple:
        return tuple(getattr(self, f) for f in self._fields)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._values() == self._values()

    def __hash__(self) -> int:
        return hash((type(self), self._values()))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __reduce__(self):  # pickle / copy through the constructor
        return (type(self), self._values())

    def _set(self, **kw: object) -> None:
        for k, v in kw.items():
            object.__setattr__(self, k, v)


class Step(Schedule):
    """``lr * gamma ** ((t - 1) // every)``: made by ``step(lr, every, gamma)``."""

    __slots__ = ("lr", "every", "gamma")
    _fields = ("lr", "every", "gamma")

    def __init__(self, lr: float, every: int, gamma: float = 0.1) -> None:
        self._set(lr=_number("lr", lr), every=_count("every", every, 1),
                  gamma=_number("gamma", gamma))

    def __call__(self, t: int) -> float:
        _check_step(t)
        return self.lr * self.gamma ** ((t - 1) // self.every)

    def __repr__(self) -> str:
        return f"step({self.lr!r}, every={self.every!r}, gamma={self.gamma!r})"


class Cosine(Schedule):
    """Cosine annealing from ``lr`` to ``min_lr`` over ``total`` steps: made by ``cosine``."""

    __slots__ = ("lr", "total", "min_lr")
    _fields = ("lr", "total", "min_lr")

    def __init__(self, lr: float, total: int, min_lr: float = 0.0) -> None:
        self._set(lr=_number("lr", lr), total=_count("total", total, 1),
                  min_lr=_number("min_lr", min_lr))

    def __call__(self, t: int) -> float:
        _check_step(t)
        e = min(t - 1, self.total)
        return self.min_lr + (self.lr - self.min_lr) * (1 + math.cos(math.pi * e / self.total)) / 2

    def __repr__(self) -> str:
        return f"cosine({self.lr!r}, total={self.total!r}, min_lr={self.min_lr!r})"


class LinearWarmup(Schedule):
    """Linear warm-up to ``lr`` over ``warmup`` steps, then ``lr`` or ``then``: made by
    ``linear_warmup``."""

    __slots__ = ("lr", "warmup", "then")
    _fields = ("lr", "warmup", "then")

    def __init__(self, lr: float, warmup: int,
                 then: Union[float, Callable[[int], float], None] = None) -> None:
        if then is not None and not callable(then):
            then = _number("then", then)
        self._set(lr=_number("lr", lr), warmup=_count("warmup", warmup, 0), then=then)

    def __call__(self, t: int) -> float:
        _check_step(t)
        w = self.warmup
        if t <= w:
            return self.lr * t / w
        then = self.then
        if then is None:
            return self.lr
        if callable(then):
            return then(t - w)
        return then

    def __repr__(self) -> str:
        tail = "" if self.then is None else f", then={self.then!r}"
        return f"linear_warmup({self.lr!r}, warmup={self.warmup!r}{tail})"


def step(lr: float, every: int, gamma: float = 0.1) -> Step:
    """Step decay: ``lr`` for steps 1..every, then multiplied by ``gamma`` every ``every`` steps.

    The value at step ``t`` is ``lr * gamma ** ((t - 1) // every)``: torch's
    ``StepLR(step_size=every, gamma=gamma)`` at epoch ``t - 1``.

    >>> s = step(0.1, every=100, gamma=0.5)
    >>> s
    step(0.1, every=100, gamma=0.5)
    >>> s(1), s(100), s(101), s(250)
    (0.1, 0.1, 0.05, 0.025)
    """
    return Step(lr, every, gamma)


def cosine(lr: float, total: int, min_lr: float = 0.0) -> Cosine:
    """Cosine annealing: ``min_lr + (lr - min_lr) * (1 + cos(pi * (t-1) / total)) / 2``.

    ``lr`` at step 1, half-way at step ``total/2 + 1``, ``min_lr`` at step ``total + 1`` and after:
    torch's ``CosineAnnealingLR(T_max=total, eta_min=min_lr)`` at epoch ``t - 1`` (which would
    rise again after ``total``; this one stays at ``min_lr``).

    >>> s = cosine(0.1, total=100, min_lr=0.001)
    >>> s
    cosine(0.1, total=100, min_lr=0.001)
    >>> s(1), round(s(51), 6), s(101), s(500)
    (0.1, 0.0505, 0.001, 0.001)
    """
    return Cosine(lr, total, min_lr)


def linear_warmup(lr: float, warmup: int,
                  then: Union[float, Callable[[int], float], None] = None) -> LinearWarmup:
    """Linear warm-up: ``lr * t / warmup`` for steps 1..warmup (reaching ``lr``), then ``lr``.

    ``then`` replaces what follows: a number (constant) or a schedule, which is called with the
    step count since the warm-up (``then(t - warmup)``: its step 1 is the first after the
    warm-up).  Warm up into a cosine decay over the rest of 10000 steps::

        linear_warmup(1e-3, 500, then=cosine(1e-3, 9500))

    >>> s = linear_warmup(0.1, warmup=4, then=step(0.1, every=10, gamma=0.5))
    >>> s
    linear_warmup(0.1, warmup=4, then=step(0.1, every=10, gamma=0.5))
    >>> [s(t) for t in (1, 2, 4, 5, 14, 15)]
    [0.025, 0.05, 0.1, 0.1, 0.1, 0.05]
    """
    return LinearWarmup(lr, warmup, then)
