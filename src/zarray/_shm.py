"""Shared-memory payloads: a pool of sealed memfd memory, loaned out and sent by reference.

Between two processes on one host, an inline payload crosses the kernel twice (into
the ipc or tcp socket and out of it). A :class:`SharedPool` is one ``memfd`` segment
that the sender maps read-write and every receiver maps read-only; a message then
carries the header and a 40-byte *reference* (pool, lease, offset, length) instead of
the bytes, so its cost does not grow with the array.

The words are iceoryx2's. Who owns a slot at each step:

1. **loan**: :meth:`SharedPool.empty` carves a *block* from the segment. The array it
   returns (and every view of it) keeps the block alive through its base chain; the
   block is the sender's to fill.
2. **send**: sending an array that lives in a block, with ``shm=pool``, makes a
   *lease*: a random 64-bit id for one region of the block, kept in the pool's lease
   table until the lease ends. The lease holds the block, so the slot is never reused
   while the lease lives, even after the sender has dropped its arrays. An array that
   does not live in the pool is first copied into a fresh block (one copy, at memory
   bandwidth) and leased the same way.
3. **claim**: a receiver that gets a reference asks the sender, over the pool's side
   channel, to claim the lease, and waits for the answer. Only an accepted claim lets
   it view the memory, so it never views a region the sender has reclaimed. A lease is
   claimed at most once: each socket type zarray uses shared memory on delivers a
   message to exactly one receiver (PUB/XPUB sockets send inline, see below).
4. **release**: when the last of the receiver's arrays viewing the region goes, the
   receiver sends a release; the lease ends and the sender's tracker becomes done.
5. **reclaim**: a lease also ends when its claimer's side channel closes (the
   receiver exited or was killed: the kernel closes its socket), when it stays
   unclaimed for ``lease_timeout`` seconds (its message was lost: dropped by a PUB
   high-water mark, queued to a receiver that died, or never received), or when the
   message was never sent (``zmq.Again``). A block goes back to the pool once no lease
   and no array of the sender's refers to it.

The side channel (``zarray._shm_channel``, which also holds the receiving side) is an
``AF_UNIX`` ``SOCK_SEQPACKET`` socket in the abstract namespace
(``"\\0zarray-shm-<pool id>"``), served by one daemon thread per pool. Abstract names
leave no file behind, and memfd segments have no name at all, so a SIGKILLed process
leaves nothing in ``/dev/shm`` or elsewhere: the kernel frees the memory when the last
process mapping it is gone. The receiver gets the segment's file descriptor once per
pool (``SCM_RIGHTS``), checks it (a sealed memfd of the announced size), maps it
read-only and closes it; it holds one socket and one mapping per pool, never one per
message. The sender checks each receiver's credentials (``SO_PEERCRED``): only
processes of the same user (or of the uids given in ``allow_uids``) may attach, and the
receiver likewise only trusts a side channel served by its own user or by root.

The segment is sealed against shrinking and growing (so no peer can make a mapping
reach past the end of the file, which would raise SIGBUS) and against any new writable
mapping (``F_SEAL_FUTURE_WRITE``): a receiver cannot write into the sender's pool even
if it tried, and received arrays are read-only. ``copy=True`` gives a private writable
copy.

Linux only (memfd, seals, ``SO_PEERCRED``); elsewhere :class:`SharedPool` raises
``OSError`` when created.
"""

from __future__ import annotations

import errno
import math
import mmap
import os
import socket as _socket
import sys
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import zmq

from zarray._array import prepare
from zarray._codec import KIND_SHM, set_encoding
from zarray._shm_channel import (
    CHANNEL_TIMEOUT,
    F_ADD_SEALS,
    F_SEAL_FUTURE_WRITE,
    LINUX,
    OK,
    OUTSIDE,
    REF,
    REF_MAGIC,
    SEALS,
    TAKEN,
    UNKNOWN,
    Conn,
    channel_name,
    poke,
    serve,
)
from zarray.errors import PoolFullError

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

__all__ = ["PoolBusy", "SharedPool"]

NDArray = np.ndarray[Any, Any]

_PAGE = mmap.PAGESIZE
_NOBLOCK = int(zmq.NOBLOCK)
_INLINE_TYPES = frozenset((zmq.PUB, zmq.XPUB, zmq.RADIO))


