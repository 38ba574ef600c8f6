"""Data contracts over real HTTP: two API processes (granian) and the run's workers, a schema per
event type in PostgreSQL. Each mode, each kind of violation named by its JSON pointer and rule,
pinned and retired versions, a change reaching both processes without a restart, the admin
key's scope, Segment rejects, inferred drafts, and hostile schemas that never hold a thread."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from ingest.config import Settings
from ingest.event_schemas import MAX_APPLICATIONS
from models import engine_for
from testlib.api import ADMIN_AUTH, ADMIN_KEY, API_KEY, AUTH, READ_AUTH, event
from testlib.commands import invoke
from testlib.data import rows
from testlib.processes import ApiServer, running_api
from testlib.schemas import GOOD, ORDER
from testlib.wait import wait_until

JSON = {"Content-Type": "application/json"}
RELOAD_SECONDS = 0.5
# How long a change may take to reach every API process: a few reload intervals.
TAKES_EFFECT_WITHIN = 5.0
# Each kind of violation: what changes in a good payload, and the (pointer, rule) it breaks.
VIOLATIONS = {
    "type": ({"amount": "12"}, [("/payload/amount", "type")]),
    "required": ({"currency": None}, [("/payload/currency", "required")]),
    "enum": ({"currency": "GBP"}, [("/payload/currency", "enum")]),
    "pattern": ({"coupon": "save10"}, [("/payload/coupon", "pattern")]),
    "range": ({"amount": -0.01}, [("/payload/amount", "minimum")]),
    "additionalProperties": ({"extra": 1}, [("/payload/extra", "additionalProperties")]),
    "nested arrays": (
        {
            "lines": [
                {"sku": "A", "qty": 1, "tags": ["ok", "much-too-long"]},
                {"sku": "B", "qty": 0},
            ]
        },
        [("/payload/lines/0/tags/1", "maxLength"), ("/payload/lines/1/qty", "minimum")],
    ),
}


def payload_with(change: dict[str, Any]) -> dict[str, Any]:
    merged = {**GOOD, **change}
    return {key: value for key, value in merged.items() if value is not None}


@pytest.fixture(scope="module")
def apis(settings: Settings) -> Iterator[tuple[ApiServer, ApiServer]]:
    """Two API servers, as two hosts behind a load balancer would run."""
    env = {
        "INGEST_ADMIN_KEYS": ADMIN_KEY,
        "INGEST_SCHEMA_RELOAD_SECONDS": str(RELOAD_SECONDS),
    }
    with (
        running_api(settings, workers=1, **env) as first,
        running_api(settings, workers=1, **env) as second,
    ):
        yield first, second


@pytest.fixture
def api(apis: tuple[ApiServer, ApiServer]) -> ApiServer:
    return apis[0]


def new_type(name: str) -> str:
    """An event type of this test's own: the registry is shared by the run."""
    return f"{name}.{uuid.uuid4().hex[:8]}"


def put_schema(api: ApiServer, event_type: str, **change: Any) -> requests.Response:
    return requests.put(
        f"{api.url}/v1/schemas/{event_type}", json=change, headers=ADMIN_AUTH, timeout=10
    )


def post(api: ApiServer, document: dict[str, Any], path: str = "/v1/events") -> requests.Response:
    return requests.post(f"{api.url}{path}", json=document, headers=AUTH, timeout=10)


