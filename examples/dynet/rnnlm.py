"""rnnlm-batch: an LSTM language model on PTB, minibatches of 64 sentences of similar length.

As in DyNet's benchmark: sentences sorted by length and cut into minibatches, embedding 128,
LSTM hidden 256, a softmax over the 10,001 words at every step, the loss of the padded positions
masked out (here: averaged over the real words, so that one SGD learning rate suits every batch).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import knetc

from . import data as D


def init(nwords: int, embed: int = 128, hidden: int = 256, seed: int = 0):
    """``(r, w)``: the LSTM's spec and the weights (a dict of float32 arrays)."""
    rng = np.random.default_rng(seed)
    r, wr = knetc.rnninit(embed, hidden, seed=seed)
    w = {"E": (0.1 * rng.standard_normal((nwords, embed))).astype(np.float32),
         "rnn": wr,
         "W": (0.1 * rng.standard_normal((hidden, nwords))).astype(np.float32),
         "b": np.zeros(nwords, np.float32)}
    return r, w


def batches(lm: D.LMData, size: int = 64):
    """``(x, y, mask)`` minibatches, time first: ``x`` starts with ``<s>`` and ``y`` is the
    sentence (ending with ``<s>``); padding is ``<s>`` with mask 0, as in DyNet."""
    sents = sorted(lm.sents, key=len, reverse=True)
    out = []
    for k in range(0, len(sents), size):
        chunk = sents[k:k + size]
        T = len(chunk[0])
        y = np.full((T, len(chunk)), lm.eos, np.int64)
        mask = np.zeros((T, len(chunk)), np.float32)
        for j, s in enumerate(chunk):
            y[:len(s), j] = s
            mask[:len(s), j] = 1
        x = np.concatenate([np.full((1, len(chunk)), lm.eos, np.int64), y[:-1]])
        out.append((x, y, mask))
    return out


def loss(w, r, x, y, mask):
    """Mean negative log likelihood of the next word over the unmasked positions."""
    e = w["E"][x]                                   # (T, B, embed)
    h, _, _ = knetc.rnnforw(r, w["rnn"], e)         # (T, B, hidden)
    T, B, H = h.shape
    scores = h.reshape(T * B, H) @ w["W"] + w["b"]
    lp = knetc.logp(scores)
    picked = lp[np.arange(T * B), y.reshape(-1)]
    m = mask.reshape(-1)
    return -(picked * m).sum() / m.sum()


lossgrad = knetc.gradloss(loss, sparse=True)   # embeddings: their rows (knetc.SparseRows)


def train(w, r, data, opt):
    """One pass of SGD over ``data`` (minibatches); returns (mean loss, words)."""
    total = words = 0.0
    for x, y, mask in data:
        g, lval = lossgrad(w, r, x, y, mask)
        knetc.update(w, g, opt)
        n = float(mask.sum())
        total += float(lval) * n
        words += n
    return total / max(words, 1), words


def main(argv=None):
    """Train on synthetic PTB (or the real files with ``--real``) and print words/s."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sentences", type=int, default=1024)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--real", action="store_true", help="read $KNETC_DATA/dynet/text/train.txt")
    a = p.parse_args(argv)
    lm = D.load_ptb()[0] if a.real else D.ptb(a.sentences)
    r, w = init(lm.nwords)
    opt = knetc.optimizers(w, knetc.SGD, lr=a.lr)
    data = batches(lm)
    for epoch in range(a.epochs):
        t = time.perf_counter()
        lval, words = train(w, r, data, opt)
        print(f"epoch {epoch}: loss {lval:.3f}, {words / (time.perf_counter() - t):.0f} words/s")
    return lval


if __name__ == "__main__":
    main()
