"""gunicorn settings for the API: `gunicorn -c python:ingest.gunicorn_config ingest_api.wsgi:app`.

JSON log lines for gunicorn and the app, and Prometheus counters summed over every worker:
each worker writes its counters to files in PROMETHEUS_MULTIPROC_DIR and `/metrics` adds them
up. Without this file each worker would answer `/metrics` with its own share only. A client that
stops sending mid-request is cut after gunicorn's `--timeout`, whatever the worker class.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import tempfile
from pathlib import Path
from typing import Any

from ingest.logs import logging_dict

logconfig_dict = logging_dict()
# The app must be imported in the workers, after on_starting chose the metrics directory:
# prometheus_client picks its multiprocess mode when it is imported.
preload_app = False

_own_directory: str | None = None


def on_starting(server: Any) -> None:
    """Give the workers an empty metrics directory: counts of an earlier run must not add up."""
    global _own_directory
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        for stale in Path(directory).glob("*.db"):
            stale.unlink()
    else:
        _own_directory = tempfile.mkdtemp(prefix="ingest-api-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = _own_directory


def post_worker_init(worker: Any) -> None:
    """Cut a client that sends nothing for `timeout` seconds in the middle of a request.

    gunicorn's timeout bounds a silent worker, not a silent client: a gthread worker stays alive
    while one of its threads waits forever for a body that never completes. Set on the listening
    sockets, these options pass to every connection they accept (Linux); a read or write that
    waits longer then fails, and the request ends (ingest_api.body answers 408).
    """
    idle = struct.pack("ll", worker.cfg.timeout, 0)  # struct timeval; 0 s means no limit
    for listener in worker.sockets:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, idle)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, idle)


def child_exit(server: Any, worker: Any) -> None:
    """A dead worker's counters still count; its live gauges must not."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    if _own_directory:
        shutil.rmtree(_own_directory, ignore_errors=True)
