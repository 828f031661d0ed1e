"""Knet's optimizers: SGD, Momentum, Nesterov, Adagrad, Adadelta, Rmsprop, Adam; and AdamW.

Each optimizer object holds the hyperparameters and the state of ONE parameter array, as in
Knet.jl (``src/train20/update.jl``).  ``opt.update(w, g)`` changes ``w`` in place (the array keeps
its identity) with in-place array operations and reusable scratch buffers per optimizer, so that
no temporaries are allocated on the training hot path.  Arrays may be NumPy or CuPy arrays.

For a model whose parameters live in nested lists, tuples and dicts::

    opts = optimizers(model, Adam, lr=1e-3)   # same nesting, one Adam per array leaf
    update(model, grads, opts)                # in place; None gradients are skipped

Defaults are those of Knet.jl 1.4 (``src/train20/update.jl``); note they differ from the older
Knet 1.0 ``src/update.jl`` (e.g. Momentum there was lr=0.001, gamma=0.9).

What a PyTorch user also finds here (Knet's names and defaults otherwise unchanged):

* ``weight_decay=`` on every optimizer: L2 regularization added to the gradient
  (``g + weight_decay * w``), as torch's (non-decoupled) ``weight_decay`` does; default 0.
* ``AdamW``: Adam with decoupled weight decay, as ``torch.optim.AdamW`` (default 0.01).
* Learning-rate schedules: ``lr`` may be a callable of the step number (1-based, counted by each
  optimizer in its state ``t``); ``knetc.schedules`` has step decay, cosine and linear warm-up.
* ``clip_grad_norm(g, max_norm)``: clipping by the global norm of the whole gradient, as
  ``torch.nn.utils.clip_grad_norm_``, beside Knet's per-array ``gclip``.

With constant ``lr`` Knet's ``Momentum`` and ``Nesterov`` take the same steps as ``torch.optim.SGD``
with ``momentum=gamma`` (and ``nesterov=True``); under a schedule they differ, since Knet's velocity
holds ``lr * g`` (an lr change reaches the step gradually) where torch's holds ``g``.

Gradient clipping: ``gclip=0`` means none; with ``gclip > 0`` a gradient whose (per-array)
2-norm exceeds ``gclip`` is rescaled to norm ``gclip`` before the update.  Unlike Knet's
``gclip!``, the caller's gradient array is left untouched (the scaled copy goes in a scratch
buffer).  The order is: clip, then add the weight decay, then step.

A Python float leaf (e.g. a scalar parameter in a list or dict) is updated too: its state is kept
in 0-d float64 arrays and the new float replaces the old one in its container.  Floats cannot be
replaced inside tuples; use a list or a 0-d/1-element array there.

Speed.  ``update(w, g, opts)`` compiles, once per structure of ``w`` and ``opts``, a small
function that checks the structures (types, lengths, keys) and picks out the leaves; it is
cached by the identities of ``w`` and ``opts`` and re-checks the structures on every call, and
the leaves are read afresh on every call, so replacing an array in ``w`` is always seen.  Each
optimizer remembers the array it last checked and prepared (buffers, state, shape), and steps it
with as few in-place NumPy calls as its formula allows, using 0-d scalars of the array's dtype.
Change an optimizer's state with ``load_state`` (or make a new optimizer), not by assigning its
attributes: ``load_state`` makes the next update check again.

On the GPU.  A float32/float64 CuPy parameter (with state of its dtype) is updated by ONE fused
kernel launch (``knetc/optim_kernels.py``; with ``gclip``, one reduction for the gradient's norm
first, kept on the device), computing the same operations in the same order as the NumPy path
below, the state updated in place, the hyperparameters passed as kernel arguments (no recompile
when they change).  The optimizer then takes that path for that array (its ``_apply`` is
replaced on the instance, so NumPy arrays pay nothing for it).  Other dtypes keep the general
path.  ``fused``/``fused_step_scalars`` serve ``knetc.graph_step``, which captures the kernels.
"""
from __future__ import annotations

import itertools
import math
from typing import Any, Callable, ClassVar

import numpy as np

from knetc import optim_kernels, tree
from knetc.runtime import cpublas
from knetc.runtime.backend import array_module
from knetc.runtime.sparse import SparseRows

__all__ = ["Optimizer", "SGD", "Momentum", "Nesterov", "Adagrad", "Adadelta", "Rmsprop",
           "Adam", "AdamW", "OPTIMIZERS", "optimizers", "update", "clip_grad_norm"]


def _is_float_leaf(x: Any) -> bool:
    return isinstance(x, (float, np.floating)) and not isinstance(x, np.ndarray)


def _is_array(x: Any) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype") and not isinstance(x, np.generic)


