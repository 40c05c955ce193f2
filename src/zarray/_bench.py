"""The benchmark engine behind ``zarray bench`` and the suites in ``bench/``.

One process (the *driver*) sends arrays; a *peer* receives them, checks every one,
and acknowledges each batch. The peer is a separate process started with the
``spawn`` method for ``ipc://`` and ``tcp://`` (loopback only), and a thread of the
driver's process for ``inproc://``, because an inproc endpoint only exists inside
one ZeroMQ context and so cannot cross a process boundary.

Each *method* is one way of moving an array: zarray itself (zero-copy or copying),
the JSON recipe of pyzmq's serialization guide, pickle protocol 5 with out-of-band
buffers, msgpack-numpy, and raw pyzmq frames as the floor. A measurement sends
``count`` messages back to back (pipelined: the sender does not wait for each one),
then waits for the peer's acknowledgement of the whole batch, so the time covers
the last message's delivery and check too.

Everything in this module uses zarray's public API, except
:func:`_header_roundtrip_fn`, which holds every private import in one place.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import multiprocessing
import os
import pickle
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from multiprocessing.connection import Connection
from types import ModuleType
from typing import Any, TextIO

import numpy as np
import zmq
from zmq.utils import jsonapi

import zarray

__all__ = [
    "DEFAULT_METHODS",
    "DEFAULT_SIZES",
    "METHODS",
    "TRANSPORTS",
    "BenchError",
    "Expected",
    "HeaderPath",
    "Link",
    "Method",
    "Progress",
    "Result",
    "available_methods",
    "check_received",
    "check_sizes",
    "format_size",
    "format_table",
    "json_recipe_header_roundtrip",
    "machine_info",
    "machine_title",
    "make_array",
    "measure",
    "measure_many",
    "parse_size",
    "parse_sizes",
    "plot_results",
    "process_memory",
    "reset_peak_memory",
    "run_bench",
]

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

TRANSPORTS = ("ipc", "tcp", "inproc")
DEFAULT_SIZES = (KiB, 64 * KiB, MiB, 16 * MiB, 64 * MiB)

#: Values of a benchmark array cycle through 0..PATTERN-1, which every numeric dtype
#: holds exactly (int8 included), so the receiver can predict any element.
PATTERN = 101

#: Bytes the sender may queue ahead of the receiver (per direction), which bounds
#: memory for the copying methods: a pipelined batch of 64 MiB copies must not pile
#: up a thousand of them (ZeroMQ's default high-water mark) in memory.
QUEUE_BYTES = 128 * MiB

Array = np.ndarray[Any, Any]
Socket = zmq.Socket[Any]


class BenchError(RuntimeError):
    """A benchmark could not run, or a method delivered a wrong array."""


# ---------------------------------------------------------------------------
# Sizes


_UNITS = {
    "": 1,
    "b": 1,
    "k": KiB,
    "kib": KiB,
    "m": MiB,
    "mib": MiB,
    "g": GiB,
    "gib": GiB,
}


def parse_size(text: str) -> int:
    """Parse a size such as ``"64KiB"``, ``"1.5MiB"``, ``"4096"`` or ``"1 GiB"``.

    Parameters
    ----------
    text : str
        A number followed by an optional binary unit: B, K/KiB, M/MiB, G/GiB
        (case-insensitive; K, M and G are binary too).

    Returns
    -------
    int
        The size in bytes.

    Raises
    ------
    ValueError
        If the text is not a positive size in whole bytes.
    """
    s = text.strip().replace(" ", "").replace("_", "")
    i = len(s)
    while i and s[i - 1].isalpha():
        i -= 1
    number, unit = s[:i], s[i:].lower()
    if unit not in _UNITS or not number:
        raise ValueError(
            f"invalid size {text!r}: use a number with an optional unit B, KiB, MiB or GiB "
            "(e.g. 64KiB)"
        )
    try:
        value = float(number) * _UNITS[unit]
    except ValueError:
        raise ValueError(f"invalid size {text!r}: {number!r} is not a number") from None
    if not math.isfinite(value) or value < 1 or value != int(value):
        raise ValueError(f"invalid size {text!r}: must be a positive whole number of bytes")
    return int(value)


def parse_sizes(text: str) -> list[int]:
    """Parse a comma-separated list of sizes (see :func:`parse_size`)."""
    parts = [p for p in text.split(",") if p.strip()]
    if not parts:
        raise ValueError("no sizes given")
    return [parse_size(p) for p in parts]


def format_size(nbytes: int) -> str:
    """Format a byte count with the largest binary unit that divides it evenly, or one decimal."""
    for unit, scale in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if nbytes >= scale:
            value = nbytes / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{nbytes} B"


# ---------------------------------------------------------------------------
# Benchmark arrays and the receiver's checks


def make_array(nbytes: int, dtype: Any = np.float64) -> Array:
    """Return the 1-d benchmark array of ``nbytes`` bytes: element ``i`` is ``i % PATTERN``.

    Raises
    ------
    ValueError
        If the dtype is not numeric or ``nbytes`` is not a multiple of its itemsize.
    """
    dt = _bench_dtype(dtype)
    if nbytes % dt.itemsize or nbytes < dt.itemsize:
        raise ValueError(
            f"size {nbytes} B is not a positive multiple of {dt}'s itemsize ({dt.itemsize} B)"
        )
    return np.resize(np.arange(PATTERN, dtype=dt), nbytes // dt.itemsize)


def check_sizes(sizes: Sequence[int], dtype: Any) -> np.dtype[Any]:
    """Check that ``dtype`` is numeric and every size a positive multiple of its itemsize.

    Returns
    -------
    numpy.dtype
        The dtype.

    Raises
    ------
    ValueError
        Saying which size or dtype is wrong.
    """
    dt = _bench_dtype(dtype)
    for n in sizes:
        if n < dt.itemsize or n % dt.itemsize:
            raise ValueError(
                f"size {format_size(n)} is not a positive multiple of {dt}'s itemsize "
                f"({dt.itemsize} B)"
            )
    return dt


def _bench_dtype(dtype: Any) -> np.dtype[Any]:
    try:
        dt: np.dtype[Any] = np.dtype(dtype)
    except TypeError as exc:
        raise ValueError(f"invalid dtype {dtype!r}: {exc}") from None
    if dt.kind not in "iufc":
        raise ValueError(f"dtype {dt} is not numeric; use an int, uint, float or complex dtype")
    return dt


@dataclass(frozen=True)
class Expected:
    """What the receiver must find: dtype, length, and a few probed elements.

    The probes (first, middle and last element) catch truncation, reordering,
    wrong dtypes and reversed or transposed data at the cost of three reads, so
    that checking every message does not distort the timing of small ones.
    """

    nbytes: int
    dtype: str
    shape: tuple[int, ...]
    probes: tuple[tuple[int, Any], ...]
    probe_bytes: tuple[tuple[int, int, bytes], ...]

    @classmethod
    def of(cls, nbytes: int, dtype: str) -> Expected:
        """Describe the array :func:`make_array` makes for ``nbytes`` and ``dtype``."""
        dt = _bench_dtype(dtype)
        n = nbytes // dt.itemsize
        indices = sorted({0, n // 2, n - 1})
        values = [np.array(i % PATTERN, dt) for i in indices]
        return cls(
            nbytes=nbytes,
            dtype=dt.str,
            shape=(n,),
            probes=tuple((i, v.item()) for i, v in zip(indices, values, strict=True)),
            probe_bytes=tuple(
                (i * dt.itemsize, (i + 1) * dt.itemsize, v.tobytes())
                for i, v in zip(indices, values, strict=True)
            ),
        )


def check_received(obj: Any, expected: Expected, kind: str) -> None:
    """Raise :class:`BenchError` unless ``obj`` is the expected array (or raw buffer).

    Parameters
    ----------
    obj : numpy.ndarray or bytes-like
        What the method's receive function returned.
    expected : Expected
        What was sent.
    kind : {"array", "buffer"}
        ``"array"``: an ndarray with the sent dtype and shape; ``"buffer"``: raw bytes.
    """
    if kind == "array":
        if not isinstance(obj, np.ndarray):
            raise BenchError(f"received {type(obj).__name__}, expected numpy.ndarray")
        if obj.shape != expected.shape or obj.dtype.str != expected.dtype:
            raise BenchError(
                f"received {obj.dtype.str} array of shape {obj.shape}, expected "
                f"{expected.dtype} of shape {expected.shape}"
            )
        for index, value in expected.probes:
            got = obj.item(index)
            if got != value:
                raise BenchError(f"element {index} is {got!r}, expected {value!r}")
        return
    view = memoryview(obj)
    if view.nbytes != expected.nbytes:
        raise BenchError(f"received {view.nbytes} bytes, expected {expected.nbytes}")
    for start, stop, value in expected.probe_bytes:
        if view[start:stop] != value:
            raise BenchError(f"bytes {start}:{stop} differ from what was sent")


# ---------------------------------------------------------------------------
# Methods: one way each of moving an array over a socket


@dataclass(frozen=True)
class Method:
    """One way of moving an array, with the exact calls it makes.

    Attributes
    ----------
    name : str
        The name used on the command line.
    description : str
        What it does, in one line.
    send, recv : callable
        ``send(socket, array_or_buffer)`` and ``recv(socket) -> object``.
    kind : str
        How a received object is checked, see :func:`check_received`.
    requires : tuple of str
        Optional modules it needs; it is skipped when one is missing.
    """

    name: str
    description: str
    send: Callable[[Socket, Any], object]
    recv: Callable[[Socket], Any]
    kind: str = "array"
    requires: tuple[str, ...] = ()

    def missing(self) -> list[str]:
        """Return the required modules that cannot be imported."""
        out = []
        for name in self.requires:
            try:
                importlib.import_module(name)
            except ImportError:
                out.append(name)
        return out


def _send_zarray(sock: Socket, A: Any) -> None:
    # track=False: the benchmark never modifies a sent array, and every peer sends
    # untracked too; tracking adds a MessageTracker per zero-copy frame.
    zarray.send_array(sock, A, copy=False, track=False)


def _recv_zarray(sock: Socket) -> Array:
    return zarray.recv_array(sock, copy=False)


def _send_zarray_forced(sock: Socket, A: Any) -> None:
    # pyzmq copies frames under socket.copy_threshold even with copy=False; 0 turns
    # that off, so that the sweep sees the real cost of zero-copy at every size.
    sock.copy_threshold = 0
    zarray.send_array(sock, A, copy=False, track=False)


def _send_zarray_copy(sock: Socket, A: Any) -> None:
    zarray.send_array(sock, A, copy=True, track=False)


def _recv_zarray_copy(sock: Socket) -> Array:
    return zarray.recv_array(sock, copy=True)


def _recv_zarray_into(sock: Socket) -> Array:
    """A prototype receive path: read the header, then recv_into a fresh array.

    One copy (libzmq's frame into numpy's memory), no Frame object, always aligned:
    a candidate for small payloads, measured by bench/sweep_threshold.py.
    """
    head = sock.recv(copy=False)
    h = zarray.unpack_header(head)
    out = np.empty(h.nbytes // h.dtype.itemsize, h.dtype)
    sock.recv_into(out.data)
    result: Array = np.ndarray(h.shape, h.dtype, out, h.offset, h.strides)
    return result


def json_recipe_send(
    sock: Socket, A: Any, flags: int = 0, copy: bool = True, track: bool = False
) -> Any:
    """``send_array`` of pyzmq's serialization guide (JSON {dtype, shape} + buffer).

    The guide's code, with its ``**kwargs`` spelled out as ``copy`` and ``track``
    (pyzmq's defaults, as in the guide's earlier versions).
    """
    md = dict(dtype=str(A.dtype), shape=A.shape)
    sock.send_json(md, flags | zmq.SNDMORE)
    return sock.send(A, flags, copy=copy, track=track)


def json_recipe_recv(sock: Socket, flags: int = 0, copy: bool = True) -> Array:
    """``recv_array`` of pyzmq's serialization guide."""
    md: Any = sock.recv_json(flags=flags)
    msg: Any = sock.recv(flags=flags, copy=copy)
    A = np.frombuffer(msg, dtype=md["dtype"])
    result: Array = A.reshape(md["shape"])
    return result


