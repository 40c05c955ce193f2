"""Shared-memory payloads within one process: the pool, the wire, lifetimes, bad references.

Sender and receiver are two real sockets of this process over ipc or tcp on 127.0.0.1
(over inproc zarray sends inline: inproc already hands arrays over without a copy), so
every message goes through the real side channel, seals and mappings. The tests with
separate processes and SIGKILLs are in tests/reliability/test_shm_faults.py.
"""

from __future__ import annotations

import asyncio
import fcntl
import gc
import mmap
import os
import socket
import struct
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import zmq

import zarray
import zarray.asyncio
from zarray import _shm_channel
from zarray._codec import unpack

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")

MiB = 1 << 20
NDArray = np.ndarray[Any, Any]


@pytest.fixture
def pool() -> Iterator[zarray.SharedPool]:
    p = zarray.SharedPool(32 * MiB, threshold=64 * 1024, lease_timeout=30.0)
    try:
        yield p
    finally:
        p.close()


def _released(pool: zarray.SharedPool, want: int = 0, timeout: float = 10.0) -> int:
    """Wait (bounded) until the pool's leases drop to ``want``; return the count."""
    deadline = time.monotonic() + timeout
    while pool.leases > want and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.005)
    return pool.leases


def _kind(frame: Any) -> tuple[int, int]:
    fields = unpack(frame)
    return fields[10], fields[8]


# -- the pool ----------------------------------------------------------------------------


def test_empty_zeros_asarray(pool: zarray.SharedPool) -> None:
    A = pool.empty((3, 5), np.float32)
    assert A.shape == (3, 5)
    assert A.dtype == np.float32
    assert A.flags.writeable
    assert A.flags.c_contiguous
    assert pool.owns(A)
    assert pool.owns(A[1:, ::2])
    F = pool.zeros((4, 6), ">i8", order="F")
    assert F.flags.f_contiguous
    assert not F.any()
    assert F.dtype == np.dtype(">i8")
    src = np.arange(12.0).reshape(3, 4)
    B = pool.asarray(src)
    assert pool.owns(B)
    assert np.array_equal(B, src)
    assert B is not src
    assert pool.asarray(B) is B
    assert not pool.owns(src)
    assert not pool.owns(np.zeros(3))
    R = pool.empty(10, [("t", "<f8"), ("v", "<i2", (3,))])
    assert R.dtype.names == ("t", "v")
    assert A.ctypes.data % 4096 == 0  # every block starts on a page


def test_blocks_come_back_when_arrays_go(pool: zarray.SharedPool) -> None:
    full = pool.free
    A = pool.empty(5 * MiB, np.uint8)
    view = A[10:20]
    assert pool.free == full - 5 * MiB
    del A
    gc.collect()
    assert pool.free == full - 5 * MiB  # a view still holds the block
    del view
    gc.collect()
    assert pool.free == full


def test_full_pool_refuses_in_time(pool: zarray.SharedPool) -> None:
    hog = pool.empty(pool.size - 4096, np.uint8)
    with pytest.raises(zarray.PoolFullError, match="no room"):
        pool.empty(8192, np.uint8, timeout=0)
    t0 = time.monotonic()
    with pytest.raises(zarray.PoolFullError):
        pool.empty(8192, np.uint8, timeout=0.2)
    assert time.monotonic() - t0 >= 0.2
    del hog
    gc.collect()
    assert pool.empty(8192, np.uint8, timeout=0).nbytes == 8192
    with pytest.raises(ValueError, match="do not fit"):
        pool.empty(pool.size + 1, np.uint8)
    with pytest.raises(ValueError, match="objects"):
        pool.empty(3, object)


def test_pool_arguments_are_checked(make_pair: Any) -> None:
    with pytest.raises(ValueError, match="size"):
        zarray.SharedPool(0)
    with pytest.raises(ValueError, match="when_full"):
        zarray.SharedPool(MiB, when_full="drop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lease_timeout"):
        zarray.SharedPool(MiB, lease_timeout=0)
    with pytest.raises(TypeError, match="SharedPool"):
        zarray.send_array(make_pair.socket(zmq.PUSH), np.zeros(3), shm="yes")  # type: ignore[arg-type]


