"""zarray on either side of an imagezmq pipeline, against the real imagezmq package.

imagezmq (https://github.com/jeffbass/imagezmq) sends pyzmq's JSON recipe with an
extra ``"msg"`` key (the camera's name) and, in REQ/REP mode, waits for a reply. These
tests run its real ``ImageSender`` and ``ImageHub`` against zarray's sockets over tcp on
127.0.0.1, in both of its modes and both directions, with the REQ/REP reply, the text,
and imagezmq's ``send_jpg`` (which carries no array and is refused cleanly). They are
skipped when imagezmq is not installed (it is in the ``test`` extra).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import zmq

import zarray
import zarray.asyncio

imagezmq = pytest.importorskip("imagezmq")

IMAGE = np.arange(48 * 64 * 3, dtype=np.uint64).astype(np.uint8).reshape(48, 64, 3)
GUARD_MS = 10_000


def _guard(sock: zmq.Socket[Any]) -> zmq.Socket[Any]:
    sock.rcvtimeo = sock.sndtimeo = GUARD_MS
    sock.linger = 0
    return sock


def _port(sock: zmq.Socket[Any]) -> int:
    return int(sock.getsockopt_string(zmq.LAST_ENDPOINT).rsplit(":", 1)[1])


class _Context(zmq.Context):  # type: ignore[type-arg]
    """Keeps its sockets until the test's end, so that a socket a test drops is closed
    by the fixture rather than collected unclosed."""

    def socket(self, *args: Any, **kwargs: Any) -> Any:
        sock = super().socket(*args, **kwargs)
        self.kept.append(sock)
        return sock

    kept: list[Any]


@pytest.fixture
def ctx() -> Iterator[zmq.Context[Any]]:
    c = _Context()
    c.kept = []
    try:
        yield c
    finally:
        for sock in c.kept:
            sock.close(linger=0)
        c.term()


# -- imagezmq sends, zarray receives -------------------------------------------------------


def test_image_sender_reqrep_to_zarray(ctx: zmq.Context[Any]) -> None:
    rep = _guard(ctx.socket(zmq.REP))
    port = rep.bind_to_random_port("tcp://127.0.0.1")
    sender = imagezmq.ImageSender(connect_to=f"tcp://127.0.0.1:{port}")
    try:
        replies: list[bytes] = []
        t = threading.Thread(target=lambda: replies.append(sender.send_image("cam-7", IMAGE)))
        t.start()
        arrays, meta = zarray.recv_arrays(rep)
        rep.send(b"OK")  # what ImageHub.send_reply() sends
        t.join(GUARD_MS / 1000)
        assert replies == [b"OK"]
        assert meta == {"msg": "cam-7"}
        assert isinstance(arrays, list)
        [image] = arrays
        assert image.dtype == IMAGE.dtype
        assert image.shape == IMAGE.shape
        assert np.array_equal(image, IMAGE)
    finally:
        sender.close()


def test_image_sender_pubsub_to_zarray(ctx: zmq.Context[Any]) -> None:
    sender = imagezmq.ImageSender(connect_to="tcp://127.0.0.1:*", REQ_REP=False)
    try:
        sub = _guard(ctx.socket(zmq.SUB))
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(f"tcp://127.0.0.1:{_port(sender.zmq_socket)}")
        while not sub.poll(20):  # PUB drops until the subscription has arrived
            sender.send_image("cam-pub", IMAGE)
        arrays, meta = zarray.recv_arrays(sub)
        assert meta == {"msg": "cam-pub"}
        assert np.array_equal(arrays[0], IMAGE)
        # recv_array alone takes the array and leaves the text.
        sender.send_image("cam-pub", IMAGE[::-1].copy())
        assert np.array_equal(zarray.recv_array(sub), IMAGE[::-1])
        sub.close(linger=0)
    finally:
        sender.close()


def test_image_sender_to_zarray_asyncio() -> None:
    async def main() -> None:
        actx = zarray.asyncio.Context()
        rep = actx.socket(zmq.REP)
        rep.linger = 0
        port = rep.bind_to_random_port("tcp://127.0.0.1")
        sender = imagezmq.ImageSender(connect_to=f"tcp://127.0.0.1:{port}")
        try:
            replies: list[bytes] = []
            t = threading.Thread(target=lambda: replies.append(sender.send_image("cam-a", IMAGE)))
            t.start()
            arrays, meta = await asyncio.wait_for(rep.recv_arrays(), GUARD_MS / 1000)
            await rep.send(b"OK")
            await asyncio.to_thread(t.join, GUARD_MS / 1000)
            assert replies == [b"OK"]
            assert meta == {"msg": "cam-a"}
            assert np.array_equal(arrays[0], IMAGE)
        finally:
            sender.close()
            rep.close(linger=0)
            actx.term()

    asyncio.run(main())


def test_send_jpg_is_refused_cleanly(ctx: zmq.Context[Any]) -> None:
    """imagezmq's jpg messages carry no dtype or shape: a HeaderError, then the next."""
    rep = _guard(ctx.socket(zmq.REP))
    port = rep.bind_to_random_port("tcp://127.0.0.1")
    sender = imagezmq.ImageSender(connect_to=f"tcp://127.0.0.1:{port}")
    try:
        replies: list[bytes] = []

        def send_both() -> None:
            replies.append(sender.send_jpg("cam-j", b"\xff\xd8 not an array \xff\xd9"))
            replies.append(sender.send_image("cam-j", IMAGE))

        t = threading.Thread(target=send_both)
        t.start()
        with pytest.raises(zarray.HeaderError, match="'dtype' and 'shape'"):
            zarray.recv_arrays(rep)
        rep.send(b"OK")
        arrays, meta = zarray.recv_arrays(rep)  # the socket is at the next message
        rep.send(b"OK")
        t.join(GUARD_MS / 1000)
        assert replies == [b"OK", b"OK"]
        assert meta == {"msg": "cam-j"}
        assert np.array_equal(arrays[0], IMAGE)
    finally:
        sender.close()


