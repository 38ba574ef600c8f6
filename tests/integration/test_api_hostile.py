"""Hostile input: a gzip bomb, hostile ids in the URL, and random bytes and mutated events.

Whatever arrives, the API answers a clean 4xx quickly, never a 5xx, and a 2xx only for events
that the rules of docs/http-api.md accept; those and only those reach the broker.
"""

from __future__ import annotations

import json
import math
import random
import re
import struct
import sys
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from flask.testing import FlaskClient

from ingest.config import Settings
from testlib.api import AUTH, READ_AUTH, assert_problem, event, take_queued_events, unconsumed_api

GIB = 1 << 30
MIB = 1 << 20


def gzip_of_zeros(size: int) -> bytes:
    """A gzip stream of `size` zero bytes (a multiple of 1 MiB), made without holding them.

    After a full flush deflate starts afresh, so every MiB of zeros compresses to the same block.
    """
    zeros = bytes(MIB)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    block = deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(size // MIB):
        crc = zlib.crc32(zeros, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    trailer = struct.pack("<II", crc, size & 0xFFFFFFFF)
    return header + block * (size // MIB) + deflate.flush() + trailer


def inflated_size(gzipped: bytes) -> int:
    """Inflate 1 MiB at a time and count: proves the bomb is what it claims to be."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    size, data = 0, gzipped
    while data:
        size += len(inflater.decompress(data, MIB))
        data = inflater.unconsumed_tail
    assert inflater.eof
    return size


def test_a_gzip_bomb_is_a_quick_413_without_inflating_it(
    client: FlaskClient, settings: Settings
) -> None:
    bomb = gzip_of_zeros(GIB)
    assert len(bomb) < settings.max_body_bytes // 4
    assert inflated_size(bomb) == GIB

    tracemalloc.start()
    try:
        started = time.monotonic()
        response = client.post(
            "/v1/events",
            data=bomb,
            headers={**AUTH, "Content-Type": "application/json", "Content-Encoding": "gzip"},
        )
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    body = assert_problem(response, 413)
    assert body["limit"] == "INGEST_MAX_BODY_BYTES"
    assert body["limit_value"] == settings.max_body_bytes
    assert "after decompression" in body["detail"]
    # Inflating it all would take a GiB and seconds; the API stops one byte past the limit.
    assert peak < settings.max_body_bytes * 6, f"peak {peak / MIB:.0f} MiB"
    assert elapsed < 5, f"{elapsed:.1f}s"


@pytest.mark.parametrize(
    "event_id",
    ["a%00b", "a" * 129, "%FF", "%ED%A0%80", "a%0A", "%3Cb%3E", "%F0%9F%98%80", "a b"],
    ids=["NUL", "129", "latin-1", "surrogate", "newline", "markup", "emoji", "space"],
)
def test_a_hostile_id_in_the_url_is_a_404_not_an_error(client: FlaskClient, event_id: str) -> None:
    body = assert_problem(client.get(f"/v1/events/{event_id}", headers=READ_AUTH), 404)

    assert "1 to 128 letters, digits" in body["detail"]


def test_thousands_of_unknown_fields_get_a_short_answer(client: FlaskClient) -> None:
    crowded = {f"field-{i}": i for i in range(300)}
    body = json.dumps({"batch": [crowded] * 1000}).encode()

    response = client.post(
        "/v1/batch", data=body, headers={**AUTH, "Content-Type": "application/json"}
    )

    problem = assert_problem(response, 422)
    assert len(response.get_data()) < len(body) / 10
    errors = problem["results"][999]["errors"]
    assert errors["_schema"] == ["300 unknown fields; 10 of them are named."]
    assert sorted(errors) == sorted([*(f"field-{i}" for i in range(10)), "_schema"])


# The rules of the event table in docs/http-api.md, written out again as the oracle for the fuzzer.
FIELDS = {"event_id", "event_type", "occurred_at", "source", "payload"}
EVENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
MAX_PAYLOAD_DEPTH = 31
MAX_PAYLOAD_INTEGER = int(sys.float_info.max)
MAX_EVENT_BYTES, MAX_BATCH_EVENTS, MAX_BODY_BYTES = 1024, 4, 8192


def is_text(value: Any, shortest: int) -> bool:
    return isinstance(value, str) and shortest <= len(value) <= 128 and "\x00" not in value


def is_time(value: Any) -> bool:
    if not isinstance(value, str) or not TIME.fullmatch(value):
        return False
    try:
        datetime.fromisoformat(value.upper()).astimezone(UTC)
    except (ValueError, OverflowError):
        return False
    return True


def is_clean(value: Any, depth: int = 1) -> bool:
    """No NUL in a key or string, no object or array deeper than MAX_PAYLOAD_DEPTH, no integer
    beyond a double's range."""
    if isinstance(value, (dict, list)) and depth > MAX_PAYLOAD_DEPTH:
        return False
    if isinstance(value, dict):
        return all("\x00" not in k and is_clean(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return all(is_clean(item, depth + 1) for item in value)
    if isinstance(value, int) and abs(value) > MAX_PAYLOAD_INTEGER:
        return False
    return not (isinstance(value, str) and "\x00" in value)


def is_valid_event(document: Any) -> bool:
    if not isinstance(document, dict) or not set(document) <= FIELDS:
        return False
    compact = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
    return (
        len(compact) <= MAX_EVENT_BYTES
        and isinstance(document.get("event_id"), str)
        and EVENT_ID.fullmatch(document["event_id"]) is not None
        and is_text(document.get("event_type"), 1)
        and is_time(document.get("occurred_at"))
        and (document.get("source") is None or is_text(document["source"], 0))
        and isinstance(document.get("payload"), dict)
        and is_clean(document["payload"])
    )


def strict_json(body: bytes) -> tuple[bool, Any]:
    """(True, document) when `body` is one JSON text (RFC 8259) in UTF-8, else (False, None)."""

    def refuse(token: str) -> Any:
        raise ValueError(token)

    def finite(token: str) -> float:
        if math.isinf(value := float(token)):
            raise ValueError(token)
        return value

    try:
        document = json.loads(body.decode(), parse_constant=refuse, parse_float=finite)
        json.dumps(document, ensure_ascii=False).encode()  # a lone surrogate fails here
    except (ValueError, RecursionError):
        return False, None
    return True, document


def gunzip_strict(body: bytes) -> bytes | None:
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        inflated = inflater.decompress(body, MAX_BODY_BYTES + 1)
    except zlib.error:
        return None
    if not inflater.eof or inflater.unused_data or len(inflated) > MAX_BODY_BYTES:
        return None
    return inflated


def expected_accepted(path: str, body: bytes | None) -> int:
    """How many events the rules of docs/http-api.md accept from this (inflated) body."""
    if body is None or len(body) > MAX_BODY_BYTES:
        return 0
    parsed, document = strict_json(body)
    if not parsed:
        return 0
    if path == "/v1/events":
        return int(is_valid_event(document))
    if not isinstance(document, dict) or set(document) != {"batch"}:
        return 0
    batch = document["batch"]
    if not isinstance(batch, list) or not 1 <= len(batch) <= MAX_BATCH_EVENTS:
        return 0
    return sum(is_valid_event(item) for item in batch)


NASTY = [
    None, True, 0, -1, 2.5, 10**30, "", " ", "x" * 128, "x" * 129, "\x00", "é", "a\nb", "\ud800",
    "2026-02-30T00:00:00Z", "2026-11-27T10:00:00Z", "2026-11-27T10:00:00", [], [1], {},
    {"k": "\x00"}, {"\x00": 1}, "order:42", {"blob": "x" * MAX_EVENT_BYTES}, "x" * MAX_BODY_BYTES,
]  # fmt: skip
JSONISH = b'{}[]":,\\ 0123456789eE.-+aznulltrue\x00\x7f\xc3\xa9\xed\xa0\x80\xff'


def mutate(rng: random.Random, data: bytes) -> bytes:
    """A few random byte edits, mostly with bytes that mean something to JSON."""
    buffer = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(len(buffer) + 1)
        byte = rng.choice(JSONISH) if rng.random() < 0.8 else rng.randrange(256)
        edit = rng.randrange(3)
        if edit == 0 and at < len(buffer):
            buffer[at] = byte
        elif edit == 1:
            buffer.insert(at, byte)
        elif at < len(buffer):
            del buffer[at]
    return bytes(buffer)


def with_nasty_field(rng: random.Random, document: dict[str, Any]) -> dict[str, Any]:
    target = rng.choice(document["batch"]) if "batch" in document else document
    name = rng.choice([*sorted(FIELDS), "extra"])
    if rng.random() < 0.2:
        target.pop(name, None)
    else:
        target[name] = rng.choice(NASTY)
    return document


# Headers that are wrong whatever the body, and the status each must get.
BAD_HEADERS: list[tuple[dict[str, str], int]] = [
    ({"Authorization": "Bearer not-the-key"}, 401),
    ({"Authorization": ""}, 401),
    ({"Content-Type": "text/plain"}, 415),
    ({"Content-Type": "application/json; charset=utf-16"}, 415),
    ({"Content-Encoding": "br"}, 415),
]


def fuzz_requests(rng: random.Random) -> Iterator[tuple[str, bytes, dict[str, str], int | None]]:
    """Endless (path, body, headers, status the headers force): random bytes, and valid
    requests more or less broken."""
    for n in range(10**9):
        path = rng.choice(["/v1/events", "/v1/batch"])
        events = [event(f"fuzz-{n}-{i}", source=None) for i in range(rng.randint(1, 5))]
        document: dict[str, Any] = events[0] if path == "/v1/events" else {"batch": events}
        kind = rng.randrange(6)
        if kind == 0:
            body = rng.randbytes(rng.randrange(80))
        elif kind == 1:
            body = mutate(rng, json.dumps(document).encode())
        elif kind in (2, 3):
            body = json.dumps(with_nasty_field(rng, document)).encode()
        elif kind == 4:
            encoded = json.dumps(document).encode()
            body = encoded[: rng.randrange(len(encoded))]
        else:
            body = json.dumps(document).encode()
        headers = {**AUTH, "Content-Type": "application/json"}
        if rng.random() < 0.1:
            headers["Content-Encoding"] = "gzip"
            body = zlib.compress(body, wbits=16 + zlib.MAX_WBITS) if rng.random() < 0.8 else body
        forced = None
        if rng.random() < 0.05:
            wrong, forced = rng.choice(BAD_HEADERS)
            headers.update(wrong)
        yield path, body, headers, forced


@pytest.fixture(scope="module")
def fuzzed(settings: Settings) -> Iterator[FlaskClient]:
    limits = {
        "max_event_bytes": MAX_EVENT_BYTES,
        "max_batch_events": MAX_BATCH_EVENTS,
        "max_body_bytes": MAX_BODY_BYTES,
    }
    with unconsumed_api(settings, "fuzz", **limits) as client:
        yield client


def test_random_and_mutated_requests_get_a_clean_answer(fuzzed: FlaskClient) -> None:
    rng = random.Random(20261127)
    statuses: dict[int, int] = {}
    accepted_ids: list[str] = []
    slowest = 0.0
    deadline = time.monotonic() + 60
    for count, (path, body, headers, forced) in enumerate(fuzz_requests(rng), start=1):
        gzipped = headers.get("Content-Encoding") == "gzip"
        inflated = gunzip_strict(body) if gzipped else body
        expected = 0 if forced else expected_accepted(path, inflated)

        started = time.monotonic()
        response = fuzzed.post(path, data=body, headers=headers)
        slowest = max(slowest, time.monotonic() - started)

        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        context = f"request {count}: {path} {headers} {body[:300]!r}"
        if expected:
            assert response.status_code == 202, f"{context} -> {response.get_data()[:500]!r}"
            results = [response.json] if path == "/v1/events" else response.json["results"]
            accepted = [r["event_id"] for r in results if r["status"] == "accepted"]
            assert len(accepted) == expected, context
            accepted_ids.extend(accepted)
        else:
            assert response.status_code in ((forced,) if forced else (400, 413, 422)), context
            assert_problem(response, response.status_code)
        if count >= 600 or time.monotonic() > deadline:
            break

    assert count >= 200, f"only {count} requests in the time bound"
    assert slowest < 2, f"one request took {slowest:.1f}s"
    # The fuzzer reached both sides: accepted events and each kind of refusal.
    assert statuses[202] >= 20 and {400, 401, 413, 415, 422} <= set(statuses), statuses
    published = [sent["event_id"] for sent in take_queued_events(fuzzed)]
    assert sorted(published) == sorted(accepted_ids)
