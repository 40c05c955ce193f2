"""Shared fixtures and options of the pytest-benchmark suites in bench/.

``pytest bench/`` runs the benchmarks; ``pytest bench/ --benchmark-disable`` (what CI
runs) executes each one once, so that none can rot. By default the suites cover
inproc and ipc and sizes up to 16 MiB; ``--bench-all`` adds tcp, 64 MiB and 256 MiB
arrays and the 1 GiB receiver-memory benchmark. The engine (peers, methods, checks)
is the package ``zarray._bench``, shared with the ``zarray bench`` command.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from zarray import _bench

DEFAULT_TRANSPORTS = ("inproc", "ipc")
DEFAULT_SIZES = ("1KiB", "64KiB", "1MiB", "16MiB")
ALL_SIZES = (*DEFAULT_SIZES, "64MiB", "256MiB")

_REPORT = pytest.StashKey[list[str]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("zarray bench")
    group.addoption(
        "--bench-all",
        action="store_true",
        help="run the full matrix: every transport, arrays up to 256 MiB, 1 GiB memory test",
    )
    group.addoption(
        "--bench-transports",
        metavar="LIST",
        help=f"comma-separated transports (default: {','.join(DEFAULT_TRANSPORTS)}; "
        "all with --bench-all)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_REPORT] = []


def bench_all(config: pytest.Config) -> bool:
    """True when the full matrix was asked for."""
    return bool(config.getoption("--bench-all"))


def benchmarks_disabled(config: pytest.Config) -> bool:
    """True under ``--benchmark-disable``: run each benchmark once, quickly."""
    return bool(config.getoption("benchmark_disable", default=False))


def _transports(config: pytest.Config) -> list[str]:
    text = config.getoption("--bench-transports")
    if text:
        names = [t.strip() for t in str(text).split(",") if t.strip()]
        bad = [t for t in names if t not in _bench.TRANSPORTS]
        if bad:
            raise pytest.UsageError(
                f"--bench-transports: unknown {', '.join(bad)}; choose from "
                f"{', '.join(_bench.TRANSPORTS)}"
            )
        return names
    return list(_bench.TRANSPORTS if bench_all(config) else DEFAULT_TRANSPORTS)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``transport`` (session scope, one peer each) and ``size``."""
    config = metafunc.config
    if "transport" in metafunc.fixturenames:
        metafunc.parametrize("transport", _transports(config), scope="session")
    if "size" in metafunc.fixturenames:
        sizes = ALL_SIZES if bench_all(config) else DEFAULT_SIZES
        metafunc.parametrize("size", [_bench.parse_size(s) for s in sizes], ids=list(sizes))


@pytest.fixture(scope="session")
def link(transport: str) -> Iterator[_bench.Link]:
    """One receiving peer per transport for the whole session, always shut down."""
    with _bench.Link(transport, timeout=120.0) as lk:
        yield lk


def _method_or_skip(name: str) -> _bench.Method:
    method = _bench.METHODS[name]
    missing = method.missing()
    if missing:
        pytest.skip(f"{name} needs {', '.join(missing)} (pip install 'zarray[bench]')")
    return method


@pytest.fixture(scope="session")
def method_or_skip() -> Callable[[str], _bench.Method]:
    """``method_or_skip(name)``: the named method, or skip if its optional package is missing."""
    return _method_or_skip


_ARRAYS: dict[int, np.ndarray[Any, Any]] = {}


def _bench_array(size: int) -> np.ndarray[Any, Any]:
    if size not in _ARRAYS:
        _ARRAYS.clear()  # keep at most one large array alive
        _ARRAYS[size] = _bench.make_array(size)
    return _ARRAYS[size]


@pytest.fixture(scope="session")
def bench_array() -> Callable[[int], np.ndarray[Any, Any]]:
    """``bench_array(size)``: the float64 benchmark array of ``size`` bytes, made once."""
    return _bench_array


@pytest.fixture(scope="session")
def full(pytestconfig: pytest.Config) -> bool:
    """True under ``--bench-all``."""
    return bench_all(pytestconfig)


@pytest.fixture(scope="session")
def quick(pytestconfig: pytest.Config) -> bool:
    """True under ``--benchmark-disable``: each benchmark runs once, measurements are short."""
    return benchmarks_disabled(pytestconfig)


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Append a line to the summary printed at the end of the run (not captured)."""
    lines = request.config.stash[_REPORT]
    return lines.append


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    lines = config.stash.get(_REPORT, [])
    if lines:
        terminalreporter.section("zarray benchmark figures (ratios measured in this run)")
        for line in lines:
            terminalreporter.write_line(line)
