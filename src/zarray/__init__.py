"""zarray: zero-copy numpy arrays over ZeroMQ.

An array travels as two frames: a compact binary header (dtype, shape, strides,
offset, length, read-only bit; see docs/FORMAT.md) and the array's own memory,
handed to libzmq without a copy and rebuilt on arrival as a view of the frame.
Several arrays with a JSON meta dict travel as one message (``send_arrays``); a
``SharedPool`` sends arrays to processes on the same host by reference into shared
memory (``shm=``);
``zarray.Context``/``zarray.Socket`` add the functions as socket methods, and
``zarray.asyncio`` does the same over ``zmq.asyncio``.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from zarray import limits
from zarray._array import Header, frombuffer, pack_header, unpack_header
from zarray._multi import recv_arrays, send_arrays
from zarray._serialize import deserialize, serialize
from zarray._shm import SharedPool
from zarray._socket import Context, Socket
from zarray._transport import recv_array, send_array
from zarray.errors import (
    HeaderError,
    OutMismatchError,
    PoolFullError,
    UnsupportedArrayError,
    ZarrayError,
)

try:
    __version__ = version("zarray")
except PackageNotFoundError:  # pragma: no cover - running from an uninstalled tree
    __version__ = "0+unknown"

__all__ = [
    "Context",
    "Header",
    "HeaderError",
    "OutMismatchError",
    "PoolFullError",
    "SharedPool",
    "Socket",
    "UnsupportedArrayError",
    "ZarrayError",
    "__version__",
    "deserialize",
    "frombuffer",
    "limits",
    "pack_header",
    "recv_array",
    "recv_arrays",
    "send_array",
    "send_arrays",
    "serialize",
    "unpack_header",
]
