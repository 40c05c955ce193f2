"""A zarray message as a list of frames: where zarray's part starts, and what it holds.

A message on the wire is ``envelope + body``. The envelope is whatever frames the
application or the socket type puts first (a PUB topic, ROUTER identities and the
empty delimiter); the body is one of

* a single array: a header frame (``b"\\x93ZAR"`` magic) and its payload frame;
* several arrays (``send_arrays``): a message-header frame (``b"\\x93ZAM"`` magic)
  announcing N arrays, then N header + payload pairs, 2N frames;
* pyzmq's JSON recipe: a JSON object frame (first byte ``{``) and the raw buffer.

**The envelope rule.** The body starts at the first frame that begins with one of
zarray's magics (``b"\\x93ZAR"`` or ``b"\\x93ZAM"``), or, failing that, at the second-to-last
frame if that one is a JSON object (the recipe). Everything before it is the envelope.
This is safe for what envelopes hold: the byte 0x93 never starts UTF-8 text (it is a
continuation byte), libzmq's generated ROUTER identities start with 0x00, and the
REQ/ROUTER delimiter is empty; only a binary identity or topic that itself starts with
zarray's four magic bytes would be mistaken for zarray's part. The body must then have
exactly its shape (a header and one payload; a message header and 2N frames), or the
message is refused. The whole message is always received (drained) before it is decoded.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import zmq

from zarray import _json_recipe, _stdjson, limits
from zarray._array import array_from, rebuild
from zarray._codec import unpack
from zarray._dtypes import brief, decode_cache, decode_dtype, encode_dtype
from zarray._header_py import DESCR_STRUCT, FIXED_SIZE
from zarray._payload import (
    PENDING,
    PRIVATE,
    SMALL,
    USER,
    Lease,
    Stage,
    decode_into,
    encode,
    open_payload,
)
from zarray.errors import HeaderError, OutMismatchError, UnsupportedArrayError, ZarrayError

__all__ = [
    "JSON",
    "MAGIC",
    "MAPPING",
    "MESSAGE_MAGIC",
    "MULTI",
    "SEQUENCE",
    "SINGLE",
    "Outgoing",
    "bytes_of",
    "c_layout",
    "check_envelope",
    "check_frame_count",
    "check_match",
    "check_out",
    "check_send_flags",
    "copy_into",
    "decode_array",
    "decode_arrays",
    "drain",
    "envelope_of",
    "fields_of",
    "is_compressed",
    "locate",
    "outgoing_array",
    "outgoing_arrays",
    "pack_message_header",
    "prefix_of",
    "recv_rest",
    "refused",
    "unpack_message_header",
]

MAGIC = b"\x93ZAR"
MESSAGE_MAGIC = b"\x93ZAM"
MESSAGE_VERSION = 1
SEQUENCE = 0
MAPPING = 1
# magic, version, container kind, reserved, array count, JSON length
_FIXED = struct.Struct("<4sBBHII")
MESSAGE_FIXED_SIZE = _FIXED.size  # 16

# Plain ints, as in zarray._transport: pyzmq's enum flags are slow to combine.
#: The tracker a send returns when libzmq holds none of the caller's memory (the
#: payloads were copied): already done, so the caller may reuse its arrays at once.
DONE = zmq.MessageTracker()
_SNDMORE = int(zmq.SNDMORE)
_NOT_NOBLOCK = ~int(zmq.NOBLOCK)

# Body kinds returned by locate().
SINGLE = 0
MULTI = 1
JSON = 2


def prefix_of(frame: Any) -> bytes:
    """The first four bytes of a frame (fewer if it is shorter)."""
    return memoryview(frame)[:4].tobytes()


def bytes_of(frame: Any) -> bytes:
    """A frame's content as bytes."""
    return memoryview(frame).tobytes()


