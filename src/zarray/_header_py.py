"""Pure-Python twin of ``zarray._header``: the same wire format, built on ``struct``.

Used when the compiled extension cannot be imported, or when the environment sets
``ZARRAY_PUREPYTHON=1``. It must produce byte-identical headers and raise the same
``HeaderError`` messages as the extension; the test suite checks both on every case.
"""

from __future__ import annotations

import struct
from typing import Any

from zarray.errors import HeaderError

MAGIC = b"\x93ZAR"
VERSION = 1
MAX_NDIM = 64
MAX_DESCR = 65535
FIXED_SIZE = 40
DESCR_TYPESTR = 0
DESCR_STRUCT = 1
CODEC_NONE = 0
CODEC_LZ4 = 1
CODEC_ZSTD = 2
MAX_CODEC = 2
FILTER_NONE = 0
FILTER_SHUFFLE = 1
MAX_FILTER = 1
KIND_INLINE = 0
KIND_SHM = 1
MAX_KIND = 1

_INT64_MAX = 2**63 - 1
_INT64_MIN = -(2**63)
_FLAG_READONLY = 1
# magic, version, flags, codec, kind, ndim, descriptor kind, descriptor length,
# filter, reserved (3 bytes), itemsize, offset, nbytes
_FIXED = struct.Struct("<4sBBBBBBHB3sQQQ")
assert _FIXED.size == FIXED_SIZE

# descr, structured, itemsize, shape, strides, offset, nbytes, readonly, codec, filter, kind
HeaderFields = tuple[
    bytes, bool, int, tuple[int, ...], tuple[int, ...], int, int, bool, int, int, int
]


def _check_encoding(codec: int, filter: int, kind: int) -> None:
    """Check the codec id, filter id and payload kind (bytes 6, 12 and 7)."""
    if not 0 <= codec <= MAX_CODEC:
        raise HeaderError(
            f"unknown codec id {codec} (this zarray knows 0 to {MAX_CODEC}; see docs/FORMAT.md)"
        )
    if not 0 <= filter <= MAX_FILTER:
        raise HeaderError(f"unknown filter id {filter} (this zarray knows 0 to {MAX_FILTER})")
    if not 0 <= kind <= MAX_KIND:
        raise HeaderError(
            f"unknown payload kind {kind} (this zarray knows 0, the next frame, "
            f"and 1, shared memory)"
        )
    if filter and not codec:
        raise HeaderError(f"filter {filter} is set without a codec")
    if codec and kind == KIND_SHM:
        raise HeaderError("a shared-memory payload cannot be compressed")


def check_geometry(
    shape: tuple[int, ...], strides: tuple[int, ...], itemsize: int, offset: int, nbytes: int
) -> None:
    """Check that the described array lies inside a payload of ``nbytes`` bytes.

    The geometry rules of docs/FORMAT.md, on Python ints (any size). The compiled codec
    runs the same checks in the same order on 64-bit fields; pyzmq's JSON recipe, which
    both implementations parse in Python, is checked with this function.
    """
    if nbytes > _INT64_MAX:
        raise HeaderError(f"payload length {nbytes} exceeds the maximum of {_INT64_MAX}")
    if itemsize > _INT64_MAX:
        raise HeaderError(f"itemsize {itemsize} exceeds the maximum of {_INT64_MAX}")
    if itemsize == 0:
        raise HeaderError("itemsize 0: zero-size dtypes are not part of the wire format")
    for i, n in enumerate(shape):
        if n < 0:
            raise HeaderError(f"negative dimension {n} on axis {i}")
    total = itemsize
    empty = False
    for n in shape:
        if n == 0:
            empty = True
            continue
        if total > _INT64_MAX // n:
            raise HeaderError(
                f"shape {shape} with itemsize {itemsize} overflows a 64-bit byte count"
            )
        total *= n
    if offset > nbytes:
        raise HeaderError(f"offset {offset} lies past the payload length {nbytes}")
    if empty:
        return
    if itemsize > nbytes - offset:
        raise HeaderError(
            f"first element (offset {offset}, itemsize {itemsize}) reaches past "
            f"the payload length {nbytes}"
        )
    lo = offset
    hi = offset + itemsize
    for i, (n, s) in enumerate(zip(shape, strides, strict=True)):
        if n <= 1 or s == 0:
            continue
        if s == _INT64_MIN:
            raise HeaderError(f"stride {s} on axis {i} reaches outside the payload")
        step = abs(s)
        if n - 1 > nbytes // step:
            raise HeaderError(f"stride {s} on axis {i} reaches outside the payload")
        ext = (n - 1) * step
        if s < 0:
            if ext > lo:
                raise HeaderError(f"stride {s} on axis {i} reaches before the payload start")
            lo -= ext
        else:
            if ext > nbytes - hi:
                raise HeaderError(f"stride {s} on axis {i} reaches past the payload end")
            hi += ext


def _in_range(value: int, lo: int, hi: int, what: str) -> int:
    # Mirrors the OverflowError that Cython raises when a Python int does not fit
    # the C field; the message differs in wording, not in class.
    if not lo <= value <= hi:
        raise HeaderError(f"header field out of range: {what} {value}")
    return value


