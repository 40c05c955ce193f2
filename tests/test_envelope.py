"""Envelopes: PUB/SUB topics, ROUTER identities, REQ/REP, on real sockets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq
from _api3_fixtures import TRANSPORTS, Sockets, sockets, subscribe_and_sync

import zarray


@pytest.fixture
def socks(tmp_path: Path) -> Iterator[Sockets]:
    with sockets(tmp_path) as s:
        yield s


def _probe(pub: Any) -> None:
    zarray.send_array(pub, np.zeros(1), envelope=[b"probe"])


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_pub_sub_topics_filter(socks: Sockets, transport: str) -> None:
    pub, sub = socks.pair(transport, zmq.PUB, zmq.SUB)
    subscribe_and_sync(pub, sub, lambda: _probe(pub))
    sub.setsockopt(zmq.SUBSCRIBE, b"cam1")
    # The new subscription must reach the publisher too: sync on a cam1 probe.
    poller = zmq.Poller()
    poller.register(sub, zmq.POLLIN)
    for _ in range(500):  # hang guard; no timing is asserted
        zarray.send_array(pub, np.array([-1]), envelope=[b"cam1"])
        if poller.poll(20):
            env, _a = zarray.recv_array(sub, envelope=True)
            if env == [b"cam1"]:
                break
    else:
        raise AssertionError("subscription to cam1 never reached the publisher")
    sent = []
    for i in range(6):
        topic = b"cam1" if i % 2 else b"cam2"
        zarray.send_array(pub, np.array([i]), envelope=[topic])
        sent.append((topic, i))
    zarray.send_arrays(pub, [np.array([99])], meta={"end": True}, envelope=[b"cam1"])
    got = []
    while True:
        env, (arrays, meta) = zarray.recv_arrays(sub, envelope=True)
        if env == [b"probe"] or int(arrays[0][0]) == -1:
            continue  # sync traffic still in flight
        if meta.get("end"):
            break
        got.append((env[0], int(arrays[0][0])))
    # PUB/SUB keeps order per connection, so everything sent before the end marker has
    # arrived: cam2 was filtered out by the subscription, not lost by chance.
    assert got == [(t, i) for t, i in sent if t == b"cam1"]
    assert got == [(b"cam1", 1), (b"cam1", 3), (b"cam1", 5)]


def test_sub_gets_bare_arrays(socks: Sockets) -> None:
    pub, sub = socks.pair("inproc", zmq.PUB, zmq.SUB)

    def probe() -> None:
        zarray.send_array(pub, np.array([-1.0]), envelope=[b"temperature"])

    subscribe_and_sync(pub, sub, probe, topic=b"temp")
    zarray.send_array(pub, np.arange(5.0), envelope=[b"temperature"])
    zarray.send_arrays(pub, {"a": np.ones(2)}, meta={"m": 1}, envelope=[b"temperature"])
    a = zarray.recv_array(sub)  # the topic frame is skipped
    while a.shape == (1,):  # probes still in flight when the sync ended
        a = zarray.recv_array(sub)
    np.testing.assert_array_equal(a, np.arange(5.0))
    arrays, meta = zarray.recv_arrays(sub)
    assert isinstance(arrays, dict)
    assert meta == {"m": 1}
    np.testing.assert_array_equal(arrays["a"], np.ones(2))


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_router_dealer_reply_reaches_right_peer(socks: Sockets, transport: str) -> None:
    router = socks.socket(zmq.ROUTER)
    address = socks.bind(router, transport)
    dealers = []
    for name in (b"alice", b"bob", b"id-\x93ZAR", b"\x00raw"):
        d = socks.socket(zmq.DEALER)
        d.setsockopt(zmq.ROUTING_ID, name)
        d.connect(address)
        dealers.append(d)
    for k, d in enumerate(dealers):
        zarray.send_array(d, np.full(3, k, dtype=np.int32))
    for _ in dealers:
        env, request = zarray.recv_array(router, envelope=True)
        assert len(env) == 1
        assert env[0] in {d.getsockopt(zmq.ROUTING_ID) for d in dealers}
        zarray.send_array(router, request * 10, envelope=env)
        zarray.send_arrays(router, {"echo": request}, meta={"to": env[0].hex()}, envelope=env)
    for k, d in enumerate(dealers):
        reply = zarray.recv_array(d)
        np.testing.assert_array_equal(reply, np.full(3, 10 * k))
        arrays, meta = zarray.recv_arrays(d)
        assert meta == {"to": d.getsockopt(zmq.ROUTING_ID).hex()}
        assert isinstance(arrays, dict)
        np.testing.assert_array_equal(arrays["echo"], np.full(3, k))


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_req_router_keeps_the_delimiter(socks: Sockets, transport: str) -> None:
    router = socks.socket(zmq.ROUTER)
    address = socks.bind(router, transport)
    reqs = [socks.socket(zmq.REQ) for _ in range(3)]
    for k, r in enumerate(reqs):
        r.connect(address)
        zarray.send_array(r, np.array([k]))
    for _ in reqs:
        env, a = zarray.recv_array(router, envelope=True)
        assert len(env) == 2
        assert env[1] == b""
        zarray.send_array(router, a + 100, envelope=env)
    for k, r in enumerate(reqs):
        np.testing.assert_array_equal(zarray.recv_array(r), [k + 100])


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_req_rep(socks: Sockets, transport: str) -> None:
    rep, req = socks.pair(transport, zmq.REP, zmq.REQ)
    for k in range(3):
        zarray.send_arrays(req, [np.arange(k + 1)], meta={"k": k})
        env, (arrays, meta) = zarray.recv_arrays(rep, envelope=True)
        assert env == []  # REP strips and keeps the envelope itself
        zarray.send_array(rep, arrays[0] * meta["k"])
        np.testing.assert_array_equal(zarray.recv_array(req), np.arange(k + 1) * k)


def test_envelope_frames_may_be_any_buffer(socks: Sockets) -> None:
    push, pull = socks.pair("inproc")
    env = [bytearray(b"ab"), memoryview(b"cd"), zmq.Frame(b"ef"), b"", b"{json-ish"]
    zarray.send_array(push, np.arange(3), envelope=env)
    got, a = zarray.recv_array(pull, envelope=True)
    assert got == [b"ab", b"cd", b"ef", b"", b"{json-ish"]
    assert all(type(f) is bytes for f in got)
    np.testing.assert_array_equal(a, np.arange(3))


def test_no_envelope_gives_empty_list(socks: Sockets) -> None:
    push, pull = socks.pair("inproc")
    zarray.send_array(push, np.arange(3))
    env, a = zarray.recv_array(pull, envelope=True)
    assert env == []
    np.testing.assert_array_equal(a, np.arange(3))


@pytest.mark.parametrize(
    "envelope",
    [b"topic", "topic", ["topic"], [b"ok", 3], np.zeros(3)],
    ids=["bytes", "str", "list-of-str", "int-frame", "ndarray"],
)
def test_bad_envelope_sends_nothing(socks: Sockets, envelope: Any) -> None:
    push, pull = socks.pair("inproc")
    with pytest.raises(TypeError):
        zarray.send_array(push, np.arange(3), envelope=envelope)
    with pytest.raises(TypeError):
        zarray.send_arrays(push, [np.arange(3)], envelope=envelope)
    zarray.send_array(push, np.arange(4))
    frames = pull.recv_multipart()
    assert len(frames) == 2  # the first message is the good one, unprefixed


@pytest.mark.parametrize(
    ("frames", "match"),
    [
        ([b"topic", zarray.pack_header(np.arange(3))], "no payload frame"),
        ([b"topic", b"x", b"y"], "bad magic"),
        ([b"id", b"", zarray.pack_header(np.arange(3)), b"x", b"y"], "followed by 2 frames"),
        ([b"id", zarray.pack_header(np.arange(3)), b"short"], "payload is 5 bytes"),
    ],
    ids=["header-without-payload", "no-header", "extra-frames", "bad-payload"],
)
def test_malformed_after_envelope_is_drained(
    socks: Sockets, frames: list[bytes], match: str
) -> None:
    push, pull = socks.pair("inproc")
    push.send_multipart(frames)
    zarray.send_array(push, np.arange(3), envelope=[b"next"])
    with pytest.raises(zarray.HeaderError, match=match):
        zarray.recv_array(pull, envelope=True)
    env, a = zarray.recv_array(pull, envelope=True)
    assert env == [b"next"]
    np.testing.assert_array_equal(a, np.arange(3))


def test_json_recipe_after_topic(socks: Sockets) -> None:
    push, pull = socks.pair("inproc")
    A = np.arange(6, dtype=np.float32).reshape(2, 3)
    zarray.send_array(push, A, envelope=[b'{"looks":"like json"}'], format="json")
    env, B = zarray.recv_array(pull, envelope=True)
    assert env == [b'{"looks":"like json"}']
    np.testing.assert_array_equal(A, B)
