"""Fixtures of the reliability suite: contexts and sockets that always close, short
ipc directories, the ``slow`` switch, and the figures the suite reports.

Tests marked ``slow`` (the full 100,000 / 1,000 message and cycle counts) run only with
``--runslow`` (added by ``tests/conftest.py``) or with ``ZARRAY_RUNSLOW=1``.

Figures: tests record what they verified (messages, faults, RSS growth) through the
``figures`` fixture, *after* their assertions, so a figure is only counted when the
test that produced it passed. They are printed at the end of the run and, when
``ZARRAY_RELIABILITY_FIGURES`` names a file, written there as JSON for
``tools/reliability_summary.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from ._support import HANG_GUARD

_FIGURES_ENV = "ZARRAY_RELIABILITY_FIGURES"


class Figures:
    """Counters and values that the suite reports; sums for counters, last value else."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def add(self, key: str, amount: float = 1) -> None:
        """Add ``amount`` to counter ``key``."""
        self.values[key] = self.values.get(key, 0) + amount

    def put(self, key: str, value: Any) -> None:
        """Record ``value`` under ``key``, replacing what was there."""
        self.values[key] = value

    def append(self, key: str, value: Any) -> None:
        """Append ``value`` to the list under ``key``."""
        self.values.setdefault(key, []).append(value)


_FIGURES = Figures()


def _runslow(config: pytest.Config) -> bool:
    try:
        opt = bool(config.getoption("--runslow"))
    except ValueError:  # tests/conftest.py did not add the option
        opt = False
    return opt or os.environ.get("ZARRAY_RUNSLOW", "") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``slow`` reliability tests unless asked for (``--runslow``/ZARRAY_RUNSLOW=1)."""
    if _runslow(config):
        return
    skip = pytest.mark.skip(reason="slow variant: run with --runslow or ZARRAY_RUNSLOW=1")
    here = Path(__file__).parent
    for item in items:
        if "slow" in item.keywords and here in Path(str(item.path)).parents:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the figures recorded by the tests that passed."""
    if not _FIGURES.values:
        return
    terminalreporter.section("zarray reliability figures")
    for key in sorted(_FIGURES.values):
        terminalreporter.write_line(f"{key}: {_FIGURES.values[key]}")


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Write the figures as JSON where ``ZARRAY_RELIABILITY_FIGURES`` says."""
    path = os.environ.get(_FIGURES_ENV)
    if path:
        Path(path).write_text(json.dumps(_FIGURES.values, indent=2, sort_keys=True))


@pytest.fixture(scope="session")
def figures() -> Figures:
    """The suite's figures recorder."""
    return _FIGURES


@pytest.fixture
def shortdir() -> Iterator[Path]:
    """A fresh directory with a short path, for ipc endpoints (sun_path is 108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="zr-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class _TrackedContext(zmq.Context):  # type: ignore[type-arg]
    """A context that keeps its sockets alive until the fixture closes them.

    Without the strong references, a socket that a test drops would be collected
    unclosed (a ResourceWarning, an error under the suite's warnings policy).
    """

    # Declared on the class: pyzmq's attribute setter treats unknown names as options.
    kept: list[zmq.Socket[Any]] = []  # noqa: RUF012

    def __init__(self) -> None:
        super().__init__()
        self.kept = []

    def socket(self, socket_type: int, **kwargs: Any) -> zmq.Socket[Any]:  # type: ignore[override]
        sock: zmq.Socket[Any] = super().socket(socket_type, **kwargs)
        self.kept.append(sock)
        return sock


@pytest.fixture
def ctx() -> Iterator[zmq.Context[Any]]:
    """A fresh context whose sockets are all closed with linger=0 at the end."""
    context = _TrackedContext()
    try:
        yield context
    finally:
        for sock in context.kept:
            sock.close(linger=0)
        context.kept.clear()
        context.term()


@pytest.fixture
def make_socket(ctx: zmq.Context[Any]) -> Callable[..., zmq.Socket[Any]]:
    """Factory of sockets with hang-guard timeouts; ``ctx`` closes them all."""

    def make(kind: int, **options: int) -> zmq.Socket[Any]:
        sock = ctx.socket(kind)
        sock.rcvtimeo = int(HANG_GUARD * 1000)
        sock.sndtimeo = int(HANG_GUARD * 1000)
        sock.linger = 0
        for name, value in options.items():
            sock.setsockopt(getattr(zmq, name.upper()), value)
        return sock

    return make
