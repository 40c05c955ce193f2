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
    """The two harness modules, imported without atheris instrumentation."""
    mods = {"header": _harness("header"), "recv": _harness("recv")}
    try:
        yield mods
    finally:
        mods["recv"].close()


@pytest.mark.parametrize("path", REGRESSIONS, ids=[p.name for p in REGRESSIONS])
def test_saved_fuzz_input_replays_clean(path: Path, harnesses: dict[str, ModuleType]) -> None:
    """A saved crash input goes through its harness without a finding."""
    harness = path.name.split("-", 1)[0]
    harnesses[harness].TestOneInput(path.read_bytes())


def test_seed_corpus_replays_clean(harnesses: dict[str, ModuleType]) -> None:
    """Every seed (a valid message for each dtype family and layout) passes the harness
    checks: both codecs agree, the encoding is canonical, recv_array matches the
    reference and leaves the socket at a message boundary."""
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
