"""Child processes of the reliability suite: ``python peers.py ROLE [options]``.

Each role is one real process on the other end of a real socket. A role prints one
JSON object as its last stdout line (its result) and exits 0; events that the parent
must wait for ("the queue is full", "I am stalled") go over a PAIR control channel
given with ``--ctrl``. Every role arms SIGALRM so that it dies on its own should the
parent vanish, and every blocking call has a hang guard.
"""

from __future__ import annotations

import argparse
import gc
import json
import signal
import sys
import time
import weakref
from typing import Any

import numpy as np
import zmq
from _support import (  # type: ignore[import-not-found]
    CHILD_DEADLINE,
    CURVE_EXAMPLE,
    END_SENDER,
    HANG_GUARD,
    PROBE_SENDER,
    RawZmtpPeer,
    child_control,
    doc_example,
    make_array,
    marker,
    read_stamp,
    restamp,
    rss_bytes,
    verify,
    vm_bytes,
)
from zmq.utils.monitor import recv_monitor_message

import zarray

GUARD_MS = int(HANG_GUARD * 1000)


def _emit(result: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


def _kind(seq: int, kind: str) -> str:
    # "mixed": every fourth message is large, so a kill often lands inside a large one.
    if kind == "mixed":
        return "large" if seq % 4 == 3 else "small"
    return kind


def role_push(a: argparse.Namespace) -> None:
    """Send stamped arrays: ``--count`` of ``--kind`` then ``--large`` large ones, or
    without end with ``--forever``."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.sndhwm = a.hwm
    if a.sndbuf:
        sock.setsockopt(zmq.SNDBUF, a.sndbuf)
    sock.sndtimeo = GUARD_MS  # hang guard: a blocked send fails after it instead of hanging
    sock.connect(a.endpoint)
    ctrl = child_control(ctx, a.ctrl) if a.ctrl else None
    sent = again = blocked = nbytes = 0
    seq = a.start
    end = None if a.forever else a.start + a.count + a.large
    while end is None or seq < end:
        kind = "large" if seq >= a.start + a.count and not a.forever else _kind(seq, a.kind)
        A = make_array(seq, a.sender, kind)
        if a.mode == "noblock":
            while True:
                try:
                    zarray.send_array(sock, A, flags=zmq.NOBLOCK)
                    break
                except zmq.Again:
                    again += 1
                    if again == 1 and ctrl is not None:
                        ctrl.send_json({"event": "again", "sent": sent})
                    if not sock.poll(GUARD_MS, zmq.POLLOUT):
                        raise RuntimeError("socket not writable within the hang guard") from None
        else:
            if not sock.poll(0, zmq.POLLOUT):
                blocked += 1
                if blocked == 1 and ctrl is not None:
                    ctrl.send_json({"event": "blocked", "sent": sent})
            zarray.send_array(sock, A)  # blocks while the queue is full
        sent += 1
        nbytes += A.nbytes
        seq += 1
    sock.close(linger=GUARD_MS)
    if ctrl is not None:
        ctrl.close()
    ctx.term()
    _emit({"sent": sent, "again": again, "blocked": blocked, "bytes": nbytes})


def role_pull(a: argparse.Namespace) -> None:
    """Receive and verify stamped arrays; with ``--stall-after`` stop reading and wait."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    sock.rcvhwm = a.hwm
    if a.rcvbuf:
        sock.setsockopt(zmq.RCVBUF, a.rcvbuf)
    sock.rcvtimeo = GUARD_MS
    sock.bind(a.endpoint)
    ctrl = child_control(ctx, a.ctrl) if a.ctrl else None
    if ctrl is not None:
        ctrl.send_json({"event": "bound", "endpoint": sock.get(zmq.LAST_ENDPOINT).decode()})
    received = 0
    target = a.stall_after if a.stall_after else a.count
    while received < target:
        verify(zarray.recv_array(sock))
        received += 1
    if a.stall_after:
        assert ctrl is not None
        ctrl.send_json({"event": "stalled", "received": received})
        signal.pause()  # until SIGKILLed (or SIGALRM, the deadline)
    sock.close(linger=0)
    ctx.term()
    _emit({"received": received})


def role_pub(a: argparse.Namespace) -> None:
    """Publish ``--count`` stamped arrays with a small SNDHWM, never waiting for anyone.

    First sends probes until the parent says its subscription is live ("go"); after
    the data, repeats an end marker until the parent has seen it ("bye"). Both are
    retries, so no step relies on timing.
    """
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUB)
    sock.sndhwm = a.hwm
    sock.bind(a.endpoint)  # may be tcp://127.0.0.1:*; the parent learns the port below
    ctrl = child_control(ctx, a.ctrl)
    ctrl.send_json({"event": "bound", "endpoint": sock.get(zmq.LAST_ENDPOINT).decode()})
    probes = 0
    while not ctrl.poll(5):
        zarray.send_array(sock, marker(PROBE_SENDER, probes))
        probes += 1
    assert ctrl.recv_json()["cmd"] == "go"
    for seq in range(a.count):
        zarray.send_array(sock, make_array(seq, 1, a.kind))  # PUB drops at the HWM
    ctrl.send_json({"event": "done", "sent": a.count})
    ends = 0
    while not ctrl.poll(10):
        zarray.send_array(sock, marker(END_SENDER, ends))
        ends += 1
    assert ctrl.recv_json()["cmd"] == "bye"
    sock.close(linger=0)
    ctrl.close()
    ctx.term()
    _emit({"sent": a.count, "probes": probes, "ends": ends})


