from typing import Any

MAGIC: bytes
VERSION: int
MAX_NDIM: int
MAX_DESCR: int
FIXED_SIZE: int
DESCR_TYPESTR: int
DESCR_STRUCT: int

def pack(
    descr: bytes,
    structured: bool,
    itemsize: int,
    shape: tuple[int, ...],
    strides: tuple[int, ...],
    offset: int,
    nbytes: int,
    readonly: bool,
) -> bytes: ...
def unpack(
    buf: Any,
) -> tuple[bytes, bool, int, tuple[int, ...], tuple[int, ...], int, int, bool]: ...
