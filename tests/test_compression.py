"""Compressed payloads (issue 11) over real sockets: round trips of every codec x filter
x dtype family x layout, the framing byte by byte, the "auto" policy, out=, several
arrays, socket defaults, asyncio, bad and hostile frames, the size limit, the missing
extra, and the two shuffle kernels against each other."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import struct
import subprocess
import sys
import textwrap
import threading
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq
from common import (
    DTYPES,
    GUARD_MS,
    LAYOUTS,
    SocketMaker,
    build_header,
    expected_wire,
    make_array,
    product_ids,
)
from compression_common import (
    BLOCK,
    CODEC_IDS,
    FIXED,
    RAW,
    SPECS,
    build_frame,
    check_compressed,
    compress_block,
    encode_reference,
    shuffled,
)

import zarray
import zarray.asyncio
from zarray import _codecs, _shuffle_py

try:
    from zarray import _shuffle
except ImportError:  # pragma: no cover - an unbuilt checkout; the twin tests skip
    _shuffle = None  # type: ignore[assignment]

NDArray = np.ndarray[Any, Any]
Pair = tuple[zmq.Socket[Any], zmq.Socket[Any]]
REPO = Path(__file__).resolve().parent.parent

#: One dtype per family: bool, 1/2/4/8-byte integers and floats in both byte orders,
#: long double, complex, datetimes, bytes, str, void, records (nested, aligned, offsets).
FAMILIES = [
    "|b1",
    "|u1",
    "<u2",
    ">i4",
    "<f4",
    ">f8",
    "<c16",
    "<f16",
    "<M8[ns]",
    ">m8[10ms]",
    "|S5",
    "<U3",
    "|V7",
    "rec-nested>",
    "rec-aligned",
    "rec-offsets",
]
MiB = 1 << 20


def _multi_block(dt: np.dtype[Any]) -> NDArray:
    """About 2.3 blocks of compressible data (a short last block)."""
    n = (BLOCK * 2 + BLOCK // 3) // max(dt.itemsize, 1)
    raw = (np.arange(n * dt.itemsize) // 7 % 5).astype(np.uint8)
    if dt == np.bool_:
        raw &= 1
    A = np.empty(n, dt)
    A.view(np.uint8)[:] = raw
    return A


def _quad(A: NDArray) -> NDArray:
    return A[: A.size // 4 * 4].reshape(-1, 4)


#: The layouts of the core suite, and payloads of several blocks.
CLAYOUTS: dict[str, Callable[[np.dtype[Any]], NDArray]] = {
    **LAYOUTS,
    "blocks-C": _multi_block,
    "blocks-F": lambda dt: np.asfortranarray(_quad(_multi_block(dt))),
    "blocks-reversed": lambda dt: _multi_block(dt)[::-1],
}

MATRIX = product_ids(SPECS, FAMILIES, CLAYOUTS)


@pytest.mark.parametrize("transport", ["inproc", "ipc", "tcp"])
@pytest.mark.parametrize(("spec", "dtype", "layout"), MATRIX)
def test_matrix(make_pair: SocketMaker, transport: str, spec: str, dtype: str, layout: str) -> None:
    """Every codec x filter x dtype family x layout, on every transport (about 15 s)."""
    kind = "PUSH-PULL" if len(dtype + layout) % 2 else "PAIR"
    sender, receiver = make_pair.pair(transport, kind)
    check_compressed(CLAYOUTS[layout](DTYPES[dtype]), sender, receiver, SPECS[spec])


@pytest.mark.parametrize("spec", list(SPECS))
@pytest.mark.parametrize("layout", ["C-readonly", "F", "broadcast", "blocks-C", "0d"])
def test_copy_true(make_pair: SocketMaker, spec: str, layout: str) -> None:
    """copy=True: the decompressed buffer already is the one private copy."""
    sender, receiver = make_pair.pair("tcp")
    check_compressed(CLAYOUTS[layout](np.dtype("<i8")), sender, receiver, SPECS[spec], copy=True)


# -- the framing, byte by byte --------------------------------------------------------


def _frames(A: NDArray, spec: Any, pair: Pair) -> tuple[bytes, bytes]:
    sender, receiver = pair
    zarray.send_array(sender, A, compress=spec)
    header, payload = receiver.recv_multipart()
    return header, payload


@pytest.mark.parametrize("codec", ["lz4", "zstd"])
@pytest.mark.parametrize(
    ("dtype", "n"), [("<u2", 300_000), ("<f8", 100_000), ("|S5", 120_000), ("<u4", 10)]
)
def test_frame_is_the_documented_one(inproc_pair: Pair, codec: str, dtype: str, n: int) -> None:
    """The frame zarray writes is, byte for byte, the one FORMAT.md prescribes (built
    here with cramjam and plain Python slicing, block by block)."""
    A = (np.arange(n) % 251).astype(dtype) if dtype[1] != "S" else np.full(n, b"ab%d")
    _, payload = _frames(A, codec, inproc_pair)
    assert payload == encode_reference(A.tobytes(), codec, A.dtype.itemsize, True)
    nbytes, block, count = FIXED.unpack_from(payload)
    assert nbytes == A.nbytes
    assert block == A.dtype.itemsize * (BLOCK // A.dtype.itemsize)
    assert count == -(-nbytes // block)


def test_incompressible_blocks_are_stored_raw(inproc_pair: Pair) -> None:
    """Golden bytes: random data does not shrink, so every block is stored raw (bit 31
    of its table entry), unfiltered; the frame is fixed part + table + the data."""
    A = make_array("<u8", (BLOCK // 8 + 100,), seed=3)
    header, payload = _frames(A, "lz4", inproc_pair)
    data = A.tobytes()
    expected = (
        struct.pack("<QII", len(data), BLOCK, 2)
        + struct.pack("<II", RAW | BLOCK, RAW | (len(data) - BLOCK))
        + data
    )
    assert payload == expected
    assert header[6] == CODEC_IDS["lz4"]
    assert header[12] == 1


def test_shuffled_leftover_bytes(inproc_pair: Pair) -> None:
    """A span that is not whole elements (one field of a packed record): the bytes after
    the last whole element of a block are stored unshuffled."""
    rec = np.zeros(50_000, "u1,<f8")
    rec["f1"] = np.arange(50_000) // 100
    A = rec["f1"]  # itemsize 8, stride 9: a span of 449,999 bytes
    _, payload = _frames(A, "zstd", inproc_pair)
    nbytes = expected_wire(A)[2]
    assert nbytes % 8 != 0
    span = memoryview(rec).cast("B")[1 : 1 + nbytes].tobytes()
    assert payload == encode_reference(span, "zstd", 8, True)
    sender, receiver = inproc_pair
    zarray.send_array(sender, A, compress="zstd")
    B = zarray.recv_array(receiver)
    np.testing.assert_array_equal(B, A)
    assert B.flags.aligned


def test_levels_and_noshuffle(inproc_pair: Pair) -> None:
    A = (np.arange(200_000) % 1000).astype("<i4")
    _, one = _frames(A, ("zstd", 1), inproc_pair)
    _, nine = _frames(A, ("zstd", 9), inproc_pair)
    header, plain = _frames(A, ("zstd", None, False), inproc_pair)
    assert header[12] == 0
    assert one == encode_reference(A.tobytes(), "zstd", 4, True)
    assert plain == encode_reference(A.tobytes(), "zstd", 4, False)
    assert one != nine
    sender, receiver = inproc_pair
    for spec in (("zstd", 9), ("zstd", -5), ("zstd", None, False), ("lz4", None, True)):
        zarray.send_array(sender, A, compress=spec)
        np.testing.assert_array_equal(zarray.recv_array(receiver), A)


# -- the compress= argument ---------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "codec", "level", "shuffle", "auto"),
    [
        ("lz4", "lz4", None, True, False),
        ("zstd", "zstd", None, True, False),
        (("zstd", 5), "zstd", 5, True, False),
        (("zstd", None, False), "zstd", None, False, False),
        (("lz4", None), "lz4", None, True, False),
        ("auto", "lz4", None, True, True),
        (("auto", None, False), "lz4", None, False, True),
    ],
)
def test_spec(spec: Any, codec: str, level: int | None, shuffle: bool, auto: bool) -> None:
    c = _codecs.compression(spec)
    assert (c.codec.name, c.level, c.shuffle, c.auto) == (codec, level, shuffle, auto)


@pytest.mark.parametrize(
    ("spec", "error", "match"),
    [
        ("gzip", ValueError, "unknown codec 'gzip'"),
        ("LZ4", ValueError, "unknown codec"),
        (("zstd", 23), ValueError, "outside -131072..22"),
        (("lz4", 3), ValueError, "lz4 takes no level"),
        (("auto", 3), ValueError, "'auto' chooses its own level"),
        (("zstd", True), TypeError, "level must be an int"),
        (("zstd", 1.5), TypeError, "level must be an int"),
        (("zstd", 1, "yes"), TypeError, "shuffle must be True or False"),
        (("zstd",), TypeError, "compress must be"),
        (("zstd", 1, True, 4), TypeError, "compress must be"),
        (["zstd", 1], TypeError, "compress must be"),
        (3, TypeError, "compress must be"),
        ((3, 1), TypeError, "codec name must be a str"),
    ],
)
def test_bad_spec(inproc_pair: Pair, spec: Any, error: type, match: str) -> None:
    sender, receiver = inproc_pair
    with pytest.raises(error, match=match):
        zarray.send_array(sender, np.zeros(10), compress=spec)
    with pytest.raises(error, match=match):
        zarray.Socket(sender).compress = spec
    assert not receiver.poll(0), "nothing may have been sent"


def test_json_format_refuses_compress(inproc_pair: Pair) -> None:
    with pytest.raises(ValueError, match="need zarray's own format"):
        zarray.send_array(inproc_pair[0], np.zeros(10), format="json", compress="lz4")


# -- "auto" ---------------------------------------------------------------------------


def _compressible(n: int = 1 << 18) -> NDArray:
    return (np.arange(n) // 64 % 50).astype("<u2")


@pytest.mark.parametrize("transport", ["inproc", "ipc"])
def test_auto_never_on_this_host(make_pair: SocketMaker, transport: str) -> None:
    """Over inproc and ipc, "auto" sends the payload as it is: zero-copy, tracked."""
    sender, receiver = make_pair.pair(transport)
    A = _compressible()
    tracker = zarray.send_array(sender, A, compress="auto")
    header, payload = receiver.recv_multipart(copy=False)
    assert header.bytes[6] == 0
    assert len(payload.buffer) == A.nbytes
    if transport == "inproc":
        # Zero-copy: the received frame is the sender's memory.
        assert np.shares_memory(np.frombuffer(payload.buffer, np.uint8), A)
    del header, payload
    assert tracker is not None
    tracker.wait(10)


def test_auto_on_tcp(make_pair: SocketMaker) -> None:
    """Over tcp, "auto" compresses what shrinks to 0.7 and leaves the rest alone."""
    sender, receiver = make_pair.pair("tcp")
    cases = {
        "compressible": (_compressible(), True),
        "random float64": (np.random.default_rng(0).random(1 << 16), False),
        "small": (_compressible(1000), False),  # under AUTO_MIN_BYTES
        "empty": (np.zeros((0, 4)), False),
        "random bytes": (make_array("u1", (1 << 17,)), False),
    }
    for name, (A, compressed) in cases.items():
        tracker = zarray.send_array(sender, A, compress="auto")
        header, payload = receiver.recv_multipart()
        assert (header[6] != 0) is compressed, name
        assert (len(payload) < 0.7 * A.nbytes) is compressed, name
        assert tracker is not None
        if compressed:
            assert tracker.done
        zarray.send_array(sender, A, compress="auto")
        np.testing.assert_array_equal(zarray.recv_array(receiver), A)


def test_auto_keeps_only_what_pays_in_whole(make_pair: SocketMaker) -> None:
    """The samples say yes, the whole payload says no: it goes uncompressed."""
    sender, receiver = make_pair.pair("tcp")
    n = 1 << 20
    A = make_array("u1", (n,), seed=5)  # random...
    each = min(max(n // 64, 1 << 12), 1 << 16) // 4
    step = (n - each) // 3
    for k in range(4):
        A[k * step : k * step + each] = 0  # ...but where the samples are taken
    zarray.send_array(sender, A, compress="auto")
    header, payload = receiver.recv_multipart()
    assert header[6] == 0
    assert len(payload) == n


def test_auto_is_off_with_a_pool_setting_absent(make_pair: SocketMaker) -> None:
    """A socket's compress setting applies to its sends; None turns it off again."""
    sender, receiver = make_pair.pair("tcp")
    sock = zarray.Socket(sender)
    A = _compressible()
    sock.compress = "zstd"
    assert sock.compress == "zstd"
    sock.send_array(A)
    header, _ = receiver.recv_multipart()
    assert header[6] == CODEC_IDS["zstd"]
    sock.send_array(A, compress="lz4")  # the call overrides the socket
    header, _ = receiver.recv_multipart()
    assert header[6] == CODEC_IDS["lz4"]
    sock.send_arrays([A, A[:10]])
    frames = receiver.recv_multipart()
    assert [frames[1][6], frames[3][6]] == [2, 2]
    sock.compress = None
    sock.send_array(A)
    header, _ = receiver.recv_multipart()
    assert header[6] == 0


