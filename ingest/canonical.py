"""The canonical forms every process shares: JSON text, read exactly and written compact, and
the time, always aware and in UTC."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import orjson

# Digits as zeros: a run of 19 may be an integer that orjson cannot read exactly.
DIGITS_AS_ZEROS = bytes.maketrans(b"123456789", b"000000000")
NINETEEN_DIGITS = b"0" * 19


def loads_json(text: bytes | str) -> Any:
    """The JSON value of `text`, read as the standard library reads it, only faster: orjson
    reads the same, but for integers past 64 bits, which it would turn into floats."""
    data = text.encode() if isinstance(text, str) else bytes(text)
    if may_hold_long_integers(data):
        return json.loads(data)
    return orjson.loads(data)


def may_hold_long_integers(data: bytes) -> bool:
    """Whether `data` has a run of 19 digits (a translation is far faster than a regex)."""
    return NINETEEN_DIGITS in data.translate(DIGITS_AS_ZEROS)


def compact_json(value: Any) -> str:
    """JSON text with no spaces, non-ASCII kept as is; fast for what the API accepts."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # an integer beyond 64 bits, which orjson refuses
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def utc_now() -> datetime:
    return datetime.now(UTC)
