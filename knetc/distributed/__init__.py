"""Data-parallel training on many processes: MPI (mpi4py) for host arrays, NCCL for CuPy arrays.

    from knetc import distributed as dist

    dist.init()                                   # MPI's world; one GPU per rank when CuPy works
    w = model_init(); dist.broadcast(w)           # rank 0's parameters everywhere, in place
    opt = knetc.optimizers(w, knetc.Adam)
    for x, y in dist.shard(knetc.minibatch(xtrn, ytrn, 100, shuffle=True)):   # this rank's rows
        g = lossgradient(w, x, y)
        dist.allreduce(g, op="mean")              # in place, one call per dtype bucket
        knetc.update(w, g, opt)

Run it with ``mpiexec -n 4 python -m mpi4py train.py`` (``-m mpi4py`` makes a rank that raises
abort the job instead of leaving the others waiting). Without mpi4py, or as one process, every
function works as a job of size 1; mpi4py and CuPy are imported only when used.

Collectives over nested structures (lists, tuples, dicts, registered pytrees): the leaves are
packed into flat buffers per dtype (buckets of ``bucket_mb``, reused between steps) and each
buffer makes one in-place ``Allreduce``/``Bcast`` (NCCL ``allReduce``/``bcast`` on the current
CUDA stream for CuPy arrays: no host copies). None leaves are skipped. Before each collective the
ranks compare a hash of their structures (one 16-byte ``Allreduce``), so structures or shapes that
differ raise a ``DistributedError`` naming the first differing leaf on every rank instead of
mixing values or hanging.
"""
from __future__ import annotations

import collections
import os
import sys
import warnings
from typing import Any, Iterable

import numpy as np

from knetc.distributed import backends, buckets
from knetc.distributed.shard import Shard
from knetc.distributed.world import DistributedError, World, device_for, launched_size
from knetc.runtime.sparse import SparseRows

__all__ = ["init", "finalize", "is_initialized", "rank", "size", "local_rank", "is_main", "barrier",
           "broadcast", "allreduce", "mean", "shard", "DistributedError", "Shard", "device_for",
           "launched_size"]


class _State:
    """The job's world, the engines per array module, and the plans per structure."""

    def __init__(self, world: World, bucket_bytes: int, use_nccl: bool) -> None:
        self.world, self.bucket_bytes, self.use_nccl = world, bucket_bytes, use_nccl
        self.engines: dict[str, Any] = {}
        self.modules: dict[str, Any] = {"numpy": np}
        self.plans: collections.OrderedDict = collections.OrderedDict()
        self.stdout = None

    def plan(self, what: str, sig: buckets.Signature, kinds: tuple[str, ...],
             direct_bytes: int | None = None) -> buckets.Plan:
        key = (what, sig.key)
        plan = self.plans.get(key)
        if plan is None:
            plan = self.plans[key] = buckets.Plan(sig, self.bucket_bytes, kinds, direct_bytes)
            if len(self.plans) > 32:      # structures seen once (evaluation, odd batches) age out
                self.plans.popitem(last=False)
        else:
            self.plans.move_to_end(key)
        return plan

    def engine(self, module: str) -> Any:
        engine = self.engines.get(module)
        if engine is None:
            if module == "numpy":
                engine = (backends.MPIEngine(self.world) if self.world.comm is not None and
                          self.world.size > 1 else backends.LocalEngine())
            elif module == "cupy":
                engine = self._nccl()
            else:
                raise DistributedError(f"knetc.distributed cannot reduce {module} arrays",
                                       hint="use NumPy or CuPy arrays")
            self.engines[module] = engine
        return engine

    def _nccl(self) -> Any:
        import cupy
        self.modules["cupy"] = cupy
        from cupy.cuda import nccl
        if not self.use_nccl or (self.world.size == 1 and not getattr(nccl, "available", False)):
            if self.world.size > 1:
                raise DistributedError("CuPy arrays in a multi-process job need NCCL "
                                       "(init(nccl=False) was given)",
                                       hint="move the arrays to the CPU, or allow NCCL")
            return backends.LocalEngine()
        return backends.NCCLEngine(self.world, nccl, cupy)


