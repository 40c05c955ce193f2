"""The methods: one way each of moving an array over a socket, and their registry.

Each :class:`Method` names the exact calls it makes on both sides (``send(socket, A)``
and ``recv(socket)``), how a received object is checked, the optional packages it
needs, whether ``zarray bench`` runs it by default, and how it is drawn in the plot.

**Adding a method** is one entry in :data:`REGISTRY` (and its two functions): the
command line, the peer, the table, the plot and the suites in ``bench/`` find it
there by name. Entries must be made when this module is imported, not later: the
peer of the ``ipc``/``tcp`` link is a spawned process, which imports this module and
looks methods up by name in :data:`METHODS`.
"""

from __future__ import annotations

import importlib
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np
import zmq

import zarray
from zarray._bench.arrays import Array

__all__ = [
    "BASELINE",
    "DEFAULT_METHODS",
    "METHODS",
    "REGISTRY",
    "Method",
    "PlotStyle",
    "Socket",
    "available_methods",
    "json_recipe_recv",
    "json_recipe_send",
]

Socket = zmq.Socket[Any]


class PlotStyle(NamedTuple):
    """How a method's line is drawn by ``zarray bench --plot`` (matplotlib's arguments)."""

    label: str
    color: str
    marker: str = "o"
    linestyle: str = "-"
    linewidth: float = 1.5
    zorder: int = 2


@dataclass(frozen=True)
class Method:
    """One way of moving an array, with the exact calls it makes.

    Attributes
    ----------
    name : str
        The name used on the command line.
    description : str
        What it does, in one line (shown by ``zarray bench --help``).
    send, recv : callable
        ``send(socket, array_or_buffer)`` and ``recv(socket) -> object``.
    kind : str
        How a received object is checked, see :func:`~zarray._bench.arrays.check_received`.
    requires : tuple of str
        Optional modules it needs; it is skipped when one is missing.
    default : bool
        Whether ``zarray bench`` runs it when no ``--methods`` are given (in
        :data:`REGISTRY` order).
    plot : PlotStyle or None
        Its line in the plot; None draws it in a colour of its own, labelled by name.
    by_reference : bool
        Its messages carry a reference, not the array's bytes (shared memory): the
        link's queue is then not shortened for large arrays, since queued messages
        hold no payload (the pool's size bounds what is in flight).
    """

    name: str
    description: str
    send: Callable[[Socket, Any], object]
    recv: Callable[[Socket], Any]
    kind: str = "array"
    requires: tuple[str, ...] = ()
    default: bool = False
    plot: PlotStyle | None = None
    by_reference: bool = False

    def missing(self) -> list[str]:
        """Return the required modules that cannot be imported."""
        out = []
        for name in self.requires:
            try:
                importlib.import_module(name)
            except ImportError:
                out.append(name)
        return out


def _send_zarray(sock: Socket, A: Any) -> None:
    # track=False: the benchmark never modifies a sent array, and every peer sends
    # untracked too; tracking adds a MessageTracker per zero-copy frame.
    zarray.send_array(sock, A, copy=False, track=False)


def _recv_zarray(sock: Socket) -> Array:
    return zarray.recv_array(sock, copy=False)


def _send_zarray_forced(sock: Socket, A: Any) -> None:
    # pyzmq copies frames under socket.copy_threshold even with copy=False; 0 turns
    # that off, so that the sweep sees the real cost of zero-copy at every size.
    sock.copy_threshold = 0
    zarray.send_array(sock, A, copy=False, track=False)


def _send_zarray_copy(sock: Socket, A: Any) -> None:
    zarray.send_array(sock, A, copy=True, track=False)


def _recv_zarray_copy(sock: Socket) -> Array:
    return zarray.recv_array(sock, copy=True)