class PoolBusy(Exception):
    """A full pool met an asyncio send: the coroutine waits in a thread, then retries."""

    def __init__(self, pool: SharedPool, nbytes: int, flags: int, sndtimeo: int) -> None:
        super().__init__(nbytes)
        self.pool = pool
        self.nbytes = nbytes
        self.noblock = bool(flags & _NOBLOCK)
        self.timeout = None if sndtimeo < 0 else sndtimeo / 1000

    def wait(self) -> None:
        """Wait for room (in a worker thread); zmq.Again if none comes in time."""
        if self.noblock:
            raise self.pool._again(self.nbytes)
        self.pool.wait_for_room(self.nbytes, self.timeout)


def _address(a: NDArray) -> int:
    return int(a.__array_interface__["data"][0])


class _Block:
    """A loaned region of the segment; the base of every array that lives in it.

    Its lifetime is the slot's: while an array of the sender's views it, or a lease
    holds it, the region stays out of the free list. When the last reference goes,
    ``__del__`` hands the region back (through a queue, since it may run inside any
    other code, in any thread).
    """

    __slots__ = ("__array_interface__", "__weakref__", "offset", "pool", "size")

    def __init__(self, pool: SharedPool, offset: int, size: int) -> None:
        self.pool = pool
        self.offset = offset
        self.size = size
        self.__array_interface__ = {
            "data": (pool._base + offset, False),
            "shape": (size,),
            "typestr": "|u1",
            "version": 3,
        }

    def __del__(self) -> None:
        try:
            self.pool._returned(self.offset, self.size)
        except Exception:  # pragma: no cover - interpreter shutdown
            pass


class _Lease:
    """One sent reference: ``lease_id`` names ``length`` bytes at ``offset`` of ``block``.

    ``released`` is what the sender's tracker waits on: set when no receiver can read
    the region any more. ``user_event`` is that event for an array that lives in the
    pool, and an already-set event for an array zarray copied into the pool (the
    caller may change it at once).
    """

    __slots__ = (
        "_event",
        "block",
        "claimed_by",
        "lease_id",
        "length",
        "offset",
        "pool",
        "released",
        "sent",
    )

    def __init__(
        self, pool: SharedPool, block: _Block, lease_id: int, offset: int, length: int, own: bool
    ) -> None:
        self.pool = pool
        self.block: _Block | None = block
        self.lease_id = lease_id
        self.offset = offset
        self.length = length
        self.sent = time.monotonic()
        self.claimed_by: Conn | None = None
        self._event = threading.Event()
        self.released = self._event if own else _DONE_EVENT

    def cancel(self) -> None:
        """The message carrying this lease was never sent: end it now."""
        self.pool._end_lease(self.lease_id)


_DONE_EVENT = threading.Event()
_DONE_EVENT.set()


