"""Helpers for the API tests of issue 3 (multi-array, envelopes, sockets, asyncio, ...).

Each test module defines its own small fixtures on top of these, so it depends on no
fixture from a conftest. Every socket gets receive and send timeouts (a hang guard:
a bug fails the test instead of blocking it; no test relies on them for timing) and
``linger=0``, and every socket and context is closed whatever happens.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import zmq

#: Hang guard for a single blocking receive or send, in milliseconds.
GUARD_MS = 10_000
TRANSPORTS = ("inproc", "ipc", "tcp")

_counter = itertools.count()


def guard(sock: zmq.Socket[Any]) -> zmq.Socket[Any]:
    """Set the hang guards on a socket and return it."""
    sock.rcvtimeo = GUARD_MS
    sock.sndtimeo = GUARD_MS
    sock.linger = 0
    return sock


@contextlib.contextmanager
def ipc_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory for ipc endpoints: tmp_path, or a shorter one if tmp_path is too long
    for a unix socket path (about 100 bytes)."""
    if len(str(tmp_path)) < 70:
        yield tmp_path
        return
    short = Path(tempfile.mkdtemp(prefix="za3", dir="/tmp"))
    try:
        yield short
    finally:
        for p in short.iterdir():
            p.unlink()
        short.rmdir()


def endpoint(transport: str, where: Path | None = None) -> str:
    """A fresh endpoint to bind (tcp binds to an ephemeral port: read LAST_ENDPOINT)."""
    n = next(_counter)
    if transport == "inproc":
        return f"inproc://api3-{os.getpid()}-{n}"
    if transport == "ipc":
        assert where is not None
        return f"ipc://{where}/s{n}"
    if transport == "tcp":
        return "tcp://127.0.0.1:*"
    raise ValueError(transport)


class Sockets:
    """Makes guarded sockets on one context and closes them all at the end."""

    def __init__(self, ctx: zmq.Context[Any], where: Path | None = None) -> None:
        self.ctx = ctx
        self.where = where
        self.made: list[zmq.Socket[Any]] = []

    def socket(self, kind: int, **options: Any) -> Any:
        sock = guard(self.ctx.socket(kind))
        for name, value in options.items():
            sock.setsockopt(getattr(zmq, name.upper()), value)
        self.made.append(sock)
        return sock

    def bind(self, sock: zmq.Socket[Any], transport: str) -> str:
        sock.bind(endpoint(transport, self.where))
        return str(sock.last_endpoint.decode())

    def pair(
        self,
        transport: str,
        bind_kind: int = zmq.PUSH,
        connect_kind: int = zmq.PULL,
        **options: Any,
    ) -> tuple[Any, Any]:
        """``(bound, connected)`` sockets of the given kinds, connected over transport."""
        a = self.socket(bind_kind, **options)
        b = self.socket(connect_kind, **options)
        b.connect(self.bind(a, transport))
        return a, b

    def close(self) -> None:
        for sock in self.made:
            sock.close(linger=0)
        self.made.clear()


@contextlib.contextmanager
def sockets(
    tmp_path: Path | None = None, context_class: type[zmq.Context[Any]] = zmq.Context
) -> Iterator[Sockets]:
    """A fresh context with a :class:`Sockets` factory; everything closed at the end."""
    ctx = context_class()
    with contextlib.ExitStack() as stack:
        where = stack.enter_context(ipc_dir(tmp_path)) if tmp_path is not None else None
        made = Sockets(ctx, where)
        try:
            yield made
        finally:
            made.close()
            ctx.term()


def subscribe_and_sync(pub: Any, sub: Any, probe: Any, topic: bytes | None = b"probe") -> None:
    """Subscribe ``sub`` to ``topic`` (unless None) and publish ``probe()`` until one arrives.

    PUB drops messages until the subscription has reached it; this waits for that
    without any sleep. Probes still in flight afterwards carry ``topic`` and must be
    skipped by the caller.
    """
    if topic is not None:
        sub.setsockopt(zmq.SUBSCRIBE, topic)
    poller = zmq.Poller()
    poller.register(sub, zmq.POLLIN)
    for _ in range(GUARD_MS // 20):
        probe()
        if poller.poll(20):
            sub.recv_multipart()
            return
    raise AssertionError("subscription never reached the publisher")
