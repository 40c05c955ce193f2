"""From an array to (header, payload) and back: the layout policy of zarray.

Sending
    * C- or Fortran-contiguous arrays go as they are: the payload is the array's own
      memory, the strides are the array's own (Fortran data is not transposed).
    * Other strided views (slices, reversed or transposed views, broadcasts with zero
      strides) go as the smallest block of memory that holds every element, with the
      array's strides and the offset of its first element in that block, as long as
      that block is at most ``SPAN_OVERHEAD`` larger than the array's data
      (``arr.nbytes``). A broadcast view therefore sends only its distinct data.
    * Anything sparser (``a[::2]``, ``a[:, ::3]``, a small window of a big image) is
      copied once into a compact array in the same memory order (``order="K"``) and
      that copy is sent.
    * A layout misaligned for its dtype whose elements overlap (a sliding window over
      a packed record's field), which no receiver would realign from its span (see
      :func:`realign_fits`), is sent as its elements gathered into aligned memory.
    * Zero-size arrays send an empty payload and C-order strides.

Receiving
    The array is a view of the received frame, unless (a) ``copy=True`` was asked for,
    or (b) the frame's address is misaligned for the dtype (libzmq gives no alignment
    guarantee), in which case the payload is copied once into a 64-byte aligned buffer.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import zmq

from zarray._codec import pack, pack_array, unpack, unpack_array
from zarray._dtypes import brief, decode_cache, decode_dtype, encode_cache, encode_dtype
from zarray.errors import HeaderError, UnsupportedArrayError

__all__ = [
    "NUMPY_MAXDIMS",
    "SPAN_OVERHEAD",
    "Header",
    "array_from",
    "frombuffer",
    "gathered_size",
    "is_own_memory",
    "pack_header",
    "pinned",
    "prepare",
    "realign_fits",
    "rebuild",
    "unpack_header",
]

#: A strided view is sent as its memory span when the span is at most this much
#: larger than the data (0.25 = 25 %); otherwise it is compacted first.
SPAN_OVERHEAD = 0.25

_ALIGN = 64


def _numpy_maxdims() -> int:
    try:
        np.empty((1,) * 64)
    except ValueError:
        return 32  # numpy 1.x
    return 64


#: The most dimensions this numpy allows (64 on numpy 2, 32 on numpy 1.x). The wire
#: format carries up to 64; a header with more than numpy can hold is refused here.
NUMPY_MAXDIMS = _numpy_maxdims()
# The payload of every empty array: no bytes, read-only, shared.
_NO_BYTES = np.empty(0, np.uint8)
_NO_BYTES.flags.writeable = False


class Header(NamedTuple):
    """A parsed header, as returned by :func:`zarray.unpack_header`."""

    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    offset: int
    nbytes: int
    writeable: bool


def prepare(A: Any) -> tuple[bytes, Any]:
    """Return ``(header, payload)`` for an array; ``payload`` has the buffer protocol.

    Raises UnsupportedArrayError before anything could have been sent.
    """
    if pack_array is not None:
        header = pack_array(A, encode_cache)
        if header is not None:
            return header, A
    if not isinstance(A, np.ndarray):
        raise UnsupportedArrayError(
            f"expected a numpy.ndarray, got {type(A).__name__}; convert with numpy.asarray()"
        )
    if isinstance(A, np.ma.MaskedArray):
        raise UnsupportedArrayError(
            "masked arrays are not supported (the mask would be lost); send .data and "
            ".mask as two arrays"
        )
    descr, structured, itemsize, buffer_ok = encode_dtype(A.dtype)
    flags = A.flags
    readonly = not flags.writeable
    if flags.c_contiguous or flags.f_contiguous:
        nbytes = A.nbytes
        if nbytes == 0:
            return _empty(A, descr, structured, itemsize, readonly)
        header = pack(descr, structured, itemsize, A.shape, A.strides, 0, nbytes, readonly)
        return header, (A if buffer_ok else _byte_view(A, 0, nbytes))
    if A.size == 0:
        return _empty(A, descr, structured, itemsize, readonly)
    shape, strides = A.shape, A.strides
    lo = hi = 0
    for n, s in zip(shape, strides, strict=True):
        if s < 0:
            lo += (n - 1) * s
        else:
            hi += (n - 1) * s
    span = hi - lo + itemsize
    if span <= A.nbytes * (1 + SPAN_OVERHEAD):
        if _layout_aligned(A.dtype, shape, strides, -lo) or realign_fits(
            A.dtype, shape, strides, span
        ):
            header = pack(descr, structured, itemsize, shape, strides, -lo, span, readonly)
            return header, _byte_view(A, lo, span)
        # A misaligned layout whose elements overlap (a sliding window over a packed
        # record's field): every receiver would refuse to realign it from the span, so
        # send what a receiver would have built, the elements gathered and aligned.
        compact = _gathered(A)
    else:
        compact = A.copy(order="K")
    if readonly:
        compact.flags.writeable = False
    return prepare(compact)


def _empty(
    A: np.ndarray[Any, Any], descr: bytes, structured: bool, itemsize: int, readonly: bool
) -> tuple[bytes, np.ndarray[Any, Any]]:
    strides = []
    step = itemsize
    for n in reversed(A.shape):
        strides.append(step)
        step *= max(n, 1)
    header = pack(descr, structured, itemsize, A.shape, tuple(reversed(strides)), 0, 0, readonly)
    return header, _NO_BYTES


class _Span:
    """Exposes a block of another array's memory as bytes, keeping that array alive."""

    def __init__(self, owner: np.ndarray[Any, Any], address: int, size: int) -> None:
        self.owner = owner
        self.__array_interface__ = {
            "data": (address, not owner.flags.writeable),
            "shape": (size,),
            "typestr": "|u1",
            "version": 3,
        }