def json_recipe_header_roundtrip(A: Array, payload: Any) -> Array:
    """The JSON recipe's header path alone: what send_json/recv_json do, then frombuffer."""
    header = jsonapi.dumps(dict(dtype=str(A.dtype), shape=A.shape))
    md: Any = jsonapi.loads(header)
    result: Array = np.frombuffer(payload, dtype=md["dtype"]).reshape(md["shape"])
    return result


def _send_json(sock: Socket, A: Any) -> None:
    json_recipe_send(sock, A, copy=True)


def _recv_json(sock: Socket) -> Array:
    return json_recipe_recv(sock, copy=True)


def _send_json_nocopy(sock: Socket, A: Any) -> None:
    json_recipe_send(sock, A, copy=False)


def _recv_json_nocopy(sock: Socket) -> Array:
    return json_recipe_recv(sock, copy=False)


def _send_pickle5(sock: Socket, A: Any) -> None:
    buffers: list[pickle.PickleBuffer] = []
    head = pickle.dumps(A, protocol=5, buffer_callback=buffers.append)
    sock.send_multipart([head, *buffers], copy=False)


def _recv_pickle5(sock: Socket) -> Any:
    frames = sock.recv_multipart(copy=False)
    return pickle.loads(frames[0].buffer, buffers=frames[1:])


