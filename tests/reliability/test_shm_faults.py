"""Shared memory between real processes: SIGKILLs, full pools, leaks, other users and hosts.

Every test runs the other side in a child process (``shm_peer.py``) over a real
ZeroMQ socket and kills it with a real SIGKILL where it says so, then checks what
``zarray.SharedPool`` promises: slots a dead receiver held come back to the sender's
pool; a receiver's arrays stay valid after the sender dies; nothing is left in
``/dev/shm`` and no mapping of a pool outlives the processes that used it; file
descriptors and RSS stay flat over many messages; other users and other network
namespaces are refused with a HeaderError that says why.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import zmq

import zarray

from ._support import (
    HANG_GUARD,
    HERE,
    Child,
    Control,
    bind_any,
    make_array,
    rss_bytes,
    spawn,
    verify,
)
from .conftest import Figures

SHM_PEER = HERE / "shm_peer.py"
MiB = 1 << 20
LARGE = 2 * MiB  # make_array(..., "large")

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/fd"), reason="Linux only")


def dev_shm() -> set[str]:
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def fds() -> list[str]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            out.append(f"{fd}:{os.readlink(f'/proc/self/fd/{fd}')}")
        except OSError:
            pass
    return out


def pool_mappings() -> int:
    with open("/proc/self/maps") as f:
        return sum(1 for line in f if "memfd:zarray-pool" in line)


def wait_until(check: Any, what: str, timeout: float = HANG_GUARD) -> None:
    """Poll ``check()`` until true (a hang guard, not a speed assertion)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        gc.collect()
        time.sleep(0.01)


class Agent:
    """The parent's handle on one ``shm_peer.py`` child: commands out, one event back."""

    def __init__(self, child: Child, ctrl: Control) -> None:
        self.child = child
        self.ctrl = ctrl

    def do(self, cmd: str, expect: str, timeout: float = HANG_GUARD, **args: Any) -> dict[str, Any]:
        self.ctrl.send(cmd=cmd, **args)
        return self.ctrl.expect(expect, timeout)


@contextmanager
def agent(
    ctx: zmq.Context[Any],
    tmp: Path,
    role: str,
    endpoint: str,
    prefix: tuple[str, ...] = (),
    **args: Any,
) -> Iterator[Agent]:
    # In another network namespace, 127.0.0.1 is another loopback: control over ipc.
    transport = "ipc" if prefix else "tcp"
    ctrl = Control(ctx, tmp, f"ctrl-{role}-{time.monotonic_ns()}", transport)
    try:
        with spawn(
            role,
            endpoint,
            ctrl.endpoint,
            json.dumps(args),
            script=SHM_PEER,
            prefix=prefix,
        ) as child:
            a = Agent(child, ctrl)
            a.ctrl.expect("ready")
            yield a
    finally:
        ctrl.close()


@pytest.fixture
def push(ctx: zmq.Context[Any]) -> Iterator[zmq.Socket[Any]]:
    sock = ctx.socket(zmq.PUSH)
    sock.linger = 0
    sock.sndtimeo = int(HANG_GUARD * 1000)
    try:
        yield sock
    finally:
        sock.close(linger=0)


@pytest.fixture
def pull(ctx: zmq.Context[Any]) -> Iterator[zmq.Socket[Any]]:
    sock = ctx.socket(zmq.PULL)
    sock.linger = 0
    sock.rcvtimeo = int(HANG_GUARD * 1000)
    try:
        yield sock
    finally:
        sock.close(linger=0)


def _send_pooled(sock: zmq.Socket[Any], pool: zarray.SharedPool, start: int, count: int) -> None:
    for seq in range(start, start + count):
        zarray.send_array(sock, pool.asarray(make_array(seq, 1, "large")), shm=pool)


# -- the receiver dies --------------------------------------------------------------------


