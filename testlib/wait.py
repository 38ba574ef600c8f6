"""Waiting for something to happen, and finding a free port to listen on."""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class HarnessError(AssertionError):
    """A server or process the harness runs did not come up, died, or what was awaited did not
    happen in time. An AssertionError, so that a test reports it as the check that failed."""


def wait_until(
    predicate: Callable[[], T], timeout: float = 30.0, interval: float = 0.1, what: str = ""
) -> T:
    """Poll until `predicate()` is truthy and return it; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise HarnessError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def http_status(port: int, path: str, timeout: float = 5) -> int:
    """The status of GET `path` on 127.0.0.1:`port`; 0 when nothing answered."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    except OSError:  # not listening yet, or closed the connection
        return 0
    finally:
        connection.close()
