"""The `ingest` command line against the real servers, with real service processes."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path

import click
import requests
from alembic.config import Config
from alembic.script import ScriptDirectory
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from kombu import Connection
from sqlalchemy import text
from werkzeug.serving import make_server

from ingest.canonical import compact_json
from ingest.config import Settings
from ingest.contract import DEAD_QUEUE, PERSIST_QUEUE, event_ids_of
from ingest_api.app import close_app, create_app
from ingest_cli import main
from ingest_cli.maintenance import ALEMBIC_INI
from models import engine_for
from tasks.celery import create_celery
from tasks.persist import store_events
from tasks.projection import RECONCILE_LOCK
from testlib.api import AUTH, READ_AUTH, event
from testlib.commands import invoke
from testlib.data import projected_count, rows, scalar, stored_count
from testlib.processes import VENV_BIN, Worker, service_env
from testlib.servers import SharedServers, isolated_settings
from testlib.wait import free_port, wait_until

FLOWER_LOGIN = ("admin", "flower-test-password")


def run_ingest(
    settings: Settings, *args: str, cwd: Path, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run the installed `ingest` command as a user would."""
    return subprocess.run(
        [str(VENV_BIN / "ingest"), *args],
        cwd=cwd,
        env=service_env(settings, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def private_settings(
    servers: SharedServers, settings: Settings, suffix: str
) -> AbstractContextManager[Settings]:
    """Empty, unmigrated databases and a vhost of their own: no worker of the run sees them."""
    name = f"{settings.postgres_url.rsplit('/', 1)[1]}_{suffix}"
    return isolated_settings(servers, name, settings)


@contextmanager
def serving(app: Flask) -> Iterator[str]:
    """The app on a free loopback port, in a thread; yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


def free_port_pair() -> int:
    """A free port whose successor is free too."""
    while True:
        port = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port


def dead_depth(settings: Settings) -> int:
    with Connection(settings.broker_url) as connection:
        return connection.default_channel.queue_declare(DEAD_QUEUE, passive=True).message_count


def head_revision() -> str:
    head = ScriptDirectory.from_config(Config(str(ALEMBIC_INI))).get_current_head()
    assert head
    return head


def test_every_command_answers_help() -> None:
    def paths(command: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
        yield path
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                yield from paths(sub, (*path, name))

    every = list(paths(main))
    expected = {"up", "serve", "worker", "projector", "beat", "flower", "migrate", "reconcile"}
    expected |= {"status", "send", "dead-letters list", "dead-letters replay"}
    assert expected <= {" ".join(path) for path in every}
    for path in every:
        result = CliRunner().invoke(main, [*path, "--help"], prog_name="ingest")
        assert result.exit_code == 0, result.output
        assert f"Usage: ingest {' '.join(path)}".rstrip() in result.output
    installed = subprocess.run(
        [str(VENV_BIN / "ingest"), "--help"], capture_output=True, text=True, check=False
    )
    assert installed.returncode == 0
    assert "dead-letters" in installed.stdout


def test_migrate_creates_both_schemas_and_can_run_again(
    shared_servers: SharedServers, settings: Settings, tmp_path: Path
) -> None:
    with private_settings(shared_servers, settings, "migrate") as fresh:
        for _ in range(2):
            result = run_ingest(fresh, "migrate", cwd=tmp_path)
            assert result.returncode == 0, result.stderr
            assert "PostgreSQL and MySQL are at the newest revision." in result.stdout
            assert fresh.mysql_url
            for url in (fresh.postgres_url, fresh.mysql_url):
                assert scalar(url, "SELECT version_num FROM alembic_version") == head_revision()
        assert scalar(fresh.postgres_url, "SELECT count(*) FROM events") == 0
        assert scalar(fresh.mysql_url, "SELECT count(*) FROM events_projection") == 0


def test_a_setting_that_is_wrong_is_named(settings: Settings) -> None:
    result = invoke(settings, "status", "x", INGEST_MAX_BATCH_EVENTS="many")

    assert result.exit_code == 1
    assert "INGEST_MAX_BATCH_EVENTS must be an integer, not 'many'" in result.stderr


def test_env_file_fills_what_the_environment_lacks(settings: Settings, tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    # The environment names the test database; the file's URL must not win over it.
    env_file.write_text(
        "POSTGRES_URL=postgresql://postgres@127.0.0.1:1/nowhere\nINGEST_MAX_BATCH_EVENTS=many\n"
    )
    result = CliRunner().invoke(
        main, ["--env-file", str(env_file), "status", "x"], env=service_env(settings)
    )
    assert "INGEST_MAX_BATCH_EVENTS must be an integer" in result.stderr

    env_file.write_text("POSTGRES_URL=postgresql://postgres@127.0.0.1:1/nowhere\n")
    result = CliRunner().invoke(
        main, ["--env-file", str(env_file), "status", "x"], env=service_env(settings)
    )
    assert result.exit_code == 1
    assert result.stderr == "No event 'x' is stored (yet).\n"


def test_status_prints_what_the_api_answers_and_fails_for_a_missing_event(
    client: FlaskClient, pipeline: Settings
) -> None:
    assert client.post("/v1/events", json=event("status-1"), headers=AUTH).status_code == 202
    wait_until(lambda: projected_count(pipeline) == 1, what="the event projected")

    found = invoke(pipeline, "status", "status-1")
    missing = invoke(pipeline, "status", "status-2")

    assert found.exit_code == 0, found.output
    shown = json.loads(found.stdout)
    assert shown == client.get("/v1/events/status-1", headers=READ_AUTH).json
    assert shown["status"] == "projected"
    assert shown["conflict"] is False
    assert missing.exit_code == 1
    assert missing.stdout == ""
    assert missing.stderr == "No event 'status-2' is stored (yet).\n"


def test_reconcile_projects_what_was_stored_but_never_projected(clean: Settings) -> None:
    # Stored through the persist path with no projection behind it, as after a crash.
    stored = [{**event(f"r-{i}"), "received_at": "2026-11-27T09:00:01+00:00"} for i in range(5)]
    store_events(clean.postgres_url, event_ids_of(stored), compact_json(stored))

    too_young = invoke(clean, "reconcile", "--since", "1h")
    everything = invoke(clean, "reconcile", "--since", "0", INGEST_RECONCILE_CHUNK_SIZE="2")
    again = invoke(clean, "reconcile", "--since", "0")
    nonsense = invoke(clean, "reconcile", "--since", "soon")

    assert too_young.exit_code == 0, too_young.output
    assert too_young.stdout == "Projected 0 events into MySQL.\n"
    assert everything.exit_code == 0, everything.output
    assert everything.stdout == "Projected 5 events into MySQL.\n"
    assert again.stdout == "Projected 0 events into MySQL.\n"
    assert nonsense.exit_code == 2
    assert "--since" in nonsense.stderr
    assert "like 90s, 15m, 2h, 1d, not 'soon'" in nonsense.stderr
    projected = rows(clean.mysql_url or "", "SELECT event_id FROM events_projection")
    assert sorted(row["event_id"] for row in projected) == [f"r-{i}" for i in range(5)]

    # MySQL loses its rows: the walk goes on from its checkpoint, or compares all again.
    with engine_for(clean.mysql_url or "").begin() as connection:
        connection.exec_driver_sql("DELETE FROM events_projection")
    from_checkpoint = invoke(clean, "reconcile", "--since", "0")
    from_start = invoke(clean, "reconcile", "--since", "0", "--from-start")

    assert from_checkpoint.stdout == "Projected 0 events into MySQL.\n"
    assert from_start.stdout == "Projected 5 events into MySQL.\n"


def test_reconcile_steps_aside_while_another_reconciler_runs(clean: Settings) -> None:
    busy = {**event("busy"), "received_at": "2026-11-27T09:00:01+00:00"}
    store_events(clean.postgres_url, ["busy"], compact_json([busy]))
    with engine_for(clean.postgres_url).connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": RECONCILE_LOCK})
        try:
            started = time.monotonic()
            held = invoke(clean, "reconcile", "--since", "0")
            waited = time.monotonic() - started
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": RECONCILE_LOCK})
            connection.commit()
    free = invoke(clean, "reconcile", "--since", "0")

    assert held.exit_code == 1
    assert "Another reconciler is running" in held.stderr
    assert waited < 5
    assert free.stdout == "Projected 1 event into MySQL.\n"


def test_reconcile_without_mysql_says_the_projection_is_off(settings: Settings) -> None:
    result = invoke(settings, "reconcile", MYSQL_URL="")

    assert result.exit_code == 1
    assert "MYSQL_URL is unset: the projection is off" in result.stderr


def test_dead_letters_are_listed_without_loss_then_replayed_once_fixed(
    shared_servers: SharedServers, settings: Settings
) -> None:
    with private_settings(shared_servers, settings, "dead") as private:
        private = private.replace(mysql_url=None)
        app = create_app(private)
        try:
            for event_id in ("dl-1", "dl-2"):
                response = app.test_client().post("/v1/events", json=event(event_id), headers=AUTH)
                assert response.status_code == 202
        finally:
            close_app(app)
        # A worker against a database nobody migrated: each task fails for good.
        broken = Worker(private, PERSIST_QUEUE, "persist-unmigrated", concurrency=1)
        try:
            wait_until(lambda: dead_depth(private) == 2, timeout=60, what="two dead letters")
        finally:
            broken.stop()

        listed = invoke(private, "dead-letters", "list")
        listed_again = invoke(private, "dead-letters", "list")
        first_only = invoke(private, "dead-letters", "list", "--limit", "1")

        assert listed.exit_code == 0, listed.output
        assert dead_depth(private) == 2
        for output in (listed.stdout, listed_again.stdout):
            assert output.count("ingest.persist_event ") == 2
            assert output.count("died: rejected in ingest.persist, 1 time, last at ") == 2
            assert "events: dl-1\n" in output
            assert "events: dl-2\n" in output
            assert output.endswith("ingest.dead holds 2 messages.\n")
        assert first_only.stdout.count("ingest.persist_event ") == 1
        assert first_only.stdout.endswith("ingest.dead holds 2 messages (showing 1).\n")

        # The cause fixed, a healthy worker takes what is replayed.
        assert invoke(private, "migrate").exit_code == 0
        worker = Worker(private, PERSIST_QUEUE, "persist", concurrency=1)
        try:
            one = invoke(private, "dead-letters", "replay", "--limit", "1")
            assert one.exit_code == 0, one.output
            assert one.stdout.endswith("Replayed 1 message.\n")
            [replayed] = re.findall(r"to ingest\.persist \(events: (dl-\d)\)", one.stdout)
            wait_until(lambda: stored_count(private) == 1, what="the replayed event stored")
            assert rows(private.postgres_url, "SELECT event_id FROM events") == [
                {"event_id": replayed}
            ]
            assert dead_depth(private) == 1

            rest = invoke(private, "dead-letters", "replay")
            assert rest.stdout.endswith("Replayed 1 message.\n")
            wait_until(lambda: stored_count(private) == 2, what="both events stored")
            assert dead_depth(private) == 0
            time.sleep(1)  # a replayed task that failed again would be back by now
            assert dead_depth(private) == 0
            assert (
                invoke(private, "dead-letters", "list").stdout == "ingest.dead holds 0 messages.\n"
            )
        finally:
            worker.stop()


def test_send_reports_each_rejected_line_and_stores_the_rest(
    app: Flask, pipeline: Settings, tmp_path: Path
) -> None:
    good = [json.dumps(event(f"send-{i}")) for i in range(5)]
    lines = [
        good[0],
        "",
        '{"event_id": "send-x", ',
        good[1],
        json.dumps(event("bad id!")),
        "[1, 2]",
        good[2],
        good[3],
        good[4],
    ]
    events_file = tmp_path / "events.jsonl"
    events_file.write_text("\n".join(lines) + "\n")

    with serving(app) as url:
        # Batches of two: the second batch holds only invalid events (a 422 for the batch).
        result = invoke(pipeline, "send", str(events_file), "--url", url, "--batch-size", "2")

    assert result.exit_code == 1, result.output
    summary = result.stdout.splitlines()
    assert summary[0] == "5 accepted, 3 rejected."
    assert summary[1].startswith("  line 3: not JSON: ")
    assert summary[2].startswith("  line 5: event_id: ")
    assert summary[3] == "  line 6: _event: Each event must be a JSON object."
    assert len(summary) == 4
    wait_until(lambda: stored_count(pipeline) == 5, what="five events stored")
    stored = rows(pipeline.postgres_url, "SELECT event_id FROM events ORDER BY event_id")
    assert [row["event_id"] for row in stored] == [f"send-{i}" for i in range(5)]


def test_send_waits_out_a_503_then_gives_up(settings: Settings, tmp_path: Path) -> None:
    unreachable = settings.replace(
        broker_url=f"amqp://guest:guest@127.0.0.1:{free_port()}//", publish_timeout=1
    )
    app = create_app(unreachable)
    events_file = tmp_path / "events.jsonl"
    events_file.write_text(json.dumps(event("never")) + "\n")

    started = time.monotonic()
    with serving(app) as url:
        result = invoke(settings, "send", str(events_file), "--url", url, "--retries", "1")
    elapsed = time.monotonic() - started

    assert result.exit_code == 1
    assert "the API answered 503" in result.stderr
    assert "retrying in 5s" in result.stderr  # the API's Retry-After
    assert "gave up after 2 attempts" in result.stderr
    assert elapsed >= 5


def test_serve_becomes_the_api_server_with_the_settings_checked_first(
    settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    # In a subprocess: were the check missing, serve would replace the process with the server.
    refused = run_ingest(settings, "serve", cwd=tmp_path, timeout=30, INGEST_API_KEYS="")
    server = subprocess.Popen(
        [str(VENV_BIN / "ingest"), "serve", "--bind", f"127.0.0.1:{port}", "--workers", "1"],
        cwd=tmp_path,
        env=service_env(settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: healthy(f"http://127.0.0.1:{port}"), timeout=60, what="the API")
        # The wrapper replaced itself: the process it started is the server's main process.
        command_line = Path(f"/proc/{server.pid}/cmdline").read_bytes().split(b"\0")
        assert command_line[1:3] == [b"-m", b"ingest_api.server"]
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
    finally:
        server.kill()
        server.wait()

    assert refused.returncode == 1
    assert "INGEST_API_KEYS is empty" in refused.stderr


def healthy(url: str) -> bool:
    try:
        return requests.get(f"{url}/healthz", timeout=10).status_code == 200
    except requests.RequestException:
        return False


def test_flower_refuses_to_start_without_a_login(settings: Settings, tmp_path: Path) -> None:
    for login in ("", "admin", "admin:"):
        result = run_ingest(settings, "flower", cwd=tmp_path, timeout=30, FLOWER_BASIC_AUTH=login)

        assert result.returncode == 1
        assert "FLOWER_BASIC_AUTH must be user:password" in result.stderr


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@contextmanager
def ingest_up(
    settings: Settings, log: Path, **extra_env: str
) -> Iterator[tuple[subprocess.Popen[bytes], str, str]]:
    """`ingest up` on free ports; yields the process and the API's and Flower's URLs. Whatever
    it started is killed at the end, whatever happened."""
    api, flower = free_port(), free_port()
    command = [
        str(VENV_BIN / "ingest"), "up", "--bind", f"127.0.0.1:{api}", "--flower-port", str(flower),
        "--workers", "1", "--concurrency", "1",
    ]  # fmt: skip
    env = service_env(settings, FLOWER_BASIC_AUTH=":".join(FLOWER_LOGIN), **extra_env)
    env.pop("MALLOC_ARENA_MAX", None)  # ingest up sets it for its processes itself
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, cwd=log.parent, env=env, stdout=output, stderr=subprocess.STDOUT
        )
    started: set[int] = set()
    try:
        api_url = f"http://127.0.0.1:{api}"
        wait_until(lambda: ready(process, api_url, log), timeout=120, what="ingest up ready")
        started = descendants(process.pid)
        yield process, api_url, f"http://127.0.0.1:{flower}"
    finally:
        for pid in [process.pid, *started, *descendants(process.pid)]:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.wait()


def ready(process: subprocess.Popen[bytes], api_url: str, log: Path) -> bool:
    if process.poll() is not None:
        raise AssertionError(f"ingest up exited with {process.returncode}:\n{log.read_text()}")
    try:
        return requests.get(f"{api_url}/readyz", timeout=10).status_code == 200
    except requests.RequestException:  # not listening yet, or too busy starting to answer
        return False


def test_up_runs_the_whole_service_and_ctrl_c_stops_all_of_it(
    shared_servers: SharedServers, settings: Settings, tmp_path: Path
) -> None:
    log = tmp_path / "up.log"
    metrics_port = free_port_pair()
    with (
        private_settings(shared_servers, settings, "up") as private,
        ingest_up(private, log, INGEST_WORKER_METRICS_PORT=str(metrics_port)) as running,
    ):
        process, api_url, flower_url = running

        response = requests.post(
            f"{api_url}/v1/events", json=event("up-1"), headers=AUTH, timeout=10
        )
        assert response.status_code == 202
        wait_until(lambda: projected_count(private) == 1, timeout=60, what="the event in MySQL")
        assert stored_count(private) == 1
        wait_until(lambda: flower_answers(flower_url), timeout=60, what="Flower to answer")
        assert requests.get(flower_url, timeout=10).status_code == 401
        assert requests.get(flower_url, auth=FLOWER_LOGIN, timeout=10).status_code == 200
        # The worker and the projector each serve task metrics, on two ports.
        for port in (metrics_port, metrics_port + 1):
            metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
            assert metrics.status_code == 200

        children = descendants(process.pid)
        for pid in children:  # every process runs with glibc's arenas capped (services.py)
            assert b"\0MALLOC_ARENA_MAX=2\0" in b"\0" + Path(f"/proc/{pid}/environ").read_bytes()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0, log.read_text()

        assert [pid for pid in children if alive(pid)] == []
        output = log.read_text()
        for name in ("api", "worker", "projector", "beat", "flower"):
            assert f"\n{name:<9} | " in output, f"no output from {name}:\n{output}"
        assert "ingest up: SIGINT, stopping" in output


def test_the_projector_runs_its_own_thread_count_unless_c_says_otherwise(
    shared_servers: SharedServers, settings: Settings, tmp_path: Path
) -> None:
    node = f"projector@{socket.gethostname()}"
    with private_settings(shared_servers, settings, "threads") as private:
        control = create_celery(private).control
        env = service_env(private, INGEST_PROJECTOR_CONCURRENCY="3", INGEST_WORKER_CONCURRENCY="5")
        for extra, threads in (((), 3), (("-c", "2"), 2)):
            with (tmp_path / "projector.log").open("wb") as log:
                projector = subprocess.Popen(
                    [str(VENV_BIN / "ingest"), "projector", *extra],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            try:
                stats = wait_until(
                    lambda: control.inspect(destination=[node], timeout=2).stats(),
                    timeout=60,
                    what=f"{node} to answer `celery inspect stats`",
                )
            finally:
                projector.kill()
                projector.wait()
            assert stats[node]["pool"]["max-concurrency"] == threads, extra


def flower_answers(url: str) -> bool:
    try:
        requests.get(url, timeout=10)
    except requests.RequestException:
        return False
    return True


def test_up_stops_everything_and_fails_when_one_process_dies(
    shared_servers: SharedServers, settings: Settings, tmp_path: Path
) -> None:
    log = tmp_path / "up.log"
    with (
        private_settings(shared_servers, settings, "updie") as private,
        ingest_up(private, log) as running,
    ):
        process = running[0]
        children = descendants(process.pid)
        [beat] = [
            pid
            for pid in children
            if b" beat" in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        ]

        os.kill(beat, signal.SIGKILL)

        assert process.wait(timeout=60) == 1
        assert [pid for pid in children if alive(pid)] == []
        assert "ingest up: beat exited with code -9; stopping the others" in log.read_text()
