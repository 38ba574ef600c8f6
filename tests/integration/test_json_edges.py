"""The payloads both stores hold: each edge where PostgreSQL's jsonb and MySQL's JSON differ,
sent just inside (stored and projected, MySQL's text the same as PostgreSQL's) and just outside
(a 422 naming the limit)."""

from __future__ import annotations

import json
from typing import Any

from flask.testing import FlaskClient

from ingest.canonical import compact_json
from ingest.config import Settings
from ingest_api.schemas import (
    MAX_PAYLOAD_DEPTH,
    MAX_PAYLOAD_INTEGER,
    MAX_PAYLOAD_KEY_BYTES,
    MAX_STORED_PAYLOAD_BYTES,
)
from testlib.api import AUTH, event
from testlib.data import dead_letters, projected_ids, rows, scalar
from testlib.poison import refusals
from testlib.wait import wait_until

# PostgreSQL writes the smallest double out in full: "0.000...05", 326 characters.
SMALLEST_DOUBLE = 5e-324


def nested(levels: int, container: type[dict[str, Any]] | type[list[Any]]) -> dict[str, Any]:
    """A payload `levels` objects or arrays deep, counting the payload itself."""
    inner: Any = container()
    for _ in range(levels - 2):
        inner = {"level": inner} if container is dict else [inner]
    return {"level": inner}


def stored_bytes(settings: Settings, payload: dict[str, Any]) -> int:
    """Bytes of the payload as PostgreSQL writes it out, asked of PostgreSQL."""
    return scalar(
        settings.postgres_url,
        "SELECT octet_length(CAST(:payload AS jsonb)::text)",
        payload=compact_json(payload),
    )


