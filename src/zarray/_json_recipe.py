"""The JSON-header recipe of pyzmq's serialization guide, read and written safely.

Many programs (imagezmq among them) send an array the way pyzmq's guide shows::

    md = dict(dtype=str(A.dtype), shape=A.shape)
    socket.send_json(md, flags | zmq.SNDMORE)
    socket.send(A, flags, copy=copy, track=track)

and read it back with ``numpy.frombuffer(buf, dtype=md["dtype"]).reshape(md["shape"])``.
This module lets zarray talk to them in both directions, without trusting the peer:

* The JSON frame is at most ``MAX_RECIPE`` bytes, must be a JSON object with a
  ``"dtype"`` string and a ``"shape"`` list of non-negative integers (other keys, such
  as imagezmq's ``"msg"``, are the message's meta: :func:`extras_of` reads them for
  ``recv_arrays``, and :func:`encode` writes them for ``send_array(..., meta=...)``).
* The dtype string is matched against a strict whitelist (numpy's names of simple
  dtypes, as ``str(dtype)`` writes them, and type strings such as ``"<f8"``) before
  numpy sees it; it is never evaluated. Object, structured and zero-size dtypes are
  refused.
* The shape passes the geometry checks of zarray's own header (docs/FORMAT.md, with
  the same function), and the payload length must equal ``itemsize * prod(shape)``,
  before anything is viewed.

Only :class:`zarray.HeaderError` comes out of :func:`parse`.

The recipe has no byte order beyond the dtype string (numpy's names such as
``"float64"`` mean the *host's* order), no strides (the data is C-contiguous) and no
read-only bit, so :func:`encode` sends a copy of arrays that are not C-contiguous or
not writeable.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from zarray._dtypes import encode_dtype
from zarray._header_py import check_geometry
from zarray.errors import HeaderError, UnsupportedArrayError

__all__ = [
    "MAX_RECIPE",
    "RecipeFields",
    "encode",
    "extras_of",
    "is_view",
    "looks_like_recipe",
    "parse",
    "parse_header",
]

#: Largest JSON frame accepted as a recipe header, in bytes.
MAX_RECIPE = 65536
_MAX_NDIM = 64
_INT64_MAX = 2**63 - 1

# A unit multiple never starts with 0: numpy accepts "datetime64[0s]", and then divides
# by that 0 when it compares such a dtype with another datetime (SIGFPE).
_UNIT = r"(?:\[(?:[1-9][0-9]{0,9})?(?:Y|M|W|D|h|m|s|ms|us|ns|ps|fs|as)\])?"
# numpy's own names of simple dtypes, as str(dtype) prints native-order ones.
_NAME = (
    r"bool|u?int(?:8|16|32|64)|float(?:16|32|64|96|128)|complex(?:64|128|192|256)"
    r"|longdouble|clongdouble|(?:datetime64|timedelta64)" + _UNIT
)
# Type strings, with or without a byte-order character: "<f8", "f8", "|S5", ">M8[ns]".
_CODE = r"[<>|=]?(?:[biufcSUV][0-9]{1,10}|[mM]8" + _UNIT + r")"
_DTYPE = re.compile(rf"(?:{_NAME}|{_CODE})")

# (descriptor, structured, itemsize, shape, strides, offset, nbytes, readonly, codec,
# filter, kind): the field tuple of zarray._codec.unpack, so zarray._array.rebuild can
# build the array. A recipe payload is always plain: codec, filter and kind are 0.
RecipeFields = tuple[
    bytes, bool, int, tuple[int, ...], tuple[int, ...], int, int, bool, int, int, int
]


def looks_like_recipe(prefix: bytes) -> bool:
    """Whether a frame starting with ``prefix`` may be a recipe header (a JSON object)."""
    return prefix[:1] == b"{"


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _dtype(text: Any) -> np.dtype[Any]:
    if not isinstance(text, str):
        raise HeaderError(f"JSON recipe 'dtype' must be a string, got {type(text).__name__}")
    if not _DTYPE.fullmatch(text):
        raise HeaderError(f"JSON recipe dtype {text[:40]!r} is not a dtype zarray accepts")
    try:
        dt = np.dtype(text)
    except (TypeError, ValueError, OverflowError) as exc:
        raise HeaderError(f"invalid JSON recipe dtype {text[:40]!r}: {exc}") from None
    if dt.kind not in "biufcmMSUV" or dt.hasobject or dt.fields is not None:
        raise HeaderError(f"JSON recipe dtype {text[:40]!r} is not a simple dtype")
    if dt.itemsize == 0:
        raise HeaderError(f"JSON recipe dtype {text[:40]!r} has no size")
    return dt


def _c_strides(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    strides = []
    step = itemsize
    for n in reversed(shape):
        strides.append(step)
        step *= max(n, 1)
    return tuple(reversed(strides))


def parse_header(head: Any) -> RecipeFields:
    """Parse a recipe header frame alone; its ``nbytes`` is what the shape needs.

    Returns the header fields (see :data:`RecipeFields`) of a C-contiguous array, with
    the dtype given by its exact type string. Raises HeaderError for anything else.
    """
    view = memoryview(head)
    if view.nbytes > MAX_RECIPE:
        raise HeaderError(
            f"JSON recipe header of {view.nbytes} bytes exceeds the maximum of {MAX_RECIPE}"
        )
    try:
        doc = json.loads(view.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise HeaderError(f"JSON recipe header is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or "dtype" not in doc or "shape" not in doc:
        raise HeaderError("JSON recipe header must be an object with 'dtype' and 'shape'")
    dt = _dtype(doc["dtype"])
    raw = doc["shape"]
    if not isinstance(raw, list) or len(raw) > _MAX_NDIM:
        raise HeaderError(f"JSON recipe 'shape' must be a list of at most {_MAX_NDIM} integers")
    if not all(_is_int(n) and 0 <= n <= _INT64_MAX for n in raw):
        raise HeaderError(f"JSON recipe shape {str(raw)[:60]} is not a list of dimensions")
    shape: tuple[int, ...] = tuple(raw)
    itemsize = dt.itemsize
    strides = _c_strides(shape, itemsize)
    total = itemsize * math.prod(shape)
    # The very checks of zarray's own header (dimensions of 0 skipped in the overflow
    # product, as numpy does), so that no later huge dimension slips past a 0.
    # (The payload length the shape needs is passed capped, so that an overflowing shape
    # is reported as such rather than as an oversized payload.)
    check_geometry(shape, strides, itemsize, 0, min(total, _INT64_MAX))
    return (dt.str.encode("ascii"), False, itemsize, shape, strides, 0, total, False, 0, 0, 0)


def parse(head: Any, payload_size: int) -> RecipeFields:
    """Parse a recipe header frame for a payload of ``payload_size`` bytes.

    As :func:`parse_header`, and the payload length must be what the shape needs.
    """
    fields = parse_header(head)
    if fields[6] != payload_size:
        raise HeaderError(
            f"payload is {payload_size} bytes, but the JSON recipe "
            f"{fields[0].decode()} {fields[3]} needs {fields[6]}"
        )
    return fields


def encode(A: Any, meta: Mapping[str, Any] | None = None) -> tuple[bytes, Any]:
    """Return ``(json_header, payload)`` as pyzmq's guide sends them.

    The header is ``json.dumps({**meta, "dtype": str(A.dtype), "shape": [...]})`` encoded
    as UTF-8 (the bytes ``socket.send_json`` writes; imagezmq puts its ``"msg"`` text
    there); the payload is ``A``'s memory when ``A`` is C-contiguous and writeable,
    otherwise a C-contiguous copy. Raises UnsupportedArrayError for arrays the recipe
    cannot describe (structured or object dtypes, non-arrays) and for a ``meta`` that is
    not a dict of str keys that standard JSON encodes, or that names ``dtype`` or
    ``shape``.
    """
    extra = _check_meta(meta)
    if not isinstance(A, np.ndarray) or isinstance(A, np.ma.MaskedArray):
        raise UnsupportedArrayError(
            f"expected a numpy.ndarray, got {type(A).__name__}; convert with numpy.asarray()"
        )
    dt = A.dtype
    _, structured, _, buffer_ok = encode_dtype(dt)  # refuses objects, StringDType, ...
    text = str(dt)
    if structured or dt.subdtype is not None or not _DTYPE.fullmatch(text):
        raise UnsupportedArrayError(
            f"dtype {dt!r} cannot travel in pyzmq's JSON recipe (only simple dtypes can); "
            "send it in zarray's own format"
        )
    if not (A.flags.c_contiguous and A.flags.writeable):
        # The recipe has no strides and no read-only bit: a C-contiguous copy stands in
        # for the first, and a writeable copy for the second, since over inproc the
        # receiver would otherwise get a writeable view of memory the sender made
        # read-only (an immutable bytes object, a read-only memmap). The one copy.
        A = np.array(A, order="C", copy=True)
    doc = {**extra, "dtype": text, "shape": list(A.shape)}
    header = json.dumps(doc).encode("utf-8")
    # numpy refuses to export datetime64/timedelta64 through the buffer protocol; a
    # flat byte view of the same (C-contiguous) memory carries the same bytes.
    payload = A if buffer_ok else A.reshape(-1).view(np.uint8)
    return header, payload


def is_view(payload: Any, A: Any) -> bool:
    """Whether a payload from :func:`encode` is ``A``'s own memory rather than a copy."""
    if payload is A:
        return True
    address = payload.__array_interface__["data"][0]
    return bool(address == A.__array_interface__["data"][0])


def _check_meta(meta: Mapping[str, Any] | None) -> dict[str, Any]:
    if meta is None:
        return {}
    if not isinstance(meta, Mapping):
        raise UnsupportedArrayError(f"meta must be a dict, got {type(meta).__name__}")
    for key in meta:
        if not isinstance(key, str):
            raise UnsupportedArrayError(f"meta keys must be str, got {type(key).__name__}")
        if key in ("dtype", "shape"):
            raise UnsupportedArrayError(
                f"meta cannot carry {key!r}: the recipe's own {key!r} describes the array"
            )
    try:
        json.dumps(dict(meta), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise UnsupportedArrayError(
            f"meta cannot be encoded as standard JSON: {exc} (convert numpy scalars with .item())"
        ) from None
    return dict(meta)


def extras_of(head: Any) -> dict[str, Any]:
    """The keys of a recipe header besides ``dtype`` and ``shape`` (imagezmq's ``"msg"``).

    ``head`` has already been accepted by :func:`parse_header` (so it is a JSON object
    of at most :data:`MAX_RECIPE` bytes); this reads it again for its other keys.
    """
    doc = json.loads(memoryview(head).tobytes().decode("utf-8"))
    return {k: v for k, v in doc.items() if k not in ("dtype", "shape")}
