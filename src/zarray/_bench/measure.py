"""Measuring: warm-up, batch sizes, interleaved repeats, medians, and the progress bar.

A measurement sends ``count`` messages back to back over a :class:`~zarray._bench.link.Link`
(pipelined: the sender does not wait for each one), then waits for the peer's
acknowledgement of the whole batch, so the time covers the last message's delivery
and check too.
"""

from __future__ import annotations

import math
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np

from zarray._bench.arrays import Array, BenchError, MiB, check_sizes, format_size, make_array
from zarray._bench.link import Link
from zarray._bench.methods import Method

__all__ = ["Progress", "Result", "measure", "measure_many", "run_bench", "warmup_count"]


@dataclass
class Result:
    """The throughput of one method at one size."""

    method: str
    nbytes: int
    seconds: float = math.nan  # per message: median of the repeats
    samples: list[float] = field(default_factory=list)
    count: int = 0
    error: str | None = None

    @property
    def gbps(self) -> float:
        """Payload gigabytes (10**9 bytes) per second."""
        return self.nbytes / self.seconds / 1e9 if self.seconds > 0 else math.nan

    @property
    def usec(self) -> float:
        """Microseconds per message."""
        return self.seconds * 1e6


def warmup_count(nbytes: int) -> int:
    """Messages sent before timing: enough to fault in buffers and connect."""
    return max(2, min(500, (16 * MiB) // nbytes))


def measure(
    link: Link,
    method: Method,
    A: Array,
    *,
    seconds: float = 0.25,
    repeat: int = 3,
    copy_threshold: int | None = None,
) -> Result:
    """Measure the pipelined throughput of one method; see :func:`measure_many`."""
    return measure_many(
        link, [method], A, seconds=seconds, repeat=repeat, copy_threshold=copy_threshold
    )[0]


def measure_many(
    link: Link,
    methods: Sequence[Method],
    A: Array,
    *,
    seconds: float = 0.25,
    repeat: int = 3,
    min_count: int = 3,
    max_count: int = 200_000,
    copy_threshold: int | None = None,
    progress: Progress | None = None,
) -> list[Result]:
    """Measure the pipelined throughput of several methods for ``A`` over ``link``.

    For each method an untimed warm-up batch pays the one-time costs (connecting,
    faulting buffers in, copying an array into a shared-memory pool), then calibration
    batches, four times longer each until one lasts a fifth of ``seconds``, estimate
    the time per message, from which the message count is chosen so that a timed
    batch lasts about ``seconds`` (so a batch's fixed cost, a few hundred µs, stays
    small beside the messages, even for a method that is fast on a huge array). Then
    ``repeat`` rounds each time one batch of every method in turn, so that a change
    of the machine's speed during the run (other load, frequency, a noisy neighbour)
    spreads over all methods alike instead of favouring whichever ran at a good time.

    Returns
    -------
    list of Result
        In the order of ``methods``: seconds per message (the median over rounds), or
        ``error`` set if the method failed or delivered a wrong array.
    """
    results = [Result(m.name, A.nbytes) for m in methods]
    counts = [0] * len(methods)

    def run(k: int, count: int, advance: int = 1) -> float | None:
        m, res = methods[k], results[k]
        if progress is not None:
            progress.update(f"{m.name} {format_size(A.nbytes)}", advance=0)
        try:
            return link.stream(m, A, count, copy_threshold=copy_threshold) / count
        except BenchError as exc:
            res.error = str(exc)
            if link.broken:  # the peer is out of step (a timeout): start a new one
                link.reset()
            return None
        finally:
            if progress is not None:
                progress.update(f"{m.name} {format_size(A.nbytes)}", advance=advance)

    def calibrate(k: int, count: int) -> float | None:
        while True:
            est = run(k, count, advance=0)
            if est is None or est * count >= seconds / 5 or count >= max_count:
                return est
            count = min(max_count, count * 4)

    w = warmup_count(A.nbytes)
    for k in range(len(methods)):
        est = run(k, w)
        if est is not None:
            est = calibrate(k, w)
        if est is not None:
            counts[k] = max(min_count, min(max_count, math.ceil(seconds / max(est, 1e-9))))
    for _ in range(repeat):
        for k, res in enumerate(results):
            if res.error is None:
                t = run(k, counts[k])
                if t is not None:
                    res.samples.append(t)
    for k, res in enumerate(results):
        res.count = counts[k]
        if res.error is None and res.samples:
            res.seconds = statistics.median(res.samples)
    return results


class Progress:
    """A dependency-free progress bar on a text stream (stderr by default).

    On a terminal it redraws one line; otherwise it prints a line a second at most.
    """

    def __init__(self, total: int, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = enabled and self.stream.isatty()
        self.start = time.perf_counter()
        self._last = -1.0

    def update(self, label: str, advance: int = 1) -> None:
        """Advance by ``advance`` steps and show ``label`` as the current step."""
        self.done = min(self.total, self.done + advance)
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.start
        if self.tty:
            width = 28
            filled = round(width * self.done / self.total)
            bar = "#" * filled + "-" * (width - filled)
            cols = shutil.get_terminal_size((80, 20)).columns
            line = f"[{bar}] {self.done}/{self.total} {elapsed:4.0f}s  {label}"
            self.stream.write("\r" + line[: cols - 1].ljust(cols - 1))
        else:
            # Not a terminal (a log file, CI): one line per second at most, and the last.
            if advance == 0 or (elapsed - self._last < 1.0 and self.done < self.total):
                return
            self._last = elapsed
            self.stream.write(f"[{self.done}/{self.total}] {elapsed:.0f}s {label}\n")
        self.stream.flush()

    def close(self) -> None:
        """Finish the bar's line."""
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def run_bench(
    transport: str,
    sizes: Sequence[int],
    methods: Sequence[Method],
    *,
    dtype: Any = np.float64,
    seconds: float = 0.25,
    repeat: int = 3,
    timeout: float = 60.0,
    progress: Progress | None = None,
) -> list[Result]:
    """Measure every method at every size over one transport (see :func:`measure_many`).

    ``progress``, if given, advances once per batch: ``len(sizes) * len(methods) *
    (repeat + 1)`` steps in all.
    """
    dt = check_sizes(sizes, dtype)  # fail on a bad size before starting anything
    results: list[Result] = []
    with Link(transport, timeout=timeout) as link:
        for n in sizes:
            A = make_array(n, dt)
            results += measure_many(
                link, methods, A, seconds=seconds, repeat=repeat, progress=progress
            )
            del A
    return results
