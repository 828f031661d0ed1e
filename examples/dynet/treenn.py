"""treenn: a binary tree LSTM sentiment classifier on SST, one tree per step.

As in DyNet's benchmark (Tai et al.'s tree LSTM): embedding 128, hidden 128; a leaf's gates
``i, o, u`` come from its word, an inner node's from its children's states, with one forget gate
per child; every node (leaves included) predicts its 0-4 label, and the loss is the mean
negative log likelihood over the nodes.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import knetc

from . import data as D


def init(nwords: int, nlabels: int = 5, embed: int = 128, hidden: int = 128, seed: int = 0):
    """The weights, a dict of float32 arrays (gates i, o, u side by side)."""
    rng = np.random.default_rng(seed)

    def rand(*shape):
        return (0.1 * rng.standard_normal(shape)).astype(np.float32)
    return {"E": rand(nwords, embed),
            "Wx": rand(embed, 3 * hidden), "bx": np.zeros(3 * hidden, np.float32),
            "Uh": rand(2 * hidden, 3 * hidden), "bh": np.zeros(3 * hidden, np.float32),
            "Uf1": rand(hidden, hidden), "Uf2": rand(hidden, hidden),
            "bf": np.ones(hidden, np.float32),
            "S": rand(hidden, nlabels)}


def leaf(w, word):
    """A leaf's (h, c) from its word id (a Python int)."""
    g = w["E"][word] @ w["Wx"] + w["bx"]
    n = w["bf"].shape[0]
    i, o, u = knetc.sigm(g[:n]), knetc.sigm(g[n:2 * n]), np.tanh(g[2 * n:])
    c = i * u
    return o * np.tanh(c), c


def node(w, h1, c1, h2, c2):
    """An inner node's (h, c) from its two children's."""
    g = np.concatenate([h1, h2]) @ w["Uh"] + w["bh"]
    n = w["bf"].shape[0]
    i, o, u = knetc.sigm(g[:n]), knetc.sigm(g[n:2 * n]), np.tanh(g[2 * n:])
    f1 = knetc.sigm(h1 @ w["Uf1"] + w["bf"])
    f2 = knetc.sigm(h2 @ w["Uf2"] + w["bf"])
    c = i * u + f1 * c1 + f2 * c2
    return o * np.tanh(c), c


def encode(w, tree):
    """``(h, c, summed loss of the subtree's nodes, its node count)``, recursively."""
    if len(tree) == 2:
        h, c = leaf(w, tree[1])
        total, count = 0.0, 0
    else:
        h1, c1, l1, n1 = encode(w, tree[1])
        h2, c2, l2, n2 = encode(w, tree[2])
        h, c = node(w, h1, c1, h2, c2)
        total, count = l1 + l2, n1 + n2
    return h, c, total - knetc.logp(h @ w["S"])[tree[0]], count + 1


def loss(w, tree):
    """Mean negative log likelihood of every node's label."""
    _, _, total, count = encode(w, tree)
    return total / count


lossgrad = knetc.gradloss(loss, sparse=True)   # embeddings: their rows (knetc.SparseRows)


def train(w, trees, opt):
    """One pass of SGD, a tree per step; returns (mean loss, sentences)."""
    total = 0.0
    for tree in trees:
        g, lval = lossgrad(w, tree)
        knetc.update(w, g, opt)
        total += float(lval)
    return total / max(len(trees), 1), len(trees)


def main(argv=None):
    """Train on synthetic SST (or the real files with ``--real``) and print sentences/s."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sentences", type=int, default=200)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--real", action="store_true", help="read $KNETC_DATA/dynet/trees/train.txt")
    a = p.parse_args(argv)
    sst = D.load_sst()[0] if a.real else D.sst(a.sentences)
    w = init(sst.nwords, sst.nlabels)
    opt = knetc.optimizers(w, knetc.SGD, lr=a.lr)
    t = time.perf_counter()
    lval, n = train(w, sst.trees[:a.sentences], opt)
    print(f"loss {lval:.3f}, {n / (time.perf_counter() - t):.1f} sentences/s")
    return lval


if __name__ == "__main__":
    main()
