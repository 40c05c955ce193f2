"""The link: a sending socket in this process and a checking peer at the other end.

One process (the *driver*) sends arrays; a *peer* receives them, checks every one,
and acknowledges each batch (or echoes every message back, for round trips). The
peer is a separate process started with the ``spawn`` method for ``ipc://`` and
``tcp://``, and a thread of the driver's process for ``inproc://``, because an inproc
endpoint only exists inside one ZeroMQ context and so cannot cross a process boundary.
Commands and acknowledgements travel over a ``multiprocessing`` pipe, the arrays over
a ZeroMQ PAIR socket pair that the driver binds and the peer connects.

**Only the running user's peer gets in.** Some methods decode with ``pickle`` (pickle5,
and msgpack-numpy for object arrays), so a stranger on the data socket could run code
as the user. The ``ipc`` socket file lives in a fresh directory that
``tempfile.mkdtemp`` creates with mode 0700, which no other user can enter. A
``tcp`` port on 127.0.0.1 can be reached by every local user, so the driver's socket
is a ZeroMQ PLAIN server that admits only the peer holding this link's random
password, handed to it over the private pipe; any other connection fails its
handshake before a frame is exchanged. (PLAIN sends the password in clear over
loopback, which only root can read; it does not encrypt data, so throughput is as
without it.) ``inproc`` endpoints exist only inside this process.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import secrets
import shutil
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import zmq
from zmq.auth.thread import ThreadAuthenticator

from zarray._bench.arrays import Array, BenchError, Expected, MiB, check_received
from zarray._bench.methods import METHODS, Method, Socket

__all__ = ["QUEUE_BYTES", "TRANSPORTS", "Link", "process_memory", "reset_peak_memory"]

# The PLAIN user name of the peer on a tcp link (the password is what is secret).
_PLAIN_USER = "zarray-bench-peer"

TRANSPORTS = ("ipc", "tcp", "inproc")

#: Bytes the sender may queue ahead of the receiver (per direction), which bounds
#: memory for the copying methods: a pipelined batch of 64 MiB copies must not pile
#: up a thousand of them (ZeroMQ's default high-water mark) in memory.
QUEUE_BYTES = 128 * MiB


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

    Commands: ``("open", endpoint, hwm, password)`` connects a fresh PAIR socket (with
    PLAIN credentials when ``password`` is not None);
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
                    if cmd[3] is not None:
                        sock.plain_username = _PLAIN_USER.encode()
                        sock.plain_password = cmd[3].encode()
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


#: What a message of a by-reference method (shared memory) queues: header and reference.
_REFERENCE_BYTES = 256


def _hwm_for(nbytes: int) -> int:
    return max(2, min(1000, QUEUE_BYTES // max(nbytes, 1)))


class Link:
    """A sending socket here and a checking receiver peer, over one transport.

    Parameters
    ----------
    transport : {"ipc", "tcp", "inproc"}
        ``ipc``: a socket file in a fresh private (0700) temporary directory; ``tcp``:
        127.0.0.1 on an ephemeral port, admitting only this link's peer (PLAIN with a
        random password); ``inproc``: the peer is a thread of this process.
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
        self._auth: ThreadAuthenticator | None = None
        self._password: str | None = None
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
                    # Mode 0700: no other user can enter it, so none can reach the socket.
                    self._tmpdir = tempfile.mkdtemp(prefix="zarray-bench-")
                else:
                    # The password goes to the peer over the pipe, never over the socket
                    # before the handshake; the authenticator answers the driver's
                    # socket's ZAP requests (libzmq refuses PLAIN without a handler).
                    self._password = secrets.token_hex(32)
                    self._auth = ThreadAuthenticator(self._ctx)
                    self._auth.start()
                    self._auth.configure_plain(domain="*", passwords={_PLAIN_USER: self._password})
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
            sock.plain_server = True
            sock.bind("tcp://127.0.0.1:*")
        else:
            sock.bind(f"inproc://zarray-bench-{id(self)}-{self._opened}")
        self._sock = sock
        self._hwm = hwm
        self._request("open", sock.get_string(zmq.LAST_ENDPOINT), hwm, self._password)
        return sock

    @property
    def endpoint(self) -> str | None:
        """The data socket's endpoint (None before the first measurement)."""
        return None if self._sock is None else self._sock.get_string(zmq.LAST_ENDPOINT)

    # -- measurements

    def stream(
        self, method: Method, A: Any, count: int, *, copy_threshold: int | None = None
    ) -> float:
        """Send ``A`` ``count`` times, pipelined; return seconds until the peer's ack.

        The peer checks every message; a wrong one raises :class:`BenchError` here.
        ``copy_threshold`` overrides the sending socket's ``copy_threshold``.
        """
        arr = np.asarray(A)
        sock = self._socket_for(_REFERENCE_BYTES if method.by_reference else arr.nbytes)
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
        sock = self._socket_for(_REFERENCE_BYTES if method.by_reference else A.nbytes)
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
            if self._auth is not None:
                self._auth.stop()
                self._auth = None
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
