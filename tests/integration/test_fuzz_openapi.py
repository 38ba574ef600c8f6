"""Fuzz the API from its own OpenAPI description with schemathesis, in process, on real servers.

Every operation that /openapi.json describes gets requests generated from the description:
ones it allows (positive) and ones that break it (negative). Every answer must be one the
description lists, with its content type, headers and body schema, and never a 5xx. Every event
answered 202 must then be stored in PostgreSQL by the real workers, and nothing else may be.
Without a key, or with a wrong one, every operation that needs a key answers 401 and only that.

The examples are derandomized (the same on every run) and bounded per operation, so CI is
reproducible and the file takes about a minute. Random bytes are fuzzed in test_api_hostile.py.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import given, settings
from hypothesis import strategies as st
from schemathesis import APIOperation, BaseSchema, Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from ingest.config import Settings
from testlib.api import AUTH, READ_AUTH, event
from testlib.data import rows, stored_count
from testlib.wait import wait_until

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Per operation and generation mode. deadline=None: a publish waits for the broker's confirm,
# which takes what it takes on a loaded machine; the API's own timeout bounds it.
EXAMPLES = 100
BOUNDED = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None)
SENT_EVENTS = {"/v1/events", "/v1/batch"}


@pytest.fixture(scope="module")
def api_schema(app: Flask) -> BaseSchema:
    # An explicit config: a schemathesis.toml lying around must not change what runs.
    return schemathesis.openapi.from_wsgi(
        "/openapi.json", app, headers=READ_AUTH, config=schemathesis.Config()
    )


def operations(schema: BaseSchema) -> list[APIOperation]:
    return [result.ok() for result in schema.get_all_operations()]


def needs_key(operation: APIOperation) -> bool:
    return any(operation.security.iter_parameters())


def key_for(case: Case) -> dict[str, str]:
    """The key of the operation's scope: reads (GET) need a read key, the rest a write key."""
    return READ_AUTH if case.operation.method.upper() == "GET" else AUTH


def has_inputs(operation: APIOperation) -> bool:
    """Whether there is anything to break: an operation without parameters has no negative case."""
    parameters = (operation.path_parameters, operation.headers, operation.query, operation.cookies)
    return any(len(group) for group in parameters) or len(operation.body) > 0


def fuzz(strategy: Any, send: Callable[[Case], None]) -> None:
    @BOUNDED
    @given(case=strategy)
    def run(case: Case) -> None:
        send(case)

    run()


def call(case: Case, headers: dict[str, str] | None = None) -> schemathesis.Response:
    # buffered: the test client reads and closes each answer, so an asset's file is closed too.
    return case.call_and_validate(headers=headers, checks=CHECKS, buffered=True)


def accepted_ids(case: Case, response: schemathesis.Response) -> list[str]:
    """The event ids a 2xx answer says were accepted."""
    if case.operation.path not in SENT_EVENTS or response.status_code >= 300:
        return []
    body = response.json()
    results = [body] if case.operation.path == "/v1/events" else body["results"]
    return [result["event_id"] for result in results if result["status"] == "accepted"]


def missing_from_postgres(settings: Settings, event_ids: set[str]) -> set[str]:
    found = rows(
        settings.postgres_url,
        "SELECT event_id FROM events WHERE event_id = ANY(:ids)",
        ids=sorted(event_ids),
    )
    return event_ids - {row["event_id"] for row in found}


