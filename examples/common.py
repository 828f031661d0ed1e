"""What the MNIST examples (``mnist_softmax``, ``mnist_mlp``, ``lenet``) share: their data and
run-size options, the MNIST minibatches, and Knet's training loop with a line per epoch.

Each example keeps its model (``predict``, ``loss``, ``initweights``) and its main flow; a main
reads like Knet's notebooks::

    args = parse_args(argv)                        # the model's options + parse_mnist_args
    dtrn, etrn, etst, (ntrain, ntest, neval) = mnist_data(args)
    w = initweights(...)
    opts = optimizers(w, Adam)
    history, ttrain = train(w, loss, predict, (dtrn, etrn, etst), opts, args.epochs)
    return summary("name", {"epochs": args.epochs, "ntrain": ntrain, "ntest": ntest},
                   history, ttrain, t0)
"""
from __future__ import annotations

import time

import knetc
from knetc.data import minibatch, mnist
from knetc.metrics import accuracy
from knetc.optim import update
from knetc.progress import progress


# --------------------------------------------------------------------------- options and data

def parse_mnist_args(p, argv=None, *, epochs, batchsize, small_epochs=None, neval=None):
    """Add the options every MNIST example has to the parser ``p`` (which holds the model's own),
    parse ``argv`` and apply ``--small``.

    ``epochs`` and ``batchsize`` are the defaults; with ``small_epochs`` ``--small`` also sets the
    epochs (unless given); ``neval`` adds ``--neval``, the number of training images the training
    loss/accuracy is measured on.
    """
    if small_epochs is None:
        p.add_argument("--epochs", type=int, default=epochs,
                       help=f"passes over the training set ({epochs})")
    else:
        p.add_argument("--epochs", type=int, default=None,
                       help=f"passes over the training set ({epochs}; {small_epochs} with --small)")
    p.add_argument("--batchsize", type=int, default=batchsize, help=f"minibatch size ({batchsize})")
    p.add_argument("--ntrain", type=int, default=0, help="use the first N training images (0: all)")
    p.add_argument("--ntest", type=int, default=0, help="use the first N test images (0: all)")
    if neval is not None:
        p.add_argument("--neval", type=int, default=neval,
                       help=f"training images used to measure the training loss/accuracy ({neval})")
    small = "" if small_epochs is None else f"{small_epochs} epoch{'s' * (small_epochs != 1)} on "
    p.add_argument("--small", action="store_true",
                   help=f"quick run: {small}1000 training and 1000 test images")
    p.add_argument("--seed", type=int, default=1, help="random seed (-1: none)")
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    args = p.parse_args(argv)
    if args.epochs is None:
        args.epochs = small_epochs if args.small else epochs
    if args.small:
        args.ntrain = args.ntrain or 1000
        args.ntest = args.ntest or 1000
    return args


def mnist_data(args, evalbatch=1000):
    """``(dtrn, etrn, etst, (ntrain, ntest, neval))``: shuffled training minibatches of
    ``args.batchsize``, and unshuffled minibatches of ``evalbatch`` for measuring: the first
    ``neval`` training images (``args.neval``; all without it) and the test images. The first
    ``args.ntrain`` / ``args.ntest`` images of MNIST are used (0: all)."""
    xtrn, ytrn, xtst, ytst = mnist()
    if args.ntrain:
        xtrn, ytrn = xtrn[:args.ntrain], ytrn[:args.ntrain]
    if args.ntest:
        xtst, ytst = xtst[:args.ntest], ytst[:args.ntest]
    neval = getattr(args, "neval", 0)
    neval = min(neval, len(xtrn)) if neval > 0 else len(xtrn)
    dtrn = minibatch(xtrn, ytrn, args.batchsize, shuffle=True)
    etrn = minibatch(xtrn[:neval], ytrn[:neval], evalbatch, partial=True)
    etst = minibatch(xtst, ytst, evalbatch, partial=True)
    return dtrn, etrn, etst, (len(xtrn), len(xtst), neval)


# --------------------------------------------------------------------------- training

def avgloss(loss, w, data):
    """Average ``loss(w, x, y)`` over the minibatches ``data`` (weighted by batch size)."""
    total = n = 0
    for x, y in data:
        total += float(loss(w, x, y)) * len(y)
        n += len(y)
    return total / max(n, 1)


