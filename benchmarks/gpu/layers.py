"""knetc's cuDNN-backed layers on CuPy against torch.nn.functional on the same GPU.

    python benchmarks/gpu/layers.py [--layers NAME,...] [--rounds N] [--json PATH] [--md PATH]
                                    [--quick] [--dry-run] [--time-limit SECONDS]

Each row runs one layer's forward pass and its forward + backward pass through the runtime
functions the generated gradient code calls (``knetc.runtime.conv``: conv4, conv4_w, conv4_x,
deconv4 and its gradients, pool_with_index/pool_x_saved, pool/pool_x, unpool/unpool_x;
``knetc.runtime.layers``: batchnorm_forward, batchnorm_dx, batchnorm_dparams;
``knetc.runtime.rnn``: rnnforw_reserve, rnnback; ``knetc.runtime.prims``: softmax (its backward
as the softmax rule writes it), nll/nll_grad), and the torch equivalent (``F.conv2d`` with the
flipped kernel, ``F.conv_transpose2d``, ``F.max_pool2d``, ``F.avg_pool2d``, ``F.interpolate``,
``F.batch_norm``, ``nn.LSTM``, ``F.softmax``, ``F.cross_entropy``; forward with autograd
recording, backward with ``torch.autograd.grad``), at LeNet-, ResNet- and CharLM-like sizes,
float32. Times are medians over interleaved rounds (see bench.py); ``ratio`` is knetc / torch for
forward + backward; ``err`` is the largest ``max|knetc - torch| / max|torch|`` over the outputs
and gradients (computed once with torch's TF32 off). A missing or failing function gives 'n/a'
with the reason. ``--dry-run``: NumPy and torch on the CPU at tiny sizes, each layer run once
and checked, nothing timed.
"""
from __future__ import annotations

import argparse
import sys
import time
import traceback
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))      # bench.py's helpers

import bench as B  # noqa: E402
import numpy as np  # noqa: E402

torch, F = B.torch, B.F


@dataclass
class Impl:
    """The four callables of one layer and how to compare knetc's results with torch's."""
    kf: Callable[[], Any]             # knetc forward
    kfb: Callable[[], tuple]          # knetc forward + backward: (y, grads...)
    tf: Callable[[], Any] | None      # torch forward
    tfb: Callable[[], tuple] | None   # torch forward + backward, same order as kfb
    tmap: Callable[[tuple], tuple] = lambda outs: outs   # torch's results in knetc's layout
    functions: str = ""


class Ctx:
    """Random float32 data on both sides of the comparison."""

    def __init__(self, dev: B.Device, rng):
        self.dev, self.rng, self.xp = dev, rng, dev.xp

    def data(self, *shape, scale=1.0):
        return (scale * self.rng.standard_normal(shape)).astype(np.float32)

    def pair(self, a, grad=False):
        """(knetc array, torch tensor or None) holding the NumPy array ``a``."""
        t = self.dev.tput(a, grad=grad) if self.dev.torch_ok else None
        return self.dev.put(a), t


def _autograd(y, inputs, dy):
    return (y, *torch.autograd.grad(y, inputs, dy))


def _flip_t(t):
    return torch.flip(t, dims=(2, 3))


# --------------------------------------------------------------------------- the layers

