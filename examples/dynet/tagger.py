"""bilstm-tagger: a bidirectional LSTM tagger on WikiNER, one sentence per step.

As in DyNet's benchmark: word embeddings 128 (words seen 5 times or fewer share one ``UNK``
row), a BiLSTM of hidden size 50 each way, an MLP ``O @ tanh(H @ [f; b])`` (32 units, no
biases) on every position, the tag's negative log likelihood averaged over the sentence.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import knetc

from . import data as D


def init(nwords: int, ntags: int, embed: int = 128, hidden: int = 50, mlp: int = 32,
         seed: int = 0):
    """``(r, w)``: the BiLSTM's spec and the weights (a dict of float32 arrays)."""
    rng = np.random.default_rng(seed)
    r, wr = knetc.rnninit(embed, hidden, bidirectional=True, seed=seed)
    w = {"E": (0.1 * rng.standard_normal((nwords, embed))).astype(np.float32),
         "rnn": wr,
         "H": (0.1 * rng.standard_normal((2 * hidden, mlp))).astype(np.float32),
         "O": (0.1 * rng.standard_normal((mlp, ntags))).astype(np.float32)}
    return r, w


def encode(sent, tags: D.TagData):
    """``(words, gold)``: word ids as a list of Python ints (rare words: ``UNK``), tags as an
    int array."""
    words = [i if i < tags.ncommon else tags.unk for i in sent[0]]
    return words, np.asarray(sent[1], np.int64)


def loss(w, r, words, gold):
    """Mean tag negative log likelihood of one sentence."""
    x = np.stack([w["E"][i] for i in words])              # a Python loop over the words
    return tag_loss(w, r, x, gold)


def tag_loss(w, r, x, gold):
    """The BiLSTM and the MLP over the word vectors ``x`` (T, embed), then the tags' nll."""
    h, _, _ = knetc.rnnforw(r, w["rnn"], x[:, None, :])    # (T, 1, 2*hidden)
    scores = np.tanh(h[:, 0, :] @ w["H"]) @ w["O"]
    return knetc.nll(scores, gold)


lossgrad = knetc.gradloss(loss, sparse=True)   # embeddings: their rows (knetc.SparseRows)


def train(w, r, sents, opt, lossgrad=lossgrad):
    """One pass of SGD, a sentence per step; returns (mean loss, words). ``lossgrad``: the
    gradient of the tagger's loss (``tagger_char`` passes its own)."""
    total = words = 0.0
    for words_, gold in sents:
        g, lval = lossgrad(w, r, words_, gold)
        knetc.update(w, g, opt)
        total += float(lval) * len(gold)
        words += len(gold)
    return total / max(words, 1), words


def main(argv=None):
    """Train on synthetic WikiNER (or the real files with ``--real``) and print words/s."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sentences", type=int, default=500)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--real", action="store_true", help="read $KNETC_DATA/dynet/tags/train.txt")
    a = p.parse_args(argv)
    tags = D.load_wikiner()[0] if a.real else D.wikiner(a.sentences)
    r, w = init(tags.ncommon + 1, tags.ntags)
    opt = knetc.optimizers(w, knetc.SGD, lr=a.lr)
    sents = [encode(s, tags) for s in tags.sents[:a.sentences]]
    t = time.perf_counter()
    lval, words = train(w, r, sents, opt)
    print(f"loss {lval:.3f}, {words / (time.perf_counter() - t):.0f} words/s")
    return lval


if __name__ == "__main__":
    main()