def test_segment_is_sealed(pool: zarray.SharedPool) -> None:
    """No peer can shrink or grow the segment, nor map it writable again."""
    seals = fcntl.fcntl(pool._fd, fcntl.F_GET_SEALS)
    assert seals & (fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL) == 0x7
    with pytest.raises(PermissionError):
        os.ftruncate(pool._fd, 4096)
    with pytest.raises(PermissionError):
        mmap.mmap(pool._fd, pool.size, flags=mmap.MAP_SHARED, prot=mmap.PROT_WRITE)
    with pytest.raises(PermissionError):
        fcntl.fcntl(pool._fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE)  # F_SEAL_SEAL holds


# -- the wire ------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["ipc", "tcp"])
def test_pool_array_goes_by_reference(
    make_pair: Any, pool: zarray.SharedPool, transport: str
) -> None:
    """Header + a 40-byte reference; the receiver views the sender's very memory."""
    sender, receiver = make_pair.pair(transport, "PUSH-PULL")
    A = pool.empty((512, 512), np.float64)
    A[...] = np.arange(A.size).reshape(A.shape)
    tracker = zarray.send_array(sender, A, shm=pool)
    assert tracker is not None
    frames = receiver.recv_multipart(copy=False)
    assert len(frames) == 2
    assert len(frames[1]) == _shm_channel.REF_SIZE
    assert _kind(frames[0]) == (1, 0)
    B = zarray.deserialize(frames)
    assert B.shape == A.shape
    assert B.dtype == A.dtype
    assert np.array_equal(A, B)
    assert not B.flags.writeable
    assert not tracker.done  # the receiver still views it
    A[7, 7] = -1.0  # same physical memory: the receiver sees the sender's write
    assert B[7, 7] == -1.0
    with pytest.raises(ValueError, match="read-only"):
        B[0, 0] = 1
    view = B[100:]
    del B
    gc.collect()
    assert not tracker.done  # a view of a view still holds it
    del view
    gc.collect()
    tracker.wait(10)
    assert _released(pool) == 0


def test_receiving_allocates_nothing_payload_sized(make_pair: Any, pool: zarray.SharedPool) -> None:
    sender, receiver = make_pair.pair("ipc", "PUSH-PULL")
    A = pool.zeros(16 * MiB, np.uint8)
    zarray.send_array(sender, A, shm=pool)  # first message: attaches (mapping made)
    zarray.recv_array(receiver)
    gc.collect()
    tracemalloc.start()
    try:
        for _ in range(5):
            zarray.send_array(sender, A, shm=pool)
            B = zarray.recv_array(receiver)
            assert B.nbytes == 16 * MiB
            del B
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 256 * 1024, peak


def test_ordinary_array_is_copied_once_into_the_pool(
    make_pair: Any, pool: zarray.SharedPool
) -> None:
    sender, receiver = make_pair.pair("tcp", "PAIR")
    A = np.random.default_rng(0).random((300, 400))
    tracker = zarray.send_array(sender, A, shm=pool)
    assert tracker is not None
    assert tracker.done  # A itself is not referenced: reuse at once
    A_before = A.copy()
    A[...] = 0
    frames = receiver.recv_multipart(copy=False)
    assert _kind(frames[0]) == (1, 0)
    B = zarray.deserialize(frames)
    assert np.array_equal(B, A_before)
    assert pool.leases == 1
    del B, frames
    assert _released(pool) == 0


def test_small_payloads_go_inline(make_pair: Any, pool: zarray.SharedPool) -> None:
    sender, receiver = make_pair.pair("ipc", "PAIR")
    small = pool.zeros(1000, np.float32)  # 4000 bytes, below the threshold
    zarray.send_array(sender, small, shm=pool)
    frames = receiver.recv_multipart(copy=False)
    assert _kind(frames[0]) == (0, 0)
    assert len(frames[1]) == 4000
    assert pool.leases == 0


