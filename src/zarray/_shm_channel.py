"""The side channel between a :class:`zarray.SharedPool` and its receivers.

One ``AF_UNIX`` ``SOCK_SEQPACKET`` socket per pool, in the abstract namespace, carries
everything that is not the message itself (docs/FORMAT.md, "Shared-memory payloads"):

* the **welcome**: the segment's file descriptor (``SCM_RIGHTS``) and size, sent once
  to each receiver that connects, after its uid passed (``SO_PEERCRED``);
* **claims** (a receiver asks, the pool answers) and **releases** (the receiver tells);
* the end of a connection, which tells the pool that a receiver went away.

This module holds both ends: the pool's server thread (:func:`serve`), and the
receiver's :class:`Attachment` (the connection, the read-only mapping, claims and
releases) with :func:`open_reference`, which turns a reference frame into the bytes
it stands for. The pool itself (allocation, leases, sending) is ``zarray._shm``.
"""

from __future__ import annotations

import atexit
import mmap
import os
import selectors
import socket as _socket
import stat
import struct
import sys
import threading
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any

import numpy as np

from zarray.errors import HeaderError

if TYPE_CHECKING:
    from zarray._shm import SharedPool

__all__ = [
    "CHANNEL_TIMEOUT",
    "F_ADD_SEALS",
    "F_GET_SEALS",
    "F_SEAL_FUTURE_WRITE",
    "LINUX",
    "REF",
    "REF_MAGIC",
    "REF_SIZE",
    "SEALS",
    "Conn",
    "channel_name",
    "open_reference",
    "poke",
    "serve",
]

NDArray = np.ndarray[Any, Any]

#: The reference frame: magic, reserved, pool id, lease id, offset, length (docs/FORMAT.md).
REF_MAGIC = b"\x93ZSR"
REF = struct.Struct("<4sIQQQQ")
REF_SIZE = REF.size  # 40

# Side-channel packets (docs/FORMAT.md): a 4-byte tag, then little-endian fields.
_WELCOME = b"ZSHw"  # sender -> receiver: u32 version, u64 pool id, u64 segment size; 1 fd
_REFUSED = b"ZSHx"  # sender -> receiver: UTF-8 reason; then the sender closes
_CLAIM = b"ZSHc"  # receiver -> sender: u32 n, n x (u64 lease, u64 offset, u64 length)
_CLAIMED = b"ZSHC"  # sender -> receiver: u32 n, n status bytes
_RELEASE = b"ZSHr"  # receiver -> sender: u32 n, n x u64 lease
_VERSION = 1
_MAX_BATCH = 256  # leases per claim or release packet
_PACKET = 16 + 24 * _MAX_BATCH

#: Claim statuses.
OK, UNKNOWN, TAKEN, OUTSIDE = 0, 1, 2, 3
_STATUS = {
    UNKNOWN: "expired or unknown (the sender reclaimed it: it stayed unclaimed too long, "
    "or its message was cancelled)",
    TAKEN: "already claimed by another receiver",
    OUTSIDE: "outside the region the sender leased",
}

# fcntl(2) on Linux. Python's fcntl module names these only on Linux (and not
# F_SEAL_FUTURE_WRITE, Linux 5.1), so they are spelled out: `import zarray` must work
# on every system, and shared memory says clearly where it does not.
F_ADD_SEALS, F_GET_SEALS = 1033, 1034
F_SEAL_SEAL, F_SEAL_SHRINK, F_SEAL_GROW, F_SEAL_FUTURE_WRITE = 0x1, 0x2, 0x4, 0x10
#: The seals a receiver requires before it maps a segment: the file's size can then
#: never change under the mapping (reading past a shrunk end would raise SIGBUS).
SEALS = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL
#: Shared memory works here: memfd, seals, abstract sockets, SO_PEERCRED.
LINUX = sys.platform.startswith("linux")
#: A claim or handshake that gets no answer within this many seconds fails (HeaderError).
CHANNEL_TIMEOUT = 10.0


def _address(a: NDArray) -> int:
    return int(a.__array_interface__["data"][0])


class Conn:
    """The sender's side of one receiver's side-channel connection."""

    __slots__ = ("held", "pid", "sock", "uid")

    def __init__(self, sock: _socket.socket, pid: int, uid: int) -> None:
        self.sock = sock
        self.pid = pid
        self.uid = uid
        self.held: set[int] = set()


def channel_name(pool_id: int) -> bytes:
    return b"\0zarray-shm-%016x" % pool_id