class Optimizer:
    """Base class: per-array optimizer with hyperparameters ``hypers`` and state ``states``.

    Subclasses implement ``_step(w, g, t, lr)``, which updates array ``w`` in place from the
    gradient ``g`` at step ``t`` with learning rate ``lr``, using the scratch array ``self._buf``,
    the array module ``self._xp`` (numpy or cupy) and ``self._k(...)`` for its scalars.
    ``hyperparams()`` and ``state()`` expose everything needed to save and restore the optimizer
    (see ``knetc.serialize``); ``load_state`` puts state back.  Every optimizer counts its updates
    in the state ``t`` (Knet's Adam step count); a learning-rate schedule is called with it.

    >>> o = SGD(lr=0.5)
    >>> w = np.ones(2)
    >>> o.update(w, np.array([1.0, 2.0]))
    array([0.5, 0. ])
    >>> o.state(), o.hyperparams()
    ({'t': 1}, {'lr': 0.5, 'gclip': 0.0})
    """

    hypers: ClassVar[tuple[str, ...]] = ("lr", "gclip")
    # PyTorch's additions: in hyperparams() only when they differ from these defaults, so that
    # Knet's hyperparameter sets (and files saved before them) stay as they were
    extras: ClassVar[dict[str, Any]] = {"weight_decay": 0.0}
    states: ClassVar[tuple[str, ...]] = ("t",)
    stateless: ClassVar[bool] = False   # True: may be shared by several arrays (SGD)
    nconst: ClassVar[int] = 1           # how many scalars _step passes to NumPy

    def __init__(self, **hyper: Any) -> None:
        lr = hyper.get("lr")
        if not (callable(lr) or isinstance(lr, (int, float, np.number))):
            raise TypeError(f"{type(self).__name__}: lr must be a number or a schedule (a "
                            f"callable of the step number), got {lr!r}")
        for k, v in hyper.items():
            setattr(self, k, v)
        for k in self.states:
            setattr(self, k, None)
        self.t = 0
        self._ready = None  # the array this optimizer last checked and prepared buffers for
        self._buf = None    # scratch array, same shape/dtype as w; not part of the state
        self._gbuf = None   # holds the clipped / weight-decayed gradient
        self._xp = np
        self._z = None      # 0-d arrays of w's dtype for the scalars (NumPy float arrays)
        self._zd = None

    # ----- introspection, used by serialize -----
    def hyperparams(self) -> dict[str, Any]:
        """The hyperparameters as a dict (constructor keyword arguments).

        Knet's hyperparameters always; ``weight_decay`` only when it is not 0.

        >>> Momentum(weight_decay=1e-4).hyperparams()
        {'lr': 0.05, 'gamma': 0.95, 'gclip': 0.0, 'weight_decay': 0.0001}
        """
        out = {k: getattr(self, k) for k in self.hypers}
        for k, default in self.extras.items():
            v = getattr(self, k)
            if v != default:
                out[k] = v
        return out

    def state(self) -> dict[str, Any]:
        """The optimizer state as a dict of arrays / ints / None (None before the first update).

        >>> Adam().state()
        {'t': 0, 'fstm': None, 'scndm': None}
        """
        return {k: getattr(self, k) for k in self.states}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore state saved by ``state()`` (the next update checks it against its array).

        >>> o = Adam(); o.load_state({"t": 10}); o.t
        10
        """
        unknown = set(state) - set(self.states)
        if unknown:
            raise ValueError(f"{type(self).__name__} has no state named {sorted(unknown)}")
        for k, v in state.items():
            setattr(self, k, v)
        self._ready = None

    def clone(self) -> "Optimizer":
        """A fresh optimizer with the same hyperparameters and no state (Knet's ``clone``).

        >>> Adam(lr=0.01).clone()
        Adam(lr=0.01, beta1=0.9, beta2=0.999, eps=1e-08, gclip=0.0)
        """
        return type(self)(**self.hyperparams())

    def current_lr(self) -> float:
        """The learning rate of the last update (of the first one, before any): ``lr`` itself,
        or the schedule's value at step ``max(t, 1)``.

        >>> from knetc import schedules
        >>> o = SGD(lr=schedules.step(0.1, every=2, gamma=0.5))
        >>> w = np.zeros(1)
        >>> for _ in range(3): _ = o.update(w, np.ones(1))
        >>> o.t, o.current_lr()
        (3, 0.05)
        """
        lr = self.lr
        return lr(max(self.t, 1)) if callable(lr) else lr

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparams().items())
        return f"{type(self).__name__}({args})"

    # ----- the update -----
    def update(self, w: Any, g: Any) -> Any:
        """Update ``w`` in place from gradient ``g`` and return ``w``.

        ``w`` is an array (NumPy or CuPy); a Python float ``w`` is also accepted, in which case the
        new float is returned (the caller must store it).  ``g is None`` leaves ``w`` unchanged
        (and does not count as a step).

        >>> Adam(lr=0.1).update(np.zeros(2), np.array([1.0, -1.0]))
        array([-0.1,  0.1])
        >>> SGD(lr=0.5).update(2.0, 1.0)
        1.5
        """
        return self._update(w, g, None)

    def _update(self, w: Any, g: Any, at: tuple[int, Any] | None) -> Any:
        """``update`` with every check; ``at=(t, lr)`` for a step already counted (shared SGD)."""
        if g is None:
            return w
        if type(g) is SparseRows:
            if g.shape != tuple(getattr(w, "shape", ())):
                raise ValueError(f"gradient shape {g.shape} does not match parameter shape "
                                 f"{getattr(w, 'shape', ())}")
            if self._rows_update(w, g, at):
                return w
            g = g.dense()       # the other optimizers change rows without gradient too
        if _is_float_leaf(w):
            a = np.array(w, dtype=np.float64)
            self._update(a, np.asarray(g, dtype=np.float64), at)
            return float(a)
        if self._ready is not w:
            self._prepare(w)
        xp = self._xp
        if type(g) is not type(w) and (not _is_array(g) or array_module(g) is not xp):
            g = xp.asarray(g)
        if g.shape != w.shape:
            raise ValueError(f"gradient shape {g.shape} does not match parameter shape {w.shape}")
        self._apply(w, g, at)
        return w

    def _prepare(self, w: Any) -> None:
        """Check ``w``; make the buffers, the state and the scalars fit it; remember it."""
        if not _is_array(w):
            raise TypeError(f"{type(self).__name__}.update: cannot update a {type(w).__name__}; "
                            "parameters must be arrays or Python floats")
        xp = array_module(w)
        self._ready = None

        def fits(a):
            return (a is not None and a.shape == w.shape and a.dtype == w.dtype
                    and array_module(a) is xp)

        for k in self.states:
            v = getattr(self, k)
            if v is None:  # lazily created, like Knet's zero(w)
                setattr(self, k, xp.zeros_like(w))
            elif _is_array(v):
                if array_module(v) is not xp:  # e.g. NumPy state loaded for CuPy w
                    v = xp.asarray(v)
                    setattr(self, k, v)
                if v.shape != w.shape:
                    raise ValueError(f"{type(self).__name__}: its state {k!r} has shape "
                                     f"{v.shape} but the parameter has shape {w.shape}; an "
                                     "optimizer with state serves one array (use optimizers(w, "
                                     "...) to get one per array)")
        fused = xp is not np and self._fusable(w, xp)
        if not fused:   # the fused kernel needs no scratch buffers
            if not fits(self._buf):
                self._buf = xp.empty_like(w)
            if self._gbuf is not None and not fits(self._gbuf):
                self._gbuf = None
            self._prepare_more(w, xp, fits)
        # The fused path replaces _apply on this instance only (no test on the NumPy hot path).
        if fused:
            self._apply = self._apply_fused
        elif "_apply" in self.__dict__:
            del self._apply
        if xp is np and w.dtype.kind == "f":
            # a 0-d array of w's dtype costs NumPy less per call than a Python float, and gives
            # the same result (a Python float is cast to w's dtype too)
            self._z = tuple(np.empty((), w.dtype) for _ in range(self.nconst))
            self._zd = np.empty((), w.dtype)
        else:
            self._z = self._zd = None
        self._xp = xp
        self._ready = w

    def _prepare_more(self, w: Any, xp: Any, fits: Callable[[Any], bool]) -> None:
        """Hook for optimizers with more scratch buffers."""

    # ----- the fused GPU update (knetc/optim_kernels.py) -----
    # On a float32/float64 CuPy parameter one update is ONE kernel launch (two with gclip: the
    # gradient's sum of squares first), computing what _step computes with the same operations.
    fused_kind: ClassVar[str | None] = None    # the optim_kernels.KINDS entry, None: no kernel
    decoupled: ClassVar[bool] = False          # weight decay as AdamW's (w *= 1 - lr*wd)

    def _fusable(self, w: Any, xp: Any) -> bool:
        """Can ``w`` (prepared: its states exist and fit its shape) take the fused update?"""
        if self.fused_kind is None or w.dtype not in (np.float32, np.float64):
            return False
        for k in optim_kernels.spec(self.fused_kind).states:
            v = getattr(self, k)   # loaded state of another dtype: the general path casts it
            if v.dtype != w.dtype or array_module(v) is not xp:
                return False
        return True

    def fused_spec(self) -> optim_kernels.UpdateSpec:
        """The fused update of this optimizer with its present options (``gclip > 0``, weight
        decay on or off): what its kernel's statements are, whatever the values."""
        wd = bool(self.weight_decay)
        return optim_kernels.spec(self.fused_kind, self.gclip > 0, wd and not self.decoupled,
                                  wd and self.decoupled)

    def _fused_values(self, t: int, lr: float) -> dict[str, float]:  # pragma: no cover
        """The per-step scalars of this kind at step ``t`` with learning rate ``lr``."""
        raise NotImplementedError

    def _fused_scalars(self, s: optim_kernels.UpdateSpec, t: int, lr: float) -> tuple:
        d = self._fused_values(t, lr)
        if s.clip:
            d["gclip"] = self.gclip
        if s.l2:
            d["wd"] = self.weight_decay
        if s.decoupled:
            d["wdf"] = 1 - lr * self.weight_decay   # in float64, as _decay computes it
        return tuple(float(d[n]) for n in s.scalars)

    def fused(self, w: Any, *, gpu_only: bool = True) -> tuple | None:
        """Prepare this optimizer for array ``w`` (as ``update`` would: state created, checked)
        and return ``(spec, states)`` of its fused update, or None when ``w``'s update is not
        fused (a NumPy array when ``gpu_only``; a dtype other than float32/float64; state of
        another dtype).  ``states`` are the state arrays the kernel updates in place.  For
        ``knetc.graph_step``, which launches the kernels itself (``fused_step_scalars``)."""
        if self._ready is not w:
            self._prepare(w)
        xp = array_module(w)
        if (gpu_only and xp is np) or not self._fusable(w, xp):
            return None
        s = self.fused_spec()
        return s, tuple(getattr(self, k) for k in s.states)

    def fused_step_scalars(self) -> tuple[float, ...]:
        """Count one step (``t += 1``, the schedule's ``lr(t)``) exactly as ``update`` does, and
        return the fused kernel's scalars for it, in ``fused_spec().scalars`` order."""
        t, lr = self._tick()
        return self._fused_scalars(self.fused_spec(), t, lr)

    def _apply_fused(self, w: Any, g: Any, at: tuple[int, Any] | None = None) -> None:
        """``_apply`` on a CuPy ``w`` prepared for the fused kernel: one launch (two with clip)."""
        t, lr = self._tick() if at is None else at
        if g.dtype != w.dtype:
            g = g.astype(w.dtype)
        s = self.fused_spec()
        states = tuple(getattr(self, k) for k in s.states)
        scalars = self._fused_scalars(s, t, lr)
        if array_module(w) is np:   # only reached when a test forces it: the NumPy reference
            optim_kernels.evaluate(s, w, g, states, scalars)
        else:
            optim_kernels.run(s, w, g, states, scalars)

    def _k(self, *vals: float) -> tuple:
        """The scalars ``vals`` as 0-d arrays of the parameter's dtype (or as they are)."""
        z = self._z
        if z is None:
            return vals
        for a, v in zip(z, vals):
            a[()] = v
        return z

    def _apply(self, w: Any, g: Any, at: tuple[int, Any] | None = None) -> None:
        """One step on a prepared ``w`` with a gradient ``g`` of its type and shape."""
        if at is None:
            t = self.t = self.t + 1
            lr = self.lr
            if callable(lr):
                lr = lr(t)
        else:
            t, lr = at
        gclip = self.gclip
        if gclip > 0:
            g = self._clip(w, g, gclip)
        wd = self.weight_decay
        if wd:
            g = self._decay(w, g, lr, wd)
        self._step(w, g, t, lr)

    def _tick(self) -> tuple[int, Any]:
        """Count one step; its number and learning rate."""
        t = self.t = self.t + 1
        lr = self.lr
        return t, (lr(t) if callable(lr) else lr)

    def _gbuffer(self, w: Any) -> Any:
        gb = self._gbuf
        if gb is None:
            gb = self._gbuf = self._xp.empty_like(w)
        return gb

    def _clip(self, w: Any, g: Any, gclip: float) -> Any:
        """Knet's gclip: ``g`` rescaled to norm ``gclip`` (into the scratch buffer) if above it."""
        xp = self._xp
        r = g.ravel()
        gnorm = math.sqrt(float(xp.dot(r, r)))
        if gnorm > gclip:
            return xp.multiply(g, gclip / gnorm, out=self._gbuffer(w))
        return g

    def _decay(self, w: Any, g: Any, lr: float, wd: float) -> Any:
        """L2 weight decay, as torch's: the gradient becomes ``g + wd * w``."""
        xp = self._xp
        gb = self._gbuffer(w)
        zd = self._zd
        if zd is not None:
            zd[()] = wd
            wd = zd
        if g is gb:  # already clipped into gb
            xp.multiply(w, wd, out=self._buf)
            gb += self._buf
        else:
            xp.multiply(w, wd, out=gb)
            gb += g
        return gb

    def _step(self, w: Any, g: Any, t: int, lr: float) -> None:  # pragma: no cover
        raise NotImplementedError

    def _rows_update(self, w: Any, g: SparseRows, at: tuple[int, Any] | None) -> bool:
        """Update only ``g``'s rows of ``w``, where that is the whole update (SGD); False when
        the dense gradient must be used (a step of this optimizer moves other rows too)."""
        return False


class SGD(Optimizer):
    """Stochastic gradient descent: ``w -= lr * g``.  Knet default ``SGD(lr=0.1, gclip=0)``.

    ``weight_decay=wd`` adds ``wd * w`` to the gradient first (torch's ``SGD(weight_decay=)``).
    ``lr`` may be a schedule (see ``knetc.schedules``).

    >>> w = np.array([1.0, 2.0])
    >>> SGD(lr=0.1, weight_decay=0.5).update(w, np.zeros(2))   # w -= 0.1 * (0 + 0.5 * w)
    array([0.95, 1.9 ])
    """

    stateless = True

    def __init__(self, *, lr: float | Callable[[int], float] = 0.1, gclip: float = 0.0,
                 weight_decay: float = 0.0) -> None:
        super().__init__(lr=lr, gclip=gclip, weight_decay=weight_decay)

    fused_kind = "SGD"

    def _fused_values(self, t, lr):
        return {"lr": lr}

    def _rows_update(self, w, g, at):
        # w -= lr * g changes only the rows g has (weight decay changes every row)
        if self.weight_decay or not isinstance(w, np.ndarray) or w.dtype.kind != "f":
            return False
        t, lr = self._tick() if at is None else at
        rows, values = g.coalesce()
        if self.gclip > 0:      # Knet's gclip: the norm of the whole gradient, zeros included
            norm = math.sqrt(float(np.vdot(values, values)))
            if norm > self.gclip:
                values *= self.gclip / norm
        w[rows] -= w.dtype.type(lr) * values       # lr in w's dtype, as the dense step has it
        return True

    def _step(self, w, g, t, lr):
        buf, z = self._buf, self._z
        if cpublas.axpy(-lr, g, w):   # one pass over a large NumPy parameter
            return
        if z is not None:
            z = z[0]
            z[()] = lr
            lr = z
        self._xp.multiply(g, lr, out=buf)
        w -= buf


class Momentum(Optimizer):
    """Momentum (Qian 1999): ``v = gamma*v - lr*g; w += v``.

    Knet default ``Momentum(lr=0.05, gamma=0.95, gclip=0)``; state ``velocity`` (and ``t``).
    With constant ``lr`` this is ``torch.optim.SGD(momentum=gamma)`` (whose buffer is ``-v/lr``).

    >>> o = Momentum(lr=0.1, gamma=0.5)
    >>> w = np.zeros(1)
    >>> for _ in range(2): _ = o.update(w, np.ones(1))
    >>> w, o.velocity        # v: -0.1, then 0.5*(-0.1) - 0.1
    (array([-0.25]), array([-0.15]))
    """

    hypers = ("lr", "gamma", "gclip")
    states = ("t", "velocity")
    nconst = 2

    def __init__(self, *, lr: float | Callable[[int], float] = 0.05, gamma: float = 0.95,
                 gclip: float = 0.0, weight_decay: float = 0.0) -> None:
        super().__init__(lr=lr, gamma=gamma, gclip=gclip, weight_decay=weight_decay)

    fused_kind = "Momentum"

    def _fused_values(self, t, lr):
        return {"gamma": self.gamma, "lr": lr}

    def _step(self, w, g, t, lr):
        xp, v, buf = self._xp, self.velocity, self._buf
        kgamma, klr = self._k(self.gamma, lr)
        xp.multiply(v, kgamma, out=v)
        xp.multiply(g, klr, out=buf)
        v -= buf
        w += v


class Nesterov(Momentum):
    """Nesterov momentum (Bengio et al. 2012, eq. 7), as in Knet::

        v_old = v;  v = gamma*v - lr*g;  w += -gamma*v_old + (1+gamma)*v

    Knet default ``Nesterov(lr=0.05, gamma=0.95, gclip=0)``; state ``velocity`` (and ``t``).
    With constant ``lr`` this is ``torch.optim.SGD(momentum=gamma, nesterov=True)``.

    >>> o = Nesterov(lr=0.1, gamma=0.5)
    >>> o.update(np.zeros(1), np.ones(1))       # (1 + gamma) * (-lr * g)
    array([-0.15])
    """

    nconst = 3
    fused_kind = "Nesterov"

    def _fused_values(self, t, lr):
        return {"gamma": self.gamma, "lr": lr, "gamma1": 1 + self.gamma}

    def _step(self, w, g, t, lr):
        xp, v, buf = self._xp, self.velocity, self._buf
        kgamma, klr, kgamma1 = self._k(self.gamma, lr, 1 + self.gamma)
        xp.multiply(v, kgamma, out=v)
        w -= v
        xp.multiply(g, klr, out=buf)
        v -= buf
        xp.multiply(v, kgamma1, out=buf)
        w += buf


class Adagrad(Optimizer):
    """Adagrad (Duchi et al. 2011): ``G += g.^2; w -= lr * g ./ sqrt(G + eps)``.

    Knet default ``Adagrad(lr=0.05, eps=1e-6, gclip=0)``; state ``G`` (and ``t``).

    >>> Adagrad(lr=0.1, eps=0.0).update(np.zeros(2), np.array([2.0, -3.0]))   # -lr * sign(g)
    array([-0.1,  0.1])
    """

    hypers = ("lr", "eps", "gclip")
    states = ("t", "G")
    nconst = 2

    def __init__(self, *, lr: float | Callable[[int], float] = 0.05, eps: float = 1e-6,
                 gclip: float = 0.0, weight_decay: float = 0.0) -> None:
        super().__init__(lr=lr, eps=eps, gclip=gclip, weight_decay=weight_decay)

    fused_kind = "Adagrad"

    def _fused_values(self, t, lr):
        return {"eps": self.eps, "lr": lr}

    def _step(self, w, g, t, lr):
        xp, G, buf = self._xp, self.G, self._buf
        keps, klr = self._k(self.eps, lr)
        xp.multiply(g, g, out=buf)
        G += buf
        _scaled_step(xp, w, g, G, keps, klr, buf)


class Rmsprop(Optimizer):
    """RMSProp (Tieleman & Hinton 2012): ``G = rho*G + (1-rho)*g.^2; w -= lr * g ./ sqrt(G + eps)``.

    Knet default ``Rmsprop(lr=0.01, rho=0.9, eps=1e-6, gclip=0)``; state ``G`` (and ``t``).

    >>> o = Rmsprop(lr=0.1, rho=0.0, eps=0.0)       # rho=0: G = g.^2, a sign step
    >>> o.update(np.zeros(2), np.array([2.0, -3.0]))
    array([-0.1,  0.1])
    """

    hypers = ("lr", "rho", "eps", "gclip")
    states = ("t", "G")
    nconst = 4

    def __init__(self, *, lr: float | Callable[[int], float] = 0.01, rho: float = 0.9,
                 eps: float = 1e-6, gclip: float = 0.0, weight_decay: float = 0.0) -> None:
        super().__init__(lr=lr, rho=rho, eps=eps, gclip=gclip, weight_decay=weight_decay)

    fused_kind = "Rmsprop"

    def _fused_values(self, t, lr):
        return {"rho": self.rho, "rho1": 1 - self.rho, "eps": self.eps, "lr": lr}

    def _step(self, w, g, t, lr):
        xp, G, buf = self._xp, self.G, self._buf
        krho, krho1, keps, klr = self._k(self.rho, 1 - self.rho, self.eps, lr)
        xp.multiply(G, krho, out=G)
        xp.multiply(g, g, out=buf)
        xp.multiply(buf, krho1, out=buf)
        G += buf
        _scaled_step(xp, w, g, G, keps, klr, buf)


def _scaled_step(xp, w, g, G, eps, lr, buf) -> None:
    """w -= lr * g / sqrt(G + eps), using only ``buf``."""
    xp.add(G, eps, out=buf)
    xp.sqrt(buf, out=buf)
    xp.divide(g, buf, out=buf)
    xp.multiply(buf, lr, out=buf)
    w -= buf


class Adadelta(Optimizer):
    """Adadelta (Zeiler 2012), as in Knet::

        G = rho*G + (1-rho)*g.^2
        dw = g .* sqrt(delta + eps) ./ sqrt(G + eps)
        delta = rho*delta + (1-rho)*dw.^2
        w -= lr * dw

    Knet default ``Adadelta(lr=1.0, rho=0.9, eps=1e-6, gclip=0)``; state ``G``, ``delta`` (and
    ``t``).

    >>> o = Adadelta(rho=0.0, eps=1e-4)             # first step: g * sqrt(eps) / sqrt(g^2 + eps)
    >>> o.update(np.zeros(1), np.ones(1)).round(7)
    array([-0.0099995])
    """

    hypers = ("lr", "rho", "eps", "gclip")
    states = ("t", "G", "delta")
    nconst = 4

    def __init__(self, *, lr: float | Callable[[int], float] = 1.0, rho: float = 0.9,
                 eps: float = 1e-6, gclip: float = 0.0, weight_decay: float = 0.0) -> None:
        super().__init__(lr=lr, rho=rho, eps=eps, gclip=gclip, weight_decay=weight_decay)
        self._buf2 = None

    fused_kind = "Adadelta"

    def _fused_values(self, t, lr):
        return {"rho": self.rho, "rho1": 1 - self.rho, "eps": self.eps, "lr": lr}

    def _prepare_more(self, w, xp, fits):
        if not fits(self._buf2):
            self._buf2 = xp.empty_like(w)

    def _step(self, w, g, t, lr):
        xp, G, delta, buf, buf2 = self._xp, self.G, self.delta, self._buf, self._buf2
        krho, krho1, keps, klr = self._k(self.rho, 1 - self.rho, self.eps, lr)
        xp.multiply(G, krho, out=G)
        xp.multiply(g, g, out=buf)
        xp.multiply(buf, krho1, out=buf)
        G += buf
        xp.add(G, keps, out=buf)
        xp.add(delta, keps, out=buf2)
        xp.divide(buf2, buf, out=buf2)
        xp.sqrt(buf2, out=buf2)
        buf2 *= g                       # buf2 = dw
        xp.multiply(delta, krho, out=delta)
        xp.multiply(buf2, buf2, out=buf)
        xp.multiply(buf, krho1, out=buf)
        delta += buf
        xp.multiply(buf2, klr, out=buf2)
        w -= buf2


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015), as in Knet::

        t += 1
        m = beta1*m + (1-beta1)*g;   v = beta2*v + (1-beta2)*g.^2
        w -= lr * (m/(1-beta1^t)) ./ (sqrt(v/(1-beta2^t)) + eps)

    Knet default ``Adam(lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, gclip=0)``; state ``t``
    (int step count), ``fstm`` (m) and ``scndm`` (v), Knet's names.  ``weight_decay=wd`` adds
    ``wd * w`` to the gradient (torch's ``Adam(weight_decay=)``; see ``AdamW`` for the decoupled
    kind).

    >>> o = Adam(lr=0.1)
    >>> o.update(np.zeros(2), np.array([3.0, -0.5]))   # the first step is lr * sign(g)
    array([-0.1,  0.1])
    """

    hypers = ("lr", "beta1", "beta2", "eps", "gclip")
    states = ("t", "fstm", "scndm")
    nconst = 6

    def __init__(self, *, lr: float | Callable[[int], float] = 0.001, beta1: float = 0.9,
                 beta2: float = 0.999, eps: float = 1e-8, gclip: float = 0.0,
                 weight_decay: float = 0.0) -> None:
        super().__init__(lr=lr, beta1=beta1, beta2=beta2, eps=eps, gclip=gclip,
                         weight_decay=weight_decay)

    def _step(self, w, g, t, lr):
        xp, m, v, buf = self._xp, self.fstm, self.scndm, self._buf
        b1, b2 = self.beta1, self.beta2
        # lr*(m/c1)/(sqrt(v/c2)+eps) == (lr*sqrt(c2)/c1) * m/(sqrt(v) + eps*sqrt(c2)): one pass less
        c1 = 1 - b1 ** t
        s2 = math.sqrt(1 - b2 ** t)
        z = self._z
        if z is None:
            kb1, kb1c, kb2, kb2c, keps, kstep = b1, 1 - b1, b2, 1 - b2, self.eps * s2, lr * s2 / c1
        else:  # inline self._k(...): the hot path of the most used optimizer
            kb1, kb1c, kb2, kb2c, keps, kstep = z
            kb1[()] = b1
            kb1c[()] = 1 - b1
            kb2[()] = b2
            kb2c[()] = 1 - b2
            keps[()] = self.eps * s2
            kstep[()] = lr * s2 / c1
        xp.multiply(m, kb1, out=m)
        xp.multiply(g, kb1c, out=buf)
        m += buf
        xp.multiply(v, kb2, out=v)
        xp.multiply(g, g, out=buf)
        xp.multiply(buf, kb2c, out=buf)
        v += buf
        xp.sqrt(v, out=buf)
        xp.add(buf, keps, out=buf)
        xp.divide(m, buf, out=buf)
        xp.multiply(buf, kstep, out=buf)
        w -= buf

    fused_kind = "Adam"

    def _fused_values(self, t, lr):
        b1, b2 = self.beta1, self.beta2
        c1 = 1 - b1 ** t      # as _step: the bias corrections folded into eps and the step
        s2 = math.sqrt(1 - b2 ** t)
        return {"b1": b1, "b1c": 1 - b1, "b2": b2, "b2c": 1 - b2, "keps": self.eps * s2,
                "kstep": lr * s2 / c1}


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019), as ``torch.optim.AdamW``::

        w *= 1 - lr*weight_decay          # before the Adam step, with this step's lr
        (then Adam's step with the gradient g as it is)

    Defaults: Knet's Adam's (``lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, gclip=0``) and torch's
    ``weight_decay=0.01``; state as Adam's (``t``, ``fstm``, ``scndm``).

    >>> AdamW()
    AdamW(lr=0.001, beta1=0.9, beta2=0.999, eps=1e-08, weight_decay=0.01, gclip=0.0)
    >>> o = AdamW(lr=0.1, weight_decay=0.5)
    >>> o.update(np.ones(1), np.ones(1))     # 1 * (1 - 0.1*0.5) - 0.1
    array([0.85])
    """

    hypers = ("lr", "beta1", "beta2", "eps", "weight_decay", "gclip")
    extras: ClassVar[dict[str, Any]] = {}
    decoupled = True

    def __init__(self, *, lr: float | Callable[[int], float] = 0.001, beta1: float = 0.9,
                 beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.01,
                 gclip: float = 0.0) -> None:
        super().__init__(lr=lr, beta1=beta1, beta2=beta2, eps=eps, gclip=gclip,
                         weight_decay=weight_decay)

    def _decay(self, w, g, lr, wd):
        f = 1 - lr * wd
        zd = self._zd
        if zd is not None:
            zd[()] = f
            f = zd
        self._xp.multiply(w, f, out=w)
        return g


