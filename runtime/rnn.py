"""Knet's recurrent networks (``rnninit`` / ``rnnforw``) with a hand-written backward pass.

This is the CPU (NumPy) re-creation of Knet's cuDNN-backed RNNs. All array code goes through
:func:`knetc.runtime.backend.array_module`, so the same functions run on CuPy arrays.

Shapes (Knet's, reversed, time first)
-------------------------------------
* input ``x``: ``(T, B, X)``, or a single time step ``(B, X)`` (then ``y`` is ``(B, D*H)``);
* output ``y``: ``(T, B, D*H)``: the hidden states of the last layer at every step; a
  bidirectional layer concatenates its forward and backward outputs on the last axis;
* hidden and cell states ``hx, cx, hy, cy``: ``(L*D, B, H)``, pseudo-layer ``j = layer*D + dir``
  (forward and backward directions alternate, as in Knet, cuDNN and PyTorch);

with ``T`` steps, batch ``B``, ``X = inputSize``, ``H = hiddenSize``, ``L = numLayers`` and
``D = 2`` for bidirectional RNNs, else ``1``.

Equations (cuDNN's; ``W`` multiplies the layer input, ``R`` the previous hidden state)
--------------------------------------------------------------------------------------
* ``'relu'``, ``'tanh'``: ``h' = f(W x + bW + R h + bR)``
* ``'lstm'`` (gates i, f, g, o)::

      i = sigm(Wi x + bWi + Ri h + bRi)      f = sigm(Wf x + bWf + Rf h + bRf)
      g = tanh(Wg x + bWg + Rg h + bRg)      o = sigm(Wo x + bWo + Ro h + bRo)
      c' = f * c + i * g                     h' = o * tanh(c')

* ``'gru'`` (gates r, z, n)::

      r = sigm(Wr x + bWr + Rr h + bRr)      z = sigm(Wz x + bWz + Rz h + bRz)
      n = tanh(Wn x + bWn + r * (Rn h + bRn))
      h' = (1 - z) * n + z * h

  (identical to ``torch.nn.GRU``).

Weight layout (Knet's ``rnnparam`` layout, which is cuDNN's canonical one)
-------------------------------------------------------------------------
``w`` is one flat 1-D array. With ``G`` gates (1 for relu/tanh, 4 for lstm, 3 for gru) and
``N = 2G`` parameter ids per pseudo-layer:

1. **all matrices first**, pseudo-layer by pseudo-layer (``j = layer*D + dir``); within a
   pseudo-layer the ``G`` input matrices (ids ``0..G-1``, gate order above), then the ``G``
   recurrent matrices (ids ``G..2G-1``). An input matrix is ``(H, Xin)`` row-major, with
   ``Xin = X`` for layer 0 and ``D*H`` above; a recurrent matrix is ``(H, H)``;
2. **then all bias vectors**, pseudo-layer by pseudo-layer; within one the ``G`` input biases
   ``bW`` (ids ``0..G-1``) then the ``G`` recurrent biases ``bR`` (ids ``G..2G-1``), each ``(H,)``.

A matrix ``M`` of shape ``(H, Xin)`` acts as ``M @ x`` on a column, i.e. ``xb @ M.T`` on a batch
``xb`` of shape ``(B, Xin)``: Knet's (transposed) ``(Xin, H)`` matrix with the shape reversed.
Because the gate matrices of one pseudo-layer are adjacent, the ``G`` input matrices form one
``(G*H, Xin)`` block: exactly ``torch.nn.LSTM``'s ``weight_ih_l{k}`` (likewise ``weight_hh``,
``bias_ih`` = the ``bW`` block, ``bias_hh`` = the ``bR`` block). The total size is
``sum over layers of G*D*(H*Xin + H*H + 2H)``, Knet's ``getRNNParamsSize``.

The reserve keeps references to ``x`` and to the top layer's output (``y`` itself when the RNN is
unidirectional), as cuDNN's reserve space does: do not modify them in place between
``rnnforw_reserve`` and ``rnnback``.
"""
from __future__ import annotations

import dataclasses
import sys
import threading
import functools
from typing import Any, Optional, Sequence

import numpy as np

from .backend import array_module

__all__ = [
    "RNN", "rnninit", "rnnparam", "rnnparams", "rnnforw", "rnnforw_reserve", "rnnback",
    "RNNReserve", "training", "set_training",
]

_MODES = ("relu", "tanh", "lstm", "gru")
_GATES = {"relu": 1, "tanh": 1, "lstm": 4, "gru": 3}


