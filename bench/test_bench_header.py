"""The header path alone: pack + unpack + rebuild for a (480, 640, 3) uint8 image.

zarray's internal path (what ``send_array``/``recv_array`` run around the socket) with
its compiled codec and with the pure-Python codec (``zarray._header_py``); zarray's
public non-socket functions, ``serialize`` + ``deserialize`` (pyzmq's
``send_serialized``/``recv_serialized`` hooks) and ``pack_header`` + ``frombuffer``;
and the JSON recipe of pyzmq's serialization guide (``send_json`` of ``{dtype,
shape}``, ``recv_json``, ``numpy.frombuffer(...).reshape``). No socket is involved: the
payload is a ``zmq.Frame`` holding the image's bytes, as ``recv(copy=False)`` would
return it, and, for the public functions and the recipe, also a ``bytearray``, a
``memoryview`` and the image array itself (``deserialize(serialize(A))``).

Targets (issues 4 and 8): zarray's compiled paths at least 15x faster than the JSON
recipe with the same payload. The ratios are measured side by side in one run and
printed in the run's summary, never asserted.
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
Path = Callable[[Any, Any], Any]


def _paths() -> dict[str, Path]:
    paths: dict[str, Path] = {}
    for codec in ("cython", "python"):
        try:
            paths[codec] = _bench.header_path(codec).roundtrip
        except _bench.BenchError:
            pass
    paths.update(_bench.PUBLIC_PATHS)
    paths["json"] = _bench.json_recipe_header_roundtrip
    return paths


PATHS = _paths()
# What holds the arriving payload; the public functions and the recipe take them all.
# "ndarray" is the sender's array itself, as in ``deserialize(serialize(A))``.
PAYLOADS: dict[str, Callable[[np.ndarray[Any, Any]], Any]] = {
    "zmq.Frame": lambda A: zmq.Frame(A.tobytes()),
    "bytearray": lambda A: bytearray(A.tobytes()),
    "memoryview": lambda A: memoryview(bytearray(A.tobytes())),
    "ndarray": lambda A: A,
}


@pytest.fixture(scope="module")
def image() -> tuple[np.ndarray[Any, Any], zmq.Frame]:
    A = np.arange(np.prod(SHAPE), dtype=np.uint64).astype(np.uint8).reshape(SHAPE)
    return A, zmq.Frame(A.tobytes())


def _check(out: Any, A: np.ndarray[Any, Any], payload: Any) -> None:
    assert out.shape == SHAPE
    assert out.dtype == np.uint8
    assert out[-1, -1, -1] == A[-1, -1, -1]
    # Every path views the payload: none of them may copy the image.
    assert out.__array_interface__["data"][0] == np.frombuffer(payload, np.uint8).ctypes.data


@pytest.mark.parametrize("path", ["cython", "python", "serialize", "frombuffer", "json"])
def test_header_path(
    benchmark: Any, image: tuple[np.ndarray[Any, Any], zmq.Frame], path: str
) -> None:
    if path not in PATHS:
        pytest.skip("the compiled codec is not built (pip install -e .)")
    fn = PATHS[path]
    A, payload = image
    _check(fn(A, payload), A, payload)
    benchmark.group = "header path (480, 640, 3) uint8: pack + unpack + rebuild"
    benchmark(fn, A, payload)


def _best(paths: dict[str, Path], A: Any, payload: Any, seconds: float) -> dict[str, float]:
    """Best per-call time of each path over 5 rounds of about ``seconds / 5`` per path.

    The rounds interleave the paths (one batch of each in turn, five times), so that
    a change of the machine's speed during the run hits them all alike.
    """
    calls = {name: (lambda fn=fn: fn(A, payload)) for name, fn in paths.items()}
    numbers = {
        name: max(1, int(seconds / 5 / max(timeit.timeit(call, number=50) / 50, 1e-9)))
        for name, call in calls.items()
    }
    best = dict.fromkeys(paths, float("inf"))
    for _ in range(5):
        for name, call in calls.items():
            t = timeit.timeit(call, number=numbers[name]) / numbers[name]
            best[name] = min(best[name], t)
    return best


def test_header_ratio(
    quick: bool,
    image: tuple[np.ndarray[Any, Any], zmq.Frame],
    report: Callable[[str], None],
) -> None:
    """Measure every path side by side and report JSON / zarray (target: >= 15x)."""
    seconds = 0.2 if quick else 2.0
    A, frame = image
    times = _best(PATHS, A, frame, seconds)
    active = _bench.header_path("active").codec
    z = times[active]
    parts = ", ".join(f"{name} {t * 1e6:.2f} µs" for name, t in times.items())
    report(
        f"header path {SHAPE} uint8, zmq.Frame payload (pack+unpack+rebuild): {parts}; "
        f"JSON / zarray ({active}) = {times['json'] / z:.1f}x (target >= 15x)"
    )
    if "python" in times and active != "python":
        report(f"  pure-Python codec / {active} = {times['python'] / z:.1f}x")
    # The public functions against the recipe, with each kind of payload buffer.
    for kind, make in PAYLOADS.items():
        payload = make(A)
        names = [*_bench.PUBLIC_PATHS, "json"]
        for name in names:
            _check(PATHS[name](A, payload), A, payload)
        t = _best({name: PATHS[name] for name in names}, A, payload, seconds)
        ratios = ", ".join(
            f"{name} {t[name] * 1e6:.2f} µs = {t['json'] / t[name]:.1f}x"
            for name in _bench.PUBLIC_PATHS
        )
        report(
            f"  public API, {kind} payload: JSON {t['json'] * 1e6:.2f} µs; {ratios} "
            "faster than JSON (target >= 15x)"
        )
