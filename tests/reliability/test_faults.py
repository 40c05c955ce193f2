"""Faults: peers killed mid-stream, half messages, closed sockets, mutated buffers.

Each test injects a fault into real processes over real sockets and checks what
zarray promises afterwards: the consumer keeps working, no half message is ever
returned, trackers tell the truth, and arrays that were handed out stay valid.
Timeouts are hang guards only.
"""

from __future__ import annotations

import gc
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

import zarray

from ._support import (
    HANG_GUARD,
    Control,
    CorruptMessage,
    bind_any,
    make_array,
    raw_bytes,
    spawn,
    tcp_port,
    verify,
)
from .conftest import Figures

Sockets = Callable[..., zmq.Socket[Any]]


def _fault(figures: Figures, name: str, count: int = 1) -> None:
    """Record faults that were injected and survived (called after the assertions)."""
    figures.add("faults.injected", count)
    figures.add("faults.survived", count)
    figures.add(f"faults.{name}", count)


@pytest.mark.parametrize("transport", ["ipc", "tcp"])
def test_producer_sigkill_mid_stream(
    transport: str, make_socket: Sockets, shortdir: Path, figures: Figures
) -> None:
    """SIGKILL producers while they stream small and 2 MiB arrays; restart them.

    Whatever the consumer receives from a killed producer is a gapless, intact prefix
    of what it sent (libzmq delivers whole messages or nothing); a restarted producer's
    messages all arrive, intact and in order; recv_array never raises.
    """
    rounds = 3
    per_round = 150
    pull = make_socket(zmq.PULL)
    endpoint = bind_any(pull, transport, shortdir)
    next_seq: dict[int, int] = {}
    received = 0

    def take() -> int:
        nonlocal received
        sender, seq = verify(zarray.recv_array(pull))
        expected = next_seq.get(sender, 0)
        assert seq == expected, f"sender {sender}: got seq {seq}, expected {expected}"
        next_seq[sender] = seq + 1
        received += 1
        return sender

    for r in range(1, rounds + 1):
        args = ["--endpoint", endpoint, "--sender", r, "--forever", "--kind", "mixed"]
        with spawn("push", *args) as child:
            while next_seq.get(r, 0) < per_round:
                take()
            child.kill()  # SIGKILL: no linger, no flush, mid-stream
            assert child.proc.returncode == -9
    # A fresh producer after the kills: all of its messages arrive, whole.
    final, count, large = rounds + 1, 300, 5
    args = ["--endpoint", endpoint, "--sender", final, "--count", count, "--large", large]
    with spawn("push", *args) as child:
        while next_seq.get(final, 0) < count + large:
            take()
        assert child.result()["sent"] == count + large
    for r in range(1, rounds + 1):
        assert next_seq[r] >= per_round
    _fault(figures, "producer_sigkill", rounds)
    figures.add("faults.messages_verified", received)


@pytest.mark.parametrize("mode", ["header-only", "cut-payload", "huge-size"])
def test_half_message_from_killed_peer_is_never_returned(
    mode: str, make_socket: Sockets, ctx: zmq.Context[Any], shortdir: Path, figures: Figures
) -> None:
    """A peer that speaks ZMTP by hand sends one whole message, then a header frame
    flagged MORE and then
    (a) nothing, (b) a payload frame cut short, or (c) a payload frame that declares
    1 TiB, and is SIGKILLed. The consumer's next recv_array returns the next whole
    message from a healthy producer, never the half one.
    """
    pull = make_socket(zmq.PULL)
    endpoint = bind_any(pull, "tcp", shortdir)
    ctrl = Control(ctx, shortdir)
    with spawn(
        "raw-half", "--port", tcp_port(endpoint), "--ctrl", ctrl.endpoint, "--mode", mode
    ) as bad:
        ctrl.expect("sent")
        assert verify(zarray.recv_array(pull)) == (7, 0)  # its one whole message
        bad.kill()
    with spawn("push", "--endpoint", endpoint, "--sender", 2, "--count", 3) as good:
        for expected in range(3):
            assert verify(zarray.recv_array(pull)) == (2, expected)
        good.result()
    assert pull.poll(0) == 0
    _fault(figures, "half_message")


