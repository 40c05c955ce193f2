"""Shared pieces of the reliability suite: stamped arrays, child processes, endpoints.

This module is imported both by the tests (as ``reliability._support`` or
``tests.reliability._support``) and by the child-process script ``peers.py`` (as a
top-level module next to it), so it imports nothing from the test package.

Stamped arrays
    Every array that crosses a process boundary in the load and fault tests carries,
    in the first 16 bytes of its memory (in memory order): its sequence number (u64),
    the CRC-32 of every byte after the stamp (u32) and the id of its sender (u32), all
    little-endian. The receiver checks the CRC, and that dtype, shape and memory order
    match what the sender's schedule (:func:`spec_for`) says for that sequence number,
    so a lost, reordered, duplicated, truncated or corrupted message cannot go unseen.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zmq

HERE = Path(__file__).resolve().parent
PEERS = HERE / "peers.py"
REPO = HERE.parent.parent

#: Hang guard for any single wait in the suite, in seconds. Never an assertion of speed.
HANG_GUARD = 60.0
#: Children kill themselves after this many seconds, should the parent die first.
CHILD_DEADLINE = 300

_STAMP = struct.Struct("<QII")
STAMP_SIZE = _STAMP.size  # 16

#: Sender id of the probe messages that PUB/SUB uses to know the subscription is up.
PROBE_SENDER = 0xFFFF_FFF0
#: Sender id of the end-of-stream marker.
END_SENDER = 0xFFFF_FFF1

Spec = tuple[np.dtype[Any], tuple[int, ...], str]

#: Message kinds: the dtype, shape and memory order used for a sequence number cycle
#: through these lists. Small payloads are copied by pyzmq (below 64 KiB); medium and
#: large ones go zero-copy.
SPECS: dict[str, tuple[Spec, ...]] = {
    "small": (
        (np.dtype("<u8"), (16,), "C"),
        (np.dtype("<f4"), (8, 6), "F"),
        (np.dtype([("t", "<f8"), ("v", "<i4", (3,)), ("flag", "u1")]), (4,), "C"),
        (np.dtype(">i2"), (5, 7), "C"),
    ),
    "medium": (
        (np.dtype("<f8"), (64, 160), "C"),  # 80 KiB
        (np.dtype("<i4"), (160, 128), "F"),  # 80 KiB
    ),
    "large": (
        (np.dtype("<f8"), (512, 512), "C"),  # 2 MiB
        (np.dtype("u1"), (1024, 2048), "F"),  # 2 MiB, Fortran order
    ),
}
NBYTES = {"small": 1024, "medium": 80 * 1024, "large": 2 * 1024 * 1024}
#: Payload of one large message, in bytes.
LARGE_NBYTES = NBYTES["large"]

_pattern_cache: dict[int, np.ndarray[Any, Any]] = {}


def _pattern(n: int) -> np.ndarray[Any, Any]:
    """``n`` pseudo-random bytes, the same in every process."""
    base = _pattern_cache.get(n)
    if base is None:
        base = np.random.default_rng(12345).integers(0, 256, n, dtype=np.uint8)
        _pattern_cache[n] = base
    return base


def spec_for(seq: int, kind: str) -> Spec:
    """The (dtype, shape, order) that a sender uses for sequence number ``seq``."""
    specs = SPECS[kind]
    return specs[seq % len(specs)]


def kind_of(nbytes: int) -> str:
    """Tell the kind of a stamped array from its size."""
    if nbytes >= NBYTES["large"]:
        return "large"
    if nbytes >= NBYTES["medium"]:
        return "medium"
    return "small"


def raw_bytes(A: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The bytes of a contiguous array in memory order, as a uint8 view (a copy if not)."""
    return A.ravel(order="K").view(np.uint8)


def make_array(seq: int, sender: int = 0, kind: str = "small") -> np.ndarray[Any, Any]:
    """A fresh array for ``seq`` whose content depends on ``seq`` and carries its stamp."""
    dt, shape, order = spec_for(seq, kind)
    A = np.empty(shape, dt, order=order)
    raw = raw_bytes(A)
    body = raw[STAMP_SIZE:]
    np.bitwise_xor(_pattern(body.size), np.uint8(seq % 251 + 1), out=body)
    _STAMP.pack_into(raw, 0, seq, zlib.crc32(body), sender)
    return A


def restamp(A: np.ndarray[Any, Any], seq: int, sender: int = 0) -> None:
    """Rewrite the stamp of an array made by :func:`make_array` (body unchanged)."""
    raw = raw_bytes(A)
    _STAMP.pack_into(raw, 0, seq, zlib.crc32(raw[STAMP_SIZE:]), sender)


