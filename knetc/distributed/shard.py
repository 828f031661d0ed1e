"""Each rank's share of a minibatch iterator: every global minibatch is split along its first axis
into ``size`` equal, disjoint parts, and rank ``r`` gets part ``r``. So a data-parallel step over
all ranks sees exactly the global minibatch, and with ``allreduce(g, op="mean")`` it computes the
gradient of the mean loss over it: the same training as one process on the global batch.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator

import numpy as np

from knetc.data import MiniBatch
from knetc.distributed.world import DistributedError

__all__ = ["Shard"]


def _share(n: int, rank: int, size: int) -> slice:
    """Rank ``rank``'s rows of a batch of ``n``: ``n // size`` each; the ``n % size`` last rows
    of a short (partial) batch are left out so that every share has the same length."""
    k = n // size
    return slice(rank * k, (rank + 1) * k)


class Shard:
    """Re-iterable; ``len`` is the number of minibatches (the same on every rank).

    For a ``knetc.minibatch`` (``MiniBatch``) only this rank's rows are indexed (and converted
    by ``xtype``/``ytype``), and its shuffling is drawn from a generator seeded alike on every
    rank (``seed``, or a seed rank 0 draws and broadcasts), so the ranks' shares are disjoint.
    Any other iterable must yield the same batches on every rank (arrays, or tuples of arrays);
    each is sliced along its first axis.
    """

    def __init__(self, batches: Iterable[Any], rank: int, size: int, seed: int | None) -> None:
        self.batches, self.rank, self.size = batches, rank, size
        if isinstance(batches, MiniBatch):
            bs = batches.batchsize
            if bs % size:
                raise DistributedError(
                    f"dist.shard: a minibatch of {bs} cannot be split into {size} equal shares",
                    hint=f"use a batch size that is a multiple of {size} (the number of processes)")
            if bs < size:
                raise DistributedError(f"dist.shard: a minibatch of {bs} has fewer rows than the "
                                       f"{size} processes")
        self.rng = np.random.default_rng(seed) if seed is not None else None

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[Any]:
        if isinstance(self.batches, MiniBatch):
            yield from self._minibatch(self.batches)
            return
        for batch in self.batches:
            if isinstance(batch, tuple):
                n = len(batch[0])
                if n < self.size:
                    continue
                part = _share(n, self.rank, self.size)
                yield tuple(a[part] for a in batch)
            else:
                if len(batch) < self.size:
                    continue
                yield batch[_share(len(batch), self.rank, self.size)]

    def _minibatch(self, mb: MiniBatch) -> Iterator[Any]:
        perm = self.rng.permutation(mb.n) if mb.shuffle else None
        bs = mb.batchsize
        for b in range(len(mb)):
            i, j = b * bs, min((b + 1) * bs, mb.n)
            if j - i < self.size:       # a short last batch with fewer rows than ranks
                continue
            part = _share(j - i, self.rank, self.size)
            idx = (slice(i + part.start, i + part.stop) if perm is None
                   else perm[i + part.start:i + part.stop])
            out = [self._convert(a[idx], mb.xsize if k == 0 else mb.ysize,
                                 mb.xtype if k == 0 else mb.ytype) for k, a in enumerate(mb.arrays)]
            yield out[0] if len(out) == 1 else tuple(out)

    @staticmethod
    def _convert(a: Any, size: Any, typ: Any) -> Any:
        if size is not None:
            a = a.reshape(tuple(size))
        return typ(a) if typ is not None else a

    def __repr__(self) -> str:
        return f"Shard(rank={self.rank}, size={self.size}, batches={len(self)}, of {self.batches!r})"
