"""The ``zarray`` command (also ``python -m zarray``).

``zarray bench`` streams arrays from this process to a peer over loopback and prints
the throughput of zarray, zero-copy and copying, next to the usual alternatives.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import textwrap
from collections.abc import Sequence

import zarray
from zarray import _bench

__all__ = ["main"]

_SHM_SIZES = ",".join(_bench.format_size(n).replace(" ", "") for n in _bench.SHM_SIZES)
_DEFAULT_SIZES = ",".join(_bench.format_size(n).replace(" ", "") for n in _bench.DEFAULT_SIZES)


_WHO_CAN_CONNECT = (
    "Who can connect: pickle5 decodes with pickle, and so does msgpack (msgpack-numpy "
    "unpickles any message that claims to hold an object array), so whoever could send "
    "to a benchmark socket could run code as you. The ipc socket is in a directory only "
    "you can enter. A tcp port on 127.0.0.1 is one that any local user can connect to "
    "while the benchmark runs; the benchmark's socket therefore admits only its own "
    "peer, which proves a random password (ZeroMQ PLAIN, handed over a private pipe) in "
    "the handshake: others are refused before any frame. PLAIN sends that password in "
    "clear over loopback, which only root can read. See docs/SECURITY.md."
)


def _methods_epilog() -> str:
    width = max(len(n) for n in _bench.DEFAULT_METHODS)
    lines = ["methods (default: all of these):"]
    for name in _bench.DEFAULT_METHODS:
        lines += textwrap.wrap(
            _bench.METHODS[name].description,
            width=79,
            initial_indent=f"  {name:<{width}}  ",
            subsequent_indent=" " * (width + 4),
        )
    extra = [n for n in _bench.METHODS if n not in _bench.DEFAULT_METHODS]
    lines += textwrap.wrap(
        f"also, for the copy-threshold sweep: {', '.join(extra)}",
        width=79,
        initial_indent="  ",
        subsequent_indent="    ",
    )
    lines += [
        "",
        "Each measurement sends N messages back to back and waits for the peer's",
        "acknowledgement of the batch; the peer checks the dtype, shape and three",
        "elements of every array it receives. N is chosen from a warm-up so that a",
        "batch lasts about --time seconds; the median of --repeat batches is shown.",
        "GB/s counts array bytes (10**9 per GB); 'vs raw' is throughput relative to",
        "raw pyzmq frames of the same size (always measured, as the floor).",
        "",
        *textwrap.wrap(_WHO_CAN_CONNECT, width=79, break_on_hyphens=False),
    ]
    return "\n".join(lines)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _sizes(text: str) -> list[int]:
    try:
        return _bench.parse_sizes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _method_names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("no methods given")
    unknown = [n for n in names if n not in _bench.METHODS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(_bench.METHODS)}"
        )
    return list(dict.fromkeys(names))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zarray",
        description="zarray: zero-copy numpy arrays over ZeroMQ.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {zarray.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    bench = sub.add_parser(
        "bench",
        help="measure array throughput between two processes",
        description=textwrap.fill(
            "Stream numpy arrays from this process to a peer on loopback and print "
            "µs per message, GB/s and the ratio to raw pyzmq frames for each method "
            "and size.",
            width=79,
        ),
        epilog=_methods_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench.add_argument(
        "--transport",
        choices=_bench.TRANSPORTS,
        default="ipc",
        help=(
            "ipc (default): a socket file in a private (mode 0700) temporary directory, "
            "peer in a second process; tcp: a port on 127.0.0.1, peer in a second "
            "process (see 'who can connect' below); inproc: the peer is a second "
            "thread of this process, because an inproc endpoint cannot be reached from "
            "another process"
        ),
    )
    bench.add_argument(
        "--sizes",
        type=_sizes,
        default=None,
        metavar="LIST",
        help=f"array sizes in bytes, comma-separated, units B/KiB/MiB/GiB "
        f"(default: {_DEFAULT_SIZES}; with --shm: {_SHM_SIZES})",
    )
    bench.add_argument(
        "--methods",
        type=_method_names,
        default=None,
        metavar="LIST",
        help="methods to compare, comma-separated (see below; default: the default set, "
        "or with --shm: " + ",".join(_bench.SHM_METHODS) + ")",
    )
    bench.add_argument(
        "--shm",
        action="store_true",
        help=(
            "same host, no socket copies: zarray over shared memory (an array in a "
            "zarray.SharedPool, and an ordinary array copied into one) beside zarray "
            "and raw pyzmq over ipc, then numpy.copyto of the same arrays and mpi4py "
            "Send/Recv (when mpi4py and mpiexec are installed: pip install mpi4py "
            "mpich), all in one run; prints issue 10's target ratios"
        ),
    )
    bench.add_argument(
        "--link",
        metavar="RATE",
        help=(
            "across machines: run sender and receiver in a private network namespace "
            "whose loopback tc shapes to RATE (e.g. 1gbit, 100mbit; 'unlimited' for no "
            "shaping; needs root, ip and tc) and stream detector-like uint16 frames, a "
            "smooth float32 field and random float64 with compress=None, lz4, zstd and "
            "auto; prints frames/s and the ratio to uncompressed (--time seconds per "
            "measurement, default 2; --repeat rounds)"
        ),
    )
    bench.add_argument(
        "--dtype", default="float64", help="element type of the arrays (default: float64)"
    )
    bench.add_argument(
        "--time",
        type=_positive_float,
        default=None,
        metavar="SECONDS",
        help="target duration of one timed batch (default: 0.25; with --link, 2)",
    )
    bench.add_argument(
        "--repeat",
        type=_positive_int,
        default=3,
        metavar="N",
        help="timed batches per method and size; the median is shown (default: 3)",
    )
    bench.add_argument(
        "--timeout",
        type=_positive_float,
        default=60.0,
        metavar="SECONDS",
        help="fail instead of waiting longer than this for the peer (default: 60)",
    )
    bench.add_argument(
        "--plot",
        metavar="FILE",
        help='write a PNG of throughput vs size (needs matplotlib: pip install "zarray[bench]")',
    )
    bench.set_defaults(subparser=bench)
    bench.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    bench.add_argument(
        "--no-progress", action="store_true", help="do not show the progress bar on stderr"
    )
    return parser


def _link_command(args: argparse.Namespace) -> int:
    """``zarray bench --link RATE``: compression over a real shaped link (issue 11)."""
    from zarray._bench import netlink

    why = netlink.unavailable()
    if why:
        print(f"zarray bench --link: skipped: {why}", file=sys.stderr)
        return 2
    seconds = 2.0 if args.time is None else args.time
    rate = None if args.link == "unlimited" else args.link
    print(
        f"zarray bench --link {args.link}: tcp on 127.0.0.1 inside a private network "
        f"namespace{'' if rate is None else f' shaped by tc to {rate}'}; sender and "
        f"receiver in two processes; {args.repeat} interleaved rounds of {seconds:g} s; "
        f"frames/s counted at the receiver, every frame decoded",
        flush=True,
    )
    try:
        with netlink.Namespace(rate) as ns:
            results = netlink.interleaved(netlink.KINDS, netlink.METHODS, ns, seconds, args.repeat)
    except (RuntimeError, OSError) as exc:
        print(f"zarray bench --link: error: {exc}", file=sys.stderr)
        return 1
    print()
    for line in netlink.table(results, args.link):
        print(line)

    def vs_none(kind: str, name: str) -> float:
        base = netlink.median_result(results[(kind, "none")]).frames_per_s
        return float(netlink.median_result(results[(kind, name)]).frames_per_s / base)

    best = max(("lz4", "zstd", "zstd-3"), key=lambda name: vs_none("detector", name))
    print()
    print("targets (issue 11), ratios of this run to uncompressed zarray:")
    print(
        f"  detector frames, best codec ({best}): {vs_none('detector', best):.2f}x (target >= 4x)"
    )
    print(f"  auto on random float64: {vs_none('random', 'auto'):.2f}x (target >= 0.95x)")
    return 0


def _bench_command(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args.subparser
    if args.link:
        if args.shm:
            parser.error("--link and --shm measure different things; choose one")
        return _link_command(args)
    if args.time is None:
        args.time = 0.25
    if args.shm and args.transport != "ipc":
        parser.error("--shm measures between two processes on this host over ipc")
    if args.sizes is None:
        args.sizes = list(_bench.SHM_SIZES if args.shm else _bench.DEFAULT_SIZES)
    if args.methods is None:
        args.methods = list(_bench.SHM_METHODS if args.shm else _bench.DEFAULT_METHODS)
    try:
        dtype = _bench.check_sizes(args.sizes, args.dtype)
    except ValueError as exc:
        parser.error(str(exc))
    for path in (args.plot, args.json):
        if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            parser.error(f"cannot write {path}: its directory does not exist")
    if args.plot:
        # Before any measurement: a run of several minutes must not end without its plot.
        try:
            _bench.check_plotting()
        except ImportError as exc:
            parser.error(
                f"--plot needs matplotlib, which cannot be imported ({exc}); install it "
                'with\n    pip install "zarray[bench]"'
            )

    methods, notes = _bench.available_methods(args.methods)
    if _bench.BASELINE not in [m.name for m in methods]:
        methods.append(_bench.METHODS[_bench.BASELINE])
        notes.append(f"added {_bench.BASELINE}: it is the baseline of the 'vs raw' column")
    for note in notes:
        print(f"note: {note}", file=sys.stderr)

    info = _bench.machine_info()
    where = (
        "inproc (two threads of one process)"
        if args.transport == "inproc"
        else f"{args.transport} (two processes)"
    )
    print(
        f"zarray bench: {where}, {dtype} arrays; {_bench.machine_title(info)}; "
        f"Python {info['python']}, numpy {info['numpy']}, pyzmq {info['pyzmq']} "
        f"(libzmq {info['libzmq']}), zarray {info['zarray']} ({info['codec']} codec)",
        flush=True,
    )
    steps = len(methods) * len(args.sizes) * (args.repeat + 1)
    progress = _bench.Progress(steps, enabled=not args.no_progress)
    try:
        results = _bench.run_bench(
            args.transport,
            args.sizes,
            methods,
            dtype=dtype,
            seconds=args.time,
            repeat=args.repeat,
            timeout=args.timeout,
            progress=progress,
        )
    except _bench.BenchError as exc:
        progress.close()
        print(f"zarray bench: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        progress.close()
        print("zarray bench: interrupted", file=sys.stderr)
        return 130
    progress.close()
    if args.shm:
        results += _bench.measure_copyto(args.sizes, dtype, args.time, args.repeat)
        mpi, why = _bench.measure_mpi(args.sizes, dtype, args.time, args.repeat, args.timeout)
        results += mpi
        if why:
            print(f"note: skipped mpi4py: {why}", file=sys.stderr)

    print()
    print(_bench.format_table(results))
    print()
    # zarray against every other method that ran, the zero-copy peers (json-nocopy,
    # pickle5, raw) as well as the copying ones, in table order.
    others = [m.name for m in methods if m.name != "zarray"]
    lines = [_bench.format_speedups(results, "zarray", name) for name in others]
    if args.shm:
        print("same-host targets (issue 10), ratios of this run:")
        for target in _bench.shm_targets(results):
            print("  " + target)
    elif any(lines):
        print("throughput of zarray (zero-copy) over each other method, at each size:")
        for line in lines:
            if line:
                print("  " + line)

    status = 0
    failed = [r for r in results if r.error]
    if failed:
        print(f"\n{len(failed)} measurement(s) FAILED:", file=sys.stderr)
        for r in failed:
            print(f"  {r.method} {_bench.format_size(r.nbytes)}: {r.error}", file=sys.stderr)
        status = 1

    if args.json:
        try:
            with open(args.json, "w", encoding="utf-8") as f:
                f.write(_bench.results_to_json(results, transport=args.transport, info=info))
        except OSError as exc:
            print(f"zarray bench: cannot write {args.json}: {exc}", file=sys.stderr)
            status = 1
    if args.plot:
        try:
            note = (
                f"{dtype} arrays; median of {args.repeat} pipelined batches; every array "
                f"checked on arrival; zarray {info['zarray']} ({info['codec']} codec), "
                f"Python {info['python']}, numpy {info['numpy']}"
            )
            _bench.plot_results(results, args.plot, transport=args.transport, info=info, note=note)
        except ImportError as exc:  # checked before the run, so only a broken install
            print(f"zarray bench: cannot plot: {exc}", file=sys.stderr)
            status = 1
        except OSError as exc:
            print(f"zarray bench: cannot write {args.plot}: {exc}", file=sys.stderr)
            status = 1
        else:
            print(f"\nplot written to {args.plot}")
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``zarray`` command.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after the program name; ``sys.argv[1:]`` if omitted.

    Returns
    -------
    int
        The exit status: 0 on success, 1 if a measurement failed or a file could not
        be written, 2 for bad arguments (including ``--plot`` without matplotlib).
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "bench":
        return _bench_command(args)
    parser.print_help(sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
