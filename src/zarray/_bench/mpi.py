"""The mpi4py peer of ``zarray bench --shm``: ``mpiexec -n 2 python -m zarray._bench.mpi SPEC``.

Rank 0 sends each array ``count`` times with ``comm.Send``; rank 1 receives every
message with ``comm.Recv`` into one preallocated array and checks three of its
elements (first, middle, last), as zarray's benchmark peer checks every array; a
barrier ends each batch, so a batch's time covers the last message's delivery. The
batch sizes follow the engine (a warm-up batch, then ``repeat`` timed ones of about
``seconds``). Rank 0 prints one JSON line per size.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import numpy as np

from zarray._bench.arrays import make_array
from zarray._bench.samehost import _timed_batches


def main(spec: dict[str, Any]) -> None:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    dtype = np.dtype(spec["dtype"])
    for n in spec["sizes"]:
        A = make_array(n, dtype)
        buf = A if rank == 0 else np.empty_like(A)
        flat = A.reshape(-1)
        picks = (0, flat.size // 2, flat.size - 1)
        want = [flat[i] for i in picks]

        def once(count: int, buf: Any = buf, want: Any = want, picks: Any = picks) -> float:
            comm.Barrier()
            t0 = time.perf_counter()
            for _ in range(count):
                if rank == 0:
                    comm.Send(buf, dest=1)
                else:
                    comm.Recv(buf, source=0)
                    got = buf.reshape(-1)
                    if any(got[i] != w for i, w in zip(picks, want, strict=True)):
                        raise RuntimeError(f"mpi4py delivered a wrong array of {buf.nbytes} bytes")
            comm.Barrier()
            # Both ranks must agree on the count of the next batch: rank 0 decides.
            return float(comm.bcast(time.perf_counter() - t0, root=0))

        med, samples, count = _timed_batches(once, n, spec["seconds"], spec["repeat"])
        if rank == 0:
            print(json.dumps({"nbytes": n, "seconds": med, "samples": samples, "count": count}))
            sys.stdout.flush()
        del A, buf


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