def conv_case(c: Ctx, N, Cin, H, Co, k, pad=0, stride=1) -> Impl:
    from knetc.runtime import conv as K
    kw = dict(padding=pad, stride=stride)
    wn, xn = c.data(Co, Cin, k, k, scale=0.1), c.data(N, Cin, H, H)
    w, x = c.dev.put(wn), c.dev.put(xn)
    dyn = c.data(*K.conv4(w, x, **kw).shape)
    dy = c.dev.put(dyn)

    def kfb():
        y = K.conv4(w, x, **kw)
        return y, K.conv4_w(w, x, dy, **kw), K.conv4_x(w, x, dy, **kw)
    impl = Impl(lambda: K.conv4(w, x, **kw), kfb, None, None,
                functions="conv4, conv4_w, conv4_x")
    if c.dev.torch_ok:
        tw = c.dev.tput(np.ascontiguousarray(wn[:, :, ::-1, ::-1]), grad=True)   # correlation
        tx, tdy = c.dev.tput(xn, grad=True), c.dev.tput(dyn)
        impl.tf = lambda: F.conv2d(tx, tw, padding=pad, stride=stride)
        impl.tfb = lambda: _autograd(impl.tf(), (tw, tx), tdy)
        impl.tmap = lambda o: (o[0], _flip_t(o[1]), o[2])
    return impl


def deconv_case(c: Ctx, N, Cx, H, Cy, k, pad, stride) -> Impl:
    from knetc.runtime import conv as K
    kw = dict(padding=pad, stride=stride, mode=1)      # mode=1: torch's conv_transpose2d
    wn, xn = c.data(Cx, Cy, k, k, scale=0.1), c.data(N, Cx, H, H)
    w, x = c.dev.put(wn), c.dev.put(xn)
    dyn = c.data(*K.deconv4(w, x, **kw).shape)
    dy = c.dev.put(dyn)

    def kfb():
        y = K.deconv4(w, x, **kw)
        return y, K.deconv4_w(w, x, dy, **kw), K.deconv4_x(w, x, dy, **kw)
    impl = Impl(lambda: K.deconv4(w, x, **kw), kfb, None, None,
                functions="deconv4, deconv4_w, deconv4_x (mode=1)")
    if c.dev.torch_ok:
        tw, tx, tdy = c.dev.tput(wn, grad=True), c.dev.tput(xn, grad=True), c.dev.tput(dyn)
        impl.tf = lambda: F.conv_transpose2d(tx, tw, stride=stride, padding=pad)
        impl.tfb = lambda: _autograd(impl.tf(), (tw, tx), tdy)
    return impl


def pool_case(c: Ctx, shape, window=2, pad=0, stride=None, mode=0, saved=True) -> Impl:
    from knetc.runtime import conv as K
    kw = dict(window=window, padding=pad, stride=stride, mode=mode)
    xn = c.data(*shape)
    x = c.dev.put(xn)
    dyn = c.data(*K.pool(x, **kw).shape)
    dy = c.dev.put(dyn)
    if saved:
        def kf():
            return K.pool_with_index(x, **kw)

        def kfb():
            y, s = K.pool_with_index(x, **kw)
            return y, K.pool_x_saved(x, y, dy, s, **kw)
        names = "pool_with_index, pool_x_saved"
    else:
        def kf():
            return K.pool(x, **kw)

        def kfb():
            y = K.pool(x, **kw)
            return y, K.pool_x(x, y, dy, **kw)
        names = "pool, pool_x"
    impl = Impl(kf, kfb, None, None, functions=names + ("" if mode == 0 else f" (mode={mode})"))
    if c.dev.torch_ok:
        tx, tdy = c.dev.tput(xn, grad=True), c.dev.tput(dyn)
        s = window if stride is None else stride
        if mode in (0, 3):
            impl.tf = lambda: F.max_pool2d(tx, window, s, pad)
        else:                 # mode 1 counts padded cells: count_include_pad=True
            impl.tf = lambda: F.avg_pool2d(tx, window, s, pad, count_include_pad=(mode == 1))
        impl.tfb = lambda: _autograd(impl.tf(), (tx,), tdy)
    return impl


