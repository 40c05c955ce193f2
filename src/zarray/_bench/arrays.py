"""What the benchmark sends and how the receiver checks it.

Sizes (parsed from the command line, formatted for tables), the 1-d array of each size
(element ``i`` is ``i % PATTERN``, so any element can be predicted), the few probes the
receiver checks on every message, and :class:`BenchError`, which every part of the
engine raises when a run cannot go on or a method delivered a wrong array.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_SIZES",
    "PATTERN",
    "Array",
    "BenchError",
    "Expected",
    "GiB",
    "KiB",
    "MiB",
    "check_received",
    "check_sizes",
    "format_size",
    "make_array",
    "parse_size",
    "parse_sizes",
]

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

DEFAULT_SIZES = (KiB, 64 * KiB, MiB, 16 * MiB, 64 * MiB)

#: Values of a benchmark array cycle through 0..PATTERN-1, which every numeric dtype
#: holds exactly (int8 included), so the receiver can predict any element.
PATTERN = 101

Array = np.ndarray[Any, Any]


class BenchError(RuntimeError):
    """A benchmark could not run, or a method delivered a wrong array."""


# ---------------------------------------------------------------------------
# Sizes


_UNITS = {
    "": 1,
    "b": 1,
    "k": KiB,
    "kib": KiB,
    "m": MiB,
    "mib": MiB,
    "g": GiB,
    "gib": GiB,
}


def parse_size(text: str) -> int:
    """Parse a size such as ``"64KiB"``, ``"1.5MiB"``, ``"4096"`` or ``"1 GiB"``.

    Parameters
    ----------
    text : str
        A number followed by an optional binary unit: B, K/KiB, M/MiB, G/GiB
        (case-insensitive; K, M and G are binary too).

    Returns
    -------
    int
        The size in bytes.

    Raises
    ------
    ValueError
        If the text is not a positive size in whole bytes.
    """
    s = text.strip().replace(" ", "").replace("_", "")
    i = len(s)
    while i and s[i - 1].isalpha():
        i -= 1
    number, unit = s[:i], s[i:].lower()
    if unit not in _UNITS or not number:
        raise ValueError(
            f"invalid size {text!r}: use a number with an optional unit B, KiB, MiB or GiB "
            "(e.g. 64KiB)"
        )
    try:
        value = float(number) * _UNITS[unit]
    except ValueError:
        raise ValueError(f"invalid size {text!r}: {number!r} is not a number") from None
    if not math.isfinite(value) or value < 1 or value != int(value):
        raise ValueError(f"invalid size {text!r}: must be a positive whole number of bytes")
    return int(value)


def parse_sizes(text: str) -> list[int]:
    """Parse a comma-separated list of sizes (see :func:`parse_size`)."""
    parts = [p for p in text.split(",") if p.strip()]
    if not parts:
        raise ValueError("no sizes given")
    return [parse_size(p) for p in parts]


def format_size(nbytes: int) -> str:
    """Format a byte count with the largest binary unit that divides it evenly, or one decimal."""
    for unit, scale in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if nbytes >= scale:
            value = nbytes / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{nbytes} B"


# ---------------------------------------------------------------------------
# Benchmark arrays and the receiver's checks


def make_array(nbytes: int, dtype: Any = np.float64) -> Array:
    """Return the 1-d benchmark array of ``nbytes`` bytes: element ``i`` is ``i % PATTERN``.

    Raises
    ------
    ValueError
        If the dtype is not numeric or ``nbytes`` is not a multiple of its itemsize.
    """
    dt = _bench_dtype(dtype)
    if nbytes % dt.itemsize or nbytes < dt.itemsize:
        raise ValueError(
            f"size {nbytes} B is not a positive multiple of {dt}'s itemsize ({dt.itemsize} B)"
        )
    return np.resize(np.arange(PATTERN, dtype=dt), nbytes // dt.itemsize)


def check_sizes(sizes: Sequence[int], dtype: Any) -> np.dtype[Any]:
    """Check that ``dtype`` is numeric and every size a positive multiple of its itemsize.

    Returns
    -------
    numpy.dtype
        The dtype.

    Raises
    ------
    ValueError
        Saying which size or dtype is wrong.
    """
    dt = _bench_dtype(dtype)
    for n in sizes:
        if n < dt.itemsize or n % dt.itemsize:
            raise ValueError(
                f"size {format_size(n)} is not a positive multiple of {dt}'s itemsize "
                f"({dt.itemsize} B)"
            )
    return dt


def _bench_dtype(dtype: Any) -> np.dtype[Any]:
    try:
        dt: np.dtype[Any] = np.dtype(dtype)
    except TypeError as exc:
        raise ValueError(f"invalid dtype {dtype!r}: {exc}") from None
    if dt.kind not in "iufc":
        raise ValueError(f"dtype {dt} is not numeric; use an int, uint, float or complex dtype")
    return dt


@dataclass(frozen=True)
class Expected:
    """What the receiver must find: dtype, length, and a few probed elements.

    The probes (first, middle and last element) catch truncation, reordering,
    wrong dtypes and reversed or transposed data at the cost of three reads, so
    that checking every message does not distort the timing of small ones.
    """

    nbytes: int
    dtype: str
    shape: tuple[int, ...]
    probes: tuple[tuple[int, Any], ...]
    probe_bytes: tuple[tuple[int, int, bytes], ...]

    @classmethod
    def of(cls, nbytes: int, dtype: str) -> Expected:
        """Describe the array :func:`make_array` makes for ``nbytes`` and ``dtype``."""
        dt = _bench_dtype(dtype)
        n = nbytes // dt.itemsize
        indices = sorted({0, n // 2, n - 1})
        values = [np.array(i % PATTERN, dt) for i in indices]
        return cls(
            nbytes=nbytes,
            dtype=dt.str,
            shape=(n,),
            probes=tuple((i, v.item()) for i, v in zip(indices, values, strict=True)),
            probe_bytes=tuple(
                (i * dt.itemsize, (i + 1) * dt.itemsize, v.tobytes())
                for i, v in zip(indices, values, strict=True)
            ),
        )


def check_received(obj: Any, expected: Expected, kind: str) -> None:
    """Raise :class:`BenchError` unless ``obj`` is the expected array (or raw buffer).

    Parameters
    ----------
    obj : numpy.ndarray or bytes-like
        What the method's receive function returned.
    expected : Expected
        What was sent.
    kind : {"array", "buffer"}
        ``"array"``: an ndarray with the sent dtype and shape; ``"buffer"``: raw bytes.
    """
    if kind == "array":
        if not isinstance(obj, np.ndarray):
            raise BenchError(f"received {type(obj).__name__}, expected numpy.ndarray")
        if obj.shape != expected.shape or obj.dtype.str != expected.dtype:
            raise BenchError(
                f"received {obj.dtype.str} array of shape {obj.shape}, expected "
                f"{expected.dtype} of shape {expected.shape}"
            )
        for index, value in expected.probes:
            got = obj.item(index)
            if got != value:
                raise BenchError(f"element {index} is {got!r}, expected {value!r}")
        return
    view = memoryview(obj)
    if view.nbytes != expected.nbytes:
        raise BenchError(f"received {view.nbytes} bytes, expected {expected.nbytes}")
    for start, stop, value in expected.probe_bytes:
        if view[start:stop] != value:
            raise BenchError(f"bytes {start}:{stop} differ from what was sent")
