"""Coverage-guided, differential fuzzing of zarray's header decoder.

Each input is parsed as a header frame by the Cython codec (``zarray._header.unpack``)
and by its pure-Python twin (``zarray._header_py.unpack``): both must give the same
fields, or both the same error class and message. Accepted headers must re-encode to
the very same bytes with both ``pack`` functions (the encoding is canonical), their
dtype descriptor goes through ``zarray._dtypes.decode_dtype``, and
``zarray.unpack_header`` must agree with all of that. The same input also drives a
differential test of the two ``pack`` functions with arbitrary field values.

Only ``zarray.ZarrayError`` subclasses may come out; anything else is a crash. The
allocation guard (``_guard``) bounds what parsing and decoding the header may allocate
(4 x its bytes plus the guard's constant). ``custom_mutator`` rewrites header fields
with edge values, swaps in descriptors from the structure-aware generators
(``_generators``: records, subarrays, offsets, titles, itemsize 0, non-standard JSON)
or makes a fresh header, besides libFuzzer's byte mutations.

Run: ``python fuzz/fuzz_header.py [libFuzzer options] [corpus dirs]`` (see fuzz/run.py).
Coverage: atheris instruments zarray's Python modules (the twin codec, _dtypes, the
array layer). The compiled ``_header`` extension is covered when it is built with
libFuzzer's instrumentation (``fuzz/build_sanitized.py``, which also adds
AddressSanitizer and UBSan); otherwise the twin, which mirrors it check for check,
steers the fuzzer through the same cases.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

try:
    import atheris
except ImportError:  # the harness function still works, e.g. for regression replays
    atheris = None

if __name__ == "__main__" and atheris is not None:
    with atheris.instrument_imports(include=["zarray"]):
        import _fuzzlib
        import _generators

        import zarray
        from zarray import _dtypes, _header, _header_py
else:
    import _fuzzlib
    import _generators

    import zarray
    from zarray import _dtypes, _header, _header_py

import random

import numpy as np
from _guard import AllocationGuard


class Mismatch(AssertionError):
    """The two codecs, or two views of the same header, disagree."""


def _same(a: _fuzzlib.Outcome, b: _fuzzlib.Outcome, what: str, data: bytes) -> None:
    if a != b:
        raise Mismatch(f"{what} differ on {data!r}:\n  {a!r}\n  {b!r}")
    if a[0] == "ok":  # equal tuples may still differ in element types (int vs bool)
        ta = [type(x) for x in a[1]] if isinstance(a[1], tuple) else type(a[1])
        tb = [type(x) for x in b[1]] if isinstance(b[1], tuple) else type(b[1])
        if ta != tb:
            raise Mismatch(f"{what}: result types differ on {data!r}: {ta} vs {tb}")


def check_unpack(data: bytes) -> None:
    """The decoder half: both codecs, three buffer types, dtype, unpack_header."""
    cy = _fuzzlib.outcome(_header.unpack, data)
    py = _fuzzlib.outcome(_header_py.unpack, data)
    _same(cy, py, "Cython and Python unpack", data)
    for alt in (bytearray(data), memoryview(data)):
        _same(
            cy, _fuzzlib.outcome(_header.unpack, alt), f"unpack(bytes/{type(alt).__name__})", data
        )
        _same(
            py, _fuzzlib.outcome(_header_py.unpack, alt), f"twin(bytes/{type(alt).__name__})", data
        )
    public = _fuzzlib.outcome(zarray.unpack_header, data)
    if cy[0] == "err":
        if public != cy:
            raise Mismatch(f"unpack_header and the codec differ on {data!r}: {public} vs {cy}")
        return
    descr, structured, itemsize, shape, strides, offset, nbytes, readonly = cy[1][:8]
    # Canonical encoding: the accepted fields re-encode to the very same bytes.
    for pack in (_header.pack, _header_py.pack):
        again = pack(*cy[1])
        if again != data:
            raise Mismatch(f"{pack.__module__}.pack does not reproduce {data!r}: {again!r}")
    dt = _fuzzlib.outcome(_dtypes.decode_dtype, descr, structured, itemsize)
    if dt[0] == "err":
        if public[0] != "err" or public[1:] != dt[1:]:
            raise Mismatch(f"unpack_header {public} but decode_dtype {dt} on {data!r}")
        return
    if public[0] != "ok":
        raise Mismatch(f"unpack_header {public} but decode_dtype accepted {data!r}")
    header = public[1]
    if not isinstance(dt[1], np.dtype) or header.dtype != dt[1]:
        raise Mismatch(f"dtype mismatch on {data!r}: {header.dtype!r} vs {dt[1]!r}")
    if (header.shape, header.strides, header.offset, header.nbytes, header.writeable) != (
        shape,
        strides,
        offset,
        nbytes,
        not readonly,
    ):
        raise Mismatch(f"unpack_header fields differ from the codec's on {data!r}")
    if header.dtype.hasobject:
        raise Mismatch(f"a header produced an object dtype: {data!r}")


def check_pack(data: bytes) -> None:
    """The encoder half: arbitrary field values through both ``pack`` functions."""
    p = _fuzzlib.Provider(data)
    ndim = p.uint(1) % 67
    shape = tuple(p.int_field() for _ in range(ndim))
    nstrides = ndim if p.uint(1) % 16 else (ndim + 1) % 67
    strides = tuple(p.int_field() for _ in range(nstrides))
    itemsize, offset, nbytes = p.int_field(), p.int_field(), p.int_field()
    sel = p.uint(1)
    descr = b"x" * 65536 if sel == 255 else p.take(sel % 32)
    structured, readonly = bool(sel & 1), bool(sel & 2)
    # codec id, filter id, payload kind: mostly valid values, sometimes anything.
    enc = p.uint(1)
    encoding = (enc % 4, (enc >> 2) % 3, (enc >> 4) % 3) if enc < 240 else (p.int_field(),) * 3
    args: tuple[Any, ...] = (
        descr,
        structured,
        itemsize,
        shape,
        strides,
        offset,
        nbytes,
        readonly,
        *encoding,
    )
    cy = _fuzzlib.outcome(_header.pack, *args)
    py = _fuzzlib.outcome(_header_py.pack, *args)
    _same(cy, py, "Cython and Python pack", data)
    if cy[0] == "ok":  # a header that pack returns is one that unpack accepts
        back = _header.unpack(cy[1])
        if back != args:
            raise Mismatch(f"unpack(pack(fields)) != fields for {args!r}")


_guard: AllocationGuard | None = None


def TestOneInput(data: bytes) -> None:
    """One fuzz input: the decoder on the bytes, the encoder on fields drawn from them."""
    global _guard
    if _guard is None:
        _guard = AllocationGuard()
    with _guard.measure(len(data), f"parsing {data[:120]!r}"):
        check_unpack(data)
    check_pack(data)
    _guard.check_held("a header")


def close() -> None:
    """Stop the allocation guard's tracemalloc (for in-process replays)."""
    global _guard
    if _guard is not None:
        _guard.close()
        _guard = None


