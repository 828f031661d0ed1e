"""DyNet's four dynamic-network benchmarks: knetc against PyTorch eager and HIPS autograd.

The models are ``examples/dynet/`` (rnnlm-batch, bilstm-tagger, bilstm-tagger-withchar, treenn),
written as a knetc user writes them; the peers here are the same math written the natural way
for each library (``torch.lstm``, the op behind ``nn.LSTM``, for the LSTMs in torch; a Python
loop over time steps in autograd, which has no LSTM). Every framework trains its own copy of the
same initial weights with plain SGD, a step per minibatch (rnnlm) or sentence (the others).

1. Same math first: the loss and every gradient of the first step on the same weights and data,
   knetc against each peer (loss to 1e-5 relative, gradients to 1e-4 of their largest entry).
2. First call: the first step alone, and the first chunk of sentences, per framework; and,
   printed after the table, each framework's very first gradient of the model, the one
   checked in 1 (knetc reads the model's source and specializes it, its time split by
   compiler stage with ``knetc.compile_times``; torch's first in the process initializes
   torch).
3. Warm-up: every framework trains on the same next ``--warm`` examples (a small part of an
   epoch: 300 of WikiNER's 142,153 sentences in --quick), timed and reported as the warm-up
   rate. knetc's cache fills with the sentence lengths and tree shapes that recur; torch and
   autograd have nothing to warm (autograd skips this phase: it is slow, and has no cache).
4. Then rounds: each round gives every framework the same fresh chunk of data (the order
   rotating between rounds); words/s (sentences/s for treenn) are medians over rounds, and
   knetc/torch is the median of per-round ratios: the steady state an epoch runs at. knetc's
   cache counters during the rounds are printed (the JSON also has them over the whole run).
5. Second pass: the first chunk again, as a second epoch meets it (its sentence lengths and
   trees come back: knetc compiles or hits them), knetc and torch.

One BLAS/OpenMP/torch thread (set before the imports) unless ``--threads`` says otherwise.

Run: python benchmarks/dynet.py [--quick | --dry-run] [--models rnnlm,tagger,...] [--json FILE]
or, epochs over the same examples: python benchmarks/dynet.py --models treenn --epochs 3
--examples 300
"""
from __future__ import annotations

import os
import sys


def _threads(argv) -> str:
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--threads="):
            return a.split("=", 1)[1]
    return "1"


_N = _threads(sys.argv[1:])
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = _N
if hasattr(os, "sched_setaffinity"):   # pinned to that many cores: every framework alike
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:int(_N)]))

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import knetc  # noqa: E402
from examples.dynet import data as D  # noqa: E402
from examples.dynet import rnnlm, tagger, tagger_char, treenn  # noqa: E402

try:
    import torch
    torch.set_num_threads(int(_N))
except ImportError:  # optional peer
    torch = None
try:
    import autograd
    import autograd.numpy as anp
except ImportError:  # optional peer
    autograd = None

MODELS = ("rnnlm", "tagger", "tagger_char", "treenn")


# ---- the LSTM weight layout, shared by the peers ------------------------------------------
def lstm_blocks(flat, X: int, H: int, D_: int):
    """``[(Wx (4H, X), Wh (4H, H), bW (4H,), bR (4H,)) per direction]`` as slices of knetc's
    flat one-layer LSTM vector (matrices of every direction first, then the biases; gates i, f,
    g, o, the order of cuDNN and of torch's ``weight_ih``), so a peer's gradient is flat too."""
    G = 4 * H
    out, off = [], 0
    mats = []
    for _ in range(D_):
        mats.append((off, off + G * X))
        off += G * X + G * H
    for j, (wx, wh) in enumerate(mats):
        b = off + 2 * G * j
        out.append((flat[wx:wx + G * X].reshape(G, X), flat[wh:wh + G * H].reshape(G, H),
                    flat[b:b + G], flat[b + G:b + 2 * G]))
    return out


# ---- PyTorch eager ------------------------------------------------------------------------
def _t_lstm(flat, r, x):
    """torch.lstm over ``x`` (T, B, X): ``(y, h_n)``."""
    params = [p for blk in lstm_blocks(flat, r.inputSize, r.hiddenSize, r.numDirections)
              for p in blk]
    z = x.new_zeros((r.numDirections, x.shape[1], r.hiddenSize))
    y, hn, _ = torch.lstm(x, (z, z), params, True, 1, 0.0, True, r.bidirectional, False)
    return y, hn


