"""The DeepLearningFrameworks benchmarks, knetc against PyTorch eager on the same machine.

    python benchmarks/dlf.py [--device cpu|gpu] [--quick] [--models imdb_gru,cifar_vgg,resnet50]
                             [--json PATH] [--md PATH] [--threads N] [--dry-run]

=========  =========================================================  ==========================
model      what is timed                                              figure
=========  =========================================================  ==========================
imdb_gru   a training step (gradient + Adam) of ``examples/imdb_gru``  seconds per epoch, from N
           (embedding 125, GRU 100, dense 2; batch 64 x 150 ids)      batches x 390 batches
cifar_vgg  a training step (gradient + SGD momentum) of               seconds per epoch, from N
           ``examples/cifar_vgg`` (batch 64 x 3 x 32 x 32)            batches x 781 batches
resnet50   ``examples/resnet50.predict`` (batchnorm in eval mode),    images/s at batch 64, and
           224 x 224 images, random weights                           batch-1 latency
=========  =========================================================  ==========================

knetc runs the examples' own code, on NumPy (``--device cpu``) or CuPy (``--device gpu``);
PyTorch runs the notebooks' models written with ``torch.nn`` (``torch.backends.cudnn.benchmark``
on, as in the notebooks) on the CPU or on ``cuda``.  The ratio is PyTorch's time over knetc's
(>= 1: knetc is as fast or faster).  The data are seeded synthetic arrays of the real shapes
(word ids / images): the timing does not depend on the values, and the GPU machine has no data
sets.  Each model is measured in its own ``try``: a failure is recorded as text in the results
and the others still run.  After a warm-up (knetc's compilation and the first step), the two
frameworks take turns, one timed block each.

``--quick`` times fewer batches (and on the CPU a smaller ResNet batch: the figure says which);
``--dry-run`` imports everything and runs each model once at tiny sizes on NumPy (and on
PyTorch's CPU when it is installed), timing nothing: a check that the script will run.
"""
from __future__ import annotations

import itertools
import os
import sys


def _preparse_threads() -> None:
    """``--threads N`` must reach OpenBLAS/OpenMP before NumPy is imported."""
    for i, a in enumerate(sys.argv):
        n = sys.argv[i + 1] if a == "--threads" and i + 1 < len(sys.argv) else (
            a.split("=", 1)[1] if a.startswith("--threads=") else None)
        if n is not None:
            for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
                os.environ[var] = n


_preparse_threads()

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import knetc  # noqa: E402
from knetc.optim import Adam, Momentum, optimizers, update  # noqa: E402

from examples import cifar_vgg, imdb_gru, resnet50  # noqa: E402

IMDB_BATCHES, CIFAR_BATCHES = 25000 // 64, 50000 // 64     # complete batches per epoch


# --------------------------------------------------------------------------- devices

class Device:
    """Where each framework runs: ``xp`` (numpy or cupy) for knetc, a torch device name."""

    def __init__(self, kind: str, torch=None):
        self.kind = kind
        self.torch = torch
        self.xp = np
        if kind == "gpu":
            from knetc.runtime.backend import cupy_module
            self.xp = cupy_module()
            if self.xp is None:
                raise RuntimeError("--device gpu: CuPy with a working CUDA device is needed")
        self.tdev = "cuda" if kind == "gpu" else "cpu"

    def put(self, w):
        """knetc weights (nested) on the device."""
        return knetc.gpu(w) if self.kind == "gpu" else w

    def sync_knetc(self):
        if self.kind == "gpu":
            self.xp.cuda.Device().synchronize()

    def sync_torch(self):
        if self.kind == "gpu" and self.torch is not None:
            self.torch.cuda.synchronize()


def _timed(fn, n, sync):
    sync()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    sync()
    return (time.perf_counter() - t) / n


def _alternate(kfn, tfn, n, rounds, dev):
    """Median seconds per call of knetc's and torch's ``fn`` over ``rounds`` blocks of ``n``,
    the frameworks taking turns (torch None: knetc only)."""
    ks, ts = [], []
    for r in range(rounds):
        order = [("k", kfn), ("t", tfn)] if r % 2 == 0 else [("t", tfn), ("k", kfn)]
        for who, fn in order:
            if fn is None:
                continue
            if who == "k":
                ks.append(_timed(fn, n, dev.sync_knetc))
            else:
                ts.append(_timed(fn, n, dev.sync_torch))
    return float(np.median(ks)), (float(np.median(ts)) if ts else None)


