"""Transport security: the CURVE example of docs/SECURITY.md, run as documented.

The example's code is taken from the document itself and executed, over tcp on
127.0.0.1, with the client in another process. Skipped when libzmq has no CURVE.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

import zarray

from ._support import CURVE_EXAMPLE, HANG_GUARD, doc_example, make_array, spawn, verify
from .conftest import Figures

pytestmark = pytest.mark.skipif(not zmq.has("curve"), reason="libzmq built without CURVE")

HANDSHAKE_FAILED = {
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL,
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
    zmq.EVENT_HANDSHAKE_FAILED_AUTH,
}
Keys = tuple[bytes, bytes]


@pytest.fixture(scope="module")
def example() -> dict[str, Any]:
    """The namespace of the documented example."""
    return doc_example(CURVE_EXAMPLE)


@pytest.fixture
def server_keys() -> Keys:
    return zmq.curve_keypair()


@pytest.fixture
def client_keys() -> Keys:
    return zmq.curve_keypair()


@pytest.fixture
def server(
    example: dict[str, Any],
    ctx: zmq.Context[Any],
    server_keys: Keys,
    client_keys: Keys,
    request: pytest.FixtureRequest,
) -> Iterator[tuple[zmq.Socket[Any], str, zmq.Socket[Any]]]:
    """The example's server on 127.0.0.1 with a monitor; ``allow`` param: allow-list on."""
    allow = getattr(request, "param", False)
    allowed = [client_keys[0]] if allow else None
    sock, auth = example["curve_server"](ctx, "tcp://127.0.0.1:*", server_keys[1], allowed)
    sock.rcvtimeo = int(HANG_GUARD * 1000)
    sock.linger = 0
    monitor = sock.get_monitor_socket(
        zmq.EVENT_HANDSHAKE_SUCCEEDED
        | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
        | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
        | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    )
    try:
        yield sock, sock.get(zmq.LAST_ENDPOINT).decode(), monitor
    finally:
        sock.disable_monitor()
        monitor.close(linger=0)
        if auth is not None:
            auth.stop()


def _try_send(sock: zmq.Socket[Any]) -> None:
    """Queue a message if the socket takes it; a peer refused in the handshake may
    never get a pipe to queue into, which is fine: the handshake happens anyway."""
    try:
        zarray.send_array(sock, make_array(0, 9, "small"), flags=zmq.NOBLOCK)
    except zmq.Again:
        pass


def _next_event(monitor: zmq.Socket[Any]) -> int:
    if not monitor.poll(int(HANG_GUARD * 1000)):
        raise AssertionError("no handshake event within the hang guard")
    event: int = recv_monitor_message(monitor)["event"]
    return event


def test_curve_example_between_processes(
    server: tuple[zmq.Socket[Any], str, zmq.Socket[Any]],
    server_keys: Keys,
    client_keys: Keys,
    figures: Figures,
) -> None:
    """The documented client, in another process, sends small and 2 MiB arrays through
    CURVE; all arrive intact and in order."""
    sock, endpoint, monitor = server
    keys = b",".join([server_keys[0], *client_keys]).decode()
    count = 6
    with spawn("curve-push", "--endpoint", endpoint, "--keys", keys, "--count", count) as child:
        assert _next_event(monitor) == zmq.EVENT_HANDSHAKE_SUCCEEDED
        for seq in range(count):
            assert verify(zarray.recv_array(sock)) == (1, seq)
        assert child.result()["sent"] == count
    figures.add("curve.messages_verified", count)


@pytest.mark.parametrize("client", ["plaintext", "wrong-server-key"])
def test_client_without_the_right_keys_gets_nothing_through(
    client: str,
    example: dict[str, Any],
    ctx: zmq.Context[Any],
    server: tuple[zmq.Socket[Any], str, zmq.Socket[Any]],
    server_keys: Keys,
    client_keys: Keys,
    figures: Figures,
) -> None:
    """A client without CURVE, or with another server's public key, fails the handshake
    and nothing it sends is delivered; a proper client then gets through."""
    sock, endpoint, monitor = server
    if client == "plaintext":
        bad = ctx.socket(zmq.PUSH)
        bad.connect(endpoint)
    else:
        other_public, _ = zmq.curve_keypair()
        bad = example["curve_client"](ctx, endpoint, other_public, *client_keys)
    bad.linger = 0
    _try_send(bad)
    assert _next_event(monitor) in HANDSHAKE_FAILED
    bad.close(linger=0)
    assert sock.poll(0) == 0, "a message got through without the right keys"
    good = example["curve_client"](ctx, endpoint, server_keys[0], *client_keys)
    good.linger = 0
    zarray.send_array(good, make_array(0, 2, "small"))
    assert verify(zarray.recv_array(sock)) == (2, 0)
    figures.add("curve.bad_clients_refused")


