"""Compressed payloads: the codec registry, the sending policy and safe decoding.

Work in progress: the codec stage is being built (issue 11). Until it lands, a
compressed payload is refused with a HeaderError after the message was drained, and
asking to compress raises a clear error.
"""

from __future__ import annotations

from typing import Any

from zarray.errors import HeaderError

__all__ = ["Compression", "compression", "decode", "decode_into"]


class Compression:
    """A sender's compression policy (see :func:`compression`)."""

    def encode(self, header: bytes, payload: Any, socket: Any) -> tuple[bytes, Any] | None:
        raise NotImplementedError


def compression(spec: Any) -> Compression:
    """The policy for a ``compress=`` argument."""
    raise ValueError(f"compress={spec!r}: compression is not available in this zarray yet")


def decode(fields: tuple[Any, ...], frame: Any) -> Any:
    """The decompressed bytes of a compressed payload frame."""
    raise HeaderError(f"codec id {fields[8]}: this zarray cannot decompress payloads yet")


def decode_into(buf: Any, fields: tuple[Any, ...], frame: Any) -> None:
    """Decompress a payload frame straight into ``buf``."""
    decode(fields, frame)
