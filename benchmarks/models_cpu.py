"""One training step of the Transformer LM and the MNIST ResNet on CPU: knetc against PyTorch.

    python benchmarks/models_cpu.py [--models transformer,resnet] [--repeat N] [--threads N]
                                    [--torch-attention sdpa|manual] [--gelu tanh|exact] [--quick]

The knetc models are the examples' own code (``examples/transformer_lm.py``,
``examples/resnet_mnist.py``: their ``loss`` and ``initmodel``/``initweights``), at the examples'
default sizes; the PyTorch models are the same architectures written with
``torch.nn.functional``, started from the same weights (copied from knetc's):

===========  ===============================================================  ==========  =======
model        layers                                                           batch       update
===========  ===============================================================  ==========  =======
transformer  char embedding 83 -> 64 + positions, 2 pre-norm layers (4-head   32 x 64     AdamW
             causal attention, MLP 64 -> 256 -> 64, GELU tanh form*), layer    chars       1e-3 and
             norm, dense 64 -> 83, nll over all positions                                  clipping
resnet       conv 3x3 1->16, bn, relu, max-pool; residual blocks 16 (14x14),   128 MNIST   Adam
             16->32 and 32->64 (stride 2, 1x1 conv shortcut), each conv        images      1e-3
             followed by batchnorm (batch statistics, running moments
             updated); global average pool, dense 64 -> 10, nll
===========  ===============================================================  ==========  =======

(*) ``--gelu exact``: the exact erf form in both (``knetc.gelu(x)``, ``F.gelu(x)``).

One *training step* is, in knetc, ``value_and_grad`` of the loss, (transformer:
``clip_grad_norm(dw, 1.0)``) and ``update(w, dw, opts)``; in PyTorch eager ``zero_grad``, the
loss, ``backward()``, (``clip_grad_norm_``) and ``opt.step()``.  PyTorch's attention is
``F.scaled_dot_product_attention(..., is_causal=True)`` (what a PyTorch user writes; the same
mathematics as knetc's masked softmax) or, with ``--torch-attention manual``, the masked softmax
written out as in the knetc model; its layer norm is ``F.layer_norm``, its batchnorm
``F.batch_norm(training=True)``.  knetc's ``conv4`` is a convolution (the kernel flipped), torch's
``conv2d`` a cross-correlation: torch gets the flipped kernels.

Before timing, the loss and the gradient of **every** parameter are computed by both on the same
weights and data and asserted equal to float32 tolerance (loss to 1e-4 relative, each gradient to
1e-3 of its largest entry).

Threads: ``--threads N`` (default 1) is set for OpenBLAS, OpenMP and MKL before NumPy is imported,
and ``torch.set_num_threads(N)``.  Timing: after warm-up the two take turns round-robin (one step
each per round, the order alternating, a short untimed ``--settle`` pause before each turn), and
the table gives the median over ``--repeat`` steps each.  knetc's first step is reported apart:
"compile" (``Grad.specialize``: the traced run of the loss on the real arguments, adjoint
generation, Python compile) and "1st step" (compile + the first step, which also allocates the
optimizer state); torch's first step is given beside it.
"""
from __future__ import annotations

import os
import sys


def _preparse_threads() -> int:
    """``--threads N`` (default 1) must reach OpenBLAS before NumPy is imported."""
    n = 1
    for i, a in enumerate(sys.argv):
        if a == "--threads" and i + 1 < len(sys.argv):
            n = int(sys.argv[i + 1])
        elif a.startswith("--threads="):
            n = int(a.split("=", 1)[1])
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    return n


THREADS = _preparse_threads() if __name__ == "__main__" else 0

import argparse  # noqa: E402
import datetime  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import numpy as np  # noqa: E402

import knetc  # noqa: E402
from knetc import tree  # noqa: E402
from knetc.optim import Adam, AdamW, clip_grad_norm, optimizers, update  # noqa: E402
from knetc.runtime.layers import BNMoments  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from examples import resnet_mnist, transformer_lm  # noqa: E402

try:
    import torch
    import torch.nn.functional as F
    if THREADS > 0:
        torch.set_num_threads(THREADS)
except ImportError:  # pragma: no cover - the torch column stays empty
    torch = None


# --------------------------------------------------------------------------- torch models
# The same architectures, written with torch.nn.functional; parameters in the same nested
# dicts as knetc's (torch tensors), so gradients can be compared leaf by leaf.

