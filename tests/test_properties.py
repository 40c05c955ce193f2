"""Hypothesis: round trips of random dtypes, shapes and strided views (through
pack_header/unpack_header + payload, and through real inproc sockets), and fuzzing of
both header parsers and of zarray.unpack_header with random and mutated bytes: only
HeaderError may come out, and the two codecs always agree."""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import zmq
from common import (
    DTYPES,
    LAYOUTS,
    MAGIC,
    address,
    assert_same_dtype,
    assert_within_base,
    build_header,
    check_received,
    data_bytes,
    expected_wire,
    guard,
    make_array,
    raw_span,
    writeable_broadcast,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import zarray

Twins = tuple[ModuleType, ModuleType]

PROPERTY = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FUZZ = settings(PROPERTY, max_examples=400)

# -- strategies --------------------------------------------------------------------------

LEAF_DTYPES = st.one_of(
    hnp.boolean_dtypes(),
    hnp.integer_dtypes(endianness="?"),
    hnp.unsigned_integer_dtypes(endianness="?"),
    hnp.floating_dtypes(endianness="?", sizes=(16, 32, 64, 128)),
    hnp.complex_number_dtypes(endianness="?", sizes=(64, 128, 256)),
    hnp.datetime64_dtypes(endianness="?"),
    hnp.timedelta64_dtypes(endianness="?"),
    hnp.byte_string_dtypes(max_len=8),
    hnp.unicode_string_dtypes(endianness="?", max_len=4),
    st.integers(1, 12).map(lambda n: np.dtype(f"V{n}")),
)


def _aligned(dt: np.dtype[Any]) -> np.dtype[Any]:
    """The same record made with align=True (padding, isalignedstruct)."""
    if dt.names is None:
        return dt
    return np.dtype([(n, dt.fields[n][0]) for n in dt.names], align=True)  # type: ignore[index]


DTYPE_STRATEGY = st.one_of(
    LEAF_DTYPES,
    hnp.nested_dtypes(LEAF_DTYPES, max_leaves=5, max_itemsize=512),
    hnp.nested_dtypes(LEAF_DTYPES, max_leaves=4, max_itemsize=512).map(_aligned),
)


@st.composite
def arrays_and_views(draw: st.DrawFn) -> np.ndarray[Any, Any]:
    """A random array in a random layout: slices (negative steps too), transposes,
    broadcasts (read-only and writeable), Fortran copies, read-only flags."""
    dt = draw(DTYPE_STRATEGY)
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6))
    A = make_array(dt, shape, seed=draw(st.integers(0, 2**32 - 1)))
    ops = ["slice", "transpose", "broadcast", "broadcast-writeable", "fortran", "readonly"]
    for op in draw(st.lists(st.sampled_from(ops), max_size=3)):
        if op == "slice" and A.ndim:
            A = A[tuple(draw(st.slices(n)) for n in A.shape)]
        elif op == "transpose" and A.ndim > 1:
            A = A.transpose(draw(st.permutations(range(A.ndim))))
        elif op == "broadcast" and A.ndim < 6:
            A = np.broadcast_to(A, (draw(st.integers(0, 3)), *A.shape))
        elif op == "broadcast-writeable" and A.ndim < 6 and A.flags.writeable:
            A = writeable_broadcast(A, draw(st.integers(1, 3)))
        elif op == "fortran":
            A = np.asfortranarray(A)
        elif op == "readonly":
            A.flags.writeable = False
    return A


def payload_of(A: np.ndarray[Any, Any]) -> bytes:
    """The payload the layout policy sends: A's own span, or a compact "K" copy."""
    strides, _, nbytes = expected_wire(A)
    if nbytes == 0:
        return b""
    if strides == A.strides:
        return raw_span(A)
    return raw_span(A.copy(order="K"))


# -- round trips -----------------------------------------------------------------------


