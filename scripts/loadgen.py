"""The benchmark's HTTP load generator: keep-alive HTTP/1.1 connections on asyncio.

It runs in a process of its own (`run_in_process`), so its CPU and GIL stay apart from the
benchmark's sampling. Request bodies are built before the clock starts: the process says when it
is ready and starts when told, so the benchmark can open its measuring window just before the
first request. Traffic goes to 127.0.0.1 only, and every run stops at its deadline.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from typing import Any

HOST = "127.0.0.1"
# A request that fails before any answer (connection dropped, timeout) is sent again, as a
# client would; event ids make that safe, and the retries are reported.
ATTEMPTS = 3
# What the process sends once its requests are built; any answer starts the load.
READY = "ready"

EVENT_TYPES = ("order.created", "order.paid", "cart.updated", "page.view", "user.signed_in")
PRODUCTS = ("espresso beans 1kg", "ceramic mug", "milk frother", "paper filters", "grinder")
COUNTRIES = ("DE", "FR", "NL", "PL", "ES", "IT", "SE")
OFFSETS = ("+00:00", "+01:00", "-05:00", "+05:30", "Z")
BASE_TIME = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)


@dataclass(frozen=True)
class LoadSpec:
    port: int
    path: str
    events: int
    # Events per request: 1 posts single events, more posts {"batch": [...]} bodies.
    batch_size: int
    concurrency: int
    prefix: str
    api_key: str
    timeout: float
    request_timeout: float = 60.0
    # Segment `track` messages to /segment/v1/batch instead of ingest events.
    segment: bool = False

    @property
    def accepted_status(self) -> int:
        return 200 if self.segment else 202


@dataclass
class LoadResult:
    events_sent: int = 0
    events_accepted: int = 0
    requests: int = 0
    retries: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    started_wall: float = 0.0
    started: float = 0.0
    finished: float = 0.0
    errors: list[str] = field(default_factory=list)
    aborted: str | None = None
    # This process's own CPU (user + system) from the first request to the last answer.
    cpu_seconds: float = 0.0

    @property
    def accept_seconds(self) -> float:
        return max(self.finished - self.started, 1e-9)


def make_event(prefix: str, index: int, rng: random.Random) -> dict[str, Any]:
    """A realistic event of 300-500 bytes of payload, unique by its event_id."""
    items = [
        {
            "sku": f"SKU-{rng.randrange(100_000):05d}",
            "name": rng.choice(PRODUCTS),
            "qty": rng.randint(1, 4),
            "unit_price": round(rng.uniform(2, 90), 2),
        }
        for _ in range(rng.randint(1, 2))
    ]
    occurred = BASE_TIME + timedelta(milliseconds=index * 7 + rng.randrange(1000))
    return {
        "event_id": f"{prefix}-{index:07d}",
        "event_type": rng.choice(EVENT_TYPES),
        "occurred_at": occurred.isoformat(timespec="milliseconds").replace(
            "+00:00", rng.choice(OFFSETS)
        ),
        "source": "bench-shop",
        "payload": {
            "order_id": f"ord-{index:08d}",
            "customer": {
                "id": rng.randrange(1_000_000),
                "email": f"customer{rng.randrange(1_000_000)}@example.com",
                "country": rng.choice(COUNTRIES),
            },
            "items": items,
            "total": round(sum(item["qty"] * item["unit_price"] for item in items), 2),
            "currency": "EUR",
            "session": {
                "id": f"{rng.getrandbits(64):016x}",
                "user_agent": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101",
                "referrer": "https://shop.example.com/catalog?page=2",
            },
        },
    }


def segment_message(event: dict[str, Any]) -> dict[str, Any]:
    """The event as the `track` call a Segment SDK sends; its messageId is the event_id, which
    the Segment API keeps as it is."""
    return {
        "type": "track",
        "messageId": event["event_id"],
        "userId": f"user-{event['payload']['customer']['id']}",
        "event": event["event_type"],
        "properties": event["payload"],
        "timestamp": event["occurred_at"],
        "context": {"library": {"name": "analytics-python", "version": "2.4.0"}},
    }


def request_bodies(spec: LoadSpec) -> list[tuple[int, bytes]]:
    """Every request of the run as (events in it, the raw HTTP request)."""
    rng = random.Random(spec.prefix)
    shape = segment_message if spec.segment else dict
    events = [
        json.dumps(shape(make_event(spec.prefix, index, rng)), separators=(",", ":"))
        for index in range(spec.events)
    ]
    if spec.batch_size <= 1:
        bodies = [(1, event.encode()) for event in events]
    else:
        bodies = [
            (len(chunk), ('{"batch":[' + ",".join(chunk) + "]}").encode())
            for chunk in (
                events[start : start + spec.batch_size]
                for start in range(0, len(events), spec.batch_size)
            )
        ]
    # Segment's SDKs send the write key as the Basic user name with an empty password.
    authorization = (
        f"Basic {base64.b64encode(f'{spec.api_key}:'.encode()).decode()}"
        if spec.segment
        else f"Bearer {spec.api_key}"
    )
    head = (
        f"POST {spec.path} HTTP/1.1\r\nHost: {HOST}:{spec.port}\r\n"
        f"Authorization: {authorization}\r\nContent-Type: application/json\r\n"
    )
    return [
        (count, f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        for count, body in bodies
    ]


class ProtocolError(Exception):
    pass


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes, bool]:
    """Send one request and read its answer: (status, body, whether the server closes)."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lowered = head.lower()
    start = lowered.find(b"\r\ncontent-length:")
    if start < 0:
        raise ProtocolError(f"answer without Content-Length: {head[:200]!r}")
    end = lowered.index(b"\r\n", start + 2)
    body = await reader.readexactly(int(lowered[start + 17 : end]))
    return status, body, b"\r\nconnection: close" in lowered


