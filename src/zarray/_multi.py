"""send_arrays / recv_arrays: several arrays and a JSON meta dict in one message.

The message is a message-header frame (magic ``b"\\x93ZAM"``, the container kind, the
array count and a small JSON document with the names and the meta), then one header
frame and one payload frame per array, exactly as :func:`zarray.send_array` writes
them. See docs/FORMAT.md for the bytes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, overload

import numpy as np
import zmq

from zarray._array import prepare
from zarray._message import decode_arrays, envelope_of, locate, pack_message_header, recv_rest
from zarray._transport import check_envelope, send_frames
from zarray.errors import UnsupportedArrayError

__all__ = ["recv_arrays", "send_arrays"]

NDArray = np.ndarray[Any, Any]
Arrays = Sequence[Any] | Mapping[str, Any]
Received = tuple[list[NDArray] | dict[str, NDArray], dict[str, Any]]


def encode_arrays(arrays: Arrays, meta: Mapping[str, Any] | None) -> tuple[list[Any], list[bool]]:
    """Every frame of the body of a several-array message, and which are payloads.

    Everything that could be refused is checked here, before anything is sent.
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
    head = pack_message_header(names is not None, len(values), names, meta)
    parts: list[Any] = [head]
    payloads = [False]
    for k, A in enumerate(values):
        try:
            header, payload = prepare(A)
        except UnsupportedArrayError as exc:
            which = f"array {k}" if names is None else f"array {names[k]!r:.40}"
            raise UnsupportedArrayError(f"{which}: {exc}") from None
        parts += (header, payload)
        payloads += (False, True)
    return parts, payloads


def send_arrays(
    socket: zmq.Socket[Any],
    arrays: Arrays,
    flags: int = 0,
    copy: bool = False,
    track: bool = True,
    meta: Mapping[str, Any] | None = None,
    envelope: Sequence[Any] | None = None,
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
        ZeroMQ send flags, e.g. ``zmq.NOBLOCK``.
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
        If ``envelope`` is not a sequence of bytes-like frames; nothing was sent.
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
    env = check_envelope(envelope)
    parts, payloads = encode_arrays(arrays, meta)
    trackers = send_frames(socket, env + parts, [False] * len(env) + payloads, flags, copy, track)
    if not track:
        return None
    return zmq.MessageTracker(*trackers)


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
        The metadata sent, ``{}`` if none.

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
    frames = recv_rest(socket, [socket.recv(flags, copy=False)])
    start, kind = locate(frames)
    result = decode_arrays(frames, start, kind, copy)
    if envelope:
        return envelope_of(frames, start), result
    return result
