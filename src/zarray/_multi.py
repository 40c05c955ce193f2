"""send_arrays / recv_arrays: several arrays and a JSON meta dict in one message.

The message is a message-header frame (magic ``b"\\x93ZAM"``, the container kind, the
array count and a small JSON document with the names and the meta), then one header
frame and one payload frame per array, exactly as :func:`zarray.send_array` writes
them. See docs/FORMAT.md for the bytes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np
import zmq

from zarray._message import decode_arrays, envelope_of, locate, outgoing_arrays, recv_rest, refused
from zarray._transport import (
    BLOCKING,
    Compress,
    check_blocking,
    make_stage,
    send_outgoing,
)

if TYPE_CHECKING:
    from zarray._shm import SharedPool

__all__ = ["recv_arrays", "send_arrays"]

NDArray = np.ndarray[Any, Any]
Arrays = Sequence[Any] | Mapping[str, Any]
Received = tuple[list[NDArray] | dict[str, NDArray], dict[str, Any]]


def send_arrays(
    socket: zmq.Socket[Any],
    arrays: Arrays,
    flags: int = 0,
    copy: bool = False,
    track: bool = True,
    meta: Mapping[str, Any] | None = None,
    envelope: Sequence[Any] | None = None,
    shm: SharedPool | None = None,
    compress: Compress = None,
) -> zmq.MessageTracker | None:
    """Send several arrays, and optionally a dict of metadata, as one message.

    Parameters
    ----------
    socket : zmq.Socket
        Any socket that can send multipart messages.
    arrays : sequence of numpy.ndarray, or mapping of str to numpy.ndarray
        The arrays. A sequence comes back as a list, a mapping as a dict with the same
        names in the same order. Each array follows :func:`send_array`'s rules.
    flags : int
        ZeroMQ send flags: ``0`` or ``zmq.NOBLOCK`` (``zmq.SNDMORE`` is refused, as
        by :func:`send_array`).
    copy : bool
        If False (the default), hand each array's memory to libzmq without copying.
    track : bool
        If True (the default), return one tracker covering every payload frame.
    meta : dict, optional
        JSON-serialisable metadata (frame number, timestamp, units, ...), with str
        keys. It must be standard JSON: no NaN or infinities, no numpy scalars
        (convert with ``.item()``). Tuples come back as lists, as with any JSON.
    envelope : sequence of bytes-like, optional
        Frames sent before zarray's own (a PUB topic, ROUTER identities and the empty
        delimiter); see :func:`send_array`.
    shm : zarray.SharedPool, optional
        Send each large payload through this pool by reference; see :func:`send_array`.
    compress : str or tuple, optional
        Compress each payload where it pays; see :func:`send_array`.

    Returns
    -------
    zmq.MessageTracker or None
        ``None`` if ``track`` is false. Otherwise one tracker that is done once libzmq
        no longer references the memory of *any* of the arrays (pyzmq's own
        ``send_multipart`` would return the last frame's tracker only). Until then,
        modify none of them. It is already done when every payload was copied.

    Raises
    ------
    UnsupportedArrayError
        If ``arrays`` is not a sequence or mapping, a name is not a str, ``meta`` is
        not a dict that standard JSON can encode, or any array cannot be sent. Raised
        before any frame is sent.
    TypeError
        If ``envelope`` is not a sequence of contiguous bytes-like frames; nothing
        was sent.
    ValueError
        For ``flags`` other than ``0`` and ``zmq.NOBLOCK``; nothing was sent.
    zmq.Again
        With ``zmq.NOBLOCK`` (or a send timeout) when the message cannot be queued;
        nothing was sent.

    Notes
    -----
    The message arrives whole or not at all (ZeroMQ delivers multipart messages
    atomically). Each payload goes without a copy unless ``copy=True``, it is smaller
    than ``socket.copy_threshold``, or it is a strided view too sparse to send as its
    memory span (see :func:`send_array`). Over ``inproc://`` the receiver's arrays are
    views of the sender's memory.
    """
    if type(socket) not in BLOCKING:
        check_blocking(socket)
    message = outgoing_arrays(
        socket, arrays, meta, envelope, make_stage(shm, compress, "zarray"), flags
    )
    return send_outgoing(socket, message, flags, copy, track)


@overload
def recv_arrays(
    socket: zmq.Socket[Any],
    flags: int = 0,
    copy: bool = False,
    envelope: Literal[False] = False,
) -> Received: ...
@overload
def recv_arrays(
    socket: zmq.Socket[Any],
    flags: int = 0,
    copy: bool = False,
    *,
    envelope: Literal[True],
) -> tuple[list[bytes], Received]: ...
@overload
def recv_arrays(
    socket: zmq.Socket[Any],
    flags: int = 0,
    copy: bool = False,
    envelope: bool = False,
) -> Received | tuple[list[bytes], Received]: ...
def recv_arrays(
    socket: zmq.Socket[Any],
    flags: int = 0,
    copy: bool = False,
    envelope: bool = False,
) -> Received | tuple[list[bytes], Received]:
    """Receive a message sent by :func:`send_arrays`.

    Parameters
    ----------
    socket : zmq.Socket
        The socket to receive from.
    flags : int
        ZeroMQ receive flags, e.g. ``zmq.NOBLOCK``.
    copy : bool
        If False (the default), every array views its received frame. If True, each
        owns its memory, made with exactly one copy.
    envelope : bool
        If True, return ``(envelope_frames, (arrays, meta))``; see :func:`recv_array`.

    Returns
    -------
    arrays : list of numpy.ndarray or dict of str to numpy.ndarray
        A list if a sequence was sent, a dict (names and order kept) if a mapping was.
        A message from :func:`send_array` (or pyzmq's JSON recipe) gives a list of one.
    meta : dict
        The metadata sent, ``{}`` if none. For a message in pyzmq's JSON recipe, the
        JSON frame's keys besides ``dtype`` and ``shape`` (imagezmq's ``{"msg": ...}``).

    Raises
    ------
    HeaderError
        If the message is malformed (a bad message header, a frame count that does not
        match it, any bad array header or payload). The whole message has been
        consumed, so the next call receives the next message.
    zmq.Again
        With ``zmq.NOBLOCK`` (or a receive timeout) when no message is waiting;
        nothing was consumed.

    Notes
    -----
    Every array follows :func:`recv_array`'s rules: with ``copy=False`` it views its
    frame and keeps it alive, and is copied once only when the frame is misaligned for
    its dtype; it is writeable unless the sender's array was read-only.
    """
    if type(socket) not in BLOCKING:
        check_blocking(socket)
    frames = recv_rest(socket, [socket.recv(flags, copy=False)])
    try:
        start, kind = locate(frames)
        result = decode_arrays(frames, start, kind, copy)
    except Exception as exc:  # the whole message is in: nothing to drain
        raise refused(exc)  # noqa: B904 (refused chains it)
    if envelope:
        return envelope_of(frames, start), result
    return result