# --------------------------------------------------------------------------- training flag



# One training flag for the whole runtime: on while knetc differentiates (see prims.training).
from .prims import training, training_mode as set_training  # noqa: E402


# --------------------------------------------------------------------------- the spec


@dataclasses.dataclass(frozen=True)
class RNN:
    """Immutable, hashable description of an RNN (what Knet's ``RNN`` struct holds besides ``w``).

    mode: ``'relu'``, ``'tanh'``, ``'lstm'`` or ``'gru'``; inputSize ``X``; hiddenSize ``H``;
    numLayers ``L``; bidirectional; dropout probability applied to the input of every layer but
    the first while :func:`training` is on; dtype of the weights.
    """

    mode: str
    inputSize: int
    hiddenSize: int
    numLayers: int = 1
    bidirectional: bool = False
    dropout: float = 0.0
    dtype: np.dtype = np.dtype(np.float32)

    def __post_init__(self) -> None:
        mode = str(self.mode).lstrip(":").lower()
        if mode not in _MODES:
            raise ValueError(f"RNN mode must be one of {_MODES}, got {self.mode!r}")
        object.__setattr__(self, "mode", mode)
        for name in ("inputSize", "hiddenSize", "numLayers"):
            v = int(getattr(self, name))
            if v < 1:
                raise ValueError(f"RNN {name} must be >= 1, got {v}")
            object.__setattr__(self, name, v)
        object.__setattr__(self, "bidirectional", bool(self.bidirectional))
        p = float(self.dropout)
        if not 0.0 <= p < 1.0:
            raise ValueError(f"RNN dropout must be in [0, 1), got {p}")
        object.__setattr__(self, "dropout", p)
        object.__setattr__(self, "dtype", np.dtype(self.dtype))

    @property
    def numDirections(self) -> int:
        """``D``: 2 for a bidirectional RNN, else 1."""
        return 2 if self.bidirectional else 1

    @property
    def numGates(self) -> int:
        """``G``: 1 (relu, tanh), 4 (lstm) or 3 (gru)."""
        return _GATES[self.mode]

    @property
    def numIds(self) -> int:
        """Parameter ids per pseudo-layer: ``2G`` (input then recurrent)."""
        return 2 * _GATES[self.mode]

    @property
    def numPseudoLayers(self) -> int:
        """``L*D``: the leading dimension of ``hx``/``cx``."""
        return self.numLayers * self.numDirections

    @property
    def paramSize(self) -> int:
        """Length of the flat weight vector ``w``."""
        return _layout(self)[1]

    def __repr__(self) -> str:
        s = f"{self.mode.upper()}(input={self.inputSize},hidden={self.hiddenSize}"
        if self.bidirectional:
            s += ",bidirectional"
        if self.numLayers > 1:
            s += f",layers={self.numLayers}"
        if self.dropout > 0:
            s += f",dropout={self.dropout}"
        if self.dtype != np.float32:
            s += f",{self.dtype.name}"
        return s + ")"


@functools.lru_cache(maxsize=None)
def _layout(r: RNN) -> tuple[tuple[tuple[int, int, int, int, int], ...], int]:
    """Per pseudo-layer ``(wx_offset, wh_offset, bw_offset, br_offset, Xin)``, and the total size."""
    G, H, D = r.numGates, r.hiddenSize, r.numDirections
    mats = []
    off = 0
    for layer in range(r.numLayers):
        xin = r.inputSize if layer == 0 else D * H
        for _ in range(D):
            wx = off
            off += G * H * xin
            wh = off
            off += G * H * H
            mats.append((wx, wh, xin))
    out = []
    for j, (wx, wh, xin) in enumerate(mats):
        bw = off + j * 2 * G * H
        out.append((wx, wh, bw, bw + G * H, xin))
    return tuple(out), off + len(mats) * 2 * G * H


def _blocks(r: RNN, w: Any, j: int) -> tuple[Any, Any, Any, Any]:
    """Views ``(Wx (G*H, Xin), Wh (G*H, H), bW (G*H,), bR (G*H,))`` of pseudo-layer ``j`` in ``w``."""
    G, H = r.numGates, r.hiddenSize
    wx, wh, bw, br, xin = _layout(r)[0][j]
    GH = G * H
    return (w[wx:wx + GH * xin].reshape(GH, xin), w[wh:wh + GH * H].reshape(GH, H),
            w[bw:bw + GH], w[br:br + GH])


