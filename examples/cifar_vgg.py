"""A VGG-style CNN on CIFAR-10: the DeepLearningFrameworks benchmark (Knet 78% test accuracy in
159 s on a K80, PyTorch 78% / 169 s), the knetc way.

The notebooks' model and settings (``common/params.py``; images (N, 3, 32, 32) in [0, 1])::

    conv 3x3 pad 1, 3 -> 50, relu;  conv 3x3 pad 1, 50 -> 50;  max-pool 2, relu, dropout 0.25
    conv 3x3 pad 1, 50 -> 100, relu; conv 3x3 pad 1, 100 -> 100; max-pool 2, relu, dropout 0.25
    dense 100*8*8 -> 512, relu, dropout 0.5;  dense 512 -> 10;  softmax cross-entropy

SGD with momentum 0.9 and lr 0.01 (knetc's ``Momentum``), batch 64 (complete batches only,
shuffled every epoch), 10 epochs.  Convolutions are cross-correlations (``mode=1``) as in
PyTorch, so weights can be exchanged with ``torch.nn.Conv2d``; conv weights (out, in, 3, 3),
biases (1, out, 1, 1), dense weights (in, out).

The real CIFAR-10 is read with ``knetc.data.cifar10()`` (downloaded and checksummed);
``--synthetic`` (or the data being unavailable) uses seeded random images of CIFAR's shapes,
said so on the first line: good for timing, meaningless for accuracy.  On a CPU a full run takes
hours; ``--batches N`` times N minibatches and projects an epoch.

    python -m examples.cifar_vgg                  # 10 epochs on CIFAR-10
    python -m examples.cifar_vgg --batches 5      # time 5 minibatches, project an epoch
    python -m examples.cifar_vgg --synthetic --ntrain 640 --epochs 1
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import knetc
from knetc import init
from knetc.optim import Momentum, optimizers
from knetc.runtime.conv import conv4, pool

if __package__ in (None, ""):  # run as a script: python examples/cifar_vgg.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples.common import batch_accuracy, time_batches, train_epochs  # noqa: E402

EPOCHS, BATCHSIZE, LR, MOMENTUM = 10, 64, 0.01, 0.9


# --------------------------------------------------------------------------- the model

def predict(w, x, pdrop=(0.25, 0.5)):
    """Class scores (N, 10) of images x (N, 3, H, W); dropout only while training."""
    x = conv4(w[2], knetc.relu(conv4(w[0], x, padding=1, mode=1) + w[1]), padding=1, mode=1) + w[3]
    x = knetc.dropout(knetc.relu(pool(x)), pdrop[0])
    x = conv4(w[6], knetc.relu(conv4(w[4], x, padding=1, mode=1) + w[5]), padding=1, mode=1) + w[7]
    x = knetc.dropout(knetc.relu(pool(x)), pdrop[0])
    x = knetc.dropout(knetc.relu(knetc.mat(x) @ w[8] + w[9]), pdrop[1])
    return x @ w[10] + w[11]


def loss(w, x, y, pdrop=(0.25, 0.5)):
    """Average softmax cross-entropy of the 0-based labels y (N,)."""
    return knetc.nll(predict(w, x, pdrop), y)


def initweights(channels=(50, 100), hidden=512, nclasses=10, size=32, cin=3):
    """xavier weights and zero biases; ``size`` is the images' height (= width)."""
    c1, c2 = channels
    z = lambda *d: np.zeros(d, np.float32)  # noqa: E731
    flat = c2 * (size // 4) ** 2
    return [init.xavier(c1, cin, 3, 3), z(1, c1, 1, 1), init.xavier(c1, c1, 3, 3), z(1, c1, 1, 1),
            init.xavier(c2, c1, 3, 3), z(1, c2, 1, 1), init.xavier(c2, c2, 3, 3), z(1, c2, 1, 1),
            init.xavier(flat, hidden), z(hidden), init.xavier(hidden, nclasses), z(nclasses)]


def synthetic(ntrain=50000, ntest=10000, seed=0):
    """Seeded random images (float32 in [0, 1], (N, 3, 32, 32)) and labels of CIFAR's shapes."""
    rng = np.random.default_rng(seed)
    return (rng.random((ntrain, 3, 32, 32), np.float32), rng.integers(0, 10, ntrain),
            rng.random((ntest, 3, 32, 32), np.float32), rng.integers(0, 10, ntest))


def accuracy(w, x, y, batchsize=BATCHSIZE):
    """Fraction of the complete test batches' images classified right (dropout off)."""
    return batch_accuracy(predict, w, x, y, batchsize)


# --------------------------------------------------------------------------- training

def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m examples.cifar_vgg",
                                description="VGG-style CNN on CIFAR-10 "
                                            "(DeepLearningFrameworks benchmark).")
    p.add_argument("--epochs", type=int, default=EPOCHS, help=f"epochs ({EPOCHS})")
    p.add_argument("--batchsize", type=int, default=BATCHSIZE, help=f"batch size ({BATCHSIZE})")
    p.add_argument("--lr", type=float, default=LR, help=f"learning rate ({LR})")
    p.add_argument("--ntrain", type=int, default=0, help="first N training images (0: all)")
    p.add_argument("--ntest", type=int, default=0, help="first N test images (0: all)")
    p.add_argument("--synthetic", action="store_true",
                   help="seeded random images of CIFAR's shapes instead of the real data")
    p.add_argument("--batches", type=int, default=0,
                   help="time this many minibatches only and project an epoch's time (0: train)")
    p.add_argument("--seed", type=int, default=1, help="random seed (-1: none)")
    p.add_argument("--quiet", action="store_true", help="print only the last line")
    return p.parse_args(argv)


