"""The fuzz harnesses run in CI: a few seconds each, plus a replay of the seed corpus.

The bounded CI run (``python fuzz/run.py``, 30 s per harness) and long runs are
documented in fuzz/run.py; this test only proves that both harnesses start, run
under the installed engine, and find nothing in a short run.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from ._support import REPO
from .conftest import Figures

FUZZ = REPO / "fuzz"
SECONDS = 4


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=300, check=False
    )


@pytest.mark.parametrize("harness", ["header", "recv"])
def test_fuzz_harness_short_run(harness: str, tmp_path: Path, figures: Figures) -> None:
    """``fuzz/run.py`` for a few seconds: no crash, and it really tried inputs."""
    report = tmp_path / "fuzz.json"
    proc = _run(
        str(FUZZ / "run.py"),
        "--seconds",
        str(SECONDS),
        "--harness",
        harness,
        "--artifacts",
        str(tmp_path / "artifacts"),
        "--json",
        str(report),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(report.read_text())
    seeds = len(list((FUZZ / "corpus" / harness).glob("*.bin")))
    assert result["total"] > seeds, result
    figures.add("fuzz.inputs_in_tests", result["total"])
    figures.put("fuzz.engine", result["engine"])


def test_fallback_engine_runs(tmp_path: Path) -> None:
    """The no-atheris fallback (a plain mutational loop) drives the same harnesses."""
    proc = _run(
        str(FUZZ / "run.py"),
        "--seconds",
        "1",
        "--engine",
        "fallback",
        "--artifacts",
        str(tmp_path / "artifacts"),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "engine fallback" in proc.stdout


@pytest.mark.skipif(
    not (sys.platform == "linux" and platform.machine() == "x86_64"),
    reason="the corpus holds x86-64 Linux long double headers",
)
def test_seed_corpus_is_current() -> None:
    """The committed seeds are what ``fuzz/make_corpus.py`` makes from today's format."""
    proc = _run(str(FUZZ / "make_corpus.py"), "--check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
