"""What this machine can do, what ingest does on it, and where the CPU goes.

    .venv/bin/python scripts/benchmark.py            # the full benchmark, 3 runs of each figure
    .venv/bin/python scripts/benchmark.py --quick    # a small end-to-end check of the script

It creates its own PostgreSQL and MariaDB databases and RabbitMQ vhost on the local servers,
migrates them, starts the API, the persist and projection workers and celery beat with the
command lines `ingest up` runs, runs the load from a separate process over keep-alive HTTP/1.1
on 127.0.0.1, and prints Markdown tables (each figure the median of the runs, with min and max),
among them the CPU each process group spent per event. Everything it started or created is
stopped and dropped at the end, also on Ctrl-C or an error. Progress goes to stderr, the tables
to stdout. The exit status is 1 when a run failed or was not correct.

bench_limits.py measures the machine's own limits, bench_scenarios.py runs the service's
scenarios, bench_report.py prints the tables; bench_stack.py holds what they run against.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import re
import signal
import subprocess
import sys
import tomllib
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Any

from bench_cpu import CpuMeter
from bench_limits import measure_limits
from bench_report import Options, Results, report
from bench_scenarios import measure_service
from bench_schemas import enforce_order_schema
from bench_stack import BenchError, BenchStack, RssSampler
from loadgen import EVENT_TYPES

from testlib.processes import ROOT
from testlib.servers import SharedServers
from testlib.wait import HarnessError

logger = logging.getLogger("benchmark")


# -- the run's context ---------------------------------------------------------------------


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


def data_contracts(stack: BenchStack, off: bool) -> dict[str, str]:
    """Enforce ORDER_SCHEMA for every event type sent, unless `off`; say which."""
    if off:
        return {"data contracts": "none (--no-schemas): no event is checked against a schema"}
    enforce_order_schema(stack.postgres_url)
    return {
        "data contracts": f"every event type sent ({', '.join(EVENT_TYPES)}) enforced against "
        "ORDER_SCHEMA of scripts/bench_schemas.py"
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
    parser.add_argument("--postgres-admin-url", default=SharedServers.postgres_admin_url)
    parser.add_argument("--mysql-admin-url", default=SharedServers.mysql_admin_url)
    parser.add_argument(
        "--broker",
        default=SharedServers.broker,
        help="RabbitMQ user:password@host:port; the vhost is the benchmark's own",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the services' log files")
    parser.add_argument(
        "--no-schemas",
        action="store_true",
        help="check no event against a schema (by default every event type sent has "
        "scripts/bench_schemas.py's ORDER_SCHEMA enforced), to see what checking costs",
    )
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
    servers = SharedServers(args.postgres_admin_url, args.mysql_admin_url, args.broker)
    results = Results(options)
    stack = BenchStack(servers, keep_logs=args.keep_logs)
    sampler = RssSampler()
    meter = CpuMeter()
    steps: list[tuple[str, Callable[[], None]]] = [
        ("set-up", stack.create),
        ("context", lambda: results.context.update(context_lines(stack))),
        ("data contracts", lambda: results.context.update(data_contracts(stack, args.no_schemas))),
        ("machine limits", lambda: measure_limits(stack, meter, options, results)),
        ("service", lambda: measure_service(stack, sampler, meter, options, results)),
    ]
    try:
        sampler.start()
        for name, step in steps:
            logger.info("== %s", name)
            step()
    except (BenchError, HarnessError) as exc:
        results.failure = str(exc)
        logger.error("%s", exc)
        for process in stack.processes:
            logger.error("-- %s log ends:\n%s", process.name, process.tail(30))
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
