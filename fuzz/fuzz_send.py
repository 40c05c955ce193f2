"""Coverage-guided fuzzing of zarray's send paths with hostile arguments.

Each input's bytes are read as decisions (``_generators.BytesSource``) that build a
call: ``send_array``, ``send_arrays``, ``serialize`` + ``send_multipart``,
``zarray.Socket.send_array`` or ``zarray.asyncio``'s ``send_array`` and
``send_arrays``, with arrays of every dtype family and layout (broadcasts, sliding
windows over packed record fields, overlapping strides, read-only, empty, 0-d; and
masked arrays, matrices, lists), envelopes (contiguous buffers, non-contiguous views,
str, ints), flags (``NOBLOCK``, ``SNDMORE``, unknown bits), formats and meta dicts
(NaN, numpy scalars, non-str keys, over the size limit). Then:

* the call either raises a sender's error (``UnsupportedArrayError``, ``TypeError`` or
  ``ValueError``, never the codec's ``HeaderError`` nor anything else) and **sent
  nothing**: the sentinel message sent next is the very next message, intact, so no
  half message was ever sent; or it succeeds and
* the message it sent is accepted by ``recv_array``/``recv_arrays`` (the sender never
  produces what a receiver refuses), with the same envelope bytes, dtype, shape,
  element bytes and read-only bit, aligned; a read-only array is never received as a
  writeable view of its memory (``format="json"`` included); and the sentinel follows;
* **the allocation guard**: sending may allocate at most 4 x the bytes of the array's
  distinct elements (a broadcast is never materialised, except by ``format="json"``,
  which has no strides) plus the guard's constant, and receiving what was sent at
  most 4 x the message's bytes plus that constant.

Run: ``python fuzz/fuzz_send.py [libFuzzer options] [corpus dirs]`` (see fuzz/run.py).
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

try:
    import atheris
except ImportError:
    atheris = None

if __name__ == "__main__" and atheris is not None:
    with atheris.instrument_imports(include=["zarray"]):
        import _fuzzlib
        import _generators

        import zarray
        import zarray.asyncio
else:
    import _fuzzlib
    import _generators

    import zarray
    import zarray.asyncio

import numpy as np
import zmq
from _fuzzlib import Mismatch
from _guard import AllocationGuard

GUARD_MS = 5000
APIS = (
    "send_array",
    "send_arrays",
    "serialize",
    "Socket.send_array",
    "asyncio-send_array",
    "asyncio-send_arrays",
)
#: What a send may raise for bad arguments (a HeaderError, the receiver's error, may not).
SENDER_ERRORS = (zarray.UnsupportedArrayError, TypeError, ValueError)


class Harness:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.actx = zarray.asyncio.Context()
        self.ctx: zmq.Context[Any] = zmq.Context.shadow(self.actx.underlying)
        self.tx = zarray.Socket(self.ctx, zmq.PAIR)
        self.rx = self.ctx.socket(zmq.PAIR)
        self.atx = self.actx.socket(zmq.PAIR)
        self.arx = self.ctx.socket(zmq.PAIR)
        # A loop-back pair: what was sent is received raw, then fed to zarray here.
        self.ltx = self.ctx.socket(zmq.PAIR)
        self.lrx = self.ctx.socket(zmq.PAIR)
        for sock in (self.tx, self.rx, self.atx, self.arx, self.ltx, self.lrx):
            sock.linger = 0
            sock.rcvtimeo = GUARD_MS
            sock.sndtimeo = GUARD_MS
        for name, (a, b) in {
            "sync": (self.tx, self.rx),
            "async": (self.atx, self.arx),
            "loop": (self.ltx, self.lrx),
        }.items():
            b.bind(f"inproc://fuzz-send-{name}")
            a.connect(f"inproc://fuzz-send-{name}")
        # A blocking twin of the asyncio sender, for the sentinel (outside the loop).
        self.atx_sync: zmq.Socket[Any] = zmq.Socket.shadow(self.atx.underlying)
        self.guard = AllocationGuard()
        self.inputs = 0

    def close(self) -> None:
        for sock in (self.tx, self.rx, self.arx, self.ltx, self.lrx, self.atx_sync):
            sock.close(linger=0)
        # Inside the loop: pyzmq's asyncio socket unregisters itself from the running
        # loop (outside one it would make, and leak, a loop of its own).
        self.loop.run_until_complete(_aclose(self.atx))
        self.loop.close()
        self.actx.term()
        self.guard.close()

    def run(self, data: bytes) -> None:
        self.run_source(_generators.BytesSource(data))

    def run_source(self, src: Any) -> None:
        """Build a call from ``src``'s decisions, make it, check everything."""
        self.inputs += 1
        api = src.choice(APIS)
        multi = api in ("send_arrays", "asyncio-send_arrays")
        if multi:
            count = src.int(0, 4)
            values = [_generators.gen_send_array(src) for _ in range(count)]
            arrays: Any = values
            if src.bool(0.5):
                keys = [src.choice((f"a{i}", "x", 1, "", "é")) for i in range(count)]
                arrays = dict(zip(keys, values, strict=False))
            kwargs: dict[str, Any] = {"meta": _generators.gen_meta(src)}
        else:
            arrays = _generators.gen_send_array(src)
            kwargs = {}
            if src.bool(0.2):
                kwargs["format"] = src.choice(("json", "json", "bogus"))
        if api != "serialize":
            kwargs["flags"] = _generators.gen_send_flags(src)
            kwargs["copy"] = src.bool(0.3)
            kwargs["track"] = src.bool(0.7)
            envelope = _generators.gen_send_envelope(src)
            if envelope is not None:
                kwargs["envelope"] = envelope
        sock = self.arx if api.startswith("asyncio-") else self.rx
        limit = _send_bound(arrays, kwargs.get("format", "zarray"))
        try:
            with self.guard.measure(limit, f"{api} of {_brief(arrays)}"):
                result = self._call(api, arrays, kwargs)
        except SENDER_ERRORS as exc:
            if isinstance(exc, zarray.HeaderError):
                raise Mismatch(f"{api} raised the receiver's {exc!r} for {_brief(arrays)}") from exc
            self._check_nothing_sent(api, sock, exc)
            return
        except zmq.Again as exc:
            raise Mismatch(f"{api} raised zmq.Again on an idle socket ({kwargs})") from exc
        self._check_received(api, sock, arrays, kwargs, result)
        self._check_nothing_sent(api, sock, None)
        self.guard.check_held(f"{self.inputs} inputs")

    def _call(self, api: str, arrays: Any, kwargs: dict[str, Any]) -> Any:
        if api == "send_array":
            return zarray.send_array(self.tx, arrays, **kwargs)
        if api == "send_arrays":
            return zarray.send_arrays(self.tx, arrays, **kwargs)
        if api == "Socket.send_array":
            return self.tx.send_array(arrays, **kwargs)
        if api == "serialize":
            frames = zarray.serialize(arrays)
            self.tx.send_multipart(frames, copy=False)
            return frames
        coro = (
            self.atx.send_array(arrays, **kwargs)
            if api == "asyncio-send_array"
            else self.atx.send_arrays(arrays, **kwargs)
        )
        return self.loop.run_until_complete(coro)

    def _check_nothing_sent(self, api: str, sock: zmq.Socket[Any], exc: Any) -> None:
        """The next message on the socket is the sentinel, whole: nothing was half sent."""
        tx = self.atx_sync if sock is self.arx else self.tx
        tx.send_multipart(_fuzzlib.SENTINEL_FRAMES)
        frames = sock.recv_multipart()
        if frames != _fuzzlib.SENTINEL_FRAMES or sock.poll(0):
            why = f"after {exc!r}" if exc is not None else "after a successful send"
            raise Mismatch(f"{api}: the message after the sentinel is not whole {why}: {frames!r}")

    def _check_received(
        self, api: str, sock: zmq.Socket[Any], arrays: Any, kwargs: dict[str, Any], result: Any
    ) -> None:
        raw = sock.recv_multipart(copy=False)
        size = sum(len(f.buffer) for f in raw)
        self.ltx.send_multipart(raw, copy=False)
        multi = api in ("send_arrays", "asyncio-send_arrays")
        try:
            with self.guard.measure(size, f"receiving what {api} sent"):
                if multi:
                    env, (got, meta) = zarray.recv_arrays(self.lrx, envelope=True)
                else:
                    env, got = zarray.recv_array(self.lrx, envelope=True)
        except zarray.HeaderError as exc:
            raise Mismatch(
                f"{api} sent a message that zarray refuses: {exc} (arrays {_brief(arrays)}, "
                f"{_brief(kwargs)})"
            ) from exc
        want_env = [memoryview(f).tobytes(order="A") for f in kwargs.get("envelope") or []]
        if env != want_env:
            raise Mismatch(f"{api}: envelope {env!r}, sent {want_env!r}")
        fmt = kwargs.get("format", "zarray")
        if not multi:
            _compare(api, arrays, got, fmt)
            return
        values = list(arrays.values()) if isinstance(arrays, dict) else list(arrays)
        if isinstance(arrays, dict):
            if not isinstance(got, dict) or list(got) != list(arrays):
                raise Mismatch(f"{api}: names {list(got)}, sent {list(arrays)}")
            got = list(got.values())
        if len(got) != len(values):
            raise Mismatch(f"{api}: {len(got)} arrays, sent {len(values)}")
        for A, B in zip(values, got, strict=True):
            _compare(api, A, B, "zarray")
        sent_meta = kwargs.get("meta") or {}
        if meta != json.loads(json.dumps(sent_meta)):
            raise Mismatch(f"{api}: meta {_brief(meta)}, sent {_brief(sent_meta)}")