def read_stamp(A: np.ndarray[Any, Any]) -> tuple[int, int, int]:
    """``(seq, crc, sender)`` as written in the array's first 16 bytes."""
    seq, crc, sender = _STAMP.unpack_from(raw_bytes(A)[:STAMP_SIZE].tobytes())
    return int(seq), int(crc), int(sender)


class CorruptMessage(AssertionError):
    """A received array whose stamp, checksum, dtype or shape is wrong."""


def verify(A: Any) -> tuple[int, int]:
    """Check a received stamped array; return ``(sender, seq)``.

    Raises CorruptMessage if the CRC of the content does not match the stamp, or if the
    dtype, shape or memory order differ from :func:`spec_for` for its kind.
    """
    if not isinstance(A, np.ndarray):
        raise CorruptMessage(f"expected an ndarray, got {type(A).__name__}")
    if A.nbytes < STAMP_SIZE:
        raise CorruptMessage(f"array of {A.nbytes} bytes cannot carry a stamp")
    raw = raw_bytes(A)
    seq, crc, sender = _STAMP.unpack_from(raw[:STAMP_SIZE].tobytes())
    if sender in (PROBE_SENDER, END_SENDER):
        return sender, seq
    got_crc = zlib.crc32(raw[STAMP_SIZE:])
    if got_crc != crc:
        raise CorruptMessage(
            f"sender {sender} seq {seq}: CRC {got_crc:#010x} of the content, stamp says {crc:#010x}"
        )
    dt, shape, order = spec_for(seq, kind_of(A.nbytes))
    if A.dtype != dt or A.shape != shape:
        raise CorruptMessage(
            f"sender {sender} seq {seq}: got {A.dtype} {A.shape}, expected {dt} {shape}"
        )
    if order == "F" and A.ndim > 1 and not A.flags.f_contiguous:
        raise CorruptMessage(f"sender {sender} seq {seq}: Fortran order was lost")
    return sender, seq


def marker(sender: int, seq: int = 0) -> np.ndarray[Any, Any]:
    """A small control array (probe or end marker) that :func:`verify` lets through."""
    A = np.zeros(4, "<u8")
    _STAMP.pack_into(A.view(np.uint8), 0, seq, 0, sender)
    return A


# --------------------------------------------------------------------------- endpoints


def bind_any(sock: zmq.Socket[Any], transport: str, tmpdir: Path, name: str = "ep") -> str:
    """Bind ``sock`` on a fresh endpoint of ``transport`` (tcp on 127.0.0.1, or ipc)."""
    if transport == "tcp":
        sock.bind("tcp://127.0.0.1:*")
        return str(sock.get(zmq.LAST_ENDPOINT).decode())
    if transport == "ipc":
        path = tmpdir / f"{name}.ipc"
        endpoint = f"ipc://{path}"
        if len(str(path)) > 100:  # sun_path is 108 bytes
            short = Path("/tmp") / f"zr-{os.getpid()}-{name}-{time.monotonic_ns()}.ipc"
            endpoint = f"ipc://{short}"
        sock.bind(endpoint)
        return endpoint
    raise ValueError(transport)


def tcp_port(endpoint: str) -> int:
    """The port of a ``tcp://host:port`` endpoint."""
    return int(endpoint.rsplit(":", 1)[1])


# ----------------------------------------------------------------------- child processes


@dataclass
class Child:
    """A child process running ``peers.py``; always reaped by :func:`spawn`."""

    proc: subprocess.Popen[str]
    role: str
    args: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL the child (no cleanup of any kind runs in it) and reap it."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=HANG_GUARD)

    def result(self, timeout: float = HANG_GUARD) -> dict[str, Any]:
        """Wait for a normal exit and return the JSON object the child printed last."""
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            out, err = self.proc.communicate()
            raise AssertionError(
                f"child {self.role} still running after {timeout} s (hang guard); "
                f"stderr:\n{err[-4000:]}"
            ) from None
        if self.proc.returncode != 0:
            raise AssertionError(
                f"child {self.role} {self.args} exited with {self.proc.returncode}; "
                f"stderr:\n{err[-4000:]}"
            )
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        if not lines:
            raise AssertionError(f"child {self.role} printed no result; stderr:\n{err[-4000:]}")
        result: dict[str, Any] = json.loads(lines[-1])
        return result


def _reap(child: Child) -> None:
    proc = child.proc
    try:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=HANG_GUARD)
    finally:
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