# --------------------------------------------------------------------------- init and params


def rnninit(inputSize: int, hiddenSize: int, *, rnnType: str = "lstm", numLayers: int = 1,
            bidirectional: bool = False, dropout: float = 0.0, dtype: Any = np.float32,
            seed: Optional[int] = None) -> tuple[RNN, np.ndarray]:
    """Create an RNN spec and its flat weight vector, initialised like Knet.

    Every matrix is xavier-uniform on its own, ``U(-s, s)`` with ``s = sqrt(6 / (H + Xin))``; every
    bias is zero, except for LSTMs where, as in Knet (``finit=ones`` applied to ids 2 and 6,
    1-based), **both** forget-gate biases (input ``bWf`` and recurrent ``bRf``) are 1, so the
    forget gate starts with a total bias of 2. Returns ``(r, w)`` with ``w`` a NumPy array of
    ``r.paramSize`` elements (see the module docstring for its layout). The weights are drawn
    from knetc's seeded generator, like the other initializers (``knetc.init.seed(n)`` makes them
    reproducible); ``seed=n`` uses a generator of its own seeded with ``n`` instead.
    """
    from ..init import default_rng  # knetc.init; imported here to keep package import order free
    r = RNN(rnnType, inputSize, hiddenSize, numLayers, bidirectional, dropout, dtype)
    rng = np.random.default_rng(seed) if seed is not None else default_rng()
    w = np.zeros(r.paramSize, dtype=r.dtype)
    for a in rnnparams(r, w):
        if a.ndim == 2:
            fanout, fanin = a.shape
            s = np.sqrt(6.0 / (fanin + fanout))
            a[...] = (2 * s) * rng.random(a.shape) - s
    if r.mode == "lstm":
        for j in range(r.numPseudoLayers):
            for i in (1, 5):  # forget gate: input bias and recurrent bias
                rnnparam(r, w, j, i, 1)[...] = 1
    return r, w


def rnnparam(r: RNN, w: Any, layer: int, id: int, par: int) -> Any:
    """A view of one weight matrix or bias vector of ``w`` (writable when ``w`` is).

    Indices are 0-based (Knet's are 1-based):

    * ``layer``: pseudo-layer ``0 .. L*D-1``; for a bidirectional RNN forward and backward
      alternate (``layer = 2*l + dir``);
    * ``id``: ``0 .. G-1`` the input (``W``) parameters of each gate, ``G .. 2G-1`` the recurrent
      (``R``) ones; gates in cuDNN order: relu/tanh ``0, 1``; LSTM i, f, g, o = ``0..3`` (input),
      ``4..7`` (recurrent); GRU r, z, n = ``0..2``, ``3..5``;
    * ``par``: ``0`` the matrix, shape ``(H, Xin)`` for input ids (``Xin = X`` on layer 0, ``D*H``
      above) and ``(H, H)`` for recurrent ids; ``1`` the bias, shape ``(H,)``.
    """
    LD, N, H = r.numPseudoLayers, r.numIds, r.hiddenSize
    if not (0 <= layer < LD and 0 <= id < N and par in (0, 1)):
        raise IndexError(f"rnnparam({r}, layer={layer}, id={id}, par={par}): layer must be in "
                         f"0..{LD - 1}, id in 0..{N - 1}, par 0 (matrix) or 1 (bias)")
    G = r.numGates
    wx, wh, bw, br, xin = _layout(r)[0][layer]
    if par == 0:
        if id < G:
            o = wx + id * H * xin
            return w[o:o + H * xin].reshape(H, xin)
        o = wh + (id - G) * H * H
        return w[o:o + H * H].reshape(H, H)
    o = bw + id * H  # the bR block directly follows the bW block
    return w[o:o + H]


def rnnparams(r: RNN, w: Any) -> list[Any]:
    """All matrices then all biases, each sorted by ``(layer, id)`` (Knet's ``rnnparams`` order)."""
    return [rnnparam(r, w, j, i, par) for par in (0, 1)
            for j in range(r.numPseudoLayers) for i in range(r.numIds)]


# --------------------------------------------------------------------------- elementwise helpers


def _sigmoid_(xp: Any, a: Any) -> None:
    """In place logistic sigmoid of ``a`` (a view is fine), as ``(tanh(a/2) + 1)/2``.

    Stable for any ``a`` and faster than ``scipy.special.expit``: NumPy's tanh is vectorised.
    """
    a *= 0.5
    xp.tanh(a, out=a)
    a *= 0.5
    a += 0.5


