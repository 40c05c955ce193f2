"""send_arrays / recv_arrays: several arrays and a meta dict in one message."""

from __future__ import annotations

import gc
import itertools
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq
from _api3_fixtures import TRANSPORTS, Sockets, sockets

import zarray
from zarray._message import pack_message_header, unpack_message_header

BIG = 1 << 17  # above pyzmq's 64 KiB copy threshold: sent without a copy


@pytest.fixture
def socks(tmp_path: Path) -> Iterator[Sockets]:
    with sockets(tmp_path) as s:
        yield s


def _address(a: np.ndarray[Any, Any]) -> int:
    return int(a.__array_interface__["data"][0])


def _arrays() -> dict[str, np.ndarray[Any, Any]]:
    rec = np.dtype([("x", "<f8"), ("n", ">i2", (2,))], align=True)
    ro = np.arange(12, dtype="<i4").reshape(3, 4)
    ro.flags.writeable = False
    return {
        "image": np.arange(480 * 64 * 3, dtype=np.uint8).reshape(480, 64, 3),
        "fortran": np.asfortranarray(np.arange(30.0).reshape(5, 6)),
        "strided": np.arange(100, dtype=">f4")[::-1],
        "broadcast": np.broadcast_to(np.arange(7, dtype=np.int16), (5, 7)),
        "time": np.array(["2024-01-01T00:00:01", "NaT"], dtype="M8[ms]"),
        "record": np.zeros(3, rec),
        "scalar": np.array(3.5),
        "empty": np.zeros((0, 4), np.float32),
        "readonly": ro,
    }


