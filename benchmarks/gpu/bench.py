"""One training step of Knet's five tutorial models on the GPU: knetc on CuPy against PyTorch.

    python benchmarks/gpu/bench.py [--models housing,softmax,mlp,lenet,charlm] [--rounds N]
                                   [--json PATH] [--md PATH] [--quick] [--dry-run]
                                   [--time-limit SECONDS] [--no-compile] [--gclip G]

A *training step* is the gradient of the loss plus the optimizer's update of every parameter,
float32, synthetic data of the tutorial's shapes (the GPU machine has no data sets):

========  ==========================================================  ===========  ===========
model     network (examples/*.py, batch first)                        batch        optimizer
========  ==========================================================  ===========  ===========
housing   linear regression 13 -> 1, mean squared error               506 (all)    SGD 0.1
softmax   784 -> 10, nll (examples/mnist_softmax.py)                  100          SGD 0.5
mlp       784 -> 64 relu -> 10, nll (examples/mnist_mlp.py)           100          Adam 1e-3
lenet     pool(relu(conv4 5x5x20)), pool(relu(conv4 5x5x50)),         128          Adam 1e-3
          relu dense 800->500, dense 500->10, nll (examples/lenet.py)
charlm    embedding 84 -> 168, LSTM 168 -> 334, dense 334 -> 84, nll  256 x 100    Adam 1e-3
          (examples/charlm.py --full; no gradient clipping unless --gclip)
========  ==========================================================  ===========  ===========

Columns: **knetc** ``knetc.optim.update(w, knetc.grad(loss)(w, x, y), opts)`` on CuPy arrays;
**knetc+graph** the step made by ``knetc.graph_step(loss, w, opts, *args)`` (CUDA-graph replay;
'n/a' with the error when it is missing or fails); **torch eager** the same model written
idiomatically (``F.linear``, ``F.conv2d``/``F.max_pool2d``, ``nn.LSTM`` = cuDNN's LSTM,
``F.cross_entropy``), ``loss.backward()`` and ``torch.optim.SGD/Adam`` (torch's defaults,
TF32 settings included, recorded in the JSON); **torch.compile** ``torch.compile(loss)`` with the
same eager optimizer, compiled in a second phase under a time limit ('n/a' on failure).

Before timing, knetc's and torch's loss and every gradient are computed on the same initial
weights (TF32 off for that check) and compared: the ``verify`` column gives the largest
``max|knetc - torch| / max|torch|`` over the parameters.

Timing: after warm-up the variants take turns (rotated order each round); each turn is a block of
steps between two device synchronizations (``cupy.cuda.Device().synchronize()`` and
``torch.cuda.synchronize()``), wall time per step; the table gives medians over the rounds.
Kernel launches per step: ``torch.profiler`` with ``ProfilerActivity.CUDA`` records every kernel
of the process (CuPy's too); kernels over N profiled steps / N. Peak memory: CuPy's pool through
``knetc.runtime.memory.track_peak`` and ``torch.cuda.max_memory_allocated`` over one step (both
include the parameters, optimizer state and data).

``--dry-run`` needs no GPU: the models are built on NumPy (torch on the CPU) at tiny sizes, one
knetc step and the knetc/torch check run, nothing is timed; the JSON has the same layout.
Every model runs in its own try/except; the JSON file is rewritten after each model, so a run
killed at its time limit still leaves the finished rows.
"""
from __future__ import annotations

import time

T0 = time.monotonic()   # before the heavy imports: --time-limit counts from the process start

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run from anywhere: the working tree's knetc
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import knetc  # noqa: E402
import knetc.optim as KO  # noqa: E402
from knetc.runtime.backend import cpu  # noqa: E402
from knetc.runtime.conv import conv4, pool  # noqa: E402
from knetc.runtime.rnn import rnnforw, rnninit, rnnparam  # noqa: E402

try:
    import torch
    import torch.nn.functional as F
except Exception:  # pragma: no cover - the torch columns stay empty
    torch = F = None

MODELS = ("housing", "softmax", "mlp", "lenet", "charlm")


# --------------------------------------------------------------------------- shared helpers
# (layers.py imports these)