@pytest.mark.parametrize(
    "layout",
    ["F", "reversed", "transposed", "broadcast", "sparse", "readonly", "record", "datetime"],
)
def test_layouts_through_the_pool(make_pair: Any, pool: zarray.SharedPool, layout: str) -> None:
    sender, receiver = make_pair.pair("ipc", "PAIR")
    base = pool.asarray(np.arange(200 * 300, dtype=np.float64).reshape(200, 300))
    A = {
        "F": lambda: pool.asarray(np.asfortranarray(base)),
        "reversed": lambda: base[::-1],
        "transposed": lambda: base.T,
        "broadcast": lambda: np.broadcast_to(base[0], (5000, 300)),
        "sparse": lambda: base[::3, ::2],
        "readonly": lambda: _readonly(base),
        "record": lambda: pool.zeros(20000, [("a", "<f8"), ("b", "u1", (3,))]),
        "datetime": lambda: pool.asarray(np.arange(20000).astype("M8[us]")),
    }[layout]()
    zarray.send_array(sender, A, shm=pool)
    B = zarray.recv_array(receiver)
    assert B.dtype == A.dtype
    assert B.shape == A.shape
    assert np.array_equal(
        B.view(np.uint8) if A.dtype.names else B, A.view(np.uint8) if A.dtype.names else A
    )
    assert not B.flags.writeable
    if layout in ("F", "reversed", "transposed", "broadcast"):
        assert B.strides == A.strides
    del B
    assert _released(pool) == 0


def _readonly(A: NDArray) -> NDArray:
    R = A.view()
    R.flags.writeable = False
    return R


def test_copy_true_gives_a_private_writeable_array(make_pair: Any, pool: zarray.SharedPool) -> None:
    sender, receiver = make_pair.pair("ipc", "PAIR")
    A = pool.asarray(np.arange(100000.0))
    tracker = zarray.send_array(sender, A, shm=pool)
    B = zarray.recv_array(receiver, copy=True)
    assert B.flags.writeable
    assert B.flags.owndata
    B[0] = 42
    assert A[0] == 0
    assert tracker is not None
    tracker.wait(10)  # the lease ends with the copy: nothing views the pool
    assert pool.leases == 0


def test_out_receives_a_copy(make_pair: Any, pool: zarray.SharedPool) -> None:
    sender, receiver = make_pair.pair("tcp", "PUSH-PULL")
    A = pool.asarray(np.arange(240000, dtype=np.int32).reshape(400, 600))
    out = np.empty((400, 600), np.int32)
    zarray.send_array(sender, A, shm=pool)
    assert zarray.recv_array(receiver, out=out) is out
    assert np.array_equal(out, A)
    assert _released(pool) == 0


def test_several_arrays_each_by_reference(make_pair: Any, pool: zarray.SharedPool) -> None:
    sender, receiver = make_pair.pair("ipc", "PUSH-PULL")
    image = pool.asarray(np.arange(640 * 480, dtype=np.uint16).reshape(480, 640))
    depth = np.ones((480, 640), np.float32)
    tiny = np.arange(4)
    arrays = {"image": image, "depth": depth, "tiny": tiny}
    tracker = zarray.send_arrays(sender, arrays, meta={"frame": 7}, shm=pool)
    frames = receiver.recv_multipart(copy=False)
    assert len(frames) == 7
    assert [_kind(frames[i])[0] for i in (1, 3, 5)] == [1, 1, 0]  # tiny goes inline
    del frames  # never opened: the leases stay unclaimed until they expire
    zarray.send_arrays(sender, arrays, meta={"frame": 8}, shm=pool)
    got, meta = zarray.recv_arrays(receiver)
    assert isinstance(got, dict)
    assert list(got) == ["image", "depth", "tiny"]
    assert meta == {"frame": 8}
    for name, A in arrays.items():
        assert np.array_equal(got[name], A)
    assert tracker is not None
    assert not tracker.done  # image's first lease is unclaimed
    del got
    assert _released(pool, want=2) == 2  # the first message's two unclaimed leases


def test_envelopes_and_router_dealer(make_pair: Any, pool: zarray.SharedPool) -> None:
    router = make_pair.socket(zmq.ROUTER)
    endpoint = make_pair.bind(router, "ipc")
    dealer = make_pair.socket(zmq.DEALER)
    dealer.connect(endpoint)
    A = pool.asarray(np.arange(50000.0))
    zarray.send_array(dealer, A, shm=pool)
    envelope, B = zarray.recv_array(router, envelope=True)
    assert len(envelope) == 1
    assert np.array_equal(A, B)
    reply = pool.asarray(B * 2)
    zarray.send_array(router, reply, envelope=envelope, shm=pool)
    C = zarray.recv_array(dealer)
    assert np.array_equal(C, A * 2)
    del B, C
    assert _released(pool) == 0


