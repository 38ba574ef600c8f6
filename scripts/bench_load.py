"""Running the load generator (scripts/loadgen.py) from the benchmark: in a process of its own,
its CPU window opened just before its first request leaves."""

from __future__ import annotations

import multiprocessing
from typing import Any

from bench_cpu import CpuMeter, CpuSnapshot
from bench_stack import BenchError
from loadgen import READY, LoadResult, LoadSpec, run_in_process

# Time for the load generator's process to start and build its request bodies.
BUILD_ALLOWANCE = 180.0
# Time for it to send its result once the run's deadline has passed.
RESULT_ALLOWANCE = 60.0


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