def unpool_case(c: Ctx, shape) -> Impl:
    from knetc.runtime import conv as K
    xn = c.data(*shape)
    x = c.dev.put(xn)
    dyn = c.data(*K.unpool(x).shape)
    dy = c.dev.put(dyn)

    def kfb():
        y = K.unpool(x)
        return y, K.unpool_x(x, y, dy)
    impl = Impl(lambda: K.unpool(x), kfb, None, None, functions="unpool, unpool_x")
    if c.dev.torch_ok:
        tx, tdy = c.dev.tput(xn, grad=True), c.dev.tput(dyn)
        impl.tf = lambda: F.interpolate(tx, scale_factor=2, mode="nearest")
        impl.tfb = lambda: _autograd(impl.tf(), (tx,), tdy)
    return impl


def batchnorm_case(c: Ctx, shape) -> Impl:
    from knetc.runtime import layers as L
    C = shape[1]
    xn, dyn = c.data(*shape), c.data(*shape)
    x, dy = c.dev.put(xn), c.dev.put(dyn)
    params = c.dev.put(L.bnparams(C))
    moments = L.bnmoments()

    def kf():
        return L.batchnorm_forward(x, moments, params, training=True)

    def kfb():
        y, saved = L.batchnorm_forward(x, moments, params, training=True)
        return (y, L.batchnorm_dx(x, params, saved, dy), L.batchnorm_dparams(x, params, saved, dy))
    impl = Impl(kf, kfb, None, None,
                functions="batchnorm_forward, batchnorm_dx, batchnorm_dparams")
    if c.dev.torch_ok:
        tx, tdy = c.dev.tput(xn, grad=True), c.dev.tput(dyn)
        g = c.dev.tput(np.ones(C, np.float32), grad=True)
        b = c.dev.tput(np.zeros(C, np.float32), grad=True)
        rm, rv = c.dev.tput(np.zeros(C, np.float32)), c.dev.tput(np.ones(C, np.float32))
        impl.tf = lambda: F.batch_norm(tx, rm, rv, g, b, training=True, momentum=0.1, eps=1e-5)
        impl.tfb = lambda: _autograd(impl.tf(), (tx, g, b), tdy)
        impl.tmap = lambda o: (o[0], o[1], torch.cat([o[2], o[3]]))
    return impl


def softmax_case(c: Ctx, shape) -> Impl:
    from knetc.runtime import prims as P
    xp = c.xp
    xn, dyn = c.data(*shape), c.data(*shape)
    x, dy = c.dev.put(xn), c.dev.put(dyn)

    def kfb():
        y = P.softmax(x)
        return y, y * (dy - xp.sum(dy * y, axis=-1, keepdims=True))   # knetc's softmax rule
    impl = Impl(lambda: P.softmax(x), kfb, None, None, functions="softmax + the rule's backward")
    if c.dev.torch_ok:
        tx, tdy = c.dev.tput(xn, grad=True), c.dev.tput(dyn)
        impl.tf = lambda: F.softmax(tx, dim=-1)
        impl.tfb = lambda: _autograd(impl.tf(), (tx,), tdy)
    return impl


def nll_case(c: Ctx, shape) -> Impl:
    from knetc.runtime import prims as P
    sn = c.data(*shape)
    yn = c.rng.integers(0, shape[1], shape[0])
    s, y = c.dev.put(sn), c.dev.put(yn)

    def kfb():
        return P.nll(s, y), P.nll_grad(s, y, 1.0)
    impl = Impl(lambda: P.nll(s, y), kfb, None, None, functions="nll, nll_grad")
    if c.dev.torch_ok:
        ts, ty = c.dev.tput(sn, grad=True), c.dev.tput(yn)
        impl.tf = lambda: F.cross_entropy(ts, ty)
        impl.tfb = lambda: (lambda loss: (loss, *torch.autograd.grad(loss, (ts,))))(impl.tf())
    return impl


