# cython: language_level=3
# cython: embedsignature=True
# cython: freethreading_compatible=True
"""The byte-shuffle filter of compressed payloads (filter id 1, docs/FORMAT.md).

``shuffle`` groups the bytes of ``n`` elements of ``itemsize`` bytes by their position
within the element: all first bytes, then all second bytes, and so on; the bytes after
the last whole element are copied unchanged. ``unshuffle`` is its inverse. Typed
numeric data compresses far better that way, because the slowly varying high bytes
(exponents, the top of small integers) end up next to each other.

Both run without the GIL on one block of a payload at a time (zarray._codecs), so the
block, its scratch buffer and the codec's output stay in cache. The loops for 2, 4 and 8
byte elements are written so that the compiler vectorizes them; wider elements take
the general loop. ``zarray._shuffle_py`` is the numpy twin; the tests check both give
the same bytes.
"""

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy


cdef void _shuffle2(const uint8_t* src, uint8_t* dst, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef uint8_t* d1 = dst + n
    for i in range(n):
        dst[i] = src[2 * i]
        d1[i] = src[2 * i + 1]


cdef void _unshuffle2(const uint8_t* src, uint8_t* dst, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef const uint8_t* s1 = src + n
    for i in range(n):
        dst[2 * i] = src[i]
        dst[2 * i + 1] = s1[i]


cdef void _shuffle4(const uint8_t* src, uint8_t* dst, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef uint8_t* d1 = dst + n
    cdef uint8_t* d2 = dst + 2 * n
    cdef uint8_t* d3 = dst + 3 * n
    for i in range(n):
        dst[i] = src[4 * i]
        d1[i] = src[4 * i + 1]
        d2[i] = src[4 * i + 2]
        d3[i] = src[4 * i + 3]


cdef void _unshuffle4(const uint8_t* src, uint8_t* dst, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef const uint8_t* s1 = src + n
    cdef const uint8_t* s2 = src + 2 * n
    cdef const uint8_t* s3 = src + 3 * n
    for i in range(n):
        dst[4 * i] = src[i]
        dst[4 * i + 1] = s1[i]
        dst[4 * i + 2] = s2[i]
        dst[4 * i + 3] = s3[i]


cdef void _shuffle8(const uint8_t* src, uint8_t* dst, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef uint8_t* d1 = dst + n
    cdef uint8_t* d2 = dst + 2 * n
    cdef uint8_t* d3 = dst + 3 * n
    cdef uint8_t* d4 = dst + 4 * n
    cdef uint8_t* d5 = dst + 5 * n
    cdef uint8_t* d6 = dst + 6 * n
    cdef uint8_t* d7 = dst + 7 * n
    for i in range(n):
        dst[i] = src[8 * i]
        d1[i] = src[8 * i + 1]
        d2[i] = src[8 * i + 2]
        d3[i] = src[8 * i + 3]
        d4[i] = src[8 * i + 4]
        d5[i] = src[8 * i + 5]
        d6[i] = src[8 * i + 6]
        d7[i] = src[8 * i + 7]


cdef void _unshuffle8(const uint8_t* src, uint8_t* dst, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef const uint8_t* s1 = src + n
    cdef const uint8_t* s2 = src + 2 * n
    cdef const uint8_t* s3 = src + 3 * n
    cdef const uint8_t* s4 = src + 4 * n
    cdef const uint8_t* s5 = src + 5 * n
    cdef const uint8_t* s6 = src + 6 * n
    cdef const uint8_t* s7 = src + 7 * n
    for i in range(n):
        dst[8 * i] = src[i]
        dst[8 * i + 1] = s1[i]
        dst[8 * i + 2] = s2[i]
        dst[8 * i + 3] = s3[i]
        dst[8 * i + 4] = s4[i]
        dst[8 * i + 5] = s5[i]
        dst[8 * i + 6] = s6[i]
        dst[8 * i + 7] = s7[i]


cdef void _shuffle_any(
    const uint8_t* src, uint8_t* dst, Py_ssize_t n, Py_ssize_t size
) noexcept nogil:
    cdef Py_ssize_t i, j
    cdef uint8_t* d
    for j in range(size):
        d = dst + j * n
        for i in range(n):
            d[i] = src[i * size + j]


cdef void _unshuffle_any(
    const uint8_t* src, uint8_t* dst, Py_ssize_t n, Py_ssize_t size
) noexcept nogil:
    cdef Py_ssize_t i, j
    cdef const uint8_t* s
    for j in range(size):
        s = src + j * n
        for i in range(n):
            dst[i * size + j] = s[i]


cdef void shuffle_c(
    const uint8_t* src, uint8_t* dst, Py_ssize_t length, Py_ssize_t itemsize
) noexcept nogil:
    """Shuffle ``length`` bytes of ``src`` into ``dst`` (the buffers must not overlap)."""
    cdef Py_ssize_t n = length // itemsize if itemsize > 1 else 0
    cdef Py_ssize_t done = n * itemsize
    if n:
        if itemsize == 2:
            _shuffle2(src, dst, n)
        elif itemsize == 4:
            _shuffle4(src, dst, n)
        elif itemsize == 8:
            _shuffle8(src, dst, n)
        else:
            _shuffle_any(src, dst, n, itemsize)
    if length > done:
        memcpy(dst + done, src + done, length - done)


cdef void unshuffle_c(
    const uint8_t* src, uint8_t* dst, Py_ssize_t length, Py_ssize_t itemsize
) noexcept nogil:
    """Undo :c:func:`shuffle_c` (the buffers must not overlap)."""
    cdef Py_ssize_t n = length // itemsize if itemsize > 1 else 0
    cdef Py_ssize_t done = n * itemsize
    if n:
        if itemsize == 2:
            _unshuffle2(src, dst, n)
        elif itemsize == 4:
            _unshuffle4(src, dst, n)
        elif itemsize == 8:
            _unshuffle8(src, dst, n)
        else:
            _unshuffle_any(src, dst, n, itemsize)
    if length > done:
        memcpy(dst + done, src + done, length - done)


def _check(Py_ssize_t src_len, Py_ssize_t dst_len, Py_ssize_t itemsize):
    if src_len != dst_len:
        raise ValueError(f"source is {src_len} bytes, destination {dst_len}")
    if itemsize < 1:
        raise ValueError(f"itemsize must be at least 1, got {itemsize}")


def shuffle(const uint8_t[::1] src, uint8_t[::1] dst, Py_ssize_t itemsize):
    """Write the byte shuffle of ``src`` (elements of ``itemsize`` bytes) into ``dst``.

    ``src`` and ``dst`` are contiguous byte buffers of the same length that do not
    overlap. Bytes after the last whole element are copied unchanged; an ``itemsize``
    of 1, or one larger than the buffer, copies everything unchanged. Runs without the
    GIL.
    """
    _check(src.shape[0], dst.shape[0], itemsize)
    if src.shape[0] == 0:
        return
    with nogil:
        shuffle_c(&src[0], &dst[0], src.shape[0], itemsize)


def unshuffle(const uint8_t[::1] src, uint8_t[::1] dst, Py_ssize_t itemsize):
    """Write the inverse of :func:`shuffle` of ``src`` into ``dst``; see there."""
    _check(src.shape[0], dst.shape[0], itemsize)
    if src.shape[0] == 0:
        return
    with nogil:
        unshuffle_c(&src[0], &dst[0], src.shape[0], itemsize)
