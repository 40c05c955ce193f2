"""Round trips over real sockets: the dtype x layout matrix of issue 2, "What must
round-trip", on inproc in full and on ipc and tcp as a representative subset (the
full product on every transport runs with --runslow). Also copy=True on receive, and
the refusal of arrays zarray must not send."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest
import zmq
from common import (
    DTYPES,
    KINDS,
    LAYOUTS,
    NUMPY_MAXDIMS,
    REPRESENTATIVE_DTYPES,
    UNSUPPORTED,
    SocketMaker,
    assert_private,
    check_roundtrip,
    check_wire,
    data_bytes,
    make_array,
    product_ids,
)

import zarray
import zarray._header_py

Pair = tuple[zmq.Socket[Any], zmq.Socket[Any]]

FULL = product_ids(DTYPES, LAYOUTS)
# Every dtype in C order, and every layout in the representative dtypes.
SUBSET = sorted(
    set(product_ids(DTYPES, ["C"]))
    | set(product_ids(REPRESENTATIVE_DTYPES, LAYOUTS))
    | set(product_ids(DTYPES, ["big-F"]))
)
SUBSET_IDS = set(SUBSET)


@pytest.mark.parametrize(("dtype", "layout"), FULL)
def test_matrix_inproc(make_pair: SocketMaker, dtype: str, layout: str) -> None:
    sender, receiver = make_pair.pair("inproc")
    check_roundtrip(LAYOUTS[layout](DTYPES[dtype]), sender, receiver)


@pytest.mark.parametrize("transport", ["ipc", "tcp"])
@pytest.mark.parametrize(("dtype", "layout"), SUBSET)
def test_matrix_subset(make_pair: SocketMaker, transport: str, dtype: str, layout: str) -> None:
    kind = "PUSH-PULL" if len(dtype + layout) % 2 else "PAIR"
    sender, receiver = make_pair.pair(transport, kind)
    check_roundtrip(LAYOUTS[layout](DTYPES[dtype]), sender, receiver)


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["ipc", "tcp"])
@pytest.mark.parametrize(("dtype", "layout"), [c for c in FULL if c not in SUBSET_IDS])
def test_matrix_full_other_transports(
    make_pair: SocketMaker, transport: str, dtype: str, layout: str
) -> None:
    sender, receiver = make_pair.pair(transport)
    check_roundtrip(LAYOUTS[layout](DTYPES[dtype]), sender, receiver)


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("dtype", ["<f8", ">i2", "<m8[ms]", "rec-offsets", "rec-nested<"])
def test_wire_frames(inproc_pair: Pair, dtype: str, layout: str) -> None:
    """The frames themselves: two of them, header == pack_header, payload as the
    layout policy says (span, compact copy or empty), and it holds the data."""
    check_wire(LAYOUTS[layout](DTYPES[dtype]), *inproc_pair)


def test_one_array_many_times(pair: Pair) -> None:
    """One socket pair carries a sequence of different arrays, each whole."""
    sender, receiver = pair
    for dtype, layout in product_ids(REPRESENTATIVE_DTYPES, ["C", "F", "broadcast", "0d"]):
        check_roundtrip(LAYOUTS[layout](DTYPES[dtype]), sender, receiver)


def test_fortran_is_not_transposed(pair: Pair) -> None:
    sender, receiver = pair
    A = np.asfortranarray(np.arange(12.0).reshape(3, 4))
    B = check_roundtrip(A, sender, receiver)
    assert B.flags.f_contiguous
    assert not B.flags.c_contiguous
    assert B.strides == (8, 24)
    np.testing.assert_array_equal(B, A)
    assert B[1, 2] == 6.0


def test_broadcast_sends_only_distinct_data(pair: Pair) -> None:
    sender, receiver = pair
    v = np.arange(1000.0)
    A = np.broadcast_to(v, (1000, 1000))
    h = zarray.unpack_header(zarray.pack_header(A))
    assert h.nbytes == 8000
    zarray.send_array(sender, A)
    header, payload = receiver.recv_multipart(copy=False)
    assert len(payload.buffer) == 8000
    assert zarray.unpack_header(header) == h
    # and recv_array rebuilds the zero-stride view
    zarray.send_array(sender, A)
    B = zarray.recv_array(receiver)
    assert B.strides == (0, 8)
    np.testing.assert_array_equal(B, A)
    assert not B.flags.writeable  # broadcast_to views are read-only


@pytest.mark.skipif(NUMPY_MAXDIMS < 64, reason="numpy 1.x arrays have at most 32 dimensions")
def test_ndim_64(pair: Pair) -> None:
    sender, receiver = pair
    for shape in [(1,) * 64, (2,) * 10 + (1,) * 54, (1,) * 63 + (0,)]:
        A = make_array("<i4", shape)
        B = check_roundtrip(A, sender, receiver)
        assert B.ndim == 64


@pytest.mark.parametrize("dtype", [d for d in DTYPES if d.startswith(("<M8", "<m8", ">M8"))])
def test_datetime_values(inproc_pair: Pair, dtype: str) -> None:
    """datetime64/timedelta64 keep their unit and values (NaT included)."""
    sender, receiver = inproc_pair
    dt = np.dtype(dtype)
    ints = np.array([0, 1, -1, 2**40, np.iinfo(np.int64).min], dtype=f"{dt.byteorder}i8")
    A = ints.view(dt)
    B = check_roundtrip(A, sender, receiver)
    assert np.datetime_data(B.dtype) == np.datetime_data(dt)
    np.testing.assert_array_equal(B.view(f"{dt.byteorder}i8"), A.view(f"{dt.byteorder}i8"))
    assert np.isnat(B[-1])


@pytest.mark.parametrize("dtype", [d for d in DTYPES if d.startswith("rec-")])
def test_structured_values(pair: Pair, dtype: str) -> None:
    sender, receiver = pair
    A = make_array(DTYPES[dtype], (3, 2))
    B = check_roundtrip(A, sender, receiver)
    assert B.dtype.descr == A.dtype.descr
    for name in A.dtype.names or ():
        assert data_bytes(B[name]) == data_bytes(A[name])


def test_numpy_format_record_arrays(pair: Pair) -> None:
    """The record arrays of numpy's test_format.py, with their values."""
    sender, receiver = pair
    pbuffer = [([3, 2], [[6.0, 4.0], [6.0, 4.0]], 8), ([4, 3], [[7.0, 5.0], [7.0, 5.0]], 9)]
    nbuffer = [
        (
            [3, 2],
            (6j, 6.0, ("nn", [6j, 4j], [6.0, 4.0], [1, 2]), "NN", True),
            "cc",
            ("NN", 6j),
            [[6.0, 4.0], [6.0, 4.0]],
            8,
        ),
        (
            [4, 3],
            (7j, 7.0, ("oo", [7j, 5j], [7.0, 5.0], [2, 1]), "OO", False),
            "dd",
            ("OO", 7j),
            [[7.0, 5.0], [7.0, 5.0]],
            9,
        ),
    ]
    arrays = [
        np.array(pbuffer, dtype=DTYPES["rec-plain<"]),
        np.array(nbuffer, dtype=DTYPES["rec-nested<"]),
        np.array(pbuffer, dtype=DTYPES["rec-plain>"]),
        np.array(nbuffer, dtype=DTYPES["rec-nested>"]),
        np.zeros(1, dtype=[("c", ("<f8", (5,)), (2,))]),
    ]
    for A in arrays:
        B = check_roundtrip(A, sender, receiver)
        np.testing.assert_array_equal(B, A)
        name = (A.dtype.names or ("",))[-1]
        assert B[name].tolist() == A[name].tolist()