@cache
def _msgpack() -> tuple[ModuleType, ModuleType]:
    return importlib.import_module("msgpack"), importlib.import_module("msgpack_numpy")


def _send_msgpack(sock: Socket, A: Any) -> None:
    msgpack, mnp = _msgpack()
    sock.send(msgpack.packb(A, default=mnp.encode), copy=False)


def _recv_msgpack(sock: Socket) -> Any:
    msgpack, mnp = _msgpack()
    return msgpack.unpackb(sock.recv(copy=False), object_hook=mnp.decode)


def _send_raw(sock: Socket, buf: Any) -> None:
    n = memoryview(buf).nbytes
    sock.send(n.to_bytes(8, "little"), zmq.SNDMORE)
    # copy=False lets pyzmq apply its own rule: frames under socket.copy_threshold
    # (zmq.COPY_THRESHOLD, 64 KiB) are copied, larger ones are zero-copy.
    sock.send(buf, copy=False)


def _recv_raw(sock: Socket) -> Any:
    n = int.from_bytes(sock.recv(), "little")
    # The same rule on receipt: bytes under the threshold, a zero-copy Frame above.
    return sock.recv(copy=n < zmq.COPY_THRESHOLD)


_ALL_METHODS = [
    Method(
        "zarray",
        "zarray zero-copy: send_array(copy=False) / recv_array(copy=False)",
        _send_zarray,
        _recv_zarray,
    ),
    Method(
        "zarray-copy",
        "zarray copying: send_array(copy=True) / recv_array(copy=True)",
        _send_zarray_copy,
        _recv_zarray_copy,
    ),
    Method(
        "json",
        "pyzmq guide recipe: JSON {dtype, shape} + buffer, copy=True (its default)",
        _send_json,
        _recv_json,
    ),
    Method(
        "json-nocopy",
        "pyzmq guide recipe with copy=False on send and recv",
        _send_json_nocopy,
        _recv_json_nocopy,
    ),
    Method(
        "pickle5",
        "pickle protocol 5, out-of-band buffers as extra frames, copy=False",
        _send_pickle5,
        _recv_pickle5,
    ),
    Method(
        "msgpack",
        "msgpack-numpy: packb(A, default=encode) / unpackb(object_hook=decode)",
        _send_msgpack,
        _recv_msgpack,
        requires=("msgpack", "msgpack_numpy"),
    ),
    Method(
        "raw",
        "floor: raw pyzmq frames (8-byte length + the buffer), no array built; "
        "copy below zmq.COPY_THRESHOLD, zero-copy above, on both sides",
        _send_raw,
        _recv_raw,
        kind="buffer",
    ),
    # Variants for the copy-threshold sweep (not in the default set).
    Method(
        "zarray-zerocopy",
        "sweep variant: socket.copy_threshold = 0, send_array(copy=False) / "
        "recv_array(copy=False): zero-copy at every size",
        _send_zarray_forced,
        _recv_zarray,
    ),
    Method(
        "zarray-sendcopy",
        "sweep variant: send_array(copy=True) / recv_array(copy=False)",
        _send_zarray_copy,
        _recv_zarray,
    ),
    Method(
        "zarray-recvcopy",
        "sweep variant: send_array(copy=False) / recv_array(copy=True)",
        _send_zarray,
        _recv_zarray_copy,
    ),
    Method(
        "zarray-recvinto",
        "sweep prototype: send_array(copy=False) / header + recv_into a fresh array",
        _send_zarray,
        _recv_zarray_into,
    ),
]

