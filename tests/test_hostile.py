"""Hostile input that broke zarray's promise (issue 9), one section per hole.

Each test sends hand-made messages (or calls the send functions with hostile
arguments) over real ZeroMQ sockets and checks the promise of docs/SECURITY.md: a clear
zarray error, no allocation beyond what the bytes that arrived justify (tracemalloc),
the socket left at a message boundary (a sentinel message sent next arrives intact),
and no half message ever sent. Every test here failed on the code before the fix.
"""

from __future__ import annotations

import gc
import json
import tracemalloc
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import zmq
from common import SocketMaker, build_header

import zarray

Pair = tuple[zmq.Socket[Any], zmq.Socket[Any]]
KiB = 1024

SENTINEL = np.arange(12, dtype="<i4").reshape(3, 4)


def assert_boundary(tx: zmq.Socket[Any], rx: zmq.Socket[Any]) -> None:
    """A sentinel message sent now is the very next thing received, and nothing follows."""
    zarray.send_array(tx, SENTINEL)
    got = zarray.recv_array(rx)
    assert got.dtype == SENTINEL.dtype
    assert np.array_equal(got, SENTINEL), "the socket was not at a message boundary"
    assert not rx.poll(0), "frames were left over after the sentinel"


def peak_during(fn: Callable[[], Any]) -> tuple[int, Any]:
    """Run ``fn`` under tracemalloc: (peak bytes above the start, result or exception)."""
    gc.collect()
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        try:
            outcome: Any = fn()
        except Exception as exc:
            outcome = exc
        peak = tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()
    return peak, outcome


@pytest.fixture
def pair(make_pair: SocketMaker) -> Pair:
    """(sender, receiver) PAIR sockets over inproc."""
    return make_pair.pair("inproc")


def _doc(**fields: Any) -> dict[str, Any]:
    """A one-field record descriptor (docs/FORMAT.md) with some keys replaced."""
    doc: dict[str, Any] = {"names": ["a"], "formats": ["<f8"], "offsets": [0], "itemsize": 8}
    doc.update(fields)
    return doc


def _record(**fields: Any) -> bytes:
    return json.dumps(_doc(**fields)).encode()


# -- hole 1: zero-itemsize dtypes ------------------------------------------------------
# A 59-byte header declaring 2**40 elements of |S0 over an empty payload: the geometry
# check counted itemsize 0 as 1, numpy made S0 into S1 when zarray allocated, and
# copy=True asked for a TiB (MemoryError); copy=False returned a dtype that was never
# sent (<U1 for <U0). Zero-size dtypes are now outside the format (docs/FORMAT.md).

ZERO_ITEMSIZE = {
    "S0": (b"|S0", False),
    "U0": (b"<U0", False),
    "V0": (b"|V0", False),
    "record-no-fields": (_record(names=[], formats=[], offsets=[], itemsize=0), True),
    "record-empty-subarray": (
        _record(formats=[{"base": "<f8", "shape": [0]}], itemsize=0),
        True,
    ),
}


@pytest.mark.parametrize("copy", [False, True], ids=["view", "copy"])
@pytest.mark.parametrize("shape", [(2**40,), (0,), (5,), (2**31, 2**31)], ids=str)
@pytest.mark.parametrize("case", list(ZERO_ITEMSIZE))
def test_zero_itemsize_header_refused_without_allocating(
    case: str, shape: tuple[int, ...], copy: bool, pair: Pair
) -> None:
    tx, rx = pair
    descr, structured = ZERO_ITEMSIZE[case]
    header = build_header(descr, shape, (0,) * len(shape), 0, 0, structured=structured)
    tx.send_multipart([header, b""])
    peak, outcome = peak_during(lambda: zarray.recv_array(rx, copy=copy))
    assert isinstance(outcome, zarray.HeaderError), outcome
    assert "itemsize 0" in str(outcome)
    assert peak < 64 * KiB, f"{peak} bytes allocated for a {len(header)}-byte message"
    assert_boundary(tx, rx)


@pytest.mark.parametrize("case", list(ZERO_ITEMSIZE))
def test_zero_itemsize_codecs_agree(case: str, twins: tuple[ModuleType, ModuleType]) -> None:
    """Both codecs refuse the header itself, with the same message."""
    descr, structured = ZERO_ITEMSIZE[case]
    header = build_header(descr, (2**40,), (0,), 0, 0, structured=structured)
    messages = []
    for codec in twins:
        with pytest.raises(zarray.HeaderError) as info:
            codec.unpack(header)
        messages.append(str(info.value))
        with pytest.raises(zarray.HeaderError):
            codec.pack(descr, structured, 0, (2**40,), (0,), 0, 0, False)
    assert messages[0] == messages[1]