def recv_rest(socket: zmq.Socket[Any], frames: list[Any]) -> list[Any]:
    """Append the remaining frames of the current message (a drain that keeps them)."""
    # The remaining parts of a message arrive together with its first part, so
    # these receives never wait and never raise Again.
    try:
        while frames[-1].more:
            if len(frames) >= limits.max_frames:
                # Each frame held costs ~200 bytes however short: keep no more.
                raise HeaderError(
                    f"message has more than {limits.max_frames} frames (zarray.limits.max_frames)"
                )
            frames.append(socket.recv(0, copy=False))
    except BaseException as exc:  # or e.g. KeyboardInterrupt between two frames
        raise refused(exc, socket)  # noqa: B904 (refused chains it)
    return frames


def drain(socket: zmq.Socket[Any]) -> None:
    """Discard the remaining frames of the current message."""
    while socket.get(zmq.RCVMORE):
        socket.recv(copy=False)


def refused(exc: BaseException, socket: zmq.Socket[Any] | None = None) -> BaseException:
    """The exception a receive function raises for ``exc``, met once a message began.

    This is the one place that turns a failure inside a message into zarray's promise:
    with ``socket`` (a message still being read), the rest of the message is drained
    first, whatever ``exc`` is, so the socket is left at a message boundary. zarray's
    own errors, zmq's errors and exceptions that are not ``Exception`` (such as
    ``KeyboardInterrupt``) are returned as they are; any other exception (numpy's, say,
    for an input that no check foresaw) becomes a ``HeaderError`` naming it, with the
    original as its ``__cause__``. Use as ``raise refused(exc, socket)``.
    """
    if socket is not None:
        try:
            drain(socket)
        except zmq.ZMQError:
            pass  # the socket itself failed (closed, context terminated): nothing to keep
    if isinstance(exc, (ZarrayError, zmq.ZMQError)) or not isinstance(exc, Exception):
        return exc
    err = HeaderError(f"message refused: {type(exc).__name__}: {brief(str(exc), 200)}")
    err.__cause__ = exc
    return err


# -- the multi-array message header ---------------------------------------------------


def pack_message_header(
    mapping: bool, count: int, names: Sequence[str] | None, meta: Mapping[str, Any] | None
) -> bytes:
    """The message-header frame of a ``send_arrays`` message (docs/FORMAT.md).

    Raises UnsupportedArrayError for names that are not str or a meta that standard
    JSON cannot encode.
    """
    doc: dict[str, Any] = {}
    if mapping:
        assert names is not None
        for name in names:
            if not isinstance(name, str):
                raise UnsupportedArrayError(
                    f"array names must be str, got {type(name).__name__} {name!r:.40}"
                )
        doc["names"] = list(names)
    if meta is not None and not isinstance(meta, Mapping):
        raise UnsupportedArrayError(f"meta must be a dict, got {type(meta).__name__}")
    if meta:
        for key in meta:
            if not isinstance(key, str):
                raise UnsupportedArrayError(
                    f"meta keys must be str, got {type(key).__name__} {key!r:.40}"
                )
        doc["meta"] = dict(meta)
    try:
        text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise UnsupportedArrayError(
            f"meta cannot be encoded as standard JSON: {exc} (convert numpy scalars with "
            ".item(), arrays go in the arrays argument)"
        ) from None
    body = text.encode("utf-8") if doc else b""
    if len(body) > limits.max_meta_bytes:
        raise UnsupportedArrayError(
            f"names and meta take {len(body)} bytes of JSON, more than a receiver accepts "
            f"(zarray.limits.max_meta_bytes, {limits.max_meta_bytes}); raise it on both sides"
        )
    if count > 0xFFFFFFFF:
        raise UnsupportedArrayError("too many arrays for one message")
    fixed = _FIXED.pack(
        MESSAGE_MAGIC, MESSAGE_VERSION, MAPPING if mapping else SEQUENCE, 0, count, len(body)
    )
    return fixed + body


def _announced(frame: Any) -> int:
    """The array count of a message-header frame, or -1 if it is not one."""
    view = memoryview(frame)
    if view.nbytes < MESSAGE_FIXED_SIZE or view[:4] != MESSAGE_MAGIC:
        return -1
    count: int = _FIXED.unpack_from(view)[4]
    return count


