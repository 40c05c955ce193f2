"""Shared by the fuzz harnesses, the corpus generator and the regression tests.

Input format of ``fuzz_recv`` (one fuzz input = one multipart message + how to send it):

    byte 0        op: bits 0-2 a structural mutation (see :func:`mutate`),
                  bit 3 receive with ``copy=True``, bit 4 send the frames zero-copy
    then frames   each as a little-endian u16 length and that many bytes; a last frame
                  whose bytes run out is kept as it is (a truncated frame)

libFuzzer's own mutations (bit flips, insertions, cross-overs between inputs) then act
on real frames, and the op byte adds the structural ones: duplicated, dropped, swapped
and spliced frames.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import _reference_codec
import numpy as np

import zarray
from zarray import _header_py
from zarray._dtypes import decode_dtype

OP_MUTATION = 0x07
OP_RECV_COPY = 0x08
OP_ZERO_COPY = 0x10

MUTATIONS = (
    "none",
    "duplicate-last",
    "drop-last",
    "swap-first-two",
    "splice-sentinel-payload",
    "splice-sentinel-header",
    "append-sentinel-header",
    "prepend-sentinel-payload",
)

#: The message sent after every fuzz input; it must come through intact, proving that
#: the socket was left at a message boundary.
SENTINEL = np.arange(12, dtype="<i4").reshape(3, 4)
SENTINEL_FRAMES = [zarray.pack_header(SENTINEL), SENTINEL.tobytes()]

Outcome = tuple[Any, ...]


def encode_message(op: int, frames: list[bytes]) -> bytes:
    """The fuzz input for sending ``frames`` with ``op``."""
    out = bytearray([op & 0xFF])
    for frame in frames:
        if len(frame) > 0xFFFF:
            raise ValueError("frames in the corpus are at most 65,535 bytes")
        out += struct.pack("<H", len(frame)) + frame
    return bytes(out)


def decode_message(data: bytes) -> tuple[int, list[bytes]]:
    """``(op, frames)`` of a fuzz input; never fails, whatever the bytes."""
    if not data:
        return 0, [b""]
    op = data[0]
    frames: list[bytes] = []
    pos = 1
    while pos < len(data) and len(frames) < 16:
        if pos + 2 > len(data):
            frames.append(data[pos:])
            break
        (n,) = struct.unpack_from("<H", data, pos)
        frames.append(data[pos + 2 : pos + 2 + n])
        pos += 2 + n
    return op, frames or [b""]


def mutate(op: int, frames: list[bytes]) -> list[bytes]:
    """Apply the structural mutation that ``op`` selects."""
    kind = MUTATIONS[op & OP_MUTATION]
    frames = list(frames)
    if kind == "duplicate-last":
        frames.append(frames[-1])
    elif kind == "drop-last" and len(frames) > 1:
        frames.pop()
    elif kind == "swap-first-two" and len(frames) > 1:
        frames[0], frames[1] = frames[1], frames[0]
    elif kind == "splice-sentinel-payload" and len(frames) > 1:
        frames[1] = SENTINEL_FRAMES[1]
    elif kind == "splice-sentinel-header":
        frames[0] = SENTINEL_FRAMES[0]
    elif kind == "append-sentinel-header":
        frames.append(SENTINEL_FRAMES[0])
    elif kind == "prepend-sentinel-payload":
        frames.insert(0, SENTINEL_FRAMES[1])
    return frames


def outcome(fn: Callable[..., Any], *args: Any) -> Outcome:
    """``("ok", result)`` or ``("err", class name, message)`` for a zarray error.

    Any other exception propagates: for a fuzz harness that is a crash.
    """
    try:
        return ("ok", fn(*args))
    except zarray.ZarrayError as exc:
        return ("err", type(exc).__name__, str(exc))


MAGIC = b"\x93ZAR"
MESSAGE_MAGIC = b"\x93ZAM"


def locate(frames: list[bytes]) -> tuple[int, str] | None:
    """Where zarray's part of a message starts, and what it is, by the envelope rule.

    The rule of ``zarray._message`` (docs): the body starts at the first frame that
    begins with one of zarray's magics, or, failing that, at the second-to-last frame
    if that one is a JSON object (pyzmq's recipe); frames before it are the envelope.
    A single-array body must then be exactly a header and one payload frame. Returns
    None when the message has no acceptable single-array or recipe body.
    """
    n = len(frames)
    for i, frame in enumerate(frames):
        if frame[:4] == MAGIC:
            return (i, "single") if n - i == 2 else None
        if frame[:4] == MESSAGE_MAGIC:
            return i, "multi"
        if i == n - 2 and frame[:1] == b"{":
            return i, "json"
    return None


def reference(frames: list[bytes]) -> Outcome:
    """What recv_array must do with ``frames``, from the spec and the pure-Python codec.

    ``("ok", dtype, shape, strides, offset, readonly, payload)`` for a single-array body
    that must be accepted, ``("json", payload)`` for a JSON-recipe body (accepted or
    not; checked loosely), or ``("err", "HeaderError")``.
    """
    where = locate(frames)
    if where is None or where[1] == "multi":
        return ("err", "HeaderError")  # no body, or several arrays: recv_arrays' job
    start, kind = where
    header, payload = frames[start], frames[start + 1]
    if kind == "json":
        return ("json", payload)
    try:
        fields = _header_py.unpack(header)
        descr, structured, itemsize, shape, strides, offset, nbytes, readonly = fields[:8]
        dt = decode_dtype(descr, structured, itemsize)
    except zarray.HeaderError:
        return ("err", "HeaderError")
    if fields[10]:
        # A shared-memory reference: mutated bytes never make a valid one (it names a
        # pool that does not exist here).
        return ("err", "HeaderError")
    if fields[8]:
        # A compressed payload: what the spec's framing decodes to, if anything.
        decoded = _reference_codec.decompress(fields, payload)
        if decoded is None:
            return ("err", "HeaderError")
        payload = decoded
    if len(payload) != nbytes:
        return ("err", "HeaderError")
    return ("ok", dt, shape, strides, offset, readonly, payload)


class Provider:
    """A small stand-in for atheris.FuzzedDataProvider, usable without atheris."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        out = self.data[self.pos : self.pos + n]
        self.pos += len(out)
        return out

    def uint(self, nbytes: int) -> int:
        return int.from_bytes(self.take(nbytes).ljust(nbytes, b"\0"), "little")

    def int_field(self) -> int:
        """An integer biased to the interesting edges of the u64/i64 ranges, or beyond."""
        sel = self.uint(1)
        raw = self.uint(8)
        if sel < 96:
            return raw % 4096
        if sel < 160:
            return raw - 2**63  # any int64
        if sel < 208:
            return raw  # any uint64
        edges = (0, 1, -1, 2**63 - 1, -(2**63), 2**63, 2**64 - 1, 2**64, -(2**64), 2**65)
        return edges[raw % len(edges)] + (sel % 3) - 1
