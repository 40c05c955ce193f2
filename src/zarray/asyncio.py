"""zarray over asyncio: ``zarray.asyncio.Context`` and ``zarray.asyncio.Socket``.

Built on :mod:`zmq.asyncio`. The array methods are coroutines::

    ctx = zarray.asyncio.Context()
    sock = ctx.socket(zmq.PUSH)
    tracker = await sock.send_array(A)
    B = await other.recv_array()

Every message goes to pyzmq as one ``send_multipart`` event, and is received in one
synchronous stretch once the socket is readable (so that zarray can count its frames
as they come, see ``zarray.limits.max_frames``), so concurrent senders and receivers
on one loop never interleave their frames.

What the tracker means under asyncio
    The coroutine returns once pyzmq has handed the whole message to libzmq: at once
    when the socket can take it, or later, when the high-water mark frees up. That is
    *queued*, not *sent*. The returned :class:`zmq.MessageTracker` covers every
    zero-copy payload frame of the message and becomes done when libzmq has let go of
    the arrays' memory (after transmission over tcp/ipc; over inproc, when the
    receiver drops its arrays). Do not modify an array before then. ``tracker.wait()``
    would block the event loop; await it in a thread instead:
    ``await asyncio.to_thread(tracker.wait)``.

Lifetime of a pending send
    Each zero-copy payload is wrapped in a :class:`zmq.Frame` when the coroutine
    starts; the frame holds a reference to the array (or to the view that owns its
    memory) until libzmq frees the message. So an array whose send is still waiting
    for the high-water mark, or is queued inside libzmq, stays alive even if the
    caller drops every reference to it. Payloads that are copied (``copy=True``,
    smaller than ``copy_threshold``) are copied as soon as the coroutine starts
    running, before it first yields, so such an array may be modified once the
    coroutine has returned, like with the blocking functions.

Compression off the event loop
    With ``compress=`` (or :attr:`Socket.compress`), the policy that reads the socket
    (its transport, for ``"auto"``) runs in the loop's thread; the compression itself
    runs in the loop's default executor (``loop.run_in_executor``), with the GIL
    released by the codec and the shuffle kernel, and never touches the socket. A
    received message whose headers name a codec is likewise decompressed in the
    executor. Other coroutines keep running meanwhile. The array being sent must not
    change until the coroutine returns (it is read by the executor until then).

Shared memory
    With ``shm=`` (or :attr:`Socket.shm`), a full pool is waited for in the executor,
    never on the loop (``zmq.NOBLOCK`` and ``SNDTIMEO`` apply as for blocking sends).
    Receiving a shared-memory reference claims it from the sender on the loop's thread:
    one round trip on a local socket, tens of microseconds, and at most
    ``zarray._shm_channel.CHANNEL_TIMEOUT`` (10 s) should the sender stop answering.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast, overload

import numpy as np
import zmq
import zmq.asyncio

from zarray._dtypes import decode_dtype
from zarray._message import (
    Outgoing,
    check_match,
    check_out,
    copy_into,
    decode_array,
    decode_arrays,
    envelope_of,
    fields_of,
    is_compressed,
    locate,
    outgoing_array,
    outgoing_arrays,
    recv_rest,
    refused,
)
from zarray._multi import Arrays, Received
from zarray._payload import SMALL, USER, StageSettings
from zarray._shm import PoolBusy
from zarray._transport import Compress, Format

if TYPE_CHECKING:
    from zarray._shm import SharedPool

__all__ = ["Context", "Socket"]

NDArray = np.ndarray[Any, Any]
_T = TypeVar("_T")


class Socket(StageSettings, zmq.asyncio.Socket):
    """A :class:`zmq.asyncio.Socket` with coroutine array methods.

    ``send_array``, ``recv_array``, ``send_arrays`` and ``recv_arrays`` take the same
    arguments as the module functions (without the socket) and must be awaited.
    ``Socket.from_socket(sync_socket)`` wraps an existing blocking socket.

    Notes
    -----
    The copy contract is that of :func:`zarray.send_array` and
    :func:`zarray.recv_array`; see the module documentation for what the returned
    tracker means under asyncio.
    """

    # Declared on the class: pyzmq's attribute setter treats unknown names as options.
    _zarray_sync: zmq.Socket[Any] | None = None

    async def _recv_frames(self, flags: int) -> list[Any]:
        """Every frame of the next message, taken in one synchronous stretch.

        pyzmq's ``recv_multipart`` would hold every frame of a message (a million empty
        ones, say) before zarray could count them. Here the message is read through a
        blocking shadow of this socket, with NOBLOCK, once it is readable: libzmq
        delivers a message whole, so its remaining frames are there, and since nothing
        is awaited between them no other coroutine can take frames from its middle.
        ``recv_rest`` keeps at most ``zarray.limits.max_frames`` of them. The receive
        timeout (``rcvtimeo``) and ``zmq.NOBLOCK`` raise ``zmq.Again`` as pyzmq does.
        """
        sync = self._zarray_sync
        if sync is None:
            sync = self._zarray_sync = zmq.Socket.shadow(self.underlying)
        timeout = cast(int, self.get(zmq.RCVTIMEO))
        loop = asyncio.get_running_loop()
        deadline = None if timeout < 0 else loop.time() + timeout / 1000
        while True:
            try:
                first = sync.recv(flags | zmq.NOBLOCK, copy=False)
            except zmq.Again:
                if flags & zmq.NOBLOCK or (deadline is not None and loop.time() >= deadline):
                    raise
            else:
                frames = recv_rest(sync, [first])
                # Reading EVENTS through this socket hands any further waiting message
                # to pyzmq's own pending receives (zmq's file descriptor is edge-triggered).
                self.get(zmq.EVENTS)
                return frames
            wait = None if deadline is None else max(0.0, deadline - loop.time()) * 1000
            await self.poll(wait)  # for POLLIN, the default

    async def _send_outgoing(
        self, message: Outgoing, flags: int, copy: bool, track: bool
    ) -> zmq.MessageTracker | None:
        if message.pending:
            try:
                # Compress in a worker thread; it reads only the arrays.
                await asyncio.get_running_loop().run_in_executor(None, message.finish)
            except BaseException:
                message.cancel()
                raise
        threshold = self.copy_threshold
        frames: list[Any] = []
        trackers: list[zmq.MessageTracker] = []
        for part, mode in zip(message.frames, message.modes, strict=True):
            if mode == SMALL:
                frames.append(part)
                continue
            zero_copy = not (copy and mode == USER) and memoryview(part).nbytes >= threshold
            tracked = track and zero_copy and mode == USER
            # A Frame built now either copies the payload now, or holds the array
            # until libzmq frees the message: a pending send keeps it alive.
            frame = zmq.Frame(part, track=tracked, copy=not zero_copy)
            if tracked and frame.tracker is not None:
                trackers.append(frame.tracker)
            frames.append(frame)
        # One event for the whole message: other coroutines' messages cannot come
        # between its frames. copy=True copies the small parts; Frames go as they are.
        # Our own references to the Frames go when this coroutine returns; until they
        # do, libzmq's message is not freed and the trackers cannot become done.
        try:
            await self.send_multipart(frames, flags=flags, copy=True, track=False)
        except BaseException:
            # Refused (zmq.Again), timed out or cancelled: pyzmq sends a message whole
            # or not at all, so no receiver can hold the shared-memory slots.
            message.cancel()
            raise
        return message.tracker(trackers, track)

    async def send_array(
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
            Send large payloads through this pool by reference (overrides the
            socket's :attr:`shm`).
        compress : str or tuple, optional
            Compress the payload where it pays (overrides the socket's
            :attr:`compress`).
        meta : dict, optional
            With ``format="json"``: more keys for the recipe's JSON frame (imagezmq's
            ``{"msg": ...}``).

        Returns
        -------
        zmq.MessageTracker or None
            Done once libzmq no longer references ``A``'s memory (see the module
            documentation); ``None`` if ``track`` is false.

        Raises
        ------
        UnsupportedArrayError
            If ``A`` cannot be sent; nothing was sent.
        zmq.Again
            With ``zmq.NOBLOCK`` or when the socket's send timeout expires; nothing
            was sent.

        Notes
        -----
        Never copies unless ``copy=True``, the payload is below ``copy_threshold``,
        ``A`` is a sparse strided view, or ``format="json"`` meets a non-C layout.
        Returns when the message is queued in libzmq, not when it is transmitted.
        """
        stage = self.stage_for(shm, compress, format)
        while True:
            try:
                message = outgoing_array(self, A, envelope, format, stage, flags, meta)
            except PoolBusy as busy:
                # A full shared-memory pool: wait for room off the event loop.
                await asyncio.get_running_loop().run_in_executor(None, busy.wait)
            else:
                return await self._send_outgoing(message, flags, copy, track)

    async def send_arrays(
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
            Send large payloads through this pool by reference (overrides the
            socket's :attr:`shm`).
        compress : str or tuple, optional
            Compress payloads where it pays (overrides the socket's :attr:`compress`).

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
            With ``zmq.NOBLOCK`` or when the send timeout expires; nothing was sent.

        Notes
        -----
        Same copy rules as :meth:`send_array`, for each array.
        """
        stage = self.stage_for(shm, compress, "zarray")
        while True:
            try:
                message = outgoing_arrays(self, arrays, meta, envelope, stage, flags)
            except PoolBusy as busy:
                await asyncio.get_running_loop().run_in_executor(None, busy.wait)
            else:
                return await self._send_outgoing(message, flags, copy, track)

    @overload
    async def recv_array(
        self,
        flags: int = 0,
        copy: bool = False,
        envelope: Literal[False] = False,
        out: NDArray | None = None,
    ) -> NDArray: ...
    @overload
    async def recv_array(
        self,
        flags: int = 0,
        copy: bool = False,
        *,
        envelope: Literal[True],
        out: NDArray | None = None,
    ) -> tuple[list[bytes], NDArray]: ...
    @overload
    async def recv_array(
        self,
        flags: int = 0,
        copy: bool = False,
        envelope: bool = False,
        out: NDArray | None = None,
    ) -> NDArray | tuple[list[bytes], NDArray]: ...
    async def recv_array(
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
            A writeable C-contiguous array of the message's dtype and shape to copy
            the payload into; it is returned.

        Returns
        -------
        numpy.ndarray or tuple of (list of bytes, numpy.ndarray)
            The array (or ``out``), with the envelope frames if asked for.

        Raises
        ------
        HeaderError
            For a malformed message, several arrays, or one that does not fit ``out``;
            the whole message has been received.
        zmq.Again
            With ``zmq.NOBLOCK`` or when the receive timeout expires; nothing was
            consumed.

        Notes
        -----
        With ``copy=False`` the array views the received frame; it is copied once
        only when the frame is misaligned for the dtype. Under asyncio the message is
        received whole first, so ``out`` gets one copy from the received frame (the
        same single copy ``Socket.recv_into`` makes inside libzmq).
        """
        if out is not None:
            check_out(out)
        frames = await self._recv_frames(flags)
        try:
            start, kind = locate(frames)
            if out is None:
                if is_compressed(frames, start, kind):
                    A = await _off_loop(decode_array, frames, start, kind, copy)
                else:
                    A = decode_array(frames, start, kind, copy)
            else:
                fields = fields_of(frames, start, kind)
                check_match(out, decode_dtype(*fields[:3]), fields[3])
                if fields[8]:
                    await _off_loop(copy_into, out, fields, frames[start + 1])
                else:
                    copy_into(out, fields, frames[start + 1])
                A = out
        except Exception as exc:  # the whole message is in: nothing to drain
            raise refused(exc)  # noqa: B904 (refused chains it)
        if envelope:
            return envelope_of(frames, start), A
        return A

    @overload
    async def recv_arrays(
        self, flags: int = 0, copy: bool = False, envelope: Literal[False] = False
    ) -> Received: ...
    @overload
    async def recv_arrays(
        self, flags: int = 0, copy: bool = False, *, envelope: Literal[True]
    ) -> tuple[list[bytes], Received]: ...
    @overload
    async def recv_arrays(
        self, flags: int = 0, copy: bool = False, envelope: bool = False
    ) -> Received | tuple[list[bytes], Received]: ...
    async def recv_arrays(
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
            For a malformed message; it has been received whole.
        zmq.Again
            With ``zmq.NOBLOCK`` or when the receive timeout expires; nothing was
            consumed.

        Notes
        -----
        With ``copy=False`` every array views its received frame.
        """
        frames = await self._recv_frames(flags)
        try:
            start, kind = locate(frames)
            if is_compressed(frames, start, kind):
                result = await _off_loop(decode_arrays, frames, start, kind, copy)
            else:
                result = decode_arrays(frames, start, kind, copy)
        except Exception as exc:  # the whole message is in: nothing to drain
            raise refused(exc)  # noqa: B904 (refused chains it)
        if envelope:
            return envelope_of(frames, start), result
        return result


async def _off_loop(fn: Callable[..., _T], *args: Any) -> _T:
    """``fn(*args)`` in the loop's default executor (decompression: no socket involved)."""
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


class Context(zmq.asyncio.Context):
    """A :class:`zmq.asyncio.Context` whose ``socket()`` makes :class:`zarray.asyncio.Socket`.

    Notes
    -----
    Nothing is copied by the context; see :class:`zarray.asyncio.Socket`.
    """

    _socket_class = Socket
    # Not the base class's singleton: instance() must make a zarray.asyncio.Context.
    _instance = None

    def socket(self, socket_type: int, socket_class: Any = None, **kwargs: Any) -> Socket:
        """Create a :class:`zarray.asyncio.Socket` (see :meth:`zmq.Context.socket`).

        Parameters
        ----------
        socket_type : int
            The ZeroMQ socket type (``zmq.PUSH``, ``zmq.ROUTER``, ...).
        socket_class : type, optional
            Another socket class to make instead.
        **kwargs
            Passed to the socket class.

        Returns
        -------
        zarray.asyncio.Socket
            The new socket.

        Notes
        -----
        Only typing differs from the base method.
        """
        return cast(Socket, super().socket(socket_type, socket_class, **kwargs))
