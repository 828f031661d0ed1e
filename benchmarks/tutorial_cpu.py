"""One training step of Knet's five tutorial models on CPU: knetc against PyTorch and JAX.

    python benchmarks/tutorial_cpu.py [--quick] [--models housing,softmax,mlp,lenet,charlm]
                                      [--repeat N] [--threads N] [--seqlen T] [--batch B]

For each model one *training step* (gradient of the loss + the optimizer's update of every
parameter) is timed in three frameworks, float32, random data of the tutorial's shapes:

* knetc      ``dw = knetc.grad(loss)(w, x, y); knetc.optim.update(w, dw, opts)``
* torch      eager, the model written with ``torch.nn.functional`` (``torch.lstm`` for the RNN),
             ``loss.backward()`` and a ``torch.optim`` step;
* jax        ``jax.jit`` of one function doing ``jax.value_and_grad`` and a hand-written SGD/Adam
             update (no optax), parameters and optimizer state donated.

The models (Knet.jl's tutorial notebooks and examples, batch first here: ``x @ W`` instead of
``W * x``; SGD 0.1 is Knet's ``sgd`` default, Adam 1e-3 its ``adam`` default):

========  ================================================================  ==========  ========
model     layers                                                            batch       update
========  ================================================================  ==========  ========
housing   linear regression 13 -> 1, mean squared error                    506 (all)   SGD 0.1
softmax   MNIST softmax classifier 784 -> 10, nll                          100         SGD 0.1
mlp       784 -> 64 relu -> 10, nll                                        100         SGD 0.1
lenet     conv 5x5x20, pool, relu; conv 5x5x50, pool, relu; dense 500       128         SGD 0.1
          relu; dense 10; nll (Knet's Conv layer: relu(pool(conv4(w,x).+b)))
charlm    embedding 84 -> 168, LSTM 168 -> 334, dense 334 -> 84, nll        256 x 100   Adam 1e-3
          (tutorial/80.charlm.ipynb, Shakespeare: BATCHSIZE=256, SEQLENGTH=100,
          VOCABSIZE=84, INPUTSIZE=168, HIDDENSIZE=334, NUMLAYERS=1, adam)
========  ================================================================  ==========  ========

Differences from the notebooks, the same in all three frameworks: no dropout (so that the three
compute the same numbers), the LSTM starts from a zero state (the notebook carries ``h, c`` over
from the previous minibatch, which changes nothing in the cost of a step), and the data are
random.  LeNet's batch is 128 (Knet's examples/lenet; the notebook minibatches MNIST by 100).
``--quick`` shortens CharLM's sequence to 20 steps and takes fewer repetitions.

Before timing, every model's loss and every parameter's gradient are computed once by the three
frameworks on identical weights and data and asserted close (float32 tolerances), so that all
three time the same mathematics.  knetc's conv4 is a convolution (Knet's default ``mode=0``, the
kernel flipped), torch's and JAX's are cross-correlations: their kernels are knetc's flipped.

Timing: after warm-up, the frameworks take turns round-robin (one block of ``--block`` steps each
per round, the order rotated every round, an untimed ``--settle`` sleep before each turn so that
threads left spinning by the previous library are idle) so that the noise of a shared machine
falls on all of them alike; the table gives the median over all timed steps.  Each library's
worker threads stay at their defaults (torch.get_num_threads(), XLA's CPU thread pool, OpenBLAS's
threads) unless ``--threads N`` is given (OpenBLAS, OpenMP/MKL and torch get N threads; XLA only
the flags ``--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1`` for N=1, which
its CPU client may ignore); the header records them.

``--threads N`` also pins the process to N cores (``sched_setaffinity``): XLA has no thread
count, and pinning is how its maintainers say to limit it. Pinned, the frameworks' worker threads
share the same cores, so one library's idle-spinning threads can slow the next one's steps
(measured: knetc's MLP step 0.32 ms alone, 0.40-0.45 ms between JAX's turns on one core); with
``--isolate`` each framework's steps run in processes of their own (the same seed, weights and
data; ``--rounds`` processes per framework, the order rotated), the verification still in one.

knetc's first-call cost is printed as "compile" (``Grad.specialize``: the traced run of the loss
on the real arguments, adjoint generation, Python compile) and "1st call" (compile + the first
step, which also allocates the optimizer state); "jax jit" is the first call of the jitted step.
"""
from __future__ import annotations