@PROPERTY
@given(A=arrays_and_views())
def test_header_and_payload_roundtrip(twins: Twins, A: np.ndarray[Any, Any]) -> None:
    compiled, pure = twins
    header = zarray.pack_header(A)
    h = zarray.unpack_header(header)
    assert_same_dtype(h.dtype, A.dtype)
    assert h.shape == A.shape
    assert (h.strides, h.offset, h.nbytes) == expected_wire(A)
    assert h.writeable == A.flags.writeable
    fields = compiled.unpack(header)
    assert pure.unpack(header) == fields
    assert compiled.pack(*fields) == pure.pack(*fields) == header
    payload = payload_of(A)
    assert len(payload) == h.nbytes
    if A.size:
        B = np.ndarray(h.shape, h.dtype, payload, h.offset, h.strides)
        assert data_bytes(B) == data_bytes(A)


@pytest.fixture(scope="module")
def context() -> Iterator[zmq.Context[Any]]:
    ctx: zmq.Context[Any] = zmq.Context()
    try:
        yield ctx
    finally:
        ctx.destroy(linger=0)


_n = itertools.count()


@contextlib.contextmanager
def fresh_pair(ctx: zmq.Context[Any]) -> Iterator[tuple[zmq.Socket[Any], zmq.Socket[Any]]]:
    """A new inproc PAIR per example, so a failing example cannot disturb the next."""
    sender, receiver = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    try:
        guard(sender)
        guard(receiver)
        endpoint = f"inproc://properties-{next(_n)}"
        receiver.bind(endpoint)
        sender.connect(endpoint)
        yield sender, receiver
    finally:
        sender.close(linger=0)
        receiver.close(linger=0)


@PROPERTY
@given(A=arrays_and_views(), copy=st.booleans())
def test_socket_roundtrip(context: zmq.Context[Any], A: np.ndarray[Any, Any], copy: bool) -> None:
    with fresh_pair(context) as (sender, receiver):
        _socket_roundtrip(sender, receiver, A, copy)


def _socket_roundtrip(
    sender: zmq.Socket[Any], receiver: zmq.Socket[Any], A: np.ndarray[Any, Any], copy: bool
) -> None:
    zarray.send_array(sender, A)
    B = zarray.recv_array(receiver, copy=copy)
    check_received(A, B, copy=copy)
    # and the frames as they travel
    zarray.send_array(sender, A)
    header, payload = receiver.recv_multipart(copy=False)
    assert header.bytes == zarray.pack_header(A)
    assert len(payload.buffer) == expected_wire(A)[2]
    with pytest.raises(zmq.Again):
        receiver.recv(zmq.NOBLOCK)


