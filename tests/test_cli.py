"""The ``zarray`` command, run as a user runs it: in a subprocess, through both entry
points (the ``zarray`` script and ``python -m zarray``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import zarray


def _run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _command(entry: str) -> list[str]:
    """``python -m zarray``, or the ``zarray`` script that pip put beside this Python."""
    if entry == "module":
        return [sys.executable, "-m", "zarray"]
    script = shutil.which("zarray", path=os.path.dirname(sys.executable))
    if script is None:
        pytest.skip("the zarray script is not installed beside this Python (pip install .)")
    return [script]


@pytest.mark.parametrize("entry", ["module", "script"])
def test_version(entry: str, tmp_path: Path) -> None:
    result = _run([*_command(entry), "--version"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"zarray {zarray.__version__}\n"
    assert zarray.__version__[0].isdigit()
