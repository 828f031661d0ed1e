"""knetc.distributed on a GPU: CuPy structures go through NCCL (one rank still runs the whole
path: unique id, communicator, allReduce/bcast on the current stream) and stay CuPy arrays,
reduced in place; then the data-parallel MLP worker on one rank with CuPy arrays."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dist(cp):
    from cupy.cuda import nccl
    if not getattr(nccl, "available", False):
        pytest.skip("cupy.cuda.nccl is not available (no NCCL library found by CuPy)")
    print("NCCL version", nccl.get_version())
    from knetc import distributed
    distributed.finalize()
    distributed.init(quiet_others=False)
    yield distributed
    distributed.finalize()


def test_allreduce_and_broadcast_cupy_structures(cp, dist):
    from knetc.distributed import backends
    g = {"a": [cp.arange(6, dtype=cp.float32).reshape(2, 3), None],
         "b": (cp.ones(5, cp.float64) * 3, cp.full((2, 2), 7, cp.float32).T)}   # .T: non-contiguous
    ids = [id(g["a"][0]), id(g["b"][0]), id(g["b"][1])]
    before = {k: cp.asnumpy(v) for k, v in (("a", g["a"][0]), ("b0", g["b"][0]), ("b1", g["b"][1]))}
    out = dist.allreduce(g, op="mean")
    assert out is g and [id(g["a"][0]), id(g["b"][0]), id(g["b"][1])] == ids
    assert all(isinstance(a, cp.ndarray) for a in (g["a"][0], g["b"][0], g["b"][1]))
    assert isinstance(dist._get().engines["cupy"], backends.NCCLEngine)   # noqa: SLF001 - the path taken
    cp.cuda.get_current_stream().synchronize()
    np.testing.assert_array_equal(cp.asnumpy(g["a"][0]), before["a"])     # size 1: the mean is itself
    np.testing.assert_array_equal(cp.asnumpy(g["b"][0]), before["b0"])
    np.testing.assert_array_equal(cp.asnumpy(g["b"][1]), before["b1"])
    dist.allreduce(g, op="sum")
    dist.broadcast(g, root=0)
    np.testing.assert_array_equal(cp.asnumpy(g["b"][1]), before["b1"])
    plan = next(p for (what, _), p in dist._get().plans.items() if what == "allreduce")  # noqa: SLF001
    assert all(isinstance(b, cp.ndarray) for b in plan.buffers)           # the buckets live on the GPU
    assert dist.mean(cp.float32(2.5)) == 2.5


def test_nccl_sums_what_it_is_given(cp, dist):
    """A direct check that the communicator reduces: allReduce of a buffer into another one."""
    eng = dist._get().engines["cupy"]                                     # noqa: SLF001
    nccl = eng.nccl
    src = cp.arange(1000, dtype=cp.float32)
    dst = cp.zeros_like(src)
    eng.comm.allReduce(src.data.ptr, dst.data.ptr, src.size, nccl.NCCL_FLOAT32, nccl.NCCL_SUM,
                       cp.cuda.get_current_stream().ptr)
    np.testing.assert_array_equal(cp.asnumpy(dst), np.arange(1000, dtype=np.float32))


def test_one_rank_gpu_training(cp, dist, tmp_path):
    """The 2-rank CPU test's worker, on one rank with the MLP on the GPU: mpiexec -n 1 when it is
    beside sys.executable, else in this process (size 1)."""
    code = ("import sys, numpy as np, cupy as cp, knetc; sys.path[:0] = [%r, %r]\n"
            "import train_mlp\n"
            "from knetc import distributed as dist\n"
            "dist.init(quiet_others=False)\n"
            "x, y = train_mlp.data()\n"
            "train_mlp.data = lambda: (cp.asarray(x), cp.asarray(y))\n"
            "orig = train_mlp.mnist_mlp.initweights\n"
            "train_mlp.mnist_mlp.initweights = lambda *a: knetc.gpu(orig(*a))\n"
            "losses, w = train_mlp.train()\n"
            "assert all(isinstance(a, cp.ndarray) for a in w), [type(a) for a in w]\n"
            "np.save(%r, losses)\n") % (str(ROOT), str(ROOT / "tests" / "distributed_workers"),
                                        str(tmp_path / "gpu.npy"))
    mpiexec = Path(sys.executable).parent / "mpiexec"
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
               KNETC_PROGRESS="0")
    cmd = ([str(mpiexec), "-n", "1"] if mpiexec.exists() else []) + [sys.executable, "-m", "mpi4py",
                                                                      "-c", code]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    sys.path[:0] = [str(ROOT / "tests" / "distributed_workers")]
    try:
        import train_mlp
    finally:
        sys.path.pop(0)
    ref, _ = train_mlp.train(distributed=False)
    np.testing.assert_allclose(np.load(tmp_path / "gpu.npy"), ref, rtol=1e-3)