class SharedPool:
    """A pool of shared memory that arrays live in and are sent from by reference.

    Parameters
    ----------
    size : int
        Bytes of shared memory, rounded up to whole pages. All of it is reserved when
        the pool is created (``posix_fallocate``), so running out shows up here as an
        ``OSError`` and never later as a SIGBUS.
    threshold : int
        Payloads smaller than this many bytes go inline, as without a pool: below it,
        the claim round trip costs more than sending the bytes (bench/RESULTS.md).
    when_full : {"block", "inline"}
        What a send does when the pool has no room for a copy: ``"block"`` (the
        default) waits until a receiver releases enough, honouring ``zmq.NOBLOCK``
        (``zmq.Again`` at once) and the socket's ``SNDTIMEO`` (``zmq.Again`` when it
        expires; nothing is sent either way); ``"inline"`` sends that payload inline.
    lease_timeout : float or None
        Seconds a sent reference may stay unclaimed before the pool takes its slot back
        (a receiver that gets the message later gets a ``HeaderError`` saying so). The
        pool looks at least every ``lease_timeout`` seconds, so a lost message's slot
        comes back within twice that, and at once when a send needs the room. ``None``
        keeps unclaimed leases until the pool is closed.
    allow_uids : iterable of int
        Other users whose processes may attach, besides this process's own user.
    max_leases : int
        Most references out at once; beyond it, sends raise ``zmq.Again``. Bounds the
        sender's bookkeeping whatever the receivers do.
    copy_threads : int, optional
        Threads that copy an ordinary array into the pool when it is large (8 MiB and
        up): one core cannot saturate memory bandwidth, so the copy is split (as Ray
        does for its object store, ``ray/util/memory.h``). Default: up to 4, as many
        as there are CPUs. 1 copies in the calling thread only.

    Notes
    -----
    Arrays from :meth:`empty`, :meth:`zeros` and :meth:`asarray` are ordinary
    ``numpy.ndarray`` objects. Sending one (or a view of one) over a socket with
    ``shm=pool`` copies nothing: the receiver maps the pool read-only and its array
    views the very same memory. Until the returned tracker is done, do not modify the
    array: a receiver may be reading it. Any other array sent through the pool is
    copied once into it, and its tracker is done at once.

    The receiver's arrays are read-only views of the pool; they stay valid after the
    sender closes the pool, exits or is killed, until the receiver drops them.

    PUB and XPUB sockets send inline even with a pool: ZeroMQ does not say how many
    subscribers get a message, so no release could ever be counted.

    Linux only. A pool belongs to the process that made it; a forked child must make
    its own.
    """

    def __init__(
        self,
        size: int,
        *,
        threshold: int = 256 * 1024,
        when_full: Literal["block", "inline"] = "block",
        lease_timeout: float | None = 60.0,
        allow_uids: Iterable[int] = (),
        max_leases: int = 65536,
        copy_threads: int | None = None,
    ) -> None:
        if not LINUX:
            raise OSError(
                f"zarray.SharedPool needs Linux (memfd, file seals, SO_PEERCRED); this is "
                f"{sys.platform}: send inline instead (leave shm=None)"
            )
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise ValueError(f"size must be a positive number of bytes, got {size!r}")
        if when_full not in ("block", "inline"):
            raise ValueError(f"when_full must be 'block' or 'inline', got {when_full!r}")
        if lease_timeout is not None and not lease_timeout > 0:
            raise ValueError(f"lease_timeout must be positive or None, got {lease_timeout!r}")
        self.size = -(-size // _PAGE) * _PAGE
        self.threshold = int(threshold)
        self.when_full = when_full
        self.lease_timeout = lease_timeout
        self.max_leases = int(max_leases)
        self.copy_threads = (
            min(4, os.cpu_count() or 1) if copy_threads is None else max(1, int(copy_threads))
        )
        self._uids = {os.getuid(), *map(int, allow_uids)}
        self._pid = os.getpid()
        self.pool_id = _random_id()
        self._lock = threading.RLock()
        self._space = threading.Condition(self._lock)
        self._free: list[list[int]] = [[0, self.size]]  # [offset, size], sorted, merged
        self._returns: deque[tuple[int, int]] = deque()
        self._leases: dict[int, _Lease] = {}
        self._unclaimed: OrderedDict[int, _Lease] = OrderedDict()
        self._conns: dict[int, Conn] = {}
        self._closed = False
        # Lifetime: the memfd is kept open to hand to receivers that attach later; the
        # writable mapping lives as long as any array of the sender's views it (numpy
        # arrays hold a buffer export, so mmap.close() cannot pull it from under them).
        self._fd = os.memfd_create("zarray-pool", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.posix_fallocate(self._fd, 0, self.size)
            self._map = mmap.mmap(
                self._fd, self.size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE
            )
            import fcntl

            try:
                fcntl.fcntl(self._fd, F_ADD_SEALS, SEALS | F_SEAL_FUTURE_WRITE)
            except OSError as exc:  # pragma: no cover - kernels before 5.1
                if exc.errno != errno.EINVAL:
                    raise
                fcntl.fcntl(self._fd, F_ADD_SEALS, SEALS)
            self._whole = np.frombuffer(self._map, np.uint8)
            self._base = _address(self._whole)
            self._listener = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
            self._listener.bind(channel_name(self.pool_id))
            self._listener.listen(64)
            self._listener.setblocking(False)
            self._wake_r, self._wake_w = _socket.socketpair()
            self._wake_r.setblocking(False)
            self._wake_w.setblocking(False)
        except BaseException:
            os.close(self._fd)
            raise
        # The server thread holds the pool only weakly, so a pool nobody refers to any
        # more is collected; this wakes the thread then, and it closes the channel.
        weakref.finalize(self, poke, self._wake_w)
        self._thread = threading.Thread(
            target=serve,
            args=(weakref.ref(self), self._listener, self._wake_r, self._wake_w, self._fd),
            name=f"zarray-shm-{self.pool_id:016x}",
            daemon=True,
        )
        self._thread.start()

    # -- loaning ---------------------------------------------------------------------

    def empty(
        self,
        shape: int | tuple[int, ...],
        dtype: Any = float,
        order: Literal["C", "F"] = "C",
        *,
        timeout: float | None = None,
    ) -> NDArray:
        """An uninitialised array that lives in the pool (like ``numpy.empty``).

        Parameters
        ----------
        shape : int or tuple of int
            The array's shape.
        dtype : data-type
            The element type (no object dtypes).
        order : {"C", "F"}
            Memory order.
        timeout : float, optional
            Seconds to wait for room when the pool is full (receivers still hold its
            memory); None (the default) waits as long as it takes, 0 not at all.

        Returns
        -------
        numpy.ndarray
            A writeable array whose memory is a block of the pool, 4096-byte aligned.
            The block goes back to the pool when this array, its views, and every
            reference sent from it are gone.

        Raises
        ------
        PoolFullError
            If no room was found in time.
        ValueError
            If the array is larger than the pool, or the dtype holds objects.
        """
        dt = np.dtype(dtype)
        if dt.hasobject:
            raise ValueError(f"dtype {dt} holds Python objects; they cannot live in shared memory")
        shape_t = (shape,) if isinstance(shape, int) else tuple(shape)
        nbytes = math.prod(shape_t) * dt.itemsize
        block = self._loan(nbytes, None if timeout is None else float(timeout))
        if block is None:
            raise PoolFullError(
                f"no room for {nbytes} bytes in the pool ({self.free} of {self.size} free) "
                f"within {timeout} s"
            )
        raw = np.asarray(block)[:nbytes]
        out: NDArray = np.ndarray(shape_t, dt, raw, 0, None, order)
        return out

    def zeros(
        self,
        shape: int | tuple[int, ...],
        dtype: Any = float,
        order: Literal["C", "F"] = "C",
        *,
        timeout: float | None = None,
    ) -> NDArray:
        """An array of zeros that lives in the pool; see :meth:`empty`.

        Parameters
        ----------
        shape : int or tuple of int
            The array's shape.
        dtype : data-type
            The element type.
        order : {"C", "F"}
            Memory order.
        timeout : float, optional
            Seconds to wait for room; see :meth:`empty`.

        Returns
        -------
        numpy.ndarray
            A writeable array of zeros in the pool.
        """
        A = self.empty(shape, dtype, order, timeout=timeout)
        A.reshape(-1, order="A").view(np.uint8)[...] = 0
        return A

    def asarray(self, A: Any, *, timeout: float | None = None) -> NDArray:
        """``A`` itself if it lives in the pool, else a copy of it in the pool.

        Parameters
        ----------
        A : array_like
            The data.
        timeout : float, optional
            Seconds to wait for room; see :meth:`empty`.

        Returns
        -------
        numpy.ndarray
            An array in the pool with ``A``'s dtype, shape and values (C order unless
            ``A`` is Fortran-ordered).
        """
        src: NDArray = np.asarray(A)
        if self.owns(src):
            return src
        order: Literal["C", "F"] = "F" if src.flags.f_contiguous and src.ndim > 1 else "C"
        out = self.empty(src.shape, src.dtype, order, timeout=timeout)
        np.copyto(out, src)
        return out

    def owns(self, A: Any) -> bool:
        """Whether ``A``'s memory lies in a block of this pool (so it is sent by reference)."""
        return self._block_of(A) is not None

    @property
    def free(self) -> int:
        """Bytes of the pool that no array and no reference holds now."""
        with self._lock:
            self._take_returns()
            return sum(size for _, size in self._free)

    @property
    def leases(self) -> int:
        """References sent and not yet released, reclaimed or expired."""
        with self._lock:
            return len(self._leases)

    @property
    def receivers(self) -> int:
        """Receivers attached to the pool now (open side-channel connections)."""
        with self._lock:
            return len(self._conns)

    def close(self) -> None:
        """Stop serving receivers; the memory goes when nothing maps it any more.

        Receivers keep the arrays they already have (they hold their own mappings);
        references they receive from now on are refused. The sender's own arrays stay
        valid. Idempotent.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._wake_w.send(b"x")
        except OSError:  # pragma: no cover
            pass
        if threading.current_thread() is not self._thread:
            self._thread.join(CHANNEL_TIMEOUT)

    def __enter__(self) -> SharedPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self.free} free, {self.leases} leases"
        return f"<zarray.SharedPool {self.pool_id:016x}: {self.size} bytes, {state}>"

    # -- the allocator (first fit over a sorted, merged free list; page granularity) --

    def _returned(self, offset: int, size: int) -> None:
        """A block's last reference went (``_Block.__del__``): queue its region."""
        self._returns.append((offset, size))
        # Wake waiting senders if the lock is free now; otherwise its holder takes the
        # returns before it next looks for room (every look starts with _take_returns).
        if self._lock.acquire(blocking=False):
            try:
                self._space.notify_all()
            finally:
                self._lock.release()

    def _take_returns(self) -> None:
        while self._returns:
            offset, size = self._returns.popleft()
            self._insert_free(offset, size)

    def _insert_free(self, offset: int, size: int) -> None:
        free = self._free
        lo, hi = 0, len(free)
        while lo < hi:
            mid = (lo + hi) // 2
            if free[mid][0] < offset:
                lo = mid + 1
            else:
                hi = mid
        free.insert(lo, [offset, size])
        if lo + 1 < len(free) and offset + size == free[lo + 1][0]:
            free[lo][1] += free.pop(lo + 1)[1]
        if lo > 0 and free[lo - 1][0] + free[lo - 1][1] == offset:
            free[lo - 1][1] += free.pop(lo)[1]

    def _try_carve(self, size: int) -> _Block | None:
        self._take_returns()
        for entry in self._free:
            if entry[1] >= size:
                offset = entry[0]
                entry[0] += size
                entry[1] -= size
                if entry[1] == 0:
                    self._free.remove(entry)
                return _Block(self, offset, size)
        return None

    def _loan(self, nbytes: int, timeout: float | None) -> _Block | None:
        """A block of at least ``nbytes``, waiting up to ``timeout`` s (None: forever)."""
        self._check_process()
        size = max(_PAGE, -(-nbytes // _PAGE) * _PAGE)
        if size > self.size:
            raise ValueError(f"{nbytes} bytes do not fit a pool of {self.size} bytes")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while True:
                if self._closed:
                    raise ValueError("the pool is closed")
                block = self._try_carve(size)
                if block is not None:
                    return block
                self._expire()
                block = self._try_carve(size)
                if block is not None:
                    return block
                wait = 0.05 if deadline is None else min(0.05, deadline - time.monotonic())
                if wait <= 0:
                    return None
                # Bounded waits: a block's return may not be able to notify (see
                # _returned), and unclaimed leases expire on the clock.
                self._space.wait(wait)

    def _check_process(self) -> None:
        if os.getpid() != self._pid:
            raise RuntimeError(
                "this SharedPool was created by another process (before a fork); "
                "make a new pool in this process"
            )

    # -- sending -----------------------------------------------------------------------

    def _block_of(self, A: Any) -> _Block | None:
        """The block of this pool whose memory ``A`` lies in, or None."""
        base = A
        while isinstance(base, np.ndarray):
            base = base.base
        if not isinstance(base, _Block) or base.pool is not self:
            return None
        lo, hi = _bounds(A)
        start = self._base + base.offset
        if lo < start or hi > start + base.size:
            return None
        return base

    def encode(self, A: Any, socket: Any, flags: int) -> tuple[bytes, bytes, _Lease] | None:
        """``(header, reference, lease)`` for sending ``A`` through the pool, or None.

        None means: send inline (a small payload, a PUB socket, an inproc socket, a
        payload larger than the pool, or a full pool with ``when_full="inline"``).
        Raises ``zmq.Again`` when a full pool has no room in time (``zmq.NOBLOCK`` or
        the socket's ``SNDTIMEO``); nothing is leased then.
        """
        if self._closed:
            raise ValueError("the SharedPool is closed")
        self._check_process()
        kind = socket.getsockopt(zmq.TYPE)
        if kind in _INLINE_TYPES:
            return None
        if socket.getsockopt(zmq.LAST_ENDPOINT).startswith(b"inproc://"):
            return None  # inproc already hands the array over without a copy
        header, payload = prepare(A)
        nbytes = payload.nbytes
        if nbytes < self.threshold or nbytes > self.size:
            return None
        block = self._block_of(payload if payload is A else A)
        start = _address(payload) - self._base
        own = block is not None and block.offset <= start <= block.offset + block.size - nbytes
        if not own:
            # Not the pool's memory (or a view prepare() had to compact): one copy in.
            block = self._loan_for_send(nbytes, socket, flags)
            if block is None:
                return None
            _copy(np.asarray(block)[:nbytes], _as_bytes(payload), self.copy_threads)
            start = block.offset
        assert block is not None
        lease = self._lease(block, start, nbytes, own)
        ref = REF.pack(REF_MAGIC, 0, self.pool_id, lease.lease_id, start, nbytes)
        return set_encoding(header, 0, 0, KIND_SHM), ref, lease

    def _loan_for_send(self, nbytes: int, socket: Any, flags: int) -> _Block | None:
        if self.when_full == "inline":
            return self._loan(nbytes, 0.0)
        if _is_async(socket):
            # Never wait on the event loop: zarray.asyncio waits in a worker thread.
            block = self._loan(nbytes, 0.0)
            if block is None:
                raise PoolBusy(self, nbytes, flags, socket.getsockopt(zmq.SNDTIMEO))
            return block
        if flags & _NOBLOCK:
            timeout: float | None = 0.0
        else:
            ms = socket.getsockopt(zmq.SNDTIMEO)
            timeout = None if ms < 0 else ms / 1000
        block = self._loan(nbytes, timeout)
        if block is None:
            raise self._again(nbytes)
        return block

    def _again(self, nbytes: int) -> zmq.Again:
        return _again(
            f"the shared-memory pool has no room for {nbytes} bytes "
            f"({self.free} of {self.size} free); nothing was sent"
        )

    def wait_for_room(self, nbytes: int, timeout: float | None) -> None:
        """Block until a ``nbytes`` payload would fit (zmq.Again after ``timeout`` s)."""
        block = self._loan(nbytes, timeout)
        if block is None:
            raise self._again(nbytes)
        del block  # only the room was wanted: the region goes straight back

    def _lease(self, block: _Block, offset: int, length: int, own: bool) -> _Lease:
        with self._lock:
            if len(self._leases) >= self.max_leases:
                self._expire()
                if len(self._leases) >= self.max_leases:
                    raise _again(
                        f"{len(self._leases)} shared-memory references are out "
                        f"(max_leases={self.max_leases}); nothing was sent"
                    )
            lease_id = _random_id()
            while lease_id in self._leases:  # pragma: no cover - a 2**-64 event
                lease_id = _random_id()
            lease = _Lease(self, block, lease_id, offset, length, own)
            self._leases[lease_id] = lease
            # No wake-up of the server thread per message (it would take the GIL from
            # the sender): it looks at least every lease_timeout, and a sender that
            # needs room expires leases itself (_loan).
            self._unclaimed[lease_id] = lease
        return lease

    def _end_lease(self, lease_id: int) -> None:
        """End a lease (released, reclaimed, expired or cancelled): its slot may go."""
        with self._lock:
            lease = self._leases.pop(lease_id, None)
            if lease is None:
                return
            self._unclaimed.pop(lease_id, None)
            if lease.claimed_by is not None:
                lease.claimed_by.held.discard(lease_id)
            block, lease.block = lease.block, None
            lease._event.set()
            self._space.notify_all()
        # The block reference goes here, outside the lock: if it was the last one, the
        # region is queued back (see _Block.__del__).
        del block

    def _expire(self) -> float | None:
        """Reclaim unclaimed leases older than lease_timeout; seconds until it is worth
        looking again (the next one's due time, or lease_timeout when none waits)."""
        if self.lease_timeout is None:
            return None
        now = time.monotonic()
        while self._unclaimed:
            lease_id, lease = next(iter(self._unclaimed.items()))
            due = lease.sent + self.lease_timeout
            if due > now:
                return due - now
            self._end_lease(lease_id)
        return self.lease_timeout

    # -- the side channel (run by the server thread) ----------------------------------

    def _claim(self, conn: Conn, items: list[tuple[int, int, int]]) -> bytes:
        out = bytearray()
        with self._lock:
            for lease_id, offset, length in items:
                lease = self._leases.get(lease_id)
                if lease is None:
                    out.append(UNKNOWN)
                elif lease.claimed_by is not None:
                    out.append(TAKEN)
                elif offset < lease.offset or offset + length > lease.offset + lease.length:
                    out.append(OUTSIDE)
                else:
                    lease.claimed_by = conn
                    conn.held.add(lease_id)
                    self._unclaimed.pop(lease_id, None)
                    out.append(OK)
        return bytes(out)

    def _release(self, conn: Conn, lease_ids: Iterable[int]) -> None:
        for lease_id in lease_ids:
            # Only what this receiver holds: another peer cannot end someone's lease.
            if lease_id in conn.held:
                self._end_lease(lease_id)

    def _drop_conn(self, conn: Conn) -> None:
        """A receiver's channel closed (it exited, or was killed): reclaim its leases."""
        with self._lock:
            if self._conns.get(conn.sock.fileno()) is conn:
                del self._conns[conn.sock.fileno()]
            held = list(conn.held)
        for lease_id in held:
            self._end_lease(lease_id)
        conn.sock.close()


def _again(message: str) -> zmq.Again:
    """zmq.Again (EAGAIN, as at a high-water mark) with zarray's own explanation."""
    exc = zmq.Again()
    exc.strerror = message
    exc.args = (message,)
    return exc


def _is_async(socket: Any) -> bool:
    # No asyncio socket exists unless zmq's asyncio support was imported.
    future = sys.modules.get("zmq._future")
    return future is not None and isinstance(socket, future._AsyncSocket)


def _random_id() -> int:
    """A random non-zero 64-bit id (pool ids and lease ids are unguessable)."""
    return int.from_bytes(os.urandom(8), "little") | 1


_PARALLEL_COPY = 8 << 20
_copiers: ThreadPoolExecutor | None = None


def _copy(dst: NDArray, src: NDArray, threads: int) -> None:
    """Copy ``src`` into ``dst`` (equal-length uint8), in ``threads`` slices if large.

    numpy releases the GIL while it copies plain bytes, so the slices run in parallel.
    """
    global _copiers
    n = src.nbytes
    if threads <= 1 or n < _PARALLEL_COPY:
        np.copyto(dst, src)
        return
    if _copiers is None:
        from concurrent.futures import ThreadPoolExecutor  # imports logging: only when used

        _copiers = ThreadPoolExecutor(max_workers=3, thread_name_prefix="zarray-copy")
    step = -(-n // threads // 64) * 64  # slice edges on cache lines
    cuts = list(range(0, n, step))
    jobs = [_copiers.submit(np.copyto, dst[c : c + step], src[c : c + step]) for c in cuts[1:]]
    np.copyto(dst[: cuts[1] if len(cuts) > 1 else n], src[: cuts[1] if len(cuts) > 1 else n])
    for job in jobs:
        job.result()


def _bounds(A: NDArray) -> tuple[int, int]:
    """The first and one-past-last byte addresses an array's elements occupy."""
    lo = hi = _address(A)
    if A.size == 0:
        return lo, hi
    for n, step in zip(A.shape, A.strides, strict=True):
        if step < 0:
            lo += (n - 1) * step
        else:
            hi += (n - 1) * step
    return lo, hi + A.itemsize


def _as_bytes(payload: NDArray) -> NDArray:
    """A flat uint8 view of a payload from ``prepare`` (always one contiguous block)."""
    if payload.dtype == np.uint8 and payload.ndim == 1:
        return payload
    flat: NDArray = payload.ravel(order="K").view(np.uint8)
    return flat