import argparse
import ctypes
import datetime
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable


def _preparse_threads() -> int:
    """``--threads N`` must reach OpenBLAS and XLA before NumPy and JAX are imported."""
    n = 0
    for i, a in enumerate(sys.argv):
        if a == "--threads" and i + 1 < len(sys.argv):
            n = int(sys.argv[i + 1])
        elif a.startswith("--threads="):
            n = int(a.split("=", 1)[1])
    if n > 0:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(n)
        if n == 1:  # XLA's CPU client has no thread count; this is the documented best effort
            os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                       " --xla_cpu_multi_thread_eigen=false"
                                       " intra_op_parallelism_threads=1").strip()
        # ... and it is not enough: measured 2026-11-30, a large jitted dot still ran on both
        # cores (70 ms of CPU time in 35 ms). So the process is pinned to n cores, which holds
        # every framework's threads to them alike.
        if hasattr(os, "sched_setaffinity"):
            cores = sorted(os.sched_getaffinity(0))
            os.sched_setaffinity(0, set(cores[:n]))
    return n


THREADS = _preparse_threads()

import numpy as np  # noqa: E402

import knetc  # noqa: E402
import knetc.optim as KO  # noqa: E402
from knetc.runtime.conv import conv4, pool  # noqa: E402
from knetc.runtime.cpublas import openblas_libraries  # noqa: E402
from knetc.runtime.rnn import rnninit, rnnforw, rnnparam  # noqa: E402

try:
    import torch
    import torch.nn.functional as F
    if THREADS > 0:
        torch.set_num_threads(THREADS)
except ImportError:  # pragma: no cover - the column stays empty
    torch = None
try:
    import jax
    import jax.numpy as jnp
    from jax import lax
except ImportError:  # pragma: no cover
    jax = None

relu, nll, mat = knetc.relu, knetc.nll, knetc.mat

# --------------------------------------------------------------------------- knetc losses
# Plain NumPy code, as a knetc user writes it; w is a list of float32 arrays.


def housing_loss(w, x, y):
    return np.mean((x @ w[0] + w[1] - y) ** 2)


def softmax_loss(w, x, y):
    return nll(x @ w[0] + w[1], y)


def mlp_loss(w, x, y):
    return nll(relu(x @ w[0] + w[1]) @ w[2] + w[3], y)


def lenet_loss(w, x, y):
    h = relu(pool(conv4(w[0], x) + w[1]))
    h = relu(pool(conv4(w[2], h) + w[3]))
    h = relu(mat(h) @ w[4] + w[5])
    return nll(h @ w[6] + w[7], y)


def charlm_loss(w, r, x, y):
    e = w[0][x.T]                              # embedding: (T, B, 168)
    h, _, _ = rnnforw(r, w[1], e)              # LSTM:      (T, B, 334)
    s = h.reshape(-1, h.shape[2]) @ w[2] + w[3]
    return nll(s, y.T.reshape(-1))             # mean over the T*B characters


# --------------------------------------------------------------------------- torch losses

def t_housing(p, x, y):
    return torch.mean((x @ p[0] + p[1] - y) ** 2)


def t_softmax(p, x, y):
    return F.cross_entropy(F.linear(x, p[0].T, p[1]), y)


def t_mlp(p, x, y):
    h = F.relu(F.linear(x, p[0].T, p[1]))
    return F.cross_entropy(F.linear(h, p[2].T, p[3]), y)


