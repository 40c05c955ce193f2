"""What one received message may make zarray spend or keep: limits with defaults.

Module-level defaults in the manner of msgpack's ``max_*_len`` parameters. Every
receive (and every send, which refuses what a receiver with the same limits would
refuse) reads them when it runs, so a program that needs more raises them once::

    import zarray

    zarray.limits.max_frames = 100_000  # on both sides of the socket

The limits that the wire format itself fixes (64 dimensions, 32 levels of record
nesting, 65,535-byte dtype descriptors, 64 KiB JSON-recipe headers) are in
docs/FORMAT.md; these are the ones a user may raise. docs/SECURITY.md lists them all,
with what each one bounds.
"""

from __future__ import annotations

__all__ = [
    "max_decompressed_bytes",
    "max_descriptor_bytes",
    "max_dtype_cache_bytes",
    "max_dtype_cache_entries",
    "max_frames",
    "max_meta_bytes",
]

#: Frames in one message, envelope included. A longer message is drained frame by frame
#: (keeping none of them) and refused with ``HeaderError``; ``send_arrays`` refuses to
#: send one. Each frame zarray holds costs about 200 bytes of Python objects whatever
#: its length, so this bounds that cost to about 1 MiB. It allows ``send_arrays`` of
#: 2,047 arrays with an envelope of one frame.
max_frames: int = 4096

#: Bytes of the JSON document in the message header of a ``send_arrays`` message (the
#: array names and the meta dict). Python's json turns JSON into up to about 30 times
#: its size in objects, so this bounds the meta's cost to under 2 MiB. Larger documents
#: are refused on receipt (``HeaderError``) and on sending (``UnsupportedArrayError``).
max_meta_bytes: int = 65536

#: Bytes of record descriptors that one message may make zarray decode, counting each
#: distinct descriptor once and none that the dtype cache already holds. A decoded
#: record dtype takes up to about 25 times its descriptor's bytes, and every received
#: array keeps its own, so this bounds what the record dtypes of one ``send_arrays``
#: message cost to about 3 MiB (a single array's descriptor is at most 65,535 bytes
#: anyway). ``send_arrays`` refuses a message whose distinct record dtypes exceed it.
max_descriptor_bytes: int = 131072

#: Descriptor bytes held by the cache of decoded dtypes, which would otherwise let a
#: peer cycling large record descriptors pin memory: a decoded record dtype costs up to
#: about 25 times its descriptor's length (docs/SECURITY.md), so this bounds the cache
#: to about 6 MiB. A descriptor longer than this is decoded for its message only.
max_dtype_cache_bytes: int = 262144

#: Entries in the cache of decoded dtypes (the cache is emptied when either bound is met).
max_dtype_cache_entries: int = 1024

#: Bytes of one decompressed payload (the header's ``nbytes`` of a compressed message):
#: the largest array a compressed message may make zarray allocate. Checked against the
#: header before any allocation, so a 100-byte message claiming 64 GiB of zeros is
#: refused with ``HeaderError`` (drained) and costs nothing. Receiving into ``out=`` with
#: a C-ordered payload allocates nothing and is not bound by it.
max_decompressed_bytes: int = 1 << 30