# --------------------------------------------------------------------------- the torch models

def torch_gru(torch, vocab, embed, hidden):
    """The PyTorch notebook's model: embedding, GRU (batch first), dense on the last output."""
    nn = torch.nn

    class GRU(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(vocab, embed)
            self.gru = nn.GRU(embed, hidden, num_layers=1, batch_first=True)
            self.l_out = nn.Linear(hidden, 2)

        def forward(self, x):
            y, _ = self.gru(self.embedding(x))
            return self.l_out(y[:, -1, :])
    return GRU()


def torch_vgg(torch, channels=(50, 100), hidden=512, nclasses=10, size=32):
    """The PyTorch notebook's CIFAR-10 CNN."""
    nn, F = torch.nn, torch.nn.functional
    c1, c2 = channels

    class VGG(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, c1, 3, padding=1)
            self.conv2 = nn.Conv2d(c1, c1, 3, padding=1)
            self.conv3 = nn.Conv2d(c1, c2, 3, padding=1)
            self.conv4 = nn.Conv2d(c2, c2, 3, padding=1)
            self.fc1 = nn.Linear(c2 * (size // 4) ** 2, hidden)
            self.fc2 = nn.Linear(hidden, nclasses)

        def forward(self, x):
            x = self.conv2(F.relu(self.conv1(x)))
            x = F.dropout(F.relu(F.max_pool2d(x, 2, 2)), 0.25, training=self.training)
            x = self.conv4(F.relu(self.conv3(x)))
            x = F.dropout(F.relu(F.max_pool2d(x, 2, 2)), 0.25, training=self.training)
            x = F.dropout(F.relu(self.fc1(x.flatten(1))), 0.5, training=self.training)
            return self.fc2(x)
    return VGG()


def torch_resnet(torch, w):
    """torchvision's resnet50 structure from ``torch.nn`` layers, holding knetc's weights ``w``
    (``examples/resnet50.initmodel``) and its batchnorm moments where set, in eval mode."""
    nn = torch.nn

    def cbn(p, stride=1, padding=0):
        o, i, k, _ = p["w"].shape
        conv, bn = nn.Conv2d(i, o, k, stride, padding, bias=False), nn.BatchNorm2d(o)
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(np.asarray(p["w"])))
            bn.weight.copy_(torch.from_numpy(np.asarray(p["bn"][:o])))
            bn.bias.copy_(torch.from_numpy(np.asarray(p["bn"][o:])))
            if p["m"].mean is not None:         # running moments set: eval mode uses them
                bn.running_mean.copy_(torch.from_numpy(np.asarray(p["m"].mean, np.float32)))
                bn.running_var.copy_(torch.from_numpy(np.asarray(p["m"].var, np.float32)))
        return nn.Sequential(conv, bn)

    class Bottleneck(nn.Module):
        def __init__(self, b, stride):
            super().__init__()
            self.c1, self.c2, self.c3 = cbn(b["c1"]), cbn(b["c2"], stride, 1), cbn(b["c3"])
            self.down = cbn(b["down"], stride) if "down" in b else None

        def forward(self, x):
            h = self.c3(torch.relu(self.c2(torch.relu(self.c1(x)))))
            return torch.relu(h + (x if self.down is None else self.down(x)))

    blocks = [Bottleneck(b, 2 if i > 0 and j == 0 else 1)
              for i, stage in enumerate(w["stages"]) for j, b in enumerate(stage)]
    fc = nn.Linear(*w["fc"].shape)
    with torch.no_grad():
        fc.weight.copy_(torch.from_numpy(np.ascontiguousarray(w["fc"].T)))
        fc.bias.copy_(torch.from_numpy(w["fc_b"]))
    return nn.Sequential(cbn(w["stem"], 2, 3), nn.ReLU(), nn.MaxPool2d(3, 2, 1), *blocks,
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), fc).eval()


# --------------------------------------------------------------------------- the benchmarks

def _imdb_ids(n, vocab, maxlen, seed=0):
    """Seeded synthetic word ids and labels of the IMDB batches' shapes."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, vocab, (n, maxlen)), rng.integers(0, 2, n)


def bench_imdb(dev, size, torch=None):
    """Seconds per training step of the GRU, projected to an epoch of 390 batches."""
    vocab, embed, hidden, B, T = size["vocab"], size["embed"], size["hidden"], size["batch"], size["T"]
    xs, ys = _imdb_ids(B * 4, vocab, T)
    batches = [(xs[i * B:(i + 1) * B], ys[i * B:(i + 1) * B]) for i in range(4)]
    w = dev.put(imdb_gru.initmodel(vocab, embed, hidden, seed=0))
    opts = optimizers(w, Adam, lr=0.001)
    kstep = _knetc_steps(imdb_gru.loss, w, opts, batches, dev)
    tstep = None
    if torch is not None:
        m = torch_gru(torch, vocab, embed, hidden).to(dev.tdev).train()
        opt = torch.optim.Adam(m.parameters(), 0.001, betas=(0.9, 0.999), eps=1e-8)
        tstep = _torch_steps(torch, m, opt, batches, dev)
    return _steps_result("imdb_gru", kstep, tstep, size, IMDB_BATCHES, dev,
                         f"batch {B} x {T} ids, embed {embed}, GRU {hidden}, Adam")


def bench_cifar(dev, size, torch=None):
    """Seconds per training step of the CNN, projected to an epoch of 781 batches."""
    B, S, ch, hid = size["batch"], size["size"], size["channels"], size["hidden"]
    rng = np.random.default_rng(0)
    batches = [(rng.random((B, 3, S, S), np.float32), rng.integers(0, 10, B)) for _ in range(2)]
    knetc.init.seed(0)
    w = dev.put(cifar_vgg.initweights(ch, hid, size=S))
    opts = optimizers(w, Momentum, lr=0.01, gamma=0.9)
    kstep = _knetc_steps(cifar_vgg.loss, w, opts, batches, dev)
    tstep = None
    if torch is not None:
        m = torch_vgg(torch, ch, hid, size=S).to(dev.tdev).train()
        opt = torch.optim.SGD(m.parameters(), 0.01, momentum=0.9)
        tstep = _torch_steps(torch, m, opt, batches, dev)
    return _steps_result("cifar_vgg", kstep, tstep, size, CIFAR_BATCHES, dev,
                         f"batch {B} x 3 x {S} x {S}, channels {ch[0]}/{ch[1]}, SGD momentum")


def _knetc_steps(loss, w, opts, batches, dev):
    """One knetc training step (``gradloss`` + ``update``) per call, on the batches in turn."""
    lg = knetc.gradloss(loss)
    cycle = itertools.cycle([(dev.xp.asarray(x), dev.xp.asarray(y)) for x, y in batches])

    def kstep():
        x, y = next(cycle)
        dw, _ = lg(w, x, y)
        update(w, dw, opts)
    return kstep


def _torch_steps(torch, m, opt, batches, dev):
    """One torch training step (cross-entropy, backward, ``opt.step``) per call, in turn."""
    crit = torch.nn.CrossEntropyLoss()
    cycle = itertools.cycle([(torch.from_numpy(x).to(dev.tdev), torch.from_numpy(y).to(dev.tdev))
                             for x, y in batches])

    def tstep():
        x, y = next(cycle)
        opt.zero_grad()
        crit(m(x), y).backward()
        opt.step()
    return tstep


def _steps_result(name, kstep, tstep, size, per_epoch, dev, what):
    for _ in range(size["warmup"]):                 # knetc compiles; cuDNN autotunes
        kstep()
        if tstep is not None:
            tstep()
    dev.sync_knetc()
    dev.sync_torch()
    if size["timed"] == 0:
        return {"model": name, "what": what, "metric": "s/epoch", "dry_run": True}
    k, t = _alternate(kstep, tstep, size["timed"], size["rounds"], dev)
    r = {"model": name, "what": what, "metric": "s/epoch (projected)",
         "knetc": k * per_epoch, "torch": None if t is None else t * per_epoch,
         "knetc_step_s": k, "torch_step_s": t, "batches_timed": size["timed"] * size["rounds"],
         "batches_per_epoch": per_epoch, "data": "synthetic (seeded)"}
    r["ratio"] = None if t is None else t / k
    return r


def bench_resnet(dev, size, torch=None):
    """ResNet-50 inference: images/s at the batch size, and batch-1 latency."""
    B, S = size["batch"], size["size"]
    w = resnet50.initmodel(size["width"], nclasses=size["classes"], seed=0)
    rng = np.random.default_rng(0)
    x = rng.random((B, 3, S, S), np.float32)
    x1 = x[:1].copy()
    tm = None
    if torch is not None:
        tm = torch_resnet(torch, w).to(dev.tdev)
    for p in resnet50.layers_of(w):                # torch's running stats: mean 0, var 1, too
        p["m"].mean = np.zeros(p["w"].shape[0], np.float32)
        p["m"].var = np.ones(p["w"].shape[0], np.float32)
    wk = dev.put(w)
    if dev.kind == "gpu":                           # moments are not arrays: move them as well
        for p in resnet50.layers_of(wk):
            p["m"].mean, p["m"].var = dev.xp.asarray(p["m"].mean), dev.xp.asarray(p["m"].var)
    kx, kx1 = dev.xp.asarray(x), dev.xp.asarray(x1)
    out = {}
    tfns = (None, None)
    if tm is not None:
        tx, tx1 = torch.from_numpy(x).to(dev.tdev), torch.from_numpy(x1).to(dev.tdev)

        def tb():
            with torch.no_grad():
                tm(tx)

        def t1():
            with torch.no_grad():
                tm(tx1)
        tfns = (tb, t1)
    kb = lambda: resnet50.predict(wk, kx)           # noqa: E731
    k1 = lambda: resnet50.predict(wk, kx1)          # noqa: E731
    for _ in range(size["warmup"]):
        kb()
        k1()
        if tm is not None:
            tfns[0]()
            tfns[1]()
    if tm is not None and size["check"]:            # the same weights give the same scores
        with torch.no_grad():
            ref = tm(torch.from_numpy(x1).to(dev.tdev)).cpu().numpy()
        got = np.asarray(knetc.cpu(k1()))
        out["max_abs_diff_vs_torch"] = float(np.max(np.abs(got - ref)))
        out["max_abs_torch"] = float(np.max(np.abs(ref)))
    what = f"{S}x{S} images, width {size['width']}, eval-mode batchnorm"
    if size["timed"] == 0:
        return {"model": "resnet50", "what": what, "metric": "images/s", "dry_run": True, **out}
    kt, tt = _alternate(kb, tfns[0], size["timed"], size["rounds"], dev)
    k1t, t1t = _alternate(k1, tfns[1], size["timed1"], size["rounds"], dev)
    r = {"model": "resnet50", "what": what, "metric": f"images/s at batch {B}",
         "knetc": B / kt, "torch": None if tt is None else B / tt,
         "ratio": None if tt is None else tt / kt,
         "latency_metric": "batch-1 latency (ms)", "knetc_latency_ms": k1t * 1000,
         "torch_latency_ms": None if t1t is None else t1t * 1000,
         "latency_ratio": None if t1t is None else t1t / k1t, "batch": B,
         "data": "synthetic (seeded)", **out}
    return r


# --------------------------------------------------------------------------- sizes and output

def sizes(args) -> dict:
    """Model sizes and step counts for the device and mode."""
    gpu, quick, dry = args.device == "gpu", args.quick, args.dry_run
    if dry:
        return {"imdb_gru": dict(vocab=50, embed=6, hidden=5, batch=4, T=7, warmup=1, timed=0),
                "cifar_vgg": dict(batch=2, size=8, channels=(3, 4), hidden=6, warmup=1, timed=0),
                "resnet50": dict(batch=2, size=32, width=4, classes=10, warmup=1, timed=0,
                                 check=True)}
    n = 10 if quick else 50
    imdb = dict(vocab=30000, embed=125, hidden=100, batch=64, T=150, warmup=2,
                timed=(n if gpu else (3 if quick else 10)), rounds=2 if quick else 3)
    cifar = dict(batch=64, size=32, channels=(50, 100), hidden=512, warmup=2,
                 timed=(n if gpu else (1 if quick else 5)), rounds=2 if quick else 3)
    res = dict(size=224, width=64, classes=1000, warmup=1, check=True,
               batch=64 if (gpu or not quick) else 4,
               timed=(3 if quick else 10) if gpu else 1,
               timed1=(10 if quick else 50) if gpu else (2 if quick else 5),
               rounds=2 if quick else 3)
    return {"imdb_gru": imdb, "cifar_vgg": cifar, "resnet50": res}


BENCHES = {"imdb_gru": bench_imdb, "cifar_vgg": bench_cifar, "resnet50": bench_resnet}


def _fmt(v, nd=2):
    return "-" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))


def markdown(res: dict) -> str:
    lines = [f"DeepLearningFrameworks benchmarks, knetc vs PyTorch eager, device {res['device']}"
             f"{' (quick)' if res['quick'] else ''}{' (DRY RUN: nothing timed)' if res['dry_run'] else ''}",
             f"({res['env']})", "",
             "| model | measure | knetc | PyTorch | ratio (>= 1: knetc as fast) | notes |",
             "|---|---|---:|---:|---:|---|"]
    for r in res["results"]:
        if r.get("error"):
            lines.append(f"| {r['model']} | - | - | - | - | ERROR: "
                         f"{r['error'].splitlines()[-1][:150]} |")
            continue
        lines.append(f"| {r['model']} | {r['metric']} | {_fmt(r.get('knetc'))} | "
                     f"{_fmt(r.get('torch'))} | {_fmt(r.get('ratio'))} | {r.get('what', '')} |")
        if "latency_metric" in r:
            lines.append(f"| {r['model']} | {r['latency_metric']} | "
                         f"{_fmt(r.get('knetc_latency_ms'))} | {_fmt(r.get('torch_latency_ms'))}"
                         f" | {_fmt(r.get('latency_ratio'))} | |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    ap.add_argument("--quick", action="store_true", help="fewer timed batches")
    ap.add_argument("--dry-run", action="store_true",
                    help="tiny sizes on NumPy (and torch CPU), nothing timed")
    ap.add_argument("--models", default="imdb_gru,cifar_vgg,resnet50")
    ap.add_argument("--no-torch", action="store_true", help="time knetc only")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads for BLAS and torch")
    ap.add_argument("--json", default=None, help="write the results as JSON here")
    ap.add_argument("--md", default=None, help="write the table as Markdown here")
    args = ap.parse_args(argv)
    if args.dry_run:
        args.device = "cpu"                          # nothing touches a GPU in a dry run
    t0 = time.perf_counter()
    torch = None
    env = f"Python {platform.python_version()}, NumPy {np.__version__}"
    if not args.no_torch:
        try:
            import torch
            if args.threads:
                torch.set_num_threads(args.threads)
            if args.device == "gpu":
                torch.backends.cudnn.benchmark = True
            env += f", torch {torch.__version__}"
        except Exception as e:                       # knetc alone still gets measured
            torch = None
            env += f", torch unavailable ({type(e).__name__})"
    dev = Device(args.device, torch)
    if dev.kind == "gpu":
        env += f", CuPy {dev.xp.__version__}"
        try:
            env += f", {dev.xp.cuda.runtime.getDeviceProperties(0)['name'].decode()}"
        except Exception:
            pass
    res = {"device": args.device, "quick": args.quick, "dry_run": args.dry_run, "env": env,
           "results": []}
    sz = sizes(args)
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        t = time.perf_counter()
        try:
            if name not in BENCHES:
                raise ValueError(f"unknown model {name!r}; one of {sorted(BENCHES)}")
            r = BENCHES[name](dev, sz[name], torch)
        except Exception:                            # recorded; the other models still run
            r = {"model": name, "error": traceback.format_exc()}
        r["wall_s"] = time.perf_counter() - t
        res["results"].append(r)
        print(f"dlf: {name} done in {r['wall_s']:.1f}s"
              + (f" ERROR {r['error'].splitlines()[-1]}" if r.get("error") else ""), flush=True)
    res["wall_s"] = time.perf_counter() - t0
    md = markdown(res)
    print(md, flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    if args.md:
        Path(args.md).write_text(md)
    return res


if __name__ == "__main__":
    main()
