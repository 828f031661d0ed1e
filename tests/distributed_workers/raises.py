"""Worker (2 ranks): rank 1 raises before a collective that rank 0 is already waiting in; the job
must end promptly with rank 1's error (not hang)."""
import time

import numpy as np

from knetc import distributed as dist

dist.init()
if dist.rank() == 1:
    time.sleep(0.2)
    raise ValueError("rank one failed on purpose")
dist.allreduce([np.ones(3)])
time.sleep(60)     # never reached on a correct abort: the test would time out
