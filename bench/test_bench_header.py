"""The header path alone: pack + unpack + rebuild for a (480, 640, 3) uint8 image.

zarray with its compiled codec, zarray with the pure-Python codec
(``zarray._header_py``), and the JSON recipe of pyzmq's serialization guide
(``send_json`` of ``{dtype, shape}``, ``recv_json``, ``numpy.frombuffer(...).reshape``).
No socket is involved: the payload is a ``zmq.Frame`` holding the image's bytes, as
``recv(copy=False)`` would return it. Issue 4's target: zarray at least 15x faster
than the JSON recipe; the ratio is printed in the run's summary.
"""

from __future__ import annotations

import timeit
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import zmq

from zarray import _bench

SHAPE = (480, 640, 3)


def _paths() -> dict[str, Callable[[Any, Any], Any]]:
    paths: dict[str, Callable[[Any, Any], Any]] = {}
    for codec in ("cython", "python"):
        try:
            paths[codec] = _bench.header_path(codec).roundtrip
        except _bench.BenchError:
            pass
    paths["json"] = _bench.json_recipe_header_roundtrip
    return paths


PATHS = _paths()


@pytest.fixture(scope="module")
def image() -> tuple[np.ndarray[Any, Any], zmq.Frame]:
    A = np.arange(np.prod(SHAPE), dtype=np.uint64).astype(np.uint8).reshape(SHAPE)
    return A, zmq.Frame(A.tobytes())


@pytest.mark.parametrize("path", ["cython", "python", "json"])
def test_header_path(
    benchmark: Any, image: tuple[np.ndarray[Any, Any], zmq.Frame], path: str
) -> None:
    if path not in PATHS:
        pytest.skip("the compiled codec is not built (pip install -e .)")
    fn = PATHS[path]
    A, payload = image
    out = fn(A, payload)
    assert out.shape == SHAPE
    assert out.dtype == np.uint8
    assert out[-1, -1, -1] == A[-1, -1, -1]
    benchmark.group = "header path (480, 640, 3) uint8: pack + unpack + rebuild"
    benchmark(fn, A, payload)


def _best(fn: Callable[[Any, Any], Any], args: tuple[Any, Any], seconds: float) -> float:
    """Best per-call time over 5 repeats of about ``seconds / 5`` each."""
    number = max(1, int(seconds / 5 / max(timeit.timeit(lambda: fn(*args), number=50) / 50, 1e-9)))
    return min(timeit.repeat(lambda: fn(*args), number=number, repeat=5)) / number


def test_header_ratio(
    quick: bool,
    image: tuple[np.ndarray[Any, Any], zmq.Frame],
    report: Callable[[str], None],
) -> None:
    """Measure the three paths side by side and report JSON / zarray (target: >= 15x)."""
    seconds = 0.2 if quick else 2.0
    A, payload = image
    times = {name: _best(fn, (A, payload), seconds) for name, fn in PATHS.items()}
    active = _bench.header_path("active").codec
    z = times[active]
    parts = ", ".join(f"{name} {t * 1e6:.2f} µs" for name, t in times.items())
    report(
        f"header path {SHAPE} uint8 (pack+unpack+rebuild): {parts}; "
        f"JSON / zarray ({active}) = {times['json'] / z:.1f}x (target >= 15x)"
    )
    if "python" in times and active != "python":
        report(f"  pure-Python codec / {active} = {times['python'] / z:.1f}x")
