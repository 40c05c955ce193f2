"""recv_array(socket, out=buf): receiving straight into a preallocated array."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq
from _api3_fixtures import TRANSPORTS, Sockets, sockets

import zarray

MiB = 1 << 20


@pytest.fixture
def socks(tmp_path: Path) -> Iterator[Sockets]:
    with sockets(tmp_path) as s:
        yield s


LAYOUTS: dict[str, Any] = {
    "c": lambda a: a,
    "fortran": np.asfortranarray,
    "reversed": lambda a: a[::-1, ::-1],
    "sparse": lambda a: np.ascontiguousarray(np.repeat(a, 3, axis=1))[:, ::3],
    "broadcast": lambda a: np.broadcast_to(a[0], a.shape),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_values_land_in_out(socks: Sockets, transport: str, layout: str) -> None:
    push, pull = socks.pair(transport)
    base = np.arange(40 * 30, dtype="<f8").reshape(40, 30)
    A = LAYOUTS[layout](base)
    out = np.full((40, 30), -1.0)
    zarray.send_array(push, A)
    got = zarray.recv_array(pull, out=out)
    assert got is out
    np.testing.assert_array_equal(out, A)
    assert out.flags.c_contiguous
    assert out.flags.writeable


@pytest.mark.parametrize(
    "A",
    [
        np.arange(10, dtype=">u2"),
        np.array(["2020-01-01", "NaT", "1970-01-02"], dtype="M8[D]"),
        np.arange(6, dtype=np.timedelta64).reshape(2, 3).astype("m8[us]"),
        np.zeros(4, np.dtype([("a", "<i4"), ("b", "<f8", (2,))], align=True)),
        np.array(7.5),
        np.zeros((0, 3), np.int8),
        np.array([b"ab", b"cde"]),
    ],
    ids=["big-endian", "datetime", "timedelta", "record", "0-d", "empty", "bytes"],
)
def test_dtypes(socks: Sockets, A: np.ndarray[Any, Any]) -> None:
    push, pull = socks.pair("inproc")
    out = np.empty(A.shape, A.dtype)
    zarray.send_array(push, A)
    assert zarray.recv_array(pull, out=out) is out
    assert out.tobytes() == A.tobytes()


def test_read_only_sender_leaves_out_writeable(socks: Sockets) -> None:
    push, pull = socks.pair("inproc")
    A = np.arange(5)
    A.flags.writeable = False
    out = np.empty_like(A)
    zarray.send_array(push, A)
    zarray.recv_array(pull, out=out)
    assert out.flags.writeable
    zarray.send_array(push, A)
    zarray.recv_array(pull, out=out)  # out can take the next message, too


@pytest.mark.parametrize(
    ("sent", "match"),
    [
        (np.zeros((3, 4), np.float32), "dtype <f4 \\(out has <f8\\)"),
        (np.zeros((4, 3)), "shape \\(4, 3\\) \\(out has \\(3, 4\\)\\)"),
        (np.zeros(12, ">f8"), "dtype >f8 .* and shape"),
        (np.zeros((3, 4), [("x", "<f8")]), "dtype"),
    ],
    ids=["dtype", "shape", "both", "record"],
)
@pytest.mark.parametrize("transport", ["inproc", "tcp"])
def test_mismatch_says_what_differs_and_drains(
    socks: Sockets, transport: str, sent: np.ndarray[Any, Any], match: str
) -> None:
    push, pull = socks.pair(transport)
    out = np.zeros((3, 4))
    zarray.send_array(push, sent, envelope=[b"topic"])
    zarray.send_array(push, np.ones((3, 4)))
    with pytest.raises(zarray.HeaderError, match=match) as info:
        zarray.recv_array(pull, out=out)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, zarray.OutMismatchError)
    assert isinstance(info.value, zarray.ZarrayError)
    assert (out == 0).all()  # nothing written on a mismatch
    assert zarray.recv_array(pull, out=out) is out
    assert (out == 1).all()


@pytest.mark.parametrize(
    ("out", "error"),
    [
        ([0.0, 0.0], TypeError),
        (np.zeros((4, 6))[:, ::2], ValueError),
        (np.zeros((3, 4)).T, ValueError),
        (np.zeros(3, dtype=object), ValueError),
    ],
    ids=["list", "strided", "fortran", "object"],
)
def test_unusable_out_consumes_nothing(socks: Sockets, out: Any, error: type) -> None:
    push, pull = socks.pair("inproc")
    zarray.send_array(push, np.arange(3))
    with pytest.raises(error):
        zarray.recv_array(pull, out=out)
    np.testing.assert_array_equal(zarray.recv_array(pull), np.arange(3))


def test_read_only_out_is_refused(socks: Sockets) -> None:
    push, pull = socks.pair("inproc")
    out = np.zeros(3, np.int64)
    out.flags.writeable = False
    zarray.send_array(push, np.arange(3))
    with pytest.raises(ValueError, match="writeable"):
        zarray.recv_array(pull, out=out)
    np.testing.assert_array_equal(zarray.recv_array(pull), np.arange(3))


@pytest.mark.parametrize(
    ("frames", "match"),
    [
        ([zarray.pack_header(np.zeros(3))], "1 frame"),
        ([zarray.pack_header(np.zeros(3)), b"\x00" * 16], "payload is 16 bytes"),
        ([zarray.pack_header(np.zeros(3)), b"\x00" * 32], "payload is 32 bytes"),
        ([zarray.pack_header(np.zeros(3)), np.zeros(3).tobytes(), b"x"], "more than 2"),
        ([b"a", b"b", b"c"], "no zarray header"),
        ([b"topic", b'{"dtype": "float64", "shape": [3]}', b"short"], "payload is 5"),
        ([b"\x93ZAR\x09"], "1 frame"),
        ([b"\x93ZAR\x09", b"x"], "truncated"),
    ],
    ids=[
        "header-only",
        "short-payload",
        "long-payload",
        "extra-frame",
        "garbage",
        "recipe-short",
        "lone-bad-header",
        "bad-header",
    ],
)
def test_malformed_is_drained(socks: Sockets, frames: list[bytes], match: str) -> None:
    push, pull = socks.pair("inproc")
    out = np.zeros(3)
    push.send_multipart(frames)
    zarray.send_array(push, np.full(3, 9.0))
    with pytest.raises(zarray.HeaderError, match=match):
        zarray.recv_array(pull, out=out)
    assert zarray.recv_array(pull, out=out) is out
    assert (out == 9).all()


def test_several_arrays_refused_and_drained(socks: Sockets) -> None:
    push, pull = socks.pair("inproc")
    out = np.zeros(3)
    zarray.send_arrays(push, [np.ones(3), np.ones(3)])
    zarray.send_array(push, np.full(3, 2.0))
    with pytest.raises(zarray.HeaderError, match="several arrays"):
        zarray.recv_array(pull, out=out)
    zarray.recv_array(pull, out=out)
    assert (out == 2).all()


def test_envelope_and_json_recipe(socks: Sockets) -> None:
    push, pull = socks.pair("inproc")
    out = np.zeros((2, 3), np.int16)
    A = np.arange(6, dtype=np.int16).reshape(2, 3)
    zarray.send_array(push, A, envelope=[b"id", b""], format="json")
    env, got = zarray.recv_array(pull, out=out, envelope=True)
    assert env == [b"id", b""]
    assert got is out
    np.testing.assert_array_equal(out, A)
    # A topic that looks like JSON but is no recipe is part of the envelope.
    zarray.send_array(push, A + 1, envelope=[b"{not a recipe}"])
    env, got = zarray.recv_array(pull, out=out, envelope=True)
    assert env == [b"{not a recipe}"]
    np.testing.assert_array_equal(out, A + 1)


def _peak_during(fn: Any) -> int:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - base


def test_no_payload_sized_allocation_over_tcp(socks: Sockets) -> None:
    push, pull = socks.pair("tcp")
    n = 16 * MiB
    A = np.arange(n // 8, dtype=np.float64)
    out = np.empty_like(A)
    # The control: a copying receive allocates the payload, and tracemalloc sees it
    # (numpy reports its buffers to tracemalloc), so the measurement below can fail.
    zarray.send_array(push, A)
    held: list[Any] = []
    assert _peak_during(lambda: held.append(zarray.recv_array(pull, copy=True))) >= n
    held.clear()
    zarray.send_array(push, A)
    peak = _peak_during(lambda: held.append(zarray.recv_array(pull, out=out)))
    assert held[0] is out
    assert peak < MiB, f"recv_array(out=) allocated {peak} bytes for a {n}-byte payload"
    np.testing.assert_array_equal(out, A)


def test_stream_costs_no_allocation_per_message(socks: Sockets) -> None:
    push, pull = socks.pair("ipc")
    out = np.empty((256, 256), np.uint16)  # 128 KiB
    frames = [np.full((256, 256), k, np.uint16) for k in range(3)]
    count = 60

    def stream() -> None:
        for k in range(count):
            zarray.send_array(push, frames[k % 3], copy=True, track=False)
            zarray.recv_array(pull, out=out)
            assert out[0, 0] == k % 3
            assert out[-1, -1] == k % 3

    stream()  # warm caches (dtype descriptors, socket state)
    peak = _peak_during(stream)
    # 60 messages of 128 KiB: one allocation per message would be 7.5 MiB.
    assert peak < out.nbytes, f"{peak} bytes allocated while streaming into out"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_nonblocking(socks: Sockets, transport: str) -> None:
    push, pull = socks.pair(transport)
    out = np.zeros(4)
    with pytest.raises(zmq.Again):
        zarray.recv_array(pull, zmq.NOBLOCK, out=out)
    zarray.send_array(push, np.ones(4))
    assert zarray.recv_array(pull, out=out) is out
    assert (out == 1).all()
