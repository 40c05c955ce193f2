"""A child process for the shared-memory fault tests: ``python shm_peer.py ROLE ENDPOINT CTRL``.

The child obeys JSON commands from the parent over a PAIR control channel (``CTRL``)
and answers each with one JSON event, so the parent can put it in an exact state
(holding views, stalled with the pool full, mid-stream) before it SIGKILLs it.

Roles:

``sender``
    Makes a ``zarray.SharedPool`` and a PUSH socket bound at ``ENDPOINT``. Commands:
    ``send`` (``count`` stamped arrays, ``kind`` "pool" for arrays loaned from the pool
    or "copy" for ordinary arrays copied into it), ``stream`` (send until killed),
    ``report`` (pool and process figures).
``receiver``
    A PULL socket connected to ``ENDPOINT``. Commands: ``recv`` (``count`` arrays,
    verified, kept when ``hold``), ``verify`` (check every kept array again),
    ``drop`` (let go of them), ``report``.

Every child arms SIGALRM so that it dies on its own should the parent vanish.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import signal
import sys
from typing import Any

import numpy as np
import zmq
from _support import (  # type: ignore[import-not-found]
    CHILD_DEADLINE,
    HANG_GUARD,
    child_control,
    make_array,
    rss_bytes,
    verify,
)

import zarray

GUARD_MS = int(HANG_GUARD * 1000)


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def pool_mappings() -> int:
    """Mappings of any zarray pool segment in this process (from /proc/self/maps)."""
    with open("/proc/self/maps") as f:
        return sum(1 for line in f if "memfd:zarray-pool" in line)


def _process_report() -> dict[str, Any]:
    gc.collect()
    return {"fds": fd_count(), "rss": rss_bytes(), "maps": pool_mappings(), "pid": os.getpid()}


def sender(endpoint: str, ctrl: zmq.Socket[Any], args: dict[str, Any]) -> None:
    pool = zarray.SharedPool(
        args.get("size", 64 << 20),
        lease_timeout=args.get("lease_timeout", 60.0),
        threshold=args.get("threshold", 64 * 1024),
    )
    ctx = ctrl.context
    sock = ctx.socket(zmq.PUSH)
    sock.sndhwm = args.get("hwm", 1000)
    sock.sndtimeo = GUARD_MS
    sock.linger = 0
    sock.bind(endpoint)
    ctrl.send_json({"event": "ready", "pool_id": pool.pool_id, "size": pool.size})
    seq = 0
    while True:
        cmd = ctrl.recv_json()
        assert isinstance(cmd, dict)
        op = cmd["cmd"]
        if op == "send":
            for _ in range(cmd["count"]):
                A = make_array(seq, 7, cmd.get("size_kind", "large"))
                if cmd.get("kind", "pool") == "pool":
                    A = pool.asarray(A)
                zarray.send_array(sock, A, shm=pool)
                seq += 1
            ctrl.send_json({"event": "sent", "seq": seq})
        elif op == "stream":
            ctrl.send_json({"event": "streaming"})
            while True:  # until SIGKILLed
                zarray.send_array(sock, make_array(seq, 7, "large"), shm=pool)
                seq += 1
        elif op == "report":
            ctrl.send_json(
                {"event": "report", "free": pool.free, "leases": pool.leases, **_process_report()}
            )
        elif op == "exit":
            ctrl.send_json({"event": "bye"})
            return


def receiver(endpoint: str, ctrl: zmq.Socket[Any], args: dict[str, Any]) -> None:
    ctx = ctrl.context
    sock = ctx.socket(zmq.PULL)
    sock.rcvhwm = args.get("hwm", 1000)
    sock.rcvtimeo = GUARD_MS
    sock.linger = 0
    sock.connect(endpoint)
    ctrl.send_json({"event": "ready"})
    held: list[np.ndarray[Any, Any]] = []
    while True:
        cmd = ctrl.recv_json()
        assert isinstance(cmd, dict)
        op = cmd["cmd"]
        if op == "recv":
            seqs, errors = [], []
            for _ in range(cmd["count"]):
                try:
                    A = zarray.recv_array(sock)
                except zarray.HeaderError as exc:
                    errors.append(str(exc))
                    continue
                seqs.append(verify(A)[1])
                if cmd.get("hold"):
                    held.append(A)
                del A
            ctrl.send_json({"event": "received", "seqs": seqs, "errors": errors})
        elif op == "verify":
            ok = [verify(A)[1] for A in held]
            ctrl.send_json({"event": "verified", "seqs": ok})
        elif op == "drop":
            held.clear()
            gc.collect()
            ctrl.send_json({"event": "dropped"})
        elif op == "report":
            ctrl.send_json({"event": "report", "held": len(held), **_process_report()})
        elif op == "exit":
            ctrl.send_json({"event": "bye"})
            return


def main(argv: list[str]) -> None:
    role, endpoint, ctrl_endpoint = argv[:3]
    args = json.loads(argv[3]) if len(argv) > 3 else {}
    signal.alarm(CHILD_DEADLINE)  # dies on its own should the parent vanish
    ctx = zmq.Context()
    ctrl = child_control(ctx, ctrl_endpoint)
    if "setuid" in args:
        # Become another user before any side channel is opened (SO_PEERCRED reports
        # the credentials of connect()). Import first what the receive path needs:
        # the new user may not be able to read this Python installation.
        for name in ("zarray._shm", "zmq._future"):
            importlib.import_module(name)

        os.setgroups([])
        os.setgid(args["setuid"])
        os.setuid(args["setuid"])
    {"sender": sender, "receiver": receiver}[role](endpoint, ctrl, args)
    ctrl.close(linger=1000)
    ctx.destroy(linger=0)


if __name__ == "__main__":
    main(sys.argv[1:])