# The optimizers by name (what knetc.serialize saves and the examples' --optim choose from):
# Knet's seven, and AdamW.
OPTIMIZERS: dict[str, type[Optimizer]] = {
    c.__name__: c for c in (SGD, Momentum, Nesterov, Adagrad, Adadelta, Rmsprop, Adam, AdamW)}


def optimizers(w: Any, opt: type[Optimizer] | Optimizer = Adam, **kw: Any) -> Any:
    """One optimizer per parameter leaf of ``w``, mirroring its nesting (Knet's ``optimizers``).

    ``opt`` is an optimizer class (constructed with ``**kw``) or an instance used as a template
    (cloned for each leaf).  Array leaves and Python-float leaves get an optimizer; other leaves
    (ints, strings, None, ...) get ``None``.  Lists, tuples and dicts are mirrored, and so are
    NamedTuples, dataclasses and registered classes (``knetc.tree``): the same class around the
    optimizers.

    >>> optimizers({"w": np.zeros(3), "b": 0.5, "name": "mlp"}, SGD, lr=0.01)
    {'w': SGD(lr=0.01, gclip=0.0), 'b': SGD(lr=0.01, gclip=0.0), 'name': None}
    >>> from knetc import schedules
    >>> optimizers([np.zeros(2)], AdamW(lr=schedules.cosine(0.01, total=100)))
    [AdamW(lr=cosine(0.01, total=100, min_lr=0.0), beta1=0.9, beta2=0.999, eps=1e-08, weight_decay=0.01, gclip=0.0)]
    """  # noqa: E501
    if isinstance(opt, Optimizer):
        if kw:
            raise TypeError("keyword arguments are only allowed with an optimizer class")
        make = opt.clone
    else:
        make = lambda: opt(**kw)  # noqa: E731
    return _make(w, make)


