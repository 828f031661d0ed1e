"""A character-level Transformer language model on Shakespeare (a small GPT), the knetc way.

The model is a plain function of a dict of float32 arrays, written in NumPy::

    h = tok[x] + pos[:T]                              # x (B, T) character ids -> (B*T, D)
    for each layer p:
        h = h + attention(p, layernorm(h))            # multi-head causal self-attention
        h = h + gelu(layernorm(h) @ w1 + b1) @ w2 + b2
    scores = layernorm(h) @ out + out_b               # (B*T, V): the next character

Layer norm is written out in NumPy (mean and variance over the last axis). Attention splits
``x @ wqkv`` into queries, keys and values of ``nheads`` heads, (B, H, T, dh), scores every
position against the earlier ones (``q @ k^T / sqrt(dh)``, the later ones masked with
``np.where``), takes ``knetc.softmax`` over the keys and mixes the values.  GELU is ``knetc.gelu``
in its tanh form, as GPT-2 (``--gelu exact`` for the erf form, which costs about 1.7x the step
time on a CPU).  The residual stream is kept 2-D, ``(B*T, D)``, and reshaped to (B, H, T, dh)
only inside attention: every dense layer is then one matrix product (NumPy runs a 3-D ``x @ w``
as B separate products), and the scores ``(B*T, V)`` go straight to ``knetc.nll``.  Note the
scale ``dh ** -0.5``, a Python float: ``/ np.sqrt(dh)`` would be a NumPy float64 scalar, which
under NumPy 2's promotion rules turns the float32 scores, and everything after them, to float64.

Training: random windows of ``--context`` characters from the training text, AdamW (decoupled
weight decay, on every array) with a linear warm-up into a cosine decay (``knetc.schedules``), and
clipping of the gradient's global norm (``knetc.clip_grad_norm``); ``knetc.value_and_grad`` gives
the loss and the gradient from one pass.  The data is ``knetc.data.shakespeare()``: Knet's split
of the complete works into training and test text (83 characters).  The loss is in nats per
character; the *unigram entropy* (the loss of a model that ignores the context and predicts the
training text's character frequencies) is the baseline the model must beat: 3.15 nats.

The CPU default (d 64, 2 layers, 4 heads, context 64, batch 32, 500 steps, peak lr 5e-3) trains
in about 20 s on 2 cores and brings the test loss from 4.43 to about 1.94 nats, far below the
unigram entropy; then ``--sample`` characters are generated.  On a machine whose cores are busy
with other work, ``OPENBLAS_NUM_THREADS=1`` avoids NumPy's BLAS threads waiting for each other.

    python -m examples.transformer_lm                     # CPU-sized run
    python -m examples.transformer_lm --steps 2000 --dim 128 --layers 4
    python -m examples.transformer_lm --small             # a few seconds
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np

import knetc
from knetc import init, schedules
from knetc.data import shakespeare, tinyshakespeare
from knetc.optim import AdamW, clip_grad_norm, optimizers, update
from knetc.progress import progress


# --------------------------------------------------------------------------- the model

def layernorm(x, g, b, eps=1e-5):
    """Normalize over the last axis, then scale by g and shift by b."""
    mu = x.mean(axis=-1, keepdims=True)
    xc = x - mu
    var = (xc * xc).mean(axis=-1, keepdims=True)
    return xc / np.sqrt(var + eps) * g + b


def heads(x, B, nheads):
    """(B*T, D) -> (B, H, T, D/H)."""
    N, D = x.shape
    return np.transpose(x.reshape(B, N // B, nheads, D // nheads), (0, 2, 1, 3))


def attention(p, x, B, nheads):
    """Multi-head causal self-attention of the B sequences in x (B*T, D)."""
    N, D = x.shape
    T = N // B
    q, k, v = np.split(x @ p["wqkv"] + p["bqkv"], 3, axis=1)
    q, k, v = heads(q, B, nheads), heads(k, B, nheads), heads(v, B, nheads)
    s = (q @ np.swapaxes(k, -1, -2)) * (D // nheads) ** -0.5      # (B, H, T, T)
    causal = np.tril(np.ones((T, T), dtype=bool))                 # key <= query
    a = knetc.softmax(np.where(causal, s, -1e9), axis=-1)
    o = np.transpose(a @ v, (0, 2, 1, 3)).reshape(N, D)
    return o @ p["wo"] + p["bo"]


def block(p, x, B, nheads, pdrop, gelu):
    """One pre-norm Transformer layer: attention and an MLP, each added to the residual."""
    x = x + knetc.dropout(attention(p, layernorm(x, p["ln1_g"], p["ln1_b"]), B, nheads), pdrop)
    h = knetc.gelu(layernorm(x, p["ln2_g"], p["ln2_b"]) @ p["w1"] + p["b1"], approximate=gelu)
    return x + knetc.dropout(h @ p["w2"] + p["b2"], pdrop)


def predict(w, x, nheads, pdrop=0.0, gelu="tanh"):
    """Scores (B*T, V) for the character after each position of x (B, T), row b*T + t for
    sequence b, position t."""
    B, T = x.shape
    h = (w["tok"][x] + w["pos"][:T]).reshape(B * T, -1)     # the residual stream, (B*T, D)
    for p in w["layers"]:
        h = block(p, h, B, nheads, pdrop, gelu)
    return layernorm(h, w["lnf_g"], w["lnf_b"]) @ w["out"] + w["out_b"]


def loss(w, x, y, nheads, pdrop=0.0, gelu="tanh"):
    """Average nll (nats per character) of the next characters y (B, T)."""
    return knetc.nll(predict(w, x, nheads, pdrop, gelu), y.reshape(-1))


def initmodel(vocab, dim=64, layers=2, context=64, std=0.02):
    """The parameters as a dict: normal(0, 0.02) weights (GPT-2's; the residual projections
    scaled by 1/sqrt(2 layers)), zero biases, layer-norm gains 1 and shifts 0."""
    def n(*shape, s=std):
        return init.gaussian(*shape, std=s)

    def z(*shape):
        return np.zeros(shape, np.float32)

    def o(*shape):
        return np.ones(shape, np.float32)

    sr = std / math.sqrt(2 * layers)
    return {"tok": n(vocab, dim), "pos": n(context, dim),
            "layers": [{"ln1_g": o(dim), "ln1_b": z(dim),
                        "wqkv": n(dim, 3 * dim), "bqkv": z(3 * dim),
                        "wo": n(dim, dim, s=sr), "bo": z(dim),
                        "ln2_g": o(dim), "ln2_b": z(dim),
                        "w1": n(dim, 4 * dim), "b1": z(4 * dim),
                        "w2": n(4 * dim, dim, s=sr), "b2": z(dim)} for _ in range(layers)],
            "lnf_g": o(dim), "lnf_b": z(dim), "out": n(dim, vocab), "out_b": z(vocab)}


def nparams(w):
    return sum(a.size for a in knetc.tree.leaves(w))


# --------------------------------------------------------------------------- data

def load_text(name, test=0.1):
    """(trn, tst, chars): int64 character ids of the training and test text, and the characters.

    ``shakespeare``: Knet's split of the complete works (``knetc.data.shakespeare()``);
    ``tinyshakespeare``: Karpathy's 1 MB file, its last ``test`` fraction held out."""
    if name == "shakespeare":
        trn, tst, chars = shakespeare()
        return trn.astype(np.int64), tst.astype(np.int64), "".join(chars)
    text = tinyshakespeare()
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    codes, ids = np.unique(codes, return_inverse=True)
    ntst = int(len(ids) * test)
    return ids[:-ntst].astype(np.int64), ids[-ntst:].astype(np.int64), "".join(map(chr, codes))


