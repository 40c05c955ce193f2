"""The header codec: golden bytes pin wire format v1, the compiled codec and its pure
twin agree on every case, and every malformed header is refused with a HeaderError
that names the problem, the same in both twins."""

from __future__ import annotations

import builtins
import json
import re
import struct
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import zmq
from common import (
    DTYPES,
    INT64_MAX,
    LAYOUTS,
    MAGIC,
    NUMPY_MAXDIMS,
    build_header,
    c_strides,
    expected_wire,
    product_ids,
)

import zarray
from zarray._dtypes import decode_dtype, encode_dtype

Twins = tuple[ModuleType, ModuleType]


def outcome(fn: Any, *args: Any) -> tuple[str, Any]:
    """``("ok", result)`` or ``(error class name, message)``; only HeaderError is caught."""
    try:
        return "ok", fn(*args)
    except zarray.HeaderError as exc:
        return type(exc).__name__, str(exc)


def twin_error(twins: Twins, fn: str, *args: Any) -> str:
    """Call ``fn`` of both codecs; both must raise HeaderError with the same message."""
    compiled, pure = twins
    messages = []
    for module in (compiled, pure):
        with pytest.raises(zarray.HeaderError) as info:
            getattr(module, fn)(*args)
        assert type(info.value) is zarray.HeaderError
        messages.append(str(info.value))
    assert messages[0] == messages[1], f"twins disagree: {messages}"
    return messages[0]


# -- golden bytes --------------------------------------------------------------------


def test_golden_bytes_int32_2x3() -> None:
    A = np.arange(6, dtype="<i4").reshape(2, 3)
    golden = (
        bytes.fromhex(
            "93 5a 41 52"  # magic
            " 01 00 00 00"  # version 1, flags 0, codec 0, payload kind 0
            " 02 00 03 00"  # ndim 2, descriptor kind 0, descriptor length 3
            " 00 00 00 00"  # reserved
            " 04 00 00 00 00 00 00 00"  # itemsize 4
            " 00 00 00 00 00 00 00 00"  # offset 0
            " 18 00 00 00 00 00 00 00"  # nbytes 24
            " 02 00 00 00 00 00 00 00 03 00 00 00 00 00 00 00"  # shape (2, 3)
            " 0c 00 00 00 00 00 00 00 04 00 00 00 00 00 00 00"  # strides (12, 4)
        )
        + b"<i4"
    )
    assert zarray.pack_header(A) == golden