def short_error(e: BaseException, limit: int = 300) -> str:
    """'Type: message' on one line, cut to ``limit`` characters."""
    s = f"{type(e).__name__}: {e}".replace("\n", " | ")
    return s if len(s) <= limit else s[:limit - 3] + "..."


class Deadline:
    """Seconds left of ``limit`` counted from the process start (None: no limit)."""

    def __init__(self, limit: float | None):
        self.limit = limit if limit and limit > 0 else None

    def left(self) -> float:
        return float("inf") if self.limit is None else self.limit - (time.monotonic() - T0)


@contextmanager
def alarm(seconds: float):
    """Raise TimeoutError in the main thread after ``seconds`` (for torch.compile)."""
    if not seconds or seconds <= 0 or not hasattr(signal, "SIGALRM") or seconds == float("inf"):
        yield
        return

    def handler(signum, frame):
        raise TimeoutError(f"over its {seconds:.0f} s limit")
    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


class Device:
    """The arrays' home: CuPy + torch on CUDA, or (dry run) NumPy + torch on the CPU."""

    def __init__(self, dry: bool, host: bool = False):
        self.dry, self.host = dry, dry or host     # host: NumPy + torch CPU (script tests)
        self.cp = None
        if not self.host:
            from knetc.runtime.backend import cupy_module
            self.cp = cupy_module()
            if self.cp is None:
                raise RuntimeError("no usable CuPy / CUDA device (use --dry-run on a CPU machine)")
        self.xp = np if self.host else self.cp
        self.torch_ok = torch is not None and (self.host or torch.cuda.is_available())
        self.tdev = "cpu" if self.host else "cuda"

    def sync(self) -> None:
        """Wait for all work queued on the device (both libraries)."""
        if self.host:
            return
        self.cp.cuda.Device().synchronize()
        if self.torch_ok:
            torch.cuda.synchronize()

    def put(self, a):
        """A NumPy array on knetc's side (a CuPy array on the GPU)."""
        return np.array(a) if self.host else self.cp.asarray(a)

    def tput(self, a, grad: bool = False):
        """A NumPy array as a torch tensor on the device."""
        t = torch.tensor(np.ascontiguousarray(a), device=self.tdev)
        return t.requires_grad_(True) if grad else t


def to_numpy(a) -> np.ndarray:
    """NumPy copy of a NumPy/CuPy array or a torch tensor."""
    if torch is not None and isinstance(a, torch.Tensor):
        return a.detach().float().cpu().numpy() if a.is_floating_point() else a.detach().cpu().numpy()
    if hasattr(a, "get") and not isinstance(a, np.ndarray):
        return a.get()
    return np.asarray(a)