# --------------------------------------------------------------------------- one direction, forward


def _steps(T: int, reverse: bool) -> range:
    return range(T - 1, -1, -1) if reverse else range(T)


def _cell_forward(mode: str, xp: Any, Wx: Any, Wh: Any, bW: Any, bR: Any, xin: Any, h0: Any,
                  c0: Any, reverse: bool) -> tuple[Any, Any, Any, dict]:
    """Run one direction of one layer over all steps: ``(Y (T,B,H), hT, cT, cache)``.

    The input part ``xin @ Wx.T`` of all steps is one matmul; only ``h @ Wh.T`` loops over time.
    ``Y[t]`` is kept at its own time index also for the reverse direction.
    """
    T, B, Xin = xin.shape
    H = Wh.shape[1]
    dt = xp.result_type(Wx.dtype, xin.dtype)
    xin2 = xin.reshape(T * B, Xin)
    WhT = Wh.T
    h, c = h0, c0
    cache: dict = {"h0": h0, "c0": c0}
    if mode == "lstm":
        # sigm(a) = s*tanh(s*a) + s with s = 1/2, tanh(a) = 1*tanh(1*a) + 0: pre-scaling the
        # pre-activations by ``sc`` (folded into the weights and biases, exact: powers of two)
        # turns all four gates into one tanh over a contiguous row.
        sc = xp.full((4 * H,), 0.5, dt)
        sc[2 * H:3 * H] = 1
        off = sc.copy()
        off[2 * H:3 * H] = 0
        GX = xp.matmul(xin2, (Wx * sc[:, None]).T, out=_pooled(xp, "GX", (T * B, 4 * H), dt))
        GX += (bW + bR) * sc
        WhT = (Wh * sc[:, None]).T
        G = GX.reshape(T, B, 4 * H)  # becomes the gate activations i, f, g, o
        Y = _pooled(xp, "Y", (T, B, H), dt)
        C = _pooled(xp, "C", (T, B, H), dt)
        TC = _pooled(xp, "TC", (T, B, H), dt)
        tmp = xp.empty((B, 4 * H), dt)
        for t in _steps(T, reverse):
            g = G[t]
            xp.matmul(h, WhT, out=tmp)
            g += tmp
            xp.tanh(g, out=g)
            g *= sc
            g += off
            ct = C[t]
            xp.multiply(g[:, H:2 * H], c, out=ct)
            ct += g[:, :H] * g[:, 2 * H:3 * H]
            xp.tanh(ct, out=TC[t])
            xp.multiply(g[:, 3 * H:], TC[t], out=Y[t])
            h, c = Y[t], ct
        cache.update(G=G, C=C, TC=TC, Y=Y)
        return Y, h, c, cache
    if mode == "gru":
        GX = xp.matmul(xin2, Wx.T)
        GX += bW
        GX = GX.reshape(T, B, 3 * H)  # input part (with bW), no recurrent bias
        A = xp.empty((T, B, 3 * H), dt)  # activations r, z, n
        HN = xp.empty((T, B, H), dt)  # Rn h + bRn
        Y = xp.empty((T, B, H), dt)
        tmp = xp.empty((B, 3 * H), dt)
        for t in _steps(T, reverse):
            xp.matmul(h, WhT, out=tmp)
            tmp += bR
            a = A[t]
            rz = a[:, :2 * H]
            xp.add(GX[t, :, :2 * H], tmp[:, :2 * H], out=rz)
            _sigmoid_(xp, rz)
            HN[t] = tmp[:, 2 * H:]
            n = a[:, 2 * H:]
            xp.multiply(a[:, :H], tmp[:, 2 * H:], out=n)
            n += GX[t, :, 2 * H:]
            xp.tanh(n, out=n)
            yt = Y[t]
            xp.subtract(h, n, out=yt)
            yt *= a[:, H:2 * H]
            yt += n
            h = yt
        cache.update(A=A, HN=HN, Y=Y)
        return Y, h, None, cache
    # relu / tanh: the pre-activation buffer becomes the output
    GX = xp.matmul(xin2, Wx.T)
    GX += bW + bR
    Y = GX.reshape(T, B, H)
    tmp = xp.empty((B, H), dt)
    for t in _steps(T, reverse):
        yt = Y[t]
        xp.matmul(h, WhT, out=tmp)
        yt += tmp
        if mode == "tanh":
            xp.tanh(yt, out=yt)
        else:
            xp.maximum(yt, 0, out=yt)
        h = yt
    cache.update(Y=Y)
    return Y, h, None, cache


