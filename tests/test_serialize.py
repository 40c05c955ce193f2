"""zarray.serialize / zarray.deserialize with pyzmq's send_serialized / recv_serialized."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq
from _api3_fixtures import TRANSPORTS, Sockets, sockets

import zarray

BIG = 1 << 17


@pytest.fixture
def socks(tmp_path: Path) -> Iterator[Sockets]:
    with sockets(tmp_path) as s:
        yield s


ARRAYS = {
    "image": np.arange(64 * 48 * 3, dtype=np.uint8).reshape(64, 48, 3),
    "fortran": np.asfortranarray(np.arange(12.0).reshape(3, 4)),
    "reversed": np.arange(10, dtype=">i8")[::-1],
    "datetime": np.arange(4).astype("M8[s]"),
    "record": np.ones(3, [("a", "<u2"), ("b", "<c8")]),
    "0-d": np.array(1 + 2j),
}


@pytest.mark.parametrize("name", list(ARRAYS))
@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("copy", [False, True])
def test_round_trip(socks: Sockets, transport: str, name: str, copy: bool) -> None:
    push, pull = socks.pair(transport)
    A = ARRAYS[name]
    push.send_serialized(A, zarray.serialize, copy=copy)
    B = pull.recv_serialized(zarray.deserialize, copy=copy)
    assert B.dtype == A.dtype
    assert B.dtype.str == A.dtype.str
    assert B.shape == A.shape
    assert B.strides == A.strides
    assert B.tobytes() == A.tobytes()
    assert B.flags.aligned
    # bytes frames (copy=True) are immutable, so a view of one is read-only.
    assert B.flags.writeable == (not copy)


def test_serialize_frames() -> None:
    A = np.arange(6, dtype=np.int32).reshape(2, 3)
    frames = zarray.serialize(A)
    assert len(frames) == 2
    assert frames[0] == zarray.pack_header(A)
    assert memoryview(frames[1]).tobytes() == A.tobytes()
    # No copy: the payload is A's memory.
    assert np.shares_memory(np.asarray(frames[1]), A)
    B = zarray.deserialize(frames)
    np.testing.assert_array_equal(A, B)
    C = zarray.deserialize([frames[0], bytes(memoryview(frames[1]))], copy=True)
    assert C.flags.writeable
    np.testing.assert_array_equal(A, C)


def test_zero_copy_and_tracker_over_inproc(socks: Sockets) -> None:
    push, pull = socks.pair("inproc")
    A = np.arange(BIG, dtype=np.uint8)
    tracker = push.send_serialized(A, zarray.serialize, copy=False, track=True)
    assert isinstance(tracker, zmq.MessageTracker)
    B = pull.recv_serialized(zarray.deserialize, copy=False)
    assert B.__array_interface__["data"][0] == A.__array_interface__["data"][0]
    assert not tracker.done  # the tracker is the payload frame's: B still holds it
    del B
    tracker.wait(10)


def test_deserialize_skips_an_envelope(socks: Sockets) -> None:
    router = socks.socket(zmq.ROUTER)
    dealer = socks.socket(zmq.DEALER)
    dealer.connect(socks.bind(router, "inproc"))
    dealer.send_serialized(np.arange(3), zarray.serialize)
    np.testing.assert_array_equal(router.recv_serialized(zarray.deserialize), np.arange(3))


@pytest.mark.parametrize(
    ("frames", "match"),
    [
        ([b"garbage"], "1 frame"),
        ([b"x", b"y"], "bad magic"),
        ([zarray.pack_header(np.zeros(2)), b"abc"], "payload is 3 bytes"),
    ],
)
def test_deserialize_errors(frames: list[Any], match: str) -> None:
    with pytest.raises(zarray.HeaderError, match=match):
        zarray.deserialize(frames)


def test_deserialize_refuses_several_arrays(socks: Sockets) -> None:
    push, pull = socks.pair("inproc")
    zarray.send_arrays(push, [np.ones(2), np.ones(3)])
    frames = pull.recv_multipart(copy=False)
    with pytest.raises(zarray.HeaderError, match="recv_arrays"):
        zarray.deserialize(frames)


def test_deserialize_views_mutable_buffers() -> None:
    """A bytearray payload is viewed and pinned, not copied (more in test_frombuffer.py)."""
    A = np.arange(4, dtype=np.int64)
    payload = bytearray(A.tobytes())
    B = zarray.deserialize([bytearray(zarray.pack_header(A)), payload])
    payload[:8] = (-1).to_bytes(8, "little", signed=True)  # B aliases the caller's buffer
    assert B[0] == -1
    with pytest.raises(BufferError):
        payload.extend(b"x")  # and the buffer cannot move while B lives


def test_serialize_refuses_objects() -> None:
    with pytest.raises(zarray.UnsupportedArrayError):
        zarray.serialize(np.array([object()]))