def lstm_case(c: Ctx, T, Bt, X, H) -> Impl:
    from knetc.runtime import rnn as R
    r, wn = R.rnninit(X, H, rnnType="lstm", seed=0)
    xn = c.data(T, Bt, X)
    w, x = c.dev.put(wn), c.dev.put(xn)
    dyn = c.data(T, Bt, H)
    dy = c.dev.put(dyn)

    def kfb():
        out = R.rnnforw_reserve(r, w, x)
        dw, dx, _, _ = R.rnnback(r, w, x, None, None, out, (dy, None, None))
        return out[0], dx, dw
    impl = Impl(lambda: R.rnnforw_reserve(r, w, x), kfb, None, None,
                functions="rnnforw_reserve, rnnback")
    if c.dev.torch_ok:
        lstm = torch.nn.LSTM(X, H).to(c.dev.tdev)

        def blk(i0, par):
            return np.concatenate([R.rnnparam(r, wn, 0, i, par) for i in range(i0, i0 + 4)])
        ps = [lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0]
        with torch.no_grad():
            for p, a in zip(ps, (blk(0, 0), blk(4, 0), blk(0, 1), blk(4, 1))):
                p.copy_(torch.from_numpy(np.ascontiguousarray(a)))
        tx, tdy = c.dev.tput(xn, grad=True), c.dev.tput(dyn)
        impl.tf = lambda: lstm(tx)[0]
        impl.tfb = lambda: _autograd(impl.tf(), (tx, *ps), tdy)

        def tmap(o):
            # knetc's flat dw in cuDNN's order: the four blocks' matrices, then the biases
            y, dx, gih, ghh, bih, bhh = (B.to_numpy(a) for a in o)
            flat = np.zeros(r.paramSize, np.float32)
            for i0, par, a in ((0, 0, gih), (4, 0, ghh), (0, 1, bih), (4, 1, bhh)):
                for j in range(4):
                    R.rnnparam(r, flat, 0, i0 + j, par)[...] = a[j * H:(j + 1) * H]
            return y, dx, flat
        impl.tmap = tmap
    return impl


# (name, size text, builder(ctx), dry-run builder(ctx))
CASES: list[tuple[str, str, Callable[[Ctx], Impl], Callable[[Ctx], Impl]]] = [
    ("conv4 lenet1", "x 128x1x28x28, w 20x1x5x5",
     lambda c: conv_case(c, 128, 1, 28, 20, 5), lambda c: conv_case(c, 2, 1, 8, 3, 5)),
    ("conv4 lenet2", "x 128x20x12x12, w 50x20x5x5",
     lambda c: conv_case(c, 128, 20, 12, 50, 5), lambda c: conv_case(c, 2, 3, 8, 4, 5)),
    ("conv4 resnet 3x3", "x 32x64x56x56, w 64x64x3x3, pad 1",
     lambda c: conv_case(c, 32, 64, 56, 64, 3, pad=1), lambda c: conv_case(c, 2, 3, 6, 4, 3, pad=1)),
    ("conv4 resnet s2", "x 32x64x56x56, w 128x64x3x3, pad 1, stride 2",
     lambda c: conv_case(c, 32, 64, 56, 128, 3, pad=1, stride=2),
     lambda c: conv_case(c, 2, 3, 7, 4, 3, pad=1, stride=2)),
    ("deconv4", "x 64x128x16x16, w 128x64x4x4, pad 1, stride 2",
     lambda c: deconv_case(c, 64, 128, 16, 64, 4, 1, 2), lambda c: deconv_case(c, 2, 3, 4, 2, 4, 1, 2)),
    ("maxpool lenet1 (saved)", "x 128x20x24x24, 2x2",
     lambda c: pool_case(c, (128, 20, 24, 24)), lambda c: pool_case(c, (2, 3, 6, 6))),
    ("maxpool lenet1", "x 128x20x24x24, 2x2",
     lambda c: pool_case(c, (128, 20, 24, 24), saved=False),
     lambda c: pool_case(c, (2, 3, 6, 6), saved=False)),
    ("maxpool resnet", "x 32x64x112x112, 3x3 stride 2 pad 1",
     lambda c: pool_case(c, (32, 64, 112, 112), 3, 1, 2),
     lambda c: pool_case(c, (2, 3, 7, 7), 3, 1, 2)),
    ("avgpool", "x 32x256x14x14, 2x2 (mode 1)",
     lambda c: pool_case(c, (32, 256, 14, 14), mode=1, saved=False),
     lambda c: pool_case(c, (2, 3, 4, 4), mode=1, saved=False)),
    ("unpool", "x 64x64x16x16, 2x2",
     lambda c: unpool_case(c, (64, 64, 16, 16)), lambda c: unpool_case(c, (2, 3, 3, 3))),
    ("batchnorm resnet_mnist", "x 128x16x28x28",
     lambda c: batchnorm_case(c, (128, 16, 28, 28)), lambda c: batchnorm_case(c, (4, 3, 5, 5))),
    ("batchnorm resnet", "x 32x64x56x56",
     lambda c: batchnorm_case(c, (32, 64, 56, 56)), lambda c: batchnorm_case(c, (4, 2, 3, 3))),
    ("softmax charlm", "scores 25600x84",
     lambda c: softmax_case(c, (25600, 84)), lambda c: softmax_case(c, (6, 5))),
    ("nll charlm", "scores 25600x84",
     lambda c: nll_case(c, (25600, 84)), lambda c: nll_case(c, (6, 5))),
    ("lstm charlm", "T 100, B 256, 168 -> 334",
     lambda c: lstm_case(c, 100, 256, 168, 334), lambda c: lstm_case(c, 3, 2, 4, 5)),
]
NAMES = [c[0] for c in CASES]