def t_rnnlm(w, r, x, y, mask):
    e = w["E"][x]
    h, _ = _t_lstm(w["rnn"], r, e)
    T, B, H = h.shape
    lp = torch.log_softmax(h.reshape(T * B, H) @ w["W"] + w["b"], dim=1)
    m = mask.reshape(-1)
    return -(lp[torch.arange(T * B), y.reshape(-1)] * m).sum() / m.sum()


def _t_tags(w, r, x, gold):
    h, _ = _t_lstm(w["rnn"], r, x[:, None, :])
    scores = torch.tanh(h[:, 0, :] @ w["H"]) @ w["O"]
    return torch.nn.functional.cross_entropy(scores, gold)


def t_tagger(w, r, words, gold):
    return _t_tags(w, r, w["E"][torch.tensor(words)], gold)


def t_tagger_char(w, specs, words, gold):
    r, rc = specs
    vecs = []
    for word in words:
        if isinstance(word, int):
            vecs.append(w["E"][word])
        else:
            _, hn = _t_lstm(w["crnn"], rc, w["C"][torch.tensor(word)][:, None, :])
            vecs.append(torch.cat([hn[0, 0], hn[1, 0]]))
    return _t_tags(w, r, torch.stack(vecs), gold)


def _t_cell(w, g, n):
    return torch.sigmoid(g[:n]), torch.sigmoid(g[n:2 * n]), torch.tanh(g[2 * n:])


def _t_tree(w, tree):
    n = w["bf"].shape[0]
    if len(tree) == 2:
        i, o, u = _t_cell(w, w["E"][tree[1]] @ w["Wx"] + w["bx"], n)
        c = i * u
        total, count = 0.0, 0
    else:
        h1, c1, l1, n1 = _t_tree(w, tree[1])
        h2, c2, l2, n2 = _t_tree(w, tree[2])
        i, o, u = _t_cell(w, torch.cat([h1, h2]) @ w["Uh"] + w["bh"], n)
        c = (i * u + torch.sigmoid(h1 @ w["Uf1"] + w["bf"]) * c1
             + torch.sigmoid(h2 @ w["Uf2"] + w["bf"]) * c2)
        total, count = l1 + l2, n1 + n2
    h = o * torch.tanh(c)
    return h, c, total - torch.log_softmax(h @ w["S"], dim=0)[tree[0]], count + 1


def t_treenn(w, tree):
    _, _, total, count = _t_tree(w, tree)
    return total / count


def _to_torch(ex):
    """An example's arrays as tensors (Python ints and tuples stay as they are)."""
    return tuple(torch.from_numpy(a) if isinstance(a, np.ndarray) else a for a in ex)


# ---- HIPS autograd ------------------------------------------------------------------------
def _a_sig(x):
    return 0.5 * (anp.tanh(0.5 * x) + 1.0)


def _a_lstm(flat, r, x):
    """An LSTM over ``x`` (T, B, X) step by step: ``(y (T, B, D*H), [final h per direction])``."""
    H = r.hiddenSize
    ys, finals = [], []
    for d, (Wx, Wh, bW, bR) in enumerate(lstm_blocks(flat, r.inputSize, H, r.numDirections)):
        h = anp.zeros((x.shape[1], H), np.float32)
        c = h
        out = []
        steps = range(x.shape[0] - 1, -1, -1) if d == 1 else range(x.shape[0])
        for t in steps:
            g = anp.dot(x[t], Wx.T) + anp.dot(h, Wh.T) + bW + bR
            c = _a_sig(g[:, H:2 * H]) * c + _a_sig(g[:, :H]) * anp.tanh(g[:, 2 * H:3 * H])
            h = _a_sig(g[:, 3 * H:]) * anp.tanh(c)
            out.append(h)
        ys.append(anp.stack(out[::-1] if d == 1 else out))
        finals.append(h)
    return anp.concatenate(ys, axis=2), finals


def _a_logp(s, axis):
    m = anp.max(s, axis=axis, keepdims=True)
    return s - m - anp.log(anp.sum(anp.exp(s - m), axis=axis, keepdims=True))


def a_rnnlm(w, r, x, y, mask):
    h, _ = _a_lstm(w["rnn"], r, w["E"][x])
    T, B, H = h.shape
    lp = _a_logp(anp.dot(anp.reshape(h, (T * B, H)), w["W"]) + w["b"], 1)
    m = mask.reshape(-1)
    return -anp.sum(lp[np.arange(T * B), y.reshape(-1)] * m) / np.sum(m)