def load(args):
    """``(xtrn, ytrn, xtst, ytst, what)``: CIFAR-10, or synthetic data when asked or missing."""
    if not args.synthetic:
        from knetc.data import DataNotFoundError, cifar10
        try:
            return (*cifar10(), "CIFAR-10")
        except DataNotFoundError as e:
            print(f"cifar_vgg: CIFAR-10 is not available ({str(e).splitlines()[0]}); using "
                  "SYNTHETIC data of its shapes", flush=True)
    n, m = args.ntrain or 50000, args.ntest or 10000
    return (*synthetic(n, m, max(args.seed, 0)), "SYNTHETIC random images (timing only)")


def main(argv=None):
    args = parse_args(argv)
    seed = args.seed if args.seed >= 0 else None
    if seed is not None:
        init.seed(seed)
    xtrn, ytrn, xtst, ytst, what = load(args)
    if args.ntrain:
        xtrn, ytrn = xtrn[:args.ntrain], ytrn[:args.ntrain]
    if args.ntest:
        xtst, ytst = xtst[:args.ntest], ytst[:args.ntest]
    w = initweights()
    opts = optimizers(w, Momentum, lr=args.lr, gamma=MOMENTUM)
    lossgradient = knetc.gradloss(loss)
    rng = np.random.default_rng(seed)
    nb = len(xtrn) // args.batchsize

    def epoch_batches():
        perm = rng.permutation(len(xtrn))
        for i in range(nb):
            idx = perm[i * args.batchsize:(i + 1) * args.batchsize]
            yield xtrn[idx], ytrn[idx]

    if not args.quiet:
        print(f"cifar_vgg: {what}, {len(xtrn)} train / {len(xtst)} test images, batch "
              f"{args.batchsize} ({nb} per epoch), SGD momentum {MOMENTUM} lr {args.lr}, "
              f"{args.epochs} epochs", flush=True)
    if args.batches:
        return time_batches("cifar_vgg", lossgradient, w, opts, epoch_batches(), args.batches,
                            nb, args.epochs)
    history, ttrain = train_epochs(lossgradient, w, opts, epoch_batches, nb,
                                   lambda w: accuracy(w, xtst, ytst, args.batchsize),
                                   args.epochs, args.quiet)
    acc = history[-1]["tst_acc"] if history else accuracy(w, xtst, ytst, args.batchsize)
    print(f"cifar_vgg: test accuracy {acc:.3f} after {args.epochs} epochs, {ttrain:.0f} s "
          f"({what})", flush=True)
    return {"tst_acc": acc, "train_time": ttrain, "history": history, "epochs": args.epochs}


if __name__ == "__main__":
    main()