def windows(ids, starts, context):
    """x (B, T) and y (B, T) = x shifted by one character, for windows starting at ``starts``."""
    idx = np.asarray(starts)[:, None] + np.arange(context + 1)
    d = ids[idx]
    return d[:, :-1], d[:, 1:]


def unigram_entropy(ids, vocab):
    """Entropy in nats of the character frequencies of ``ids``."""
    p = np.bincount(ids, minlength=vocab) / len(ids)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def evaluate(w, ids, context, nheads, batches, batchsize, gelu):
    """Average loss over ``batches`` fixed, evenly spaced windows of the text ``ids``."""
    n = batches * batchsize
    starts = np.linspace(0, len(ids) - context - 2, n).astype(np.int64)
    total = 0.0
    for i in range(batches):
        x, y = windows(ids, starts[i * batchsize:(i + 1) * batchsize], context)
        total += float(loss(w, x, y, nheads, 0.0, gelu))
    return total / batches


def generate(w, chars, n, nheads, context, start="\n", temperature=0.8, gelu="tanh", rng=None):
    """Sample n characters after ``start``, the model seeing the last ``context`` characters."""
    rng = rng or init.default_rng()
    index = {c: i for i, c in enumerate(chars)}
    ids = [index[c] for c in start if c in index] or [0]
    for _ in range(n):
        x = np.array(ids[-context:], dtype=np.int64)[None, :]
        s = predict(w, x, nheads, 0.0, gelu)[-1].astype(np.float64)
        p = knetc.softmax(s / temperature)
        ids.append(int(rng.choice(len(chars), p=p / p.sum())))
    return "".join(chars[i] for i in ids[len(start):])


