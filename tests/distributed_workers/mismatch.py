"""Worker (2 ranks): structures that differ across ranks. Each rank writes the DistributedError
it got for each case to OUT/rank<r>.txt, one line per case (the message's first line)."""
import sys

import numpy as np

from knetc import distributed as dist


def cases(r):
    yield "shape", "allreduce", {"a": [np.zeros(3), np.zeros((4, 5 + r), np.float32)]}
    yield "dtype", "broadcast", [np.zeros(3, np.float32 if r == 0 else np.float64)]
    yield "structure", "allreduce", [np.zeros(2)] + [None] * r
    yield "none", "allreduce", {"w": np.zeros(2), "b": None if r else np.zeros(1)}


def main(out):
    dist.init(quiet_others=False)
    r = dist.rank()
    lines = []
    for name, op, t in cases(r):
        try:
            getattr(dist, op)(t)
            lines.append(f"{name}: no error")
        except dist.DistributedError as e:
            lines.append(f"{name}: {str(e).splitlines()[0]}")
    # the ranks agree again afterwards: a good collective still works
    g = [np.full(2, r + 1.0)]
    dist.allreduce(g)
    lines.append(f"after: {g[0].tolist()}")
    with open(f"{out}/rank{r}.txt", "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
