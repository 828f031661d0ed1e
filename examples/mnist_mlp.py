"""A multi-layer perceptron on MNIST: Knet's ``mlp`` tutorial (``examples/mnist-mlp/mlp.jl``)
with one hidden layer of 64 ReLU units trained by Adam, the knetc way.

Knet.jl::

    function predict(w,x)
        x = mat(x)
        for i=1:2:length(w)-2
            x = relu.(w[i]*x .+ w[i+1])
        end
        return w[end-1]*x .+ w[end]
    end
    loss(w,x,ygold) = nll(predict(w,x), ygold)
    w = Any[0.1f0*randn(Float32,64,784), zeros(Float32,64,1), 0.1f0*randn(Float32,10,64), zeros(Float32,10,1)]
    o = optimizers(w, Adam)
    for epoch=1:10; for (x,y) in dtrn; update!(w, lossgradient(w,x,y), o); end; end

knetc's shapes are Knet's reversed (batch first): ``mat(x)`` is (N, 784), hidden weights
(784, 64), output weights (64, 10), biases 1-D, labels 0-based. Adam (lr 0.001), batch size 100,
10 epochs. ``--hidden`` takes any number of layer sizes (``--hidden`` with none gives softmax
regression). Each line shows the epoch, the loss and accuracy on the training set, the test
accuracy and the time of the epoch; epoch 0 is before training.

    python -m examples.mnist_mlp                    # 64 hidden units, 10 epochs
    python -m examples.mnist_mlp --hidden 128 64    # two hidden layers
    python -m examples.mnist_mlp --small            # 1 epoch on 1000 images
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

if __package__ in (None, ""):  # run as a script: python examples/mnist_mlp.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples.common import mnist_data, parse_mnist_args, summary, train  # noqa: E402


def predict(w, x):
    """Class scores (N, 10) of images x (N, 1, 28, 28): ReLU layers, then a linear one."""
    x = knetc.mat(x)
    for i in range(0, len(w) - 2, 2):
        x = knetc.relu(x @ w[i] + w[i + 1])
    return x @ w[-2] + w[-1]


def loss(w, x, y):
    """Average negative log likelihood of the 0-based labels y (N,)."""
    return knetc.nll(predict(w, x), y)


def initweights(hidden=(64,), winit=0.1, ninputs=784, nclasses=10):
    """Knet's ``0.1*randn`` weights and zero biases for each layer, shapes reversed."""
    w = []
    sizes = [ninputs, *hidden, nclasses]
    for fanin, fanout in zip(sizes[:-1], sizes[1:]):
        w += [init.gaussian(fanin, fanout, std=winit), np.zeros(fanout, np.float32)]
    return w


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m examples.mnist_mlp",
                                description="Multi-layer perceptron on MNIST (Knet tutorial).")
    p.add_argument("--hidden", type=int, nargs="*", default=[64],
                   help="hidden layer sizes (default: 64)")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel over the processes of an MPI job: mpiexec -n 2 python -m "
                        "mpi4py -m examples.mnist_mlp --distributed (the batch is split among them)")
    p.add_argument("--optim", default="Adam", choices=sorted(OPTIMIZERS),
                   help="optimizer (Adam)")
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate (the optimizer's Knet default: Adam 0.001)")
    p.add_argument("--winit", type=float, default=0.1, help="std of the initial weights (0.1)")
    return parse_mnist_args(p, argv, epochs=10, small_epochs=1, batchsize=100)


def main(argv=None):
    args = parse_args(argv)
    if args.distributed:
        from knetc import distributed as dist
        dist.init()        # ranks other than 0 print nothing
    if args.seed >= 0:
        init.seed(args.seed)
    t0 = time.perf_counter()
    dtrn, etrn, etst, (ntrain, ntest, _) = mnist_data(args)
    w = initweights(args.hidden, args.winit)
    hyper = {} if args.lr is None else {"lr": args.lr}
    opts = optimizers(w, OPTIMIZERS[args.optim], **hyper)
    print(f"mnist_mlp: {ntrain} train / {ntest} test images, hidden {args.hidden}, "
          f"{args.epochs} epochs, batch {args.batchsize}, {args.optim} lr {opts[0].lr}",
          flush=True)
    history, ttrain = train(w, loss, predict, (dtrn, etrn, etst), opts, args.epochs,
                            quiet=args.quiet, distributed=args.distributed)
    head = {"epochs": args.epochs, "hidden": list(args.hidden), "ntrain": ntrain, "ntest": ntest}
    return summary("mnist_mlp", head, history, ttrain, t0)


if __name__ == "__main__":
    main()
