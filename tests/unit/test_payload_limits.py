"""The short cut of check_payload: a payload it passes on its compact JSON alone is one that
the walk of every value passes too, and near every limit the two agree."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest
from marshmallow import ValidationError

from ingest_api.schemas import (
    MAX_PAYLOAD_DEPTH,
    PLAIN_PAYLOAD_BYTES,
    check_payload,
    is_plainly_within_limits,
    walk_payload,
)

pytestmark = pytest.mark.unit


def nested(depth: int, leaf: Any = 1, kind: type = list) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value] if kind is list else {"k": value}
    return value


def verdict(check: Any, payload: dict[str, Any]) -> str | None:
    try:
        check(payload)
    except ValidationError as exc:
        return str(exc.messages)
    return None


def walked(payload: dict[str, Any]) -> None:
    try:
        compact: int | None = len(orjson.dumps(payload))
    except TypeError:
        compact = None
    walk_payload(payload, compact)


EDGES: list[dict[str, Any]] = [
    {"text": "x\x00"},
    {"x\x00": 1},
    {"deep": nested(MAX_PAYLOAD_DEPTH - 1)},
    {"deep": nested(MAX_PAYLOAD_DEPTH)},
    {"deep": nested(MAX_PAYLOAD_DEPTH - 1, kind=dict)},
    {"deep": nested(MAX_PAYLOAD_DEPTH, kind=dict)},
    {"brackets in text": "{[" * 40},
    {"escaped backslash": "\\u0000"},
    {"big": 2**63 - 1, "small": -(2**63)},
    {"past 64 bits": 2**64},
    {"tiny doubles": [5e-324] * 20},
    {"tiny doubles": [5e-324] * 20_000},
    {"k" * 65_535: 1},
    {"k" * 65_536: 1},
    {"long": "x" * PLAIN_PAYLOAD_BYTES},
]


@pytest.mark.parametrize("payload", EDGES, ids=lambda payload: repr(payload)[:40])
def test_the_short_cut_and_the_walk_agree_at_every_limit(payload: dict[str, Any]) -> None:
    assert verdict(check_payload, payload) == verdict(walked, payload)


def test_what_the_short_cut_passes_the_walk_passes() -> None:
    rng = random.Random(2026)
    leaves: list[Any] = [0, -1, 2**63 - 1, 1.5, 5e-324, 1e300, "", "é", "\x00", "{", True, None]
    passed = 0
    for _ in range(3_000):
        payload = {"v": random_value(rng, leaves, depth=rng.randint(1, MAX_PAYLOAD_DEPTH + 3))}
        text = orjson.dumps(payload)
        if is_plainly_within_limits(text):
            passed += 1
            assert verdict(walked, payload) is None, payload
        assert verdict(check_payload, payload) == verdict(walked, payload), payload
    assert passed > 100, "the random payloads should often take the short cut"


def random_value(rng: random.Random, leaves: list[Any], depth: int) -> Any:
    if depth == 0 or rng.random() < 0.3:
        return rng.choice(leaves)
    if rng.random() < 0.5:
        return [random_value(rng, leaves, depth - 1) for _ in range(rng.randint(1, 2))]
    return {f"k{n}": random_value(rng, leaves, depth - 1) for n in range(rng.randint(1, 2))}