def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
    """Structure-aware mutations of a header frame (see the module docstring)."""
    rng = random.Random(seed)
    src = _generators.RandomSource(rng)
    h = _generators.RawHeader.parse(data)
    choice = rng.random()
    if h is None or choice < 0.15:
        h = _generators.gen_array_header(src)[0]
    elif choice < 0.5:
        name = rng.choice((*_generators.HEADER_FIELDS, "dims"))
        if name == "dims":
            h.shape, h.strides, h.offset, h.nbytes = (
                list(x) if isinstance(x, list) else x
                for x in _generators.gen_layout(
                    src, h.itemsize, min(h.itemsize & -h.itemsize or 1, 16)
                )
            )
            h.ndim = None
        elif name == "reserved":
            h.reserved = (rng.randrange(256), 0, 0, 0)
        elif name in ("itemsize", "offset", "nbytes", "dlen"):
            setattr(h, name, _generators.edge_int(src))
        else:
            setattr(h, name, rng.choice((0, 1, 2, 64, 65, 255, rng.randrange(256))))
    elif choice < 0.8:
        h.descr, h.structured = _generators.gen_descriptor(src)
        size = _generators.descriptor_itemsize(h.descr, h.structured)
        if size is not None:
            h.itemsize = size
        h.dlen = h.dkind = None
    else:
        return bytes(_byte_mutate(data, max_size))
    return h.pack()[:max_size]


def _flip(data: bytes, max_size: int) -> bytes:
    buf = bytearray(data or b"\0")
    buf[random.randrange(len(buf))] ^= 1 << random.randrange(8)
    return bytes(buf[:max_size])


_byte_mutate: Any = _flip


def main() -> None:
    if atheris is None:
        sys.exit(
            "atheris is not installed: pip install atheris (or use fuzz/run.py, which "
            "falls back to a plain mutational loop)"
        )
    global _byte_mutate
    # Looked up at each call: atheris binds the real Mutate only once Fuzz() runs.
    _byte_mutate = lambda data, max_size: atheris.Mutate(data, max_size)  # noqa: E731
    structure = os.environ.get("ZARRAY_FUZZ_STRUCTURE", "1") != "0"
    atheris.Setup(sys.argv, TestOneInput, custom_mutator=custom_mutator if structure else None)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