def _same(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> None:
    assert a.dtype == b.dtype
    assert a.dtype.str == b.dtype.str
    assert a.shape == b.shape
    assert a.tobytes() == b.tobytes()


CASES = list(itertools.product(TRANSPORTS, ["list", "dict"], [False, True]))


@pytest.mark.parametrize(("transport", "container", "copy"), CASES)
def test_round_trip(socks: Sockets, transport: str, container: str, copy: bool) -> None:
    push, pull = socks.pair(transport)
    named = _arrays()
    sent: Any = named if container == "dict" else list(named.values())
    meta = {"frame": 17, "t": 1.25, "units": "µm", "tags": ["a", "b"], "nested": {"ok": True}}
    tracker = zarray.send_arrays(push, sent, meta=meta)
    arrays, got_meta = zarray.recv_arrays(pull, copy=copy)
    assert got_meta == meta
    if container == "dict":
        assert isinstance(arrays, dict)
        assert list(arrays) == list(named)  # names and order kept
        values = list(arrays.values())
    else:
        assert isinstance(arrays, list)
        values = arrays
    assert len(values) == len(named)
    for a, b in zip(named.values(), values, strict=True):
        _same(a, b)
        assert b.flags.aligned
        # The read-only bit travels; with copy=True the result owns its memory.
        assert b.flags.writeable == (a.flags.writeable or False)
        if copy:
            assert b.base is None or not isinstance(b.base, zmq.Frame)
    # Layouts are kept, not transposed.
    fortran = values[1]
    assert fortran.flags.f_contiguous
    assert not fortran.flags.c_contiguous
    assert fortran.strides == named["fortran"].strides
    assert values[3].strides == (0, 2)  # the broadcast view sent only its distinct data
    del arrays, values, fortran
    assert tracker is not None
    tracker.wait(10)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_meta_defaults_to_empty_dict(socks: Sockets, transport: str) -> None:
    push, pull = socks.pair(transport)
    zarray.send_arrays(push, [np.arange(3)])
    arrays, meta = zarray.recv_arrays(pull)
    assert meta == {}
    assert isinstance(arrays, list)
    assert len(arrays) == 1
    np.testing.assert_array_equal(arrays[0], np.arange(3))


def test_zero_arrays_carry_meta(socks: Sockets) -> None:
    push, pull = socks.pair("inproc")
    zarray.send_arrays(push, [], meta={"heartbeat": 1})
    zarray.send_arrays(push, {}, meta={"heartbeat": 2})
    assert zarray.recv_arrays(pull) == ([], {"heartbeat": 1})
    assert zarray.recv_arrays(pull) == ({}, {"heartbeat": 2})


def test_tuple_and_generator_free_sequences(socks: Sockets) -> None:
    push, pull = socks.pair("inproc")
    zarray.send_arrays(push, (np.ones(2), np.zeros(3)))
    arrays, _ = zarray.recv_arrays(pull)
    assert isinstance(arrays, list)
    assert [a.shape for a in arrays] == [(2,), (3,)]


def test_zero_copy_over_inproc(socks: Sockets) -> None:
    push, pull = socks.pair("inproc")
    a = np.arange(BIG, dtype=np.uint8)
    b = np.arange(BIG // 8, dtype=np.float64)
    zarray.send_arrays(push, {"a": a, "b": b})
    arrays, _ = zarray.recv_arrays(pull)
    assert isinstance(arrays, dict)
    # The received arrays are the sender's own memory: no copy on either side.
    assert _address(arrays["a"]) == _address(a)
    assert _address(arrays["b"]) == _address(b)


def test_one_tracker_covers_every_payload(socks: Sockets) -> None:
    push, pull = socks.pair("inproc")
    a = np.ones(BIG, np.uint8)
    b = np.ones(BIG, np.uint8)
    small = np.ones(4, np.uint8)  # copied (below copy_threshold): needs no tracking
    tracker = zarray.send_arrays(push, [a, small, b])
    assert isinstance(tracker, zmq.MessageTracker)
    (ra, rsmall, rb), _ = zarray.recv_arrays(pull)
    assert not tracker.done
    del ra, rsmall
    gc.collect()
    # The first payload is released, but the last one is still held by the receiver:
    # pyzmq's send_multipart tracker (the last frame's only) would be the same here, so
    # also check the other order below.
    assert not tracker.done
    del rb
    tracker.wait(10)
    assert tracker.done

    tracker = zarray.send_arrays(push, [a, b])
    assert tracker is not None
    (ra, rb), _ = zarray.recv_arrays(pull)
    del rb
    gc.collect()
    # Only the first payload is still referenced: a last-frame-only tracker would be
    # done now; the combined one is not.
    assert not tracker.done
    del ra
    tracker.wait(10)


def test_track_false_and_copy_true(socks: Sockets) -> None:
    push, pull = socks.pair("inproc")
    a = np.ones(BIG, np.uint8)
    assert zarray.send_arrays(push, [a], track=False) is None
    tracker = zarray.send_arrays(push, [a], copy=True)
    assert tracker is not None
    assert tracker.done
    zarray.recv_arrays(pull)
    (r,), _ = zarray.recv_arrays(pull)
    assert _address(r) != _address(a)


# -- refused before the first frame goes out --------------------------------------------


class _NotJSON:
    pass


REFUSED: list[tuple[str, Any, Any]] = [
    ("meta-object", [np.ones(2)], {"x": _NotJSON()}),
    ("meta-numpy-scalar", [np.ones(2)], {"n": np.int64(3)}),
    ("meta-nan", [np.ones(2)], {"x": float("nan")}),
    ("meta-not-dict", [np.ones(2)], ["a"]),
    ("meta-ndarray", [np.ones(2)], np.ones(3)),
    ("meta-int-key", [np.ones(2)], {1: "a"}),
    ("name-not-str", {1: np.ones(2)}, None),
    ("name-bytes", {b"a": np.ones(2)}, None),
    ("object-array-last", [np.ones(2), np.array([None, 1], dtype=object)], None),
    ("object-array-in-dict", {"a": np.ones(2), "b": np.array([{}], dtype=object)}, None),
    ("not-an-array", [np.ones(2), [1, 2, 3]], None),
    ("single-ndarray", np.ones((2, 2)), None),
    ("a-string", "abc", None),
]


@pytest.mark.parametrize(("arrays", "meta"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
@pytest.mark.parametrize("transport", ["inproc", "tcp"])
def test_refused_before_any_frame(socks: Sockets, transport: str, arrays: Any, meta: Any) -> None:
    push, pull = socks.pair(transport)
    with pytest.raises(zarray.UnsupportedArrayError):
        zarray.send_arrays(push, arrays, meta=meta)
    # Had any frame gone out, it would arrive before (or glued onto) this marker.
    zarray.send_arrays(push, [np.arange(5)], meta={"marker": True})
    arrays_back, meta_back = zarray.recv_arrays(pull)
    assert meta_back == {"marker": True}
    np.testing.assert_array_equal(arrays_back[0], np.arange(5))


# -- wrong receiver, malformed messages ------------------------------------------------


def test_recv_array_on_several_arrays(socks: Sockets) -> None:
    push, pull = socks.pair("inproc")
    zarray.send_arrays(push, [np.ones(3), np.zeros(3)])
    zarray.send_array(push, np.arange(4))
    with pytest.raises(zarray.HeaderError, match="recv_arrays"):
        zarray.recv_array(pull)
    np.testing.assert_array_equal(zarray.recv_array(pull), np.arange(4))


def test_recv_arrays_on_one_array(socks: Sockets) -> None:
    push, pull = socks.pair("inproc")
    zarray.send_array(push, np.arange(4))
    arrays, meta = zarray.recv_arrays(pull)
    assert meta == {}
    assert isinstance(arrays, list)
    assert len(arrays) == 1
    np.testing.assert_array_equal(arrays[0], np.arange(4))


def _frames(*arrays: np.ndarray[Any, Any]) -> list[bytes]:
    out: list[bytes] = []
    for a in arrays:
        out += [zarray.pack_header(a), a.tobytes()]
    return out


def _mhead(kind: int, count: int, doc: bytes, version: int = 1, reserved: int = 0) -> bytes:
    return struct.pack("<4sBBHII", b"\x93ZAM", version, kind, reserved, count, len(doc)) + doc


GOOD = _frames(np.arange(3.0), np.arange(4))
MALFORMED: list[tuple[str, list[bytes], str]] = [
    ("too-few-frames", [_mhead(0, 2, b""), *GOOD[:2]], "announces 2 arrays"),
    ("too-many-frames", [_mhead(0, 1, b""), *GOOD], "announces 1 arrays"),
    ("lone-message-header", [_mhead(0, 1, b"")], "announces 1 arrays"),
    ("truncated-message-header", [b"\x93ZAM\x01", *GOOD[:2]], "truncated"),
    ("bad-version", [_mhead(0, 2, b"", version=9), *GOOD], "version 9"),
    ("bad-kind", [_mhead(5, 2, b""), *GOOD], "container kind 5"),
    ("reserved", [_mhead(0, 2, b"", reserved=1), *GOOD], "reserved"),
    ("bad-json", [_mhead(0, 2, b"{nope"), *GOOD], "JSON"),
    ("json-not-object", [_mhead(0, 2, b"[1]"), *GOOD], "object"),
    ("json-nan", [_mhead(0, 2, b'{"meta":{"x":NaN}}'), *GOOD], "NaN"),
    ("unknown-key", [_mhead(0, 2, b'{"zzz":1}'), *GOOD], "unknown keys"),
    ("names-on-list", [_mhead(0, 2, b'{"names":["a","b"]}'), *GOOD], "names"),
    ("mapping-without-names", [_mhead(1, 2, b'{"meta":{"a":1}}'), *GOOD], "names"),
    ("names-count", [_mhead(1, 2, b'{"names":["a"]}'), *GOOD], "1 names for 2"),
    ("names-dup", [_mhead(1, 2, b'{"names":["a","a"]}'), *GOOD], "unique"),
    ("names-not-str", [_mhead(1, 2, b'{"names":["a",1]}'), *GOOD], "names"),
    ("meta-not-object", [_mhead(0, 2, b'{"meta":[1]}'), *GOOD], "meta"),
    (
        "json-length-lies",
        [struct.pack("<4sBBHII", b"\x93ZAM", 1, 0, 0, 2, 99) + b"{}", *GOOD],
        "JSON length",
    ),
    ("bad-array-header", [_mhead(0, 2, b""), GOOD[0], GOOD[1], b"garbage", GOOD[3]], "array 1"),
    (
        "payload-length",
        [_mhead(1, 2, b'{"names":["a","b"]}'), GOOD[0], GOOD[1] + b"x", GOOD[2], GOOD[3]],
        "array 0 \\('a'\\): payload is 25 bytes",
    ),
]


@pytest.mark.parametrize(
    ("frames", "match"), [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED]
)
def test_malformed_drained(socks: Sockets, frames: list[bytes], match: str) -> None:
    push, pull = socks.pair("inproc")
    push.send_multipart(frames)
    zarray.send_arrays(push, [np.arange(2)], meta={"next": 1})
    with pytest.raises(zarray.HeaderError, match=match):
        zarray.recv_arrays(pull)
    # The bad message was consumed whole: the next one comes out intact.
    arrays, meta = zarray.recv_arrays(pull)
    assert meta == {"next": 1}
    np.testing.assert_array_equal(arrays[0], np.arange(2))


# -- the wire layout -------------------------------------------------------------------


def test_message_header_golden_bytes() -> None:
    head = pack_message_header(True, 2, ["a", "é"], {"n": 1})
    doc = '{"names":["a","é"],"meta":{"n":1}}'.encode()
    assert head == b"\x93ZAM\x01\x01\x00\x00\x02\x00\x00\x00" + struct.pack("<I", len(doc)) + doc
    assert pack_message_header(False, 3, None, None) == (
        b"\x93ZAM\x01\x00\x00\x00\x03\x00\x00\x00\x00\x00\x00\x00"
    )
    assert unpack_message_header(head) == (["a", "é"], {"n": 1}, 2)
    # The example of docs/FORMAT.md.
    doc_example = pack_message_header(True, 2, ["image", "mask"], {"frame": 7})
    assert doc_example[:16].hex(" ") == "93 5a 41 4d 01 01 00 00 02 00 00 00 2d 00 00 00"
    assert doc_example[16:] == b'{"names":["image","mask"],"meta":{"frame":7}}'
    assert unpack_message_header(pack_message_header(False, 0, None, {})) == (None, {}, 0)


def test_message_frames_on_the_wire(socks: Sockets) -> None:
    push, pull = socks.pair("inproc")
    a, b = np.arange(3.0), np.arange(4, dtype=np.int8)
    zarray.send_arrays(push, {"a": a, "b": b}, meta={"k": "v"})
    frames = pull.recv_multipart()
    assert len(frames) == 5
    assert frames[0][:4] == b"\x93ZAM"
    assert json.loads(frames[0][16:]) == {"names": ["a", "b"], "meta": {"k": "v"}}
    assert frames[1] == zarray.pack_header(a)
    assert frames[2] == a.tobytes()
    assert frames[3] == zarray.pack_header(b)
    assert frames[4] == b.tobytes()
