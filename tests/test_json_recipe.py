"""Talking to programs that use the JSON recipe of pyzmq's serialization guide.

``guide_send_array`` and ``guide_recv_array`` are written exactly as pyzmq's guide
shows them ("Serializing messages with PyZMQ", the numpy example).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy
import numpy as np
import pytest
import zmq
from _api3_fixtures import TRANSPORTS, Sockets, sockets
from hypothesis import given, settings
from hypothesis import strategies as st

import zarray
from zarray._json_recipe import MAX_RECIPE, parse


def guide_send_array(
    socket: Any, A: Any, flags: int = 0, copy: bool = True, track: bool = False
) -> Any:
    """send a numpy array with metadata"""
    md = dict(
        dtype=str(A.dtype),
        shape=A.shape,
    )
    socket.send_json(md, flags | zmq.SNDMORE)
    return socket.send(A, flags, copy=copy, track=track)


def guide_recv_array(socket: Any, flags: int = 0, copy: bool = True, track: bool = False) -> Any:
    """recv a numpy array"""
    md = socket.recv_json(flags=flags)
    msg = socket.recv(flags=flags, copy=copy, track=track)
    buf = memoryview(msg)
    A = numpy.frombuffer(buf, dtype=md["dtype"])
    return A.reshape(md["shape"])


@pytest.fixture
def socks(tmp_path: Path) -> Iterator[Sockets]:
    with sockets(tmp_path) as s:
        yield s


SIMPLE = [
    "?", "i1", "u1", "<i2", ">i2", "<u4", ">u8", "<f2", "<f4", ">f8", "<g", "<c8", ">c16", "<G",
    "S7", "<U3", ">U2", "V5",
]  # fmt: skip


@pytest.mark.parametrize("code", SIMPLE)
@pytest.mark.parametrize("copy", [True, False])
def test_guide_sender_to_zarray(socks: Sockets, code: str, copy: bool) -> None:
    push, pull = socks.pair("inproc")
    A = np.frombuffer(np.random.default_rng(1).bytes(np.dtype(code).itemsize * 24), code)
    A = A.reshape(2, 3, 4)
    guide_send_array(push, A, copy=copy)
    B = zarray.recv_array(pull)
    assert B.dtype == A.dtype
    assert B.shape == A.shape
    assert B.tobytes() == A.tobytes()
    assert B.flags.aligned
    assert B.flags.writeable


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_guide_sender_big_zero_copy(socks: Sockets, transport: str) -> None:
    push, pull = socks.pair(transport)
    A = np.arange(300_000, dtype=np.float32).reshape(600, 500)
    guide_send_array(push, A, copy=False)
    guide_send_array(push, A[:, :7].copy(), copy=False)
    np.testing.assert_array_equal(zarray.recv_array(pull), A)
    out = np.empty((600, 7), np.float32)
    assert zarray.recv_array(pull, out=out) is out
    np.testing.assert_array_equal(out, A[:, :7])


@pytest.mark.parametrize(
    "A",
    [
        np.arange(24, dtype=np.int16).reshape(2, 3, 4),
        np.asfortranarray(np.arange(12.0).reshape(3, 4)),  # made C-contiguous first
        np.arange(30, dtype=">u4")[::3],
        np.arange(20.0).reshape(4, 5)[::-1, 1:],
        np.broadcast_to(np.arange(3, dtype=np.uint8), (4, 3)),
        np.array(5.0),
        np.zeros((0, 3), np.int32),
        np.array([b"ab", b"c"]),
        np.array(["été", "x"]),
    ],
    ids=["c", "fortran", "strided-be", "reversed", "broadcast", "0-d", "empty", "S", "U"],
)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_zarray_sender_to_guide_receiver(
    socks: Sockets, transport: str, A: np.ndarray[Any, Any]
) -> None:
    push, pull = socks.pair(transport)
    zarray.send_array(push, A, format="json")
    B = guide_recv_array(pull)
    assert B.dtype == A.dtype
    assert B.shape == A.shape
    np.testing.assert_array_equal(A, B)


def test_recipe_bytes_are_the_guides(socks: Sockets) -> None:
    push, pull = socks.pair("inproc")
    A = np.arange(6, dtype=np.float64).reshape(2, 3)
    guide_send_array(push, A)
    zarray.send_array(push, A, format="json")
    theirs, ours = pull.recv_multipart(), pull.recv_multipart()
    assert ours == theirs
    assert json.loads(ours[0]) == {"dtype": "float64", "shape": [2, 3]}


def test_datetimes_go_as_the_recipe_names_them(socks: Sockets) -> None:
    # The guide's sender cannot send datetime64 (no buffer protocol); zarray can, and
    # the guide's receiver reads it back.
    push, pull = socks.pair("inproc")
    A = np.array(["2024-05-01T12:00", "NaT"], dtype="M8[m]")
    zarray.send_array(push, A, format="json")
    B = guide_recv_array(pull)
    assert B.dtype == A.dtype
    np.testing.assert_array_equal(A, B)
    zarray.send_array(push, A, format="json")
    C = zarray.recv_array(pull)
    np.testing.assert_array_equal(A, C)


def test_imagezmq_style_extra_keys(socks: Sockets) -> None:
    push, pull = socks.pair("inproc")
    image = np.zeros((48, 64, 3), np.uint8)
    image[10, 20] = 255
    push.send_json(dict(msg="camera-1", dtype=str(image.dtype), shape=image.shape), zmq.SNDMORE)
    push.send(image, copy=False)
    B = zarray.recv_array(pull)
    np.testing.assert_array_equal(B, image)


def test_misaligned_payload_is_realigned(socks: Sockets) -> None:
    push, pull = socks.pair("tcp")
    A = np.arange(5, dtype=np.float64)
    push.send_json({"dtype": "float64", "shape": [5]}, zmq.SNDMORE)
    push.send(A.tobytes())  # small frames land misaligned (2 mod 8) in libzmq
    B = zarray.recv_array(pull)
    assert B.flags.aligned
    np.testing.assert_array_equal(A, B)


@pytest.mark.parametrize(
    "A",
    [
        np.zeros(2, [("a", "<f8")]),
        np.array([object()]),
        np.ma.masked_array([1, 2], mask=[0, 1]),
        [1, 2],
    ],
    ids=["structured", "object", "masked", "list"],
)
def test_format_json_refuses_what_it_cannot_describe(
    socks: Sockets, A: np.ndarray[Any, Any]
) -> None:
    push, pull = socks.pair("inproc")
    with pytest.raises(zarray.UnsupportedArrayError):
        zarray.send_array(push, A, format="json")
    zarray.send_array(push, np.arange(2))
    np.testing.assert_array_equal(zarray.recv_array(pull), np.arange(2))  # nothing sent


def test_unknown_format(socks: Sockets) -> None:
    push, _ = socks.pair("inproc")
    with pytest.raises(ValueError, match="unknown format"):
        zarray.send_array(push, np.arange(2), format="pickle")  # type: ignore[arg-type]


def _recipe(doc: Any) -> bytes:
    return doc if isinstance(doc, bytes) else json.dumps(doc).encode()


_BIG_RECIPE = b'{"dtype": "u1", "shape": [1], "pad": "' + b"x" * MAX_RECIPE + b'"}'
HOSTILE: list[tuple[str, Any, bytes, str]] = [
    ("object", {"dtype": "object", "shape": [1]}, b"x" * 8, "not a dtype"),
    ("O", {"dtype": "O", "shape": [1]}, b"x" * 8, "not a dtype"),
    ("O8", {"dtype": "|O8", "shape": [1]}, b"x" * 8, "not a dtype"),
    ("eval", {"dtype": "__import__('os').system('false')", "shape": [1]}, b"x", "not a dtype"),
    ("attr", {"dtype": "np.float64", "shape": [1]}, b"x" * 8, "not a dtype"),
    ("list-repr", {"dtype": "[('a', '<f8')]", "shape": [1]}, b"x" * 8, "not a dtype"),
    ("suffix", {"dtype": "float64; x", "shape": [1]}, b"x" * 8, "not a dtype"),
    ("not-str", {"dtype": 8, "shape": [1]}, b"x" * 8, "must be a string"),
    ("bad-code", {"dtype": "<i3", "shape": [1]}, b"x" * 3, "invalid JSON recipe dtype"),
    ("zero-size", {"dtype": "S0", "shape": [1]}, b"", "no size"),
    ("string-dtype", {"dtype": "T", "shape": [1]}, b"x" * 16, "not a dtype"),
    ("negative", {"dtype": "u1", "shape": [-1]}, b"", "dimensions"),
    ("bool-dim", {"dtype": "u1", "shape": [True]}, b"x", "dimensions"),
    ("float-dim", {"dtype": "u1", "shape": [1.0]}, b"x", "dimensions"),
    ("shape-int", {"dtype": "u1", "shape": 3}, b"xxx", "shape"),
    ("too-many-dims", {"dtype": "u1", "shape": [1] * 65}, b"x", "at most 64"),
    ("overflow", {"dtype": "<f8", "shape": [2**62, 4]}, b"x", "overflows"),
    ("huge-dim", {"dtype": "u1", "shape": [2**64]}, b"x", "dimensions"),
    ("long-payload", {"dtype": "u1", "shape": [3]}, b"xxxx", "payload is 4 bytes"),
    ("short-payload", {"dtype": "<f8", "shape": [2, 2]}, b"x" * 31, "needs 32"),
    ("no-shape", {"dtype": "u1"}, b"x", "'dtype' and 'shape'"),
    ("not-json", b"{dtype: u1}", b"x", "not valid JSON"),
    ("not-utf8", b"{\xff\xfe}", b"x", "not valid JSON"),
    ("deep", b"{" + b'"a":[' * 10_000 + b"]" * 10_000 + b"}", b"x", "JSON"),
    ("too-big", _BIG_RECIPE, b"x", "exceeds"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("doc", "payload", "match"), [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE]
)
def test_hostile_recipes_are_refused_and_drained(
    socks: Sockets, doc: Any, payload: bytes, match: str
) -> None:
    push, pull = socks.pair("inproc")
    push.send_multipart([_recipe(doc), payload])
    zarray.send_array(push, np.arange(3))
    with pytest.raises(zarray.HeaderError, match=match):
        zarray.recv_array(pull)
    np.testing.assert_array_equal(zarray.recv_array(pull), np.arange(3))


@settings(max_examples=300, deadline=None)
@given(
    doc=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
        max_leaves=12,
    ),
    dtype=st.one_of(st.text(max_size=12), st.sampled_from(["float64", "<f8", "u1", "M8[s]"])),
    payload_size=st.integers(0, 64),
)
def test_parse_fuzz_only_header_error(doc: Any, dtype: str, payload_size: int) -> None:
    for candidate in (doc, {"dtype": dtype, "shape": doc}, {"dtype": dtype, "shape": [2]}):
        try:
            head = json.dumps(candidate).encode()
        except ValueError:
            continue
        try:
            fields = parse(head, payload_size)
        except zarray.HeaderError:
            continue
        assert fields[6] == payload_size  # only a consistent recipe gets through