def check(impl: Impl) -> float:
    """Largest relative difference between knetc's and torch's outputs and gradients."""
    with B.no_tf32():
        k = impl.kfb()
        t = impl.tmap(impl.tfb())
    if len(k) != len(t):
        raise ValueError(f"{len(k)} knetc results vs {len(t)} torch results")
    return max(B.rel_err(a, b) for a, b in zip(k, t))


def block_size(f: Callable[[], Any], sync) -> int:
    """Calls per timed block: enough for ~2 ms of work, 1 to 20."""
    sync()
    t = time.perf_counter()
    f()
    sync()
    dt = time.perf_counter() - t
    return int(min(20, max(1, 0.002 / max(dt, 1e-6))))


def run_case(name: str, size: str, build, dev: B.Device, args, deadline: B.Deadline) -> dict:
    row: dict[str, Any] = {"layer": name, "size": size, "status": "running"}
    c = Ctx(dev, np.random.default_rng(zlib.crc32(name.encode())))   # the same data every run
    impl = build(c)
    row["functions"] = impl.functions
    impl.kfb()                                       # runs (and compiles kernels) once
    if impl.tfb is not None:
        try:
            row["err"] = check(impl)
        except Exception as e:
            row["err_error"] = B.short_error(e)
    if args.dry_run:
        row["status"] = "dry-run"
        return row
    fns = {"knetc fwd": impl.kf, "knetc": impl.kfb}
    if impl.tfb is not None:
        fns.update({"torch fwd": impl.tf, "torch": impl.tfb})
    for f in fns.values():
        f()
        f()
    block = block_size(impl.kfb, dev.sync)
    rounds = args.rounds or (5 if args.quick else 15)
    res = B.measure(fns, rounds, block, dev.sync, deadline)
    row.update(knetc_fwd_ms=res.get("knetc fwd"), knetc_ms=res.get("knetc"),
               torch_fwd_ms=res.get("torch fwd"), torch_ms=res.get("torch"), rounds=rounds,
               block=block, status="host" if dev.host else "ok")
    if row["knetc_ms"] and row.get("torch_ms"):
        row["ratio"] = row["knetc_ms"] / row["torch_ms"]
    if row["knetc_fwd_ms"] and row.get("torch_fwd_ms"):
        row["ratio_fwd"] = row["knetc_fwd_ms"] / row["torch_fwd_ms"]
    return row


