"""The process group: MPI's world when mpi4py is installed and the script runs under ``mpiexec``,
a one-process stand-in otherwise. mpi4py is imported here and only when ``init`` runs, so a user
who never asked for MPI never imports it (and never needs it installed).
"""
from __future__ import annotations

import os
import sys
import time
import traceback
from typing import Any

from knetc.errors import KnetcError

__all__ = ["DistributedError", "World", "launched_size", "device_for"]

# Environment variables a launcher sets in every process it starts, with the job's size: MPICH's
# and Intel MPI's PMI, Open MPI, Slurm's srun. Used only to refuse running as a silent size-1 copy
# of a multi-process job when mpi4py is missing.
_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MV2_COMM_WORLD_SIZE", "SLURM_NTASKS")


# Seconds a failing rank waits, after printing its traceback, before it aborts the job.
ABORT_GRACE_S = 0.5


class DistributedError(KnetcError):
    """A distributed operation that cannot run as asked: ranks whose structures differ, a dtype
    the reduction refuses, MPI or NCCL missing for a job that needs them."""


def launched_size(environ: os._Environ | dict | None = None) -> int:
    """The number of processes a launcher (mpiexec, srun) says this job has, 1 if none."""
    env = os.environ if environ is None else environ
    for var in _SIZE_VARS:
        value = env.get(var, "")
        if value.isdigit() and int(value) > 1:
            return int(value)
    return 1


def device_for(local_rank: int, ndevices: int) -> int:
    """The GPU a rank uses: its rank among the processes of its node, modulo the node's visible
    devices (with one visible device per process, set by ``CUDA_VISIBLE_DEVICES``, always 0)."""
    if ndevices < 1:
        raise DistributedError("no CUDA device is visible to this process",
                               hint="check CUDA_VISIBLE_DEVICES, or keep the arrays on the CPU")
    return local_rank % ndevices


class _NullWriter:
    """stdout of the ranks other than 0 when they are quiet: writes go nowhere."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


class World:
    """The processes of one job: ``rank``, ``size``, ``local_rank`` and the MPI communicator
    (``comm``, None for a single process without MPI); ``MPI`` is the mpi4py module or None."""

    def __init__(self, comm: Any = None, MPI: Any = None) -> None:  # noqa: N803 - mpi4py's name
        self.comm, self.MPI = comm, MPI
        if comm is None:
            self.rank, self.size, self.local_rank, self.local_size = 0, 1, 0, 1
        else:
            self.rank, self.size = comm.Get_rank(), comm.Get_size()
            # the processes sharing this node's memory: one GPU each, chosen by local rank
            local = comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
            self.local_rank, self.local_size = local.Get_rank(), local.Get_size()
            local.Free()

    @classmethod
    def open(cls, comm: Any = None) -> "World":
        """MPI's world (or ``comm``) when mpi4py can be imported; else a single process, unless a
        launcher started several (then mpi4py's absence is an error, not n silent copies)."""
        try:
            from mpi4py import MPI
        except ImportError as e:
            if comm is not None:
                raise DistributedError(f"a communicator was given but mpi4py cannot be imported ({e})",
                                       hint="pip install 'knetc[mpi]'") from None
            n = launched_size()
            if n > 1:
                raise DistributedError(
                    f"this process is one of {n} started by a launcher, but mpi4py cannot be "
                    f"imported ({e}): each would train alone",
                    hint="pip install 'knetc[mpi]' (mpi4py and an MPI library)") from None
            return cls()
        return cls(MPI.COMM_WORLD if comm is None else comm, MPI)

    def barrier(self) -> None:
        """Wait until every process gets here."""
        if self.comm is not None and self.size > 1:
            self.comm.Barrier()

    def abort(self, code: int = 1) -> None:
        """End every process of the job now (MPI_Abort)."""
        if self.comm is not None:
            self.comm.Abort(code)
        os._exit(code)

    def install_excepthook(self) -> None:
        """An uncaught exception prints its traceback headed by this rank, then aborts the whole job
        (the other ranks would otherwise wait forever in their next collective)."""
        if self.size == 1:
            return
        previous = sys.excepthook

        def hook(kind, value, tb):
            head = (f"knetc.distributed: rank {self.rank} of {self.size} raised {kind.__name__}; "
                    "aborting the job\n")
            try:
                sys.stderr.write(head + "".join(traceback.format_exception(kind, value, tb)))
                sys.stderr.flush()
            except Exception:
                previous(kind, value, tb)
            finally:
                # The launcher forwards our stderr from a pipe; MPI_Abort can make it tear the job
                # down before that pipe is read, and the user would see no error at all (seen once
                # in CI under MPICH's hydra). A moment's wait lets the message out first.
                time.sleep(ABORT_GRACE_S)
                self.abort(1)
        sys.excepthook = hook

    def quiet_others(self) -> None:
        """Ranks other than 0 print nothing on stdout and draw no progress bar (stderr is kept:
        errors and warnings still show)."""
        if self.rank != 0:
            sys.stdout = _NullWriter()
            os.environ["KNETC_PROGRESS"] = "0"
