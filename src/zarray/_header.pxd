# C-level entry points of the header codec, for zarray's other extension modules.
from libc.stdint cimport int64_t, uint8_t, uint64_t

cdef enum:
    _MAX_NDIM = 64

cdef struct Fields:
    int ndim
    bint structured
    bint readonly
    uint64_t itemsize
    uint64_t offset
    uint64_t nbytes
    int64_t shape[_MAX_NDIM]
    int64_t strides[_MAX_NDIM]
    const char* descr
    Py_ssize_t descr_len
    int codec
    int filter
    int kind

cdef bytes pack_c(const char* descr, Py_ssize_t ld, bint structured, uint64_t itemsize,
                  int ndim, const int64_t* shape, const int64_t* strides,
                  uint64_t offset, uint64_t nbytes, bint readonly,
                  int codec=*, int filter=*, int kind=*)

cdef int parse_c(const uint8_t* p, Py_ssize_t n, Fields* h) except -1