async def _aclose(sock: Any) -> None:
    sock.close(linger=0)


def _distinct_bytes(A: np.ndarray[Any, Any]) -> int:
    """Bytes of an array's distinct elements (an axis of stride 0 holds one)."""
    dims = zip(A.shape, A.strides, strict=True)
    return A.dtype.itemsize * math.prod(min(n, 1) if s == 0 else n for n, s in dims)


def _send_bound(arrays: Any, fmt: str) -> int:
    """The "message bytes" the send guard is given: what the arrays' data justify."""
    values = list(arrays.values()) if isinstance(arrays, dict) else arrays
    if not isinstance(values, list):
        values = [values]
    total = 0
    for A in values:
        if isinstance(A, np.ndarray) and not A.dtype.hasobject:
            # The JSON recipe has no strides: a broadcast is sent materialised.
            total += A.nbytes if fmt == "json" else min(A.nbytes, _distinct_bytes(A))
    return total


def _fields(A: np.ndarray[Any, Any]) -> list[bytes]:
    """Element bytes field by field (record padding excluded: numpy's copies drop it)."""
    if A.dtype.names is not None:
        flat = A.reshape(-1)
        return [b for name in A.dtype.names for b in _fields(flat[name])]
    return [_fuzzlib.item_bytes(np.ascontiguousarray(A))]