# -- several arrays, envelopes, out=, deserialize -------------------------------------


def test_send_arrays(make_pair: SocketMaker) -> None:
    sender, receiver = make_pair.pair("tcp")
    arrays = {
        "image": _compressible(),
        "noise": np.random.default_rng(1).random(1 << 15),
        "empty": np.zeros(0, "<f4"),
        "fortran": np.asfortranarray(np.arange(60000.0).reshape(200, 300)),
        "scalar": np.array(3.5),
    }
    tracker = zarray.send_arrays(
        sender, arrays, meta={"n": 1}, envelope=[b"topic"], compress="zstd"
    )
    assert tracker is not None
    assert tracker.done
    env, (got, meta) = zarray.recv_arrays(receiver, envelope=True)
    assert env == [b"topic"]
    assert meta == {"n": 1}
    assert list(got) == list(arrays)
    for name, A in arrays.items():
        assert isinstance(got, dict)
        np.testing.assert_array_equal(got[name], A)
        assert got[name].strides == A.strides or A.size == 0


@pytest.mark.parametrize("transport", ["inproc", "tcp"])
@pytest.mark.parametrize("spec", list(SPECS))
@pytest.mark.parametrize("layout", ["C", "F", "reversed", "broadcast", "blocks-C"])
def test_recv_into_out(make_pair: SocketMaker, transport: str, spec: str, layout: str) -> None:
    """out=: a C-layout payload is decompressed straight into out; others once via a
    decompressed buffer; out is returned, C-contiguous and writeable."""
    sender, receiver = make_pair.pair(transport)
    A = CLAYOUTS[layout](np.dtype(">f8"))
    if layout == "broadcast":
        A = np.broadcast_to(A, A.shape)  # read-only: out stays writeable
    out = np.full(A.shape, -1.0, ">f8")
    zarray.send_array(sender, A, compress=SPECS[spec])
    got = zarray.recv_array(receiver, out=out)
    assert got is out
    np.testing.assert_array_equal(out, A)
    assert out.flags.writeable
    assert out.flags.c_contiguous


