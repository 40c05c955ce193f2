"""Coverage-guided fuzzing of ``zarray.recv_array`` with mutated multipart messages.

Each input decodes (see ``_fuzzlib``) to a list of frames, starting from valid zarray
messages in the seed corpus, which libFuzzer flips, truncates and splices and the op
byte duplicates, drops, swaps or replaces. The frames go over a real ZeroMQ PAIR
socket pair (inproc, copied or zero-copy) and are received with ``recv_array``
(view or ``copy=True``). Then:

* only ``zarray.ZarrayError`` subclasses may come out; anything else is a crash;
* the outcome must match the reference built from the spec and the pure-Python codec
  (same acceptance; for an accepted message the same dtype, shape, strides, bytes,
  and writeable flag), and an accepted array must be aligned and lie inside its frame;
* the socket must be at a message boundary: a sentinel message sent next must come
  through intact, with nothing else waiting.

Run: ``python fuzz/fuzz_recv.py [libFuzzer options] [corpus dirs]`` (see fuzz/run.py).
Coverage is Python-level (zarray's Python modules); the compiled extensions are not
instrumented.
"""

from __future__ import annotations

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
    with atheris.instrument_imports(include=["zarray", "_fuzzlib"]):
        import _fuzzlib

        import zarray
else:
    import _fuzzlib

    import zarray

import numpy as np
import zmq

try:
    from numpy.lib.array_utils import byte_bounds
except ImportError:  # numpy < 2
    from numpy import byte_bounds  # type: ignore[attr-defined,no-redef]

#: Hang guard for a receive: the message was sent before, so it is there at once.
RECV_GUARD_MS = 5000
#: Arrays whose elements cover at most this many bytes are compared in full.
FULL_COMPARE = 1 << 20


class Mismatch(AssertionError):
    """recv_array did something the reference or the contract does not allow."""


class Harness:
    """A PAIR socket pair over inproc that lives as long as the harness."""

    def __init__(self) -> None:
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.tx = self.ctx.socket(zmq.PAIR)
        self.rx = self.ctx.socket(zmq.PAIR)
        for sock in (self.tx, self.rx):
            sock.linger = 0
            sock.rcvtimeo = RECV_GUARD_MS
            sock.sndtimeo = RECV_GUARD_MS
        self.rx.bind("inproc://fuzz-recv")
        self.tx.connect("inproc://fuzz-recv")
        self.inputs = 0

    def close(self) -> None:
        self.tx.close(linger=0)
        self.rx.close(linger=0)
        self.ctx.term()

    def run(self, data: bytes) -> None:
        """Send the message that ``data`` describes, receive it, check everything."""
        self.inputs += 1
        op, frames = _fuzzlib.decode_message(data)
        frames = _fuzzlib.mutate(op, frames)
        copy = bool(op & _fuzzlib.OP_RECV_COPY)
        expected = _fuzzlib.reference(frames)
        self.tx.send_multipart(frames, copy=not op & _fuzzlib.OP_ZERO_COPY)
        try:
            A = zarray.recv_array(self.rx, copy=copy)
        except zarray.ZarrayError as exc:
            refused = isinstance(exc, zarray.HeaderError) and _realign_refused(expected)
            if (expected[0] == "ok" and not refused) or not isinstance(exc, zarray.HeaderError):
                raise Mismatch(
                    f"recv_array raised {exc!r}; expected {expected[:6]} for {frames!r}"
                ) from None
            A = None
        except zmq.Again:
            raise Mismatch(f"the message was sent but never received: {frames!r}") from None
        if A is not None:
            _check_array(A, expected, frames, copy)
            del A
        self._check_boundary(frames)

    def _check_boundary(self, frames: list[bytes]) -> None:
        self.tx.send_multipart(_fuzzlib.SENTINEL_FRAMES)
        S = zarray.recv_array(self.rx)
        if not (S.dtype == _fuzzlib.SENTINEL.dtype and np.array_equal(S, _fuzzlib.SENTINEL)):
            raise Mismatch(f"socket not at a message boundary after {frames!r}: got {S!r}")
        if self.rx.poll(0):
            raise Mismatch(f"frames left over after the sentinel, input {frames!r}")


def _realign_refused(expected: _fuzzlib.Outcome) -> bool:
    """The documented refusal: a layout misaligned for its dtype whose distinct
    elements would take more than twice the payload (+64 bytes) to realign."""
    if expected[0] != "ok":
        return False
    _, dt, shape, strides, offset, _readonly, payload = expected
    align = dt.alignment
    odd = offset % align or any(s % align for s, n in zip(strides, shape, strict=True) if n > 1)
    distinct = math.prod(n for n, s in zip(shape, strides, strict=True) if s != 0)
    return bool(odd) and distinct * dt.itemsize > 2 * len(payload) + 64


