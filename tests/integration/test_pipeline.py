"""HTTP in, RabbitMQ, persist_event into PostgreSQL, project_to_mysql into MySQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from flask.testing import FlaskClient

from ingest.config import Settings
from testlib.api import AUTH, READ_AUTH, event
from testlib.data import dead_letters, projected_count, projected_ids, rows, scalar, stored_count
from testlib.poison import persist_as_sent, refusals
from testlib.wait import wait_until


def test_one_event_lands_in_both_databases_with_every_field(
    client: FlaskClient, pipeline: Settings
) -> None:
    sent = event("order-1", occurred_at="2026-11-27T10:00:00.250+01:00")
    before = datetime.now(UTC)

    response = client.post("/v1/events", json=sent, headers=AUTH)

    assert response.status_code == 202
    assert response.json == {"event_id": "order-1", "status": "accepted"}
    wait_until(lambda: projected_count(pipeline) == 1, what="the event in MySQL")
    [stored] = rows(pipeline.postgres_url, "SELECT * FROM events")
    assert stored["event_id"] == "order-1"
    assert stored["event_type"] == "order.created"
    assert stored["source"] == "shop"
    assert stored["payload"] == sent["payload"]
    assert stored["payload_sha256"] == scalar(
        pipeline.postgres_url,
        "SELECT encode(sha256(convert_to(payload::text, 'UTF8')), 'hex') FROM events",
    )
    assert stored["occurred_at"] == datetime(2026, 11, 27, 9, 0, 0, 250_000, tzinfo=UTC)
    assert before <= stored["received_at"] <= stored["stored_at"]
    [projected] = rows(pipeline.mysql_url or "", "SELECT * FROM events_projection")
    assert projected["event_id"] == "order-1"
    assert projected["event_type"] == "order.created"
    assert projected["source"] == "shop"
    assert json.loads(projected["payload"]) == sent["payload"]
    assert projected["payload_sha256"] == stored["payload_sha256"]
    # MySQL keeps naive UTC.
    assert projected["occurred_at"] == datetime(2026, 11, 27, 9, 0, 0, 250_000)
    assert projected["received_at"] == stored["received_at"].replace(tzinfo=None)
    assert projected["stored_at"] == stored["stored_at"].replace(tzinfo=None)

    status = client.get("/v1/events/order-1", headers=READ_AUTH)
    assert status.status_code == 200
    assert status.json["status"] == "projected"
    assert status.json["projection"] == "done"
    assert status.json["projected_at"] == projected["projected_at"].replace(tzinfo=UTC).isoformat()
    assert status.json["conflict"] is False


def test_a_batch_of_1000_lands_in_both_databases(client: FlaskClient, pipeline: Settings) -> None:
    batch = [event(f"b-{i}", payload={"n": i}, source=None) for i in range(1000)]

    response = client.post("/v1/batch", json={"batch": batch}, headers=AUTH)

    assert response.status_code == 202
    assert response.json["accepted"] == 1000
    assert response.json["rejected"] == 0
    assert [r["index"] for r in response.json["results"]] == list(range(1000))
    assert {r["status"] for r in response.json["results"]} == {"accepted"}
    wait_until(lambda: projected_count(pipeline) == 1000, what="1000 events in MySQL")
    assert stored_count(pipeline) == 1000
    stored = rows(pipeline.postgres_url, "SELECT event_id, payload, source FROM events")
    assert {row["event_id"]: row["payload"]["n"] for row in stored} == {
        f"b-{i}": i for i in range(1000)
    }
    assert {row["source"] for row in stored} == {None}
    mismatched = rows(
        pipeline.mysql_url or "",
        "SELECT count(*) AS n FROM events_projection "
        "WHERE JSON_EXTRACT(payload, '$.n') <> CAST(SUBSTRING(event_id, 3) AS UNSIGNED)",
    )
    assert mismatched == [{"n": 0}]


def test_the_same_event_sent_three_ways_is_stored_once(
    client: FlaskClient, pipeline: Settings
) -> None:
    same = event("dup-1")
    assert client.post("/v1/events", json=same, headers=AUTH).status_code == 202
    assert client.post("/v1/batch", json={"batch": [same]}, headers=AUTH).status_code == 202
    twice = client.post("/v1/batch", json={"batch": [same, same, event("dup-2")]}, headers=AUTH)
    assert twice.status_code == 202
    assert twice.json["accepted"] == 3

    wait_until(lambda: projected_count(pipeline) == 2, what="two events in MySQL")
    assert rows(pipeline.postgres_url, "SELECT event_id FROM events ORDER BY event_id") == [
        {"event_id": "dup-1"},
        {"event_id": "dup-2"},
    ]
    assert projected_count(pipeline) == 2
    status = client.get("/v1/events/dup-1", headers=READ_AUTH).json
    assert status["conflict"] is False


def test_a_resent_event_spelt_otherwise_is_no_conflict(
    client: FlaskClient, pipeline: Settings
) -> None:
    first = (
        b'{"event_id": "spelt", "event_type": "t", "occurred_at": "2026-11-27T10:00:00Z",'
        b' "payload": {"a": 1, "b": [1.5, "x"]}}'
    )
    again = (
        b'{"payload":{"b":[1.50,"x"],"a":1},"occurred_at":"2026-11-27T10:00:00Z",'
        b'"event_type":"t","event_id":"spelt"}'
    )
    for body in (first, again):
        response = client.post(
            "/v1/events", data=body, headers={**AUTH, "Content-Type": "application/json"}
        )
        assert response.status_code == 202
        wait_until(lambda: stored_count(pipeline) == 1, what="the event stored")
    wait_until(lambda: projected_count(pipeline) == 1, what="the event in MySQL")

    status = client.get("/v1/events/spelt", headers=READ_AUTH).json
    assert status["conflict"] is False


def test_the_same_id_with_another_payload_keeps_the_first_and_reports_a_conflict(
    client: FlaskClient, pipeline: Settings
) -> None:
    first = event("conflicted", payload={"version": 1})
    assert client.post("/v1/events", json=first, headers=AUTH).status_code == 202
    wait_until(lambda: stored_count(pipeline) == 1, what="the first event stored")

    second = event("conflicted", payload={"version": 2})
    assert client.post("/v1/events", json=second, headers=AUTH).status_code == 202

    status = wait_until(
        lambda: (
            (r := client.get("/v1/events/conflicted", headers=READ_AUTH).json)["conflict"] and r
        ),
        what="the conflict reported",
    )
    assert status["conflict_at"] is not None
    assert rows(pipeline.postgres_url, "SELECT payload FROM events") == [
        {"payload": {"version": 1}}
    ]
    wait_until(lambda: projected_count(pipeline) == 1, what="the event in MySQL")
    [projected] = rows(pipeline.mysql_url or "", "SELECT payload FROM events_projection")
    assert json.loads(projected["payload"]) == {"version": 1}


def test_an_event_not_yet_stored_is_404(client: FlaskClient, pipeline: Settings) -> None:
    response = client.get("/v1/events/never-sent", headers=READ_AUTH)
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
    assert "never-sent" in response.json["detail"]


def test_the_request_id_travels_with_the_response(client: FlaskClient, pipeline: Settings) -> None:
    response = client.post(
        "/v1/events", json=event("rid-1"), headers={**AUTH, "X-Request-ID": "trace-123"}
    )
    assert response.headers["X-Request-ID"] == "trace-123"
    generated = client.get("/healthz")
    assert len(generated.headers["X-Request-ID"]) == 32


def test_large_events_reach_mysql_in_statements_under_its_packet_limit(
    pipeline: Settings,
) -> None:
    # 80 events of 120 KB in one message: 19 MB as the upsert's hex, over MariaDB's default
    # max_allowed_packet of 16 MiB were they one statement.
    events = [event(f"large-{number}", payload={"blob": "x" * 120_000}) for number in range(80)]
    persist_as_sent(pipeline, events)

    wanted = {item["event_id"] for item in events}
    wait_until(
        lambda: projected_ids(pipeline) >= wanted, timeout=60, what="the large events in MySQL"
    )
    lengths = rows(
        pipeline.mysql_url,
        "SELECT CHAR_LENGTH(JSON_UNQUOTE(JSON_EXTRACT(payload, '$.blob'))) AS n"
        " FROM events_projection WHERE event_id LIKE 'large-%'",
    )
    assert [row["n"] for row in lengths] == [120_000] * 80
    assert refusals(pipeline) == {}
    assert dead_letters(pipeline) == []