def role_send_one(a: argparse.Namespace) -> None:
    """Send one stamped array of ``--kind`` (e.g. an oversized one), then wait for exit."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.connect(a.endpoint)
    ctrl = child_control(ctx, a.ctrl)
    A = make_array(a.start, a.sender, a.kind)
    tracker = zarray.send_array(sock, A)
    assert tracker is not None
    tracker.wait(HANG_GUARD)  # libzmq has written it out (or dropped it)
    ctrl.send_json({"event": "sent", "nbytes": A.nbytes})
    if not ctrl.poll(GUARD_MS):
        raise RuntimeError("no exit command within the hang guard")
    sock.close(linger=0)
    ctrl.close()
    ctx.term()
    _emit({"sent": 1, "nbytes": A.nbytes})


def role_raw_half(a: argparse.Namespace) -> None:
    """Speak ZMTP by hand and leave a message unfinished, then wait to be SIGKILLed."""
    ctx = zmq.Context()
    ctrl = child_control(ctx, a.ctrl)
    peer = RawZmtpPeer(a.port, "PUSH")
    # One whole message first, so the parent sees that the hand-made framing is right.
    whole = make_array(0, 7, "small")
    peer.send_frame(zarray.pack_header(whole), more=True)
    peer.send_frame(whole.tobytes(order="A"), more=False)
    header = zarray.pack_header(make_array(1, 7, "medium"))
    if a.mode == "header-only":
        peer.send_frame(header, more=True)
    elif a.mode == "cut-payload":
        peer.send_frame(header, more=True)
        peer.send_raw(RawZmtpPeer.frame_prefix(80 * 1024, more=False) + b"\xab" * 1000)
    elif a.mode == "huge-size":
        peer.send_frame(header, more=True)
        peer.send_raw(RawZmtpPeer.frame_prefix(1 << 40, more=False) + b"\xab" * 1000)
    else:
        raise ValueError(a.mode)
    ctrl.send_json({"event": "sent"})
    signal.pause()


def role_reserve(a: argparse.Namespace) -> None:
    """How much memory does a peer's declared frame size make libzmq reserve?

    A PULL socket (with ``--maxmsgsize`` if non-zero) and, in the same process, a
    hand-written ZMTP peer that sends a header frame and then declares a payload frame
    of ``--declare`` bytes, of which it sends 1,000. Reports the growth of this
    process's virtual size and whether libzmq dropped the connection.
    """
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    if a.maxmsgsize:
        pull.setsockopt(zmq.MAXMSGSIZE, a.maxmsgsize)
    pull.bind("tcp://127.0.0.1:*")
    port = int(pull.get(zmq.LAST_ENDPOINT).decode().rsplit(":", 1)[1])
    monitor = pull.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    vm0 = vm_bytes()
    peer = RawZmtpPeer(port, "PUSH")
    peer.send_frame(zarray.pack_header(make_array(0, 7, "small")), more=True)
    peer.send_raw(RawZmtpPeer.frame_prefix(a.declare, more=False) + b"\xab" * 1000)
    disconnected = False
    growth = 0
    deadline = time.monotonic() + 10  # hang guard for the unlimited case
    while time.monotonic() < deadline:
        if monitor.poll(20):
            event = recv_monitor_message(monitor)
            disconnected = event["event"] == zmq.EVENT_DISCONNECTED
            growth = vm_bytes() - vm0
            break
        growth = vm_bytes() - vm0
        if growth >= a.declare // 2:  # libzmq has reserved the declared size
            break
    delivered = pull.poll(0) != 0
    peer.close()
    monitor.close(linger=0)
    pull.close(linger=0)
    ctx.term()
    _emit({"vm_growth": growth, "disconnected": disconnected, "delivered": delivered})


def role_curve_push(a: argparse.Namespace) -> None:
    """The client of docs/SECURITY.md's CURVE example: send ``--count`` stamped arrays."""
    example = doc_example(CURVE_EXAMPLE)
    ctx = zmq.Context()
    server_public, client_public, client_secret = (k.encode() for k in a.keys.split(","))
    sock = example["curve_client"](ctx, a.endpoint, server_public, client_public, client_secret)
    sock.sndtimeo = GUARD_MS
    for seq in range(a.count):
        zarray.send_array(sock, make_array(seq, a.sender, "large" if seq % 2 else "small"))
    sock.close(linger=GUARD_MS)
    ctx.term()
    _emit({"sent": a.count})


