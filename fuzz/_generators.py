"""Structure-aware generators of hostile zarray input, as a small registry.

Byte flips rarely produce a record descriptor that numpy accepts, a shape whose byte
count overflows only after a 0, or a send_arrays message whose meta says ``1e999``.
These generators build such inputs from their parts: dtype descriptors (nesting,
subarrays, offsets, titles, itemsize 0), header fields (every byte of the 40-byte fixed
part, with edge values), payloads, pyzmq JSON-recipe objects, multi-array message
headers and meta, envelopes and frame counts, and, for the send harness, hostile
arguments (arrays of every layout, envelopes, flags, formats, meta).

They draw every decision from a :class:`Source`, so one generator serves three
engines: atheris's custom mutators and the fallback loop (:class:`RandomSource`),
the send harness, whose input bytes are read as decisions (:class:`BytesSource`), and
hypothesis strategies in the tests (``tests/reliability/test_fuzz_generators.py``:
decision bytes that hypothesis draws and shrinks, read by a :class:`BytesSource`).

The registry is what makes the format's growth cheap to fuzz. A header's body, codec
id (byte 6), payload kind (byte 7) and filter id (byte 12) are each chosen from a
table; a new codec (``"lz4"``), a shared-memory payload kind or a filter is fuzzed by
registering one function::

    @codec(1)
    def lz4_codec(src, raw):          # raw: the array's bytes
        return lz4.frame.compress(raw)   # what goes in the payload frame(s)

Unregistered ids are still drawn now and then, as hostile values the receiver must
refuse.
"""

from __future__ import annotations

import json
import math
import random
import struct
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np

T = TypeVar("T")


# -- where decisions come from ---------------------------------------------------------


class Source(Protocol):
    """A stream of decisions."""

    def int(self, lo: int, hi: int) -> int:
        """An integer in ``[lo, hi]``."""

    def choice(self, options: Sequence[T]) -> T:
        """One of ``options``."""

    def bool(self, p: float = 0.5) -> bool:
        """True with probability about ``p``."""

    def bytes(self, max_len: int) -> bytes:
        """Up to ``max_len`` arbitrary bytes."""


