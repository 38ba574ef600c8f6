"""The benchmark of issue 4: what this machine can do, and what ingest does on it.

    .venv/bin/python scripts/benchmark.py            # the full benchmark, 3 runs of each figure
    .venv/bin/python scripts/benchmark.py --quick    # a small end-to-end check of the script

It creates its own PostgreSQL and MariaDB databases and RabbitMQ vhost on the local servers,
migrates them, starts the API (gunicorn) and the persist and projection workers itself, runs the
load from a separate process over keep-alive HTTP/1.1 on 127.0.0.1, and prints Markdown tables
(each figure the median of the runs, with min and max). Everything it started or created is
stopped and dropped at the end, also on Ctrl-C or an error. Progress goes to stderr, the tables
to stdout. The exit status is 1 when a run failed or was not correct.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import multiprocessing
import os
import platform
import random
import secrets
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

from bench_stack import (
    DEAD_QUEUE,
    GUNICORN_SETTINGS,
    PERSIST_QUEUE,
    PROJECTION_QUEUE,
    ROOT,
    START_TIMEOUT,
    BenchError,
    BenchStack,
    HttpServer,
    RssSampler,
    Servers,
    TableCounts,
    wait_for,
)
from loadgen import LoadResult, LoadSpec, make_event, run_in_process
from psycopg2.extras import execute_values

logger = logging.getLogger("benchmark")

MIB = 1024 * 1024
# Time for the load generator's process to start and build its request bodies.
BUILD_ALLOWANCE = 180.0
POLL_INTERVAL = 0.5
SCRATCH_QUEUE = "bench.publish-limit"
SCRATCH_TABLE = "bench_insert_limit"
INSERT_ROWS = 100
GROUPS = ("api", "persist", "projection")
GROUP_LABELS = {
    "api": "API (gunicorn master + workers)",
    "persist": "persist worker (celery main + pool)",
    "projection": "projection worker (celery main + pool)",
}
# Memory counts as growing when it rises by more than this fraction and GROWTH_FLOOR: from a
# quarter into a run to its end, or from the first run's peak to the last run's.
GROWTH_RATIO = 0.10
GROWTH_FLOOR = 8 * MIB
# Where a run's memory is taken as warmed up: this fraction of the way through it.
SETTLED_AT = 0.25


@dataclass(frozen=True)
class MemoryTrace:
    """RSS of one process tree during one run, in bytes."""

    start: int
    settled: int
    peak: int
    end: int


@dataclass(frozen=True)
class Options:
    runs: int
    single_events: int
    single_concurrency: int
    batch_events: int
    batch_size: int
    batch_concurrency: int
    limit_seconds: float
    run_timeout: float


@dataclass
class PipelineRun:
    scenario: str
    number: int
    load: LoadResult
    postgres: TableCounts | None = None
    mysql: TableCounts | None = None
    dead_letters: int = 0
    postgres_seconds: float = float("nan")
    mysql_seconds: float = float("nan")
    memory: dict[str, MemoryTrace] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def accept_rate(self) -> float:
        return self.load.events_accepted / self.load.accept_seconds

    @property
    def end_to_end_rate(self) -> float:
        return self.load.events_sent / max(self.postgres_seconds, self.mysql_seconds)

    def latency(self, quantile: float) -> float:
        return percentile(self.load.latencies_ms, quantile)


@dataclass
class Results:
    options: Options
    context: dict[str, str] = field(default_factory=dict)
    rabbitmq: list[float] = field(default_factory=list)
    postgres: list[float] = field(default_factory=list)
    bare: list[LoadResult] = field(default_factory=list)
    pipeline: list[PipelineRun] = field(default_factory=list)
    failure: str | None = None

    def runs(self, scenario: str) -> list[PipelineRun]:
        return [run for run in self.pipeline if run.scenario == scenario]


def percentile(values: Sequence[float], quantile: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(quantile / 100 * len(ordered)) - 1))]


# -- running the load ----------------------------------------------------------------------


def generate(spec: LoadSpec, label: str) -> LoadResult:
    """Run the load generator in its own process and return what it measured."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=run_in_process, args=(spec, sender), name="loadgen")
    process.start()
    sender.close()
    try:
        if not receiver.poll(spec.timeout + BUILD_ALLOWANCE):
            raise BenchError(
                f"{label}: the load generator gave no result within "
                f"{spec.timeout + BUILD_ALLOWANCE:.0f}s"
            )
        try:
            result: LoadResult = receiver.recv()
        except EOFError:
            raise BenchError(
                f"{label}: the load generator died (exit code {process.exitcode})"
            ) from None
    finally:
        receiver.close()
        if process.is_alive():
            process.kill()
        process.join(timeout=30)
    if result.aborted:
        raise BenchError(
            f"{label} aborted: {result.aborted} after {result.requests} requests "
            f"({result.events_sent} of {spec.events} events sent)"
        )
    return result