def t_lenet(p, x, y):
    h = F.relu(F.max_pool2d(F.conv2d(x, p[0], p[1]), 2))
    h = F.relu(F.max_pool2d(F.conv2d(h, p[2], p[3]), 2))
    h = F.relu(F.linear(h.flatten(1), p[4].T, p[5]))
    return F.cross_entropy(F.linear(h, p[6].T, p[7]), y)


def t_charlm(p, x, y):
    e = F.embedding(x.T, p[0])                 # (T, B, 168)
    T, B, _ = e.shape
    H = p[2].shape[1]
    z = e.new_zeros(1, B, H)
    h = torch.lstm(e, (z, z), [p[1], p[2], p[3], p[4]], True, 1, 0.0, True, False, False)[0]
    s = F.linear(h.reshape(T * B, H), p[5].T, p[6])
    return F.cross_entropy(s, y.T.reshape(-1))


# --------------------------------------------------------------------------- JAX losses

def _jnll(s, y):
    lp = jax.nn.log_softmax(s, axis=-1)
    return -jnp.mean(jnp.take_along_axis(lp, y[:, None], axis=1))


def j_housing(p, x, y):
    return jnp.mean((x @ p[0] + p[1] - y) ** 2)


def j_softmax(p, x, y):
    return _jnll(x @ p[0] + p[1], y)


def j_mlp(p, x, y):
    return _jnll(jax.nn.relu(x @ p[0] + p[1]) @ p[2] + p[3], y)


def _jconv(x, w, b):
    y = lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=("NCHW", "OIHW", "NCHW"))
    return y + b[None, :, None, None]


def _jpool(x):
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")


def j_lenet(p, x, y):
    h = jax.nn.relu(_jpool(_jconv(x, p[0], p[1])))
    h = jax.nn.relu(_jpool(_jconv(h, p[2], p[3])))
    h = jax.nn.relu(h.reshape(h.shape[0], -1) @ p[4] + p[5])
    return _jnll(h @ p[6] + p[7], y)


def j_charlm(p, x, y):
    e = p[0][x.T]                              # (T, B, 168)
    T, B, _ = e.shape
    H = p[2].shape[1]
    xw = e @ p[1].T + (p[3] + p[4])            # input projections of all steps at once
    whT = p[2].T

    def cell(carry, xt):
        h, c = carry
        a = xt + h @ whT
        i, f, g, o = jnp.split(a, 4, axis=-1)  # cuDNN / torch gate order
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), h

    z = jnp.zeros((B, H), e.dtype)
    _, hs = lax.scan(cell, (z, z), xw)
    s = hs.reshape(T * B, H) @ p[5] + p[6]
    return _jnll(s, y.T.reshape(-1))


# --------------------------------------------------------------------------- the models

@dataclass
class Model:
    name: str
    loss: Callable            # knetc: loss(*kargs) with the weight list first
    tloss: Callable
    jloss: Callable
    opt: str                  # "sgd" or "adam"
    lr: float
    weights: list             # knetc layout, float32
    data: tuple               # (x, y) NumPy
    extra: tuple = ()         # knetc-only arguments between w and x (the RNN spec)
    to_peer: Callable = None  # knetc layout -> torch/JAX layout (linear: used for grads too)
    repeat: int = 200
    block: int = 1            # consecutive timed steps per framework per round
    info: str = ""


def _f32(rng, *shape, scale=0.1):
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def _same(ws):
    return [np.asarray(a) for a in ws]


