"""Coverage-guided, structure-aware fuzzing of every receive path of zarray.

Each input (format in ``_fuzzlib``) is a multipart message and a plan: which receive
path, ``copy``, zero-copy sending, the kind of ``out`` array, and how many empty frames
go before the message. The paths are ``recv_array`` (plain, ``envelope=True``,
``out=``), ``recv_arrays`` (plain, ``envelope=True``), ``deserialize`` (on frames from
``recv_multipart``) and ``zarray.asyncio``'s ``recv_array`` (plain, ``out=``) and
``recv_arrays``. The message goes over a real ZeroMQ PAIR pair over inproc, then:

* only zarray's own errors may come out, and a ``HeaderError`` may not be the safety
  net's wrapping of a foreign exception (``zarray._message.refused``): that would be
  a check that missed its input;
* the outcome must be the oracle's (``_fuzzlib.expect``: the spec and the
  **pure-Python codec**): the same acceptance and error class, and for an accepted
  message the same dtype, shape, strides, bytes and writeable flag as the pure-Python
  path builds, aligned; so with the compiled extension loaded, the compiled and the
  pure-Python codec are compared on every input;
* **the allocation guard** (``_guard``): the receive may allocate at most 4 x the
  message's bytes plus a constant that zarray's limits allow, whether or not the
  memory is touched, and what stays allocated from input to input is bounded;
* the socket must be at a message boundary: a sentinel sent next arrives intact, with
  nothing else waiting (and a receive refused before it began, as for an ``out`` that
  zarray cannot fill, left the whole message in place).

``custom_mutator`` makes libFuzzer structure-aware: besides its byte mutations it
rewrites header fields with edge values, record descriptors, message headers and meta,
envelopes, frame counts and plans, or replaces the message by a fresh one from the
generators' registry (``_generators``).

Run: ``python fuzz/fuzz_recv.py [libFuzzer options] [corpus dirs]`` (see fuzz/run.py).
With ``ZARRAY_PUREPYTHON=1`` zarray itself runs the pure-Python codec (the oracle's).
Built with ``fuzz/build_sanitized.py``, the compiled extensions are instrumented too.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

try:
    import atheris
except ImportError:  # the harness function still works, e.g. for regression replays
    atheris = None

if __name__ == "__main__" and atheris is not None:
    with atheris.instrument_imports(include=["zarray"]):
        import _fuzzlib
        import _generators

        import zarray
        import zarray.asyncio
        from zarray import _dtypes
else:
    import _fuzzlib
    import _generators

    import zarray
    import zarray.asyncio
    from zarray import _dtypes

import numpy as np
import zmq
from _guard import AllocationGuard

try:
    from numpy.lib.array_utils import byte_bounds
except ImportError:  # numpy < 2
    from numpy import byte_bounds  # type: ignore[attr-defined,no-redef]

from _fuzzlib import Mismatch

#: Hang guard for a receive: the message was sent before, so it is there at once.
RECV_GUARD_MS = 5000


class Harness:
    """PAIR sockets over inproc, sync and asyncio, that live as long as the harness."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.actx = zarray.asyncio.Context()
        # A blocking context on the same libzmq context, so inproc reaches both.
        self.ctx: zmq.Context[Any] = zmq.Context.shadow(self.actx.underlying)
        self.tx = self.ctx.socket(zmq.PAIR)
        self.rx = self.ctx.socket(zmq.PAIR)
        self.atx = self.ctx.socket(zmq.PAIR)
        self.arx = self.actx.socket(zmq.PAIR)
        for sock in (self.tx, self.rx, self.atx, self.arx):
            sock.linger = 0
            sock.rcvtimeo = RECV_GUARD_MS
            sock.sndtimeo = RECV_GUARD_MS
        # A blocking twin of the asyncio receiver, to look at it outside the loop.
        self.arx_sync: zmq.Socket[Any] = zmq.Socket.shadow(self.arx.underlying)
        self.rx.bind("inproc://fuzz-recv")
        self.tx.connect("inproc://fuzz-recv")
        self.arx.bind("inproc://fuzz-recv-async")
        self.atx.connect("inproc://fuzz-recv-async")
        self.guard = AllocationGuard()
        self.inputs = 0

    def close(self) -> None:
        for sock in (self.tx, self.rx, self.atx, self.arx_sync):
            sock.close(linger=0)
        # Inside the loop: pyzmq's asyncio socket unregisters itself from the running
        # loop (outside one it would make, and leak, a loop of its own).
        self.loop.run_until_complete(_aclose(self.arx))
        self.loop.close()
        self.actx.term()
        self.guard.close()

    # -- one input ------------------------------------------------------------------

    def run(self, data: bytes) -> None:
        """Receive the message that ``data`` describes on its path; check everything."""
        self.run_input(_fuzzlib.decode_input(data))

    def run_input(self, inp: _fuzzlib.RecvInput) -> None:
        self.inputs += 1
        frames = [b""] * inp.pad + _fuzzlib.mutate(inp.op, inp.frames)
        asynchronous = inp.path.startswith("asyncio-")
        tx = self.atx if asynchronous else self.tx
        out = _fuzzlib.out_for(inp, frames) if inp.path.endswith("-out") else None
        cached = set(_dtypes.decode_cache)
        tx.send_multipart(frames, copy=not inp.zero_copy)
        size = sum(map(len, frames))
        try:
            with self.guard.measure(size, f"{inp.path} of {_brief(frames)}"):
                got: Any = self._receive(inp, out)
        except zarray.ZarrayError as exc:
            _no_foreign_cause(exc, frames)
            got = exc
        except zmq.Again:
            raise Mismatch(f"the message was sent but never received: {_brief(frames)}") from None
        try:
            want: Any = _fuzzlib.expect(inp, frames, cached)
        except _fuzzlib.Refused as refusal:
            if not isinstance(got, Exception) or type(got) is not refusal.cls:
                raise Mismatch(
                    f"{inp.path} gave {_brief(got)}; the pure-Python path refuses with "
                    f"{refusal.cls.__name__} ({refusal}) for {_brief(frames)}"
                ) from None
            if refusal.cls is zarray.UnsupportedArrayError:
                self._check_untouched(inp, frames)
        else:
            if isinstance(got, Exception):
                raise Mismatch(
                    f"{inp.path} raised {got!r}; the pure-Python path accepts {_brief(frames)}"
                ) from None
            self._compare(inp, got, want, out, frames)
        del got
        self._check_boundary(inp, frames)
        self.guard.check_held(f"{self.inputs} inputs")

    def _receive(self, inp: _fuzzlib.RecvInput, out: Any) -> Any:
        path, copy, rx = inp.path, inp.copy, self.rx
        if path == "recv_array":
            return zarray.recv_array(rx, copy=copy)
        if path == "recv_array-envelope":
            return zarray.recv_array(rx, copy=copy, envelope=True)
        if path == "recv_array-out":
            return zarray.recv_array(rx, out=out)
        if path == "recv_arrays":
            return zarray.recv_arrays(rx, copy=copy)
        if path == "recv_arrays-envelope":
            return zarray.recv_arrays(rx, copy=copy, envelope=True)
        if path == "deserialize":
            frames = rx.recv_multipart(copy=False)
            return zarray.deserialize(frames, copy=copy)
        arx = self.arx
        if path == "asyncio-recv_array":
            coro: Any = arx.recv_array(copy=copy)
        elif path == "asyncio-recv_arrays":
            coro = arx.recv_arrays(copy=copy)
        else:
            coro = arx.recv_array(out=out)
        return self.loop.run_until_complete(coro)

    # -- checks ---------------------------------------------------------------------

    def _compare(
        self, inp: _fuzzlib.RecvInput, got: Any, want: Any, out: Any, frames: list[bytes]
    ) -> None:
        what = f"{inp.path} of {_brief(frames)}"
        if inp.path.endswith("-out"):
            if got is not out:
                raise Mismatch(f"{what}: did not return out itself")
            _fuzzlib.compare_arrays(got, want, what)
            return
        if inp.path in ("recv_array-envelope", "recv_arrays-envelope"):
            if got[0] != want[0]:
                raise Mismatch(f"{what}: envelope {got[0]!r}, expected {want[0]!r}")
            got, want = got[1], want[1]
        if inp.path in ("recv_arrays", "recv_arrays-envelope", "asyncio-recv_arrays"):
            (arrays, meta), (want_arrays, want_meta) = got, want
            if type(arrays) is not type(want_arrays) or len(arrays) != len(want_arrays):
                raise Mismatch(f"{what}: arrays {type(arrays)} x {len(arrays)}")
            if isinstance(arrays, dict):
                if list(arrays) != list(want_arrays):
                    raise Mismatch(f"{what}: names {list(arrays)}, expected {list(want_arrays)}")
                pairs = [(arrays[k], want_arrays[k]) for k in arrays]
            else:
                pairs = list(zip(arrays, want_arrays, strict=True))
            if meta != want_meta and repr(meta) != repr(want_meta):
                raise Mismatch(f"{what}: meta {_brief(meta)}, expected {_brief(want_meta)}")
            for A, B in pairs:
                _fuzzlib.compare_arrays(A, B, what)
                _check_bounds(A, what, inp.copy)
            return
        _fuzzlib.compare_arrays(got, want, what)
        _check_bounds(got, what, inp.copy)

    async def _async_recv(self) -> Any:
        return await self.arx.recv_array()

    def _check_untouched(self, inp: _fuzzlib.RecvInput, frames: list[bytes]) -> None:
        """A receive refused before it began consumed nothing: the message is whole."""
        sock = self.arx_sync if inp.path.startswith("asyncio-") else self.rx
        left = sock.recv_multipart()
        if left != frames:
            raise Mismatch(f"{inp.path} refused before receiving, yet consumed part of it")

    def _check_boundary(self, inp: _fuzzlib.RecvInput, frames: list[bytes]) -> None:
        if inp.path.startswith("asyncio-"):
            self.atx.send_multipart(_fuzzlib.SENTINEL_FRAMES)
            S = self.loop.run_until_complete(self._async_recv())
            pending = self.arx_sync.poll(0)
        else:
            self.tx.send_multipart(_fuzzlib.SENTINEL_FRAMES)
            S = zarray.recv_array(self.rx)
            pending = self.rx.poll(0)
        if not (S.dtype == _fuzzlib.SENTINEL.dtype and np.array_equal(S, _fuzzlib.SENTINEL)):
            raise Mismatch(f"socket not at a message boundary after {_brief(frames)}: got {S!r}")
        if pending:
            raise Mismatch(f"frames left over after the sentinel, input {_brief(frames)}")


