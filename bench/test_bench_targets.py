"""Issue 4's transfer targets, measured side by side in one run and reported as ratios.

* 1 KiB array round trip over inproc: at most 1.5x the time of a raw two-frame pyzmq
  bytes send + recv.
* 64 MiB array over ipc between two processes: at least 0.95x the throughput of raw
  pyzmq zero-copy frames, and at least 1.7x the JSON recipe with copy=True.

Targets are reported, not asserted: timing is never a pass/fail criterion here.
Under ``--benchmark-disable`` the measurements are short, to keep CI fast.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from zarray import _bench


def _roundtrip_seconds(
    link: _bench.Link, methods: list[_bench.Method], A: Any, count: int, rounds: int
) -> dict[str, float]:
    """Median time of one round trip per method, rounds interleaved across methods."""
    samples: dict[str, list[float]] = {m.name: [] for m in methods}
    for _ in range(rounds):
        for m in methods:
            with link.echoing(m, A) as rt:
                for _ in range(min(count, 200)):
                    rt()  # warm-up
                t0 = time.perf_counter()
                for _ in range(count):
                    rt()
                samples[m.name].append((time.perf_counter() - t0) / count)
    return {n: statistics.median(s) for n, s in samples.items()}


def test_target_1kib_inproc_roundtrip(
    quick: bool,
    bench_array: Callable[[int], Any],
    method_or_skip: Callable[[str], _bench.Method],
    report: Callable[[str], None],
) -> None:
    methods = [method_or_skip(n) for n in ("zarray", "raw", "zarray-copy")]
    with _bench.Link("inproc") as link:
        t = _roundtrip_seconds(link, methods, bench_array(_bench.KiB), 500 if quick else 20_000, 5)
    report(
        f"1 KiB round trip, inproc: zarray {t['zarray'] * 1e6:.1f} µs, zarray-copy "
        f"{t['zarray-copy'] * 1e6:.1f} µs, raw two-frame pyzmq {t['raw'] * 1e6:.1f} µs; "
        f"zarray / raw = {t['zarray'] / t['raw']:.2f}x (target <= 1.5x)"
    )


def test_target_64mib_ipc_throughput(
    quick: bool,
    bench_array: Callable[[int], Any],
    method_or_skip: Callable[[str], _bench.Method],
    report: Callable[[str], None],
) -> None:
    A = bench_array(64 * _bench.MiB)
    methods = [method_or_skip(n) for n in ("zarray", "raw", "json")]
    with _bench.Link("ipc") as link:
        res = _bench.measure_many(
            link, methods, A, seconds=0.05 if quick else 1.0, repeat=1 if quick else 5
        )
    for r in res:
        assert r.error is None, r.error
    z, raw, js = res
    report(
        f"64 MiB pipelined, ipc: zarray {z.gbps:.2f} GB/s, raw zero-copy {raw.gbps:.2f} GB/s, "
        f"JSON copy=True {js.gbps:.2f} GB/s; zarray / raw = {raw.seconds / z.seconds:.2f}x "
        f"(target >= 0.95x), zarray / JSON = {js.seconds / z.seconds:.2f}x (target >= 1.7x)"
    )