#: Every method by name.
METHODS: dict[str, Method] = {m.name: m for m in _ALL_METHODS}
#: The methods ``zarray bench`` runs by default, in table order.
DEFAULT_METHODS = ("zarray", "zarray-copy", "json", "json-nocopy", "pickle5", "msgpack", "raw")
#: The baseline of the ``vs raw`` column.
BASELINE = "raw"


def available_methods(names: Sequence[str]) -> tuple[list[Method], list[str]]:
    """Split method names into the runnable methods and notes on skipped ones.

    Raises
    ------
    ValueError
        For an unknown method name.
    """
    methods, notes = [], []
    for name in names:
        if name not in METHODS:
            raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
        m = METHODS[name]
        missing = m.missing()
        if missing:
            notes.append(
                f'skipped {name}: needs {", ".join(missing)} (pip install "zarray[bench]")'
            )
        else:
            methods.append(m)
    return methods, notes


# ---------------------------------------------------------------------------
# The header path (pack + unpack + rebuild), for the header benchmark


@dataclass(frozen=True)
class HeaderPath:
    """zarray's header path with one codec: ``roundtrip(A, payload) -> array``."""

    name: str
    codec: str
    roundtrip: Callable[[Array, Any], Array]


def _header_roundtrip_fn(codec: str = "active") -> HeaderPath:
    """Return zarray's pack + unpack + rebuild path using the given header codec.

    Parameters
    ----------
    codec : {"active", "cython", "python"}
        ``"active"`` is what ``send_array``/``recv_array`` use now (the compiled codec
        unless it is missing or ``ZARRAY_PUREPYTHON=1``); the others force one.

    Returns
    -------
    HeaderPath

    Raises
    ------
    BenchError
        If the compiled codec was asked for and is not built.

    Notes
    -----
    The only place in the benchmarks that touches zarray's private modules; if they
    are renamed, only this function changes. The compiled path is exactly what
    ``send_array``/``recv_array`` run around the socket calls:
    ``array_from(pack_header(A), payload)`` (``prepare`` + the numpy C-API fast path).
    The pure-Python path is what ``ZARRAY_PUREPYTHON=1`` runs: for each call, the
    codec bindings of ``zarray._array`` are pointed at ``zarray._header_py`` and the
    fast path is switched off, then restored; those eight attribute stores cost about
    0.1 us, about 2 % of that path's time.
    """
    from zarray import _array, _codec, _header_py

    arr: Any = _array
    array_from, pack_header = _array.array_from, zarray.pack_header
    if codec == "active":
        codec = _codec.IMPLEMENTATION
    if codec == "cython":
        if _codec.IMPLEMENTATION != "cython":
            raise BenchError("the compiled codec is not built (pip install -e .)")
        name = "cython"

        def roundtrip(A: Array, payload: Any) -> Array:
            return array_from(pack_header(A), payload)

    elif codec == "python":
        name = "python"
        pure = (None, None, _header_py.pack, _header_py.unpack)

        def roundtrip(A: Array, payload: Any) -> Array:
            saved = (arr.pack_array, arr.unpack_array, arr.pack, arr.unpack)
            arr.pack_array, arr.unpack_array, arr.pack, arr.unpack = pure
            try:
                return array_from(pack_header(A), payload)
            finally:
                arr.pack_array, arr.unpack_array, arr.pack, arr.unpack = saved

    else:
        raise ValueError(f"unknown codec {codec!r}")
    return HeaderPath(f"zarray ({name})", name, roundtrip)


