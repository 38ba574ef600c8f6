"""The direct check of plainly valid events (ingest_api.validation) and EventSchema accept and
refuse the same events, and load them alike."""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest
from marshmallow import ValidationError

from ingest_api.schemas import MAX_PAYLOAD_DEPTH, EventSchema
from ingest_api.validation import load_event, quick_load

VALID = {
    "event_id": "order-42:created",
    "event_type": "order.created",
    "occurred_at": "2026-11-27T10:00:00.250+01:00",
    "source": "shop",
    "payload": {"order_id": 42, "total": 12.5, "items": [{"sku": "A-1", "qty": 2}]},
}

# Values each field may take, good and bad, from the edges the schema draws.
CANDIDATES: dict[str, list[Any]] = {
    "event_id": ["a", "x" * 128, "x" * 129, "", "has space", "é", "a\n", 7, None, "a.b_c:d-e"],
    "event_type": ["t", "x" * 128, "x" * 129, "", "nul\x00", 1.5, None, ["t"], "order paid"],
    "occurred_at": [
        "2026-11-27T10:00:00Z",
        "2026-11-27t10:00:00z",
        "2026-11-27 10:00:00+00:00",
        "2026-11-27T10:00:00",
        "2026-11-27",
        "2026-02-30T10:00:00Z",
        "0999-12-31T23:59:59Z",
        "1000-01-01T00:00:00Z",
        "9999-12-31T23:59:59.999999Z",
        "9999-12-31T23:59:59-00:01",
        "2016-12-31T23:59:60Z",
        "2016-12-30T23:59:60Z",
        "2026-11-27T10:00:00.123456789+05:30",
        20261127,
        None,
    ],
    "source": ["s", None, "", "x" * 128, "x" * 129, "nul\x00", 3],
    "schema_version": [1, 2**31 - 1, 2**31, 0, -1, True, 1.0, "1", None],
    "payload": [
        {},
        {"a": None, "b": [True, False], "c": -0.0, "d": 1e300, "e": 2**63},
        {"nul": "a\x00b"},
        {"key\x00": 1},
        {"big": 10**400},
        {"k" * 65_536: 1},
        [],
        "text",
        None,
    ],
}


def nested(depth: int) -> dict[str, Any]:
    payload: dict[str, Any] = {}
    for _ in range(depth - 1):
        payload = {"a": payload}
    return payload


def schema_load(document: Any) -> dict[str, Any] | None:
    try:
        return EventSchema().load(copy.deepcopy(document))
    except ValidationError:
        return None


def documents() -> list[Any]:
    found: list[Any] = [VALID, [], "event", None, {**VALID, "extra": 1}]
    for name, values in CANDIDATES.items():
        found += [{**VALID, name: value} for value in values]
        found.append({key: value for key, value in VALID.items() if key != name})
    found += [
        {**VALID, "payload": nested(depth)} for depth in (MAX_PAYLOAD_DEPTH, MAX_PAYLOAD_DEPTH + 1)
    ]
    rng = random.Random(2026)
    for _ in range(2_000):  # several fields off at once
        found.append({name: rng.choice(values) for name, values in CANDIDATES.items()})
    return found


@pytest.mark.parametrize("document", documents())
def test_the_direct_check_accepts_what_the_schema_accepts_and_loads_it_alike(
    document: Any,
) -> None:
    expected = schema_load(document)
    quick = quick_load(copy.deepcopy(document))
    assert quick == expected
    if expected is not None:
        assert load_event(copy.deepcopy(document)) == expected


@pytest.mark.parametrize("flag", [True, False])
def test_schema_version_true_or_false_is_refused_by_name(flag: bool) -> None:
    document = {**VALID, "schema_version": flag}
    with pytest.raises(ValidationError) as refused:
        load_event(document)
    assert refused.value.messages == {"schema_version": ["Not a valid integer."]}
