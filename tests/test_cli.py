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


# Runs ``python -m zarray`` with matplotlib unimportable, as on a machine without the
# bench extra: a None entry in sys.modules makes every ``import matplotlib`` fail.
_NO_MATPLOTLIB = (
    "import runpy, sys; sys.modules['matplotlib'] = None; "
    "runpy.run_module('zarray', run_name='__main__', alter_sys=True)"
)


def test_plot_without_matplotlib_fails_before_measuring(tmp_path: Path) -> None:
    png = tmp_path / "bench.png"
    # Arguments that would measure for many minutes (7 methods x 4 batches x 30 s):
    # getting past the check would hit the subprocess timeout instead of returning.
    args = ["bench", "--plot", str(png), "--sizes", "64MiB", "--time", "30", "--no-progress"]
    result = _run([sys.executable, "-c", _NO_MATPLOTLIB, *args], cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "--plot needs matplotlib" in result.stderr
    assert 'pip install "zarray[bench]"' in result.stderr
    assert result.stdout == ""  # not even the banner that precedes the measurements
    assert not png.exists()
