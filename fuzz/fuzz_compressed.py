"""Coverage-guided fuzzing of compressed payloads: real compressed messages, mutated.

Structure-aware, so it needs no seed corpus: the first bytes of an input choose an array
(dtype family, layout, size), a codec and the shuffle filter; zarray compresses it for
real; the rest of the input is a list of mutations of that message: header bytes (the
codec id at 6, the payload kind at 7, the filter id at 12, any other byte), the
framing's fields (declared size, block size, block count, table entries and their raw
bit, set to edge values), bytes inside the blocks, truncation and extension of the
frame. The message goes over a real inproc PAIR pair and is received with
``recv_array`` (a view, ``copy=True``, or ``out=``). Then:

* only ``zarray.HeaderError`` may come out; anything else is a crash;
* the outcome matches the reference (:func:`reference`, whose compressed branch is
  the plain decoder ``_reference_codec`` written from docs/FORMAT.md): the same
  acceptance, and for an accepted message the same dtype, shape, bytes and writeable
  flag; an unmutated message is always accepted and equals the array that was sent;
* the decoder gives the same bytes, or the same error, with the compiled shuffle kernel
  and with its numpy twin (and the two header codecs parse the header alike);
* the socket is at a message boundary afterwards (a sentinel comes through intact);
* the receive allocates no more than the allocation guard (``_guard``) allows: 4 x the
  message's bytes plus the constant from ``zarray.limits``, plus the size the payload
  declares when that is within the receiver's decompressed-size limit, one block and
  64 bytes of alignment. A payload that declares more must be refused before anything
  is allocated.

Run: ``python fuzz/fuzz_compressed.py [libFuzzer options] [corpus dir]`` under atheris,
or ``python fuzz/fuzz_compressed.py --seconds N`` for a plain random loop without it.
The decompressed-size limit is lowered to 16 MiB here, so that forged but consistent
zero bombs stay cheap (the limit itself is tested in tests/test_compression.py).
"""

from __future__ import annotations

import argparse
import math
import random
import struct
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

try:
    import atheris
except ImportError:
    atheris = None

if __name__ == "__main__" and atheris is not None and "--seconds" not in sys.argv:
    with atheris.instrument_imports(include=["zarray", "_fuzzlib", "_reference_codec"]):
        import _fuzzlib
        from _guard import AllocationGuard

        import zarray
        from zarray import _codecs, _header, _header_py, _shuffle, _shuffle_py
        from zarray._dtypes import decode_dtype
else:
    import _fuzzlib
    from _guard import AllocationGuard

    import zarray
    from zarray import _codecs, _header, _header_py, _shuffle, _shuffle_py
    from zarray._dtypes import decode_dtype

import numpy as np
import zmq

RECV_GUARD_MS = 5000
LIMIT = 16 << 20
#: Arrays whose elements cover at most this many bytes are compared in full.
FULL_COMPARE = 1 << 22

