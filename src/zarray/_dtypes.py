"""Dtype descriptors: numpy dtype <-> the bytes carried in a header (docs/FORMAT.md).

A simple dtype travels as its exact type string (``dtype.str``: byte order, kind,
itemsize and, for datetimes, the unit), checked against a strict pattern before numpy
sees it. A structured dtype travels as a small JSON document listing names, formats,
offsets, titles, itemsize and the aligned flag, nested as needed. Neither form is ever
evaluated or unpickled; numpy only receives type strings that passed the pattern and
plain lists, dicts and ints.

Both directions are cached, because the same few dtypes go by on every message.
"""

from __future__ import annotations

import json
import re
import reprlib
import sys
from typing import Any, Literal

import numpy as np

from zarray import _stdjson, limits
from zarray._header_py import MAX_DESCR
from zarray.errors import HeaderError, UnsupportedArrayError

__all__ = ["EncodedDtype", "brief", "decode_dtype", "encode_dtype"]

# Byte order, kind, itemsize; datetimes may carry a [unit] or [multiple unit]. The size
# never starts with 0: numpy reads "S0", "U0" and "V0" as "size not known yet" (and makes
# them size 1 when it allocates), so they describe no dtype an array can have.
_TYPESTR = re.compile(
    r"(?:[<>|][biufcSUV][1-9][0-9]{0,9}|[<>][mM]8(?:\[(?:[1-9][0-9]{0,9})?(?:Y|M|W|D|h|m|s|ms|us|ns|ps|fs|as)\])?)"
)
_MAX_DEPTH = 32
_NATIVE: Literal["<", ">"] = "<" if sys.byteorder == "little" else ">"
_CACHE_LIMIT = 1024

# (descriptor bytes, structured?, itemsize, buffer protocol works?)
EncodedDtype = tuple[bytes, bool, int, bool]
#: dtype -> EncodedDtype; also read by zarray._fastpath.
encode_cache: dict[np.dtype[Any], EncodedDtype] = {}
#: the same for align=True records, which the fast path leaves alone.
aligned_encode_cache: dict[np.dtype[Any], EncodedDtype] = {}
#: datetime64/timedelta64 dtypes by exact type string (see encode_dtype).
datetime_encode_cache: dict[str, EncodedDtype] = {}
#: descriptor bytes -> dtype; also read by zarray._fastpath.
decode_cache: dict[bytes, np.dtype[Any]] = {}
# Descriptor bytes held by decode_cache (bounded by zarray.limits.max_dtype_cache_bytes).
_decode_cache_bytes = 0


