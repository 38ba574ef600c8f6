"""The Segment-compatible API with the real, pinned, unmodified SDKs against the real API
(granian) and workers: every call lands in both databases, each way of sending the key works
and a wrong one reaches the SDK's error hook, a 503 is retried into one row each, an invalid
message spoils none of its batch and is listed, and retries of a messageId store it once."""

from __future__ import annotations

import base64
import gzip
import json
import re
import subprocess
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from ingest.config import Settings
from testlib.api import API_KEY
from testlib.data import projected_count, rows, stored_count
from testlib.processes import VENV_BIN, ApiServer, running_api, service_env
from testlib.segment_sdks import NODE, RUDDER, SDKS, SEGMENT_240, Sdk, install_sdks
from testlib.servers import rabbitmqctl
from testlib.wait import wait_until

JSON = {"Content-Type": "application/json"}
BASIC = {"Authorization": f"Basic {base64.b64encode(f'{API_KEY}:'.encode()).decode()}"}


@pytest.fixture(scope="session")
def sdks() -> None:
    install_sdks()


@pytest.fixture(scope="module")
def api(settings: Settings, sdks: None) -> Iterator[ApiServer]:
    with running_api(settings) as server:
        yield server


def stored(settings: Settings) -> dict[str, dict[str, Any]]:
    found = rows(
        settings.postgres_url,
        "SELECT event_id, event_type, source, occurred_at, payload FROM events",
    )
    return {row["event_id"]: row for row in found}


def every_call(prefix: str) -> list[tuple[str, dict[str, Any]]]:
    user = {"userId": f"{prefix}-user"}
    return [
        ("track", {**user, "event": "Order Completed", "properties": {"total": 12.5},
                   "messageId": f"{prefix}-track"}),
        ("identify", {**user, "traits": {"plan": "pro"}, "messageId": f"{prefix}-identify"}),
        ("page", {**user, "name": "Home", "messageId": f"{prefix}-page"}),
        ("screen", {**user, "name": "Cart", "messageId": f"{prefix}-screen"}),
        ("group", {**user, "groupId": "g-1", "messageId": f"{prefix}-group"}),
        ("alias", {**user, "previousId": "anon-1", "messageId": f"{prefix}-alias"}),
    ]  # fmt: skip


@pytest.mark.parametrize("sdk", SDKS, ids=lambda sdk: sdk.name)
def test_every_call_type_lands_in_both_databases(
    sdk: Sdk, api: ApiServer, pipeline: Settings
) -> None:
    """segment 2.4.0 and Node send Basic and writeKey, 2.3.4 only writeKey, rudder only Basic
    (and gzip)."""
    assert sdk.send(api.url, API_KEY, every_call(sdk.name)) == []
    wait_until(lambda: projected_count(pipeline) == 6, timeout=60, what="6 rows in MySQL")
    found = stored(pipeline)
    assert {row["event_type"] for row in found.values()} == {
        "Order Completed", "identify", "page", "screen", "group", "alias",
    }  # fmt: skip
    track = found[f"{sdk.name}-track"]
    assert track["source"] == sdk.library
    assert track["payload"]["properties"] == {"total": 12.5}
    assert track["payload"]["userId"] == f"{sdk.name}-user"
    assert "writeKey" not in track["payload"] and "receivedAt" in track["payload"]
    assert found[f"{sdk.name}-group"]["payload"]["groupId"] == "g-1"
    assert found[f"{sdk.name}-alias"]["payload"]["previousId"] == "anon-1"
    projected = rows(pipeline.mysql_url, "SELECT event_id, event_type FROM events_projection")
    assert {row["event_id"]: row["event_type"] for row in projected} == {
        event_id: row["event_type"] for event_id, row in found.items()
    }


@pytest.mark.parametrize("sdk", SDKS, ids=lambda sdk: sdk.name)
def test_a_wrong_key_reaches_the_error_hook(sdk: Sdk, api: ApiServer, pipeline: Settings) -> None:
    errors = sdk.send(api.url, "not-the-key", every_call("wrong")[:1], sync=False)
    assert len(errors) == 1 and "401" in errors[0], errors
    assert stored_count(pipeline) == 0


def test_250_async_gzipped_calls_give_250_rows(api: ApiServer, pipeline: Settings) -> None:
    calls = [
        ("track", {"userId": "u", "event": "Tick", "messageId": f"tick-{n}"}) for n in range(250)
    ]
    assert SEGMENT_240.send(api.url, API_KEY, calls, sync=False, gzip=True) == []
    wait_until(lambda: stored_count(pipeline) == 250, timeout=60, what="250 rows")
    wait_until(lambda: projected_count(pipeline) == 250, timeout=60, what="250 rows in MySQL")