def _a_tags(w, r, x, gold):
    h, _ = _a_lstm(w["rnn"], r, x[:, None, :])
    lp = _a_logp(anp.dot(anp.tanh(anp.dot(h[:, 0, :], w["H"])), w["O"]), 1)
    return -anp.mean(lp[np.arange(len(gold)), gold])


def a_tagger(w, r, words, gold):
    return _a_tags(w, r, w["E"][np.asarray(words)], gold)


def a_tagger_char(w, specs, words, gold):
    r, rc = specs
    vecs = []
    for word in words:
        if isinstance(word, int):
            vecs.append(w["E"][word])
        else:
            _, (hf, hb) = _a_lstm(w["crnn"], rc, w["C"][np.asarray(word)][:, None, :])
            vecs.append(anp.concatenate([hf[0], hb[0]]))
    return _a_tags(w, r, anp.stack(vecs), gold)


def _a_tree(w, tree):
    n = w["bf"].shape[0]
    if len(tree) == 2:
        g = anp.dot(w["E"][tree[1]], w["Wx"]) + w["bx"]
        c = _a_sig(g[:n]) * anp.tanh(g[2 * n:])
        total, count = 0.0, 0
    else:
        h1, c1, l1, n1 = _a_tree(w, tree[1])
        h2, c2, l2, n2 = _a_tree(w, tree[2])
        g = anp.dot(anp.concatenate([h1, h2]), w["Uh"]) + w["bh"]
        c = (_a_sig(g[:n]) * anp.tanh(g[2 * n:])
             + _a_sig(anp.dot(h1, w["Uf1"]) + w["bf"]) * c1
             + _a_sig(anp.dot(h2, w["Uf2"]) + w["bf"]) * c2)
        total, count = l1 + l2, n1 + n2
    h = _a_sig(g[n:2 * n]) * anp.tanh(c)
    return h, c, total - _a_logp(anp.dot(h, w["S"]), 0)[tree[0]], count + 1


def a_treenn(w, tree):
    _, _, total, count = _a_tree(w, tree)
    return total / count


# ---- the models' settings and data ------------------------------------------------------
def setup(model: str, size: str, seed: int = 0, count: int | None = None):
    """``(spec, w, examples, units)``: the model's non-float argument, initial weights, encoded
    examples and a function giving an example's words (or 1 for a tree). ``size``: ``dry``
    (tiny networks, seconds), ``quick`` or ``full`` (the benchmark's sizes); ``count``: that
    many sentences or trees instead of the size's."""
    dry = size == "dry"
    if model == "rnnlm":
        n = count or {"dry": 32, "quick": 10 * 64, "full": 22 * 64}[size]
        lm = D.ptb(n, seed)
        if dry:   # a small vocabulary, short sentences
            lm = D.LMData([[i % 50 for i in s[:6]] + [50] for s in lm.sents], 51, 50)
        spec, w = rnnlm.init(lm.nwords, *((8, 16) if dry else ()), seed=seed)
        exs = rnnlm.batches(lm, 4 if dry else 64)
        return spec, w, exs, lambda ex: float(ex[2].sum())
    if model in ("tagger", "tagger_char"):
        n = count or {"dry": 8, "quick": 500, "full": 1800}[size]
        tags = D.wikiner(n, seed)
        if dry:
            tags.sents = [(s[0][:5], s[1][:5]) for s in tags.sents]
        dims = dict(embed=16, hidden=8, mlp=8) if dry else {}
        if model == "tagger":
            spec, w = tagger.init(tags.ncommon + 1, tags.ntags, seed=seed, **dims)
            exs = [tagger.encode(s, tags) for s in tags.sents]
        else:
            spec, w = tagger_char.init(tags.ncommon, tags.ntags, tags.nchars, seed=seed,
                                       **(dict(dims, cembed=4) if dry else {}))
            exs = [tagger_char.encode(s, tags) for s in tags.sents]
        if dry:   # make sure a rare word is there
            exs = [([w_ for w_ in ws[:-1]] + [(0, 3, 5, 0)], g) for ws, g in exs] \
                if model == "tagger_char" else exs
        return spec, w, exs, lambda ex: float(len(ex[1]))
    n = count or {"dry": 8, "quick": 150, "full": 500}[size]
    sst = D.sst(n, seed)
    trees = sst.trees
    if dry:
        trees = [_small_tree(t) for t in trees]
    w = treenn.init(sst.nwords, sst.nlabels, *((8, 8) if dry else ()), seed=seed)
    return None, w, trees, lambda ex: 1.0


