from typing import Any

MAGIC: bytes
VERSION: int
MAX_NDIM: int
MAX_DESCR: int
FIXED_SIZE: int
DESCR_TYPESTR: int
DESCR_STRUCT: int
CODEC_NONE: int
CODEC_LZ4: int
CODEC_ZSTD: int
MAX_CODEC: int
FILTER_NONE: int
FILTER_SHUFFLE: int
MAX_FILTER: int
KIND_INLINE: int
KIND_SHM: int
MAX_KIND: int

def pack(
    descr: bytes,
    structured: bool,
    itemsize: int,
    shape: tuple[int, ...],
    strides: tuple[int, ...],
    offset: int,
    nbytes: int,
    readonly: bool,
    codec: int = 0,
    filter: int = 0,
    kind: int = 0,
) -> bytes: ...
def set_encoding(header: bytes, codec: int, filter: int, kind: int) -> bytes: ...
def unpack(
    buf: Any,
) -> tuple[bytes, bool, int, tuple[int, ...], tuple[int, ...], int, int, bool, int, int, int]: ...