# -- the machine's own limits --------------------------------------------------------------


def sample_events(count: int) -> list[dict[str, Any]]:
    rng = random.Random("limits")
    return [make_event("limit", index, rng) for index in range(count)]


def rabbitmq_publish_rate(stack: BenchStack, seconds: float, body: bytes) -> float:
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
        channel.queue_purge(SCRATCH_QUEUE)
    return published / elapsed


def delete_scratch_queue(stack: BenchStack) -> None:
    with stack.broker() as connection:
        connection.channel().queue_delete(SCRATCH_QUEUE)


def postgres_insert_rate(stack: BenchStack, seconds: float, events: list[dict[str, Any]]) -> float:
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
    finally:
        connection.close()
    return inserted / elapsed


def measure_limits(stack: BenchStack, options: Options, results: Results) -> None:
    events = sample_events(2_000)
    body = json.dumps(events[0], separators=(",", ":")).encode()
    for number in range(1, options.runs + 1):
        rate = rabbitmq_publish_rate(stack, options.limit_seconds, body)
        results.rabbitmq.append(rate)
        logger.info("RabbitMQ run %d: %.0f confirmed persistent publishes/s", number, rate)
    delete_scratch_queue(stack)
    for number in range(1, options.runs + 1):
        rate = postgres_insert_rate(stack, options.limit_seconds, events)
        results.postgres.append(rate)
        logger.info("PostgreSQL run %d: %.0f rows/s in %d-row INSERTs", number, rate, INSERT_ROWS)
    stack.postgres_one(f"DROP TABLE IF EXISTS {SCRATCH_TABLE}")

    bare = stack.start_http("bare-flask", "bare_app:app", "--pythonpath", str(ROOT / "scripts"))
    try:
        for number in range(1, options.runs + 1):
            load = generate(
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
            )
            if load.statuses != {202: load.requests}:
                raise BenchError(f"the bare endpoint answered {load.statuses}: {load.errors[:3]}")
            results.bare.append(load)
            logger.info(
                "Bare Flask run %d: %.0f requests/s, p99 %.1f ms",
                number,
                load.requests / load.accept_seconds,
                percentile(load.latencies_ms, 99),
            )
    finally:
        stack.stop(bare)


# -- the service ---------------------------------------------------------------------------


def completion_seconds(written: datetime | None, first_send_wall: float, seen: float) -> float:
    """Seconds from the first send to the last row's write time in the database; the time
    the poll saw the last row bounds it, should the column not tell."""
    if written is not None:
        seconds = written.timestamp() - first_send_wall
        if 0 < seconds <= seen + POLL_INTERVAL:
            return seconds
    return seen


