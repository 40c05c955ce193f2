"""The compressed-payload fuzz harness (fuzz/fuzz_compressed.py) in the test run: a
short coverage-guided run under atheris (or its random loop without it), and an
in-process replay of fixed inputs. Either fails on anything but HeaderError, on a
disagreement with the reference decoder or between the two shuffle kernels, and on a
socket left off a message boundary."""

from __future__ import annotations

import importlib
import importlib.util
import random
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

from ._support import REPO
from .conftest import Figures

FUZZ = REPO / "fuzz"
SECONDS = 4


def test_fuzz_compressed_short_run(tmp_path: Path, figures: Figures) -> None:
    if importlib.util.find_spec("atheris") is not None:
        args = [
            f"-max_total_time={SECONDS}",
            "-rss_limit_mb=2048",
            "-timeout=10",
            "-print_final_stats=1",
            f"-artifact_prefix={tmp_path}/",
            str(tmp_path / "corpus"),
        ]
        (tmp_path / "corpus").mkdir()
        pattern = r"stat::number_of_executed_units:\s*(\d+)"
    else:
        args = ["--seconds", str(SECONDS)]
        pattern = r"fuzz_compressed: (\d+) inputs"
    proc = subprocess.run(
        [sys.executable, str(FUZZ / "fuzz_compressed.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    found = re.search(pattern, log)
    assert found, log[-2000:]
    runs = int(found.group(1))
    assert runs > 100, log[-2000:]
    assert not list(tmp_path.glob("crash-*"))
    figures.add("fuzz.compressed_inputs_in_tests", runs)


def test_fuzz_compressed_replay() -> None:
    """300 fixed inputs through the harness function, in this process."""
    if str(FUZZ) not in sys.path:
        sys.path.insert(0, str(FUZZ))
    harness = importlib.import_module("fuzz_compressed")
    import zarray

    limit = zarray.limits.max_decompressed_bytes
    rng = random.Random(2026)
    try:
        for _ in range(300):
            harness.TestOneInput(rng.randbytes(rng.randrange(4, 64)))
        assert harness._lazy.harness is not None
        assert harness._lazy.harness.inputs == 300
    finally:
        harness.close()
        zarray.limits.max_decompressed_bytes = limit  # the harness lowers it


def test_fuzz_compressed_guard_sees_a_decoder_past_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The harness's allocation guard is not vacuous: a decoder that ignored the
    decompressed-size limit (simulated by giving _codecs a limit of 1 TiB while the
    harness's stays 16 MiB) is caught on a zero bomb just over the limit."""
    if str(FUZZ) not in sys.path:
        sys.path.insert(0, str(FUZZ))
    harness = importlib.import_module("fuzz_compressed")
    guard = importlib.import_module("_guard")
    import zarray
    from zarray import _codecs

    limit = zarray.limits.max_decompressed_bytes
    bomb = bytes([0, harness.BOMBS.index(harness.LIMIT + 1), 2, 0])  # zstd, a view
    try:
        harness.TestOneInput(bomb)  # the real decoder refuses it: no finding
        monkeypatch.setattr(
            _codecs, "limits", types.SimpleNamespace(max_decompressed_bytes=1 << 40)
        )
        with pytest.raises(guard.AllocationExceeded, match="allocated"):
            harness.TestOneInput(bomb)
    finally:
        harness.close()
        zarray.limits.max_decompressed_bytes = limit
