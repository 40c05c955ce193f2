"""Load between real processes: nothing lost, reordered or corrupted.

Every message is a stamped array (sequence number, CRC-32 of its content, sender id;
see ``_support``), checked on arrival. Throughput is reported as a figure, never
asserted: no test here depends on timing, and every wait is a hang guard.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zmq

import zarray

from ._support import (
    END_SENDER,
    PROBE_SENDER,
    Control,
    bind_any,
    spawn,
    spawn_many,
    verify,
)
from .conftest import Figures

MiB = 1024 * 1024

Sockets = Callable[..., zmq.Socket[Any]]


def _receive_in_order(
    sock: zmq.Socket[Any], count: int, sender: int, start: int = 0
) -> tuple[int, int]:
    """Receive ``count`` arrays that must be ``start, start+1, ...`` from one sender.

    Returns ``(messages, payload bytes)``.
    """
    nbytes = 0
    for expected in range(start, start + count):
        A = zarray.recv_array(sock)
        got_sender, seq = verify(A)
        assert (got_sender, seq) == (sender, expected), "lost or reordered message"
        nbytes += A.nbytes
    return count, nbytes


@pytest.mark.parametrize(
    ("small", "large"),
    [
        pytest.param(10_000, 50, id="10k-small-50-large"),
        pytest.param(100_000, 1_000, id="100k-small-1000-large", marks=pytest.mark.slow),
    ],
)
@pytest.mark.parametrize("transport", ["ipc", "tcp"])
def test_push_pull_stream(
    transport: str,
    small: int,
    large: int,
    make_socket: Sockets,
    shortdir: Path,
    figures: Figures,
) -> None:
    """PUSH/PULL between processes: small then 2 MiB arrays, all intact and in order."""
    pull = make_socket(zmq.PULL)
    endpoint = bind_any(pull, transport, shortdir)
    t0 = time.perf_counter()
    with spawn("push", "--endpoint", endpoint, "--count", small, "--large", large) as child:
        n_small, _ = _receive_in_order(pull, small, sender=1)
        t1 = time.perf_counter()
        n_large, large_bytes = _receive_in_order(pull, large, sender=1, start=small)
        t2 = time.perf_counter()
        result = child.result()
    assert result["sent"] == small + large
    assert pull.poll(0) == 0, "a message beyond the ones sent arrived"
    figures.add("load.messages_verified", n_small + n_large)
    figures.add("load.bytes_verified", result["bytes"])
    figures.append(
        "load.pushpull",
        {
            "transport": transport,
            "small": n_small,
            "large": n_large,
            "large_MiB": round(large_bytes / MiB),
            "large_MiB_per_s": round(large_bytes / MiB / max(t2 - t1, 1e-9)),
            "small_msgs_per_s": round(n_small / max(t1 - t0, 1e-9)),
        },
    )


@pytest.mark.parametrize("mode", ["noblock", "block"])
@pytest.mark.parametrize("transport", ["ipc", "tcp"])
def test_slow_consumer_small_hwm(
    transport: str,
    mode: str,
    make_socket: Sockets,
    ctx: zmq.Context[Any],
    shortdir: Path,
    figures: Figures,
) -> None:
    """With SNDHWM=RCVHWM=2 and a consumer that does not read, the producer is pushed back
    (zmq.Again with NOBLOCK, a blocking send otherwise) and nothing is dropped.

    The consumer starts reading only after the producer has reported the push-back,
    so the queue was certainly full; then every message must still arrive, in order.
    """
    count = 300
    pull = make_socket(zmq.PULL, rcvhwm=2, rcvbuf=64 * 1024)
    endpoint = bind_any(pull, transport, shortdir)
    ctrl = Control(ctx, shortdir)
    args = ["--endpoint", endpoint, "--ctrl", ctrl.endpoint, "--count", count]
    args += ["--kind", "medium", "--hwm", 2, "--sndbuf", 64 * 1024, "--mode", mode]
    with spawn("push", *args) as child:
        event = ctrl.expect("again" if mode == "noblock" else "blocked")
        # Nothing has been read yet: the push-back happened with the queues full.
        assert event["sent"] < count
        n, _ = _receive_in_order(pull, count, sender=1)
        result = child.result()
    assert result["sent"] == count
    if mode == "noblock":
        assert result["again"] >= 1
    else:
        assert result["blocked"] >= 1
    figures.add("load.messages_verified", n)
    figures.add("load.pushback_events", result["again"] + result["blocked"])


@pytest.mark.parametrize("transport", ["ipc", "tcp"])
def test_pub_sub_slow_subscriber(
    transport: str,
    make_socket: Sockets,
    ctx: zmq.Context[Any],
    shortdir: Path,
    figures: Figures,
) -> None:
    """PUB with SNDHWM=10 to a SUB that reads nothing until the publisher is done.

    ZeroMQ documents that PUB drops messages for a subscriber whose queue is full. The
    test counts the drops, and checks that they are the only loss: each received
    message is whole and intact, sequence numbers strictly increase, and a message is
    never half-delivered.
    """
    count = 2000
    ctrl = Control(ctx, shortdir)
    pub_endpoint = f"ipc://{shortdir}/pub.ipc" if transport == "ipc" else "tcp://127.0.0.1:*"
    args = ["--endpoint", pub_endpoint, "--ctrl", ctrl.endpoint, "--count", count]
    args += ["--kind", "medium", "--hwm", 10]
    sub = make_socket(zmq.SUB, rcvhwm=10)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    with spawn("pub", *args) as child:
        sub.connect(ctrl.expect("bound")["endpoint"])
        # Wait until a probe arrives: the subscription is live before data is sent.
        while verify(zarray.recv_array(sub))[0] != PROBE_SENDER:
            pass
        ctrl.send(cmd="go")
        ctrl.expect("done")  # all sent; the subscriber has read nothing meanwhile
        seqs: list[int] = []
        while True:
            sender, seq = verify(zarray.recv_array(sub))
            if sender == END_SENDER:
                break
            if sender == PROBE_SENDER:
                assert not seqs, "a probe arrived after data"
                continue
            assert sender == 1
            seqs.append(seq)
        ctrl.send(cmd="bye")
        result = child.result()
    assert result["sent"] == count
    assert seqs, "nothing arrived"
    assert all(a < b for a, b in itertools.pairwise(seqs)), "reordered or duplicated"
    dropped = count - len(seqs)
    assert 0 < dropped < count, "a subscriber that did not read must have lost some"
    figures.add("load.messages_verified", len(seqs))
    figures.add("load.pubsub_sent", count)
    figures.add("load.pubsub_dropped_at_hwm", dropped)


@pytest.mark.parametrize(
    "per_sender",
    [
        pytest.param(1_250, id="8x1250"),
        pytest.param(12_500, id="8x12500", marks=pytest.mark.slow),
    ],
)
def test_many_senders_one_receiver(
    per_sender: int, make_socket: Sockets, shortdir: Path, figures: Figures
) -> None:
    """Eight producer processes to one PULL: every message whole, each sender's order kept."""
    senders = 8
    large = 4
    pull = make_socket(zmq.PULL)
    endpoint = bind_any(pull, "tcp", shortdir)
    arglists = [
        ["--endpoint", endpoint, "--sender", s, "--count", per_sender, "--large", large]
        for s in range(1, senders + 1)
    ]
    total = senders * (per_sender + large)
    next_seq = dict.fromkeys(range(1, senders + 1), 0)
    with spawn_many("push", arglists) as children:
        for _ in range(total):
            sender, seq = verify(zarray.recv_array(pull))
            assert sender in next_seq, f"unknown sender {sender}"
            assert seq == next_seq[sender], (
                f"sender {sender}: got {seq}, expected {next_seq[sender]}"
            )
            next_seq[sender] += 1
        results = [c.result() for c in children]
    assert all(r["sent"] == per_sender + large for r in results)
    assert set(next_seq.values()) == {per_sender + large}
    assert pull.poll(0) == 0
    figures.add("load.messages_verified", total)
    figures.put("load.max_senders", senders)