@settings(PROPERTY, max_examples=60)
@given(A=arrays_and_views())
def test_big_views_are_zero_copy(context: zmq.Context[Any], A: np.ndarray[Any, Any]) -> None:
    """Tiled up past the copy threshold, a view sent as its span arrives as the
    sender's own memory over inproc (unless it had to be realigned)."""
    big = np.broadcast_to(A, (max(1, 80_000 // max(A.nbytes, 1)), *A.shape)) if A.ndim < 6 else A
    with fresh_pair(context) as (sender, receiver):
        zarray.send_array(sender, big)
        B = zarray.recv_array(receiver)
    check_received(big, B)
    strides, _, nbytes = expected_wire(big)
    if nbytes >= zmq.COPY_THRESHOLD and strides == big.strides and big.dtype.alignment == 1:
        assert address(B) == address(big)


# -- fuzzing the parsers ------------------------------------------------------------------


def outcome(fn: Any, buf: Any) -> tuple[str, Any]:
    try:
        return "ok", fn(buf)
    except zarray.HeaderError as exc:  # anything else fails the test
        return type(exc).__name__, str(exc)


def check_parsers(twins: Twins, buf: bytes) -> None:
    """Both codecs agree on buf; an accepted header is canonical; unpack_header raises
    nothing but HeaderError."""
    compiled, pure = twins
    got = outcome(compiled.unpack, buf)
    assert outcome(pure.unpack, buf) == got
    assert outcome(compiled.unpack, bytearray(buf)) == got
    if got[0] == "ok":
        fields = got[1]
        assert [type(x) for x in fields] == [type(x) for x in pure.unpack(buf)]
        assert compiled.pack(*fields) == pure.pack(*fields) == buf
    try:
        h = zarray.unpack_header(buf)
    except zarray.HeaderError:
        return
    assert got[0] == "ok"
    assert isinstance(h.dtype, np.dtype)
    assert not h.dtype.hasobject


# Valid headers to mutate: the matrix's layouts in a few dtypes, and records.
SEED_HEADERS = [
    zarray.pack_header(LAYOUTS[layout](DTYPES[dtype]))
    for dtype in ["<f8", ">i2", "<M8[10ms]", "|S5", "rec-nested>", "rec-titles", "rec-aligned"]
    for layout in ["C", "F", "reversed-2d", "broadcast", "0d", "empty-3x0", "C-readonly"]
]


@st.composite
def mutated_headers(draw: st.DrawFn) -> bytes:
    buf = bytearray(draw(st.sampled_from(SEED_HEADERS)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete", "splice"]))
        pos = draw(st.integers(0, len(buf)))
        if op == "flip" and pos < len(buf):
            buf[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and pos < len(buf):
            buf[pos] = draw(st.sampled_from([0, 1, 2, 0x7F, 0x80, 0xFF, 64, 65]))
        elif op == "truncate":
            del buf[pos:]
        elif op == "insert":
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del buf[pos : pos + draw(st.integers(1, 16))]
        elif op == "splice":
            other = draw(st.sampled_from(SEED_HEADERS))
            cut = draw(st.integers(0, len(other)))
            buf[pos:] = other[cut:]
    return bytes(buf)


INTERESTING = st.sampled_from(
    [0, 1, 2, 3, 7, 8, 16, 24, 2**31, 2**32, 2**62, 2**63 - 1, 2**63, 2**64 - 1]
)
SIGNED = st.sampled_from([0, 1, 2, 3, -1, -8, 8, 16, 2**62, 2**63 - 1, -(2**63), -(2**62)])
DESCRIPTORS = st.one_of(
    st.sampled_from([b"<f8", b"|u1", b"|O8", b"<M8[ns]", b">U3", b"|V0", b"|S0", b""]),
    st.binary(max_size=12),
)


@st.composite
def random_headers(draw: st.DrawFn) -> bytes:
    """Headers with a valid magic and random, often hostile, fields."""
    ndim = draw(st.sampled_from([0, 1, 2, 3, 64, 65]) | st.integers(0, 255))
    dims = min(ndim, draw(st.integers(0, 4)))
    header = build_header(
        draw(DESCRIPTORS),
        tuple(draw(SIGNED) for _ in range(dims)),
        tuple(draw(SIGNED) for _ in range(dims)),
        draw(INTERESTING),
        draw(INTERESTING),
        offset=draw(INTERESTING),
        flags=draw(st.sampled_from([0, 1, 2, 0x80])),
        version=draw(st.sampled_from([1, 1, 1, 0, 2])),
        codec=draw(st.sampled_from([0, 0, 0, 1])),
        kind=draw(st.sampled_from([0, 0, 0, 1])),
        ndim=ndim,
        dkind=draw(st.sampled_from([0, 1, 2])),
        reserved=draw(st.sampled_from([0, 0, 0, 1])),
    )
    tail = draw(st.sampled_from([b"", b"", b"\x00"]))
    return header + tail


@FUZZ
@given(buf=st.binary(max_size=200))
def test_fuzz_random_bytes(twins: Twins, buf: bytes) -> None:
    check_parsers(twins, buf)


@FUZZ
@given(buf=st.binary(max_size=160).map(lambda b: MAGIC + b"\x01" + b))
def test_fuzz_random_bytes_after_magic(twins: Twins, buf: bytes) -> None:
    check_parsers(twins, buf)


@FUZZ
@given(buf=random_headers())
def test_fuzz_random_header_fields(twins: Twins, buf: bytes) -> None:
    check_parsers(twins, buf)


@FUZZ
@given(buf=mutated_headers())
def test_fuzz_mutated_headers(twins: Twins, buf: bytes) -> None:
    check_parsers(twins, buf)


JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64),
    st.floats(allow_nan=True),
    st.sampled_from(["<f8", "|O8", "O", "<T16", "f0", "names", "__import__('os')", "V8"]),
    st.text(max_size=6),
)
JSON_KEYS = st.sampled_from(["names", "formats", "offsets", "itemsize", "titles", "aligned"])
JSON_DOCS = st.recursive(
    JSON_LEAVES,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            JSON_KEYS | st.sampled_from(["base", "shape"]) | st.text(max_size=4),
            children,
            max_size=6,
        )
    ),
    max_leaves=20,
)


@FUZZ
@given(doc=JSON_DOCS, itemsize=st.integers(0, 64))
def test_fuzz_record_descriptors(doc: Any, itemsize: int) -> None:
    """Any JSON as a record descriptor: a dtype without objects, or HeaderError."""
    descr = json.dumps(doc).encode()
    if len(descr) > 65535:
        return
    header = build_header(descr, (1,), (itemsize,), itemsize, itemsize, structured=True)
    try:
        h = zarray.unpack_header(header)
    except zarray.HeaderError:
        return
    assert h.dtype.itemsize == itemsize
    assert not h.dtype.hasobject


@st.composite
def mutated_record_descriptors(draw: st.DrawFn) -> tuple[bytes, int]:
    """A valid record descriptor (from a random dtype) with one JSON value replaced."""
    dt = draw(hnp.nested_dtypes(LEAF_DTYPES, max_leaves=5, max_itemsize=256))
    if dt.names is None:
        dt = np.dtype([("a", dt)])
    doc = json.loads(zarray.pack_header(np.zeros(1, dt))[56:])
    node: Any = doc
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            break
        key = draw(st.sampled_from(keys))
        if not isinstance(node[key], (dict, list)) or draw(st.booleans()):
            node[key] = draw(JSON_LEAVES | st.lists(JSON_LEAVES, max_size=3))
            break
        node = node[key]
    return json.dumps(doc).encode(), dt.itemsize


@FUZZ
@given(case=mutated_record_descriptors())
def test_fuzz_mutated_record_descriptors(case: tuple[bytes, int]) -> None:
    descr, itemsize = case
    header = build_header(descr, (1,), (itemsize,), itemsize, itemsize, structured=True)
    try:
        h = zarray.unpack_header(header)
    except zarray.HeaderError:
        return
    assert not h.dtype.hasobject
    assert h.dtype.itemsize == itemsize


@settings(FUZZ, max_examples=300)
@given(buf=mutated_headers(), seed=st.integers(0, 2**32 - 1))
def test_fuzz_receive_path(context: zmq.Context[Any], buf: bytes, seed: int) -> None:
    """Mutated headers with a payload of the length they announce, over a real socket:
    an array (which numpy itself can index end to end) or HeaderError, and the
    socket stays usable."""
    try:
        nbytes = zarray.unpack_header(buf).nbytes
    except zarray.HeaderError:
        nbytes = len(buf) % 97
    if nbytes > 2**20:
        return
    payload = np.random.default_rng(seed).integers(0, 256, nbytes, dtype=np.uint8).tobytes()
    with fresh_pair(context) as (sender, receiver):
        sender.send_multipart([buf, payload])
        try:
            B = zarray.recv_array(receiver, copy=bool(seed & 1))
        except zarray.HeaderError:
            pass
        else:
            assert_within_base(B)
            if B.size * B.dtype.itemsize <= 2**22:
                data_bytes(B)  # reads every element
        zarray.send_array(sender, np.arange(3.0))
        np.testing.assert_array_equal(zarray.recv_array(receiver), np.arange(3.0))