# --------------------------------------------------------------------------- one direction, backward


_workspace = threading.local()


def _pooled(xp, name: str, shape: tuple, dtype) -> Any:
    """A buffer for ``name`` (contents undefined) reused across steps once nothing refers to it.

    A char-LM step allocates ~400 MB of gate activations and gradients; fresh allocations of that
    size cost more in page faults than the arithmetic written into them. A pooled NumPy buffer is
    handed out again only when its reference count shows that no array, view or reserve holds it.
    CuPy's memory pool already reuses device memory, so it gets a fresh array.
    """
    if xp is not np:
        return xp.empty(shape, dtype)
    pools = getattr(_workspace, "pools", None)
    if pools is None:
        pools = _workspace.pools = {}
    key = (name, shape, np.dtype(dtype))
    bufs = pools.get(key)
    if bufs is None:
        for k in [k for k in pools if k[0] == name]:   # one shape per name: bounded memory
            del pools[k]
        bufs = pools[key] = []
    for buf in bufs:
        if sys.getrefcount(buf) == 3:   # held only by the list, this loop and getrefcount
            return buf
    buf = np.empty(shape, dtype)
    if len(bufs) < 4:
        bufs.append(buf)
    return buf


# LSTM states of at most this many numbers (batch x hidden) take the backward whose per-step work
# is 7 small calls (the recurrence-free factors computed for all steps first): there the calls'
# overhead dominates. Larger ones loop over steps with every factor computed in place, which
# moves less memory (measured: 1 x 50 (a tagger) 35% faster; 256 x 334 (the char LM) 12% slower).
_SMALL_STATE = 8192