def poke(sock: _socket.socket) -> None:
    try:
        sock.send(b"x")
    except (BlockingIOError, OSError):
        pass  # already awake, or closing


def _peer_cred(sock: _socket.socket) -> tuple[int, int, int]:
    raw = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


def serve(
    ref: weakref.ReferenceType[SharedPool],
    listener: _socket.socket,
    wake: _socket.socket,
    wake_w: _socket.socket,
    fd: int,
) -> None:
    """The pool's side-channel server: accept and welcome receivers, answer claims,
    take releases, reclaim the leases of receivers that went away, expire old leases.

    Holds the pool only weakly while it waits, so that an unused pool can be collected;
    it then closes the listening socket and the memfd (the memory itself goes when the
    last mapping of it does, in this process or any receiver).
    """
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, None)
    sel.register(wake, selectors.EVENT_READ, None)
    conns: list[Conn] = []
    try:
        while True:
            pool = ref()
            if pool is None or pool._closed:
                break
            with pool._lock:
                timeout = pool._expire()
            del pool
            events = sel.select(None if timeout is None else max(timeout, 0.001))
            pool = ref()
            if pool is None:
                break
            for key, _ in events:
                if key.fileobj is wake:
                    try:
                        while wake.recv(4096):
                            pass
                    except BlockingIOError:
                        pass
                elif key.fileobj is listener:
                    conns += _accept(pool, sel, listener, fd)
                else:
                    _handle(pool, sel, key.data)
            conns = [c for c in conns if c.sock.fileno() >= 0]
            del pool
    finally:
        pool = ref()
        for conn in conns:
            if pool is not None:
                pool._drop_conn(conn)
            else:
                conn.sock.close()
        sel.close()
        listener.close()
        wake.close()
        wake_w.close()
        os.close(fd)


def _accept(
    pool: SharedPool, sel: selectors.BaseSelector, listener: _socket.socket, fd: int
) -> list[Conn]:
    """Welcome new receivers (the segment's fd and size), or refuse them (uid)."""
    accepted: list[Conn] = []
    while True:
        try:
            sock, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return accepted
        pid, uid, _ = _peer_cred(sock)
        if uid not in pool._uids:
            _send_quiet(sock, _REFUSED + f"uid {uid} may not attach to this pool".encode())
            sock.close()
            continue
        welcome = _WELCOME + struct.pack("<IQQ", _VERSION, pool.pool_id, pool.size)
        if not _send_quiet(sock, welcome, [fd]):
            sock.close()
            continue
        sock.setblocking(False)
        conn = Conn(sock, pid, uid)
        with pool._lock:
            pool._conns[sock.fileno()] = conn
        sel.register(sock, selectors.EVENT_READ, conn)
        accepted.append(conn)


def _send_quiet(sock: _socket.socket, data: bytes, fds: list[int] | None = None) -> bool:
    try:
        if fds:
            _socket.send_fds(sock, [data], fds)
        else:
            sock.send(data)
    except OSError:
        return False
    return True


def _handle(pool: SharedPool, sel: selectors.BaseSelector, conn: Conn) -> None:
    """One packet from a receiver; a malformed one closes its connection."""
    try:
        data = conn.sock.recv(_PACKET)
    except BlockingIOError:
        return
    except OSError:
        data = b""
    if not (data and _dispatch(pool, conn, data)):
        sel.unregister(conn.sock)
        pool._drop_conn(conn)


def _dispatch(pool: SharedPool, conn: Conn, data: bytes) -> bool:
    if len(data) < 8:
        return False
    tag = data[:4]
    (n,) = struct.unpack_from("<I", data, 4)
    if n > _MAX_BATCH:
        return False
    if tag == _CLAIM and len(data) == 8 + 24 * n:
        items = [struct.unpack_from("<QQQ", data, 8 + 24 * i) for i in range(n)]
        status = pool._claim(conn, items)
        # The receiver waits for this reply, so its socket buffer has room; a peer
        # that stops reading only gets its connection (and its leases) dropped.
        return _send_quiet(conn.sock, _CLAIMED + struct.pack("<I", n) + status)
    if tag == _RELEASE and len(data) == 8 + 8 * n:
        pool._release(conn, struct.unpack_from(f"<{n}Q", data, 8))
        return True
    return False


# -- the receiving side ----------------------------------------------------------------------