def _make(w, make):
    t = type(w)
    if t is not list and t is not tuple and t is not dict and tree.node_type(t):
        # a NamedTuple, dataclass or registered class: the same class around the optimizers
        children, aux = tree.node_flatten(w)
        return tree.node_unflatten(t, aux, [_make(x, make) for x in children])
    if isinstance(w, list):
        return [_make(x, make) for x in w]
    if isinstance(w, tuple):
        return tuple(_make(x, make) for x in w)
    if isinstance(w, dict):
        return {k: _make(x, make) for k, x in w.items()}
    if _is_array(w) or _is_float_leaf(w):
        return make()
    return None


def update(w: Any, g: Any, opt: Any = None, **kw: Any) -> Any:
    """Update parameters ``w`` in place from gradients ``g`` with optimizers ``opt``; return ``w``.

    ``w``, ``g`` and ``opt`` are matching nested lists/tuples/dicts, NamedTuples, dataclasses and
    registered classes (``opt`` as made by ``optimizers``; a gradient has its parameter's type).
    ``g`` entries that are None are skipped, and dict gradients may have fewer keys than ``w``.
    A float leaf of a list, dict or mutable dataclass is replaced in its container; a float leaf
    inside a tuple (or a NamedTuple, a frozen dataclass) raises ``TypeError`` (they are
    immutable: use a list or an array).

    ``opt`` may also be a single optimizer instance or class, or None for ``SGD(**kw)``, as in
    Knet's two-argument ``update!(w, g; lr=0.1)``.  Broadcasting one optimizer over several arrays
    is only allowed for the stateless ``SGD`` (its step count ``t`` then advances once per call);
    use ``optimizers(w, Adam)`` for stateful ones.  A stateful class with a single array would
    lose its state on every call, so it is refused (and so would a schedule's step count: keep
    the optimizers).  For a bare float ``w`` the new float is returned.

    >>> w = [np.ones(2), np.zeros(1)]
    >>> opts = optimizers(w, SGD, lr=0.5)
    >>> update(w, [np.ones(2), None], opts)
    [array([0.5, 0.5]), array([0.])]
    >>> update(np.ones(2), np.ones(2), lr=0.25)
    array([0.75, 0.75])
    """
    if isinstance(opt, (list, tuple, dict)) and _planned(w, g, opt):
        return w
    if opt is None:
        opt = SGD(**kw)
    elif isinstance(opt, type) and issubclass(opt, Optimizer):
        if not opt.stateless:
            raise TypeError(f"update(w, g, {opt.__name__}) would start a fresh {opt.__name__} "
                            f"state on every call; create them once with opts = optimizers(w, "
                            f"{opt.__name__}) and call update(w, g, opts)")
        opt = opt(**kw)
    elif kw:
        raise TypeError("keyword arguments are only allowed when opt is None or a class")
    return _walk(w, g, opt, "w", None)


