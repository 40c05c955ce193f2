"""The header path alone (pack + unpack + rebuild), for ``bench/test_bench_header.py``.

No socket is involved: each path takes the array and a payload (as ``recv(copy=False)``
would return it, or any other buffer) and returns the rebuilt array: zarray's internal
path with either codec (:func:`header_path`), zarray's public non-socket functions
(:data:`PUBLIC_PATHS`), and the JSON recipe of pyzmq's serialization guide.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from zmq.utils import jsonapi

import zarray
from zarray import deserialize, frombuffer, pack_header, serialize
from zarray._bench.arrays import Array, BenchError

__all__ = [
    "PUBLIC_PATHS",
    "HeaderPath",
    "frombuffer_roundtrip",
    "header_path",
    "json_recipe_header_roundtrip",
    "serialize_roundtrip",
]


def serialize_roundtrip(A: Array, payload: Any) -> Array:
    """``serialize`` on the sender, ``deserialize`` of what arrives: header + payload.

    What ``send_serialized(A, zarray.serialize)`` and ``recv_serialized(zarray.deserialize)``
    run around the socket; the payload frame that arrives stands in for ``A``'s memory.
    The functions are bound at import, as pyzmq binds the hooks it is given: spelling
    them ``zarray.serialize`` adds a module attribute lookup per call (see RESULTS.md).
    """
    header = serialize(A)[0]
    return deserialize([header, payload])


def frombuffer_roundtrip(A: Array, payload: Any) -> Array:
    """``pack_header`` on the sender, ``frombuffer`` of the header and payload on arrival."""
    return frombuffer(pack_header(A), payload)


#: zarray's public non-socket header paths, by name: what a user's own code calls.
PUBLIC_PATHS: dict[str, Callable[[Array, Any], Array]] = {
    "serialize": serialize_roundtrip,
    "frombuffer": frombuffer_roundtrip,
}


def json_recipe_header_roundtrip(A: Array, payload: Any) -> Array:
    """The JSON recipe's header path alone: what send_json/recv_json do, then frombuffer."""
    header = jsonapi.dumps(dict(dtype=str(A.dtype), shape=A.shape))
    md: Any = jsonapi.loads(header)
    result: Array = np.frombuffer(payload, dtype=md["dtype"]).reshape(md["shape"])
    return result


@dataclass(frozen=True)
class HeaderPath:
    """zarray's header path with one codec: ``roundtrip(A, payload) -> array``."""

    name: str
    codec: str
    roundtrip: Callable[[Array, Any], Array]


def header_path(codec: str = "active") -> HeaderPath:
    """Return zarray's pack + unpack + rebuild path using the given header codec.

    Parameters
    ----------
    codec : {"active", "cython", "python"}
        ``"active"`` is what ``send_array``/``recv_array`` use now (the compiled codec
        unless it is missing or ``ZARRAY_PUREPYTHON=1``); the others force one.

    Returns
    -------
    HeaderPath

    Raises
    ------
    BenchError
        If the compiled codec was asked for and is not built.

    Notes
    -----
    The only place in the benchmarks that touches zarray's private modules; if they
    are renamed, only this function changes. The compiled path is exactly what
    ``send_array``/``recv_array`` run around the socket calls:
    ``array_from(pack_header(A), payload)`` (``prepare`` + the numpy C-API fast path).
    The pure-Python path is what ``ZARRAY_PUREPYTHON=1`` runs: for each call, the
    codec bindings of ``zarray._array`` are pointed at ``zarray._header_py`` and the
    fast path is switched off, then restored; those eight attribute stores cost about
    0.1 us, about 2 % of that path's time.
    """
    from zarray import _array, _codec, _header_py

    arr: Any = _array
    array_from, pack_header = _array.array_from, zarray.pack_header
    if codec == "active":
        codec = _codec.IMPLEMENTATION
    if codec == "cython":
        if _codec.IMPLEMENTATION != "cython":
            raise BenchError("the compiled codec is not built (pip install -e .)")
        name = "cython"

        def roundtrip(A: Array, payload: Any) -> Array:
            return array_from(pack_header(A), payload)

    elif codec == "python":
        name = "python"
        pure = (None, None, _header_py.pack, _header_py.unpack)

        def roundtrip(A: Array, payload: Any) -> Array:
            saved = (arr.pack_array, arr.unpack_array, arr.pack, arr.unpack)
            arr.pack_array, arr.unpack_array, arr.pack, arr.unpack = pure
            try:
                return array_from(pack_header(A), payload)
            finally:
                arr.pack_array, arr.unpack_array, arr.pack, arr.unpack = saved

    else:
        raise ValueError(f"unknown codec {codec!r}")
    return HeaderPath(f"zarray ({name})", name, roundtrip)