def encode_dtype(dt: np.dtype[Any]) -> EncodedDtype:
    """Return ``(descriptor, structured, itemsize, buffer_ok)`` for a dtype.

    Raises
    ------
    UnsupportedArrayError
        For object dtypes, dtypes holding objects, StringDType and any other dtype
        that has no exact type string or structured description.
    """
    # An align=True record compares (and hashes) equal to the same record without the
    # flag, so the two must not share a cache entry.
    cache = aligned_encode_cache if dt.isalignedstruct else encode_cache
    enc = cache.get(dt)
    if enc is not None:
        return enc
    if dt.kind in "mM":
        enc = datetime_encode_cache.get(dt.str)
        if enc is not None:
            return enc
    if dt.itemsize == 0:
        raise UnsupportedArrayError(
            f"dtype {brief(dt)} has itemsize 0; zero-size dtypes are not part of zarray's "
            "wire format (an element of no bytes carries nothing)"
        )
    if dt.kind == "T":
        raise UnsupportedArrayError(
            "numpy's StringDType keeps its strings outside the array buffer, so zarray "
            "cannot send it; convert with arr.astype('U') first"
        )
    if dt.hasobject:
        raise UnsupportedArrayError(
            f"dtype {brief(dt)} holds Python objects; zarray sends raw memory and never pickles"
        )
    if dt.fields is not None:
        if dt.kind != "V":
            raise UnsupportedArrayError(
                f"dtype {dt!r} is a {dt.type.__name__} with fields; only void structured "
                "dtypes can be sent"
            )
        text = json.dumps(
            _describe_struct(dt, 0), ensure_ascii=False, separators=(",", ":"), allow_nan=False
        )
        try:
            raw = text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise UnsupportedArrayError(
                f"dtype {dt!r} has a field name or title that is not valid Unicode text "
                f"(it cannot be encoded as UTF-8: {exc.reason})"
            ) from None
        if len(raw) > MAX_DESCR:
            raise UnsupportedArrayError(
                f"dtype {brief(dt)} takes {len(raw)} bytes to describe, more than the "
                f"{MAX_DESCR} a header holds"
            )
        enc = (raw, True, dt.itemsize, _buffer_ok(dt))
    else:
        _check_simple(dt)
        enc = (dt.str.encode("ascii"), False, dt.itemsize, _buffer_ok(dt))
    if _holds_datetime(dt):
        # numpy may call datetime dtypes of equal durations equal (M8[1000000000fs] == M8[us],
        # with equal hashes), so a cache keyed by dtype would send one for the other.
        # A plain datetime is cached by its exact type string; a record holding one is
        # described afresh each time.
        if dt.kind in "mM":
            if len(datetime_encode_cache) >= _CACHE_LIMIT:
                datetime_encode_cache.clear()
            datetime_encode_cache[dt.str] = enc
        return enc
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[dt] = enc
    return enc


def _holds_datetime(dt: np.dtype[Any]) -> bool:
    if dt.kind in "mM":
        return True
    if dt.subdtype is not None:
        return _holds_datetime(dt.subdtype[0])
    fields: Any = dt.fields or {}
    return any(_holds_datetime(spec[0]) for spec in fields.values())


def decode_dtype(descr: bytes, structured: bool, itemsize: int) -> np.dtype[Any]:
    """Rebuild the dtype described by a header, or raise ``HeaderError``."""
    global _decode_cache_bytes
    dt = decode_cache.get(descr)
    if dt is None:
        dt = _decode_uncached(descr, structured)
        # A peer cycling distinct (or large) descriptors must not pin memory: the cache
        # is bounded in entries and in descriptor bytes (zarray.limits), and emptied
        # when either bound is met.
        size = len(descr)
        if size <= limits.max_dtype_cache_bytes:
            if (
                len(decode_cache) >= limits.max_dtype_cache_entries
                or _decode_cache_bytes + size > limits.max_dtype_cache_bytes
            ):
                decode_cache.clear()
                _decode_cache_bytes = 0
            decode_cache[descr] = dt
            _decode_cache_bytes += size
    elif (dt.names is not None) != structured:
        # A type string never parses as a record descriptor nor the reverse, so a
        # cached descriptor with the other kind flag is simply malformed.
        kind = "record descriptor" if dt.names is not None else "type string"
        raise HeaderError(f"descriptor {descr[:40]!r} is a {kind}, but the header says otherwise")
    if dt.itemsize != itemsize:
        raise HeaderError(
            f"dtype {brief(dt)} has itemsize {dt.itemsize}, but the header says {itemsize}"
        )
    return dt


_REPR = reprlib.Repr()
_REPR.maxlevel = 3
_REPR.maxstring = 40
_REPR.maxother = 40


def brief(x: Any, limit: int = 80) -> str:
    """A short text of a dtype, a message or a decoded JSON value, for error messages.

    Bounded in length and in depth (reprlib), so that printing what a peer sent can
    neither recurse without end nor grow with the descriptor.
    """
    if isinstance(x, str):
        text = x
    elif isinstance(x, np.dtype):
        try:
            text = repr(x) if x.names is not None or x.subdtype is not None else x.str
        except RecursionError:
            text = f"<{x.kind} dtype, itemsize {x.itemsize}>"
    else:
        text = _REPR.repr(x)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_simple(dt: np.dtype[Any]) -> None:
    s = dt.str
    if dt.kind not in "biufcmMSUV" or not _TYPESTR.fullmatch(s):
        raise UnsupportedArrayError(f"dtype {dt!r} (type string {s!r}) cannot be sent by zarray")
    if dt.subdtype is not None or np.dtype(s) != dt:
        raise UnsupportedArrayError(f"dtype {dt!r} is not described exactly by {s!r}")