@pytest.mark.parametrize(
    "dtype",
    [
        np.dtype([]),
        np.dtype([("a", "<f8", (0,))]),
        np.dtype({"names": [], "formats": [], "itemsize": 0}),
    ],
    ids=["no-fields", "empty-subarray", "itemsize-0"],
)
def test_zero_itemsize_dtype_is_not_sent(dtype: np.dtype[Any], pair: Pair) -> None:
    tx, rx = pair
    with pytest.raises(zarray.UnsupportedArrayError, match="itemsize 0"):
        zarray.send_array(tx, np.zeros(5, dtype))
    assert_boundary(tx, rx)


def test_unsized_field_type_string_refused(pair: Pair) -> None:
    """An |S0 field inside a record of positive itemsize: refused on both sides."""
    tx, rx = pair
    descr = _record(names=["a", "b"], formats=["|S0", "<i4"], offsets=[0, 0], itemsize=4)
    tx.send_multipart([build_header(descr, (3,), (4,), 4, 12, structured=True), bytes(12)])
    with pytest.raises(zarray.HeaderError, match="field type string"):
        zarray.recv_array(rx)
    assert_boundary(tx, rx)
    with pytest.raises(zarray.UnsupportedArrayError):
        zarray.send_array(tx, np.zeros(3, [("a", "S0"), ("b", "<i4")]))
    assert_boundary(tx, rx)


# -- hole 2: nesting depth -------------------------------------------------------------
# FORMAT.md limits record nesting to 32 levels, but chains of subarrays
# ({"base": {"base": ...}}) were not counted: a 500-deep chain was accepted, and
# printing that dtype in an error message raised RecursionError.


def _nest(levels: str, leaf: str = '"<f8"') -> bytes:
    """A record descriptor nested as ``levels`` says, outside in: ``r`` a record level,
    ``s`` a subarray level. Built as text, since json.dumps recurses per level."""
    fmt = leaf
    for kind in reversed(levels):
        if kind == "s":
            fmt = '{"base": ' + fmt + ', "shape": [1]}'
        else:
            fmt = '{"names": ["a"], "formats": [' + fmt + '], "offsets": [0], "itemsize": 8}'
    return ('{"names": ["a"], "formats": [' + fmt + '], "offsets": [0], "itemsize": 8}').encode()


def _send_descriptor(tx: zmq.Socket[Any], descr: bytes) -> None:
    tx.send_multipart([build_header(descr, (3,), (8,), 8, 24, structured=True), bytes(24)])


def _depth(dt: np.dtype[Any]) -> int:
    """Levels of nesting below a record: each field record and subarray counts one."""

    def levels(f: np.dtype[Any]) -> int:
        if f.subdtype is not None:
            return 1 + levels(f.subdtype[0])
        if f.names is not None:
            return 1 + max((levels(f.fields[n][0]) for n in f.names), default=0)
        return 0

    return max(levels(dt.fields[n][0]) for n in dt.names or ())


@pytest.mark.parametrize("levels", ["s" * 33, "s" * 100, "s" * 500, "s" * 900], ids=len)
@pytest.mark.parametrize("copy", [False, True], ids=["view", "copy"])
def test_deep_subarray_chain_refused(levels: str, copy: bool, pair: Pair) -> None:
    tx, rx = pair
    _send_descriptor(tx, _nest(levels))
    with pytest.raises(zarray.HeaderError, match="nested deeper than 32 levels"):
        zarray.recv_array(rx, copy=copy)
    assert_boundary(tx, rx)


def test_subarray_chain_beyond_json_depth_refused(pair: Pair) -> None:
    """2,500 levels (64 KiB of descriptor) is past what json.loads nests: HeaderError."""
    tx, rx = pair
    _send_descriptor(tx, _nest("s" * 2500))
    with pytest.raises(zarray.HeaderError):
        zarray.recv_array(rx)
    assert_boundary(tx, rx)


@pytest.mark.parametrize(
    "levels", ["s" * 16 + "r" + "s" * 16, "r" * 20 + "s" * 13, "rs" * 17], ids=["srs", "rs", "alt"]
)
def test_mixed_nesting_past_32_refused(levels: str, pair: Pair) -> None:
    """Record and subarray levels count alike."""
    tx, rx = pair
    _send_descriptor(tx, _nest(levels))
    with pytest.raises(zarray.HeaderError, match="nested deeper than 32 levels"):
        zarray.recv_array(rx)
    assert_boundary(tx, rx)


@pytest.mark.parametrize("levels", ["s" * 32, "r" * 32, "rs" * 16], ids=["s", "r", "alt"])
def test_nesting_of_32_levels_still_accepted(levels: str, pair: Pair) -> None:
    """The limit is where FORMAT.md puts it: 32 levels arrive, and go back out."""
    tx, rx = pair
    _send_descriptor(tx, _nest(levels))
    A = zarray.recv_array(rx)
    assert A.shape == (3,)
    assert _depth(A.dtype) == 32
    zarray.send_array(tx, A)
    B = zarray.recv_array(rx)
    assert B.dtype == A.dtype
    assert_boundary(tx, rx)


