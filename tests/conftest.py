"""Fixtures of the test suite: sockets and contexts that always close, the ``slow``
switch, and both header codecs.

Every socket gets receive and send timeouts of ``common.GUARD_MS`` and ``linger=0``:
a hang guard, so a bug fails the test instead of blocking it. No test uses them to
wait for anything.

``--runslow`` (or ``ZARRAY_RUNSLOW=1``) runs the tests marked ``slow``; they are skipped
otherwise. (tests/reliability/conftest.py relies on this file adding the option.)
"""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import zmq
from common import KINDS, TRANSPORTS, SocketMaker


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--runslow",
        action="store_true",
        default=False,
        help="also run the tests marked slow (full matrices over every transport, soaks)",
    )


def pytest_configure(config: pytest.Config) -> None:
    # When a Hypothesis test fails, its pytest plugin imports libcst to suggest a patch,
    # which triggers this DeprecationWarning in mypy_extensions; under the project's
    # warnings-as-errors policy that would turn the failure report into an INTERNALERROR.
    config.addinivalue_line(
        "filterwarnings", "ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning"
    )


def runslow(config: pytest.Config) -> bool:
    """Whether tests marked ``slow`` run in this session."""
    return bool(config.getoption("--runslow")) or os.environ.get("ZARRAY_RUNSLOW", "") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if runslow(config):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow (or ZARRAY_RUNSLOW=1)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


# -- sockets ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def zmq_context() -> Iterator[zmq.Context[Any]]:
    """One context for the session; every socket on it is closed by ``make_pair``."""
    ctx: zmq.Context[Any] = zmq.Context()
    try:
        yield ctx
    finally:
        ctx.destroy(linger=0)


@pytest.fixture
def make_pair(
    zmq_context: zmq.Context[Any], request: pytest.FixtureRequest
) -> Iterator[SocketMaker]:
    """A ``SocketMaker``: ``make_pair.pair("tcp", "PUSH-PULL")``; closes what it made."""
    where: list[Path] = []
    made: list[Path] = []

    def ipc_dir() -> Path:
        # ipc endpoints live in the test's tmp_path, or in a short directory of our
        # own when that path is too long for a unix socket address (about 100 bytes).
        if not where:
            tmp = Path(request.getfixturevalue("tmp_path"))
            if len(str(tmp)) > 80:
                tmp = Path(tempfile.mkdtemp(prefix="zarray-", dir="/tmp"))
                made.append(tmp)
            where.append(tmp)
        return where[0]

    maker = SocketMaker(zmq_context, ipc_dir)
    try:
        yield maker
    finally:
        maker.close()
        for path in made:
            shutil.rmtree(path, ignore_errors=True)


PAIR_PARAMS = [(t, k) for t in TRANSPORTS for k in KINDS]


@pytest.fixture(params=PAIR_PARAMS, ids=[f"{t}-{k}" for t, k in PAIR_PARAMS])
def pair(
    request: pytest.FixtureRequest, make_pair: SocketMaker
) -> tuple[zmq.Socket[Any], zmq.Socket[Any]]:
    """Connected ``(sender, receiver)``: PAIR or PUSH/PULL over inproc, ipc and tcp."""
    transport, kind = request.param
    return make_pair.pair(transport, kind)


@pytest.fixture
def inproc_pair(make_pair: SocketMaker) -> tuple[zmq.Socket[Any], zmq.Socket[Any]]:
    """Connected ``(sender, receiver)`` PAIR sockets over inproc."""
    return make_pair.pair("inproc")


# -- the two codec implementations -----------------------------------------------------


def _codec_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as exc:  # pragma: no cover - an unbuilt source checkout
        pytest.skip(f"{name} is not importable ({exc}); build it with `pip install -e .`")


CODECS = {"cython": "zarray._header", "python": "zarray._header_py"}


@pytest.fixture(params=list(CODECS))
def codec(request: pytest.FixtureRequest) -> ModuleType:
    """Each header codec in turn: the compiled ``zarray._header`` and its pure twin."""
    return _codec_module(CODECS[request.param])


@pytest.fixture(scope="session")
def twins() -> tuple[ModuleType, ModuleType]:
    """``(compiled, pure)`` codecs, for tests that compare the two."""
    return _codec_module(CODECS["cython"]), _codec_module(CODECS["python"])
