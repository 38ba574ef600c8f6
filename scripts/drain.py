"""How much CPU the workers spend per event, alone: a queue of persist messages, drained.

    .venv/bin/python scripts/drain.py                  # 300 messages of 100 events
    .venv/bin/python scripts/drain.py --messages 3000 --events 1

It creates the benchmark's own databases and vhost (scripts/bench_stack.py), starts the persist
and projection workers as `ingest up` does, publishes the messages as the API does
(`persist_events` with the events as one JSON text), waits until every event is in both
databases and prints the rate and the CPU per event of each process group (utime+stime from
/proc, as the benchmark reads it). No HTTP, no load generator: what the workers cost.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import time
from collections.abc import Mapping

from bench_cpu import CLOCK_TICKS, ProcStat, named, read_processes, tree
from bench_stack import BenchStack
from loadgen import make_event

from ingest.canonical import compact_json, utc_now
from ingest.config import Settings
from ingest.contract import PERSIST_EVENTS
from tasks.celery import create_celery
from testlib.servers import SharedServers
from testlib.wait import wait_until


def group_ticks(
    processes: Mapping[int, ProcStat], groups: Mapping[str, set[int]]
) -> dict[str, int]:
    return {
        name: sum(processes[pid].own + processes[pid].reaped for pid in pids if pid in processes)
        for name, pids in groups.items()
    }


def groups_of(
    processes: Mapping[int, ProcStat], persist: int, projection: int
) -> dict[str, set[int]]:
    return {
        "persist worker": tree(processes, [persist]),
        "projection worker": tree(processes, [projection]),
        "PostgreSQL": set(named(processes, "postgres")),
        "MariaDB": set(named(processes, "mariadbd")),
        "RabbitMQ": tree(processes, named(processes, "beam.smp")),
    }


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--events", type=int, default=100, help="events per message")
    args = parser.parse_args(argv)
    stack = BenchStack(SharedServers())
    try:
        stack.create()
        persist = stack.start_persist_worker()
        projection = stack.start_projection_worker()
        rng = random.Random(1)
        messages = []
        for number in range(args.messages):
            received_at = utc_now().isoformat()
            events = [
                {**make_event(f"drain-{number}", index, rng), "received_at": received_at}
                for index in range(args.events)
            ]
            messages.append(([event["event_id"] for event in events], compact_json(events)))
        celery = create_celery(Settings(broker_url=stack.broker_url))
        before = read_processes()
        groups = groups_of(before, persist.pid, projection.pid)
        started = time.monotonic()
        with celery.connection_for_write() as connection:
            producer = celery.amqp.Producer(connection.default_channel)
            for event_ids, events_json in messages:
                celery.send_task(PERSIST_EVENTS, args=[event_ids, events_json], producer=producer)
        total = args.messages * args.events
        wait_until(
            lambda: stack.rows() == (total, total), 600, 0.25, "every event in both databases"
        )
        seconds = time.monotonic() - started
        after = read_processes()
        for name, pids in groups_of(after, persist.pid, projection.pid).items():
            groups[name] |= pids
        spent = group_ticks(after, groups)
        start = group_ticks(before, groups)
        print(f"{total:,} events in {args.messages:,} messages: {total / seconds:,.0f} events/s")
        for name in groups:
            micros = (spent[name] - start[name]) / CLOCK_TICKS / total * 1e6
            print(f"  {name:18} {micros:7.1f} us/event")
    finally:
        stack.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