def _byte_view(A: np.ndarray[Any, Any], start: int, size: int) -> np.ndarray[Any, Any]:
    """A uint8 view of ``size`` bytes of A's memory, from ``start`` bytes past A[0, ..., 0].

    Used for strided spans and for dtypes numpy will not export through the buffer
    protocol (datetime64, timedelta64). No data is copied.
    """
    address = A.__array_interface__["data"][0] + start
    return np.asarray(_Span(A, address, size))


def is_own_memory(payload: Any, A: Any) -> bool:
    """Whether a payload from :func:`prepare` is ``A``'s own memory rather than a copy."""
    if payload is A:
        return True
    base = getattr(payload, "base", None)
    return isinstance(base, _Span) and base.owner is A


def _address(a: np.ndarray[Any, Any]) -> int:
    return int(a.__array_interface__["data"][0])


def _aligned_bytes(size: int) -> np.ndarray[Any, Any]:
    """A fresh uint8 array of ``size`` bytes starting on a 64-byte boundary."""
    raw = np.empty(size + _ALIGN, np.uint8)
    start = -_address(raw) % _ALIGN
    return raw[start : start + size]


def _layout_aligned(
    dt: np.dtype[Any], shape: tuple[int, ...], strides: tuple[int, ...], offset: int
) -> bool:
    """Whether the layout is aligned for ``dt`` when the buffer itself is aligned."""
    a = dt.alignment
    if offset % a:
        return False
    return all(s % a == 0 for n, s in zip(shape, strides, strict=True) if n > 1)


def gathered_size(dt: np.dtype[Any], shape: tuple[int, ...], strides: tuple[int, ...]) -> int:
    """Bytes that a layout's elements take once gathered, zero-stride axes counted once."""
    dims = zip(shape, strides, strict=True)
    return dt.itemsize * math.prod(min(n, 1) if s == 0 else n for n, s in dims)


