"""The benchmark engine itself: sizes, checks, a broken method, and the command.

Not benchmarks: these make sure a broken method cannot look fast and that
``zarray bench`` parses its arguments, runs, and exits as documented.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from zarray import _bench
from zarray.__main__ import main


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1KiB", 1024), ("64 KiB", 65536), ("1.5MiB", 1572864), ("4096", 4096), ("2g", 2**31)],
)
def test_parse_size(text: str, expected: int) -> None:
    assert _bench.parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "KiB", "1.5", "-1KiB", "1 parsec", "nanKiB", "0"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid size"):
        _bench.parse_size(text)


def test_format_size() -> None:
    assert [_bench.format_size(n) for n in (512, 1024, 1536, 64 * 2**20)] == [
        "512 B",
        "1 KiB",
        "1.5 KiB",
        "64 MiB",
    ]


@pytest.mark.parametrize("dtype", ["float64", "int8", "uint16", "complex64"])
def test_check_received_accepts_the_array(dtype: str) -> None:
    A = _bench.make_array(4096, dtype)
    exp = _bench.Expected.of(A.nbytes, A.dtype.str)
    _bench.check_received(A, exp, "array")
    _bench.check_received(A.tobytes(), exp, "buffer")


@pytest.mark.parametrize(
    "wrong",
    [
        lambda A: A[::-1].copy(),  # reversed
        lambda A: A[:-1],  # truncated
        lambda A: A.astype(np.float32),  # wrong dtype
        lambda A: A.reshape(2, -1),  # wrong shape
        lambda A: np.zeros_like(A),  # wrong content
        lambda A: A.tobytes(),  # not an array
    ],
)
def test_check_received_rejects(wrong: Any) -> None:
    A = _bench.make_array(4096)
    exp = _bench.Expected.of(A.nbytes, A.dtype.str)
    with pytest.raises(_bench.BenchError):
        _bench.check_received(wrong(A), exp, "array")


@pytest.fixture
def broken_method() -> Iterator[_bench.Method]:
    """A method that drops the last element; registered for an inproc (same-process) peer."""

    def recv(sock: Any) -> Any:
        return _bench.METHODS["zarray"].recv(sock)[:-1]

    m = dataclasses.replace(_bench.METHODS["zarray"], name="broken", recv=recv)
    _bench.METHODS["broken"] = m
    try:
        yield m
    finally:
        del _bench.METHODS["broken"]


def test_broken_method_fails_instead_of_looking_fast(broken_method: _bench.Method) -> None:
    A = _bench.make_array(64 * 1024)
    with _bench.Link("inproc", timeout=10) as link:
        with pytest.raises(_bench.BenchError, match="broken: message 0"):
            link.stream(broken_method, A, 50)
        # The peer consumed the rest of the batch and stays usable.
        assert link.stream(_bench.METHODS["zarray"], A, 50) > 0
        res = _bench.measure_many(
            link, [broken_method, _bench.METHODS["raw"]], A, seconds=0.01, repeat=1
        )
    assert res[0].error is not None
    assert "FAILED" in _bench.format_table(res)
    assert res[1].error is None


def test_command_runs_and_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "bench.png"
    status = main(
        [
            "bench",
            "--transport",
            "inproc",
            "--sizes",
            "1KiB,64KiB",
            "--methods",
            "zarray,json,json-nocopy",
            "--time",
            "0.01",
            "--repeat",
            "1",
            "--no-progress",
            "--plot",
            str(png),
        ]
    )
    out = capsys.readouterr().out
    assert status == 0
    assert "vs raw" in out
    # The summary sets zarray beside every other method, the zero-copy ones included.
    summary = out[out.index("throughput of zarray") :].splitlines()[1:4]
    assert [line.split(":")[0].strip() for line in summary] == [
        "zarray / json",
        "zarray / json-nocopy",
        "zarray / raw",
    ]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "argv",
    [
        ["bench", "--sizes", "12 parsecs"],
        ["bench", "--sizes", "1001"],  # not a multiple of float64's itemsize
        ["bench", "--methods", "zarray,carrier-pigeon"],
        ["bench", "--transport", "udp"],
        ["bench", "--dtype", "object"],
        ["bench", "--time", "0"],
    ],
)
def test_command_rejects_bad_arguments(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err