def test_the_same_message_id_twice_is_one_row(api: ApiServer, pipeline: Settings) -> None:
    call = ("track", {"userId": "u", "event": "Paid", "messageId": "paid-once"})
    assert SEGMENT_240.send(api.url, API_KEY, [call, call]) == []
    assert NODE.send(api.url, API_KEY, [call]) == []
    wait_until(lambda: projected_count(pipeline) == 1, timeout=60, what="the row in MySQL")
    assert list(stored(pipeline)) == ["paid-once"]


def test_a_message_over_32_kb_is_listed_and_the_others_are_stored(
    api: ApiServer, pipeline: Settings
) -> None:
    """rudder-sdk-python batches messages up to 4 MB, so one over Segment's 32 KB travels with
    the others: the batch answers 200 and only that one is refused."""
    big_id = f"big-{uuid.uuid4().hex}"
    calls = [
        ("track", {"userId": "u", "event": "Small", "messageId": "small-1"}),
        ("track", {"userId": "u", "event": "Big", "messageId": big_id,
                   "properties": {"blob": "x" * 40_000}}),
        ("track", {"userId": "u", "event": "Small", "messageId": "small-2"}),
    ]  # fmt: skip
    assert RUDDER.send(api.url, API_KEY, calls, sync=False) == []
    wait_until(lambda: stored_count(pipeline) == 2, timeout=60, what="the two small messages")
    assert set(stored(pipeline)) == {"small-1", "small-2"}
    listed = subprocess.run(
        [str(VENV_BIN / "ingest"), "segment", "rejects", "--limit", "5"],
        env=service_env(pipeline),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert f"messageId {big_id} from analytics-python" in listed
    assert "over Segment's limit of 32768 bytes" in listed
    assert "key: INGEST_API_KEYS #1" in listed
    metrics = requests.get(f"{api.url}/metrics", timeout=10).text
    assert re.search(r'ingest_segment_rejects_total\{library="analytics-python"\} [1-9]', metrics)


def test_a_message_with_nul_characters_is_listed_with_them_escaped(
    api: ApiServer, pipeline: Settings
) -> None:
    """PostgreSQL holds no NUL character, in text or jsonb; a message that carries some in its
    messageId, its library and its keys is still listed, each NUL written as the escape."""
    nul_id = f"nul-{uuid.uuid4().hex}\x00id"
    nul = {"userId": "u", "event": "Nul", "messageId": nul_id,
           "context": {"library": {"name": "lib\x00rary"}},
           "properties": {"key\x00": "value\x00"}}  # fmt: skip
    good = {"userId": "u", "event": "Fine", "messageId": "fine-1"}
    response = requests.post(
        f"{api.url}/segment/v1/batch",
        json={"batch": [{"type": "track", **nul}, {"type": "track", **good}]},
        headers=BASIC,
        timeout=30,
    )
    assert response.status_code == 200, response.text
    wait_until(lambda: stored_count(pipeline) == 1, timeout=60, what="the good message")
    assert list(stored(pipeline)) == ["fine-1"]
    listed_id = nul_id.replace("\x00", "\\u0000")
    query = "SELECT library, message_id, message FROM segment_rejects WHERE message_id = :id"
    [reject] = rows(pipeline.postgres_url, query, id=listed_id)
    assert reject["library"] == "lib\\u0000rary"
    assert json.loads(reject["message"])["properties"] == {"key\x00": "value\x00"}


@pytest.mark.parametrize("sdk", [SEGMENT_240, NODE], ids=lambda sdk: sdk.name)
def test_503_first_then_recovered_stores_each_call_once(
    sdk: Sdk, settings: Settings, pipeline: Settings, sdks: None
) -> None:
    """The API's broker account may do nothing at first (every publish fails: 503), then gets
    its permissions; the SDK retries and each call is stored once."""
    user, vhost = f"segment-{uuid.uuid4().hex[:8]}", settings.broker_url.rsplit("/", 1)[1]
    rabbitmqctl("add_user", user, "secret")
    try:
        blocked = settings.replace(broker_url=f"amqp://{user}:secret@127.0.0.1:5672/{vhost}")
        with running_api(blocked) as server:
            calls = every_call(f"retry-{sdk.name}")[:3]
            result: dict[str, list[str]] = {}
            sender = threading.Thread(
                target=lambda: result.update(
                    errors=sdk.send(server.url, API_KEY, calls, sync=False, retries=10)
                )
            )
            sender.start()
            wait_until(lambda: publish_failures(server) >= 2, timeout=60, what="two 503s")
            rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
            sender.join(timeout=180)
            assert result["errors"] == []
            wait_until(lambda: stored_count(pipeline) == 3, timeout=60, what="3 rows")
            assert set(stored(pipeline)) == {
                event_id for _, c in calls for event_id in [c["messageId"]]
            }
            if sdk is NODE:  # the Python SDK re-queues after Retry-After, counting afresh
                metrics = requests.get(f"{server.url}/metrics", timeout=10).text
                assert re.search(
                    r'ingest_segment_retried_requests_total\{library="@segment/analytics-node"\} '
                    r"[1-9]",
                    metrics,
                ), metrics
    finally:
        rabbitmqctl("delete_user", user)


def test_skew_corrects_occurred_at_by_the_client_clock(api: ApiServer, pipeline: Settings) -> None:
    """A client whose clock is an hour behind: its timestamp and sentAt are both an hour behind,
    so the event happened about when the server received it."""
    behind = datetime.now(UTC) - timedelta(hours=1)
    message = {"type": "track", "event": "Skewed", "userId": "u", "messageId": "skewed",
               "timestamp": (behind - timedelta(seconds=30)).isoformat()}  # fmt: skip
    body = {"batch": [message], "sentAt": behind.isoformat(), "writeKey": API_KEY}
    answer = requests.post(f"{api.url}/segment/v1/batch", json=body, timeout=30)
    assert (answer.status_code, answer.json()) == (200, {"success": True})
    wait_until(lambda: stored_count(pipeline) == 1, what="the skewed event")
    occurred_at = stored(pipeline)["skewed"]["occurred_at"]
    received_at = datetime.fromisoformat(stored(pipeline)["skewed"]["payload"]["receivedAt"])
    assert occurred_at == received_at - timedelta(seconds=30)


def test_each_route_answers_200_with_a_trailing_slash_and_never_redirects(
    api: ApiServer, pipeline: Settings
) -> None:
    message = {"userId": "u", "event": "Slash", "groupId": "g", "previousId": "p"}
    for path in ("batch", "import", "track", "identify", "page", "screen", "group", "alias"):
        body = {"batch": [{**message, "type": "track"}]} if path in ("batch", "import") else message
        answer = requests.post(
            f"{api.url}/segment/v1/{path}/",
            data=gzip.compress(json.dumps(body).encode()),
            headers={**JSON, **BASIC, "Content-Encoding": "gzip"},
            allow_redirects=False,
            timeout=30,
        )
        assert (answer.status_code, answer.json()) == (200, {"success": True}), path
    assert NODE.send(api.url, API_KEY, every_call("slash")[:1], path="/segment/v1/batch/") == []
    wait_until(lambda: stored_count(pipeline) == 9, what="9 events")


def test_keys_bearer_or_body_and_disagreement(api: ApiServer, pipeline: Settings) -> None:
    message = {"type": "track", "event": "Keyed", "userId": "u"}
    url = f"{api.url}/segment/v1/batch"
    bearer = {"Authorization": f"Bearer {API_KEY}"}
    assert requests.post(url, json={"batch": [message]}, headers=bearer, timeout=30).ok
    both = {"batch": [message], "writeKey": "another-key"}
    refused = requests.post(url, json=both, headers=BASIC, timeout=30)
    assert refused.status_code == 401
    assert refused.json()["code"] == "unauthorized" and "differs" in refused.json()["message"]
    single = requests.post(f"{api.url}/segment/v1/track", json={"userId": "u"}, headers=BASIC,
                           timeout=30)  # fmt: skip
    assert single.status_code == 400 and "event" in single.json()["errors"]
    wait_until(lambda: stored_count(pipeline) == 1, what="the Bearer event")


def test_a_segment_batch_sent_to_the_native_batch_is_pointed_to_the_segment_route(
    api: ApiServer,
) -> None:
    body = {"batch": [{"type": "track", "event": "Wrong door", "userId": "u"}]}
    answer = requests.post(
        f"{api.url}/v1/batch", json=body, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30
    )
    assert answer.status_code == 422
    assert answer.headers["Content-Type"] == "application/problem+json"
    assert answer.json()["see"] == "/segment/v1/batch"
    assert "/segment/v1/batch" in answer.json()["detail"]


def publish_failures(server: ApiServer) -> float:
    metrics = requests.get(f"{server.url}/metrics", timeout=10).text
    found = re.search(r"^ingest_publish_failures_total (\S+)$", metrics, re.MULTILINE)
    return float(found[1]) if found else 0.0