def make_models(args, rng) -> dict[str, Model]:
    m = {}
    m["housing"] = Model(
        "housing", housing_loss, t_housing, j_housing, "sgd", 0.1,
        [_f32(rng, 13, 1), np.zeros(1, np.float32)],
        (rng.standard_normal((506, 13)).astype(np.float32),
         rng.standard_normal((506, 1)).astype(np.float32)),
        to_peer=_same, repeat=400, block=20, info="x 506x13, w 13x1")

    def mnist(n):
        return rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n)

    m["softmax"] = Model(
        "softmax", softmax_loss, t_softmax, j_softmax, "sgd", 0.1,
        [_f32(rng, 784, 10), np.zeros(10, np.float32)], mnist(100),
        to_peer=_same, repeat=400, block=20, info="x 100x784, w 784x10")
    m["mlp"] = Model(
        "mlp", mlp_loss, t_mlp, j_mlp, "sgd", 0.1,
        [_f32(rng, 784, 64), np.zeros(64, np.float32), _f32(rng, 64, 10),
         np.zeros(10, np.float32)], mnist(100),
        to_peer=_same, repeat=400, block=20, info="784-64-10, batch 100")
    nb = args.batch or 128
    m["lenet"] = Model(
        "lenet", lenet_loss, t_lenet, j_lenet, "sgd", 0.1,
        [_f32(rng, 20, 1, 5, 5), np.zeros((1, 20, 1, 1), np.float32),
         _f32(rng, 50, 20, 5, 5), np.zeros((1, 50, 1, 1), np.float32),
         _f32(rng, 800, 500, scale=0.05), np.zeros(500, np.float32),
         _f32(rng, 500, 10), np.zeros(10, np.float32)],
        (rng.random((nb, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, nb)),
        to_peer=lambda w: [np.ascontiguousarray(w[0][:, :, ::-1, ::-1]), w[1].reshape(-1),
                           np.ascontiguousarray(w[2][:, :, ::-1, ::-1]), w[3].reshape(-1),
                           *w[4:]],
        repeat=30, info=f"batch {nb}")
    V, X, H = 84, 168, 334
    B = args.batch or 256
    T = args.seqlen or (20 if args.quick else 100)
    r, rw = rnninit(X, H, rnnType="lstm", seed=int(rng.integers(1 << 30)))

    def rnn_to_peer(w):
        def blk(i0, par):
            return np.concatenate([rnnparam(r, w[1], 0, i, par) for i in range(i0, i0 + 4)])

        return [w[0], blk(0, 0), blk(4, 0), blk(0, 1), blk(4, 1), w[2], w[3]]

    m["charlm"] = Model(
        "charlm", charlm_loss, t_charlm, j_charlm, "adam", 1e-3,
        [_f32(rng, V, X, scale=1.0), rw, _f32(rng, H, V), np.zeros(V, np.float32)],
        (rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))), extra=(r,),
        to_peer=rnn_to_peer, repeat=5 if args.quick else 8,
        info=f"batch {B}, seqlen {T}")
    if args.quick:
        for k in ("housing", "softmax", "mlp"):
            m[k].repeat = 100
        m["lenet"].repeat = 10
    if args.repeat:
        for v in m.values():
            v.repeat = args.repeat
    return m


# --------------------------------------------------------------------------- the three steps

def knetc_step(model: Model):
    """(step, grad_and_loss, compile_s, first_call_s) for knetc; updates its own weight copy."""
    w = [a.copy() for a in model.weights]
    x, y = model.data
    args = (w, *model.extra, x, y)
    g = knetc.grad(model.loss)
    t = time.perf_counter()
    g.specialize(args)                       # specialize + generate + compile, cached in g
    compile_s = time.perf_counter() - t
    opts = KO.optimizers(w, KO.Adam if model.opt == "adam" else KO.SGD, lr=model.lr)

    def step():
        KO.update(w, g(*args), opts)

    t = time.perf_counter()
    step()
    first_s = compile_s + time.perf_counter() - t

    def grad_and_loss(ws):
        dw, loss = knetc.gradloss(model.loss)(ws, *model.extra, x, y)
        return float(loss), [np.asarray(d) for d in dw]
    return step, grad_and_loss, compile_s, first_s


def torch_step(model: Model):
    x, y = model.data
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    params = [torch.tensor(a, requires_grad=True) for a in model.to_peer(model.weights)]
    if model.opt == "adam":
        opt = torch.optim.Adam(params, lr=model.lr, betas=(0.9, 0.999), eps=1e-8)
    else:
        opt = torch.optim.SGD(params, lr=model.lr)

    def step():
        opt.zero_grad(set_to_none=True)
        model.tloss(params, tx, ty).backward()
        opt.step()

    def grad_and_loss(ws):
        ps = [torch.tensor(a, requires_grad=True) for a in model.to_peer(ws)]
        loss = model.tloss(ps, tx, ty)
        loss.backward()
        return float(loss.detach()), [p.grad.numpy() for p in ps]
    return step, grad_and_loss