def test_error_text_of_a_huge_record_is_bounded(pair: Pair) -> None:
    """A refusal that names a peer's dtype prints a bounded text of it."""
    tx, rx = pair
    n = 3000
    doc = {"names": [f"f{i}" for i in range(n)], "formats": ["|u1"] * n}
    doc |= {"offsets": list(range(n)), "itemsize": n}
    descr = json.dumps(doc).encode()
    # The header's itemsize disagrees with the descriptor's: the error names the dtype.
    tx.send_multipart([build_header(descr, (1,), (n + 1,), n + 1, n + 1, structured=True)])
    tx.send_multipart(
        [build_header(descr, (1,), (n + 1,), n + 1, n + 1, structured=True), bytes(n + 1)]
    )
    with pytest.raises(zarray.HeaderError):
        zarray.recv_array(rx)
    with pytest.raises(zarray.HeaderError, match="but the header says") as info:
        zarray.recv_array(rx)
    assert len(str(info.value)) < 300
    assert_boundary(tx, rx)


# -- hole 3: every receive path drains on every error ----------------------------------
# recv_array(out=) drained only on HeaderError. An out whose dtype numpy compares equal
# to the message's (an int64 with fields, against a plain <i8) passed the match check
# and was refused by encode_dtype after the header frame had been read: an
# UnsupportedArrayError escaped with the payload frame still queued, and the next
# receive got that payload as a one-frame message.

INT_WITH_FIELDS = np.dtype(("<i8", [("lo", "<i4"), ("hi", "<i4")]))


@pytest.mark.parametrize("layout", ["c", "reversed"])
def test_out_with_uncarriable_dtype_refused_before_receiving(layout: str, pair: Pair) -> None:
    tx, rx = pair
    assert INT_WITH_FIELDS == np.dtype("<i8")
    A = np.arange(6, dtype="<i8")
    zarray.send_array(tx, A if layout == "c" else A[::-1])
    with pytest.raises(zarray.UnsupportedArrayError):
        zarray.recv_array(rx, out=np.zeros(6, INT_WITH_FIELDS))
    # Refused before anything was read: the message is still there, whole.
    B = zarray.recv_array(rx)
    assert np.array_equal(B, A if layout == "c" else A[::-1])
    assert_boundary(tx, rx)


def test_refused_drains_whatever_the_error(pair: Pair) -> None:
    """The one place that wraps receive errors: after the first frame of a message,
    any error drains the rest; foreign exceptions become HeaderError (chained), zarray's
    own and KeyboardInterrupt go as they are."""
    from zarray._message import refused

    tx, rx = pair
    for exc in (ValueError("numpy said no"), KeyboardInterrupt(), zarray.HeaderError("x")):
        tx.send_multipart([b"one", b"two", b"three"])
        assert rx.recv() == b"one"
        out = refused(exc, rx)
        assert_boundary(tx, rx)
        if type(exc) is ValueError:
            assert isinstance(out, zarray.HeaderError)
            assert out.__cause__ is exc
            assert "ValueError: numpy said no" in str(out)
        else:
            assert out is exc


def test_asyncio_out_with_uncarriable_dtype_refused_before_receiving(
    make_pair: SocketMaker,
) -> None:
    import asyncio

    import zarray.asyncio

    async def main() -> None:
        ctx = zarray.asyncio.Context()
        tx, rx = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
        try:
            rx.rcvtimeo = 10_000
            rx.bind("inproc://hostile-async-out")
            tx.connect("inproc://hostile-async-out")
            A = np.arange(6, dtype="<i8")
            await tx.send_array(A)
            with pytest.raises(zarray.UnsupportedArrayError):
                await rx.recv_array(out=np.zeros(6, INT_WITH_FIELDS))
            assert np.array_equal(await rx.recv_array(), A)
        finally:
            tx.close(linger=0)
            rx.close(linger=0)
            ctx.term()

    asyncio.run(main())


# -- hole 4: no half messages ----------------------------------------------------------
# An envelope frame that memoryview() accepts but pyzmq cannot send (a non-contiguous
# view) failed after the frames before it had gone out with SNDMORE, and a caller's own
# flags=zmq.SNDMORE left the message open: in both cases the next message was glued
# onto the half one (the receiver saw the sentinel with a stray envelope frame).

NON_CONTIGUOUS = np.arange(16, dtype=np.uint8)[::2]


def _send_sync(tx: zmq.Socket[Any], multi: bool, **kw: Any) -> Any:
    A = np.arange(6.0)
    if multi:
        return zarray.send_arrays(tx, {"a": A}, **kw)
    return zarray.send_array(tx, A, **kw)


