"""The fuzzers' structure-aware generators as hypothesis strategies, run on the harnesses.

``fuzz/_generators.py`` draws every decision from a source; here the source is the
bytes hypothesis draws (``decisions``), so each generator becomes a strategy whose
examples hypothesis shrinks by shrinking those bytes: record descriptors, header
fields, JSON recipes, multi-array headers and meta, envelopes and frame counts for
every receive path, and hostile arguments for every send path. (One draw per example:
drawing each decision from hypothesis costs it a copy of the random module's state.)
Each example goes through the harness checks (oracle, pure-Python codec, allocation
guard, message boundary, no half message). The default run draws a bounded number of
examples; ``--runslow`` draws many more.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ._support import REPO

FUZZ = REPO / "fuzz"
if str(FUZZ) not in sys.path:
    sys.path.insert(0, str(FUZZ))

import _fuzzlib  # noqa: E402
import _generators  # noqa: E402

SLOW = os.environ.get("ZARRAY_RUNSLOW", "") == "1" or "--runslow" in sys.argv
EXAMPLES = 5000 if SLOW else 300


def decisions(min_size: int = 16) -> st.SearchStrategy[_generators.BytesSource]:
    """A strategy of decision sources for the generators."""
    return st.binary(min_size=min_size, max_size=4096).map(_generators.BytesSource)


def _harness(name: str) -> ModuleType:
    return importlib.import_module(f"fuzz_{name}")


@pytest.fixture(scope="module")
def recv_harness() -> Iterator[Any]:
    harness = _harness("recv").Harness()
    try:
        yield harness
    finally:
        harness.close()


@pytest.fixture(scope="module")
def send_harness() -> Iterator[Any]:
    harness = _harness("send").Harness()
    try:
        yield harness
    finally:
        harness.close()


@pytest.fixture(scope="module", autouse=True)
def _stop_header_guard() -> Iterator[None]:
    """fuzz_header's module-level guard starts tracemalloc; stop it afterwards."""
    yield
    _harness("header").close()


FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)


@FUZZ_SETTINGS
@given(src=decisions(), path=st.sampled_from(_fuzzlib.PATHS), op=st.integers(0, 255))
def test_every_receive_path_matches_the_oracle(
    src: _generators.BytesSource, path: str, op: int, recv_harness: Any
) -> None:
    """A generated message on a receive path: the pure-Python oracle's outcome, within
    the allocation guard, and the socket left at a message boundary."""
    frames = _generators.gen_frames(src)
    recv_harness.run_input(_fuzzlib.RecvInput(path, op, 0, frames))


@FUZZ_SETTINGS
@given(src=decisions())
def test_headers_agree_in_both_codecs(src: _generators.BytesSource) -> None:
    """A generated header (every field, every descriptor kind): both codecs give the
    same fields or the same error, re-encode canonically, within the guard."""
    header, _ = _generators.gen_array_header(src)
    _harness("header").TestOneInput(header.pack())


@FUZZ_SETTINGS
@given(src=decisions())
def test_send_paths_never_half_send(src: _generators.BytesSource, send_harness: Any) -> None:
    """Hostile arguments to a send path: a sender's error and nothing sent, or a
    message every receiver accepts with the array as it was; never a half message."""
    send_harness.run_source(src)


def test_generators_reach_every_registered_kind() -> None:
    """The generators draw every body, codec id, payload kind and filter id that is
    registered, and unregistered ids too (as hostile values)."""
    seen: dict[str, set[Any]] = {"codec": set(), "kind": set(), "filter": set(), "body": set()}
    for seed in range(3000):
        src = _generators.RandomSource(seed)
        h, _ = _generators.gen_array_header(src)
        seen["codec"].add(h.codec)
        seen["kind"].add(h.kind)
        seen["filter"].add(h.reserved[0])
        seen["body"].add(src.choice(sorted(_generators.BODIES)))
    assert set(_generators.CODECS) <= seen["codec"]
    assert set(_generators.PAYLOAD_KINDS) <= seen["kind"]
    assert set(_generators.FILTERS) <= seen["filter"]
    assert seen["body"] == set(_generators.BODIES)
    for table, key in (("codec", "codec"), ("kind", "kind"), ("filter", "filter")):
        assert seen[key] - {0}, f"no unregistered {table} id was ever drawn"


def test_registering_a_codec_is_one_function() -> None:
    """How a new header codec id reaches the fuzzers: one registered function, drawn
    by the header generator and applied to the payload."""
    calls: list[int] = []

    @_generators.codec(77)
    def reverse(src: Any, raw: bytes) -> bytes:
        calls.append(len(raw))
        return raw[::-1]

    try:
        codecs = {
            _generators.gen_array_header(_generators.RandomSource(s))[0].codec for s in range(400)
        }
        assert 77 in codecs
        assert calls, "the registered codec never encoded a payload"
    finally:
        del _generators.CODECS[77]