_state: _State | None = None
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def init(comm: Any = None, *, device: int | bool | None = None, bucket_mb: float = 16,
         nccl: bool = True, quiet_others: bool = True, abort_on_error: bool = True) -> None:
    """Join the job (idempotent: a second call changes nothing).

    ``comm``: an mpi4py communicator (default ``MPI.COMM_WORLD`` when mpi4py is installed; a
    single process otherwise; a job started by a launcher without mpi4py is an error).
    ``device``: the CUDA device of this rank; None chooses ``local_rank % visible devices``
    when the job has several processes and CuPy works; False leaves the device alone.
    ``bucket_mb``: the most megabytes packed into one collective. ``nccl``: reduce CuPy arrays
    with NCCL. ``quiet_others``: ranks other than 0 print nothing on stdout and draw no progress
    bar. ``abort_on_error``: an uncaught exception on any rank prints it with the rank and ends
    the whole job (MPI_Abort).
    """
    global _state
    if _state is not None:
        return
    world = World.open(comm)
    st = _State(world, max(1, int(bucket_mb * (1 << 20))), nccl)
    if device is not False and (device is not None or world.size > 1):
        from knetc.runtime.backend import cupy_module
        cupy = cupy_module()
        if cupy is not None:
            dev = device if device is not None else device_for(world.local_rank,
                                                               cupy.cuda.runtime.getDeviceCount())
            cupy.cuda.Device(dev).use()
    if world.local_size > 1 and not any(v in os.environ for v in _THREAD_VARS):
        # each process's BLAS would start a thread per core: n times too many threads, and
        # MPI's busy-waiting ranks starve them (the steps run 10-100 times slower)
        warnings.warn(f"knetc.distributed: {world.local_size} processes share this node; set "
                      "OMP_NUM_THREADS to (cores / processes) so their BLAS threads do not "
                      "oversubscribe the cores", stacklevel=2)
    if abort_on_error:
        world.install_excepthook()
    if quiet_others:
        st.stdout = sys.stdout
        world.quiet_others()
    _state = st


def finalize() -> None:
    """Leave the job: the NCCL communicator and the buffers are released and stdout is restored
    (MPI itself is finalized by mpi4py when Python exits). ``init`` may be called again."""
    global _state
    st, _state = _state, None
    if st is None:
        return
    for engine in st.engines.values():
        close = getattr(engine, "close", None)
        if close is not None:
            close()
    if st.stdout is not None:
        sys.stdout = st.stdout


def is_initialized() -> bool:
    """Whether ``init`` has run (explicitly, or implicitly by the first function that needs it)."""
    return _state is not None


def _get() -> _State:
    if _state is None:
        init()
    return _state


def rank() -> int:
    """This process's rank, 0 … size-1."""
    return _get().world.rank


def size() -> int:
    """The number of processes in the job (1 without MPI)."""
    return _get().world.size


def local_rank() -> int:
    """This process's rank among the processes on its node (the GPU it uses, by default)."""
    return _get().world.local_rank


def is_main() -> bool:
    """Whether this is rank 0: the process that logs, evaluates and saves."""
    return rank() == 0


def barrier() -> None:
    """Wait until every process gets here."""
    _get().world.barrier()


def _agree(st: _State, sig: buckets.Signature, what: str) -> None:
    """Every rank checks that all ranks have the same signature: the max of ``(h, -h)`` over
    the ranks equals this rank's exactly when every rank has ``h``. On a difference each rank
    gathers the others' leaf descriptions and raises the same DistributedError."""
    world = st.world
    if world.size == 1 or world.comm is None:
        return
    h = sig.digest
    both = np.array([h, -h], np.int64)
    world.comm.Allreduce(world.MPI.IN_PLACE, both, op=world.MPI.MAX)
    if both[0] != h or both[1] != -h:
        reports = world.comm.allgather(sig.report())
        raise DistributedError(buckets.describe_mismatch(reports, what),
                               hint="every rank must pass the same structure, shapes and dtypes")


def _refuse(sig: buckets.Signature, what: str, test, reason: str, hint: str) -> None:
    for path, leaf in zip(sig.paths, sig.leaves):
        if test(leaf):
            raise DistributedError(f"{what}: the leaf {buckets.where(path)} is {leaf.describe()}: "
                                   f"{reason}", hint=hint)


def allreduce(tree: Any, op: str = "sum", *, inplace: bool = True) -> Any:
    """Sum (``op="sum"``) or average (``op="mean"``) a nested structure over all ranks.

    Arrays are reduced in place; None leaves are skipped; Python and NumPy scalars become the
    reduced value (put back into their list or dict, or returned when ``tree`` is a scalar:
    ``dist.allreduce(3.0)``). Returns ``tree``, or with ``inplace=False`` a new structure (the
    arrays are still reduced in place). Every rank must pass the same structure, shapes and
    dtypes (else a DistributedError naming the leaf). ``mean`` needs float leaves.
    """
    if op not in ("sum", "mean"):
        raise DistributedError(f"dist.allreduce: op={op!r} is not supported", hint='use "sum" or "mean"')
    st = _get()
    sig, values = buckets.signature(tree)
    plan = st.plan("allreduce", sig, ("array", "scalar"), buckets.DIRECT_BYTES)
    if op not in plan.checked:
        what = "dist.allreduce"
        _refuse(sig, what, lambda leaf: leaf.type is SparseRows, "a row-sparse gradient "
                "(grad(..., sparse=True)) has rows of its own on each rank",
                "reduce dense gradients: take them without sparse=True, or pass g.dense()")
        _refuse(sig, what, lambda leaf: leaf.kind == "object", "only arrays, numbers and None "
                "can be reduced", "put such values outside the structure you reduce")
        _refuse(sig, what, lambda leaf: leaf.dtype is not None and leaf.dtype.kind not in "fiu",
                "sums are taken over float and integer arrays only", "reduce float or int arrays")
        if op == "mean":
            _refuse(sig, what, lambda leaf: leaf.dtype is not None and leaf.dtype.kind in "iu",
                    "the mean of integers is not an integer", 'use op="sum" and divide')
        plan.checked.add(op)
    _agree(st, sig, "dist.allreduce")
    buckets.check_writable(tree, sig, values, inplace, "dist.allreduce")
    world = st.world
    if world.size == 1 and plan.modules <= {"numpy"}:
        return tree       # one process: the sum and the mean are the values themselves
    new = _reduce_direct(st, plan, values, op == "mean")
    bufs = plan.pack(values, _modules(st, plan))
    for buf, (module, _, _) in zip(bufs, plan.buckets):
        st.engine(module).allreduce(buf)
        if op == "mean" and world.size > 1:
            buf /= world.size
    new.update(plan.unpack(values))
    return buckets.write_back(tree, sig, new, inplace, "dist.allreduce")


