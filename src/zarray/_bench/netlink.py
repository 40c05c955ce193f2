"""Arrays over a real constrained link: two processes in a private network namespace.

The namespace's loopback is the only interface, and ``tc`` can shape it (a token bucket,
e.g. 1 Gbit/s), so tcp between a sender and a receiver on 127.0.0.1 inside it really
runs at that rate. Nothing outside the namespace is reachable from it and nothing
outside sees its traffic. Root (CAP_SYS_ADMIN and CAP_NET_ADMIN), ``ip`` and ``tc`` are
needed; :func:`unavailable` says why not when they are missing.

Data is made by the benchmark, deterministically, so that both processes have it:

* ``detector``: uint16 frames of Poisson photon counts on a mostly dark background
  (a mean of 0.4 photons per pixel, 67 % of the pixels dark) with a diffuse ring and
  a few hundred Bragg-like peaks, like a photon-counting X-ray detector's;
* ``smooth``: a smooth float32 field (sums of waves) with Gaussian noise;
* ``random``: uniform random float64, the worst case.

One measurement (:func:`measure_link`): the receiver binds a PULL socket, the sender a
PUSH, and the sender streams frames (several different ones, in turn) with
``zarray.send_array(..., compress=...)`` for a warm-up, a marker message, then for the
measured time, then a stop message. The receiver decodes every message
(``zarray.deserialize``: decompression included), checks the first frames in full and a
few elements of every later one, and counts the frames and bytes that arrive between
the marker and the stop message. Frames per second are counted at the receiver.

    python -m zarray._bench.netlink --codecs     # the tables in bench/RESULTS.md
    python -m zarray._bench.netlink --link 1gbit --seconds 3 --rounds 3 --kinds detector
    zarray bench --link 1gbit                    # the same measurement, from the command

:func:`measure_link` runs one measurement and returns a :class:`LinkResult`;
:class:`Namespace` makes and removes the namespace.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

KINDS = ("detector", "smooth", "random")
#: Different frames the sender cycles through (each compresses on its own).
FRAMES = 4
#: Hang guard for every process and socket wait, in seconds (never a measurement).
GUARD = 120.0


# -- data ----------------------------------------------------------------------------


def make_frame(kind: str, seed: int) -> np.ndarray[Any, Any]:
    """Frame ``seed`` of a data kind (the same bytes in every process)."""
    rng = np.random.default_rng(1000 + seed)
    if kind == "detector":
        h = w = 1024
        lam = np.full((h, w), 0.4)
        yy, xx = np.mgrid[0:h, 0:w]
        r = np.hypot(yy - h / 2, xx - w / 2)
        lam += 2.0 * np.exp(-((r - 0.3 * h) ** 2) / (2 * 8.0**2))
        peaks = zip(
            rng.integers(0, h, 300), rng.integers(0, w, 300), rng.exponential(200, 300), strict=True
        )
        for y, x, a in peaks:
            y0, y1, x0, x1 = max(0, y - 4), min(h, y + 5), max(0, x - 4), min(w, x + 5)
            d2 = (yy[y0:y1, x0:x1] - y) ** 2 + (xx[y0:y1, x0:x1] - x) ** 2
            lam[y0:y1, x0:x1] += a * np.exp(-d2 / (2 * 1.5**2))
        return rng.poisson(lam).astype(np.uint16)
    if kind == "smooth":
        h = w = 1024
        y = np.linspace(0, 4 * np.pi, h)[:, None]
        x = np.linspace(0, 4 * np.pi, w)[None, :]
        phase = rng.uniform(0, 2 * np.pi)
        field = 100 * np.sin(y + phase) * np.cos(x) + 20 * np.sin(0.3 * x + 0.7 * y)
        smooth: np.ndarray[Any, Any] = (field + rng.normal(0, 0.01, (h, w))).astype(np.float32)
        return smooth
    if kind == "random":
        worst: np.ndarray[Any, Any] = rng.random((512, 512))
        return worst
    raise ValueError(f"unknown data kind {kind!r}; expected one of {', '.join(KINDS)}")


# -- the namespace -------------------------------------------------------------------


def unavailable() -> str | None:
    """Why private network namespaces cannot be used here, or None if they can."""
    if sys.platform != "linux":
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return "making a network namespace and shaping it with tc needs root"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"the {tool!r} command (iproute2) is not installed"
    name = f"zarray-probe-{uuid.uuid4().hex[:8]}"
    try:
        _run(["ip", "netns", "add", name])
    except RuntimeError as exc:
        return f"cannot make a network namespace: {exc}"
    _run(["ip", "netns", "delete", name], check=False)
    return None


def _run(cmd: Sequence[str], check: bool = True) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    if check and proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)}: {proc.stderr.strip() or proc.returncode}")


class Namespace:
    """A private network namespace with its loopback up, optionally rate-limited.

    Parameters
    ----------
    rate : str or None
        A tc rate (``"1gbit"``, ``"100mbit"``); None leaves loopback unlimited.

    Use as a context manager; the namespace is deleted on exit.
    """

    def __init__(self, rate: str | None = None) -> None:
        self.rate = rate
        self.name = f"zarray-bench-{os.getpid()}-{uuid.uuid4().hex[:6]}"

    def __enter__(self) -> Namespace:
        _run(["ip", "netns", "add", self.name])
        try:
            _run(["ip", "-n", self.name, "link", "set", "lo", "up"])
            if self.rate is not None:
                # A token bucket on the only interface: 128 KiB of burst (above lo's
                # 64 KiB MTU) and at most 50 ms of queue.
                tbf = ["root", "tbf", "rate", self.rate, "burst", "128kb", "latency", "50ms"]
                _run(self.command(["tc", "qdisc", "add", "dev", "lo", *tbf]))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        _run(["ip", "netns", "delete", self.name], check=False)

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *argv]


# -- one measurement -----------------------------------------------------------------


@dataclass
class LinkResult:
    """What one measurement saw at the receiver."""

    kind: str
    compress: Any
    link: str
    frames: int  # frames counted between the marker and the stop message
    seconds: float
    frames_per_s: float
    array_bytes: int  # of one frame, uncompressed
    wire_bytes: float  # per frame on the wire: header + payload frames (ZMTP excluded)
    sender_cpu_s: float  # per frame
    receiver_cpu_s: float  # per frame

    @property
    def ratio(self) -> float:
        """Uncompressed over wire bytes."""
        return self.array_bytes / self.wire_bytes

    @property
    def gbps(self) -> float:
        """Array bytes delivered per second, in GB/s."""
        return self.frames_per_s * self.array_bytes / 1e9


def measure_link(
    kind: str,
    compress: Any,
    namespace: Namespace | None = None,
    seconds: float = 2.0,
    warmup: float = 0.5,
) -> LinkResult:
    """Stream frames of ``kind`` with ``compress=`` from one process to another.

    Parameters
    ----------
    kind : str
        ``"detector"``, ``"smooth"`` or ``"random"`` (see the module docstring).
    compress : None, str or tuple
        What the sender passes as ``compress=``.
    namespace : Namespace, optional
        Run both processes inside it (tcp on its 127.0.0.1); default: this host's
        loopback.
    seconds, warmup : float
        The measured time, and the time streamed before it.

    Returns
    -------
    LinkResult

    Raises
    ------
    RuntimeError
        When a process fails or the receiver finds a wrong array.
    """
    prefix = namespace.command if namespace is not None else list
    base = [sys.executable, "-m", "zarray._bench.netlink", "_peer"]
    recv = subprocess.Popen(
        prefix([*base, "receive", kind]), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    send = None
    try:
        assert recv.stdout is not None
        line = recv.stdout.readline()
        if not line.strip().isdigit():
            err = recv.stderr.read() if recv.stderr is not None else ""
            raise RuntimeError(f"receiver did not start: {line!r} {err!r}")
        args = [kind, json.dumps(compress), line.strip(), str(seconds), str(warmup)]
        send = subprocess.Popen(
            prefix([*base, "send", *args]),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        sent_out, sent_err = send.communicate(timeout=GUARD + seconds + warmup)
        got_out, got_err = recv.communicate(timeout=GUARD)
    finally:
        for proc in (recv, send):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    if send.returncode or recv.returncode:
        raise RuntimeError(f"sender: {sent_err[-2000:]}\nreceiver: {got_err[-2000:]}")
    sent, got = json.loads(sent_out), json.loads(got_out)
    if got.get("error"):
        raise RuntimeError(f"receiver: {got['error']}")
    frames = got["frames"]
    return LinkResult(
        kind=kind,
        compress=compress,
        link="host loopback" if namespace is None else (namespace.rate or "unlimited"),
        frames=frames,
        seconds=got["seconds"],
        frames_per_s=frames / got["seconds"],
        array_bytes=got["array_bytes"],
        wire_bytes=got["wire_bytes"] / frames,
        sender_cpu_s=sent["cpu"] / max(sent["frames"], 1),
        receiver_cpu_s=got["cpu"] / max(got["all_frames"], 1),
    )


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def _peer_receive(kind: str) -> None:
    import zmq

    import zarray

    ctx = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    sock.rcvhwm = 8
    sock.rcvtimeo = int(GUARD * 1000)
    sock.linger = 0
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    expected = [make_frame(kind, i) for i in range(FRAMES)]
    print(port, flush=True)
    cpu0 = _cpu()
    total = counted = wire = 0
    t_go = t_last = 0.0
    error = None
    while True:
        parts = sock.recv_multipart(copy=False)
        now = time.perf_counter()
        if len(parts) == 1:
            if parts[0].bytes == b"go":
                t_go, counted, wire = now, 0, 0
                continue
            break  # stop
        A = zarray.deserialize(parts)
        want = expected[total % FRAMES]
        ok = A.dtype == want.dtype and A.shape == want.shape
        if total < 2 * FRAMES:
            ok = ok and np.array_equal(A, want)
        else:
            ok = ok and A[0, 0] == want[0, 0] and A[-1, -1] == want[-1, -1]
        if not ok and error is None:
            error = f"frame {total} differs from what was sent"
        total += 1
        counted += 1
        wire += sum(len(p) for p in parts)
        t_last = now
    print(
        json.dumps(
            {
                "frames": counted,
                "all_frames": total,
                "seconds": t_last - t_go,
                "array_bytes": expected[0].nbytes,
                "wire_bytes": wire,
                "cpu": _cpu() - cpu0,
                "error": error,
            }
        )
    )
    sock.close(linger=0)
    ctx.term()


def _peer_send(kind: str, compress: Any, port: int, seconds: float, warmup: float) -> None:
    import zmq

    import zarray

    if isinstance(compress, list):
        compress = tuple(compress)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.sndhwm = 4
    sock.sndtimeo = int(GUARD * 1000)
    sock.linger = int(GUARD * 1000)
    sock.connect(f"tcp://127.0.0.1:{port}")
    frames = [make_frame(kind, i) for i in range(FRAMES)]
    cpu0 = _cpu()
    sent = 0
    start = time.perf_counter()
    phases = ((warmup, b"go"), (warmup + seconds, b"stop"))
    for until, marker in phases:
        while time.perf_counter() - start < until:
            # The frames are never modified, so they may go zero-copy, untracked.
            zarray.send_array(sock, frames[sent % FRAMES], track=False, compress=compress)
            sent += 1
        sock.send(marker)
    cpu = _cpu() - cpu0
    sock.close()  # linger: until every queued frame is out
    ctx.term()
    print(json.dumps({"frames": sent, "cpu": cpu}))


# -- codec throughput, in one process ---------------------------------------------------


@dataclass
class CodecResult:
    kind: str
    compress: Any
    ratio: float
    compress_gbps: float
    decompress_gbps: float


def codec_throughput(kind: str, compress: Any, seconds: float = 1.0) -> CodecResult:
    """Ratio, and compress / decompress GB/s of one core, through zarray's codec stage
    (shuffle included) on one frame, in this process; the median of 5 runs."""
    from zarray import _array, _codec, _codecs

    A = make_frame(kind, 0)
    header, payload = _array.prepare(A)
    policy = _codecs.compression(compress)
    packed = policy.encode(header, payload)
    if packed is None:
        raise ValueError(f"{compress!r} did not compress {kind}")
    fields = _codec.unpack(packed[0])
    frame = packed[1].tobytes()
    if not np.array_equal(_codecs.decode(fields, frame).view(A.dtype).reshape(A.shape), A):
        raise RuntimeError("round trip failed")

    def rate(fn: Any) -> float:
        n = max(1, int(seconds / 5 / _timed(fn, 1)))
        return A.nbytes / statistics.median(_timed(fn, n) for _ in range(5)) / 1e9

    return CodecResult(
        kind,
        compress,
        A.nbytes / len(frame),
        rate(lambda: policy.encode(header, payload)),
        rate(lambda: _codecs.decode(fields, frame)),
    )


def _timed(fn: Any, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


# -- the runner ------------------------------------------------------------------------

#: What the table compares: uncompressed zarray, each codec, and "auto".
METHODS: dict[str, Any] = {
    "none": None,
    "lz4": "lz4",
    "zstd": "zstd",
    "zstd-3": ("zstd", 3),
    "auto": "auto",
}


def interleaved(
    kinds: Sequence[str],
    methods: dict[str, Any],
    namespace: Namespace | None,
    seconds: float,
    rounds: int,
) -> dict[tuple[str, str], list[LinkResult]]:
    """Every (kind, method) ``rounds`` times, rounds interleaved across methods, so that
    drift hits them alike."""
    results: dict[tuple[str, str], list[LinkResult]] = {}
    for _ in range(rounds):
        for kind in kinds:
            for name, spec in methods.items():
                r = measure_link(kind, spec, namespace, seconds)
                results.setdefault((kind, name), []).append(r)
    return results


def median_result(rs: list[LinkResult]) -> LinkResult:
    return sorted(rs, key=lambda r: r.frames_per_s)[len(rs) // 2]


def table(results: dict[tuple[str, str], list[LinkResult]], link: str) -> list[str]:
    """Rows: frames/s (median of the rounds), ratio to uncompressed, wire bytes."""
    lines = [
        f"link: {link}",
        f"{'data':9} {'method':7} {'frames/s':>9} {'vs none':>8} {'GB/s':>6} {'ratio':>6} "
        f"{'wire KiB':>9} {'send ms':>8} {'recv ms':>8} {'spread':>12}",
    ]
    for (kind, name), rs in results.items():
        m = median_result(rs)
        base = median_result(results[(kind, "none")]).frames_per_s
        fps = [r.frames_per_s for r in rs]
        lines.append(
            f"{kind:9} {name:7} {m.frames_per_s:9.1f} {m.frames_per_s / base:7.2f}x "
            f"{m.gbps:6.2f} {m.ratio:6.2f} {m.wire_bytes / 1024:9.1f} "
            f"{m.sender_cpu_s * 1e3:8.2f} {m.receiver_cpu_s * 1e3:8.2f} "
            f"{min(fps) / base:5.2f}-{max(fps) / base:.2f}x"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_peer":
        role, kind, *rest = argv[1:]
        if role == "receive":
            _peer_receive(kind)
        else:
            _peer_send(kind, json.loads(rest[0]), int(rest[1]), float(rest[2]), float(rest[3]))
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--link", action="append", help="tc rate, or 'unlimited' (default: both)")
    p.add_argument("--kinds", default=",".join(KINDS))
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--codecs", action="store_true", help="also the codec throughput table")
    p.add_argument("--json", type=Path, help="write every result here")
    a = p.parse_args(argv)
    why = unavailable()
    if why:
        print(f"skipped: {why}", file=sys.stderr)
        return 2
    kinds = a.kinds.split(",")
    methods = {n: METHODS[n] for n in a.methods.split(",")}
    dump: dict[str, Any] = {}
    for link in a.link or ["1gbit", "unlimited"]:
        with Namespace(None if link == "unlimited" else link) as ns:
            res = interleaved(kinds, methods, ns, a.seconds, a.rounds)
        for line in table(res, link):
            print(line)
        print()
        dump[link] = {f"{k}/{m}": [asdict(r) for r in rs] for (k, m), rs in res.items()}
    if a.codecs:
        print(f"{'data':9} {'codec':7} {'ratio':>6} {'compress GB/s':>14} {'decompress GB/s':>16}")
        for kind in kinds:
            for name, spec in METHODS.items():
                if spec is None or spec == "auto":
                    continue
                c = codec_throughput(kind, spec)
                print(
                    f"{kind:9} {name:7} {c.ratio:6.2f} {c.compress_gbps:14.2f} "
                    f"{c.decompress_gbps:16.2f}"
                )
                dump.setdefault("codecs", []).append(asdict(c))
    if a.json:
        a.json.write_text(json.dumps(dump, indent=1, default=str))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