def pack(
    descr: bytes,
    structured: bool,
    itemsize: int,
    shape: tuple[int, ...],
    strides: tuple[int, ...],
    offset: int,
    nbytes: int,
    readonly: bool,
    codec: int = 0,
    filter: int = 0,
    kind: int = 0,
) -> bytes:
    """Return the header frame for the given fields (see ``zarray._header.pack``)."""
    ndim = len(shape)
    if ndim > MAX_NDIM:
        raise HeaderError(f"ndim {ndim} exceeds the maximum of {MAX_NDIM}")
    if len(strides) != ndim:
        raise HeaderError(f"{len(strides)} strides given for {ndim} dimensions")
    if len(descr) > MAX_DESCR:
        raise HeaderError(
            f"dtype descriptor of {len(descr)} bytes exceeds the maximum of {MAX_DESCR}"
        )
    u64 = 2**64 - 1
    _in_range(itemsize, 0, u64, "itemsize")
    _in_range(offset, 0, u64, "offset")
    _in_range(nbytes, 0, u64, "nbytes")
    for n in shape:
        _in_range(n, _INT64_MIN, _INT64_MAX, "dimension")
    for s in strides:
        _in_range(s, _INT64_MIN, _INT64_MAX, "stride")
    _in_range(codec, 0, 255, "codec")
    _in_range(filter, 0, 255, "filter")
    _in_range(kind, 0, 255, "kind")
    _check_encoding(codec, filter, kind)
    check_geometry(shape, strides, itemsize, offset, nbytes)
    fixed = _FIXED.pack(
        MAGIC,
        VERSION,
        _FLAG_READONLY if readonly else 0,
        codec,
        kind,
        ndim,
        1 if structured else 0,
        len(descr),
        filter,
        b"\0\0\0",
        itemsize,
        offset,
        nbytes,
    )
    dims = struct.pack(f"<{2 * ndim}q", *shape, *strides)
    return fixed + dims + descr


def set_encoding(header: bytes, codec: int, filter: int, kind: int) -> bytes:
    """A copy of ``header`` with codec, filter and kind set (see ``zarray._header``)."""
    _in_range(codec, 0, 255, "codec")
    _in_range(filter, 0, 255, "filter")
    _in_range(kind, 0, 255, "kind")
    _check_encoding(codec, filter, kind)
    if len(header) < FIXED_SIZE or header[:4] != MAGIC:
        raise HeaderError("not a zarray header: too short or bad magic")
    out = bytearray(header)
    out[6] = codec
    out[7] = kind
    out[12] = filter
    return bytes(out)


def unpack(buf: Any) -> HeaderFields:
    """Parse a header frame (see ``zarray._header.unpack``)."""
    try:
        data = memoryview(buf).cast("B")
    except (TypeError, ValueError, BufferError):
        raise HeaderError(
            f"header is not a contiguous byte buffer (got {type(buf).__name__})"
        ) from None
    n = len(data)
    if n < 4 or data[:4] != MAGIC:
        raise HeaderError(
            f"not a zarray header: bad magic {bytes(data[:4])!r} (expected {MAGIC!r})"
        )
    if n < FIXED_SIZE:
        raise HeaderError(f"header truncated: {n} bytes, the fixed part alone is {FIXED_SIZE}")
    (
        _,
        version,
        flags,
        codec,
        kind,
        ndim,
        dkind,
        ld,
        filter,
        reserved,
        itemsize,
        offset,
        nbytes,
    ) = _FIXED.unpack_from(data)
    if version != VERSION:
        raise HeaderError(
            f"unsupported header version {version} (this zarray reads version {VERSION})"
        )
    if flags & ~_FLAG_READONLY:
        raise HeaderError(f"unknown flag bits 0x{flags & ~_FLAG_READONLY:02x} set")
    _check_encoding(codec, filter, kind)
    if ndim > MAX_NDIM:
        raise HeaderError(f"ndim {ndim} exceeds the maximum of {MAX_NDIM}")
    if dkind > 1:
        raise HeaderError(f"unknown dtype descriptor kind {dkind}")
    if reserved != b"\0\0\0":
        raise HeaderError("reserved header bytes 13..15 are not zero")
    need = FIXED_SIZE + 16 * ndim + ld
    if n < need:
        raise HeaderError(
            f"header truncated: {n} bytes, but ndim {ndim} and a {ld}-byte descriptor need {need}"
        )
    if n > need:
        raise HeaderError(f"{n - need} unexpected bytes after the end of the header")
    dims = struct.unpack_from(f"<{2 * ndim}q", data, FIXED_SIZE)
    shape = tuple(dims[:ndim])
    strides = tuple(dims[ndim:])
    check_geometry(shape, strides, itemsize, offset, nbytes)
    descr = bytes(data[FIXED_SIZE + 16 * ndim : need])
    return (
        descr,
        dkind == 1,
        itemsize,
        shape,
        strides,
        offset,
        nbytes,
        bool(flags & 1),
        codec,
        filter,
        kind,
    )
