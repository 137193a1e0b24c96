"""JSON from the Internet, read with bounds: nesting, integer size, no NaN/Infinity.

json.loads recurses once per nesting level (`[` x 60,000 raised RecursionError) and accepts
integers of any size (a 30-digit id overflowed SQLite's 64-bit INTEGER): both became 500s. Every
problem here is a ValueError, which the edges answer with a 400.
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 32
# JavaScript's safe integers: every id and count the page sends fits, and SQLite's INTEGER holds it.
MAX_INT = 2**53 - 1


class BadJSON(ValueError):
    pass


def _int(text: str) -> int:
    if len(text) > 16 or abs(value := int(text)) > MAX_INT:
        msg = f"integer out of range: {text[:20]}"
        raise BadJSON(msg)
    return value


def _constant(name: str) -> Any:
    msg = f"{name} is not JSON"
    raise BadJSON(msg)


def _depth(text: str | bytes) -> int:
    """How deep brackets nest, counted without parsing (string contents included: an over-estimate
    that only ever refuses what WeChat's page would never send)."""
    raw = text.encode() if isinstance(text, str) else text
    depth = deepest = 0
    for byte in raw.translate(None, _NOT_BRACKETS):
        depth += 1 if byte in b"[{" else -1
        deepest = max(deepest, depth)
    return deepest


_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def loads(text: str | bytes) -> Any:
    """The JSON value of `text` (bytes must be UTF-8: json.loads would guess UTF-16 or -32 too)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")  # UnicodeDecodeError is a ValueError
    if _depth(text) > MAX_DEPTH:
        msg = f"JSON nested deeper than {MAX_DEPTH}"
        raise BadJSON(msg)
    try:
        return json.loads(text, parse_int=_int, parse_constant=_constant)
    except RecursionError:  # unreachable after the depth check; kept as the last line of defence
        raise BadJSON("JSON nested too deep") from None