async def _aclose(sock: Any) -> None:
    sock.close(linger=0)


def _no_foreign_cause(exc: BaseException, frames: list[bytes]) -> None:
    """The safety net turned a foreign exception into HeaderError: a check was missing."""
    cause = exc.__cause__
    if cause is not None and not isinstance(cause, zarray.ZarrayError):
        raise Mismatch(
            f"a {type(cause).__name__} ({cause}) escaped zarray's checks and was caught only "
            f"by the receive's safety net, for {_brief(frames)}"
        ) from cause


def _check_bounds(A: Any, what: str, copy: bool) -> None:
    """A view of a frame lies inside it; ``copy=True`` never returns a frame view."""
    base = A.base
    if A.size and base is not None and not isinstance(base, np.ndarray):
        frame = np.frombuffer(base, np.uint8)
        start = frame.__array_interface__["data"][0]
        lo, hi = byte_bounds(A)
        if lo < start or hi > start + frame.size:
            raise Mismatch(f"{what}: array bytes [{lo}, {hi}) outside the frame")
    if copy and base is not None and not isinstance(base, np.ndarray):
        raise Mismatch(f"{what}: copy=True returned a view of the frame")


def _brief(x: Any, limit: int = 400) -> str:
    text = (
        repr(x)
        if not isinstance(x, list) or len(x) <= 8
        else (f"[{len(x)} frames: " + ", ".join(repr(f[:48]) for f in x[-6:]) + "]")
    )
    return text if len(text) <= limit else text[:limit] + "..."