def unpack_message_header(buf: Any) -> tuple[list[str] | None, dict[str, Any], int]:
    """Parse a message-header frame: ``(names or None, meta, count)``; HeaderError if bad."""
    view = memoryview(buf)
    n = view.nbytes
    if n < 4 or view[:4] != MESSAGE_MAGIC:
        raise HeaderError(f"not a zarray message header: bad magic {view[:4].tobytes()!r}")
    if n < MESSAGE_FIXED_SIZE:
        raise HeaderError(f"message header truncated: {n} bytes, the fixed part is 16")
    _, version, kind, reserved, count, length = _FIXED.unpack_from(view)
    if version != MESSAGE_VERSION:
        raise HeaderError(
            f"unsupported message header version {version} (this zarray reads version "
            f"{MESSAGE_VERSION})"
        )
    if kind not in (SEQUENCE, MAPPING):
        raise HeaderError(f"unknown container kind {kind} in message header")
    if reserved:
        raise HeaderError("reserved message header bytes 6..7 are not zero")
    if n != MESSAGE_FIXED_SIZE + length:
        raise HeaderError(
            f"message header is {n} bytes, but its JSON length says {MESSAGE_FIXED_SIZE + length}"
        )
    if length > limits.max_meta_bytes:
        # Python's json makes up to ~25x the document's size in objects: bound it first.
        raise HeaderError(
            f"message header JSON of {length} bytes exceeds zarray.limits.max_meta_bytes "
            f"({limits.max_meta_bytes})"
        )
    doc: Any = {}
    if length:
        try:
            doc = _stdjson.loads(view[MESSAGE_FIXED_SIZE:].tobytes())
        except (ValueError, RecursionError) as exc:
            raise HeaderError(f"message header JSON is invalid: {brief(str(exc))}") from None
        if not isinstance(doc, dict) or not doc:
            raise HeaderError("message header JSON must be a non-empty object")
    extra = set(doc) - {"names", "meta"}
    if extra:
        raise HeaderError(f"unknown keys in message header JSON: {sorted(extra)}")
    names: list[str] | None = None
    if kind == MAPPING:
        names = doc.get("names")
        if not (isinstance(names, list) and all(isinstance(s, str) for s in names)):
            raise HeaderError("message header of a mapping needs a list of str 'names'")
        if len(names) != count:
            raise HeaderError(f"message header has {len(names)} names for {count} arrays")
        if len(set(names)) != count:
            raise HeaderError("message header names are not unique")
    elif "names" in doc:
        raise HeaderError("message header of a sequence carries 'names'")
    meta = doc.get("meta", {})
    if not isinstance(meta, dict) or ("meta" in doc and not meta):
        raise HeaderError("message header 'meta' must be a non-empty JSON object when present")
    return names, meta, count


# -- finding the body ----------------------------------------------------------------


def locate(frames: Sequence[Any]) -> tuple[int, int]:
    """Return ``(start, kind)`` of the body of a whole message (see the module doc).

    Raises HeaderError, naming what is wrong, when the message has no valid body.
    """
    n = len(frames)
    for i in range(n):
        prefix = prefix_of(frames[i])
        if prefix == MAGIC:
            if n - i == 2:
                return i, SINGLE
            if n == 1:
                raise HeaderError(
                    "message has 1 frame; a zarray message has a header and a payload"
                )
            if i == n - 1:
                raise HeaderError(f"zarray header at frame {i} has no payload frame after it")
            if i == 0:
                raise HeaderError("message has more than 2 frames; expected a header and a payload")
            raise HeaderError(
                f"message has {n} frames: a zarray header at frame {i} is followed by "
                f"{n - i - 1} frames; expected exactly one payload frame"
            )
        if prefix == MESSAGE_MAGIC:
            count = _announced(frames[i])
            if count < 0:
                unpack_message_header(frames[i])  # raises: truncated
            if 2 * count == n - i - 1:
                return i, MULTI
            raise HeaderError(
                f"message header at frame {i} announces {count} arrays ({2 * count} frames), "
                f"but {n - i - 1} frames follow it"
            )
        if i == n - 2 and _json_recipe.looks_like_recipe(prefix):
            return i, JSON
    if n == 1:
        raise HeaderError("message has 1 frame; a zarray message has a header and a payload")
    unpack(frames[-2])  # raises the codec's own error: "not a zarray header: bad magic ..."
    raise AssertionError("unreachable")  # pragma: no cover


