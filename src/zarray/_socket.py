"""zarray.Context and zarray.Socket: pyzmq's classes with array methods.

This is the second model of pyzmq's serialization guide ("subclass Socket for use in
your own apps"). The methods are the module functions with the socket bound, so the
two spellings behave identically.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np
import zmq

from zarray._message import outgoing_arrays
from zarray._multi import Arrays, Received, recv_arrays, send_arrays
from zarray._payload import StageSettings
from zarray._transport import Compress, Format, recv_array, send_array, send_general, send_outgoing

if TYPE_CHECKING:
    from zarray._shm import SharedPool

__all__ = ["Context", "Socket"]

NDArray = np.ndarray[Any, Any]


class Socket(StageSettings, zmq.Socket[bytes]):
    """A :class:`zmq.Socket` with ``send_array``, ``recv_array``, ``send_arrays`` and
    ``recv_arrays`` methods.

    Made by :meth:`zarray.Context.socket`, or directly as ``zarray.Socket(ctx,
    zmq.PUSH)``; ``zarray.Socket(existing_socket)`` shadows an existing pyzmq socket.
    It is a plain pyzmq socket otherwise: every socket type, ``zmq.Poller``, options.

    Two settings apply to every send of the socket, and each call may override them:
    :attr:`shm` (a :class:`zarray.SharedPool` for receivers on the same host) and
    :attr:`compress` (a codec for a slow link). Both are None by default.

    Notes
    -----
    The copy contract is that of the module functions (:func:`zarray.send_array`,
    :func:`zarray.recv_array`): payloads go without a copy unless asked or small, and
    received arrays view their frames.
    """

    def send_array(
        self,
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
        """Send one array; see :func:`zarray.send_array`.

        Parameters
        ----------
        A : numpy.ndarray
            The array.
        flags : int
            ZeroMQ send flags: ``0`` or ``zmq.NOBLOCK`` (``zmq.SNDMORE`` is refused).
        copy : bool
            If False (the default), send the array's memory without copying.
        track : bool
            If True (the default), return a tracker for the payload frame.
        envelope : sequence of bytes-like, optional
            Frames sent before zarray's own (topic, identities, delimiter).
        format : {"zarray", "json"}
            zarray's header, or pyzmq guide's JSON recipe.
        shm : zarray.SharedPool, optional
            Send large payloads through this pool by reference (overrides :attr:`shm`).
        compress : str or tuple, optional
            Compress the payload where it pays (overrides :attr:`compress`).
        meta : dict, optional
            With ``format="json"``: more keys for the recipe's JSON frame (imagezmq's
            ``{"msg": ...}``).

        Returns
        -------
        zmq.MessageTracker or None
            Done once libzmq no longer references ``A``'s memory; ``None`` if
            ``track`` is false.

        Raises
        ------
        UnsupportedArrayError
            If ``A`` cannot be sent; nothing was sent.
        zmq.Again
            With ``zmq.NOBLOCK`` or a send timeout; nothing was sent.

        Notes
        -----
        Never copies unless ``copy=True``, the payload is below ``copy_threshold``,
        ``A`` is a sparse strided view, or ``format="json"`` meets a non-C layout.
        """
        if self._stage is None or format != "zarray":
            return send_array(self, A, flags, copy, track, envelope, format, shm, compress, meta)
        stage = self.stage_for(shm, compress, format)
        return send_general(self, A, flags, copy, track, envelope, format, stage, meta)

    @overload
    def recv_array(
        self,
        flags: int = 0,
        copy: bool = False,
        envelope: Literal[False] = False,
        out: NDArray | None = None,
    ) -> NDArray: ...
    @overload
    def recv_array(
        self,
        flags: int = 0,
        copy: bool = False,
        *,
        envelope: Literal[True],
        out: NDArray | None = None,
    ) -> tuple[list[bytes], NDArray]: ...
    @overload
    def recv_array(
        self,
        flags: int = 0,
        copy: bool = False,
        envelope: bool = False,
        out: NDArray | None = None,
    ) -> NDArray | tuple[list[bytes], NDArray]: ...
    def recv_array(
        self,
        flags: int = 0,
        copy: bool = False,
        envelope: bool = False,
        out: NDArray | None = None,
    ) -> NDArray | tuple[list[bytes], NDArray]:
        """Receive one array; see :func:`zarray.recv_array`.

        Parameters
        ----------
        flags : int
            ZeroMQ receive flags.
        copy : bool
            If True, return an array that owns its memory (one copy).
        envelope : bool
            If True, return ``(envelope_frames, array)``.
        out : numpy.ndarray, optional
            A writeable C-contiguous array of the message's dtype and shape to
            receive into; it is returned.

        Returns
        -------
        numpy.ndarray or tuple of (list of bytes, numpy.ndarray)
            The array (or ``out``), with the envelope frames if asked for.

        Raises
        ------
        HeaderError
            For a malformed message, several arrays, or one that does not fit ``out``;
            the message has been drained.
        zmq.Again
            With ``zmq.NOBLOCK`` or a receive timeout; nothing was consumed.

        Notes
        -----
        With ``copy=False`` the array views the received frame; it is copied once
        only when the frame is misaligned for the dtype.
        """
        return recv_array(self, flags, copy, envelope, out)

    def send_arrays(
        self,
        arrays: Arrays,
        flags: int = 0,
        copy: bool = False,
        track: bool = True,
        meta: Mapping[str, Any] | None = None,
        envelope: Sequence[Any] | None = None,
        shm: SharedPool | None = None,
        compress: Compress = None,
    ) -> zmq.MessageTracker | None:
        """Send several arrays and a meta dict as one message; see :func:`zarray.send_arrays`.

        Parameters
        ----------
        arrays : sequence or mapping of numpy.ndarray
            The arrays; a mapping's keys (str) name them.
        flags : int
            ZeroMQ send flags: ``0`` or ``zmq.NOBLOCK`` (``zmq.SNDMORE`` is refused).
        copy : bool
            If False (the default), send the arrays' memory without copying.
        track : bool
            If True (the default), return one tracker covering every payload.
        meta : dict, optional
            Standard-JSON metadata.
        envelope : sequence of bytes-like, optional
            Frames sent before zarray's own.
        shm : zarray.SharedPool, optional
            Send large payloads through this pool by reference (overrides :attr:`shm`).
        compress : str or tuple, optional
            Compress payloads where it pays (overrides :attr:`compress`).

        Returns
        -------
        zmq.MessageTracker or None
            Done once libzmq references none of the arrays' memory.

        Raises
        ------
        UnsupportedArrayError
            For an unsendable array, a non-str name or a meta JSON cannot encode;
            nothing was sent.
        zmq.Again
            With ``zmq.NOBLOCK`` or a send timeout; nothing was sent.

        Notes
        -----
        Same copy rules as :meth:`send_array`, for each array.
        """
        if self._stage is None:
            return send_arrays(self, arrays, flags, copy, track, meta, envelope, shm, compress)
        stage = self.stage_for(shm, compress, "zarray")
        message = outgoing_arrays(self, arrays, meta, envelope, stage, flags)
        return send_outgoing(self, message, flags, copy, track)

    @overload
    def recv_arrays(
        self, flags: int = 0, copy: bool = False, envelope: Literal[False] = False
    ) -> Received: ...
    @overload
    def recv_arrays(
        self, flags: int = 0, copy: bool = False, *, envelope: Literal[True]
    ) -> tuple[list[bytes], Received]: ...
    @overload
    def recv_arrays(
        self, flags: int = 0, copy: bool = False, envelope: bool = False
    ) -> Received | tuple[list[bytes], Received]: ...
    def recv_arrays(
        self, flags: int = 0, copy: bool = False, envelope: bool = False
    ) -> Received | tuple[list[bytes], Received]:
        """Receive several arrays and their meta; see :func:`zarray.recv_arrays`.

        Parameters
        ----------
        flags : int
            ZeroMQ receive flags.
        copy : bool
            If True, every array owns its memory (one copy each).
        envelope : bool
            If True, return ``(envelope_frames, (arrays, meta))``.

        Returns
        -------
        tuple of (list or dict of numpy.ndarray, dict)
            The arrays as sent (list or dict) and the meta dict.

        Raises
        ------
        HeaderError
            For a malformed message; it has been drained.
        zmq.Again
            With ``zmq.NOBLOCK`` or a receive timeout; nothing was consumed.

        Notes
        -----
        With ``copy=False`` every array views its received frame.
        """
        return recv_arrays(self, flags, copy, envelope)


class Context(zmq.Context[Socket]):
    """A :class:`zmq.Context` whose ``socket()`` makes :class:`zarray.Socket` objects.

    ``zarray.Context.instance()`` is a singleton of its own, separate from
    ``zmq.Context.instance()``.

    Notes
    -----
    Nothing is copied by the context; see :class:`zarray.Socket`.
    """

    _socket_class = Socket
    # Not the base class's singleton: instance() must make a zarray.Context.
    _instance = None
