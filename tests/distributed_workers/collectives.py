"""Worker (2 ranks): broadcast, allreduce (sum, mean), scalars, several buckets and shard; each
rank pickles what it got to OUT/rank<r>.pkl for tests/test_distributed.py to check."""
import pickle
import sys

import numpy as np

import knetc
from knetc import distributed as dist


def tree(r):
    """A nested structure whose values depend on the rank r."""
    base = np.arange(12, dtype=np.float64).reshape(3, 4)
    return {"layers": [np.full((2, 3), r + 1, np.float32), None, (base * (r + 1), np.full(1, r, np.float32))],
            "t": base.T.copy().T[:, ::2] * 0 + r,      # a non-contiguous view-shaped array
            "n": np.array([r, 10 * r], np.int64), "s": [float(r) + 0.5, np.float32(r)]}


def main(out):
    dist.init(quiet_others=False, bucket_mb=float(sys.argv[2]) if len(sys.argv) > 2 else 16)
    r, n = dist.rank(), dist.size()
    got = {"rank": r, "size": n, "local_rank": dist.local_rank()}
    w = tree(r)
    w["t"] = np.asfortranarray(w["t"])
    t_id = id(w["layers"][0])
    dist.broadcast(w, root=1)
    got["bcast"] = w
    got["bcast_inplace"] = id(w["layers"][0]) == t_id
    g = tree(r)
    dist.allreduce(g)
    got["sum"] = g
    g = tree(r)
    del g["n"]
    dist.allreduce(g, op="mean")
    got["mean"] = g
    # leaves of 64 KiB and more are reduced where they are: contiguous, Fortran-ordered, read-only
    big = np.full((200, 100), r + 1.0, np.float32)
    fort = np.asfortranarray(np.full((100, 200), 2.0 * (r + 1)))
    frozen = np.full(20000, r + 1.0)
    frozen.flags.writeable = False
    large = {"big": big, "fort": fort, "frozen": [frozen], "small": np.full(3, r + 1.0, np.float32)}
    dist.allreduce(large, op="mean")
    got["large"] = {"big_inplace": large["big"] is big, "fort_inplace": large["fort"] is fort,
                    "frozen_new": large["frozen"][0] is not frozen, **large}
    got["scalar_mean"] = dist.mean(np.float32(r + 1))
    got["scalar_sum"] = dist.allreduce(r + 1)
    tup = (np.ones(2, np.float32) * r, 1.5 * r)
    try:
        dist.allreduce(tup)
    except dist.DistributedError as e:
        got["tuple_error"] = str(e)
    got["tuple_new"] = dist.allreduce(tup, inplace=False)
    x = np.arange(40).reshape(20, 2)
    y = np.arange(20)
    sh = dist.shard(knetc.minibatch(x, y, 4, shuffle=True), seed=7)
    got["shard_len"] = len(sh)
    got["shard"] = [[yb.tolist() for _, yb in sh] for _ in range(2)]
    got["shard_plain"] = [yb.tolist() for _, yb in dist.shard(knetc.minibatch(x, y, 6, partial=True))]
    got["shard_iter"] = [b.tolist() for b in dist.shard([np.arange(6), np.arange(6, 10)])]
    dist.barrier()
    with open(f"{out}/rank{r}.pkl", "wb") as f:
        pickle.dump(got, f)


if __name__ == "__main__":
    main(sys.argv[1])
