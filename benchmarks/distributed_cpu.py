"""Data-parallel training on CPU processes (``knetc.distributed`` over MPI), 1 and 2 ranks.

    python benchmarks/distributed_cpu.py            # launches itself with mpiexec -n 1 and -n 2

For the MNIST MLP (global batch 100) and LeNet (global batch 128), each rank computes the
gradient of its share and the ranks average them: the table gives the time per step (median),
split into compute (gradient + update) and communication (``dist.allreduce``), and samples/s of
the whole job. Then the allreduce of each model's gradient structure against MPI's own
``Allreduce`` of one flat buffer of the same size (goal: within 1.1x). Each rank runs one BLAS
thread (``OMP_NUM_THREADS=1``): 2 ranks on 2 cores.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _median_ms(fn, reps, warmup=3):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return 1e3 * float(np.median(ts))


def worker():
    import knetc
    from examples import lenet, mnist_mlp
    from knetc import distributed as dist
    from mpi4py import MPI
    dist.init(quiet_others=False)
    n, r = dist.size(), dist.rank()
    rng = np.random.default_rng(0)
    out = {}
    for name, mod, batch, steps in (("mlp", mnist_mlp, 100, 200), ("lenet", lenet, 128, 10)):
        w = mod.initweights()
        dist.broadcast(w)
        opts = knetc.optimizers(w, knetc.Adam)
        lossgrad = knetc.grad(mod.loss)
        x = rng.random((batch // n, 1, 28, 28), np.float32)
        y = rng.integers(0, 10, batch // n)
        comp, comm = [], []
        for i in range(steps + 3):
            dist.barrier()
            t0 = time.perf_counter()
            g = lossgrad(w, x, y)
            knetc.update(w, g, opts)
            t1 = time.perf_counter()
            dist.allreduce(g, op="mean")
            t2 = time.perf_counter()
            if i >= 3:
                comp.append(t1 - t0)
                comm.append(t2 - t1)
        c, m = 1e3 * float(np.median(comp)), 1e3 * float(np.median(comm))
        # the same gradient, reduced as a structure and as one raw flat buffer
        flat = np.concatenate([a.ravel() for a in knetc.tree.leaves(g)])
        reps = 300 if name == "mlp" else 100
        ours = _median_ms(lambda: dist.allreduce(g), reps)
        raw = _median_ms(lambda: MPI.COMM_WORLD.Allreduce(MPI.IN_PLACE, flat, op=MPI.SUM), reps)
        out[name] = {"compute_ms": c, "comm_ms": m, "step_ms": c + m, "samples_s": batch / ((c + m) / 1e3),
                     "mb": flat.nbytes / 1e6, "allreduce_ms": ours, "raw_ms": raw}
    if r == 0:
        print("RESULT " + json.dumps(out), flush=True)


def main():
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", KNETC_PROGRESS="0",
               PYTHONPATH=str(ROOT), OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    mpiexec = str(Path(sys.executable).parent / "mpiexec")
    results = {}
    for n in (1, 2):
        p = subprocess.run([mpiexec, "-n", str(n), sys.executable, "-m", "mpi4py", __file__, "--worker"],
                           env=env, capture_output=True, text=True, timeout=600)
        line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
        if p.returncode or not line:
            sys.exit(f"{n} ranks failed:\n{p.stdout}\n{p.stderr}")
        results[n] = json.loads(line[0][7:])
    print("model  ranks  step ms  compute ms  allreduce ms  samples/s")
    for name in ("mlp", "lenet"):
        for n in (1, 2):
            o = results[n][name]
            print(f"{name:6s} {n:5d} {o['step_ms']:8.3f} {o['compute_ms']:11.3f} {o['comm_ms']:13.3f} "
                  f"{o['samples_s']:10.0f}")
    print("\nallreduce of the gradient structure vs MPI Allreduce of one flat buffer (2 ranks)")
    print("model     MB   dist.allreduce ms  raw Allreduce ms  ratio  GB/s (dist)")
    for name in ("mlp", "lenet"):
        o = results[2][name]
        print(f"{name:6s} {o['mb']:5.2f} {o['allreduce_ms']:18.3f} {o['raw_ms']:17.3f} "
              f"{o['allreduce_ms'] / o['raw_ms']:6.2f} {o['mb'] / 1e3 / (o['allreduce_ms'] / 1e3):11.2f}")


if __name__ == "__main__":
    worker() if "--worker" in sys.argv else main()
