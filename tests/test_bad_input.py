"""Bad messages on real sockets: a clear HeaderError, and the socket left at the next
message boundary so that the next recv_array works (issue 2, "Bad input"). And
send_array refusing before the first frame, so nothing half-sent is ever on the wire."""

from __future__ import annotations

import gc
import itertools
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import zmq
from common import (
    GUARD_S,
    UNSUPPORTED,
    SocketMaker,
    build_header,
    check_received,
    check_roundtrip,
)

import zarray

Pair = tuple[zmq.Socket[Any], zmq.Socket[Any]]

GOOD = np.arange(3.0)
GOOD_HEADER = zarray.pack_header(GOOD)
_unique = itertools.count(70001)


def _uncached_header() -> bytes:
    """A valid header for one ``|S<n>`` element, a dtype the receiver has never seen
    (so the compiled fast path, which serves cached dtypes, declines it)."""
    n = next(_unique)
    return build_header(f"|S{n}".encode(), (1,), (n,), n, n)


# name -> (frames to send, pattern of the HeaderError)
BAD_MESSAGES: dict[str, tuple[Callable[[], list[bytes]], str]] = {
    "lone-garbage-frame": (lambda: [b"garbage"], "1 frame"),
    "lone-empty-frame": (lambda: [b""], "1 frame"),
    "header-without-payload": (lambda: [GOOD_HEADER], "1 frame"),
    "three-frames": (lambda: [GOOD_HEADER, GOOD.tobytes(), b"extra"], "more than 2 frames"),
    "header-header-payload": (
        lambda: [GOOD_HEADER, GOOD_HEADER, GOOD.tobytes()],
        "more than 2 frames",
    ),
    "five-frames": (lambda: [GOOD_HEADER, GOOD.tobytes(), b"", b"", b""], "frames"),
    "payload-too-short": (lambda: [GOOD_HEADER, bytes(16)], "payload is 16 bytes.*says 24"),
    "payload-too-long": (lambda: [GOOD_HEADER, bytes(25)], "payload is 25 bytes.*says 24"),
    "payload-empty": (lambda: [GOOD_HEADER, b""], "payload is 0 bytes.*says 24"),
    "uncached-dtype-payload-short": (
        lambda: [_uncached_header(), bytes(10)],
        "payload is 10 bytes, but the header says 7",
    ),
    "garbage-header-then-payload": (lambda: [b"\x00" * 40, GOOD.tobytes()], "bad magic"),
    "text-header-then-payload": (lambda: [b"hello world", b"x" * 24], "bad magic"),
    "truncated-header-then-payload": (lambda: [GOOD_HEADER[:30], GOOD.tobytes()], "truncated"),
    "future-version-then-payload": (
        lambda: [GOOD_HEADER[:4] + b"\x02" + GOOD_HEADER[5:], GOOD.tobytes()],
        "unsupported header version 2",
    ),
    "unknown-codec-then-payload": (
        lambda: [GOOD_HEADER[:6] + b"\x09" + GOOD_HEADER[7:], GOOD.tobytes()],
        "unknown codec id 9",
    ),
    "bad-geometry-then-payload": (
        lambda: [build_header(b"<f8", (4,), (8,), 8, 24), bytes(24)],
        "reaches past the payload end",
    ),
    "object-descriptor-then-payload": (
        lambda: [build_header(b"|O8", (3,), (8,), 8, 24), bytes(24)],
        "invalid dtype type string",
    ),
}


def _assert_boundary(sender: zmq.Socket[Any], receiver: zmq.Socket[Any]) -> None:
    """Nothing of the bad message is left, and the next message is received whole."""
    with pytest.raises(zmq.Again):
        receiver.recv(zmq.NOBLOCK)
    check_roundtrip(np.arange(12, dtype="<i4").reshape(3, 4), sender, receiver)
    check_roundtrip(np.arange(2**15, dtype=">f8"), sender, receiver)  # 256 KiB, zero-copy
    with pytest.raises(zmq.Again):
        receiver.recv(zmq.NOBLOCK)


@pytest.mark.parametrize("case", list(BAD_MESSAGES))
def test_bad_message(pair: Pair, case: str) -> None:
    sender, receiver = pair
    frames, pattern = BAD_MESSAGES[case]
    sender.send_multipart(frames())
    with pytest.raises(zarray.HeaderError, match=pattern):
        zarray.recv_array(receiver)
    _assert_boundary(sender, receiver)


