"""`ingest send FILE`: send a JSON-lines file of events to the API in batches."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import click
import requests

from ingest_cli.context import CliContext, pass_cli

# Longest wait a Retry-After header may ask for; a larger value is cut down to this.
MAX_RETRY_AFTER = 60.0
TIMEOUT = (5, 60)  # seconds to connect, seconds to wait for the answer


@dataclass(frozen=True)
class Line:
    number: int
    event: Any


@dataclass
class Outcome:
    accepted: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)

    def reject(self, number: int, error: str) -> None:
        self.rejected.append((number, error))


class Sender:
    """POSTs batches to /v1/batch and sorts each line into accepted or rejected."""

    def __init__(self, url: str, key: str | None, retries: int, outcome: Outcome) -> None:
        self.url = url.rstrip("/") + "/v1/batch"
        self.retries = retries
        self.outcome = outcome
        self.session = requests.Session()
        if key:
            self.session.headers["Authorization"] = f"Bearer {key}"

    def send(self, lines: list[Line]) -> None:
        response = self.post({"batch": [line.event for line in lines]})
        body = problem_body(response)
        if response.status_code == 202 or (
            response.status_code == 422 and isinstance(body.get("results"), list)
        ):
            for result in body["results"]:
                line = lines[result["index"]]
                if result["status"] == "accepted":
                    self.outcome.accepted += 1
                else:
                    self.outcome.reject(line.number, describe_errors(result.get("errors")))
        elif response.status_code == 413 and len(lines) > 1:
            # Over the body or batch limit: halves fit sooner or later; a single line cannot.
            middle = len(lines) // 2
            self.send(lines[:middle])
            self.send(lines[middle:])
        elif response.status_code in (413, 422):
            for line in lines:
                self.outcome.reject(line.number, body.get("detail") or response.reason)
        elif response.status_code == 401:
            raise click.ClickException(
                "the API refused the key (401): pass --key or set INGEST_API_KEYS"
            )
        else:
            raise click.ClickException(
                f"the API answered {response.status_code}: {body.get('detail') or response.text}"
            )

    def post(self, document: dict[str, Any]) -> requests.Response:
        """POST, retrying a 503 after its Retry-After and a lost connection after a backoff."""
        data = json.dumps(document, ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json"}
        for attempt in range(self.retries + 1):
            try:
                response = self.session.post(self.url, data=data, headers=headers, timeout=TIMEOUT)
            except requests.ConnectionError as exc:
                problem, delay = (
                    f"cannot reach {self.url}: {root_cause(exc)}",
                    min(2.0**attempt, 30),
                )
            else:
                if response.status_code != 503:
                    return response
                problem = "the API answered 503: the broker did not confirm in time"
                delay = retry_after(response)
            if attempt < self.retries:
                click.echo(f"{problem}; retrying in {delay:g}s", err=True)
                time.sleep(delay)
        raise click.ClickException(f"{problem}; gave up after {self.retries + 1} attempts")


def root_cause(exc: BaseException) -> BaseException:
    """The error at the bottom of a chain (requests wraps urllib3, which wraps the OSError)."""
    while (inner := exc.__cause__ or exc.__context__) is not None:
        exc = inner
    return exc


def retry_after(response: requests.Response) -> float:
    try:
        return min(max(float(response.headers.get("Retry-After", "")), 0.0), MAX_RETRY_AFTER)
    except ValueError:
        return 1.0


def problem_body(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def describe_errors(errors: Any) -> str:
    """marshmallow's {"field": ["message", ...]} as `field: message; field: message`."""
    if not isinstance(errors, dict):
        return str(errors)
    parts = []
    for name, messages in errors.items():
        if isinstance(messages, list) and all(isinstance(m, str) for m in messages):
            parts.append(f"{name}: {' '.join(messages)}")
        else:
            parts.append(f"{name}: {json.dumps(messages)}")
    return "; ".join(parts)


def read_lines(stream: BinaryIO, outcome: Outcome) -> Iterator[tuple[Line | None, int]]:
    """Each event of the file, with the bytes read for it. Blank lines give None; a line that
    is not JSON gives None too, and is rejected here, never sent."""
    for number, raw in enumerate(stream, 1):
        line = None
        if raw.strip():
            try:
                line = Line(number, json.loads(raw.rstrip(b"\r\n")))
            except ValueError as exc:  # also invalid UTF-8
                outcome.reject(number, f"not JSON: {exc}")
        yield line, len(raw)


@click.command("send")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--url", default="http://127.0.0.1:8000", show_default=True, help="Where the API listens."
)
@click.option("--key", default=None, help="API key [default: the first of INGEST_API_KEYS].")
@click.option(
    "--batch-size",
    type=click.IntRange(1),
    default=None,
    help="Events per request [default: INGEST_MAX_BATCH_EVENTS].",
)
@click.option(
    "--retries",
    type=click.IntRange(0),
    default=5,
    show_default=True,
    help="Retries of a request answered 503 (after its Retry-After) or not answered at all.",
)
@pass_cli
def send_command(
    cli: CliContext,
    file: Path,
    url: str,
    key: str | None,
    batch_size: int | None,
    retries: int,
) -> None:
    """Send a JSON-lines file of events to the API.

    FILE holds one event, a JSON object, per line; they go to POST /v1/batch in batches.
    Prints how many lines were accepted and, for each rejected line, its number and why.
    Exits with 1 when any line was rejected. Sending a file again is safe: an event_id that
    was already accepted is stored once.
    """
    settings = cli.settings()
    outcome = Outcome()
    sender = Sender(url, key or next(iter(settings.api_keys), None), retries, outcome)
    size = batch_size or settings.max_batch_events
    batch: list[Line] = []
    with (
        file.open("rb") as stream,
        click.progressbar(length=file.stat().st_size, label="Sending", file=sys.stderr) as bar,
    ):
        for line, consumed in read_lines(stream, outcome):
            if line is not None:
                batch.append(line)
            if len(batch) == size:
                sender.send(batch)
                batch = []
            bar.update(consumed)
        if batch:
            sender.send(batch)
    rejected = sorted(outcome.rejected)
    click.echo(f"{outcome.accepted} accepted, {len(rejected)} rejected.")
    for number, error in rejected:
        click.echo(f"  line {number}: {error}")
    if rejected:
        sys.exit(1)