def test_receiver_sigkill_with_views_held(
    ctx: zmq.Context[Any], shortdir: Path, push: zmq.Socket[Any], figures: Figures
) -> None:
    """Slots a SIGKILLed receiver was viewing come back to the sender's pool."""
    shm_before = dev_shm()
    pool = zarray.SharedPool(32 * MiB, lease_timeout=30.0)
    try:
        endpoint = bind_any(push, "ipc", shortdir, "shm-kill-rx")
        with agent(ctx, shortdir, "receiver", endpoint) as warmup:  # one-time costs
            _send_pooled(push, pool, 0, 1)
            warmup.do("recv", "received", count=1)
            warmup.do("exit", "bye")
        wait_until(lambda: pool.receivers == 0, "the warm-up receiver gone")
        fds_before = fd_count()
        with agent(ctx, shortdir, "receiver", endpoint) as rx:
            _send_pooled(push, pool, 0, 6)
            got = rx.do("recv", "received", count=6, hold=True)
            assert got["seqs"] == list(range(6))
            assert got["errors"] == []
            wait_until(lambda: pool.leases == 6, "six claimed leases")
            assert pool.free == pool.size - 6 * LARGE
            assert pool.receivers == 1
            rx.child.kill()
        # The kernel closed the dead receiver's side channel: its leases end.
        wait_until(lambda: pool.leases == 0, "leases of the dead receiver reclaimed")
        wait_until(lambda: pool.free == pool.size, "every slot back in the pool")
        wait_until(lambda: pool.receivers == 0, "the dead receiver's channel dropped")
        # libzmq closes the control socket's descriptor in its own thread, soon.
        wait_until(lambda: fd_count() <= fds_before, f"descriptors back to {fds_before}: {fds()}")
        assert dev_shm() == shm_before
    finally:
        pool.close()
    figures.add("shm.kills_survived")
    figures.add("shm.slots_reclaimed_from_dead_receivers", 6)
    figures.put("shm.dev_shm_entries_before_after", [len(shm_before), len(dev_shm())])


def test_receiver_sigkill_with_the_pool_full(
    ctx: zmq.Context[Any], shortdir: Path, push: zmq.Socket[Any], figures: Figures
) -> None:
    """A stalled receiver fills the pool; killed, its held and queued slots come back.

    The sender then gets zmq.Again with NOBLOCK (nothing sent) instead of growing;
    after the kill the viewed slots return at once (the channel closes) and the ones
    still queued inside the dead receiver return when their leases expire unclaimed.
    """
    pool = zarray.SharedPool(16 * MiB, lease_timeout=1.0)
    try:
        endpoint = bind_any(push, "ipc", shortdir, "shm-full")
        with agent(ctx, shortdir, "receiver", endpoint, hwm=1000) as rx:
            _send_pooled(push, pool, 0, 4)
            rx.do("recv", "received", count=4, hold=True)
            queued, again = 0, 0
            while again == 0:
                try:
                    zarray.send_array(
                        push, make_array(100 + queued, 1, "large"), zmq.NOBLOCK, shm=pool
                    )
                    queued += 1
                except zmq.Again:
                    again += 1
            assert queued == 4  # the pool bounds what a stuck receiver can make us hold
            assert pool.free == 0
            rx.child.kill()
        wait_until(lambda: pool.leases == 0, "held and queued leases reclaimed")
        wait_until(lambda: pool.free == pool.size, "every slot back")
        # The pool serves the next receiver as if nothing had happened.
        with agent(ctx, shortdir, "receiver", endpoint) as rx2:
            _send_pooled(push, pool, 200, 3)
            got = rx2.do("recv", "received", count=3)
            assert got["seqs"] == [200, 201, 202]
            rx2.do("exit", "bye")
    finally:
        pool.close()
    figures.add("shm.kills_survived")
    figures.add("shm.full_pool_refusals", again)


# -- the sender dies -----------------------------------------------------------------------


def test_sender_sigkill_with_views_held(
    ctx: zmq.Context[Any], shortdir: Path, pull: zmq.Socket[Any], figures: Figures
) -> None:
    """The receiver's arrays stay valid after the sender is SIGKILLed; references that
    arrive afterwards are refused; nothing maps the pool once the arrays are gone."""
    shm_before = dev_shm()
    endpoint = bind_any(pull, "ipc", shortdir, "shm-kill-tx")
    pull.unbind(endpoint)
    maps_before = pool_mappings()
    with agent(ctx, shortdir, "sender", endpoint, size=32 * MiB) as tx:
        pull.connect(endpoint)
        tx.do("send", "sent", count=5, kind="pool")
        held = [zarray.recv_array(pull) for _ in range(5)]
        assert [verify(A)[1] for A in held] == list(range(5))
        tx.do("send", "sent", count=3, kind="copy")  # queued here, not yet claimed
        wait_until(lambda: pull.poll(0) != 0, "queued messages arrived")
        time.sleep(0.2)
        tx.child.kill()
    assert [verify(A)[1] for A in held] == list(range(5))  # still intact
    assert all(not A.flags.writeable for A in held)
    refused = 0
    for _ in range(3):
        with pytest.raises(zarray.HeaderError, match=r"closed it|not on this host|exited"):
            zarray.recv_array(pull)
        refused += 1
    assert pull.poll(100) == 0  # at a message boundary
    assert pool_mappings() > maps_before
    del held
    gc.collect()
    wait_until(lambda: pool_mappings() <= maps_before, "the dead sender's pool unmapped")
    assert dev_shm() == shm_before
    figures.add("shm.kills_survived")
    figures.add("shm.references_refused_after_sender_death", refused)


