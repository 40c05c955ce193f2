"""Non-blocking use: zmq.Again as in pyzmq, and nothing consumed or half sent after it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq
from _api3_fixtures import TRANSPORTS, Sockets, sockets

import zarray

RECEIVERS: dict[str, Callable[[Any, int], Any]] = {
    "recv_array": lambda s, f: zarray.recv_array(s, f),
    "recv_array-envelope": lambda s, f: zarray.recv_array(s, f, envelope=True)[1],
    "recv_array-out": lambda s, f: zarray.recv_array(s, f, out=np.empty((2, 3))),
    "recv_arrays": lambda s, f: zarray.recv_arrays(s, f)[0][0],
    "socket-method": lambda s, f: zarray.Socket(s).recv_array(f),
}

SENDERS: dict[str, Callable[[Any, Any, int], Any]] = {
    "send_array": lambda s, a, f: zarray.send_array(s, a, f),
    "send_array-envelope": lambda s, a, f: zarray.send_array(s, a, f, envelope=[b"t"]),
    "send_array-json": lambda s, a, f: zarray.send_array(s, a, f, format="json"),
    "send_arrays": lambda s, a, f: zarray.send_arrays(s, [a, a], f, meta={"m": 1}),
}


@pytest.fixture
def socks(tmp_path: Path) -> Iterator[Sockets]:
    with sockets(tmp_path) as s:
        yield s


@pytest.mark.parametrize("receive", list(RECEIVERS))
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_recv_again_consumes_nothing(socks: Sockets, transport: str, receive: str) -> None:
    push, pull = socks.pair(transport)
    fn = RECEIVERS[receive]
    with pytest.raises(zmq.Again):
        fn(pull, zmq.NOBLOCK)
    pull.rcvtimeo = 1  # the timeout path raises the same zmq.Again
    with pytest.raises(zmq.Again):
        fn(pull, 0)
    pull.rcvtimeo = 10_000
    A = np.arange(6.0).reshape(2, 3)
    if receive == "recv_arrays":
        zarray.send_arrays(push, [A])
    else:
        zarray.send_array(push, A)
    np.testing.assert_array_equal(fn(pull, 0), A)


@pytest.mark.parametrize("send", list(SENDERS))
def test_send_again_sends_nothing(socks: Sockets, send: str) -> None:
    push = socks.socket(zmq.PUSH)
    address = socks.bind(push, "tcp")  # no peer yet: nothing can be queued
    fn = SENDERS[send]
    A = np.arange(1 << 15, dtype=np.float64)
    with pytest.raises(zmq.Again):
        fn(push, A, zmq.NOBLOCK)
    push.sndtimeo = 1
    with pytest.raises(zmq.Again):
        fn(push, A, 0)
    push.sndtimeo = 10_000
    pull = socks.socket(zmq.PULL)
    pull.connect(address)
    zarray.send_array(push, np.arange(3))
    # Had a frame of the refused sends been queued, it would come first.
    assert len(pull.recv_multipart()) == 2


@pytest.mark.parametrize("send", list(SENDERS))
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_full_queue_never_leaves_half_a_message(socks: Sockets, transport: str, send: str) -> None:
    push, pull = socks.pair(transport, sndhwm=2, rcvhwm=2)
    fn = SENDERS[send]
    A = np.arange(8192.0)  # 64 KiB, so that the kernel's tcp buffers fill up quickly too
    zarray.send_array(push, A)  # one blocking round trip: the connection is up
    zarray.recv_array(pull)
    sent = 0
    for _ in range(100_000):
        try:
            fn(push, A + sent, zmq.NOBLOCK)
        except zmq.Again:
            break
        sent += 1
    else:
        raise AssertionError("the high-water mark never stopped the sender")
    assert sent > 0
    # Every queued message is whole (the decoders refuse any other frame count), in
    # order, and nothing follows the last one: the refused send left no frame behind.
    for k in range(sent):
        if send == "send_arrays":
            arrays, meta = zarray.recv_arrays(pull)
            assert meta == {"m": 1}
            assert len(arrays) == 2
            got = arrays[1]
        else:
            env, got = zarray.recv_array(pull, envelope=True)
            assert env == ([b"t"] if send == "send_array-envelope" else [])
        np.testing.assert_array_equal(got, A + k)
    with pytest.raises(zmq.Again):
        pull.recv(zmq.NOBLOCK)
