"""ResNet-50 inference in plain knetc: the DeepLearningFrameworks feature-extraction benchmark
(Knet 160 images/s on a K80 and 2 on a CPU; PyTorch 130 / 6).

The network is torchvision's ``resnet50`` (He et al. 2016, with the stride on the 3x3
convolution of each bottleneck, "v1.5"); images (N, 3, 224, 224), batch first::

    stem     conv 7x7 stride 2 pad 3, 3 -> 64, batchnorm, relu, max-pool 3x3 stride 2 pad 1
    stages   [3, 4, 6, 3] bottlenecks of width 64, 128, 256, 512 (out 4x the width); a bottleneck
             is relu(bn(conv1x1(relu(bn(conv3x3 stride s(relu(bn(conv1x1(x)))))))) + shortcut),
             the shortcut a strided conv1x1 + bn where the shape changes; the first bottleneck of
             stages 2-4 has stride 2
    head     global average pool, dense 2048 -> 1000

Every convolution is ``conv4(w, x, padding=..., stride=..., mode=1)`` (cross-correlation, as
PyTorch, so torchvision's weights fit unchanged; no bias); every batchnorm is Knet's
``batchnorm(x, moments, params, training=False)``: inference with the running statistics.
Weights are random (He-normal, as torchvision initialises), which is fine for timing; the
parameters are a dict ``{"stem": layer, "stages": [[block, ...], ...], "fc": (2048, 1000),
"fc_b": (1000,)}`` with ``layer = {"w": conv weights, "bn": bnparams, "m": bnmoments}`` and
``block = {"c1", "c2", "c3"[, "down"]}``.  ``width`` scales every stage (64 is ResNet-50).

    python -m examples.resnet50                   # images/s at batch 64 and batch-1 latency
    python -m examples.resnet50 --batchsize 16 --repeat 2
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import knetc
from knetc import init
from knetc.runtime.conv import conv4, pool
from knetc.runtime.layers import batchnorm, bnmoments, bnparams

if __package__ in (None, ""):  # run as a script: python examples/resnet50.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LAYERS = (3, 4, 6, 3)


# --------------------------------------------------------------------------- the model

def conv_bn(p, x, stride=1, padding=0, training=False):
    """Convolution (cross-correlation, no bias), then batch normalization."""
    return batchnorm(conv4(p["w"], x, padding=padding, stride=stride, mode=1), p["m"], p["bn"],
                     training=training)


def bottleneck(p, x, stride, training=False):
    """relu(conv1x1 -> conv3x3 (stride) -> conv1x1, each with batchnorm, + shortcut)."""
    h = knetc.relu(conv_bn(p["c1"], x, training=training))
    h = knetc.relu(conv_bn(p["c2"], h, stride, 1, training))
    h = conv_bn(p["c3"], h, training=training)
    s = conv_bn(p["down"], x, stride, training=training) if "down" in p else x
    return knetc.relu(h + s)


def features(w, x, training=False):
    """The 2048-long (4 * width) features of images x (N, 3, H, W): the global average pool."""
    h = knetc.relu(conv_bn(w["stem"], x, 2, 3, training))
    h = pool(h, window=3, stride=2, padding=1)
    for i, stage in enumerate(w["stages"]):
        for j, p in enumerate(stage):
            h = bottleneck(p, h, 2 if i > 0 and j == 0 else 1, training)
    return knetc.mat(pool(h, window=(h.shape[2], h.shape[3]), mode=1))


def predict(w, x, training=False):
    """Class scores (N, 1000) of images x (N, 3, H, W); batchnorm in eval mode by default."""
    return features(w, x, training) @ w["fc"] + w["fc_b"]


def loss(w, x, y, training=False):
    """Average softmax cross-entropy of the labels y (N,) (used by the gradient tests)."""
    return knetc.nll(predict(w, x, training), y)


def _layer(cin, cout, k, rng, dtype):
    std = np.sqrt(2.0 / (cout * k * k))          # kaiming_normal_, fan_out, relu: torchvision
    return {"w": (rng.standard_normal((cout, cin, k, k)) * std).astype(dtype),
            "bn": bnparams(cout, dtype), "m": bnmoments()}


def initmodel(width=64, layers=LAYERS, nclasses=1000, seed=None, dtype=np.float32):
    """Random ResNet-50 parameters (``width`` 64, ``layers`` (3, 4, 6, 3)); see the module doc.
    Running statistics start as mean 0, variance 1 (``bnmoments()``'s defaults)."""
    rng = np.random.default_rng(seed) if seed is not None else init.default_rng()
    w = {"stem": _layer(3, width, 7, rng, dtype), "stages": []}
    cin = width
    for i, n in enumerate(layers):
        mid = width * 2 ** i
        stage = []
        for j in range(n):
            b = {"c1": _layer(cin, mid, 1, rng, dtype), "c2": _layer(mid, mid, 3, rng, dtype),
                 "c3": _layer(mid, 4 * mid, 1, rng, dtype)}
            if j == 0:                            # shape changes: 1x1 conv (strided) shortcut
                b["down"] = _layer(cin, 4 * mid, 1, rng, dtype)
            stage.append(b)
            cin = 4 * mid
        w["stages"].append(stage)
    bound = 1 / np.sqrt(cin)                      # torch.nn.Linear's default init
    w["fc"] = rng.uniform(-bound, bound, (cin, nclasses)).astype(dtype)
    w["fc_b"] = rng.uniform(-bound, bound, nclasses).astype(dtype)
    return w


def layers_of(w):
    """Every conv+batchnorm layer dict of ``w``, in the order torchvision's ``state_dict``
    lists them (stem; per block c1, c2, c3, down)."""
    out = [w["stem"]]
    for stage in w["stages"]:
        for b in stage:
            out += [b[k] for k in ("c1", "c2", "c3", "down") if k in b]
    return out


# --------------------------------------------------------------------------- timing

def images_per_second(w, batchsize, repeat, size=224, xp=np, sync=lambda: None):
    """``(images/s, seconds per batch)`` of ``predict`` on random images, after one warm-up."""
    x = xp.asarray(np.random.default_rng(0).random((batchsize, 3, size, size), np.float32))
    predict(w, x)
    sync()
    t = time.perf_counter()
    for _ in range(repeat):
        predict(w, x)
    sync()
    per = (time.perf_counter() - t) / repeat
    return batchsize / per, per


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m examples.resnet50",
                                description="ResNet-50 inference (random weights) speed.")
    p.add_argument("--batchsize", type=int, default=64, help="images per batch (64)")
    p.add_argument("--repeat", type=int, default=3, help="timed batches (3)")
    p.add_argument("--size", type=int, default=224, help="image height = width (224)")
    p.add_argument("--width", type=int, default=64, help="base width (64 = ResNet-50)")
    p.add_argument("--seed", type=int, default=1, help="random seed")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    w = initmodel(args.width, seed=args.seed)
    ips, per = images_per_second(w, args.batchsize, args.repeat, args.size)
    _, lat = images_per_second(w, 1, args.repeat, args.size)
    print(f"resnet50: {ips:.1f} images/s at batch {args.batchsize} ({per:.2f} s per batch), "
          f"batch-1 latency {lat * 1000:.0f} ms, {args.size}x{args.size} images", flush=True)
    return {"images_per_s": ips, "batch_s": per, "latency_s": lat}


if __name__ == "__main__":
    main()
