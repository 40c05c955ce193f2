"""The public surface: __all__, __version__, the error hierarchy, docstrings, and the
choice of codec (ZARRAY_PUREPYTHON=1 selects the pure-Python twin)."""

from __future__ import annotations

import importlib.metadata
import inspect
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import zarray
import zarray._codec

CORE = {
    "send_array",
    "recv_array",
    "pack_header",
    "unpack_header",
    "Header",
    "ZarrayError",
    "HeaderError",
    "UnsupportedArrayError",
    "__version__",
}
FUNCTIONS = [
    "send_array",
    "recv_array",
    "pack_header",
    "unpack_header",
    "frombuffer",
    "serialize",
    "deserialize",
]
TESTS = Path(__file__).parent


def test_all_lists_the_core_api() -> None:
    assert CORE <= set(zarray.__all__)
    assert len(zarray.__all__) == len(set(zarray.__all__))
    for name in zarray.__all__:
        assert hasattr(zarray, name), name
        assert not name.startswith("_") or name == "__version__"


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from zarray import *", namespace)
    assert {k for k in namespace if k != "__builtins__"} == set(zarray.__all__)


def test_version() -> None:
    assert isinstance(zarray.__version__, str)
    assert zarray.__version__
    assert zarray.__version__ == importlib.metadata.version("zarray")
    assert zarray.__version__[0].isdigit()


def test_error_hierarchy() -> None:
    assert issubclass(zarray.ZarrayError, Exception)
    assert issubclass(zarray.HeaderError, ValueError)
    assert issubclass(zarray.HeaderError, zarray.ZarrayError)
    assert issubclass(zarray.UnsupportedArrayError, TypeError)
    assert issubclass(zarray.UnsupportedArrayError, zarray.ZarrayError)
    assert not issubclass(zarray.HeaderError, TypeError)
    assert not issubclass(zarray.UnsupportedArrayError, ValueError)
    assert not issubclass(zarray.ZarrayError, (ValueError, TypeError))


def test_errors_are_raised_as_their_builtins() -> None:
    with pytest.raises(ValueError, match="bad magic"):
        zarray.unpack_header(b"nope")
    with pytest.raises(TypeError, match="object"):
        zarray.pack_header(np.array([None]))
    with pytest.raises(zarray.ZarrayError):
        zarray.unpack_header(b"")
    with pytest.raises(zarray.ZarrayError):
        zarray.pack_header(np.array([object()]))


def test_the_codecs_raise_zarrays_error_classes() -> None:
    from zarray import _header, _header_py

    for module in (_header, _header_py):
        with pytest.raises(zarray.HeaderError) as info:
            module.unpack(b"\x93ZAR")
        assert type(info.value) is zarray.HeaderError


@pytest.mark.parametrize("name", FUNCTIONS)
def test_public_functions_have_numpydoc_docstrings(name: str) -> None:
    doc = inspect.getdoc(getattr(zarray, name))
    assert doc, f"zarray.{name} has no docstring"
    for section in ("Parameters", "Returns", "Raises"):
        assert f"{section}\n---" in doc, f"zarray.{name} docstring lacks {section}"


@pytest.mark.parametrize("name", ["send_array", "recv_array", "frombuffer", "deserialize"])
def test_copy_contract_is_documented(name: str) -> None:
    doc = inspect.getdoc(getattr(zarray, name)) or ""
    assert "Notes\n---" in doc
    assert "copies" in doc or "copy" in doc


def test_classes_have_docstrings() -> None:
    for name in ["Header", "ZarrayError", "HeaderError", "UnsupportedArrayError"]:
        assert inspect.getdoc(getattr(zarray, name)), name
    assert inspect.getdoc(zarray)


def test_header_record_fields() -> None:
    h = zarray.unpack_header(zarray.pack_header(np.zeros((2, 3), ">i2")))
    assert {"dtype", "shape", "strides", "offset", "nbytes", "writeable"} <= set(h._fields)
    assert h.dtype == np.dtype(">i2")
    assert (h.shape, h.strides, h.offset, h.nbytes, h.writeable) == ((2, 3), (6, 2), 0, 12, True)


def test_signatures() -> None:
    send = inspect.signature(zarray.send_array).parameters
    assert list(send)[:5] == ["socket", "A", "flags", "copy", "track"]
    assert (send["flags"].default, send["copy"].default, send["track"].default) == (0, False, True)
    recv = inspect.signature(zarray.recv_array).parameters
    assert list(recv)[:3] == ["socket", "flags", "copy"]
    assert (recv["flags"].default, recv["copy"].default) == (0, False)


def test_compiled_codec_is_used_by_default() -> None:
    assert zarray._codec.IMPLEMENTATION in ("cython", "python")
    if os.environ.get("ZARRAY_PUREPYTHON", "") in ("", "0"):
        assert zarray._codec.IMPLEMENTATION == "cython", "the extension is not built"
        from zarray import _header

        assert zarray._codec.unpack is _header.unpack


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "ZARRAY_PUREPYTHON"}
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", textwrap.dedent(code)],
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(("value", "expected"), [("1", "python"), ("0", "cython"), ("", "cython")])
def test_purepython_environment_variable(value: str, expected: str) -> None:
    result = _python(
        """
        import zarray._codec as c, zarray._header_py as p
        print(c.IMPLEMENTATION, c.unpack is p.unpack, c.pack_array is None)
        """,
        ZARRAY_PUREPYTHON=value,
    )
    assert result.returncode == 0, result.stderr
    impl, is_pure, no_fastpath = result.stdout.split()
    assert impl == expected
    assert is_pure == no_fastpath == str(expected == "python")


def test_purepython_round_trips() -> None:
    """The pure-Python codec and general path carry the same arrays end to end."""
    result = _python(
        f"""
        import sys
        sys.path.insert(0, {str(TESTS)!r})
        import zmq, zarray, zarray._codec
        from common import DTYPES, LAYOUTS, REPRESENTATIVE_DTYPES, check_roundtrip
        assert zarray._codec.IMPLEMENTATION == "python"
        ctx = zmq.Context()
        s, r = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
        for sock in (s, r):
            sock.rcvtimeo = sock.sndtimeo = 10000
        r.bind("inproc://pure")
        s.connect("inproc://pure")
        n = 0
        for dtype in REPRESENTATIVE_DTYPES + ["<m8[10ms]", ">U3", "rec-non-ascii"]:
            for layout in LAYOUTS:
                A = LAYOUTS[layout](DTYPES[dtype])
                for copy in (False, True):
                    check_roundtrip(A, s, r, copy=copy)
                    n += 1
        s.close(linger=0)
        r.close(linger=0)
        ctx.term()
        print(n)
        """,
        ZARRAY_PUREPYTHON="1",
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) > 400


@pytest.mark.slow
def test_core_suite_under_purepython() -> None:
    """The socket-level suites again, with the pure-Python codec selected at import."""
    files = ["test_roundtrip.py", "test_bad_input.py", "test_zerocopy.py", "test_codec.py"]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider"]
        + [str(TESTS / f) for f in files],
        env={**os.environ, "ZARRAY_PUREPYTHON": "1"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=TESTS.parent,
    )
    failed = [line for line in result.stdout.splitlines() if line.startswith("FAILED")]
    assert result.returncode == 0, "\n".join(failed) or result.stdout[-3000:] + result.stderr