# -- zarray sends, imagezmq receives -------------------------------------------------------


@pytest.mark.parametrize("layout", ["C", "F", "sliced"])
def test_zarray_reqrep_to_image_hub(ctx: zmq.Context[Any], layout: str) -> None:
    hub = imagezmq.ImageHub(open_port="tcp://127.0.0.1:*")
    try:
        port = _port(hub.zmq_socket)
        req = _guard(ctx.socket(zmq.REQ))
        req.connect(f"tcp://127.0.0.1:{port}")
        A = {"C": IMAGE, "F": np.asfortranarray(IMAGE), "sliced": IMAGE[::2, 1:]}[layout]
        zarray.send_array(req, A, format="json", meta={"msg": "cam-z"})
        msg, image = hub.recv_image()
        hub.send_reply(b"OK")
        assert req.recv() == b"OK"  # the REQ/REP reply, as ImageSender reads it
        assert msg == "cam-z"
        assert np.array_equal(image, A)  # the recipe is C-ordered: zarray sends a C copy
        req.close(linger=0)
    finally:
        hub.close()


def test_zarray_pubsub_to_image_hub(ctx: zmq.Context[Any]) -> None:
    pub = _guard(ctx.socket(zmq.PUB))
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    hub = imagezmq.ImageHub(open_port=f"tcp://127.0.0.1:{port}", REQ_REP=False)
    try:
        while not hub.zmq_socket.poll(20):
            zarray.send_array(pub, IMAGE, format="json", meta={"msg": "cam-p"})
        msg, image = hub.recv_image()
        assert msg == "cam-p"
        assert np.array_equal(image, IMAGE)
    finally:
        hub.close()
        pub.close(linger=0)


def test_zarray_socket_and_asyncio_to_image_hub() -> None:
    hub = imagezmq.ImageHub(open_port="tcp://127.0.0.1:*")
    try:
        port = _port(hub.zmq_socket)

        async def main() -> None:
            actx = zarray.asyncio.Context()
            req = actx.socket(zmq.REQ)
            req.linger = 0
            req.connect(f"tcp://127.0.0.1:{port}")
            try:
                await req.send_array(IMAGE, format="json", meta={"msg": "cam-async"})
                msg, image = await asyncio.to_thread(hub.recv_image)
                hub.send_reply(b"OK")
                assert await asyncio.wait_for(req.recv(), GUARD_MS / 1000) == b"OK"
                assert msg == "cam-async"
                assert np.array_equal(image, IMAGE)
            finally:
                req.close(linger=0)
                actx.term()

        asyncio.run(main())

        sctx = zarray.Context()
        sock = sctx.socket(zmq.REQ)
        try:
            sock.linger = 0
            sock.rcvtimeo = GUARD_MS
            sock.connect(f"tcp://127.0.0.1:{port}")
            sock.send_array(IMAGE, format="json", meta={"msg": "cam-socket"})
            msg, image = hub.recv_image()
            hub.send_reply(b"OK")
            assert sock.recv() == b"OK"
            assert msg == "cam-socket"
            assert np.array_equal(image, IMAGE)
        finally:
            sock.close(linger=0)
            sctx.term()
    finally:
        hub.close()


def test_meta_rules() -> None:
    """meta travels only in the recipe (send_arrays carries it in zarray's format), as
    standard JSON, and cannot replace the recipe's own keys."""
    c: zmq.Context[Any] = zmq.Context()
    try:
        a, b = c.socket(zmq.PAIR), c.socket(zmq.PAIR)
        a.bind("inproc://meta-rules")
        b.connect("inproc://meta-rules")
        with pytest.raises(ValueError, match="send_arrays"):
            zarray.send_array(a, IMAGE, meta={"msg": "x"})
        with pytest.raises(zarray.UnsupportedArrayError, match="'dtype'"):
            zarray.send_array(a, IMAGE, format="json", meta={"dtype": "x"})
        with pytest.raises(zarray.UnsupportedArrayError, match="standard JSON"):
            zarray.send_array(a, IMAGE, format="json", meta={"v": float("nan")})
        with pytest.raises(zarray.UnsupportedArrayError, match="str"):
            zarray.send_array(a, IMAGE, format="json", meta={1: "x"})  # type: ignore[dict-item]
        assert b.poll(0) == 0  # nothing was sent by the refused calls
        zarray.send_array(a, IMAGE, format="json", meta={"msg": "ünïcode", "n": [1, 2]})
        arrays, meta = zarray.recv_arrays(b)
        assert meta == {"msg": "ünïcode", "n": [1, 2]}
        assert np.array_equal(arrays[0], IMAGE)
        a.close(linger=0)
        b.close(linger=0)
    finally:
        c.term()
