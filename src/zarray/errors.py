"""Exception classes of zarray.

Every class also derives from the builtin that matches it, so callers may catch
either ``zarray.HeaderError`` or plain ``ValueError``.
"""

from __future__ import annotations

__all__ = [
    "HeaderError",
    "OutMismatchError",
    "PoolFullError",
    "UnsupportedArrayError",
    "ZarrayError",
]


class ZarrayError(Exception):
    """Base class of every error zarray raises on its own account."""


class HeaderError(ValueError, ZarrayError):
    """A header or message that zarray cannot accept.

    Raised for a malformed, truncated, foreign or future header, for a header whose
    geometry does not fit its payload, and for a message with the wrong number of
    frames. When raised by a receive function, the rest of the offending message
    has already been drained, so the socket is at the next message boundary.
    """


class OutMismatchError(HeaderError):
    """``recv_array(out=buf)``: the message's dtype or shape differs from ``buf``'s.

    The message has been drained, so the next receive gets the next message.
    """


class UnsupportedArrayError(TypeError, ZarrayError):
    """An array, or a message (container, names, meta), that zarray will not send.

    Examples: object dtypes, StringDType, masked arrays, non-str names.

    Raised before any frame of the message has been sent.
    """


class PoolFullError(MemoryError, ZarrayError):
    """A :class:`zarray.SharedPool` had no room for an array within the time allowed.

    Raised by ``SharedPool.empty``/``zeros``/``asarray``; sends through a full pool
    raise ``zmq.Again`` instead, as ZeroMQ does at its high-water mark.
    """