def test_req_rep(make_pair: Any, pool: zarray.SharedPool) -> None:
    req, rep = make_pair.pair("tcp", "REQ-REP") if "REQ-REP" in _kinds() else _req_rep(make_pair)
    A = pool.asarray(np.arange(70000.0))
    zarray.send_array(req, A, shm=pool)
    B = zarray.recv_array(rep)
    zarray.send_array(rep, pool.asarray(B + 1), shm=pool)
    C = zarray.recv_array(req)
    assert np.array_equal(C, A + 1)


def _kinds() -> dict[str, Any]:
    from common import KINDS

    return KINDS


def _req_rep(make_pair: Any) -> tuple[zmq.Socket[Any], zmq.Socket[Any]]:
    rep = make_pair.socket(zmq.REP)
    req = make_pair.socket(zmq.REQ)
    req.connect(make_pair.bind(rep, "tcp"))
    return req, rep


def test_pub_sends_inline(make_pair: Any, pool: zarray.SharedPool) -> None:
    """ZeroMQ does not say how many subscribers got a message: PUB goes inline."""
    pub = make_pair.socket(zmq.PUB)
    endpoint = make_pair.bind(pub, "ipc")
    sub = make_pair.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoint)
    A = pool.asarray(np.arange(50000.0))
    while not sub.poll(10):
        zarray.send_array(pub, A, shm=pool)
    frames = sub.recv_multipart(copy=False)
    assert _kind(frames[0]) == (0, 0)
    assert len(frames[1]) == A.nbytes
    assert pool.leases == 0


def test_inproc_sends_inline(make_pair: Any, pool: zarray.SharedPool) -> None:
    sender, receiver = make_pair.pair("inproc", "PAIR")
    A = pool.asarray(np.arange(50000.0))
    zarray.send_array(sender, A, shm=pool)
    B = zarray.recv_array(receiver)
    assert B.ctypes.data == A.ctypes.data  # inproc: the same memory, no copy, no lease
    assert pool.leases == 0


def test_socket_setting(
    zmq_context: zmq.Context[Any], make_pair: Any, pool: zarray.SharedPool
) -> None:
    sock = zarray.Socket(zmq_context, zmq.PUSH)
    try:
        sock.linger = 0
        receiver = make_pair.socket(zmq.PULL)
        sock.connect(make_pair.bind(receiver, "ipc"))
        assert sock.shm is None
        sock.shm = pool
        assert sock.shm is pool
        A = pool.asarray(np.arange(50000.0))
        sock.send_array(A)
        frames = receiver.recv_multipart(copy=False)
        assert _kind(frames[0]) == (1, 0)
        sock.send_arrays([A, A])
        frames = receiver.recv_multipart(copy=False)
        assert [_kind(frames[i])[0] for i in (1, 3)] == [1, 1]
        sock.send_array(A, format="json")  # the recipe cannot refer: inline
        frames = receiver.recv_multipart(copy=False)
        assert len(frames[1]) == A.nbytes
        with pytest.raises(ValueError, match="format='json'"):
            sock.send_array(A, format="json", shm=pool)
        sock.shm = None
        sock.send_array(A)
        assert _kind(receiver.recv_multipart(copy=False)[0]) == (0, 0)
    finally:
        sock.close(linger=0)


def test_asyncio_socket(make_pair: Any, pool: zarray.SharedPool) -> None:
    async def main() -> None:
        ctx = zarray.asyncio.Context()
        push, pull = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
        try:
            for s in (push, pull):
                s.linger = 0
            port = pull.bind_to_random_port("tcp://127.0.0.1")
            push.connect(f"tcp://127.0.0.1:{port}")
            push.shm = pool
            A = pool.asarray(np.arange(100000.0))
            tracker = await push.send_array(A)
            B = await pull.recv_array()
            assert np.array_equal(A, B)
            assert not B.flags.writeable
            await push.send_arrays({"a": A, "b": np.ones(30000)})
            got, _ = await pull.recv_arrays()
            assert np.array_equal(got["a"], A)
            del B, got
            gc.collect()
            assert tracker is not None
            await asyncio.to_thread(tracker.wait, 10)
        finally:
            push.close(linger=0)
            pull.close(linger=0)
            ctx.term()

    asyncio.run(main())


# -- back-pressure ------------------------------------------------------------------------


