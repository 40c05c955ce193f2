# cython: language_level=3
# cython: embedsignature=True
# cython: freethreading_compatible=True
"""The per-message fast path: numpy array <-> header + payload via numpy's C API.

Reading an array's shape, strides and flags through Python attributes and building
the received array with ``numpy.ndarray(...)`` cost more than the whole header codec;
this module does both with numpy's C API. It handles only the common case and returns
``None`` for anything else, and ``zarray._array`` then takes its general (pure Python)
path, which is also the whole implementation when ``ZARRAY_PUREPYTHON=1``. It adds no
rule of its own: every header goes through the codec's checks in ``_header``.
"""

cimport numpy as cnp
from cpython.buffer cimport (
    PyBUF_ANY_CONTIGUOUS, PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer)
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem
from cpython.memoryview cimport PyMemoryView_FromObject
from cpython.object cimport PyObject, PyTypeObject
from cpython.ref cimport Py_INCREF
from libc.stdint cimport int64_t, uint8_t, uint64_t
from libc.string cimport memcpy

from zarray._header cimport Fields, pack_c, parse_c, _MAX_NDIM

from zmq import Frame as _Frame

from zarray.errors import HeaderError

cnp.import_array()

cdef extern from "numpy/arrayobject.h":
    # Steals a reference to descr; returns a new reference.
    object PyArray_NewFromDescr(PyTypeObject* subtype, cnp.PyArray_Descr* descr, int nd,
                                cnp.npy_intp* dims, cnp.npy_intp* strides, void* data,
                                int flags, PyObject* obj)

cdef extern from "numpy/ndarraytypes.h":
    enum: NPY_ALIGNED_STRUCT

cdef int _CONTIGUOUS = cnp.NPY_ARRAY_C_CONTIGUOUS | cnp.NPY_ARRAY_F_CONTIGUOUS


def pack_array(object A, dict encode_cache):
    """Header for a contiguous, non-empty ndarray whose dtype is cached, else None.

    ``encode_cache`` maps dtype -> (descriptor, structured, itemsize, buffer_ok), as
    filled by ``zarray._dtypes.encode_dtype``.
    """
    cdef cnp.ndarray arr
    cdef PyObject* entry
    cdef int flags, nd, i
    cdef int64_t shape[_MAX_NDIM]
    cdef int64_t strides[_MAX_NDIM]
    cdef cnp.npy_intp nbytes
    if type(A) is not cnp.ndarray:
        return None
    arr = <cnp.ndarray>A
    flags = cnp.PyArray_FLAGS(arr)
    nd = cnp.PyArray_NDIM(arr)
    if not (flags & _CONTIGUOUS) or nd > _MAX_NDIM:
        return None
    nbytes = cnp.PyArray_NBYTES(arr)
    if nbytes <= 0:
        return None
    if cnp.PyDataType_FLAGS(<cnp.dtype>cnp.PyArray_DESCR(arr)) & NPY_ALIGNED_STRUCT:
        # An align=True record compares equal to its twin without the flag, so it
        # cannot share a cache keyed by dtype; it takes the general path.
        return None
    entry = PyDict_GetItem(encode_cache, <object>cnp.PyArray_DESCR(arr))
    if entry is NULL:
        return None
    descr, structured, itemsize, buffer_ok = <tuple>entry
    if not buffer_ok:
        return None
    for i in range(nd):
        shape[i] = cnp.PyArray_DIMS(arr)[i]
        strides[i] = cnp.PyArray_STRIDES(arr)[i]
    return pack_c(PyBytes_AS_STRING(descr), PyBytes_GET_SIZE(descr), structured, itemsize,
                  nd, shape, strides, 0, <uint64_t>nbytes,
                  not (flags & cnp.NPY_ARRAY_WRITEABLE))


