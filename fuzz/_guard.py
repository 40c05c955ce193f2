"""The allocation guard of every fuzz harness.

A header can make a receiver *allocate* memory it never touches: ``numpy.empty`` of a
terabyte reserves address space and fills pages only when they are written, so RSS
(what libFuzzer's ``-rss_limit_mb`` watches) never shows it. The guard therefore
counts allocations, not pages: Python's ``tracemalloc`` sees every allocation of the
Python allocator and every data buffer numpy allocates (numpy reports them to it),
touched or not.

Each receive runs under :meth:`AllocationGuard.measure`, given the bytes of the message
that arrived. If the peak of what was allocated during it exceeds

    4 x message bytes + constant

it raises :class:`AllocationExceeded`, which the harness lets through: a crash. The
constant is what zarray's limits (``zarray.limits``) let one message cost whatever its
size, derived from their current values (so a harness that lowers them gets a
tighter guard):

    32 x (the largest JSON zarray parses: max(max_meta_bytes, 64 KiB recipe))
  + 32 x (record descriptor bytes one message may decode: max(max_descriptor_bytes, 65,535))
  + 512 x max_frames (a zmq.Frame object and its array per frame)
  + 1 MiB (numpy's and pyzmq's incidental objects)

32 is the measured worst case of Python's json (about 30 objects' bytes per JSON
byte) and of numpy's record dtypes (about 24), rounded up. Everything else a receive
may allocate is proportional to the payload: at most one aligned copy of it
(``copy=True``, a misaligned frame, a realigned layout of at most twice the payload).

tracemalloc is started once, for the life of the harness, and left on: it slows the
fuzzer several times over, but starting and stopping it around each receive leaks
(CPython 3.11 keeps ~60-900 bytes per start/stop cycle once anything was traced, and
a harness ran out of memory after 1.4 million inputs that way). What stays allocated
from input to input is watched separately (:meth:`check_held`): the dtype cache must
stay within its limits, and libFuzzer's ``-rss_limit_mb`` catches any other growth.

The instrumented build (``fuzz/build_sanitized.py``) adds a second, C-level guard:
libFuzzer's ``-malloc_limit_mb``, which sees every malloc of the process, libzmq's
included, because AddressSanitizer's allocator reports them to libFuzzer.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager

import zarray

MiB = 1 << 20
#: The largest pyzmq JSON-recipe header zarray parses (zarray._json_recipe.MAX_RECIPE).
RECIPE_BYTES = 65536
#: The largest dtype descriptor of one header (docs/FORMAT.md).
DESCRIPTOR_BYTES = 65535


class AllocationExceeded(AssertionError):
    """A receive allocated more than the bytes that arrived justify: a crash."""


def constant() -> int:
    """The fixed part of the bound, from zarray's current limits (see the module doc)."""
    lim = zarray.limits
    json_bytes = max(lim.max_meta_bytes, RECIPE_BYTES)
    descriptor_bytes = max(lim.max_descriptor_bytes, DESCRIPTOR_BYTES)
    return 32 * json_bytes + 32 * descriptor_bytes + 512 * lim.max_frames + MiB


def bound(message_bytes: int, decoded_bytes: int = 0) -> int:
    """The most a receive of a message of ``message_bytes`` bytes may allocate.

    ``decoded_bytes`` is what a compressed payload may add: the size it declares, when
    that is within ``zarray.limits.max_decompressed_bytes`` (else 0: it must be refused
    before anything is allocated), plus one block and 64 bytes of alignment.
    """
    return 4 * message_bytes + decoded_bytes + constant()


class AllocationGuard:
    """Measures allocations during receives; raises AllocationExceeded past the bound."""

    def __init__(self) -> None:
        self.started = not tracemalloc.is_tracing()
        if self.started:
            tracemalloc.start()
        self.worst_ratio = 0.0
        self.measured = 0

    def close(self) -> None:
        """Stop tracemalloc if this guard started it (in-process replays, the tests)."""
        if self.started and tracemalloc.is_tracing():
            tracemalloc.stop()
        self.started = False

    @contextmanager
    def measure(self, message_bytes: int, what: str, decoded_bytes: int = 0) -> Iterator[None]:
        """Raise AllocationExceeded if the body allocates more than :func:`bound` allows."""
        if not tracemalloc.is_tracing():  # someone else stopped it (a test, say)
            tracemalloc.start()
            self.started = True
        start = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        yield
        peak = tracemalloc.get_traced_memory()[1] - start
        limit = bound(message_bytes, decoded_bytes)
        self.measured += 1
        self.worst_ratio = max(self.worst_ratio, peak / limit)
        if peak > limit:
            raise AllocationExceeded(
                f"{what} allocated {peak:,} bytes for a message of {message_bytes:,} bytes "
                f"(bound: 4 x {message_bytes:,} + {decoded_bytes:,} decoded + "
                f"{constant():,} = {limit:,})"
            )

    def check_held(self, what: str) -> None:
        """Raise AllocationExceeded if the dtype cache holds more than its limits allow."""
        from zarray import _dtypes

        lim = zarray.limits
        held = sum(map(len, _dtypes.decode_cache))
        if (
            held > lim.max_dtype_cache_bytes
            or len(_dtypes.decode_cache) > lim.max_dtype_cache_entries
        ):
            raise AllocationExceeded(
                f"the decoded-dtype cache holds {len(_dtypes.decode_cache)} descriptors of "
                f"{held:,} bytes after {what}, past zarray.limits"
            )