def train(w, loss, predict, data, opts, epochs, *, quiet=False, batchloss=False, distributed=False):
    """Knet's loop ``for (x,y) in dtrn; update!(w, lossgradient(w,x,y), opts); end``, ``epochs``
    times, measuring before training (epoch 0) and after each epoch. Returns ``(history, ttrain)``:
    a dict per epoch and the seconds spent training.

    ``data`` is ``(dtrn, etrn, etst)``. Each epoch's line (unless ``quiet``) shows the loss and
    accuracy on ``etrn``, the accuracy on ``etst`` and the time of the epoch; with ``batchloss``
    (LeNet) the gradient comes from ``gradloss`` and the line begins with the average minibatch
    loss over the epoch, also shown on the progress bar. With ``distributed``
    (``knetc.distributed``, initialized) every process starts from rank 0's weights, trains on
    its share of each minibatch and averages the gradients (and the batch losses) with the others.
    """
    dtrn, etrn, etst = data
    if distributed:
        from knetc import distributed as dist
        dist.broadcast(w)
        dtrn = dist.shard(dtrn)
    lossgradient = knetc.gradloss(loss) if batchloss else knetc.grad(loss)
    history = []

    def report(epoch, seconds, bl=None):
        rec = {"epoch": epoch, "trn_loss": avgloss(loss, w, etrn),
               "trn_acc": accuracy(w, etrn, predict), "tst_acc": accuracy(w, etst, predict),
               "time": seconds}
        if batchloss:
            rec = {"epoch": epoch, "batch_loss": bl, **rec}
        history.append(rec)
        if not quiet:
            head = f"epoch {epoch:3d}  "
            if batchloss:
                head += "batch loss " + ("   -  " if bl is None else f"{bl:.4f}") + "  "
            secs = f"{seconds:6.1f}" if batchloss else f"{seconds:6.2f}"
            print(f"{head}trn loss {rec['trn_loss']:.4f}  trn acc {rec['trn_acc']:.4f}  "
                  f"tst acc {rec['tst_acc']:.4f}  time {secs}s", flush=True)

    report(0, 0.0)
    ttrain = 0.0
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        total = n = 0
        for x, y in (bar := progress(dtrn, desc=f"epoch {epoch}")):
            if batchloss:
                dw, lossval = lossgradient(w, x, y)
                if distributed:
                    dist.allreduce(dw, op="mean")
                    lossval = dist.mean(lossval)
                update(w, dw, opts)
                total += float(lossval) * len(y)
                n += len(y)
                bar.set_postfix(loss=f"{total / n:.4f}", refresh=False)
            else:
                dw = lossgradient(w, x, y)
                if distributed:
                    dist.allreduce(dw, op="mean")
                update(w, dw, opts)
        seconds = time.perf_counter() - start
        ttrain += seconds
        report(epoch, seconds, total / max(n, 1))
    return history, ttrain


def summary(name, head, history, ttrain, t0):
    """The metrics of a run: ``head`` (epochs, ntrain, ...), then the training loss before and
    after, the final accuracies, the history and the times; printed as one line."""
    last = history[-1]
    result = {**head, "loss0": history[0]["trn_loss"], "loss": last["trn_loss"],
              "trn_acc": last["trn_acc"], "tst_acc": last["tst_acc"], "history": history,
              "train_time": ttrain, "time": time.perf_counter() - t0}
    print(f"{name}: tst acc {result['tst_acc']:.4f} after {head['epochs']} epochs "
          f"({ttrain:.1f}s training, {result['time']:.1f}s total)", flush=True)
    return result


# --------------------------------------------------------------------------- minibatch loops with gradloss

def time_batches(name, lossgradient, w, opts, batches, count, nbatches, epochs):
    """Time ``count`` training steps over the iterator ``batches`` (the first one compiles
    outside the clock) and project an epoch of ``nbatches`` minibatches; prints one line."""
    lossgradient(w, *next(batches))
    t = time.perf_counter()
    k = 0
    for x, y in batches:
        dw, _ = lossgradient(w, x, y)
        update(w, dw, opts)
        k += 1
        if k == count:
            break
    per = (time.perf_counter() - t) / max(k, 1)
    print(f"{name}: {per:.3f} s per minibatch over {k}, projected {per * nbatches:.0f} s per "
          f"epoch of {nbatches} minibatches, {per * nbatches * epochs:.0f} s for {epochs} epochs",
          flush=True)
    return {"per_batch": per, "epoch": per * nbatches}


def train_epochs(lossgradient, w, opts, epoch_batches, nbatches, evaluate, epochs, quiet=False):
    """``epochs`` passes of ``update(w, lossgradient(w, x, y)[0], opts)`` over
    ``epoch_batches()`` (a new iterator of ``nbatches`` minibatches per epoch), the batch loss
    on the progress bar; ``evaluate(w)`` (the test accuracy) after each epoch, one line each.
    Returns ``(history, seconds of training)``."""
    ttrain = 0.0
    history = []
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        total = n = 0
        bar = progress(epoch_batches(), total=nbatches, desc=f"epoch {epoch}")
        for x, y in bar:
            dw, lossval = lossgradient(w, x, y)
            update(w, dw, opts)
            total += float(lossval)
            n += 1
            bar.set_postfix(loss=f"{total / n:.4f}", refresh=False)
        seconds = time.perf_counter() - start
        ttrain += seconds
        acc = evaluate(w)
        history.append({"epoch": epoch, "batch_loss": total / max(n, 1), "tst_acc": acc,
                        "time": seconds})
        if not quiet:
            print(f"epoch {epoch:3d}  batch loss {total / max(n, 1):.4f}  tst acc {acc:.4f}  "
                  f"time {seconds:6.1f}s", flush=True)
    return history, ttrain


def batch_accuracy(predict, w, x, y, batchsize):
    """Fraction of the complete minibatches' examples whose class ``predict(w, x)`` gets right
    (the notebooks' evaluation: the last partial batch is left out)."""
    n = (len(x) // batchsize) * batchsize
    right = 0
    for i in range(0, n, batchsize):
        scores = predict(w, x[i:i + batchsize])
        right += int((scores.argmax(axis=1) == y[i:i + batchsize]).sum())
    return right / max(n, 1)
