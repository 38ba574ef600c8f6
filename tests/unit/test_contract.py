"""The contract between the processes: every task the workers register has its name and queue
in ingest.contract, and the event ids of each task's message are read one way everywhere."""

from __future__ import annotations

import amqp
import pytest

from ingest.canonical import compact_json
from ingest.contract import (
    DEAD_QUEUE,
    EVENT_IDS_SHOWN,
    PERSIST_EVENT,
    PERSIST_EVENTS,
    PERSIST_QUEUE,
    PROJECT_TO_MYSQL,
    PROJECTION_QUEUE,
    RECONCILE_PROJECTION,
    TASK_QUEUES,
    event_ids_of,
    events_repr,
)
from ingest_cli.dead_letters import DeadLetter

EVENTS = [{"event_id": "a-1", "payload": {"event_id": "nested"}}, {"event_id": "a-2"}]


def test_the_workers_register_exactly_the_tasks_the_contract_names() -> None:
    from tasks.celery import app

    app.loader.import_default_modules()
    registered = {name for name in app.tasks if not name.startswith("celery.")}
    assert registered == set(TASK_QUEUES)
    assert set(TASK_QUEUES) == {
        PERSIST_EVENT,
        PERSIST_EVENTS,
        PROJECT_TO_MYSQL,
        RECONCILE_PROJECTION,
    }
    assert app.conf.beat_schedule["reconcile-projection"]["task"] == RECONCILE_PROJECTION


def test_the_names_stay_those_that_queued_messages_and_operators_use() -> None:
    # Messages still queued across an upgrade carry these task names; broker policies, Flower
    # filters and dashboards match these queue names. Every other file takes them from here.
    assert [PERSIST_EVENT, PERSIST_EVENTS, PROJECT_TO_MYSQL, RECONCILE_PROJECTION] == [
        "ingest.persist_event",
        "ingest.persist_events",
        "ingest.project_to_mysql",
        "ingest.reconcile_projection",
    ]
    assert [PERSIST_QUEUE, PROJECTION_QUEUE, DEAD_QUEUE] == [
        "ingest.persist",
        "ingest.projection",
        "ingest.dead",
    ]


@pytest.mark.parametrize(
    ("first_argument", "expected"),
    [
        pytest.param(EVENTS[0], ["a-1"], id="persist_event: one event"),
        pytest.param(EVENTS, ["a-1", "a-2"], id="a list of events"),
        pytest.param(["a-1", "a-2"], ["a-1", "a-2"], id="persist_events, project_to_mysql: ids"),
        pytest.param(None, [], id="reconcile_projection: no argument"),
        pytest.param([{"no": "id"}, 7, None], [], id="nothing that names an event"),
    ],
)
def test_event_ids_of_each_task_s_first_argument(
    first_argument: object, expected: list[str]
) -> None:
    assert event_ids_of(first_argument) == expected


def test_a_dead_persist_events_message_lists_its_ids_not_its_json_text() -> None:
    # persist_events carries [ids, events as one JSON text]: the text names no event.
    body = compact_json([[["a-1", "a-2"], compact_json(EVENTS)], {}, {}])
    letter = DeadLetter.of(amqp.Message(body, application_headers={"task": PERSIST_EVENTS}))
    assert letter.event_ids == ["a-1", "a-2"]
    assert letter.task == PERSIST_EVENTS


def test_flower_shows_the_first_ids_and_counts_the_rest() -> None:
    ids = [f"e-{i}" for i in range(EVENT_IDS_SHOWN + 3)]
    shown = ", ".join(ids[:EVENT_IDS_SHOWN])
    assert events_repr(ids) == f"[{EVENT_IDS_SHOWN + 3} events: {shown} and 3 more]"
