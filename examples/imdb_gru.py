"""GRU sentiment classification on IMDB: the DeepLearningFrameworks benchmark (Knet 85% test
accuracy in 29 s on a K80, PyTorch 86% in 31 s), the knetc way.

The notebooks' model and settings (``common/params_lstm.py``): the 30000 most frequent words,
reviews cut to their last 150 ids (``knetc.data.imdb``) and padded at the front as Knet's
notebook (Knet's ``imdb.jl``) does (``--padding post``: at the end, as the Python notebooks'
``imdb_for_library``; the GRU's last output then follows the padding), xavier-initialised
weights as Knet's ``param``, an embedding of 125, one GRU layer of
100 hidden units, a dense layer from the GRU's output at the last step to the 2 classes, softmax
cross-entropy, Adam (lr 0.001, betas 0.9/0.999, eps 1e-8), batch 64 (complete batches only,
shuffled every epoch), 3 epochs; the test accuracy is measured on the complete batches of the
test set, as the notebooks do.  Shapes, batch first: ids ``x`` (B, 150); the GRU input
``we[x.T]`` (150, B, 125), time first as ``rnnforw`` wants; ``hy`` (1, B, 100) is the output at
the last step (the PyTorch notebook's ``x[:, -1, :]``).

    python -m examples.imdb_gru                    # 3 epochs on all of IMDB (reads KNETC_DATA)
    python -m examples.imdb_gru --ntrain 2000 --ntest 2000 --epochs 1   # a quick look
    python -m examples.imdb_gru --batches 20       # time 20 minibatches, projected to an epoch

The last line is ``imdb_gru: test accuracy 0.861 after 3 epochs, 212 s`` (training time).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import knetc
from knetc import init
from knetc.optim import Adam, optimizers
from knetc.runtime.rnn import rnnforw, rnninit

if __package__ in (None, ""):  # run as a script: python examples/imdb_gru.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples.common import batch_accuracy, time_batches, train_epochs  # noqa: E402

MAXFEATURES, MAXLEN, EMBEDSIZE, NUMHIDDEN, BATCHSIZE, EPOCHS = 30000, 150, 125, 100, 64, 3


# --------------------------------------------------------------------------- the model

def predict(w, x):
    """Class scores (B, 2) of the reviews x (B, T) of word ids."""
    r, wr, we, wy, by = w
    e = we[x.T]                              # (T, B, E): time first
    y, hy, _ = rnnforw(r, wr, e)             # hy (1, B, H): the output at the last step
    return hy[0] @ wy + by


def loss(w, x, y):
    """Average softmax cross-entropy of the 0/1 labels y (B,)."""
    return knetc.nll(predict(w, x), y)


def initmodel(vocab=MAXFEATURES, embed=EMBEDSIZE, hidden=NUMHIDDEN, nclasses=2, seed=None):
    """``[r, wr, we, wy, by]``: the GRU spec and its flat weights (Knet's init: xavier matrices,
    zero biases), the embedding and the output layer, xavier as Knet's notebook (``param``).
    ``seed`` seeds knetc's generator (``knetc.init.seed``) first, so the model is reproducible."""
    if seed is not None:
        init.seed(seed)
    r, wr = rnninit(embed, hidden, rnnType="gru", seed=seed)
    return [r, wr, init.xavier(vocab, embed), init.xavier(hidden, nclasses),
            np.zeros(nclasses, np.float32)]


def accuracy(w, x, y, batchsize=BATCHSIZE):
    """Fraction of the complete batches' reviews whose class is predicted right."""
    return batch_accuracy(predict, w, x, y, batchsize)


def batches(x, y, batchsize, rng):
    """The complete, shuffled minibatches of one epoch (the notebooks' ``yield_mb``)."""
    perm = rng.permutation(len(x))
    for i in range(len(x) // batchsize):
        idx = perm[i * batchsize:(i + 1) * batchsize]
        yield x[idx], y[idx]


# --------------------------------------------------------------------------- training

def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m examples.imdb_gru",
                                description="GRU sentiment classification on IMDB "
                                            "(DeepLearningFrameworks benchmark).")
    p.add_argument("--epochs", type=int, default=EPOCHS, help=f"epochs ({EPOCHS})")
    p.add_argument("--batchsize", type=int, default=BATCHSIZE, help=f"batch size ({BATCHSIZE})")
    p.add_argument("--lr", type=float, default=0.001, help="Adam learning rate (0.001)")
    p.add_argument("--ntrain", type=int, default=0, help="first N training reviews (0: all)")
    p.add_argument("--ntest", type=int, default=0, help="first N test reviews (0: all)")
    p.add_argument("--batches", type=int, default=0,
                   help="time this many minibatches only and project an epoch's time (0: train)")
    p.add_argument("--padding", default="pre", choices=["pre", "post"],
                   help="pad short reviews at the front (pre: Knet's notebook, whose last GRU "
                        "output follows the review's last word) or at the end (post: the Python "
                        "notebooks' imdb_for_library)")
    p.add_argument("--seed", type=int, default=1, help="random seed (-1: none)")
    p.add_argument("--quiet", action="store_true", help="print only the last line")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    seed = args.seed if args.seed >= 0 else None
    if seed is not None:
        init.seed(seed)
    from knetc.data import imdb
    xtrn, ytrn, xtst, ytst = imdb(MAXFEATURES, MAXLEN, padding=args.padding)
    if args.ntrain:
        xtrn, ytrn = xtrn[:args.ntrain], ytrn[:args.ntrain]
    if args.ntest:
        xtst, ytst = xtst[:args.ntest], ytst[:args.ntest]
    w = initmodel(seed=seed)
    opts = optimizers(w, Adam, lr=args.lr, beta1=0.9, beta2=0.999, eps=1e-8)
    lossgradient = knetc.gradloss(loss)
    rng = np.random.default_rng(seed)
    nb = len(xtrn) // args.batchsize
    if not args.quiet:
        print(f"imdb_gru: {len(xtrn)} train / {len(xtst)} test reviews, embed {EMBEDSIZE}, GRU "
              f"{NUMHIDDEN}, batch {args.batchsize} ({nb} per epoch), Adam lr {args.lr}, "
              f"{args.epochs} epochs", flush=True)
    if args.batches:                                      # timing only
        return time_batches("imdb_gru", lossgradient, w, opts,
                            batches(xtrn, ytrn, args.batchsize, rng), args.batches, nb, args.epochs)
    history, ttrain = train_epochs(
        lossgradient, w, opts, lambda: batches(xtrn, ytrn, args.batchsize, rng), nb,
        lambda w: accuracy(w, xtst, ytst, args.batchsize), args.epochs, args.quiet)
    acc = history[-1]["tst_acc"] if history else accuracy(w, xtst, ytst, args.batchsize)
    print(f"imdb_gru: test accuracy {acc:.3f} after {args.epochs} epochs, {ttrain:.0f} s",
          flush=True)
    return {"tst_acc": acc, "train_time": ttrain, "history": history, "epochs": args.epochs}


if __name__ == "__main__":
    main()
