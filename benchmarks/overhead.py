"""Overhead of knetc's cached gradient against hand-written NumPy (and HIPS autograd).

A 2-hidden-layer tanh MLP at a tiny size (8x8 weights, batch 4) and a medium size (256x256,
batch 64): median time of the loss f, knetc's cached grad, a hand-written forward+backward and
autograd's grad, with ratios; the first-call (specialize + generate + compile) time; programs of
many small operations (a 32-layer tanh MLP of width 64, a 100-step tanh RNN loop), against
their hand-written gradients; and a
tree-structured model (DyNet's treenn) in which every call has a new tree, so every call compiles.

Timings are interleaved (each round times every contender once, in turn) and the ratios are
medians of per-round ratios, so a noisy machine moves both sides alike. BLAS runs on one thread
unless the environment says otherwise.

Run: python benchmarks/overhead.py [--quick]
"""
from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import knetc  # noqa: E402

try:
    import autograd
    import autograd.numpy as anp
except ImportError:  # optional peer
    autograd = None


def interleaved(fns: dict, repeat, number):
    """{name: per-round seconds per call}: each round times every function once (``number``
    calls), the order rotating between rounds."""
    names = list(fns)
    times = {k: [] for k in names}
    for r in range(repeat):
        for k in names[r % len(names):] + names[:r % len(names)]:
            fn = fns[k]
            t = time.perf_counter()
            for _ in range(number):
                fn()
            times[k].append((time.perf_counter() - t) / number)
    return times


def ratio(times, a, b):
    """Median over rounds of a's time / b's time."""
    return statistics.median(x / y for x, y in zip(times[a], times[b]))


# ---- the MLP ---------------------------------------------------------------------------
def mlp_loss(w, x, y):
    h = np.tanh(x @ w[0] + w[1])
    h = np.tanh(h @ w[2] + w[3])
    return np.mean((h @ w[4] + w[5] - y) ** 2)


def mlp_handwritten(w, x, y):
    """Forward and backward written by hand, the bar knetc must meet."""
    h1 = np.tanh(x @ w[0] + w[1])
    h2 = np.tanh(h1 @ w[2] + w[3])
    r = h2 @ w[4] + w[5] - y
    loss = np.mean(r * r)
    dr = r * (2.0 / r.size)
    dw4 = h2.T @ dr
    dw5 = dr.sum(axis=0)
    dz2 = (dr @ w[4].T) * (1 - h2 * h2)
    dw2 = h1.T @ dz2
    dw3 = dz2.sum(axis=0)
    dz1 = (dz2 @ w[2].T) * (1 - h1 * h1)
    dw0 = x.T @ dz1
    dw1 = dz1.sum(axis=0)
    return [dw0, dw1, dw2, dw3, dw4, dw5], loss


def mlp_autograd(w, x, y):
    h = anp.tanh(anp.dot(x, w[0]) + w[1])
    h = anp.tanh(anp.dot(h, w[2]) + w[3])
    return anp.mean((anp.dot(h, w[4]) + w[5] - y) ** 2)


def mlp_params(n, batch, rng):
    w = [rng.standard_normal((n, n)) * 0.3, np.zeros(n), rng.standard_normal((n, n)) * 0.3,
         np.zeros(n), rng.standard_normal((n, 1)) * 0.3, np.zeros(1)]
    w = [a.astype(np.float32) for a in w]
    x = rng.standard_normal((batch, n)).astype(np.float32)
    y = rng.standard_normal((batch, 1)).astype(np.float32)
    return w, x, y


