"""A bare Flask endpoint: what the API's HTTP server and Flask alone can answer on this machine.

The benchmark serves it on the API's server with the API's settings: it runs
`python scripts/bare_app.py` with the options `ingest serve` gives `python -m ingest_api.server`
(scripts/ on PYTHONPATH), and this app takes the API's place behind the same adapter.
"""

from __future__ import annotations

import os

from flask import Flask, request

from ingest.config import Settings
from ingest_api import server as api_server
from ingest_api.rsgi import BODY_TIMEOUT_VARIABLE, THREADS_VARIABLE, WsgiOverRsgi

app = Flask(__name__)


@app.post("/v1/events")
def accept() -> tuple[dict[str, str], int]:
    request.get_data()  # read the body, as the API does, so keep-alive stays in step
    return {"status": "accepted"}, 202


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


def create_rsgi_app() -> WsgiOverRsgi:
    """The server's factory, as ingest_api.rsgi.create_rsgi_app builds the API's."""
    return WsgiOverRsgi(
        app,
        max_body_bytes=Settings.from_env().max_body_bytes,
        body_timeout=float(os.environ[BODY_TIMEOUT_VARIABLE]),
        threads=int(os.environ[THREADS_VARIABLE]),
    )


if __name__ == "__main__":
    # ingest_api.server serves its TARGET with all its defaults; only the app changes here.
    if not hasattr(api_server, "TARGET"):
        raise SystemExit("ingest_api.server has no TARGET to swap for the bare app")
    api_server.TARGET = f"bare_app:{create_rsgi_app.__name__}"
    api_server.main()
