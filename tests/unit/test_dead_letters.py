"""Reading a dead message (ingest_cli/dead_letters.py): its task, its events, and why, where,
how often and when it died, from the message alone; and the copy that replay sends back."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import amqp
import pytest

from ingest.contract import PERSIST_EVENT, PERSIST_EVENTS, PROJECT_TO_MYSQL
from ingest_cli.dead_letters import DeadLetter, copy_of, first_argument

DIED_AT = datetime(2026, 11, 27, 10, 0, 5)


def death(reason: str, queue: str, count: int, routing_key: str) -> dict[str, Any]:
    """An x-death entry as RabbitMQ writes it."""
    return {
        "reason": reason,
        "queue": queue,
        "count": count,
        "exchange": "ingest",
        "routing-keys": [routing_key],
        "time": DIED_AT,
    }


def task_message(task: str, args: list[Any], **headers: Any) -> amqp.Message:
    """A Celery protocol-2 task message: body [args, kwargs, embed], the task in the headers."""
    body = json.dumps([args, {}, {"callbacks": None}])
    return amqp.Message(
        body, application_headers={"task": task, "id": "task-1", **headers}, delivery_mode=2
    )


def test_a_dead_persist_event_tells_its_task_its_event_and_its_most_recent_death() -> None:
    event = {"event_id": "order-1", "payload": {"total": 3}}
    message = task_message(
        PERSIST_EVENT,
        [event],
        **{
            "x-death": [
                death("rejected", "ingest.persist", 2, "ingest.persist"),
                death("expired", "ingest.delay", 1, "ingest.persist"),
            ]
        },
    )

    letter = DeadLetter.of(message)

    assert letter == DeadLetter(
        task=PERSIST_EVENT,
        task_id="task-1",
        event_ids=["order-1"],
        reason="rejected",
        queue="ingest.persist",
        exchange="ingest",
        routing_key="ingest.persist",
        count=2,
        died_at=DIED_AT,
    )
    assert letter.describe() == (
        f"{PERSIST_EVENT} task-1\n"
        "  events: order-1\n"
        "  died: rejected in ingest.persist, 2 times, last at 2026-11-27 10:00:05 UTC"
    )


@pytest.mark.parametrize(
    ("task", "args"),
    [
        (PERSIST_EVENTS, [["a", "b"], json.dumps([{"event_id": "a"}, {"event_id": "b"}])]),
        (PROJECT_TO_MYSQL, [["a", "b"]]),
    ],
)
def test_the_event_ids_come_from_the_ids_a_task_carries_not_its_json_text(
    task: str, args: list[Any]
) -> None:
    letter = DeadLetter.of(task_message(task, args))
    assert letter.event_ids == ["a", "b"]


def test_a_message_no_task_sent_and_the_broker_never_killed_says_it_cannot_be_replayed() -> None:
    letter = DeadLetter.of(amqp.Message(b"\xff not json"))

    assert (letter.task, letter.task_id, letter.event_ids) == (None, None, [])
    assert (letter.queue, letter.routing_key, letter.count, letter.died_at) == (None, None, 0, None)
    assert letter.describe() == (
        "(not a task) -\n"
        "  events: -\n"
        "  died: no x-death header: not dead-lettered by the broker, cannot be replayed"
    )


def test_a_description_shows_five_event_ids_and_counts_the_rest() -> None:
    ids = [f"e{n}" for n in range(12)]
    message = task_message(
        PROJECT_TO_MYSQL, [ids], **{"x-death": [death("delivery_limit", "q", 1, "q")]}
    )

    lines = DeadLetter.of(message).describe().splitlines()

    assert lines[1] == "  events: e0, e1, e2, e3, e4 (+7 more)"
    assert lines[2].startswith("  died: delivery_limit in q, 1 time, last at")


@pytest.mark.parametrize(
    ("body", "first"),
    [
        (b'[["x", "y"], {}, {}]', "x"),
        (b'[[{"event_id": "e"}], {}, {}]', {"event_id": "e"}),
        (b"[[], {}, {}]", None),
        (b"[]", None),
        (b'{"args": ["x"]}', None),
        (b'["not a list"]', None),
        (b"null", None),
        (b"not json", None),
    ],
)
def test_the_first_argument_of_a_task_message_or_none(body: bytes, first: Any) -> None:
    assert first_argument(body) == first


def test_a_replayed_copy_is_persistent_and_leaves_the_broker_s_delivery_count_behind() -> None:
    deaths = [death("rejected", "ingest.persist", 1, "ingest.persist")]
    message = task_message(
        PERSIST_EVENT, [{"event_id": "e"}], **{"x-death": deaths, "x-delivery-count": 4}
    )
    message.properties["delivery_mode"] = 1

    copy = copy_of(message)

    assert copy.body == message.body
    assert copy.properties["delivery_mode"] == 2
    assert copy.properties["application_headers"] == {
        "task": PERSIST_EVENT,
        "id": "task-1",
        "x-death": deaths,
    }
    # The dead message itself is left as it was.
    assert message.properties["application_headers"]["x-delivery-count"] == 4
