"""``zarray bench --shm``: same-host transports side by side with their floors.

Beside zarray's shared-memory methods (``zarray-shm`` for arrays that live in a
:class:`zarray.SharedPool`, ``zarray-shm-copy`` for ordinary arrays copied into one)
and zarray and raw pyzmq over ``ipc://``, this measures, in the same run and with the
same batching and medians:

* ``numpy.copyto``: one copy of the array into a preallocated array of this process,
  the floor of any transport that copies (and the cost ``zarray-shm-copy`` pays);
* ``mpi4py``: MPI's ``Send``/``Recv`` between two ranks on this host (MPICH's
  shared-memory transport when installed with ``pip install mpi4py mpich``), started
  with ``mpiexec -n 2`` when both mpi4py and an ``mpiexec`` can be found. The
  receiving rank receives into one preallocated buffer and checks three elements of
  every message, as zarray's peer checks every array.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zarray._bench.arrays import format_size, make_array
from zarray._bench.measure import Result, warmup_count

__all__ = ["SHM_METHODS", "SHM_SIZES", "measure_copyto", "measure_mpi", "mpiexec", "shm_targets"]

#: The methods ``zarray bench --shm`` runs over ipc (then numpy.copyto and mpi4py).
SHM_METHODS = ("zarray-shm", "zarray-shm-copy", "zarray", "raw")
#: Its default sizes: 1 KiB to 1 GiB.
SHM_SIZES = (1 << 10, 64 << 10, 1 << 20, 16 << 20, 64 << 20, 256 << 20, 1 << 30)


def _timed_batches(
    once: Callable[[int], float], nbytes: int, seconds: float, repeat: int
) -> tuple[float, list[float], int]:
    """The engine's scheme: a warm-up batch sizes the count, then ``repeat`` batches."""
    est = once(warmup_count(nbytes)) / warmup_count(nbytes)
    count = max(3, min(200_000, math.ceil(seconds / max(est, 1e-9))))
    samples = [once(count) / count for _ in range(repeat)]
    return statistics.median(samples), samples, count


def measure_copyto(sizes: Sequence[int], dtype: Any, seconds: float, repeat: int) -> list[Result]:
    """``numpy.copyto(B, A)`` of each size into a preallocated (already touched) ``B``."""
    out = []
    for n in sizes:
        A = make_array(n, dtype)
        B = np.empty_like(A)
        np.copyto(B, A)  # fault B in once, as a receiver's buffer would be

        def once(count: int, A: Any = A, B: Any = B) -> float:
            t0 = time.perf_counter()
            for _ in range(count):
                np.copyto(B, A)
            return time.perf_counter() - t0

        med, samples, count = _timed_batches(once, n, seconds, repeat)
        out.append(Result("numpy.copyto", n, med, samples, count))
        del A, B
    return out


def mpiexec() -> str | None:
    """An ``mpiexec`` next to this Python (a venv with the mpich wheel) or on PATH."""
    here = Path(sys.executable).parent / "mpiexec"
    if here.exists():
        return str(here)
    return shutil.which("mpiexec")


def measure_mpi(
    sizes: Sequence[int], dtype: Any, seconds: float, repeat: int, timeout: float
) -> tuple[list[Result], str | None]:
    """mpi4py Send/Recv between two ranks; ``(results, None)`` or ``([], why not)``."""
    if importlib.util.find_spec("mpi4py") is None:
        return [], "mpi4py is not installed (pip install mpi4py mpich)"
    exe = mpiexec()
    if exe is None:
        return [], "no mpiexec found (pip install mpich, or an MPI of your system)"
    args = [exe, "-n", "2", sys.executable, "-m", "zarray._bench.mpi"]
    spec = {
        "sizes": list(sizes),
        "dtype": np.dtype(dtype).str,
        "seconds": seconds,
        "repeat": repeat,
    }
    env = dict(os.environ)
    try:
        proc = subprocess.run(
            [*args, json.dumps(spec)],
            capture_output=True,
            text=True,
            timeout=timeout * max(1, len(sizes)),
            env=env,
        )
    except subprocess.TimeoutExpired:
        return [], f"mpiexec did not finish within {timeout * len(sizes):g} s"
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return [], "mpiexec failed: " + " | ".join(tail)
    out = []
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            d = json.loads(line)
            out.append(Result("mpi4py", d["nbytes"], d["seconds"], d["samples"], d["count"]))
    if not out:
        return [], "mpiexec printed no results"
    return out, None


def shm_targets(results: Sequence[Result]) -> list[str]:
    """Issue 10's targets, as ratios of this run's own results."""
    by = {(r.method, r.nbytes): r for r in results if not r.error and r.seconds > 0}
    lines = []
    pool = sorted((n, r.seconds) for (m, n), r in by.items() if m == "zarray-shm")
    if pool:
        lo, hi = min(t for _, t in pool), max(t for _, t in pool)
        lines.append(
            f"array in a pool, cost per message from {format_size(pool[0][0])} to "
            f"{format_size(pool[-1][0])}: {lo * 1e6:.0f}-{hi * 1e6:.0f} µs, "
            f"max/min {hi / lo:.2f} (target: within 2x)"
        )
    n = 64 << 20

    def ratio(a: str, b: str) -> float | None:
        x, y = by.get((a, n)), by.get((b, n))
        return None if x is None or y is None else y.seconds / x.seconds

    for a, b, target in (
        ("zarray-shm", "zarray", ">= 100x"),
        ("zarray-shm-copy", "numpy.copyto", ">= 0.7x"),
        ("zarray-shm-copy", "mpi4py", ">= 1x"),
        ("zarray-shm-copy", "zarray", ""),
    ):
        r = ratio(a, b)
        if r is not None:
            aim = f" (target: {target})" if target else ""
            lines.append(f"64 MiB throughput {a} / {b}: {r:.2f}x{aim}")
    return lines