class _Attachment:
    """One receiver process's connection to one sender's pool, and its mapping.

    Lifetime: the registry holds it while the sender serves; every claimed region
    holds it too, so the read-only mapping outlives the sender (closed pool, exit,
    SIGKILL) for as long as any received array views it.
    """

    def __init__(self, pool_id: int) -> None:
        self.pool_id = pool_id
        self.lock = threading.Lock()
        self.pending: deque[int] = deque()
        self.alive = True
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
        sock.settimeout(CHANNEL_TIMEOUT)
        try:
            try:
                sock.connect(channel_name(pool_id))
            except OSError as exc:
                raise HeaderError(
                    f"shared-memory reference to pool {pool_id:016x}, which is not on this "
                    f"host ({exc.strerror}): the sender is on another host, in another "
                    "network namespace, or has closed its pool"
                ) from None
            _, uid, _ = _peer_cred(sock)
            if uid not in (os.getuid(), 0):
                raise HeaderError(
                    f"the side channel of shared-memory pool {pool_id:016x} is served by "
                    f"uid {uid}, not by this user"
                )
            msg, fds, _, _ = _socket.recv_fds(sock, 256, 4)
            try:
                self.mapping, self.size = self._check_welcome(msg, fds)
            finally:
                for fd in fds:
                    os.close(fd)
        except HeaderError:
            sock.close()
            raise
        except OSError as exc:
            sock.close()
            raise HeaderError(
                f"attaching to shared-memory pool {pool_id:016x} failed: {exc}"
            ) from None
        self.sock = sock
        self.whole = np.frombuffer(self.mapping, np.uint8)
        self.base = _address(self.whole)

    def _check_welcome(self, msg: bytes, fds: list[int]) -> tuple[mmap.mmap, int]:
        pool = f"shared-memory pool {self.pool_id:016x}"
        if msg[:4] == _REFUSED:
            reason = msg[4:200].decode("utf-8", "replace")
            raise HeaderError(f"the sender of {pool} refused this process: {reason}")
        if msg[:4] != _WELCOME or len(msg) != 24 or len(fds) != 1:
            raise HeaderError(f"{pool}: malformed handshake from the sender")
        version, pool_id, size = struct.unpack_from("<IQQ", msg, 4)
        if version != _VERSION or pool_id != self.pool_id:
            raise HeaderError(f"{pool}: handshake for pool {pool_id:016x}, version {version}")
        fd = fds[0]
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size != size or size <= 0:
            raise HeaderError(f"{pool}: the descriptor is not a regular file of {size} bytes")
        import fcntl

        try:
            seals = fcntl.fcntl(fd, F_GET_SEALS)
        except OSError:
            seals = 0
        if seals & SEALS != SEALS:
            # Without these seals the sender could shrink the file under the mapping,
            # and reading past the end would kill this process with SIGBUS.
            raise HeaderError(
                f"{pool}: the segment is not sealed against shrinking and growing "
                f"(seals 0x{seals:x}); refusing to map it"
            )
        return mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ), size

    def claim(self, lease_id: int, offset: int, length: int) -> NDArray:
        """The region of a reference as a read-only uint8 array; HeaderError if refused."""
        pool = f"shared-memory pool {self.pool_id:016x}"
        if offset > self.size or length > self.size - offset:
            raise HeaderError(
                f"reference to bytes {offset}..{offset + length} of {pool}, which has {self.size}"
            )
        with self.lock:
            if not self.alive:
                raise HeaderError(f"the sender of {pool} has closed it (or exited)")
            try:
                self._flush()
                self.sock.send(_CLAIM + struct.pack("<IQQQ", 1, lease_id, offset, length))
                reply = self.sock.recv(64)
            except TimeoutError:
                raise HeaderError(
                    f"the sender of {pool} did not answer a claim within {CHANNEL_TIMEOUT} s"
                ) from None
            except OSError:
                reply = b""
            if not reply:
                self._dead()
                raise HeaderError(f"the sender of {pool} has closed it (or exited)")
        if reply[:8] != _CLAIMED + struct.pack("<I", 1) or len(reply) != 9:
            raise HeaderError(f"{pool}: malformed claim reply")
        status = reply[8]
        if status != OK:
            why = _STATUS.get(status, f"status {status}")
            raise HeaderError(f"shared-memory reference {lease_id:016x} into {pool}: {why}")
        return np.asarray(_Claim(self, lease_id, self.whole[offset : offset + length]))

    def release(self, lease_id: int) -> None:
        """Tell the sender a region is no longer viewed (from ``_Claim.__del__``)."""
        if not self.alive:
            return  # the sender is gone (or this is a forked copy): nothing to tell
        self.pending.append(lease_id)
        # In a finalizer, maybe inside another thread's claim: never wait for the lock.
        if self.lock.acquire(blocking=False):
            try:
                self._flush()
            finally:
                self.lock.release()

    def _flush(self) -> None:
        """Send queued releases (the caller holds the lock)."""
        while self.pending and self.alive:
            batch: list[int] = []
            while self.pending and len(batch) < _MAX_BATCH:
                batch.append(self.pending.popleft())
            try:
                self.sock.send(_RELEASE + struct.pack(f"<I{len(batch)}Q", len(batch), *batch))
            except OSError:
                self._dead()

    def _dead(self) -> None:
        """The sender is gone: forget the channel; the mapping stays for the arrays."""
        self.alive = False
        self.pending.clear()
        self.sock.close()
        with _registry_lock:
            if _registry.get(self.pool_id) is self:
                del _registry[self.pool_id]


