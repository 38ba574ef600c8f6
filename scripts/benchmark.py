"""The benchmark of issues 4, 8 and 10: what this machine can do, what ingest does on it, and where
the CPU goes.

    .venv/bin/python scripts/benchmark.py            # the full benchmark, 3 runs of each figure
    .venv/bin/python scripts/benchmark.py --quick    # a small end-to-end check of the script

It creates its own PostgreSQL and MariaDB databases and RabbitMQ vhost on the local servers,
migrates them, starts the API, the persist and projection workers and celery beat with the
command lines `ingest up` runs, runs the load from a separate process over keep-alive HTTP/1.1
on 127.0.0.1, and prints Markdown tables (each figure the median of the runs, with min and max),
among them the CPU each process group spent per event. Everything it started or created is
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
import re
import secrets
import shlex
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

from bench_cpu import CpuMeter, CpuSnapshot
from bench_report import (
    GROUPS,
    INSERT_ROWS,
    SETTLED_AT,
    LimitRun,
    MemoryTrace,
    Options,
    PipelineRun,
    Results,
    percentile,
    report,
)
from bench_stack import (
    DEAD_QUEUE,
    ROOT,
    START_TIMEOUT,
    BenchError,
    BenchStack,
    HttpServer,
    RssSampler,
    Servers,
    ServiceProcess,
    wait_for,
)
from loadgen import READY, LoadResult, LoadSpec, make_event, run_in_process
from psycopg2.extras import execute_values

logger = logging.getLogger("benchmark")

# Time for the load generator's process to start and build its request bodies.
BUILD_ALLOWANCE = 180.0
# Time for it to send its result once the run's deadline has passed.
RESULT_ALLOWANCE = 60.0
POLL_INTERVAL = 0.5
SCRATCH_QUEUE = "bench.publish-limit"
SCRATCH_TABLE = "bench_insert_limit"
# Each pipeline scenario and the endpoint it posts to; the batch scenarios share the batch size
# and concurrency.
SCENARIOS = {"single": "/v1/events", "batch": "/v1/batch", "segment": "/segment/v1/batch"}


# -- running the load ----------------------------------------------------------------------


def generate(spec: LoadSpec, label: str, meter: CpuMeter) -> tuple[LoadResult, CpuSnapshot]:
    """Run the load generator in its own process: what it measured, and a CPU snapshot taken
    once its requests were built, just before the first was sent."""
    context = multiprocessing.get_context("spawn")
    control, child_end = context.Pipe()
    process = context.Process(target=run_in_process, args=(spec, child_end), name="loadgen")
    process.start()
    child_end.close()

    def receive(timeout: float, what: str) -> Any:
        if not control.poll(timeout):
            raise BenchError(f"{label}: the load generator gave no {what} within {timeout:.0f}s")
        try:
            return control.recv()
        except EOFError:
            raise BenchError(
                f"{label}: the load generator died (exit code {process.exitcode})"
            ) from None

    try:
        if receive(BUILD_ALLOWANCE, "sign of being ready") != READY:
            raise BenchError(f"{label}: the load generator did not say it was ready")
        cpu_start = meter.snapshot()
        control.send("go")
        result: LoadResult = receive(spec.timeout + RESULT_ALLOWANCE, "result")
    finally:
        control.close()
        if process.is_alive():
            process.kill()
        process.join(timeout=30)
    if result.aborted:
        raise BenchError(
            f"{label} aborted: {result.aborted} after {result.requests} requests "
            f"({result.events_sent} of {spec.events} events sent)"
        )
    return result, cpu_start


# -- the machine's own limits --------------------------------------------------------------


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
    meter: CpuMeter,
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
        path=SCENARIOS[scenario],
        events={
            "single": options.single_events,
            "batch": options.batch_events,
            "segment": options.segment_events,
        }[scenario],
        batch_size=1 if single else options.batch_size,
        concurrency=options.single_concurrency if single else options.batch_concurrency,
        prefix=prefix,
        api_key=stack.api_key,
        timeout=options.run_timeout,
        segment=scenario == "segment",
    )
    window_start = sampler.sample()[0]
    load, cpu_start = generate(spec, f"{scenario} run {number}", meter)
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
            run.cpu = meter.use(cpu_start, meter.snapshot(), loadgen=load.cpu_seconds)
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
    run.problems = correctness_problems(run, spec.accepted_status)
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


def correctness_problems(run: PipelineRun, accepted_status: int) -> list[str]:
    load = run.load
    problems = []
    if load.statuses != {accepted_status: load.requests}:
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
    stack: BenchStack, sampler: RssSampler, meter: CpuMeter, options: Options, results: Results
) -> None:
    api = stack.start_api()
    wait_for(lambda: api.get("/readyz") == 200, START_TIMEOUT, "the API to be ready (/readyz)")
    processes: dict[str, ServiceProcess] = {
        "api": api,
        "persist": stack.start_persist_worker(),
        "projection": stack.start_projection_worker(),
        "beat": stack.start_beat(),
    }
    results.context["service"] = service_line(processes)
    for group, process in processes.items():
        sampler.watch(group, process.pid)
        meter.watch(group, process.pid)
    for scenario in SCENARIOS:
        for number in range(1, options.runs + 1):
            results.pipeline.append(
                run_pipeline(stack, sampler, meter, api, options, scenario, number)
            )
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
        f"RabbitMQ {rabbitmq}, Python {platform.python_version()}; {dependency_versions()}",
        "code": f"commit {commit}{' with uncommitted changes' if changed else ''}",
    }


def dependency_versions() -> str:
    """The installed version of each dependency pyproject.toml names."""
    with (ROOT / "pyproject.toml").open("rb") as pyproject:
        requirements = tomllib.load(pyproject)["project"]["dependencies"]
    versions = []
    for requirement in requirements:
        name = re.split(r"[\[<>=!~;\s]", requirement, maxsplit=1)[0]
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} not installed")
    return ", ".join(versions)


def service_line(processes: dict[str, ServiceProcess]) -> str:
    """The command lines the service runs with: those of `ingest up`."""

    def shown(command: Sequence[str]) -> str:
        python = "python" if command[0] == sys.executable else command[0]
        return f"`{shlex.join([python, *command[1:]])}`"

    return "; ".join(f"{name}: {shown(process.command)}" for name, process in processes.items())


# -- the command ---------------------------------------------------------------------------


def parse_options(argv: Sequence[str] | None) -> tuple[Options, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        description="Benchmark ingest on this machine's PostgreSQL, MariaDB and RabbitMQ.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a small check: 2,000 single, 20,000 batch and 10,000 Segment events, 1 run, "
        "limits measured for 2 s",
    )
    parser.add_argument("--runs", type=int, help="runs of each figure (default 3)")
    parser.add_argument("--single-events", type=int, help="single events per run (default 20,000)")
    parser.add_argument("--batch-events", type=int, help="batched events per run (default 200,000)")
    parser.add_argument(
        "--segment-events",
        type=int,
        help="Segment track messages per run, in batches to /segment/v1/batch (default 100,000)",
    )
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
        segment_events=args.segment_events or (10_000 if quick else 100_000),
        batch_size=args.batch_size,
        batch_concurrency=args.batch_concurrency,
        limit_seconds=args.limit_seconds or (2.0 if quick else 3.0),
        run_timeout=args.run_timeout,
    )
    for name in (
        "runs",
        "single_events",
        "batch_events",
        "segment_events",
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
    # `ingest up` is run from the checkout: relative paths in its commands (beat's var/) land here.
    os.chdir(ROOT)
    # Ctrl-C and SIGTERM end the benchmark through its clean-up, even if started in the
    # background (where the shell ignores SIGINT).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)
    servers = Servers(args.postgres_admin_url, args.mysql_admin_url, args.broker)
    results = Results(options)
    stack = BenchStack(servers, keep_logs=args.keep_logs)
    sampler = RssSampler()
    meter = CpuMeter()
    steps: list[tuple[str, Callable[[], None]]] = [
        ("set-up", stack.create),
        ("context", lambda: results.context.update(context_lines(stack))),
        ("machine limits", lambda: measure_limits(stack, meter, options, results)),
        ("service", lambda: measure_service(stack, sampler, meter, options, results)),
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