def bench_mlp(n, batch, quick):
    rng = np.random.default_rng(0)
    w, x, y = mlp_params(n, batch, rng)
    number = 200 if n <= 16 else 20
    repeat = 7 if quick else 25
    first = knetc.grad(mlp_loss)
    t = time.perf_counter()
    first(w, x, y)
    first_call = time.perf_counter() - t
    g = knetc.grad(mlp_loss)
    g(w, x, y)
    gk, _ = g(w, x, y), None
    gh, _ = mlp_handwritten(w, x, y)
    assert all(np.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in zip(gk, gh)), "knetc != hand"
    fns = {"f": lambda: mlp_loss(w, x, y), "knetc": lambda: g(w, x, y),
           "hand": lambda: mlp_handwritten(w, x, y)}
    if autograd is not None:
        ga = autograd.grad(mlp_autograd)
        fns["autograd"] = lambda: ga(w, x, y)
    times = interleaved(fns, repeat, number)
    row = {k: statistics.median(v) for k, v in times.items()}
    row["knetc/hand"] = ratio(times, "knetc", "hand")
    if autograd is not None:
        row["knetc/ag"] = ratio(times, "knetc", "autograd")
    row["first"] = first_call
    return row


# ---- many small operations: a 32-layer MLP and a 100-step RNN -------------------------
def deep_loss(w, x, y):
    h = x
    for i in range(0, len(w), 2):
        h = np.tanh(h @ w[i] + w[i + 1])
    return np.mean((h - y) ** 2)


