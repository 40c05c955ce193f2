"""serialize / deserialize: zarray as pyzmq's ``send_serialized``/``recv_serialized`` hooks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import zmq

from zarray._array import prepare
from zarray._message import decode_array, locate

__all__ = ["deserialize", "serialize"]


def serialize(A: np.ndarray[Any, Any]) -> list[Any]:
    """Return the frames of one array, for ``socket.send_serialized``.

    Parameters
    ----------
    A : numpy.ndarray
        The array; the same rules as :func:`zarray.send_array`.

    Returns
    -------
    list
        ``[header, payload]``: the header ``bytes`` and an object exposing the array's
        memory through the buffer protocol.

    Raises
    ------
    UnsupportedArrayError
        If ``A`` cannot be sent.

    Notes
    -----
    This copies nothing (except a strided view too sparse to send as its memory span,
    as :func:`zarray.send_array` does). Whether the payload is copied on sending is up
    to the caller: ``socket.send_serialized(A, zarray.serialize, copy=False)`` sends it
    without a copy (above ``socket.copy_threshold``), and pyzmq then returns the
    payload frame's tracker when ``track=True`` is passed too.
    """
    header, payload = prepare(A)
    return [header, payload]


def deserialize(frames: Sequence[Any], copy: bool = False) -> np.ndarray[Any, Any]:
    """Return the array carried by the frames of a whole message.

    Parameters
    ----------
    frames : sequence of zmq.Frame or bytes
        Every frame of one message, as ``socket.recv_serialized`` passes them
        (``zmq.Frame`` with ``copy=False``, ``bytes`` with ``copy=True``). Frames before
        zarray's part (a topic, identities) are skipped. A JSON-recipe message is
        decoded too.
    copy : bool
        If True, return an array that owns its memory (one copy).

    Returns
    -------
    numpy.ndarray
        The array, aligned for its dtype, as :func:`zarray.recv_array` returns it.

    Raises
    ------
    HeaderError
        If the frames are not one valid zarray message (or carry several arrays).

    Notes
    -----
    With ``zmq.Frame`` frames and ``copy=False`` the result views the payload frame
    (copied once only when it is misaligned for the dtype). ``bytes`` frames are
    immutable, so an array viewing one is read-only; pass ``copy=True`` for a writeable
    array. Other buffer objects (``bytearray``, ``memoryview``) are copied to ``bytes``
    first, since their memory could change under the array.
    """
    parts = [f if isinstance(f, (bytes, zmq.Frame)) else bytes(f) for f in frames]
    start, kind = locate(parts)
    return decode_array(parts, start, kind, copy)