class RandomSource:
    """Decisions from a seeded ``random.Random`` (custom mutators, the fallback loop)."""

    def __init__(self, rng: random.Random | int) -> None:
        self.rng = rng if isinstance(rng, random.Random) else random.Random(rng)

    def int(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def choice(self, options: Sequence[T]) -> T:
        return options[self.rng.randrange(len(options))]

    def bool(self, p: float = 0.5) -> bool:
        return self.rng.random() < p

    def bytes(self, max_len: int) -> bytes:
        return self.rng.randbytes(self.rng.randint(0, max_len))


class BytesSource:
    """Decisions read from fuzz input bytes; once they run out, the simplest choice.

    libFuzzer's mutations of the bytes then change decisions, so a byte-level engine
    explores structures (as with atheris's ``FuzzedDataProvider``).
    """

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _take(self, n: int) -> int:
        chunk = self.data[self.pos : self.pos + n]
        self.pos += len(chunk)
        return int.from_bytes(chunk.ljust(n, b"\0"), "little")

    def int(self, lo: int, hi: int) -> int:
        span = hi - lo
        if span <= 0:
            return lo
        width = max(1, (span.bit_length() + 7) // 8)
        return lo + self._take(width) % (span + 1)

    def choice(self, options: Sequence[T]) -> T:
        return options[self.int(0, len(options) - 1)]

    def bool(self, p: float = 0.5) -> bool:
        return self._take(1) < int(256 * p)

    def bytes(self, max_len: int) -> bytes:
        n = self.int(0, max_len)
        chunk = self.data[self.pos : self.pos + n]
        self.pos += len(chunk)
        return chunk


# -- the registry ---------------------------------------------------------------

#: Bodies of a message (what follows the envelope): name -> generator of frames.
BODIES: dict[str, Callable[[Source], list[bytes]]] = {}
#: Header byte 6, codec id -> how the array's raw bytes become the payload.
CODECS: dict[int, Callable[[Source, bytes], bytes]] = {}
#: Header byte 7, payload kind -> the frames that carry the (encoded) payload.
PAYLOAD_KINDS: dict[int, Callable[[Source, bytes], list[bytes]]] = {}
#: Header byte 12, filter id -> how the raw bytes are filtered before the codec.
FILTERS: dict[int, Callable[[Source, bytes], bytes]] = {}


def body(name: str) -> Callable[[Callable[[Source], list[bytes]]], Callable[[Source], list[bytes]]]:
    """Register a message-body generator."""

    def register(fn: Callable[[Source], list[bytes]]) -> Callable[[Source], list[bytes]]:
        BODIES[name] = fn
        return fn

    return register


def codec(
    ident: int,
) -> Callable[[Callable[[Source, bytes], bytes]], Callable[[Source, bytes], bytes]]:
    """Register the payload encoding of header codec id ``ident`` (byte 6)."""

    def register(fn: Callable[[Source, bytes], bytes]) -> Callable[[Source, bytes], bytes]:
        CODECS[ident] = fn
        return fn

    return register


def payload_kind(
    ident: int,
) -> Callable[[Callable[[Source, bytes], list[bytes]]], Callable[[Source, bytes], list[bytes]]]:
    """Register how payload kind ``ident`` (byte 7) carries the payload."""

    def register(
        fn: Callable[[Source, bytes], list[bytes]],
    ) -> Callable[[Source, bytes], list[bytes]]:
        PAYLOAD_KINDS[ident] = fn
        return fn

    return register


def filter_id(
    ident: int,
) -> Callable[[Callable[[Source, bytes], bytes]], Callable[[Source, bytes], bytes]]:
    """Register the filter of filter id ``ident`` (byte 12)."""

    def register(fn: Callable[[Source, bytes], bytes]) -> Callable[[Source, bytes], bytes]:
        FILTERS[ident] = fn
        return fn

    return register


@codec(0)
def no_codec(src: Source, raw: bytes) -> bytes:
    """Codec id 0: the payload is the array's bytes."""
    return raw


@payload_kind(0)
def next_frame(src: Source, payload: bytes) -> list[bytes]:
    """Payload kind 0: the payload is the next frame."""
    return [payload]


@filter_id(0)
def no_filter(src: Source, raw: bytes) -> bytes:
    """Filter id 0 (the reserved bytes 12..15 are zero): nothing."""
    return raw


def _registered_or_hostile(src: Source, table: dict[int, Any]) -> int:
    """A registered id, or now and then any byte (which must be refused)."""
    if src.bool(0.93):
        return src.choice(sorted(table))
    return src.int(0, 255)


# -- integers ---------------------------------------------------------------

EDGES = (
    0,
    1,
    2,
    3,
    7,
    8,
    63,
    64,
    65,
    255,
    256,
    2**31 - 1,
    2**31,
    2**32 - 1,
    2**32,
    2**62,
    2**63 - 1,
    2**63,
    2**64 - 1,
)


def edge_int(src: Source, signed: bool = False) -> int:
    """An integer biased to the edges of the 64-bit ranges."""
    sel = src.int(0, 9)
    if sel < 4:
        value = src.int(0, 4096)
    elif sel < 8:
        value = src.choice(EDGES) + src.int(-1, 1)
    else:
        value = src.int(0, 2**64 - 1)
    if signed and src.bool(0.3):
        value = -value
    return value


# -- dtype descriptors ---------------------------------------------------------------

_UNITS = ("Y", "M", "W", "D", "h", "m", "s", "ms", "us", "ns", "ps", "fs", "as")
_NUMERIC = (
    "b1",
    "i1",
    "u1",
    "i2",
    "u2",
    "i4",
    "u4",
    "i8",
    "u8",
    "f2",
    "f4",
    "f8",
    "c8",
    "c16",
    "f16",
    "c32",
)
_HOSTILE_TYPESTRS = (
    "|O8",
    "|O4",
    "O",
    "|T16",
    "<f0",
    "|S0",
    "<U0",
    "|V0",
    "|S00",
    "<i08",
    "|V4294967296",
    "|S9999999999",
    "<U2147483647",
    "<M8[0s]",
    "<M8[]",
    "<M8[fortnight]",
    "<f8\x00",
    "",
    "=f8",
    "f8",
    "<q",
    "<f8,<i4",
    "[]",
    "__import__('os')",
    "\u00e9",
    "<M8[ns]\n",
    "|b1|b1",
)


def gen_typestr(src: Source) -> str:
    """A type string: mostly valid (every kind, byte order and unit), sometimes hostile."""
    sel = src.int(0, 11)
    order = src.choice("<>")
    if sel < 5:
        code = src.choice(_NUMERIC)
        return ("|" if code in ("b1", "i1", "u1") else order) + code
    if sel < 7:
        kind = src.choice("SUV")
        size = src.choice((1, 2, 3, 7, 16, 64)) if src.bool(0.85) else edge_int(src)
        return ("<" if kind == "U" else "|") + f"{kind}{size}"
    if sel < 9:
        unit = src.choice(_UNITS)
        mult = "" if src.bool(0.7) else str(src.choice((1, 2, 25, 10**9, 10**10)))
        generic = src.bool(0.1)
        return f"{order}{src.choice('Mm')}8" + ("" if generic else f"[{mult}{unit}]")
    return src.choice(_HOSTILE_TYPESTRS)


def gen_format(src: Source, depth: int, budget: list[int]) -> Any:
    """One record field's format: a type string, a nested record or a subarray."""
    budget[0] -= 1
    sel = src.int(0, 9)
    if sel < 6 or budget[0] <= 0:
        return gen_typestr(src)
    if sel < 8:
        # Subarray chains, now and then past the 32-level limit.
        chain = 1 if src.bool(0.7) else src.choice((2, 8, 31, 32, 33, 40, 200))
        fmt: Any = gen_format(src, depth + chain, budget) if src.bool(0.5) else gen_typestr(src)
        for _ in range(chain):
            shape: Any = [src.choice((0, 1, 2, 3, 5))] * src.int(1, 3)
            if src.bool(0.05):
                shape = src.choice(([], [-1], [2**31], [1.5], "3", [True], [2] * 65))
            fmt = {"base": fmt, "shape": shape}
        return fmt
    return gen_record_doc(src, depth + 1, budget)


def _itemsize_of(fmt: Any) -> int:
    """A best guess of a format's itemsize, for packing offsets (0 when unknown)."""
    if isinstance(fmt, str):
        try:
            return int(np.dtype(fmt).itemsize) if len(fmt) < 20 else 0
        except (TypeError, ValueError, OverflowError, MemoryError):
            return 0
    if isinstance(fmt, dict) and "base" in fmt:
        shape = fmt.get("shape")
        if isinstance(shape, list) and all(isinstance(n, int) and 0 <= n < 64 for n in shape):
            return _itemsize_of(fmt["base"]) * math.prod(shape)
        return 0
    if isinstance(fmt, dict):
        size = fmt.get("itemsize", 0)
        return size if isinstance(size, int) and 0 <= size < 2**20 else 0
    return 0


def gen_record_doc(src: Source, depth: int = 0, budget: list[int] | None = None) -> dict[str, Any]:
    """A record descriptor (docs/FORMAT.md), valid or nearly: names (non-ASCII,
    duplicate, empty), formats, offsets (packed, aligned, overlapping, huge), titles,
    itemsize (exact, 0, short, huge), aligned, unknown keys."""
    budget = budget if budget is not None else [40]
    count = src.int(0, 5) if src.bool(0.95) else src.choice((0, 64, 600, 3000))
    names: list[str] = []
    formats: list[Any]
    if count > 64:
        # Wide records: many simple fields, one decision for all (the cost of such a
        # descriptor is in the number of its fields, not in their variety).
        names = [f"f{i}" for i in range(count)]
        formats = [src.choice(("|u1", "<f8", "|S1", "<M8[s]"))] * count
    else:
        for i in range(count):
            kind = src.int(0, 9)
            if kind < 6:
                names.append(f"f{i}")
            elif kind < 8:
                names.append(src.choice(("température", "日本", "x y", "", "a\x00b", "\ud800")))
            else:
                names.append(names[-1] if names else "dup")
        formats = [gen_format(src, depth, budget) for _ in range(count)]
    sizes = [_itemsize_of(f) for f in formats]
    style = src.int(0, 5)
    offsets: list[Any] = []
    pos = 0
    for size in sizes:
        if style == 5 and count <= 64:
            offsets.append(edge_int(src, signed=True))
        elif style == 4:
            offsets.append(0)  # overlapping fields
        else:
            if style == 3 and size:
                pos += -pos % min(size, 8)  # aligned
            offsets.append(pos)
            pos += size
    natural = max(
        (o + s for o, s in zip(offsets, sizes, strict=True) if isinstance(o, int)), default=0
    )
    sel = src.int(0, 9)
    itemsize: Any = natural
    if sel == 7:
        itemsize = 0
    elif sel == 8:
        itemsize = natural + src.choice((-1, 1, 7, 2**31, 2**63))
    elif sel == 9:
        itemsize = src.choice((-1, 1.5, "8", None, True))
    doc: dict[str, Any] = {
        "names": names,
        "formats": formats,
        "offsets": offsets,
        "itemsize": itemsize,
    }
    if src.bool(0.15):
        doc["titles"] = [src.choice((None, "title", "Alpha", 1, "")) for _ in names[:64]]
        doc["titles"] += [f"t{i}" for i in range(64, count)]
    if src.bool(0.1):
        doc["aligned"] = src.choice((True, False, 1, "yes"))
    if src.bool(0.03):
        doc[src.choice(("extra", "shape", "base", "names "))] = 0
    if src.bool(0.03):
        doc.pop(src.choice(("names", "formats", "offsets", "itemsize")))
    return doc


def dumps(doc: Any) -> bytes:
    """JSON text of a document, without recursing in Python (chains may be deep)."""
    try:
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode(
            "utf-8", "surrogatepass"
        )
    except (RecursionError, ValueError, TypeError):
        return b'{"names":[],"formats":[],"offsets":[],"itemsize":8}'


def gen_descriptor(src: Source) -> tuple[bytes, bool]:
    """``(descriptor bytes, structured)``: a type string or a record's JSON, the latter
    now and then with non-standard JSON (NaN, Infinity, 1e999), bad UTF-8, or text
    nested past any limit."""
    if src.bool(0.55):
        text = gen_typestr(src)
        return text.encode("utf-8", "surrogatepass"), False
    raw = dumps(gen_record_doc(src))
    sel = src.int(0, 19)
    if sel == 0:
        raw = raw.replace(b"0", b"NaN", 1) if b"0" in raw else raw + b"NaN"
    elif sel == 1:
        raw = raw.replace(b"8", b"1e999", 1)
    elif sel == 2:
        raw = b"\xff" + raw
    elif sel == 3:
        depth = src.choice((33, 100, 1500, 3000))
        inner = b'"<f8"'
        for _ in range(depth):
            inner = b'{"base":' + inner + b',"shape":[1]}'
        raw = b'{"names":["a"],"formats":[' + inner + b'],"offsets":[0],"itemsize":8}'
    elif sel == 4:
        raw = raw[: src.int(0, len(raw))]
    return raw[:65535] if src.bool(0.95) else raw, True


def descriptor_itemsize(descr: bytes, structured: bool) -> int | None:
    """The itemsize numpy gives a descriptor (zarray's own decoder), or None."""
    from zarray import _dtypes

    try:
        return int(_dtypes._decode_uncached(descr, structured).itemsize)
    except Exception:
        return None


# -- header frames ---------------------------------------------------------------

_FIXED = struct.Struct("<4sBBBBBBH4BQQQ")


#: The integer fields of :class:`RawHeader` a mutator may set, in header order (byte 12,
#: the filter id, is the first byte of ``reserved``).
HEADER_FIELDS = (
    "version",
    "flags",
    "codec",
    "kind",
    "ndim",
    "dkind",
    "dlen",
    "reserved",
    "itemsize",
    "offset",
    "nbytes",
)


@dataclass
class RawHeader:
    """Every field of an array header, any value (packed modulo its width)."""

    descr: bytes = b"<f8"
    structured: bool = False
    itemsize: int = 8
    shape: list[int] = field(default_factory=lambda: [3])
    strides: list[int] = field(default_factory=lambda: [8])
    offset: int = 0
    nbytes: int = 24
    magic: bytes = b"\x93ZAR"
    version: int = 1
    flags: int = 0
    codec: int = 0
    kind: int = 0
    ndim: int | None = None
    dkind: int | None = None
    dlen: int | None = None
    reserved: tuple[int, int, int, int] = (0, 0, 0, 0)  # byte 12: filter id, 13..15
    tail: bytes = b""

    def pack(self) -> bytes:
        ndim = len(self.shape) if self.ndim is None else self.ndim
        dkind = (1 if self.structured else 0) if self.dkind is None else self.dkind
        dlen = len(self.descr) if self.dlen is None else self.dlen
        fixed = _FIXED.pack(
            self.magic[:4].ljust(4, b"\0"),
            self.version & 0xFF,
            self.flags & 0xFF,
            self.codec & 0xFF,
            self.kind & 0xFF,
            ndim & 0xFF,
            dkind & 0xFF,
            dlen & 0xFFFF,
            *(b & 0xFF for b in self.reserved),
            self.itemsize % 2**64,
            self.offset % 2**64,
            self.nbytes % 2**64,
        )
        dims = b"".join(struct.pack("<Q", v % 2**64) for v in (*self.shape, *self.strides))
        return fixed + dims + self.descr + self.tail

    @classmethod
    def parse(cls, buf: bytes) -> RawHeader | None:
        """The fields of a header frame, read without any check; None if too short."""
        if len(buf) < 40:
            return None
        magic, version, flags, codec, kind, ndim, dkind, dlen, *rest = _FIXED.unpack_from(buf)
        reserved = tuple(rest[:4])
        itemsize, offset, nbytes = rest[4:]
        dims: list[int] = []
        pos = 40
        while len(dims) < 2 * ndim and pos + 8 <= len(buf):
            dims.append(struct.unpack_from("<q", buf, pos)[0])
            pos += 8
        half = len(dims) // 2
        descr = buf[pos : pos + dlen]
        return cls(
            descr=descr,
            structured=dkind == 1,
            itemsize=itemsize,
            shape=dims[:half],
            strides=dims[half : 2 * half],
            offset=offset,
            nbytes=nbytes,
            magic=magic,
            version=version,
            flags=flags,
            codec=codec,
            kind=kind,
            ndim=ndim,
            dkind=dkind,
            dlen=dlen,
            reserved=reserved,
            tail=buf[pos + dlen :],  # type: ignore[arg-type]
        )


def gen_layout(src: Source, itemsize: int, alignment: int) -> tuple[list[int], list[int], int, int]:
    """``(shape, strides, offset, nbytes)``: mostly a layout that fits its payload
    (C, Fortran, reversed, sliced, broadcast, overlapping, misaligned), sometimes one
    that claims far more than it has."""
    ndim = src.int(0, 4) if src.bool(0.95) else src.choice((5, 32, 33, 64, 65))
    shape = [
        src.choice((0, 1, 2, 3, 4, 5, 7)) if src.bool(0.9) else src.int(0, 64) for _ in range(ndim)
    ]
    style = src.int(0, 8)
    step = max(itemsize, 1)
    strides = []
    for n in reversed(shape):
        strides.append(step)
        step *= max(n, 1)
    strides.reverse()
    if style == 1:  # Fortran
        step = max(itemsize, 1)
        strides = []
        for n in shape:
            strides.append(step)
            step *= max(n, 1)
    elif style == 2:  # reversed
        strides = [-s for s in strides]
    elif style == 3:  # sliced
        strides = [2 * s for s in strides]
    elif style == 4 and shape:  # broadcast, with a huge axis now and then
        axis = src.int(0, len(shape) - 1)
        strides[axis] = 0
        if src.bool(0.3):
            shape[axis] = src.choice((2**20, 2**40, 2**62))
    elif style == 5 and shape:  # overlapping (a sliding window)
        strides = [src.choice((1, itemsize // 2 or 1, itemsize)) for _ in shape]
    elif style == 6 and shape:  # misaligned: strides or offset off the dtype's alignment
        strides = [s + 1 if alignment > 1 else s for s in strides]
    elif style == 7:  # anything
        shape = [edge_int(src) if src.bool(0.2) else n for n in shape]
        strides = [edge_int(src, signed=True) if src.bool(0.3) else s for s in strides]
    lo = hi = 0
    if 0 not in shape:
        for n, s in zip(shape, strides, strict=True):
            if s < 0:
                lo += (n - 1) * s
            else:
                hi += (n - 1) * s
    offset = -lo
    nbytes = 0 if 0 in shape else hi - lo + itemsize
    if style == 6 and alignment > 1 and src.bool(0.5):
        offset += 1
        nbytes += 1
    if src.bool(0.08):
        offset = edge_int(src)
    if src.bool(0.08):
        nbytes = edge_int(src)
    return shape, strides, offset, nbytes


#: Payloads above this many bytes are not built (the header then claims more than
#: arrives, which the receiver must refuse).
MAX_PAYLOAD = 1 << 17


def gen_array_header(src: Source) -> tuple[RawHeader, list[bytes]]:
    """A header and the frames that carry its payload (usually exactly one)."""
    descr, structured = gen_descriptor(src)
    size = descriptor_itemsize(descr, structured)
    if size is None or src.bool(0.05):
        size = edge_int(src) if src.bool(0.5) else src.int(0, 16)
    alignment = 1
    if size:
        alignment = min(size & -size, 16)
    shape, strides, offset, nbytes = gen_layout(src, size, alignment)
    h = RawHeader(
        descr=descr,
        structured=structured,
        itemsize=size,
        shape=shape,
        strides=strides,
        offset=offset,
        nbytes=nbytes,
    )
    h.flags = src.choice((0, 0, 1)) if src.bool(0.97) else src.int(0, 255)
    h.version = 1 if src.bool(0.97) else src.int(0, 255)
    h.codec = _registered_or_hostile(src, CODECS)
    h.kind = _registered_or_hostile(src, PAYLOAD_KINDS)
    fid = _registered_or_hostile(src, FILTERS)
    h.reserved = (fid, 0, 0, 0) if src.bool(0.97) else (fid, src.int(0, 255), 0, src.int(0, 1))
    if src.bool(0.03):
        h.ndim = src.int(0, 255)
    if src.bool(0.03):
        h.dkind = src.int(0, 3)
    if src.bool(0.03):
        h.dlen = src.int(0, 0xFFFF)
    if src.bool(0.02):
        h.tail = src.bytes(8)
    if src.bool(0.01):
        h.magic = src.choice((b"\x93ZAM", b"\x93ZA", b"\x00ZAR", b"{ZAR"))
    length = nbytes if 0 <= nbytes <= MAX_PAYLOAD else src.int(0, 64)
    if src.bool(0.05):
        length = max(0, length + src.choice((-1, 1, -8, 8)))
    raw = random.Random(src.int(0, 2**32)).randbytes(length)
    raw = FILTERS.get(fid, no_filter)(src, raw)
    payload = CODECS.get(h.codec, no_codec)(src, raw)
    frames = PAYLOAD_KINDS.get(h.kind, next_frame)(src, payload)
    return h, frames


@body("single")
def single_body(src: Source) -> list[bytes]:
    """One array: a header frame and its payload frame(s)."""
    h, frames = gen_array_header(src)
    return [h.pack(), *frames]


# -- JSON values, meta, the multi-array message header ----------------------------------------


def gen_json_value(src: Source, depth: int = 0) -> Any:
    """A JSON value, sometimes one that is not standard JSON or costs a lot to parse."""
    sel = src.int(0, 11)
    if sel < 2 or depth > 4:
        return src.choice(
            (0, 1, -1, 2**53, 2**64, 1.5, -0.0, "", "x", "température", None, True, False)
        )
    if sel < 4:
        return src.choice((float("nan"), float("inf"), -float("inf"), 1e308))
    if sel < 7:
        return [gen_json_value(src, depth + 1) for _ in range(src.int(0, 4))]
    if sel < 10:
        return {
            src.choice(("a", "b", "frame", "t", "", "é")) + str(i): gen_json_value(src, depth + 1)
            for i in range(src.int(0, 4))
        }
    return src.choice(([{}] * 3000, [[]] * 3000, "x" * 70000, list(range(5000))))


def json_text(value: Any) -> bytes:
    """JSON of ``value`` as Python writes it (NaN and Infinity included)."""
    try:
        return json.dumps(value, separators=(",", ":")).encode()
    except (ValueError, TypeError, RecursionError):
        return b"{}"


def message_header(
    kind: int,
    count: int,
    doc: bytes,
    version: int = 1,
    reserved: int = 0,
    length: int | None = None,
) -> bytes:
    """A send_arrays message-header frame, any field any value."""
    fixed = struct.pack(
        "<4sBBHII",
        b"\x93ZAM",
        version & 0xFF,
        kind & 0xFF,
        reserved & 0xFFFF,
        count % 2**32,
        (len(doc) if length is None else length) % 2**32,
    )
    return fixed + doc


@body("multi")
def multi_body(src: Source) -> list[bytes]:
    """A send_arrays message: message header (names, meta), then N arrays."""
    count = src.int(0, 4) if src.bool(0.9) else src.choice((0, 5, 40))
    mapping = src.bool(0.5)
    doc: dict[str, Any] = {}
    if mapping:
        names: Any = [f"a{i}" for i in range(count)]
        if src.bool(0.1):
            names = src.choice((names[:-1], [*names, "x"], [1] * count, ["a"] * count, "ab"))
        doc["names"] = names
    if src.bool(0.6):
        sel = src.int(0, 9)
        if sel < 4:
            doc["meta"] = {"frame": 7}
        elif sel < 9:
            doc["meta"] = {"m": gen_json_value(src), "n": gen_json_value(src)}
        else:
            doc["meta"] = gen_json_value(src)
    text = json_text(doc) if doc else b""
    sel = src.int(0, 14)
    if sel == 0:
        text = text.replace(b"7", b"1e999", 1) if b"7" in text else b'{"meta":{"x":1e999}}'
    elif sel == 1:
        text = b'{"meta":{"x":' + src.choice((b"NaN", b"Infinity", b"-Infinity", b"1E400")) + b"}}"
    elif sel == 2:
        text = (
            b'{"meta":{"x":[' + b",".join([b'{"a":{}}'] * src.choice((100, 8000, 20000))) + b"]}}"
        )
    elif sel == 3:
        text = b"{}" if src.bool() else b"[1]"
    length = None if src.bool(0.95) else len(text) + src.choice((-1, 1, 2**31))
    kind = (1 if mapping else 0) if src.bool(0.95) else src.int(0, 255)
    version = 1 if src.bool(0.97) else src.int(0, 255)
    announced = count if src.bool(0.92) else count + src.choice((-1, 1, 2**31))
    frames = [message_header(kind, announced, text, version, 0 if src.bool(0.97) else 1, length)]
    big = src.bool(0.04)  # distinct large record descriptors: the per-message budget
    for k in range(count):
        if big:
            n = 3000
            doc_k = {
                "names": [f"{k}_{i}" for i in range(n)],
                "formats": ["|S1"] * n,
                "offsets": list(range(n)),
                "itemsize": n,
            }
            descr = dumps(doc_k)[:65535]
            h = RawHeader(
                descr=descr, structured=True, itemsize=n, shape=[1], strides=[n], nbytes=n
            )
            frames += [h.pack(), bytes(n)]
        else:
            frames += single_body(src)
    return frames


# -- pyzmq's JSON recipe ---------------------------------------------------------------

_RECIPE_DTYPES = (
    "float64",
    "uint8",
    "int16",
    "bool",
    "complex128",
    "longdouble",
    "datetime64[ns]",
    "timedelta64[25s]",
    "<f8",
    ">i4",
    "f8",
    "|S5",
    "<U3",
    "V16",
    "S0",
    "U0",
    "V0",
    "O",
    "object",
    "|O8",
    "<T16",
    "[('a','<f8')]",
    "float",
    "i",
    "int",
    "<M8[0s]",
    "S9999999999",
    "",
    8,
    None,
    ["<f8"],
)


@body("recipe")
def recipe_body(src: Source) -> list[bytes]:
    """pyzmq's guide recipe: a JSON {"dtype", "shape"} frame and the raw buffer."""
    dtype = src.choice(_RECIPE_DTYPES) if src.bool(0.3) else src.choice(_RECIPE_DTYPES[:12])
    ndim = src.int(0, 4) if src.bool(0.95) else src.choice((64, 65))
    shape: Any = [src.choice((0, 1, 2, 3, 5)) for _ in range(ndim)]
    if src.bool(0.15) and shape:
        # A 0 first, then dimensions whose product overflows (hole 6).
        shape[src.int(0, len(shape) - 1)] = 0
        shape += [src.choice((2**31, 2**62, 2**63 - 1))] * src.int(1, 2)
    if src.bool(0.05):
        shape = src.choice(([-1], [1.5], [True], "3", None, [2**64], [[2]]))
    doc: dict[str, Any] = {"dtype": dtype, "shape": shape}
    if src.bool(0.2):
        doc["msg"] = gen_json_value(src)
    if src.bool(0.03):
        doc.pop(src.choice(("dtype", "shape")))
    text = json_text(doc)
    if src.bool(0.03):
        text = b"{" + b" " * 70000 + b"}"
    try:
        itemsize = np.dtype(dtype).itemsize if isinstance(dtype, str) and len(dtype) < 20 else 8
        count = (
            math.prod(shape)
            if isinstance(shape, list) and all(isinstance(n, int) for n in shape)
            else 1
        )
    except (TypeError, ValueError, OverflowError, MemoryError):
        itemsize, count = 8, 1
    length = itemsize * count if 0 <= itemsize * count <= MAX_PAYLOAD else src.int(0, 64)
    if src.bool(0.05):
        length = max(0, length + src.choice((-1, 1)))
    return [text, bytes(length)]


@body("raw")
def raw_body(src: Source) -> list[bytes]:
    """Frames of arbitrary bytes (sometimes starting with a magic or a brace)."""
    out = []
    for _ in range(src.int(1, 3)):
        prefix = src.choice((b"", b"\x93ZAR", b"\x93ZAM", b"{", b"\x93ZAR\x01"))
        out.append(prefix + src.bytes(48))
    return out


# -- envelopes and frame counts ---------------------------------------------------------------


def gen_envelope(src: Source) -> list[bytes]:
    """Envelope frames: topics, ROUTER identities, delimiters, and look-alikes."""
    frames = []
    for _ in range(src.int(0, 3) if src.bool(0.7) else 0):
        frames.append(
            src.choice(
                (
                    b"topic",
                    b"cam1",
                    b"",
                    b"\x00\x80\x00\x00\x29",
                    b"\x00" + src.bytes(4),
                    b'{"dtype": "<f8", "shape": [1]}',
                    b"{not json",
                    b"\x93ZA",
                    src.bytes(16),
                )
            )
        )
    return frames


# -- whole receive inputs ---------------------------------------------------------------


def gen_frames(src: Source) -> list[bytes]:
    """A whole message: envelope, then a body from the registry."""
    name = src.choice(sorted(BODIES))
    return gen_envelope(src) + BODIES[name](src)


# -- hostile arguments for the send functions ------------------------------------------------


def gen_numpy_dtype(src: Source) -> np.dtype[Any]:
    """A numpy dtype a program might hold: most that zarray sends, some it must refuse."""
    dt = _numpy_dtype(src)
    # numpy divides by a datetime unit's multiple when it compares datetime dtypes, so
    # a program holding datetime64[0s] (even as a record field) crashes numpy itself
    # (SIGFPE) in a dict lookup: not an input zarray could be blamed for.
    if "8[0" in repr(dt):
        return np.dtype("<f8")
    return dt


def _numpy_dtype(src: Source) -> np.dtype[Any]:
    sel = src.int(0, 13)
    try:
        if sel < 6:
            return np.dtype(
                gen_typestr(src)
                if src.bool(0.3)
                else src.choice(
                    (
                        "<f8",
                        "<i4",
                        "|u1",
                        ">u2",
                        "<f2",
                        "|b1",
                        "<c16",
                        "<M8[ns]",
                        ">m8[s]",
                        "|S5",
                        "<U3",
                        "|V7",
                        "<M8",
                        "<f16",
                    )
                )
            )
        if sel < 10:
            fields = [
                (
                    f"f{i}",
                    gen_numpy_dtype(src)
                    if src.bool(0.2)
                    else src.choice(("<f8", "|u1", "<i4", ">i2", "<M8[s]", "|S3")),
                )
                for i in range(src.int(0, 4))
            ]
            if src.bool(0.2) and fields:
                fields[0] = (fields[0][0], "<f4", (src.choice((0, 1, 2)), 3))
            return np.dtype(fields, align=src.bool(0.3))
        if sel == 10:
            return np.dtype([("a", "u1"), ("b", "<i4")])  # packed: misaligned fields
        if sel == 11:
            return src.choice(
                (
                    np.dtype([]),
                    np.dtype([("a", "<f8", (0,))]),
                    np.dtype(("<i8", [("lo", "<i4"), ("hi", "<i4")])),
                    np.dtype({"names": ["a"], "formats": ["<i4"], "titles": [1]}),
                )
            )
        if sel == 12:
            return np.dtype(object)
        dt = getattr(np.dtypes, "StringDType", None)
        return dt() if dt is not None else np.dtype(object)
    except (TypeError, ValueError, OverflowError, MemoryError):
        return np.dtype("<f8")


#: Bytes of a generated array's own data, and of what its views describe.
MAX_ARRAY = 1 << 20
MAX_VIEW = 1 << 24


def gen_send_array(src: Source) -> Any:
    """An array (or not) of any layout: contiguous, Fortran, reversed, sliced,
    transposed, broadcast, sliding windows, overlapping strides, packed fields,
    read-only, 0-d, empty; and masked arrays, matrices, lists and bytes."""
    from numpy.lib.stride_tricks import as_strided, sliding_window_view

    sel = src.int(0, 24)
    if sel == 0:
        kind = src.int(0, 7)
        if kind == 6:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", PendingDeprecationWarning)  # np.matrix
                return np.asmatrix(np.eye(2))
        if kind == 5:
            return np.ma.masked_array([1, 2], [0, 1])
        return ([1, 2, 3], b"abc", memoryview(b"abcd"), 3.5, None, np.float64(1.0), 0, 0)[kind]
    dt = gen_numpy_dtype(src)
    shape = tuple(src.choice((0, 1, 2, 3, 5, 8)) for _ in range(src.int(0, 3)))
    if src.bool(0.1):
        shape = (src.choice((20_000, 70_000)),)  # above pyzmq's copy threshold
    if dt.itemsize * math.prod(shape) > MAX_ARRAY:
        shape = (1,) if dt.itemsize <= MAX_ARRAY else (0,)
    try:
        if dt.hasobject or dt.kind == "T" or dt.itemsize == 0:
            return np.zeros(shape, dt)
        nbytes = dt.itemsize * math.prod(shape)
        base = np.frombuffer(random.Random(src.int(0, 2**32)).randbytes(nbytes), dt)
        A = base.reshape(shape).copy()
    except (TypeError, ValueError, MemoryError, OverflowError):
        return np.arange(4.0)
    # Views may be logically large (a broadcast, overlapping windows), but within
    # MAX_VIEW bytes, so that what a receiver must hold stays small.
    per = max(A.nbytes, A.itemsize, 1)
    layout = src.int(0, 11)
    try:
        if layout == 1:
            A = np.asfortranarray(A)
        elif layout == 2 and A.ndim:
            A = A[::-1]
        elif layout == 3 and A.ndim:
            A = A[::2]
        elif layout == 4:
            A = A.T
        elif layout == 5 and A.size:
            count = src.choice((2, 1000, 2**20))
            A = np.broadcast_to(A, (max(1, min(count, MAX_VIEW // per)), *A.shape))
        elif layout == 6 and A.ndim == 1 and A.size > 1:
            window = src.int(1, A.size)
            while (A.size - window + 1) * window * A.itemsize > MAX_VIEW and window > 1:
                window //= 2
            A = sliding_window_view(A, window)
        elif layout == 7 and A.ndim == 1 and A.size > 1:
            step = src.choice((1, max(A.itemsize // 2, 1), A.itemsize))
            count = max(1, (A.nbytes - A.itemsize) // step + 1)
            A = as_strided(A, (count,), (step,), writeable=False)
        elif layout == 8 and A.nbytes <= MAX_VIEW // 4:
            rec = np.zeros(max(A.size, 1) * 3, [("pad", "u1"), ("v", A.dtype)])
            A = rec["v"]
            if src.bool(0.5) and A.size > 2:
                A = sliding_window_view(A, 2)
        elif layout == 9 and A.ndim:
            A = A[tuple(slice(None, None, src.choice((1, 2, -1))) for _ in A.shape)]
    except (TypeError, ValueError, MemoryError):
        pass
    if src.bool(0.2) and isinstance(A, np.ndarray):
        A = A.view()
        A.flags.writeable = False
    return A


def gen_send_envelope(src: Source) -> Any:
    """An envelope argument: mostly frames, sometimes what pyzmq cannot send."""
    if src.bool(0.6):
        return None
    frames: list[Any] = []
    for _ in range(src.int(0, 3)):
        frames.append(
            src.choice(
                (
                    b"topic",
                    b"",
                    bytearray(b"id"),
                    memoryview(b"xyz"),
                    np.arange(6, dtype=np.uint8),
                    np.arange(16, dtype=np.uint8)[::2],
                    np.asfortranarray(np.ones((2, 3), np.uint8)),
                    "text",
                    7,
                    None,
                    np.array(["2020-01-01"], "M8[D]"),
                    [b"nested"],
                )
            )
        )
    if src.bool(0.05):
        return src.choice((b"topic", "topic", np.arange(3, dtype=np.uint8)))
    return frames


def gen_send_flags(src: Source) -> Any:
    """Send flags: mostly 0, sometimes NOBLOCK, SNDMORE, unknown bits or not an int."""
    import zmq

    return src.choice(
        (0, 0, 0, 0, zmq.NOBLOCK, zmq.SNDMORE, zmq.SNDMORE | zmq.NOBLOCK, 0x100, -1, True)
    )


def gen_meta(src: Source) -> Any:
    """A meta argument: mostly small dicts, sometimes NaN, huge, non-str keys, numpy."""
    sel = src.int(0, 9)
    if sel < 3:
        return None
    if sel < 6:
        return {"frame": src.int(0, 100), "t": 1718035200.25}
    if sel < 8:
        value = gen_json_value(src)
        return {"x": value} if src.bool(0.8) else value
    return src.choice(
        (
            {1: "a"},
            {"x": np.float64(1.0)},
            {"x": np.arange(2)},
            {"x": b"bytes"},
            {"x": "y" * 70_000},
            [("a", 1)],
            {"x": float("nan")},
        )
    )
