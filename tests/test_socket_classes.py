"""zarray.Context / zarray.Socket: pyzmq subclasses with the array methods."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zmq
from _api3_fixtures import GUARD_MS, TRANSPORTS, Sockets, sockets, subscribe_and_sync

import zarray


@pytest.fixture
def socks(tmp_path: Path) -> Iterator[Sockets]:
    with sockets(tmp_path, context_class=zarray.Context) as s:
        yield s


def test_context_makes_zarray_sockets() -> None:
    ctx = zarray.Context()
    try:
        assert isinstance(ctx, zmq.Context)
        with ctx.socket(zmq.PUSH) as sock:
            assert isinstance(sock, zarray.Socket)
            assert isinstance(sock, zmq.Socket)
            assert sock.context is ctx
    finally:
        ctx.term()


def test_instance_is_its_own_singleton() -> None:
    ctx = zarray.Context.instance()
    try:
        assert type(ctx) is zarray.Context
        assert zarray.Context.instance() is ctx
        assert zmq.Context._instance is not ctx
    finally:
        ctx.term()
        zarray.Context._instance = None


PAIRS = [
    (zmq.PUSH, zmq.PULL),
    (zmq.PAIR, zmq.PAIR),
    (zmq.DEALER, zmq.DEALER),
    (zmq.REP, zmq.REQ),
    (zmq.ROUTER, zmq.DEALER),
    (zmq.PUB, zmq.SUB),
    (zmq.XPUB, zmq.SUB),
    (zmq.PUB, zmq.XSUB),
]


def _name(kinds: tuple[int, int]) -> str:
    return "-".join(zmq.SocketType(k).name for k in kinds)


@pytest.mark.parametrize("kinds", PAIRS, ids=[_name(p) for p in PAIRS])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_methods_on_every_socket_type(
    socks: Sockets, transport: str, kinds: tuple[int, int]
) -> None:
    bind_kind, connect_kind = kinds
    a, b = socks.pair(transport, bind_kind, connect_kind)
    assert isinstance(a, zarray.Socket)
    assert isinstance(b, zarray.Socket)
    # Who sends first: the connecting side for REQ/REP and ROUTER/DEALER, the publisher
    # for PUB/SUB; the ROUTER replies with the envelope it received.
    sender, receiver = (a, b) if bind_kind in (zmq.PUSH, zmq.PUB, zmq.XPUB) else (b, a)
    envelope: list[bytes] = []
    if connect_kind == zmq.XSUB:
        b.send(b"\x01")  # XSUB subscribes by sending a subscription message
    if connect_kind in (zmq.SUB, zmq.XSUB):
        if connect_kind == zmq.SUB:
            b.setsockopt(zmq.SUBSCRIBE, b"")
        if bind_kind == zmq.XPUB:
            assert a.recv() == b"\x01"  # the subscription reached the publisher
        else:
            subscribe_and_sync(a, b, lambda: a.send_array(np.zeros(0)), topic=None)
            while b.poll(0):
                b.recv_multipart()  # probes in flight
    A = np.arange(12, dtype=np.int16).reshape(3, 4)
    sender.send_array(A)
    if receiver.type == zmq.ROUTER:
        envelope, got = receiver.recv_array(envelope=True)
        assert len(envelope) == 1
    else:
        got = receiver.recv_array()
        while got.size == 0:  # PUB/SUB sync probes still in flight come first
            got = receiver.recv_array()
    np.testing.assert_array_equal(got, A)
    if bind_kind in (zmq.PUSH, zmq.PUB, zmq.XPUB):
        sender.send_arrays({"x": A.T}, meta={"n": 2})
        arrays, meta = receiver.recv_arrays()
    else:
        # Answer back (REP must answer; ROUTER routes with the envelope).
        receiver.send_arrays({"x": A.T}, meta={"n": 2}, envelope=envelope or None)
        arrays, meta = sender.recv_arrays()
    assert meta == {"n": 2}
    assert isinstance(arrays, dict)
    np.testing.assert_array_equal(arrays["x"], A.T)
    assert arrays["x"].strides == A.T.strides


def test_methods_take_the_functions_arguments(socks: Sockets) -> None:
    push, pull = socks.pair("inproc")
    A = np.arange(1 << 15, dtype=np.float64)  # 256 KiB: zero-copy
    tracker = push.send_array(A, 0, False, True, envelope=[b"t"])
    assert isinstance(tracker, zmq.MessageTracker)
    env, B = pull.recv_array(0, True, envelope=True)
    assert env == [b"t"]
    np.testing.assert_array_equal(A, B)
    assert B.__array_interface__["data"][0] != A.__array_interface__["data"][0]  # copy=True
    out = np.empty_like(A)
    push.send_array(A, format="json")
    assert pull.recv_array(out=out) is out
    np.testing.assert_array_equal(out, A)
    assert push.send_arrays([A], 0, True, False, {"m": 1}) is None
    assert pull.recv_arrays(copy=True)[1] == {"m": 1}


def test_poller(socks: Sockets) -> None:
    push, pull = socks.pair("tcp")
    poller = zmq.Poller()
    poller.register(pull, zmq.POLLIN)
    assert poller.poll(0) == []
    push.send_array(np.ones(3))
    events = dict(poller.poll(GUARD_MS))
    assert events == {pull: zmq.POLLIN}
    np.testing.assert_array_equal(pull.recv_array(), np.ones(3))


def test_shadow_an_existing_socket(socks: Sockets) -> None:
    plain_ctx = zmq.Context()
    try:
        raw = plain_ctx.socket(zmq.PAIR)
        raw.linger = 0
        peer = plain_ctx.socket(zmq.PAIR)
        peer.linger = 0
        raw.bind("inproc://shadowed")
        peer.connect("inproc://shadowed")
        wrapped = zarray.Socket(raw)
        assert isinstance(wrapped, zarray.Socket)
        wrapped.send_array(np.arange(4))
        np.testing.assert_array_equal(zarray.recv_array(peer), np.arange(4))
        peer.close()
        raw.close()
    finally:
        plain_ctx.term()


def test_method_errors_are_the_functions(socks: Sockets) -> None:
    push, pull = socks.pair("inproc")
    with pytest.raises(zarray.UnsupportedArrayError):
        push.send_array(np.array([object()]))
    push.send_arrays([np.ones(1), np.ones(2)])
    with pytest.raises(zarray.HeaderError):
        pull.recv_array()
    pull.rcvtimeo = 0
    with pytest.raises(zmq.Again):
        pull.recv_arrays()