def run_pipeline(
    stack: BenchStack,
    sampler: RssSampler,
    api: HttpServer,
    options: Options,
    scenario: str,
    number: int,
) -> PipelineRun:
    single = scenario == "single"
    stack.reset()
    prefix = f"bench-{scenario}-{number}-{secrets.token_hex(4)}"
    spec = LoadSpec(
        port=api.port,
        path="/v1/events" if single else "/v1/batch",
        events=options.single_events if single else options.batch_events,
        batch_size=1 if single else options.batch_size,
        concurrency=options.single_concurrency if single else options.batch_concurrency,
        prefix=prefix,
        api_key=stack.api_key,
        timeout=options.run_timeout,
    )
    window_start = sampler.sample()[0]
    load = generate(spec, f"{scenario} run {number}")
    run = PipelineRun(scenario, number, load)
    deadline = load.started + options.run_timeout
    stored_seen = projected_seen = None
    expected = load.events_accepted
    while stored_seen is None or projected_seen is None:
        stored, projected = stack.rows()
        now = time.monotonic()
        if stored_seen is None and stored >= expected:
            stored_seen = now - load.started
        if projected_seen is None and projected >= expected:
            projected_seen = now - load.started
        if stored_seen is not None and projected_seen is not None:
            break
        if now > deadline:
            raise BenchError(
                f"{scenario} run {number} aborted after {options.run_timeout:.0f}s: "
                f"{stored} of {expected} events in PostgreSQL, {projected} in MySQL"
            )
        for server in stack.processes:
            server.check_alive()
        time.sleep(POLL_INTERVAL)

    run.postgres = stack.postgres_counts(prefix)
    run.mysql = stack.mysql_counts(prefix)
    run.postgres_seconds = completion_seconds(
        run.postgres.last_write, load.started_wall, stored_seen
    )
    run.mysql_seconds = completion_seconds(run.mysql.last_write, load.started_wall, projected_seen)
    run.dead_letters = stack.queue_state(DEAD_QUEUE)[0]
    window_end = sampler.sample()[0]
    samples = sampler.window(window_start, window_end)
    run.memory = {
        group: MemoryTrace(
            start=samples[0][group],
            settled=samples[int(SETTLED_AT * (len(samples) - 1))][group],
            peak=max(sample[group] for sample in samples),
            end=samples[-1][group],
        )
        for group in GROUPS
    }
    run.problems = correctness_problems(run)
    logger.info(
        "%s run %d: accepted %.0f events/s (p99 %.1f ms); PostgreSQL %.1fs, MySQL %.1fs: "
        "%.0f events/s end to end; %s",
        scenario,
        number,
        run.accept_rate,
        run.latency(99),
        run.postgres_seconds,
        run.mysql_seconds,
        run.end_to_end_rate,
        "; ".join(run.problems) or "correct",
    )
    return run


def correctness_problems(run: PipelineRun) -> list[str]:
    load = run.load
    problems = []
    if load.statuses != {202: load.requests}:
        problems.append(f"answers {load.statuses}, first errors: {load.errors[:3]}")
    if load.events_accepted != load.events_sent:
        problems.append(f"{load.events_accepted} of {load.events_sent} events accepted")
    for name, counts in (("PostgreSQL", run.postgres), ("MySQL", run.mysql)):
        assert counts is not None
        if not counts.rows == counts.this_run == load.events_sent:
            problems.append(
                f"{name} holds {counts.rows} rows ({counts.this_run} of this run) for "
                f"{load.events_sent} events sent"
            )
        if counts.distinct != counts.rows:
            problems.append(f"{name}: {counts.rows - counts.distinct} duplicate event_ids")
    if run.dead_letters:
        problems.append(f"{run.dead_letters} messages dead-lettered")
    return problems


def measure_service(
    stack: BenchStack, sampler: RssSampler, options: Options, results: Results
) -> None:
    api = stack.start_http("api", "ingest_api.wsgi:app")
    wait_for(lambda: api.get("/readyz") == 200, START_TIMEOUT, "the API to be ready (/readyz)")
    persist = stack.start_worker("persist", PERSIST_QUEUE)
    projection = stack.start_worker("projection", PROJECTION_QUEUE)
    for group, process in (("api", api), ("persist", persist), ("projection", projection)):
        sampler.watch(group, process.pid)
    for scenario in ("single", "batch"):
        for number in range(1, options.runs + 1):
            results.pipeline.append(run_pipeline(stack, sampler, api, options, scenario, number))
    stack.reset()


# -- the report ----------------------------------------------------------------------------


