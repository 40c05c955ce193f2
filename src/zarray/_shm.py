"""Shared-memory payloads (work in progress, issue 10)."""

from __future__ import annotations

from typing import Any

from zarray.errors import HeaderError

__all__ = ["SharedPool", "open_reference"]


class SharedPool:
    """A pool of shared memory arrays are loaned from (being built)."""

    def encode(self, A: Any, socket: Any, flags: int) -> Any:
        raise NotImplementedError


def open_reference(fields: tuple[Any, ...], frame: Any) -> Any:
    """The bytes a shared-memory reference frame stands for."""
    raise HeaderError("this zarray cannot open shared-memory payloads yet")