def t_attention(p, x, nheads, manual=False):
    B, T, D = x.shape
    dh = D // nheads
    q, k, v = (x @ p["wqkv"] + p["bqkv"]).split(D, dim=-1)
    q, k, v = (a.view(B, T, nheads, dh).transpose(1, 2) for a in (q, k, v))
    if manual:
        s = (q @ k.transpose(-1, -2)) * dh ** -0.5
        causal = torch.ones(T, T, dtype=torch.bool).tril()
        o = F.softmax(s.masked_fill(~causal, -1e9), dim=-1) @ v
    else:
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return o.transpose(1, 2).reshape(B, T, D) @ p["wo"] + p["bo"]


def t_transformer_loss(w, x, y, nheads, manual=False, gelu="tanh"):
    B, T = x.shape
    D = w["tok"].shape[1]
    h = w["tok"][x] + w["pos"][:T]
    for p in w["layers"]:
        h = h + t_attention(p, F.layer_norm(h, (D,), p["ln1_g"], p["ln1_b"], 1e-5), nheads, manual)
        a = F.layer_norm(h, (D,), p["ln2_g"], p["ln2_b"], 1e-5) @ p["w1"] + p["b1"]
        h = h + F.gelu(a, approximate=gelu) @ p["w2"] + p["b2"]
    s = F.layer_norm(h, (D,), w["lnf_g"], w["lnf_b"], 1e-5) @ w["out"] + w["out_b"]
    return F.cross_entropy(s.reshape(B * T, -1), y.reshape(-1))


def t_conv_bn(p, x, stride=1, padding=1):
    C = p["w"].shape[0]
    h = F.conv2d(x, p["w"], stride=stride, padding=padding)
    return F.batch_norm(h, p["m"]["mean"], p["m"]["var"], p["bn"][:C], p["bn"][C:],
                        training=True, momentum=0.1, eps=1e-5)


def t_resnet_loss(w, x, y):
    h = F.max_pool2d(F.relu(t_conv_bn(w["stem"], x)), 2)
    for p in w["blocks"]:
        stride = 2 if "down" in p else 1
        r = t_conv_bn(p["c2"], F.relu(t_conv_bn(p["c1"], h, stride)))
        s = t_conv_bn(p["down"], h, stride, padding=0) if "down" in p else h
        h = F.relu(r + s)
    h = F.avg_pool2d(h, h.shape[2]).flatten(1)
    return F.cross_entropy(h @ w["fc"] + w["fc_b"], y)


# --------------------------------------------------------------------------- the models

@dataclass
class Model:
    name: str
    loss: Callable            # knetc loss(w, *args)
    tloss: Callable           # torch loss(tw, *targs)
    weights: dict             # knetc parameters (float32 arrays; BNMoments for batchnorm)
    args: tuple               # knetc arguments after w
    targs: tuple              # torch arguments after w (tensors)
    opt: str                  # "adamw" or "adam"
    lr: float
    clip: float = 0.0         # global-norm clipping (0: none)
    info: str = ""
    fresh: Callable = None    # () -> a fresh copy of the initial weights
    extra: dict = field(default_factory=dict)


def _flip(a):
    """knetc's conv4 kernels -> torch's conv2d kernels (and back: flipping is its own inverse)."""
    return a[:, :, ::-1, ::-1].copy() if a.ndim == 4 else a


def to_torch(w):
    """knetc parameters -> torch: arrays become leaf tensors requiring grad (conv kernels
    flipped), each BNMoments the running statistics {"mean": zeros, "var": ones} of torch's
    batchnorm."""
    def leaf(a):
        if isinstance(a, BNMoments):
            return {"mean": None, "var": None}
        return torch.tensor(_flip(a), requires_grad=True)

    tw = tree.map(leaf, w)
    for path, m in tree.paths(w):
        if isinstance(m, BNMoments):
            C = tree.get(w, path[:-1])["bn"].size // 2
            tree.get(tw, path).update(mean=torch.zeros(C), var=torch.ones(C))
    return tw


def array_paths(w):
    """The paths of the float-array leaves of knetc's parameters (what gets a gradient)."""
    return [path for path, a in tree.paths(w) if isinstance(a, np.ndarray)]


def torch_params(tw, paths):
    """torch's parameter tensors at ``paths``, in that order."""
    return [tree.get(tw, p) for p in paths]


