# cython: language_level=3
# cython: embedsignature=True
# cython: freethreading_compatible=True
"""Pack and parse zarray header frames (wire format version 1, see docs/FORMAT.md).

This module only turns header fields into bytes and bytes back into fields. It knows
nothing of sockets or of numpy: the dtype descriptor is an opaque byte string here,
built and read by ``zarray._dtypes``. ``zarray._header_py`` is its pure-Python twin;
the two must produce identical bytes and raise the same errors with the same text.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.tuple cimport PyTuple_GET_SIZE, PyTuple_New, PyTuple_SET_ITEM
from cpython.ref cimport Py_INCREF
from libc.stdint cimport INT64_MAX, INT64_MIN
from libc.string cimport memcmp, memcpy

from zarray.errors import HeaderError

MAGIC = b"\x93ZAR"
VERSION = 1
MAX_NDIM = 64
MAX_DESCR = 65535
FIXED_SIZE = 40
DESCR_TYPESTR = 0
DESCR_STRUCT = 1
# Byte 6: how the payload is compressed (zarray._codecs names them).
CODEC_NONE = 0
CODEC_LZ4 = 1
CODEC_ZSTD = 2
MAX_CODEC = 2
# Byte 12: the filter applied before compression.
FILTER_NONE = 0
FILTER_SHUFFLE = 1
MAX_FILTER = 1
# Byte 7: where the payload is.
KIND_INLINE = 0
KIND_SHM = 1
MAX_KIND = 1

cdef enum:
    _FIXED = 40
    _MAX_DESCR = 65535
    _VERSION = 1
    _FLAG_READONLY = 1
    _MAX_CODEC = 2
    _MAX_FILTER = 1
    _MAX_KIND = 1
    _KIND_SHM = 1

cdef const char* _MAGIC = b"\x93ZAR"


# Fields are written byte by byte so the header is little-endian on every host; gcc
# turns these loops into single moves on little-endian machines.
cdef inline void _put_u64(uint8_t* p, uint64_t v) noexcept nogil:
    cdef int i
    for i in range(8):
        p[i] = <uint8_t>(v >> (8 * i))


cdef inline uint64_t _get_u64(const uint8_t* p) noexcept nogil:
    cdef uint64_t v = 0
    cdef int i
    for i in range(8):
        v |= (<uint64_t>p[i]) << (8 * i)
    return v


cdef int _check_geometry(int ndim, const int64_t* shape, const int64_t* strides,
                         uint64_t itemsize, uint64_t offset, uint64_t nbytes) except -1:
    """Check that the described array lies inside a payload of ``nbytes`` bytes.

    Works on unsigned 64-bit values and compares before every multiplication or
    addition, so no hostile value can overflow it.
    """
    cdef int i
    cdef uint64_t total = itemsize
    cdef uint64_t n, step, ext, lo, hi
    cdef bint empty = False
    if nbytes > <uint64_t>INT64_MAX:
        raise HeaderError(f"payload length {nbytes} exceeds the maximum of {INT64_MAX}")
    if itemsize > <uint64_t>INT64_MAX:
        raise HeaderError(f"itemsize {itemsize} exceeds the maximum of {INT64_MAX}")
    if itemsize == 0:
        # An element of no bytes would let a header declare any number of elements
        # over an empty payload, and numpy allocates zero-size S/U/V dtypes as size 1.
        raise HeaderError("itemsize 0: zero-size dtypes are not part of the wire format")
    for i in range(ndim):
        if shape[i] < 0:
            raise HeaderError(f"negative dimension {shape[i]} on axis {i}")
    for i in range(ndim):
        n = <uint64_t>shape[i]
        if n == 0:
            empty = True
            continue
        if total > <uint64_t>INT64_MAX // n:
            dims = tuple([shape[j] for j in range(ndim)])
            raise HeaderError(
                f"shape {dims} with itemsize {itemsize} overflows a 64-bit byte count")
        total *= n
    if offset > nbytes:
        raise HeaderError(f"offset {offset} lies past the payload length {nbytes}")
    if empty:
        return 0
    if itemsize > nbytes - offset:
        raise HeaderError(
            f"first element (offset {offset}, itemsize {itemsize}) reaches past "
            f"the payload length {nbytes}")
    lo = offset
    hi = offset + itemsize
    for i in range(ndim):
        n = <uint64_t>shape[i]
        if n <= 1 or strides[i] == 0:
            continue
        if strides[i] == INT64_MIN:
            raise HeaderError(f"stride {strides[i]} on axis {i} reaches outside the payload")
        step = <uint64_t>(strides[i] if strides[i] > 0 else -strides[i])
        if n - 1 > nbytes // step:
            raise HeaderError(f"stride {strides[i]} on axis {i} reaches outside the payload")
        ext = (n - 1) * step
        if strides[i] < 0:
            if ext > lo:
                raise HeaderError(
                    f"stride {strides[i]} on axis {i} reaches before the payload start")
            lo -= ext
        else:
            if ext > nbytes - hi:
                raise HeaderError(
                    f"stride {strides[i]} on axis {i} reaches past the payload end")
            hi += ext
    return 0


cdef int _check_encoding(int codec, int filter, int kind) except -1:
    """Check the codec id, filter id and payload kind (bytes 6, 12 and 7)."""
    if codec < 0 or codec > _MAX_CODEC:
        raise HeaderError(
            f"unknown codec id {codec} (this zarray knows 0 to {_MAX_CODEC}; see docs/FORMAT.md)")
    if filter < 0 or filter > _MAX_FILTER:
        raise HeaderError(
            f"unknown filter id {filter} (this zarray knows 0 to {_MAX_FILTER})")
    if kind < 0 or kind > _MAX_KIND:
        raise HeaderError(
            f"unknown payload kind {kind} (this zarray knows 0, the next frame, "
            f"and 1, shared memory)")
    if filter and not codec:
        raise HeaderError(f"filter {filter} is set without a codec")
    if codec and kind == _KIND_SHM:
        raise HeaderError("a shared-memory payload cannot be compressed")
    return 0


cdef bytes pack_c(const char* descr, Py_ssize_t ld, bint structured, uint64_t itemsize,
                  int ndim, const int64_t* shape, const int64_t* strides,
                  uint64_t offset, uint64_t nbytes, bint readonly,
                  int codec=0, int filter=0, int kind=0):
    """Check the fields and write a header; the C entry point behind ``pack``."""
    cdef Py_ssize_t i
    cdef uint8_t* p
    if ndim > _MAX_NDIM:
        raise HeaderError(f"ndim {ndim} exceeds the maximum of {_MAX_NDIM}")
    if ld > _MAX_DESCR:
        raise HeaderError(f"dtype descriptor of {ld} bytes exceeds the maximum of {_MAX_DESCR}")
    _check_encoding(codec, filter, kind)
    _check_geometry(ndim, shape, strides, itemsize, offset, nbytes)
    out = PyBytes_FromStringAndSize(NULL, _FIXED + 16 * ndim + ld)
    p = <uint8_t*>PyBytes_AS_STRING(out)
    memcpy(p, _MAGIC, 4)
    p[4] = _VERSION
    p[5] = _FLAG_READONLY if readonly else 0
    p[6] = <uint8_t>codec
    p[7] = <uint8_t>kind
    p[8] = <uint8_t>ndim
    p[9] = 1 if structured else 0
    p[10] = <uint8_t>(ld & 0xFF)
    p[11] = <uint8_t>(ld >> 8)
    p[12] = <uint8_t>filter
    p[13] = p[14] = p[15] = 0
    _put_u64(p + 16, itemsize)
    _put_u64(p + 24, offset)
    _put_u64(p + 32, nbytes)
    for i in range(ndim):
        _put_u64(p + _FIXED + 8 * i, <uint64_t>shape[i])
        _put_u64(p + _FIXED + 8 * (ndim + i), <uint64_t>strides[i])
    memcpy(p + _FIXED + 16 * ndim, descr, ld)
    return out


def pack(bytes descr, bint structured, itemsize, tuple shape, tuple strides,
         offset, nbytes, bint readonly, codec=0, filter=0, kind=0):
    """Return the header frame for the given fields.

    The fields are checked exactly as ``unpack`` checks them, so a header that this
    function returns is always one the receiver accepts. ``codec``, ``filter`` and
    ``kind`` say how the payload travels (docs/FORMAT.md); all 0 for a plain payload.
    """
    cdef Py_ssize_t ndim = PyTuple_GET_SIZE(shape)
    cdef int64_t c_shape[_MAX_NDIM]
    cdef int64_t c_strides[_MAX_NDIM]
    cdef uint64_t c_itemsize, c_offset, c_nbytes
    cdef uint8_t c_codec, c_filter, c_kind
    cdef Py_ssize_t i
    if ndim > _MAX_NDIM:
        raise HeaderError(f"ndim {ndim} exceeds the maximum of {_MAX_NDIM}")
    if PyTuple_GET_SIZE(strides) != ndim:
        raise HeaderError(f"{PyTuple_GET_SIZE(strides)} strides given for {ndim} dimensions")
    try:
        c_itemsize = itemsize
        c_offset = offset
        c_nbytes = nbytes
        c_codec = codec
        c_filter = filter
        c_kind = kind
        for i in range(ndim):
            c_shape[i] = shape[i]
            c_strides[i] = strides[i]
    except OverflowError:
        # Let the twin name the offending field, so both raise the same message.
        from zarray._header_py import pack as py_pack
        py_pack(descr, structured, itemsize, shape, strides, offset, nbytes, readonly,
                codec, filter, kind)
        raise  # unreachable: the twin raises HeaderError for any out-of-range field
    return pack_c(PyBytes_AS_STRING(descr), PyBytes_GET_SIZE(descr), structured, c_itemsize,
                  <int>ndim, c_shape, c_strides, c_offset, c_nbytes, readonly,
                  c_codec, c_filter, c_kind)


def set_encoding(bytes header, codec, filter, kind):
    """Return a copy of a header frame with its codec id, filter id and payload kind set.

    The payload stage uses this to describe a payload that travels compressed or in
    shared memory; the rest of the header (the array it describes) is unchanged.
    """
    cdef uint8_t c_codec, c_filter, c_kind
    cdef Py_ssize_t n = PyBytes_GET_SIZE(header)
    cdef uint8_t* p
    try:
        c_codec = codec
        c_filter = filter
        c_kind = kind
    except OverflowError:
        from zarray._header_py import set_encoding as py_set_encoding
        py_set_encoding(header, codec, filter, kind)
        raise  # unreachable: the twin raises HeaderError for any out-of-range value
    _check_encoding(c_codec, c_filter, c_kind)
    if n < _FIXED or memcmp(PyBytes_AS_STRING(header), _MAGIC, 4) != 0:
        raise HeaderError("not a zarray header: too short or bad magic")
    out = PyBytes_FromStringAndSize(PyBytes_AS_STRING(header), n)
    p = <uint8_t*>PyBytes_AS_STRING(out)
    p[6] = c_codec
    p[7] = c_kind
    p[12] = c_filter
    return out


cdef int parse_c(const uint8_t* p, Py_ssize_t n, Fields* h) except -1:
    """Parse and check a header into ``h``; the C entry point behind ``unpack``.

    ``h.descr`` points into ``p``: it is valid only as long as the caller's buffer.
    """
    cdef int ndim, i
    cdef Py_ssize_t ld, need
    if n < 4 or memcmp(p, _MAGIC, 4) != 0:
        raise HeaderError(
            f"not a zarray header: bad magic {(<const char*>p)[:min(n, 4)]!r} "
            f"(expected {MAGIC!r})")
    if n < _FIXED:
        raise HeaderError(f"header truncated: {n} bytes, the fixed part alone is {_FIXED}")
    if p[4] != _VERSION:
        raise HeaderError(
            f"unsupported header version {p[4]} (this zarray reads version {_VERSION})")
    if p[5] & ~_FLAG_READONLY:
        raise HeaderError(f"unknown flag bits 0x{p[5] & ~_FLAG_READONLY:02x} set")
    _check_encoding(p[6], p[12], p[7])
    ndim = p[8]
    if ndim > _MAX_NDIM:
        raise HeaderError(f"ndim {ndim} exceeds the maximum of {_MAX_NDIM}")
    if p[9] > 1:
        raise HeaderError(f"unknown dtype descriptor kind {p[9]}")
    if p[13] or p[14] or p[15]:
        raise HeaderError("reserved header bytes 13..15 are not zero")
    ld = p[10] | (p[11] << 8)
    need = _FIXED + 16 * ndim + ld
    if n < need:
        raise HeaderError(
            f"header truncated: {n} bytes, but ndim {ndim} and a {ld}-byte descriptor "
            f"need {need}")
    if n > need:
        raise HeaderError(f"{n - need} unexpected bytes after the end of the header")
    h.ndim = ndim
    h.structured = p[9] == 1
    h.readonly = (p[5] & _FLAG_READONLY) != 0
    h.itemsize = _get_u64(p + 16)
    h.offset = _get_u64(p + 24)
    h.nbytes = _get_u64(p + 32)
    for i in range(ndim):
        h.shape[i] = <int64_t>_get_u64(p + _FIXED + 8 * i)
        h.strides[i] = <int64_t>_get_u64(p + _FIXED + 8 * (ndim + i))
    h.descr = <const char*>(p + _FIXED + 16 * ndim)
    h.descr_len = ld
    h.codec = p[6]
    h.filter = p[12]
    h.kind = p[7]
    _check_geometry(ndim, h.shape, h.strides, h.itemsize, h.offset, h.nbytes)
    return 0


cdef tuple _as_tuple(Fields* h):
    cdef int i
    cdef object v
    shape = PyTuple_New(h.ndim)
    strides = PyTuple_New(h.ndim)
    for i in range(h.ndim):
        v = h.shape[i]
        Py_INCREF(v)
        PyTuple_SET_ITEM(shape, i, v)
        v = h.strides[i]
        Py_INCREF(v)
        PyTuple_SET_ITEM(strides, i, v)
    return (PyBytes_FromStringAndSize(h.descr, h.descr_len), h.structured, h.itemsize,
            shape, strides, h.offset, h.nbytes, h.readonly, h.codec, h.filter, h.kind)


def unpack(buf):
    """Parse a header frame (any object with the buffer protocol).

    Returns ``(descr, structured, itemsize, shape, strides, offset, nbytes, readonly,
    codec, filter, kind)`` and raises ``HeaderError`` for anything malformed. Nothing is
    allocated in proportion to a header field before that field has been checked.
    """
    cdef Py_buffer view
    cdef Fields h
    if type(buf) is bytes:
        parse_c(<const uint8_t*>PyBytes_AS_STRING(buf), PyBytes_GET_SIZE(buf), &h)
        return _as_tuple(&h)
    try:
        PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    except (TypeError, ValueError, BufferError):
        raise HeaderError(
            f"header is not a contiguous byte buffer (got {type(buf).__name__})") from None
    try:
        parse_c(<const uint8_t*>view.buf, view.len, &h)
        return _as_tuple(&h)
    finally:
        PyBuffer_Release(&view)
