"""The engines under the collectives: each reduces or broadcasts one flat buffer in place.

``MPIEngine`` (host arrays, mpi4py's buffer interface: no pickling), ``NCCLEngine`` (CuPy arrays,
``cupy.cuda.nccl``: one communicator per process made from a unique id that rank 0 draws and MPI
broadcasts; every call is queued on the current CUDA stream, after the kernels that computed the
buffer, so nothing waits and nothing goes through the host) and ``LocalEngine`` (one process:
nothing to do).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from knetc.distributed.world import DistributedError, World

__all__ = ["LocalEngine", "MPIEngine", "NCCLEngine", "exchange_unique_id", "NCCL_TYPES"]

# numpy dtype -> the name of NCCL's ncclDataType_t constant in cupy.cuda.nccl
NCCL_TYPES = {"int8": "NCCL_INT8", "uint8": "NCCL_UINT8", "int32": "NCCL_INT32",
              "uint32": "NCCL_UINT32", "int64": "NCCL_INT64", "uint64": "NCCL_UINT64",
              "float16": "NCCL_FLOAT16", "float32": "NCCL_FLOAT32", "float64": "NCCL_FLOAT64"}


class LocalEngine:
    """One process: a sum over one rank is the buffer itself, a broadcast changes nothing."""

    def allreduce(self, buf: Any) -> None:
        pass

    def bcast(self, buf: Any, root: int) -> None:
        pass


class MPIEngine:
    """Host buffers through MPI: one in-place ``Allreduce``/``Bcast`` per buffer."""

    def __init__(self, world: World) -> None:
        self.comm, self.MPI = world.comm, world.MPI

    def allreduce(self, buf: np.ndarray) -> None:
        try:
            self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        except (KeyError, TypeError, ValueError, self.MPI.Exception) as e:
            raise DistributedError(f"MPI cannot sum a {buf.dtype} buffer: {e}",
                                   hint="reduce float32/float64/int32/int64 arrays") from None

    def bcast(self, buf: np.ndarray, root: int) -> None:
        # as bytes: any dtype, bool and float16 included, goes unchanged
        self.comm.Bcast([buf.view(np.uint8), self.MPI.BYTE], root=root)


def exchange_unique_id(world: World, make_id: Callable[[], Any]) -> Any:
    """The NCCL unique id every rank uses: drawn by rank 0 (``make_id``), broadcast over MPI.
    Kept as ``make_id`` gives it: CuPy 14's ``get_unique_id`` gives bytes and its communicator
    takes only bytes (older CuPy: a tuple of ints)."""
    uid = make_id() if world.rank == 0 else None
    if world.comm is not None and world.size > 1:
        uid = world.comm.bcast(uid, root=0)
    return uid


class NCCLEngine:
    """CuPy buffers through NCCL, on the current CUDA stream.

    ``nccl`` is ``cupy.cuda.nccl`` and ``cupy`` the CuPy module; both can be stand-ins (the CPU
    tests give NumPy-backed ones to check the pointers, counts and types sent).
    """

    def __init__(self, world: World, nccl: Any, cupy: Any) -> None:
        if not getattr(nccl, "available", True):
            raise DistributedError(
                "CuPy arrays are reduced with NCCL, but cupy.cuda.nccl is not available",
                hint="pip install nvidia-nccl-cu13 (or -cu12), or move the arrays to the CPU")
        self.nccl, self.cupy, self.world = nccl, cupy, world
        self.device = cupy.cuda.Device().id
        uid = exchange_unique_id(world, nccl.get_unique_id)
        self.comm = nccl.NcclCommunicator(world.size, uid, world.rank)

    def _dtype(self, dtype: np.dtype) -> int:
        name = NCCL_TYPES.get(np.dtype(dtype).name)
        if name is None:
            raise DistributedError(f"NCCL cannot reduce {np.dtype(dtype)} arrays",
                                   hint="use float16/float32/float64 or int32/int64")
        return getattr(self.nccl, name)

    def _stream(self) -> int:
        return self.cupy.cuda.get_current_stream().ptr

    def allreduce(self, buf: Any) -> None:
        ptr = buf.data.ptr
        self.comm.allReduce(ptr, ptr, buf.size, self._dtype(buf.dtype), self.nccl.NCCL_SUM,
                            self._stream())

    def bcast(self, buf: Any, root: int) -> None:
        raw = buf.view(np.uint8)
        self.comm.bcast(raw.data.ptr, raw.size, self.nccl.NCCL_UINT8, root, self._stream())

    def close(self) -> None:
        comm, self.comm = self.comm, None
        if comm is not None:
            comm.destroy()