def _accepted_events(spec: LoadSpec, status: int, body: bytes, sent: int) -> int:
    if status != spec.accepted_status:
        return 0
    if spec.segment:
        # Segment's answer names no count: success covers every message of the request.
        return sent if json.loads(body) == {"success": True} else 0
    return int(json.loads(body)["accepted"]) if spec.batch_size > 1 else sent


async def _client(
    spec: LoadSpec, requests: Iterator[tuple[int, bytes]], result: LoadResult, deadline: float
) -> None:
    streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    try:
        for sent, request in requests:
            if time.monotonic() > deadline:
                result.aborted = f"the run passed its {spec.timeout:.0f}s limit"
                return
            for attempt in range(ATTEMPTS):
                started = time.perf_counter()
                try:
                    async with asyncio.timeout(spec.request_timeout):
                        if streams is None:
                            streams = await asyncio.open_connection(HOST, spec.port)
                        status, body, closing = await _exchange(*streams, request)
                except (OSError, EOFError, TimeoutError, ProtocolError, ValueError) as exc:
                    if streams is not None:
                        streams[1].close()
                    streams = None
                    if len(result.errors) < 20:
                        result.errors.append(f"{type(exc).__name__}: {exc}")
                    if attempt + 1 < ATTEMPTS:
                        result.retries += 1
                        continue
                    status, body, closing = 0, b"", True
                result.latencies_ms.append((time.perf_counter() - started) * 1000)
                break
            result.requests += 1
            result.events_sent += sent
            result.statuses[status] = result.statuses.get(status, 0) + 1
            result.events_accepted += _accepted_events(spec, status, body, sent)
            if status not in (0, spec.accepted_status) and len(result.errors) < 20:
                result.errors.append(f"HTTP {status}: {body[:300]!r}")
            if closing and streams is not None:
                streams[1].close()
                streams = None
    finally:
        if streams is not None:
            streams[1].close()


async def _run(spec: LoadSpec, requests: list[tuple[int, bytes]]) -> LoadResult:
    result = LoadResult(started_wall=time.time(), started=time.monotonic())
    deadline = result.started + spec.timeout
    shared = iter(requests)
    await asyncio.gather(
        *(_client(spec, shared, result, deadline) for _ in range(spec.concurrency))
    )
    result.finished = time.monotonic()
    return result


def run_in_process(spec: LoadSpec, control: Connection) -> None:
    """multiprocessing target: builds the requests, sends READY, waits for any message, runs the
    load and sends its LoadResult. The parent stops this process; Ctrl-C is the parent's."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    requests = request_bodies(spec)
    control.send(READY)
    control.recv()
    cpu_start = time.process_time()
    result = asyncio.run(_run(spec, requests))
    result.cpu_seconds = time.process_time() - cpu_start
    control.send(result)
    control.close()
