"""Where the benchmark's CPU goes: utime+stime of each process group, read from /proc.

A snapshot reads every process once; the CPU a group spent in a window is the difference of
two snapshots. Processes that exit inside the window (PostgreSQL backends, a worker's pool
children) are counted through their parents: a live process's cutime+cstime holds the time of
every child it has reaped, so a group's total is, over its live members, utime+stime plus
cutime+cstime. A process still alive at the window's start and reaped before its end counts its
whole life at the end, less what it had at the start: exactly its share of the window.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1


@dataclass(frozen=True)
class ProcStat:
    """One line of /proc/<pid>/stat, the fields the benchmark uses; times in clock ticks."""

    ppid: int
    comm: str
    own: int  # utime + stime
    reaped: int  # cutime + cstime: the children this process has waited for


def read_stat(pid: int | str) -> ProcStat | None:
    """None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            line = stat.read()
    except OSError:
        return None
    # comm may hold spaces and parentheses; it ends at the last ")".
    head, _, tail = line.rpartition(b")")
    fields = tail.split()
    try:
        return ProcStat(
            ppid=int(fields[1]),
            comm=head.partition(b"(")[2].decode(errors="replace"),
            own=int(fields[11]) + int(fields[12]),
            reaped=int(fields[13]) + int(fields[14]),
        )
    except (IndexError, ValueError):
        return None


def read_processes() -> dict[int, ProcStat]:
    """Every process on the machine, by pid."""
    processes = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (stat := read_stat(entry.name)) is not None:
            processes[int(entry.name)] = stat
    return processes


def tree(processes: Mapping[int, ProcStat], roots: Iterable[int]) -> set[int]:
    """The roots that are alive, and all their live descendants."""
    children: dict[int, list[int]] = {}
    for pid, stat in processes.items():
        children.setdefault(stat.ppid, []).append(pid)
    found: set[int] = set()
    todo = [root for root in roots if root in processes]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, ()))
    return found


def named(processes: Mapping[int, ProcStat], comm: str) -> list[int]:
    return [pid for pid, stat in processes.items() if stat.comm == comm]


def machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs since boot, from the first line of /proc/stat."""
    with open("/proc/stat", "rb") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal; guest time is already inside user.
    total = sum(fields[:8])
    idle = fields[3] + fields[4]
    return total - idle, total


Selector = Callable[[Mapping[int, ProcStat]], set[int]]

# The database and broker servers, found by name: their backends come and go.
SERVER_GROUPS: dict[str, Selector] = {
    # Backends that exit inside a window are counted through the postmaster's cutime+cstime.
    "postgres": lambda processes: set(named(processes, "postgres")),
    "mariadb": lambda processes: set(named(processes, "mariadbd")),
    # beam.smp runs helpers of its own (erl_child_setup, inet_gethost).
    "rabbitmq": lambda processes: tree(processes, named(processes, "beam.smp")),
}
# The benchmark's own process: its polls and samplers, without the children it reaps (those
# are the services and the load generator, counted in their own groups).
SELF = "benchmark"


@dataclass(frozen=True)
class CpuSnapshot:
    ticks: dict[str, int]
    machine_busy: int
    machine_total: int
    # Every process in no group, by pid: (comm, utime+stime), to name what "other" is. Without
    # the children it reaped: a reaped child's whole life would land in the window.
    outside: dict[int, tuple[str, int]]


@dataclass(frozen=True)
class CpuUse:
    """CPU seconds each group spent during one window, and the machine's busy and total."""

    groups: dict[str, float]
    machine_busy: float
    machine_total: float
    # CPU seconds of the processes in no group, summed by name (kworker/1:2 counts as kworker).
    outside: dict[str, float]

    @property
    def busy_fraction(self) -> float:
        return self.machine_busy / self.machine_total if self.machine_total else float("nan")

    @property
    def other(self) -> float:
        """Busy CPU no group accounts for: other processes and kernel threads. /proc/stat counts
        ticks while processes are charged their exact run time, so a few % either way is noise."""
        return self.machine_busy - sum(self.groups.values())


class CpuMeter:
    """Snapshots of the CPU spent by the servers, the benchmark and the watched process trees."""

    def __init__(self) -> None:
        self.trees: dict[str, int] = {}

    def watch(self, group: str, root_pid: int) -> None:
        self.trees[group] = root_pid

    def unwatch(self, group: str) -> None:
        del self.trees[group]

    def snapshot(self) -> CpuSnapshot:
        busy, total = machine_ticks()
        processes = read_processes()
        selectors: dict[str, Selector] = {
            **SERVER_GROUPS,
            **{
                group: (lambda processes, root=root: tree(processes, [root]))
                for group, root in self.trees.items()
            },
        }
        members = {group: select(processes) for group, select in selectors.items()}
        ticks = {
            group: sum(processes[pid].own + processes[pid].reaped for pid in pids)
            for group, pids in members.items()
        }
        me = os.getpid()
        ticks[SELF] = processes[me].own if me in processes else 0
        grouped = set().union(*members.values(), [me])
        outside = {
            pid: (stat.comm, stat.own) for pid, stat in processes.items() if pid not in grouped
        }
        return CpuSnapshot(ticks, busy, total, outside)

    @staticmethod
    def use(start: CpuSnapshot, end: CpuSnapshot, **measured: float) -> CpuUse:
        """CPU seconds from `start` to `end` of the groups in both, plus groups that measured
        their own CPU seconds (the load generator)."""
        groups = {
            group: (end.ticks[group] - start.ticks[group]) / CLOCK_TICKS
            for group in start.ticks
            if group in end.ticks
        }
        groups.update(measured)
        outside: dict[str, float] = {}
        for pid, (comm, ticks) in end.outside.items():
            # A process born inside the window spent all its time there.
            earlier = start.outside.get(pid)
            before = earlier[1] if earlier and earlier[0] == comm else 0  # else a reused pid
            name = comm.split("/")[0]
            outside[name] = outside.get(name, 0.0) + (ticks - before) / CLOCK_TICKS
        return CpuUse(
            groups,
            (end.machine_busy - start.machine_busy) / CLOCK_TICKS,
            (end.machine_total - start.machine_total) / CLOCK_TICKS,
            outside,
        )
