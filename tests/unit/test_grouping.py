"""Single events that arrive together leave together (ingest_api/grouping.py), with a publisher
that records what it was asked to send and confirms when the test lets it."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from ingest.contract import PERSIST_EVENT
from ingest_api.grouping import EventGrouper
from ingest_api.on_loop import Inbox, run_on_loop
from ingest_api.publisher import Publisher, PublishError
from testlib.wait import wait_until

LINGER = 0.05


@dataclass
class Sent:
    task: str
    event_ids: list[str]
    headers: dict[str, Any]


@dataclass
class FakePublisher:
    """Each publish waits until `confirm` is set, then returns or raises `failure`."""

    timeout: float = 10.0
    confirm: threading.Event = field(default_factory=threading.Event)
    failure: Exception | None = None
    sent: list[Sent] = field(default_factory=list)
    publishing: threading.Event = field(default_factory=threading.Event)

    def publish(
        self,
        task_name: str,
        args: list[Any],
        headers: dict[str, Any],
        deadline: float | None = None,
        argsrepr: str | None = None,
    ) -> None:
        self._send(Sent(task_name, [event["event_id"] for event in args], headers))

    def publish_events(
        self, events: list[dict[str, Any]], headers: dict[str, Any], deadline: float | None = None
    ) -> None:
        self._send(Sent("persist_events", [event["event_id"] for event in events], headers))

    def _send(self, sent: Sent) -> None:
        self.sent.append(sent)
        self.publishing.set()
        self.confirm.wait()
        if self.failure is not None:
            raise self.failure


@dataclass
class Request:
    """A request thread handing one event to the grouper; what it got back."""

    grouper: EventGrouper
    event_id: str
    size: int = 10
    error: Exception | None = None
    thread: threading.Thread = field(init=False)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        event = {"event_id": self.event_id}
        try:
            self.grouper.publish(event, self.size, f"request-{self.event_id}")
        except PublishError as exc:
            self.error = exc

    def answered(self) -> bool:
        return not self.thread.is_alive()

    def result(self) -> Exception | None:
        self.thread.join(timeout=10)
        assert self.answered(), f"request {self.event_id} hung"
        return self.error


@pytest.fixture
def publisher() -> Iterator[FakePublisher]:
    publisher = FakePublisher()
    yield publisher
    publisher.confirm.set()  # let the grouper's thread finish what it holds


def grouper_of(
    publisher: FakePublisher, max_events: int = 100, max_bytes: int = 10_000
) -> EventGrouper:
    return EventGrouper(cast(Publisher, publisher), max_events, max_bytes, LINGER)


def waiting(grouper: EventGrouper, count: int) -> None:
    """Until `count` requests wait in the grouper's queue behind the publish under way."""
    wait_until(lambda: grouper._waiting._queue.qsize() == count, timeout=5, what="queued events")


def sent_while_one_publish_waits(
    publisher: FakePublisher, grouper: EventGrouper, event_ids: list[str], size: int = 10
) -> list[Request]:
    """A first event whose publish waits for its confirm, then `event_ids` queued behind it;
    the confirm is let through once they all wait. Returns every request, the first first."""
    first = Request(grouper, "first")
    wait_until(publisher.publishing.is_set, timeout=5, what="the first publish")
    behind = [Request(grouper, event_id, size) for event_id in event_ids]
    waiting(grouper, len(event_ids))
    publisher.confirm.set()
    return [first, *behind]


def test_a_lone_event_leaves_at_once_as_one_persist_event(publisher: FakePublisher) -> None:
    publisher.confirm.set()
    request = Request(grouper_of(publisher), "only")

    assert request.result() is None
    assert publisher.sent == [Sent(PERSIST_EVENT, ["only"], {"request_id": "request-only"})]


def test_events_queued_behind_a_publish_leave_together_and_wait_for_its_confirm(
    publisher: FakePublisher,
) -> None:
    grouper = grouper_of(publisher)
    first = Request(grouper, "first")
    wait_until(publisher.publishing.is_set, timeout=5, what="the first publish")
    behind = [Request(grouper, f"e{n}") for n in range(5)]
    waiting(grouper, 5)
    # Nothing is answered before the broker confirmed the message that carries it.
    assert not any(request.answered() for request in [first, *behind])

    publisher.confirm.set()

    assert [request.result() for request in [first, *behind]] == [None] * 6
    assert [sent.event_ids for sent in publisher.sent] == [["first"], [f"e{n}" for n in range(5)]]
    together = publisher.sent[1]
    assert together.task == "persist_events"
    assert together.headers == {
        "request_id": "request-e0",
        "request_ids": [f"request-e{n}" for n in range(5)],
    }


