"""send_array / recv_array: one array as a two-frame ZeroMQ message."""

from __future__ import annotations

from typing import Any

import numpy as np
import zmq

from zarray._array import array_from, prepare
from zarray.errors import HeaderError

__all__ = ["recv_array", "send_array"]

# Returned when the payload was copied: the caller may reuse the array at once.
_DONE = zmq.MessageTracker()


def send_array(
    socket: zmq.Socket[Any],
    A: np.ndarray[Any, Any],
    flags: int = 0,
    copy: bool = False,
    track: bool = True,
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

    Returns
    -------
    zmq.MessageTracker or None
        ``None`` if ``track`` is false. Otherwise a tracker that is done once libzmq
        no longer references the array's memory; until then, do not modify ``A``.
        It is already done when the payload was copied (``copy=True``, payloads
        below the socket's ``copy_threshold``, sparse views that were compacted).

    Raises
    ------
    UnsupportedArrayError
        If ``A`` cannot be sent. Raised before any frame is sent.
    zmq.Again
        With ``zmq.NOBLOCK`` when the message cannot be queued; nothing was sent.

    Notes
    -----
    This never copies the data unless ``copy=True``, the payload is smaller than
    ``socket.copy_threshold`` (pyzmq's rule, 64 KiB by default), or ``A`` is a strided
    view too sparse to send as its memory span (see ``zarray._array``).
    Over ``inproc://`` the receiver gets a view of ``A``'s own memory: writes on
    either side are visible to the other until the receiver drops its array.
    """
    header, payload = prepare(A)
    socket.send(header, flags | zmq.SNDMORE, copy=True)
    # Once the header is queued, the payload must follow whatever happens, so that
    # the peer never sees a half message; libzmq accepts the remaining parts of a
    # message without applying the high-water mark, so dropping NOBLOCK cannot block.
    tracker = socket.send(payload, flags & ~zmq.NOBLOCK, copy=copy, track=track)
    if not track:
        return None
    return tracker if tracker is not None else _DONE


def _drain(socket: zmq.Socket[Any]) -> None:
    """Discard the remaining frames of the current message."""
    while socket.get(zmq.RCVMORE):
        socket.recv(copy=False)


def recv_array(socket: zmq.Socket[Any], flags: int = 0, copy: bool = False) -> np.ndarray[Any, Any]:
    """Receive one array sent by :func:`send_array`.

    Parameters
    ----------
    socket : zmq.Socket
        The socket to receive from.
    flags : int
        ZeroMQ receive flags, e.g. ``zmq.NOBLOCK``.
    copy : bool
        If False (the default), return a view of the received frame. If True, return
        an array that owns its memory, made with exactly one copy.

    Returns
    -------
    numpy.ndarray
        The array, with the sender's dtype, shape and strides. Writeable unless the
        sender's array was read-only; always aligned for its dtype.

    Raises
    ------
    HeaderError
        If the message is not a valid zarray message. The whole message has been
        consumed, so the next call receives the next message.
    zmq.Again
        With ``zmq.NOBLOCK`` (or a receive timeout) when no message is waiting;
        nothing was consumed.

    Notes
    -----
    With ``copy=False`` this never copies, except when the frame is misaligned for
    the dtype; then the payload is copied once into a 64-byte aligned buffer. The
    returned array keeps the frame alive for as long as it lives.
    """
    head = socket.recv(flags, copy=False)
    if not head.more:
        raise HeaderError("message has 1 frame; a zarray message has a header and a payload")
    # The remaining parts of a message arrive together with its first part.
    payload = socket.recv(0, copy=False)
    if payload.more:
        _drain(socket)
        raise HeaderError("message has more than 2 frames; expected a header and a payload")
    return array_from(head, payload, copy)