def of_stored_size(settings: Settings, size: int) -> dict[str, Any]:
    """A payload of `size` bytes as PostgreSQL stores it, 50 times that as compact JSON:
    numbers that PostgreSQL writes out in full, and a string to make up the rest."""
    numbers = [SMALLEST_DOUBLE] * ((size - 30_000) // 328)
    rest = size - stored_bytes(settings, {"numbers": numbers, "text": ""})
    return {"numbers": numbers, "text": "a" * rest}


def edges(settings: Settings) -> dict[str, tuple[dict[str, Any], dict[str, Any], str]]:
    """Each edge: a payload just inside, one just outside, and what the 422 says."""
    key_inside = "é" * (MAX_PAYLOAD_KEY_BYTES // 2) + "a"  # 2 bytes each in UTF-8, and one
    return {
        "depth-objects": (
            nested(MAX_PAYLOAD_DEPTH, dict),
            nested(MAX_PAYLOAD_DEPTH + 1, dict),
            f"Nested deeper than {MAX_PAYLOAD_DEPTH} levels",
        ),
        "depth-arrays": (
            nested(MAX_PAYLOAD_DEPTH, list),
            nested(MAX_PAYLOAD_DEPTH + 1, list),
            f"Nested deeper than {MAX_PAYLOAD_DEPTH} levels",
        ),
        "integer": (
            {"largest": MAX_PAYLOAD_INTEGER},
            {"largest": MAX_PAYLOAD_INTEGER + 1},
            "within a double's range (at most 1.7976931348623157e+308",
        ),
        "negative-integer": (
            {"smallest": -MAX_PAYLOAD_INTEGER},
            {"smallest": -MAX_PAYLOAD_INTEGER - 1},
            "An integer of 309 digits is out of range",
        ),
        "key": (
            {key_inside: 1},
            {key_inside + "a": 1},
            f"A key is {MAX_PAYLOAD_KEY_BYTES + 1} bytes long, over the limit of "
            f"{MAX_PAYLOAD_KEY_BYTES} bytes",
        ),
        "stored-size": (
            of_stored_size(settings, MAX_STORED_PAYLOAD_BYTES),
            of_stored_size(settings, MAX_STORED_PAYLOAD_BYTES + 1),
            f"The payload is {MAX_STORED_PAYLOAD_BYTES + 1} bytes as PostgreSQL stores it "
            f"(every number written out in full, a space after each : and ,), over the limit "
            f"of {MAX_STORED_PAYLOAD_BYTES} bytes",
        ),
    }


def test_each_edge_inside_reaches_both_databases_unchanged_and_outside_is_a_422(
    pipeline: Settings, client: FlaskClient
) -> None:
    cases = edges(pipeline)
    batch, outside = [], {}
    for name, (inside_payload, outside_payload, error) in cases.items():
        batch.append(event(f"inside-{name}", payload=inside_payload))
        batch.append(event(f"outside-{name}", payload=outside_payload))
        outside[f"outside-{name}"] = error
    response = client.post("/v1/batch", json={"batch": batch}, headers=AUTH)
    assert response.status_code == 202, response.get_data(as_text=True)[:500]
    results = {result["event_id"]: result for result in response.json["results"]}
    for event_id, error in outside.items():
        assert results[event_id]["status"] == "rejected", event_id
        [message] = results[event_id]["errors"]["payload"]
        assert error in message, (event_id, message)
    inside = {f"inside-{name}" for name in cases}
    assert {event_id for event_id, result in results.items() if result["status"] == "accepted"} == (
        inside
    )

    wait_until(lambda: projected_ids(pipeline) == inside, timeout=60, what="the edges in MySQL")
    assert_mysql_holds_what_postgres_stored(pipeline)
    # PostgreSQL measures the stored-size edge as the API does: exactly at the limit.
    assert (
        scalar(
            pipeline.postgres_url,
            "SELECT octet_length(payload::text) FROM events WHERE event_id = 'inside-stored-size'",
        )
        == MAX_STORED_PAYLOAD_BYTES
    )
    assert refusals(pipeline) == {}
    assert dead_letters(pipeline) == []


def test_numbers_are_stored_as_postgresql_writes_them_and_the_hash_matches_mysql(
    pipeline: Settings, client: FlaskClient
) -> None:
    # How the client spells a number is not kept: PostgreSQL writes each out in full.
    body = (
        b'{"event_id": "numbers", "event_type": "t", "occurred_at": "2026-11-27T10:00:00Z", '
        b'"payload": {"big": 1e+20, "negative_zero": -0.0, "trailing": 1.50, '
        b'"exact": 123456789012345678901234567890, "tiny": 1e-7}}'
    )
    response = client.post(
        "/v1/events", data=body, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status_code == 202, response.get_data(as_text=True)
    wait_until(lambda: projected_ids(pipeline) == {"numbers"}, what="the event in MySQL")

    [stored] = rows(pipeline.postgres_url, "SELECT payload::text AS text FROM events")
    assert json.loads(stored["text"]) == {
        "big": 100000000000000000000,
        "negative_zero": 0.0,
        "trailing": 1.5,
        "exact": 123456789012345678901234567890,
        "tiny": 0.0000001,
    }
    assert '"big": 100000000000000000000' in stored["text"]
    assert '"tiny": 0.0000001' in stored["text"]
    assert_mysql_holds_what_postgres_stored(pipeline)


def assert_mysql_holds_what_postgres_stored(settings: Settings) -> None:
    """MySQL's payload is PostgreSQL's text, byte for byte, so payload_sha256 hashes both."""
    assert settings.mysql_url
    stored = {
        row["event_id"]: row
        for row in rows(
            settings.postgres_url,
            "SELECT event_id, payload::text AS text, payload_sha256 FROM events",
        )
    }
    projected = {
        row["event_id"]: row
        for row in rows(
            settings.mysql_url,
            "SELECT event_id, payload AS text, payload_sha256, SHA2(payload, 256) AS own_sha256 "
            "FROM events_projection",
        )
    }
    assert projected.keys() == stored.keys()
    for event_id, row in projected.items():
        assert row["text"] == stored[event_id]["text"], event_id
        assert row["payload_sha256"] == row["own_sha256"] == stored[event_id]["payload_sha256"]