def _recv_zarray_into(sock: Socket) -> Array:
    """A prototype receive path: read the header, then recv_into a fresh array.

    One copy (libzmq's frame into numpy's memory), no Frame object, always aligned:
    a candidate for small payloads, measured by bench/sweep_threshold.py.
    """
    head = sock.recv(copy=False)
    h = zarray.unpack_header(head)
    out = np.empty(h.nbytes // h.dtype.itemsize, h.dtype)
    sock.recv_into(out.data)
    result: Array = np.ndarray(h.shape, h.dtype, out, h.offset, h.strides)
    return result


def json_recipe_send(
    sock: Socket, A: Any, flags: int = 0, copy: bool = True, track: bool = False
) -> Any:
    """``send_array`` of pyzmq's serialization guide (JSON {dtype, shape} + buffer).

    The guide's code, with its ``**kwargs`` spelled out as ``copy`` and ``track``
    (pyzmq's defaults, as in the guide's earlier versions).
    """
    md = dict(dtype=str(A.dtype), shape=A.shape)
    sock.send_json(md, flags | zmq.SNDMORE)
    return sock.send(A, flags, copy=copy, track=track)


def json_recipe_recv(sock: Socket, flags: int = 0, copy: bool = True) -> Array:
    """``recv_array`` of pyzmq's serialization guide."""
    md: Any = sock.recv_json(flags=flags)
    msg: Any = sock.recv(flags=flags, copy=copy)
    A = np.frombuffer(msg, dtype=md["dtype"])
    result: Array = A.reshape(md["shape"])
    return result


def _send_json(sock: Socket, A: Any) -> None:
    json_recipe_send(sock, A, copy=True)


def _recv_json(sock: Socket) -> Array:
    return json_recipe_recv(sock, copy=True)


def _send_json_nocopy(sock: Socket, A: Any) -> None:
    json_recipe_send(sock, A, copy=False)


def _recv_json_nocopy(sock: Socket) -> Array:
    return json_recipe_recv(sock, copy=False)


def _send_pickle5(sock: Socket, A: Any) -> None:
    buffers: list[pickle.PickleBuffer] = []
    head = pickle.dumps(A, protocol=5, buffer_callback=buffers.append)
    sock.send_multipart([head, *buffers], copy=False)


def _recv_pickle5(sock: Socket) -> Any:
    frames = sock.recv_multipart(copy=False)
    return pickle.loads(frames[0].buffer, buffers=frames[1:])


@cache
def _msgpack() -> tuple[ModuleType, ModuleType]:
    return importlib.import_module("msgpack"), importlib.import_module("msgpack_numpy")


def _send_msgpack(sock: Socket, A: Any) -> None:
    msgpack, mnp = _msgpack()
    sock.send(msgpack.packb(A, default=mnp.encode), copy=False)


def _recv_msgpack(sock: Socket) -> Any:
    msgpack, mnp = _msgpack()
    return msgpack.unpackb(sock.recv(copy=False), object_hook=mnp.decode)


def _send_raw(sock: Socket, buf: Any) -> None:
    n = memoryview(buf).nbytes
    sock.send(n.to_bytes(8, "little"), zmq.SNDMORE)
    # copy=False lets pyzmq apply its own rule: frames under socket.copy_threshold
    # (zmq.COPY_THRESHOLD, 64 KiB) are copied, larger ones are zero-copy.
    sock.send(buf, copy=False)


def _recv_raw(sock: Socket) -> Any:
    n = int.from_bytes(sock.recv(), "little")
    # The same rule on receipt: bytes under the threshold, a zero-copy Frame above.
    return sock.recv(copy=n < zmq.COPY_THRESHOLD)


# -- shared memory (zarray bench --shm): the driver's pool, grown for the largest array

_pool: list[zarray.SharedPool] = []
_pooled: list[tuple[Any, Array]] = []  # (the last array given, its copy in the pool)


def _pool_for(nbytes: int) -> zarray.SharedPool:
    """The driver's pool, big enough for the queued copies of ``nbytes`` arrays.

    Every method streams a batch without waiting, so up to the link's queue (about
    128 MiB, at least two messages) may be in flight; the pool holds that, plus two.
    ``threshold=0`` sends every size by reference, to show what shared memory costs
    even where zarray's default (inline below 256 KiB) would not use it.
    """
    need = max(256 * 2**20, 128 * 2**20 + 3 * nbytes)
    if not _pool or _pool[0].size < need:
        if _pool:
            _pool.pop().close()
        _pooled.clear()
        _pool.append(zarray.SharedPool(need, threshold=0))
    return _pool[0]


def _send_shm(sock: Socket, A: Any) -> None:
    pool = _pool_for(A.nbytes)
    if not _pooled or _pooled[0][0] is not A:
        _pooled[:] = [(A, pool.asarray(A))]  # made once, then sent by reference each time
    zarray.send_array(sock, _pooled[0][1], copy=False, track=False, shm=pool)


def _send_shm_copy(sock: Socket, A: Any) -> None:
    zarray.send_array(sock, A, copy=False, track=False, shm=_pool_for(A.nbytes))


#: Every method, in table order. Add a method here (see the module docstring).
REGISTRY: list[Method] = [
    Method(
        "zarray",
        "zarray zero-copy: send_array(copy=False) / recv_array(copy=False)",
        _send_zarray,
        _recv_zarray,
        default=True,
        plot=PlotStyle("zarray, zero-copy", "C0", "o", "-", 2.8, zorder=3),
    ),
    Method(
        "zarray-copy",
        "zarray copying: send_array(copy=True) / recv_array(copy=True)",
        _send_zarray_copy,
        _recv_zarray_copy,
        default=True,
        plot=PlotStyle("zarray, copy=True", "C0", "s", "--"),
    ),
    Method(
        "json",
        "pyzmq guide recipe: JSON {dtype, shape} + buffer, copy=True (its default)",
        _send_json,
        _recv_json,
        default=True,
        plot=PlotStyle("JSON recipe, copy=True", "C1", "^", "-"),
    ),
    Method(
        "json-nocopy",
        "pyzmq guide recipe with copy=False on send and recv",
        _send_json_nocopy,
        _recv_json_nocopy,
        default=True,
        plot=PlotStyle("JSON recipe, copy=False", "C1", "v", "--"),
    ),
    Method(
        "pickle5",
        "pickle protocol 5, out-of-band buffers as extra frames, copy=False",
        _send_pickle5,
        _recv_pickle5,
        default=True,
        plot=PlotStyle("pickle 5, out-of-band", "C2", "D", "-"),
    ),
    Method(
        "msgpack",
        "msgpack-numpy: packb(A, default=encode) / unpackb(object_hook=decode)",
        _send_msgpack,
        _recv_msgpack,
        requires=("msgpack", "msgpack_numpy"),
        default=True,
        plot=PlotStyle("msgpack-numpy", "C4", "P", "-"),
    ),
    Method(
        "raw",
        "floor: raw pyzmq frames (8-byte length + the buffer), no array built; "
        "copy below zmq.COPY_THRESHOLD, zero-copy above, on both sides",
        _send_raw,
        _recv_raw,
        kind="buffer",
        default=True,
        plot=PlotStyle("raw pyzmq frames (floor)", "0.3", "x", ":"),
    ),
    Method(
        "zarray-shm",
        "zarray over shared memory, an array that lives in a zarray.SharedPool: "
        "send_array(shm=pool) sends a 40-byte reference, the peer maps the pool",
        _send_shm,
        _recv_zarray,
        plot=PlotStyle("zarray, array in a SharedPool", "C3", "*", "-", 2.8, zorder=3),
        by_reference=True,
    ),
    Method(
        "zarray-shm-copy",
        "zarray over shared memory, an ordinary array: copied once into the pool "
        "(at memory bandwidth), then sent by reference",
        _send_shm_copy,
        _recv_zarray,
        plot=PlotStyle("zarray, copied into a SharedPool", "C3", "h", "--", 2.0),
        by_reference=True,
    ),
    # Variants for the copy-threshold sweep (bench/sweep_threshold.py), not run by default.
    Method(
        "zarray-zerocopy",
        "sweep variant: socket.copy_threshold = 0, send_array(copy=False) / "
        "recv_array(copy=False): zero-copy at every size",
        _send_zarray_forced,
        _recv_zarray,
    ),
    Method(
        "zarray-sendcopy",
        "sweep variant: send_array(copy=True) / recv_array(copy=False)",
        _send_zarray_copy,
        _recv_zarray,
    ),
    Method(
        "zarray-recvcopy",
        "sweep variant: send_array(copy=False) / recv_array(copy=True)",
        _send_zarray,
        _recv_zarray_copy,
    ),
    Method(
        "zarray-recvinto",
        "sweep prototype: send_array(copy=False) / header + recv_into a fresh array",
        _send_zarray,
        _recv_zarray_into,
    ),
]

#: Every method by name.
METHODS: dict[str, Method] = {m.name: m for m in REGISTRY}
#: The methods ``zarray bench`` runs by default, in table order.
DEFAULT_METHODS = tuple(m.name for m in REGISTRY if m.default)
#: The baseline of the ``vs raw`` column.
BASELINE = "raw"


def available_methods(names: Sequence[str]) -> tuple[list[Method], list[str]]:
    """Split method names into the runnable methods and notes on skipped ones.

    Raises
    ------
    ValueError
        For an unknown method name.
    """
    methods, notes = [], []
    for name in names:
        if name not in METHODS:
            raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
        m = METHODS[name]
        missing = m.missing()
        if missing:
            notes.append(
                f'skipped {name}: needs {", ".join(missing)} (pip install "zarray[bench]")'
            )
        else:
            methods.append(m)
    return methods, notes