def is_compressed(frames: Sequence[Any], start: int, kind: int) -> bool:
    """Whether an array header of a located body names a codec (header byte 6).

    A peek, before any header is parsed: ``zarray.asyncio`` decodes such a message off
    the event loop. A frame too short to say counts as not compressed (it is refused
    when decoded).
    """
    if kind == SINGLE:
        heads: Sequence[Any] = (frames[start],)
    elif kind == MULTI:
        heads = frames[start + 1 :: 2]
    else:
        return False
    for head in heads:
        view = memoryview(head)
        if view.nbytes > 6 and view[6]:
            return True
    return False


def envelope_of(frames: Sequence[Any], start: int) -> list[bytes]:
    """The envelope frames (those before ``start``) as bytes."""
    return [bytes_of(f) for f in frames[:start]]


# -- decoding ------------------------------------------------------------------------


def _recipe_fields(frames: Sequence[Any], start: int) -> _json_recipe.RecipeFields:
    return _json_recipe.parse(frames[start], memoryview(frames[start + 1]).nbytes)


def decode_array(frames: Sequence[Any], start: int, kind: int, copy: bool) -> np.ndarray[Any, Any]:
    """The one array of a located body; HeaderError for a several-array message."""
    if kind == SINGLE:
        return array_from(frames[start], frames[start + 1], copy)
    if kind == JSON:
        return rebuild(_recipe_fields(frames, start), frames[start + 1], copy)
    _, _, count = unpack_message_header(frames[start])
    raise HeaderError(
        f"message carries {count} arrays sent by send_arrays; receive it with recv_arrays"
    )


def decode_arrays(
    frames: Sequence[Any], start: int, kind: int, copy: bool
) -> tuple[list[np.ndarray[Any, Any]] | dict[str, np.ndarray[Any, Any]], dict[str, Any]]:
    """``(arrays, meta)`` of a located body; a single array comes back as ``[A]``.

    The meta of a JSON-recipe message is its header's other keys (imagezmq's ``"msg"``).
    """
    if kind == JSON:
        return [decode_array(frames, start, kind, copy)], _json_recipe.extras_of(frames[start])
    if kind != MULTI:
        return [decode_array(frames, start, kind, copy)], {}
    names, meta, count = unpack_message_header(frames[start])
    _check_new_descriptors(frames[start + 1 :: 2])
    arrays = []
    for k in range(count):
        j = start + 1 + 2 * k
        try:
            arrays.append(array_from(frames[j], frames[j + 1], copy))
        except HeaderError as exc:
            which = f"array {k}" if names is None else f"array {k} ({names[k]!r:.40})"
            raise HeaderError(f"{which}: {exc}") from None
    if names is None:
        return arrays, meta
    return dict(zip(names, arrays, strict=True)), meta


def _check_new_descriptors(headers: Sequence[Any]) -> None:
    """Refuse a message whose record descriptors would cost too much to decode.

    A decoded record dtype takes up to ~25 times its descriptor's bytes in Python
    objects (docs/SECURITY.md), and each array keeps its dtype; so the distinct record
    descriptors of one message that the dtype cache does not already hold may add up
    to ``zarray.limits.max_descriptor_bytes``. Only the descriptor bytes are looked at
    here; the headers themselves are checked when each array is decoded.
    """
    total = 0
    seen: set[bytes] = set()
    for header in headers:
        view = memoryview(header)
        if view.nbytes < FIXED_SIZE or view[9] != DESCR_STRUCT:
            continue
        begin = FIXED_SIZE + 16 * view[8]
        descr = view[begin : begin + (view[10] | view[11] << 8)].tobytes()
        if descr in seen or descr in decode_cache:
            continue
        seen.add(descr)
        total += len(descr)
        if total > limits.max_descriptor_bytes:
            raise HeaderError(
                f"the message's record descriptors take more than {limits.max_descriptor_bytes} "
                "bytes to decode (zarray.limits.max_descriptor_bytes)"
            )