def _broadcast_ok(opt: Optimizer, w: Any, where: str) -> None:
    if not opt.stateless:
        raise TypeError(f"one {type(opt).__name__} cannot be shared by all arrays of the "
                        f"{type(w).__name__} at {where}; use opts = optimizers(w, "
                        f"{type(opt).__name__}) to get one per array")


def _walk(w, g, opt, where, at):
    """The general update: walks the three structures, checking each step (the plan's fallback)."""
    if g is None:
        return w
    if isinstance(w, (list, tuple, dict)):
        if isinstance(opt, Optimizer):
            _broadcast_ok(opt, w, where)
            if at is None:  # a shared optimizer counts one step for the whole structure
                at = opt._tick()
        if isinstance(w, dict):
            if not isinstance(g, dict):
                raise TypeError(f"gradient at {where} is a {type(g).__name__}, expected a dict")
            if not isinstance(opt, (Optimizer, dict)) or (
                    isinstance(opt, dict) and not set(g) <= set(opt)):
                raise ValueError(f"optimizers at {where} do not match the parameters; "
                                 "make them with optimizers(w, ...)")
            keys = list(g)
        else:
            if not isinstance(g, (list, tuple)) or len(g) != len(w):
                raise ValueError(f"gradient at {where} does not match the {type(w).__name__} "
                                 f"of length {len(w)}")
            if not isinstance(opt, Optimizer) and (not isinstance(opt, (list, tuple))
                                                   or len(opt) != len(w)):
                raise ValueError(f"optimizers at {where} do not match the parameters; "
                                 "make them with optimizers(w, ...)")
            keys = range(len(w))
        for k in keys:
            sub = f"{where}[{k!r}]"
            ok = opt if isinstance(opt, Optimizer) else opt[k]
            if isinstance(w, tuple) and _is_float_leaf(w[k]) and g[k] is not None:
                raise TypeError(f"cannot update the float {sub} inside a tuple (tuples are "
                                "immutable); hold it in a list, or as an array")
            new = _walk(w[k], g[k], ok, sub, at if ok is opt else None)
            if new is not w[k]:
                w[k] = new
        return w
    t = type(w)
    if t not in _LEAVES and tree.node_type(t):
        return _walk_node(w, g, opt, where, at)
    if not isinstance(opt, Optimizer):
        raise TypeError(f"no optimizer for the parameter at {where} (got {opt!r})")
    if not (_is_array(w) or _is_float_leaf(w)):
        raise TypeError(f"cannot update the {type(w).__name__} at {where}: parameters must be "
                        "arrays or floats")
    return opt._update(w, g, at)


