"""Reusable checkers and case lists of the core test suite (issue 2).

``check_roundtrip`` sends an array over a real socket pair and checks everything the
issue promises of the received array; ``data_bytes`` compares arrays byte for byte
(datetimes and records included, padding excluded); ``expected_wire`` states the
documented layout policy independently of zarray's code; ``build_header`` writes a
header by hand from the byte table of docs/FORMAT.md. The case lists (``DTYPES``,
``LAYOUTS``) are combined with ``itertools.product`` by the test modules.
"""

from __future__ import annotations

import ctypes
import itertools
import math
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import zmq

import zarray

NDArray = np.ndarray[Any, Any]

#: Hang guard of every blocking socket call, in milliseconds (never a synchronisation).
GUARD_MS = 10_000
#: Hang guard for waits on a tracker, in seconds.
GUARD_S = GUARD_MS / 1000

# -- the wire format, written from docs/FORMAT.md and not from zarray's code ----------

MAGIC = b"\x93ZAR"
FIXED = struct.Struct("<4sBBBBBBHIQQQ")
assert FIXED.size == 40
#: The documented span policy (docs/FORMAT.md, ``zarray._array.SPAN_OVERHEAD``).
SPAN_OVERHEAD = 0.25
INT64_MAX = 2**63 - 1
# numpy 2 allows 64 dimensions, numpy 1.x only 32: the "ndim64" cases use what this
# numpy allows (the wire format itself always carries up to 64).
NUMPY_MAXDIMS = 64 if int(np.__version__.split(".")[0]) >= 2 else 32


def build_header(
    descr: bytes,
    shape: tuple[int, ...],
    strides: tuple[int, ...],
    itemsize: int,
    nbytes: int,
    *,
    offset: int = 0,
    flags: int = 0,
    structured: bool = False,
    magic: bytes = MAGIC,
    version: int = 1,
    codec: int = 0,
    kind: int = 0,
    ndim: int | None = None,
    dkind: int | None = None,
    descr_len: int | None = None,
    reserved: int = 0,
) -> bytes:
    """A header frame written field by field; every field can be set to a bad value."""
    fixed = FIXED.pack(
        magic,
        version,
        flags,
        codec,
        kind,
        len(shape) if ndim is None else ndim,
        (1 if structured else 0) if dkind is None else dkind,
        len(descr) if descr_len is None else descr_len,
        reserved,
        itemsize,
        offset,
        nbytes,
    )
    dims = b"".join(struct.pack("<q", v) for v in (*shape, *strides))
    return fixed + dims + descr