# -- the structure-aware mutator ------------------------------------------------------------


def mutate_input(inp: _fuzzlib.RecvInput, rng: random.Random, byte_mutate: Any) -> None:
    """Change one thing of an input, in place, knowing what its frames are."""
    src = _generators.RandomSource(rng)
    frames = inp.frames
    choice = rng.random()
    if choice < 0.12:
        inp.frames = _generators.gen_frames(src)
    elif choice < 0.40:
        _mutate_header_field(frames, rng, src)
    elif choice < 0.55:
        _mutate_descriptor(frames, rng, src)
    elif choice < 0.62:
        i = rng.randrange(len(frames) + 1)
        frames[i:i] = _generators.BODIES[rng.choice(sorted(_generators.BODIES))](src)
    elif choice < 0.70:
        frames[0:0] = _generators.gen_envelope(src) or [b""]
    elif choice < 0.80:
        inp.path = rng.choice(_fuzzlib.PATHS)
        inp.op = rng.randrange(256)
        if rng.random() < 0.1:
            inp.pad = _fuzzlib.pad_count(rng.randrange(240, 256))
    else:
        i = rng.randrange(len(frames))
        frames[i] = bytes(byte_mutate(frames[i], len(frames[i]) + 16))
    inp.frames = inp.frames[: _fuzzlib.MAX_FRAMES_IN_INPUT] or [b""]