def test_consumer_sigkill_with_zero_copy_sends_in_flight(
    ctx: zmq.Context[Any], shortdir: Path, figures: Figures
) -> None:
    """Zero-copy 2 MiB sends to a consumer that stops reading and is then SIGKILLed.

    Trackers are not done while libzmq still holds the frame (the consumer is stalled,
    the queues are full); the producer's arrays stay intact throughout; closing the
    socket with linger=0 returns (a hang guard watches it) and releases every frame,
    so every tracker completes.
    """
    ctrl = Control(ctx, shortdir)
    args = ["--endpoint", "tcp://127.0.0.1:*", "--ctrl", ctrl.endpoint, "--hwm", 1]
    args += ["--rcvbuf", 64 * 1024, "--stall-after", 2]
    push = ctx.socket(zmq.PUSH)
    push.sndhwm = 2
    push.setsockopt(zmq.SNDBUF, 64 * 1024)
    sent: list[np.ndarray[Any, Any]] = []
    trackers: list[zmq.MessageTracker] = []

    def offer() -> bool:
        A = make_array(len(sent), 1, "large")
        try:
            tracker = zarray.send_array(push, A, flags=zmq.NOBLOCK)
        except zmq.Again:
            return False
        assert tracker is not None
        sent.append(A)
        trackers.append(tracker)
        return True

    with spawn("pull", *args) as consumer:
        push.connect(ctrl.expect("bound")["endpoint"])
        while offer():
            if len(sent) > 200:
                pytest.fail("the queues never filled: zmq.Again never came")
        ctrl.expect("stalled")
        # The first Again only says the sender's own queue was full at that moment:
        # the consumer's libzmq and both kernels may still have been taking messages.
        # Top the pipeline up until it has refused every offer for half a second;
        # the consumer reads nothing more, so from then on nothing can move.
        refused = 0
        while refused < 10:
            if offer():
                refused = 0
            else:
                refused += 1
                time.sleep(0.05)
            if len(sent) > 400:
                pytest.fail("the stalled consumer kept taking messages")
        # libzmq holds the last frames (queued or being written): not done.
        assert not trackers[-1].done
        consumer.kill()
    for A in sent:  # libzmq never writes into a frame it sends
        verify(A)
    closer = threading.Thread(target=push.close, kwargs={"linger": 0})
    closer.start()
    closer.join(HANG_GUARD)
    assert not closer.is_alive(), "close(linger=0) hung"
    for tracker in trackers:
        tracker.wait(HANG_GUARD)  # raises zmq.NotDone if a frame was never released
    for A in sent:
        verify(A)
        A[...] = 0  # the producer owns its arrays again
    _fault(figures, "consumer_sigkill")
    figures.add("faults.zero_copy_sends_in_flight", len(sent))


