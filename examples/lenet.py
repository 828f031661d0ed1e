"""LeNet on MNIST: Knet's convolutional-network tutorial (``examples/lenet/lenet.jl``), the knetc
way.

Knet.jl::

    function predict(w,x)
        n=length(w)-4
        for i=1:2:n
            x = pool(relu.(conv4(w[i],x) .+ w[i+1]))
        end
        for i=n+1:2:length(w)-2
            x = relu.(w[i]*mat(x) .+ w[i+1])
        end
        return w[end-1]*x .+ w[end]
    end
    loss(w,x,ygold) = nll(predict(w,x), ygold)
    w = Any[xavier(5,5,1,20),  zeros(1,1,20,1),
            xavier(5,5,20,50), zeros(1,1,50,1),
            xavier(500,800),   zeros(500,1),
            xavier(10,500),    zeros(10,1)]

conv4 20 5x5 -> relu -> pool 2x2 -> conv4 50 5x5 -> relu -> pool 2x2 -> dense 500 relu -> 10.
knetc's shapes are Knet's reversed (batch first): images (N, 1, 28, 28), conv weights
(out, in, 5, 5), conv biases (1, out, 1, 1), dense weights (800, 500) and (500, 10), labels 0-based.
Default training: Adam (lr 0.001, Knet's default), batch size 128, 1 epoch; ``--optim SGD``
uses lenet.jl's SGD with lr 0.1, which learns more slowly in the first epoch.  Each line shows
the epoch, the average minibatch loss over the epoch, the loss and accuracy on (up to
``--neval``) training images, the test accuracy and the time.

    python -m examples.lenet                   # 1 epoch on all of MNIST
    python -m examples.lenet --epochs 3
    python -m examples.lenet --small           # 1 epoch on 1000 images
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import knetc
from knetc import init
from knetc.optim import OPTIMIZERS, optimizers
from knetc.runtime.conv import conv4, pool

if __package__ in (None, ""):  # run as a script: python examples/lenet.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples.common import mnist_data, parse_mnist_args, summary, train  # noqa: E402


def predict(w, x):
    """Class scores (N, 10) of images x (N, 1, 28, 28)."""
    n = len(w) - 4
    for i in range(0, n, 2):
        x = pool(knetc.relu(conv4(w[i], x) + w[i + 1]))
    for i in range(n, len(w) - 2, 2):
        x = knetc.relu(knetc.mat(x) @ w[i] + w[i + 1])
    return x @ w[-2] + w[-1]


def loss(w, x, y):
    """Average negative log likelihood of the 0-based labels y (N,)."""
    return knetc.nll(predict(w, x), y)


def initweights(channels=(20, 50), hidden=500, nclasses=10):
    """Knet's LeNet weights (xavier, zero biases), shapes reversed."""
    c1, c2 = channels
    z = lambda *d: np.zeros(d, np.float32)  # noqa: E731
    return [init.xavier(c1, 1, 5, 5), z(1, c1, 1, 1),
            init.xavier(c2, c1, 5, 5), z(1, c2, 1, 1),
            init.xavier(c2 * 4 * 4, hidden), z(hidden),
            init.xavier(hidden, nclasses), z(nclasses)]


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m examples.lenet",
                                description="LeNet on MNIST (Knet tutorial).")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel over the processes of an MPI job: mpiexec -n 2 python -m "
                        "mpi4py -m examples.lenet --distributed (the batch is split among them)")
    p.add_argument("--optim", default="Adam", choices=sorted(OPTIMIZERS), help="optimizer (Adam)")
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate (SGD: 0.1 as lenet.jl; others: Knet's default, Adam 0.001)")
    p.add_argument("--channels", type=int, nargs=2, default=[20, 50],
                   help="channels of the two conv layers (20 50)")
    p.add_argument("--hidden", type=int, default=500, help="units of the dense layer (500)")
    args = parse_mnist_args(p, argv, epochs=1, batchsize=128, neval=10000)
    if args.lr is None and args.optim == "SGD":
        args.lr = 0.1
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.distributed:
        from knetc import distributed as dist
        dist.init()        # ranks other than 0 print nothing
    if args.seed >= 0:
        init.seed(args.seed)
    t0 = time.perf_counter()
    dtrn, etrn, etst, (ntrain, ntest, neval) = mnist_data(args, evalbatch=500)
    w = initweights(args.channels, args.hidden)
    hyper = {} if args.lr is None else {"lr": args.lr}
    opts = optimizers(w, OPTIMIZERS[args.optim], **hyper)
    print(f"lenet: {ntrain} train / {ntest} test images, {args.epochs} epochs, "
          f"batch {args.batchsize}, {args.optim} lr {opts[0].lr}; train loss/acc measured on "
          f"{neval} training images", flush=True)
    history, ttrain = train(w, loss, predict, (dtrn, etrn, etst), opts, args.epochs,
                            quiet=args.quiet, distributed=args.distributed, batchloss=True)
    return summary("lenet", {"epochs": args.epochs, "ntrain": ntrain, "ntest": ntest},
                   history, ttrain, t0)


if __name__ == "__main__":
    main()