def _send_async(tx: Any, multi: bool, **kw: Any) -> Any:
    A = np.arange(6.0)
    if multi:
        return tx.send_arrays({"a": A}, **kw)
    return tx.send_array(A, **kw)


HALF_MESSAGE_CASES = {
    "non-contiguous-envelope": (
        {"envelope": [b"topic", NON_CONTIGUOUS]},
        TypeError,
        "not contiguous",
    ),
    "sndmore": ({"flags": zmq.SNDMORE}, ValueError, "SNDMORE"),
    "sndmore-noblock": ({"flags": zmq.SNDMORE | zmq.NOBLOCK}, ValueError, "SNDMORE"),
    "unknown-flag-bits": ({"flags": 0x100}, ValueError, "only 0 and zmq.NOBLOCK"),
}


@pytest.mark.parametrize("multi", [False, True], ids=["send_array", "send_arrays"])
@pytest.mark.parametrize("case", list(HALF_MESSAGE_CASES))
def test_no_half_message_sync(case: str, multi: bool, pair: Pair) -> None:
    tx, rx = pair
    kwargs, error, pattern = HALF_MESSAGE_CASES[case]
    with pytest.raises(error, match=pattern):
        _send_sync(tx, multi, **kwargs)
    assert_boundary(tx, rx)


@pytest.mark.parametrize("multi", [False, True], ids=["send_array", "send_arrays"])
@pytest.mark.parametrize("case", list(HALF_MESSAGE_CASES))
def test_no_half_message_asyncio(case: str, multi: bool) -> None:
    import asyncio

    import zarray.asyncio

    kwargs, error, pattern = HALF_MESSAGE_CASES[case]

    async def main() -> None:
        ctx = zarray.asyncio.Context()
        tx, rx = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
        try:
            rx.rcvtimeo = 10_000
            rx.bind(f"inproc://hostile-half-{case}-{multi}")
            tx.connect(f"inproc://hostile-half-{case}-{multi}")
            with pytest.raises(error, match=pattern):
                await _send_async(tx, multi, **kwargs)
            await tx.send_array(SENTINEL)
            frames = await rx.recv_multipart()
            assert len(frames) == 2, "a half message was glued onto the sentinel"
            assert np.array_equal(zarray.deserialize(frames), SENTINEL)
        finally:
            tx.close(linger=0)
            rx.close(linger=0)
            ctx.term()

    asyncio.run(main())


@pytest.mark.parametrize(
    "frame",
    [
        bytearray(b"ab"),
        memoryview(b"xyz"),
        np.arange(6, dtype=np.uint8).reshape(2, 3),
        np.asfortranarray(np.arange(6, dtype=np.uint8).reshape(2, 3)),
        zmq.Frame(b"frame"),
    ],
    ids=["bytearray", "memoryview", "c-array", "f-array", "zmq.Frame"],
)
def test_contiguous_envelope_frames_still_sent(frame: Any, pair: Pair) -> None:
    """Contiguous buffers of any kind go as their bytes in memory order, as pyzmq sends."""
    tx, rx = pair
    zarray.send_array(tx, np.arange(3), envelope=[frame])
    env, A = zarray.recv_array(rx, envelope=True)
    expected = memoryview(frame).tobytes(order="A")  # memory order, as pyzmq sends it
    assert env == [expected]
    assert A.tolist() == [0, 1, 2]
    assert_boundary(tx, rx)


# -- hole 5: format="json" and the read-only bit ---------------------------------------
# The recipe has no read-only bit, and a zero-copy send of a read-only array over inproc
# gave the receiver a writeable view of the sender's memory: writing into it mutated an
# immutable bytes object, or, for a read-only memmap, killed the process (SIGSEGV).

BIG = 200_000  # above pyzmq's copy threshold, so the send is zero-copy


