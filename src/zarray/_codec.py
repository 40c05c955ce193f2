"""Choose the header codec: the compiled extension, or its pure-Python twin.

The twin is used when ``ZARRAY_PUREPYTHON=1`` is set or the extension cannot be
imported. In a source checkout where the extension was never built, say so loudly,
because everything then runs several times slower than it should.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

IMPLEMENTATION: str
# The numpy C-API fast path (zarray._fastpath), or None when running pure Python.
pack_array: Callable[[Any, dict[Any, Any]], bytes | None] | None = None
unpack_array: Callable[[Any, Any, dict[Any, Any]], Any] | None = None

if os.environ.get("ZARRAY_PUREPYTHON", "") not in ("", "0"):
    from zarray._header_py import pack, set_encoding, unpack

    IMPLEMENTATION = "python"
else:
    try:
        from zarray._fastpath import pack_array, unpack_array
        from zarray._header import pack, set_encoding, unpack

        IMPLEMENTATION = "cython"
    except ImportError as _exc:
        from zarray._header_py import pack, set_encoding, unpack

        IMPLEMENTATION = "python"
        if (Path(__file__).parent / "_header.pyx").exists():
            warnings.warn(
                "zarray's compiled header codec is not built in this source checkout "
                f"({_exc}); falling back to the slower pure-Python codec. Build it with "
                "`pip install -e .` (or `python setup.py build_ext --inplace`), or set "
                "ZARRAY_PUREPYTHON=1 to silence this warning.",
                RuntimeWarning,
                stacklevel=2,
            )

# The values of header bytes 6, 12 and 7 (docs/FORMAT.md); the same in both codecs.
from zarray._header_py import (  # noqa: E402
    CODEC_LZ4,
    CODEC_NONE,
    CODEC_ZSTD,
    FILTER_NONE,
    FILTER_SHUFFLE,
    KIND_INLINE,
    KIND_SHM,
)

__all__ = [
    "CODEC_LZ4",
    "CODEC_NONE",
    "CODEC_ZSTD",
    "FILTER_NONE",
    "FILTER_SHUFFLE",
    "IMPLEMENTATION",
    "KIND_INLINE",
    "KIND_SHM",
    "pack",
    "pack_array",
    "set_encoding",
    "unpack",
    "unpack_array",
]