def context_lines(stack: BenchStack) -> dict[str, str]:
    def first_line(command: Sequence[str]) -> str:
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=30, cwd=ROOT)
        except (OSError, subprocess.TimeoutExpired):
            return "?"
        return done.stdout.strip().splitlines()[0] if done.stdout.strip() else "?"

    cpu = "?"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with stack.broker() as connection:
        connection.connect()
        rabbitmq = connection.connection.server_properties.get("version", "?")
    (postgres,) = stack.postgres_one("SHOW server_version") or ("?",)
    (mariadb,) = stack.mysql_one("SELECT VERSION()") or ("?",)
    commit = first_line(["git", "rev-parse", "--short", "HEAD"])
    changed = first_line(["git", "status", "--porcelain", "--untracked-files=no"]) != "?"
    return {
        "machine": f"{os.cpu_count()} cores ({cpu}), load average at start "
        f"{' '.join(f'{value:.2f}' for value in os.getloadavg())}",
        "software": f"PostgreSQL {postgres.split()[0]}, MariaDB {mariadb.split('-')[0]}, "
        f"RabbitMQ {rabbitmq}, Python {platform.python_version()}, "
        f"gunicorn {metadata.version('gunicorn')}, Celery {metadata.version('celery')}",
        "service": f"commit {commit}{' with uncommitted changes' if changed else ''}; "
        f"`gunicorn ingest_api.wsgi:app {' '.join(GUNICORN_SETTINGS)}`; "
        "`celery -A tasks worker -Q ingest.persist` and `-Q ingest.projection` "
        "at their default concurrency; no beat",
    }


def spread(values: Sequence[float]) -> tuple[float, float, float]:
    if not values:
        return float("nan"), float("nan"), float("nan")
    return statistics.median(values), min(values), max(values)


def number(value: float, digits: int = 0) -> str:
    if value != value:  # NaN
        return "n/a"
    return f"{value:,.{digits}f}"


