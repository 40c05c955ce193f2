"""serialize / deserialize: zarray as pyzmq's ``send_serialized``/``recv_serialized`` hooks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from zarray import limits
from zarray._array import array_from, prepare
from zarray._codec import pack_array, unpack_array
from zarray._dtypes import decode_cache, encode_cache
from zarray._message import decode_array, locate, refused
from zarray.errors import HeaderError

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
    if pack_array is not None:
        # The compiled fast path directly (what prepare() tries first): no extra call.
        header = pack_array(A, encode_cache)
        if header is not None:
            return [header, A]
    header, payload = prepare(A)
    return [header, payload]


def deserialize(frames: Sequence[Any], copy: bool = False) -> np.ndarray[Any, Any]:
    """Return the array carried by the frames of a whole message.

    Parameters
    ----------
    frames : sequence of buffer-protocol objects
        Every frame of one message, as ``socket.recv_serialized`` passes them
        (``zmq.Frame`` with ``copy=False``, ``bytes`` with ``copy=True``), or as
        :func:`serialize` returned them, or any bytes-like objects (bytearray,
        memoryview, mmap, numpy arrays). Frames before zarray's part (a topic,
        identities) are skipped. A JSON-recipe message is decoded too.
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
    BufferError
        If the payload frame is not a contiguous buffer (as ``numpy.frombuffer`` raises).

    Notes
    -----
    This never copies unless ``copy=True`` or the payload is misaligned for the dtype
    (then it is copied once into aligned memory). Otherwise the result *views* the
    payload frame, whatever object holds it, as ``numpy.frombuffer`` does: it aliases
    that memory, so writes through either are visible in the other (with the frames of
    ``serialize(A)``, the result views ``A`` itself). It is read-only when the payload
    is (``bytes``, a read-only memoryview or mmap) or the sender's array was; pass
    ``copy=True`` for a writeable, independent array. The payload's exporter is pinned
    while the result lives: a bytearray cannot be resized, nor an mmap closed, under
    it (both raise ``BufferError`` until the array is gone).
    """
    n = len(frames)
    if n == 2:
        # The plain message, header and payload: straight to the compiled fast path,
        # which returns None for what only the general path (array_from) handles. (No
        # frame limit to check: every zarray message has at least two frames.)
        try:
            if not copy and unpack_array is not None:
                A = unpack_array(frames[0], frames[1], decode_cache)
                if A is not None:
                    return A  # type: ignore[no-any-return]
            return array_from(frames[0], frames[1], copy)
        except HeaderError:
            pass  # the JSON recipe, or a bad message: locate() below says which
        except Exception as exc:
            raise refused(exc)  # noqa: B904 (refused chains it)
    if n > limits.max_frames:
        raise HeaderError(
            f"message has more than {limits.max_frames} frames (zarray.limits.max_frames)"
        )
    parts = list(frames)
    try:
        start, kind = locate(parts)
        return decode_array(parts, start, kind, copy)
    except Exception as exc:
        raise refused(exc)  # noqa: B904 (refused chains it)