def _buffer_ok(dt: np.dtype[Any]) -> bool:
    # numpy refuses to export datetime64/timedelta64 (also inside records) through the
    # buffer protocol. It also exports long double only under the native byte-order
    # mark ("=g"), not when the mark is spelled out ("<g" from newbyteorder("<")), yet
    # the two dtypes compare and hash equal and so share one cache entry: the answer
    # must hold for both spellings. Such arrays are sent through a raw byte view. An
    # empty array asks the question without allocating an item (of 2 GiB, say).
    for variant in (dt, dt.newbyteorder(_NATIVE)):
        try:
            memoryview(np.empty(0, variant))  # type: ignore[arg-type]
        except (ValueError, TypeError, BufferError):
            return False
    return True


def _describe_format(dt: np.dtype[Any], depth: int) -> Any:
    if depth > _MAX_DEPTH:
        raise UnsupportedArrayError(f"dtype nesting deeper than {_MAX_DEPTH} levels")
    if dt.subdtype is not None:
        base, shape = dt.subdtype
        return {"base": _describe_format(base, depth + 1), "shape": list(shape)}
    if dt.fields is not None:
        if dt.kind != "V":
            # As at the top level: an int64 with fields would arrive as a plain record.
            raise UnsupportedArrayError(
                f"a field of dtype {brief(dt)} is a {dt.type.__name__} with fields; only "
                "void structured dtypes can be sent"
            )
        return _describe_struct(dt, depth + 1)
    _check_simple(dt)
    return dt.str


def _describe_struct(dt: np.dtype[Any], depth: int) -> dict[str, Any]:
    if depth > _MAX_DEPTH:
        raise UnsupportedArrayError(f"dtype nesting deeper than {_MAX_DEPTH} levels")
    names = list(dt.names or ())
    fields: Any = dt.fields or {}
    formats, offsets, titles = [], [], []
    for name in names:
        spec = fields[name]
        formats.append(_describe_format(spec[0], depth))
        offsets.append(spec[1])
        title = spec[2] if len(spec) > 2 else None
        if title is not None and not isinstance(title, str):
            raise UnsupportedArrayError(
                f"field {name!r} has a title of type {type(title).__name__}; only str titles "
                "can be sent"
            )
        titles.append(title)
    out: dict[str, Any] = {
        "names": names,
        "formats": formats,
        "offsets": offsets,
        "itemsize": dt.itemsize,
    }
    if any(t is not None for t in titles):
        out["titles"] = titles
    if dt.isalignedstruct:
        out["aligned"] = True
    return out


def _decode_uncached(descr: bytes, structured: bool) -> np.dtype[Any]:
    if not structured:
        try:
            text = descr.decode("ascii")
        except UnicodeDecodeError:
            raise HeaderError(f"dtype type string {descr[:40]!r} is not ASCII") from None
        if not _TYPESTR.fullmatch(text):
            raise HeaderError(f"invalid dtype type string {text[:40]!r}")
        try:
            return np.dtype(text)
        except (TypeError, ValueError) as exc:
            raise HeaderError(f"invalid dtype type string {text!r}: {brief(str(exc))}") from None
    try:
        doc = _stdjson.loads(descr)
    except (ValueError, RecursionError) as exc:
        raise HeaderError(
            f"structured dtype descriptor is not valid JSON: {brief(str(exc))}"
        ) from None
    spec = _struct_spec(doc, 0)
    try:
        dt: np.dtype[Any] = np.dtype(spec, align=bool(doc.get("aligned", False)))  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError, KeyError, IndexError) as exc:
        raise HeaderError(
            f"structured dtype descriptor rejected by numpy: {brief(str(exc), 200)}"
        ) from None
    if dt.hasobject:  # unreachable with checked type strings; kept as a last guard
        raise HeaderError("structured dtype descriptor describes Python objects")
    return dt