def _readonly(A: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    A.flags.writeable = False
    return A


GOLDEN: dict[str, tuple[Any, bytes]] = {
    "fortran-readonly-big-endian": (
        lambda: _readonly(np.asfortranarray(np.zeros((3, 2), ">f8"))),
        struct.pack("<4sBBBBBBHIQQQ", MAGIC, 1, 1, 0, 0, 2, 0, 3, 0, 8, 0, 48)
        + struct.pack("<4q", 3, 2, 8, 24)
        + b">f8",
    ),
    "0d-bool": (
        lambda: np.array(True),
        struct.pack("<4sBBBBBBHIQQQ", MAGIC, 1, 0, 0, 0, 0, 0, 3, 0, 1, 0, 1) + b"|b1",
    ),
    "broadcast-1000x1000": (
        lambda: np.broadcast_to(np.arange(1000.0), (1000, 1000)),
        struct.pack("<4sBBBBBBHIQQQ", MAGIC, 1, 1, 0, 0, 2, 0, 3, 0, 8, 0, 8000)
        + struct.pack("<4q", 1000, 1000, 0, 8)
        + b"<f8",
    ),
    "reversed-int16": (
        lambda: np.arange(5, dtype="<i2")[::-1],
        struct.pack("<4sBBBBBBHIQQQ", MAGIC, 1, 0, 0, 0, 1, 0, 3, 0, 2, 8, 10)
        + struct.pack("<2q", 5, -2)
        + b"<i2",
    ),
    "datetime-10ms": (
        lambda: np.zeros(3, "<M8[10ms]"),
        struct.pack("<4sBBBBBBHIQQQ", MAGIC, 1, 0, 0, 0, 1, 0, 9, 0, 8, 0, 24)
        + struct.pack("<2q", 3, 8)
        + b"<M8[10ms]",
    ),
    "empty-3x0": (
        lambda: np.zeros((3, 0), "<f4"),
        struct.pack("<4sBBBBBBHIQQQ", MAGIC, 1, 0, 0, 0, 2, 0, 3, 0, 4, 0, 0)
        + struct.pack("<4q", 3, 0, 4, 4)
        + b"<f4",
    ),
    "compacted-step2": (
        lambda: np.arange(10, dtype=">u2")[::2],
        struct.pack("<4sBBBBBBHIQQQ", MAGIC, 1, 0, 0, 0, 1, 0, 3, 0, 2, 0, 10)
        + struct.pack("<2q", 5, 2)
        + b">u2",
    ),
}


@pytest.mark.parametrize("case", list(GOLDEN))
def test_golden_bytes(case: str) -> None:
    make, golden = GOLDEN[case]
    assert zarray.pack_header(make()) == golden


def test_golden_bytes_from_each_codec(codec: ModuleType) -> None:
    """Each codec, called directly, writes and reads the golden bytes."""
    fields = (b"<i4", False, 4, (2, 3), (12, 4), 0, 24, False)
    golden = (
        struct.pack("<4sBBBBBBHIQQQ", MAGIC, 1, 0, 0, 0, 2, 0, 3, 0, 4, 0, 24)
        + struct.pack("<4q", 2, 3, 12, 4)
        + b"<i4"
    )
    assert codec.pack(*fields) == golden
    assert codec.unpack(golden) == (*fields, 0, 0, 0)
    fields_1d = (b"<i2", False, 2, (5,), (-2,), 8, 10, True)
    golden = (
        struct.pack("<4sBBBBBBHIQQQ", MAGIC, 1, 1, 0, 0, 1, 0, 3, 0, 2, 8, 10)
        + struct.pack("<2q", 5, -2)
        + b"<i2"
    )
    assert codec.pack(*fields_1d) == golden
    assert codec.unpack(golden) == (*fields_1d, 0, 0, 0)
    assert codec.MAGIC == MAGIC
    assert (codec.VERSION, codec.MAX_NDIM, codec.FIXED_SIZE) == (1, 64, 40)


def test_golden_image_header_is_91_bytes() -> None:
    h = zarray.pack_header(np.zeros((480, 640, 3), np.uint8))
    assert len(h) == 91
    assert h[8] == 3
    assert h[-3:] == b"|u1"


# The example of docs/FORMAT.md, "Dtype descriptor, kind 1".
DOC_RECORD = {
    "names": ["x", "y"],
    "formats": ["<f8", {"base": "<i4", "shape": [2, 3]}],
    "offsets": [0, 8],
    "itemsize": 32,
    "titles": [None, "the y"],
    "aligned": True,
}


def test_golden_structured_descriptor() -> None:
    dt = np.dtype(
        {
            "names": ["x", "y"],
            "formats": ["<f8", ("<i4", (2, 3))],
            "offsets": [0, 8],
            "itemsize": 32,
            "titles": [None, "the y"],
        },
        align=True,
    )
    h = zarray.pack_header(np.zeros(2, dt))
    descr = h[56:]
    fixed = struct.pack("<4sBBBBBBHIQQQ", MAGIC, 1, 0, 0, 0, 1, 1, len(descr), 0, 32, 0, 64)
    assert h[:40] == fixed
    assert h[40:56] == struct.pack("<2q", 2, 32)
    assert json.loads(descr.decode("utf-8")) == DOC_RECORD
    assert zarray.unpack_header(h).dtype == dt


def test_aligned_flag_is_not_taken_from_an_equal_dtype() -> None:
    """An align=True record that needs no padding compares == (and hashes alike) with
    its unaligned twin; each must still travel with its own ``isalignedstruct``
    (docs/FORMAT.md), whichever of the two was sent first."""
    plain = np.dtype([("q", "u1"), ("r", "u1")])
    aligned = np.dtype([("q", "u1"), ("r", "u1")], align=True)
    assert plain == aligned
    assert plain.isalignedstruct != aligned.isalignedstruct
    for dt in (plain, aligned, plain, aligned):
        got = zarray.unpack_header(zarray.pack_header(np.zeros(1, dt))).dtype
        assert got.isalignedstruct == dt.isalignedstruct, f"sent {dt!r}, got {got!r}"


def test_non_ascii_names_travel_as_utf8() -> None:
    dt = np.dtype([("température", "<f4"), ("日本語", ">i8")])
    descr = zarray.pack_header(np.zeros(1, dt))[56:]
    assert "température".encode() in descr
    assert "日本語".encode() in descr
    assert json.loads(descr)["names"] == ["température", "日本語"]


def test_builder_matches_pack() -> None:
    """tests/common.build_header (written from docs/FORMAT.md) agrees with zarray."""
    A = np.arange(12.0).reshape(3, 4)[::-1]
    strides, offset, nbytes = expected_wire(A)
    want = build_header(b"<f8", A.shape, strides, 8, nbytes, offset=offset)
    assert zarray.pack_header(A) == want


# -- the two codecs agree on every case --------------------------------------------------

MATRIX = product_ids(DTYPES, LAYOUTS)


@pytest.mark.parametrize(("dtype", "layout"), MATRIX)
def test_twins_agree_on_matrix(twins: Twins, dtype: str, layout: str) -> None:
    compiled, pure = twins
    A = LAYOUTS[layout](DTYPES[dtype])
    h = zarray.pack_header(A)
    fc, fp = compiled.unpack(h), pure.unpack(h)
    assert fc == fp
    assert [type(x) for x in fc] == [type(x) for x in fp]
    assert compiled.unpack(memoryview(h)) == pure.unpack(bytearray(h)) == fc
    assert compiled.pack(*fc) == pure.pack(*fp) == h
    descr, structured, itemsize, shape, strides, offset, nbytes, readonly = fc[:8]
    assert fc[8:] == (0, 0, 0)  # a plain payload: no codec, no filter, the next frame
    assert (descr, structured, itemsize) == encode_dtype(A.dtype)[:3]
    assert shape == A.shape
    assert (strides, offset, nbytes) == expected_wire(A)
    assert readonly == (not A.flags.writeable)
    assert decode_dtype(descr, structured, itemsize) == A.dtype
    h2 = zarray.unpack_header(h)
    assert (h2.dtype, h2.shape, h2.strides, h2.offset, h2.nbytes, h2.writeable) == (
        A.dtype,
        A.shape,
        strides,
        offset,
        nbytes,
        A.flags.writeable,
    )


# -- layout policy ---------------------------------------------------------------------


def test_span_policy_boundary() -> None:
    at_limit = np.arange(16.0).reshape(4, 4)[:, :3]  # 12 elements in a 15-element span
    h = zarray.unpack_header(zarray.pack_header(at_limit))
    assert (h.strides, h.offset, h.nbytes) == ((32, 8), 0, 15 * 8)
    past = np.arange(20.0).reshape(4, 5)[:, :3]  # 12 elements in an 18-element span
    h = zarray.unpack_header(zarray.pack_header(past))
    assert (h.strides, h.offset, h.nbytes) == ((24, 8), 0, 12 * 8)


def test_broadcast_header_describes_distinct_data_only() -> None:
    A = np.broadcast_to(np.arange(1000.0), (1000, 1000))
    h = zarray.unpack_header(zarray.pack_header(A))
    assert h.nbytes == 8000
    assert h.strides == (0, 8)
    assert h.shape == (1000, 1000)


def test_zero_size_headers_use_c_strides_and_no_payload() -> None:
    for shape, order in product_ids([(0,), (0, 5), (3, 0), (2, 0, 4)], "CF"):
        A = np.zeros(shape, "<i8", order=order)
        h = zarray.unpack_header(zarray.pack_header(A))
        assert (h.shape, h.strides, h.offset, h.nbytes) == (shape, c_strides(shape, 8), 0, 0)
    A = np.zeros((7, 9), "<i8")[::2, :0]  # not contiguous, and empty
    h = zarray.unpack_header(zarray.pack_header(A))
    assert (h.shape, h.strides, h.nbytes) == ((4, 0), (8, 8), 0)


# -- malformed headers -----------------------------------------------------------------

GOOD = {"descr": b"<f8", "shape": (3,), "strides": (8,), "itemsize": 8, "nbytes": 24}


def _h(**changes: Any) -> bytes:
    args = {**GOOD, **changes}
    return build_header(
        args.pop("descr"),
        args.pop("shape"),
        args.pop("strides"),
        args.pop("itemsize"),
        args.pop("nbytes"),
        **args,
    )


def test_good_base_header_is_valid(twins: Twins) -> None:
    for module in twins:
        assert module.unpack(_h()) == (b"<f8", False, 8, (3,), (8,), 0, 24, False, 0, 0, 0)


_65 = tuple([1] * 65)

MALFORMED: dict[str, tuple[bytes, str]] = {
    "empty": (b"", r"bad magic b''"),
    "bad-magic": (_h(magic=b"\x93ZAQ"), r"bad magic b'\\x93ZAQ'"),
    "npy-magic": (b"\x93NUMPY\x01\x00v\x00{'descr': '<f8'}", "bad magic"),
    "json-recipe-frame": (b'{"dtype": "<f8", "shape": [3]}', "bad magic"),
    "short-magic": (b"\x93ZA", "bad magic"),
    "version-0": (_h(version=0), "unsupported header version 0"),
    "version-2": (_h(version=2), "unsupported header version 2"),
    "version-255": (_h(version=255), "unsupported header version 255"),
    **{
        f"flag-bit-{bit}": (_h(flags=1 << bit), f"unknown flag bits 0x{1 << bit:02x}")
        for bit in range(1, 8)
    },
    "codec-3": (_h(codec=3), "unknown codec id 3"),
    "codec-255": (_h(codec=255), "unknown codec id 255"),
    "payload-kind-2": (_h(kind=2), "unknown payload kind 2"),
    "payload-kind-255": (_h(kind=255), "unknown payload kind 255"),
    "filter-2": (_h(codec=1, reserved=2), "unknown filter id 2"),
    "filter-255": (_h(codec=2, reserved=255), "unknown filter id 255"),
    "filter-without-codec": (_h(reserved=1), "filter 1 is set without a codec"),
    "compressed-shared-memory": (_h(codec=1, kind=1), "shared-memory payload cannot be compressed"),
    "ndim-65": (_h(shape=_65, strides=_65), "ndim 65 exceeds the maximum of 64"),
    "ndim-255-short": (_h(ndim=255), "ndim 255 exceeds the maximum of 64"),
    "descriptor-kind-2": (_h(dkind=2), "unknown dtype descriptor kind 2"),
    "descriptor-kind-255": (_h(dkind=255), "unknown dtype descriptor kind 255"),
    **{
        f"reserved-byte-{12 + i}": (
            _h(codec=1, reserved=1 << (8 * i)),
            "reserved header bytes 13..15",
        )
        for i in range(1, 4)
    },
    "trailing-byte": (_h() + b"\x00", "1 unexpected bytes after the end of the header"),
    "trailing-100": (_h() + bytes(100), "100 unexpected bytes after the end"),
    "ndim-says-2": (_h(ndim=2), r"header truncated: .* ndim 2 .* need"),
    "descriptor-longer-than-frame": (_h(descr_len=4), "header truncated.*4-byte descriptor"),
    "descriptor-65535-missing": (_h(descr_len=65535), "header truncated.*65535-byte descriptor"),
    "negative-dimension": (_h(shape=(-1,)), "negative dimension -1 on axis 0"),
    "negative-dimension-axis-1": (
        _h(shape=(3, -5), strides=(8, 8)),
        "negative dimension -5 on axis 1",
    ),
    "int64-min-dimension": (_h(shape=(-(2**63),)), "negative dimension"),
    "shape-overflows": (
        _h(shape=(2**62, 4), strides=(32, 8)),
        "overflows a 64-bit byte count",
    ),
    "shape-overflows-itemsize": (_h(shape=(2**61,), itemsize=8, descr=b"<f8"), "overflows"),
    "shape-overflows-many-axes": (
        _h(shape=(2**16,) * 4, strides=(0,) * 4),
        "overflows a 64-bit byte count",
    ),
    "stride-past-end": (_h(strides=(12,)), "stride 12 on axis 0 reaches past the payload end"),
    "stride-outside": (_h(strides=(16,)), "stride 16 on axis 0 reaches outside the payload"),
    "stride-before-start": (
        _h(strides=(-8,)),
        "stride -8 on axis 0 reaches before the payload start",
    ),
    "stride-before-start-axis-1": (
        _h(shape=(2, 3), strides=(0, -8), offset=8),
        "stride -8 on axis 1 reaches before the payload start",
    ),
    "stride-huge": (_h(strides=(2**62,)), "stride 4611686018427387904 on axis 0 reaches outside"),
    "stride-int64-min": (_h(strides=(-(2**63),)), "reaches outside the payload"),
    "offset-past-payload": (_h(offset=25), "offset 25 lies past the payload length 24"),
    "offset-huge": (_h(offset=2**64 - 1), "lies past the payload length 24"),
    "first-element-past-end": (_h(shape=(1,), offset=20), "first element .* reaches past"),
    "nbytes-too-small": (_h(nbytes=16), "reaches past the payload end"),
    "nbytes-over-int64": (_h(nbytes=2**63), "payload length 9223372036854775808 exceeds"),
    "itemsize-over-int64": (_h(itemsize=2**63), "itemsize 9223372036854775808 exceeds"),
    "0d-itemsize-past-payload": (_h(shape=(), strides=(), nbytes=4), "first element"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_header(twins: Twins, case: str) -> None:
    buf, pattern = MALFORMED[case]
    message = twin_error(twins, "unpack", buf)
    assert re.search(pattern, message), message
    with pytest.raises(zarray.HeaderError) as info:
        zarray.unpack_header(buf)
    assert str(info.value) == message
    # also through the other buffer types a receiver may hand in
    assert twin_error(twins, "unpack", bytearray(buf)) == message
    assert twin_error(twins, "unpack", memoryview(buf)) == message


TRUNCATABLE = {
    "f8-1d": np.zeros(3),
    "0d": np.array(1.5),
    "ndim64": np.zeros((1,) * NUMPY_MAXDIMS, "u1"),
    "record": np.zeros(2, [("a", "<i4"), ("b", [("c", ">f8", (2,))])]),
}


@pytest.mark.parametrize("case", list(TRUNCATABLE))
def test_truncated_at_every_length(twins: Twins, case: str) -> None:
    h = zarray.pack_header(TRUNCATABLE[case])
    for n in range(len(h)):
        message = twin_error(twins, "unpack", h[:n])
        assert ("bad magic" if n < 4 else "header truncated") in message, (n, message)
        with pytest.raises(zarray.HeaderError, match=r"bad magic|truncated"):
            zarray.unpack_header(memoryview(h)[:n])


# Fields that pack must refuse: its checks are unpack's, so it never writes a header
# that a receiver would refuse.
PACK_REFUSES: dict[str, tuple[tuple[Any, ...], str]] = {
    "ndim-65": ((b"<f8", False, 8, _65, _65, 0, 8, False), "ndim 65 exceeds"),
    "strides-count": ((b"<f8", False, 8, (3,), (8, 8), 0, 24, False), "2 strides given for 1"),
    "descriptor-65536": ((b"x" * 65536, False, 8, (3,), (8,), 0, 24, False), "65536 bytes"),
    "itemsize-negative": ((b"<f8", False, -1, (3,), (8,), 0, 24, False), "itemsize -1"),
    "offset-negative": ((b"<f8", False, 8, (3,), (8,), -1, 24, False), "offset -1"),
    "nbytes-2**64": ((b"<f8", False, 8, (3,), (8,), 0, 2**64, False), "nbytes"),
    "dimension-2**63": ((b"<f8", False, 8, (2**63,), (8,), 0, 24, False), "dimension"),
    "stride-2**63": ((b"<f8", False, 8, (3,), (2**63,), 0, 24, False), "stride"),
    "negative-dimension": ((b"<f8", False, 8, (-3,), (8,), 0, 24, False), "negative dimension"),
    "overflow": ((b"<f8", False, 8, (2**62, 4), (0, 0), 0, 8, False), "overflows"),
    "stride-past-end": ((b"<f8", False, 8, (3,), (8,), 0, 23, False), "past the payload end"),
    "stride-before-start": ((b"<f8", False, 8, (3,), (-8,), 0, 24, False), "before the"),
    "offset-past": ((b"<f8", False, 8, (3,), (0,), 25, 24, False), "lies past"),
    "nbytes-over-int64": ((b"<f8", False, 8, (3,), (8,), 0, 2**63, False), "exceeds"),
}


@pytest.mark.parametrize("case", list(PACK_REFUSES))
def test_pack_refuses(twins: Twins, case: str) -> None:
    args, fragment = PACK_REFUSES[case]
    assert fragment in twin_error(twins, "pack", *args)


def test_pack_accepts_the_limits(twins: Twins) -> None:
    compiled, pure = twins
    cases = [
        (b"V" * 65535, True, 1, (0,), (1,), 0, 0, True),  # longest descriptor
        (b"<f8", False, 8, (1,) * 64, (8,) * 64, 0, 8, False),  # ndim 64
        (b"<f8", False, 8, (2**30, 2**20), (0, 0), 0, 8, False),  # huge broadcast
        (b"<f8", False, 8, (3,), (-8,), 16, 24, False),  # reversed
        (b"<f8", False, 8, (4, 0), (8, 8), 0, 0, False),  # empty
    ]
    for args in cases:
        h = compiled.pack(*args)
        assert pure.pack(*args) == h
        assert compiled.unpack(h) == pure.unpack(h) == (*args, 0, 0, 0)


NOT_A_BUFFER: dict[str, Any] = {
    "None": None,
    "str": "\x93ZAR",
    "int": 40,
    "list": [0x93, 0x5A, 0x41, 0x52],
    "non-contiguous": memoryview(bytes(200))[::2],
}


@pytest.mark.parametrize("case", list(NOT_A_BUFFER))
def test_not_a_byte_buffer(twins: Twins, case: str) -> None:
    message = twin_error(twins, "unpack", NOT_A_BUFFER[case])
    assert "not a contiguous byte buffer" in message


# -- descriptors that the codec carries but the receiver must refuse ---------------------


def _record(**doc: Any) -> bytes:
    base = {"names": ["a"], "formats": ["<f8"], "offsets": [0], "itemsize": 8}
    return json.dumps({**base, **doc}).encode()


def _nested(depth: int) -> bytes:
    doc: Any = {"names": ["a"], "formats": ["<f8"], "offsets": [0], "itemsize": 8}
    for _ in range(depth):
        doc = {"names": ["a"], "formats": [doc], "offsets": [0], "itemsize": 8}
    return json.dumps(doc).encode()


# (descriptor, structured, itemsize, pattern)
BAD_DESCRIPTORS: dict[str, tuple[bytes, bool, int, str]] = {
    "object": (b"|O8", False, 8, "invalid dtype type string '|O8'"),
    "object-bare": (b"O", False, 8, "invalid dtype type string 'O'"),
    "stringdtype-T16": (b"<T16", False, 16, "invalid dtype type string '<T16'"),
    "stringdtype-|T16": (b"|T16", False, 16, "invalid dtype type string"),
    "stringdtype-repr": (b"StringDType()", False, 16, "invalid dtype type string"),
    "python-expression": (b"__import__('os')", False, 8, "invalid dtype type string"),
    "empty": (b"", False, 8, "invalid dtype type string ''"),
    "trailing-nul": (b"<f8\x00", False, 8, "invalid dtype type string"),
    "leading-space": (b" <f8", False, 8, "invalid dtype type string"),
    "not-ascii": (b"\xff\xfe", False, 8, "not ASCII"),
    "no-such-float": (b"<f3", False, 3, "invalid dtype type string '<f3'"),
    "bad-datetime-unit": (b"<M8[xs]", False, 8, "invalid dtype type string"),
    "unclosed-datetime": (b"<M8[ns", False, 8, "invalid dtype type string"),
    "bytes-order-on-datetime": (b"|M8[ns]", False, 8, "invalid dtype type string"),
    "itemsize-mismatch": (b"<i8", False, 4, "itemsize 8, but the header says 4"),
    "typestring-as-record": (b"<f8", True, 8, "not valid JSON|type string, but the header"),
    "record-as-typestring": (_record(), False, 8, "invalid dtype type string|record descr"),
    "json-invalid": (b"{", True, 8, "not valid JSON"),
    "json-not-utf8": (b'{"names": ["\xff"]}', True, 8, "not valid JSON"),
    "json-list": (b"[]", True, 8, "must be a JSON object"),
    "json-string": (b'"<f8"', True, 8, "must be a JSON object"),
    "json-deep-list": (b"[" * 32000 + b"]" * 32000, True, 8, "not valid JSON|JSON object"),
    "unknown-key": (_record(__reduce__="os.system"), True, 8, r"unknown keys.*__reduce__"),
    "missing-names": (b'{"formats": ["<f8"], "offsets": [0], "itemsize": 8}', True, 8, "names"),
    "lengths-differ": (_record(offsets=[0, 8]), True, 8, "differ in length"),
    "name-not-str": (_record(names=[1]), True, 8, "names must be strings"),
    "object-field": (_record(formats=["|O8"]), True, 8, "invalid field type string '|O8'"),
    "eval-field": (
        _record(formats=["__import__('builtins').setattr(__import__('builtins'),'PWN',1)"]),
        True,
        8,
        "invalid field type string",
    ),
    "field-format-number": (_record(formats=[8]), True, 8, "invalid field format"),
    "negative-offset": (_record(offsets=[-1]), True, 8, "offsets must be non-negative"),
    "bool-offset": (_record(offsets=[True]), True, 8, "offsets must be non-negative integers"),
    "negative-itemsize": (_record(itemsize=-1), True, 8, "itemsize must be a non-negative"),
    "nan-itemsize": (
        b'{"names":[],"formats":[],"offsets":[],"itemsize":NaN}',
        True,
        8,
        "NaN is not standard JSON",
    ),
    "itemsize-too-small": (_record(itemsize=4), True, 4, "rejected by numpy"),
    "itemsize-vs-header": (_record(itemsize=16), True, 8, "itemsize 16, but the header says 8"),
    "duplicate-names": (
        _record(names=["a", "a"], formats=["<f8", "<f8"], offsets=[0, 8], itemsize=16),
        True,
        16,
        "rejected by numpy",
    ),
    "titles-not-str": (_record(titles=[1]), True, 8, "titles must be"),
    "aligned-not-bool": (_record(aligned="yes"), True, 8, "'aligned' must be a boolean"),
    "subarray-negative": (
        _record(formats=[{"base": "<f8", "shape": [-1]}]),
        True,
        8,
        r"invalid subarray shape \[-1\]",
    ),
    "subarray-huge": (
        _record(formats=[{"base": "<f8", "shape": [2**31]}]),
        True,
        8,
        "invalid subarray shape",
    ),
    "subarray-overflow": (
        _record(formats=[{"base": "<f8", "shape": [2**30, 2**30, 2**30]}]),
        True,
        8,
        "rejected by numpy",
    ),
    "subarray-empty-shape": (
        _record(formats=[{"base": "<f8", "shape": []}]),
        True,
        8,
        "invalid subarray shape",
    ),
    "subarray-eval-shape": (
        _record(formats=[{"base": "<f8", "shape": "eval('(2,)')"}]),
        True,
        8,
        "invalid subarray shape",
    ),
    "subarray-float-shape": (
        _record(formats=[{"base": "<f8", "shape": [1.5]}]),
        True,
        8,
        "invalid subarray shape",
    ),
    "subarray-bool-shape": (
        _record(formats=[{"base": "<f8", "shape": [True]}]),
        True,
        8,
        "invalid subarray shape",
    ),
    "subarray-extra-key": (
        _record(formats=[{"base": "<f8", "shape": [1], "exec": "x"}]),
        True,
        8,
        "exactly 'base' and 'shape'",
    ),
    "subarray-object-base": (
        _record(formats=[{"base": "O", "shape": [1]}]),
        True,
        8,
        "invalid field type string 'O'",
    ),
    "nested-too-deep": (_nested(40), True, 8, "deeper than 32 levels"),
}


@pytest.mark.parametrize("case", list(BAD_DESCRIPTORS))
def test_bad_descriptor(twins: Twins, case: str) -> None:
    descr, structured, itemsize, pattern = BAD_DESCRIPTORS[case]
    h = build_header(descr, (1,), (itemsize,), itemsize, itemsize, structured=structured)
    compiled, pure = twins
    # The codec carries the descriptor as opaque bytes: both twins parse it alike ...
    fields = compiled.unpack(h)
    assert pure.unpack(h) == fields
    assert fields[0] == descr
    # ... and the receiver refuses it, naming the problem, without evaluating anything.
    with pytest.raises(zarray.HeaderError, match=pattern):
        zarray.unpack_header(h)
    with pytest.raises(zarray.HeaderError, match=pattern):
        decode_dtype(descr, structured, itemsize)
    assert not hasattr(builtins, "PWN")


def test_payload_length_mismatch_on_receive(inproc_pair: Any) -> None:
    sender, receiver = inproc_pair
    zarray.send_array(sender, np.zeros(3))  # puts '<f8' in the receiver's cache
    zarray.recv_array(receiver)
    h = zarray.pack_header(np.zeros(3))
    for size in (0, 16, 23, 25, 32):
        sender.send_multipart([h, bytes(size)])
        with pytest.raises(zarray.HeaderError, match=f"payload is {size} bytes.*says 24"):
            zarray.recv_array(receiver)
    with pytest.raises(zmq.Again):
        receiver.recv(zmq.NOBLOCK)


def test_int64_limits_in_header_fields(twins: Twins) -> None:
    """Big but consistent fields parse; one byte more is refused (no overflow)."""
    compiled, pure = twins
    h = build_header(b"<f8", (2**59,), (0,), 8, INT64_MAX)
    assert compiled.unpack(h) == pure.unpack(h)
    h = build_header(b"|u1", (INT64_MAX,), (1,), 1, INT64_MAX)
    assert compiled.unpack(h)[3] == (INT64_MAX,)
    assert "overflows" in twin_error(
        twins, "unpack", build_header(b"<u2", (INT64_MAX,), (2,), 2, INT64_MAX)
    )


# -- the payload encoding bytes (codec id 6, payload kind 7, filter id 12) ----------------


def test_golden_bytes_of_the_payload_encoding(codec: ModuleType) -> None:
    """A zstd + shuffle payload and a shared-memory payload, byte for byte."""
    fields = (b"<u2", False, 2, (4,), (2,), 0, 8, False)
    for enc, (b6, b7, b12) in {(2, 1, 0): (2, 0, 1), (0, 0, 1): (0, 1, 0)}.items():
        golden = (
            struct.pack("<4sBBBBBBHB3sQQQ", MAGIC, 1, 0, b6, b7, 1, 0, 3, b12, bytes(3), 2, 0, 8)
            + struct.pack("<2q", 4, 2)
            + b"<u2"
        )
        assert codec.pack(*fields, *enc) == golden
        assert codec.unpack(golden) == (*fields, *enc)
        assert codec.set_encoding(codec.pack(*fields), *enc) == golden


@pytest.mark.parametrize(
    ("encoding", "pattern"),
    [
        ((3, 0, 0), "unknown codec id 3"),
        ((1, 2, 0), "unknown filter id 2"),
        ((0, 0, 2), "unknown payload kind 2"),
        ((0, 1, 0), "filter 1 is set without a codec"),
        ((1, 0, 1), "shared-memory payload cannot be compressed"),
        ((256, 0, 0), "out of range"),
        ((0, -1, 0), "out of range"),
    ],
)
def test_pack_refuses_bad_encodings(
    twins: Twins, encoding: tuple[int, int, int], pattern: str
) -> None:
    fields = (b"<u2", False, 2, (4,), (2,), 0, 8, False)
    h = twins[1].pack(*fields)
    for module in twins:
        with pytest.raises(zarray.HeaderError, match=pattern):
            module.pack(*fields, *encoding)
        with pytest.raises(zarray.HeaderError, match=pattern):
            module.set_encoding(h, *encoding)


def test_set_encoding_needs_a_header(twins: Twins) -> None:
    for module in twins:
        for bad in (b"", b"\x93ZAR" + bytes(10), b"\x93ZAQ" + bytes(60)):
            with pytest.raises(zarray.HeaderError, match="not a zarray header"):
                module.set_encoding(bad, 1, 0, 0)
