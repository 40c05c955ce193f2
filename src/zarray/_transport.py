"""send_array / recv_array: one array as a two-frame ZeroMQ message.

The plain call (no envelope, no ``out``, zarray's own format) is the per-message hot
path and stays two ``send``/``recv`` calls around the codec; everything else (envelopes,
the JSON recipe, receiving into ``out``) branches off after one or two checks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, overload

import numpy as np
import zmq

from zarray import _json_recipe
from zarray._array import array_from, is_own_memory, prepare
from zarray._codec import unpack
from zarray._dtypes import decode_dtype, encode_dtype
from zarray._message import (
    MAGIC,
    MESSAGE_MAGIC,
    bytes_of,
    c_layout,
    check_match,
    check_out,
    copy_into,
    decode_array,
    envelope_of,
    locate,
    prefix_of,
    recv_rest,
)
from zarray.errors import HeaderError

__all__ = ["recv_array", "send_array"]

# Returned when the payload was copied: the caller may reuse the array at once.
_DONE = zmq.MessageTracker()
# Plain ints: combining pyzmq's enum flags goes through the enum machinery, which
# costs more than a whole header pack on the per-message path.
_SNDMORE = int(zmq.SNDMORE)
_NOBLOCK = int(zmq.NOBLOCK)

NDArray = np.ndarray[Any, Any]
Format = Literal["zarray", "json"]


def send_array(
    socket: zmq.Socket[Any],
    A: NDArray,
    flags: int = 0,
    copy: bool = False,
    track: bool = True,
    envelope: Sequence[Any] | None = None,
    format: Format = "zarray",
) -> zmq.MessageTracker | None:
    """Send one array as a header frame followed by a payload frame.

    Parameters
    ----------
    socket : zmq.Socket
        Any socket that can send multipart messages.
    A : numpy.ndarray
        The array. Any layout; any dtype except those holding Python objects
        (object, records with object fields, StringDType).
    flags : int
        ZeroMQ send flags, e.g. ``zmq.NOBLOCK``. ``zmq.SNDMORE`` is added for the
        header frame by zarray itself.
    copy : bool
        If False (the default), hand the array's memory to libzmq without copying.
    track : bool
        If True (the default), return a tracker for the payload frame.
    envelope : sequence of bytes-like, optional
        Frames sent before zarray's own: a PUB topic (``[b"topic"]``), ROUTER
        identities and the empty delimiter (as returned by ``recv_array(...,
        envelope=True)``). Copied into the message; they may hold any bytes.
    format : {"zarray", "json"}
        ``"zarray"`` (the default) sends zarray's binary header. ``"json"`` sends pyzmq
        guide's recipe instead, a JSON frame ``{"dtype": str(A.dtype), "shape": [...]}``
        and the C-contiguous buffer, for receivers written as the guide shows. It carries
        simple dtypes only, and loses strides (the data is made C-contiguous) and the
        read-only bit.

    Returns
    -------
    zmq.MessageTracker or None
        ``None`` if ``track`` is false. Otherwise a tracker that is done once libzmq
        no longer references the array's memory; until then, do not modify ``A``.
        It is already done when the payload was copied (``copy=True``, payloads
        below the socket's ``copy_threshold``, sparse views that were compacted,
        non-contiguous arrays sent with ``format="json"``).

    Raises
    ------
    UnsupportedArrayError
        If ``A`` cannot be sent (or, with ``format="json"``, cannot be described by the
        recipe). Raised before any frame is sent.
    TypeError
        If ``envelope`` is not a sequence of bytes-like frames. Raised before any
        frame is sent.
    ValueError
        For an unknown ``format``.
    zmq.Again
        With ``zmq.NOBLOCK`` (or a send timeout) when the message cannot be queued;
        nothing was sent.

    Notes
    -----
    This never copies the data unless ``copy=True``, the payload is smaller than
    ``socket.copy_threshold`` (pyzmq's rule, 64 KiB by default), ``A`` is a strided
    view too sparse to send as its memory span (see ``zarray._array``), or
    ``format="json"`` is asked for and ``A`` is not C-contiguous.
    Over ``inproc://`` the receiver gets a view of ``A``'s own memory: writes on
    either side are visible to the other until the receiver drops its array.
    """
    # envelope and format are not keyword-only on purpose: CPython fills keyword-only
    # defaults from a dict on every call, which costs this hot path ~20 ns.
    if envelope is not None or format != "zarray":
        return _send_general(socket, A, flags, copy, track, envelope, format)
    header, payload = prepare(A)
    socket.send(header, flags | _SNDMORE, copy=True)
    # Once the header is queued, the payload must follow whatever happens, so that
    # the peer never sees a half message; libzmq accepts the remaining parts of a
    # message without applying the high-water mark, so dropping NOBLOCK cannot block.
    if copy or payload.nbytes < socket.copy_threshold:
        # Below the threshold a copy is cheaper than tracking (bench/RESULTS.md);
        # deciding here spares pyzmq's own check, which costs a memoryview per call.
        socket.send(payload, flags & ~_NOBLOCK, copy=True)
        return _DONE if track else None
    tracker: zmq.MessageTracker | None = socket.send(
        payload, flags & ~_NOBLOCK, copy=False, track=track
    )
    if track and payload is not A and not is_own_memory(payload, A):
        return _DONE  # a compacted view: libzmq holds zarray's private copy, not A
    return tracker


def check_envelope(envelope: Sequence[Any] | None) -> list[Any]:
    """The envelope frames as a list, refusing anything pyzmq could not send."""
    if envelope is None:
        return []
    if isinstance(envelope, (str, bytes, bytearray, memoryview, zmq.Frame, np.ndarray)):
        raise TypeError(
            "envelope must be a list of frames, e.g. [b'topic'] or [identity, b''], "
            f"not a single {type(envelope).__name__}"
        )
    frames = list(envelope)
    for i, frame in enumerate(frames):
        if isinstance(frame, str):
            raise TypeError(f"envelope frame {i} is a str; encode it to bytes first")
        try:
            memoryview(frame)
        except TypeError:
            raise TypeError(
                f"envelope frame {i} ({type(frame).__name__}) does not support the buffer interface"
            ) from None
    return frames


def encode_body(A: Any, format: str) -> tuple[bytes, Any]:
    """``(header, payload)`` of one array in the given format; nothing is sent."""
    if format == "zarray":
        return prepare(A)
    if format == "json":
        return _json_recipe.encode(A)
    raise ValueError(f"unknown format {format!r}; expected 'zarray' or 'json'")


def send_frames(
    socket: zmq.Socket[Any],
    parts: list[Any],
    payloads: list[bool],
    flags: int,
    copy: bool,
    track: bool,
) -> list[zmq.MessageTracker]:
    """Send ``parts`` as one message; return the trackers of the payload frames.

    Only parts flagged in ``payloads`` may go without a copy; envelope and header
    frames are small and always copied. Callers check everything before calling.
    """
    last = len(parts) - 1
    trackers = []
    for i, (part, is_payload) in enumerate(zip(parts, payloads, strict=True)):
        # Only the first frame may meet the high-water mark (see send_array), so only
        # it keeps NOBLOCK; after it, the message must be completed.
        f = flags if i == 0 else flags & ~_NOBLOCK
        if i < last:
            f |= _SNDMORE
        if is_payload:
            tracker = socket.send(part, f, copy=copy, track=track)
            if track and tracker is not None:
                trackers.append(tracker)
        else:
            socket.send(part, f, copy=True)
    return trackers


def _send_general(
    socket: zmq.Socket[Any],
    A: Any,
    flags: int,
    copy: bool,
    track: bool,
    envelope: Sequence[Any] | None,
    format: str,
) -> zmq.MessageTracker | None:
    env = check_envelope(envelope)
    header, payload = encode_body(A, format)
    parts = [*env, header, payload]
    trackers = send_frames(socket, parts, [False] * (len(parts) - 1) + [True], flags, copy, track)
    if not track:
        return None
    return trackers[0] if trackers else _DONE


@overload
def recv_array(
    socket: zmq.Socket[Any],
    flags: int = 0,
    copy: bool = False,
    envelope: Literal[False] = False,
    out: NDArray | None = None,
) -> NDArray: ...
@overload
def recv_array(
    socket: zmq.Socket[Any],
    flags: int = 0,
    copy: bool = False,
    *,
    envelope: Literal[True],
    out: NDArray | None = None,
) -> tuple[list[bytes], NDArray]: ...
@overload
def recv_array(
    socket: zmq.Socket[Any],
    flags: int = 0,
    copy: bool = False,
    envelope: bool = False,
    out: NDArray | None = None,
) -> NDArray | tuple[list[bytes], NDArray]: ...
def recv_array(
    socket: zmq.Socket[Any],
    flags: int = 0,
    copy: bool = False,
    envelope: bool = False,
    out: NDArray | None = None,
) -> NDArray | tuple[list[bytes], NDArray]:
    """Receive one array sent by :func:`send_array` (or by pyzmq's JSON recipe).

    Parameters
    ----------
    socket : zmq.Socket
        The socket to receive from.
    flags : int
        ZeroMQ receive flags, e.g. ``zmq.NOBLOCK``.
    copy : bool
        If False (the default), return a view of the received frame. If True, return
        an array that owns its memory, made with exactly one copy. Ignored with ``out``.
    envelope : bool
        If True, return ``(envelope_frames, array)``, where ``envelope_frames`` is the
        list of ``bytes`` frames that came before zarray's part of the message (a PUB
        topic, ROUTER identities and delimiter; ``[]`` if none). Pass it back as
        ``send_array(..., envelope=envelope_frames)`` to reply through a ROUTER. If
        False (the default), those frames are skipped.
    out : numpy.ndarray, optional
        A writeable C-contiguous array to receive into. The message's dtype and shape
        must equal ``out``'s; the payload is then written into ``out`` and ``out`` itself
        is returned (in C order, whatever the sender's layout; ``out`` stays writeable
        whatever the sender's read-only bit).

    Returns
    -------
    numpy.ndarray or tuple of (list of bytes, numpy.ndarray)
        The array, with the sender's dtype, shape and strides. Writeable unless the
        sender's array was read-only; always aligned for its dtype. With
        ``envelope=True``, the envelope frames and the array.

    Raises
    ------
    HeaderError
        If the message is not a valid zarray (or JSON recipe) message, carries several
        arrays (use :func:`recv_arrays`), or does not fit ``out`` (the message says
        which dtype or shape differs). The whole message has been consumed, so the
        next call receives the next message.
    TypeError, ValueError
        If ``out`` is not a writeable C-contiguous ndarray. Nothing was received.
    zmq.Again
        With ``zmq.NOBLOCK`` (or a receive timeout) when no message is waiting;
        nothing was consumed.

    Notes
    -----
    With ``copy=False`` this never copies, except when the frame is misaligned for
    the dtype; then the payload is copied once into a 64-byte aligned buffer. The
    returned array keeps the frame alive for as long as it lives.

    With ``out``, the payload is received straight into ``out``'s memory
    (``Socket.recv_into``) when the sender's layout is C-contiguous, so receiving a
    stream costs no allocation per message; another layout (Fortran, strided views,
    broadcasts) is received as a frame and copied into ``out`` once. Should the payload
    turn out not to match its header, ``out`` may have been partly overwritten.

    The envelope is every frame before zarray's part, which starts at the first frame
    that begins with zarray's magic bytes (``b"\\x93ZAR"``, or ``b"\\x93ZAM"`` for a message
    from :func:`send_arrays`), or else at a JSON recipe frame second to last. Topics,
    ROUTER identities and delimiters never begin with those bytes unless chosen to
    (0x93 never starts UTF-8 text); see ``docs/FORMAT.md``.

    A message written with pyzmq's guide recipe (a JSON ``{"dtype", "shape"}`` frame
    and the raw buffer) is recognised and decoded; its dtype string is parsed against
    a whitelist, never evaluated, and its shape checked against the payload length.
    """
    if out is not None:
        return _recv_into(socket, out, flags, envelope)
    head = socket.recv(flags, copy=False)
    if head.more:
        # The remaining parts of a message arrive together with its first part.
        payload = socket.recv(0, copy=False)
        if not payload.more and not envelope:
            try:
                return array_from(head, payload, copy)
            except HeaderError:
                if prefix_of(head) == MAGIC:
                    raise  # a zarray header that is itself wrong
            frames = [head, payload]  # perhaps a JSON recipe: decide below
        else:
            frames = recv_rest(socket, [head, payload])
    else:
        frames = [head]
    start, kind = locate(frames)
    A = decode_array(frames, start, kind, copy)
    if envelope:
        return envelope_of(frames, start), A
    return A


def _recv_into(
    socket: zmq.Socket[Any], out: NDArray, flags: int, envelope: bool
) -> NDArray | tuple[list[bytes], NDArray]:
    """recv_array(out=...): find the header frame by frame, then receive into ``out``.

    The payload must go straight into ``out``, so zarray's header is recognised as
    the frames arrive: the first frame that starts with the header magic, or that
    parses as a JSON recipe object; frames before it are the envelope.
    """
    check_out(out)
    env: list[bytes] = []
    f = flags
    recipe_error: HeaderError | None = None
    while True:
        frame = socket.recv(f, copy=False)
        f = 0
        prefix = prefix_of(frame)
        fields: tuple[Any, ...] | None = None
        try:
            if prefix == MESSAGE_MAGIC:
                raise HeaderError(
                    "message carries several arrays sent by send_arrays; out= receives one"
                )
            if prefix == MAGIC:
                if not frame.more:
                    raise HeaderError(
                        "message has 1 frame; a zarray message has a header and a payload"
                        if not env
                        else f"zarray header at frame {len(env)} has no payload frame after it"
                    )
                fields = unpack(frame)
            elif frame.more and _json_recipe.looks_like_recipe(prefix):
                try:
                    fields = _json_recipe.parse_header(frame)
                except HeaderError as exc:
                    recipe_error = exc  # or an envelope frame that starts with "{"
            if fields is not None:
                check_match(out, decode_dtype(*fields[:3]), fields[3])
                break
            if not frame.more:
                why = f" (last JSON frame: {recipe_error})" if recipe_error else ""
                raise HeaderError(f"message of {len(env) + 1} frames holds no zarray header{why}")
        except HeaderError:
            _drain(socket)
            raise
        env.append(bytes_of(frame))
    if c_layout(fields):
        nbytes = fields[6]
        # numpy will not export datetime64/timedelta64 through the buffer protocol;
        # a flat byte view of out (C-contiguous, so a view) is the same memory.
        buf: Any = out if encode_dtype(out.dtype)[3] else out.reshape(-1).view(np.uint8)
        # libzmq copies the frame straight into out: no allocation for the payload.
        size = socket.recv_into(buf, flags=0)
        if size != nbytes or socket.get(zmq.RCVMORE):
            _drain(socket)
            raise HeaderError(
                f"payload is {size} bytes, but the header says {nbytes}"
                if size != nbytes
                else "message has more than 2 frames; expected a header and a payload"
            )
    else:
        payload = socket.recv(0, copy=False)
        if payload.more:
            _drain(socket)
            raise HeaderError("message has more than 2 frames; expected a header and a payload")
        copy_into(out, fields, payload)
    return (env, out) if envelope else out


def _drain(socket: zmq.Socket[Any]) -> None:
    """Discard the remaining frames of the current message."""
    while socket.get(zmq.RCVMORE):
        socket.recv(copy=False)