def make_models(args) -> dict[str, Model]:
    rng = np.random.default_rng(0)
    m = {}
    # the Transformer LM at the example's default size
    V, D, L, T, B, H = 83, 64, 2, 64, 32, 4
    knetc.init.seed(0)
    tw0 = transformer_lm.initmodel(V, D, L, T)
    x = rng.integers(0, V, (B, T))
    y = rng.integers(0, V, (B, T))
    manual = args.torch_attention == "manual"
    gelu = "none" if args.gelu == "exact" else "tanh"
    m["transformer"] = Model(
        "transformer", transformer_lm.loss,
        lambda tw, tx, ty: t_transformer_loss(tw, tx, ty, H, manual, gelu),
        tw0, (x, y, H, 0.0, gelu), (torch.from_numpy(x), torch.from_numpy(y)) if torch else (),
        "adamw", 1e-3, clip=1.0,
        info=f"d {D}, {L} layers, {H} heads, batch {B} x {T} chars, vocab {V}, GELU {args.gelu}; "
             f"torch attention {args.torch_attention}",
        fresh=lambda: tree.map(np.copy, tw0))
    # the ResNet at the example's default size
    knetc.init.seed(0)
    rw0 = resnet_mnist.initweights((16, 32, 64))
    n = 128
    xi = rng.random((n, 1, 28, 28), dtype=np.float32)
    yi = rng.integers(0, 10, n)

    def fresh_resnet():
        return tree.map(lambda a: BNMoments() if isinstance(a, BNMoments) else a.copy(), rw0)
    m["resnet"] = Model(
        "resnet", resnet_mnist.loss, t_resnet_loss, rw0, (xi, yi),
        (torch.from_numpy(xi), torch.from_numpy(yi)) if torch else (), "adam", 1e-3,
        info=f"channels 16-32-64, batch {n} x 1x28x28", fresh=fresh_resnet)
    return m


# --------------------------------------------------------------------------- the steps

def knetc_step(model: Model):
    """(step, compile_s, first_s) for knetc; the step updates its own copy of the weights."""
    w = model.fresh()
    vg = knetc.value_and_grad(model.loss)
    t = time.perf_counter()
    vg.specialize((w, *model.args))          # specialize + generate + compile, cached
    compile_s = time.perf_counter() - t
    opt = AdamW if model.opt == "adamw" else Adam
    hyper = {"weight_decay": 0.01} if model.opt == "adamw" else {}
    opts = optimizers(w, opt, lr=model.lr, **hyper)

    def step():
        _, dw = vg(w, *model.args)
        if model.clip:
            clip_grad_norm(dw, model.clip)
        update(w, dw, opts)

    t = time.perf_counter()
    step()
    return step, compile_s, compile_s + time.perf_counter() - t


def torch_step(model: Model):
    """(step, first_s) for PyTorch eager, with its own copy of the weights."""
    w = model.fresh()
    tw = to_torch(w)
    params = torch_params(tw, array_paths(w))
    if model.opt == "adamw":
        opt = torch.optim.AdamW(params, lr=model.lr, betas=(0.9, 0.999), eps=1e-8,
                                weight_decay=0.01)
    else:
        opt = torch.optim.Adam(params, lr=model.lr, betas=(0.9, 0.999), eps=1e-8)

    def step():
        opt.zero_grad(set_to_none=True)
        model.tloss(tw, *model.targs).backward()
        if model.clip:
            torch.nn.utils.clip_grad_norm_(params, model.clip)
        opt.step()

    t = time.perf_counter()
    step()
    return step, time.perf_counter() - t


def verify(model: Model) -> str:
    """Assert that knetc and torch agree on the loss and every parameter's gradient."""
    w = model.fresh()
    paths = array_paths(w)
    kl, kg = knetc.value_and_grad(model.loss)(w, *model.args)
    kl = float(kl)
    kg = [np.asarray(tree.get(kg, p)) for p in paths]
    w = model.fresh()
    tw = to_torch(w)
    tl = model.tloss(tw, *model.targs)
    tl.backward()
    tl = float(tl.detach())
    tg = [_flip(t.grad.numpy()) for t in torch_params(tw, paths)]
    assert abs(tl - kl) <= 1e-4 * max(1.0, abs(kl)), f"{model.name}: loss knetc {kl} vs torch {tl}"
    assert len(kg) == len(tg), f"{model.name}: {len(kg)} knetc gradients vs {len(tg)} torch"
    worst = 0.0
    for path, g, t in zip(paths, kg, tg):
        assert g.shape == t.shape, f"{model.name}: gradient {path} {g.shape} vs torch {t.shape}"
        scale = float(np.max(np.abs(t))) or 1.0
        err = float(np.max(np.abs(g - t))) / scale
        worst = max(worst, err)
        assert err < 1e-3, (f"{model.name}: gradient of {path} {g.shape}: max |knetc - torch| = "
                            f"{err:.2e} of max |grad|")
    return f"loss {kl:.5f}, {len(kg)} gradients agree to {worst:.1e} (max abs diff / max abs grad)"