def rel_err(a, b) -> float:
    """max|a - b| / max|b| (shapes must agree)."""
    a, b = to_numpy(a).astype(np.float64), to_numpy(b).astype(np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shape {a.shape} vs {b.shape}")
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    return float(np.max(np.abs(a - b))) / (scale or 1.0) if b.size else 0.0


@contextmanager
def no_tf32():
    """torch without TF32 inside the block (for the correctness checks), restored after."""
    if torch is None:
        yield
        return
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def measure(fns: dict[str, Callable[[], Any]], rounds: int, block: int, sync: Callable[[], None],
            deadline: Deadline | None = None, min_rounds: int = 3) -> dict[str, float]:
    """Median ms per call of each function: rounds of one block each, order rotated per round.

    Each block is timed between two synchronizations, so the time is wall time per call with the
    device's work finished. Stops early (after ``min_rounds``) when the deadline is near.
    """
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        if deadline is not None and r >= min_rounds and deadline.left() < 5:
            break
        k = r % len(names)
        for n in names[k:] + names[:k]:
            f = fns[n]
            sync()
            t = time.perf_counter()
            for _ in range(block):
                f()
            sync()
            times[n].append(1e3 * (time.perf_counter() - t) / block)
    return {n: statistics.median(v) for n, v in times.items() if v}


def count_launches(events) -> dict[str, int]:
    """Kernels, memcpys and memsets among a torch profiler's events (device-side records), and
    the host-side launch calls (``cudaLaunchKernel``, ``cuLaunchKernel``, ``cudaGraphLaunch``...)
    where the profiler recorded the CUDA API. In a CUDA-graph replay every kernel node is a
    device record, so ``kernels`` counts the kernels run, ``api`` the host's launch calls."""
    out = {"kernels": 0, "memcpy": 0, "memset": 0, "api": 0, "by_name": {}}
    for e in events:
        name = str(getattr(e, "name", ""))
        if "CUDA" not in str(getattr(e, "device_type", "")):
            if "LaunchKernel" in name or "GraphLaunch" in name:
                out["api"] += 1
            continue
        if name.startswith("Memcpy"):
            out["memcpy"] += 1
            continue
        if name.startswith("Memset"):
            out["memset"] += 1
            continue
        out["kernels"] += 1
        us = getattr(e, "device_time", None)
        if us is None:
            us = getattr(e, "cuda_time", 0.0)
        count, total = out["by_name"].get(name[:80], (0, 0.0))
        out["by_name"][name[:80]] = (count + 1, total + float(us or 0.0))
    return out


def launches_per_step(step: Callable[[], Any], n: int, sync: Callable[[], None]) -> dict:
    """Device kernels (and copies) per call of ``step``, from torch.profiler over ``n`` calls."""
    from torch.profiler import ProfilerActivity, profile
    sync()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(n):
            step()
        sync()
    c = count_launches(prof.events())
    top = sorted(c.pop("by_name").items(), key=lambda kv: -kv[1][1])[:12]
    out = {k: round(v / n, 1) for k, v in c.items()}
    # where the device time goes: (kernel, launches per step, microseconds per step)
    out["top"] = [(name, round(cnt / n, 1), round(us / n, 1)) for name, (cnt, us) in top]
    return out


def fmt(v, digits: int = 3) -> str:
    """A table cell: numbers rounded to ``digits`` significant digits, None as '-'."""
    if v is None:
        return "-"
    if isinstance(v, float):
        if v != v:
            return "nan"
        if v == 0 or abs(v) >= 10 ** digits:
            return f"{v:.0f}"
        return f"{v:.{digits}g}"
    return str(v)


def markdown(header: list[str], rows: list[list]) -> str:
    """A markdown table (first column left-aligned, the rest right-aligned)."""
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(fmt(c) for c in r) + " |")
    return "\n".join(lines)


