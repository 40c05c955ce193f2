"""Compressed payloads: the codec registry, the sending policy and safe decoding.

Codecs (header byte 6; docs/FORMAT.md, "Compressed payloads"): ``1`` lz4 (raw blocks)
and ``2`` zstd (one frame per block), both from cramjam, the one package of the
``compress`` extra. Filter (header byte 12): ``1`` byte shuffle, run per block by
``zarray._shuffle`` (or its numpy twin ``zarray._shuffle_py``).

The payload frame of a compressed array is independent blocks behind a small table::

    u64 nbytes | u32 block size | u32 block count | u32 per block | the blocks

Each table entry is the block's stored length, with bit 31 set when the block is
stored raw (it did not shrink). The receiver checks every length against the header's
``nbytes`` and against the frame before it decompresses anything, then decompresses
each block straight into its place in the result (with the shuffle filter, through a
one-block scratch buffer), so the result is one aligned allocation of exactly the
header's ``nbytes`` and nothing is ever sized by the peer's framing.

Sending runs in two steps. :meth:`Compression.wants` is the cheap policy check (size,
transport) and runs in the caller's thread, the only one that may touch the socket;
:meth:`Compression.encode` samples, shuffles and compresses, with the GIL released in
cramjam and in the shuffle kernel, and may run in another thread (``zarray.asyncio``
runs it in the loop's executor).
"""

from __future__ import annotations

import os
import struct
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from zarray import limits
from zarray._codec import (
    CODEC_LZ4,
    CODEC_ZSTD,
    FILTER_NONE,
    FILTER_SHUFFLE,
    KIND_INLINE,
    set_encoding,
)
from zarray.errors import HeaderError

__all__ = [
    "AUTO_MAX_RATIO",
    "AUTO_MIN_BYTES",
    "BLOCK_SIZE",
    "INSTALL",
    "SHUFFLE_IMPLEMENTATION",
    "Compression",
    "available",
    "compression",
    "decode",
    "decode_into",
    "transport_of",
]

#: What the error messages tell a user without the extra.
INSTALL = 'pip install "zarray[compress]"'

# -- the framing (docs/FORMAT.md) -------------------------------------------------------

_FIXED = struct.Struct("<QII")  # nbytes, block size, block count
FIXED_SIZE = _FIXED.size  # 16
#: Bit 31 of a table entry: the block is stored raw (unfiltered, uncompressed).
RAW = 1 << 31
_LENGTH = RAW - 1
#: The block sizes a frame may declare. The floor bounds the per-block work a peer can
#: ask for (at most one block per 4 KiB of the declared array); the ceiling bounds the
#: scratch buffer of the shuffle filter.
MIN_BLOCK = 1 << 12
MAX_BLOCK = 1 << 24
#: The sender's block size (rounded down to whole elements when shuffling): small
#: enough that a block, its shuffled copy and the codec's output stay in a core's L2
#: cache, large enough that per-block costs and the table vanish (bench/RESULTS.md).
BLOCK_SIZE = 1 << 18

# -- the "auto" policy (after Dask's distributed.protocol.compression) ------------------

#: "auto" leaves payloads smaller than this alone: per-message costs dominate there.
AUTO_MIN_BYTES = 1 << 16
#: "auto" keeps a compressed payload only if it is at most this fraction of the raw one
#: (Dask's threshold since distributed#7768), and tries only if its samples are.
AUTO_MAX_RATIO = 0.7
#: Samples "auto" compresses first: this many, evenly spaced, of about 1/64 of the
#: payload in all (at least 4 KiB and at most 64 KiB in all).
AUTO_SAMPLES = 4
_SAMPLE_MIN = 1 << 12
_SAMPLE_MAX = 1 << 16
#: Transports that never leave the host: "auto" never compresses over them.
LOCAL_TRANSPORTS = frozenset({"inproc", "ipc"})


# -- the shuffle kernel: compiled, or its numpy twin ------------------------------------


