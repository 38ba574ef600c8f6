"""What this machine can do without ingest: confirmed persistent publishes into a quorum queue,
event rows in 100-row INSERTs into a table shaped like `events`, and the bare Flask app on the
API's server."""

from __future__ import annotations

import hashlib
import json
import logging
import random
import secrets
import time
from datetime import UTC, datetime
from typing import Any

from bench_cpu import CpuMeter
from bench_load import generate
from bench_report import INSERT_ROWS, LimitRun, Options, Results, percentile
from bench_stack import BenchError, BenchStack
from loadgen import LoadSpec, make_event
from psycopg2.extras import execute_values

logger = logging.getLogger(__name__)

SCRATCH_QUEUE = "bench.publish-limit"
SCRATCH_TABLE = "bench_insert_limit"


def sample_events(count: int) -> list[dict[str, Any]]:
    rng = random.Random("limits")
    return [make_event("limit", index, rng) for index in range(count)]


def rabbitmq_publish_rate(
    stack: BenchStack, meter: CpuMeter, seconds: float, body: bytes
) -> LimitRun:
    """Persistent messages with publisher confirms from one publisher, into a quorum queue as
    the service's queues are, one confirm awaited per message as the API does."""
    with stack.broker(transport_options={"confirm_publish": True}) as connection:
        channel = connection.channel()
        channel.queue_declare(
            SCRATCH_QUEUE, durable=True, auto_delete=False, arguments={"x-queue-type": "quorum"}
        )
        channel.queue_purge(SCRATCH_QUEUE)
        producer = connection.Producer(channel)
        published = 0
        cpu_start = meter.snapshot()
        started = time.monotonic()
        finish = started + seconds
        while time.monotonic() < finish:
            producer.publish(
                body,
                exchange="",
                routing_key=SCRATCH_QUEUE,
                delivery_mode=2,
                content_type="application/json",
                content_encoding="utf-8",
                confirm_timeout=10,
            )
            published += 1
        elapsed = time.monotonic() - started
        cpu = meter.use(cpu_start, meter.snapshot())
        channel.queue_purge(SCRATCH_QUEUE)
    return LimitRun(published, elapsed, cpu)


def delete_scratch_queue(stack: BenchStack) -> None:
    with stack.broker() as connection:
        connection.channel().queue_delete(SCRATCH_QUEUE)


def postgres_insert_rate(
    stack: BenchStack, meter: CpuMeter, seconds: float, events: list[dict[str, Any]]
) -> LimitRun:
    """Event rows in 100-row INSERT .. ON CONFLICT DO NOTHING statements, one commit each, into
    a scratch table shaped like `events` (its columns, constraints and indexes)."""
    received_at = datetime.now(UTC).isoformat()
    shapes = [
        (
            event["event_type"],
            event["source"],
            event["occurred_at"],
            received_at,
            json.dumps(event["payload"]),
            hashlib.sha256(
                json.dumps(event["payload"], sort_keys=True, separators=(",", ":")).encode()
            ).hexdigest(),
        )
        for event in events
    ]
    run = secrets.token_hex(4)
    connection = stack.postgres()
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                f"CREATE TABLE IF NOT EXISTS {SCRATCH_TABLE} (LIKE events INCLUDING ALL)"
            )
            cursor.execute(f"TRUNCATE {SCRATCH_TABLE}")
            statement = (
                f"INSERT INTO {SCRATCH_TABLE} (event_id, event_type, source, occurred_at,"
                " received_at, payload, payload_sha256) VALUES %s"
                " ON CONFLICT (event_id) DO NOTHING"
            )
            inserted = 0
            cpu_start = meter.snapshot()
            started = time.monotonic()
            finish = started + seconds
            while time.monotonic() < finish:
                rows = [
                    (f"{run}-{inserted + index}", *shapes[(inserted + index) % len(shapes)])
                    for index in range(INSERT_ROWS)
                ]
                execute_values(
                    cursor,
                    statement,
                    rows,
                    template="(%s, %s, %s, %s, %s, %s::jsonb, %s)",
                    page_size=INSERT_ROWS,
                )
                inserted += INSERT_ROWS
            elapsed = time.monotonic() - started
            cpu = meter.use(cpu_start, meter.snapshot())
    finally:
        connection.close()
    return LimitRun(inserted, elapsed, cpu)


def measure_limits(stack: BenchStack, meter: CpuMeter, options: Options, results: Results) -> None:
    events = sample_events(2_000)
    body = json.dumps(events[0], separators=(",", ":")).encode()
    for number in range(1, options.runs + 1):
        run = rabbitmq_publish_rate(stack, meter, options.limit_seconds, body)
        results.rabbitmq.append(run)
        logger.info("RabbitMQ run %d: %.0f confirmed persistent publishes/s", number, run.rate)
    delete_scratch_queue(stack)
    for number in range(1, options.runs + 1):
        run = postgres_insert_rate(stack, meter, options.limit_seconds, events)
        results.postgres.append(run)
        logger.info(
            "PostgreSQL run %d: %.0f rows/s in %d-row INSERTs", number, run.rate, INSERT_ROWS
        )
    stack.postgres_one(f"DROP TABLE IF EXISTS {SCRATCH_TABLE}")

    bare = stack.start_bare()
    meter.watch("bare", bare.pid)
    try:
        for number in range(1, options.runs + 1):
            load, cpu_start = generate(
                LoadSpec(
                    port=bare.port,
                    path="/v1/events",
                    events=options.single_events,
                    batch_size=1,
                    concurrency=options.single_concurrency,
                    prefix=f"bare-{number}",
                    api_key=stack.api_key,
                    timeout=options.run_timeout,
                ),
                f"bare Flask run {number}",
                meter,
            )
            cpu = meter.use(cpu_start, meter.snapshot(), loadgen=load.cpu_seconds)
            if load.statuses != {202: load.requests}:
                raise BenchError(f"the bare endpoint answered {load.statuses}: {load.errors[:3]}")
            run = LimitRun(load.requests, load.accept_seconds, cpu, load.latencies_ms)
            results.bare.append(run)
            logger.info(
                "Bare Flask run %d: %.0f requests/s, p99 %.1f ms",
                number,
                run.rate,
                percentile(run.latencies_ms, 99),
            )
    finally:
        meter.unwatch("bare")
        stack.stop(bare)
