"""Standard JSON only, for the JSON that zarray's own headers carry.

Python's ``json`` module accepts more than RFC 8259: the tokens ``NaN``, ``Infinity``
and ``-Infinity``, and numbers such as ``1e999`` that it turns into ``inf``. The
message header's meta and the record descriptor are standard JSON (docs/FORMAT.md;
the sender encodes with ``allow_nan=False``), so the receiver refuses the rest.
pyzmq's JSON recipe, which other programs write with ``allow_nan=True``, is read
with the ordinary parser.
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["loads"]


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not standard JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of the range of a double")
    return value


def loads(data: bytes) -> Any:
    """Parse UTF-8 standard JSON; raises ``ValueError`` (``UnicodeDecodeError`` and
    ``json.JSONDecodeError`` are subclasses) or ``RecursionError`` for anything else."""
    return json.loads(data.decode("utf-8"), parse_constant=_constant, parse_float=_finite)
