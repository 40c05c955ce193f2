"""A second, deliberately plain decoder of compressed payloads, written from
docs/FORMAT.md ("Compressed payloads") and not from ``zarray._codecs``: the fuzzers'
reference model for what ``recv_array`` must accept and what it must return.

It uses cramjam for the codecs themselves (the one thing it shares with zarray) and
plain Python slicing for the framing and the shuffle filter.
"""

from __future__ import annotations

import struct
from typing import Any

import zarray

FIXED = struct.Struct("<QII")
RAW = 1 << 31
MIN_BLOCK, MAX_BLOCK = 1 << 12, 1 << 24
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _zstd_declared(block: bytes) -> int | None:
    """The content size of the zstd frame header at the start of ``block`` (RFC 8878)."""
    if len(block) < 5 or block[:4] != ZSTD_MAGIC:
        return None
    fhd = block[4]
    fcs_flag = fhd >> 6
    single = fhd & 0x20
    if fhd & 0x08 or (fcs_flag == 0 and not single):
        return None
    pos = 5 + (0 if single else 1) + [0, 1, 2, 4][fhd & 3]
    width = [1, 2, 4, 8][fcs_flag]
    if len(block) < pos + width:
        return None
    value = int.from_bytes(block[pos : pos + width], "little")
    return value + 256 if width == 2 else value


def _unshuffle(data: bytes, itemsize: int) -> bytes:
    n = len(data) // itemsize
    out = bytearray(data)
    for j in range(itemsize):
        out[j : n * itemsize : itemsize] = data[j * n : (j + 1) * n]
    return bytes(out)


def _decompress_block(codec: int, block: bytes, length: int) -> bytes | None:
    import cramjam
    import numpy as np

    out = np.empty(length, np.uint8)
    try:
        if codec == 1:
            got = cramjam.lz4.decompress_block_into(block, out)
        else:
            if _zstd_declared(block) != length:
                return None
            got = cramjam.zstd.decompress_into(block, out)
    except Exception:
        return None
    return out.tobytes() if got == length else None


def decompress(fields: tuple[Any, ...], frame: bytes) -> bytes | None:
    """The ``nbytes`` bytes the frame decodes to, or None if zarray must refuse it."""
    itemsize, nbytes, codec, filt = fields[2], fields[6], fields[8], fields[9]
    if nbytes > zarray.limits.max_decompressed_bytes or codec not in (1, 2):
        return None
    try:
        import cramjam  # noqa: F401
    except ImportError:
        return None
    if len(frame) < 16:
        return None
    declared, block, count = FIXED.unpack_from(frame)
    if declared != nbytes or not MIN_BLOCK <= block <= MAX_BLOCK:
        return None
    if count != (nbytes + block - 1) // block or len(frame) < 16 + 4 * count:
        return None
    entries = struct.unpack_from(f"<{count}I", frame, 16)
    size = itemsize if filt == 1 and 1 < itemsize <= MAX_BLOCK else 1
    pos = 16 + 4 * count
    out = []
    for i, entry in enumerate(entries):
        length = min(block, nbytes - i * block)
        stored = entry & (RAW - 1)
        raw = entry & RAW
        if (raw and stored != length) or (not raw and not 0 < stored < length):
            return None
        if pos + stored > len(frame):
            return None
        data = frame[pos : pos + stored]
        pos += stored
        if not raw:
            decoded = _decompress_block(codec, data, length)
            if decoded is None:
                return None
            data = _unshuffle(decoded, size) if size > 1 and length >= size else decoded
        out.append(data)
    if pos != len(frame):
        return None
    return b"".join(out)
