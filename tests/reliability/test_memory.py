"""Memory: no leak over a long zero-copy soak, frames and trackers released, and a
hostile peer cannot make zarray allocate more than the bytes that actually arrived.

RSS is read from /proc/self/statm in a dedicated child process, after a warm-up and at
the end. Allocation bounds use tracemalloc, which sees numpy's data allocations.
"""

from __future__ import annotations

import gc
import struct
import sys
import tracemalloc
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zmq.utils.monitor import recv_monitor_message

import zarray

from ._support import HANG_GUARD, Control, bind_any, spawn, verify
from .conftest import Figures

Sockets = Callable[..., zmq.Socket[Any]]
KiB = 1024
MiB = 1024 * KiB

#: Allowed RSS growth between the end of the warm-up and the end of the soak. A leak of
#: one 80 KiB frame per cycle would be gigabytes; 200 bytes per cycle would exceed it.
RSS_TOLERANCE = 4 * MiB
#: Allowed growth of the number of objects tracked by the garbage collector.
OBJECTS_TOLERANCE = 100


@pytest.mark.parametrize(
    "cycles",
    [
        pytest.param(20_000, id="20k"),
        pytest.param(100_000, id="100k", marks=pytest.mark.slow),
    ],
)
@pytest.mark.parametrize("transport", ["inproc", "tcp"])
def test_soak_no_leak(transport: str, cycles: int, figures: Figures) -> None:
    """Zero-copy send/receive cycles (an 80 KiB zero-copy array and a small copied one
    per cycle, every 16th received with copy=True) in a fresh process: RSS and the
    number of live objects are flat after warm-up, and every received frame died with
    its array."""
    warmup = cycles // 10
    args = ["--cycles", cycles, "--warmup", warmup, "--transport", transport]
    with spawn("soak", *args) as child:
        r = child.result(timeout=600)
    growth = r["rss_end"] - r["rss_warm"]
    objects = r["objects_end"] - r["objects_warm"]
    assert r["frames_alive"] == 0, "received frames outlived their arrays"
    assert growth <= RSS_TOLERANCE, f"RSS grew by {growth} bytes over {cycles - warmup} cycles"
    assert objects <= OBJECTS_TOLERANCE, f"{objects} more live objects after the soak"
    figures.add("soak.cycles", cycles)
    figures.append(
        "soak.runs",
        {
            "transport": transport,
            "cycles": cycles,
            "warmup": warmup,
            "rss_warm_MiB": round(r["rss_warm"] / MiB, 1),
            "rss_growth_KiB": round(growth / KiB),
            "objects_growth": objects,
        },
    )


@pytest.fixture(params=["inproc", "tcp"])
def pair(request: pytest.FixtureRequest, make_socket: Sockets) -> tuple[Any, Any]:
    """A connected (sender, receiver) PAIR over inproc or tcp on 127.0.0.1."""
    tx = make_socket(zmq.PAIR)
    rx = make_socket(zmq.PAIR)
    if request.param == "inproc":
        rx.bind("inproc://memory")
        tx.connect("inproc://memory")
    else:
        rx.bind("tcp://127.0.0.1:*")
        tx.connect(rx.get(zmq.LAST_ENDPOINT).decode())
    return tx, rx


def _layouts() -> list[np.ndarray[Any, Any]]:
    """Arrays above the copy threshold, one per send path of zarray."""
    big = np.arange(40_000, dtype="<f8")
    return [
        big.copy(),  # contiguous
        np.asfortranarray(big.reshape(200, 200)),  # Fortran order
        big[::-1],  # a reversed view: sent as its memory span
        np.arange(20_000).astype("M8[ms]"),  # no buffer protocol: a raw byte view
        np.zeros(30_000, [("a", "<i4"), ("b", "<f8", (2,))]),  # structured
    ]


def test_frames_and_trackers_released(pair: tuple[Any, Any]) -> None:
    """Once the arrays are dropped: the received frames die (weakrefs), every tracker
    completes and dies, and pyzmq and zarray hold no reference to the sent arrays."""
    tx, rx = pair
    sent = _layouts()
    baseline = [sys.getrefcount(A) for A in sent]
    trackers = [zarray.send_array(tx, A) for A in sent]
    got = [zarray.recv_array(rx) for _ in sent]
    for A, B in zip(sent, got, strict=True):
        assert B.dtype == A.dtype
        assert B.shape == A.shape
        assert B.tobytes() == A.tobytes()
    frames = [weakref.ref(B.base) for B in got if B.base is not None]
    assert frames, "no received array views a frame"
    del got, A, B
    gc.collect()
    assert all(ref() is None for ref in frames), "a received frame outlived its array"
    tracker_refs = []
    for tracker in trackers:
        assert tracker is not None
        tracker.wait(HANG_GUARD)
        tracker_refs.append(weakref.ref(tracker))
    del trackers, tracker
    gc.collect()
    assert all(ref() is None for ref in tracker_refs), "a tracker is kept alive"
    assert [sys.getrefcount(A) for A in sent] == baseline, "a sent array is still referenced"
    refs = [weakref.ref(A.base if A.base is not None else A) for A in sent]
    del sent
    gc.collect()
    assert all(ref() is None for ref in refs), "a sent array's memory was kept alive"