def _compare(api: str, A: Any, B: Any, fmt: str) -> None:
    what = f"{api} ({fmt}) of {_brief(A)}"
    if type(B) is not np.ndarray:
        raise Mismatch(f"{what}: received {type(B)!r}")
    if fmt == "json":
        if B.dtype != A.dtype:
            raise Mismatch(f"{what}: dtype {B.dtype!r}, sent {A.dtype!r}")
    elif not _fuzzlib.same_dtype(B.dtype, A.dtype):
        raise Mismatch(f"{what}: dtype {B.dtype!r}, sent {A.dtype!r}")
    if B.shape != A.shape:
        raise Mismatch(f"{what}: shape {B.shape}, sent {A.shape}")
    if B.size and not B.flags.aligned:
        raise Mismatch(f"{what}: misaligned array received")
    if fmt == "zarray" and B.flags.writeable != A.flags.writeable:
        raise Mismatch(f"{what}: writeable {B.flags.writeable}, sent {A.flags.writeable}")
    if B.flags.writeable and not A.flags.writeable and np.shares_memory(A, B):
        raise Mismatch(f"{what}: a writeable view of the sender's read-only memory")
    if A.size * A.dtype.itemsize <= _fuzzlib.FULL_COMPARE and _fields(A) != _fields(B):
        raise Mismatch(f"{what}: the received elements differ from the sent ones")


def _brief(x: Any, limit: int = 300) -> str:
    if isinstance(x, np.ndarray):
        text = f"ndarray({x.shape}, {x.dtype!r}, strides={x.strides}, w={x.flags.writeable})"
    else:
        try:
            text = repr(x)
        except Exception:
            text = f"<{type(x).__name__}>"
    return text if len(text) <= limit else text[:limit] + "..."


_lazy = _fuzzlib.LazyHarness(Harness)
#: One fuzz input (see the module docstring).
TestOneInput = _lazy.run
#: Close the sockets of the module-level harness (for in-process replays).
close = _lazy.close


def main() -> None:
    if atheris is None:
        sys.exit("atheris is not installed: pip install atheris (or use fuzz/run.py)")
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
