"""A bare Flask endpoint: what the API's HTTP server and Flask alone can answer on this machine.

The benchmark serves it with the API's server and settings: the command `ingest serve` runs, with
`bare_app:app` in place of the API and scripts/ on PYTHONPATH.
"""

from __future__ import annotations

from flask import Flask, request

app = Flask(__name__)


@app.post("/v1/events")
def accept() -> tuple[dict[str, str], int]:
    request.get_data()  # read the body, as the API does, so keep-alive stays in step
    return {"status": "accepted"}, 202


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}