_LEAVES = frozenset([np.ndarray, float, int, bool, str, type(None)])


def _walk_node(w, g, opt, where, at):
    """The general update of a dataclass or registered object (NamedTuples walk as tuples): its
    children walked in place; a new float is set on a (mutable) dataclass's field."""
    t = type(w)
    if isinstance(opt, Optimizer):
        _broadcast_ok(opt, w, where)
        if at is None:  # a shared optimizer counts one step for the whole structure
            at = opt._tick()
    elif type(opt) is not t:
        raise ValueError(f"optimizers at {where} do not match the parameters; "
                         "make them with optimizers(w, ...)")
    if type(g) is not t:
        raise TypeError(f"gradient at {where} is a {type(g).__name__}, expected a {t.__name__}")
    ws = tree.node_children(w)
    gs = tree.node_children(g)
    os_ = [opt] * len(ws) if isinstance(opt, Optimizer) else tree.node_children(opt)
    if len(gs) != len(ws) or len(os_) != len(ws):
        raise ValueError(f"gradient or optimizers at {where} do not match the {t.__name__}")
    fields = tree.fields_of(t)
    frozen = fields is None or getattr(getattr(t, "__dataclass_params__", None), "frozen", False)
    for i, (wk, gk, ok) in enumerate(zip(ws, gs, os_)):
        sub = f"{where}.{fields[0][i]}" if fields is not None else f"{where}[{i}]"
        if frozen and _is_float_leaf(wk) and gk is not None:
            raise TypeError(f"cannot update the float {sub} inside a {t.__name__} (it cannot be "
                            "replaced in place); hold it in a list, or as an array")
        new = _walk(wk, gk, ok, sub, at if ok is opt else None)
        if new is not wk:
            setattr(w, fields[0][i], new)
    return w


