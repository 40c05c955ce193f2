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
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem
from cpython.object cimport PyObject, PyTypeObject
from cpython.ref cimport Py_INCREF
from libc.stdint cimport int64_t, uint8_t, uint64_t
from libc.string cimport memcpy

from zarray._header cimport Fields, pack_c, parse_c, _MAX_NDIM

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

    ``header`` and ``payload`` must be ``bytes`` or ``zmq.Frame`` (objects whose memory
    never moves while they live). A misaligned C- or Fortran-ordered payload is copied
    once into a fresh aligned array. Returns None when the dtype is not in
    ``decode_cache`` (descriptor bytes -> dtype) or the view would be misaligned in
    another layout, so the caller's general path can build the dtype or copy. Raises
    ``HeaderError`` for a malformed header or a payload of the wrong length.
    """
    cdef Py_buffer hview, pview
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
    PyObject_GetBuffer(payload, &pview, PyBUF_SIMPLE)
    try:
        if <uint64_t>pview.len != h.nbytes:
            raise HeaderError(f"payload is {pview.len} bytes, but the header says {h.nbytes}")
        for i in range(h.ndim):
            dims[i] = <cnp.npy_intp>h.shape[i]
            strides[i] = <cnp.npy_intp>h.strides[i]
        flags = 0 if (pview.readonly or h.readonly) else cnp.NPY_ARRAY_WRITEABLE
        Py_INCREF(dt)  # PyArray_NewFromDescr steals it
        arr = PyArray_NewFromDescr(
            <PyTypeObject*>cnp.ndarray, <cnp.PyArray_Descr*>dt, h.ndim, dims, strides,
            <char*>pview.buf + h.offset, flags, NULL)
    finally:
        PyBuffer_Release(&pview)
    # The array keeps the frame (and so libzmq's message) alive for as long as it lives.
    cnp.set_array_base(arr, payload)
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


cdef inline int flags_of(cnp.ndarray arr) noexcept:
    return cnp.PyArray_FLAGS(arr)
