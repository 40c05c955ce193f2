"""The package's type hints: mypy --strict passes on src/zarray, and the overloads give
callers the types they should see."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("mypy") is None, reason="mypy is not installed"
)


def _mypy(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_mypy_strict_on_the_package() -> None:
    # The [tool.mypy] section of pyproject.toml says strict = true, files = src/zarray.
    result = _mypy()
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_finds_errors_at_all(tmp_path: Path) -> None:
    # The check above could pass vacuously (say, if mypy checked nothing): make sure
    # the same mypy, with the project's settings, does report a wrong call.
    bad = tmp_path / "bad.py"
    bad.write_text("import zarray\nzarray.send_array(1, 2, flags='x')\n")
    result = _mypy("--config-file", str(REPO / "pyproject.toml"), str(bad))
    assert result.returncode == 1, result.stdout
    assert "bad.py:2" in result.stdout, result.stdout


USER_CODE = """
from typing import Any

import numpy as np
import zmq
from typing_extensions import assert_type

import zarray
import zarray.asyncio

NDArray = np.ndarray[Any, Any]
Received = tuple[list[NDArray] | dict[str, NDArray], dict[str, Any]]


def sync(sock: zmq.Socket[bytes], flag: bool) -> None:
    assert_type(zarray.recv_array(sock), NDArray)
    assert_type(zarray.recv_array(sock, envelope=True), tuple[list[bytes], NDArray])
    assert_type(zarray.recv_array(sock, envelope=flag), NDArray | tuple[list[bytes], NDArray])
    assert_type(zarray.recv_arrays(sock), Received)
    assert_type(zarray.recv_arrays(sock, envelope=True), tuple[list[bytes], Received])
    assert_type(zarray.send_array(sock, np.ones(3)), zmq.MessageTracker | None)
    tracker = zarray.send_arrays(sock, {"a": np.ones(3)}, meta={"n": 1})
    assert_type(tracker, zmq.MessageTracker | None)
    assert_type(zarray.deserialize(zarray.serialize(np.ones(3))), NDArray)
    sock.send_serialized(np.ones(3), zarray.serialize, copy=False)
    assert_type(sock.recv_serialized(zarray.deserialize, copy=False), NDArray)
    ctx = zarray.Context()
    s = ctx.socket(zmq.PULL)
    assert_type(s, zarray.Socket)
    assert_type(s.recv_array(envelope=True), tuple[list[bytes], NDArray])
    assert_type(s.recv_arrays(), Received)


async def asynchronous() -> None:
    ctx = zarray.asyncio.Context()
    s = ctx.socket(zmq.PULL)
    assert_type(s, zarray.asyncio.Socket)
    assert_type(await s.recv_array(), NDArray)
    assert_type(await s.recv_array(envelope=True), tuple[list[bytes], NDArray])
    assert_type(await s.recv_arrays(envelope=True), tuple[list[bytes], Received])
    assert_type(await s.send_array(np.ones(3), format="json"), zmq.MessageTracker | None)
"""


def test_overloads_seen_by_callers(tmp_path: Path) -> None:
    pytest.importorskip("typing_extensions")
    user = tmp_path / "user.py"
    user.write_text(textwrap.dedent(USER_CODE))
    result = _mypy("--config-file", str(REPO / "pyproject.toml"), str(user))
    assert result.returncode == 0, result.stdout + result.stderr