def _cell_backward(mode: str, xp: Any, Wx: Any, Wh: Any, xin: Any, cache: dict, dY: Any,
                   dhT: Any, dcT: Any, reverse: bool) -> tuple[Any, Any, Any, Any, Any, Any, Any]:
    """Backward of :func:`_cell_forward`: ``(dWx, dWh, dbW, dbR, dxin, dh0, dc0)``.

    ``dY`` (T,B,H), ``dhT`` and ``dcT`` (B,H) may be None (zero). The per-step loop only produces
    the pre-activation gradients; the weight, bias and input gradients are one matmul/sum each.
    """
    T, B, Xin = xin.shape
    H = Wh.shape[1]
    Y = cache["Y"]
    h0 = cache["h0"]
    dt = Y.dtype
    dh_c = xp.zeros((B, H), dt) if dhT is None else dhT
    steps = _steps(T, reverse)[::-1]  # the forward order, reversed
    prev = 1 if reverse else -1  # index offset of the previous state

    def hprev(t: int) -> Any:
        s = t + prev
        return h0 if s < 0 or s >= T else Y[s]

    dc0 = None
    if mode == "lstm" and B * H <= _SMALL_STATE:
        G, C, TC, c0 = cache["G"], cache["C"], cache["TC"], cache["c0"]
        dG = _pooled(xp, "dG", (T, B, 4 * H), dt)
        # The factors that do not depend on the recurrence, for all steps at once (a few calls
        # over (T, B, H) instead of a dozen small ones per step); then each step is
        #   do = dh * Ao,  dc = dh * Bc + dc_next,  [di, df, dg] = dc * K,  dc_next = dc * f.
        G4 = G.reshape(T, B, 4, H)
        i, f, gg, o = G4[:, :, 0], G4[:, :, 1], G4[:, :, 2], G4[:, :, 3]
        Ao = _pooled(xp, "bAo", (T, B, H), dt)
        xp.subtract(1, o, out=Ao)
        Ao *= o
        Ao *= TC                                   # tanh(c) o (1 - o)
        Bc = _pooled(xp, "bBc", (T, B, H), dt)
        xp.multiply(TC, TC, out=Bc)
        xp.subtract(1, Bc, out=Bc)
        Bc *= o                                    # o (1 - tanh(c)^2)
        K = _pooled(xp, "bK", (T, B, 3, H), dt)
        Ki, Kf, Kg = K[:, :, 0], K[:, :, 1], K[:, :, 2]
        xp.subtract(1, i, out=Ki)
        Ki *= i
        Ki *= gg                                   # g i (1 - i)
        xp.subtract(1, f, out=Kf)
        Kf *= f                                    # c_prev f (1 - f), c_prev: the step before
        if reverse:
            Kf[:-1] *= C[1:]
            Kf[-1] *= c0
        else:
            Kf[1:] *= C[:-1]
            Kf[0] *= c0
        xp.multiply(gg, gg, out=Kg)
        xp.subtract(1, Kg, out=Kg)
        Kg *= i                                    # (1 - g^2) i
        dG4 = dG.reshape(T, B, 4, H)
        dc_c = xp.zeros((B, H), dt) if dcT is None else dcT
        dc = xp.empty((B, H), dt)
        for t in steps:
            dh = dh_c if dY is None else dh_c + dY[t]
            xp.multiply(dh, Ao[t], out=dG4[t, :, 3])
            xp.multiply(dh, Bc[t], out=dc)
            dc += dc_c
            xp.multiply(dc[:, None, :], K[t], out=dG4[t, :, :3])
            dc_c = dc * f[t]
            dh_c = xp.matmul(dG[t], Wh)
        dc0 = dc_c
        dGx = dGh = dG
    elif mode == "lstm":
        G, C, TC, c0 = cache["G"], cache["C"], cache["TC"], cache["c0"]
        dG = _pooled(xp, "dG", (T, B, 4 * H), dt)
        dc_c = xp.zeros((B, H), dt) if dcT is None else dcT
        for t in steps:
            dh = dh_c if dY is None else dh_c + dY[t]
            g = G[t]
            i, f, gg, o = g[:, :H], g[:, H:2 * H], g[:, 2 * H:3 * H], g[:, 3 * H:]
            tc = TC[t]
            s = t + prev
            cprev = c0 if s < 0 or s >= T else C[s]
            d = dG[t]
            # output gate
            do = d[:, 3 * H:]
            xp.multiply(dh, tc, out=do)
            do *= o
            do *= 1 - o
            # cell
            dc = dh * o
            dc *= 1 - tc * tc
            dc += dc_c
            di = d[:, :H]
            xp.multiply(dc, gg, out=di)
            di *= i
            di *= 1 - i
            df = d[:, H:2 * H]
            xp.multiply(dc, cprev, out=df)
            df *= f
            df *= 1 - f
            dgg = d[:, 2 * H:3 * H]
            xp.multiply(gg, gg, out=dgg)
            xp.subtract(1, dgg, out=dgg)
            dgg *= i
            dgg *= dc
            dc *= f
            dc_c = dc
            dh_c = xp.matmul(d, Wh)
        dc0 = dc_c
        dGx = dGh = dG
    elif mode == "gru":
        A, HN = cache["A"], cache["HN"]
        dGx = _pooled(xp, "dGx", (T, B, 3 * H), dt)
        dGh = _pooled(xp, "dGh", (T, B, 3 * H), dt)
        for t in steps:
            dh = dh_c if dY is None else dh_c + dY[t]
            a = A[t]
            r, z, n = a[:, :H], a[:, H:2 * H], a[:, 2 * H:]
            dx_, dh_ = dGx[t], dGh[t]
            dan = dx_[:, 2 * H:]
            xp.multiply(n, n, out=dan)
            xp.subtract(1, dan, out=dan)
            dan *= 1 - z
            dan *= dh
            xp.multiply(dan, r, out=dh_[:, 2 * H:])
            dar = dx_[:, :H]
            xp.multiply(dan, HN[t], out=dar)
            dar *= r
            dar *= 1 - r
            daz = dx_[:, H:2 * H]
            xp.subtract(hprev(t), n, out=daz)
            daz *= dh
            daz *= z
            daz *= 1 - z
            dh_[:, :2 * H] = dx_[:, :2 * H]
            dh_c = xp.matmul(dh_, Wh)
            dh_c += dh * z
    else:
        dG = _pooled(xp, "dG", (T, B, H), dt)
        for t in steps:
            d = dG[t]
            if dY is None:
                d[...] = dh_c
            else:
                xp.add(dh_c, dY[t], out=d)
            yt = Y[t]
            if mode == "tanh":
                d *= 1 - yt * yt
            else:
                d *= yt > 0
            dh_c = xp.matmul(d, Wh)
        dGx = dGh = dG
    GH = dGx.shape[2]
    dGx2 = dGx.reshape(T * B, GH)
    xin2 = xin.reshape(T * B, Xin)
    dWx = xp.matmul(dGx2.T, xin2)
    dxin = xp.matmul(dGx2, Wx).reshape(T, B, Xin)
    dbW = dGx2.sum(axis=0)
    dbR = dbW if dGh is dGx else dGh.reshape(T * B, GH).sum(axis=0)
    # dWh = sum_t dGh[t].T @ hprev(t): all steps but the first processed in one matmul
    if T > 1:
        if reverse:
            dWh = xp.matmul(dGh[:-1].reshape((T - 1) * B, GH).T, Y[1:].reshape((T - 1) * B, H))
        else:
            dWh = xp.matmul(dGh[1:].reshape((T - 1) * B, GH).T, Y[:-1].reshape((T - 1) * B, H))
    else:
        dWh = xp.zeros((GH, H), dt)
    first = T - 1 if reverse else 0
    dWh += xp.matmul(dGh[first].T, h0)
    return dWx, dWh, dbW, dbR, dxin, dh_c, dc0


