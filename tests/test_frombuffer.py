"""zarray.frombuffer and zarray.deserialize on any buffer: views, aliasing, pinning.

Both public functions rebuild an array from a header and a payload held by any
buffer-protocol object, without copying, as ``numpy.frombuffer`` does: the result
aliases the buffer, is read-only when the buffer is, and keeps the exporter pinned
(a bytearray cannot be resized, an mmap not closed, while the array lives). Every
test runs on both receive paths: the compiled fast path (``zarray._fastpath``) and
the general path with the pure-Python codec (what ``ZARRAY_PUREPYTHON=1`` runs).
"""

from __future__ import annotations

import gc
import mmap
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import zmq

import zarray
from zarray import _array, _codec, _header_py

NDArray = np.ndarray[Any, Any]
IMAGE = np.arange(48 * 64 * 3, dtype=np.uint8).reshape(48, 64, 3)


@pytest.fixture(params=["fast", "general"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The receive path under test; "general" switches the fast path off."""
    if request.param == "fast":
        if _codec.IMPLEMENTATION != "cython":
            pytest.skip("the compiled fast path is not in use")
    else:
        monkeypatch.setattr(_array, "unpack_array", None)
        monkeypatch.setattr(_array, "unpack", _header_py.unpack)
    return str(request.param)


def _mmap(data: bytes) -> mmap.mmap:
    m = mmap.mmap(-1, len(data))
    m[:] = data
    return m


def _read_only_mmap(data: bytes) -> Any:
    return memoryview(_mmap(data)).toreadonly()


# name: (make a buffer holding these bytes, is it read-only)
BUFFERS: dict[str, tuple[Callable[[bytes], Any], bool]] = {
    "bytes": (bytes, True),
    "bytearray": (bytearray, False),
    "memoryview": (lambda b: memoryview(bytearray(b)), False),
    "memoryview-readonly": (lambda b: memoryview(bytearray(b)).toreadonly(), True),
    "memoryview-2d": (lambda b: memoryview(bytearray(b)).cast("B", (16, len(b) // 16)), False),
    "mmap": (_mmap, False),
    "mmap-readonly": (_read_only_mmap, True),
    "ndarray-u1": (lambda b: np.frombuffer(bytearray(b), np.uint8), False),
    "ndarray-u4": (lambda b: np.frombuffer(bytearray(b), np.uint32), False),
    "ndarray-readonly": (lambda b: np.frombuffer(b, np.uint8), True),
    # numpy refuses to export datetime64 through the buffer protocol; its memory is
    # read directly.
    "ndarray-datetime64": (lambda b: np.frombuffer(bytearray(b), np.uint8).view("M8[s]"), False),
    # Fortran-ordered: its memory, in memory order, is still exactly these bytes.
    "ndarray-fortran": (
        lambda b: np.frombuffer(bytearray(b), np.uint8).reshape(len(b) // 16, 16).T,
        False,
    ),
    "zmq.Frame": (zmq.Frame, False),
}


def _bytes_of(buf: Any) -> NDArray:
    """A flat uint8 view of the buffer's memory, in memory order."""
    if isinstance(buf, np.ndarray):
        return buf.ravel(order="K").view(np.uint8)
    return np.frombuffer(buf, np.uint8)


def _address(buf: Any) -> int:
    return int(_bytes_of(buf).__array_interface__["data"][0])


@pytest.mark.parametrize("kind", list(BUFFERS))
def test_frombuffer_views_any_buffer(path: str, kind: str) -> None:
    make, readonly = BUFFERS[kind]
    buf = make(IMAGE.tobytes())
    A = zarray.frombuffer(zarray.pack_header(IMAGE), buf)
    assert A.dtype == IMAGE.dtype
    assert A.shape == IMAGE.shape
    assert A.strides == IMAGE.strides
    np.testing.assert_array_equal(A, IMAGE)
    # No copy: the array starts at the buffer's first byte.
    assert A.__array_interface__["data"][0] == _address(buf)
    assert A.flags.writeable == (not readonly)
    if not readonly:
        A[0, 0, 0] = 200  # aliasing, both ways
        assert _bytes_of(buf)[0] == 200


@pytest.mark.parametrize("kind", list(BUFFERS))
def test_deserialize_views_any_buffer(path: str, kind: str) -> None:
    make, readonly = BUFFERS[kind]
    buf = make(IMAGE.tobytes())
    A = zarray.deserialize([bytearray(zarray.pack_header(IMAGE)), buf])
    np.testing.assert_array_equal(A, IMAGE)
    assert A.__array_interface__["data"][0] == _address(buf)
    assert A.flags.writeable == (not readonly)


def test_bytearray_is_pinned_while_the_array_lives(path: str) -> None:
    buf = bytearray(IMAGE.tobytes())
    A = zarray.frombuffer(zarray.pack_header(IMAGE), buf)
    with pytest.raises(BufferError):
        buf.extend(b"more")  # would move the memory A views
    with pytest.raises(BufferError):
        del buf[:10]
    assert A[-1, -1, -1] == IMAGE[-1, -1, -1]
    del A
    gc.collect()
    buf.extend(b"more")  # released with the array
    assert len(buf) == IMAGE.nbytes + 4


def test_mmap_is_pinned_while_the_array_lives(path: str) -> None:
    m = _mmap(IMAGE.tobytes())
    A = zarray.deserialize([zarray.pack_header(IMAGE), m])
    with pytest.raises(BufferError):
        m.close()  # would unmap the memory A views
    np.testing.assert_array_equal(A, IMAGE)
    del A
    gc.collect()
    m.close()


def test_releasing_the_callers_memoryview_keeps_the_array_valid(path: str) -> None:
    buf = bytearray(IMAGE.tobytes())
    view = memoryview(buf)
    A = zarray.frombuffer(zarray.pack_header(IMAGE), view)
    view.release()  # the caller's view; the array holds one of its own
    with pytest.raises(BufferError):
        buf.extend(b"more")
    np.testing.assert_array_equal(A, IMAGE)


def test_read_only_sender_gives_read_only_view(path: str) -> None:
    A = IMAGE.copy()
    A.flags.writeable = False
    B = zarray.frombuffer(zarray.pack_header(A), bytearray(A.tobytes()))
    assert not B.flags.writeable


def test_copy_gives_an_independent_writeable_array(path: str) -> None:
    buf = IMAGE.tobytes()
    A = zarray.frombuffer(zarray.pack_header(IMAGE), buf, copy=True)
    assert A.flags.owndata
    assert A.flags.writeable
    assert not np.shares_memory(A, np.frombuffer(buf, np.uint8))
    np.testing.assert_array_equal(A, IMAGE)


# The frames of serialize(A) are the header and A's own memory (or a byte view of it):
# deserialize must read that memory in memory order, whatever A's layout.
LAYOUTS: dict[str, Callable[[], NDArray]] = {
    "c": lambda: np.arange(12.0).reshape(3, 4),
    "fortran": lambda: np.asfortranarray(np.arange(12.0).reshape(3, 4)),
    "fortran-3d": lambda: np.asfortranarray(np.arange(60, dtype="<i2").reshape(3, 4, 5)),
    "transposed": lambda: np.arange(12.0).reshape(3, 4).T,
    "reversed": lambda: np.arange(10, dtype=">i8")[::-1],
    "sliced": lambda: np.arange(40.0).reshape(4, 10)[:, 1:9],
    "sparse": lambda: np.arange(40.0)[::4],
    "broadcast": lambda: np.broadcast_to(np.arange(4.0), (3, 4)),
    "datetime": lambda: np.arange(4).astype("M8[s]"),
    "record": lambda: np.ones(3, [("a", "<u2"), ("b", "<c8")]),
    "0-d": lambda: np.array(1 + 2j),
    "empty": lambda: np.zeros((0, 3)),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_deserialize_of_serialize_round_trips(path: str, layout: str) -> None:
    A = LAYOUTS[layout]()
    B = zarray.deserialize(zarray.serialize(A))
    assert B.dtype == A.dtype
    assert B.shape == A.shape
    assert B.tobytes() == A.tobytes()
    if layout in ("c", "fortran", "fortran-3d", "transposed", "reversed", "broadcast"):
        assert B.strides == A.strides
        assert np.shares_memory(B, A)  # a view of A's own memory, no copy


def test_frombuffer_errors(path: str) -> None:
    header = zarray.pack_header(np.zeros(5))
    with pytest.raises(zarray.HeaderError, match="payload is 32 bytes"):
        zarray.frombuffer(header, bytearray(32))
    with pytest.raises(zarray.HeaderError):
        zarray.frombuffer(b"not a header", bytearray(40))
    with pytest.raises(BufferError):
        zarray.frombuffer(header, np.zeros(10)[::2])  # not contiguous
    with pytest.raises(BufferError):
        zarray.frombuffer(header, memoryview(np.zeros(10))[::2])
    with pytest.raises(TypeError):
        zarray.frombuffer(header, "forty bytes, but a str")


@pytest.fixture
def inproc() -> Iterator[tuple[zmq.Socket[Any], zmq.Socket[Any]]]:
    ctx: zmq.Context[Any] = zmq.Context()
    push, pull = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    for s in (push, pull):
        s.linger = 0
        s.rcvtimeo = s.sndtimeo = 10_000
    push.bind("inproc://frombuffer")
    pull.connect("inproc://frombuffer")
    yield push, pull
    push.close()
    pull.close()
    ctx.term()


def test_frombuffer_of_received_frames(
    path: str, inproc: tuple[zmq.Socket[Any], zmq.Socket[Any]]
) -> None:
    """Header and payload moved by hand, as two frames of a real socket."""
    push, pull = inproc
    A = np.arange(1 << 15, dtype="<f8").reshape(128, 256)
    push.send_multipart(zarray.serialize(A), copy=False)
    header, payload = pull.recv_multipart(copy=False)
    B = zarray.frombuffer(header, payload)
    np.testing.assert_array_equal(B, A)
    assert B.flags.aligned