# -- receiving into a preallocated array -----------------------------------------------


def check_out(out: Any) -> None:
    """Refuse an ``out`` that cannot receive (before anything is received)."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")
    if not out.flags.writeable:
        raise ValueError("out must be writeable")
    if not out.flags.c_contiguous:
        raise ValueError("out must be C-contiguous")
    if out.dtype.hasobject:
        raise ValueError("out must not hold Python objects")
    # A dtype zarray cannot carry (an int with fields, say, which numpy compares equal
    # to the plain int) would otherwise be refused only after the header was read.
    encode_dtype(out.dtype)


def check_match(out: np.ndarray[Any, Any], dt: np.dtype[Any], shape: tuple[int, ...]) -> None:
    """HeaderError saying what differs when the message's array does not fit ``out``."""
    diffs = []
    if dt != out.dtype:
        diffs.append(f"dtype {brief(dt)} (out has {brief(out.dtype)})")
    if shape != out.shape:
        diffs.append(f"shape {shape} (out has {out.shape})")
    if diffs:
        raise OutMismatchError("the message does not fit out: it carries " + " and ".join(diffs))


def c_layout(fields: tuple[Any, ...]) -> bool:
    """Whether a header's payload is exactly the C-contiguous bytes of its array."""
    itemsize, shape, strides, offset, nbytes = fields[2:7]
    if offset != 0:
        return False
    step = itemsize
    for n, s in zip(reversed(shape), reversed(strides), strict=True):
        if n == 0:
            return bool(nbytes == 0)
        if n != 1 and s != step:
            return False
        step *= n
    return bool(nbytes == step)


def fields_of(frames: Sequence[Any], start: int, kind: int) -> tuple[Any, ...]:
    """The header fields of a located single-array body (zarray or JSON recipe)."""
    if kind == SINGLE:
        return unpack(frames[start])
    if kind == JSON:
        return _recipe_fields(frames, start)
    decode_array(frames, start, kind, False)  # raises: several arrays
    raise AssertionError("unreachable")  # pragma: no cover


def copy_into(out: np.ndarray[Any, Any], fields: tuple[Any, ...], payload: Any) -> None:
    """Copy a received payload into ``out`` (dtype and shape already checked).

    A compressed payload in C layout is decompressed straight into ``out``; any other
    non-plain payload is opened by the payload stage first (zarray._payload).
    """
    descr, structured, itemsize, shape, strides, offset, nbytes = fields[:7]
    if fields[8] or fields[10]:
        if c_layout(fields) and decode_into(out, fields, payload):
            return
        payload = open_payload(fields, payload)[0]
    size = memoryview(payload).nbytes
    if size != nbytes:
        raise HeaderError(f"payload is {size} bytes, but the header says {nbytes}")
    dt = decode_dtype(descr, structured, itemsize)
    if out.size == 0:
        return
    # A view of the frame, aligned or not: numpy's copy loops handle unaligned sources,
    # and out is aligned, so no intermediate buffer is needed. Whole items are copied
    # as raw bytes, as recv_into does for a C-ordered payload: a record copy would skip
    # the bytes no field covers.
    items = np.dtype((np.void, dt.itemsize))
    src = np.ndarray(shape, dt, payload, offset, strides)
    np.copyto(out.view(items), src.view(items), casting="no")


# -- outgoing messages -----------------------------------------------------------------