def test_recv_into_out_allocates_only_a_block(make_pair: SocketMaker) -> None:
    """out= with a C-layout payload: no allocation of the array's size (tracemalloc)."""
    sender, receiver = make_pair.pair("tcp")
    A = _compressible(8 * MiB // 2)
    out = np.empty_like(A)
    for _ in range(2):  # the first receive warms up the scratch block
        zarray.send_array(sender, A, compress="zstd")
        tracemalloc.start()
        try:
            zarray.recv_array(receiver, out=out)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    np.testing.assert_array_equal(out, A)
    assert peak < A.nbytes // 4, peak


def test_deserialize(inproc_pair: Pair) -> None:
    sender, receiver = inproc_pair
    A = _compressible()
    zarray.send_array(sender, A, compress="lz4")
    frames = receiver.recv_multipart(copy=False)
    np.testing.assert_array_equal(zarray.deserialize(frames), A)
    B = zarray.deserialize([f.bytes for f in frames], copy=True)
    np.testing.assert_array_equal(B, A)
    assert B.flags.writeable


# -- bad input ----------------------------------------------------------------------

SENTINEL = np.arange(12, dtype="<i4").reshape(3, 4)


def _header(nbytes: int, codec: int = 2, filt: int = 0, itemsize: int = 1) -> bytes:
    """A header for a uint8 (or wider) 1-d array of ``nbytes`` bytes with a codec."""
    descr = {1: b"|u1", 2: b"<u2", 4: b"<u4", 8: b"<u8"}[itemsize]
    h = bytearray(
        build_header(descr, (nbytes // itemsize,), (itemsize,), itemsize, nbytes, codec=codec)
    )
    h[12] = filt
    return bytes(h)


def _refused(pair: Pair, frames: list[bytes], match: str, out: NDArray | None = None) -> str:
    """recv_array refuses ``frames`` with HeaderError and is at the next message."""
    sender, receiver = pair
    sender.send_multipart(frames)
    zarray.send_array(sender, SENTINEL)
    with pytest.raises(zarray.HeaderError, match=match) as info:
        zarray.recv_array(receiver, out=out)
    np.testing.assert_array_equal(zarray.recv_array(receiver), SENTINEL)
    assert not receiver.poll(0)
    return str(info.value)


N = 3 * BLOCK + 1000
DATA = (np.arange(N) // 300 % 7).astype(np.uint8).tobytes()
ZBLOCKS = [(False, compress_block("zstd", DATA[i : i + BLOCK])) for i in range(0, N, BLOCK)]
LBLOCKS = [(False, compress_block("lz4", DATA[i : i + BLOCK])) for i in range(0, N, BLOCK)]
LAST = N - 3 * BLOCK


def _entries(blocks: list[tuple[bool, bytes]]) -> list[int]:
    return [(RAW if raw else 0) | len(d) for raw, d in blocks]


BAD_FRAMES: dict[str, tuple[int, bytes, str]] = {
    "shorter-than-fixed": (2, b"\x00" * 15, "shorter than its 16-byte framing"),
    "empty": (2, b"", "shorter than its 16-byte framing"),
    "declares-other-size": (2, build_frame(N, ZBLOCKS, declared=N + 1), "declares"),
    "block-too-small": (2, build_frame(N, ZBLOCKS, block=4095), "block size 4095 is outside"),
    "block-too-large": (2, build_frame(N, ZBLOCKS, block=1 << 25), "is outside"),
    "block-count": (2, build_frame(N, ZBLOCKS, count=3), "has 3 blocks"),
    "table-truncated": (2, build_frame(N, ZBLOCKS)[: 16 + 10], "too short for its table"),
    "raw-length": (
        2,
        build_frame(N, ZBLOCKS, entries=[RAW | (BLOCK - 1), *_entries(ZBLOCKS)[1:]]),
        r"block 0 \(stored raw\) is 262143 bytes for 262144",
    ),
    "compressed-zero": (
        2,
        build_frame(N, [(False, b""), *ZBLOCKS[1:]]),
        r"block 0 \(compressed\) is 0 bytes",
    ),
    "compressed-not-smaller": (
        2,
        build_frame(N, [*ZBLOCKS[:3], (False, DATA[-LAST:])]),
        rf"block 3 \(compressed\) is {LAST} bytes for {LAST}",
    ),
    "trailing-bytes": (2, build_frame(N, ZBLOCKS, tail=b"\x00"), "but its table says"),
    "missing-bytes": (2, build_frame(N, ZBLOCKS)[:-1], "but its table says"),
    "zstd-bad-magic": (
        2,
        build_frame(N, [(False, b"\x00" + ZBLOCKS[0][1][1:]), *ZBLOCKS[1:]]),
        r"block 0 is corrupt \(zstd: not a zstd frame\)",
    ),
    "zstd-other-content-size": (
        2,
        build_frame(N, [(False, compress_block("zstd", DATA[: BLOCK - 1])), *ZBLOCKS[1:]]),
        rf"block 0 is corrupt \(zstd: frame declares {BLOCK - 1} bytes\)",
    ),
    "zstd-truncated-block": (
        2,
        build_frame(N, [(False, ZBLOCKS[0][1][:-3]), *ZBLOCKS[1:]]),
        "block 0 is corrupt",
    ),
    "zstd-no-content-size": (
        2,
        build_frame(
            N,
            [*ZBLOCKS[:3], (False, b"\x28\xb5\x2f\xfd\x00\x58" + b"\x01\x00\x00")],
        ),
        r"block 3 is corrupt \(zstd: not a zstd frame\)",
    ),
    "lz4-garbage": (1, build_frame(N, [(False, b"\xff" * 40), *LBLOCKS[1:]]), "corrupt"),
    "lz4-decodes-short": (
        1,
        build_frame(N, [*LBLOCKS[:3], (False, compress_block("lz4", DATA[-LAST:-1]))]),
        f"block 3 decompresses to {LAST - 1} bytes, not {LAST}",
    ),
    "lz4-decodes-long": (
        1,
        build_frame(N, [*LBLOCKS[:3], (False, compress_block("lz4", DATA[-LAST:] + b"x"))]),
        "block 3 is corrupt",
    ),
    "lz4-block-as-zstd": (2, build_frame(N, LBLOCKS), "block 0 is corrupt"),
}


@pytest.mark.parametrize("case", list(BAD_FRAMES))
@pytest.mark.parametrize("receive", ["view", "out"])
def test_bad_frames(inproc_pair: Pair, case: str, receive: str) -> None:
    codec, frame, match = BAD_FRAMES[case]
    out = np.empty(N, np.uint8) if receive == "out" else None
    _refused(inproc_pair, [_header(N, codec), frame], match, out)


def test_good_frame_built_by_hand(inproc_pair: Pair) -> None:
    """The hand-built frames above are refused for their one flaw: unflawed, they are
    accepted (raw, lz4 and zstd blocks mixed, with a shuffled multi-byte dtype)."""
    sender, receiver = inproc_pair
    for codec, blocks in ((2, ZBLOCKS), (1, LBLOCKS)):
        sender.send_multipart([_header(N, codec), build_frame(N, blocks)])
        np.testing.assert_array_equal(zarray.recv_array(receiver), np.frombuffer(DATA, "u1"))
    mixed = [(True, DATA[:BLOCK]), LBLOCKS[1], (True, DATA[2 * BLOCK : 3 * BLOCK]), LBLOCKS[3]]
    sender.send_multipart([_header(N, 1), build_frame(N, mixed)])
    np.testing.assert_array_equal(zarray.recv_array(receiver), np.frombuffer(DATA, "u1"))
    A = (np.arange(N // 4) % 1000).astype("<u4")
    block = 4 * (BLOCK // 4)
    raw = A.tobytes()
    blocks = [
        (False, compress_block("zstd", shuffled(raw[i : i + block], 4)))
        for i in range(0, len(raw), block)
    ]
    sender.send_multipart([_header(A.nbytes, 2, 1, 4), build_frame(A.nbytes, blocks, block)])
    np.testing.assert_array_equal(zarray.recv_array(receiver), A)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({6: 3}, "unknown codec id 3"),
        ({12: 2}, "unknown filter id 2"),
        ({6: 0, 12: 1}, "filter 1 is set without a codec"),
        ({7: 1}, "shared-memory payload cannot be compressed"),
    ],
)
def test_bad_encoding_bytes(inproc_pair: Pair, change: dict[int, int], match: str) -> None:
    header = bytearray(_header(N, 2))
    for pos, value in change.items():
        header[pos] = value
    _refused(inproc_pair, [bytes(header), build_frame(N, ZBLOCKS)], match)


def test_multi_array_message_names_the_array(inproc_pair: Pair) -> None:
    sender, receiver = inproc_pair
    zarray.send_arrays(sender, {"a": _compressible(), "b": _compressible()}, compress="zstd")
    frames = receiver.recv_multipart()
    frames[4] = frames[4][:-1]
    sender.send_multipart(frames)
    zarray.send_array(sender, SENTINEL)
    with pytest.raises(zarray.HeaderError, match=r"array 1 \('b'\): compressed payload"):
        zarray.recv_arrays(receiver)
    np.testing.assert_array_equal(zarray.recv_array(receiver), SENTINEL)


def test_mutated_frames_never_escape(inproc_pair: Pair) -> None:
    """Flipped, truncated and extended bytes anywhere in a real compressed message give
    HeaderError or an array of the header's dtype and shape, never anything else
    (the fuzzers do this at scale)."""
    sender, receiver = inproc_pair
    A = (np.arange(BLOCK // 2 + 500) % 300).astype("<u2")
    rng = np.random.default_rng(11)
    for spec in ("lz4", "zstd"):
        zarray.send_array(sender, A, compress=spec)
        header, payload = receiver.recv_multipart()
        for trial in range(150):
            frame = bytearray(payload)
            how = trial % 3
            if how == 0:
                for pos in rng.integers(0, len(frame), 1 + trial % 4):
                    frame[pos] ^= int(rng.integers(1, 256))
            elif how == 1:
                del frame[int(rng.integers(0, len(frame))) :]
            else:
                frame[int(rng.integers(0, len(frame))) :] += bytes(int(rng.integers(1, 9)))
            sender.send_multipart([header, bytes(frame)])
            try:
                B = zarray.recv_array(receiver)
            except zarray.HeaderError:
                continue
            assert B.shape == A.shape
            assert B.dtype == A.dtype
            assert B.flags.aligned


# -- the decompressed-size limit --------------------------------------------------------


def _peak(fn: Callable[[], Any]) -> int:
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        try:
            fn()
        except zarray.HeaderError:
            pass
        return tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()


def test_bomb_refused_before_allocation(inproc_pair: Pair) -> None:
    """A 100-byte message claiming 64 GiB of zeros is refused, and nothing is allocated."""
    sender, receiver = inproc_pair
    claim = 64 << 30
    frame = build_frame(claim, [], block=1 << 24, count=claim >> 24)[:100]
    header = _header(claim, 2)
    assert len(header) + len(frame) < 200
    msg = _refused(inproc_pair, [header, frame], "over the receiver's limit of 1073741824")
    assert "max_decompressed_bytes" in msg
    sender.send_multipart([header, frame])
    assert _peak(lambda: zarray.recv_array(receiver)) < 1 << 20


def test_limit_is_a_module_default(inproc_pair: Pair, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lower it and a genuine payload over it is refused; raise it and the forged one
    is refused for its framing instead (the table is too short), still unallocated."""
    sender, receiver = inproc_pair
    assert zarray.limits.max_decompressed_bytes == 1 << 30
    A = _compressible(1 << 20)
    monkeypatch.setattr(zarray.limits, "max_decompressed_bytes", A.nbytes - 1)
    zarray.send_array(sender, A, compress="zstd")
    with pytest.raises(zarray.HeaderError, match=f"limit of {A.nbytes - 1}"):
        zarray.recv_array(receiver)
    # out= writes into the caller's memory: the limit does not apply
    out = np.empty_like(A)
    zarray.send_array(sender, A, compress="zstd")
    np.testing.assert_array_equal(zarray.recv_array(receiver, out=out), A)
    monkeypatch.setattr(zarray.limits, "max_decompressed_bytes", A.nbytes)
    zarray.send_array(sender, A, compress="zstd")
    np.testing.assert_array_equal(zarray.recv_array(receiver), A)
    monkeypatch.setattr(zarray.limits, "max_decompressed_bytes", 1 << 40)
    claim = 64 << 30
    frame = build_frame(claim, [], block=1 << 24, count=claim >> 24)[:100]
    _refused(inproc_pair, [_header(claim, 2), frame], "too short for its table")
    sender.send_multipart([_header(claim, 2), frame])
    assert _peak(lambda: zarray.recv_array(receiver)) < 1 << 20


def test_zeros_bomb_within_the_limit(inproc_pair: Pair) -> None:
    """A consistent frame of 64 MiB of zeros (a few KiB on the wire) decompresses to the
    64 MiB its header declares, no more: the cost is the array it declares."""
    sender, receiver = inproc_pair
    zero = compress_block("zstd", bytes(1 << 24))
    nbytes = 4 << 24
    frame = build_frame(nbytes, [(False, zero)] * 4, block=1 << 24)
    assert len(frame) < 10_000
    sender.send_multipart([_header(nbytes, 2), frame])
    B = zarray.recv_array(receiver)
    assert B.nbytes == nbytes
    assert not B.any()


# -- without the compress extra ----------------------------------------------------------

_NO_EXTRA = textwrap.dedent(
    """
    import json, sys
    sys.modules["cramjam"] = None  # what a Python without the extra sees: ImportError
    import numpy as np, zmq, zarray

    report = {}
    try:
        zarray.send_array(None, np.zeros(3), compress="lz4")
    except ImportError as exc:
        report["send"] = str(exc)
    try:
        zarray.Socket(zmq.Context.instance().socket(zmq.PUSH)).compress = "auto"
    except ImportError as exc:
        report["socket"] = str(exc)
    ctx = zmq.Context.instance()
    pull = ctx.socket(zmq.PULL)
    pull.rcvtimeo = 10000
    pull.linger = 0
    pull.connect(sys.argv[1])
    received = []
    for how in ("recv_array", "out", "recv_arrays", "recv_array"):
        try:
            if how == "recv_arrays":
                zarray.recv_arrays(pull)
            elif how == "out":
                zarray.recv_array(pull, out=np.empty(70000, "<u2"))
            else:
                zarray.recv_array(pull)
            received.append([how, "accepted"])
        except zarray.HeaderError as exc:
            received.append([how, str(exc)])
        sentinel = zarray.recv_array(pull)  # the socket is at the next message
        received.append(["sentinel", sentinel.tolist()])
    report["received"] = received
    report["left"] = pull.poll(0)
    print(json.dumps(report))
    """
)


def test_without_the_extra(make_pair: SocketMaker, tmp_path: Path) -> None:
    """Without cramjam: asking to compress raises ImportError naming the install command;
    receiving a compressed message raises HeaderError saying the same, after draining it
    (recv_array, out= and recv_arrays); uncompressed messages still arrive."""
    push = make_pair.socket(zmq.PUSH)
    port = push.bind_to_random_port("tcp://127.0.0.1")
    proc = subprocess.Popen(
        [sys.executable, "-c", _NO_EXTRA, f"tcp://127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        A = _compressible(70000)
        sentinel = np.arange(3)
        for k in range(4):
            if k == 2:
                zarray.send_arrays(push, [A, sentinel], compress="zstd")
            else:
                zarray.send_array(push, A, compress="lz4" if k % 2 else "zstd")
            zarray.send_array(push, sentinel)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    report = json.loads(out)
    install = 'pip install "zarray[compress]"'
    assert install in report["send"]
    assert install in report["socket"]
    received = report["received"]
    assert [r[0] for r in received] == [
        "recv_array",
        "sentinel",
        "out",
        "sentinel",
        "recv_arrays",
        "sentinel",
        "recv_array",
        "sentinel",
    ]
    for how, what in received:
        if how == "sentinel":
            assert what == [0, 1, 2]
        else:
            assert install in what, what
    assert "compressed with zstd" in received[0][1]
    assert "compressed with lz4" in received[2][1]
    assert received[4][1].startswith("array 0:")
    assert report["left"] == 0


# -- the shuffle kernels: compiled and numpy twin --------------------------------------

needs_compiled = pytest.mark.skipif(_shuffle is None, reason="zarray._shuffle is not built")


@needs_compiled
@pytest.mark.parametrize("itemsize", [1, 2, 3, 4, 5, 7, 8, 12, 16, 32, 1000])
def test_shuffle_twins(itemsize: int) -> None:
    rng = np.random.default_rng(itemsize)
    for length in (0, 1, itemsize - 1, itemsize, 3 * itemsize + 1, 4096, 65_536 + 13):
        if length < 0:
            continue
        src = rng.integers(0, 256, length, dtype=np.uint8)
        a, b = np.empty_like(src), np.empty_like(src)
        _shuffle.shuffle(src, a, itemsize)
        _shuffle_py.shuffle(src, b, itemsize)
        assert a.tobytes() == b.tobytes() == shuffled(src.tobytes(), itemsize)
        c, d = np.empty_like(src), np.empty_like(src)
        _shuffle.unshuffle(a, c, itemsize)
        _shuffle_py.unshuffle(a, d, itemsize)
        assert c.tobytes() == d.tobytes() == src.tobytes()


@needs_compiled
@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((np.zeros(4, np.uint8), np.zeros(5, np.uint8), 2), ValueError),
        ((np.zeros(4, np.uint8), np.zeros(4, np.uint8), 0), ValueError),
        ((np.zeros(4, np.uint8), np.zeros(4, np.uint8)[::-1], 2), ValueError),
        ((np.zeros(4, np.uint8), bytes(4), 2), BufferError),
    ],
)
def test_shuffle_twins_refuse_alike(args: tuple[Any, ...], error: Any) -> None:
    for kernel in (_shuffle, _shuffle_py):
        for fn in (kernel.shuffle, kernel.unshuffle):
            with pytest.raises(error):
                fn(*args)


@needs_compiled
@pytest.mark.parametrize("dtype", ["<u2", "<f4", ">f8", "<c16", "|S5", "rec-nested>"])
def test_decoders_agree(inproc_pair: Pair, dtype: str) -> None:
    """The decoder with the compiled and with the numpy unshuffle: the same bytes."""
    sender, receiver = inproc_pair
    A = _multi_block(DTYPES[dtype])
    zarray.send_array(sender, A, compress="zstd")
    header, payload = receiver.recv_multipart()
    fields = zarray._codec.unpack(header)
    a = _codecs.decode(fields, payload, _shuffle.unshuffle)
    b = _codecs.decode(fields, payload, _shuffle_py.unshuffle)
    assert a.tobytes() == b.tobytes() == A.tobytes()


def test_pure_python_sender_writes_the_same_frames(inproc_pair: Pair) -> None:
    """ZARRAY_PUREPYTHON=1 (the numpy shuffle, the pure-Python header codec) writes the
    same frames, byte for byte, as this process."""
    code = textwrap.dedent(
        """
        import sys, numpy as np, zmq, zarray
        from zarray import _codecs
        assert _codecs.SHUFFLE_IMPLEMENTATION == "python", _codecs.SHUFFLE_IMPLEMENTATION
        ctx = zmq.Context()
        a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
        b.bind("inproc://x"); a.connect("inproc://x")
        A = (np.arange(300_000) // 9 % 400).astype(sys.argv[1])
        for spec in ("lz4", "zstd", ("zstd", None, False)):
            zarray.send_array(a, A, compress=spec)
            header, payload = b.recv_multipart()
            sys.stdout.buffer.write(header + payload)
        """
    )
    sender, receiver = inproc_pair
    for dtype in ("<u2", ">f8", "<c8"):
        env = {**os.environ, "ZARRAY_PUREPYTHON": "1"}
        proc = subprocess.run(
            [sys.executable, "-c", code, dtype], env=env, capture_output=True, timeout=120
        )
        assert proc.returncode == 0, proc.stderr.decode()
        A = (np.arange(300_000) // 9 % 400).astype(dtype)
        mine = b""
        for spec in ("lz4", "zstd", ("zstd", None, False)):
            zarray.send_array(sender, A, compress=spec)
            mine += b"".join(receiver.recv_multipart())
        assert proc.stdout == mine


# -- asyncio -------------------------------------------------------------------------


class _CountingExecutor(concurrent.futures.ThreadPoolExecutor):
    """A real thread pool that remembers the threads its jobs ran in."""

    def __init__(self) -> None:
        super().__init__(max_workers=2)
        self.jobs: list[tuple[str, int]] = []
        self._lock = threading.Lock()

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        def job() -> Any:
            with self._lock:
                self.jobs.append((getattr(fn, "__name__", "?"), threading.get_ident()))
            return fn(*args, **kwargs)

        return super().submit(job)


@pytest.mark.asyncio
@pytest.mark.parametrize("transport", ["inproc", "tcp"])
async def test_asyncio(tmp_path: Path, transport: str) -> None:
    """Compression and decompression run in the loop's executor, off its thread; the
    arrays arrive intact, out= included; uncompressed messages stay on the loop."""
    loop = asyncio.get_running_loop()
    executor = _CountingExecutor()
    loop.set_default_executor(executor)
    ctx = zarray.asyncio.Context()
    push, pull = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    for s in (push, pull):
        s.linger = 0
        s.rcvtimeo = s.sndtimeo = GUARD_MS
    try:
        if transport == "tcp":
            port = pull.bind_to_random_port("tcp://127.0.0.1")
            push.connect(f"tcp://127.0.0.1:{port}")
        else:
            pull.bind("inproc://asyncio-compress")
            push.connect("inproc://asyncio-compress")
        A = _compressible()
        push.compress = "zstd"
        tracker = await push.send_array(A)
        assert tracker is not None
        assert tracker.done
        np.testing.assert_array_equal(await pull.recv_array(), A)
        await push.send_arrays({"a": A, "b": A[::-1]}, compress="lz4")
        got, _ = await pull.recv_arrays()
        assert isinstance(got, dict)
        np.testing.assert_array_equal(got["b"], A[::-1])
        out = np.empty_like(A)
        await push.send_array(A)
        assert await pull.recv_array(out=out) is out
        np.testing.assert_array_equal(out, A)
        ran = len(executor.jobs)
        assert ran == 6, executor.jobs  # 3 sends + 3 receives
        assert all(tid != threading.get_ident() for _, tid in executor.jobs)
        push.compress = None
        await push.send_array(A)
        np.testing.assert_array_equal(await pull.recv_array(), A)
        assert len(executor.jobs) == ran, "uncompressed messages never leave the loop"
        # A bad compressed message: HeaderError, and the socket at the next message.
        await push.send_array(A, compress="zstd")
        header, payload = await pull.recv_multipart()
        await push.send_multipart([header, payload[:-1]])
        await push.send_array(SENTINEL)
        with pytest.raises(zarray.HeaderError, match="but its table says"):
            await pull.recv_array()
        np.testing.assert_array_equal(await pull.recv_array(), SENTINEL)
    finally:
        push.close(linger=0)
        pull.close(linger=0)
        ctx.term()
        executor.shutdown()


@pytest.mark.asyncio
async def test_asyncio_auto_resolves_the_transport_on_the_loop(tmp_path: Path) -> None:
    """ "auto" reads the socket's endpoint in the loop's thread: over ipc nothing goes to
    the executor and the payload is sent as it is."""
    loop = asyncio.get_running_loop()
    executor = _CountingExecutor()
    loop.set_default_executor(executor)
    ctx = zarray.asyncio.Context()
    push, pull = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    for s in (push, pull):
        s.linger = 0
        s.rcvtimeo = s.sndtimeo = GUARD_MS
    try:
        endpoint = f"ipc://{tmp_path}/a" if len(str(tmp_path)) < 80 else "ipc:///tmp/zarray-ac"
        pull.bind(endpoint)
        push.connect(endpoint)
        await push.send_array(_compressible(), compress="auto")
        header, _ = await pull.recv_multipart()
        assert header[6] == 0
        assert executor.jobs == []
    finally:
        push.close(linger=0)
        pull.close(linger=0)
        ctx.term()
        executor.shutdown()
