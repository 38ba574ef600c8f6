"""Private RabbitMQ, PostgreSQL and MariaDB instances that fault tests may break.

Each one runs on its own free port with its data under a temporary directory, and its context
manager always stops it and removes the directory, even when the test fails. The shared servers
on 5672, 5432 and 3306 are never touched. They need the Debian packages' binaries (rabbitmq-server,
postgresql, mariadb-server) and, as root, the postgres and mysql users.
"""

from __future__ import annotations

import os
import queue
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from functools import cache
from pathlib import Path

from testlib.servers import admin_sql
from testlib.wait import free_port, wait_until

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")  # not /usr/sbin: as root that wrapper resets HOME


@cache
def postgres_bin() -> Path:
    """The newest installed PostgreSQL's server binaries (Debian keeps them off PATH)."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda path: [int(number) for number in path.parts[-3].split(".")],
    )
    if not found:
        raise RuntimeError("no PostgreSQL server under /usr/lib/postgresql/<version>/bin")
    return found[-1].parent


def _run(command: list[str], timeout: float = 120, **kwargs: object) -> str:
    result = subprocess.run(
        command, capture_output=True, text=True, check=False, timeout=timeout, **kwargs
    )
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _kill_and_wait(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    wait_until(lambda: not _alive(pid), timeout=30, what=f"process {pid} to die")


@contextmanager
def _scratch_dir(prefix: str, owner: str | None = None) -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix=prefix))
    if owner and os.geteuid() == 0:
        shutil.chown(base, owner, owner)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


class RabbitNode:
    """One RabbitMQ node of its own; every location comes from the environment."""

    def __init__(
        self, base: Path, consumer_timeout_ms: int | None = None, cookie: str | None = None
    ) -> None:
        self.base = base
        self.port = free_port()
        self.name = f"ingest-fault-{os.getpid()}-{self.port}@localhost"
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}//"
        (base / "home").mkdir()
        if cookie:
            # Nodes of one cluster, and their rabbitmqctl, share the Erlang cookie.
            cookie_file = base / "home" / ".erlang.cookie"
            cookie_file.write_text(cookie)
            cookie_file.chmod(0o400)
        (base / "log").mkdir()
        (base / "enabled_plugins").write_text("[].\n")
        (base / "env.conf").write_text("")
        conf = ["loopback_users = none"]
        # Quorum queues report their depths once per tick (5 s by default): make it fresh.
        ticks = ["{quorum_tick_interval, 200}"]
        if consumer_timeout_ms is not None:
            conf.append(f"consumer_timeout = {consumer_timeout_ms}")
            # The broker checks delivery timeouts once per channel tick, 60 s by default.
            ticks.append("{channel_tick_interval, 1000}")
        (base / "rabbitmq.conf").write_text("\n".join(conf) + "\n")
        (base / "advanced.config").write_text(f"[{{rabbit, [{', '.join(ticks)}]}}].\n")
        self.env = {
            **os.environ,
            "HOME": str(base / "home"),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_LOGS": str(base / "log" / "node.log"),
            "RABBITMQ_PID_FILE": str(base / "pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(base / "env.conf"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def ctl(self, *args: str, timeout: float = 120) -> str:
        return _run(
            [str(RABBITMQ_BIN / "rabbitmqctl"), "-n", self.name, *args],
            timeout=timeout,
            env=self.env,
        )

    def start(self) -> None:
        _run([str(RABBITMQ_BIN / "rabbitmq-server"), "-detached"], env=self.env)
        self.ctl("wait", str(self.base / "pid"), "--timeout", "120")

    def stop(self) -> None:
        """Stop the whole node gracefully; its queues stay on disk."""
        self.ctl("stop", str(self.base / "pid"))

    def kill(self) -> None:
        """kill -9 of the node."""
        _kill_and_wait(self.pid())

    def stop_app(self) -> None:
        self.ctl("stop_app")

    def start_app(self) -> None:
        self.ctl("start_app")
        self.ctl("await_startup")

    def pid(self) -> int:
        return int((self.base / "pid").read_text().strip())

    @contextmanager
    def memory_alarm(self) -> Iterator[None]:
        """Block every publishing connection, as a node out of memory does."""
        self.ctl("set_vm_memory_high_watermark", "0")
        try:
            wait_until(
                lambda: "memory" in self.ctl("eval", "rabbit_alarm:get_alarms()."),
                timeout=30,
                what="the memory alarm",
            )
            yield
        finally:
            self.ctl("set_vm_memory_high_watermark", "0.4")

    @contextmanager
    def policy(self, name: str, pattern: str, definition: str) -> Iterator[None]:
        self.ctl("set_policy", "--apply-to", "queues", name, pattern, definition)
        try:
            yield
        finally:
            self.ctl("clear_policy", name)

    def queue_depths(self) -> dict[str, tuple[int, int]]:
        """{queue: (ready, unacknowledged)} for every queue of the default vhost."""
        listing = self.ctl(
            "list_queues", "-q", "--no-table-headers", "name", "messages_ready",
            "messages_unacknowledged",
        )  # fmt: skip
        depths = {}
        for line in listing.splitlines():
            name, ready, unacked = line.split()
            depths[name] = (int(ready), int(unacked))
        return depths

    def cleanup(self) -> None:
        pid_file = self.base / "pid"
        if not pid_file.exists():
            return
        pid = self.pid()
        with suppress(RuntimeError, subprocess.TimeoutExpired):
            self.ctl("stop", str(pid_file), timeout=60)
        _kill_and_wait(pid)


@contextmanager
def private_rabbitmq(consumer_timeout_ms: int | None = None) -> Iterator[RabbitNode]:
    with _scratch_dir("ingest-rabbitmq-") as base:
        node = RabbitNode(base, consumer_timeout_ms)
        try:
            node.start()
            yield node
        finally:
            node.cleanup()


@contextmanager
def private_rabbitmq_cluster(size: int = 3) -> Iterator[list[RabbitNode]]:
    """`size` nodes of their own joined in one cluster; the first is where the others joined."""
    with _scratch_dir("ingest-rabbitmq-cluster-") as base:
        cookie = secrets.token_hex(20).upper()
        nodes: list[RabbitNode] = []
        try:
            for number in range(size):
                (base / str(number)).mkdir()
                nodes.append(RabbitNode(base / str(number), cookie=cookie))
                nodes[-1].start()
            for node in nodes[1:]:
                node.stop_app()
                node.ctl("join_cluster", nodes[0].name)
                node.start_app()
            yield nodes
        finally:
            for node in nodes:
                node.cleanup()


def cluster_url(nodes: list[RabbitNode]) -> str:
    """A BROKER_URL that fails over from node to node."""
    return ";".join(node.url for node in nodes)


class PostgresServer:
    """A PostgreSQL cluster of its own, run as the postgres user."""

    def __init__(self, base: Path) -> None:
        self.data = base / "pg"
        self.base = base
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *command: str, timeout: float = 120) -> str:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        return _run([*prefix, *command], timeout=timeout)

    def init(self) -> None:
        self._as_postgres(
            str(postgres_bin() / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust"
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1"
        self._as_postgres(
            str(postgres_bin() / "pg_ctl"), "-D", str(self.data), "-o", options,
            "-l", str(self.base / "pg.log"), "-w", "start",
        )  # fmt: skip

    def stop(self, mode: str = "immediate") -> None:
        """`immediate` is a crash: no checkpoint, open connections cut."""
        self._as_postgres(str(postgres_bin() / "pg_ctl"), "-D", str(self.data), "-m", mode, "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()


@contextmanager
def private_postgres() -> Iterator[PostgresServer]:
    with _scratch_dir("ingest-postgres-", owner="postgres") as base:
        server = PostgresServer(base)
        server.init()
        try:
            server.start()
            yield server
        finally:
            if server.running():
                server.stop()


class MariaDBServer:
    """A MariaDB server of its own, without grant tables (root, no password)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.data = base / "my"
        self.port = free_port()
        self.server_url = f"mysql://root@127.0.0.1:{self.port}/"
        self.url = f"{self.server_url}ingest"
        self.process: subprocess.Popen[bytes] | None = None

    def _user(self) -> list[str]:
        return ["--user=mysql"] if os.geteuid() == 0 else []

    def init(self) -> None:
        _run(
            ["mariadb-install-db", "--no-defaults", *self._user(), f"--datadir={self.data}",
             "--skip-test-db", "--auth-root-authentication-method=normal"],
        )  # fmt: skip

    def start(self) -> None:
        log = (self.base / "mariadb.log").open("ab")
        with log:
            self.process = subprocess.Popen(
                ["mariadbd", "--no-defaults", *self._user(), f"--datadir={self.data}",
                 f"--port={self.port}", "--bind-address=127.0.0.1",
                 f"--socket={self.base / 'my.sock'}", f"--pid-file={self.base / 'my.pid'}",
                 "--skip-grant-tables", "--innodb-buffer-pool-size=64M"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        wait_until(self._accepts, timeout=60, what="MariaDB to accept connections")

    def _accepts(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            log = (self.base / "mariadb.log").read_text(errors="replace")
            raise AssertionError(f"mariadbd exited with {self.process.returncode}:\n{log}")
        try:
            admin_sql(self.server_url, "SELECT 1")
        except RuntimeError:  # not up yet
            return False
        return True

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """kill -9: connections refused until start()."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=30)

    def pause(self) -> None:
        """SIGSTOP: the port still accepts connections, then nothing answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def cleanup(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(timeout=30)


@contextmanager
def private_mariadb() -> Iterator[MariaDBServer]:
    with _scratch_dir("ingest-mariadb-", owner="mysql") as base:
        server = MariaDBServer(base)
        server.init()
        try:
            server.start()
            admin_sql(server.server_url, "CREATE DATABASE ingest")
            yield server
        finally:
            server.cleanup()


class DelayingProxy:
    """A TCP proxy to `upstream` on a free port of 127.0.0.1 that holds every byte coming back
    from the server for `delay` seconds (in order): a broker whose confirms come late."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.delay = 0.0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            server = socket.create_connection(self.upstream)
            self.sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()
            held: queue.SimpleQueue[tuple[float, bytes]] = queue.SimpleQueue()
            threading.Thread(target=self._hold, args=(server, held), daemon=True).start()
            threading.Thread(target=self._release, args=(held, client), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        with suppress(OSError):
            while chunk := source.recv(65536):
                target.sendall(chunk)

    def _hold(self, source: socket.socket, held: queue.SimpleQueue[tuple[float, bytes]]) -> None:
        with suppress(OSError):
            while chunk := source.recv(65536):
                held.put((time.monotonic() + self.delay, chunk))
        held.put((0.0, b""))

    @staticmethod
    def _release(held: queue.SimpleQueue[tuple[float, bytes]], target: socket.socket) -> None:
        with suppress(OSError):
            while True:
                due, chunk = held.get()
                if not chunk:
                    return
                time.sleep(max(due - time.monotonic(), 0))
                target.sendall(chunk)

    def close(self) -> None:
        for sock in self.sockets:
            with suppress(OSError):
                sock.close()