@pytest.mark.parametrize("name", ["aligned", "offsets", "nested-offsets", "empty-name", "titles"])
def test_numpy_format_padded_dtypes(inproc_pair: Pair, name: str) -> None:
    """test_format.py's test_load_padded_dtype cases, filled the way it fills them."""
    dt = DTYPES[f"rec-{name}"]
    A = np.zeros(3, dt)
    for i in range(3):
        A[i] = i + 5
    B = check_roundtrip(A, *inproc_pair)
    np.testing.assert_array_equal(B, A)
    assert B.dtype.isalignedstruct == dt.isalignedstruct


def test_unicode_and_bytes_values(pair: Pair) -> None:
    sender, receiver = pair
    for A in [
        np.array(["", "a", "héllo", "日本語😀"], dtype="<U5"),
        np.array(["x", "yz"], dtype=">U2"),
        np.array([b"", b"\x00\xffab"], dtype="S4"),
        np.array([b"\x01\x02\x03"], dtype="V3"),
    ]:
        B = check_roundtrip(A, sender, receiver)
        assert B.tolist() == A.tolist()


def test_byte_order_is_kept(pair: Pair) -> None:
    sender, receiver = pair
    for t in ["i2", "u4", "i8", "f2", "f4", "f8", "c8", "c16", "g", "G"]:
        for order in ("<", ">"):
            dt = np.dtype(f"{order}{t}")
            A = np.arange(7).astype(dt)
            B = check_roundtrip(A, sender, receiver)
            assert B.dtype.str[0] == order
            np.testing.assert_array_equal(B, np.arange(7))


# -- copy=True on receive ----------------------------------------------------------------

COPY_CASES = sorted(
    set(product_ids(REPRESENTATIVE_DTYPES, LAYOUTS)) | set(product_ids(DTYPES, ["C", "big-F"]))
)


@pytest.mark.parametrize(("dtype", "layout"), COPY_CASES)
def test_copy_on_receive_inproc(make_pair: SocketMaker, dtype: str, layout: str) -> None:
    sender, receiver = make_pair.pair("inproc")
    A = LAYOUTS[layout](DTYPES[dtype])
    B = check_roundtrip(A, sender, receiver, copy=True)
    assert_private(B, A)