class _Claim:
    """The base of every received array viewing one claimed region.

    Holds the attachment (so the mapping stays) and, through ``view``, a buffer export
    of the mapping (so it cannot be closed under the arrays). When the last array
    viewing the region goes, ``__del__`` releases the lease.
    """

    __slots__ = ("__array_interface__", "attachment", "lease_id", "view")

    def __init__(self, attachment: _Attachment, lease_id: int, view: NDArray) -> None:
        self.attachment = attachment
        self.lease_id = lease_id
        self.view = view
        self.__array_interface__ = {
            "data": (_address(view), True),
            "shape": view.shape,
            "typestr": "|u1",
            "version": 3,
        }

    def __del__(self) -> None:
        try:
            self.attachment.release(self.lease_id)
        except Exception:  # pragma: no cover - interpreter shutdown
            pass


_registry: dict[int, _Attachment] = {}
# Re-entrant: a release in a finalizer may find the sender gone (and unregister the
# attachment) while this thread is inside open_reference's registry lookup.
_registry_lock = threading.RLock()


def _reset_after_fork() -> None:
    """In a forked child: forget the parent's side channels, keep its mappings.

    The child's copies of the parent's arrays stay readable (the mappings were
    inherited), but the child must never release the parent's claims: its copy of a
    side-channel socket is the parent's connection, so a release would end a lease the
    parent still views. Every attachment is marked dead (its copy of the socket
    closed, which leaves the parent's open); the child attaches afresh when it needs to.
    """
    global _registry_lock
    for attachment in list(_registry.values()):
        attachment.alive = False
        attachment.pending.clear()
        attachment.sock.close()
    _registry.clear()
    _registry_lock = threading.RLock()


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_reset_after_fork)


@atexit.register
def _close_channels() -> None:
    """At exit, close the side channels (the kernel would, but quietly is better)."""
    for attachment in list(_registry.values()):
        attachment.alive = False
        attachment.sock.close()
    _registry.clear()


def open_reference(fields: tuple[Any, ...], frame: Any) -> NDArray:
    """The bytes a shared-memory reference frame stands for: a read-only uint8 array.

    Attaches to the sender's pool on first use (one connection and one mapping per
    pool), claims the lease and returns a view of the region; the lease is released
    when the last array viewing it goes. Raises HeaderError, saying why, when the
    reference cannot be used.
    """
    if not LINUX:
        raise HeaderError(
            f"a shared-memory payload arrived, but this zarray runs on {sys.platform}; "
            "shared memory needs Linux on both sides (send inline from the sender)"
        )
    view = memoryview(frame)
    if view.nbytes != REF_SIZE:
        raise HeaderError(
            f"shared-memory reference frame is {view.nbytes} bytes; it must be {REF_SIZE}"
        )
    magic, reserved, pool_id, lease_id, offset, length = REF.unpack(view)
    if magic != REF_MAGIC:
        raise HeaderError(f"shared-memory reference has bad magic {magic!r}")
    if reserved:
        raise HeaderError("shared-memory reference bytes 4..7 are not zero")
    if length != fields[6]:
        raise HeaderError(
            f"shared-memory reference covers {length} bytes, but the header says {fields[6]}"
        )
    with _registry_lock:
        attachment = _registry.get(pool_id)
    if attachment is None or not attachment.alive:
        attachment = _Attachment(pool_id)
        with _registry_lock:
            # Another thread may have attached meanwhile: keep the first, drop ours.
            current = _registry.setdefault(pool_id, attachment)
        if current is not attachment:
            attachment.alive = False
            attachment.sock.close()
            attachment = current
    return attachment.claim(lease_id, offset, length)
