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
    reads the same, but for integers past 64 bits, which it turns into floats. So the text is
    searched for such digits only when orjson cannot read it or found a float: most task
    messages hold none, and their events travel as one string (a search of it had cost the
    persist worker more than reading the message)."""
    data = text.encode() if isinstance(text, str) else bytes(text)
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        if may_hold_long_integers(data):
            return json.loads(data)
        raise
    if holds_float(value) and may_hold_long_integers(data):
        return json.loads(data)
    return value


def holds_float(value: Any) -> bool:
    """Whether a float is anywhere in `value`, a JSON value as orjson reads it."""
    pending = [value]
    while pending:
        item = pending.pop()
        if type(item) is float:
            return True
        if type(item) is list:
            pending.extend(item)
        elif type(item) is dict:
            pending.extend(item.values())
    return False


def may_hold_long_integers(data: bytes) -> bool:
    """Whether `data` has a run of 19 digits (a translation is far faster than a regex)."""
    return NINETEEN_DIGITS in data.translate(DIGITS_AS_ZEROS)


def compact_json(value: Any) -> str:
    """JSON text with no spaces, non-ASCII kept as is; fast for what the API accepts."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # an integer beyond 64 bits, which orjson refuses
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def compact_json_size(value: Any) -> int:
    """Bytes of `value` as compact JSON in UTF-8, without decoding them to text."""
    try:
        return len(orjson.dumps(value))
    except TypeError:
        return len(compact_json(value).encode())


def utc_now() -> datetime:
    return datetime.now(UTC)