def an_event(event_type: str, payload: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return event(f"c-{uuid.uuid4().hex}", event_type=event_type, payload=payload, **fields)


def wait_for_status(
    api: ApiServer, event_type: str, payload: dict[str, Any], status: int, **fields: Any
) -> float:
    """Seconds until the API answers `status` to such an event (each try a new event_id)."""
    started = time.monotonic()
    wait_until(
        lambda: post(api, an_event(event_type, payload, **fields)).status_code == status,
        timeout=TAKES_EFFECT_WITHIN,
        interval=0.1,
        what=f"{api.url} to answer {status} to a {event_type} event",
    )
    return time.monotonic() - started


def stored(settings: Settings, event_id: str) -> dict[str, Any] | None:
    found = rows(
        settings.postgres_url,
        "SELECT schema_version, schema_violations FROM events WHERE event_id = :id",
        id=event_id,
    )
    return found[0] if found else None


def test_enforce_refuses_each_kind_of_violation_with_its_json_pointer_and_rule(
    api: ApiServer, pipeline: Settings
) -> None:
    order = new_type("order.paid")
    added = put_schema(api, order, schema=ORDER, mode="enforce")
    assert added.status_code == 201, added.text
    assert added.json()["mode"] == "enforce"
    assert added.json()["versions"][0]["created_by"] == "INGEST_ADMIN_KEYS #1"
    wait_for_status(api, order, {}, 422)

    for kind, (change, expected) in VIOLATIONS.items():
        answer = post(api, an_event(order, payload_with(change)))
        assert answer.status_code == 422, kind
        body = answer.json()
        assert answer.headers["Content-Type"] == "application/problem+json"
        assert body["schema_version"] == 1
        assert sorted(body["errors"]) == sorted(pointer for pointer, _ in expected), kind
        for pointer, rule in expected:
            assert body["errors"][pointer][0].startswith(f"{rule}: "), (kind, body["errors"])
        assert sorted((v["pointer"], v["rule"]) for v in body["violations"]) == sorted(expected)

    good = an_event(order, GOOD)
    answer = post(api, good)
    assert answer.status_code == 202, answer.text
    assert answer.json() == {
        "event_id": good["event_id"],
        "status": "accepted",
        "schema_version": 1,
    }
    wait_until(lambda: stored(pipeline, good["event_id"]) is not None, what="the event stored")
    assert stored(pipeline, good["event_id"]) == {"schema_version": 1, "schema_violations": None}


def test_a_batch_gives_each_event_its_own_verdict(api: ApiServer, pipeline: Settings) -> None:
    order = new_type("order.paid")
    assert put_schema(api, order, schema=ORDER, mode="enforce").status_code == 201
    wait_for_status(api, order, {}, 422)
    batch = [an_event(order, GOOD), an_event(order, payload_with({"amount": "12"}))]
    answer = post(api, {"batch": batch}, "/v1/batch")
    assert answer.status_code == 202, answer.text
    first, second = answer.json()["results"]
    assert (first["status"], first["schema_version"]) == ("accepted", 1)
    assert second["status"] == "rejected"
    assert list(second["errors"]) == ["/payload/amount"]
    assert second["errors"]["/payload/amount"][0].startswith("type: ")
    wait_until(lambda: stored(pipeline, first["event_id"]) is not None, what="the good one")
    assert stored(pipeline, second["event_id"]) is None


def violations_counted(api: ApiServer, event_type: str, mode: str) -> float:
    """ingest_schema_violations_total of the type and mode, as /metrics shows it."""
    page = requests.get(f"{api.url}/metrics", timeout=10).text
    series = f'ingest_schema_violations_total{{event_type="{event_type}",mode="{mode}"}} '
    found = [line for line in page.splitlines() if line.startswith(series)]
    return float(found[0].rsplit(" ", 1)[1]) if found else 0.0


def test_warn_accepts_records_the_violation_counts_it_and_shows_it(
    api: ApiServer, pipeline: Settings
) -> None:
    order = new_type("order.paid")
    added = put_schema(api, order, schema=ORDER)
    assert added.status_code == 201
    assert added.json()["mode"] == "warn"  # a new type starts in warn
    bad = an_event(order, payload_with({"currency": "GBP"}))
    wait_until(
        lambda: "schema_violations" in post(api, an_event(order, {})).json(),
        timeout=TAKES_EFFECT_WITHIN,
        what="warn mode in effect",
    )
    time.sleep(1.1)  # past the /metrics page's cache (ingest_api.metrics.PAGE_MAX_AGE)
    counted = violations_counted(api, order, "warn")

    answer = post(api, bad)
    assert answer.status_code == 202
    violations = answer.json()["schema_violations"]
    assert [(v["pointer"], v["rule"]) for v in violations] == [("/payload/currency", "enum")]
    wait_until(
        lambda: violations_counted(api, order, "warn") == counted + 1,
        timeout=TAKES_EFFECT_WITHIN,
        what="the violation counted",
    )

    wait_until(lambda: stored(pipeline, bad["event_id"]) is not None, what="the event stored")
    assert stored(pipeline, bad["event_id"]) == {
        "schema_version": 1,
        "schema_violations": violations,
    }
    status = requests.get(f"{api.url}/v1/events/{bad['event_id']}", headers=READ_AUTH, timeout=10)
    assert status.status_code == 200
    assert status.json()["schema_version"] == 1
    assert status.json()["schema_violations"] == violations


def test_off_checks_nothing_and_records_nothing(api: ApiServer, pipeline: Settings) -> None:
    order = new_type("order.paid")
    assert put_schema(api, order, schema=ORDER, mode="enforce").status_code == 201
    wait_for_status(api, order, {}, 422)
    assert put_schema(api, order, mode="off").status_code == 200
    wait_for_status(api, order, {}, 202)
    pinned = an_event(order, {"anything": True}, schema_version=1)
    answer = post(api, pinned)
    assert answer.json() == {"event_id": pinned["event_id"], "status": "accepted"}
    wait_until(lambda: stored(pipeline, pinned["event_id"]) is not None, what="the event stored")
    # A pin is not a check: nothing was checked, so no version is recorded.
    assert stored(pipeline, pinned["event_id"]) == {
        "schema_version": None,
        "schema_violations": None,
    }


def test_warn_to_enforce_and_a_retirement_reach_both_api_processes_without_a_restart(
    apis: tuple[ApiServer, ApiServer], pipeline: Settings
) -> None:
    first, second = apis
    order = new_type("order.paid")
    bad = payload_with({"amount": "12"})
    assert put_schema(first, order, schema=ORDER, mode="warn").status_code == 201
    for api in apis:
        wait_until(
            lambda api=api: "schema_violations" in post(api, an_event(order, bad)).json(),
            timeout=TAKES_EFFECT_WITHIN,
            what=f"warn mode in {api.url}",
        )
    # Switched on one process, refused by the other as well, within a few reload intervals.
    assert put_schema(first, order, mode="enforce").status_code == 200
    took = [wait_for_status(api, order, bad, 422) for api in (second, first)]
    assert max(took) < TAKES_EFFECT_WITHIN
    # Its only version retired, the type has no schema: the default (off) lets it through.
    retired = requests.delete(
        f"{second.url}/v1/schemas/{order}/versions/1", headers=ADMIN_AUTH, timeout=10
    )
    assert retired.status_code == 200
    assert retired.json()["status"] == "retired"
    for api in apis:
        wait_for_status(api, order, bad, 202)


def test_a_pinned_version_is_checked_until_it_is_retired(
    api: ApiServer, pipeline: Settings
) -> None:
    order = new_type("order.paid")
    amount_only = {"type": "object", "required": ["amount"]}
    assert put_schema(api, order, schema=amount_only, mode="enforce").status_code == 201
    second = put_schema(api, order, schema=ORDER)
    assert second.status_code == 201
    assert second.json()["newest_active_version"] == 2
    assert put_schema(api, order, schema=ORDER).status_code == 200  # the same: nothing added
    wait_for_status(api, order, {"amount": 1}, 422)  # version 2 also needs a currency

    pinned = post(api, an_event(order, {"amount": 1}, schema_version=1))
    assert pinned.status_code == 202, pinned.text
    assert pinned.json()["schema_version"] == 1
    missing = post(api, an_event(order, GOOD, schema_version=3))
    assert missing.status_code == 422
    assert list(missing.json()["errors"]) == ["/schema_version"]

    assert (
        requests.delete(
            f"{api.url}/v1/schemas/{order}/versions/1", headers=ADMIN_AUTH, timeout=10
        ).json()["retired_by"]
        == "INGEST_ADMIN_KEYS #1"
    )
    wait_for_status(api, order, {"amount": 1}, 422, schema_version=1)
    refused = post(api, an_event(order, {"amount": 1}, schema_version=1))
    assert refused.status_code == 422
    assert refused.json()["violations"][0]["rule"] == "schema_version"
    assert "retired" in refused.json()["violations"][0]["message"]
    assert post(api, an_event(order, GOOD)).json()["schema_version"] == 2

    # The retired version stays readable, and PostgreSQL refuses to change or delete it.
    one = requests.get(f"{api.url}/v1/schemas/{order}/versions/1", headers=ADMIN_AUTH, timeout=10)
    assert one.json()["schema"] == amount_only and one.json()["status"] == "retired"
    for statement in (
        "UPDATE event_schemas SET schema = '{}' WHERE event_type = :t",
        "UPDATE event_schemas SET retired_at = NULL WHERE event_type = :t AND version = 1",
        "DELETE FROM event_schemas WHERE event_type = :t",
    ):
        with (
            pytest.raises(DBAPIError, match="never"),
            engine_for(pipeline.postgres_url).begin() as connection,
        ):
            connection.execute(text(statement), {"t": order})


def test_only_admin_keys_read_or_change_schemas_and_they_send_nothing(api: ApiServer) -> None:
    order = new_type("order.paid")
    url = f"{api.url}/v1/schemas/{order}"
    for key in (AUTH, READ_AUTH):
        changed = requests.put(url, json={"schema": ORDER}, headers=key, timeout=10)
        assert changed.status_code == 403
        assert "INGEST_ADMIN_KEYS" in changed.json()["detail"]
        assert requests.get(url, headers=key, timeout=10).status_code == 403
    assert requests.put(url, json={"schema": ORDER}, timeout=10).status_code == 401
    assert requests.get(url, headers=ADMIN_AUTH, timeout=10).status_code == 404
    sent = requests.post(
        f"{api.url}/v1/events", json=event("admin-1"), headers=ADMIN_AUTH, timeout=10
    )
    assert sent.status_code == 403
    assert put_schema(api, order, schema=ORDER).status_code == 201
    listed = requests.get(f"{api.url}/v1/schemas", headers=ADMIN_AUTH, timeout=10).json()
    assert order in {item["event_type"] for item in listed["event_types"]}


def test_each_api_process_reads_the_contracts_before_any_event_arrives(settings: Settings) -> None:
    # POST /v1/events runs on the server's event loop: its first request must not make the loop
    # wait for PostgreSQL, so each worker reads the registry before it serves.
    with running_api(settings, workers=2) as server:
        wait_until(
            lambda: len(registry_loads(server)) == 2,
            timeout=TAKES_EFFECT_WITHIN,
            what="both workers to load the registry",
        )
        assert {line["path"] for line in request_lines(server)} <= {"/healthz"}


def registry_loads(server: ApiServer) -> list[dict[str, Any]]:
    return [line for line in server.json_lines() if line["message"] == "Schema registry loaded"]


def request_lines(server: ApiServer) -> list[dict[str, Any]]:
    return [line for line in server.json_lines() if line["message"] == "request"]


def test_the_default_mode_refuses_a_type_without_a_schema(settings: Settings) -> None:
    with running_api(settings, workers=1, INGEST_SCHEMA_DEFAULT_MODE="enforce") as strict:
        answer = post(strict, an_event(new_type("page.view"), {}))
    assert answer.status_code == 422
    assert [(v["pointer"], v["rule"]) for v in answer.json()["violations"]] == [
        ("/event_type", "registered")
    ]


def test_a_segment_message_that_breaks_its_schema_goes_to_segment_rejects(
    api: ApiServer, pipeline: Settings
) -> None:
    completed = new_type("Order Completed")
    schema = {
        "type": "object",
        "required": ["properties"],
        "properties": {
            "properties": {
                "type": "object",
                "required": ["total"],
                "properties": {"total": {"type": "number"}},
            }
        },
    }
    assert put_schema(api, completed, schema=schema, mode="enforce").status_code == 201
    wait_until(
        lambda: (
            post(
                api,
                {"userId": "u-1", "event": completed, "properties": {"total": "x"}},
                "/segment/v1/track",
            ).status_code
            == 400
        ),
        timeout=TAKES_EFFECT_WITHIN,
        what="the schema in effect",
    )
    good, bad = (
        {"type": "track", "messageId": f"m-{uuid.uuid4().hex}", "userId": "u-1",
         "event": completed, "properties": {"total": total}}
        for total in (12.5, "12.50")
    )  # fmt: skip
    answer = post(api, {"batch": [good, bad]}, "/segment/v1/batch")
    assert answer.status_code == 200 and answer.json() == {"success": True}
    rejects = rows(
        pipeline.postgres_url,
        "SELECT reasons FROM segment_rejects WHERE message_id = :id",
        id=bad["messageId"],
    )
    assert list(rejects[0]["reasons"]) == ["/properties/total"]
    assert rejects[0]["reasons"]["/properties/total"][0].startswith("type: ")
    wait_until(lambda: stored(pipeline, good["messageId"]) is not None, what="the good message")
    single = post(api, {**bad, "messageId": "m-single"}, "/segment/v1/track")
    assert single.status_code == 400
    assert list(single.json()["errors"]) == ["/properties/total"]


def test_a_draft_inferred_from_stored_events_takes_the_same_events(
    api: ApiServer, pipeline: Settings, tmp_path: Path
) -> None:
    cart = new_type("cart.updated")
    payloads = [
        {"cart_id": f"c-{n}", "items": [{"sku": f"S-{n}", "qty": n % 3 + 1}] * (n % 3),
         "total": n * 1.5 if n % 2 else n, "note": None if n % 3 else "gift",
         **({"coupon": "SAVE-10"} if n % 4 == 0 else {}),
         "customer": {"id": n, "vip": n % 5 == 0}}
        for n in range(40)
    ]  # fmt: skip
    sent = post(api, {"batch": [an_event(cart, p) for p in payloads]}, "/v1/batch")
    assert sent.json()["accepted"] == len(payloads)
    wait_until(
        lambda: (
            len(rows(pipeline.postgres_url, "SELECT 1 FROM events WHERE event_type = :t", t=cart))
            == len(payloads)
        ),
        what="the events stored",
    )
    draft_file = tmp_path / "draft.json"
    inferred = invoke(
        pipeline, "schemas", "infer", cart, "--sample", "100", "--output", str(draft_file)
    )
    assert inferred.exit_code == 0, inferred.output
    draft = json.loads(draft_file.read_text())
    assert set(draft["required"]) == {"cart_id", "items", "total", "note", "customer"}
    assert draft["properties"]["note"]["type"] == ["null", "string"]

    added = invoke(pipeline, "schemas", "add", cart, str(draft_file), "--mode", "enforce")
    assert added.exit_code == 0, added.output
    wait_for_status(api, cart, {"cart_id": 1}, 422)
    again = post(api, {"batch": [an_event(cart, p) for p in payloads]}, "/v1/batch").json()
    assert again["accepted"] == len(payloads), again


HOSTILE = {
    "huge": ({"enum": list(range(60_000))}, "over the limit of 262144"),
    "deeply recursive $ref": ({"$ref": "#"}, "a loop that never ends"),
    "$refs that branch into $refs": (
        {
            "$defs": {
                **{f"l{n}": {"anyOf": [{"$ref": f"#/$defs/l{n + 1}"}] * 2} for n in range(40)},
                "l40": {"type": "string"},
            },
            "$ref": "#/$defs/l0",
        },
        f"over the limit of {MAX_APPLICATIONS}",
    ),
    "a remote $ref": ({"$ref": "http://127.0.0.1:9/schema.json"}, "leaves the schema"),
    "lookahead": ({"pattern": "(?=a)"}, "no lookaround or backreferences"),
}


def test_hostile_schemas_are_refused_or_bounded_and_never_hold_a_thread(
    api: ApiServer, pipeline: Settings
) -> None:
    for name, (schema, why) in HOSTILE.items():
        refused = put_schema(api, new_type("hostile"), schema=schema)
        assert refused.status_code == 422, name
        assert why in refused.json()["detail"], (name, refused.json())

    # A regex that backtracks catastrophically under Python's re is linear under Rust's.
    redos = new_type("redos")
    pattern = {"properties": {"name": {"type": "string", "pattern": "^(a+)+$"}}}
    assert put_schema(api, redos, schema=pattern, mode="enforce").status_code == 201
    wait_for_status(api, redos, {"name": "!"}, 422)
    evil = {"name": "a" * 100_000 + "!"}
    answers: list[tuple[int, float]] = []

    def send() -> None:
        started = time.monotonic()
        status = post(api, an_event(redos, evil)).status_code
        answers.append((status, time.monotonic() - started))

    threads = [threading.Thread(target=send) for _ in range(16)]
    for thread in threads:
        thread.start()
    assert requests.get(f"{api.url}/healthz", timeout=2).status_code == 200
    for thread in threads:
        thread.join(timeout=30)
    assert [status for status, _ in answers] == [422] * 16
    assert max(seconds for _, seconds in answers) < 5

    # One written past the API (by hand, into PostgreSQL): the API will not compile it, says
    # so, and keeps answering that type's events at once.
    by_hand = new_type("by-hand")
    schema, _ = HOSTILE["$refs that branch into $refs"]
    with engine_for(pipeline.postgres_url).begin() as connection:
        connection.execute(
            text(
                "INSERT INTO event_schemas (event_type, version, schema, schema_sha256, "
                "created_by) VALUES (:t, 1, CAST(:s AS jsonb), 'by-hand', 'psql')"
            ),
            {"t": by_hand, "s": json.dumps(schema)},
        )
        connection.execute(
            text(
                "INSERT INTO event_contracts (event_type, mode, updated_by) "
                "VALUES (:t, 'enforce', 'psql')"
            ),
            {"t": by_hand},
        )
    wait_until(
        lambda: re.search(rf"{re.escape(by_hand)}.*does not compile", api.output()) is not None,
        timeout=TAKES_EFFECT_WITHIN,
        what="the API to refuse the hand-written schema",
    )
    started = time.monotonic()
    assert post(api, an_event(by_hand, {"a": "b"})).status_code == 202
    assert time.monotonic() - started < 2
    assert API_KEY not in api.output()
