"""Generate the seed corpus of the fuzz harnesses: valid zarray messages for every
dtype family and layout.

    python fuzz/make_corpus.py          # (re)write fuzz/corpus/header and fuzz/corpus/recv
    python fuzz/make_corpus.py --check  # exit 1 if the files on disk are stale

``corpus/header/NAME.bin`` is the header frame that ``zarray.send_array`` sends for an
array; ``corpus/recv/NAME.bin`` is the whole message (header and payload frames) in
``fuzz_recv``'s input format, received with ``recv_array`` unless the name says which
receive path (``path-*``), out kind or frame count. The frames are taken from a real
send over an inproc socket, so the seeds are exactly what zarray puts on the wire.
``corpus/send/*.bin`` are decision bytes for ``fuzz_send`` (any bytes make a call).
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _fuzzlib

import zarray

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"

_UNITS = ("Y", "M", "W", "D", "h", "m", "s", "ms", "us", "ns", "ps", "fs", "as")


def _simple_dtypes() -> Iterator[tuple[str, np.dtype[Any]]]:
    yield "bool", np.dtype("?")
    for code in ("i1", "u1", "S7", "V5"):
        yield code, np.dtype(code)
    for code in ("i2", "i4", "i8", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16", "U3"):
        for order in "<>":
            yield f"{code}{order}".replace("<", "le").replace(">", "be"), np.dtype(order + code)
    for code, name in ((np.longdouble, "longdouble"), (np.clongdouble, "clongdouble")):
        dt = np.dtype(code)
        yield f"{name}-le", dt.newbyteorder("<")
        yield f"{name}-be", dt.newbyteorder(">")
    for unit in _UNITS:
        yield f"M8-{unit}", np.dtype(f"<M8[{unit}]")
        yield f"m8-{unit}", np.dtype(f">m8[{unit}]")
    yield "M8-generic", np.dtype("<M8")
    yield "M8-25s", np.dtype("<M8[25s]")


def _structured_dtypes() -> Iterator[tuple[str, np.dtype[Any]]]:
    # The families of numpy's own .npy format tests.
    yield "rec-simple", np.dtype([("x", "<i4"), ("y", ">f8"), ("z", "u1")])
    yield "rec-nested", np.dtype([("a", [("b", "<i2"), ("c", [("d", "<f4"), ("e", "S3")])])])
    yield "rec-subarray", np.dtype([("m", "<f8", (2, 3)), ("n", "<i4", (4,))])
    yield "rec-aligned", np.dtype([("a", "u1"), ("b", "<f8"), ("c", "<i2")], align=True)
    yield (
        "rec-offsets",
        np.dtype(
            {"names": ["a", "b"], "formats": ["<i4", "<f8"], "offsets": [12, 0], "itemsize": 24}
        ),
    )
    yield (
        "rec-titles",
        np.dtype({"names": ["a", "b"], "formats": ["<i4", "<f4"], "titles": ["Alpha", None]}),
    )
    yield "rec-unicode-names", np.dtype([("température", "<f4"), ("日本", "<i2")])
    yield "rec-datetime", np.dtype([("t", "<M8[ns]"), ("dt", "<m8[s]")])
    yield "rec-empty", np.dtype({"names": [], "formats": [], "itemsize": 8})


def _arrays() -> Iterator[tuple[str, np.ndarray[Any, Any]]]:
    for name, dt in [*_simple_dtypes(), *_structured_dtypes()]:
        yield f"{name}-c", np.zeros((3, 4), dt)
    base = np.arange(60, dtype="<i4").reshape(3, 4, 5)
    yield "layout-fortran", np.asfortranarray(base)
    yield "layout-reversed", base[::-1]
    yield "layout-transposed", base.transpose(2, 0, 1)
    yield "layout-sliced", base[:, ::2]
    yield "layout-negative-stride", base[:, :, ::-1]
    yield "layout-broadcast", np.broadcast_to(np.arange(5, dtype="<f8"), (200, 5))
    yield "layout-0d", np.array(3.5)
    yield "layout-empty-0", np.zeros((0,), "<f8")
    yield "layout-empty-0x5", np.zeros((0, 5), "<i2")
    yield "layout-empty-3x0", np.zeros((3, 0), ">f4")
    yield "layout-ndim-64", np.zeros((1,) * 64, "u1")
    yield "layout-ndim-32-2", np.zeros((1,) * 30 + (2, 2), "<i8")
    readonly = np.arange(10, dtype="<u2")
    readonly.flags.writeable = False
    yield "layout-readonly", readonly
    yield "size-4k", np.arange(1024, dtype="<f4")


def generate() -> dict[str, bytes]:
    """``{relative path: bytes}`` of every corpus file."""
    ctx: zmq.Context[Any] = zmq.Context()
    tx = ctx.socket(zmq.PAIR)
    rx = ctx.socket(zmq.PAIR)
    rx.bind("inproc://corpus")
    tx.connect("inproc://corpus")
    files: dict[str, bytes] = {}
    try:
        for name, A in _arrays():
            zarray.send_array(tx, A, copy=True)
            frames = rx.recv_multipart()
            assert len(frames) == 2, name
            assert len(frames[1]) <= 0xFFFF, name
            files[f"header/{name}.bin"] = frames[0]
            files[f"recv/{name}.bin"] = _fuzzlib.encode_input("recv_array", 0, frames)
        # Bodies behind an envelope (a PUB topic; ROUTER identity and delimiter).
        frames = _fuzzlib.SENTINEL_FRAMES
        files["recv/envelope-topic.bin"] = _fuzzlib.encode_input(
            "recv_array-envelope", 0, [b"topic", *frames]
        )
        files["recv/envelope-router.bin"] = _fuzzlib.encode_input(
            "recv_array-envelope", 0, [b"\x00\x80\x00\x00\x29", b"", *frames]
        )
        # pyzmq's guide recipe: a JSON {dtype, shape} frame and the raw buffer.
        for name, A in (("f8", np.arange(6.0).reshape(2, 3)), ("u2", np.arange(5, dtype="<u2"))):
            tx.send_json({"dtype": str(A.dtype), "shape": A.shape}, zmq.SNDMORE)
            tx.send(A)
            files[f"recv/json-recipe-{name}.bin"] = _fuzzlib.encode_input(
                "recv_array", 0, rx.recv_multipart()
            )
        # Several arrays in one message (send_arrays), which recv_array must refuse.
        zarray.send_arrays(tx, [np.arange(3), np.ones((2, 2), "<f4")])
        multi = rx.recv_multipart()
        files["recv/multi-2.bin"] = _fuzzlib.encode_input("recv_array", 0, multi)
        zarray.send_arrays(
            tx, {"image": np.zeros((4, 5), "u1"), "t": np.array(0.5)}, meta={"frame": 7}
        )
        named = rx.recv_multipart()
        # Every receive path, on a message it accepts.
        frames = _fuzzlib.SENTINEL_FRAMES
        for path in _fuzzlib.PATHS:
            body = named if "recv_arrays" in path else frames
            for op, tag in ((0, ""), (_fuzzlib.OP_RECV_COPY, "-copy")):
                files[f"recv/path-{path}{tag}.bin"] = _fuzzlib.encode_input(path, op, body)
        for kind, name in enumerate(_fuzzlib.OUT_KINDS):
            op = kind << _fuzzlib.OP_OUT_SHIFT
            files[f"recv/out-{name}.bin"] = _fuzzlib.encode_input("recv_array-out", op, frames)
        # Frame counts around zarray.limits.max_frames.
        limit = zarray.limits.max_frames
        for pad in (limit - 2, limit - 1):
            files[f"recv/frames-max{pad - limit:+d}.bin"] = _fuzzlib.encode_input(
                "recv_array", 0, frames, pad=pad
            )
        # A few seeds that already carry structural mutations and receive modes.
        for op in range(1, 8):
            files[f"recv/op-{_fuzzlib.MUTATIONS[op]}.bin"] = _fuzzlib.encode_input(
                "recv_array", op, frames
            )
        files["recv/op-zero-copy.bin"] = _fuzzlib.encode_input(
            "recv_array", _fuzzlib.OP_ZERO_COPY, frames
        )
        # fuzz_send reads its input as decisions; any bytes make a call.
        for k in range(48):
            files[f"send/decisions-{k:02d}.bin"] = random.Random(k).randbytes(16 + 8 * k)
    finally:
        tx.close(linger=0)
        rx.close(linger=0)
        ctx.term()
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare with the files")
    args = parser.parse_args(argv)
    files = generate()
    on_disk = {str(p.relative_to(CORPUS)): p.read_bytes() for p in CORPUS.glob("*/*.bin")}
    if args.check:
        if on_disk != files:
            stale = sorted(set(on_disk) ^ set(files)) + sorted(
                k for k in set(on_disk) & set(files) if on_disk[k] != files[k]
            )
            print(f"fuzz corpus is stale ({len(stale)} files): run python fuzz/make_corpus.py")
            for name in stale[:20]:
                print("  ", name)
            return 1
        print(f"fuzz corpus up to date: {len(files)} files")
        return 0
    for name in set(on_disk) - set(files):
        (CORPUS / name).unlink()
    for name, data in files.items():
        path = CORPUS / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    print(f"wrote {len(files)} corpus files under {CORPUS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