def unpack_array(object header, object payload, dict decode_cache):
    """View ``payload`` as the array ``header`` describes, or return None.

    ``header`` is any bytes-like object; ``payload`` any object exporting a contiguous
    buffer (C or Fortran order), whose memory, from its first byte, is the payload. The
    result is read-only if that buffer is. A misaligned C- or Fortran-ordered payload
    is copied once into a fresh aligned array. Returns None when the dtype is not in
    ``decode_cache`` (descriptor bytes -> dtype) or the view would be misaligned in
    another layout, so the caller's general path can build the dtype or copy. Raises
    ``HeaderError`` for a malformed header or a payload of the wrong length.
    """
    cdef Py_buffer hview
    cdef char* pbuf
    cdef Py_ssize_t plen
    cdef bint preadonly
    cdef Fields h
    cdef PyObject* entry
    cdef cnp.dtype dt
    cdef cnp.npy_intp dims[_MAX_NDIM]
    cdef cnp.npy_intp strides[_MAX_NDIM]
    cdef int i, flags
    cdef cnp.ndarray arr, fresh
    PyObject_GetBuffer(header, &hview, PyBUF_SIMPLE)
    try:
        parse_c(<const uint8_t*>hview.buf, hview.len, &h)
        # The descriptor bytes must be copied out before the header buffer goes.
        key = (<const char*>h.descr)[:h.descr_len]
    finally:
        PyBuffer_Release(&hview)
    entry = PyDict_GetItem(decode_cache, key)
    if entry is NULL or h.ndim > 32 or h.codec or h.kind:
        # Past 32 dimensions the general path checks the running numpy's own limit
        # (numpy 1.x stops at 32; this module may be built against numpy 2's 64).
        # Compressed and shared-memory payloads go through zarray._payload.
        return None
    dt = <cnp.dtype>entry
    if cnp.PyDataType_HASFIELDS(dt) != h.structured or <uint64_t>dt.itemsize != h.itemsize:
        return None  # inconsistent header: the general path names the error
    owner = _pinned(payload, &pbuf, &plen, &preadonly)
    if <uint64_t>plen != h.nbytes:
        raise HeaderError(f"payload is {plen} bytes, but the header says {h.nbytes}")
    for i in range(h.ndim):
        dims[i] = <cnp.npy_intp>h.shape[i]
        strides[i] = <cnp.npy_intp>h.strides[i]
    flags = 0 if (preadonly or h.readonly) else cnp.NPY_ARRAY_WRITEABLE
    Py_INCREF(dt)  # PyArray_NewFromDescr steals it
    arr = PyArray_NewFromDescr(
        <PyTypeObject*>cnp.ndarray, <cnp.PyArray_Descr*>dt, h.ndim, dims, strides,
        pbuf + h.offset, flags, NULL)
    cnp.set_array_base(arr, owner)
    if cnp.PyArray_ISALIGNED(arr):
        return arr
    # libzmq puts frames wherever its allocator or receive buffer did (small frames at
    # 2 mod 8, say). A C- or Fortran-ordered payload is copied once into a fresh
    # array, which numpy allocates aligned; any other misaligned layout is left to
    # the general path.
    if h.offset != 0 or not (flags_of(arr) & _CONTIGUOUS) or \
            <uint64_t>cnp.PyArray_NBYTES(arr) != h.nbytes:
        return None
    Py_INCREF(dt)  # PyArray_NewFromDescr steals it
    fresh = PyArray_NewFromDescr(
        <PyTypeObject*>cnp.ndarray, <cnp.PyArray_Descr*>dt, h.ndim, dims, strides,
        NULL, 0, NULL)
    memcpy(cnp.PyArray_DATA(fresh), cnp.PyArray_DATA(arr), h.nbytes)
    if h.readonly:
        cnp.PyArray_CLEARFLAGS(fresh, cnp.NPY_ARRAY_WRITEABLE)
    return fresh


cdef object _pinned(object payload, char** buf, Py_ssize_t* size, bint* readonly):
    """Find the payload's memory; return the object that must become the array's base.

    The base must keep that memory valid, and in place, for as long as the array
    lives. bytes, zmq.Frame (which holds libzmq's message) and ndarrays do so by merely
    being referenced, so they are the base as they are. Any other exporter (bytearray,
    mmap, memoryview, ...) is wrapped in a fresh memoryview, which holds a buffer
    export until the array dies: a bytearray then refuses to resize and an mmap to
    close (BufferError) instead of leaving the array dangling. A fresh one, not the
    caller's memoryview, which the caller could release(). numpy.frombuffer pins its
    buffer the same way. Only the owner's reference is needed past this function, so
    the buffer view taken here is released at once.
    """
    cdef Py_buffer view
    cdef cnp.ndarray a
    cdef int f
    if type(payload) is cnp.ndarray:
        # Its memory, read directly: no buffer export (numpy's fills in format, shape
        # and strides, and refuses datetime64 altogether).
        a = <cnp.ndarray>payload
        f = cnp.PyArray_FLAGS(a)
        if not (f & _CONTIGUOUS):
            raise BufferError("the payload must be a contiguous buffer (C or Fortran order)")
        buf[0] = <char*>cnp.PyArray_DATA(a)
        size[0] = cnp.PyArray_NBYTES(a)
        readonly[0] = not (f & cnp.NPY_ARRAY_WRITEABLE)
        return payload
    if type(payload) is bytes or type(payload) is _Frame:
        owner = payload
    else:
        owner = PyMemoryView_FromObject(payload)
    # Any contiguous buffer, C or Fortran order: its memory from its first byte.
    PyObject_GetBuffer(owner, &view, PyBUF_ANY_CONTIGUOUS)
    buf[0] = <char*>view.buf
    size[0] = view.len
    readonly[0] = view.readonly
    PyBuffer_Release(&view)
    return owner


cdef inline int flags_of(cnp.ndarray arr) noexcept:
    return cnp.PyArray_FLAGS(arr)