def _small_tree(t, depth=0):
    """A tree cut to depth 2 (dry runs)."""
    if len(t) == 2:
        return t
    if depth >= 2:
        return (t[0], 1)
    return (t[0], _small_tree(t[1], depth + 1), _small_tree(t[2], depth + 1))


KNETC = {"rnnlm": rnnlm, "tagger": tagger, "tagger_char": tagger_char, "treenn": treenn}
TORCH = {"rnnlm": t_rnnlm, "tagger": t_tagger, "tagger_char": t_tagger_char, "treenn": t_treenn}
AUTOGRAD = {"rnnlm": a_rnnlm, "tagger": a_tagger, "tagger_char": a_tagger_char,
            "treenn": a_treenn}


def _args(model, spec, ex):
    """The loss's arguments after ``w``."""
    return (ex,) if model == "treenn" else (spec, *ex)


# ---- one training step per framework ----------------------------------------------------
def make_steps(model, spec, w0, lr, peers):
    """``{name: step(example)}``: each framework trains its own copy of ``w0`` with SGD."""
    mod = KNETC[model]
    wk = copy.deepcopy(w0)
    opt = knetc.optimizers(wk, knetc.SGD, lr=lr)

    def k_step(ex):
        g, _ = mod.lossgrad(wk, *_args(model, spec, ex))
        knetc.update(wk, g, opt)
    steps = {"knetc": k_step}
    if "torch" in peers:
        wt = {k: torch.tensor(v, requires_grad=True) for k, v in w0.items()}
        topt = torch.optim.SGD(list(wt.values()), lr=lr)
        fn = TORCH[model]

        def t_step(ex):
            topt.zero_grad()
            fn(wt, *_args(model, spec, _to_torch(ex))).backward()
            topt.step()
        steps["torch"] = t_step
    if "autograd" in peers:
        wa = copy.deepcopy(w0)
        ga = autograd.grad(AUTOGRAD[model])

        def a_step(ex):
            g = ga(wa, *_args(model, spec, ex))
            for k in wa:
                wa[k] -= lr * g[k]
        steps["autograd"] = a_step
    return steps


def verify(model, spec, w0, ex, peers, times: dict | None = None) -> dict:
    """Loss and gradients of one step, knetc against each peer: the worst relative errors.
    ``times`` gets the seconds of knetc's and torch's first gradient of this model in the
    process (knetc's first call compiles; torch's first in a process initializes it)."""
    w, args = copy.deepcopy(w0), _args(model, spec, ex)
    t = time.perf_counter()
    gk, lk = KNETC[model].lossgrad(w, *args)
    if times is not None:
        times["knetc"] = time.perf_counter() - t
    out = {}
    for peer in peers:
        if peer == "torch":
            wt = {k: torch.tensor(v, requires_grad=True) for k, v in w0.items()}
            targs = _args(model, spec, _to_torch(ex))
            t = time.perf_counter()
            lt = TORCH[model](wt, *targs)
            lt.backward()
            if times is not None:
                times["torch"] = time.perf_counter() - t
            lp, gp = lt.item(), {k: v.grad.numpy() for k, v in wt.items()}
        else:
            gfn = autograd.value_and_grad(AUTOGRAD[model])
            lp, gp = gfn(copy.deepcopy(w0), *_args(model, spec, ex))
            lp = float(lp)
        lerr = abs(float(lk) - lp) / max(abs(lp), 1e-12)
        gerr = max(float(np.max(np.abs(np.asarray(gk[k]) - np.asarray(gp[k]))))
                   / max(float(np.max(np.abs(gp[k]))), 1e-12) for k in w0)
        if lerr > 1e-5 or gerr > 1e-4:
            raise AssertionError(f"{model}: knetc and {peer} disagree: loss {float(lk)} vs {lp} "
                                 f"(relative {lerr:.2e}), gradients {gerr:.2e} of the largest")
        out[peer] = {"loss": lerr, "grad": gerr}
    return out


