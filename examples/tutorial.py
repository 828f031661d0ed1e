"""The knetc tutorial: Knet's tutorial models one after another, each section timed.

1. housing: linear regression, 10 full-batch SGD steps (lr 0.1);
2. mnist_softmax: softmax regression, SGD lr 0.5 (10 epochs);
3. mnist_mlp: one hidden layer of 64 ReLU units, Adam (10 epochs);
4. lenet: conv 20 5x5, pool, conv 50 5x5, pool, dense 500, 10; Adam (1 epoch);
5. charlm: LSTM character language model on Shakespeare (embed 168, hidden 334), a short
   CPU-sized run, then a sample of generated text.

With ``--more``, two models beyond Knet's tutorial follow (about a minute and a half more):

6. transformer_lm: a character-level Transformer (d 64, 2 layers, 4 heads) on Shakespeare,
   AdamW with warm-up and cosine decay, gradient clipping, then a sample;
7. resnet_mnist: a small ResNet (conv, batchnorm, residual blocks) on MNIST, Adam (1 epoch).

Every section is one of the example scripts (``examples/<name>.py``) run through its ``main``; the
options below bound the work so the whole tutorial takes a few minutes on a small CPU. The data
comes through knetc's loaders (``$KNETC_DATA``, the cache ``~/.cache/knetc``, or a download).

    python -m examples.tutorial                         # everything (a few minutes)
    python -m examples.tutorial --quick                 # every model on small data (a minute)
    python -m examples.tutorial --only housing lenet    # some sections
    python -m examples.tutorial --lenet-ntrain 10000    # LeNet on a subset
    python -m examples.tutorial --more                  # also the Transformer and the ResNet
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: python examples/tutorial.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples import (charlm, housing, lenet, mnist_mlp, mnist_softmax, resnet_mnist,  # noqa: E402
                      transformer_lm)

SECTIONS = ("housing", "mnist_softmax", "mnist_mlp", "lenet", "charlm")
MORE = ("transformer_lm", "resnet_mnist")     # beyond Knet's tutorial: run with --more


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m examples.tutorial",
                                description="Run Knet's tutorial models with knetc, timed.")
    p.add_argument("--only", nargs="+", choices=SECTIONS + MORE, default=None,
                   help="sections to run (default: all of Knet's tutorial; with --more also "
                        "transformer_lm and resnet_mnist)")
    p.add_argument("--more", action="store_true",
                   help="also run the models beyond Knet's tutorial: transformer_lm, resnet_mnist")
    p.add_argument("--quick", action="store_true",
                   help="every model on small data (each example's --small)")
    p.add_argument("--softmax-epochs", type=int, default=10, help="mnist_softmax epochs (10)")
    p.add_argument("--mlp-epochs", type=int, default=10, help="mnist_mlp epochs (10)")
    p.add_argument("--lenet-epochs", type=int, default=1, help="lenet epochs (1)")
    p.add_argument("--lenet-ntrain", type=int, default=0,
                   help="lenet on the first N training images (0: all 60000)")
    p.add_argument("--charlm-batches", type=int, default=150,
                   help="charlm minibatches of 32 x 50 characters (150)")
    p.add_argument("--sample", type=int, default=300, help="characters charlm generates (300)")
    p.add_argument("--seed", type=int, default=1, help="random seed")
    args = p.parse_args(argv)
    if args.only is None:
        args.only = list(SECTIONS) + (list(MORE) if args.more else [])
    return args


def _commands(args):
    """(section, module, argv) for each section to run."""
    seed = ["--seed", str(args.seed)]
    if args.quick:
        small = ["--small", *seed]
        return [("housing", housing, seed),
                ("mnist_softmax", mnist_softmax, small),
                ("mnist_mlp", mnist_mlp, small + ["--epochs", "3"]),
                ("lenet", lenet, small),
                ("charlm", charlm, small + ["--sample", str(args.sample)]),
                ("transformer_lm", transformer_lm, small + ["--sample", str(args.sample)]),
                ("resnet_mnist", resnet_mnist, small)]
    return [("housing", housing, seed),
            ("mnist_softmax", mnist_softmax, ["--epochs", str(args.softmax_epochs), *seed]),
            ("mnist_mlp", mnist_mlp, ["--epochs", str(args.mlp_epochs), *seed]),
            ("lenet", lenet, ["--epochs", str(args.lenet_epochs),
                              "--ntrain", str(args.lenet_ntrain), *seed]),
            ("charlm", charlm, ["--batches", str(args.charlm_batches),
                                "--sample", str(args.sample), *seed]),
            ("transformer_lm", transformer_lm, ["--sample", str(args.sample), *seed]),
            ("resnet_mnist", resnet_mnist, seed)]


def _summary(name, r):
    if name == "housing":
        return f"loss {r['loss0']:.1f} -> {r['loss']:.2f} after {r['steps']} steps"
    if name == "charlm":
        s = (f"trn loss {r['loss_first']:.3f} -> {r['loss_last']:.3f} in {r['batches']} "
             f"minibatches")
        if r.get("tst_loss") is not None:
            s += f", tst loss {r['tst_loss0']:.3f} -> {r['tst_loss']:.3f}"
        return s
    if name == "transformer_lm":
        return (f"trn loss {r['loss_first']:.3f} -> {r['loss_last']:.3f} in {r['steps']} steps, "
                f"tst loss {r['tst_loss0']:.3f} -> {r['tst_loss']:.3f} (unigram {r['unigram']:.3f})")
    return (f"tst acc {r['tst_acc']:.4f} after {r['epochs']} epochs on {r['ntrain']} images "
            f"(trn loss {r['loss0']:.3f} -> {r['loss']:.3f})")


def main(argv=None):
    args = parse_args(argv)
    t0 = time.perf_counter()
    results, rows = {}, []
    for name, module, sub in _commands(args):
        if name not in args.only:
            continue
        print(f"\n=== {name}: python -m examples.{name} {' '.join(sub)}", flush=True)
        start = time.perf_counter()
        r = module.main(sub)
        seconds = time.perf_counter() - start
        r["section_time"] = seconds
        results[name] = r
        rows.append((name, _summary(name, r), seconds))
        print(f"=== {name}: {seconds:.1f}s", flush=True)
    total = time.perf_counter() - t0
    print("\n=== summary")
    for name, summary, seconds in rows:
        print(f"{name:14s} {seconds:7.1f}s  {summary}")
    print(f"{'total':14s} {total:7.1f}s", flush=True)
    results["total_time"] = total
    return results


if __name__ == "__main__":
    main()