def _shuffle_module() -> tuple[str, Any]:
    if os.environ.get("ZARRAY_PUREPYTHON", "") not in ("", "0"):
        from zarray import _shuffle_py

        return "python", _shuffle_py
    try:
        from zarray import _shuffle
    except ImportError as exc:
        from zarray import _shuffle_py

        if (Path(__file__).parent / "_shuffle.pyx").exists():
            warnings.warn(
                f"zarray's compiled shuffle filter is not built in this source checkout "
                f"({exc}); falling back to numpy. Build it with `pip install -e .`, or set "
                "ZARRAY_PUREPYTHON=1 to silence this warning.",
                RuntimeWarning,
                stacklevel=3,
            )
        return "python", _shuffle_py
    return "cython", _shuffle


#: "cython" or "python": which shuffle kernel this process uses.
SHUFFLE_IMPLEMENTATION, _kernel = _shuffle_module()


# -- the codecs ---------------------------------------------------------------------


_cramjam: Any = None


def _backend() -> Any:
    """The cramjam module, or None when the ``compress`` extra is not installed."""
    global _cramjam
    if _cramjam is None:
        try:
            import cramjam
        except ImportError:
            return None
        _cramjam = cramjam
    return _cramjam


def available() -> bool:
    """Whether this process can compress and decompress (the ``compress`` extra)."""
    return _backend() is not None


class _Codec:
    """One codec id: how to compress a block into a bounded buffer and back."""

    __slots__ = ("id", "levels", "name")

    def __init__(self, id: int, name: str, levels: tuple[int, int] | None) -> None:
        self.id = id
        self.name = name
        self.levels = levels

    def compress_into(self, cj: Any, src: Any, dst: Any, level: int | None) -> int:
        """Compressed bytes written to ``dst``; raises if they do not fit in it."""
        if self.id == CODEC_LZ4:
            # A raw block, no size prefix: its length is in the table and the header.
            return int(cj.lz4.compress_block_into(src, dst, store_size=False))
        return int(cj.zstd.compress_into(src, dst, level=1 if level is None else level))

    def decompress_into(self, cj: Any, src: Any, dst: Any) -> int:
        """Bytes written to ``dst``, which is never written past its end."""
        if self.id == CODEC_LZ4:
            return int(cj.lz4.decompress_block_into(src, dst))
        declared = zstd_content_size(src)
        if declared != len(dst):
            # libzstd sizes its window buffer by the frame's content size, or else by
            # the window size the frame asks for (up to 128 MiB): only a frame that
            # declares exactly the block's length is handed to it.
            raise ValueError(
                "not a zstd frame" if declared is None else f"frame declares {declared} bytes"
            )
        return int(cj.zstd.decompress_into(src, dst))


_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def zstd_content_size(src: Any) -> int | None:
    """The content size a zstd frame header declares, or None if it declares none.

    RFC 8878, section 3.1.1.1: magic, frame header descriptor (content-size flag, single
    segment, reserved bit, checksum, dictionary-id flag), then the window descriptor,
    dictionary id and content size fields.
    """
    head = memoryview(src)[:18].tobytes()
    if len(head) < 5 or head[:4] != _ZSTD_MAGIC:
        return None
    fhd = head[4]
    fcs_flag, single = fhd >> 6, (fhd >> 5) & 1
    if fhd & 0x08 or (fcs_flag == 0 and not single):
        return None  # reserved bit set, or no content size
    pos = 5 + (0 if single else 1) + (0, 1, 2, 4)[fhd & 3]
    width = (1, 2, 4, 8)[fcs_flag]
    if len(head) < pos + width:
        return None
    value = int.from_bytes(head[pos : pos + width], "little")
    return value + 256 if width == 2 else value


#: name -> codec, as users type them; the ids are those of docs/FORMAT.md.
CODECS = {
    # cramjam's lz4 block codec has one setting (its modes and accelerations give the
    # same bytes in cramjam 2.14), so it takes no level.
    "lz4": _Codec(CODEC_LZ4, "lz4", None),
    # zstd's own range: negative levels are its fast modes, 0 means its default (3).
    "zstd": _Codec(CODEC_ZSTD, "zstd", (-131072, 22)),
}
_BY_ID = {c.id: c for c in CODECS.values()}


def _missing(what: str) -> ImportError:
    return ImportError(f"{what} needs the compress extra (cramjam): {INSTALL}")


# -- sending ------------------------------------------------------------------------


