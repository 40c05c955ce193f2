"""The copy-threshold sweep: from which payload size does zero-copy beat copying?

pyzmq copies any frame smaller than ``socket.copy_threshold`` (``zmq.COPY_THRESHOLD``,
64 KiB by default) even when asked not to, because handing memory to libzmq has a
fixed cost (a free callback routed through pyzmq's garbage-collection thread) that a
small memcpy undercuts. This sweep measures where that crossover lies for zarray, on
each transport and on each side:

send side
    ``zarray-zerocopy`` (``socket.copy_threshold = 0``, ``send_array(copy=False)``:
    zero-copy at every size) against ``zarray-sendcopy`` (``send_array(copy=True)``),
    both received with ``recv_array(copy=False)``.
receive side
    ``zarray`` (``recv_array(copy=False)``: a view of the frame) against
    ``zarray-recvcopy`` (``recv_array(copy=True)``: one copy into memory the array
    owns) and ``zarray-recvinto`` (a prototype: read the header, then ``recv_into`` a
    fresh aligned array), all sent with ``send_array(copy=False)`` under pyzmq's rule.

Every measurement is pipelined throughput between two processes (ipc, tcp) or two
threads (inproc), every received array checked; methods are interleaved in rounds so
drift hits all alike. Run::

    python bench/sweep_threshold.py                 # all transports, 256 B .. 1 MiB
    python bench/sweep_threshold.py --transports ipc --time 0.05 --json sweep.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections.abc import Sequence

from zarray import _bench

SEND = ("zarray-zerocopy", "zarray-sendcopy")
RECV = ("zarray", "zarray-recvcopy", "zarray-recvinto")
METHODS = (*SEND, *RECV, "raw")


def sweep_sizes(lo: int, hi: int, per_octave: int, itemsize: int) -> list[int]:
    """Sizes from ``lo`` to ``hi``: powers of two plus ``per_octave - 1`` points between.

    Intermediate points are rounded down to a multiple of ``itemsize``.
    """
    sizes: set[int] = set()
    k = math.floor(math.log2(lo))
    while 2**k <= hi:
        for j in range(per_octave):
            n = int(2 ** (k + j / per_octave)) // itemsize * itemsize
            if lo <= n <= hi:
                sizes.add(n)
        k += 1
    return sorted(sizes)


def crossover(sizes: Sequence[int], zero: Sequence[float], copy: Sequence[float]) -> int | None:
    """The smallest size from which zero-copy is at least as fast at every larger size.

    Each point's time ratio (copy / zero-copy) is first replaced by the median of three
    neighbouring points (at either end, the three outermost), so that one noisy point
    neither hides nor fakes a crossover. ``None`` if copying still wins at the largest
    size.
    """
    ratios = [c / z for z, c in zip(zero, copy, strict=True)]
    last = max(0, len(ratios) - 3)
    smooth = [statistics.median(ratios[min(max(0, i - 1), last) :][:3]) for i in range(len(ratios))]
    start = None
    for n, r in zip(sizes, smooth, strict=True):
        if r >= 1.0:
            if start is None:
                start = n
        else:
            start = None
    return start


def _fmt(n: int | None, sizes: Sequence[int]) -> str:
    if n is None:
        return "nowhere in the sweep (copying wins at its largest size)"
    if n == sizes[0]:
        return f"{_bench.format_size(n)}, the smallest size swept"
    return _bench.format_size(n)


def run(args: argparse.Namespace) -> dict[str, object]:
    methods, notes = _bench.available_methods(METHODS)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    dt = _bench.check_sizes([args.max], args.dtype)
    sizes = sweep_sizes(args.min, args.max, args.per_octave, dt.itemsize)
    out: dict[str, object] = {"machine": _bench.machine_info(), "sizes": sizes, "transports": {}}
    print(f"machine: {_bench.machine_title()}; {dt} arrays; sizes {len(sizes)}")
    progress = _bench.Progress(
        len(args.transports) * len(sizes) * len(methods) * (args.repeat + 1),
        enabled=not args.no_progress,
    )
    tables = {}
    for transport in args.transports:
        per: dict[str, list[float]] = {m.name: [] for m in methods}
        with _bench.Link(transport) as link:
            for n in sizes:
                A = _bench.make_array(n, dt)
                for r in _bench.measure_many(
                    link, methods, A, seconds=args.time, repeat=args.repeat, progress=progress
                ):
                    if r.error:
                        raise SystemExit(f"{transport} {r.method} {n} B failed: {r.error}")
                    per[r.method].append(r.seconds)
        tables[transport] = per
    progress.close()

    summary = []
    for transport, per in tables.items():
        us = {k: [t * 1e6 for t in v] for k, v in per.items()}
        print(f"\n{transport}: µs per message (pipelined), and copy / zero-copy time ratios")
        head = (
            f"{'size':>9} | {'send zc':>8} {'send cp':>8} {'cp/zc':>6} | "
            f"{'recv view':>9} {'recv cp':>8} {'into':>8} {'cp/view':>7} | {'raw':>7}"
        )
        print(head)
        print("-" * len(head))
        for i, n in enumerate(sizes):
            print(
                f"{_bench.format_size(n):>9} | {us['zarray-zerocopy'][i]:8.2f} "
                f"{us['zarray-sendcopy'][i]:8.2f} "
                f"{us['zarray-sendcopy'][i] / us['zarray-zerocopy'][i]:6.2f} | "
                f"{us['zarray'][i]:9.2f} {us['zarray-recvcopy'][i]:8.2f} "
                f"{us['zarray-recvinto'][i]:8.2f} "
                f"{us['zarray-recvcopy'][i] / us['zarray'][i]:7.2f} | {us['raw'][i]:7.2f}"
            )
        send_x = crossover(sizes, per["zarray-zerocopy"], per["zarray-sendcopy"])
        recv_x = crossover(sizes, per["zarray"], per["zarray-recvcopy"])
        into_x = crossover(sizes, per["zarray"], per["zarray-recvinto"])
        line = (
            f"{transport}: zero-copy send wins from {_fmt(send_x, sizes)}; zero-copy receive "
            f"(view) beats recv_array(copy=True) from {_fmt(recv_x, sizes)} and beats "
            f"recv_into from {_fmt(into_x, sizes)}"
        )
        summary.append(line)
        out["transports"][transport] = {  # type: ignore[index]
            "seconds_per_message": per,
            "send_crossover": send_x,
            "recv_copy_crossover": recv_x,
            "recv_into_crossover": into_x,
        }
    print(f"\npyzmq's default socket.copy_threshold: {_bench.format_size(65536)}")
    for line in summary:
        print(line)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sweep; see the module docstring."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument(
        "--transports",
        type=lambda s: [t.strip() for t in s.split(",") if t.strip()],
        default=["inproc", "ipc", "tcp"],
        help="comma-separated (default: inproc,ipc,tcp)",
    )
    p.add_argument("--min", type=_bench.parse_size, default=256, help="smallest size (256B)")
    p.add_argument("--max", type=_bench.parse_size, default=_bench.MiB, help="largest (1MiB)")
    p.add_argument(
        "--per-octave", type=int, default=2, help="points per doubling of the size (default 2)"
    )
    p.add_argument("--dtype", default="float64", help="element type (default float64)")
    p.add_argument("--time", type=float, default=0.1, help="seconds per timed batch (0.1)")
    p.add_argument("--repeat", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--json", metavar="FILE", help="write the measurements as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    args = p.parse_args(argv)
    bad = [t for t in args.transports if t not in _bench.TRANSPORTS]
    if bad:
        p.error(f"unknown transport(s) {', '.join(bad)}; choose from {_bench.TRANSPORTS}")
    if args.min > args.max or args.per_octave < 1 or args.time <= 0 or args.repeat < 1:
        p.error("need --min <= --max, --per-octave >= 1, --time > 0, --repeat >= 1")
    out = run(args)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