def test_a_group_holds_at_most_max_events(publisher: FakePublisher) -> None:
    grouper = grouper_of(publisher, max_events=3)
    requests = sent_while_one_publish_waits(publisher, grouper, [f"e{n}" for n in range(7)])

    assert [request.result() for request in requests] == [None] * 8
    assert [len(sent.event_ids) for sent in publisher.sent] == [1, 3, 3, 1]


def test_a_group_closes_once_it_reaches_max_bytes(publisher: FakePublisher) -> None:
    grouper = grouper_of(publisher, max_bytes=250)
    requests = sent_while_one_publish_waits(
        publisher, grouper, [f"e{n}" for n in range(5)], size=100
    )

    assert [request.result() for request in requests] == [None] * 6
    # 100 + 100 is under 250: a third joins; 300 closes the group.
    assert [len(sent.event_ids) for sent in publisher.sent] == [1, 3, 2]


def test_a_refused_publish_answers_every_request_of_its_group_with_the_error(
    publisher: FakePublisher,
) -> None:
    publisher.failure = PublishError("the broker did not confirm within 3.0s")
    requests = sent_while_one_publish_waits(publisher, grouper_of(publisher), ["a", "b", "c"])

    errors = [request.result() for request in requests]
    assert [str(error) for error in errors] == ["the broker did not confirm within 3.0s"] * 4


def test_an_unexpected_failure_is_a_publish_error_and_the_grouper_lives_on(
    publisher: FakePublisher,
) -> None:
    grouper = grouper_of(publisher)
    publisher.failure = RuntimeError("connection reset in the middle")
    publisher.confirm.set()
    failed = Request(grouper, "failed").result()

    assert isinstance(failed, PublishError)
    assert str(failed) == "connection reset in the middle"
    publisher.failure = None
    assert Request(grouper, "later").result() is None
    assert [sent.event_ids for sent in publisher.sent] == [["failed"], ["later"]]


def test_a_request_is_answered_when_its_time_runs_out_and_a_late_one_is_never_sent(
    publisher: FakePublisher,
) -> None:
    publisher.timeout = 0.3
    grouper = grouper_of(publisher)
    first = Request(grouper, "first")
    wait_until(publisher.publishing.is_set, timeout=5, what="the first publish")
    late = Request(grouper, "late")
    waiting(grouper, 1)

    # Neither waits for the confirm past its own deadline.
    for request in (first, late):
        error = request.result()
        assert str(error) == "the broker did not confirm within 0.3s"
    publisher.confirm.set()
    wait_until(lambda: grouper._waiting._queue.qsize() == 0, timeout=5, what="the late event")
    another = Request(grouper, "another")
    assert another.result() is None
    # The late event's deadline had passed when its turn came: it was dropped, not published.
    assert [sent.event_ids for sent in publisher.sent] == [["first"], ["another"]]


def test_requests_on_the_event_loop_leave_together_and_wait_for_the_confirm_there(
    publisher: FakePublisher,
) -> None:
    """As POST /v1/events runs in the server: each request in a greenlet on the loop's thread."""
    grouper = grouper_of(publisher)

    def publish(event_id: str) -> str:
        grouper.publish({"event_id": event_id}, 10, f"request-{event_id}")
        return event_id

    async def until(condition: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 5
        while not condition():
            assert time.monotonic() < deadline, "the grouper did not get there in time"
            await asyncio.sleep(0.001)

    async def main() -> list[str]:
        inbox = Inbox()
        first = asyncio.create_task(run_on_loop(publish, "first", inbox))
        await until(publisher.publishing.is_set)
        behind = [asyncio.create_task(run_on_loop(publish, f"e{n}", inbox)) for n in range(5)]
        await until(lambda: grouper._waiting._queue.qsize() == 5)
        await asyncio.sleep(0.01)
        # Nothing is answered before the broker confirmed the message that carries it.
        assert not any(request.done() for request in [first, *behind])
        publisher.confirm.set()
        return await asyncio.gather(first, *behind)

    assert asyncio.run(main()) == ["first", *(f"e{n}" for n in range(5))]
    assert [sent.event_ids for sent in publisher.sent] == [["first"], [f"e{n}" for n in range(5)]]