def _raw_header(
    descr: bytes,
    itemsize: int,
    shape: tuple[int, ...],
    strides: tuple[int, ...],
    offset: int,
    nbytes: int,
) -> bytes:
    """A header built by hand (docs/FORMAT.md), so any field value can be sent."""
    fixed = struct.pack(
        "<4sBBBBBBHIQQQ",
        b"\x93ZAR",
        1,
        0,
        0,
        0,
        len(shape),
        0,
        len(descr),
        0,
        itemsize,
        offset,
        nbytes,
    )
    return fixed + struct.pack(f"<{2 * len(shape)}q", *shape, *strides) + descr


def _peak_during(fn: Callable[[], Any]) -> tuple[int, Any]:
    """Run ``fn`` under tracemalloc; return (peak bytes above the start, outcome)."""
    gc.collect()
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        try:
            outcome: Any = fn()
        except zarray.ZarrayError as exc:
            outcome = exc
        peak = tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()
    return peak, outcome


HOSTILE = [
    # A payload length of 1 TiB announced for 16 bytes that arrived.
    pytest.param(b"<f8", 8, (2**37,), (8,), 0, 2**40, 16, zarray.HeaderError, id="nbytes-1TiB"),
    # A shape of 2**40 elements over 16 bytes.
    pytest.param(b"<f8", 8, (2**40,), (8,), 0, 16, 16, zarray.HeaderError, id="shape-2**40"),
    # Byte count overflowing 64 bits.
    pytest.param(b"<f8", 8, (2**62, 4), (8, 8), 0, 16, 16, zarray.HeaderError, id="overflow"),
    # A valid broadcast of 2**56 elements over 8 bytes: a view, never materialised.
    pytest.param(b"<f8", 8, (2**28, 2**28), (0, 0), 0, 8, 8, None, id="broadcast-2**56"),
    # An itemsize of 1 GiB (void) claimed for 64 bytes.
    pytest.param(b"|V1073741824", 2**30, (1,), (2**30,), 0, 64, 64, zarray.HeaderError, id="V1GiB"),
]


@pytest.mark.parametrize("copy", [False, True], ids=["view", "copy"])
@pytest.mark.parametrize(
    ("descr", "itemsize", "shape", "strides", "offset", "nbytes", "arrived", "error"), HOSTILE
)
def test_hostile_header_cannot_force_allocation(
    descr: bytes,
    itemsize: int,
    shape: tuple[int, ...],
    strides: tuple[int, ...],
    offset: int,
    nbytes: int,
    arrived: int,
    error: type[Exception] | None,
    copy: bool,
    pair: tuple[Any, Any],
    figures: Figures,
) -> None:
    """Headers announcing huge sizes over a few bytes: HeaderError (or a view of the
    bytes that arrived), with no allocation beyond those bytes (tracemalloc)."""
    tx, rx = pair
    tx.send_multipart(
        [_raw_header(descr, itemsize, shape, strides, offset, nbytes), bytes(arrived)]
    )
    peak, outcome = _peak_during(lambda: zarray.recv_array(rx, copy=copy))
    if error is None:
        assert isinstance(outcome, np.ndarray)
        assert outcome.shape == shape
    else:
        assert isinstance(outcome, error), outcome
    assert peak < 64 * KiB, f"{peak} bytes allocated for {arrived} bytes that arrived"
    # The socket is at the next message boundary.
    zarray.send_array(tx, np.arange(3))
    assert zarray.recv_array(rx).tolist() == [0, 1, 2]
    figures.add("memory.hostile_headers_refused_or_bounded")