@pytest.mark.parametrize("server", [True], indirect=True, ids=["allow-list"])
def test_allow_list_refuses_unknown_client(
    example: dict[str, Any],
    ctx: zmq.Context[Any],
    server: tuple[zmq.Socket[Any], str, zmq.Socket[Any]],
    server_keys: Keys,
    client_keys: Keys,
    figures: Figures,
) -> None:
    """With the example's allow list, a client with a valid key pair that is not on the
    list is refused by the authenticator; the listed client gets through."""
    sock, endpoint, monitor = server
    stranger = example["curve_client"](ctx, endpoint, server_keys[0], *zmq.curve_keypair())
    stranger.linger = 0
    _try_send(stranger)
    assert _next_event(monitor) == zmq.EVENT_HANDSHAKE_FAILED_AUTH
    stranger.close(linger=0)
    assert sock.poll(0) == 0
    friend = example["curve_client"](ctx, endpoint, server_keys[0], *client_keys)
    friend.linger = 0
    zarray.send_array(friend, make_array(0, 3, "small"))
    assert verify(zarray.recv_array(sock)) == (3, 0)
    figures.add("curve.bad_clients_refused")


class TcpTap:
    """A TCP forwarder on 127.0.0.1 that records what clients send to the server."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.captured = bytearray()
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        self.sockets: list[socket.socket] = [self.listener]
        self._spawn(self._accept)

    def _spawn(self, fn: Callable[..., None], *args: Any) -> None:
        t = threading.Thread(target=fn, args=args, daemon=True)
        t.start()
        self.threads.append(t)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.sockets += [client, upstream]
            self._spawn(self._pump, client, upstream, True)
            self._spawn(self._pump, upstream, client, False)

    def _pump(self, src: socket.socket, dst: socket.socket, record: bool) -> None:
        while True:
            try:
                data = src.recv(65536)
                if not data:
                    break
                if record:
                    with self.lock:
                        self.captured += data
                dst.sendall(data)
            except OSError:
                break
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        # shutdown() wakes the threads blocked in accept() and recv(); close() would not.
        for s in self.sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        for t in self.threads:
            t.join(HANG_GUARD)


@pytest.mark.parametrize("secure", [False, True], ids=["plain-tcp", "curve"])
def test_payload_is_not_readable_on_the_wire(
    secure: bool,
    example: dict[str, Any],
    ctx: zmq.Context[Any],
    server_keys: Keys,
    client_keys: Keys,
    make_socket: Callable[..., zmq.Socket[Any]],
) -> None:
    """A recognisable payload passes through a TCP tap: readable in plain TCP (so the tap
    works), absent from the bytes on the wire with CURVE."""
    pattern = b"zarray-secret-payload-0123456789"
    A = np.frombuffer(pattern * 256, np.uint8).copy()
    if secure:
        rx, auth = example["curve_server"](ctx, "tcp://127.0.0.1:*", server_keys[1])
        assert auth is None
        rx.rcvtimeo = int(HANG_GUARD * 1000)
        rx.linger = 0
    else:
        rx = make_socket(zmq.PULL)
        rx.bind("tcp://127.0.0.1:*")
    port = int(rx.get(zmq.LAST_ENDPOINT).decode().rsplit(":", 1)[1])
    tap = TcpTap(port)
    try:
        endpoint = f"tcp://127.0.0.1:{tap.port}"
        if secure:
            tx = example["curve_client"](ctx, endpoint, server_keys[0], *client_keys)
        else:
            tx = make_socket(zmq.PUSH)
            tx.connect(endpoint)
        tx.linger = 0
        zarray.send_array(tx, A)
        B = zarray.recv_array(rx)
        assert np.array_equal(A, B)
        tx.close(linger=0)
    finally:
        tap.close()
    with tap.lock:
        wire = bytes(tap.captured)
    assert len(wire) >= A.nbytes
    assert (pattern in wire) is not secure