HEADER = ["layer", "size", "knetc fwd ms", "torch fwd ms", "knetc fwd+bwd ms", "torch fwd+bwd ms",
          "ratio fwd+bwd", "max rel err"]


def table(rows: list[dict]) -> str:
    out = []
    for r in rows:
        if r.get("error"):
            out.append([r["layer"], r["size"], "n/a", "n/a", "n/a", "n/a", "n/a", r["error"][:60]])
            continue
        err = r.get("err")
        out.append([r["layer"], r["size"], r.get("knetc_fwd_ms"), r.get("torch_fwd_ms"),
                    r.get("knetc_ms"), r.get("torch_ms"), r.get("ratio"),
                    f"{err:.1e}" if err is not None else ("error" if r.get("err_error") else None)])
    return B.markdown(HEADER, out)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", default="", help="comma-separated subset of: " + "; ".join(NAMES))
    p.add_argument("--rounds", type=int, default=0, help="timed rounds per layer (default 15)")
    p.add_argument("--json", default=None, help="write the rows and metadata here")
    p.add_argument("--md", default=None, help="write the markdown table here")
    p.add_argument("--quick", action="store_true", help="5 rounds per layer")
    p.add_argument("--dry-run", action="store_true",
                   help="no GPU: NumPy + torch CPU at tiny sizes, each layer once, nothing timed")
    p.add_argument("--host", action="store_true",
                   help="time on the CPU (NumPy + torch CPU, tiny sizes): tests the timing code "
                        "without a GPU")
    p.add_argument("--time-limit", type=float, default=0,
                   help="stop starting new layers this many seconds after the start (0: none)")
    args = p.parse_args(argv)
    args.layer_list = [s.strip() for s in args.layers.split(",") if s.strip()] or list(NAMES)
    bad = sorted(set(args.layer_list) - set(NAMES))
    if bad:
        p.error(f"unknown layers {bad}; choose from {'; '.join(NAMES)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    deadline = B.Deadline(args.time_limit)
    doc: dict[str, Any] = {"kind": "layers", "status": "partial", "meta": {}, "rows": []}
    try:
        dev = B.Device(args.dry_run, args.host)
    except Exception as e:
        doc.update(status="error", error=B.short_error(e))
        B.write_json(args.json, doc)
        print(f"layers: {doc['error']}", flush=True)
        return 1
    doc["meta"] = {**B.versions(), "dry_run": args.dry_run, "quick": args.quick}
    rows = doc["rows"]
    for name, size, build, dry_build in CASES:
        if name not in args.layer_list:
            continue
        if deadline.left() < 8:
            rows.append({"layer": name, "size": size, "status": "skipped",
                         "error": "time limit reached before this layer"})
            continue
        rows.append({"layer": name, "size": size, "status": "running"})
        B.write_json(args.json, doc)               # a kill from here on shows it 'running'
        try:
            tiny = args.dry_run or args.host
            row = run_case(name, size, dry_build if tiny else build, dev, args, deadline)
        except Exception as e:
            row = {"layer": name, "size": size, "status": "error", "error": B.short_error(e)}
            traceback.print_exc()
        rows[-1] = row
        print(f"[{name}] " + ", ".join(f"{k}={B.fmt(v)}" for k, v in row.items()
                                      if k.endswith("ms") or k in ("err", "error")), flush=True)
        doc["markdown"] = table(rows)
        B.write_json(args.json, doc)
    doc["status"] = "dry-run" if args.dry_run else ("host" if args.host else "ok")
    doc["seconds"] = round(time.monotonic() - B.T0, 1)
    doc["markdown"] = table(rows)
    B.write_json(args.json, doc)
    if args.md:
        Path(args.md).write_text(doc["markdown"] + "\n", encoding="utf-8")
    print(doc["markdown"], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