def role_soak(a: argparse.Namespace) -> None:
    """Zero-copy send/receive cycles in one process; report RSS and object counts."""
    ctx = zmq.Context()
    tx = ctx.socket(zmq.PAIR)
    rx = ctx.socket(zmq.PAIR)
    rx.rcvtimeo = GUARD_MS
    if a.transport == "inproc":
        tx.bind("inproc://soak")
        rx.connect("inproc://soak")
    else:
        tx.bind("tcp://127.0.0.1:*")
        rx.connect(tx.get(zmq.LAST_ENDPOINT).decode())
    big = make_array(0, 3, "medium")  # above pyzmq's copy threshold: zero-copy
    small = make_array(0, 3, "small")  # below it: copied by pyzmq
    frames_alive = 0
    samples: dict[str, int] = {}

    def sample(tag: str) -> None:
        gc.collect()
        samples[f"rss_{tag}"] = rss_bytes()
        samples[f"objects_{tag}"] = len(gc.get_objects())

    for cycle in range(a.cycles):
        if cycle == a.warmup:
            sample("warm")
        restamp(big, 2 * cycle, 3)  # even numbers keep the dtype/shape of seq 0
        tracker = zarray.send_array(tx, big)
        zarray.send_array(tx, small)
        B = zarray.recv_array(rx, copy=cycle % 16 == 0)
        seq, _, _ = read_stamp(B)
        if seq != 2 * cycle:
            raise AssertionError(f"cycle {cycle}: received seq {seq}")
        verify(B)
        base = B.base
        ref = weakref.ref(base) if base is not None and not isinstance(base, np.ndarray) else None
        verify(zarray.recv_array(rx))
        del B, base
        assert tracker is not None
        tracker.wait(HANG_GUARD)  # the frame is released: big may be rewritten
        if ref is not None and ref() is not None:
            frames_alive += 1
    sample("end")
    tx.close(linger=0)
    rx.close(linger=0)
    ctx.term()
    _emit({"cycles": a.cycles, "warmup": a.warmup, "frames_alive": frames_alive, **samples})


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("role")
    p.add_argument("--endpoint", default="")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--ctrl", default="")
    p.add_argument("--count", type=int, default=0)
    p.add_argument("--large", type=int, default=0)
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--sender", type=int, default=1)
    p.add_argument("--kind", default="small")
    p.add_argument("--forever", action="store_true")
    p.add_argument("--hwm", type=int, default=1000)
    p.add_argument("--sndbuf", type=int, default=0)
    p.add_argument("--rcvbuf", type=int, default=0)
    p.add_argument("--mode", default="block")
    p.add_argument("--stall-after", type=int, default=0)
    p.add_argument("--cycles", type=int, default=0)
    p.add_argument("--warmup", type=int, default=0)
    p.add_argument("--transport", default="inproc")
    p.add_argument("--maxmsgsize", type=int, default=0)
    p.add_argument("--declare", type=int, default=0)
    p.add_argument("--keys", default="", help="server public, client public, client secret")
    a = p.parse_args(argv)
    signal.alarm(CHILD_DEADLINE)  # dies on its own should the parent vanish
    roles = {
        "push": role_push,
        "pull": role_pull,
        "pub": role_pub,
        "send-one": role_send_one,
        "raw-half": role_raw_half,
        "soak": role_soak,
        "reserve": role_reserve,
        "curve-push": role_curve_push,
    }
    roles[a.role](a)


if __name__ == "__main__":
    main()