# ---------------------------------------------------------------------------
# The peer: receives (or echoes), checks, acknowledges


def _peer_process_main(conn: Connection, timeout_ms: int) -> None:
    """Entry point of the spawned peer process."""
    ctx = zmq.Context()
    try:
        _peer_loop(conn, ctx, timeout_ms)
    finally:
        ctx.destroy(linger=0)
        conn.close()


def process_memory() -> tuple[int, int]:
    """Return this process's ``(peak RSS, current RSS)`` in bytes; ``(0, 0)`` if unknown.

    From ``VmHWM`` and ``VmRSS`` in ``/proc/self/status`` (Linux). Unlike
    ``getrusage().ru_maxrss``, ``VmHWM`` belongs to the current program image only:
    a spawned process does not inherit the peak of the parent it was forked from.
    """
    fields = {}
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmHWM", "VmRSS"):
                    fields[key] = int(value.split()[0]) * 1024  # reported in kB
    except (OSError, ValueError, IndexError):
        pass
    return fields.get("VmHWM", 0), fields.get("VmRSS", 0)


def reset_peak_memory() -> bool:
    """Reset this process's peak RSS to its current RSS (Linux >= 4.0); False if not."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _drain(sock: Socket) -> None:
    while sock.get(zmq.RCVMORE):
        sock.recv(copy=False)


def _peer_loop(conn: Connection, ctx: zmq.Context[Any], timeout_ms: int) -> None:
    """Serve the driver's commands until ``("stop",)`` or the pipe closes.

    Commands: ``("open", endpoint, hwm)`` connects a fresh PAIR socket;
    ``("recv", method, nbytes, dtype, count)`` receives and checks ``count`` messages;
    ``("echo", method, nbytes, dtype)`` sends back every message it receives, checked,
    until the driver writes on the pipe; ``("memory",)`` reports the peer's RSS, and
    ``("memory", "reset")`` resets its peak first.
    Every command is answered with ``("ok", value)`` or ``("error", text)``.
    """
    sock: Socket | None = None
    try:
        while True:
            try:
                cmd = conn.recv()
            except EOFError:
                return
            op = cmd[0]
            if op == "stop":
                conn.send(("ok", 0))
                return
            if op == "done":
                # The end of an echo session that already ended with an error reply.
                continue
            try:
                if op == "open":
                    if sock is not None:
                        sock.close(linger=0)
                    sock = ctx.socket(zmq.PAIR)
                    sock.linger = 0
                    sock.rcvtimeo = sock.sndtimeo = timeout_ms
                    sock.rcvhwm = sock.sndhwm = cmd[2]
                    sock.connect(cmd[1])
                    conn.send(("ok", 0))
                elif op == "recv":
                    assert sock is not None
                    conn.send(
                        _peer_recv(sock, METHODS[cmd[1]], Expected.of(cmd[2], cmd[3]), cmd[4])
                    )
                elif op == "memory":
                    if cmd[1:] == ("reset",):
                        reset_peak_memory()
                    conn.send(("ok", process_memory()))
                elif op == "echo":
                    assert sock is not None
                    conn.send(_peer_echo(sock, conn, METHODS[cmd[1]], Expected.of(cmd[2], cmd[3])))
                else:
                    conn.send(("error", f"unknown command {op!r}"))
            except zmq.Again:
                conn.send(("error", f"peer timed out after {timeout_ms / 1000:g} s"))
            except Exception:
                conn.send(("error", traceback.format_exc(limit=3)))
    finally:
        if sock is not None:
            sock.close(linger=0)


def _peer_recv(sock: Socket, method: Method, expected: Expected, count: int) -> tuple[str, Any]:
    recv, kind = method.recv, method.kind
    error: str | None = None
    for i in range(count):
        if error is None:
            try:
                check_received(recv(sock), expected, kind)
            except zmq.Again:
                raise
            except Exception as exc:
                error = f"{method.name}: message {i}: {type(exc).__name__}: {exc}"
                _drain(sock)
        else:
            # Keep in step with the sender: consume the rest of the batch unchecked.
            sock.recv_multipart(copy=False)
    return ("error", error) if error else ("ok", count)


def _peer_echo(
    sock: Socket, conn: Connection, method: Method, expected: Expected
) -> tuple[str, Any]:
    recv, send, kind = method.recv, method.send, method.kind
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    poller.register(conn.fileno(), zmq.POLLIN)
    n = 0
    while True:
        ready = dict(poller.poll())
        if sock in ready:
            obj = recv(sock)
            check_received(obj, expected, kind)
            send(sock, obj)
            del obj
            n += 1
        elif ready:
            conn.recv()  # the driver's "done"
            return ("ok", n)


# ---------------------------------------------------------------------------
# The driver side


def _hwm_for(nbytes: int) -> int:
    return max(2, min(1000, QUEUE_BYTES // max(nbytes, 1)))


class Link:
    """A sending socket here and a checking receiver peer, over one transport.

    Parameters
    ----------
    transport : {"ipc", "tcp", "inproc"}
        ``ipc``: a socket file in a fresh temporary directory; ``tcp``: 127.0.0.1 on
        an ephemeral port; ``inproc``: the peer is a thread of this process.
    timeout : float
        Seconds any single wait (a send, a receive, an acknowledgement) may take
        before the benchmark fails instead of hanging.

    Notes
    -----
    Use as a context manager, or call :meth:`close`: the peer process is always
    stopped, terminated if it does not stop, and the temporary directory removed.
    """

    def __init__(self, transport: str = "ipc", *, timeout: float = 60.0) -> None:
        if transport not in TRANSPORTS:
            raise ValueError(f"unknown transport {transport!r}; choose from {TRANSPORTS}")
        self.transport = transport
        self.timeout = timeout
        self._timeout_ms = max(1, int(timeout * 1000))
        self._start()

    def _start(self) -> None:
        self._ctx: zmq.Context[Any] = zmq.Context()
        self._sock: Socket | None = None
        self._hwm = 0
        self._opened = 0
        self._tmpdir: str | None = None
        self._proc: multiprocessing.process.BaseProcess | None = None
        self._thread: threading.Thread | None = None
        #: True once the peer is out of step (after a timeout); see :meth:`reset`.
        self.broken = False
        conn, peer_conn = multiprocessing.Pipe()
        self._conn = conn
        try:
            if self.transport == "inproc":
                self._thread = threading.Thread(
                    target=self._thread_main,
                    args=(peer_conn,),
                    name="zarray-bench-peer",
                    daemon=True,
                )
                self._thread.start()
            else:
                if self.transport == "ipc":
                    self._tmpdir = tempfile.mkdtemp(prefix="zarray-bench-")
                mp = multiprocessing.get_context("spawn")
                self._proc = mp.Process(
                    target=_peer_process_main,
                    args=(peer_conn, self._timeout_ms),
                    name="zarray-bench-peer",
                    daemon=True,
                )
                self._proc.start()
                peer_conn.close()
        except BaseException:
            self.close()
            raise

    def _thread_main(self, conn: Connection) -> None:
        try:
            _peer_loop(conn, self._ctx, self._timeout_ms)
        finally:
            conn.close()

    # -- plumbing

    def _request(self, *cmd: Any) -> Any:
        self._conn.send(cmd)
        return self._reply()

    def _reply(self) -> Any:
        if not self._conn.poll(self.timeout):
            self.broken = True
            raise BenchError(f"the peer did not answer within {self.timeout:g} s")
        try:
            status, value = self._conn.recv()
        except EOFError:
            self.broken = True
            raise BenchError("the peer exited unexpectedly") from None
        if status != "ok":
            raise BenchError(str(value))
        return value

    def _socket_for(self, nbytes: int) -> Socket:
        """The data socket, reopened when the message size calls for another HWM."""
        hwm = _hwm_for(nbytes)
        if self._sock is not None and hwm == self._hwm:
            return self._sock
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
        sock: Socket = self._ctx.socket(zmq.PAIR)
        sock.linger = 0
        sock.sndtimeo = sock.rcvtimeo = self._timeout_ms
        sock.sndhwm = sock.rcvhwm = hwm
        self._opened += 1
        if self.transport == "ipc":
            assert self._tmpdir is not None
            # A new file per socket: libzmq unlinks and closes asynchronously.
            sock.bind(f"ipc://{self._tmpdir}/{self._opened}.sock")
        elif self.transport == "tcp":
            sock.bind("tcp://127.0.0.1:*")
        else:
            sock.bind(f"inproc://zarray-bench-{id(self)}-{self._opened}")
        self._sock = sock
        self._hwm = hwm
        self._request("open", sock.get_string(zmq.LAST_ENDPOINT), hwm)
        return sock

    # -- measurements

    def stream(
        self, method: Method, A: Any, count: int, *, copy_threshold: int | None = None
    ) -> float:
        """Send ``A`` ``count`` times, pipelined; return seconds until the peer's ack.

        The peer checks every message; a wrong one raises :class:`BenchError` here.
        ``copy_threshold`` overrides the sending socket's ``copy_threshold``.
        """
        arr = np.asarray(A)
        sock = self._socket_for(arr.nbytes)
        sock.copy_threshold = zmq.COPY_THRESHOLD if copy_threshold is None else copy_threshold
        send = method.send
        self._conn.send(("recv", method.name, arr.nbytes, arr.dtype.str, count))
        t0 = time.perf_counter()
        try:
            for _ in range(count):
                send(sock, A)
        except zmq.Again:
            self.broken = True
            raise BenchError(
                f"{method.name}: sending timed out after {self.timeout:g} s "
                "(the peer stopped receiving)"
            ) from None
        self._reply()
        return time.perf_counter() - t0

    @contextlib.contextmanager
    def echoing(
        self, method: Method, A: Array, *, copy_threshold: int | None = None
    ) -> Iterator[Callable[[], None]]:
        """Within the block, a callable makes one checked round trip of ``A``.

        The peer receives each message with ``method`` and sends what it got back
        with ``method``; the callable checks what comes back.
        """
        sock = self._socket_for(A.nbytes)
        sock.copy_threshold = zmq.COPY_THRESHOLD if copy_threshold is None else copy_threshold
        expected = Expected.of(A.nbytes, A.dtype.str)
        send, recv, kind = method.send, method.recv, method.kind
        self._conn.send(("echo", method.name, A.nbytes, A.dtype.str))

        def roundtrip() -> None:
            send(sock, A)
            check_received(recv(sock), expected, kind)

        try:
            yield roundtrip
        except zmq.Again:
            self.broken = True
            raise BenchError(f"{method.name}: round trip timed out") from None
        finally:
            self._conn.send(("done",))
            self._reply()

    def peer_memory(self, *, reset_peak: bool = False) -> tuple[int, int]:
        """The peer's ``(peak RSS, current RSS)`` in bytes (see :func:`process_memory`).

        With ``reset_peak``, the peak is first reset to the current RSS.
        """
        peak, rss = self._request("memory", "reset") if reset_peak else self._request("memory")
        return int(peak), int(rss)

    def reset(self) -> None:
        """Replace the peer and the sockets with fresh ones (after a timeout)."""
        self.close()
        self._start()

    def close(self) -> None:
        """Stop the peer (terminating it if needed), close sockets, remove temp files."""
        try:
            if (self._proc is not None and self._proc.is_alive()) or (
                self._thread is not None and self._thread.is_alive()
            ):
                with contextlib.suppress(Exception):
                    self._conn.send(("stop",))
                    self._conn.poll(5)
            if self._proc is not None:
                self._proc.join(5)
                if self._proc.is_alive():
                    self._proc.terminate()
                    self._proc.join(5)
                if self._proc.is_alive():
                    self._proc.kill()
                    self._proc.join()
            if self._thread is not None:
                self._thread.join(5)
        finally:
            self._conn.close()
            if self._sock is not None:
                self._sock.close(linger=0)
                self._sock = None
            if self._thread is not None and self._thread.is_alive():
                # A hung peer thread still owns a socket of this context; destroying
                # the context would close that socket under its feet. It is a daemon
                # thread and times out by itself (its socket has a receive timeout).
                pass
            else:
                self._ctx.destroy(linger=0)
            if self._tmpdir is not None:
                shutil.rmtree(self._tmpdir, ignore_errors=True)
                self._tmpdir = None

    def __enter__(self) -> Link:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------
# Adaptive measurement


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

    For each method a warm-up batch estimates the time per message, from which the
    message count is chosen so that a timed batch lasts about ``seconds``. Then
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

    def run(k: int, count: int) -> float | None:
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
                progress.update(f"{m.name} {format_size(A.nbytes)}")

    w = warmup_count(A.nbytes)
    for k in range(len(methods)):
        est = run(k, w)
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


# ---------------------------------------------------------------------------
# Reporting


def _ratio(r: Result, base: Result | None) -> float:
    if base is None or r.error or base.error:
        return math.nan
    return base.seconds / r.seconds


def format_table(results: Sequence[Result], baseline: str = BASELINE) -> str:
    """Format results as a text table grouped by size.

    ``vs raw`` is throughput relative to the baseline method at the same size
    (1.00x: as fast as raw pyzmq frames; 0.50x: half as fast).
    """
    base = {r.nbytes: r for r in results if r.method == baseline}
    header = f"{'method':<16}{'size':>10}{'µs/msg':>12}{'GB/s':>9}{'vs ' + baseline:>9}"
    lines = [header, "-" * len(header)]
    last = None
    for r in sorted(results, key=lambda r: r.nbytes):
        if last is not None and r.nbytes != last:
            lines.append("")
        last = r.nbytes
        if r.error:
            first = r.error.strip().splitlines()[-1]
            lines.append(f"{r.method:<16}{format_size(r.nbytes):>10}  FAILED: {first}")
            continue
        ratio = _ratio(r, base.get(r.nbytes))
        if not math.isfinite(ratio):
            ratio_s = "-"
        else:
            ratio_s = f"{ratio:.2f}x" if ratio >= 0.1 else f"{ratio:.2g}x"
        lines.append(
            f"{r.method:<16}{format_size(r.nbytes):>10}{r.usec:>12.1f}{r.gbps:>9.2f}{ratio_s:>9}"
        )
    return "\n".join(lines)


def format_speedups(results: Sequence[Result], num: str, den: str) -> str | None:
    """One line: throughput of ``num`` over ``den`` at each size where both ran."""
    a = {r.nbytes: r for r in results if r.method == num and not r.error}
    b = {r.nbytes: r for r in results if r.method == den and not r.error}
    sizes = sorted(set(a) & set(b))
    if not sizes:
        return None
    parts = [f"{format_size(n)} {b[n].seconds / a[n].seconds:.2f}x" for n in sizes]
    return f"{num} / {den}: " + ", ".join(parts)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_info() -> dict[str, str]:
    """Describe the machine and the software versions the numbers belong to."""
    return {
        "cpu": _cpu_model(),
        "cores": str(os.cpu_count() or "?"),
        "platform": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pyzmq": zmq.pyzmq_version(),
        "libzmq": zmq.zmq_version(),
        "zarray": zarray.__version__,
        "codec": _header_roundtrip_fn("active").codec,
    }


def machine_title(info: dict[str, str] | None = None) -> str:
    """One line: CPU, cores, OS."""
    i = info or machine_info()
    return f"{i['cpu']}, {i['cores']} cores, {i['platform']}"


def plot_results(
    results: Sequence[Result],
    path: str,
    *,
    transport: str,
    info: dict[str, str] | None = None,
    note: str = "",
) -> None:
    """Write a log-log PNG of throughput against array size, one line per method.

    ``note`` is printed small in the bottom right corner (e.g. the command line).

    Raises
    ------
    ImportError
        If matplotlib is not installed.
    """
    matplotlib = importlib.import_module("matplotlib")
    matplotlib.use("Agg")
    plt = importlib.import_module("matplotlib.pyplot")
    ticker = importlib.import_module("matplotlib.ticker")
    info = info or machine_info()

    order = list(dict.fromkeys(r.method for r in results))
    styles = {  # name: (label, color, marker, line style, line width)
        "zarray": ("zarray, zero-copy", "C0", "o", "-", 2.8),
        "zarray-copy": ("zarray, copy=True", "C0", "s", "--", 1.5),
        "json": ("JSON recipe, copy=True", "C1", "^", "-", 1.5),
        "json-nocopy": ("JSON recipe, copy=False", "C1", "v", "--", 1.5),
        "pickle5": ("pickle 5, out-of-band", "C2", "D", "-", 1.5),
        "msgpack": ("msgpack-numpy", "C4", "P", "-", 1.5),
        "raw": ("raw pyzmq frames (floor)", "0.3", "x", ":", 1.5),
    }
    fig, ax = plt.subplots(figsize=(8, 5.4), dpi=150)
    for k, name in enumerate(order):
        pts = sorted((r.nbytes, r.gbps) for r in results if r.method == name and not r.error)
        if not pts:
            continue
        label, color, marker, ls, lw = styles.get(name, (name, f"C{5 + k % 5}", "o", "-", 1.5))
        ax.plot(
            [p[0] for p in pts],
            [p[1] for p in pts],
            color=color,
            marker=marker,
            linestyle=ls,
            linewidth=lw,
            label=label,
            zorder=3 if name == "zarray" else 2,
        )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    sizes = sorted({r.nbytes for r in results})
    ax.set_xticks(sizes)
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _pos: format_size(int(x))))
    ax.xaxis.set_minor_locator(ticker.NullLocator())
    ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda y, _pos: f"{y:g}"))
    ax.yaxis.set_minor_locator(ticker.NullLocator())
    ax.set_xlabel("array size (one message)")
    ax.set_ylabel("throughput, GB/s (log scale)")
    where = (
        "inproc, two threads of one process"
        if transport == "inproc"
        else f"{transport}, between two processes"
    )
    ax.set_title(
        f"zarray bench: pipelined throughput over {where}\n"
        f"{machine_title(info)}; pyzmq {info['pyzmq']}, libzmq {info['libzmq']}",
        fontsize=9.5,
    )
    if note:
        fig.text(0.99, 0.01, note, ha="right", va="bottom", fontsize=7, color="0.4")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8.5, loc="best", frameon=True, framealpha=0.9)
    fig.tight_layout(rect=(0.0, 0.03, 1.0, 1.0) if note else None)
    fig.savefig(path)
    plt.close(fig)


def results_to_json(
    results: Sequence[Result], *, transport: str, info: dict[str, str] | None = None
) -> str:
    """Serialise results (and the machine) as JSON, for records and later plots."""
    return json.dumps(
        {
            "transport": transport,
            "machine": info or machine_info(),
            "results": [
                {
                    "method": r.method,
                    "nbytes": r.nbytes,
                    "seconds_per_message": r.seconds if not r.error else None,
                    "samples": r.samples,
                    "count": r.count,
                    "gbps": r.gbps if not r.error else None,
                    "error": r.error,
                }
                for r in results
            ],
        },
        indent=1,
    )