# ----- update plans ----------------------------------------------------------------------------
#
# A plan is a function generated for one structure of (w, opts): it checks that w and opts still
# have that structure (node types, lengths, dict keys) and that g matches it, and returns the
# leaves as three tuples, or 1 when w/opts changed (build a new plan), or 2 when g does not fit
# (a gradient with fewer dict keys, a None subtree, a mistake): the general walk handles those
# and raises the errors.  Leaves are read on every call, so a plan never holds a stale array.

_PLANS: dict[tuple[int, int], Callable] = {}
_MAX_PLANS = 64
_CONTAINERS = (list, tuple, dict)


class _NoPlan(Exception):
    """The structure is one the general walk handles (or rejects) itself."""


def _plan(w: Any, opt: Any) -> Callable:
    """Generate the plan of this structure of (w, opt): ``run(w, opt, g)`` returns 0 when it has
    done the update, 1 when w or opt no longer has this structure (nothing done), 2 when g does
    not fit it (nothing done).  Raises _NoPlan for structures left to the general walk."""
    env: dict[str, Any] = {"_SEQ": (list, tuple), "_leaf": _leaf}
    wlines: list[str] = []   # check w and opt, read their leaves
    glines: list[str] = []   # check g, read its leaves
    steps: list[str] = []    # update each leaf
    count = itertools.count()

    def const(v):
        name = f"_c{len(env)}"
        env[name] = v
        return name

    def tname(x):
        t = type(x)
        return t.__name__ if t in _CONTAINERS else const(t)

    def visit(x, o, path, wx, ox, gx):
        n = len(x)
        if isinstance(x, (list, tuple)):
            if not isinstance(o, (list, tuple)) or len(o) != n:
                raise _NoPlan
            keys: Any = range(n)
            glines.append(f"if not isinstance({gx}, _SEQ) or len({gx}) != {n}: return 2")
        else:
            if not isinstance(o, dict) or len(o) != n or set(o) != set(x):
                raise _NoPlan
            keys = list(x)
            glines.append(f"if not isinstance({gx}, dict) or len({gx}) != {n}: return 2")
        wlines.append(f"if type({wx}) is not {tname(x)} or len({wx}) != {n} or "
                      f"type({ox}) is not {tname(o)} or len({ox}) != {n}: return 1")
        for k in keys:
            kx = repr(k) if type(k) is int or type(k) is str else const(k)
            xk, ok = x[k], o[k]
            i = next(count)
            if isinstance(xk, _CONTAINERS):
                wlines.append(f"w{i} = {wx}[{kx}]; o{i} = {ox}[{kx}]")
                glines.append(f"g{i} = {gx}[{kx}]")
                visit(xk, ok, path + (k,), f"w{i}", f"o{i}", f"g{i}")
            elif isinstance(ok, Optimizer) and (_is_array(xk) or _is_float_leaf(xk)):
                wlines.append(f"p{i} = {wx}[{kx}]; x{i} = {ox}[{kx}]")
                glines.append(f"d{i} = {gx}[{kx}]")
                steps.extend([
                    f"if d{i} is not None:",
                    f"    if getattr(x{i}, '_ready', None) is p{i} and type(d{i}) is type(p{i}) "
                    f"and d{i}.shape == p{i}.shape:",
                    f"        x{i}._apply(p{i}, d{i})",
                    "    else:",
                    f"        _leaf(w, {const(path + (k,))}, p{i}, x{i}, d{i})"])
            elif ok is None and not (_is_array(xk) or _is_float_leaf(xk)):
                if isinstance(x, dict):
                    wlines.append(f"{wx}[{kx}]; {ox}[{kx}]")   # the key is still there
                glines.append(f"if {gx}[{kx}] is not None: return 2")
            else:
                raise _NoPlan

    visit(w, opt, (), "w", "o", "g")
    src = ["def _run(w, o, g):", "    try:"]
    src += [f"        {s}" for s in wlines]
    src += ["    except KeyError:", "        return 1", "    try:"]
    src += [f"        {s}" for s in glines]
    src += ["    except KeyError:", "        return 2"]
    src += [f"    {s}" for s in steps]
    src += ["    return 0"]
    source = "\n".join(src) + "\n"
    exec(compile(source, "<knetc.optim update plan>", "exec"), env)  # noqa: S102
    run = env["_run"]
    run.source = source
    return run