# --------------------------------------------------------------------------- the public API


class RNNReserve:
    """What :func:`rnnback` needs from the forward pass (cuDNN's "reserve space").

    ``inputs[l]``: the input of layer ``l`` after dropout, ``(T, B, Xin)``; ``masks[l]``: the
    scaled dropout mask applied to it (None when no dropout); ``caches[j]``: per pseudo-layer the
    gate activations, states per step and initial states; ``single``: x was one step ``(B, X)``.
    """

    __slots__ = ("inputs", "masks", "caches", "single")

    def __init__(self, inputs: list, masks: list, caches: list, single: bool) -> None:
        self.inputs = inputs
        self.masks = masks
        self.caches = caches
        self.single = single

    def __repr__(self) -> str:
        return f"RNNReserve(layers={len(self.inputs)}, pseudo_layers={len(self.caches)})"


def _check_state(name: str, s: Any, shape: tuple) -> None:
    if s is not None and tuple(s.shape) != shape:
        raise ValueError(f"rnnforw: {name} must have shape {shape} (L*D, B, H), got {tuple(s.shape)}")


def rnnforw_reserve(r: RNN, w: Any, x: Any, hx: Any = None,
                    cx: Any = None) -> tuple[Any, Any, Optional[Any], RNNReserve]:
    """:func:`rnnforw` that also returns the :class:`RNNReserve` needed by :func:`rnnback`."""
    xp = array_module(w, x, hx, cx)
    if xp is not np:  # CuPy arrays: cuDNN when it is there and allowed (runtime/cudnn/rnn.py)
        from .cudnn import rnn as cudnn_rnn
        if cudnn_rnn.usable(r, w, x, hx, cx, training()):
            return cudnn_rnn.forward(r, w, x, hx, cx, training=True)
    single = x.ndim == 2
    if single:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(f"rnnforw: x must be (T, B, X) or (B, X), got shape {tuple(x.shape)}")
    T, B, X = x.shape
    if X != r.inputSize:
        raise ValueError(f"rnnforw: x has {X} features, {r} expects {r.inputSize}")
    if w.ndim != 1 or w.shape[0] != r.paramSize:
        raise ValueError(f"rnnforw: w must be 1-D of length {r.paramSize}, got {tuple(w.shape)}")
    H, D, L, LD = r.hiddenSize, r.numDirections, r.numLayers, r.numPseudoLayers
    _check_state("hx", hx, (LD, B, H))
    lstm = r.mode == "lstm"
    if lstm:
        _check_state("cx", cx, (LD, B, H))
    dt = xp.result_type(w.dtype, x.dtype)
    hy = xp.empty((LD, B, H), dt)
    cy = xp.empty((LD, B, H), dt) if lstm else None
    drop = r.dropout > 0 and training()
    inputs: list = []
    masks: list = []
    caches: list = []
    xin = x
    for layer in range(L):
        mask = None
        if layer > 0 and drop:
            keep = 1.0 - r.dropout
            mask = (xp.random.random_sample(xin.shape) < keep).astype(dt)
            mask *= 1.0 / keep
            xin = xin * mask
        inputs.append(xin)
        masks.append(mask)
        outs = []
        for d in range(D):
            j = layer * D + d
            Wx, Wh, bW, bR = _blocks(r, w, j)
            h0 = hx[j] if hx is not None else xp.zeros((B, H), dt)
            c0 = None
            if lstm:
                c0 = cx[j] if cx is not None else xp.zeros((B, H), dt)
            Y, hT, cT, cache = _cell_forward(r.mode, xp, Wx, Wh, bW, bR, xin, h0, c0, d == 1)
            hy[j] = hT
            if lstm:
                cy[j] = cT
            outs.append(Y)
            caches.append(cache)
        xin = outs[0] if D == 1 else xp.concatenate(outs, axis=2)
    y = xin[0] if single else xin
    return y, hy, cy, RNNReserve(inputs, masks, caches, single)


