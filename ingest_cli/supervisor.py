"""Run several processes as one: prefixed output, and all stop when one stops or on a signal."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import FrameType
from typing import IO

import click

COLORS = ("cyan", "green", "yellow", "magenta", "blue", "red")


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    relay: threading.Thread = field(init=False)


class Supervisor:
    def __init__(self, width: int) -> None:
        self.width = width
        self.output_lock = threading.Lock()
        self.stop_requested = threading.Event()
        self.signal_name: str | None = None

    def emit(self, name: str, color: str, text: str, err: bool = False) -> None:
        # click.echo drops the colour when the output is not a terminal.
        prefix = click.style(f"{name:<{self.width}} |", fg=color)
        with self.output_lock:
            click.echo(f"{prefix} {text}", err=err)

    def relay(self, name: str, color: str, stream: IO[bytes]) -> None:
        for line in iter(stream.readline, b""):
            self.emit(name, color, line.decode(errors="replace").rstrip("\r\n"))
        stream.close()

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signal_name = signal.Signals(signum).name
        self.stop_requested.set()


def supervise(
    commands: Mapping[str, tuple[list[str], Mapping[str, str]]], stop_timeout: float
) -> int:
    """Run every command (name -> argv and environment) until a signal or until one exits;
    then stop the rest.

    Returns 0 after a requested stop in which every process stopped in time, else 1.
    """
    supervisor = Supervisor(max(map(len, commands)))
    handlers = {
        signum: signal.signal(signum, supervisor.on_signal)
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    children: list[Child] = []
    failed = False
    try:
        for index, (name, (argv, env)) in enumerate(commands.items()):
            color = COLORS[index % len(COLORS)]
            # Each child leads its own process group, so that a terminal's Ctrl-C reaches only
            # this supervisor (one orderly SIGTERM each) and a kill reaches grandchildren too.
            process = subprocess.Popen(
                argv,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            child = Child(name, process)
            assert process.stdout is not None
            child.relay = threading.Thread(
                target=supervisor.relay, args=(name, color, process.stdout), daemon=True
            )
            child.relay.start()
            children.append(child)
        while not supervisor.stop_requested.wait(0.2):
            exited = next((c for c in children if c.process.poll() is not None), None)
            if exited is not None:
                failed = True
                click.echo(
                    f"ingest up: {exited.name} exited with code {exited.process.returncode}; "
                    "stopping the others",
                    err=True,
                )
                break
        else:
            click.echo(f"ingest up: {supervisor.signal_name}, stopping", err=True)
    except BaseException:
        failed = True
        raise
    finally:
        killed = stop(children, stop_timeout)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    return 1 if failed or killed else 0


def stop(children: list[Child], timeout: float) -> bool:
    """SIGTERM each running child, SIGKILL its process group after `timeout`. Returns whether
    any child had to be killed."""
    for child in children:
        if child.process.poll() is None:
            child.process.terminate()
    deadline = time.monotonic() + timeout
    killed = False
    for child in children:
        try:
            child.process.wait(max(deadline - time.monotonic(), 0))
        except subprocess.TimeoutExpired:
            click.echo(
                f"ingest up: {child.name} did not stop in {timeout:g}s; killing it", err=True
            )
            killed = True
        # Whatever the child left behind in its group (pool processes) goes with it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.process.pid, signal.SIGKILL)
        child.process.wait()
        child.relay.join(timeout=5)
    return killed