def _check_array(A: Any, expected: _fuzzlib.Outcome, frames: list[bytes], copy: bool) -> None:
    if type(A) is not np.ndarray:
        raise Mismatch(f"recv_array returned {type(A)!r}")
    if expected[0] == "json":
        _check_recipe(A, expected[1], frames)
        return
    if expected[0] != "ok":
        raise Mismatch(f"recv_array accepted {frames!r}, the reference says {expected}")
    _, dt, shape, strides, offset, readonly, payload = expected
    if A.dtype != dt or A.dtype.str != dt.str or A.dtype.fields != dt.fields:
        raise Mismatch(f"dtype {A.dtype!r}, expected {dt!r}, for {frames!r}")
    if A.dtype.isalignedstruct != dt.isalignedstruct:
        raise Mismatch(f"aligned flag of {A.dtype!r} lost, for {frames!r}")
    align = dt.alignment
    odd = bool(
        offset % align or any(s % align for s, n in zip(strides, shape, strict=True) if n > 1)
    )
    # A layout misaligned for its dtype is documented to arrive as a compact aligned
    # copy (new strides, same elements); every other layout keeps its strides.
    if A.shape != shape or (A.strides != strides and not odd):
        raise Mismatch(f"geometry {A.shape}/{A.strides}, expected {shape}/{strides}")
    if A.flags.writeable == readonly:
        raise Mismatch(f"writeable={A.flags.writeable} but the header says readonly={readonly}")
    if A.size and not A.flags.aligned:
        raise Mismatch(f"misaligned array returned for {frames!r}")
    ref = np.ndarray(shape, dt, payload, offset, strides)
    if dt.itemsize and A.size:
        # Compare whole items as raw bytes: copying a structured dtype skips the bytes
        # that no field covers, so A.tobytes() would not show them.
        items = np.dtype((np.void, dt.itemsize))
        got, want = A.view(items), ref.view(items)
        if A.size * dt.itemsize <= FULL_COMPARE:
            if got.tobytes() != want.tobytes():
                raise Mismatch(f"content differs from the payload for {frames!r}")
        else:
            last = tuple(n - 1 for n in shape)
            for idx in ((0,) * A.ndim, last):
                if got[idx] != want[idx]:
                    raise Mismatch(f"element {idx} differs from the payload for {frames!r}")
    _check_bounds(A, frames, copy)


def _check_recipe(A: np.ndarray[Any, Any], payload: bytes, frames: list[bytes]) -> None:
    """A JSON-recipe message: C-contiguous data, exactly the payload's bytes."""
    if A.dtype.fields is not None or A.dtype.hasobject:
        raise Mismatch(f"JSON recipe gave dtype {A.dtype!r} for {frames!r}")
    if A.nbytes != len(payload) or not A.flags.c_contiguous:
        raise Mismatch(f"JSON recipe array {A.shape} {A.dtype} does not cover its payload")
    if A.size and not A.flags.aligned:
        raise Mismatch(f"misaligned array returned for {frames!r}")
    if A.nbytes <= FULL_COMPARE and A.tobytes() != payload:
        raise Mismatch(f"JSON recipe content differs from the payload for {frames!r}")


def _check_bounds(A: np.ndarray[Any, Any], frames: list[bytes], copy: bool) -> None:
    """A view of a frame lies inside it; ``copy=True`` never returns a frame view."""
    base = A.base
    if A.size and base is not None and not isinstance(base, np.ndarray):
        # A view of the frame: all of its elements must lie inside the frame.
        frame = np.frombuffer(base, np.uint8)
        start = frame.__array_interface__["data"][0]
        lo, hi = byte_bounds(A)
        if lo < start or hi > start + frame.size:
            raise Mismatch(f"array bytes [{lo}, {hi}) outside the frame for {frames!r}")
    if copy and base is not None and not isinstance(base, np.ndarray):
        raise Mismatch("copy=True returned a view of the frame")


_harness: Harness | None = None


def TestOneInput(data: bytes) -> None:
    """One fuzz input (see the module docstring)."""
    global _harness
    if _harness is None:
        _harness = Harness()
    _harness.run(data)


def close() -> None:
    """Close the sockets of the module-level harness (for in-process replays)."""
    global _harness
    if _harness is not None:
        _harness.close()
        _harness = None


def main() -> None:
    if atheris is None:
        sys.exit(
            "atheris is not installed: pip install atheris (or use fuzz/run.py, which "
            "falls back to a plain mutational loop)"
        )
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