@contextlib.contextmanager
def spawn(
    role: str,
    *args: Any,
    script: Path = PEERS,
    prefix: Sequence[str] = (),
) -> Iterator[Child]:
    """Start ``python peers.py ROLE ARGS...``; terminate and reap it on the way out.

    ``script`` runs another child script of this folder; ``prefix`` goes before the
    command (e.g. ``ip netns exec NAME``).
    """
    argv = [*prefix, sys.executable, str(script), role, *map(str, args)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    child = Child(proc, role, [str(a) for a in args])
    try:
        yield child
    finally:
        _reap(child)


@contextlib.contextmanager
def spawn_many(role: str, arglists: Sequence[Sequence[Any]]) -> Iterator[list[Child]]:
    """Start several children at once; every one is reaped on the way out."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(spawn(role, *args)) for args in arglists]


class Control:
    """The parent's end of a PAIR side channel to one child, carrying JSON events.

    Used only to order steps between processes ("the queue is full now", "start
    draining"); every wait on it is bounded by :data:`HANG_GUARD`.
    """

    def __init__(
        self, ctx: zmq.Context[Any], tmpdir: Path, name: str = "ctrl", transport: str = "tcp"
    ) -> None:
        self.sock = ctx.socket(zmq.PAIR)
        self.sock.linger = 0
        self.endpoint = bind_any(self.sock, transport, tmpdir, name)

    def send(self, **msg: Any) -> None:
        self.sock.send_json(msg)

    def expect(self, event: str, timeout: float = HANG_GUARD) -> dict[str, Any]:
        """Wait for the next event, which must be ``event``."""
        if not self.sock.poll(int(timeout * 1000)):
            raise AssertionError(f"no {event!r} event from the child within {timeout} s")
        msg: dict[str, Any] = self.sock.recv_json()  # type: ignore[assignment]
        if msg.get("event") != event:
            raise AssertionError(f"expected event {event!r}, got {msg}")
        return msg

    def close(self) -> None:
        self.sock.close(linger=0)


def child_control(ctx: zmq.Context[Any], endpoint: str) -> zmq.Socket[Any]:
    """The child's end of a :class:`Control` channel."""
    sock = ctx.socket(zmq.PAIR)
    sock.linger = 2000
    sock.connect(endpoint)
    return sock


# ------------------------------------------------------------------ docs examples


def doc_example(marker_line: str, doc: Path | None = None) -> dict[str, Any]:
    """Execute the fenced python block of docs/SECURITY.md that starts with ``marker_line``
    and return its namespace, so the tests run the documented code itself."""
    text = (doc or REPO / "docs" / "SECURITY.md").read_text()
    for block in text.split("```python\n")[1:]:
        code = block.split("```", 1)[0]
        if code.startswith(marker_line):
            namespace: dict[str, Any] = {"__name__": "zarray_doc_example"}
            exec(compile(code, "docs/SECURITY.md", "exec"), namespace)
            return namespace
    raise LookupError(f"no python block starting with {marker_line!r} in the docs")


CURVE_EXAMPLE = "# zarray CURVE example"


# --------------------------------------------------------------------------- memory


def rss_bytes() -> int:
    """Resident set size of this process now, from /proc/self/statm (Linux)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def vm_bytes() -> int:
    """Virtual size of this process now, from /proc/self/statm (Linux)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[0])
    return pages * os.sysconf("SC_PAGE_SIZE")


# ------------------------------------------------------------------- raw ZMTP peer


class RawZmtpPeer:
    """A hand-written ZMTP 3.0 peer over a plain TCP socket (NULL mechanism).

    libzmq never puts a half message on the wire by itself, so this is how the
    tests make one: a header frame flagged MORE and then nothing, a frame cut
    short, or a frame whose declared size is absurd.
    """

    def __init__(self, port: int, socket_type: str = "PUSH") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=HANG_GUARD)
        greeting = b"\xff" + b"\x00" * 8 + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\x00")
        greeting += b"\x00" + b"\x00" * 31
        self.sock.sendall(greeting)
        peer = self._recv_exact(64)
        if peer[0] != 0xFF or peer[9] != 0x7F:
            raise AssertionError(f"not a ZMTP greeting: {peer!r}")
        prop_value = socket_type.encode()
        body = b"\x05READY" + b"\x0bSocket-Type" + struct.pack(">I", len(prop_value)) + prop_value
        self.sock.sendall(bytes([0x04, len(body)]) + body)
        # The peer's READY command: flags, size (short or long), body.
        flags = self._recv_exact(1)[0]
        size = (
            struct.unpack(">Q", self._recv_exact(8))[0] if flags & 0x02 else self._recv_exact(1)[0]
        )
        self._recv_exact(size)

    def _recv_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("peer closed the connection during the handshake")
            buf += chunk
        return buf

    @staticmethod
    def frame_prefix(size: int, more: bool) -> bytes:
        """The flags and size bytes that precede a message frame of ``size`` bytes."""
        more_bit = 0x01 if more else 0x00
        if size < 256:
            return bytes([more_bit, size])
        return bytes([more_bit | 0x02]) + struct.pack(">Q", size)

    def send_frame(self, data: bytes, more: bool) -> None:
        self.sock.sendall(self.frame_prefix(len(data), more) + data)

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()