@pytest.mark.parametrize("transport", ["ipc", "tcp"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_copy_on_receive_other_transports(
    make_pair: SocketMaker, transport: str, layout: str
) -> None:
    sender, receiver = make_pair.pair(transport)
    A = LAYOUTS[layout](DTYPES["<f8"])
    B = check_roundtrip(A, sender, receiver, copy=True)
    assert_private(B, A)


def test_copy_on_receive_is_independent(inproc_pair: Pair) -> None:
    """Over inproc a zero-copy frame is the sender's memory; a copy is not."""
    sender, receiver = inproc_pair
    A = np.arange(2**17, dtype=np.float64)  # 1 MiB: sent without a copy
    B = check_roundtrip(A, sender, receiver, copy=True)
    A[0] = -1.0
    assert B[0] == 0.0
    B[1] = -2.0
    assert A[1] == 1.0


def test_send_copy_true(pair: Pair) -> None:
    sender, receiver = pair
    for layout in ["C", "F", "reversed", "broadcast", "big-C", "0d", "empty-0x5"]:
        check_roundtrip(LAYOUTS[layout](DTYPES["<c16"]), sender, receiver, send_copy=True)


# -- refusal -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("transport", ["inproc", "ipc", "tcp"])
@pytest.mark.parametrize("case", list(UNSUPPORTED))
def test_unsupported_arrays_are_refused_before_sending(
    make_pair: SocketMaker, transport: str, kind: str, case: str
) -> None:
    sender, receiver = make_pair.pair(transport, kind)
    A = UNSUPPORTED[case]()
    with pytest.raises(zarray.UnsupportedArrayError):
        zarray.pack_header(A)
    with pytest.raises(zarray.UnsupportedArrayError) as info:
        zarray.send_array(sender, A)
    assert isinstance(info.value, TypeError)
    assert str(info.value)
    with pytest.raises(zmq.Again):
        receiver.recv(zmq.NOBLOCK)
    # Had a header gone out with SNDMORE, this message would arrive glued to it.
    check_roundtrip(np.arange(5.0), sender, receiver)
    with pytest.raises(zmq.Again):
        receiver.recv(zmq.NOBLOCK)


def test_stringdtype_is_refused(inproc_pair: Pair) -> None:
    StringDType = getattr(getattr(np, "dtypes", None), "StringDType", None)
    if StringDType is None:
        pytest.skip("numpy has no StringDType")
    sender, receiver = inproc_pair
    A = np.array(["short", "a much longer string that lives outside"], dtype=StringDType())
    with pytest.raises(zarray.UnsupportedArrayError, match="StringDType"):
        zarray.send_array(sender, A)
    with pytest.raises(zmq.Again):
        receiver.recv(zmq.NOBLOCK)


def test_object_refusal_names_the_problem() -> None:
    with pytest.raises(zarray.UnsupportedArrayError, match=r"object|Python objects"):
        zarray.pack_header(np.array([None]))
    with pytest.raises(zarray.UnsupportedArrayError, match="masked"):
        zarray.pack_header(np.ma.masked_array([1.0]))
    with pytest.raises(zarray.UnsupportedArrayError, match="ndarray"):
        zarray.pack_header([1, 2, 3])


@pytest.mark.skipif(NUMPY_MAXDIMS >= 64, reason="numpy 2 holds all 64 dimensions")
def test_ndim_beyond_this_numpy_is_a_header_error(inproc_pair: Pair) -> None:
    """numpy 1.x stops at 32 dimensions: a valid 64-dimension header is refused cleanly."""
    sender, receiver = inproc_pair
    header = zarray._header_py.pack(b"<i4", False, 4, (1,) * 64, (4,) * 64, 0, 4, False)
    sender.send_multipart([header, b"\0\0\0\0"])
    with pytest.raises(zarray.HeaderError, match="ndim 64 exceeds the 32 dimensions"):
        zarray.recv_array(receiver)
    zarray.send_array(sender, np.arange(3))
    np.testing.assert_array_equal(zarray.recv_array(receiver), np.arange(3))


def test_equal_dtypes_that_numpy_exports_differently(inproc_pair: Any) -> None:
    """numpy exports long double under "=g" but not under "<g" (newbyteorder("<")), yet
    the two dtypes are equal and share one encode-cache entry: whichever is sent first,
    both must go (this failed in whichever order the cache met them)."""
    from zarray import _dtypes

    sender, receiver = inproc_pair
    native = np.arange(20000, dtype=np.longdouble).reshape(100, 200)  # above copy_threshold
    order = "<" if sys.byteorder == "little" else ">"
    spelled = native.view(native.dtype.newbyteorder(order))  # the same bytes, "<g"
    assert spelled.dtype.byteorder == order
    for first, second in ((native, spelled), (spelled, native)):
        _dtypes.encode_cache.clear()
        for A in (first, second, np.asfortranarray(second)):
            zarray.send_array(sender, A)
            B = zarray.recv_array(receiver)
            assert B.dtype == A.dtype
            assert np.array_equal(B, A)