def test_every_answer_is_described_and_every_accepted_event_is_stored(
    api_schema: BaseSchema, pipeline: Settings
) -> None:
    statuses: Counter[tuple[str, int]] = Counter()
    accepted: set[str] = set()
    slowest = 0.0

    def send(case: Case) -> None:
        nonlocal slowest
        response = call(case, key_for(case))
        statuses[case.operation.label, response.status_code] += 1
        accepted.update(accepted_ids(case, response))
        slowest = max(slowest, response.elapsed)

    started = time.monotonic()
    for operation in operations(api_schema):
        fuzz(operation.as_strategy(GenerationMode.POSITIVE), send)
        if has_inputs(operation):
            fuzz(operation.as_strategy(GenerationMode.NEGATIVE), send)
    fuzzed = time.monotonic() - started

    # The run reached both sides: events accepted, and each kind of refusal of a sent event.
    assert len(accepted) >= 50, statuses
    # No request waited on anything for longer than the broker's confirm may take.
    assert slowest < pipeline.publish_timeout + 2, f"a request took {slowest:.1f}s"
    sent = {status for (label, status) in statuses if label.startswith("POST")}
    assert {202, 400, 401, 415, 422} <= sent, statuses
    wait_until(
        lambda: not missing_from_postgres(pipeline, accepted),
        timeout=120,
        what=f"all {len(accepted)} accepted events in PostgreSQL",
    )
    # Nothing that was refused is stored: the table holds exactly the accepted events.
    assert stored_count(pipeline) == len(accepted)
    assert fuzzed < 120, f"the fuzzing took {fuzzed:.0f}s"


def test_a_stored_event_is_described_as_it_is_stored(
    api_schema: BaseSchema, pipeline: Settings, app: Flask
) -> None:
    """Generated ids are almost never stored ones: this asks for ids that are, for 200 answers."""
    client = app.test_client()
    ids = [f"stored-{n}" for n in range(5)]
    for event_id in ids:
        assert client.post("/v1/events", json=event(event_id), headers=AUTH).status_code == 202
    conflicting = event(ids[0], payload={"changed": True})  # later answered with conflict: true
    assert client.post("/v1/events", json=conflicting, headers=AUTH).status_code == 202
    wait_until(lambda: not missing_from_postgres(pipeline, set(ids)), what="5 events stored")
    answered: Counter[int] = Counter()

    def send(case: Case) -> None:
        answered[call(case, READ_AUTH).status_code] += 1

    lookup = api_schema["/v1/events/{event_id}"]["GET"]
    fuzz(
        st.sampled_from(ids).flatmap(
            lambda event_id: lookup.as_strategy(path_parameters={"event_id": event_id})
        ),
        send,
    )
    assert answered[200] >= 5, answered


SEGMENT_CALLS = ("batch", "import", "track", "identify", "page", "screen", "group", "alias")


@pytest.mark.parametrize("authorization", [None, "Bearer not-the-key"])
def test_without_a_valid_key_every_operation_that_needs_one_answers_401(
    api_schema: BaseSchema, authorization: str | None
) -> None:
    secured = [operation for operation in operations(api_schema) if needs_key(operation)]
    # schemathesis leaves out /openapi.json, where it read the description; test_security.py
    # walks every route of the app, that one included.
    assert {operation.label for operation in secured} == {
        "POST /v1/events",
        "POST /v1/batch",
        "GET /v1/events/{event_id}",
        *(f"POST /segment/v1/{call}" for call in SEGMENT_CALLS),
        "GET /v1/schemas",
        "GET /v1/schemas/{event_type}",
        "PUT /v1/schemas/{event_type}",
        "GET /v1/schemas/{event_type}/versions/{version}",
        "DELETE /v1/schemas/{event_type}/versions/{version}",
    }
    headers = None if authorization is None else {"Authorization": authorization}
    answered: Counter[int] = Counter()

    def send(case: Case) -> None:
        response = call(case, headers)
        answered[response.status_code] += 1
        segment = case.operation.path.startswith("/segment/")
        if segment and response.status_code in (400, 413, 415):
            # The key may come inside a Segment body (writeKey): one that cannot be read is
            # refused for what it is before the key is looked for. Never accepted.
            return
        assert response.status_code == 401, f"{case.operation.label}: {response.text[:500]}"
        # The Segment routes ask for the key as the SDKs send it: HTTP Basic.
        scheme = "Basic" if segment else "Bearer"
        assert response.headers["www-authenticate"] == [f'{scheme} realm="ingest"']

    for operation in secured:
        fuzz(operation.as_strategy(GenerationMode.POSITIVE), send)
    assert answered[401] >= len(secured) * 10, answered