def test_sender_sigkill_mid_stream(
    ctx: zmq.Context[Any], shortdir: Path, pull: zmq.Socket[Any], figures: Figures
) -> None:
    """Killed while streaming copies through its pool: every message is whole or refused."""
    endpoint = bind_any(pull, "ipc", shortdir, "shm-stream")
    pull.unbind(endpoint)
    ok = refused = 0
    with agent(ctx, shortdir, "sender", endpoint, size=16 * MiB, hwm=4) as tx:
        pull.connect(endpoint)
        tx.do("stream", "streaming")
        for _ in range(20):
            verify(zarray.recv_array(pull))
            ok += 1
        tx.child.kill()
    pull.rcvtimeo = 500
    while True:
        try:
            verify(zarray.recv_array(pull))
            ok += 1
        except zarray.HeaderError:
            refused += 1
        except zmq.Again:
            break
    assert ok >= 20
    figures.add("shm.kills_survived")
    figures.add("shm.messages_verified", ok)


# -- no leaks --------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [10_000, pytest.param(100_000, marks=pytest.mark.slow)])
def test_fds_and_rss_stay_flat(
    ctx: zmq.Context[Any], shortdir: Path, push: zmq.Socket[Any], figures: Figures, count: int
) -> None:
    """Many messages by reference: the fd count and RSS of both sides do not grow."""
    pool = zarray.SharedPool(16 * MiB, threshold=0)
    try:
        endpoint = bind_any(push, "ipc", shortdir, f"shm-soak-{count}")
        A = pool.asarray(make_array(0, 1, "medium"))  # 80 KiB, sent by reference each time
        with agent(ctx, shortdir, "receiver", endpoint) as rx:
            warm = 1000
            rx.ctrl.send(cmd="recv", count=warm)
            for _ in range(warm):
                zarray.send_array(push, A, shm=pool)
            rx.ctrl.expect("received")
            gc.collect()
            rx_warm = rx.do("report", "report")
            tx_fds, tx_rss = fd_count(), rss_bytes()
            rx.ctrl.send(cmd="recv", count=count)
            for _ in range(count):
                zarray.send_array(push, A, shm=pool)
            got = rx.ctrl.expect("received", timeout=600)
            assert len(got["seqs"]) == count
            assert got["errors"] == []
            rx_end = rx.do("report", "report")
            wait_until(lambda: pool.leases == 0, "every lease released")
            gc.collect()
            tx_growth = rss_bytes() - tx_rss
            tx_fds_end = fd_count()
            assert tx_fds_end == tx_fds
            assert rx_end["fds"] == rx_warm["fds"]
            assert rx_end["maps"] == rx_warm["maps"] == 1
            assert rx_end["rss"] - rx_warm["rss"] < 4 * MiB
            assert tx_growth < 4 * MiB
            rx.do("exit", "bye")
    finally:
        pool.close()
    figures.append(
        "shm.soak",
        {
            "messages": count,
            "sender_fds": [tx_fds, tx_fds_end],
            "receiver_fds": [rx_warm["fds"], rx_end["fds"]],
            "sender_rss_growth_KiB": tx_growth // 1024,
            "receiver_rss_growth_KiB": (rx_end["rss"] - rx_warm["rss"]) // 1024,
        },
    )


# -- who may attach ----------------------------------------------------------------------------


def _as_nobody() -> int | None:
    if os.geteuid() != 0:
        return None
    try:
        import pwd

        return pwd.getpwnam("nobody").pw_uid
    except KeyError:
        return None


