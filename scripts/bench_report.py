"""What the benchmark measured, and the Markdown tables it prints from that.

Each figure is the median of the runs, with min and max. The targets are those docs/performance.md
states, met with the service's defaults.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bench_cpu import CORES, SELF, CpuUse
from bench_stack import TableCounts
from loadgen import LoadResult

MIB = 1024 * 1024
INSERT_ROWS = 100
# Process trees whose memory is sampled during the pipeline runs.
GROUPS = ("api", "persist", "projection", "beat")
LABELS = {
    "api": "API (HTTP server's process tree)",
    "bare": "bare Flask (HTTP server's process tree)",
    "persist": "persist worker (celery main + pool)",
    "projection": "projection worker (celery main + pool)",
    "beat": "celery beat",
    "postgres": "PostgreSQL (every postgres process)",
    "mariadb": "MariaDB (mariadbd)",
    "rabbitmq": "RabbitMQ (beam.smp and its children)",
    "loadgen": "load generator",
    SELF: "the benchmark's own process",
}
# Memory counts as growing when it rises by more than this fraction and GROWTH_FLOOR: from a
# quarter into a run to its end, or from the first run's peak to the last run's.
GROWTH_RATIO = 0.10
GROWTH_FLOOR = 8 * MIB
# Where a run's memory is taken as warmed up: this fraction of the way through it.
SETTLED_AT = 0.25
# The performance targets that docs/performance.md states.
SINGLE_E2E_TARGET = 800
SINGLE_P99_TARGET_MS = 50
BATCH_E2E_TARGET = 6_000
BATCH_OF_INSERT_TARGET = 0.45
# How many of the processes outside the groups a CPU table names.
OUTSIDE_SHOWN = 5


@dataclass(frozen=True)
class Options:
    runs: int
    single_events: int
    single_concurrency: int
    batch_events: int
    segment_events: int
    batch_size: int
    batch_concurrency: int
    limit_seconds: float
    run_timeout: float


@dataclass(frozen=True)
class MemoryTrace:
    """RSS of one process tree during one run, in bytes."""

    start: int
    settled: int
    peak: int
    end: int


@dataclass(frozen=True)
class LimitRun:
    """One run of a machine limit: `count` messages, rows or requests in `seconds`."""

    count: int
    seconds: float
    cpu: CpuUse
    latencies_ms: Sequence[float] = ()

    @property
    def rate(self) -> float:
        return self.count / self.seconds


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
    # From just before the first request to when the poll saw every event in both databases.
    cpu: CpuUse | None = None
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
    rabbitmq: list[LimitRun] = field(default_factory=list)
    postgres: list[LimitRun] = field(default_factory=list)
    bare: list[LimitRun] = field(default_factory=list)
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
    median = statistics.median

    def add(label: str, values: Sequence[float], digits: int = 0, goal: str = "") -> None:
        middle, low, high = spread(values)
        rows.append(
            [label, number(middle, digits), number(low, digits), number(high, digits), goal]
        )

    add(
        "Machine: RabbitMQ persistent publishes with confirms, one publisher (msg/s)",
        [run.rate for run in results.rabbitmq],
    )
    insert_rates = [run.rate for run in results.postgres]
    add(
        f"Machine: PostgreSQL rows in {INSERT_ROWS}-row INSERTs, one commit each (rows/s)",
        insert_rates,
    )
    add(
        f"Machine: bare Flask on the API's HTTP server and settings, concurrency "
        f"{options.single_concurrency} (requests/s)",
        [run.rate for run in results.bare],
    )
    add(
        "Machine: bare Flask p99 latency (ms)",
        [percentile(run.latencies_ms, 99) for run in results.bare],
        1,
    )

    for scenario, title in (
        ("single", "Single events"),
        ("batch", "Batches"),
        ("segment", "Segment batches"),
    ):
        runs = results.runs(scenario)
        if not runs:
            continue
        single = scenario == "single"
        p99 = [run.latency(99) for run in runs]
        e2e = [run.end_to_end_rate for run in runs]
        add(f"{title}: accept rate (events/s)", [run.accept_rate for run in runs])
        add(f"{title}: p50 accept latency (ms per request)", [run.latency(50) for run in runs], 1)
        add(
            f"{title}: p99 accept latency (ms per request)",
            p99,
            1,
            target(median(p99) <= SINGLE_P99_TARGET_MS, f"<= {SINGLE_P99_TARGET_MS} ms")
            if single
            else "",
        )
        add(f"{title}: seconds until all in PostgreSQL", [run.postgres_seconds for run in runs], 1)
        add(f"{title}: seconds until all in MySQL", [run.mysql_seconds for run in runs], 1)
        # The Segment scenario has no target.
        goal = {"single": SINGLE_E2E_TARGET, "batch": BATCH_E2E_TARGET}.get(scenario)
        add(
            f"{title}: end-to-end rate into both databases (events/s)",
            e2e,
            0,
            target(median(e2e) >= goal, f">= {goal:,} events/s") if goal else "",
        )
        if scenario == "batch" and insert_rates:
            # Each batch run against the median INSERT rate of the same benchmark.
            shares = [100 * rate / median(insert_rates) for rate in e2e]
            add(
                f"{title}: end-to-end rate as % of the PostgreSQL {INSERT_ROWS}-row INSERT rate",
                shares,
                0,
                target(
                    median(shares) >= 100 * BATCH_OF_INSERT_TARGET,
                    f">= {BATCH_OF_INSERT_TARGET:.0%}",
                ),
            )
    batches = results.runs("batch")
    for group in GROUPS:
        peaks = [run.memory[group].peak / MIB for run in results.pipeline]
        goal = target(not growth(batches, group), "flat during and across batch runs")
        add(f"Peak RSS, {LABELS[group]} (MiB, every run)", peaks, 0, goal if batches else "")
    return markdown(["Figure", "Median", "Min", "Max", "Target"], rows, "lrrrl")


def cpu_table(title: str, unit: str, runs: Sequence[tuple[CpuUse, int]]) -> str:
    """CPU µs per `unit` of each process group over `runs` (each a window's CPU and how many
    units it handled), the rest of the machine's busy CPU as "other", each one's share, and the
    processes that make up "other"."""
    if not runs:
        return ""
    busy = spread([100 * use.busy_fraction for use, _ in runs])
    seconds = spread([use.machine_total / CORES for use, _ in runs])
    groups = [group for group in LABELS if any(group in use.groups for use, _ in runs)]
    rows = []
    for label, part in (
        *((LABELS[group], lambda use, group=group: use.groups.get(group, 0.0)) for group in groups),
        ("other (busy CPU no group accounts for)", lambda use: use.other),
        ("whole machine, busy", lambda use: use.machine_busy),
    ):
        per_unit = spread([1e6 * part(use) / count for use, count in runs])
        share = statistics.median(
            [100 * part(use) / use.machine_busy if use.machine_busy else 0.0 for use, _ in runs]
        )
        rows.append([label, *(number(value) for value in per_unit), f"{share:.0f}%"])
    return "\n".join(
        [
            f"CPU per {unit}, {title}: the machine was {number(busy[0])}% busy "
            f"(min {number(busy[1])}%, max {number(busy[2])}%) over a window of "
            f"{number(seconds[0], 1)} s (median) on {CORES} cores.",
            "",
            markdown(
                [
                    "Process group",
                    f"CPU µs per {unit}",
                    "Min",
                    "Max",
                    "Share of the busy CPU",
                ],
                rows,
                "lrrrr",
            ),
            "",
            f'Largest processes outside the groups, in "other" (CPU µs per {unit}, median): '
            f"{largest_outside(runs) or 'none above 1 µs'}.",
        ]
    )


def largest_outside(runs: Sequence[tuple[CpuUse, int]]) -> str:
    """The processes outside the groups that spent the most CPU per unit, median over runs."""
    names = {name for use, _ in runs for name in use.outside}
    per_unit = {
        name: statistics.median([1e6 * use.outside.get(name, 0.0) / count for use, count in runs])
        for name in names
    }
    largest = sorted(per_unit, key=per_unit.__getitem__, reverse=True)[:OUTSIDE_SHOWN]
    return ", ".join(f"{name} {per_unit[name]:,.0f}" for name in largest if per_unit[name] >= 1)


def cpu_tables(results: Results) -> list[str]:
    options = results.options
    tables = [
        cpu_table(
            f"single events (`POST /v1/events`, concurrency {options.single_concurrency}), "
            "from the first request until every event is in both databases",
            "event",
            [(run.cpu, run.load.events_accepted) for run in results.runs("single") if run.cpu],
        ),
        cpu_table(
            f"batches of {options.batch_size} (`POST /v1/batch`, concurrency "
            f"{options.batch_concurrency}), from the first request until every event is in "
            "both databases",
            "event",
            [(run.cpu, run.load.events_accepted) for run in results.runs("batch") if run.cpu],
        ),
        cpu_table(
            f"Segment batches of {options.batch_size} track messages (`POST /segment/v1/batch`, "
            f"concurrency {options.batch_concurrency}), from the first request until every "
            "event is in both databases",
            "event",
            [(run.cpu, run.load.events_accepted) for run in results.runs("segment") if run.cpu],
        ),
        cpu_table(
            "machine limit: confirmed persistent publishes from the benchmark's process",
            "message",
            [(run.cpu, run.count) for run in results.rabbitmq],
        ),
        cpu_table(
            f"machine limit: {INSERT_ROWS}-row INSERTs from the benchmark's process",
            "row",
            [(run.cpu, run.count) for run in results.postgres],
        ),
        cpu_table(
            "machine limit: bare Flask, one event per request",
            "request",
            [(run.cpu, run.count) for run in results.bare],
        ),
    ]
    return [table for table in tables if table]


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
            *(f"{LABELS[group]}: start / at 25% / peak / end (MiB)" for group in GROUPS),
        ],
        rows,
        "l" + "r" * len(GROUPS),
    )


def memory_verdicts(results: Results) -> list[str]:
    lines = []
    for scenario in ("single", "batch", "segment"):
        runs = results.runs(scenario)
        for group in GROUPS:
            if not runs:
                continue
            found = growth(runs, group)
            verdict = "grows: " + "; ".join(found) if found else "flat"
            lines.append(f"- {scenario}, {LABELS[group]}: {verdict}")
    return lines


def report(results: Results) -> str:
    options = results.options
    parts = [
        f"### Benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        *(f"- {name}: {value}" for name, value in results.context.items()),
        f"- single events: {options.single_events:,} `POST /v1/events` at concurrency "
        f"{options.single_concurrency}; batches: {options.batch_events:,} events as "
        f"`POST /v1/batch` of {options.batch_size} at concurrency {options.batch_concurrency}; "
        f"Segment batches: {options.segment_events:,} track messages as "
        f"`POST /segment/v1/batch` of {options.batch_size} at the same concurrency",
        f"- each figure: median of {options.runs} run(s), with min and max; load from one "
        "process over keep-alive HTTP/1.1 on 127.0.0.1; times from the first request sent "
        "to the last row written (PostgreSQL `stored_at`, MySQL `projected_at`); "
        "end-to-end rate = events / seconds until all are in both databases",
        "",
        main_table(results),
    ]
    tables = cpu_tables(results)
    if tables:
        parts += [
            "",
            "Where the CPU goes (utime+stime from /proc of each process group, children that "
            "exited included; other = the machine's busy CPU from /proc/stat less the groups):",
        ]
        for table in tables:
            parts += ["", table]
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