def _struct_spec(doc: Any, depth: int) -> dict[str, Any]:
    """Validate one JSON record description and turn it into numpy's dict form."""
    if depth > _MAX_DEPTH:
        raise HeaderError(f"structured dtype nested deeper than {_MAX_DEPTH} levels")
    if not isinstance(doc, dict):
        raise HeaderError("structured dtype descriptor must be a JSON object")
    allowed = {"names", "formats", "offsets", "itemsize", "titles", "aligned"}
    extra = set(doc) - allowed
    if extra:
        raise HeaderError(f"unknown keys in structured dtype descriptor: {sorted(extra)}")
    names: Any = doc.get("names")
    formats: Any = doc.get("formats")
    offsets: Any = doc.get("offsets")
    itemsize: Any = doc.get("itemsize")
    titles: Any = doc.get("titles")
    if not (isinstance(names, list) and isinstance(formats, list) and isinstance(offsets, list)):
        raise HeaderError("structured dtype descriptor needs lists of names, formats, offsets")
    if not (len(names) == len(formats) == len(offsets)):
        raise HeaderError("structured dtype descriptor lists differ in length")
    if not all(isinstance(n, str) for n in names):
        raise HeaderError("structured dtype field names must be strings")
    if not all(_is_int(o) and o >= 0 for o in offsets):
        raise HeaderError("structured dtype offsets must be non-negative integers")
    if not (_is_int(itemsize) and itemsize >= 0):
        raise HeaderError("structured dtype itemsize must be a non-negative integer")
    if not isinstance(doc.get("aligned", False), bool):
        raise HeaderError("structured dtype 'aligned' must be a boolean")
    spec: dict[str, Any] = {
        "names": names,
        "formats": [_format_spec(f, depth) for f in formats],
        "offsets": offsets,
        "itemsize": itemsize,
    }
    if titles is not None:
        if not (
            isinstance(titles, list)
            and len(titles) == len(names)
            and all(t is None or isinstance(t, str) for t in titles)
        ):
            raise HeaderError("structured dtype titles must be a list of strings or nulls")
        spec["titles"] = titles
    return spec


def _format_spec(fmt: Any, depth: int) -> Any:
    # Every level counts, records and subarrays alike, as _describe_format counts them
    # when sending: a chain of subarrays nests as deep as a chain of records.
    if depth > _MAX_DEPTH:
        raise HeaderError(f"structured dtype nested deeper than {_MAX_DEPTH} levels")
    if isinstance(fmt, str):
        if not _TYPESTR.fullmatch(fmt):
            raise HeaderError(f"invalid field type string {fmt[:40]!r}")
        return fmt
    if isinstance(fmt, dict) and "base" in fmt:
        if set(fmt) != {"base", "shape"}:
            raise HeaderError("subarray descriptor needs exactly 'base' and 'shape'")
        shape = fmt["shape"]
        if not (
            isinstance(shape, list)
            and 0 < len(shape) <= 64
            and all(_is_int(n) and 0 <= n < 2**31 for n in shape)
        ):
            raise HeaderError(f"invalid subarray shape {brief(shape)}")
        return (_format_spec(fmt["base"], depth + 1), tuple(shape))
    if isinstance(fmt, dict):
        sub = _struct_spec(fmt, depth + 1)
        try:
            return np.dtype(sub, align=bool(fmt.get("aligned", False)))  # type: ignore[call-overload]
        except (TypeError, ValueError, OverflowError, KeyError, IndexError) as exc:
            raise HeaderError(
                f"nested structured dtype rejected by numpy: {brief(str(exc), 200)}"
            ) from None
    raise HeaderError(f"invalid field format {brief(fmt)}")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)