def _mutate_header_field(frames: list[bytes], rng: random.Random, src: Any) -> None:
    heads = [i for i, f in enumerate(frames) if f[:4] in (_fuzzlib.MAGIC, b"\x93ZAM")]
    if not heads:
        frames.insert(0, _generators.single_body(src)[0])
        return
    i = rng.choice(heads)
    if frames[i][:4] == b"\x93ZAM":
        raw = bytearray(frames[i].ljust(16, b"\0"))
        pos = rng.choice((4, 5, 6, 8, 12))
        width = 4 if pos >= 8 else 1
        raw[pos : pos + width] = (_generators.edge_int(src) % 2 ** (8 * width)).to_bytes(
            width, "little"
        )
        frames[i] = bytes(raw)
        return
    h = _generators.RawHeader.parse(frames[i])
    if h is None:
        return
    name = rng.choice((*_generators.HEADER_FIELDS, "shape", "strides", "descr"))
    if name in ("shape", "strides"):
        dims = getattr(h, name)
        if dims:
            dims[rng.randrange(len(dims))] = _generators.edge_int(src, signed=True)
        else:
            h.ndim = rng.choice((1, 2, 64))
    elif name == "reserved":
        h.reserved = (rng.randrange(256), 0, 0, 0) if rng.random() < 0.7 else (0, 1, 0, 0)
    elif name == "descr":
        h.descr, h.structured = _generators.gen_descriptor(src)
        h.dlen = None
    elif name in ("version", "flags", "codec", "kind", "ndim", "dkind"):
        setattr(h, name, rng.choice((0, 1, 2, 64, 65, 255, rng.randrange(256))))
    else:
        setattr(h, name, _generators.edge_int(src))
    frames[i] = h.pack()


def _mutate_descriptor(frames: list[bytes], rng: random.Random, src: Any) -> None:
    heads = [i for i, f in enumerate(frames) if f[:4] == _fuzzlib.MAGIC]
    if not heads:
        return
    i = rng.choice(heads)
    h = _generators.RawHeader.parse(frames[i])
    if h is None:
        return
    h.descr, h.structured = _generators.gen_descriptor(src)
    size = _generators.descriptor_itemsize(h.descr, h.structured)
    if size is not None and rng.random() < 0.8:
        h.itemsize = size
    h.dlen = None
    frames[i] = h.pack()


def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
    """libFuzzer's custom mutator: structure-aware changes, or libFuzzer's own on a frame."""
    rng = random.Random(seed)
    inp = _fuzzlib.decode_input(data)
    mutate_input(inp, rng, _byte_mutate)
    out = inp.encode()
    return out[:max_size]


def _flip(data: bytes, max_size: int) -> bytes:
    buf = bytearray(data or b"\0")
    buf[random.randrange(len(buf))] ^= 1 << random.randrange(8)
    return bytes(buf[:max_size])


#: libFuzzer's own byte mutation once atheris runs (``atheris.Mutate``), else a bit flip.
_byte_mutate: Any = _flip


_lazy = _fuzzlib.LazyHarness(Harness)
#: One fuzz input (see the module docstring).
TestOneInput = _lazy.run
#: Close the sockets of the module-level harness (for in-process replays).
close = _lazy.close


def main() -> None:
    if atheris is None:
        sys.exit(
            "atheris is not installed: pip install atheris (or use fuzz/run.py, which "
            "falls back to a plain mutational loop)"
        )
    global _byte_mutate
    # Looked up at each call: atheris binds the real Mutate only once Fuzz() runs.
    _byte_mutate = lambda data, max_size: atheris.Mutate(data, max_size)  # noqa: E731
    structure = os.environ.get("ZARRAY_FUZZ_STRUCTURE", "1") != "0"
    atheris.Setup(sys.argv, TestOneInput, custom_mutator=custom_mutator if structure else None)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