_DESCRS = [(b"<f8", 8), (b"|u1", 1), (b">i2", 2), (b"<c16", 16), (b"|V7", 7), (b"<M8[s]", 8)]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    dtype=st.sampled_from(_DESCRS),
    dims=st.lists(st.tuples(st.integers(0, 2**42), st.integers(-(2**40), 2**40)), max_size=4),
    offset=st.integers(0, 2**41),
    nbytes=st.one_of(st.integers(0, 4096), st.integers(0, 2**62)),
    arrived=st.integers(0, 4096),
    copy=st.booleans(),
)
def test_allocation_bounded_by_bytes_that_arrived(
    dtype: tuple[bytes, int],
    dims: list[tuple[int, int]],
    offset: int,
    nbytes: int,
    arrived: int,
    copy: bool,
    pair: tuple[Any, Any],
) -> None:
    """Any header over any payload: zarray allocates at most about twice the bytes that
    arrived (one aligned copy when the frame is misaligned or copy=True) plus a small
    constant, whatever sizes the header claims; the socket stays at a message boundary."""
    tx, rx = pair
    descr, itemsize = dtype
    shape = tuple(n for n, _ in dims)
    strides = tuple(s for _, s in dims)
    if nbytes <= 4096:
        arrived = nbytes  # often a matching payload, so valid headers get through too
    tx.send_multipart(
        [_raw_header(descr, itemsize, shape, strides, offset, nbytes), bytes(arrived)]
    )
    peak, outcome = _peak_during(lambda: zarray.recv_array(rx, copy=copy))
    assert isinstance(outcome, (np.ndarray, zarray.HeaderError)), outcome
    assert peak <= 2 * arrived + 64 * KiB, f"{peak} bytes allocated for {arrived} that arrived"
    zarray.send_array(tx, np.arange(3))
    assert zarray.recv_array(rx).tolist() == [0, 1, 2]


def test_maxmsgsize_drops_oversized_sender(
    make_socket: Sockets, ctx: zmq.Context[Any], shortdir: Path, figures: Figures
) -> None:
    """With zmq.MAXMSGSIZE = 1 MiB, a peer sending a 2 MiB array is disconnected by
    libzmq and nothing of its message is delivered; a peer on a fresh connection then
    gets its normal message through."""
    pull = make_socket(zmq.PULL, maxmsgsize=1 * MiB)
    monitor = pull.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    try:
        endpoint = bind_any(pull, "tcp", shortdir)
        ctrl = Control(ctx, shortdir)
        args = ["--endpoint", endpoint, "--ctrl", ctrl.endpoint, "--sender", 1]
        with spawn("send-one", *args, "--kind", "large") as big:
            assert monitor.poll(int(HANG_GUARD * 1000)), "libzmq kept the connection"
            assert recv_monitor_message(monitor)["event"] == zmq.EVENT_DISCONNECTED
            ctrl.expect("sent")
            ctrl.send(cmd="exit")
            big.result()
        assert pull.poll(0) == 0, "part of the oversized message was delivered"
        ctrl2 = Control(ctx, shortdir, "ctrl2")
        args2 = ["--endpoint", endpoint, "--ctrl", ctrl2.endpoint, "--sender", 2]
        with spawn("send-one", *args2, "--kind", "medium") as small:
            assert verify(zarray.recv_array(pull)) == (2, 0)
            ctrl2.expect("sent")
            ctrl2.send(cmd="exit")
            small.result()
    finally:
        pull.disable_monitor()
        monitor.close(linger=0)
    figures.add("faults.injected")
    figures.add("faults.survived")
    figures.add("faults.oversized_message_dropped")


def test_maxmsgsize_bounds_declared_frame_size(figures: Figures) -> None:
    """A peer declares an 8 GiB frame and sends 1,000 bytes of it. With MAXMSGSIZE set,
    libzmq drops it at once and this process's virtual size barely moves. Without it,
    libzmq reserves the declared size up front (reported as a figure: the reason to set
    MAXMSGSIZE on any socket that faces untrusted peers)."""
    declare = 8 * 1024 * MiB
    with spawn("reserve", "--declare", declare, "--maxmsgsize", 1 * MiB) as child:
        capped = child.result()
    assert capped["disconnected"], "libzmq did not drop the peer"
    assert not capped["delivered"]
    assert capped["vm_growth"] < 256 * MiB, capped
    with spawn("reserve", "--declare", declare) as child:
        uncapped = child.result()
    assert not uncapped["delivered"]
    figures.put("memory.declared_8GiB_vm_growth_MiB_with_maxmsgsize", capped["vm_growth"] // MiB)
    figures.put(
        "memory.declared_8GiB_vm_growth_MiB_without_maxmsgsize", uncapped["vm_growth"] // MiB
    )
