"""A row MySQL refuses for good is set aside: the events around it are projected, the refused
one is shown (GET /v1/events/<id>, /metrics, `ingest refusals`) and can be projected again."""

from __future__ import annotations

import os

from click.testing import CliRunner, Result
from flask.testing import FlaskClient

from ingest.config import Settings
from ingest_api.openapi import EventStatusSchema
from ingest_cli import main
from models.engines import execute
from testlib.api import READ_AUTH, event
from testlib.data import dead_letters, projected_ids, scalar
from testlib.poison import persist_as_sent, refusals, too_deep_for_mariadb
from testlib.processes import service_env
from testlib.wait import wait_until

# MariaDB's error when a JSON column's json_valid check fails.
JSON_REFUSED = 4025


def ingest(settings: Settings, *args: str) -> Result:
    return CliRunner().invoke(main, ["--env-file", os.devnull, *args], env=service_env(settings))


def test_one_refused_row_in_a_message_holds_back_none_of_the_others(
    pipeline: Settings, client: FlaskClient
) -> None:
    good = [event(f"good-{number}") for number in range(9)]
    poisoned = event("poisoned", payload=too_deep_for_mariadb())
    persist_as_sent(pipeline, [*good[:4], poisoned, *good[4:]])

    good_ids = {item["event_id"] for item in good}
    wait_until(
        lambda: (
            projected_ids(pipeline) == good_ids and refusals(pipeline) == {"poisoned": JSON_REFUSED}
        ),
        timeout=60,
        what="the good events in MySQL and the poisoned one recorded",
    )
    assert scalar(pipeline.postgres_url, "SELECT count(*) FROM events") == 10

    status = client.get("/v1/events/poisoned", headers=READ_AUTH).json
    assert (status["status"], status["projection"]) == ("stored", "refused")
    assert status["refusal"]["error_code"] == JSON_REFUSED
    assert "events_projection" in status["refusal"]["error_message"]
    assert EventStatusSchema().validate(status) == {}
    assert client.get("/v1/events/good-0", headers=READ_AUTH).json["refusal"] is None
    metrics = client.get("/metrics").get_data(as_text=True)
    assert "\ningest_projection_refused 1.0\n" in metrics

    listed = ingest(pipeline, "refusals", "list")
    assert listed.exit_code == 0, listed.output
    assert "1. poisoned\n  refused: MySQL error 4025: CONSTRAINT" in listed.output
    assert "MySQL refuses 1 stored event(s)." in listed.output
    again = ingest(pipeline, "refusals", "retry")
    assert again.exit_code == 1, again.output
    assert "MySQL took 0 event(s); 1 still refused." in again.output

    # Once MySQL can take the row (here: the row repaired), a retry projects it and clears it.
    execute(
        pipeline.postgres_url,
        "UPDATE events SET payload = '{\"repaired\": true}' WHERE event_id = 'poisoned'",
    )
    taken = ingest(pipeline, "refusals", "retry", "poisoned", "good-0")
    assert taken.exit_code == 0, taken.output
    assert "Not refused (nothing to retry): good-0" in taken.output
    assert "MySQL took 1 event(s); 0 still refused." in taken.output
    assert refusals(pipeline) == {}
    assert projected_ids(pipeline) == good_ids | {"poisoned"}
    status = client.get("/v1/events/poisoned", headers=READ_AUTH).json
    assert (status["projection"], status["refusal"]) == ("done", None)
    assert dead_letters(pipeline) == []