def jax_step(model: Model):
    x, y = model.data
    jx, jy = jnp.asarray(x), jnp.asarray(y)
    loss = model.jloss
    lr = model.lr
    if model.opt == "adam":
        b1, b2, eps = 0.9, 0.999, 1e-8

        def train(p, s, x, y):
            lv, g = jax.value_and_grad(loss)(p, x, y)
            t, m, v = s
            t = t + 1
            m = [b1 * mi + (1 - b1) * gi for mi, gi in zip(m, g)]
            v = [b2 * vi + (1 - b2) * gi * gi for vi, gi in zip(v, g)]
            c1, c2 = 1 - b1 ** t, 1 - b2 ** t
            p = [pi - lr * (mi / c1) / (jnp.sqrt(vi / c2) + eps) for pi, mi, vi in zip(p, m, v)]
            return p, (t, m, v), lv

        def state0(p):
            return (jnp.zeros((), jnp.float32), [jnp.zeros_like(a) for a in p],
                    [jnp.zeros_like(a) for a in p])
    else:
        def train(p, s, x, y):
            lv, g = jax.value_and_grad(loss)(p, x, y)
            return [pi - lr * gi for pi, gi in zip(p, g)], s, lv

        def state0(p):
            return ()
    train = jax.jit(train, donate_argnums=(0, 1))
    box = {"p": [jnp.asarray(a) for a in model.to_peer(model.weights)]}
    box["s"] = state0(box["p"])

    def step():
        box["p"], box["s"], lv = train(box["p"], box["s"], jx, jy)
        jax.block_until_ready((box["p"], lv))

    t = time.perf_counter()
    step()
    compile_s = time.perf_counter() - t
    vg = jax.jit(jax.value_and_grad(loss))

    def grad_and_loss(ws):
        lv, g = vg([jnp.asarray(a) for a in model.to_peer(ws)], jx, jy)
        return float(lv), [np.asarray(a) for a in g]
    return step, grad_and_loss, compile_s


# --------------------------------------------------------------------------- verification

def verify(model: Model, checks: dict) -> str:
    """Assert that the frameworks agree on the loss and every gradient at the initial weights."""
    ws = [a.copy() for a in model.weights]
    kl, kg = checks["knetc"](ws)
    kg = model.to_peer(kg)                   # a linear relayout: fine for gradients
    worst = 0.0
    for name, f in checks.items():
        if name == "knetc":
            continue
        lv, g = f(ws)
        assert abs(lv - kl) <= 1e-4 * max(1.0, abs(kl)), f"{model.name}: loss knetc {kl} vs {name} {lv}"
        assert len(g) == len(kg)
        for i, (a, b) in enumerate(zip(kg, g)):
            assert a.shape == b.shape, f"{model.name}: grad {i} shape {a.shape} vs {name} {b.shape}"
            scale = float(np.max(np.abs(b))) or 1.0
            err = float(np.max(np.abs(a - b))) / scale
            worst = max(worst, err)
            assert err < 1e-3, (f"{model.name}: gradient {i} {a.shape}: max |knetc - {name}| = "
                                f"{err:.2e} of max |grad|")
    return f"loss {kl:.5f}, grads agree to {worst:.1e} (max abs diff / max abs grad)"


# --------------------------------------------------------------------------- timing