def _reduce_direct(st: _State, plan: buckets.Plan, values: list, mean: bool) -> dict[int, Any]:
    """Reduce the plan's large leaves where they are: a contiguous writable array in place,
    any other through a contiguous copy (written back, or returned as ``{leaf: new value}``)."""
    new: dict[int, Any] = {}
    size = st.world.size
    modules = _modules(st, plan)
    for i in plan.direct:
        x = values[i]
        module = plan.signature.leaves[i].module
        in_place = x.flags.c_contiguous and buckets.writable(x)
        buf = x if in_place else modules[module].array(x, copy=True, order="C")
        st.engine(module).allreduce(buf)
        if mean and size > 1:
            buf /= size
        if not in_place:
            if buckets.writable(x):
                x[...] = buf
            else:
                new[i] = buf
    return new


def _modules(st: _State, plan: buckets.Plan) -> dict[str, Any]:
    """The array modules the plan's buffers need (creating the CuPy engine on first sight)."""
    for module in plan.modules:
        if module not in st.modules:
            st.engine(module)
    return st.modules


def broadcast(tree: Any, root: int = 0, *, inplace: bool = True) -> Any:
    """Give every rank rank ``root``'s values of a nested structure: arrays are overwritten in
    place, scalars and other objects (pickled) are put back into their list or dict. Returns
    ``tree`` (with ``inplace=False`` a new structure). Every rank must pass the same structure,
    shapes and dtypes (else a DistributedError naming the leaf)."""
    st = _get()
    world = st.world
    if not 0 <= root < world.size:
        raise DistributedError(f"dist.broadcast: root={root} is not a rank of a job of {world.size}")
    sig, values = buckets.signature(tree)
    _agree(st, sig, "dist.broadcast")
    buckets.check_writable(tree, sig, values, inplace, "dist.broadcast")
    if world.size == 1:
        return tree
    plan = st.plan("broadcast", sig, ("array", "scalar"))
    modules = _modules(st, plan)
    bufs = plan.pack(values, modules) if world.rank == root else plan.allocate(modules)
    for buf, (module, _, _) in zip(bufs, plan.buckets):
        st.engine(module).bcast(buf, root)
    objects = [i for i, leaf in enumerate(sig.leaves) if leaf.kind == "object"]
    new: dict[int, Any] = {}
    if objects:
        sent = world.comm.bcast([values[i] for i in objects] if world.rank == root else None, root=root)
        if world.rank != root:
            new.update(zip(objects, sent))
    if world.rank != root:
        new.update(plan.unpack(values))
    return buckets.write_back(tree, sig, new, inplace, "dist.broadcast")


def mean(value: Any) -> float:
    """The mean over the ranks of a number (a Python or NumPy scalar, a 0-d array): for metrics,
    e.g. ``dist.mean(loss)``. Returns a float on every rank."""
    return float(allreduce(float(value), "mean"))


def shard(batches: Iterable[Any], *, seed: int | None = None) -> Shard:
    """This rank's share of each minibatch: ``batches[i]`` split along its first axis into
    ``size()`` equal parts. Given a shuffling ``knetc.minibatch``, the permutation comes from a
    generator seeded with ``seed`` on every rank (None: a seed drawn by rank 0 from the
    minibatch's generator, or knetc's, and broadcast), so the shares are disjoint. The batch size
    must be a multiple of ``size()``; the ``n % size()`` last rows of a short last batch are
    left out. Returns a re-iterable object with ``len``."""
    st = _get()
    world = st.world
    mb_rng = getattr(batches, "rng", None)
    if getattr(batches, "shuffle", False) and seed is None:
        if world.rank == 0:
            from knetc import init as _init
            seed = int((mb_rng or _init.default_rng()).integers(2 ** 62))
        if world.comm is not None and world.size > 1:
            seed = world.comm.bcast(seed, root=0)
    return Shard(batches, world.rank, world.size, seed)
