"""What ingest does on this machine: each scenario posts its events through the API while the
workers store and project them, and a run is timed until both databases hold every event."""

from __future__ import annotations

import logging
import secrets
import shlex
import sys
import time
from collections.abc import Sequence
from datetime import datetime

from bench_cpu import CpuMeter
from bench_load import generate
from bench_report import GROUPS, SETTLED_AT, MemoryTrace, Options, PipelineRun, Results
from bench_stack import START_TIMEOUT, BenchError, BenchStack, RssSampler
from loadgen import LoadSpec

from ingest.contract import DEAD_QUEUE
from testlib.processes import HttpService, ServiceProcess

logger = logging.getLogger(__name__)

POLL_INTERVAL = 0.5
# Each pipeline scenario and the endpoint it posts to; the batch scenarios share the batch size
# and concurrency.
SCENARIOS = {"single": "/v1/events", "batch": "/v1/batch", "segment": "/segment/v1/batch"}


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
    api: HttpService,
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
    # From the first request, as the CPU: the seconds the load generator spends building its
    # requests are no part of the run (they had put a quarter into the run before any load).
    # CLOCK_MONOTONIC is the machine's, so the generator's start compares with the samples'.
    samples = sampler.window(load.started, sampler.sample()[0])
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
    api.wait_ready(
        lambda: api.status("/readyz") == 200, START_TIMEOUT, "the API to be ready (/readyz)", 0.25
    )
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


def service_line(processes: dict[str, ServiceProcess]) -> str:
    """The command lines the service runs with: those of `ingest up`."""

    def shown(command: Sequence[str]) -> str:
        python = "python" if command[0] == sys.executable else command[0]
        return f"`{shlex.join([python, *command[1:]])}`"

    return "; ".join(f"{name}: {shown(process.command)}" for name, process in processes.items())