# --------------------------------------------------------------------------- timing

def measure(steps: dict, repeat: int, settle: float) -> dict:
    """Round-robin, one step each per round, the order alternating; medians in ms."""
    names = list(steps)
    for f in steps.values():          # warm-up
        for _ in range(3):
            f()
    times = {n: [] for n in names}
    for r in range(repeat):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            if settle > 0:
                time.sleep(settle)
            t = time.perf_counter()
            steps[n]()
            times[n].append(time.perf_counter() - t)
    return {n: 1e3 * statistics.median(v) for n, v in times.items()}


def header(args) -> str:
    parts = [f"{datetime.date.today()}", f"{platform.machine()}, {os.cpu_count()} cores",
             f"load {os.getloadavg()[0]:.1f}", f"Python {platform.python_version()}",
             f"numpy {np.__version__}", f"knetc {knetc.__version__}"]
    if torch is not None:
        parts.append(f"torch {torch.__version__} (threads {torch.get_num_threads()})")
    parts.append(f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', '-')}")
    return "; ".join(parts)


def main(argv=None) -> list:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="transformer,resnet",
                    help="comma-separated subset of transformer,resnet")
    ap.add_argument("--repeat", type=int, default=0,
                    help="timed steps per framework (default 60 transformer, 20 resnet)")
    ap.add_argument("--threads", type=int, default=1,
                    help="threads for OpenBLAS/OpenMP/MKL and torch (1)")
    ap.add_argument("--settle", type=float, default=0.05,
                    help="untimed pause in seconds before each turn (0.05)")
    ap.add_argument("--torch-attention", default="sdpa", choices=["sdpa", "manual"],
                    help="torch's attention: F.scaled_dot_product_attention (default) or the "
                         "masked softmax written out")
    ap.add_argument("--gelu", default="tanh", choices=["tanh", "exact"],
                    help="the Transformer's GELU: the tanh form (the example's default) or the "
                         "exact erf form")
    ap.add_argument("--quick", action="store_true", help="fewer steps (10 each)")
    ap.add_argument("--no-verify", action="store_true", help="skip the knetc/torch check")
    args = ap.parse_args(argv)
    if torch is None:
        ap.error("PyTorch is not installed: nothing to compare with")
    models = make_models(args)
    wanted = [s.strip() for s in args.models.split(",") if s.strip()]
    unknown = set(wanted) - set(models)
    if unknown:
        ap.error(f"unknown models {sorted(unknown)}; choose from {', '.join(models)}")
    print(header(args))
    print("one training step (gradient + update), float32, median ms\n", flush=True)
    rows = []
    for name in wanted:
        model = models[name]
        print(f"[{name}] {model.info}; {model.opt} lr {model.lr}"
              + (f", clip {model.clip}" if model.clip else ""), flush=True)
        if not args.no_verify:
            print("  verified: " + verify(model), flush=True)
        kstep, kcomp, kfirst = knetc_step(model)
        tstep, tfirst = torch_step(model)
        repeat = args.repeat or (10 if args.quick else (60 if name == "transformer" else 20))
        res = measure({"knetc": kstep, "torch": tstep}, repeat, args.settle)
        rows.append((name, res, kcomp, kfirst, tfirst))
        print(f"  knetc {res['knetc']:.2f} ms, torch {res['torch']:.2f} ms (median of {repeat} "
              f"steps each)", flush=True)
    print()
    print(f"{'model':12s} {'knetc ms':>9s} {'torch ms':>9s} {'knetc/torch':>11s} "
          f"{'compile ms':>10s} {'1st step ms':>11s} {'torch 1st ms':>12s}")
    for name, res, kcomp, kfirst, tfirst in rows:
        print(f"{name:12s} {res['knetc']:9.2f} {res['torch']:9.2f} "
              f"{res['knetc'] / res['torch']:11.2f} {1e3 * kcomp:10.0f} {1e3 * kfirst:11.0f} "
              f"{1e3 * tfirst:12.0f}", flush=True)
    return rows


if __name__ == "__main__":
    main()