class Outgoing:
    """The frames of one message, every one checked and encoded, none yet sent.

    ``frames[i]`` is handed to pyzmq as ``modes[i]`` says (``zarray._payload``: SMALL
    frames are copied, USER frames are the caller's memory, PRIVATE frames zarray's own
    buffers). ``leases`` are the shared-memory slots the message refers to: if the
    message is not sent after all, :meth:`cancel` gives them back. ``pending`` lists
    the payloads still to compress: every sender calls :meth:`finish` before sending.
    """

    __slots__ = ("frames", "leases", "modes", "pending")

    def __init__(self, envelope: list[Any]) -> None:
        self.frames: list[Any] = list(envelope)
        self.modes: list[int] = [SMALL] * len(envelope)
        self.leases: list[Lease] = []
        #: indices of the payload frames that are ``zarray._payload.Pending``.
        self.pending: list[int] = []

    def add(self, frame: Any, mode: int) -> None:
        self.frames.append(frame)
        self.modes.append(mode)

    def add_payload(self, A: Any, stage: Stage | None, socket: Any, flags: int) -> None:
        header, frame, mode, lease = encode(A, stage, socket, flags)
        if lease is not None:
            self.leases.append(lease)
        if mode == PENDING:
            self.pending.append(len(self.frames) + 1)
        self.frames += (header, frame)
        self.modes += (SMALL, mode)

    def finish(self) -> None:
        """Run the pending compressions: each payload frame and its header become the
        compressed ones (or stay as they are where "auto" finds it does not pay).

        Touches no socket, so ``zarray.asyncio`` runs it off the event loop.
        """
        for i in self.pending:
            self.frames[i - 1], self.frames[i], self.modes[i] = self.frames[i].run()
        self.pending = []

    def cancel(self) -> None:
        """Give back every shared-memory slot: the message will never be sent."""
        for lease in self.leases:
            lease.cancel()
        self.leases = []

    def tracker(self, trackers: list[zmq.MessageTracker], track: bool) -> zmq.MessageTracker | None:
        """What a send returns once the message is out: None unless ``track``, else one
        tracker for the payload frames' trackers and the leases' releases (one that is
        done already when libzmq holds none of the caller's memory)."""
        if not track:
            return None
        if not self.leases:
            if not trackers:
                return DONE
            if len(trackers) == 1:
                return trackers[0]
        return zmq.MessageTracker(*trackers, *(lease.released for lease in self.leases))


def check_envelope(envelope: Sequence[Any] | None) -> list[bytes]:
    """The envelope frames as ``bytes``, refusing anything pyzmq could not send.

    Every frame is turned into bytes here, before the first frame goes out: a buffer
    that ``memoryview`` accepts but pyzmq cannot send (a non-contiguous view) must be
    refused now, not after earlier frames of the message were sent with SNDMORE.
    """
    if envelope is None:
        return []
    if isinstance(envelope, (str, bytes, bytearray, memoryview, zmq.Frame, np.ndarray)):
        raise TypeError(
            "envelope must be a list of frames, e.g. [b'topic'] or [identity, b''], "
            f"not a single {type(envelope).__name__}"
        )
    frames: list[bytes] = []
    for i, frame in enumerate(envelope):
        if type(frame) is bytes:
            frames.append(frame)
            continue
        if isinstance(frame, str):
            raise TypeError(f"envelope frame {i} is a str; encode it to bytes first")
        try:
            view = memoryview(frame)
        except (TypeError, ValueError, BufferError):
            raise TypeError(
                f"envelope frame {i} ({type(frame).__name__}) does not support the buffer interface"
            ) from None
        if not view.contiguous:
            raise TypeError(
                f"envelope frame {i} ({type(frame).__name__}) is not contiguous in memory, "
                "which pyzmq cannot send; pass bytes(frame)"
            )
        frames.append(view.tobytes(order="A"))  # the bytes in memory order, as pyzmq sends
    return frames


def check_send_flags(flags: int) -> None:
    """Refuse send flags that could leave a message half sent; call before any frame.

    Only ``zmq.NOBLOCK`` is accepted. ``zmq.SNDMORE`` would keep zarray's message open,
    so that whatever is sent next is glued onto it; zarray sets it on every frame but
    the last itself.
    """
    if flags & _NOT_NOBLOCK:
        if flags & _SNDMORE:
            raise ValueError(
                "flags include zmq.SNDMORE: zarray ends each message itself, and a message "
                "left open would swallow the next one; send frames that go before the "
                "array with envelope=[...]"
            )
        raise ValueError(f"send flags {flags!r}: only 0 and zmq.NOBLOCK are accepted")


