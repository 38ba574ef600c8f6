"""What an event is once accepted: the JSON the API publishes and the workers store."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

# A run of digits this long may be an integer that orjson cannot read exactly.
LONG_DIGITS = re.compile(rb"\d{19}")
# Flower shows this many event ids of a message's events, then counts the rest.
EVENT_IDS_SHOWN = 10


def canonical_json(value: Any) -> str:
    """One spelling per JSON value, so equal payloads hash equally."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def loads_json(text: bytes | str) -> Any:
    """The JSON value of `text`, read as the standard library reads it, only faster: orjson
    reads the same, but for integers past 64 bits, which it would turn into floats."""
    data = text.encode() if isinstance(text, str) else bytes(text)
    if LONG_DIGITS.search(data):
        return json.loads(data)
    return orjson.loads(data)


def compact_json(value: Any) -> str:
    """JSON text with no spaces, non-ASCII kept as is; fast for what the API accepts."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # an integer beyond 64 bits, which orjson refuses
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def events_repr(event_ids: Sequence[str]) -> str:
    """What Flower shows of a message's arguments: its event ids, never the payloads."""
    shown = ", ".join(event_ids[:EVENT_IDS_SHOWN])
    count = len(event_ids)
    more = f" and {count - EVENT_IDS_SHOWN} more" if count > EVENT_IDS_SHOWN else ""
    return f"[{count} events: {shown}{more}]"


def event_ids_of(events: Sequence[dict[str, Any]]) -> list[str]:
    return [event["event_id"] for event in events]


def payload_sha256(payload: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def utc_now() -> datetime:
    return datetime.now(UTC)


def parse_utc(value: str) -> datetime:
    """An ISO time from a message, as an aware UTC datetime."""
    return datetime.fromisoformat(value).astimezone(UTC)