@pytest.fixture
def small_pool() -> Iterator[zarray.SharedPool]:
    p = zarray.SharedPool(4 * MiB, threshold=64 * 1024)
    try:
        yield p
    finally:
        p.close()


def test_full_pool_noblock_and_timeout(make_pair: Any, small_pool: zarray.SharedPool) -> None:
    sender, receiver = make_pair.pair("ipc", "PAIR")
    A = np.ones(MiB // 8)  # 1 MiB, copied into the pool each time
    held = []
    for _ in range(4):
        zarray.send_array(sender, A, shm=small_pool)
        held.append(zarray.recv_array(receiver))  # the receiver keeps every array
    assert small_pool.free == 0
    with pytest.raises(zmq.Again, match="no room"):
        zarray.send_array(sender, A, zmq.NOBLOCK, shm=small_pool)
    sender.sndtimeo = 200
    t0 = time.monotonic()
    with pytest.raises(zmq.Again):
        zarray.send_array(sender, A, shm=small_pool)
    assert time.monotonic() - t0 >= 0.2
    assert receiver.poll(100) == 0  # nothing was sent by the refused calls
    # A release from another thread unblocks a waiting send.
    sender.sndtimeo = 10_000
    threading.Timer(0.2, held.pop).start()
    zarray.send_array(sender, A, shm=small_pool)
    assert np.array_equal(zarray.recv_array(receiver), A)


def test_full_pool_inline_policy(make_pair: Any) -> None:
    pool = zarray.SharedPool(2 * MiB, when_full="inline")
    try:
        sender, receiver = make_pair.pair("ipc", "PAIR")
        A = np.ones(MiB // 8)
        zarray.send_array(sender, A, shm=pool)
        zarray.send_array(sender, A, shm=pool)
        first = receiver.recv_multipart(copy=False)
        second = receiver.recv_multipart(copy=False)
        zarray.send_array(sender, A, shm=pool)  # the pool is full: inline
        third = receiver.recv_multipart(copy=False)
        assert [_kind(f[0])[0] for f in (first, second, third)] == [1, 1, 0]
        held = [zarray.deserialize(first), zarray.deserialize(second)]
        assert all(np.array_equal(h, A) for h in held)
    finally:
        pool.close()


def test_full_pool_asyncio_waits_off_the_loop(small_pool: zarray.SharedPool) -> None:
    async def main() -> None:
        ctx = zarray.asyncio.Context()
        push, pull = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
        try:
            for s in (push, pull):
                s.linger = 0
            port = pull.bind_to_random_port("tcp://127.0.0.1")
            push.connect(f"tcp://127.0.0.1:{port}")
            A = np.ones(MiB // 8)
            held = []
            for _ in range(4):
                await push.send_array(A, shm=small_pool)
                held.append(await pull.recv_array())
            with pytest.raises(zmq.Again):
                await push.send_array(A, zmq.NOBLOCK, shm=small_pool)
            ticks = 0

            async def tick() -> None:
                nonlocal ticks
                for _ in range(5):
                    await asyncio.sleep(0.02)
                    ticks += 1
                held.pop()  # free one slot: the waiting send goes on

            ticker = asyncio.create_task(tick())
            await push.send_array(A, shm=small_pool)
            await ticker
            assert ticks == 5  # the loop kept running while the send waited for room
            assert np.array_equal(await pull.recv_array(), A)
        finally:
            push.close(linger=0)
            pull.close(linger=0)
            ctx.term()

    asyncio.run(main())


def test_unclaimed_lease_expires(make_pair: Any) -> None:
    pool = zarray.SharedPool(4 * MiB, lease_timeout=0.2)
    try:
        sender, receiver = make_pair.pair("ipc", "PAIR")
        A = pool.asarray(np.arange(100000.0))
        tracker = zarray.send_array(sender, A, shm=pool)
        assert tracker is not None
        tracker.wait(10)  # nobody claimed it within 0.2 s: reclaimed
        assert pool.leases == 0
        with pytest.raises(zarray.HeaderError, match="expired or unknown"):
            zarray.recv_array(receiver)
        zarray.send_array(sender, A, shm=pool)  # the socket is at a message boundary
        assert np.array_equal(zarray.recv_array(receiver), A)
    finally:
        pool.close()


def test_cancelled_send_gives_the_slot_back(make_pair: Any, pool: zarray.SharedPool) -> None:
    """zmq.Again at the high-water mark: nothing sent, the lease ends at once."""
    sender = make_pair.socket(zmq.PUSH)  # connected to nobody: the first send cannot go
    sender.setsockopt(zmq.IMMEDIATE, 1)
    sender.connect(f"ipc://{make_pair._ipc_dir()}/nobody")
    A = np.ones(MiB // 8)
    free = pool.free
    with pytest.raises(zmq.Again):
        zarray.send_array(sender, A, zmq.NOBLOCK, shm=pool)
    with pytest.raises(zmq.Again):
        zarray.send_arrays(sender, [A, A], zmq.NOBLOCK, shm=pool)
    gc.collect()
    assert pool.leases == 0
    assert pool.free == free


# -- bad references --------------------------------------------------------------------------


def _ref(
    pool_id: int, lease: int, offset: int, length: int, magic: bytes = _shm_channel.REF_MAGIC
) -> bytes:
    return struct.pack("<4sIQQQQ", magic, 0, pool_id, lease, offset, length)


def _header(nbytes: int) -> bytes:
    from zarray._codec import set_encoding

    return set_encoding(zarray.pack_header(np.zeros(nbytes, np.uint8)), 0, 0, 1)


def _refuse(sender: Any, receiver: Any, frames: list[bytes], pattern: str) -> None:
    sender.send_multipart(frames)
    with pytest.raises(zarray.HeaderError, match=pattern):
        zarray.recv_array(receiver)
    zarray.send_array(sender, np.arange(3))  # the socket is usable, at a boundary
    assert np.array_equal(zarray.recv_array(receiver), np.arange(3))


def test_forged_references(make_pair: Any, pool: zarray.SharedPool) -> None:
    sender, receiver = make_pair.pair("ipc", "PAIR")
    A = pool.asarray(np.arange(100000.0))
    zarray.send_array(sender, A, shm=pool)
    good = receiver.recv_multipart()  # a real reference, claimed below
    h, ref = good
    pid = pool.pool_id
    lease, offset, _ = struct.unpack_from("<QQQ", ref, 16)
    n = A.nbytes
    _refuse(sender, receiver, [h, ref[:39]], "reference frame is 39 bytes")
    _refuse(sender, receiver, [h, _ref(pid, lease, offset, n, b"\x93ZSX")], "bad magic")
    _refuse(sender, receiver, [h, ref[:4] + b"\1\0\0\0" + ref[8:]], "bytes 4..7")
    _refuse(sender, receiver, [_header(n - 8), ref], "covers 800000 bytes, but the header")
    _refuse(sender, receiver, [h, _ref(0x1234, lease, offset, n)], "not on this host")
    _refuse(sender, receiver, [h, _ref(pid, lease ^ 2, offset, n)], "expired or unknown")
    _refuse(sender, receiver, [h, _ref(pid, lease, pool.size - 8, n)], "of shared-memory pool")
    _refuse(sender, receiver, [h, _ref(pid, lease, 2**63, n)], "of shared-memory pool")
    # Inside the segment, but not what was leased: someone else's slot.
    other = pool.asarray(np.ones(100000))
    other_offset = other.ctypes.data - pool._base
    _refuse(sender, receiver, [h, _ref(pid, lease, other_offset, n)], "outside the region")
    B = zarray.deserialize(good)  # the genuine reference still works, once
    assert np.array_equal(A, B)
    _refuse(sender, receiver, good, "already claimed")
    del B
    assert _released(pool) == 0


class _FakeChannel:
    """A side channel that is not a zarray pool: it welcomes with a bad descriptor."""

    def __init__(self, fd: int, size: int, pool_id: int = 0x5EA1) -> None:
        self.pool_id = pool_id
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.bind(b"\0zarray-shm-%016x" % pool_id)
        self.sock.listen(4)
        self.fd, self.size = fd, size
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        socket.send_fds(
            conn, [b"ZSHw" + struct.pack("<IQQ", 1, self.pool_id, self.size)], [self.fd]
        )
        time.sleep(0.5)
        conn.close()

    def close(self) -> None:
        self.thread.join(5)
        self.sock.close()


@pytest.mark.parametrize("case", ["unsealed", "wrong-size", "not-a-file"])
def test_receiver_refuses_unsafe_segments(make_pair: Any, case: str) -> None:
    """A peer that could shrink its segment under our mapping would cause SIGBUS."""
    if case == "not-a-file":
        r, w = os.pipe()
        fd, size, close = r, 4096, [r, w]
    else:
        fd = os.memfd_create("zarray-test", os.MFD_ALLOW_SEALING)
        os.ftruncate(fd, 1 << 20)
        close = [fd]
        size = 1 << 20 if case == "unsealed" else 1 << 21
        if case == "wrong-size":
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, 0x7)
    fake = _FakeChannel(fd, size, pool_id=0x5EA1 + hash(case) % 1000)
    try:
        sender, receiver = make_pair.pair("ipc", "PAIR")
        frames = [_header(8192), _ref(fake.pool_id, 99, 0, 8192)]
        pattern = {
            "unsealed": "not sealed",
            "wrong-size": "regular file of",
            "not-a-file": "regular file",
        }
        _refuse(sender, receiver, frames, pattern[case])
    finally:
        fake.close()
        for f in close:
            os.close(f)


def test_closed_pool_refuses_new_references(make_pair: Any) -> None:
    pool = zarray.SharedPool(4 * MiB)
    sender, receiver = make_pair.pair("ipc", "PAIR")
    A = pool.asarray(np.arange(100000.0))
    zarray.send_array(sender, A, shm=pool)
    B = zarray.recv_array(receiver)
    zarray.send_array(sender, A, shm=pool)
    pool.close()
    assert np.array_equal(A, B)  # arrays already received stay valid
    with pytest.raises(zarray.HeaderError, match=r"closed|not on this host"):
        zarray.recv_array(receiver)
    with pytest.raises(ValueError, match="closed"):
        zarray.send_array(sender, A, shm=pool)


def test_other_systems_get_a_clear_error() -> None:
    """Elsewhere than Linux: zarray imports, SharedPool and shared-memory payloads say why.

    Run in a fresh interpreter that takes itself for macOS before zarray is imported
    (what it checks is ``sys.platform``; the system calls it avoids are Linux's own).
    """
    code = (
        "import sys; sys.platform = 'darwin'\n"
        "import numpy as np, zarray\n"
        "from zarray._codec import set_encoding\n"
        "try:\n"
        "    zarray.SharedPool(1 << 20)\n"
        "except OSError as exc:\n"
        "    assert 'needs Linux' in str(exc), exc\n"
        "else:\n"
        "    raise SystemExit('no OSError')\n"
        "h = set_encoding(zarray.pack_header(np.zeros(8, np.uint8)), 0, 0, 1)\n"
        "try:\n"
        "    zarray.deserialize([h, bytes(40)])\n"
        "except zarray.HeaderError as exc:\n"
        "    assert 'needs Linux' in str(exc), exc\n"
        "else:\n"
        "    raise SystemExit('no HeaderError')\n"
        "print('ok')\n"
    )
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_forked_child_never_releases_the_parents_claims(
    make_pair: Any, pool: zarray.SharedPool
) -> None:
    """A forked child inherits the parent's arrays (and a copy of its side-channel
    socket): dropping them there must not end the parent's lease, and the child may not
    send through the parent's pool."""
    import warnings

    sender, receiver = make_pair.pair("ipc", "PAIR")
    A = pool.asarray(np.arange(100000.0))
    zarray.send_array(sender, A, shm=pool)
    B = zarray.recv_array(receiver)
    assert _released(pool, want=1) == 1
    r, w = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads
        pid = os.fork()
    if pid == 0:  # the child: no pytest, no exceptions out of here
        code = 1
        try:
            global_ok = float(B[12345]) == 12345.0
            del B
            gc.collect()
            try:
                pool.asarray(np.ones(3))
            except RuntimeError:
                code = 0 if global_ok else 2
        finally:
            os.write(w, bytes([code]))
            os._exit(0)
    os.close(w)
    status = os.read(r, 1)
    os.close(r)
    os.waitpid(pid, 0)
    assert status == b"\x00"
    time.sleep(0.2)  # a release, had the child sent one, would have arrived by now
    gc.collect()
    assert pool.leases == 1  # the parent still holds its claim
    assert float(B[99999]) == 99999.0
    del B
    assert _released(pool) == 0
