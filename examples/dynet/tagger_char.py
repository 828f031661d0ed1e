"""bilstm-tagger-withchar: the BiLSTM tagger, rare words embedded by a character BiLSTM.

As in DyNet's benchmark: a word seen more than 5 times has its own embedding (128); a rare word
is spelled ``<*> c1 ... cn <*>`` in character embeddings (20) read by a BiLSTM of 64 each way,
whose two final states make its 128-wide embedding. The rest is ``tagger``'s.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import knetc

from . import data as D
from . import tagger

PAD = 0     # the character id of DyNet's pad <*>


def init(nwords: int, ntags: int, nchars: int, cembed: int = 20, embed: int = 128,
         hidden: int = 50, mlp: int = 32, seed: int = 0):
    """``(specs, w)``: ``specs = (word BiLSTM, char BiLSTM)`` and the weights (float32)."""
    rng = np.random.default_rng(seed)
    r, wr = knetc.rnninit(embed, hidden, bidirectional=True, seed=seed)
    rc, wc = knetc.rnninit(cembed, embed // 2, bidirectional=True, seed=seed + 1)
    w = {"E": (0.1 * rng.standard_normal((nwords, embed))).astype(np.float32),
         "C": (0.1 * rng.standard_normal((nchars, cembed))).astype(np.float32),
         "rnn": wr, "crnn": wc,
         "H": (0.1 * rng.standard_normal((2 * hidden, mlp))).astype(np.float32),
         "O": (0.1 * rng.standard_normal((mlp, ntags))).astype(np.float32)}
    return (r, rc), w


def encode(sent, tags: D.TagData):
    """``(words, gold)``: a common word is its id (a Python int), a rare one the tuple of its
    padded spelling's character ids; tags as an int array."""
    words = [i if i < tags.ncommon else (PAD,) + tags.spelling(i) + (PAD,) for i in sent[0]]
    return words, np.asarray(sent[1], np.int64)


def embed(w, rc, word):
    """A word's vector: its row of ``E``, or the char BiLSTM's final states over its spelling."""
    if isinstance(word, int):
        return w["E"][word]
    c = np.stack([w["C"][ch] for ch in word])                  # (len, cembed)
    _, hy, _ = knetc.rnnforw(rc, w["crnn"], c[:, None, :])     # hy: (2, 1, embed/2)
    return np.concatenate([hy[0, 0], hy[1, 0]])


def loss(w, specs, words, gold):
    """Mean tag negative log likelihood of one sentence."""
    r, rc = specs
    x = np.stack([embed(w, rc, word) for word in words])
    return tagger.tag_loss(w, r, x, gold)


lossgrad = knetc.gradloss(loss, sparse=True)   # embeddings: their rows (knetc.SparseRows)


def train(w, specs, sents, opt):
    """One pass of SGD, a sentence per step; returns (mean loss, words)."""
    return tagger.train(w, specs, sents, opt, lossgrad)


def main(argv=None):
    """Train on synthetic WikiNER (or the real files with ``--real``) and print words/s."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sentences", type=int, default=200)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--real", action="store_true", help="read $KNETC_DATA/dynet/tags/train.txt")
    a = p.parse_args(argv)
    tags = D.load_wikiner()[0] if a.real else D.wikiner(a.sentences)
    specs, w = init(tags.ncommon, tags.ntags, tags.nchars)
    opt = knetc.optimizers(w, knetc.SGD, lr=a.lr)
    sents = [encode(s, tags) for s in tags.sents[:a.sentences]]
    t = time.perf_counter()
    lval, words = train(w, specs, sents, opt)
    print(f"loss {lval:.3f}, {words / (time.perf_counter() - t):.0f} words/s")
    return lval


if __name__ == "__main__":
    main()
