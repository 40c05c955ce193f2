"""Regression tests for what fuzzing found, and a replay of every saved fuzz input.

Every input that ever crashed a harness is kept in ``fuzz/regressions/`` (named
``<harness>-<what>.bin``) and replayed here through the harness function, in process.
Each bug also has a named test below that states input, expectation and outcome in
plain terms.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import zmq

import zarray

from ._support import REPO

FUZZ = REPO / "fuzz"
REGRESSIONS = sorted((FUZZ / "regressions").glob("*.bin"))
SEEDS = sorted((FUZZ / "corpus").glob("*/*.bin"))


def _harness(name: str) -> ModuleType:
    if str(FUZZ) not in sys.path:
        sys.path.insert(0, str(FUZZ))
    return importlib.import_module(f"fuzz_{name}")


@pytest.fixture(scope="module")
def harnesses() -> Iterator[dict[str, ModuleType]]:
    """The harness modules, imported without atheris instrumentation."""
    mods = {name: _harness(name) for name in ("header", "recv", "send")}
    try:
        yield mods
    finally:
        for mod in mods.values():
            mod.close()


@pytest.mark.parametrize("path", REGRESSIONS, ids=[p.name for p in REGRESSIONS])
def test_saved_fuzz_input_replays_clean(path: Path, harnesses: dict[str, ModuleType]) -> None:
    """A saved crash input goes through its harness without a finding."""
    harness = path.name.split("-", 1)[0]
    harnesses[harness].TestOneInput(path.read_bytes())


def test_seed_corpus_replays_clean(harnesses: dict[str, ModuleType]) -> None:
    """Every seed (a valid message for each dtype family, layout and receive path, and
    the send harness's decision bytes) passes the harness checks: both codecs agree,
    the encoding is canonical, every receive path matches the pure-Python oracle
    within the allocation guard and leaves the socket at a message boundary."""
    assert SEEDS
    for path in SEEDS:
        harnesses[path.parent.name].TestOneInput(path.read_bytes())


@pytest.fixture
def pair() -> Iterator[tuple[zmq.Socket[Any], zmq.Socket[Any]]]:
    """A connected PAIR over inproc."""
    ctx: zmq.Context[Any] = zmq.Context()
    tx, rx = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    rx.rcvtimeo = 5000
    rx.bind("inproc://regressions")
    tx.connect("inproc://regressions")
    try:
        yield tx, rx
    finally:
        tx.close(linger=0)
        rx.close(linger=0)
        ctx.term()


# Found by fuzz_recv (fuzz/regressions/recv-misaligned-offset-copy.bin): a header for an
# int32 (3, 4) array whose first element sits at offset 3 of a 48-byte payload, strides
# (16, 0), received with copy=True. issue 2: "Always aligned for its dtype ... when a
# frame is misaligned for the dtype, copy it into an aligned buffer instead of returning
# an unaligned array." Got: an array with flags.aligned == False, for copy=False and
# copy=True alike (the aligned copy keeps the odd offset).
@pytest.mark.parametrize("copy", [False, True], ids=["view", "copy"])
def test_odd_header_offset_gives_aligned_array(
    copy: bool, pair: tuple[zmq.Socket[Any], zmq.Socket[Any]]
) -> None:
    tx, rx = pair
    payload = bytes(range(48))
    header = zarray._header_py.pack(b"<i4", False, 4, (3, 4), (16, 0), 3, 48, False)
    tx.send_multipart([header, payload])
    A = zarray.recv_array(rx, copy=copy)
    expected = np.ndarray((3, 4), "<i4", payload, 3, (16, 0))
    assert np.array_equal(A, expected)
    assert A.flags.aligned, "recv_array returned a misaligned int32 array"


# The same bug reached by an ordinary sender: a field of a packed record is a view with
# strides 5 (np.zeros(n, "u1,<i4")["f1"]); zarray sends it as its memory span with
# those strides, and the receiver rebuilds the strides-5 view, misaligned for int32,
# with copy=False and copy=True. Expected: an aligned array with equal values.
@pytest.mark.parametrize("copy", [False, True], ids=["view", "copy"])
@pytest.mark.parametrize("n", [10, 40_000], ids=["small", "zero-copy"])
def test_packed_record_field_arrives_aligned(
    n: int, copy: bool, pair: tuple[zmq.Socket[Any], zmq.Socket[Any]]
) -> None:
    tx, rx = pair
    rec = np.zeros(n, "u1,<i4")
    rec["f1"] = np.arange(n)
    field = rec["f1"]
    assert field.strides == (5,)
    assert not field.flags.aligned
    zarray.send_array(tx, field)
    A = zarray.recv_array(rx, copy=copy)
    assert np.array_equal(A, np.arange(n))
    assert A.flags.aligned, "recv_array returned a misaligned int32 array"


def _outcome(fn: Any, buf: Any) -> tuple[str, str]:
    try:
        fn(buf)
    except Exception as exc:
        return type(exc).__name__, str(exc)
    return "ok", ""


def _strided_header() -> np.ndarray[Any, Any]:
    """A valid header's bytes, as a non-contiguous uint8 view (every other byte)."""
    header = zarray.pack_header(np.zeros((2, 2)))
    doubled = np.repeat(np.frombuffer(header, np.uint8), 2)
    return doubled[::2]


# Found by the differential check of the codec twins on other buffer types: a
# non-contiguous buffer (a strided uint8 view holding a valid header) given to
# zarray.unpack_header. Expected (issue 2, errors.py): HeaderError for anything that is
# not a valid header, as the pure-Python twin raises. Got from the Cython codec: a plain
# ValueError("ndarray is not C-contiguous"), because numpy's buffer export raises
# ValueError and _header.unpack catches only TypeError and BufferError.
def test_unpack_header_of_strided_buffer_raises_header_error() -> None:
    strided = _strided_header()
    assert not strided.flags.c_contiguous
    with pytest.raises(zarray.HeaderError):
        zarray.unpack_header(strided)


# Same check, comparing the twins: "the two must ... raise the same errors with the same
# text" (_header.pyx). For a str, an int and the strided view above, the class or the
# text differs: the twin's message carries "memoryview: " from its own exception, e.g.
#   Cython: "header is not a contiguous byte buffer: a bytes-like object is required, not 'str'"
#   Python: "header is not a contiguous byte buffer: memoryview: a bytes-like object is ..."
@pytest.mark.parametrize("kind", ["str", "int", "strided"])
def test_codec_twins_agree_on_non_buffers(kind: str) -> None:
    from zarray import _header, _header_py

    bad = {"str": "not a header", "int": 12345, "strided": _strided_header()}[kind]
    assert _outcome(_header.unpack, bad) == _outcome(_header_py.unpack, bad)


def _header(
    descr: bytes,
    itemsize: int,
    shape: tuple[int, ...],
    strides: tuple[int, ...],
    offset: int,
    nbytes: int,
) -> bytes:
    import struct

    fixed = struct.pack(
        "<4sBBBBBBHIQQQ",
        b"\x93ZAR",
        1,
        0,
        0,
        0,
        len(shape),
        0,
        len(descr),
        0,
        itemsize,
        offset,
        nbytes,
    )
    return fixed + struct.pack(f"<{2 * len(shape)}q", *shape, *strides) + descr


# Found by the structure-aware fuzz_recv of issue 9 on its first run (also on the code
# before it; fuzz/regressions/recv-0d-misaligned-str.bin): a 0-d <U1 array at offset 1
# of a 5-byte payload, whose 4 bytes are no Unicode code point. Realigning it indexed
# the 0-d view with view[()], which makes a numpy *scalar* of the raw bytes: numpy
# raised SystemError ("invalid maximum character passed to PyUnicode_New"), which
# escaped recv_array (before issue 9) or became a HeaderError by the receive's safety
# net (after hole 3). Expected: an aligned 0-d array holding those bytes.
@pytest.mark.parametrize("copy", [False, True], ids=["view", "copy"])
def test_misaligned_0d_str_is_realigned(
    copy: bool, pair: tuple[zmq.Socket[Any], zmq.Socket[Any]]
) -> None:
    tx, rx = pair
    payload = b"\xf6\xf5\x1c\x14k"
    tx.send_multipart([_header(b"<U1", 4, (), (), 1, 5), payload])
    A = zarray.recv_array(rx, copy=copy)
    assert A.shape == ()
    assert A.dtype == np.dtype("<U1")
    assert A.flags.aligned
    assert A.reshape(1).view(np.uint8).tobytes() == payload[1:]


# Found by the new fuzz_send (issue 9): a record whose field is an int64 *with fields*
# (numpy's ("<i8", [("lo", "<i4"), ("hi", "<i4")])) was sent without error, and every
# receiver rebuilt that field as a plain record: a different dtype than was sent. The
# top-level dtype was checked (non-void dtypes with fields are refused) but no field.
# Expected: UnsupportedArrayError before anything is sent, at any depth.
@pytest.mark.parametrize("depth", [1, 2])
def test_nested_int_with_fields_is_refused(
    depth: int, pair: tuple[zmq.Socket[Any], zmq.Socket[Any]]
) -> None:
    tx, rx = pair
    dt = np.dtype(("<i8", [("lo", "<i4"), ("hi", "<i4")]))
    for _ in range(depth):
        dt = np.dtype([("f0", "<i4"), ("f1", dt)])
    with pytest.raises(zarray.UnsupportedArrayError, match="with fields"):
        zarray.send_array(tx, np.zeros(3, dt))
    zarray.send_array(tx, np.arange(3))
    assert zarray.recv_array(rx).tolist() == [0, 1, 2]
    assert not rx.poll(0)


# Found while writing fuzz_send (issue 9): numpy accepts "datetime64[0s]" (a unit
# multiple of 0) and then divides by it when it compares such a dtype with another
# datetime (SIGFPE: the process dies). zarray's type strings never match a multiple of
# 0, but the JSON recipe's whitelist did: it now refuses it too, before numpy sees it.
def test_recipe_datetime_multiple_0_is_refused(
    pair: tuple[zmq.Socket[Any], zmq.Socket[Any]],
) -> None:
    import json

    tx, rx = pair
    for dtype in ("datetime64[0s]", "timedelta64[00ms]", "<M8[0D]"):
        tx.send_multipart([json.dumps({"dtype": dtype, "shape": [2]}).encode(), bytes(16)])
        with pytest.raises(zarray.HeaderError, match="not a dtype zarray accepts"):
            zarray.recv_array(rx)
    assert not rx.poll(0)


# Found by fuzz_recv (issue 9), comparing receive paths: recv_array(out=) wrote a record's
# padding bytes into out when the payload was C-ordered (libzmq's recv_into copies the
# frame) but not for other layouts nor under zarray.asyncio, where numpy's record copy
# skipped the bytes no field covers. Expected: out holds the payload's items whole,
# whatever the path and layout.
@pytest.mark.parametrize("layout", ["c", "reversed"])
def test_out_gets_record_padding_on_every_path(
    layout: str, pair: tuple[zmq.Socket[Any], zmq.Socket[Any]]
) -> None:
    import asyncio

    import zarray.asyncio

    dt = np.dtype({"names": ["a"], "formats": ["u1"], "offsets": [0], "itemsize": 4})
    raw = np.frombuffer(bytes(range(1, 13)), dt)
    A = raw if layout == "c" else raw[::-1]
    expected = np.ascontiguousarray(A.view("V4"))  # a void copy keeps every byte
    tx, rx = pair
    out = np.zeros(3, dt)
    zarray.send_array(tx, A)
    zarray.recv_array(rx, out=out)
    assert out.view("V4").tobytes() == expected.tobytes()

    async def via_asyncio() -> bytes:
        ctx = zarray.asyncio.Context()
        atx, arx = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
        try:
            arx.rcvtimeo = 5000
            arx.bind("inproc://padding")
            atx.connect("inproc://padding")
            await atx.send_array(A)
            got = np.zeros(3, dt)
            await arx.recv_array(out=got)
            return got.view("V4").tobytes()
        finally:
            atx.close(linger=0)
            arx.close(linger=0)
            ctx.term()

    assert asyncio.run(via_asyncio()) == expected.tobytes()


# Found by fuzz_send (issue 9): numpy may call datetime dtypes of equal durations equal,
# with equal hashes (M8[1000000000fs] == M8[us]), so the encode cache, keyed by dtype,
# sent the header of whichever had been sent first: an M8[us] array arrived as
# M8[1000000000fs] (the same values, another dtype.str than FORMAT.md promises), and
# records holding such fields likewise. Expected: the sender's exact type string.
@pytest.mark.parametrize(
    ("first", "second"),
    [("<M8[us]", "<M8[1000000000fs]"), ("<m8[60s]", "<m8[m]"), (">M8[1000ms]", ">M8[s]")],
)
@pytest.mark.parametrize("record", [False, True], ids=["plain", "record-field"])
def test_equal_datetime_units_keep_their_type_string(
    first: str, second: str, record: bool, pair: tuple[zmq.Socket[Any], zmq.Socket[Any]]
) -> None:
    tx, rx = pair
    dtypes = [np.dtype([("t", s)]) if record else np.dtype(s) for s in (first, second)]
    # (numpy's equality of such dtypes is not even symmetric: a dict lookup finds one
    # for the other in one order of insertion and not in the other.)
    for dt in (*dtypes, *reversed(dtypes)):
        A = np.arange(3).astype(dt) if not record else np.zeros(3, dt)
        zarray.send_array(tx, A)
        B = zarray.recv_array(rx)
        assert B.dtype.str == dt.str
        assert B.dtype.descr == dt.descr


# Found by fuzz_send (issue 9) under its allocation guard: sending an *empty* array of
# dtype |S2147483646 allocated 2 GiB, because encode_dtype probed numpy's buffer
# export with np.empty(1, dtype). Expected: describing a dtype allocates no element.
def test_describing_a_huge_dtype_allocates_nothing(
    pair: tuple[zmq.Socket[Any], zmq.Socket[Any]],
) -> None:
    import tracemalloc

    tx, rx = pair
    A = np.zeros((0, 3), "|S2147483646")
    zarray.send_array(tx, np.zeros((0, 3), "|S7"))  # first-use costs of the socket
    zarray.recv_array(rx)
    tracemalloc.start()
    try:
        zarray.send_array(tx, A)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"{peak} bytes allocated to send an empty array"
    B = zarray.recv_array(rx)
    assert B.shape == (0, 3)
    assert B.dtype == A.dtype
