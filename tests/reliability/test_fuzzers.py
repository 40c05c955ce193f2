"""The fuzz harnesses in CI: a few seconds each, on both codecs, plus the long and the
instrumented runs behind ``--runslow``.

The bounded run (``python fuzz/run.py``, 30 s per harness) and long runs are documented
in fuzz/run.py and fuzz/README.md; the default test run only proves that every
harness starts, runs under the installed engine on both codecs, and finds nothing in
a short run. With ``--runslow`` (or ``ZARRAY_RUNSLOW=1``): a minute per harness and
codec, and the harnesses against the ASan/UBSan/coverage build of
``fuzz/build_sanitized.py`` (needs clang).
"""

from __future__ import annotations

import json
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ._support import REPO
from .conftest import Figures

FUZZ = REPO / "fuzz"
SECONDS = 4
LONG_SECONDS = 60


def _run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def _fuzz(harness: str, codec: str, seconds: int, tmp_path: Path, *extra: str) -> dict[str, object]:
    report = tmp_path / "fuzz.json"
    proc = _run(
        str(FUZZ / "run.py"),
        "--seconds",
        str(seconds),
        "--harness",
        harness,
        "--codec",
        codec,
        "--artifacts",
        str(tmp_path / "artifacts"),
        "--json",
        str(report),
        *extra,
        timeout=seconds + 900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result: dict[str, object] = json.loads(report.read_text())
    return result


CASES = [
    ("header", "cython"),
    ("recv", "cython"),
    ("send", "cython"),
    ("recv", "python"),
    ("send", "python"),
]


@pytest.mark.parametrize(("harness", "codec"), CASES, ids=[f"{h}-{c}" for h, c in CASES])
def test_fuzz_harness_short_run(harness: str, codec: str, tmp_path: Path, figures: Figures) -> None:
    """``fuzz/run.py`` for a few seconds: no crash, and it really tried inputs."""
    result = _fuzz(harness, codec, SECONDS, tmp_path)
    seeds = len(list((FUZZ / "corpus" / harness).glob("*.bin")))
    assert isinstance(result["total"], int)
    assert result["total"] > seeds, result
    figures.add("fuzz.inputs_in_tests", result["total"])
    figures.add(f"fuzz.inputs_in_tests.{codec}", result["total"])
    figures.put("fuzz.engine", result["engine"])


@pytest.mark.slow
@pytest.mark.parametrize("codec", ["cython", "python"])
@pytest.mark.parametrize("harness", ["header", "recv", "send", "compressed"])
def test_fuzz_harness_long_run(harness: str, codec: str, tmp_path: Path, figures: Figures) -> None:
    """A minute per harness and codec: no crash."""
    result = _fuzz(harness, codec, LONG_SECONDS, tmp_path)
    assert isinstance(result["total"], int)
    assert result["total"] > 0
    figures.add("fuzz.inputs_in_slow_tests", result["total"])


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("clang") is None, reason="clang is needed for the build")
@pytest.mark.parametrize("harness", ["header", "recv", "send", "compressed"])
def test_fuzz_harness_instrumented_run(harness: str, tmp_path: Path, figures: Figures) -> None:
    """The harnesses against the compiled extensions built with ASan, UBSan and
    libFuzzer's coverage (fuzz/build_sanitized.py, built here if missing): no report."""
    if not (FUZZ / "build-sanitized" / "BUILD_INFO.json").exists():
        proc = _run(str(FUZZ / "build_sanitized.py"))
        assert proc.returncode == 0, proc.stdout + proc.stderr
    result = _fuzz(harness, "cython", LONG_SECONDS // 2, tmp_path, "--sanitized")
    runs = result["runs"]
    assert isinstance(runs, list)
    assert runs[0]["instrumented"] is True
    assert isinstance(result["total"], int)
    assert result["total"] > 0
    figures.add("fuzz.inputs_instrumented_in_slow_tests", result["total"])


def test_fallback_engine_runs(tmp_path: Path) -> None:
    """The no-atheris fallback (the harnesses' own mutators and bit flips) drives the
    same harnesses."""
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
    for harness in ("header", "recv", "send", "compressed"):
        line = rf"fuzz_{harness}: [\d,]+ inputs .* 0 crashes: ok"
        assert re.search(line, proc.stdout), proc.stdout


@pytest.mark.skipif(
    not (sys.platform == "linux" and platform.machine() == "x86_64"),
    reason="the corpus holds x86-64 Linux long double headers",
)
def test_seed_corpus_is_current() -> None:
    """The committed seeds are what ``fuzz/make_corpus.py`` makes from today's format."""
    proc = _run(str(FUZZ / "make_corpus.py"), "--check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