def bench(model, size, rounds, chunk, peers, lr=0.1, warm=0) -> dict:
    """Verify, then time the first step, the first chunk, ``warm`` examples of warm-up and
    ``rounds`` interleaved chunks."""
    spec, w0, exs, units = setup(model, size)
    need = 1 + chunk * (rounds + 1) + warm
    if len(exs) < need:
        raise ValueError(f"{model}: {len(exs)} examples, {need} needed")
    first_grad: dict = {}
    with knetc.compile_times() as stages:      # where knetc's very first gradient went
        check = verify(model, spec, w0, exs[-1], peers, first_grad)
    info0 = knetc.cache_info(KNETC[model].lossgrad)
    steps = make_steps(model, spec, w0, lr, peers)
    names = list(steps)
    first = {}
    for name in names:
        block = exs[:chunk]
        t = time.perf_counter()
        steps[name](block[0])
        t1 = time.perf_counter()
        for ex in block[1:]:
            steps[name](ex)
        t2 = time.perf_counter()
        first[name] = {"first_step_s": t1 - t, "first_chunk_rate": sum(map(units, block)) / (t2 - t)}
    block = exs[chunk:chunk + warm]
    warm_rate = {}
    for name in names:
        if name == "autograd" or not block:
            continue
        t = time.perf_counter()
        for ex in block:
            steps[name](ex)
        warm_rate[name] = sum(map(units, block)) / (time.perf_counter() - t)
    info1 = knetc.cache_info(KNETC[model].lossgrad)
    rates = {k: [] for k in names}
    for r in range(rounds):
        block = exs[warm + chunk * (r + 1):warm + chunk * (r + 2)]
        n = sum(map(units, block))
        for name in names[r % len(names):] + names[:r % len(names)]:
            t = time.perf_counter()
            for ex in block:
                steps[name](ex)
            rates[name].append(n / (time.perf_counter() - t))
    info = knetc.cache_info(KNETC[model].lossgrad)
    # The first chunk again, as a second epoch meets it: its sentences and trees come back.
    again = {}
    for name in names:
        if name == "autograd":
            continue
        t = time.perf_counter()
        for ex in exs[:chunk]:
            steps[name](ex)
        again[name] = sum(map(units, exs[:chunk])) / (time.perf_counter() - t)
    row = {"model": model, "unit": "sentences/s" if model == "treenn" else "words/s",
           "verify": check, "first_grad_s": first_grad, "first": first, "warm": warm,
           "first_grad_stages_s": {k: v for k, v in stages.items() if stages.counts[k]},
           "warm_rate": warm_rate,
           "rate": {k: statistics.median(v) for k, v in rates.items()}, "again": again,
           "rates": rates,
           "cache": {f: getattr(info, f) - getattr(info1, f) for f in info._fields},
           "cache_all": {f: getattr(info, f) - getattr(info0, f) for f in info._fields},
           "cache_entries": info.entries}
    if "torch" in names:
        row["knetc/torch"] = statistics.median(a / b for a, b in zip(rates["knetc"],
                                                                        rates["torch"]))
    if "autograd" in names:
        row["knetc/autograd"] = statistics.median(a / b for a, b in zip(rates["knetc"],
                                                                           rates["autograd"]))
    return row


def epochs(model, count, n, peers, lr=0.1) -> dict:
    """ms per example of ``n`` epochs over the same ``count`` examples (SST-sized trees for
    treenn, WikiNER-sized sentences for the taggers), knetc and torch in turn after each epoch:
    what a second and third epoch cost once structures come back."""
    spec, w0, exs, _ = setup(model, "full", count=count)
    verify(model, spec, w0, exs[-1], peers)
    steps = make_steps(model, spec, w0, lr, [p for p in peers if p == "torch"])
    out = {name: [] for name in steps}
    for _ in range(n):
        for name, step in steps.items():
            t = time.perf_counter()
            for ex in exs:
                step(ex)
            out[name].append((time.perf_counter() - t) * 1e3 / len(exs))
    return out


def _fmt(x):
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def _warm(row) -> str:
    w = row.get("warm_rate") or {}
    if not w:
        return "-"
    return f"{row['warm']}: " + "/".join(_fmt(w[k]) for k in ("knetc", "torch") if k in w)