def markdown(header: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> str:
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---:" if a == "r" else "---" for a in align) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def target(met: bool, text: str) -> str:
    return f"{text}: {'met' if met else '**not met**'}"


def main_table(results: Results) -> str:
    options = results.options
    rows: list[list[str]] = []

    def add(label: str, values: Sequence[float], digits: int = 0, goal: str = "") -> None:
        median, low, high = spread(values)
        rows.append(
            [label, number(median, digits), number(low, digits), number(high, digits), goal]
        )

    add(
        "Machine: RabbitMQ persistent publishes with confirms, one publisher (msg/s)",
        results.rabbitmq,
    )
    add(
        f"Machine: PostgreSQL rows in {INSERT_ROWS}-row INSERTs, one commit each (rows/s)",
        results.postgres,
    )
    add(
        f"Machine: bare Flask on the same gunicorn, concurrency {options.single_concurrency} "
        "(requests/s)",
        [load.requests / load.accept_seconds for load in results.bare],
    )
    add(
        "Machine: bare Flask p99 latency (ms)",
        [percentile(load.latencies_ms, 99) for load in results.bare],
        1,
    )

    for scenario, title in (("single", "Single events"), ("batch", "Batches")):
        runs = results.runs(scenario)
        if not runs:
            continue
        median = statistics.median
        p99 = [run.latency(99) for run in runs]
        e2e = [run.end_to_end_rate for run in runs]
        add(f"{title}: accept rate (events/s)", [run.accept_rate for run in runs])
        add(f"{title}: p50 accept latency (ms per request)", [run.latency(50) for run in runs], 1)
        add(
            f"{title}: p99 accept latency (ms per request)",
            p99,
            1,
            target(median(p99) <= 50, "<= 50 ms") if scenario == "single" else "",
        )
        add(f"{title}: seconds until all in PostgreSQL", [run.postgres_seconds for run in runs], 1)
        add(f"{title}: seconds until all in MySQL", [run.mysql_seconds for run in runs], 1)
        goal = 1_000 if scenario == "single" else 15_000
        add(
            f"{title}: end-to-end rate into both databases (events/s)",
            e2e,
            0,
            target(median(e2e) >= goal, f">= {goal:,} events/s"),
        )
    batches = results.runs("batch")
    for group in GROUPS:
        peaks = [run.memory[group].peak / MIB for run in results.pipeline]
        goal = target(not growth(batches, group), "flat during and across batch runs")
        add(f"Peak RSS, {GROUP_LABELS[group]} (MiB, every run)", peaks, 0, goal if batches else "")
    return markdown(["Figure", "Median", "Min", "Max", "Target"], rows, "lrrrl")


def grew(before: int, after: int) -> bool:
    return after - before > max(GROWTH_RATIO * before, GROWTH_FLOOR)


def growth(runs: Sequence[PipelineRun], group: str) -> list[str]:
    """Where the memory of `group` grew: within a run (from a quarter in to the end), or
    from the first run's peak to the last one's."""
    found = [
        f"{run.scenario} run {run.number}: {trace.settled / MIB:,.0f} -> {trace.end / MIB:,.0f} MiB"
        for run in runs
        if grew((trace := run.memory[group]).settled, trace.end)
    ]
    if len(runs) > 1 and grew(runs[0].memory[group].peak, runs[-1].memory[group].peak):
        found.append(
            f"peaks {', '.join(f'{run.memory[group].peak / MIB:,.0f}' for run in runs)} MiB"
        )
    return found


def correctness_table(results: Results) -> str:
    rows = []
    for run in results.pipeline:
        postgres, mysql = run.postgres, run.mysql
        assert postgres is not None and mysql is not None
        answers = ", ".join(
            f"{status}: {count:,}" for status, count in sorted(run.load.statuses.items())
        )
        rows.append(
            [
                f"{run.scenario} {run.number}",
                f"{run.load.events_sent:,}",
                answers,
                f"{run.load.retries:,}",
                f"{postgres.rows:,} / {postgres.distinct:,}",
                f"{mysql.rows:,} / {mysql.distinct:,}",
                f"{run.dead_letters:,}",
                "correct" if not run.problems else "**" + "; ".join(run.problems) + "**",
            ]
        )
    return markdown(
        [
            "Run",
            "Events sent",
            "HTTP answers",
            "Resent",
            "PostgreSQL rows / distinct",
            "MySQL rows / distinct",
            "Dead letters",
            "Verdict",
        ],
        rows,
        "lrlrrrrl",
    )


def memory_table(results: Results) -> str:
    rows = [
        [
            f"{run.scenario} {run.number}",
            *(
                " / ".join(
                    f"{value / MIB:,.0f}"
                    for value in (trace.start, trace.settled, trace.peak, trace.end)
                )
                for trace in (run.memory[group] for group in GROUPS)
            ),
        ]
        for run in results.pipeline
    ]
    return markdown(
        [
            "Run",
            *(f"{GROUP_LABELS[group]}: start / at 25% / peak / end (MiB)" for group in GROUPS),
        ],
        rows,
        "lrrr",
    )


def memory_verdicts(results: Results) -> list[str]:
    lines = []
    for scenario in ("single", "batch"):
        runs = results.runs(scenario)
        for group in GROUPS:
            if not runs:
                continue
            found = growth(runs, group)
            verdict = "grows: " + "; ".join(found) if found else "flat"
            lines.append(f"- {scenario}, {GROUP_LABELS[group]}: {verdict}")
    return lines


def report(results: Results) -> str:
    options = results.options
    parts = [
        f"### Benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        *(f"- {name}: {value}" for name, value in results.context.items()),
        f"- single events: {options.single_events:,} `POST /v1/events` at concurrency "
        f"{options.single_concurrency}; batches: {options.batch_events:,} events as "
        f"`POST /v1/batch` of {options.batch_size} at concurrency {options.batch_concurrency}",
        f"- each figure: median of {options.runs} run(s), with min and max; load from one "
        "process over keep-alive HTTP/1.1 on 127.0.0.1; times from the first request sent "
        "to the last row written (PostgreSQL `stored_at`, MySQL `projected_at`); "
        "end-to-end rate = events / seconds until all are in both databases",
        "",
        main_table(results),
    ]
    if results.pipeline:
        parts += ["", "Correctness of every run:", "", correctness_table(results)]
        parts += [
            "",
            "Memory (RSS summed over each process tree, sampled every 0.25 s; it grows when it "
            f"rises by more than {GROWTH_RATIO:.0%} and {GROWTH_FLOOR // MIB} MiB from 25% into "
            "a run to its end, or from the first run's peak to the last's):",
            "",
            memory_table(results),
            "",
            *memory_verdicts(results),
        ]
    if results.failure:
        parts += ["", f"**The benchmark stopped early: {results.failure}**"]
    return "\n".join(parts)


# -- the command ---------------------------------------------------------------------------


def parse_options(argv: Sequence[str] | None) -> tuple[Options, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        description="Benchmark ingest on this machine's PostgreSQL, MariaDB and RabbitMQ.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a small check: 2,000 single and 20,000 batch events, 1 run, limits measured for 2 s",
    )
    parser.add_argument("--runs", type=int, help="runs of each figure (default 3)")
    parser.add_argument("--single-events", type=int, help="single events per run (default 20,000)")
    parser.add_argument("--batch-events", type=int, help="batched events per run (default 200,000)")
    parser.add_argument("--batch-size", type=int, default=100, help="events per batch request")
    parser.add_argument("--single-concurrency", type=int, default=32)
    parser.add_argument("--batch-concurrency", type=int, default=8)
    parser.add_argument(
        "--limit-seconds", type=float, help="seconds per machine-limit run (default 3)"
    )
    parser.add_argument(
        "--run-timeout",
        type=float,
        default=600,
        help="abort a run that takes longer (seconds, default 600)",
    )
    parser.add_argument(
        "--postgres-admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres"
    )
    parser.add_argument("--mysql-admin-url", default="mysql://root@127.0.0.1:3306/")
    parser.add_argument(
        "--broker",
        default="guest:guest@127.0.0.1:5672",
        help="RabbitMQ user:password@host:port; the vhost is the benchmark's own",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the services' log files")
    args = parser.parse_args(argv)
    quick = args.quick
    options = Options(
        runs=args.runs or (1 if quick else 3),
        single_events=args.single_events or (2_000 if quick else 20_000),
        single_concurrency=args.single_concurrency,
        batch_events=args.batch_events or (20_000 if quick else 200_000),
        batch_size=args.batch_size,
        batch_concurrency=args.batch_concurrency,
        limit_seconds=args.limit_seconds or (2.0 if quick else 3.0),
        run_timeout=args.run_timeout,
    )
    for name in (
        "runs",
        "single_events",
        "batch_events",
        "batch_size",
        "single_concurrency",
        "batch_concurrency",
        "limit_seconds",
        "run_timeout",
    ):
        if getattr(options, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    return options, args


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    options, args = parse_options(argv)
    # Ctrl-C and SIGTERM end the benchmark through its clean-up, even if started in the
    # background (where the shell ignores SIGINT).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)
    servers = Servers(args.postgres_admin_url, args.mysql_admin_url, args.broker)
    results = Results(options)
    stack = BenchStack(servers, keep_logs=args.keep_logs)
    sampler = RssSampler()
    steps: list[tuple[str, Callable[[], None]]] = [
        ("set-up", stack.create),
        ("context", lambda: results.context.update(context_lines(stack))),
        ("machine limits", lambda: measure_limits(stack, options, results)),
        ("service", lambda: measure_service(stack, sampler, options, results)),
    ]
    try:
        sampler.start()
        for name, step in steps:
            logger.info("== %s", name)
            step()
    except BenchError as exc:
        results.failure = str(exc)
        logger.error("%s", exc)
        for process in stack.processes:
            logger.error("-- %s log ends:\n%s", process.name, process.tail())
    except KeyboardInterrupt:
        results.failure = "interrupted"
        logger.error("Interrupted: cleaning up")
    finally:
        # A second Ctrl-C must not cut the clean-up short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        sampler.stop()
        logger.info("== clean-up")
        stack.close()
    print(report(results))
    failed = results.failure or any(run.problems for run in results.pipeline)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
