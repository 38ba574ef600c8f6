"""Every bad input to POST /v1/events and /v1/batch: its status, a problem+json body that names
the field or the limit, and nothing of it on the broker or in PostgreSQL.

The API here runs with small limits on a RabbitMQ vhost of its own that no worker consumes, so
the persist queue's depth shows exactly what the API published.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from ingest.config import Settings
from testlib.api import (
    AUTH,
    assert_problem,
    event,
    queued_messages,
    take_queued_events,
    unconsumed_api,
)
from testlib.data import stored_count
from testlib.wait import wait_until

EVENTS, BATCH = "/v1/events", "/v1/batch"
MAX_EVENT_BYTES, MAX_BATCH_EVENTS, MAX_BODY_BYTES = 2048, 3, 65536
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def limited(settings: Settings) -> Iterator[FlaskClient]:
    limits = {
        "max_event_bytes": MAX_EVENT_BYTES,
        "max_batch_events": MAX_BATCH_EVENTS,
        "max_body_bytes": MAX_BODY_BYTES,
    }
    with unconsumed_api(settings, "input", **limits) as client:
        yield client


def encode(document: Any) -> bytes:
    return json.dumps(document).encode()


def without(name: str) -> dict[str, Any]:
    sent = event("bad-1")
    del sent[name]
    return sent


@dataclass(frozen=True)
class Bad:
    """A bad request and how the problem must name what is wrong with it."""

    body: bytes
    status: int
    field: str | None = None  # a key of `errors`
    says: str = ""  # words in the field's first error, or in `detail` when there is no field
    limit: str | None = None  # `limit` of a 413, whose value `detail` repeats
    path: str = EVENTS
    headers: dict[str, str] = dataclasses.field(default_factory=lambda: dict(JSON))
    chunked: bool = False


def send(client: FlaskClient, bad: Bad) -> TestResponse:
    if bad.chunked:  # no Content-Length: the server has to count while it reads
        return client.post(
            bad.path,
            input_stream=io.BytesIO(bad.body),
            headers={**AUTH, **bad.headers},
            environ_overrides={"wsgi.input_terminated": True},
        )
    return client.post(bad.path, data=bad.body, headers={**AUTH, **bad.headers})


def invalid(name: str, says: str = "", path: str = EVENTS, **fields: Any) -> Bad:
    return Bad(encode({**event("bad-1"), **fields}), 422, field=name, says=says, path=path)


def unparsable(body: bytes, says: str, **headers: str) -> Bad:
    return Bad(body, 400, says=says, headers={**JSON, **headers})


def with_bytes(name: str, raw: bytes) -> bytes:
    """A valid event whose field `name` (or a payload value) holds `raw` bytes."""
    sent = event("bad-1")
    if name == "payload":
        sent["payload"]["note"] = "@@"
    else:
        sent[name] = "@@"
    return encode(sent).replace(b"@@", raw)


def nested(depth: int) -> dict[str, Any]:
    inner: dict[str, Any] = {}
    outer = inner
    for _ in range(depth - 1):
        inner["next"] = {}
        inner = inner["next"]
    return outer


BIG = "x" * MAX_EVENT_BYTES
GZIP = {**JSON, "Content-Encoding": "gzip"}
VALID_EVENT = event("bad-1")
VALID = encode(VALID_EVENT)
VALID_GZIP = gzip.compress(encode(event("gz-1")))


def unsupported(says: str, content_type: str | None, encoding: str | None = None) -> Bad:
    headers = {"Content-Type": content_type, "Content-Encoding": encoding}
    return Bad(VALID, 415, says=says, headers={k: v for k, v in headers.items() if v})


def too_large(limit: str, body: bytes, **options: Any) -> Bad:
    return Bad(body, 413, limit=limit, **options)


def bad_batch(body: Any, says: str, field: str | None = None) -> Bad:
    return Bad(encode(body), 422, field=field, says=says, path=BATCH)


OVER_BODY_LIMIT = b" " * MAX_BODY_BYTES + VALID
DEEP_PAYLOAD = VALID.replace(
    b'"payload": {', b'"payload": {"a": ' + b"[" * 10_000 + b"]" * 10_000 + b","
)


CASES = {
    # 400: not a JSON document
    "malformed JSON": unparsable(b'{"event_id": "a",', "not valid JSON"),
    "empty body": unparsable(b"", "not valid JSON"),
    "NaN": unparsable(b'{"x": NaN}', "NaN is not a JSON number"),
    "Infinity": unparsable(b'{"x": -Infinity}', "Infinity is not a JSON number"),
    "1e400": unparsable(VALID.replace(b'"total": 12.5', b'"total": 1e400'), "too large"),
    "huge integer": unparsable(b'{"x": 1' + b"0" * 5000 + b"}", "more than 4300 digits"),
    "nested 10,000 deep": unparsable(b"[" * 10_000 + b"]" * 10_000, "nested too deeply"),
    "payload nested 10,000 deep": unparsable(DEEP_PAYLOAD, "nested too deeply"),
    "raw NUL byte in a string": unparsable(with_bytes("source", b"a\x00b"), "control character"),
    "lone surrogate escape": unparsable(VALID.replace(b"order.created", b"\\ud800"), "lone UTF-16"),
    "lone surrogate in a key": unparsable(VALID.replace(b"order_id", b"\\udc00"), "lone UTF-16"),
    "UTF-8 BOM": unparsable(b"\xef\xbb\xbf" + VALID, "not valid JSON"),
    "broken gzip": unparsable(b"this is not gzip", "not valid gzip", **GZIP),
    "truncated gzip": unparsable(VALID_GZIP[:-12], "truncated", **GZIP),
    "gzip and trailing bytes": unparsable(VALID_GZIP + VALID_GZIP, "follow the end", **GZIP),
    "gzip of no bytes": unparsable(b"", "truncated", **GZIP),
    # 415
    "missing content type": unsupported("not 'missing'", None),
    "text/plain": unsupported("not 'text/plain'", "text/plain"),
    "form": unsupported("not 'multipart/form-data'", "multipart/form-data"),
    "latin-1": unsupported("not charset='latin-1'", "application/json; charset=latin-1"),
    "br": unsupported("Content-Encoding 'br'", "application/json", "br"),
    "deflate": unsupported("Content-Encoding 'deflate'", "application/json", "deflate"),
    # 422: a field is wrong, and `errors` says which
    **{
        f"missing {name}": Bad(encode(without(name)), 422, field=name, says="Missing data")
        for name in ("event_id", "event_type", "occurred_at", "payload")
    },
    "unknown field": invalid("priority", "Unknown field", priority="high"),
    "naive time": invalid("occurred_at", "no offset", occurred_at="2026-11-27T10:00:00"),
    "time 'yesterday'": invalid("occurred_at", "RFC 3339", occurred_at="yesterday"),
    "February 30": invalid("occurred_at", "RFC 3339", occurred_at="2026-02-30T10:00:00Z"),
    "date only": invalid("occurred_at", "RFC 3339", occurred_at="2026-11-27"),
    "hour 24": invalid("occurred_at", "RFC 3339", occurred_at="2026-11-27T24:00:00Z"),
    "offset +25:00": invalid("occurred_at", "RFC 3339", occurred_at="2026-11-27T10:00:00+25:00"),
    "time as a number": invalid("occurred_at", "RFC 3339", occurred_at=1764237600),
    "time and a newline": invalid("occurred_at", "RFC 3339", occurred_at="2026-11-27T10:00:00Z\n"),
    "before year 1000 in UTC": invalid(
        "occurred_at", "from 1000-01-01T00:00:00Z", occurred_at="1000-01-01T00:30:00+01:00"
    ),
    "after year 9999 in UTC": invalid(
        "occurred_at", "to 9999-12-31T23:59:59.999999Z", occurred_at="9999-12-31T23:30:00-01:00"
    ),
    "event_id of 129": invalid("event_id", "between 1 and 128", event_id="a" * 129),
    "empty event_id": invalid("event_id", "between 1 and 128", event_id=""),
    "event_id with a space": invalid("event_id", "letters, digits", event_id="order 1"),
    "event_id with a slash": invalid("event_id", "letters, digits", event_id="order/1"),
    "event_id in unicode": invalid("event_id", "letters, digits", event_id="заказ-1"),
    "event_id and a newline": invalid("event_id", "letters, digits", event_id="order-1\n"),
    "event_id with NUL": invalid("event_id", "letters, digits", event_id="order\x001"),
    "event_id a number": invalid("event_id", "Not a valid string", event_id=42),
    "event_type of 129": invalid("event_type", "between 1 and 128", event_type="t" * 129),
    "empty event_type": invalid("event_type", "between 1 and 128", event_type=""),
    "event_type with NUL": invalid("event_type", "NUL", event_type="order\x00created"),
    "event_type a list": invalid("event_type", "Not a valid string", event_type=["a"]),
    "source of 129": invalid("source", "maximum length 128", source="s" * 129),
    "source with NUL": invalid("source", "NUL", source="shop\x00"),
    "payload a list": invalid("payload", "Not a valid mapping", payload=[1, 2]),
    "payload a string": invalid("payload", "Not a valid mapping", payload="{}"),
    "payload null": invalid("payload", "may not be null", payload=None),
    "NUL in a payload string": invalid("payload", "NUL", payload={"note": "a\x00b"}),
    "NUL in a payload key": invalid("payload", "NUL", payload={"no\x00te": 1}),
    "payload 32 deep": invalid("payload", "deeper than 31 levels", payload=nested(32)),
    "body a list": Bad(encode([VALID_EVENT]), 422, says="a JSON object"),
    "body a string": Bad(b'"event"', 422, says="a JSON object"),
    # 413: over a limit; the body names the limit and its value
    "event over the limit": too_large(
        "INGEST_MAX_EVENT_BYTES", encode(event("big", payload={"blob": BIG}))
    ),
    "body over the limit": too_large("INGEST_MAX_BODY_BYTES", OVER_BODY_LIMIT),
    "chunked over the limit": too_large("INGEST_MAX_BODY_BYTES", OVER_BODY_LIMIT, chunked=True),
    "gzip over the limit": too_large(
        "INGEST_MAX_BODY_BYTES", gzip.compress(OVER_BODY_LIMIT), headers=GZIP
    ),
    "batch over the limit": too_large(
        "INGEST_MAX_BATCH_EVENTS",
        encode({"batch": [VALID_EVENT] * (MAX_BATCH_EVENTS + 1)}),
        path=BATCH,
    ),
    # the batch envelope
    "batch body a list": bad_batch([VALID_EVENT], '{"batch": [event, ...]}'),
    "batch missing": bad_batch({}, "Missing data", "batch"),
    "batch an object": bad_batch({"batch": VALID_EVENT}, "Not a valid list", "batch"),
    "batch null": bad_batch({"batch": None}, "may not be null", "batch"),
    "batch empty": bad_batch({"batch": []}, "no event", "batch"),
    "unknown key beside batch": bad_batch({"batch": [VALID_EVENT], "mode": 1}, "Unknown", "mode"),
    "batch malformed": Bad(b'{"batch": [', 400, says="not valid JSON", path=BATCH),
}


@pytest.mark.parametrize("bad", CASES.values(), ids=CASES.keys())
def test_a_bad_request_gets_a_problem_naming_what_is_wrong(limited: FlaskClient, bad: Bad) -> None:
    body = assert_problem(send(limited, bad), bad.status)

    if bad.field:
        assert list(body["errors"]) == [bad.field]
        assert bad.says in body["errors"][bad.field][0]
    elif bad.limit:
        limit_value = {
            "INGEST_MAX_EVENT_BYTES": MAX_EVENT_BYTES,
            "INGEST_MAX_BATCH_EVENTS": MAX_BATCH_EVENTS,
            "INGEST_MAX_BODY_BYTES": MAX_BODY_BYTES,
        }[bad.limit]
        assert (body["limit"], body["limit_value"]) == (bad.limit, limit_value)
        assert str(limit_value) in body["detail"]
    else:
        assert bad.says in body["detail"]


@pytest.mark.parametrize("name", ["event_id", "event_type", "source", "payload"])
@pytest.mark.parametrize("raw", [b"\xff\xfe", b"\xc0\xaf", b"\xed\xa0\x80", b"abc\xe2\x82"])
def test_invalid_utf8_in_any_field_is_a_400_naming_the_byte(
    limited: FlaskClient, name: str, raw: bytes
) -> None:
    sent = with_bytes(name, raw)

    body = assert_problem(send(limited, Bad(sent, 400)), 400)

    first_bad = sent.index(raw) + (3 if raw.startswith(b"abc") else 0)
    assert body["detail"] == f"The body is not valid UTF-8 (byte {first_bad})."


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-key", "Basic dGVzdC1rZXk6", "Bearer", "Bearer test-key-2", "test-key"],
)
@pytest.mark.parametrize("path", [EVENTS, BATCH, "/v1/events/order-1"])
def test_a_missing_or_wrong_key_is_a_401_with_www_authenticate(
    limited: FlaskClient, authorization: str | None, path: str
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    if path == "/v1/events/order-1":
        response = limited.get(path, headers=headers)
    else:  # a bad body too: the key is checked before the body is read
        response = limited.post(path, data=b"{", headers={**JSON, **headers})

    body = assert_problem(response, 401)
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="ingest"'
    assert "Authorization: Bearer <key>" in body["detail"]


def test_a_gzip_body_is_accepted_and_published_as_sent(limited: FlaskClient) -> None:
    take_queued_events(limited)

    response = limited.post(EVENTS, data=VALID_GZIP, headers={**AUTH, **GZIP})

    assert response.status_code == 202
    assert response.json == {"event_id": "gz-1", "status": "accepted"}
    [published] = take_queued_events(limited)
    assert published["event_id"] == "gz-1"
    assert published["payload"] == event("gz-1")["payload"]


def test_a_batch_accepts_its_valid_events_and_names_each_bad_one(limited: FlaskClient) -> None:
    take_queued_events(limited)
    batch = [
        event("ok-1"),
        event("bad id", occurred_at="2026-11-27"),
        event("ok-2", payload={"blob": BIG}),
    ]

    response = limited.post(BATCH, json={"batch": batch}, headers=AUTH)

    assert response.status_code == 202
    assert response.json["accepted"] == 1
    assert response.json["rejected"] == 2
    ok, bad_fields, too_big = response.json["results"]
    assert ok == {"index": 0, "event_id": "ok-1", "status": "accepted"}
    assert bad_fields["index"] == 1
    assert bad_fields["event_id"] == "bad id"
    assert bad_fields["status"] == "rejected"
    assert set(bad_fields["errors"]) == {"event_id", "occurred_at"}
    assert too_big["index"] == 2
    assert too_big["status"] == "rejected"
    assert f"INGEST_MAX_EVENT_BYTES limit of {MAX_EVENT_BYTES}" in too_big["errors"]["_event"][0]
    assert [sent["event_id"] for sent in take_queued_events(limited)] == ["ok-1"]


def test_a_batch_with_no_valid_event_is_a_422_with_every_result(limited: FlaskClient) -> None:
    batch = [event("bad id"), "not an event", without("payload")]

    body = assert_problem(limited.post(BATCH, json={"batch": batch}, headers=AUTH), 422)

    assert [(r["index"], r["status"]) for r in body["results"]] == [
        (0, "rejected"),
        (1, "rejected"),
        (2, "rejected"),
    ]
    assert list(body["results"][0]["errors"]) == ["event_id"]
    assert body["results"][1]["event_id"] is None
    assert body["results"][1]["errors"] == {"_event": ["Each event must be a JSON object."]}
    assert body["results"][2]["errors"] == {"payload": ["Missing data for required field."]}


def test_no_rejected_request_reaches_the_broker_or_postgresql(
    limited: FlaskClient, clean: Settings
) -> None:
    take_queued_events(limited)
    utf8 = [Bad(with_bytes(name, b"\xff"), 400) for name in ("event_id", "payload")]

    for bad in [*CASES.values(), *utf8]:
        assert 400 <= send(limited, bad).status_code < 500

    assert queued_messages(limited) == 0
    assert stored_count(clean) == 0
    # The control: an accepted event does move the count the assertions above watch.
    assert limited.post(EVENTS, json=event("control-1"), headers=AUTH).status_code == 202
    wait_until(lambda: queued_messages(limited) == 1, timeout=10, what="the control")
    assert [sent["event_id"] for sent in take_queued_events(limited)] == ["control-1"]


def exactly(size: int) -> dict[str, Any]:
    """A valid event of `size` bytes as compact JSON, the measure of INGEST_MAX_EVENT_BYTES."""
    sent = event("exact-1", payload={"blob": ""})
    padding = size - len(json.dumps(sent, separators=(",", ":")).encode())
    sent["payload"]["blob"] = "x" * padding
    return sent


def test_every_limit_itself_is_accepted(limited: FlaskClient) -> None:
    take_queued_events(limited)
    at_limits = [
        event("a" * 128, event_type="t" * 128, source="s" * 128, payload=nested(31)),
        exactly(MAX_EVENT_BYTES),
        event("time-1", occurred_at="1000-01-01T00:00:00Z"),
        event("time-2", occurred_at="9999-12-31T23:59:59.999999-00:00"),
        event("time-3", occurred_at="2026-11-27t10:00:00.123456789z"),
    ]
    spaced = b" " * (MAX_BODY_BYTES - len(VALID)) + VALID
    full_batch = {"batch": [event(f"full-{i}") for i in range(MAX_BATCH_EVENTS)]}

    for sent in at_limits:
        assert limited.post(EVENTS, json=sent, headers=AUTH).status_code == 202, sent["event_id"]
    assert limited.post(EVENTS, data=spaced, headers={**AUTH, **JSON}).status_code == 202
    gzipped = gzip.compress(spaced)
    assert limited.post(EVENTS, data=gzipped, headers={**AUTH, **GZIP}).status_code == 202
    assert limited.post(BATCH, json=full_batch, headers=AUTH).json["accepted"] == MAX_BATCH_EVENTS

    published = sorted(sent["event_id"] for sent in take_queued_events(limited))
    expected = [sent["event_id"] for sent in at_limits] + ["bad-1", "bad-1"]
    assert published == sorted(expected + [f"full-{i}" for i in range(MAX_BATCH_EVENTS)])
    one_over = limited.post(EVENTS, json=exactly(MAX_EVENT_BYTES + 1), headers=AUTH)
    assert assert_problem(one_over, 413)["limit"] == "INGEST_MAX_EVENT_BYTES"
