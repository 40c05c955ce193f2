"""zarray.asyncio: coroutine array methods over zmq.asyncio, on real sockets."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq
import zmq.asyncio
from _api3_fixtures import GUARD_MS, TRANSPORTS, endpoint, ipc_dir

import zarray
import zarray.asyncio

BIG = 1 << 17  # above the copy threshold: zero-copy


@contextmanager
def _where(tmp_path: Path) -> Iterator[Path]:
    with ipc_dir(tmp_path) as d:
        yield d


@asynccontextmanager
async def pair(
    where: Path,
    transport: str = "inproc",
    kinds: tuple[int, int] = (zmq.PUSH, zmq.PULL),
    hwm: int | None = None,
) -> AsyncIterator[tuple[zarray.asyncio.Socket, zarray.asyncio.Socket]]:
    ctx = zarray.asyncio.Context()
    made: list[zarray.asyncio.Socket] = []
    try:
        for kind in kinds:
            s = ctx.socket(kind)
            s.linger = 0
            s.rcvtimeo = GUARD_MS  # hang guards: pyzmq turns them into zmq.Again
            s.sndtimeo = GUARD_MS
            if hwm is not None:
                s.sndhwm = hwm
                s.rcvhwm = hwm
            made.append(s)
        a, b = made
        a.bind(endpoint(transport, where))
        b.connect(a.last_endpoint.decode())
        yield a, b
    finally:
        for s in made:
            s.close(linger=0)
        ctx.term()


def test_classes() -> None:
    ctx = zarray.asyncio.Context()
    try:
        sock = ctx.socket(zmq.PUSH)
        assert isinstance(sock, zarray.asyncio.Socket)
        assert isinstance(sock, zmq.asyncio.Socket)
        assert isinstance(ctx, zmq.asyncio.Context)
        sock.close()
    finally:
        ctx.term()


@pytest.mark.asyncio
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_round_trip(tmp_path: Path, transport: str) -> None:
    with _where(tmp_path) as where:
        async with pair(where, transport) as (push, pull):
            A = np.asfortranarray(np.arange(60, dtype=">i4").reshape(6, 10))
            tracker = await push.send_array(A)
            assert isinstance(tracker, zmq.MessageTracker)
            B = await pull.recv_array()
            np.testing.assert_array_equal(A, B)
            assert B.dtype.str == ">i4"
            assert B.strides == A.strides
            assert B.flags.aligned
            meta = {"frame": 3}
            await push.send_arrays({"a": A, "b": np.arange(BIG, dtype=np.uint8)}, meta=meta)
            arrays, got = await pull.recv_arrays()
            assert got == meta
            assert isinstance(arrays, dict)
            assert list(arrays) == ["a", "b"]
            np.testing.assert_array_equal(arrays["b"], np.arange(BIG, dtype=np.uint8))
            ro = np.arange(5.0)
            ro.flags.writeable = False
            await push.send_array(ro, format="json")
            await push.send_array(ro)
            np.testing.assert_array_equal(await pull.recv_array(), ro)  # JSON recipe
            assert not (await pull.recv_array()).flags.writeable  # read-only bit kept


@pytest.mark.asyncio
async def test_zero_copy_and_the_tracker(tmp_path: Path) -> None:
    async with pair(tmp_path) as (push, pull):
        A = np.ones(BIG, np.uint8)
        B = np.ones(BIG, np.uint8)
        tracker = await push.send_arrays([A, B])
        assert tracker is not None
        (ra, rb), _ = await pull.recv_arrays()
        # Over inproc the received arrays are the sender's memory...
        assert ra.__array_interface__["data"][0] == A.__array_interface__["data"][0]
        # ...so the one tracker is not done while the receiver holds either of them.
        del rb
        gc.collect()
        assert not tracker.done
        del ra
        await asyncio.to_thread(tracker.wait, 10)
        assert tracker.done
        assert await push.send_array(A, track=False) is None
        tracker = await push.send_array(A, copy=True)
        assert tracker is not None
        assert tracker.done
        await pull.recv_array()
        await pull.recv_array()


def _stamped(k: int) -> np.ndarray[Any, Any]:
    return np.full(BIG // 8, k, dtype=np.int64)


@pytest.mark.asyncio
async def test_queued_send_keeps_the_array_alive(tmp_path: Path) -> None:
    async with pair(tmp_path, hwm=1) as (push, pull):
        refs = []
        trackers = []
        for k in range(2):
            A = _stamped(k)
            refs.append(weakref.ref(A))
            trackers.append(await push.send_array(A))  # returns once queued in libzmq
            del A
        gc.collect()
        # The caller holds no reference; the queued messages do.
        assert all(r() is not None for r in refs)
        assert not any(t.done for t in trackers if t is not None)
        for k in range(2):
            got = await pull.recv_array()
            assert (got == k).all()  # the memory was not freed nor reused under the message
            del got
        for t in trackers:
            assert t is not None
            await asyncio.to_thread(t.wait, 10)


@pytest.mark.asyncio
async def test_pending_sends_and_concurrent_senders(tmp_path: Path) -> None:
    """Many senders on one loop, a high-water mark that makes most sends wait, and the
    arrays dropped by their senders while waiting: every message arrives whole."""
    senders, per_sender = 20, 10
    async with pair(tmp_path, hwm=2) as (push, pull):

        async def sender(s: int) -> None:
            for i in range(per_sender):
                k = s * per_sender + i
                # No reference is kept here: only the pending send holds the arrays.
                await push.send_arrays(
                    {"stamp": _stamped(k), "small": np.array([k, -k])}, meta={"k": k}
                )

        async def receiver() -> list[int]:
            seen = []
            for _ in range(senders * per_sender):
                arrays, meta = await pull.recv_arrays()
                assert isinstance(arrays, dict)
                k = meta["k"]
                assert (arrays["stamp"] == k).all()
                assert arrays["small"].tolist() == [k, -k]
                seen.append(k)
                if len(seen) % 50 == 0:
                    gc.collect()  # frees dropped frames: freed memory must not be reused
            return seen

        recv_task = asyncio.create_task(receiver())
        await asyncio.gather(*(sender(s) for s in range(senders)))
        seen = await recv_task
    assert sorted(seen) == list(range(senders * per_sender))
    # Each sender's own messages keep their order.
    for s in range(senders):
        mine = [k for k in seen if k // per_sender == s]
        assert mine == sorted(mine)


@pytest.mark.asyncio
async def test_router_dealer_envelopes(tmp_path: Path) -> None:
    async with pair(tmp_path, kinds=(zmq.ROUTER, zmq.DEALER)) as (router, dealer):
        await dealer.send_array(np.arange(3))
        env, A = await router.recv_array(envelope=True)
        assert len(env) == 1
        await router.send_arrays([A * 2], meta={"ok": 1}, envelope=env)
        env2, (arrays, meta) = await dealer.recv_arrays(envelope=True)
        assert env2 == []
        assert meta == {"ok": 1}
        np.testing.assert_array_equal(arrays[0], np.arange(3) * 2)


@pytest.mark.asyncio
async def test_out_and_errors(tmp_path: Path) -> None:
    async with pair(tmp_path) as (push, pull):
        out = np.empty((4, 5), np.float32)
        A = np.arange(20, dtype=np.float32).reshape(4, 5)
        await push.send_array(A.T.copy().T)  # Fortran layout: copied into C-order out
        assert await pull.recv_array(out=out) is out
        np.testing.assert_array_equal(out, A)
        await push.send_array(np.zeros((5, 4), np.float32))
        await push.send_array(A)
        with pytest.raises(zarray.HeaderError, match="shape"):
            await pull.recv_array(out=out)
        np.testing.assert_array_equal(await pull.recv_array(), A)  # next message intact
        await push.send_arrays([A, A])
        with pytest.raises(zarray.HeaderError, match="recv_arrays"):
            await pull.recv_array()
        with pytest.raises(zarray.UnsupportedArrayError):
            await push.send_arrays([A], meta={"bad": object()})
        await push.send_array(A)
        np.testing.assert_array_equal(await pull.recv_array(), A)  # nothing was half sent


@pytest.mark.asyncio
async def test_again(tmp_path: Path) -> None:
    async with pair(tmp_path) as (push, pull):
        with pytest.raises(zmq.Again):
            await pull.recv_array(zmq.NOBLOCK)
        pull.rcvtimeo = 1
        with pytest.raises(zmq.Again):
            await pull.recv_arrays()
        await push.send_array(np.arange(3))
        pull.rcvtimeo = GUARD_MS
        np.testing.assert_array_equal(await pull.recv_array(), np.arange(3))
    ctx = zarray.asyncio.Context()
    try:
        lonely = ctx.socket(zmq.PUSH)  # no peer: a send cannot be queued
        lonely.linger = 0
        with pytest.raises(zmq.Again):
            await lonely.send_array(np.arange(3), zmq.NOBLOCK)
        lonely.sndtimeo = 1
        with pytest.raises(zmq.Again):
            await lonely.send_arrays([np.arange(3)])
        lonely.close()
    finally:
        ctx.term()


def test_blocking_functions_refuse_asyncio_sockets() -> None:
    """A zmq.asyncio socket given to the blocking functions is a TypeError that points
    to zarray.asyncio, raised before anything is sent or received (its send would
    return a Future, and recv_array would fail on the Future's missing attributes)."""
    import zmq.asyncio

    async def main() -> None:
        ctx = zmq.asyncio.Context()
        a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
        try:
            a.bind("inproc://zarray-refuse-asyncio")
            b.connect("inproc://zarray-refuse-asyncio")
            A = np.arange(10.0)
            for call in (
                lambda: zarray.send_array(a, A),
                lambda: zarray.send_array(a, A, envelope=[b"t"]),
                lambda: zarray.send_arrays(a, [A]),
            ):
                with pytest.raises(TypeError, match=r"zarray\.asyncio"):
                    call()
            assert await b.poll(50) == 0  # nothing went out
            await a.send_multipart([zarray.pack_header(A), A])
            for call in (
                lambda: zarray.recv_array(b),
                lambda: zarray.recv_array(b, out=np.empty(10)),
                lambda: zarray.recv_arrays(b),
            ):
                with pytest.raises(TypeError, match=r"zarray\.asyncio"):
                    call()
            # Nothing was consumed: the message is still there for an asyncio receive.
            B = zarray.deserialize(await b.recv_multipart(copy=False))
            assert np.array_equal(A, B)
        finally:
            a.close(linger=0)
            b.close(linger=0)
            ctx.term()

    asyncio.run(main())