def report(rows) -> str:
    """The result table as text."""
    lines = [f"{'model':<13}{'unit':<12}{'knetc':>9}{'torch':>9}{'autograd':>9}"
             f"{'k/torch':>9}{'k/ag':>7}  first chunk (k/t/ag)     1st step k/t s"
             f"   warm-up n: k/t        cache h/m/t0   2nd pass k/t"]
    for r in rows:
        rate, fst = r["rate"], r["first"]
        c = r["cache"]
        lines.append(
            f"{r['model']:<13}{r['unit']:<12}{_fmt(rate['knetc']):>9}"
            f"{_fmt(rate['torch']) if 'torch' in rate else '-':>9}"
            f"{_fmt(rate['autograd']) if 'autograd' in rate else '-':>9}"
            f"{r.get('knetc/torch', float('nan')):>9.2f}{r.get('knetc/autograd', float('nan')):>7.2f}"
            f"  {'/'.join(_fmt(fst[k]['first_chunk_rate']) for k in fst):<24}"
            f"  {fst['knetc']['first_step_s']:.3f}/"
            f"{fst['torch']['first_step_s'] if 'torch' in fst else float('nan'):.3f}"
            f"   {_warm(r):<20}"
            f"{c['hits']}/{c['misses']}/{c['tier0']:<9}"
            f"{'/'.join(_fmt(r['again'][k]) for k in ('knetc', 'torch') if k in r['again'])}")
    return "\n".join(lines)


def report_first(rows) -> str:
    """Each model's very first gradient in the process, knetc's by compiler stage
    (knetc.compile_times: the rest is running code and cache lookups)."""
    lines = ["very first gradient in this process, ms: knetc (its compiler stages) / torch"]
    for r in rows:
        fg, st = r["first_grad_s"], r["first_grad_stages_s"]
        stages = ", ".join(f"{k} {v * 1e3:.1f}" for k, v in st.items())
        torch_ms = f"{fg['torch'] * 1e3:.1f}" if "torch" in fg else "-"
        lines.append(f"  {r['model']:<13}{fg['knetc'] * 1e3:.1f} ({stages}) / {torch_ms}")
    return "\n".join(lines)


def main(argv=None) -> list:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer rounds and sentences")
    p.add_argument("--dry-run", action="store_true", help="tiny networks, one round: seconds")
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated: {MODELS}")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--chunk", type=int, default=None, help="examples per round")
    p.add_argument("--warm", type=int, default=None,
                   help="examples of warm-up between the first chunk and the rounds")
    p.add_argument("--no-autograd", action="store_true")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--threads", default="1", help="BLAS/OpenMP/torch threads (default 1)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--epochs", type=int, default=0, metavar="N",
                   help="instead: N epochs over the same --examples examples, ms per example")
    p.add_argument("--examples", type=int, default=300)
    a = p.parse_args(argv)
    models = [m.strip() for m in a.models.split(",") if m.strip()]
    bad = [m for m in models if m not in MODELS]
    if bad:
        p.error(f"unknown models {bad}; choose from {MODELS}")
    size = "dry" if a.dry_run else "quick" if a.quick else "full"
    peers = [n for n, mod, off in (("torch", torch, a.no_torch), ("autograd", autograd,
                                                                   a.no_autograd))
             if mod is not None and not off]
    # examples per round: rnnlm's are minibatches of 64 sentences, the others sentences/trees
    chunks = {"dry": dict(rnnlm=1, tagger=2, tagger_char=2, treenn=2),
              "quick": dict(rnnlm=1, tagger=30, tagger_char=15, treenn=15),
              "full": dict(rnnlm=2, tagger=100, tagger_char=50, treenn=40)}[size]
    rounds = a.rounds or {"dry": 1, "quick": 3, "full": 5}[size]
    warms = {"dry": dict(rnnlm=1, tagger=2, tagger_char=2, treenn=2),
             "quick": dict(rnnlm=4, tagger=300, tagger_char=150, treenn=60),
             "full": dict(rnnlm=8, tagger=1000, tagger_char=500, treenn=200)}[size]
    if a.epochs:
        for m in models:
            res = epochs(m, a.examples, a.epochs, peers)
            print(f"{m}, {a.examples} examples, ms per example by epoch: " + "; ".join(
                f"{k} " + " / ".join(f"{x:.1f}" for x in v) for k, v in res.items()), flush=True)
        return []
    rows = []
    print(f"DyNet benchmarks ({size}; {_N} thread(s); peers: {', '.join(peers) or 'none'})",
          flush=True)
    for m in models:
        row = bench(m, size, rounds, a.chunk or chunks[m], peers,
                    warm=warms[m] if a.warm is None else a.warm)
        rows.append(row)
        print(report([row]).split("\n")[-1] if len(rows) > 1 else report([row]), flush=True)
    print(report_first(rows), flush=True)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return rows


if __name__ == "__main__":
    main()