def transport_of(socket: Any) -> str:
    """The transport of a socket's last bound or connected endpoint ("tcp", "ipc", ...).

    "" when it has none (yet). Touches the socket: call it in the socket's own thread.
    """
    endpoint = socket.getsockopt(zmq.LAST_ENDPOINT)
    scheme, sep, _ = bytes(endpoint).partition(b"://")
    return scheme.decode("ascii", "replace") if sep else ""


class Compression:
    """A sender's compression policy, parsed from ``compress=`` by :func:`compression`.

    Parameters
    ----------
    codec : str
        ``"lz4"`` or ``"zstd"``.
    level : int or None
        zstd's level (-131072..22), or None for zarray's default (zstd 1; lz4 takes
        no level).
    shuffle : bool
        Apply the byte-shuffle filter to dtypes of more than one byte.
    auto : bool
        Compress only where it pays (see :func:`zarray.send_array`).

    Notes
    -----
    :meth:`encode` reads the payload once and writes one new frame: the caller's array
    is never modified, and it is no longer referenced once :meth:`encode` returns.
    """

    __slots__ = ("auto", "codec", "level", "shuffle")

    def __init__(
        self, codec: str, level: int | None = None, shuffle: bool = True, auto: bool = False
    ) -> None:
        self.codec = CODECS[codec]
        self.level = level
        self.shuffle = shuffle
        self.auto = auto

    def __repr__(self) -> str:
        name = "auto" if self.auto else self.codec.name
        return f"Compression({name!r}, level={self.level}, shuffle={self.shuffle})"

    def wants(self, payload: Any, socket: Any) -> bool:
        """Whether to try compressing ``payload`` on ``socket`` (cheap; socket's thread).

        Explicit codecs compress every non-empty payload. ``"auto"`` leaves alone
        payloads under :data:`AUTO_MIN_BYTES` and sockets whose last endpoint stays on
        this host (``inproc://``, ``ipc://``).
        """
        nbytes = payload.nbytes
        if not nbytes:
            return False
        if not self.auto:
            return True
        return nbytes >= AUTO_MIN_BYTES and transport_of(socket) not in LOCAL_TRANSPORTS

    def encode(self, header: bytes, payload: Any) -> tuple[bytes, np.ndarray[Any, Any]] | None:
        """``(header, frame)`` of the compressed payload, or None to send it as it is.

        ``header`` and ``payload`` are what ``zarray._array.prepare`` made (the payload
        is C- or Fortran-contiguous, or a byte view of a memory span). None only for
        ``"auto"``, when the samples or the whole payload do not shrink to
        :data:`AUTO_MAX_RATIO`. Safe to call from any thread.
        """
        cj = _backend()
        if cj is None:  # pragma: no cover - compression() refused this already
            raise _missing("compress=")
        flat = payload.reshape(-1, order="A").view(np.uint8)
        nbytes = flat.size
        itemsize = int.from_bytes(header[16:24], "little")
        filt = FILTER_SHUFFLE if self.shuffle and 1 < itemsize <= MAX_BLOCK else FILTER_NONE
        size = itemsize if filt else 1
        if self.auto and not self._samples_pay(cj, flat, size):
            return None
        frame = _compress(cj, self.codec, self.level, flat, size)
        if self.auto and frame.size > AUTO_MAX_RATIO * nbytes:
            return None
        return set_encoding(header, self.codec.id, filt, KIND_INLINE), frame

    def _samples_pay(self, cj: Any, flat: np.ndarray[Any, Any], size: int) -> bool:
        """Whether evenly spaced samples of the payload shrink to AUTO_MAX_RATIO."""
        nbytes = flat.size
        each = min(max(nbytes // 64, _SAMPLE_MIN), _SAMPLE_MAX) // AUTO_SAMPLES
        each -= each % size
        if each < size or each * AUTO_SAMPLES * 4 >= nbytes:
            return True  # too small to sample: the whole payload is the test
        step = (nbytes - each) // (AUTO_SAMPLES - 1)
        step -= step % size
        scratch = _scratch(2 * each)
        shuffled, out = scratch[:each], scratch[each:]
        stored = 0
        for k in range(AUTO_SAMPLES):
            sample = flat[k * step : k * step + each]
            if size > 1:
                _kernel.shuffle(sample, shuffled, size)
                sample = shuffled
            stored += _compress_block(cj, self.codec, self.level, sample, out)
        return stored <= AUTO_MAX_RATIO * each * AUTO_SAMPLES


def _compress_block(
    cj: Any, codec: _Codec, level: int | None, src: Any, dst: np.ndarray[Any, Any]
) -> int:
    """Compressed length of ``src`` in ``dst`` (room for len(src) - 1 bytes), or
    len(src) when it does not shrink."""
    length = len(src)
    try:
        # One byte less than the block: a result that does not fit did not shrink, and
        # the codec gives up as soon as it knows (no worst-case buffer needed).
        return codec.compress_into(cj, src, dst[: length - 1], level)
    except Exception:
        return length


_local = threading.local()
#: Scratch buffers up to this size are kept per thread between messages.
_KEEP_SCRATCH = 1 << 20


def _scratch(size: int) -> np.ndarray[Any, Any]:
    """A per-thread scratch buffer of at least ``size`` bytes (contents undefined)."""
    buf: np.ndarray[Any, Any] | None = getattr(_local, "buf", None)
    if buf is None or buf.size < size:
        buf = np.empty(size, np.uint8)
        if size <= _KEEP_SCRATCH:
            _local.buf = buf
    return buf[:size]


def _compress(
    cj: Any, codec: _Codec, level: int | None, flat: np.ndarray[Any, Any], size: int
) -> np.ndarray[Any, Any]:
    """The compressed frame of ``flat`` (docs/FORMAT.md); ``size`` > 1 shuffles."""
    nbytes = flat.size
    block = size * max(1, BLOCK_SIZE // size) if size > 1 else BLOCK_SIZE
    count = -(-nbytes // block)
    head = FIXED_SIZE + 4 * count
    # Room for every block stored raw, which is the most a frame can hold; pages past
    # the compressed length are never touched, so they cost address space only.
    frame = np.empty(head + nbytes, np.uint8)
    _FIXED.pack_into(frame.data, 0, nbytes, block, count)
    table = np.empty(count, "<u4")
    scratch = _scratch(min(block, nbytes)) if size > 1 else None
    pos = head
    for i in range(count):
        start = i * block
        src = flat[start : start + block]
        length = src.size
        data = src
        if scratch is not None:
            data = scratch[:length]
            _kernel.shuffle(src, data, size)
        stored = _compress_block(cj, codec, level, data, frame[pos : pos + length])
        if stored >= length:
            frame[pos : pos + length] = src  # raw, unfiltered
            table[i] = RAW | length
            pos += length
        else:
            table[i] = stored
            pos += stored
    frame[FIXED_SIZE:head] = table.view(np.uint8)
    return frame[:pos]


def compression(spec: Any) -> Compression:
    """The policy for a ``compress=`` argument.

    Parameters
    ----------
    spec : str or tuple
        ``"lz4"``, ``"zstd"``, ``"auto"``, ``(name, level)`` or ``(name, level,
        shuffle)``; ``level`` may be None (the default level), ``shuffle`` is a bool
        (default True: shuffle dtypes of more than one byte).

    Returns
    -------
    Compression

    Raises
    ------
    ValueError
        For an unknown codec name or a level out of the codec's range.
    TypeError
        For a spec of another type.
    ImportError
        When the ``compress`` extra is not installed; the message names the install
        command (``pip install "zarray[compress]"``).
    """
    if isinstance(spec, Compression):
        return spec
    if isinstance(spec, str):
        name, level, shuffle = spec, None, True
    elif isinstance(spec, tuple) and len(spec) in (2, 3):
        name, level = spec[0], spec[1]
        shuffle = spec[2] if len(spec) == 3 else True
    else:
        raise TypeError(
            f"compress must be a codec name, (name, level) or (name, level, shuffle); "
            f"got {spec!r:.80}"
        )
    if not isinstance(name, str):
        raise TypeError(f"compress: the codec name must be a str, got {name!r:.40}")
    auto = name == "auto"
    if not auto and name not in CODECS:
        raise ValueError(f"compress: unknown codec {name!r:.40}; expected 'lz4', 'zstd' or 'auto'")
    if level is not None:
        if isinstance(level, bool) or not isinstance(level, int):
            raise TypeError(f"compress: the level must be an int or None, got {level!r:.40}")
        if auto:
            raise ValueError("compress: 'auto' chooses its own level; name a codec to set one")
        levels = CODECS[name].levels
        if levels is None:
            raise ValueError(f"compress: {name} takes no level; use {name!r} or (name, None)")
        lo, hi = levels
        if not lo <= level <= hi:
            raise ValueError(f"compress: {name} level {level} is outside {lo}..{hi}")
    if not isinstance(shuffle, bool):
        raise TypeError(f"compress: shuffle must be True or False, got {shuffle!r:.40}")
    if _backend() is None:
        raise _missing(f"compress={spec!r}")
    return Compression("lz4" if auto else name, level, shuffle, auto)


# -- receiving ----------------------------------------------------------------------


def _layout(fields: tuple[Any, ...], frame: Any) -> tuple[Any, _Codec, np.ndarray[Any, Any], int]:
    """Check a compressed frame against its header before anything is decompressed.

    Returns ``(cramjam, codec, view of the frame, block size)``; :func:`_blocks` then
    checks the table. Raises HeaderError for a frame its header does not allow.
    """
    nbytes, codec_id = fields[6], fields[8]
    codec = _BY_ID.get(codec_id)
    if codec is None:  # the header codecs refuse other ids; keep the guard local too
        raise HeaderError(f"unknown codec id {codec_id}")
    cj = _backend()
    if cj is None:
        raise HeaderError(
            f"the payload is compressed with {codec.name} (codec id {codec_id}); "
            f"decompressing it needs the compress extra: {INSTALL}"
        )
    view = np.frombuffer(frame, np.uint8)
    size = view.size
    if size < FIXED_SIZE:
        raise HeaderError(
            f"compressed payload is {size} bytes, shorter than its {FIXED_SIZE}-byte framing"
        )
    declared, block, count = _FIXED.unpack_from(view.data)
    if declared != nbytes:
        raise HeaderError(
            f"compressed payload declares {declared} bytes, but the header says {nbytes}"
        )
    if not MIN_BLOCK <= block <= MAX_BLOCK:
        raise HeaderError(
            f"compressed payload block size {block} is outside {MIN_BLOCK}..{MAX_BLOCK}"
        )
    if count != -(-nbytes // block):
        raise HeaderError(
            f"compressed payload has {count} blocks; {nbytes} bytes in blocks of {block} "
            f"make {-(-nbytes // block)}"
        )
    head = FIXED_SIZE + 4 * count
    if size < head:
        raise HeaderError(
            f"compressed payload is {size} bytes, too short for its table of {count} blocks"
        )
    return cj, codec, view, block


def _blocks(
    view: np.ndarray[Any, Any], nbytes: int, block: int
) -> tuple[list[int], list[bool], int]:
    """``(stored lengths, raw flags, frame offset of block 0)``, every length checked."""
    count = -(-nbytes // block)
    head = FIXED_SIZE + 4 * count
    entries = np.frombuffer(view, "<u4", count, FIXED_SIZE).astype(np.uint32)
    lengths = entries & _LENGTH
    raw = entries >= RAW
    full = np.full(count, block, np.uint32)
    if count:
        full[-1] = nbytes - (count - 1) * block
    bad = np.flatnonzero(np.where(raw, lengths != full, (lengths == 0) | (lengths >= full)))
    if bad.size:
        i = int(bad[0])
        what = "stored raw" if raw[i] else "compressed"
        raise HeaderError(
            f"compressed payload block {i} ({what}) is {int(lengths[i])} bytes for "
            f"{int(full[i])} bytes of data"
        )
    total = head + int(lengths.sum(dtype=np.uint64))
    if total != view.size:
        raise HeaderError(f"compressed payload is {view.size} bytes, but its table says {total}")
    return lengths.tolist(), raw.tolist(), head


def _decompress(
    cj: Any,
    codec: _Codec,
    view: np.ndarray[Any, Any],
    block: int,
    fields: tuple[Any, ...],
    out: np.ndarray[Any, Any],
    unshuffle: Any,
) -> None:
    """Decompress every block of a checked frame into its place in ``out``."""
    nbytes, itemsize, filt = fields[6], fields[2], fields[9]
    lengths, raw, pos = _blocks(view, nbytes, block)
    size = itemsize if filt == FILTER_SHUFFLE and 1 < itemsize <= MAX_BLOCK else 1
    scratch = _scratch(min(block, nbytes)) if size > 1 else None
    start = 0
    for i, stored in enumerate(lengths):
        dst = out[start : start + block]
        length = dst.size
        src = view[pos : pos + stored]
        if raw[i]:
            dst[:] = src
        else:
            target = dst if scratch is None or length < size else scratch[:length]
            try:
                got = codec.decompress_into(cj, src, target)
            except Exception as exc:
                raise HeaderError(
                    f"compressed payload block {i} is corrupt ({codec.name}: {exc})"
                ) from None
            except BaseException as exc:
                # A panic in the codec's Rust code surfaces as pyo3's PanicException,
                # which derives from BaseException; it is still the peer's bad data.
                if type(exc).__name__ != "PanicException":
                    raise
                raise HeaderError(
                    f"compressed payload block {i} is corrupt ({codec.name} failed)"
                ) from None
            if got != length:
                raise HeaderError(
                    f"compressed payload block {i} decompresses to {got} bytes, not {length}"
                )
            if target is not dst:
                unshuffle(target, dst, size)
        start += length
        pos += stored


def decode(fields: tuple[Any, ...], frame: Any, unshuffle: Any = None) -> np.ndarray[Any, Any]:
    """The decompressed bytes of a compressed payload frame.

    Parameters
    ----------
    fields : tuple
        The parsed header (``zarray._codec.unpack``).
    frame : bytes-like
        The payload frame.
    unshuffle : callable, optional
        The shuffle kernel's inverse to use (the tests and fuzzers compare the
        compiled one with its twin); default: the one this process chose.

    Returns
    -------
    numpy.ndarray
        A fresh, writeable, 64-byte aligned uint8 array of exactly ``nbytes`` bytes.

    Raises
    ------
    HeaderError
        For a payload over ``zarray.limits.max_decompressed_bytes`` (before anything is
        allocated), without the compress extra, or for a frame that does not decode to
        exactly ``nbytes`` bytes (bad framing, corrupt or truncated blocks).

    Notes
    -----
    One allocation of the result (plus 63 bytes, to align it) and, with the shuffle
    filter, a scratch buffer of one block; each block is decompressed straight into its
    place, so the data is written once (twice through the scratch block when
    shuffled), and nothing is sized by the peer's framing.
    """
    nbytes = fields[6]
    if nbytes > limits.max_decompressed_bytes:
        raise HeaderError(
            f"compressed payload would decompress to {nbytes} bytes, over the receiver's "
            f"limit of {limits.max_decompressed_bytes} (zarray.limits.max_decompressed_bytes)"
        )
    cj, codec, view, block = _layout(fields, frame)
    # One allocation, 63 bytes more than the array so that it can start on a 64-byte
    # boundary; a fresh numpy array, so the result owns it and it is writeable.
    raw = np.empty(nbytes + 63, np.uint8)
    start = -int(raw.__array_interface__["data"][0]) % 64
    out = raw[start : start + nbytes]
    _decompress(cj, codec, view, block, fields, out, unshuffle or _kernel.unshuffle)
    return out


def decode_into(
    buf: np.ndarray[Any, Any], fields: tuple[Any, ...], frame: Any, unshuffle: Any = None
) -> None:
    """Decompress a payload frame straight into ``buf``, a C-contiguous uint8 view.

    ``buf`` must be exactly ``nbytes`` long (``recv_array(out=...)`` has checked the
    dtype and shape). Raises HeaderError as :func:`decode` does, except that the size
    limit does not apply (nothing is allocated but the scratch block); ``buf`` may
    then have been partly written.
    """
    nbytes = fields[6]
    if buf.size != nbytes:
        raise HeaderError(f"payload decompresses to {nbytes} bytes, out has {buf.size}")
    cj, codec, view, block = _layout(fields, frame)
    _decompress(cj, codec, view, block, fields, buf, unshuffle or _kernel.unshuffle)
