"""send_array / recv_array: one array as a two-frame ZeroMQ message.

The plain call (no envelope, no ``out``, zarray's own format) is the per-message hot
path and stays two ``send``/``recv`` calls around the codec; everything else (envelopes,
the JSON recipe, receiving into ``out``) branches off after one or two checks.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np
import zmq

from zarray import _json_recipe, limits
from zarray._array import array_from, is_own_memory, prepare
from zarray._codec import unpack
from zarray._dtypes import decode_dtype, encode_dtype
from zarray._message import (
    DONE,
    MAGIC,
    MESSAGE_MAGIC,
    Outgoing,
    bytes_of,
    c_layout,
    check_match,
    check_out,
    copy_into,
    decode_array,
    envelope_of,
    locate,
    outgoing_array,
    prefix_of,
    recv_rest,
    refused,
)
from zarray._payload import SMALL, USER, Stage
from zarray.errors import HeaderError

if TYPE_CHECKING:
    from zarray._shm import SharedPool

__all__ = ["recv_array", "send_array"]

# Plain ints: combining pyzmq's enum flags goes through the enum machinery, which
# costs more than a whole header pack on the per-message path.
_SNDMORE = int(zmq.SNDMORE)
_NOBLOCK = int(zmq.NOBLOCK)
# Every send flag but NOBLOCK: SNDMORE (zarray ends each message itself) and unknown bits.
_NOT_NOBLOCK = ~_NOBLOCK

NDArray = np.ndarray[Any, Any]
Format = Literal["zarray", "json"]
#: What ``compress=`` takes: None, a codec name or "auto", (name, level) or
#: (name, level, shuffle); see zarray._codecs.compression.
Compress = str | tuple[str, int | None] | tuple[str, int | None, bool] | None


def send_array(
    socket: zmq.Socket[Any],
    A: NDArray,
    flags: int = 0,
    copy: bool = False,
    track: bool = True,
    envelope: Sequence[Any] | None = None,
    format: Format = "zarray",
    shm: SharedPool | None = None,
    compress: Compress = None,
    meta: Mapping[str, Any] | None = None,
) -> zmq.MessageTracker | None:
    """Send one array as a header frame followed by a payload frame.

    Parameters
    ----------
    socket : zmq.Socket
        Any blocking socket that can send multipart messages (for ``zmq.asyncio``
        sockets, use :mod:`zarray.asyncio`).
    A : numpy.ndarray
        The array. Any layout; any dtype except those holding Python objects
        (object, records with object fields, StringDType).
    flags : int
        ZeroMQ send flags: ``0`` or ``zmq.NOBLOCK``. zarray sets ``zmq.SNDMORE`` on
        every frame but the last itself; passing it is refused (``ValueError``), since
        a message left open would swallow the next one.
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
        simple dtypes only, and no strides or read-only bit: arrays that are not
        C-contiguous, or are read-only, are sent as a copy (so a receiver over inproc
        never gets a writeable view of read-only memory).
    shm : zarray.SharedPool, optional
        Send the payload through this shared-memory pool, by reference, to a receiver
        on the same host (see :class:`zarray.SharedPool`); small payloads still go
        inline. Only with ``format="zarray"``.
    compress : str or tuple, optional
        Compress the payload for a slow link: ``"lz4"``, ``"zstd"``, ``("zstd", level)``
        or ``"auto"``; ``(name, level, False)`` turns the byte-shuffle filter off (by
        default it is applied to dtypes of more than one byte). A named codec compresses
        every non-empty payload. ``"auto"`` (lz4) compresses only payloads of 64 KiB or
        more, on sockets whose endpoint is not ``inproc://`` or ``ipc://``, and only if
        samples and then the whole payload shrink to at most 0.7 of their size; it
        sends the rest as it would without compression. Needs ``pip install
        "zarray[compress]"``. Only with ``format="zarray"``; ignored when ``shm`` is
        given. See docs/FORMAT.md for the bytes.
    meta : dict, optional
        Only with ``format="json"``: more keys for the recipe's JSON frame, e.g.
        ``{"msg": "cam1"}``, the text imagezmq's ``ImageHub`` expects (standard JSON, str
        keys, not ``dtype`` or ``shape``). A receiver gets them from
        :func:`recv_arrays`. In zarray's format, :func:`send_arrays` carries meta.

    Returns
    -------
    zmq.MessageTracker or None
        ``None`` if ``track`` is false. Otherwise a tracker that is done once libzmq
        no longer references the array's memory; until then, do not modify ``A``.
        It is already done when the payload was copied (``copy=True``, payloads
        below the socket's ``copy_threshold``, sparse views that were compacted,
        non-contiguous arrays sent with ``format="json"``, compressed payloads, arrays
        copied into a shared-memory pool). For an array that lives in ``shm``'s pool
        it is done once every receiver has dropped its view of it.

    Raises
    ------
    UnsupportedArrayError
        If ``A`` cannot be sent (or, with ``format="json"``, cannot be described by the
        recipe). Raised before any frame is sent.
    TypeError
        If ``envelope`` is not a sequence of contiguous bytes-like frames, or
        ``socket`` is a ``zmq.asyncio`` socket. Raised before any frame is sent.
    ValueError
        For an unknown ``format``, ``flags`` other than ``0`` and ``zmq.NOBLOCK``,
        ``shm``/``compress`` with ``format="json"``, ``meta`` without it, or an unknown
        codec name or level. Raised before any frame is sent.
    ImportError
        For ``compress`` without the ``compress`` extra; the message says how to
        install it. Nothing was sent.
    zmq.Again
        With ``zmq.NOBLOCK`` (or a send timeout) when the message cannot be queued, or
        ``shm``'s pool is full; nothing was sent.

    Notes
    -----
    This never copies the data unless ``copy=True``, the payload is smaller than
    ``socket.copy_threshold`` (pyzmq's rule, 64 KiB by default), ``A`` is a strided
    view too sparse to send as its memory span (see ``zarray._array``),
    ``format="json"`` is asked for and ``A`` is not C-contiguous or is read-only, or
    ``shm`` is given and ``A`` does not live in its pool (then it is copied once into
    the pool).
    Over ``inproc://`` the receiver gets a view of ``A``'s own memory: writes on
    either side are visible to the other until the receiver drops its array.

    A compressed payload is a new frame of zarray's own, written from ``A`` once
    (through a one-block scratch buffer when shuffled) before this returns; ``A`` is
    then no longer referenced and the tracker is done.
    """
    # envelope and format are not keyword-only on purpose: CPython fills keyword-only
    # defaults from a dict on every call, which costs this hot path ~20 ns.
    if (
        envelope is not None
        or format != "zarray"
        or shm is not None
        or compress is not None
        or meta is not None
        or flags & _NOT_NOBLOCK
    ):
        return send_general(
            socket, A, flags, copy, track, envelope, format, make_stage(shm, compress, format), meta
        )
    if type(socket) not in BLOCKING:
        check_blocking(socket)
    header, payload = prepare(A)
    socket.send(header, flags | _SNDMORE, copy=True)
    # Once the header is queued, the payload must follow whatever happens, so that
    # the peer never sees a half message; libzmq accepts the remaining parts of a
    # message without applying the high-water mark, so dropping NOBLOCK cannot block.
    if copy or payload.nbytes < socket.copy_threshold:
        # Below the threshold a copy is cheaper than tracking (bench/RESULTS.md);
        # deciding here spares pyzmq's own check, which costs a memoryview per call.
        socket.send(payload, flags & ~_NOBLOCK, copy=True)
        return DONE if track else None
    tracker: zmq.MessageTracker | None = socket.send(
        payload, flags & ~_NOBLOCK, copy=False, track=track
    )
    if track and payload is not A and not is_own_memory(payload, A):
        return DONE  # a compacted view: libzmq holds zarray's private copy, not A
    return tracker


#: Socket classes known to block (not zmq.asyncio's), checked once per class.
BLOCKING: set[type] = set()


def check_blocking(socket: Any) -> None:
    """TypeError for a ``zmq.asyncio`` socket (or a non-socket) given to a blocking call."""
    cls = type(socket)
    if not isinstance(socket, zmq.Socket):
        raise TypeError(f"expected a zmq.Socket, got {cls.__name__}")
    # No asyncio socket can exist before zmq's asyncio support is imported; looking it
    # up instead of importing it spares blocking users the import of asyncio.
    future = sys.modules.get("zmq._future")
    if future is not None and isinstance(socket, future._AsyncSocket):
        raise TypeError(
            f"{cls.__module__}.{cls.__name__} is an asyncio socket: its send and recv "
            "return futures; use zarray.asyncio.Socket and await its methods "
            "(e.g. zarray.asyncio.Socket.from_socket(sock))"
        )
    BLOCKING.add(cls)


def make_stage(shm: SharedPool | None, compress: Compress, format: str) -> Stage | None:
    """The payload stage of one call's ``shm``/``compress`` arguments."""
    if shm is None and compress is None:
        return None
    if format != "zarray":
        raise ValueError(
            "shm= and compress= need zarray's own format; pyzmq's JSON recipe "
            "(format='json') can only carry the payload inline"
        )
    return Stage(shm, compress)


def send_outgoing(
    socket: zmq.Socket[Any], message: Outgoing, flags: int, copy: bool, track: bool
) -> zmq.MessageTracker | None:
    """Send a checked message frame by frame; return one tracker for its payloads.

    Only the first frame may meet the high-water mark (see ``send_array``), so only it
    keeps NOBLOCK: if it is refused, nothing was sent and the message's shared-memory
    slots are given back; after it, the message is always completed.
    """
    if message.pending:
        try:
            message.finish()  # compress, here in the caller's thread
        except BaseException:
            message.cancel()
            raise
    frames, modes = message.frames, message.modes
    last = len(frames) - 1
    threshold = socket.copy_threshold
    trackers = []
    for i, (frame, mode) in enumerate(zip(frames, modes, strict=True)):
        f = flags if i == 0 else flags & ~_NOBLOCK
        if i < last:
            f |= _SNDMORE
        try:
            if mode == SMALL or (mode == USER and copy) or memoryview(frame).nbytes < threshold:
                socket.send(frame, f, copy=True)
            elif mode == USER:
                tracker = socket.send(frame, f, copy=False, track=track)
                if track and tracker is not None:
                    trackers.append(tracker)
            else:
                socket.send(frame, f, copy=False)
        except BaseException:
            if i == 0:
                message.cancel()
            raise
    return message.tracker(trackers, track)


def send_general(
    socket: zmq.Socket[Any],
    A: Any,
    flags: int,
    copy: bool,
    track: bool,
    envelope: Sequence[Any] | None,
    format: str,
    stage: Stage | None,
    meta: Mapping[str, Any] | None = None,
) -> zmq.MessageTracker | None:
    """send_array with an envelope, another format, a payload stage, or meta."""
    if type(socket) not in BLOCKING:
        check_blocking(socket)
    message = outgoing_array(socket, A, envelope, format, stage, flags, meta)
    return send_outgoing(socket, message, flags, copy, track)


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
        next call receives the next message. Whatever fails once a message has begun
        to arrive, the rest of it is drained before the error is raised.
    TypeError, ValueError
        If ``out`` is not a writeable C-contiguous ndarray, or its dtype is one zarray
        cannot carry (``UnsupportedArrayError``). Nothing was received.
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
    if type(socket) not in BLOCKING:
        check_blocking(socket)
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
            except Exception as exc:  # the whole message is in: nothing to drain
                raise refused(exc)  # noqa: B904 (refused chains it)
            frames = [head, payload]  # perhaps a JSON recipe: decide below
        else:
            frames = recv_rest(socket, [head, payload])
    else:
        frames = [head]
    try:
        start, kind = locate(frames)
        A = decode_array(frames, start, kind, copy)
    except Exception as exc:
        raise refused(exc)  # noqa: B904 (refused chains it)
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
    frame = socket.recv(flags, copy=False)  # zmq.Again here: nothing was consumed
    try:
        return _recv_into_rest(socket, out, frame, envelope)
    except BaseException as exc:
        # Whatever went wrong once the message began, drain it: the next receive
        # must start at a message boundary.
        raise refused(exc, socket)  # noqa: B904 (refused chains it)


def _recv_into_rest(
    socket: zmq.Socket[Any], out: NDArray, frame: Any, envelope: bool
) -> NDArray | tuple[list[bytes], NDArray]:
    env: list[bytes] = []
    recipe_error: HeaderError | None = None
    while True:
        prefix = prefix_of(frame)
        fields: tuple[Any, ...] | None = None
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
        # This frame, a header and a payload at least: refuse before holding more.
        if len(env) + 3 > limits.max_frames:
            raise HeaderError(
                f"message has more than {limits.max_frames} frames (zarray.limits.max_frames)"
            )
        env.append(bytes_of(frame))
        frame = socket.recv(0, copy=False)
    if c_layout(fields) and not (fields[8] or fields[10]):
        nbytes = fields[6]
        # numpy will not export datetime64/timedelta64 through the buffer protocol;
        # a flat byte view of out (C-contiguous, so a view) is the same memory.
        buf: Any = out if encode_dtype(out.dtype)[3] else out.reshape(-1).view(np.uint8)
        # libzmq copies the frame straight into out: no allocation for the payload.
        size = socket.recv_into(buf, flags=0)
        if size != nbytes or socket.get(zmq.RCVMORE):
            raise HeaderError(
                f"payload is {size} bytes, but the header says {nbytes}"
                if size != nbytes
                else "message has more than 2 frames; expected a header and a payload"
            )
    else:
        payload = socket.recv(0, copy=False)
        if payload.more:
            raise HeaderError("message has more than 2 frames; expected a header and a payload")
        copy_into(out, fields, payload)
    return (env, out) if envelope else out
