"""The Flask app behind granian's RSGI interface: each body is read whole, with a deadline, first.

granian's own WSGI interface hands the app a body that a blocking thread reads with no time limit:
a client that stops sending mid-body holds that thread until it hangs up, and a read still
waiting after its answer went out holds the GIL (measured with granian 2.8.9). Here the body is
read on the event loop, where a stalled one costs no thread, under the same deadline as the head
(`--http1-header-read-timeout`), and the app runs in a thread pool with the bytes in memory,
at most INGEST_MAX_BODY_BYTES + 1 of them per request. POST /v1/events, whose one wait is the
broker's confirm, runs on the loop's own thread instead (ingest_api.on_loop).
"""

from __future__ import annotations

import asyncio
import io
import os
import queue
import sys
import threading
from collections.abc import Callable, Collection, Iterable
from typing import TYPE_CHECKING, Any

from ingest_api.on_loop import Inbox, run_on_loop

if TYPE_CHECKING:
    from flask import Flask

# How `python -m ingest_api.server` tells its workers the pool size and the body deadline.
THREADS_VARIABLE = "INGEST_API_THREADS"
BODY_TIMEOUT_VARIABLE = "INGEST_API_BODY_TIMEOUT"
# Request headers that WSGI names without the HTTP_ prefix.
UNPREFIXED = {"content-type": "CONTENT_TYPE", "content-length": "CONTENT_LENGTH"}

WsgiHeaders = list[tuple[str, str]]
Answer = tuple[int, WsgiHeaders, bytes]
Work = tuple[dict[str, Any], "asyncio.Future[Answer]"]


class AppThreads:
    """Threads that run the app, each answer handed back to the event loop's future.

    What loop.run_in_executor does, for less: no concurrent.futures.Future (and its Condition)
    chained to the asyncio one, and the answers handed back through an Inbox, one wake-up of
    the loop for all that finished while it was busy.
    """

    def __init__(self, call: Callable[[dict[str, Any]], Answer], count: int, inbox: Inbox) -> None:
        self.call = call
        self.inbox = inbox
        self._work: queue.SimpleQueue[Work | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._serve, name=f"api-{number}", daemon=True)
            for number in range(count)
        ]
        for thread in self._threads:
            thread.start()

    def run(self, environ: dict[str, Any]) -> asyncio.Future[Answer]:
        """The app's answer to `environ`, as a future of the running loop."""
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._work.put((environ, future))
        return future

    def close(self) -> None:
        for _ in self._threads:
            self._work.put(None)
        for thread in self._threads:
            thread.join()

    def _serve(self) -> None:
        while (item := self._work.get()) is not None:
            environ, future = item
            try:
                answer = self.call(environ)
            except Exception as exc:  # noqa: BLE001 - raised in the request's coroutine
                self.inbox.deliver(future, error=exc)
            else:
                self.inbox.deliver(future, answer)


class StalledBody(io.RawIOBase):
    """What the app reads when the body did not arrive in time: werkzeug turns the error into
    ClientDisconnected, which ingest_api.body answers with 408."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        raise TimeoutError("the request body did not arrive before the deadline")


class WsgiOverRsgi:
    def __init__(
        self,
        app: Flask,
        *,
        max_body_bytes: int,
        body_timeout: float,
        threads: int,
        on_loop: Collection[tuple[str, str]] = (),
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout
        self.inbox = Inbox()
        self.threads = AppThreads(self._call, threads, self.inbox)
        # (method, path) of the routes that run on the loop's thread (ingest_api.on_loop).
        self.on_loop = frozenset(on_loop)

    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        body, length, stalled = await self._read_body(scope, protocol)
        environ = self._environ(scope, body, length)
        if (scope.method, scope.path) in self.on_loop:
            status, headers, content = await run_on_loop(self._call, environ, self.inbox)
        else:
            status, headers, content = await self.threads.run(environ)
        if stalled:
            # The rest of the body may still come: it must not be read as the next request.
            headers = [*headers, ("Connection", "close")]
        protocol.response_bytes(status, headers, content)

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.threads.close()

    async def _read_body(self, scope: Any, protocol: Any) -> tuple[io.RawIOBase, int | None, bool]:
        """The body, its length for CONTENT_LENGTH, and whether it stalled."""
        declared = scope.headers.get("content-length")
        if declared == "0":
            return io.BytesIO(), 0, False
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            # The app answers 413 from the header alone: none of the body is read.
            return io.BytesIO(), int(declared), False
        received = bytearray()
        try:
            async with asyncio.timeout(self.body_timeout):
                if declared is not None:
                    # At most the limit, as declared (hyper holds the client to it), in one await.
                    received += await protocol()
                else:
                    async for chunk in protocol:
                        received += chunk
                        if len(received) > self.max_body_bytes:
                            break  # over the limit: the app answers 413 from the length
        except TimeoutError:
            return StalledBody(), int(declared) if declared else None, True
        return io.BytesIO(received), len(received), False

    @staticmethod
    def _environ(scope: Any, body: io.RawIOBase, length: int | None) -> dict[str, Any]:
        server_name, _, server_port = scope.server.rpartition(":")
        environ: dict[str, Any] = {
            "REQUEST_METHOD": scope.method,
            "SCRIPT_NAME": "",
            # WSGI carries the decoded path as bytes in a latin-1 string.
            "PATH_INFO": scope.path.encode("utf-8", "surrogateescape").decode("latin-1"),
            "QUERY_STRING": scope.query_string,
            "SERVER_NAME": server_name,
            "SERVER_PORT": server_port,
            "SERVER_PROTOCOL": f"HTTP/{scope.http_version}",
            "REMOTE_ADDR": scope.client.rpartition(":")[0],
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": scope.scheme,
            "wsgi.input": body,
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
        for name, value in scope.headers.items():
            if "_" in name or name == "transfer-encoding":
                # X_Api_Key must not pass for X-Api-Key; the body is already de-chunked.
                continue
            key = UNPREFIXED.get(name) or "HTTP_" + name.upper().replace("-", "_")
            environ[key] = f"{environ[key]},{value}" if key in environ else value
        if length is not None:
            environ["CONTENT_LENGTH"] = str(length)
        return environ

    def _call(self, environ: dict[str, Any]) -> Answer:
        """Run the app in an app thread; the answer is small JSON or a static docs file."""
        started: list[tuple[str, WsgiHeaders]] = []
        written: list[bytes] = []

        def start_response(
            status: str, headers: WsgiHeaders, exc_info: Any = None
        ) -> Callable[[bytes], None]:
            if exc_info and started:
                raise exc_info[1].with_traceback(exc_info[2])
            started[:] = [(status, headers)]
            return written.append

        result: Iterable[bytes] = self.app(environ, start_response)
        try:
            written.extend(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        status, headers = started[0]
        return int(status[:3]), headers, b"".join(written)


def create_rsgi_app() -> WsgiOverRsgi:
    """granian's factory (`--factory`): each worker builds its own app after the fork."""
    from ingest.heap import freeze_startup_objects
    from ingest_api.app import create_app
    from ingest_api.events import ON_LOOP_ROUTES

    app = create_app()
    # Read before serving: POST /v1/events runs on the loop, which must not wait for a database.
    app.extensions["ingest.contracts"].current()
    served = WsgiOverRsgi(
        app,
        max_body_bytes=app.extensions["ingest.settings"].max_body_bytes,
        body_timeout=float(os.environ[BODY_TIMEOUT_VARIABLE]),
        threads=int(os.environ[THREADS_VARIABLE]),
        on_loop=ON_LOOP_ROUTES,
    )
    freeze_startup_objects()
    return served
