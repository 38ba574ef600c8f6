"""Fault 9: a 3-node RabbitMQ cluster loses a node mid-run. Quorum queues keep a copy on every
node; the API and the workers fail over to the next node of BROKER_URL; no confirmed event is
lost, none is stored twice."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ingest.config import Settings, redact_url
from ingest.contract import PERSIST_QUEUE
from testlib.data import dead_letters, reset, stored_count
from testlib.faults import (
    Traffic,
    api,
    assert_stored_exactly_once,
    wait_until_projected,
    wait_until_stored,
)
from testlib.private_servers import RabbitNode, cluster_url, private_rabbitmq_cluster
from testlib.processes import running_beat, running_workers
from testlib.wait import wait_until

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster() -> Iterator[list[RabbitNode]]:
    with private_rabbitmq_cluster(3) as nodes:
        yield nodes


def replicas(node: RabbitNode, queue: str) -> tuple[str, list[str]]:
    """The leader of a quorum queue and its members, as `node` sees them."""
    listing = node.ctl("list_queues", "-q", "--no-table-headers", "name", "leader", "members")
    for line in listing.splitlines():
        name, leader, members = line.split("\t")
        if name == queue:
            return leader, members.strip("[]").split(", ")
    raise AssertionError(f"no queue {queue}")


def test_a_node_killed_mid_run_loses_no_confirmed_event(
    settings: Settings, cluster: list[RabbitNode]
) -> None:
    ours = settings.replace(broker_url=cluster_url(cluster))
    reset(ours)
    with api(ours) as app, running_workers(ours), running_beat(ours):
        traffic = Traffic(app, "cluster", pause=0.02).start()
        wait_until(lambda: stored_count(ours) >= 300, what="the run to be under way")
        leader, members = replicas(cluster[-1], PERSIST_QUEUE)
        assert sorted(members) == sorted(node.name for node in cluster)

        # The node that leads ingest.persist and holds every client connection (the first
        # node of BROKER_URL).
        [victim] = [node for node in cluster if node.name == leader]
        victim.kill()

        survivor = next(node for node in cluster if node is not victim)
        accepted_at_kill = len(traffic.acknowledged)
        wait_until(
            lambda: len(traffic.acknowledged) >= accepted_at_kill + 300,
            timeout=60,
            what="the API to accept events through another node",
        )
        wait_until(
            lambda: stored_count(ours) >= accepted_at_kill + 300,
            timeout=60,
            what="the workers to store events through another node",
        )
        traffic.stop()
        print(
            f"cluster: {len(traffic.acknowledged)} acknowledged, "
            f"{len(traffic.refused)} answered 503 during the failover"
        )

        wait_until_stored(ours, traffic.acknowledged)
        assert_stored_exactly_once(ours, traffic.acknowledged, traffic.sent)
        wait_until_projected(ours)
        assert replicas(survivor, PERSIST_QUEUE)[0] != victim.name
    assert dead_letters(ours) == []


def test_a_broker_url_of_several_nodes_is_logged_without_any_password() -> None:
    url = "amqp://ingest:first-secret@mq1:5672//;amqp://ingest:second-secret@mq2:5672//"

    assert redact_url(url) == "amqp://ingest:***@mq1:5672//;amqp://ingest:***@mq2:5672//"
