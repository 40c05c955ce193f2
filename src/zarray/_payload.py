"""The payload stage: the one place that decides how an array's bytes travel.

A payload travels in one of three ways (header byte 7 is the payload kind, byte 6 the
codec id, byte 12 the filter id; docs/FORMAT.md):

* **inline** (kind 0, codec 0): the payload frame is the array's own memory, handed to
  libzmq without a copy (``zarray._array.prepare`` chooses the bytes). This is the
  default, and the per-message hot path of ``send_array``/``recv_array`` never leaves
  it: it does not even enter this module.
* **shared memory** (kind 1): the payload frame is a small reference into a sealed
  memfd segment of the sender's :class:`zarray.SharedPool`; the receiver maps the
  segment read-only and views it (``zarray._shm``).
* **compressed** (codec 1 or 2, optionally after the shuffle filter): the payload frame
  holds compressed blocks; the receiver decompresses them into one aligned allocation
  of exactly the header's ``nbytes`` (``zarray._codecs``).

  Compressing takes time, so it does not happen inside :func:`encode`: that only asks
  the policy (``Compression.wants``: size, transport; it reads the socket, so it runs
  in the caller's thread) and returns a :class:`Pending` frame. The message's
  ``finish()`` then runs every pending compression, in the caller's thread for the
  blocking sockets and in the event loop's executor for ``zarray.asyncio``, where the
  socket is not touched (``zarray._message.Outgoing.finish``).

Sending: :class:`Stage` holds what a socket (or one call) asked for, ``shm=`` and
``compress=``, and :func:`encode` turns one array into ``(header, frame, mode, lease)``.
Every send path (``send_array``, ``send_arrays``, the sync and the asyncio sockets)
calls :func:`encode` through ``zarray._message.outgoing``; they differ only in how they
hand the frames to pyzmq.

Receiving: :func:`open_payload` turns a non-plain payload frame into the bytes the
header describes, and :func:`decode_into` writes them into a caller's array; both are
called from ``zarray._array.rebuild`` and ``zarray._message.copy_into``, which serve
every receive path.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from zarray._array import is_own_memory, prepare
from zarray._codec import KIND_SHM

if TYPE_CHECKING:
    from zarray._codecs import Compression
    from zarray._shm import SharedPool

__all__ = [
    "PENDING",
    "PRIVATE",
    "SMALL",
    "USER",
    "Lease",
    "Pending",
    "Stage",
    "StageSettings",
    "decode_into",
    "encode",
    "open_payload",
]

# How each frame of an outgoing message is handed to pyzmq:
#: always copied: envelope frames, headers, shared-memory references (all small).
SMALL = 0
#: the caller's own memory: without a copy unless ``copy=True`` or below the socket's
#: ``copy_threshold``; its tracker tells the caller when the array may change again.
USER = 1
#: zarray's own buffer (a compacted view, compressed blocks): without a copy when large,
#: and never tracked, since the caller's array is not referenced.
PRIVATE = 2
#: a :class:`Pending` compression: ``Outgoing.finish`` replaces it before sending.
PENDING = 3


class Lease(Protocol):
    """What a payload that lives outside the message holds (a shared-memory slot)."""

    #: set once no receiver can read the payload any more: the sender may modify it.
    released: threading.Event

    def cancel(self) -> None:
        """The message was never sent: give the slot back now."""


class Stage:
    """What one socket (or one call) does with payloads beyond sending them inline.

    Parameters
    ----------
    shm : zarray.SharedPool or None
        Send large payloads through this pool by reference.
    compress : str, tuple or None
        A codec name (``"lz4"``, ``"zstd"``), ``(name, level)``, or ``"auto"``; see
        :func:`zarray.send_array`.
    """

    __slots__ = ("compression", "pool")

    def __init__(self, shm: SharedPool | None = None, compress: Any = None) -> None:
        self.pool: SharedPool | None = None
        self.compression: Compression | None = None
        if shm is not None:
            from zarray._shm import SharedPool

            if not isinstance(shm, SharedPool):
                raise TypeError(
                    f"shm must be a zarray.SharedPool or None, got {type(shm).__name__}"
                )
            self.pool = shm
        if compress is not None:
            from zarray._codecs import compression

            self.compression = compression(compress)


class Pending:
    """A payload whose compression is still to run; :meth:`run` runs it.

    Holds the caller's array until then (the sender must not modify it before the send
    returns, as with any zero-copy send). :meth:`run` reads only arrays, never the
    socket, so it may run in any thread.
    """

    __slots__ = ("A", "compression", "header", "payload")

    def __init__(self, A: Any, compression: Compression, header: bytes, payload: Any) -> None:
        self.A = A
        self.compression = compression
        self.header = header
        self.payload = payload

    def run(self) -> tuple[bytes, Any, int]:
        """``(header, frame, mode)``: compressed, or the payload as it is when "auto"
        finds that compressing does not pay."""
        packed = self.compression.encode(self.header, self.payload)
        if packed is not None:
            return packed[0], packed[1], PRIVATE
        payload = self.payload
        return self.header, payload, USER if is_own_memory(payload, self.A) else PRIVATE


def encode(
    A: Any, stage: Stage | None, socket: Any, flags: int
) -> tuple[bytes, Any, int, Lease | None]:
    """``(header, frame, mode, lease)`` for one array; nothing is sent.

    ``mode`` is :data:`SMALL`, :data:`USER`, :data:`PRIVATE` or :data:`PENDING` (the
    frame is a :class:`Pending` compression); ``lease`` is the shared-memory slot the
    frame refers to (cancel it if the message is not sent).
    Raises UnsupportedArrayError for arrays zarray cannot send, and ``zmq.Again`` when
    a full pool cannot take the payload within the socket's send timeout (or at once
    with ``zmq.NOBLOCK``); nothing has been sent then.
    """
    if stage is not None:
        pool = stage.pool
        if pool is not None:
            shared = pool.encode(A, socket, flags)
            if shared is not None:
                header, ref, lease = shared
                return header, ref, SMALL, lease
        header, payload = prepare(A)
        compression = stage.compression
        # A socket with a pool talks to its own host: its inline fallbacks (small
        # payloads, a full pool) are never worth compressing.
        if compression is not None and pool is None and compression.wants(payload, socket):
            return header, Pending(A, compression, header, payload), PENDING, None
    else:
        header, payload = prepare(A)
    return header, payload, USER if is_own_memory(payload, A) else PRIVATE, None


def open_payload(fields: tuple[Any, ...], frame: Any) -> tuple[Any, bool]:
    """The ``nbytes`` bytes a non-plain payload frame stands for, and whether they are ours.

    Returns ``(buffer, owned)``: for shared memory a read-only view of the sender's
    segment that releases the slot when the last array viewing it goes (not owned);
    for a compressed payload a fresh aligned array that nothing else references (owned).
    Raises HeaderError when the frame cannot be used.
    """
    if fields[10] == KIND_SHM:
        from zarray._shm_channel import open_reference

        return open_reference(fields, frame), False
    from zarray._codecs import decode

    return decode(fields, frame), True


def decode_into(out: np.ndarray[Any, Any], fields: tuple[Any, ...], frame: Any) -> bool:
    """Write a compressed C-layout payload straight into ``out``'s bytes.

    Returns False (and writes nothing) when the payload is not compressed, so the
    caller opens it with :func:`open_payload` and copies. Raises HeaderError for a
    payload that does not decode to exactly the header's bytes; ``out`` may then have
    been partly written.
    """
    if not fields[8]:
        return False
    from zarray._codecs import decode_into as decompress_into

    decompress_into(out.reshape(-1).view(np.uint8), fields, frame)
    return True


class StageSettings:
    """The ``shm`` and ``compress`` settings of zarray's socket classes.

    Both default to None: payloads go inline, exactly as with the module functions.
    Setting either builds the socket's :class:`Stage` once, so a send pays nothing to
    read them.
    """

    # Class attributes, so that pyzmq's Socket.__setattr__ (which turns unknown
    # attribute names into socket options) lets these be set normally.
    _stage: Stage | None = None
    _shm: SharedPool | None = None
    _compress: Any = None

    @property
    def shm(self) -> SharedPool | None:
        """The :class:`zarray.SharedPool` large payloads go through, or None (inline).

        Sends then pass only a small reference to receivers on this host; see
        :class:`zarray.SharedPool` for lifetimes, back-pressure and safety.
        """
        return self._shm

    @shm.setter
    def shm(self, pool: SharedPool | None) -> None:
        self._stage = (
            None if pool is None and self._compress is None else Stage(pool, self._compress)
        )
        self._shm = pool

    @property
    def compress(self) -> Any:
        """The default ``compress=`` of this socket's sends: None (the default), a codec
        name (``"lz4"``, ``"zstd"``), ``(name, level)`` or ``"auto"``."""
        return self._compress

    @compress.setter
    def compress(self, spec: Any) -> None:
        self._stage = None if self._shm is None and spec is None else Stage(self._shm, spec)
        self._compress = spec

    def stage_for(self, shm: SharedPool | None, compress: Any, format: str) -> Stage | None:
        """The stage of one send: the socket's settings, overridden by the call's.

        The socket's own settings apply to zarray's format only: a ``format="json"``
        send goes inline. Asking for ``shm``/``compress`` in the call itself with
        ``format="json"`` is a ValueError (see ``zarray._transport.make_stage``).
        """
        if shm is None and compress is None:
            return self._stage if format == "zarray" else None
        from zarray._transport import make_stage

        return make_stage(
            self._shm if shm is None else shm,
            self._compress if compress is None else compress,
            format,
        )