# --------------------------------------------------------------------------- training

def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m examples.transformer_lm",
                                description="Character-level Transformer language model on "
                                            "Shakespeare (knetc).")
    p.add_argument("--data", default="shakespeare", choices=["shakespeare", "tinyshakespeare"],
                   help="text to train on (shakespeare: the complete works, Knet's split)")
    p.add_argument("--dim", type=int, default=None, help="model width d (64; --small 32)")
    p.add_argument("--layers", type=int, default=None, help="Transformer layers (2; --small 1)")
    p.add_argument("--heads", type=int, default=4, help="attention heads (4)")
    p.add_argument("--context", type=int, default=None,
                   help="characters the model sees (64; --small 32)")
    p.add_argument("--batchsize", type=int, default=None, help="windows per step (32; --small 16)")
    p.add_argument("--steps", type=int, default=None, help="training steps (500; --small 60)")
    p.add_argument("--lr", type=float, default=5e-3, help="peak AdamW learning rate (5e-3)")
    p.add_argument("--warmup", type=int, default=None,
                   help="linear warm-up steps before the cosine decay (steps/10)")
    p.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay (0.01)")
    p.add_argument("--clip", type=float, default=1.0,
                   help="clip the gradient's global norm to this (1.0; 0: no clipping)")
    p.add_argument("--dropout", type=float, default=0.0,
                   help="dropout on the residual branches while training (0)")
    p.add_argument("--gelu", default="tanh", choices=["tanh", "exact"],
                   help="GELU's tanh form (GPT-2's, default) or the exact erf form")
    p.add_argument("--testbatches", type=int, default=8,
                   help="batches of held-out windows the test loss is measured on (8)")
    p.add_argument("--sample", type=int, default=300, help="characters to generate at the end")
    p.add_argument("--every", type=int, default=None,
                   help="print the running loss every this many steps (steps/10)")
    p.add_argument("--small", action="store_true",
                   help="quick run: d 32, 1 layer, context 32, batch 16, 60 steps")
    p.add_argument("--seed", type=int, default=1, help="random seed (-1: none)")
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    args = p.parse_args(argv)
    if args.small:
        defaults = dict(dim=32, layers=1, context=32, batchsize=16, steps=60)
    else:
        defaults = dict(dim=64, layers=2, context=64, batchsize=32, steps=500)
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.warmup is None:
        args.warmup = max(args.steps // 10, 1)
    if args.dim % args.heads:
        p.error(f"--dim {args.dim} is not a multiple of --heads {args.heads}")
    args.gelu = "none" if args.gelu == "exact" else "tanh"
    return args


def main(argv=None):
    args = parse_args(argv)
    seed = args.seed if args.seed >= 0 else None
    init.seed(seed)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    trn, tst, chars = load_text(args.data)
    V, T, H = len(chars), args.context, args.heads
    unigram = unigram_entropy(trn, V)
    w = initmodel(V, args.dim, args.layers, T)
    warm = min(args.warmup, args.steps)
    lr = schedules.linear_warmup(args.lr, warm, then=schedules.cosine(
        args.lr, max(args.steps - warm, 1), min_lr=args.lr / 10))
    opts = optimizers(w, AdamW, lr=lr, weight_decay=args.weight_decay)
    lossgradient = knetc.value_and_grad(loss)
    every = args.every or max(args.steps // 10, 1)
    print(f"transformer_lm: {args.data} ({len(trn)} training / {len(tst)} test chars, vocabulary "
          f"{V}, unigram entropy {unigram:.3f} nats); d {args.dim}, {args.layers} layers, {H} "
          f"heads, context {T}, {nparams(w)} parameters; batch {args.batchsize}, {args.steps} "
          f"steps, AdamW lr {args.lr} (warm-up {warm}, cosine), clip {args.clip}", flush=True)

    def tstloss():
        return evaluate(w, tst, T, H, args.testbatches, args.batchsize, args.gelu)

    tl0 = tstloss()
    if not args.quiet:
        print(f"step     0  tst loss {tl0:.4f}", flush=True)
    steps = []
    norms = []
    run = nrun = 0.0
    start = time.perf_counter()
    bar = progress(range(1, args.steps + 1), desc="train")
    for step in bar:
        x, y = windows(trn, rng.integers(0, len(trn) - T - 1, args.batchsize), T)
        lossval, dw = lossgradient(w, x, y, H, args.dropout, args.gelu)
        if args.clip > 0:
            norms.append(clip_grad_norm(dw, args.clip))
        update(w, dw, opts)
        lossval = float(lossval)
        steps.append(lossval)
        run += lossval
        nrun += 1
        bar.set_postfix(loss=f"{lossval:.3f}", refresh=False)
        if not args.quiet and (step % every == 0 or step == args.steps):
            print(f"step {step:5d}  trn loss {run / nrun:.4f}  lr {opts['out'].current_lr():.2e}"
                  f"  time {time.perf_counter() - start:6.1f}s", flush=True)
            run = nrun = 0.0
    ttrain = time.perf_counter() - start
    tl = tstloss()
    k = max(len(steps) // 10, 1)
    result = {"steps": args.steps, "vocab": V, "params": nparams(w), "unigram": unigram,
              "loss_first": float(np.mean(steps[:k])), "loss_last": float(np.mean(steps[-k:])),
              "losses": steps, "grad_norms": norms, "tst_loss0": tl0, "tst_loss": tl,
              "train_time": ttrain, "step_ms": 1e3 * ttrain / max(args.steps, 1)}
    if not args.quiet:
        print(f"step {args.steps:5d}  tst loss {tl:.4f}  (unigram entropy {unigram:.4f})",
              flush=True)
    if args.sample > 0:
        sample = generate(w, chars, args.sample, H, T, gelu=args.gelu,
                          rng=np.random.default_rng(seed))
        result["sample"] = sample
        print(f"--- {args.sample} sampled characters ---\n{sample}\n---", flush=True)
    result["time"] = time.perf_counter() - t0
    print(f"transformer_lm: trn loss {result['loss_first']:.3f} (first {k} steps) -> "
          f"{result['loss_last']:.3f} (last {k}), tst loss {tl0:.3f} -> {tl:.3f}, unigram "
          f"entropy {unigram:.3f} ({ttrain:.1f}s training, {result['time']:.1f}s total)",
          flush=True)
    return result


if __name__ == "__main__":
    main()
