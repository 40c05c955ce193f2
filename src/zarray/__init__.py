"""zarray: zero-copy numpy arrays over ZeroMQ.

An array travels as two frames: a compact binary header (dtype, shape, strides,
offset, length, read-only bit; see docs/FORMAT.md) and the array's own memory,
handed to libzmq without a copy and rebuilt on arrival as a view of the frame.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from zarray._array import Header, pack_header, unpack_header
from zarray._transport import recv_array, send_array
from zarray.errors import HeaderError, UnsupportedArrayError, ZarrayError

try:
    __version__ = version("zarray")
except PackageNotFoundError:  # pragma: no cover - running from an uninstalled tree
    __version__ = "0+unknown"

__all__ = [
    "Header",
    "HeaderError",
    "UnsupportedArrayError",
    "ZarrayError",
    "__version__",
    "pack_header",
    "recv_array",
    "send_array",
    "unpack_header",
]