@pytest.mark.skipif(_as_nobody() is None, reason="needs root and a 'nobody' user")
@pytest.mark.parametrize("allowed", [False, True])
def test_other_users_are_refused_unless_allowed(
    ctx: zmq.Context[Any], shortdir: Path, push: zmq.Socket[Any], figures: Figures, allowed: bool
) -> None:
    nobody = _as_nobody()
    assert nobody is not None
    pool = zarray.SharedPool(8 * MiB, allow_uids=[nobody] if allowed else [])
    try:
        push.bind("tcp://127.0.0.1:*")
        endpoint = push.get(zmq.LAST_ENDPOINT).decode()
        with agent(ctx, shortdir, "receiver", endpoint, setuid=nobody) as rx:
            _send_pooled(push, pool, 0, 1)
            got = rx.do("recv", "received", count=1)
            if allowed:
                assert got["seqs"] == [0]
            else:
                assert got["seqs"] == []
                assert "refused this process" in got["errors"][0]
                assert f"uid {nobody}" in got["errors"][0]
            rx.do("exit", "bye")
    finally:
        pool.close()
    figures.add("shm.other_user_refused" if not allowed else "shm.other_user_allowed")


_NETNS = f"zarray-shm-{os.getpid()}"


def _netns_available() -> bool:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    ok = subprocess.run(["ip", "netns", "add", _NETNS], capture_output=True).returncode == 0
    if ok:
        subprocess.run(["ip", "netns", "del", _NETNS], capture_output=True)
    return ok


@pytest.fixture
def netns() -> Iterator[str]:
    if not _netns_available():
        pytest.skip("needs root and iproute2 (ip netns)")
    subprocess.run(["ip", "netns", "add", _NETNS], check=True)
    try:
        yield _NETNS
    finally:
        subprocess.run(["ip", "netns", "del", _NETNS], capture_output=True)


def test_receiver_in_another_network_namespace(
    ctx: zmq.Context[Any], shortdir: Path, push: zmq.Socket[Any], netns: str, figures: Figures
) -> None:
    """Like another host: the message arrives (over an ipc path), the pool cannot be
    reached (abstract sockets belong to one network namespace), so a clear HeaderError."""
    pool = zarray.SharedPool(8 * MiB)
    try:
        endpoint = bind_any(push, "ipc", shortdir, "shm-netns")
        prefix = ("ip", "netns", "exec", netns)
        with agent(ctx, shortdir, "receiver", endpoint, prefix=prefix) as rx:
            _send_pooled(push, pool, 0, 1)
            zarray.send_array(push, make_array(1, 1, "small"))  # inline still works there
            got = rx.do("recv", "received", count=2)
            assert got["seqs"] == [1]
            assert "not on this host" in got["errors"][0]
            rx.do("exit", "bye")
        wait_until(lambda: pool.leases == 0 or pool.leases == 1, "lease state settled")
    finally:
        pool.close()
    figures.add("shm.other_namespace_refused")


def test_a_pool_leaves_nothing_behind(
    ctx: zmq.Context[Any], shortdir: Path, pull: zmq.Socket[Any]
) -> None:
    """Both sides gone (one SIGKILLed): no /dev/shm entry, and the memory is freed.

    memfd pages show up as Shmem in /proc/meminfo while any process maps them; after
    both processes are gone the 64 MiB pool is no longer there."""

    def shmem() -> int:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("Shmem:"):
                    return int(line.split()[1]) * 1024
        return 0

    before, shm_before, maps_before = shmem(), dev_shm(), pool_mappings()
    endpoint = bind_any(pull, "ipc", shortdir, "shm-gone")
    pull.unbind(endpoint)
    with agent(ctx, shortdir, "sender", endpoint, size=64 * MiB) as tx:
        pull.connect(endpoint)
        tx.do("send", "sent", count=2, kind="pool")
        held = [zarray.recv_array(pull) for _ in range(2)]
        during = shmem()
        tx.child.kill()
    del held
    gc.collect()
    # (<=: a pool of an earlier test may be collected meanwhile.)
    wait_until(lambda: pool_mappings() <= maps_before, "the dead sender's pool unmapped here")
    after = shmem()
    assert during - before >= 60 * MiB  # the pool was reserved and counted ...
    assert after - before < 32 * MiB  # ... and is gone with the processes
    assert dev_shm() == shm_before
