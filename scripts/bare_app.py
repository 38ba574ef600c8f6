"""A bare Flask endpoint: what gunicorn and Flask alone can answer on this machine.

The benchmark serves it with the API's gunicorn settings:
`gunicorn --pythonpath scripts bare_app:app`.
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