def test_json_format_never_aliases_read_only_memory(pair: Pair) -> None:
    tx, rx = pair
    raw = bytes(range(256)) * (BIG // 256)
    A = np.frombuffer(raw, np.uint8)
    assert not A.flags.writeable
    tracker = zarray.send_array(tx, A, format="json")
    B = zarray.recv_array(rx)
    assert np.array_equal(B, A)
    if B.flags.writeable:
        B[:] = 0
    assert raw[:256] == bytes(range(256)), "the receiver wrote into an immutable bytes object"
    del B
    assert tracker is not None
    tracker.wait(10)
    assert_boundary(tx, rx)


_MEMMAP_SCRIPT = """
import sys
import numpy as np
import zmq
import zarray

path = sys.argv[1]
np.arange({n}, dtype=np.uint8).tofile(path)
A = np.memmap(path, dtype=np.uint8, mode="r")
ctx = zmq.Context()
tx, rx = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
rx.rcvtimeo = 10000
rx.bind("inproc://memmap")
tx.connect("inproc://memmap")
zarray.send_array(tx, A, format="json")
B = zarray.recv_array(rx)
assert np.array_equal(B, A)
if B.flags.writeable:
    B[:] = 1  # into a read-only mapping, this is SIGSEGV
print("survived")
del B
tx.close(0); rx.close(0); ctx.term()
"""


def test_json_format_read_only_memmap_does_not_crash(tmp_path: Any) -> None:
    """In a real child process: a read-only memmap sent with format="json" over inproc,
    then written through the received array. Before the fix the child died of SIGSEGV."""
    import subprocess
    import sys

    script = tmp_path / "memmap_json.py"
    script.write_text(_MEMMAP_SCRIPT.format(n=BIG))
    data = tmp_path / "data.bin"
    proc = subprocess.run(
        [sys.executable, str(script), str(data)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"child exited with {proc.returncode}: {proc.stderr[-2000:]}"
    assert "survived" in proc.stdout
    assert np.array_equal(np.fromfile(data, np.uint8), np.arange(BIG, dtype=np.uint8))


@pytest.mark.parametrize("fmt", ["zarray", "json"])
def test_read_only_bit_carried_whatever_the_format(fmt: str, pair: Pair) -> None:
    """zarray's header carries the bit; the recipe sends a private copy instead."""
    tx, rx = pair
    A = np.arange(BIG, dtype=np.uint8)
    A.flags.writeable = False
    zarray.send_array(tx, A, format=fmt)  # type: ignore[arg-type]
    B = zarray.recv_array(rx)
    assert np.array_equal(B, A)
    assert not (B.flags.writeable and np.shares_memory(A, B))
    assert_boundary(tx, rx)


# -- hole 6: JSON recipe shapes with a 0 dimension --------------------------------------
# The recipe's byte count stopped growing at a 0, so later huge dimensions passed, the C
# strides computed from them overflowed int64, and numpy's ValueError escaped.


@pytest.mark.parametrize(
    "shape",
    [[0, 2**62, 2**62], [2**62, 0, 2**62], [0, 2**63 - 1, 2], [3, 0, 2**40, 2**40]],
    ids=str,
)
@pytest.mark.parametrize("copy", [False, True], ids=["view", "copy"])
def test_recipe_zero_dimension_does_not_hide_overflow(
    shape: list[int], copy: bool, pair: Pair
) -> None:
    tx, rx = pair
    tx.send_multipart([json.dumps({"dtype": "<f8", "shape": shape}).encode(), b""])
    with pytest.raises(zarray.HeaderError, match="overflows a 64-bit byte count"):
        zarray.recv_array(rx, copy=copy)
    assert_boundary(tx, rx)


def test_recipe_zero_dimension_within_bounds_accepted(pair: Pair) -> None:
    tx, rx = pair
    tx.send_multipart([json.dumps({"dtype": "<f8", "shape": [0, 2**20, 2**20]}).encode(), b""])
    A = zarray.recv_array(rx)
    assert A.shape == (0, 2**20, 2**20)
    assert A.dtype == np.float64
    assert_boundary(tx, rx)


# -- hole 7: memory a peer can pin -----------------------------------------------------
# One message of a million empty frames cost ~190 MiB inside recv_array (a zmq.Frame
# object per frame); the meta JSON of send_arrays accepted 1e999 (inf) and had no size
# cap (an 11 MiB frame became 277 MiB of objects); the decoded-dtype cache was bounded
# in entries, not bytes (1,024 maximal record descriptors pin ~640 MiB), and one
# send_arrays message could carry any number of distinct large record descriptors.
# Each is now bounded by a documented limit in zarray.limits.

MANY = 30_000


def _many_frames_message() -> list[bytes]:
    return [b""] * MANY + [zarray.pack_header(SENTINEL), SENTINEL.tobytes()]


@pytest.mark.parametrize(
    "receive",
    [
        lambda rx: zarray.recv_array(rx),
        lambda rx: zarray.recv_array(rx, envelope=True),
        lambda rx: zarray.recv_array(rx, copy=True),
        lambda rx: zarray.recv_arrays(rx),
    ],
    ids=["recv_array", "envelope", "copy", "recv_arrays"],
)
def test_many_frames_refused_without_holding_them(
    receive: Callable[[Any], Any], pair: Pair
) -> None:
    tx, rx = pair
    tx.send_multipart(_many_frames_message())
    peak, outcome = peak_during(lambda: receive(rx))
    assert isinstance(outcome, zarray.HeaderError), outcome
    assert "zarray.limits.max_frames" in str(outcome)
    assert peak < 2 << 20, f"{peak} bytes allocated for a message of {MANY} empty frames"
    assert_boundary(tx, rx)


def test_many_frames_refused_by_deserialize() -> None:
    frames = _many_frames_message()
    with pytest.raises(zarray.HeaderError, match=r"zarray\.limits\.max_frames"):
        zarray.deserialize(frames)
    # The two frames of a plain message are never over the limit.
    assert zarray.deserialize(zarray.serialize(SENTINEL)).tobytes() == SENTINEL.tobytes()


def test_many_frames_refused_by_out(pair: Pair) -> None:
    tx, rx = pair
    tx.send_multipart(_many_frames_message())
    out = np.zeros_like(SENTINEL)
    with pytest.raises(zarray.HeaderError, match="max_frames"):
        zarray.recv_array(rx, out=out)
    assert_boundary(tx, rx)


@pytest.mark.parametrize("method", ["recv_array", "recv_arrays"])
def test_many_frames_refused_by_asyncio(method: str) -> None:
    import asyncio

    import zarray.asyncio

    async def main() -> None:
        ctx = zarray.asyncio.Context()
        tx, rx = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
        try:
            rx.rcvtimeo = 10_000
            rx.bind(f"inproc://hostile-many-{method}")
            tx.connect(f"inproc://hostile-many-{method}")
            await tx.send_multipart(_many_frames_message())
            gc.collect()
            tracemalloc.start()
            try:
                start = tracemalloc.get_traced_memory()[0]
                with pytest.raises(zarray.HeaderError, match="max_frames"):
                    await getattr(rx, method)()
                peak = tracemalloc.get_traced_memory()[1] - start
            finally:
                tracemalloc.stop()
            assert peak < 2 << 20, f"{peak} bytes allocated for {MANY} empty frames"
            await tx.send_array(SENTINEL)
            assert np.array_equal(await rx.recv_array(), SENTINEL)
        finally:
            tx.close(linger=0)
            rx.close(linger=0)
            ctx.term()

    asyncio.run(main())


def _message_header(doc: bytes, count: int = 0, kind: int = 0) -> bytes:
    import struct

    return struct.pack("<4sBBHII", b"\x93ZAM", 1, kind, 0, count, len(doc)) + doc


@pytest.mark.parametrize(
    "doc",
    [
        b'{"meta":{"x":1e999}}',
        b'{"meta":{"x":-1e400}}',
        b'{"meta":{"x":[1, 2, 1E999]}}',
        b'{"meta":{"x":NaN}}',
        b'{"meta":{"x":Infinity}}',
        b'{"meta":{"x":-Infinity}}',
    ],
    ids=["1e999", "-1e400", "in-list", "NaN", "Infinity", "-Infinity"],
)
def test_meta_not_standard_json_refused(doc: bytes, pair: Pair) -> None:
    tx, rx = pair
    tx.send_multipart([_message_header(doc)])
    with pytest.raises(zarray.HeaderError, match="JSON is invalid"):
        zarray.recv_arrays(rx)
    assert_boundary(tx, rx)


def test_meta_over_the_limit_refused_before_parsing(pair: Pair) -> None:
    tx, rx = pair
    doc = b'{"meta":{"x":[' + b",".join([b"{}"] * 700_000) + b"]}}"  # 2 MiB of JSON
    tx.send_multipart([_message_header(doc)])
    peak, outcome = peak_during(lambda: zarray.recv_arrays(rx))
    assert isinstance(outcome, zarray.HeaderError), outcome
    assert "zarray.limits.max_meta_bytes" in str(outcome)
    assert peak < len(doc) + (1 << 20), f"{peak} bytes allocated for {len(doc)} of meta"
    assert_boundary(tx, rx)


def test_meta_over_the_limit_not_sent(pair: Pair) -> None:
    tx, rx = pair
    with pytest.raises(zarray.UnsupportedArrayError, match="max_meta_bytes"):
        zarray.send_arrays(tx, [SENTINEL], meta={"x": "y" * 70_000})  # default limit: 64 KiB
    assert_boundary(tx, rx)


def _wide_record(tag: int) -> bytes:
    """A distinct record descriptor close to the format's 65,535-byte maximum."""
    fields = 4000
    while True:
        doc = {
            "names": [f"{tag}_{i}" for i in range(fields)],
            "formats": ["|S1"] * fields,
            "offsets": list(range(fields)),
            "itemsize": fields,
        }
        text = json.dumps(doc, separators=(",", ":")).encode()
        if len(text) <= 65535:
            return text
        fields -= 100


def test_dtype_cache_bounded_in_bytes(pair: Pair) -> None:
    """A peer cycling distinct maximal record descriptors pins at most
    ~25 x zarray.limits.max_dtype_cache_bytes of decoded dtypes."""
    tx, rx = pair
    from zarray import _dtypes

    _dtypes.decode_cache.clear()
    gc.collect()
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        for tag in range(12):
            descr = _wide_record(tag)
            n = json.loads(descr)["itemsize"]
            tx.send_multipart([build_header(descr, (1,), (n,), n, n, structured=True), bytes(n)])
            A = zarray.recv_array(rx)
            assert A.dtype.itemsize == n
            del A
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
    bound = 25 * 262144  # the default zarray.limits.max_dtype_cache_bytes, 256 KiB
    assert held < bound, f"{held} bytes still held after 12 distinct descriptors (bound {bound})"
    assert_boundary(tx, rx)


def test_record_descriptors_per_message_bounded(pair: Pair) -> None:
    """One send_arrays message of eight distinct ~64 KiB record descriptors: refused
    before any is decoded, and the sender refuses to send those arrays too."""
    tx, rx = pair
    records = [_wide_record(100 + k) for k in range(8)]
    frames = [_message_header(b"", count=len(records))]
    for descr in records:
        n = json.loads(descr)["itemsize"]
        frames += [build_header(descr, (1,), (n,), n, n, structured=True), bytes(n)]
    tx.send_multipart(frames)
    peak, outcome = peak_during(lambda: zarray.recv_arrays(rx))
    assert isinstance(outcome, zarray.HeaderError), outcome
    assert "zarray.limits.max_descriptor_bytes" in str(outcome)
    assert peak < 2 << 20, f"{peak} bytes allocated"
    assert_boundary(tx, rx)
    arrays = [np.zeros(1, zarray.unpack_header(f).dtype) for f in frames[1::2]]
    with pytest.raises(zarray.UnsupportedArrayError, match="max_descriptor_bytes"):
        zarray.send_arrays(tx, arrays)
    assert_boundary(tx, rx)


def test_limits_can_be_raised(pair: Pair, monkeypatch: pytest.MonkeyPatch) -> None:
    """The limits are parameters: a program that needs more sets them on both sides."""
    tx, rx = pair
    arrays = [np.arange(3)] * 2100  # 4,201 frames: over the default of 4,096
    with pytest.raises(zarray.UnsupportedArrayError, match="max_frames"):
        zarray.send_arrays(tx, arrays)
    assert_boundary(tx, rx)
    monkeypatch.setattr(zarray.limits, "max_frames", 5000)
    zarray.send_arrays(tx, arrays)
    got, meta = zarray.recv_arrays(rx)
    assert len(got) == 2100
    assert meta == {}
    assert_boundary(tx, rx)


def test_asyncio_concurrent_receivers_get_whole_messages() -> None:
    """zarray.asyncio reads each message in one synchronous stretch (so that it can
    count frames as they come): concurrent receivers on one socket, zarray's and
    pyzmq's own recv_multipart side by side, still get whole messages, each once."""
    import asyncio

    import zarray.asyncio

    count = 240

    async def main() -> None:
        ctx = zarray.asyncio.Context()
        tx, rx = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
        try:
            rx.rcvtimeo = 10_000
            rx.bind("inproc://hostile-concurrent")
            tx.connect("inproc://hostile-concurrent")
            got: list[int] = []
            done = asyncio.Event()

            def record(A: np.ndarray[Any, Any]) -> None:
                assert np.array_equal(A[1:], np.arange(1, 100))
                got.append(int(A[0]))
                if len(got) == count:
                    done.set()

            async def zarray_receiver() -> None:
                while True:
                    env, A = await rx.recv_array(envelope=True)
                    assert env == [b"topic"]
                    record(A)

            async def pyzmq_receiver() -> None:
                while True:
                    frames = await rx.recv_multipart(copy=False)
                    assert len(frames) == 3
                    record(zarray.deserialize(frames[1:]))

            tasks = [asyncio.create_task(zarray_receiver()) for _ in range(3)]
            tasks.append(asyncio.create_task(pyzmq_receiver()))
            for i in range(count):
                A = np.arange(100)
                A[0] = i
                await tx.send_array(A, envelope=[b"topic"])
                if i % 7 == 0:
                    await asyncio.sleep(0)
            await asyncio.wait_for(done.wait(), 30)
            for task in tasks:
                assert not task.done(), task  # a receiver that failed would be done
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            assert sorted(got) == list(range(count))
        finally:
            tx.close(linger=0)
            rx.close(linger=0)
            ctx.term()

    asyncio.run(main())


def _fields(fmt: str, count: int) -> bytes:
    doc = {"names": [str(i) for i in range(count)], "formats": [fmt] * count}
    doc |= {"offsets": [0] * count, "itemsize": 8}
    return json.dumps(doc, separators=(",", ":")).encode()


def test_documented_cost_ratios() -> None:
    """The figures docs/SECURITY.md and zarray.limits rely on: decoding a record
    descriptor peaks at up to ~24 times its bytes, parsing JSON at up to ~30 times
    (measured worst shapes: one-byte string fields, lists of small dicts)."""
    from zarray import _dtypes, _stdjson

    count = 5000
    while len(_fields("|S1", count)) > 65535:
        count -= 50
    descr = _fields("|S1", count)
    _dtypes.decode_cache.clear()
    peak, dt = peak_during(lambda: _dtypes.decode_dtype(descr, True, 8))
    assert isinstance(dt, np.dtype)
    assert peak < 28 * len(descr), peak / len(descr)
    doc = b'{"meta":{"a":[' + b",".join([b'{"a":{}}'] * 7000) + b"]}}"
    peak, meta = peak_during(lambda: _stdjson.loads(doc))
    assert isinstance(meta, dict)
    assert peak < 34 * len(doc), peak / len(doc)


# -- hole 8: the sender sends what receivers refuse --------------------------------------
# A sliding-window view over a packed record's field (int32 at stride 5, overlapping
# windows) went out as its memory span, and every receiver refused it: realigning its
# overlapping misaligned elements "would take N bytes". FORMAT.md promises that the
# sender never produces a header a receiver refuses; the sender now gathers such
# layouts itself, by the same rule (zarray._array.realign_fits) the receiver applies.


def _packed_field(n: int) -> np.ndarray[Any, Any]:
    rec = np.zeros(n, "u1,<i4")
    rec["f1"] = np.arange(n)
    return rec["f1"]


WINDOWS: dict[str, Callable[[], np.ndarray[Any, Any]]] = {
    "window-100": lambda: np.lib.stride_tricks.sliding_window_view(_packed_field(1000), 100),
    "window-2d": lambda: np.lib.stride_tricks.sliding_window_view(
        _packed_field(400).reshape(20, 20), (5, 5)
    ),
    "window-big": lambda: np.lib.stride_tricks.sliding_window_view(_packed_field(40_000), 64),
    "window-broadcast": lambda: np.broadcast_to(
        np.lib.stride_tricks.sliding_window_view(_packed_field(300), 30), (4, 271, 30)
    ),
    "window-read-only": lambda: np.lib.stride_tricks.sliding_window_view(
        _packed_field(500), 50, writeable=False
    ),
}


@pytest.mark.parametrize("copy", [False, True], ids=["view", "copy"])
@pytest.mark.parametrize("case", list(WINDOWS))
def test_overlapping_misaligned_view_is_received(case: str, copy: bool, pair: Pair) -> None:
    tx, rx = pair
    A = WINDOWS[case]()
    assert not A.flags.aligned
    zarray.send_array(tx, A)
    B = zarray.recv_array(rx, copy=copy)
    assert B.dtype == A.dtype
    assert B.shape == A.shape
    assert np.array_equal(B, A)
    assert B.flags.aligned
    assert B.flags.writeable == A.flags.writeable
    assert_boundary(tx, rx)


@pytest.mark.parametrize("case", list(WINDOWS))
def test_overlapping_misaligned_view_accepted_by_both_codecs(
    case: str, twins: tuple[ModuleType, ModuleType]
) -> None:
    """What zarray sends for these views passes both codecs' checks and the realign
    bound (the pure-Python receive path, as ZARRAY_PUREPYTHON=1 runs it)."""
    from zarray._array import rebuild

    A = WINDOWS[case]()
    header, payload = zarray.serialize(A)
    raw = memoryview(payload).cast("B").tobytes()
    for codec in twins:
        B = rebuild(codec.unpack(header), raw)
        assert np.array_equal(B, A)
    # Gathering kept the broadcast axis a broadcast: the payload is the distinct data.
    assert len(raw) <= A[tuple(0 if s == 0 else slice(None) for s in A.strides)].nbytes


def test_record_descriptor_over_the_format_limit_not_sent(pair: Pair) -> None:
    """A record needing more than 65,535 descriptor bytes: UnsupportedArrayError (a
    sender's error), not the codec's HeaderError."""
    tx, rx = pair
    dt = np.dtype([(f"field{i}", "u1") for i in range(8000)])
    with pytest.raises(zarray.UnsupportedArrayError, match="65535"):
        zarray.send_array(tx, np.zeros(2, dt))
    assert_boundary(tx, rx)


@pytest.mark.parametrize("extra", [0, 1], ids=["at-the-limit", "one-over"])
@pytest.mark.parametrize(
    "receive",
    [
        lambda rx: zarray.recv_array(rx, envelope=True),
        lambda rx: zarray.recv_array(rx, out=np.zeros_like(SENTINEL)),
        lambda rx: zarray.recv_arrays(rx),
    ],
    ids=["recv_array", "out", "recv_arrays"],
)
def test_frame_limit_is_exact(receive: Callable[[Any], Any], extra: int, pair: Pair) -> None:
    """A message of exactly zarray.limits.max_frames frames arrives, on every path
    (out= took one more before); one frame more is refused."""
    tx, rx = pair
    envelope = [b""] * (zarray.limits.max_frames - 2 + extra)
    tx.send_multipart([*envelope, zarray.pack_header(SENTINEL), SENTINEL.tobytes()])
    if extra:
        with pytest.raises(zarray.HeaderError, match="max_frames"):
            receive(rx)
    else:
        got = receive(rx)
        assert got is not None
    assert_boundary(tx, rx)