def check_frame_count(count: int) -> None:
    """Refuse to send a message of more frames than a receiver accepts."""
    if count > limits.max_frames:
        raise UnsupportedArrayError(
            f"message of {count} frames, more than a receiver accepts "
            f"(zarray.limits.max_frames, {limits.max_frames}); raise it on both sides"
        )


def outgoing_array(
    socket: Any,
    A: Any,
    envelope: Sequence[Any] | None,
    format: str,
    stage: Stage | None,
    flags: int,
    meta: Mapping[str, Any] | None = None,
) -> Outgoing:
    """Every frame of a one-array message (``send_array``); nothing is sent.

    Raises UnsupportedArrayError, TypeError or ValueError for what cannot be sent, and
    ``zmq.Again`` for a full shared-memory pool; nothing has been sent then.
    """
    check_send_flags(flags)
    out = Outgoing(check_envelope(envelope))
    check_frame_count(len(out.frames) + 2)
    if format == "zarray":
        if meta is not None:
            raise ValueError(
                "send_array carries meta only in pyzmq's JSON recipe (format='json'); "
                "in zarray's format, send_arrays([A], meta=...) carries it"
            )
        out.add_payload(A, stage, socket, flags)
    elif format == "json":
        header, payload = _json_recipe.encode(A, meta)
        out.add(header, SMALL)
        out.add(payload, USER if _json_recipe.is_view(payload, A) else PRIVATE)
    else:
        raise ValueError(f"unknown format {format!r}; expected 'zarray' or 'json'")
    return out


def outgoing_arrays(
    socket: Any,
    arrays: Sequence[Any] | Mapping[str, Any],
    meta: Mapping[str, Any] | None,
    envelope: Sequence[Any] | None,
    stage: Stage | None,
    flags: int,
) -> Outgoing:
    """Every frame of a several-array message (``send_arrays``); nothing is sent.

    Everything that could be refused is checked here, before anything is sent; the
    shared-memory slots taken for earlier arrays are given back if a later one fails.
    """
    if isinstance(arrays, Mapping):
        names: list[Any] | None = list(arrays.keys())
        values = list(arrays.values())
    elif isinstance(arrays, Sequence) and not isinstance(arrays, (str, bytes, bytearray)):
        names = None
        values = list(arrays)
    else:
        hint = "; use send_array for one array" if isinstance(arrays, np.ndarray) else ""
        raise UnsupportedArrayError(
            f"arrays must be a sequence or a mapping of arrays, got {type(arrays).__name__}" + hint
        )
    check_send_flags(flags)
    out = Outgoing(check_envelope(envelope))
    check_frame_count(len(out.frames) + 1 + 2 * len(values))
    out.add(pack_message_header(names is not None, len(values), names, meta), SMALL)
    records: set[bytes] = set()
    try:
        for k, A in enumerate(values):
            try:
                out.add_payload(A, stage, socket, flags)
            except UnsupportedArrayError as exc:
                which = f"array {k}" if names is None else f"array {names[k]!r:.40}"
                raise UnsupportedArrayError(f"{which}: {exc}") from None
            descr, structured = encode_dtype(A.dtype)[:2]
            if structured:
                records.add(descr)
        # What a receiver whose dtype cache is empty would refuse (_check_new_descriptors).
        if sum(map(len, records)) > limits.max_descriptor_bytes:
            raise UnsupportedArrayError(
                f"the arrays' record dtypes take {sum(map(len, records))} bytes to describe, "
                "more than a receiver decodes for one message "
                f"(zarray.limits.max_descriptor_bytes, {limits.max_descriptor_bytes})"
            )
    except BaseException:
        out.cancel()
        raise
    return out
