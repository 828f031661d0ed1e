"""Worker: data-parallel training of the MNIST MLP on synthetic data. With n ranks and a global
batch of GLOBAL rows, each rank trains on its share and averages the gradients; rank 0 writes
the global losses (the mean of the ranks' losses over equal shares) and the final weights to
OUT/train.npz. Run with one rank (or without MPI) it is the single-process reference."""
import sys

import numpy as np

import knetc
from examples import mnist_mlp
from knetc import distributed as dist

STEPS, GLOBAL, SEED = 50, 32, 3


def data(n=400):
    rng = np.random.default_rng(0)
    x = rng.random((n, 1, 28, 28), np.float32)
    y = (x.reshape(n, -1) @ rng.standard_normal((784, 10))).argmax(1)   # learnable labels
    return x, y


def train(steps=STEPS, global_batch=GLOBAL, distributed=True):
    knetc.init.seed(1 + (dist.rank() if distributed else 0))  # different on purpose: broadcast fixes it
    w = mnist_mlp.initweights((64,))
    if distributed:
        dist.broadcast(w)
    opts = knetc.optimizers(w, knetc.Adam)
    lossgrad = knetc.gradloss(mnist_mlp.loss)
    x, y = data()
    batches = knetc.minibatch(x, y, global_batch, shuffle=True, rng=np.random.default_rng(SEED))
    if distributed:
        batches = dist.shard(batches, seed=SEED)
    losses = []
    while len(losses) < steps:
        for xb, yb in batches:
            g, loss = lossgrad(w, xb, yb)
            if distributed:
                dist.allreduce(g, op="mean")
                loss = dist.mean(loss)
            knetc.update(w, g, opts)
            losses.append(float(loss))
            if len(losses) == steps:
                break
    return np.array(losses), w


if __name__ == "__main__":
    dist.init()
    losses, w = train()
    if dist.is_main():
        np.savez(f"{sys.argv[1]}/train.npz", losses=losses, *w)
