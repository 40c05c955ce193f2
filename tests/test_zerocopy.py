"""Zero-copy proven, not assumed (issue 2): over inproc the received array is the
sender's own memory and the tracker stays not-done while it lives; over tcp,
recv_array allocates no payload-sized buffer (tracemalloc, numpy's domain) and
copy=True allocates exactly one. Also alignment, the read-only bit and the tracker's
meaning. Nothing here waits on time: trackers are waited on with a hang guard only."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import zmq
from common import (
    GUARD_S,
    SocketMaker,
    address,
    build_header,
    check_received,
    check_roundtrip,
    data_bytes,
    make_array,
)

import zarray

Pair = tuple[zmq.Socket[Any], zmq.Socket[Any]]
MiB = 2**20
NUMPY_DOMAIN = getattr(np.lib, "tracemalloc_domain", 389047)


def _release(tracker: zmq.MessageTracker | None) -> None:
    """Wait (with a hang guard only) until libzmq has let go of the payload."""
    assert tracker is not None
    gc.collect()
    tracker.wait(GUARD_S)  # raises zmq.NotDone if libzmq still holds the frame
    assert tracker.done


ZERO_COPY_LAYOUTS: dict[str, Callable[[], np.ndarray[Any, Any]]] = {
    "C": lambda: make_array("<f8", (MiB // 8,)),
    "F": lambda: np.asfortranarray(make_array("<c16", (256, 512))),
    "F-big-endian": lambda: np.asfortranarray(make_array(">i4", (512, 512))),
    "broadcast": lambda: np.broadcast_to(make_array("<f8", (MiB // 8,)), (100, MiB // 8)),
    "reversed": lambda: make_array("<u2", (MiB,))[::-1],
    "transposed": lambda: make_array("<f4", (64, 64, 64)).transpose(2, 0, 1),
    "datetime": lambda: make_array("<M8[ns]", (MiB // 8,)),
    "record": lambda: make_array([("a", "<f8"), ("b", "<i4", (2,))], (MiB // 16,)),
}


@pytest.mark.parametrize("layout", list(ZERO_COPY_LAYOUTS))
def test_inproc_receives_the_senders_memory(inproc_pair: Pair, layout: str) -> None:
    sender, receiver = inproc_pair
    A = ZERO_COPY_LAYOUTS[layout]()
    assert A.nbytes >= MiB
    tracker = zarray.send_array(sender, A)
    assert tracker is not None
    B = zarray.recv_array(receiver)
    check_received(A, B)
    assert address(B) == address(A), "the received array is not the sender's memory"
    assert not tracker.done, "the tracker is done while the receiver still views the frame"
    gc.collect()
    assert not tracker.done
    del B
    _release(tracker)


def test_inproc_aliasing_is_visible(inproc_pair: Pair) -> None:
    """The documented aliasing: over inproc, writes on either side are seen by the other."""
    sender, receiver = inproc_pair
    A = np.zeros(MiB // 8)
    tracker = zarray.send_array(sender, A)
    B = zarray.recv_array(receiver)
    A[7] = 42.0
    assert B[7] == 42.0
    B[8] = -1.0
    assert A[8] == -1.0
    assert tracker is not None
    assert not tracker.done
    del B
    _release(tracker)


def test_tracker_waits_for_every_view(inproc_pair: Pair) -> None:
    """A view of the received array keeps the frame (and so the tracker) alive too."""
    sender, receiver = inproc_pair
    A = np.arange(MiB // 8, dtype=np.float64)
    tracker = zarray.send_array(sender, A)
    B = zarray.recv_array(receiver)
    view = B[10:20]
    del B
    gc.collect()
    assert tracker is not None
    assert not tracker.done
    assert view[0] == 10.0
    del view
    _release(tracker)


@pytest.mark.parametrize("layout", ["C", "broadcast", "record"])
def test_copy_true_releases_the_frame_at_once(inproc_pair: Pair, layout: str) -> None:
    sender, receiver = inproc_pair
    A = ZERO_COPY_LAYOUTS[layout]()
    tracker = zarray.send_array(sender, A)
    B = zarray.recv_array(receiver, copy=True)
    check_received(A, B, copy=True)
    assert address(B) != address(A)
    _release(tracker)  # while B is alive: B does not hold the frame
    assert data_bytes(B) == data_bytes(A)


# -- tcp: no payload-sized allocation --------------------------------------------------


def _traced_recv(receiver: zmq.Socket[Any], copy: bool) -> tuple[Any, int, list[int]]:
    """recv_array under tracemalloc: (array, peak growth of all traced memory during
    the call, sizes of numpy's live allocations made by it)."""
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        B = zarray.recv_array(receiver, copy=copy)
        _, peak = tracemalloc.get_traced_memory()
        snapshot = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    numpy_only = snapshot.filter_traces([tracemalloc.DomainFilter(True, NUMPY_DOMAIN)])
    sizes = [trace.size for trace in numpy_only.traces]
    return B, peak - before, sizes


SIZE = 64 * MiB


def test_tcp_recv_allocates_no_payload_buffer(make_pair: SocketMaker) -> None:
    sender, receiver = make_pair.pair("tcp")
    A = np.arange(SIZE // 8, dtype=np.float64)
    tracker = zarray.send_array(sender, A)
    B, peak, numpy_sizes = _traced_recv(receiver, copy=False)
    assert peak < MiB, f"recv_array allocated {peak} bytes at its peak"
    assert sum(numpy_sizes) < MiB, f"numpy holds {sum(numpy_sizes)} bytes made by recv_array"
    assert B.shape == A.shape
    assert B.dtype == A.dtype
    assert B.flags.aligned
    assert B.flags.writeable
    assert np.array_equal(B, A)
    _release(tracker)  # sent: libzmq is done with A


def test_tcp_recv_copy_allocates_exactly_once(make_pair: SocketMaker) -> None:
    sender, receiver = make_pair.pair("tcp")
    A = np.arange(SIZE // 8, dtype=np.float64)
    zarray.send_array(sender, A)
    B, peak, numpy_sizes = _traced_recv(receiver, copy=True)
    assert SIZE <= peak < 2 * SIZE, f"peak {peak / MiB:.1f} MiB: expected one 64 MiB copy"
    assert [s for s in numpy_sizes if s >= SIZE] == [pytest.approx(SIZE, abs=4096)]
    assert sum(numpy_sizes) < SIZE + MiB
    assert np.array_equal(B, A)
    check_received(A, B, copy=True)


# -- alignment ---------------------------------------------------------------------------

ALIGN_DTYPES = ["<f8", ">f8", "<c16", "<f16", "<c32", "<M8[us]", "<i4"]


@pytest.mark.parametrize("size", [1, 3, 100, 20_000])
@pytest.mark.parametrize("dtype", ALIGN_DTYPES)
def test_received_arrays_are_aligned(pair: Pair, dtype: str, size: int) -> None:
    """Small frames (copied by libzmq, at odd addresses) and large ones alike."""
    sender, receiver = pair
    for copy in (False, True):
        A = make_array(dtype, (size,))
        B = check_roundtrip(A, sender, receiver, copy=copy)
        assert B.flags.aligned
        assert address(B) % np.dtype(dtype).alignment == 0


@pytest.mark.parametrize("transport", ["inproc", "tcp"])
@pytest.mark.parametrize("dtype", ["<f8", "<c16", "<f16"])
def test_misaligned_sender_gives_aligned_result(
    make_pair: SocketMaker, transport: str, dtype: str
) -> None:
    """A contiguous array at an odd address: over inproc the frame is that very
    memory, so the receiver must make an aligned copy."""
    sender, receiver = make_pair.pair(transport)
    dt = np.dtype(dtype)
    n = MiB // dt.itemsize
    raw = np.zeros(n * dt.itemsize + 1, np.uint8)
    A = raw[1:].view(dt)
    A[...] = np.arange(n)
    assert not A.flags.aligned
    zarray.send_array(sender, A)
    B = zarray.recv_array(receiver)
    assert B.flags.aligned
    assert np.array_equal(B, np.arange(n))
    assert B.strides == A.strides


@pytest.mark.parametrize("copy", [False, True])
@pytest.mark.parametrize("n", [10, 40_000])
@pytest.mark.parametrize("dtype", ["<f8", "<c16", "<f16"])
def test_packed_record_field_arrives_aligned(
    inproc_pair: Pair, dtype: str, n: int, copy: bool
) -> None:
    """A field of a packed record is a view with a stride that is not a multiple of
    the field's alignment (here itemsize + 1). It is sent as its memory span; the
    receiver must still return an aligned array with the same values."""
    sender, receiver = inproc_pair
    rec = np.zeros(n, [("pad", "u1"), ("x", dtype)])
    rec["x"] = np.arange(n)
    A = rec["x"]
    assert not A.flags.aligned
    zarray.send_array(sender, A)
    B = zarray.recv_array(receiver, copy=copy)
    assert np.array_equal(B, np.arange(n))
    assert B.flags.aligned, f"received {B.dtype} array with strides {B.strides} is misaligned"


@pytest.mark.parametrize("copy", [False, True])
def test_odd_offset_in_header_gives_aligned_result(inproc_pair: Pair, copy: bool) -> None:
    """A valid header may put element 0 at any offset; the result is aligned anyway."""
    sender, receiver = inproc_pair
    n = 50_000
    payload = np.zeros(8 * n + 1, np.uint8)
    np.ndarray((n,), "<f8", payload, 1)[...] = np.arange(n)
    sender.send_multipart([build_header(b"<f8", (n,), (8,), 8, 8 * n + 1, offset=1), payload.data])
    B = zarray.recv_array(receiver, copy=copy)
    assert np.array_equal(B, np.arange(n))
    assert B.flags.aligned, f"received float64 array at address {address(B)} is misaligned"


# -- read-only bit -------------------------------------------------------------------------


@pytest.mark.parametrize("size", [4, MiB // 8])
def test_read_only_bit_is_carried(pair: Pair, size: int) -> None:
    sender, receiver = pair
    A = np.arange(size, dtype=np.float64)
    A.flags.writeable = False
    B = check_roundtrip(A, sender, receiver)
    assert not B.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        B[0] = 1.0
    W = np.arange(size, dtype=np.float64)
    B = check_roundtrip(W, sender, receiver)
    assert B.flags.writeable
    B[0] = 5.0
    assert B[0] == 5.0
    C = check_roundtrip(A, sender, receiver, copy=True)
    assert not C.flags.writeable


def test_read_only_cannot_be_made_writeable_over_inproc(inproc_pair: Pair) -> None:
    """A read-only sender's memory must not become writable through the receiver."""
    sender, receiver = inproc_pair
    A = np.arange(MiB // 8, dtype=np.float64)
    A.flags.writeable = False
    zarray.send_array(sender, A)
    B = zarray.recv_array(receiver)
    assert address(B) == address(A)
    assert not B.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        B[0] = -1.0
    assert A[0] == 0.0


# -- tracker semantics --------------------------------------------------------------------


def test_track_false_returns_none(pair: Pair) -> None:
    sender, receiver = pair
    for A in [np.zeros(4), np.zeros(MiB // 8)]:
        assert zarray.send_array(sender, A, track=False) is None
        np.testing.assert_array_equal(zarray.recv_array(receiver), A)


def test_copy_true_returns_a_done_tracker(pair: Pair) -> None:
    sender, receiver = pair
    A = np.zeros(MiB // 8)
    tracker = zarray.send_array(sender, A, copy=True)
    assert isinstance(tracker, zmq.MessageTracker)
    assert tracker.done
    A[0] = 1.0  # allowed at once: the payload was copied
    B = zarray.recv_array(receiver)
    assert B[0] == 0.0


def test_small_payload_returns_a_done_tracker(pair: Pair) -> None:
    sender, receiver = pair
    for nbytes in [0, 8, 1024, zmq.COPY_THRESHOLD - 8]:
        A = np.zeros(nbytes // 8)
        tracker = zarray.send_array(sender, A)
        assert isinstance(tracker, zmq.MessageTracker)
        assert tracker.done, f"{nbytes}-byte payload: pyzmq copied it, the tracker must be done"
        check_received(A, zarray.recv_array(receiver))


def test_large_payload_tracker_completes(pair: Pair) -> None:
    sender, receiver = pair
    A = np.zeros(MiB // 8)
    tracker = zarray.send_array(sender, A)
    assert isinstance(tracker, zmq.MessageTracker)
    B = zarray.recv_array(receiver, copy=True)
    _release(tracker)
    check_received(A, B, copy=True)


def test_compacted_sparse_view_returns_a_done_tracker(inproc_pair: Pair) -> None:
    """A sparse view is copied into a compact array before sending, so A may be
    modified at once; send_array's docstring says the tracker is then already done."""
    sender, receiver = inproc_pair
    base = np.arange(4 * MiB // 8, dtype=np.float64)
    A = base[::4]
    tracker = zarray.send_array(sender, A)
    assert isinstance(tracker, zmq.MessageTracker)
    assert tracker.done, "payload was a private compact copy, yet the tracker is not done"
    B = zarray.recv_array(receiver)
    assert address(B) != address(A)
    base[0] = -1.0
    assert B[0] == 0.0
    del B
    _release(tracker)
