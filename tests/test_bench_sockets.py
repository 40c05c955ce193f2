"""The benchmark's sockets admit only the running user's own peer (issue 9, item 9).

``zarray bench --methods pickle5`` (and msgpack-numpy, which unpickles object arrays)
decodes what arrives with ``pickle``, so a stranger on a benchmark socket could run
code as the user. These tests start real links (a spawned peer process, real sockets)
and try to get in from outside.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from typing import Any

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from zarray import _bench

PICKLE5 = _bench.METHODS["pickle5"]
A = _bench.make_array(64 * _bench.KiB)


def test_ipc_endpoint_is_in_a_private_directory() -> None:
    with _bench.Link("ipc", timeout=30) as link:
        assert link.stream(PICKLE5, A, 10) > 0  # the link's own peer gets the arrays
        endpoint = link.endpoint
        assert endpoint is not None
        assert endpoint.startswith("ipc://")
        directory = os.path.dirname(endpoint[len("ipc://") :])
        info = os.stat(directory)
        assert stat.S_IMODE(info.st_mode) == 0o700
        assert info.st_uid == os.getuid()
    assert not os.path.exists(directory)  # removed with the link


@pytest.fixture
def context() -> Iterator[zmq.Context[Any]]:
    ctx: zmq.Context[Any] = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


# Which failure the stranger's side reports depends on timing (the server may close the
# connection before its error reply is read); any of them means it was refused.
FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
    zmq.EVENT_HANDSHAKE_FAILED_AUTH,
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL,
)


def _handshake(ctx: zmq.Context[Any], endpoint: str, password: bytes | None) -> int:
    """Connect a stranger's PAIR socket; return the first handshake event it sees."""
    sock = ctx.socket(zmq.PAIR)
    sock.linger = 0
    if password is not None:
        sock.plain_username = b"zarray-bench-peer"
        sock.plain_password = password
    monitor = sock.get_monitor_socket()
    try:
        sock.connect(endpoint)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if not monitor.poll(1000):
                continue
            event: int = recv_monitor_message(monitor)["event"]
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED or event in FAILED:
                return event
        raise AssertionError("no handshake event within 20 s")
    finally:
        sock.disable_monitor()
        monitor.close(linger=0)
        sock.close(linger=0)


@pytest.mark.parametrize(
    "password",
    [None, b"guess"],  # no credentials at all; the right user name with a wrong password
    ids=["no-credentials", "wrong-password"],
)
def test_tcp_link_refuses_strangers(context: zmq.Context[Any], password: bytes | None) -> None:
    with _bench.Link("tcp", timeout=30) as link:
        assert link.stream(PICKLE5, A, 10) > 0
        endpoint = link.endpoint
        assert endpoint is not None
        assert endpoint.startswith("tcp://127.0.0.1:")
        # Any local user can open a connection to the port; the handshake refuses it
        # before a frame could be sent to the driver or received from it.
        event = _handshake(context, endpoint, password)
        assert event != zmq.EVENT_HANDSHAKE_SUCCEEDED
        assert event in FAILED
        assert link.stream(PICKLE5, A, 10) > 0  # and the link's own peer is unaffected
