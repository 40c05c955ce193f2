"""Pure-Python (numpy) twin of ``zarray._shuffle``: the byte-shuffle filter.

Used when the compiled extension cannot be imported, or when ``ZARRAY_PUREPYTHON=1``.
It must write exactly the bytes the extension writes; the tests check both on every
element size and length. numpy's strided copy holds the GIL for small buffers only
(numpy releases it for large copies), and runs at about a tenth of the compiled loops'
speed for 2, 4 and 8 byte elements.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["shuffle", "unshuffle"]


def _views(src: Any, dst: Any, itemsize: int) -> tuple[Any, Any]:
    s = np.frombuffer(src, np.uint8)
    d = np.frombuffer(dst, np.uint8)
    if not d.flags.writeable:
        raise BufferError("Object is not writable.")  # what Cython's memoryview says
    if s.size != d.size:
        raise ValueError(f"source is {s.size} bytes, destination {d.size}")
    if itemsize < 1:
        raise ValueError(f"itemsize must be at least 1, got {itemsize}")
    return s, d


def shuffle(src: Any, dst: Any, itemsize: int) -> None:
    """Write the byte shuffle of ``src`` (elements of ``itemsize`` bytes) into ``dst``.

    See ``zarray._shuffle.shuffle``: byte ``j`` of element ``i`` goes to ``j * n + i``
    (``n`` whole elements), and the bytes after the last whole element are copied
    unchanged.
    """
    s, d = _views(src, dst, itemsize)
    n = s.size // itemsize if itemsize > 1 else 0
    done = n * itemsize
    if n:
        np.copyto(d[:done].reshape(itemsize, n), s[:done].reshape(n, itemsize).T)
    d[done:] = s[done:]


def unshuffle(src: Any, dst: Any, itemsize: int) -> None:
    """Write the inverse of :func:`shuffle` of ``src`` into ``dst``."""
    s, d = _views(src, dst, itemsize)
    n = s.size // itemsize if itemsize > 1 else 0
    done = n * itemsize
    if n:
        np.copyto(d[:done].reshape(n, itemsize), s[:done].reshape(itemsize, n).T)
    d[done:] = s[done:]
