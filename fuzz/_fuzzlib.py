"""Shared by the fuzz harnesses, the corpus generator and the regression tests.

Input format of ``fuzz_recv`` (one fuzz input = one multipart message + how to receive it):

    byte 0        the receive path: an index into :data:`PATHS` (modulo its length)
    byte 1        bits 0-2 a structural mutation (see :func:`mutate`), bit 3 receive with
                  ``copy=True``, bit 4 send the frames zero-copy, bits 5-6 the kind of
                  ``out`` array for the ``out=`` paths (see :data:`OUT_KINDS`)
    byte 2        extra empty frames put before the message (see :func:`pad_count`)
    then frames   each as a little-endian u16 length and that many bytes, at most 64
                  frames; a last frame whose bytes run out is kept as it is (truncated)

libFuzzer's own mutations (bit flips, insertions, cross-overs between inputs) act on
real frames; the custom mutator (``fuzz_recv.custom_mutator``) rebuilds fields,
descriptors and whole messages with the structure-aware generators of
``_generators``; and the plan bytes choose among every receive path of zarray.

:func:`expect` is the oracle: what a receive path must do with a message, computed
from the spec (docs/FORMAT.md: the envelope rule, frame counts, the limits) and the
**pure-Python codec** (``zarray._header_py`` and the pure-Python array builder
``zarray._array.rebuild``, exactly what ``ZARRAY_PUREPYTHON=1`` runs), so that the
compiled path (``zarray._header`` and ``zarray._fastpath``) is compared with it on
every input: same acceptance and error class, same dtype, shape, bytes and flags.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import _reference_codec  # type: ignore[import-not-found]
import numpy as np

import zarray
from zarray import _header_py, _json_recipe
from zarray._array import rebuild
from zarray._dtypes import decode_dtype
from zarray._message import unpack_message_header

MAX_FRAMES_IN_INPUT = 64

PATHS = (
    "recv_array",
    "recv_array-envelope",
    "recv_array-out",
    "recv_arrays",
    "recv_arrays-envelope",
    "deserialize",
    "asyncio-recv_array",
    "asyncio-recv_arrays",
    "asyncio-recv_array-out",
)

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
OP_MUTATION = 0x07
OP_RECV_COPY = 0x08
OP_ZERO_COPY = 0x10
OP_OUT_SHIFT = 5

#: How ``out`` is made for the ``out=`` paths: the message's own dtype and shape (as the
#: pure-Python codec reads them; a fixed array when it cannot), a void of the same
#: itemsize, an int64 with fields (equal to <i8 for numpy, refused by zarray before
#: anything is received), or a fixed (3, 4) <i4 array.
OUT_KINDS = ("exact", "void", "int-with-fields", "fixed")

#: The message sent after every fuzz input; it must come through intact, proving that
#: the socket was left at a message boundary.
SENTINEL = np.arange(12, dtype="<i4").reshape(3, 4)
SENTINEL_FRAMES = [zarray.pack_header(SENTINEL), SENTINEL.tobytes()]
MAGIC = b"\x93ZAR"
MESSAGE_MAGIC = b"\x93ZAM"


@dataclass
class RecvInput:
    """A decoded fuzz input of ``fuzz_recv``."""

    path: str
    op: int
    pad: int
    frames: list[bytes]

    @property
    def copy(self) -> bool:
        return bool(self.op & OP_RECV_COPY)

    @property
    def zero_copy(self) -> bool:
        return bool(self.op & OP_ZERO_COPY)

    @property
    def out_kind(self) -> str:
        return OUT_KINDS[(self.op >> OP_OUT_SHIFT) & 3]

    def encode(self) -> bytes:
        out = bytearray([PATHS.index(self.path), self.op & 0xFF, _pad_code(self.pad)])
        for frame in self.frames[:MAX_FRAMES_IN_INPUT]:
            frame = frame[:0xFFFF]
            out += struct.pack("<H", len(frame)) + frame
        return bytes(out)


def pad_count(code: int) -> int:
    """Empty frames put before the message, from byte 2 of an input.

    Mostly none; codes 240-255 give counts around ``zarray.limits.max_frames`` (the
    frame cap's edges) and far beyond it.
    """
    if code < 240:
        return 0
    limit = zarray.limits.max_frames
    table = (
        1,
        2,
        3,
        64,
        limit - 3,
        limit - 2,
        limit - 1,
        limit,
        limit + 1,
        2 * limit,
        5 * limit,
        1,
        2,
        1,
        0,
        0,
    )
    return max(0, table[code - 240])


def _pad_code(pad: int) -> int:
    if pad == 0:
        return 0
    for code in range(240, 256):
        if pad_count(code) == pad:
            return code
    return 0


def decode_input(data: bytes) -> RecvInput:
    """The input that ``data`` describes; never fails, whatever the bytes."""
    path = PATHS[data[0] % len(PATHS)] if data else PATHS[0]
    op = data[1] if len(data) > 1 else 0
    pad = pad_count(data[2]) if len(data) > 2 else 0
    frames: list[bytes] = []
    pos = 3
    while pos < len(data) and len(frames) < MAX_FRAMES_IN_INPUT:
        if pos + 2 > len(data):
            frames.append(data[pos:])
            break
        (n,) = struct.unpack_from("<H", data, pos)
        frames.append(data[pos + 2 : pos + 2 + n])
        pos += 2 + n
    return RecvInput(path, op, pad, frames or [b""])


def encode_input(path: str, op: int, frames: Sequence[bytes], pad: int = 0) -> bytes:
    """The fuzz input for receiving ``frames`` (after ``pad`` empty frames) on ``path``."""
    out = bytearray([PATHS.index(path), op & 0xFF, _pad_code(pad)])
    for frame in frames:
        if len(frame) > 0xFFFF:
            raise ValueError("frames of a fuzz input are at most 65,535 bytes")
        out += struct.pack("<H", len(frame)) + frame
    return bytes(out)


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


# -- outcomes ----------------------------------------------------------------------------

Outcome = tuple[Any, ...]


def outcome(fn: Callable[..., Any], *args: Any) -> Outcome:
    """``("ok", result)`` or ``("err", class name, message)`` for a zarray error.

    Any other exception propagates: for a fuzz harness that is a crash.
    """
    try:
        return ("ok", fn(*args))
    except zarray.ZarrayError as exc:
        return ("err", type(exc).__name__, str(exc))


class Refused(Exception):
    """What the oracle says a receive must raise (``cls``: a zarray error class)."""

    def __init__(self, cls: type[BaseException], why: str) -> None:
        super().__init__(why)
        self.cls = cls


def _body_start(frames: Sequence[bytes]) -> tuple[int, str]:
    """The envelope rule (docs/FORMAT.md): where zarray's part starts, and what it is."""
    n = len(frames)
    for i, frame in enumerate(frames):
        if frame[:4] == MAGIC:
            if n - i != 2:
                raise Refused(zarray.HeaderError, "a single-array body is not two frames")
            return i, "single"
        if frame[:4] == MESSAGE_MAGIC:
            return i, "multi"
        if i == n - 2 and frame[:1] == b"{":
            return i, "json"
    raise Refused(zarray.HeaderError, "no zarray part")


def _plain(fields: Any, payload: bytes) -> tuple[Any, bytes]:
    """The header fields and payload bytes as an inline message would carry them.

    A compressed payload is decoded by ``_reference_codec`` (a decoder written from
    docs/FORMAT.md, independent of zarray's); a shared-memory reference is refused (a
    mutated one never names a pool that exists here).
    """
    if fields[10]:
        raise Refused(zarray.HeaderError, "a shared-memory reference to no pool")
    if fields[8]:
        decoded = _reference_codec.decompress(fields, payload)
        if decoded is None:
            raise Refused(zarray.HeaderError, "a compressed payload that does not decode")
        return (*fields[:8], 0, 0, 0), decoded
    return fields, payload


def _array(header: bytes, payload: bytes, copy: bool) -> np.ndarray[Any, Any]:
    """The array of one header and payload, by the pure-Python codec and array builder."""
    # A bytearray, so that the view is writeable unless the header says read-only, as
    # zarray's view of a received (writeable) frame is.
    try:
        fields, payload = _plain(_header_py.unpack(header), payload)
        return rebuild(fields, bytearray(payload), copy)
    except zarray.HeaderError as exc:
        raise Refused(zarray.HeaderError, str(exc)) from None


def _recipe(header: bytes, payload: bytes, copy: bool) -> np.ndarray[Any, Any]:
    try:
        return rebuild(_json_recipe.parse(header, len(payload)), bytearray(payload), copy)
    except zarray.HeaderError as exc:
        raise Refused(zarray.HeaderError, str(exc)) from None


def _multi(
    frames: Sequence[bytes], start: int, copy: bool, cached: set[bytes]
) -> tuple[Any, dict[str, Any]]:
    try:
        names, meta, count = unpack_message_header(frames[start])
    except zarray.HeaderError as exc:
        raise Refused(zarray.HeaderError, str(exc)) from None
    if 2 * count != len(frames) - start - 1:
        raise Refused(zarray.HeaderError, "frame count differs from the message header's")
    # The per-message budget of record descriptors that the dtype cache (as it was
    # before this message) does not hold: zarray.limits.max_descriptor_bytes.
    distinct: set[bytes] = set()
    for header in frames[start + 1 :: 2]:
        try:
            descr, structured = _header_py.unpack(header)[:2]
        except zarray.HeaderError:
            if len(header) >= 40 and header[9] == 1:
                ndim, dlen = header[8], header[10] | header[11] << 8
                descr, structured = header[40 + 16 * ndim : 40 + 16 * ndim + dlen], True
            else:
                continue
        if structured and descr not in cached:
            distinct.add(bytes(descr))
    if sum(map(len, distinct)) > zarray.limits.max_descriptor_bytes:
        raise Refused(zarray.HeaderError, "record descriptors over the per-message budget")
    arrays = [
        _array(frames[start + 1 + 2 * k], frames[start + 2 + 2 * k], copy) for k in range(count)
    ]
    return (arrays if names is None else dict(zip(names, arrays, strict=True))), meta


def expect(inp: RecvInput, frames: Sequence[bytes], cached: set[bytes]) -> Any:
    """What ``inp.path`` must return for ``frames`` (the message as sent, pad included).

    Returns the expected result, built by the pure-Python path: an array, or
    ``(envelope, array)``, or ``(arrays, meta)``, ... as the path returns them. Raises
    :class:`Refused` with the error class the path must raise. ``cached`` holds the
    descriptors the dtype cache held before the message arrived.
    """
    path = inp.path
    if path.endswith("-out"):
        return _expect_out(inp, frames)
    if len(frames) > zarray.limits.max_frames and len(frames) != 2:
        raise Refused(zarray.HeaderError, "more frames than zarray.limits.max_frames")
    start, kind = _body_start(frames)
    envelope = [bytes(f) for f in frames[:start]]
    if path in ("recv_arrays", "recv_arrays-envelope", "asyncio-recv_arrays"):
        if kind == "multi":
            result: Any = _multi(frames, start, inp.copy, cached)
        elif kind == "json":
            recipe = [_recipe(frames[start], frames[start + 1], inp.copy)]
            result = recipe, _json_recipe.extras_of(frames[start])
        else:
            result = [_array(frames[start], frames[start + 1], inp.copy)], {}
        return (envelope, result) if path == "recv_arrays-envelope" else result
    if kind == "multi":
        try:
            unpack_message_header(frames[start])
        except zarray.HeaderError:
            pass
        raise Refused(zarray.HeaderError, "several arrays: recv_arrays' job")
    if kind == "json":
        A = _recipe(frames[start], frames[start + 1], inp.copy)
    else:
        A = _array(frames[start], frames[start + 1], inp.copy)
    return (envelope, A) if path == "recv_array-envelope" else A


def out_for(inp: RecvInput, frames: Sequence[bytes]) -> np.ndarray[Any, Any]:
    """The ``out`` array of an ``out=`` input (see :data:`OUT_KINDS`)."""
    kind = inp.out_kind
    if kind == "int-with-fields":
        return np.zeros(3, np.dtype(("<i8", [("lo", "<i4"), ("hi", "<i4")])))
    if kind in ("exact", "void"):
        fields = _out_fields(frames)
        if fields is not None:
            dt, shape = fields
            if kind == "void":
                dt = np.dtype(f"V{dt.itemsize}")
            try:
                if dt.itemsize * int(np.prod(shape, dtype=object)) <= 1 << 22:
                    return np.zeros(shape, dt)
            except (ValueError, TypeError, MemoryError, OverflowError):
                pass
    return np.zeros((3, 4), "<i4")


def _out_fields(frames: Sequence[bytes]) -> tuple[np.dtype[Any], tuple[int, ...]] | None:
    """(dtype, shape) of the header that recv_array(out=) would find, if readable."""
    for frame in frames:
        try:
            if frame[:4] == MAGIC:
                f = _header_py.unpack(frame)
                return decode_dtype(*f[:3]), f[3]
            if frame[:1] == b"{":
                f = _json_recipe.parse_header(frame)
                return decode_dtype(*f[:3]), f[3]
        except zarray.HeaderError:
            return None
    return None


def _expect_out(inp: RecvInput, frames: Sequence[bytes]) -> Any:
    """recv_array(out=): the blocking path finds the header frame by frame, as the frames
    arrive (docs/FORMAT.md); zarray.asyncio has the whole message first and applies the
    envelope rule of every other path."""
    out = out_for(inp, frames)
    if inp.out_kind == "int-with-fields":
        raise Refused(zarray.UnsupportedArrayError, "out's dtype cannot be carried")
    if inp.path.startswith("asyncio-"):
        if len(frames) > zarray.limits.max_frames and len(frames) != 2:
            raise Refused(zarray.HeaderError, "more frames than zarray.limits.max_frames")
        start, kind = _body_start(frames)
        if kind == "multi":
            raise Refused(zarray.HeaderError, "several arrays")
        try:
            if kind == "json":
                fields = _json_recipe.parse(frames[start], len(frames[start + 1]))
            else:
                fields = _header_py.unpack(frames[start])
            dt = decode_dtype(*fields[:3])
        except zarray.HeaderError as exc:
            raise Refused(zarray.HeaderError, str(exc)) from None
        return _into(out, dt, fields, frames[start + 1])
    n = len(frames)
    env: list[bytes] = []
    for i, frame in enumerate(frames):
        last = i == n - 1
        if frame[:4] == MESSAGE_MAGIC:
            raise Refused(zarray.HeaderError, "several arrays")
        fields = None
        if frame[:4] == MAGIC:
            if last:
                raise Refused(zarray.HeaderError, "header without payload")
            try:
                fields = _header_py.unpack(frame)
            except zarray.HeaderError as exc:
                raise Refused(zarray.HeaderError, str(exc)) from None
        elif not last and frame[:1] == b"{":
            try:
                fields = _json_recipe.parse_header(frame)
            except zarray.HeaderError:
                fields = None
        if fields is not None:
            try:
                dt = decode_dtype(*fields[:3])
            except zarray.HeaderError as exc:
                raise Refused(zarray.HeaderError, str(exc)) from None
            if dt != out.dtype or fields[3] != out.shape:
                raise Refused(zarray.OutMismatchError, "dtype or shape differs from out's")
            if n != i + 2:
                raise Refused(zarray.HeaderError, "more than a header and a payload")
            return _into(out, dt, fields, frames[i + 1])
        if last:
            raise Refused(zarray.HeaderError, "no header")
        if len(env) + 3 > zarray.limits.max_frames:
            raise Refused(zarray.HeaderError, "more frames than zarray.limits.max_frames")
        env.append(bytes(frame))
    raise Refused(zarray.HeaderError, "no header")  # pragma: no cover


def _into(out: np.ndarray[Any, Any], dt: np.dtype[Any], fields: Any, payload: bytes) -> Any:
    """What ``out`` holds after receiving ``payload`` with header ``fields``."""
    if dt != out.dtype or fields[3] != out.shape:
        raise Refused(zarray.OutMismatchError, "dtype or shape differs from out's")
    fields, payload = _plain(fields, payload)
    if len(payload) != fields[6]:
        raise Refused(zarray.HeaderError, "payload length")
    # out= copies straight from a view of the frame: nothing is allocated, so no
    # layout (an overlapping, misaligned one included) needs realigning or refusing.
    shape, strides, offset = fields[3:6]
    want = np.zeros_like(out)
    if want.size:
        items = np.dtype((np.void, dt.itemsize))  # whole items, padding included
        src = np.ndarray(shape, dt, bytearray(payload), offset, strides)
        np.copyto(want.view(items), src.view(items), casting="no")
    return want


# -- comparing results ------------------------------------------------------------------


class Mismatch(AssertionError):
    """A harness found zarray doing what the oracle or the contract does not allow."""


def same_dtype(got: np.dtype[Any], want: np.dtype[Any]) -> bool:
    return bool(
        got == want
        and got.str == want.str
        and got.fields == want.fields
        and got.isalignedstruct == want.isalignedstruct
    )


def item_bytes(A: np.ndarray[Any, Any]) -> bytes:
    """A's elements as raw bytes, whole items (padding included), in C order."""
    if A.dtype.itemsize == 0 or A.size == 0:
        return b""
    return A.view(np.dtype((np.void, A.dtype.itemsize))).tobytes()


#: Arrays whose elements cover at most this many bytes are compared in full.
FULL_COMPARE = 1 << 20


def compare_arrays(got: Any, want: np.ndarray[Any, Any], what: str) -> None:
    """The received array against the pure-Python path's: dtype, geometry, bytes, flags."""
    if type(got) is not np.ndarray:
        raise Mismatch(f"{what}: returned {type(got)!r}")
    if not same_dtype(got.dtype, want.dtype):
        raise Mismatch(f"{what}: dtype {got.dtype!r}, the pure-Python path gives {want.dtype!r}")
    if got.shape != want.shape:
        raise Mismatch(f"{what}: shape {got.shape}, the pure-Python path gives {want.shape}")
    if got.strides != want.strides:
        raise Mismatch(f"{what}: strides {got.strides}, pure-Python {want.strides}")
    if got.flags.writeable != want.flags.writeable:
        raise Mismatch(f"{what}: writeable={got.flags.writeable}, pure-Python disagrees")
    if got.size and not got.flags.aligned:
        raise Mismatch(f"{what}: misaligned array returned")
    if got.size * got.dtype.itemsize <= FULL_COMPARE:
        if item_bytes(got) != item_bytes(want):
            raise Mismatch(f"{what}: content differs from the pure-Python path's")
    elif got.size:
        items = np.dtype((np.void, got.dtype.itemsize))
        for idx in ((0,) * got.ndim, tuple(n - 1 for n in got.shape)):
            if got.view(items)[idx] != want.view(items)[idx]:
                raise Mismatch(f"{what}: element {idx} differs from the pure-Python path's")


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


class LazyHarness:
    """The one harness object of a fuzz module, made by ``make`` at the first input.

    atheris imports the module before it calls ``TestOneInput``, and the in-process
    replays and ``fuzz/run.py``'s fallback loop call :meth:`close` when they are done,
    so a module's sockets exist only while inputs run. A module exposes it as
    ``TestOneInput = _lazy.run`` and ``close = _lazy.close``.
    """

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make
        self.harness: Any = None

    def run(self, data: bytes) -> None:
        """One fuzz input, given to the harness (made now if this is the first)."""
        if self.harness is None:
            self.harness = self._make()
        self.harness.run(data)

    def close(self) -> None:
        """Close the harness's sockets, if it was made."""
        if self.harness is not None:
            self.harness.close()
            self.harness = None
