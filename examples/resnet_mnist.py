"""A small ResNet on MNIST, the knetc way: convolutions, batch normalization, residual additions.

The network (images (N, 1, 28, 28), batch first; conv weights (out, in, kh, kw))::

    stem    conv 3x3, 1 -> 16, batchnorm, relu, max-pool 2        28x28 -> 14x14
    block1  [conv 3x3 16 -> 16, bn, relu, conv 3x3, bn] + x, relu  14x14
    block2  [conv 3x3 stride 2, 16 -> 32, bn, relu, conv 3x3, bn]
            + shortcut (conv 1x1 stride 2, bn), relu               14x14 -> 7x7
    block3  as block2, 32 -> 64                                     7x7 -> 4x4
    head    average pool over 4x4, dense 64 -> 10, nll

Every convolution is ``conv4(w, x, padding=..., stride=...)`` (no bias: the batchnorm after it
shifts); every batchnorm is Knet's ``batchnorm(x, moments, params)`` with learned ``bnparams(C)``
(scales and shifts) and running statistics kept in ``bnmoments()``.  The parameters are a dict
per layer, ``{"w": conv weights, "bn": bnparams, "m": bnmoments}``: the moments are not arrays,
so they get no gradient (``None``) and no optimizer.

While ``knetc.grad`` runs, batchnorm normalizes with the minibatch's statistics and updates the
running moments; evaluation (``with knetc.training_mode(False):``, also the default outside
``grad``) normalizes with the running moments, so a test image's class does not depend on the
other images of its minibatch.

Default training: Adam (lr 0.005 with a cosine decay over the run, ``knetc.schedules``), batch
128, 1 epoch on all of MNIST: 98.9% test accuracy after 40-50 s of training on 2 CPU cores (the
softmax model reaches 92%, LeNet 98.3% in one epoch).  The training loss and accuracy are
measured on ``--neval`` (5000) training images.  On a machine whose cores are busy with other
work, ``OPENBLAS_NUM_THREADS=1`` avoids NumPy's BLAS threads waiting for each other (a step can
otherwise take several times longer).  ``--optim Momentum`` uses Knet's Momentum with lr 0.05.

    python -m examples.resnet_mnist                   # 1 epoch on all of MNIST
    python -m examples.resnet_mnist --epochs 3
    python -m examples.resnet_mnist --small           # 3 epochs on 1000 images, channels 8 16 32
    python -m examples.resnet_mnist --channels 8 16 32
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import knetc
from knetc import init, schedules
from knetc.optim import Adam, Momentum, optimizers, update
from knetc.progress import progress
from knetc.runtime.conv import conv4, pool
from knetc.runtime.layers import batchnorm, bnmoments, bnparams

if __package__ in (None, ""):  # run as a script: python examples/resnet_mnist.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples.common import mnist_data, parse_mnist_args, summary  # noqa: E402


# --------------------------------------------------------------------------- the model

def conv_bn(p, x, stride=1, padding=1):
    """Convolution, then batch normalization."""
    return batchnorm(conv4(p["w"], x, padding=padding, stride=stride), p["m"], p["bn"])


def residual(p, x):
    """relu(F(x) + shortcut(x)); the shortcut is x itself or, where the block halves the size
    and changes the channels, a strided 1x1 convolution with its batchnorm."""
    stride = 2 if "down" in p else 1
    h = knetc.relu(conv_bn(p["c1"], x, stride))
    h = conv_bn(p["c2"], h)
    s = conv_bn(p["down"], x, stride, padding=0) if "down" in p else x
    return knetc.relu(h + s)


def predict(w, x):
    """Class scores (N, 10) of images x (N, 1, 28, 28)."""
    h = pool(knetc.relu(conv_bn(w["stem"], x)))
    for p in w["blocks"]:
        h = residual(p, h)
    h = pool(h, window=h.shape[2], mode=1)          # global average: (N, C, 1, 1)
    return knetc.mat(h) @ w["fc"] + w["fc_b"]


def loss(w, x, y):
    """Average negative log likelihood of the 0-based labels y (N,)."""
    return knetc.nll(predict(w, x), y)


def initweights(channels=(16, 32, 64), nclasses=10):
    """He-initialized convolutions, bnparams (gamma 1, beta 0) and fresh bnmoments per layer."""
    def conv(cin, cout, k=3):
        return {"w": init.gaussian(cout, cin, k, k, std=float(np.sqrt(2.0 / (cin * k * k)))),
                "bn": bnparams(cout), "m": bnmoments()}

    c0 = channels[0]
    blocks = [{"c1": conv(c0, c0), "c2": conv(c0, c0)}]
    for cin, cout in zip(channels, channels[1:]):
        blocks.append({"c1": conv(cin, cout), "c2": conv(cout, cout), "down": conv(cin, cout, 1)})
    return {"stem": conv(1, c0), "blocks": blocks,
            "fc": init.xavier(channels[-1], nclasses), "fc_b": np.zeros(nclasses, np.float32)}


def evaluate(w, data):
    """(loss, accuracy) over the minibatches ``data``, in eval mode: running batchnorm moments."""
    total = correct = n = 0.0
    with knetc.training_mode(False):
        for x, y in data:
            scores = predict(w, x)
            total += float(knetc.nll(scores, y)) * len(y)
            correct += float(knetc.accuracy(scores, y)) * len(y)
            n += len(y)
    return total / max(n, 1), correct / max(n, 1)


# --------------------------------------------------------------------------- training

def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m examples.resnet_mnist",
                                description="A small ResNet (conv, batchnorm, residuals) on MNIST.")
    p.add_argument("--optim", default="Adam", choices=["Adam", "Momentum"], help="optimizer (Adam)")
    p.add_argument("--lr", type=float, default=None,
                   help="peak learning rate, decayed by a cosine over the run (Adam 0.005, "
                        "Momentum 0.05)")
    p.add_argument("--channels", type=int, nargs="+", default=None,
                   help="channels of the stem and first block, then of each downsampling "
                        "block (16 32 64; --small 8 16 32)")
    args = parse_mnist_args(p, argv, epochs=1, batchsize=128, small_epochs=3, neval=5000)
    if args.channels is None:
        args.channels = [8, 16, 32] if args.small else [16, 32, 64]
    if args.lr is None:
        args.lr = 0.005 if args.optim == "Adam" else 0.05
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.seed >= 0:
        init.seed(args.seed)
    t0 = time.perf_counter()
    dtrn, etrn, etst, (ntrain, ntest, neval) = mnist_data(args, evalbatch=100)
    w = initweights(args.channels)
    total = args.epochs * len(dtrn)
    lr = schedules.cosine(args.lr, max(total, 1), min_lr=args.lr / 100)
    opts = optimizers(w, Adam if args.optim == "Adam" else Momentum, lr=lr)
    lossgradient = knetc.gradloss(loss)
    print(f"resnet_mnist: {ntrain} train / {ntest} test images, channels {args.channels}, "
          f"{args.epochs} epochs, batch {args.batchsize}, {args.optim} lr {args.lr} (cosine); "
          f"train loss/acc measured on {neval} training images", flush=True)

    history = []

    def report(epoch, seconds, bl=None):
        trn_loss, trn_acc = evaluate(w, etrn)
        tst_loss, tst_acc = evaluate(w, etst)
        history.append({"epoch": epoch, "batch_loss": bl, "trn_loss": trn_loss,
                        "trn_acc": trn_acc, "tst_loss": tst_loss, "tst_acc": tst_acc,
                        "time": seconds})
        if not args.quiet:
            b = "   -  " if bl is None else f"{bl:.4f}"
            print(f"epoch {epoch:3d}  batch loss {b}  trn loss {trn_loss:.4f}  trn acc "
                  f"{trn_acc:.4f}  tst acc {tst_acc:.4f}  time {seconds:6.1f}s", flush=True)

    report(0, 0.0)
    ttrain = 0.0
    for epoch in range(1, args.epochs + 1):
        start = time.perf_counter()
        run = n = 0
        for x, y in (bar := progress(dtrn, desc=f"epoch {epoch}")):
            dw, lossval = lossgradient(w, x, y)        # training mode: batch statistics
            update(w, dw, opts)
            run += float(lossval) * len(y)
            n += len(y)
            bar.set_postfix(loss=f"{run / n:.4f}", refresh=False)
        seconds = time.perf_counter() - start
        ttrain += seconds
        report(epoch, seconds, run / max(n, 1))
    return summary("resnet_mnist", {"epochs": args.epochs, "ntrain": ntrain, "ntest": ntest,
                                    "channels": list(args.channels)}, history, ttrain, t0)


if __name__ == "__main__":
    main()