@pytest.mark.parametrize("copy", [False, True])
def test_bad_messages_back_to_back(pair: Pair, copy: bool) -> None:
    """Each bad message costs exactly one recv_array call, whatever comes next."""
    sender, receiver = pair
    for case in BAD_MESSAGES:
        frames, pattern = BAD_MESSAGES[case]
        sender.send_multipart(frames())
        zarray.send_array(sender, GOOD)
        with pytest.raises(zarray.HeaderError, match=pattern):
            zarray.recv_array(receiver, copy=copy)
        np.testing.assert_array_equal(zarray.recv_array(receiver, copy=copy), GOOD)
    _assert_boundary(sender, receiver)


def test_bad_message_with_zero_copy_payload(pair: Pair) -> None:
    """A large (zero-copy) payload of the wrong length is drained and refused too."""
    sender, receiver = pair
    big = np.zeros(2**17)
    h = zarray.pack_header(big[:-1])
    tracker = sender.send_multipart([h, big.data], copy=False, track=True)
    assert tracker is not None
    with pytest.raises(zarray.HeaderError, match=r"payload is 1048576 bytes"):
        zarray.recv_array(receiver)
    gc.collect()
    tracker.wait(GUARD_S)  # the refused frame was released, not kept
    _assert_boundary(sender, receiver)


def test_header_error_is_a_value_error(pair: Pair) -> None:
    sender, receiver = pair
    sender.send(b"not zarray")
    with pytest.raises(ValueError, match="1 frame"):
        zarray.recv_array(receiver)
    _assert_boundary(sender, receiver)


# -- send_array fails before the first frame ------------------------------------------


@pytest.mark.parametrize("case", list(UNSUPPORTED))
def test_unsupported_leaves_nothing_on_the_wire(pair: Pair, case: str) -> None:
    sender, receiver = pair
    with pytest.raises(zarray.UnsupportedArrayError):
        zarray.send_array(sender, UNSUPPORTED[case]())
    _assert_boundary(sender, receiver)


def test_unsupported_between_good_sends(pair: Pair) -> None:
    sender, receiver = pair
    for case in UNSUPPORTED:
        zarray.send_array(sender, GOOD)
        with pytest.raises(zarray.UnsupportedArrayError):
            zarray.send_array(sender, UNSUPPORTED[case]())
        zarray.send_array(sender, GOOD[::-1])
    for _ in UNSUPPORTED:
        np.testing.assert_array_equal(zarray.recv_array(receiver), GOOD)
        np.testing.assert_array_equal(zarray.recv_array(receiver), GOOD[::-1])
    _assert_boundary(sender, receiver)


def test_nonblocking_send_with_no_peer_sends_nothing(make_pair: SocketMaker) -> None:
    """zmq.Again at the first frame: no header is left waiting for its payload."""
    push = make_pair.socket(zmq.PUSH)
    port = push.bind_to_random_port("tcp://127.0.0.1")
    with pytest.raises(zmq.Again):
        zarray.send_array(push, np.arange(2**17, dtype=np.float64), zmq.NOBLOCK)
    pull = make_pair.socket(zmq.PULL)
    pull.connect(f"tcp://127.0.0.1:{port}")
    check_roundtrip(np.arange(4.0), push, pull)
    with pytest.raises(zmq.Again):
        pull.recv(zmq.NOBLOCK)


SURROGATES: dict[str, Callable[[], Any]] = {
    "field-name": lambda: np.zeros(2, [("\ud800", "<i4")]),
    "title": lambda: np.zeros(
        2, np.dtype({"names": ["a"], "formats": ["<i4"], "titles": ["\udfff"]})
    ),
}


@pytest.mark.parametrize("case", list(SURROGATES))
def test_unencodable_field_name_is_sent_or_refused_cleanly(inproc_pair: Pair, case: str) -> None:
    """numpy accepts field names and titles that UTF-8 cannot encode (lone surrogates).
    zarray may carry them or refuse them, but a refusal is an UnsupportedArrayError
    raised before anything is sent, like every other array it will not send."""
    sender, receiver = inproc_pair
    A = SURROGATES[case]()
    try:
        zarray.send_array(sender, A)
    except zarray.UnsupportedArrayError:
        _assert_boundary(sender, receiver)
    else:
        check_received(A, zarray.recv_array(receiver))