@pytest.mark.parametrize("transport", ["inproc", "ipc", "tcp"])
def test_received_arrays_outlive_socket_and_context(
    transport: str, shortdir: Path, figures: Figures
) -> None:
    """Close the socket and terminate the context while received zero-copy arrays are
    alive: the arrays stay valid, readable and writable (they own their frames)."""
    context: zmq.Context[Any] = zmq.Context()
    pull = context.socket(zmq.PULL)
    pull.rcvtimeo = int(HANG_GUARD * 1000)
    frames: list[weakref.ref[Any]] = []
    try:
        if transport == "inproc":
            push = context.socket(zmq.PUSH)
            pull.bind("inproc://outlive")
            push.connect("inproc://outlive")
            for seq in range(6):
                zarray.send_array(push, make_array(seq, 1, "large" if seq % 2 else "small"))
            push.close(linger=0)
            got = [zarray.recv_array(pull) for _ in range(6)]
        else:
            endpoint = bind_any(pull, transport, shortdir)
            with spawn("push", "--endpoint", endpoint, "--count", 3, "--large", 3) as child:
                got = [zarray.recv_array(pull) for _ in range(6)]
                child.result()
        for A in got:
            if A.base is not None and not isinstance(A.base, np.ndarray):
                frames.append(weakref.ref(A.base))
    finally:
        pull.close(linger=0)
        context.term()
    gc.collect()
    assert context.closed
    assert frames, "no received array views a frame: nothing was zero-copy"
    assert all(ref() is not None for ref in frames)
    seqs = [verify(A)[1] for A in got]
    assert seqs == list(range(6))
    for A in got:
        raw = raw_bytes(A)
        raw[16:] = 0x5A  # still writable memory, owned through the frame
        assert int(raw[-1]) == 0x5A
        with pytest.raises(CorruptMessage):
            verify(A)
    del got, A, raw
    gc.collect()
    assert all(ref() is None for ref in frames), "a frame outlived its arrays"
    _fault(figures, "context_term_with_live_arrays")


@pytest.mark.parametrize("transport", ["ipc", "tcp"])
def test_mutating_after_tracker_done_never_reaches_receiver(
    transport: str, make_socket: Sockets, shortdir: Path, figures: Figures
) -> None:
    """Send zero-copy, wait for the tracker, then overwrite the array before the
    receiver has even called recv_array: what arrives is the original content."""
    pull = make_socket(zmq.PULL)
    push = make_socket(zmq.PUSH)
    endpoint = bind_any(pull, transport, shortdir)
    push.connect(endpoint)
    for seq in range(10):
        A = make_array(seq, 1, "large")
        tracker = zarray.send_array(push, A)
        assert tracker is not None
        tracker.wait(HANG_GUARD)
        raw_bytes(A)[:] = 0xFF  # the safe moment to reuse the buffer
        B = zarray.recv_array(pull)
        assert verify(B) == (1, seq)
        assert not np.shares_memory(A, B)
    _fault(figures, "mutation_after_done", 10)


def test_inproc_mutation_before_done_is_visible_and_safe_patterns(
    make_socket: Sockets, figures: Figures
) -> None:
    """Over inproc a zero-copy receive is the sender's own memory: mutating the array
    before its tracker is done changes what the receiver holds. That is the user's
    error (docs/SECURITY.md); the two safe patterns are shown to hold."""
    rx = make_socket(zmq.PAIR)
    tx = make_socket(zmq.PAIR)
    rx.bind("inproc://mutate")
    tx.connect("inproc://mutate")

    A = make_array(0, 1, "large")
    tracker = zarray.send_array(tx, A)
    assert tracker is not None
    B = zarray.recv_array(rx)
    assert B.__array_interface__["data"][0] == A.__array_interface__["data"][0]
    assert not tracker.done  # the receiver's array holds the frame
    raw_bytes(A)[100] ^= 0xFF  # the user's error: mutating before done
    with pytest.raises(CorruptMessage):
        verify(B)  # ... is visible on the receiving side
    raw_bytes(A)[100] ^= 0xFF
    del B
    tracker.wait(HANG_GUARD)  # done once the receiver dropped its view

    # Safe pattern 1: wait for the tracker before reusing the buffer.
    A2 = make_array(1, 1, "large")
    t2 = zarray.send_array(tx, A2)
    assert t2 is not None
    C = zarray.recv_array(rx, copy=True)  # the receiver keeps a copy, not a view
    t2.wait(HANG_GUARD)
    raw_bytes(A2)[:] = 0
    assert verify(C) == (1, 1)

    # Safe pattern 2: send with copy=True; the array may be reused at once.
    A3 = make_array(2, 1, "large")
    t3 = zarray.send_array(tx, A3, copy=True)
    assert t3 is not None
    assert t3.done
    raw_bytes(A3)[:] = 0
    assert verify(zarray.recv_array(rx)) == (1, 2)
    _fault(figures, "inproc_aliasing_documented")