def c_strides(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """C-order strides as numpy computes them (a dimension of 0 counts as 1)."""
    out = []
    step = itemsize
    for n in reversed(shape):
        out.append(step)
        step *= max(n, 1)
    return tuple(reversed(out))


def memory_span(A: NDArray) -> tuple[int, int]:
    """``(lo, span)``: where A's lowest element byte lies relative to A[0,...,0], and
    how many bytes from there reach A's highest element byte."""
    lo = hi = 0
    for n, s in zip(A.shape, A.strides, strict=True):
        if s < 0:
            lo += (n - 1) * s
        else:
            hi += (n - 1) * s
    return lo, hi - lo + A.dtype.itemsize


def expected_wire(A: NDArray) -> tuple[tuple[int, ...], int, int]:
    """``(strides, offset, nbytes)`` that the documented layout policy puts in A's header."""
    itemsize = A.dtype.itemsize
    if A.size == 0:
        return c_strides(A.shape, itemsize), 0, 0
    if A.flags.c_contiguous or A.flags.f_contiguous:
        return A.strides, 0, A.nbytes
    lo, span = memory_span(A)
    if span <= A.nbytes * (1 + SPAN_OVERHEAD):
        align = A.dtype.alignment
        aligned = lo % align == 0 and all(
            s % align == 0 for n, s in zip(A.shape, A.strides, strict=True) if n > 1
        )
        # Distinct elements: an axis of stride 0 repeats one element.
        distinct = itemsize * math.prod(
            min(n, 1) if s == 0 else n for n, s in zip(A.shape, A.strides, strict=True)
        )
        if aligned or distinct <= 2 * span + 64:
            return A.strides, -lo, span
        # Misaligned and overlapping (docs/FORMAT.md): the distinct elements, gathered
        # compact in memory order, with the zero-stride axes kept at stride 0.
        core = A[tuple(slice(0, 1) if s == 0 else slice(None) for s in A.strides)]
        compact = np.empty_like(core, order="K")
        wide = tuple(0 if s == 0 else c for s, c in zip(A.strides, compact.strides, strict=True))
        return expected_wire(np.ndarray(A.shape, A.dtype, compact, 0, wide))
    compact = A.copy(order="K")
    return compact.strides, 0, compact.nbytes


def address(A: Any) -> int:
    """The address of A's first element (or of a buffer's first byte)."""
    if isinstance(A, np.ndarray):
        return int(A.__array_interface__["data"][0])
    return address(np.frombuffer(A, np.uint8))


def raw_span(A: NDArray) -> bytes:
    """The bytes of A's memory span (what zarray sends for a span layout)."""
    lo, span = memory_span(A)
    return ctypes.string_at(address(A) + lo, span)


# -- sockets -------------------------------------------------------------------------------

TRANSPORTS = ("inproc", "ipc", "tcp")
KINDS = {"PAIR": (zmq.PAIR, zmq.PAIR), "PUSH-PULL": (zmq.PUSH, zmq.PULL)}
_endpoints = itertools.count()


def guard(sock: zmq.Socket[Any]) -> zmq.Socket[Any]:
    """Set the hang guards on a socket."""
    sock.rcvtimeo = GUARD_MS
    sock.sndtimeo = GUARD_MS
    sock.linger = 0
    return sock


class SocketMaker:
    """Makes guarded, connected socket pairs and closes all of them at the end."""

    def __init__(self, ctx: zmq.Context[Any], ipc_dir: Callable[[], Path]) -> None:
        self.ctx = ctx
        self._ipc_dir = ipc_dir
        self.made: list[zmq.Socket[Any]] = []

    def socket(self, kind: int) -> zmq.Socket[Any]:
        sock = guard(self.ctx.socket(kind))
        self.made.append(sock)
        return sock

    def bind(self, sock: zmq.Socket[Any], transport: str) -> str:
        """Bind ``sock`` to a fresh endpoint of ``transport``; return what to connect to."""
        n = next(_endpoints)
        if transport == "inproc":
            endpoint = f"inproc://zarray-test-{os.getpid()}-{n}"
            sock.bind(endpoint)
            return endpoint
        if transport == "ipc":
            endpoint = f"ipc://{self._ipc_dir()}/s{n}"
            sock.bind(endpoint)
            return endpoint
        if transport == "tcp":
            port = sock.bind_to_random_port("tcp://127.0.0.1")
            return f"tcp://127.0.0.1:{port}"
        raise ValueError(f"unknown transport {transport!r}")

    def pair(self, transport: str, kind: str = "PAIR") -> tuple[zmq.Socket[Any], zmq.Socket[Any]]:
        """``(sender, receiver)``: the receiver binds, the sender connects."""
        send_kind, recv_kind = KINDS[kind]
        receiver = self.socket(recv_kind)
        sender = self.socket(send_kind)
        sender.connect(self.bind(receiver, transport))
        return sender, receiver

    def close(self) -> None:
        for sock in self.made:
            sock.close(linger=0)
        self.made.clear()


# -- comparing arrays ----------------------------------------------------------------


def data_bytes(A: NDArray) -> list[bytes]:
    """A's element bytes, field by field for records (padding between fields excluded,
    since numpy's own copies do not preserve it). Works for every dtype zarray sends,
    including datetime64, which numpy will not export through the buffer protocol."""
    dt = A.dtype
    if dt.names is not None:
        flat = A.reshape(-1)  # subarray fields add dimensions; numpy allows only 64
        return [b for name in dt.names for b in data_bytes(flat[name])]
    return [A.view(np.dtype((np.void, dt.itemsize))).tobytes()] if dt.itemsize else [b""]


def assert_same_dtype(got: np.dtype[Any], want: np.dtype[Any]) -> None:
    """Equal dtypes the way the issue asks: ``==``, ``.str`` and, for records, ``.descr``."""
    assert got == want, f"dtype {got!r} != {want!r}"
    assert got.str == want.str, f"dtype.str {got.str!r} != {want.str!r}"
    assert got.itemsize == want.itemsize
    if want.names is not None:
        assert got.descr == want.descr
        assert got.names == want.names
        assert got.isalignedstruct == want.isalignedstruct
        assert got.fields == want.fields


def strides_fit_alignment(strides: tuple[int, ...], shape: tuple[int, ...], dt: Any) -> bool:
    """Whether an array with these strides can be aligned for its dtype at all."""
    align = np.dtype(dt).alignment
    return all(n <= 1 or s % align == 0 for n, s in zip(shape, strides, strict=True))


def base_chain(A: NDArray) -> list[Any]:
    """A, its base, the base's base, ... (the objects that keep A's memory alive)."""
    chain: list[Any] = [A]
    while isinstance(chain[-1], np.ndarray) and chain[-1].base is not None:
        chain.append(chain[-1].base)
    return chain


def assert_private(B: NDArray, A: NDArray | None = None) -> None:
    """B owns its memory or views a private numpy buffer: never a received frame, never A."""
    chain = base_chain(B)
    assert not any(isinstance(x, (zmq.Frame, bytes, memoryview)) for x in chain), chain
    owner = chain[-1]
    assert isinstance(owner, np.ndarray), f"received copy is kept alive by {owner!r}"
    assert owner.flags.owndata
    if A is not None and A.size and B.size:
        assert not np.may_share_memory(A, B)


def assert_within_base(B: NDArray) -> None:
    """Every byte of every element of B lies inside the memory B is built on (the
    received frame or zarray's own copy): never a read outside the frame."""
    if B.size == 0 or B.dtype.itemsize == 0:
        return
    root = base_chain(B)[-1]
    if isinstance(root, np.ndarray):
        start, size = address(root), root.nbytes
    else:
        start, size = address(np.frombuffer(root, np.uint8)), memoryview(root).nbytes
    lo, span = memory_span(B)
    first = address(B) + lo
    assert start <= first, "array reaches before the start of its buffer"
    assert first + span <= start + size, "array reaches past the end of its buffer"


def check_received(A: NDArray, B: Any, *, copy: bool = False) -> None:
    """Everything the issue says a received array is, given the sender's array A."""
    assert type(B) is np.ndarray, type(B)
    assert_same_dtype(B.dtype, A.dtype)
    assert B.shape == A.shape
    assert data_bytes(B) == data_bytes(A)
    strides = expected_wire(A)[0]
    if strides_fit_alignment(strides, A.shape, A.dtype):
        # C/F-contiguous and span layouts keep the sender's strides (Fortran is not
        # transposed, broadcasts keep their zero strides); compacted ones are "K" order.
        assert B.strides == strides, f"strides {B.strides} != {strides}"
    assert B.flags.aligned, "received array is not aligned for its dtype"
    assert B.flags.writeable == A.flags.writeable, "read-only bit not carried"
    assert_within_base(B)
    if copy:
        assert_private(B, A)


def check_roundtrip(
    A: NDArray,
    sender: zmq.Socket[Any],
    receiver: zmq.Socket[Any],
    *,
    copy: bool = False,
    send_copy: bool = False,
) -> NDArray:
    """Send A with send_array, receive it with recv_array, check it; return it."""
    tracker = zarray.send_array(sender, A, copy=send_copy)
    assert isinstance(tracker, zmq.MessageTracker)
    B = zarray.recv_array(receiver, copy=copy)
    check_received(A, B, copy=copy)
    return B


def check_wire(A: NDArray, sender: zmq.Socket[Any], receiver: zmq.Socket[Any]) -> None:
    """Send A and inspect the raw frames: header == pack_header(A), payload length and
    geometry as the layout policy says, and the payload viewed by the header equals A."""
    zarray.send_array(sender, A)
    frames = receiver.recv_multipart(copy=False)
    assert len(frames) == 2
    header, payload = frames[0].bytes, frames[1].buffer
    assert header == zarray.pack_header(A)
    h = zarray.unpack_header(header)
    strides, offset, nbytes = expected_wire(A)
    assert (h.strides, h.offset, h.nbytes) == (strides, offset, nbytes)
    assert len(payload) == nbytes
    assert_same_dtype(h.dtype, A.dtype)
    assert h.shape == A.shape
    assert h.writeable == A.flags.writeable
    rebuilt = np.ndarray(h.shape, h.dtype, payload if nbytes else None, h.offset, h.strides)
    assert data_bytes(rebuilt) == data_bytes(A)


# -- making arrays -------------------------------------------------------------------


def make_array(dtype: Any, shape: tuple[int, ...], seed: int = 0) -> NDArray:
    """A C-contiguous array of random bytes (bools 0/1), so every byte is checked."""
    dt = np.dtype(dtype)
    A = np.empty(shape, dt)
    raw = np.random.default_rng(seed).integers(0, 256, A.size * dt.itemsize, dtype=np.uint8)
    if dt == np.bool_:
        raw &= 1
    if A.size and dt.itemsize:
        A.reshape(-1).view(np.uint8)[:] = raw
    return A


def _count_for(dt: np.dtype[Any], nbytes: int) -> int:
    return max(1, -(-nbytes // max(dt.itemsize, 1)))


def _big(dt: np.dtype[Any]) -> int:
    # Comfortably above zmq.COPY_THRESHOLD (64 KiB), so pyzmq sends without a copy.
    return _count_for(dt, 80 * 1024)


def _readonly(A: NDArray) -> NDArray:
    A.flags.writeable = False
    return A


def writeable_broadcast(v: NDArray, rows: int) -> NDArray:
    # as_strided goes through __array_interface__, which cannot carry every record
    # dtype (e.g. "i1, i4, i1" with align=True); a plain void view always can.
    void = np.dtype((np.void, v.dtype.itemsize))
    view = np.lib.stride_tricks.as_strided(v.view(void), (rows, *v.shape), (0, *v.strides))
    return view.view(v.dtype)


def _ndim64(dt: np.dtype[Any]) -> NDArray:
    shape = tuple(2 if i % 7 == 0 else 1 for i in range(NUMPY_MAXDIMS))  # 2s and ones
    return make_array(dt, shape)


Layout = Callable[[np.dtype[Any]], NDArray]

#: name -> function(dtype) -> array; every layout the issue lists, and then some.
LAYOUTS: dict[str, Layout] = {
    "C": lambda dt: make_array(dt, (3, 4, 5)),
    "C-readonly": lambda dt: _readonly(make_array(dt, (3, 4, 5))),
    "F": lambda dt: np.asfortranarray(make_array(dt, (3, 4, 5))),
    "F-2d-T": lambda dt: make_array(dt, (6, 7)).T,
    "step2": lambda dt: make_array(dt, (12,))[::2],
    "cols3": lambda dt: make_array(dt, (4, 9))[:, ::3],
    "reversed": lambda dt: make_array(dt, (24,))[::-1],
    "reversed-2d": lambda dt: make_array(dt, (4, 6))[::-1, ::-1],
    "transposed-3d": lambda dt: make_array(dt, (3, 4, 5)).transpose(1, 2, 0),
    "window": lambda dt: make_array(dt, (8, 10))[:, 1:],
    "broadcast": lambda dt: np.broadcast_to(make_array(dt, (5,)), (4, 5)),
    "broadcast-col": lambda dt: np.broadcast_to(make_array(dt, (5, 1)), (5, 4)),
    "broadcast-writeable": lambda dt: writeable_broadcast(make_array(dt, (5,)), 4),
    "0d": lambda dt: make_array(dt, ()),
    "empty-0": lambda dt: make_array(dt, (0,)),
    "empty-0x5": lambda dt: make_array(dt, (0, 5)),
    "empty-3x0": lambda dt: make_array(dt, (3, 0)),
    "empty-sliced": lambda dt: make_array(dt, (5, 4))[::2, 4:],
    "ndim64-ones": lambda dt: make_array(dt, (1,) * NUMPY_MAXDIMS),
    "ndim64-twos": _ndim64,
    "ndim64-twos-T": lambda dt: _ndim64(dt).T,
    "big-C": lambda dt: make_array(dt, (_big(dt),)),
    "big-F": lambda dt: np.asfortranarray(make_array(dt, (4, _big(dt) // 4 + 1))),
    "big-reversed": lambda dt: make_array(dt, (_big(dt),))[::-1],
    "big-broadcast": lambda dt: np.broadcast_to(make_array(dt, (_big(dt),)), (3, _big(dt))),
}

# -- dtypes ----------------------------------------------------------------------------

NUMERIC_TYPES: list[Any] = ["?", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8"]
NUMERIC_TYPES += ["f2", "f4", "f8", np.longdouble, "c8", "c16", np.clongdouble]
DATETIME_UNITS = ["", "Y", "M", "W", "D", "h", "m", "s", "ms", "us", "ns", "ps", "fs", "as"]
DATETIME_UNITS += ["10ms"]


def _both_orders(types: list[Any]) -> list[np.dtype[Any]]:
    out: dict[str, np.dtype[Any]] = {}
    for t, order in itertools.product(types, "<>"):
        dt = np.dtype(t).newbyteorder(order)
        out.setdefault(dt.str, dt)
    return list(out.values())


NUMERIC_DTYPES = _both_orders(NUMERIC_TYPES)
DATETIME_DTYPES = _both_orders(
    [f"{kind}8[{unit}]" if unit else f"{kind}8" for kind in "Mm" for unit in DATETIME_UNITS]
)
STRING_DTYPES = [np.dtype("S5"), np.dtype("<U3"), np.dtype(">U3"), np.dtype("V7")]

# The record dtypes of numpy's own .npy format tests (numpy/lib/tests/test_format.py).
_PDESCR = [("x", "i4", (2,)), ("y", "f8", (2, 2)), ("z", "u1")]
_NDESCR = [
    ("x", "i4", (2,)),
    (
        "Info",
        [
            ("value", "c16"),
            ("y2", "f8"),
            (
                "Info2",
                [("name", "S2"), ("value", "c16", (2,)), ("y3", "f8", (2,)), ("z3", "u4", (2,))],
            ),
            ("name", "S2"),
            ("z2", "b1"),
        ],
    ),
    ("color", "S2"),
    ("info", [("Name", "U8"), ("Value", "c16")]),
    ("y", "f8", (2, 2)),
    ("z", "u1"),
]
_OFFSETS = np.dtype({"names": ["a", "b"], "formats": ["i4", "i4"], "offsets": [1, 6]})
_AB_PADDED = np.dtype(
    {"names": ["a", "b"], "formats": ["i1", "i1"], "offsets": [0, 4], "itemsize": 8}
)

STRUCTURED_DTYPES: dict[str, np.dtype[Any]] = {
    "plain<": np.dtype(_PDESCR).newbyteorder("<"),
    "plain>": np.dtype(_PDESCR).newbyteorder(">"),
    "nested<": np.dtype(_NDESCR).newbyteorder("<"),
    "nested>": np.dtype(_NDESCR).newbyteorder(">"),
    "subarray-of-subarray": np.dtype([("c", ("<f8", (5,)), (2,))]),
    "aligned": np.dtype("i1, i4, i1", align=True),
    "offsets": _OFFSETS,
    "nested-offsets": np.dtype({"names": ["c", "d"], "formats": ["i4", _OFFSETS]}),
    "empty-name": np.dtype({"names": ["a", "", "b"], "formats": ["i4"] * 3}),
    "titles": np.dtype(
        {
            "names": ["a", "b"],
            "formats": ["i4", "i4"],
            "offsets": [1, 6],
            "titles": ["aa", "bb"],
        }
    ),
    "no-fields": np.dtype({"names": [], "formats": [], "itemsize": 8}),
    "aligned-abc": np.dtype([("a", np.int8), ("b", np.int16), ("c", np.int32)], align=True),
    "padded-subarray": np.dtype([("x", np.dtype((_AB_PADDED, (3,))), (4,))]),
    "deep-subarray": np.dtype(
        [
            (
                "a",
                np.dtype((np.dtype((np.dtype([("a", int), ("b", _AB_PADDED)]), (3,))), (4,))),
                (5,),
            )
        ]
    ),
    "aligned-nested": np.dtype([("a", "u1"), ("b", [("c", "<f8"), ("d", "u1")])], align=True),
    "non-ascii": np.dtype([("température", "<f4"), ("日本語", ">i8"), ("emoji😀", "S3")]),
    "datetimes": np.dtype([("t", "<M8[us]"), ("d", ">m8[10s]"), ("n", "<i2")]),
}

DTYPES: dict[str, np.dtype[Any]] = {
    **{dt.str: dt for dt in (*NUMERIC_DTYPES, *DATETIME_DTYPES, *STRING_DTYPES)},
    **{f"rec-{name}": dt for name, dt in STRUCTURED_DTYPES.items()},
}

#: A few dtypes that between them exercise every path: buffer protocol and not
#: (datetime), both byte orders, 16-byte alignment, records with padding.
REPRESENTATIVE_DTYPES = ["|u1", "<f8", ">c16", "<f16", "<M8[ns]", "rec-nested>", "rec-aligned"]

#: Arrays zarray must refuse, with UnsupportedArrayError, before sending anything.
UNSUPPORTED: dict[str, Callable[[], Any]] = {
    "object": lambda: np.array([1, "a", None], dtype=object),
    "object-field": lambda: np.zeros(3, [("a", "<i4"), ("o", object)]),
    "nested-object-field": lambda: np.zeros(2, [("r", [("a", "<f8"), ("o", "O")])]),
    "object-subarray": lambda: np.zeros(2, [("o", "O", (2,))]),
    "non-void-with-fields": lambda: np.zeros(
        3, np.dtype(("<i4", [("r", "u1"), ("g", "u1"), ("b", "u1"), ("a", "u1")]))
    ),
    "list": lambda: [1.0, 2.0, 3.0],
    "bytes": lambda: b"abc",
    "memoryview": lambda: memoryview(b"abcd"),
    "scalar": lambda: np.float64(1.5),
    "masked": lambda: np.ma.masked_array([1.0, 2.0, 3.0], mask=np.array([0, 1, 0], bool)),
    "masked-nomask": lambda: np.ma.masked_array(np.arange(4.0)),
}
if hasattr(np, "dtypes") and hasattr(np.dtypes, "StringDType"):
    UNSUPPORTED["StringDType"] = lambda: np.array(["a", "bc"], dtype=np.dtypes.StringDType())


def product_ids(*lists: Any) -> list[tuple[Any, ...]]:
    """The cartesian product of case lists (``itertools.product``), as a list."""
    return list(itertools.product(*lists))


def nbytes_of(shape: tuple[int, ...], itemsize: int) -> int:
    """Element count times itemsize."""
    return math.prod(shape) * itemsize