def deep_handwritten(w, x, y):
    hs = [x]
    for i in range(0, len(w), 2):
        hs.append(np.tanh(hs[-1] @ w[i] + w[i + 1]))
    r = hs[-1] - y
    loss = np.mean(r * r)
    dh = r * (2.0 / r.size)
    g = [None] * len(w)
    for i in range(len(w) - 2, -1, -2):
        h = hs[i // 2 + 1]
        dz = dh * (1 - h * h)
        g[i] = hs[i // 2].T @ dz
        g[i + 1] = dz.sum(axis=0)
        dh = dz @ w[i].T
    return g, loss


def rnn_loss(w, xs, y):
    h = np.zeros((xs.shape[1], w["Wh"].shape[0]), np.float32)
    for t in range(xs.shape[0]):
        h = np.tanh(xs[t] @ w["Wx"] + h @ w["Wh"] + w["b"])
    return np.mean((h @ w["Wo"] - y) ** 2)


def rnn_handwritten(w, xs, y):
    hs = [np.zeros((xs.shape[1], w["Wh"].shape[0]), np.float32)]
    for t in range(xs.shape[0]):
        hs.append(np.tanh(xs[t] @ w["Wx"] + hs[-1] @ w["Wh"] + w["b"]))
    r = hs[-1] @ w["Wo"] - y
    loss = np.mean(r * r)
    dr = r * (2.0 / r.size)
    g = {"Wx": np.zeros_like(w["Wx"]), "Wh": np.zeros_like(w["Wh"]),
         "b": np.zeros_like(w["b"]), "Wo": hs[-1].T @ dr}
    dh = dr @ w["Wo"].T
    for t in range(xs.shape[0] - 1, -1, -1):
        h = hs[t + 1]
        dz = dh * (1 - h * h)
        g["Wx"] += xs[t].T @ dz
        g["Wh"] += hs[t].T @ dz
        g["b"] += dz.sum(axis=0)
        dh = dz @ w["Wh"].T
    return g, loss


def bench_case(loss, hand, args, number, quick):
    """Interleaved medians of the loss alone, knetc's cached grad and the hand-written gradient
    on the same arguments (checked equal first)."""
    g = knetc.grad(loss)
    t = time.perf_counter()
    gk = g(*args)
    first_call = time.perf_counter() - t
    gh, _ = hand(*args)
    for a, b in zip(knetc.tree.leaves(gk), knetc.tree.leaves(gh)):
        assert np.allclose(a, b, rtol=1e-3, atol=1e-5), f"{loss.__name__}: knetc != hand"
    fns = {"f": lambda: loss(*args), "knetc": lambda: g(*args), "hand": lambda: hand(*args)}
    times = interleaved(fns, 7 if quick else 25, number)
    row = {k: statistics.median(v) for k, v in times.items()}
    row["knetc/hand"] = ratio(times, "knetc", "hand")
    row["first"] = first_call
    return row


def small_ops_cases(quick):
    rng = np.random.default_rng(2)
    n, batch = 64, 32
    deep = [a.astype(np.float32) for _ in range(32)
            for a in (rng.standard_normal((n, n)) / np.sqrt(n), np.zeros(n))]
    x = rng.standard_normal((batch, n)).astype(np.float32)
    yield "MLP 32 layers of 64, b 32", bench_case(
        deep_loss, deep_handwritten, (deep, x, np.zeros((batch, n), np.float32)), 10, quick)
    hidden, inp, steps, batch = 64, 32, 100, 16
    w = {"Wx": rng.standard_normal((inp, hidden)) / np.sqrt(inp),
         "Wh": rng.standard_normal((hidden, hidden)) / np.sqrt(hidden),
         "b": np.zeros(hidden), "Wo": rng.standard_normal((hidden, 1)) / np.sqrt(hidden)}
    w = {k: v.astype(np.float32) for k, v in w.items()}
    xs = rng.standard_normal((steps, batch, inp)).astype(np.float32)
    yield "RNN loop, 100 steps", bench_case(
        rnn_loss, rnn_handwritten, (w, xs, np.zeros((batch, 1), np.float32)), 5, quick)


# ---- treenn: a new tree every call ----------------------------------------------------
def random_tree(rng, leaves, vocab):
    nodes = [int(i) for i in rng.integers(0, vocab, leaves)]
    while len(nodes) > 1:
        i = int(rng.integers(0, len(nodes) - 1))
        nodes[i:i + 2] = [(nodes[i], nodes[i + 1])]
    return nodes[0]


def encode(w, tree):
    if isinstance(tree, tuple):
        h = np.concatenate([encode(w, tree[0]), encode(w, tree[1])])
        return np.tanh(h @ w["W"] + w["b"])
    return w["E"][tree]


def tree_loss(w, tree, label):
    return -knetc.logp(encode(w, tree) @ w["U"])[label]


def encode_ag(w, tree):
    if isinstance(tree, tuple):
        h = anp.concatenate([encode_ag(w, tree[0]), encode_ag(w, tree[1])])
        return anp.tanh(anp.dot(h, w["W"]) + w["b"])
    return w["E"][tree]


def tree_loss_ag(w, tree, label):
    s = anp.dot(encode_ag(w, tree), w["U"])
    m = anp.max(s)
    return -(s[label] - m - anp.log(anp.sum(anp.exp(s - m))))


def tree_handwritten(w, tree, label):
    cache = []

    def fwd(t):
        if isinstance(t, tuple):
            a, b = fwd(t[0]), fwd(t[1])
            h = np.concatenate([a, b])
            y = np.tanh(h @ w["W"] + w["b"])
            cache.append((t, h, y))
            return y
        return w["E"][t]
    root = fwd(tree)
    s = root @ w["U"]
    e = np.exp(s - s.max())
    p = e / e.sum()
    loss = -np.log(p[label])
    ds = p
    ds[label] -= 1
    g = {"E": np.zeros_like(w["E"]), "W": np.zeros_like(w["W"]), "b": np.zeros_like(w["b"]),
         "U": np.outer(root, ds)}
    dnode = {id(tree): w["U"] @ ds}

    def back(t, dy):
        if isinstance(t, tuple):
            _, h, y = lookup[id(t)]
            dz = dy * (1 - y * y)
            g["W"] += np.outer(h, dz)
            g["b"] += dz
            dh = w["W"] @ dz
            n = dh.shape[0] // 2
            back(t[0], dh[:n])
            back(t[1], dh[n:])
        else:
            g["E"][t] += dy
    lookup = {id(t): (t, h, y) for t, h, y in cache}
    back(tree, dnode[id(tree)])
    return g, loss


def bench_tree(quick):
    """Sentences per second on new random trees: medians over rounds, each round timing knetc,
    hand-written NumPy and autograd on the same fresh trees (so knetc never meets a tree twice)."""
    rng = np.random.default_rng(1)
    hidden, vocab, classes = 64, 1000, 5
    w = {"E": (rng.standard_normal((vocab, hidden)) * 0.1),
         "W": (rng.standard_normal((2 * hidden, hidden)) * 0.1),
         "b": np.zeros(hidden), "U": (rng.standard_normal((hidden, classes)) * 0.1)}

    def sentences(n):
        return [(random_tree(rng, int(rng.integers(10, 41)), vocab), int(rng.integers(0, classes)))
                for _ in range(n)]

    check = sentences(3)
    for tree, label in check:
        gk = knetc.grad(tree_loss)(w, tree, label)
        gh, _ = tree_handwritten(w, tree, label)
        assert all(np.allclose(gk[k], gh[k], atol=1e-8) for k in w), "treenn: knetc != hand"
    rounds, n = (3, 30) if quick else (7, 60)
    rates = {"knetc": [], "hand": [], "autograd": []}
    us_per_op, leaves = [], []
    ga = autograd.grad(tree_loss_ag) if autograd is not None else None
    for _ in range(rounds):
        data = sentences(n)
        leaves += [_leaves(t) for t, _ in data]
        t = time.perf_counter()
        for tree, label in data:
            knetc.grad(tree_loss)(w, tree, label)   # a new tree: a new specialization
        elapsed = time.perf_counter() - t
        rates["knetc"].append(n / elapsed)
        # Operations of the generated programs (forward and adjoint), counted outside the timing.
        nops = sum(knetc.grad(tree_loss).specialize((w, tree, label)).nops for tree, label in data)
        us_per_op.append(elapsed / nops * 1e6)
        t = time.perf_counter()
        for tree, label in data:
            tree_handwritten(w, tree, label)
        rates["hand"].append(n / (time.perf_counter() - t))
        if ga is not None:
            t = time.perf_counter()
            for tree, label in data:
                ga(w, tree, label)
            rates["autograd"].append(n / (time.perf_counter() - t))
    out = {k: statistics.median(v) for k, v in rates.items() if v}
    if "autograd" in out:
        out["ratio"] = statistics.median(a / b for a, b in zip(rates["knetc"], rates["autograd"]))
    out["us_per_op"] = statistics.median(us_per_op)
    out["leaves"] = statistics.mean(leaves)
    return out


def _leaves(t):
    return _leaves(t[0]) + _leaves(t[1]) if isinstance(t, tuple) else 1


def main(argv=None):
    quick = "--quick" in (argv or sys.argv[1:])
    print("knetc overhead benchmark (medians; lower time is better)")
    print(f"{'model':<22}{'f':>10}{'knetc':>10}{'hand':>10}{'autograd':>10}"
          f"{'knetc/hand':>12}{'knetc/ag':>10}{'1st call':>10}")
    for n, batch in ((8, 4), (256, 64)):
        r = bench_mlp(n, batch, quick)
        ag = r.get("autograd")
        print(f"{f'MLP {n}x{n}, batch {batch}':<22}{r['f']*1e6:>8.1f}us{r['knetc']*1e6:>8.1f}us"
              f"{r['hand']*1e6:>8.1f}us{(ag or float('nan'))*1e6:>8.1f}us"
              f"{r['knetc/hand']:>12.2f}{r.get('knetc/ag', float('nan')):>10.2f}"
              f"{r['first']*1e3:>8.1f}ms")
    for name, r in small_ops_cases(quick):
        print(f"{name:<26}{r['f']*1e6:>6.0f}us{r['knetc']*1e6:>8.0f}us{r['hand']*1e6:>8.0f}us"
              f"{'':>10}{r['knetc/hand']:>12.2f}{'':>10}{r['first']*1e3:>8.1f}ms")
    t = bench_tree(quick)
    print(f"\ntreenn (new tree every call, {t['leaves']:.0f} leaves on average): sentences/s, "
          "medians over rounds")
    print(f"  knetc {t['knetc']:.0f}   hand-written {t['hand']:.0f}   "
          f"autograd {t.get('autograd', float('nan')):.0f}   "
          f"knetc/autograd {t.get('ratio', float('nan')):.2f}   "
          f"knetc specialize+compile+run {t['us_per_op']:.1f} us per generated op")


if __name__ == "__main__":
    main()
