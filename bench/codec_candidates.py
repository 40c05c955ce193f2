"""The codec libraries considered for zarray's ``compress`` extra, on the link benchmark's
data, in one process: ratio and compress / decompress GB/s on one core, decoding into a
preallocated array the way a receiver must (a library that only returns new bytes pays
the copy into the array too).

    python bench/codec_candidates.py            # every candidate that is installed

Candidates: cramjam (lz4 block and zstd, ``*_into`` a preallocated buffer), python-lz4
(``lz4.block``) and python-zstandard, numcodecs (``LZ4``, ``Zstd`` with ``decode(out=)``,
``Blosc``) and python-blosc2. Every codec but Blosc's gets the same input: the frame
byte-shuffled (numpy), in 256 KiB blocks, as zarray sends it; Blosc shuffles itself.
Missing libraries are skipped. The figures are the median of 5 runs.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from zarray._bench import netlink

BLOCK = 1 << 18


def _shuffled(A: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    s = A.dtype.itemsize
    return np.ascontiguousarray(A.reshape(-1).view(np.uint8).reshape(-1, s).T).reshape(-1)


def _rate(nbytes: int, fn: Callable[[], Any]) -> float:
    fn()
    t0 = time.perf_counter()
    fn()
    n = max(1, int(0.2 / max(time.perf_counter() - t0, 1e-6)))
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - t0) / n)
    return nbytes / statistics.median(runs) / 1e9


def blockwise(
    compress: Callable[[Any], bytes], decompress: Callable[[bytes, Any], None]
) -> Callable[[np.ndarray[Any, Any]], tuple[float, float, float]]:
    """A candidate that works block by block on the shuffled bytes."""

    def run(A: np.ndarray[Any, Any]) -> tuple[float, float, float]:
        data = _shuffled(A)
        blocks = [bytes(compress(data[i : i + BLOCK])) for i in range(0, data.size, BLOCK)]
        out = np.empty(data.size, np.uint8)

        def decode() -> None:
            for k, b in enumerate(blocks):
                decompress(b, out[k * BLOCK : (k + 1) * BLOCK])

        decode()
        assert out.tobytes() == data.tobytes()

        def encode() -> None:
            for i in range(0, data.size, BLOCK):
                compress(data[i : i + BLOCK])

        size = sum(len(b) for b in blocks)
        return A.nbytes / size, _rate(A.nbytes, encode), _rate(A.nbytes, decode)

    return run


def candidates() -> dict[str, Callable[[np.ndarray[Any, Any]], tuple[float, float, float]]]:
    found: dict[str, Callable[[np.ndarray[Any, Any]], tuple[float, float, float]]] = {}
    try:
        import cramjam

        def cj_lz4_d(b: bytes, out: Any) -> None:
            cramjam.lz4.decompress_block_into(b, out)

        def cj_zstd_d(b: bytes, out: Any) -> None:
            cramjam.zstd.decompress_into(b, out)

        found["cramjam lz4 (into)"] = blockwise(
            lambda d: cramjam.lz4.compress_block(d, store_size=False), cj_lz4_d
        )
        found["cramjam zstd 1 (into)"] = blockwise(
            lambda d: cramjam.zstd.compress(d, level=1), cj_zstd_d
        )
    except ImportError:
        pass
    try:
        import lz4.block

        def lz4_d(b: bytes, out: Any) -> None:
            out[:] = np.frombuffer(lz4.block.decompress(b, uncompressed_size=out.size), np.uint8)

        found["python-lz4 block (+copy)"] = blockwise(
            lambda d: lz4.block.compress(d, store_size=False), lz4_d
        )
    except ImportError:
        pass
    try:
        import zstandard

        zc, zd = zstandard.ZstdCompressor(level=1), zstandard.ZstdDecompressor()

        def zstd_d(b: bytes, out: Any) -> None:
            out[:] = np.frombuffer(zd.decompress(b), np.uint8)

        found["zstandard 1 (+copy)"] = blockwise(zc.compress, zstd_d)
    except ImportError:
        pass
    try:
        import numcodecs

        for name, codec in (("LZ4", numcodecs.LZ4()), ("Zstd 1", numcodecs.Zstd(level=1))):

            def nc_d(b: bytes, out: Any, codec: Any = codec) -> None:
                codec.decode(b, out=out)

            found[f"numcodecs {name} (out=)"] = blockwise(codec.encode, nc_d)

        def blosc(A: np.ndarray[Any, Any]) -> tuple[float, float, float]:
            codec = numcodecs.Blosc("lz4", 5, numcodecs.Blosc.SHUFFLE, blocksize=BLOCK)
            c = codec.encode(A)
            out = np.empty_like(A)
            codec.decode(c, out=out)
            assert np.array_equal(out, A)
            return (
                A.nbytes / len(c),
                _rate(A.nbytes, lambda: codec.encode(A)),
                _rate(A.nbytes, lambda: codec.decode(c, out=out)),
            )

        numcodecs.blosc.set_nthreads(1)
        found["numcodecs Blosc lz4+shuffle, 1 thread"] = blosc
    except ImportError:
        pass
    try:
        import blosc2

        blosc2.set_nthreads(1)
        for name, codec, filt, level in (
            ("lz4+shuffle", blosc2.Codec.LZ4, blosc2.Filter.SHUFFLE, 5),
            ("zstd 1+shuffle", blosc2.Codec.ZSTD, blosc2.Filter.SHUFFLE, 1),
            ("lz4+bitshuffle", blosc2.Codec.LZ4, blosc2.Filter.BITSHUFFLE, 5),
        ):

            def b2(
                A: np.ndarray[Any, Any], codec: Any = codec, filt: Any = filt, level: int = level
            ) -> tuple[float, float, float]:
                kw = {
                    "codec": codec,
                    "clevel": level,
                    "filters": [filt],
                    "typesize": A.dtype.itemsize,
                    "blocksize": BLOCK,
                    "nthreads": 1,
                }
                c = blosc2.compress2(A, **kw)
                out = np.empty_like(A)
                blosc2.decompress2(c, dst=out)
                assert np.array_equal(out, A)
                return (
                    A.nbytes / len(c),
                    _rate(A.nbytes, lambda: blosc2.compress2(A, **kw)),
                    _rate(A.nbytes, lambda: blosc2.decompress2(c, dst=out)),
                )

            found[f"blosc2 {name}, 1 thread"] = b2
    except ImportError:
        pass
    return found


def main() -> None:
    found = candidates()
    print(f"{'candidate':40} {'data':9} {'ratio':>6} {'comp GB/s':>10} {'decomp GB/s':>12}")
    for kind in netlink.KINDS:
        A = netlink.make_frame(kind, 0)
        for name, run in found.items():
            ratio, c, d = run(A)
            print(f"{name:40} {kind:9} {ratio:6.2f} {c:10.2f} {d:12.2f}")


if __name__ == "__main__":
    main()
