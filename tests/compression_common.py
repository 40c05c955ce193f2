"""Checkers and hand-built frames for the compressed-payload tests (issue 11).

``build_frame`` writes a compressed payload frame from the byte table of docs/FORMAT.md
("Compressed payloads"), independently of ``zarray._codecs``, so that the tests can pin
the format and forge every kind of bad frame. ``check_compressed`` sends an array with
``compress=`` over a real socket pair and checks the wire and the received array.
"""

from __future__ import annotations

import struct
from typing import Any

import cramjam
import numpy as np
import zmq
from common import address, base_chain, check_received, expected_wire

import zarray

NDArray = np.ndarray[Any, Any]

# -- the format, from docs/FORMAT.md ---------------------------------------------------

CODEC_IDS = {"lz4": 1, "zstd": 2}
FILTER_SHUFFLE = 1
RAW = 1 << 31
FIXED = struct.Struct("<QII")  # nbytes, block size, block count
BLOCK = 1 << 18  # the sender's block size (whole elements when shuffled)

#: The compress= specs of the round-trip matrix: each codec, with and without shuffle.
SPECS: dict[str, Any] = {
    "lz4": "lz4",
    "lz4-noshuffle": ("lz4", None, False),
    "zstd": "zstd",
    "zstd-noshuffle": ("zstd", None, False),
}


def shuffled(data: bytes, itemsize: int) -> bytes:
    """The byte shuffle of FORMAT.md, written with plain Python slicing."""
    if itemsize <= 1:
        return data
    n = len(data) // itemsize
    whole = data[: n * itemsize]
    return b"".join(whole[j::itemsize] for j in range(itemsize)) + data[n * itemsize :]


def compress_block(codec: str, data: bytes, level: int = 1) -> bytes:
    if codec == "lz4":
        return bytes(cramjam.lz4.compress_block(data, store_size=False))
    return bytes(cramjam.zstd.compress(data, level=level))


def build_frame(
    nbytes: int,
    blocks: list[tuple[bool, bytes]],
    block: int = BLOCK,
    *,
    declared: int | None = None,
    count: int | None = None,
    entries: list[int] | None = None,
    tail: bytes = b"",
) -> bytes:
    """A payload frame: fixed part, table, block bytes; every field can be forged.

    ``blocks`` is ``[(stored_raw, bytes), ...]``; the table entries are derived from it
    unless ``entries`` is given.
    """
    if entries is None:
        entries = [(RAW if raw else 0) | len(data) for raw, data in blocks]
    fixed = FIXED.pack(
        nbytes if declared is None else declared, block, len(blocks) if count is None else count
    )
    table = b"".join(struct.pack("<I", e) for e in entries)
    return fixed + table + b"".join(data for _, data in blocks) + tail


def encode_reference(
    data: bytes, codec: str, itemsize: int, shuffle: bool, block: int = BLOCK
) -> bytes:
    """The frame FORMAT.md prescribes for ``data`` (what zarray's sender must write)."""
    size = itemsize if shuffle and itemsize > 1 else 1
    if size > 1:
        block = size * max(1, block // size)
    blocks = []
    for start in range(0, len(data), block):
        chunk = data[start : start + block]
        packed = compress_block(codec, shuffled(chunk, size))
        blocks.append((True, chunk) if len(packed) >= len(chunk) else (False, packed))
    return build_frame(len(data), blocks, block)


# -- round trips -----------------------------------------------------------------------


def expected_encoding(A: NDArray, spec: Any) -> tuple[int, int]:
    """``(codec id, filter id)`` the header must carry for ``A`` sent with ``spec``."""
    name = spec if isinstance(spec, str) else spec[0]
    shuffle = True if isinstance(spec, str) or len(spec) < 3 else spec[2]
    return CODEC_IDS[name], FILTER_SHUFFLE if shuffle and A.dtype.itemsize > 1 else 0


def check_compressed(
    A: NDArray,
    sender: zmq.Socket[Any],
    receiver: zmq.Socket[Any],
    spec: Any,
    *,
    copy: bool = False,
) -> NDArray:
    """Send A compressed, look at the frames, receive it again, check everything.

    The header differs from ``pack_header(A)`` in bytes 6 (codec) and 12 (filter) only,
    so ``nbytes`` is the uncompressed span; an empty payload travels uncompressed; the
    received array is what :func:`common.check_received` demands, decompressed into
    one fresh 64-byte aligned buffer of exactly ``nbytes``.
    """
    plain = zarray.pack_header(A)
    nbytes = expected_wire(A)[2]
    tracker = zarray.send_array(sender, A, compress=spec)
    assert tracker is not None
    assert tracker.done, "a compressed payload is zarray's own copy"
    header, payload = receiver.recv_multipart()
    codec, filt = expected_encoding(A, spec) if nbytes else (0, 0)
    assert header[6] == codec
    assert header[12] == filt
    assert header[:6] + header[7:12] + header[13:] == plain[:6] + plain[7:12] + plain[13:]
    if codec:
        assert FIXED.unpack_from(payload)[0] == nbytes
        assert len(payload) <= 16 + 4 * -(-nbytes // 4096) + nbytes
    zarray.send_array(sender, A, compress=spec)
    B = zarray.recv_array(receiver, copy=copy)
    check_received(A, B, copy=copy)
    if codec and B.size:
        # The array views the one buffer its payload was decompressed into: allocated
        # with at most 63 bytes to spare, and the payload starts 64-byte aligned in it.
        owner = base_chain(B)[-1]
        assert isinstance(owner, np.ndarray)
        assert owner.flags.owndata
        assert owner.flags.writeable
        assert nbytes <= owner.nbytes < nbytes + 64
        start = address(B) - expected_wire(A)[1]  # element 0 lies at the offset
        assert start % 64 == 0
    return B
