"""Peak memory of a training step on the CPU: knetc against PyTorch eager (and JAX jit), MLP and
LeNet of the tutorial (the models, data and steps of ``tutorial_cpu.py``).

Each framework runs in a process of its own: it builds the model and the data, and its resident
set size (``/proc/self/statm``) is the baseline; a thread samples the resident size every
0.2 ms while the framework makes its step (knetc specializes and compiles, JAX jits on the first
call) and runs ``--steps`` training steps; the table shows the peak above the baseline (what the
steps needed: temporaries, gradients, optimizer state, compiled code, and memory the allocator
keeps for reuse), median over ``--runs`` processes. Linux only (it reads /proc).

Run: python benchmarks/memory_cpu.py [--models mlp,lenet] [--steps 5] [--runs 3]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def worker(model: str, framework: str, steps: int) -> dict:
    """In a fresh process: build, measure the baseline, run the steps while sampling."""
    sys.argv = [sys.argv[0], "--threads", "1"]
    sys.path.insert(0, HERE)
    import numpy as np
    import tutorial_cpu as T

    from knetc.runtime.memory import rss_bytes
    args = argparse.Namespace(quick=True, batch=0, seqlen=0, repeat=0)
    m = T.make_models(args, np.random.default_rng(0))[model]
    make = {"knetc": T.knetc_step, "torch": T.torch_step, "jax": T.jax_step}[framework]
    import gc
    gc.collect()
    base = rss_bytes()       # the model and the data built; nothing of the framework's step yet
    peak = [base]
    done = threading.Event()

    def sample():
        while not done.is_set():
            r = rss_bytes()
            if r > peak[0]:
                peak[0] = r
            time.sleep(0.0002)
    t = threading.Thread(target=sample, daemon=True)
    t.start()
    step = make(m)[0]   # knetc compiles (and runs a first step) here, JAX jits on its first
    step()
    first = max(peak[0], rss_bytes())
    after = rss_bytes()      # the second measure: later steps, above what the first one left
    peak[0] = after
    for _ in range(steps - 1):
        step()
    done.set()
    t.join()
    later = max(peak[0], rss_bytes())
    return {"model": model, "framework": framework, "base_mb": base / 2**20,
            "peak_mb": (max(first, later) - base) / 2**20, "later_mb": (later - after) / 2**20}


def main(argv=None) -> list:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="mlp,lenet")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--worker", nargs=2, metavar=("MODEL", "FRAMEWORK"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        print(json.dumps(worker(*a.worker, a.steps)))
        return []
    frameworks = ["knetc"]
    for name in ("torch", "jax"):
        try:
            __import__(name)
            frameworks.append(name)
        except ImportError:
            pass
    rows = []
    print(f"training-step peak memory above the built model and data (MB, median of {a.runs} "
          f"processes, "
          f"{a.steps} steps, 1 thread)")
    print("(then, in parentheses: the peak of the later steps above what the first one left)")
    print(f"{'model':<8}" + "".join(f"{f:>18}" for f in frameworks))
    for model in a.models.split(","):
        peaks, later = {}, {}
        for f in frameworks:
            got = []
            for _ in range(a.runs):
                out = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker",
                                      model, f, "--steps", str(a.steps)],
                                     capture_output=True, text=True, check=True)
                got.append(json.loads(out.stdout.strip().splitlines()[-1]))
            peaks[f] = statistics.median(r["peak_mb"] for r in got)
            later[f] = statistics.median(r["later_mb"] for r in got)
        rows.append({"model": model, "peak_mb": peaks, "later_mb": later})
        print(f"{model:<8}" + "".join(f"{f'{peaks[f]:.1f} ({later[f]:.1f})':>18}"
                                      for f in frameworks), flush=True)
    return rows


if __name__ == "__main__":
    main()