def realign_fits(
    dt: np.dtype[Any], shape: tuple[int, ...], strides: tuple[int, ...], nbytes: int
) -> bool:
    """Whether a receiver realigns this layout from an ``nbytes`` payload, or refuses.

    The one rule both sides apply: the receiver gathers a misaligned layout's elements
    only if they take at most twice the payload (plus 64 bytes), and the sender, which
    must never produce what a receiver refuses, gathers them itself beyond that.
    """
    return gathered_size(dt, shape, strides) <= 2 * nbytes + _ALIGN


def _realigned(view: np.ndarray[Any, Any], nbytes: int) -> np.ndarray[Any, Any]:
    """An aligned copy of a view whose strides or offset are misaligned for its dtype.

    See :func:`_gathered`. A layout whose distinct elements would take more than twice
    the payload (zarray's sender never sends one; only a hostile header overlaps
    elements like that) is refused rather than allocated.
    """
    if not realign_fits(view.dtype, view.shape, view.strides, nbytes):
        raise HeaderError(
            f"layout with strides {view.strides} is misaligned for {brief(view.dtype)} and "
            f"would take {gathered_size(view.dtype, view.shape, view.strides)} bytes to "
            f"realign from a {nbytes}-byte payload"
        )
    return _gathered(view)


def _gathered(view: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The elements of ``view`` in fresh aligned memory, broadcast axes kept.

    The distinct elements are gathered into a compact array in memory order and
    zero-stride (broadcast) axes are rebuilt as zero strides on top of it, so a
    broadcast of a packed record's field stays as small as its distinct data.
    """
    shape, strides = view.shape, view.strides
    # The Ellipsis keeps a 0-d view an array: view[()] would make a numpy scalar of the
    # raw bytes, and for a str dtype whose bytes are no code points numpy then fails
    # with SystemError.
    index = (*(slice(0, 1) if s == 0 else slice(None) for s in strides), Ellipsis)
    core = view[index]
    compact: np.ndarray[Any, Any] = np.empty_like(core, order="K")
    if view.dtype.itemsize and core.size:
        # Copy whole items as raw bytes: a record copy would skip its padding.
        items = np.dtype((np.void, view.dtype.itemsize))
        np.copyto(compact.view(items), core.view(items))
    if core.shape == shape:
        return compact
    if compact.size == 0 or not view.dtype.itemsize:
        return np.empty(shape, view.dtype)  # no element to hold
    wide = tuple(0 if s == 0 else c for s, c in zip(strides, compact.strides, strict=True))
    # A byte view as the buffer: numpy will not export datetime64 arrays directly.
    raw = compact.ravel(order="K").view(np.uint8)
    out: np.ndarray[Any, Any] = np.ndarray(shape, view.dtype, raw, 0, wide)
    return out


def _owned_copy(
    payload: Any,
    dt: np.dtype[Any],
    shape: tuple[int, ...],
    strides: tuple[int, ...],
    offset: int,
    nbytes: int,
) -> np.ndarray[Any, Any]:
    """Copy the payload exactly once into aligned memory that the result owns.

    C- and Fortran-ordered payloads land in a fresh ``numpy.empty`` array. Other
    layouts keep their strides in a private 64-byte aligned buffer, unless the strides
    or offset themselves are misaligned for the dtype (a packed record's field, a
    hostile header): then the elements are gathered into a compact aligned array.
    """
    if math.prod(shape) == 0:
        # No element is ever read, so the offset is moot: drop it and keep the strides.
        offset = 0
    src: Any = np.frombuffer(payload, np.uint8) if nbytes else None
    if offset == 0 and nbytes == dt.itemsize * math.prod(shape):
        for order in ("C", "F"):
            out = np.empty(shape, dt, order=order)
            if out.strides == strides or out.ndim == 0:
                if nbytes:
                    flat = out.T if order == "F" else out
                    np.copyto(flat.reshape(-1).view(np.uint8), src)
                return out
    if not _layout_aligned(dt, shape, strides, offset):
        return _realigned(np.ndarray(shape, dt, payload, offset, strides), nbytes)
    buf = _aligned_bytes(nbytes)
    if nbytes:
        np.copyto(buf, src)
    strided: np.ndarray[Any, Any] = np.ndarray(shape, dt, buf, offset, strides)
    return strided


def pinned(payload: Any) -> Any:
    """``payload`` as an object whose bytes stay valid and in place while it is referenced.

    ``bytes`` and ``zmq.Frame`` are returned as they are. A contiguous ndarray (C or
    Fortran order, any dtype) becomes a flat uint8 view of its memory, which keeps it
    referenced, as numpy's own views do. Any other exporter of a contiguous buffer
    becomes a flat uint8 array over its memory, in memory order, whose base is a fresh
    memoryview: that holds a buffer export for as long as any array built on it lives,
    so a bytearray cannot be resized nor an mmap closed under it (numpy's
    ``ndarray(buffer=...)`` alone does not pin them). Read-only stays read-only.
    """
    if type(payload) is bytes or type(payload) is zmq.Frame:
        return payload
    if type(payload) is np.ndarray:
        if not (payload.flags.c_contiguous or payload.flags.f_contiguous):
            raise BufferError("the payload must be a contiguous buffer (C or Fortran order)")
        return payload.ravel(order="K").view(np.uint8)
    view = memoryview(payload)
    if not view.c_contiguous:
        if not view.f_contiguous:
            raise BufferError("the payload must be a contiguous buffer (C or Fortran order)")
        # A Fortran-ordered buffer's memory order is its transpose's C order.
        view = memoryview(np.asarray(view).T)
    if view.ndim != 1 or view.format != "B":
        view = view.cast("B")
    return np.frombuffer(view, np.uint8)


def array_from(header: Any, payload: Any, copy: bool = False) -> np.ndarray[Any, Any]:
    """The array carried by a header frame and a payload (any contiguous buffer).

    Tries the compiled fast path first; it declines (returns None) on a dtype it has
    not seen yet or a misaligned frame, and the general path below handles those.
    Both pin a payload that is not ``bytes`` or a ``zmq.Frame`` (see :func:`pinned`).
    """
    if not copy and unpack_array is not None:
        A = unpack_array(header, payload, decode_cache)
        if A is not None:
            return A  # type: ignore[no-any-return]
    return rebuild(unpack(header), payload, copy)


def rebuild(fields: tuple[Any, ...], payload: Any, copy: bool = False) -> np.ndarray[Any, Any]:
    """Build the array described by parsed header ``fields`` on top of ``payload``.

    ``payload`` is any object with the buffer protocol (a zmq.Frame, bytes, ...). The
    result views it unless ``copy`` is true or the payload is misaligned for the dtype.
    A compressed or shared-memory payload frame is first turned into the bytes it
    stands for by ``zarray._payload.open_payload``.
    """
    descr, structured, itemsize, shape, strides, offset, nbytes, readonly = fields[:8]
    dt = decode_dtype(descr, structured, itemsize)
    if len(shape) > NUMPY_MAXDIMS:
        raise HeaderError(
            f"ndim {len(shape)} exceeds the {NUMPY_MAXDIMS} dimensions numpy "
            f"{np.__version__} supports"
        )
    if fields[8] or fields[10]:
        from zarray._payload import open_payload

        payload, owned = open_payload(fields, payload)
        # Freshly decompressed bytes belong to this array alone and are aligned: a
        # view of them already is the one copy that copy=True asks for.
        copy = copy and not owned
    payload = pinned(payload)
    size = len(payload)
    if size != nbytes:
        raise HeaderError(f"payload is {size} bytes, but the header says {nbytes}")
    if copy:
        A = _owned_copy(payload, dt, shape, strides, offset, nbytes)
    else:
        A = np.ndarray(shape, dt, payload, offset, strides)
        if dt.alignment > 1 and not A.flags.aligned:
            # libzmq places frames wherever its allocator or its receive buffer put
            # them (e.g. 2 mod 8 for small frames); numpy code may assume alignment.
            A = _owned_copy(payload, dt, shape, strides, offset, nbytes)
    if readonly:
        A.flags.writeable = False
    return A


def pack_header(A: Any) -> bytes:
    """Return the header frame that :func:`zarray.send_array` would send for ``A``.

    Parameters
    ----------
    A : numpy.ndarray
        The array to describe.

    Returns
    -------
    bytes
        The header frame (see docs/FORMAT.md).

    Raises
    ------
    UnsupportedArrayError
        If ``A`` is not an array zarray can send (object dtype, StringDType, ...).

    Notes
    -----
    For a strided view that is too sparse to send as its memory span, this makes the
    same compact copy that :func:`send_array` would make, and describes that copy.
    """
    if pack_array is not None:
        # The compiled fast path directly: this is the public per-message header path.
        header = pack_array(A, encode_cache)
        if header is not None:
            return header
    return prepare(A)[0]


def unpack_header(buf: Any) -> Header:
    """Parse a header frame.

    Parameters
    ----------
    buf : bytes-like
        The header frame (bytes, memoryview, zmq.Frame, ...).

    Returns
    -------
    Header
        A named tuple ``(dtype, shape, strides, offset, nbytes, writeable)``.

    Raises
    ------
    HeaderError
        If the bytes are not a valid zarray header of a supported version.
    """
    descr, structured, itemsize, shape, strides, offset, nbytes, readonly = unpack(buf)[:8]
    dt = decode_dtype(descr, structured, itemsize)
    return Header(dt, shape, strides, offset, nbytes, not readonly)


def frombuffer(header: Any, buffer: Any, copy: bool = False) -> np.ndarray[Any, Any]:
    """Rebuild an array from its header and a buffer holding its payload.

    The inverse of :func:`pack_header` (or of :func:`serialize`) without a socket: for
    arrays stored or moved by other means (a file, shared memory, another transport).

    Parameters
    ----------
    header : bytes-like
        A header frame, as :func:`pack_header` returns it (bytes, memoryview,
        zmq.Frame, ...).
    buffer : buffer-protocol object
        The payload: bytes, bytearray, memoryview, mmap, zmq.Frame, a numpy array, or
        any other object exporting a contiguous buffer (C or Fortran order) whose
        memory, from its first byte, is exactly the ``nbytes`` the header states.
    copy : bool
        If True, return an array that owns its memory (one copy).

    Returns
    -------
    numpy.ndarray
        The array the header describes, aligned for its dtype.

    Raises
    ------
    HeaderError
        If the header is malformed or the buffer's length is not the header's
        ``nbytes``.
    BufferError
        If ``buffer`` is not contiguous (as ``numpy.frombuffer`` raises).

    Notes
    -----
    This never copies unless ``copy=True`` or the buffer is misaligned for the dtype
    (then the payload is copied once into aligned memory). Otherwise the result
    *views* ``buffer``, as ``numpy.frombuffer`` does: writes through either are visible
    in the other, and the result is read-only if the buffer is read-only (``bytes``, a
    read-only memoryview or mmap) or the header says the sender's array was. The
    buffer's exporter is pinned while the result lives (its base holds a memoryview
    of it, or the ``bytes``/``zmq.Frame`` itself): a bytearray cannot be resized, nor
    an mmap closed, under the array; both raise ``BufferError`` until it is gone.
    """
    # array_from's body, inlined: one Python call less on the public per-message path.
    if not copy and unpack_array is not None:
        A = unpack_array(header, buffer, decode_cache)
        if A is not None:
            return A  # type: ignore[no-any-return]
    return rebuild(unpack(header), buffer, copy)