def rounds(repeat: int, block: int) -> int:
    return max(1, -(-repeat // block))


def measure(model: Model, steps: dict, block: int, settle: float) -> dict:
    """Round-robin: each framework runs `block` timed steps in turn, order rotated per round.

    Before each turn the process sleeps `settle` seconds (untimed), so that the worker threads
    the previous framework left spinning (OpenBLAS's spin for ~0.1 s after a call) have gone to
    sleep and do not slow down the next framework's steps.
    """
    names = list(steps)
    for f in steps.values():  # warm-up: allocator, thread pools, caches
        for _ in range(1 if model.repeat < 20 else 5):
            f()
    times = {n: [] for n in names}
    for r in range(rounds(model.repeat, block)):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            f = steps[n]
            if settle > 0:
                time.sleep(settle)
            for _ in range(block):
                t = time.perf_counter()
                f()
                times[n].append(time.perf_counter() - t)
    return {n: 1e3 * statistics.median(v) for n, v in times.items()}


def isolated(name: str, framework: str, args, repeat: int, block: int) -> list:
    """In this process (``--worker``): the step of one framework only, warmed up, then
    ``repeat`` timed steps in blocks with the settle sleep before each; the times in ms."""
    model = make_models(args, np.random.default_rng(0))[name]
    step = {"knetc": lambda m: knetc_step(m)[0], "torch": lambda m: torch_step(m)[0],
            "jax": lambda m: jax_step(m)[0]}[framework](model)
    for _ in range(1 if model.repeat < 20 else 5):
        step()
    times = []
    for _ in range(rounds(repeat, block)):
        if args.settle > 0:
            time.sleep(args.settle)
        for _ in range(block):
            t = time.perf_counter()
            step()
            times.append(1e3 * (time.perf_counter() - t))
    return times


def measure_isolated(name: str, frameworks: list, args, repeat: int, block: int) -> dict:
    """Each framework in ``args.rounds`` processes of its own (the order rotated between
    rounds), ``repeat / rounds`` steps each; the median over all their steps."""
    import json
    import subprocess
    times: dict = {f: [] for f in frameworks}
    per = max(block, -(-repeat // args.rounds))
    for r in range(args.rounds):
        for f in frameworks[r % len(frameworks):] + frameworks[:r % len(frameworks)]:
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, f,
                   "--repeat", str(per), "--block", str(block), "--settle", str(args.settle)]
            for flag, value in (("--threads", args.threads), ("--seqlen", args.seqlen),
                                ("--batch", args.batch)):
                if value:
                    cmd += [flag, str(value)]
            if args.quick:
                cmd.append("--quick")
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            times[f] += json.loads(out.stdout.strip().splitlines()[-1])
    return {f: statistics.median(v) for f, v in times.items()}


def openblas_threads() -> str:
    """OpenBLAS's thread count, read from the library NumPy loaded (best effort)."""
    for lib in openblas_libraries():
        try:
            so = ctypes.CDLL(lib)
        except OSError:
            continue
        for sym in ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_",
                    "openblas_get_num_threads"):
            fn = getattr(so, sym, None)
            if fn is not None:
                return str(fn())
    return "?"


def header(args) -> str:
    parts = [f"{datetime.date.today()}", f"{platform.machine()}, {os.cpu_count()} cores",
             f"Python {platform.python_version()}", f"numpy {np.__version__} "
             f"(OpenBLAS threads {openblas_threads()})", f"knetc {knetc.__version__}"]
    if torch is not None:
        parts.append(f"torch {torch.__version__} (threads {torch.get_num_threads()})")
    if jax is not None:
        flags = os.environ.get("XLA_FLAGS", "")
        parts.append(f"jax {jax.__version__} ({jax.devices()[0].platform}, "
                     + (f"XLA_FLAGS={flags!r})" if flags else "XLA default threads)"))
    parts.append(f"--threads {args.threads or 'default'}, settle {args.settle} s")
    return "; ".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="CharLM with seqlen 20, fewer repetitions")
    ap.add_argument("--models", default="housing,softmax,mlp,lenet,charlm",
                    help="comma-separated subset of housing,softmax,mlp,lenet,charlm")
    ap.add_argument("--repeat", type=int, default=0,
                    help="timed steps per framework and model (default: per model)")
    ap.add_argument("--block", type=int, default=0,
                    help="consecutive steps per framework per round (default: 20 for housing, "
                         "softmax and mlp, 1 for lenet and charlm)")
    ap.add_argument("--settle", type=float, default=0.2,
                    help="untimed sleep in seconds before each framework's turn (default 0.2)")
    ap.add_argument("--threads", type=int, default=0,
                    help="threads for OpenBLAS, torch and (best effort) XLA; default: each "
                         "library's own default")
    ap.add_argument("--seqlen", type=int, default=0, help="CharLM sequence length (default 100)")
    ap.add_argument("--batch", type=int, default=0,
                    help="batch of LeNet and CharLM (default 128 and 256)")
    ap.add_argument("--no-verify", action="store_true", help="skip the cross-framework check")
    ap.add_argument("--isolate", action="store_true",
                    help="time each framework in processes of its own (see the module docs)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="with --isolate: processes per framework and model (default 3)")
    ap.add_argument("--worker", nargs=2, metavar=("MODEL", "FRAMEWORK"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        import json
        name, framework = args.worker
        model = make_models(args, np.random.default_rng(0))[name]
        repeat = args.repeat or model.repeat
        print(json.dumps(isolated(name, framework, args, repeat, args.block or model.block)))
        return

    rng = np.random.default_rng(0)
    models = make_models(args, rng)
    wanted = [s.strip() for s in args.models.split(",") if s.strip()]
    unknown = set(wanted) - set(models)
    if unknown:
        ap.error(f"unknown models {sorted(unknown)}; choose from {', '.join(models)}")
    print(header(args))
    print("one training step (gradient + optimizer update), float32, median ms\n", flush=True)

    rows = []
    for name in wanted:
        model = models[name]
        print(f"[{name}] {model.info}, {model.opt.upper()} lr={model.lr}", flush=True)
        kstep, kcheck, kcomp, kfirst = knetc_step(model)
        steps, checks, extra = {"knetc": kstep}, {"knetc": kcheck}, {}
        if torch is not None:
            steps["torch"], checks["torch"] = torch_step(model)
        if jax is not None:
            steps["jax"], checks["jax"], extra["jax_jit_s"] = jax_step(model)
        if not args.no_verify and len(checks) > 1:
            print("  verified: " + verify(model, checks), flush=True)
        block = args.block or model.block
        if args.isolate:
            del steps
            res = measure_isolated(name, ["knetc"] + [f for f in ("torch", "jax") if f in checks],
                                   args, model.repeat, block)
        else:
            res = measure(model, steps, block, args.settle)
        rows.append((name, res, kcomp, kfirst, extra.get("jax_jit_s")))
        line = ", ".join(f"{k} {v:.3f} ms" for k, v in res.items())
        print(f"  {line}  (median of {rounds(model.repeat, block) * block} steps each, "
              f"block {block})", flush=True)

    print()
    cols = ["knetc", "torch", "jax"]
    print(f"{'model':8s} {'knetc ms':>9s} {'torch ms':>9s} {'jax ms':>9s} {'k/torch':>8s} "
          f"{'k/jax':>7s} {'k/best':>7s} {'compile ms':>10s} {'1st call ms':>11s} "
          f"{'jax jit ms':>10s}")
    for name, res, kcomp, kfirst, jjit in rows:
        k = res["knetc"]
        peers = [res[c] for c in cols[1:] if c in res]
        cells = [f"{res[c]:9.3f}" if c in res else f"{'-':>9s}" for c in cols]

        def ratio(c):
            return f"{k / res[c]:.2f}" if c in res else "-"

        best = f"{k / min(peers):.2f}" if peers else "-"
        jj = f"{1e3 * jjit:10.0f}" if jjit is not None else f"{'-':>10s}"
        print(f"{name:8s} {' '.join(cells)} {ratio('torch'):>8s} {ratio('jax'):>7s} {best:>7s} "
              f"{1e3 * kcomp:10.1f} {1e3 * kfirst:11.1f} {jj}")


if __name__ == "__main__":
    main()
