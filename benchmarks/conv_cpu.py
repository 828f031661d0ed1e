"""CPU timings of knetc.runtime.conv (NumPy) against torch.nn.functional on LeNet-sized layers.

    python benchmarks/conv_cpu.py [--repeat 50]
    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 python benchmarks/conv_cpu.py   # one thread each

Prints the median time of one call in milliseconds (float32). The torch columns are left empty
when torch is not installed. Backward means both gradients of a convolution (conv4_w + conv4_x
against aten.convolution_backward) and the x-gradient of a max pooling.

Pooling is timed as the generated gradient code runs it: its forward pass calls
``pool_with_index`` (the pooled result plus where each window's maximum is), against torch's
``max_pool2d(..., return_indices=True)``, and its backward ``pool_x_saved`` replays those
positions, against the ``max_pool2d_with_indices_backward`` that torch's autograd runs with the
indices saved by its forward. Two knetc-only rows give the plain ``pool`` (no gradient wanted) and
the ``pool_x`` backward that searches the maxima again from x and y (for code that calls it).
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from knetc.runtime import conv as C

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # the table keeps only the knetc column
    torch = None

CONVS = [("conv 1x28x28 -> 20, 5x5", (128, 1, 28, 28), (20, 1, 5, 5)),
         ("conv 20x12x12 -> 50, 5x5", (128, 20, 12, 12), (50, 20, 5, 5))]
POOLS = [("pool 2x2 of 20x24x24", (128, 20, 24, 24)),
         ("pool 2x2 of 50x8x8", (128, 50, 8, 8))]


def median_ms(f, repeat: int) -> float:
    f()  # warm up (allocator, BLAS threads)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))


def conv_cases(name, xs, ws, rng):
    x = rng.standard_normal(xs, dtype=np.float32)
    w = rng.standard_normal(ws, dtype=np.float32)
    dy = rng.standard_normal(C.conv4(w, x).shape, dtype=np.float32)

    def ours_f():
        return C.conv4(w, x)

    def ours_b():
        return C.conv4_w(w, x, dy), C.conv4_x(w, x, dy)

    theirs_f = theirs_b = None
    if torch is not None:
        flipped = np.ascontiguousarray(w[:, :, ::-1, ::-1])  # torch cross-correlates
        tx, tw, tdy = (torch.from_numpy(a) for a in (x, flipped, dy))

        def theirs_f():
            return F.conv2d(tx, tw)

        def theirs_b():
            return torch.ops.aten.convolution_backward(
                tdy, tx, tw, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1, [True, True, False])
    return [(name + " forward", ours_f, theirs_f), (name + " backward", ours_b, theirs_b)]


def pool_cases(name, xs, rng):
    x = rng.standard_normal(xs, dtype=np.float32)
    y, saved = C.pool_with_index(x)
    dy = rng.standard_normal(y.shape, dtype=np.float32)

    def ours_f():
        return C.pool_with_index(x)

    def ours_b():
        return C.pool_x_saved(x, y, dy, saved)

    theirs_f = theirs_b = None
    if torch is not None:
        tx, tdy = torch.from_numpy(x), torch.from_numpy(dy)
        _, idx = F.max_pool2d(tx, 2, return_indices=True)

        def theirs_f():
            return F.max_pool2d(tx, 2, return_indices=True)

        def theirs_b():
            return torch.ops.aten.max_pool2d_with_indices_backward(
                tdy, tx, [2, 2], [2, 2], [0, 0], [1, 1], False, idx)
    return [(name + " forward", ours_f, theirs_f), (name + " backward", ours_b, theirs_b),
            (name + " plain pool", lambda: C.pool(x), None),
            (name + " pool_x (no saved)", lambda: C.pool_x(x, y, dy), None)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=50, help="timed calls per cell (median)")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    cases = [c for name, xs, ws in CONVS for c in conv_cases(name, xs, ws, rng)]
    cases += [c for name, xs in POOLS for c in pool_cases(name, xs, rng)]
    threads = f", OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'default')}"
    threads += f", torch threads {torch.get_num_threads()}" if torch is not None else ""
    print(f"batch 128, float32, median of {args.repeat} calls, ms{threads}")
    # Each library's worker threads spin for a while after a call and would steal the two
    # cores from the other's: time every knetc case first, then every torch case.
    ours = [median_ms(f, args.repeat) for _, f, _ in cases]
    theirs = [None] * len(cases)
    if torch is not None:
        time.sleep(0.5)
        theirs = [None if f is None else median_ms(f, args.repeat) for _, _, f in cases]
    print(f"{'layer':44s} {'knetc':>8s} {'torch':>8s} {'knetc/torch':>12s}")
    for label, mine, other in zip((c[0] for c in cases), ours, theirs):
        if other is not None:
            print(f"{label:44s} {mine:8.2f} {other:8.2f} {mine / other:12.2f}")
        else:
            print(f"{label:44s} {mine:8.2f}")

if __name__ == "__main__":
    main()