def _planned(w: Any, g: Any, opt: Any) -> bool:
    """Update through the plan for (w, opt); False (nothing done) when the walk must do it."""
    key = (id(w), id(opt))
    run = _PLANS.get(key)
    done = run(w, opt, g) if run is not None else 1
    if done == 1:
        try:
            run = _plan(w, opt)
        except _NoPlan:
            return False
        if len(_PLANS) >= _MAX_PLANS:
            del _PLANS[next(iter(_PLANS))]
        _PLANS[key] = run
        done = run(w, opt, g)
    return done == 0


def _leaf(w: Any, path: tuple, p: Any, o: Any, d: Any) -> None:
    """One leaf of a plan that the fast path does not take: through the general walk."""
    parent = w
    for k in path[:-1]:
        parent = parent[k]
    where = "w" + "".join(f"[{k!r}]" for k in path)
    if isinstance(parent, tuple) and _is_float_leaf(p):
        raise TypeError(f"cannot update the float {where} inside a tuple (tuples are "
                        "immutable); hold it in a list, or as an array")
    new = _walk(p, d, o, where, None)
    if new is not p:
        parent[path[-1]] = new


# ----- clipping by the global norm ---------------------------------------------------------------

def _leaf_norm(x: Any, where: Any) -> float:
    if type(x) is SparseRows:
        x = x.coalesce()[1]
    if _is_array(x):
        xp = array_module(x)
        r = x.ravel()
        if r.dtype.kind == "f" and r.dtype.itemsize < 4:   # float16: no overflow in the sum
            r = r.astype(np.float32)
        if r.dtype.kind == "c":
            return float(xp.linalg.norm(r))
        return math.sqrt(float(xp.dot(r, r)))
    if isinstance(x, (int, float, np.number)) and not isinstance(x, bool):
        return abs(float(x))
    raise TypeError(f"clip_grad_norm: the gradient leaf at {list(where)} is a "
                    f"{type(x).__name__}, not an array or a number")


def clip_grad_norm(g: Any, max_norm: float, *, error_if_nonfinite: bool = False) -> float:
    """Clip gradients by their global L2 norm, in place; return the norm before clipping.

    As ``torch.nn.utils.clip_grad_norm_``: the norm is taken over ALL leaves of the gradient
    structure ``g`` together (nested lists/tuples/dicts, and the node types of ``knetc.tree``;
    None leaves are skipped).  When it exceeds ``max_norm`` every leaf is multiplied by
    ``max_norm / (norm + 1e-6)``: arrays in place, Python floats replaced in their list or dict.
    Knet's ``gclip=`` on an optimizer clips each array by its own norm instead.

    ``error_if_nonfinite=True`` raises RuntimeError when the norm is inf or NaN (else such a
    norm is returned and nothing is scaled).

    >>> g = [np.array([3.0, 0.0]), {"b": np.array([4.0])}, None]
    >>> clip_grad_norm(g, 1.0)
    5.0
    >>> g[0].round(6), g[1]["b"].round(6)
    (array([0.6, 0. ]), array([0.8]))
    """
    pairs = [(p, x) for p, x in tree.paths(g) if x is not None]
    total = math.hypot(*[_leaf_norm(x, p) for p, x in pairs])
    if not math.isfinite(total):
        if error_if_nonfinite:
            raise RuntimeError(f"clip_grad_norm: the total norm of the gradients is {total}")
        return total
    if total > max_norm:
        scale = max_norm / (total + 1e-6)
        numbers = []   # (container, key, number): checked before anything is scaled
        for path, x in pairs:
            if not _is_array(x):
                if not path:
                    raise TypeError("clip_grad_norm: g is a bare number; it cannot be scaled "
                                    "in place (put it in a list or use an array)")
                parent = tree.get(g, path[:-1])
                if isinstance(parent, tuple):
                    raise TypeError(f"clip_grad_norm: cannot scale the number at {list(path)} "
                                    "inside a tuple (tuples are immutable)")
                numbers.append((parent, path[-1], x))
        for _, x in pairs:
            if _is_array(x):
                x *= scale
        for parent, k, x in numbers:
            parent[k] = type(x)(x * scale) if isinstance(x, np.number) else x * scale
    return total