def rnnforw(r: RNN, w: Any, x: Any, hx: Any = None, cx: Any = None) -> tuple[Any, Any, Optional[Any]]:
    """Run the RNN ``r`` with weights ``w`` on ``x``: ``(y, hy, cy)``.

    ``x``: ``(T, B, X)`` or one step ``(B, X)``; ``hx``, ``cx``: initial hidden / cell states
    ``(L*D, B, H)`` (None: zeros; ``cx`` is only used by LSTMs). ``y``: ``(T, B, D*H)`` (or
    ``(B, D*H)``); ``hy``, ``cy``: final states ``(L*D, B, H)``; ``cy`` is None unless LSTM.
    Dropout ``r.dropout`` hits the input of every layer but the first, only while
    :func:`training` is on.
    """
    if array_module(w, x, hx, cx) is not np:  # CuPy: cuDNN's inference mode when usable
        from .cudnn import rnn as cudnn_rnn
        if cudnn_rnn.usable(r, w, x, hx, cx, training()):
            y, hy, cy, _ = cudnn_rnn.forward(r, w, x, hx, cx, training=False)
            return y, hy, cy
    y, hy, cy, _ = rnnforw_reserve(r, w, x, hx, cx)
    return y, hy, cy


def rnnback(r: RNN, w: Any, x: Any, hx: Any, cx: Any, out: Sequence[Any],
            dout: Optional[Sequence[Any]]) -> tuple[Any, Any, Optional[Any], Optional[Any]]:
    """Gradients of an :func:`rnnforw` call: ``(dw, dx, dhx, dcx)``.

    ``out`` is the 4-tuple ``(y, hy, cy, reserve)`` returned by :func:`rnnforw_reserve` for the
    same ``(r, w, x, hx, cx)``; ``dout = (dy, dhy, dcy)``, any of which may be None (no gradient
    flows from that result). ``dw`` is flat like ``w``; ``dx`` is shaped like ``x``; ``dhx`` is
    None when ``hx`` is None, ``dcx`` when ``cx`` is None or the RNN is not an LSTM.
    """
    reserve = out[3]
    if not isinstance(reserve, RNNReserve):  # the forward ran through cuDNN
        from .cudnn import rnn as cudnn_rnn
        return cudnn_rnn.backward(r, w, x, hx, cx, out, dout)
    dy, dhy, dcy = (None, None, None) if dout is None else tuple(dout)
    xp = array_module(w, x, hx, cx, dy, dhy, dcy)
    lstm = r.mode == "lstm"
    if not lstm:
        dcy = None
    single = reserve.single
    if dy is not None and single:
        dy = dy[None]
    H, D, L = r.hiddenSize, r.numDirections, r.numLayers
    dw = xp.zeros(w.shape, w.dtype)
    dhx = xp.empty(hx.shape, hx.dtype) if hx is not None else None
    dcx = xp.empty(cx.shape, cx.dtype) if (cx is not None and lstm) else None
    dcur = dy
    for layer in range(L - 1, -1, -1):
        xin = reserve.inputs[layer]
        dxin = None
        for d in range(D):
            j = layer * D + d
            Wx, Wh, _, _ = _blocks(r, w, j)
            dY = None if dcur is None else (dcur if D == 1 else dcur[:, :, d * H:(d + 1) * H])
            dWx, dWh, dbW, dbR, dx_d, dh0, dc0 = _cell_backward(
                r.mode, xp, Wx, Wh, xin, reserve.caches[j], dY,
                None if dhy is None else dhy[j], None if dcy is None else dcy[j], d == 1)
            gWx, gWh, gbW, gbR = _blocks(r, dw, j)
            gWx[...] = dWx
            gWh[...] = dWh
            gbW[...] = dbW
            gbR[...] = dbR
            if dhx is not None:
                dhx[j] = dh0
            if dcx is not None:
                dcx[j] = dc0
            if dxin is None:
                dxin = dx_d
            else:
                dxin += dx_d
        mask = reserve.masks[layer]
        if mask is not None:
            dxin *= mask
        dcur = dxin
    dx = dcur[0] if single else dcur
    return dw, dx, dhx, dcx