def write_json(path: str | None, obj: dict) -> None:
    """Write ``obj`` as JSON (one write, so a kill leaves the previous version or the new one)."""
    if not path:
        return
    text = json.dumps(obj, indent=1, default=str)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def versions() -> dict:
    """Library versions and torch's precision settings (for the JSON's meta)."""
    v: dict[str, Any] = {"python": sys.version.split()[0], "numpy": np.__version__,
                         "knetc": getattr(knetc, "__version__", "?"), "knetc_file": knetc.__file__,
                         "KNETC_CUDNN": os.environ.get("KNETC_CUDNN")}
    try:
        import cupy
        v["cupy"] = cupy.__version__
    except Exception as e:
        v["cupy"] = f"missing ({short_error(e, 80)})"
    if torch is not None:
        v["torch"] = torch.__version__
        v["torch_cuda"] = torch.version.cuda
        v["torch_tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
        v["torch_tf32_cudnn"] = torch.backends.cudnn.allow_tf32
        v["torch_cudnn_benchmark"] = torch.backends.cudnn.benchmark
    try:
        from knetc.runtime import cudnn as kc
        v["knetc_cudnn_available"] = bool(kc.available())
    except Exception as e:
        v["knetc_cudnn_available"] = f"n/a ({short_error(e, 120)})"
    return v


# --------------------------------------------------------------------------- knetc models
# Plain NumPy code as in examples/*.py; on CuPy arrays knetc binds np to cupy.

def housing_loss(w, x, y):
    return np.mean((x @ w[0] + w[1] - y) ** 2)


def softmax_loss(w, x, y):
    return knetc.nll(knetc.mat(x) @ w[0] + w[1], y)


def mlp_loss(w, x, y):
    h = knetc.relu(knetc.mat(x) @ w[0] + w[1])
    return knetc.nll(h @ w[2] + w[3], y)


def lenet_loss(w, x, y):
    x = pool(knetc.relu(conv4(w[0], x) + w[1]))
    x = pool(knetc.relu(conv4(w[2], x) + w[3]))
    x = knetc.relu(knetc.mat(x) @ w[4] + w[5])
    return knetc.nll(x @ w[6] + w[7], y)


def charlm_loss(w, r, x, y):
    e = w[0][x]                                # (T, B, E)
    h, _, _ = rnnforw(r, w[1], e)              # (T, B, H), zero initial state
    s = h.reshape(-1, h.shape[2]) @ w[2] + w[3]
    return knetc.nll(s, y)                     # y: (T*B,) next characters


# --------------------------------------------------------------------------- torch models

def t_housing(p, x, y):
    return F.mse_loss(F.linear(x, p[0], p[1]), y)


def t_softmax(p, x, y):
    return F.cross_entropy(F.linear(x.flatten(1), p[0], p[1]), y)


def t_mlp(p, x, y):
    h = F.relu(F.linear(x.flatten(1), p[0], p[1]))
    return F.cross_entropy(F.linear(h, p[2], p[3]), y)


def t_lenet(p, x, y):
    x = F.max_pool2d(F.relu(F.conv2d(x, p[0], p[1])), 2)
    x = F.max_pool2d(F.relu(F.conv2d(x, p[2], p[3])), 2)
    x = F.relu(F.linear(x.flatten(1), p[4], p[5]))
    return F.cross_entropy(F.linear(x, p[6], p[7]), y)


def _flip(a):
    """knetc's conv4 convolves (flips the kernel); torch's conv2d correlates."""
    return np.ascontiguousarray(a[:, :, ::-1, ::-1])


def _t(a):
    return np.ascontiguousarray(a.T)


@dataclass
class Spec:
    """One model: knetc's loss and weights, the data, and how torch sees the same weights."""
    name: str
    info: str
    loss: Callable
    opt: str                      # "sgd" or "adam"
    lr: float
    weights: list                 # NumPy, knetc's layout
    data: tuple                   # (x, y) NumPy
    to_peer: Callable             # knetc layout -> torch layout (linear, so also for gradients)
    tloss: Callable | None = None
    extra: tuple = ()             # knetc-only arguments between w and x (the RNN spec)
    rounds: int = 20
    block: int = 1
    nprof: int = 5
    lstm: Any = None              # charlm: (r, E, H) to build torch's nn.LSTM


def _f32(rng, *shape, scale=0.1):
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def make_specs(args, rng) -> dict[str, Spec]:
    """The five models at the tutorial's sizes (tiny sizes for --dry-run)."""
    dry = args.dry_run or args.host          # tiny sizes
    quick = args.quick
    s: dict[str, Spec] = {}
    n = 16 if dry else 506
    s["housing"] = Spec(
        "housing", f"x {n}x13, SGD lr 0.1", housing_loss, "sgd", 0.1,
        [_f32(rng, 13, 1), np.zeros(1, np.float32)],
        (rng.standard_normal((n, 13)).astype(np.float32),
         rng.standard_normal((n, 1)).astype(np.float32)),
        lambda w: [_t(w[0]), w[1]], t_housing, rounds=30, block=20, nprof=10)
    b = 4 if dry else 100

    def mnist(nb):
        return rng.random((nb, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, nb)

    s["softmax"] = Spec(
        "softmax", f"784-10, batch {b}, SGD lr 0.5", softmax_loss, "sgd", 0.5,
        [_f32(rng, 784, 10), np.zeros(10, np.float32)], mnist(b),
        lambda w: [_t(w[0]), w[1]], t_softmax, rounds=30, block=20, nprof=10)
    s["mlp"] = Spec(
        "mlp", f"784-64-10, batch {b}, Adam lr 1e-3", mlp_loss, "adam", 1e-3,
        [_f32(rng, 784, 64), np.zeros(64, np.float32), _f32(rng, 64, 10), np.zeros(10, np.float32)],
        mnist(b), lambda w: [_t(w[0]), w[1], _t(w[2]), w[3]], t_mlp, rounds=30, block=20,
        nprof=10)
    nb = 2 if dry else 128
    s["lenet"] = Spec(
        "lenet", f"batch {nb}, Adam lr 1e-3", lenet_loss, "adam", 1e-3,
        [_f32(rng, 20, 1, 5, 5), np.zeros((1, 20, 1, 1), np.float32),
         _f32(rng, 50, 20, 5, 5), np.zeros((1, 50, 1, 1), np.float32),
         _f32(rng, 800, 500, scale=0.05), np.zeros(500, np.float32),
         _f32(rng, 500, 10), np.zeros(10, np.float32)],
        mnist(nb),
        lambda w: [_flip(w[0]), w[1].reshape(-1), _flip(w[2]), w[3].reshape(-1),
                   _t(w[4]), w[5], _t(w[6]), w[7]],
        t_lenet, rounds=20, block=5, nprof=5)
    V, E, H, B, T = (84, 8, 12, 3, 4) if dry else (84, 168, 334, 256, 100)
    r, rw = rnninit(E, H, rnnType="lstm", seed=int(rng.integers(1 << 30)))

    def rnn_to_peer(w):
        def blk(i0, par):
            return np.concatenate([rnnparam(r, w[1], 0, i, par) for i in range(i0, i0 + 4)])
        return [w[0], blk(0, 0), blk(4, 0), blk(0, 1), blk(4, 1), _t(w[2]), w[3]]

    s["charlm"] = Spec(
        "charlm", f"LSTM {E}-{H}, vocab {V}, batch {B} x {T} chars, Adam lr 1e-3", charlm_loss,
        "adam", 1e-3,
        [_f32(rng, V, E, scale=1.0), rw, _f32(rng, H, V), np.zeros(V, np.float32)],
        (rng.integers(0, V, (T, B)), rng.integers(0, V, T * B)),
        rnn_to_peer, None, extra=(r,), rounds=10, block=1, nprof=2, lstm=(r, E, H))
    for v in s.values():
        if quick:
            v.rounds = max(3, v.rounds // 3)
        if args.rounds:
            v.rounds = args.rounds
    return s


def torch_model(spec: Spec, dev: Device):
    """(params, loss(params, x, y)) for torch on the device, from knetc's initial weights."""
    tw = spec.to_peer([np.asarray(a) for a in spec.weights])
    if spec.lstm is None:
        return [dev.tput(a, grad=True) for a in tw], spec.tloss
    _, E, H = spec.lstm
    lstm = torch.nn.LSTM(E, H).to(dev.tdev)        # cuDNN's LSTM on CUDA
    with torch.no_grad():                          # copy_ keeps cuDNN's flattened weight buffer
        for name, a in zip(("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"), tw[1:5]):
            getattr(lstm, name).copy_(torch.from_numpy(np.ascontiguousarray(a)))
    params = [dev.tput(tw[0], grad=True), lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0,
              lstm.bias_hh_l0, dev.tput(tw[5], grad=True), dev.tput(tw[6], grad=True)]

    def t_charlm(p, x, y):
        e = F.embedding(x, p[0])                   # (T, B, E)
        h, _ = lstm(e)                             # zero initial state
        s = F.linear(h.reshape(-1, h.shape[2]), p[5], p[6])
        return F.cross_entropy(s, y)
    return params, t_charlm


def torch_optimizer(spec: Spec, params):
    if spec.opt == "adam":
        return torch.optim.Adam(params, lr=spec.lr)
    return torch.optim.SGD(params, lr=spec.lr)


def knetc_optimizers(spec: Spec, w, gclip: float):
    cls = KO.Adam if spec.opt == "adam" else KO.SGD
    return KO.optimizers(w, cls, lr=spec.lr, gclip=gclip)


def verify(spec: Spec, dev: Device, w, args_k, params, tloss, tx, ty) -> dict:
    """knetc's and torch's loss and gradients on the same (initial) weights, compared."""
    out: dict[str, Any] = {}
    dw, lk = knetc.gradloss(spec.loss)(w, *args_k)
    out["loss_knetc"] = float(lk)
    gk = spec.to_peer([to_numpy(a) for a in cpu(dw)])
    with no_tf32():
        lt = tloss(params, tx, ty)
        gt = torch.autograd.grad(lt, params)
    out["loss_torch"] = float(lt.detach())
    out["loss_rel_diff"] = abs(out["loss_knetc"] - out["loss_torch"]) / max(1.0, abs(out["loss_torch"]))
    out["grad_err"] = max(rel_err(a, b) for a, b in zip(gk, gt))
    out["verified"] = bool(out["grad_err"] < 1e-3 and out["loss_rel_diff"] < 1e-4)
    return out


def graph_step_fn():
    """knetc.graph_step, or None when this knetc has none."""
    f = getattr(knetc, "graph_step", None)
    if f is None:
        try:
            from knetc import graphs  # being written: may not exist yet
            f = getattr(graphs, "graph_step", None)
        except Exception:
            f = None
    return f


@dataclass
class Live:
    """A model's runnable steps, kept for the torch.compile phase."""
    spec: Spec
    steps: dict = field(default_factory=dict)
    tdata: tuple = ()
    tparams_fn: Callable | None = None


def run_model(spec: Spec, dev: Device, args, row: dict, deadline: Deadline) -> Live:
    """Fill ``row`` with one model's measurements (phase 1: knetc, graph, torch eager)."""
    live = Live(spec)
    x, y = spec.data
    w = [dev.put(a) for a in spec.weights]
    kx, ky = dev.put(x), dev.put(y)
    args_k = (*spec.extra, kx, ky)
    g = knetc.grad(spec.loss)
    t = time.perf_counter()
    g.specialize((w, *args_k))
    row["knetc_compile_s"] = round(time.perf_counter() - t, 3)
    opts = knetc_optimizers(spec, w, args.gclip)

    def kstep():
        KO.update(w, g(w, *args_k), opts)

    if dev.torch_ok:
        params, tloss = torch_model(spec, dev)
        tx, ty = dev.tput(x), dev.tput(y)
        try:
            row.update(verify(spec, dev, [dev.put(a) for a in spec.weights], args_k, params,
                              tloss, tx, ty))
        except Exception as e:
            row["verify_error"] = short_error(e)
        topt = torch_optimizer(spec, params)

        def tstep():
            topt.zero_grad(set_to_none=True)
            tloss(params, tx, ty).backward()
            topt.step()
        live.tdata = (tx, ty)
        live.tparams_fn = lambda: torch_model(spec, dev)
    t = time.perf_counter()
    kstep()
    dev.sync()
    row["knetc_first_step_s"] = round(row["knetc_compile_s"] + time.perf_counter() - t, 3)
    live.steps["knetc"] = kstep
    if dev.torch_ok:
        tstep()
        live.steps["torch"] = tstep
    if args.dry_run:
        row["graph_error"] = row["compile_error"] = "dry-run"
        return live
    gs = graph_step_fn()
    if gs is None:
        row["graph_error"] = "missing: knetc.graph_step is not importable"
    else:
        try:
            wg = [dev.put(a) for a in spec.weights]
            step_g = gs(spec.loss, wg, knetc_optimizers(spec, wg, args.gclip), *args_k)

            def gstep():
                step_g(*args_k)
            gstep()
            dev.sync()
            live.steps["graph"] = gstep
        except Exception as e:
            row["graph_error"] = short_error(e)
            traceback.print_exc()
    for f in live.steps.values():                 # warm-up: allocators, kernel caches, cuDNN plans
        for _ in range(3):
            f()
    dev.sync()
    res = measure(live.steps, spec.rounds, spec.block, dev.sync, deadline)
    row["knetc_ms"] = res.get("knetc")
    row["graph_ms"] = res.get("graph")
    row["torch_ms"] = res.get("torch")
    if row["knetc_ms"] and row.get("torch_ms"):
        row["ratio"] = row["knetc_ms"] / row["torch_ms"]
    if row.get("graph_ms") and row.get("torch_ms"):
        row["ratio_graph"] = row["graph_ms"] / row["torch_ms"]
    row["rounds"], row["block"] = spec.rounds, spec.block
    print(f"  [{spec.name}] " + ", ".join(f"{k} {v:.3f} ms" for k, v in res.items()), flush=True)
    _memory(row, live, dev)
    _launches(row, live, dev, spec.nprof)
    return live


def _memory(row: dict, live: Live, dev: Device) -> None:
    if dev.host:
        return
    try:
        from knetc.runtime.memory import track_peak
        dev.sync()
        with track_peak() as peak:
            live.steps["knetc"]()
            dev.sync()
        row["peak_mb_knetc"] = None if peak.bytes is None else peak.bytes / 2 ** 20
    except Exception as e:
        row["peak_error_knetc"] = short_error(e)
    if "torch" in live.steps:
        try:
            dev.sync()
            torch.cuda.reset_peak_memory_stats()
            live.steps["torch"]()
            dev.sync()
            row["peak_mb_torch"] = torch.cuda.max_memory_allocated() / 2 ** 20
        except Exception as e:
            row["peak_error_torch"] = short_error(e)


def _launches(row: dict, live: Live, dev: Device, n: int) -> None:
    if torch is None or dev.host:
        return
    for name, step in live.steps.items():
        try:
            c = launches_per_step(step, n, dev.sync)
            row[f"launches_{name}"] = c["kernels"]
            row[f"copies_{name}"] = c["memcpy"] + c["memset"]
            row[f"api_launches_{name}"] = c["api"]
            row[f"top_kernels_{name}"] = c["top"]
        except Exception as e:
            row[f"launches_error_{name}"] = short_error(e)


def run_compile(live: Live, dev: Device, row: dict, deadline: Deadline, limit: float) -> None:
    """Phase 2: torch.compile of the model's loss, eager optimizer, under ``limit`` seconds."""
    spec = live.spec
    params, tloss = live.tparams_fn()
    tx, ty = live.tdata
    topt = torch_optimizer(spec, params)
    compiled = torch.compile(tloss)

    def cstep():
        topt.zero_grad(set_to_none=True)
        compiled(params, tx, ty).backward()
        topt.step()
    t = time.perf_counter()
    with alarm(limit):
        cstep()
        cstep()                                   # a recompilation, if any, happens here
        dev.sync()
    row["compile_s"] = round(time.perf_counter() - t, 1)
    res = measure({"compile": cstep, "torch": live.steps["torch"]}, spec.rounds, spec.block,
                  dev.sync, deadline)
    row["compile_ms"] = res.get("compile")
    if dev.host:
        return
    try:
        c = launches_per_step(cstep, spec.nprof, dev.sync)
        row["launches_compile"] = c["kernels"]
    except Exception as e:
        row["launches_error_compile"] = short_error(e)


HEADER = ["model", "knetc ms", "knetc+graph ms", "torch eager ms", "torch.compile ms",
          "ratio knetc/eager", "launches knetc", "launches torch", "peak MB knetc", "peak MB torch",
          "verify"]


def table(rows: list[dict]) -> str:
    """The markdown table of the rows."""
    out = []
    for r in rows:
        ver = r.get("grad_err")
        ver = (f"{'ok' if r.get('verified') else 'MISMATCH'} {ver:.1e}" if ver is not None
               else ("error" if r.get("verify_error") else "-"))
        graph = r.get("graph_ms") if r.get("graph_ms") is not None else (
            "n/a" if r.get("graph_error") else None)
        comp = r.get("compile_ms") if r.get("compile_ms") is not None else (
            "n/a" if r.get("compile_error") else None)
        out.append([r["model"] if not r.get("error") else f"{r['model']} (error)", r.get("knetc_ms"),
                    graph, r.get("torch_ms"), comp, r.get("ratio"), r.get("launches_knetc"),
                    r.get("launches_torch"), r.get("peak_mb_knetc"), r.get("peak_mb_torch"), ver])
    return markdown(HEADER, out)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS),
                   help="comma-separated subset of " + ",".join(MODELS))
    p.add_argument("--rounds", type=int, default=0, help="timed rounds per model (default: per model)")
    p.add_argument("--json", default=None, help="write the rows and metadata here")
    p.add_argument("--md", default=None, help="write the markdown table here")
    p.add_argument("--quick", action="store_true", help="a third of the rounds")
    p.add_argument("--dry-run", action="store_true",
                   help="no GPU: NumPy + torch CPU at tiny sizes, one step, nothing timed")
    p.add_argument("--time-limit", type=float, default=0,
                   help="stop starting new work this many seconds after the start (0: none)")
    p.add_argument("--host", action="store_true",
                   help="time on the CPU (NumPy + torch CPU, tiny sizes): tests the timing code "
                        "without a GPU")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    p.add_argument("--compile-limit", type=float, default=90,
                   help="seconds allowed for one model's torch.compile (default 90)")
    p.add_argument("--gclip", type=float, default=0.0,
                   help="knetc's per-array gradient clipping (default 0: none, as torch here)")
    args = p.parse_args(argv)
    args.model_list = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = sorted(set(args.model_list) - set(MODELS))
    if bad:
        p.error(f"unknown models {bad}; choose from {', '.join(MODELS)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    deadline = Deadline(args.time_limit)
    status = "dry-run" if args.dry_run else ("host" if args.host else "ok")
    doc: dict[str, Any] = {"kind": "bench", "status": "partial", "meta": {}, "rows": []}
    try:
        dev = Device(args.dry_run, args.host)
    except Exception as e:
        doc.update(status="error", error=short_error(e))
        write_json(args.json, doc)
        print(f"bench: {doc['error']}", flush=True)
        return 1
    doc["meta"] = {**versions(), "dry_run": args.dry_run, "quick": args.quick, "gclip": args.gclip,
                   "host": args.host, "device": "cpu" if dev.host else _gpu_name(dev)}
    rng = np.random.default_rng(0)
    specs = make_specs(args, rng)
    rows, lives = doc["rows"], {}
    for name in args.model_list:
        row: dict[str, Any] = {"model": name, "info": specs[name].info, "status": "running"}
        rows.append(row)
        if deadline.left() < 10:
            row.update(status="skipped", error="time limit reached before this model")
            continue
        print(f"[{name}] {specs[name].info}", flush=True)
        write_json(args.json, doc)                 # a kill from here on shows it 'running'
        try:
            lives[name] = run_model(specs[name], dev, args, row, deadline)
            row["status"] = status
        except Exception as e:
            row.update(status="error", error=short_error(e))
            traceback.print_exc()
        doc["markdown"] = table(rows)
        write_json(args.json, doc)
    if not args.dry_run and not args.no_compile and dev.torch_ok:   # (--host: torch CPU)
        for name in ("lenet", "mlp", "charlm", "softmax", "housing"):
            if name not in lives or "torch" not in lives[name].steps:
                continue
            row = next(r for r in rows if r["model"] == name)
            left = deadline.left() - 15
            if left < 20:
                row["compile_error"] = "skipped: time limit"
                continue
            print(f"[{name}] torch.compile", flush=True)
            try:
                run_compile(lives[name], dev, row, deadline, min(args.compile_limit, left))
            except BaseException as e:            # TimeoutError from the alarm included
                if isinstance(e, KeyboardInterrupt):
                    raise
                row["compile_error"] = short_error(e)
                traceback.print_exc()
            doc["markdown"] = table(rows)
            write_json(args.json, doc)
    elif not args.dry_run:
        for r in rows:
            r.setdefault("compile_error", "not run")
    doc["status"] = status
    doc["seconds"] = round(time.monotonic() - T0, 1)
    doc["markdown"] = table(rows)
    write_json(args.json, doc)
    if args.md:
        Path(args.md).write_text(doc["markdown"] + "\n", encoding="utf-8")
    print(doc["markdown"], flush=True)
    return 0


def _gpu_name(dev: Device) -> str:
    try:
        p = dev.cp.cuda.runtime.getDeviceProperties(dev.cp.cuda.Device().id)
        n = p.get("name", b"?")
        return n.decode() if isinstance(n, bytes) else str(n)
    except Exception as e:
        return f"? ({short_error(e, 80)})"


if __name__ == "__main__":
    sys.exit(main())
