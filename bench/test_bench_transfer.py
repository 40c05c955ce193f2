"""Arrays between two endpoints: pipelined throughput and one-message round trips.

Every method of ``zarray._bench.METHODS`` that the ``zarray bench`` command compares
(zarray zero-copy and copying, the JSON recipe with copy=True and copy=False,
pickle-5 out-of-band, msgpack-numpy, raw pyzmq frames) runs at every size over every
selected transport. Benchmarks are grouped by transport and size, so pytest-benchmark's
table puts the methods side by side with their ratios to the fastest.

The peer checks every array it receives (dtype, shape, three elements); a method that
delivers a wrong array fails its test instead of looking fast.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from zarray import _bench

METHODS = list(_bench.DEFAULT_METHODS)


def messages_per_round(size: int) -> int:
    """Messages in one timed batch: about 64 MiB of payload, 4 to 2000 messages."""
    return max(4, min(2000, (64 * _bench.MiB) // size))


def _gbps(benchmark: Any, nbytes: int) -> float | None:
    stats = getattr(benchmark, "stats", None)
    if stats is None:
        return None
    return float(nbytes / stats.stats.median / 1e9)


@pytest.mark.parametrize("method", METHODS)
def test_stream(
    benchmark: Any,
    link: _bench.Link,
    bench_array: Callable[[int], Any],
    method_or_skip: Callable[[str], _bench.Method],
    transport: str,
    method: str,
    size: int,
) -> None:
    """Pipelined throughput: one round sends a batch and waits for the peer's ack."""
    m = method_or_skip(method)
    A = bench_array(size)
    count = messages_per_round(size)
    link.stream(m, A, _bench.warmup_count(size))
    benchmark.group = f"stream {transport} {_bench.format_size(size)} x{count}"
    benchmark.extra_info.update(messages_per_round=count, array_bytes=size)
    benchmark.pedantic(link.stream, args=(m, A, count), rounds=5, warmup_rounds=1)
    gbps = _gbps(benchmark, size * count)
    if gbps is not None:
        benchmark.extra_info["GB/s"] = round(gbps, 3)


@pytest.mark.parametrize("method", METHODS)
def test_roundtrip(
    benchmark: Any,
    link: _bench.Link,
    bench_array: Callable[[int], Any],
    method_or_skip: Callable[[str], _bench.Method],
    transport: str,
    method: str,
    size: int,
) -> None:
    """Latency: send one array, the peer sends it back with the same method."""
    m = method_or_skip(method)
    A = bench_array(size)
    benchmark.group = f"round trip {transport} {_bench.format_size(size)}"
    benchmark.extra_info.update(array_bytes=size)
    with link.echoing(m, A) as roundtrip:
        roundtrip()  # connect and fault in buffers before timing
        benchmark(roundtrip)