DTYPES = ["|u1", "<u2", ">i2", "<i4", ">f4", "<f8", ">c16", "|S3", "<U2", "|b1", "<M8[us]"]
DTYPES += ["u1,<i4", "V5"]
LAYOUTS = ["C", "F", "reversed", "broadcast", "field", "0d", "empty"]
BOMBS = [LIMIT // 2, LIMIT, LIMIT + 1, 2 * LIMIT]  # 2 x LIMIT: under -malloc_limit_mb=64
CODECS = [("lz4", True), ("lz4", False), ("zstd", True), ("zstd", False)]
EDGES = [0, 1, 2, 3, 4095, 4096, 4097, 1 << 16, (1 << 24) - 1, 1 << 24, (1 << 24) + 1]
EDGES += [(1 << 31) - 1, 1 << 31, (1 << 31) + 1, (1 << 32) - 1]


class Mismatch(AssertionError):
    """zarray did something the reference or the contract does not allow."""


def make_array(p: _fuzzlib.Provider) -> np.ndarray[Any, Any]:
    """An array chosen by the input: dtype, layout and a size up to ~600 KiB.

    One input in 16 instead makes a zero bomb: an all-zero array around the lowered
    decompressed-size limit (half of it, exactly it, one byte over, twice it), which
    compresses to a few KiB; the receiver must accept those within the limit and
    refuse the others before allocating anything.
    """
    if p.uint(1) % 16 == 0:
        return np.zeros(BOMBS[p.uint(1) % len(BOMBS)], np.uint8)
    dt = np.dtype(DTYPES[p.uint(1) % len(DTYPES)])
    layout = LAYOUTS[p.uint(1) % len(LAYOUTS)]
    n = 1 + p.uint(3) % ((600 << 10) // max(dt.itemsize, 1))
    style = p.uint(1) % 3
    raw = np.arange(n * dt.itemsize, dtype=np.int64)
    if style == 0:
        data = (raw // 13 % 7).astype(np.uint8)  # compressible
    elif style == 1:
        data = np.random.default_rng(n).integers(0, 256, raw.size, dtype=np.uint8)
    else:
        data = np.zeros(raw.size, np.uint8)
    if dt.kind == "b":
        data &= 1
    A: np.ndarray[Any, Any] = np.empty(n, dt)
    A.view(np.uint8)[:] = data
    if layout == "F" and n >= 4:
        A = np.asfortranarray(A[: n // 4 * 4].reshape(-1, 4))
    elif layout == "reversed":
        A = A[::-1]
    elif layout == "broadcast":
        A = np.broadcast_to(A[: max(1, n // 8)], (3, max(1, n // 8)))
    elif layout == "field" and dt.names:
        A = A[dt.names[1]]
    elif layout == "0d":
        A = A[0:1].reshape(())
    elif layout == "empty":
        A = A[:0]
    return A


def mutate(p: _fuzzlib.Provider, header: bytes, frame: bytes) -> tuple[bytes, bytes]:
    """Apply the mutations the rest of the input describes."""
    h, f = bytearray(header), bytearray(frame)
    for _ in range(8):
        if p.pos >= len(p.data):
            break
        op = p.uint(1) % 9
        if op == 0:
            h[6] = p.uint(1) % 4  # codec id: none, lz4, zstd, unknown
        elif op == 1:
            h[12] = p.uint(1) % 3  # filter id
        elif op == 2:
            h[7] = p.uint(1) % 3  # payload kind
        elif op == 3 and h:
            h[p.uint(2) % len(h)] ^= p.uint(1) or 1
        elif op == 4 and len(f) >= 16:
            # a framing field: declared size (u64), block size, block count (u32)
            which = p.uint(1) % 3
            value = EDGES[p.uint(1) % len(EDGES)]
            if which == 0:
                f[0:8] = struct.pack("<Q", value)
            else:
                f[4 + 4 * which : 8 + 4 * which] = struct.pack("<I", value)
        elif op == 5 and len(f) >= 20:
            # a table entry: flip its raw bit or set it to an edge value
            count = (len(f) - 16) // 4
            pos = 16 + 4 * (p.uint(2) % min(count, max(1, struct.unpack_from("<I", f, 12)[0])))
            (entry,) = struct.unpack_from("<I", f, pos)
            entry = entry ^ (1 << 31) if p.uint(1) & 1 else EDGES[p.uint(1) % len(EDGES)]
            f[pos : pos + 4] = struct.pack("<I", entry & 0xFFFFFFFF)
        elif op == 6 and f:
            f[p.uint(3) % len(f)] ^= p.uint(1) or 1  # a byte anywhere, blocks included
        elif op == 7 and f:
            del f[p.uint(3) % len(f) :]  # truncation
        elif op == 8:
            f += p.take(p.uint(1) % 16)  # extension
    return bytes(h), bytes(f)


def _decode_twins(header: bytes, frame: bytes) -> None:
    """The two header codecs, and the decoder with either shuffle kernel, agree."""
    a = _fuzzlib.outcome(_header.unpack, header)
    b = _fuzzlib.outcome(_header_py.unpack, header)
    if a[0] != b[0] or (a[0] == "ok" and a != b):
        raise Mismatch(f"header codecs differ: {a!r} / {b!r}")
    if a[0] != "ok" or not a[1][8] or a[1][10]:
        return
    fields = a[1]
    if fields[6] > LIMIT:
        return
    c = _fuzzlib.outcome(_decoded, fields, frame, _shuffle.unshuffle)
    d = _fuzzlib.outcome(_decoded, fields, frame, _shuffle_py.unshuffle)
    if c != d:
        raise Mismatch(f"the decoders with the two shuffle kernels differ: {c!r} / {d!r}")


def _decoded(fields: tuple[Any, ...], frame: bytes, unshuffle: Any) -> bytes:
    return bytes(_codecs.decode(fields, frame, unshuffle).tobytes())


def reference(header: bytes, frame: bytes) -> _fuzzlib.Outcome:
    """What recv_array must do with a two-frame message, from the spec alone.

    ``("ok", dtype, shape, strides, offset, readonly, payload)`` with the payload as
    ``_reference_codec`` decodes it (a decoder written from docs/FORMAT.md), or
    ``("err", "HeaderError")``.
    """
    try:
        fields, payload = _fuzzlib._plain(_header_py.unpack(header), frame)
        dt = decode_dtype(*fields[:3])
    except (zarray.HeaderError, _fuzzlib.Refused):
        return ("err", "HeaderError")
    if len(payload) != fields[6]:
        return ("err", "HeaderError")
    return ("ok", dt, fields[3], fields[4], fields[5], fields[7], payload)


def realign_refused(expected: _fuzzlib.Outcome) -> bool:
    """The documented refusal (docs/FORMAT.md, "Receiving"): a layout misaligned for its
    dtype whose distinct elements would take more than twice the payload to realign."""
    if expected[0] != "ok":
        return False
    _, dt, shape, strides, offset, _readonly, payload = expected
    align = dt.alignment
    odd = offset % align or any(s % align for s, n in zip(strides, shape, strict=True) if n > 1)
    distinct = math.prod(n for n, s in zip(shape, strides, strict=True) if s != 0)
    return bool(odd) and distinct * dt.itemsize > 2 * len(payload) + 64


def decoded_allowance(frame: bytes) -> int:
    """What decompressing ``frame`` may allocate beyond the guard's bound (see above)."""
    if len(frame) < 16:
        return 0
    nbytes, block, _ = struct.unpack_from("<QII", frame)
    if nbytes > zarray.limits.max_decompressed_bytes:
        return 0
    return nbytes + min(block, nbytes) + 64


class Harness:
    """An inproc PAIR pair, and the sender used to compress the arrays."""

    def __init__(self) -> None:
        zarray.limits.max_decompressed_bytes = LIMIT
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.sockets = []
        for name in ("make", "tx"):
            a, b = self.ctx.socket(zmq.PAIR), self.ctx.socket(zmq.PAIR)
            for s in (a, b):
                s.linger = 0
                s.rcvtimeo = s.sndtimeo = RECV_GUARD_MS
            b.bind(f"inproc://fuzz-compressed-{name}")
            a.connect(f"inproc://fuzz-compressed-{name}")
            self.sockets += [a, b]
        self.make_tx, self.make_rx, self.tx, self.rx = self.sockets
        self.inputs = 0
        self.guard = AllocationGuard()

    def close(self) -> None:
        self.guard.close()
        for s in self.sockets:
            s.close(linger=0)
        self.ctx.term()

    def run(self, data: bytes) -> None:
        self.inputs += 1
        p = _fuzzlib.Provider(data)
        A = make_array(p)
        codec, shuffle = CODECS[p.uint(1) % len(CODECS)]
        mode = p.uint(1) % 3  # view, copy=True, out=
        zarray.send_array(self.make_tx, A, compress=(codec, None, shuffle))
        header0, frame0 = self.make_rx.recv_multipart()
        header, frame = mutate(p, header0, frame0)
        _decode_twins(header, frame)
        expected = reference(header, frame)
        unmutated = (header, frame) == (header0, frame0)
        if unmutated and expected[0] != "ok" and A.nbytes <= LIMIT:
            raise Mismatch(f"the reference refuses an unmutated message of {A.dtype} {A.shape}")
        out = None
        if mode == 2 and expected[0] == "ok":
            dt, shape = expected[1], expected[2]
            if math.prod(shape) * dt.itemsize <= LIMIT:
                out = np.empty(shape, dt)
        self.tx.send_multipart([header, frame])
        try:
            with self.guard.measure(
                len(header) + len(frame), f"recv of {A.dtype} {A.shape}", decoded_allowance(frame)
            ):
                B = zarray.recv_array(self.rx, copy=mode == 1, out=out)
        except zarray.HeaderError as exc:
            if expected[0] == "ok" and not (out is None and realign_refused(expected)):
                raise Mismatch(f"refused ({exc}), the reference accepts it") from None
            B = None
        except zarray.ZarrayError as exc:
            raise Mismatch(f"{type(exc).__name__} is not a HeaderError: {exc}") from None
        if B is not None:
            self._check(A, B, expected, header == header0 and frame == frame0, out)
            del B
        self.tx.send_multipart(_fuzzlib.SENTINEL_FRAMES)
        S = zarray.recv_array(self.rx)
        if not np.array_equal(S, _fuzzlib.SENTINEL) or self.rx.poll(0):
            raise Mismatch("the socket is not at a message boundary")

    def _check(
        self,
        A: np.ndarray[Any, Any],
        B: np.ndarray[Any, Any],
        expected: _fuzzlib.Outcome,
        unmutated: bool,
        out: np.ndarray[Any, Any] | None,
    ) -> None:
        if expected[0] != "ok":
            raise Mismatch(f"accepted, the reference says {expected}")
        _, dt, shape, strides, offset, readonly, payload = expected
        if B.dtype != dt or B.shape != shape:
            raise Mismatch(f"got {B.dtype} {B.shape}, expected {dt} {shape}")
        if out is None and B.flags.writeable == readonly:
            raise Mismatch("the writeable flag does not follow the header's read-only bit")
        if B.size and not B.flags.aligned:
            raise Mismatch("misaligned array")
        if dt.itemsize and B.size:
            items = np.dtype((np.void, dt.itemsize))
            got, want = B.view(items), np.ndarray(shape, dt, payload, offset, strides).view(items)
            if B.size * dt.itemsize <= FULL_COMPARE:
                same = got.tobytes() == want.tobytes()
            else:  # a huge broadcast of a few bytes: its corners
                last = tuple(n - 1 for n in shape)
                same = got[(0,) * B.ndim] == want[(0,) * B.ndim] and got[last] == want[last]
            if not same:
                raise Mismatch("content differs from the reference's decoding")
        if unmutated and B.tobytes() != A.tobytes():
            raise Mismatch(f"an unmutated message of {A.dtype} {A.shape} came back different")


_lazy = _fuzzlib.LazyHarness(Harness)
#: One fuzz input (see the module docstring).
TestOneInput = _lazy.run
#: Close the sockets of the module-level harness (for in-process replays).
close = _lazy.close


def random_loop(seconds: float, seed: int) -> int:
    """Without atheris: random inputs for ``seconds``; returns how many ran."""
    rng = random.Random(seed)
    deadline = time.monotonic() + seconds
    runs = 0
    while time.monotonic() < deadline:
        TestOneInput(rng.randbytes(rng.randrange(4, 64)))
        runs += 1
    return runs


def main() -> None:
    if "--seconds" in sys.argv:
        parser = argparse.ArgumentParser(description="fuzz compressed payloads, no atheris")
        parser.add_argument("--seconds", type=float, required=True)
        parser.add_argument("--seed", type=int, default=0)
        args = parser.parse_args()
        runs = random_loop(args.seconds, args.seed)
        close()
        print(f"fuzz_compressed: {runs} inputs, engine random")
        return
    if atheris is None:
        sys.exit("atheris is not installed: pip install atheris, or pass --seconds N")
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
