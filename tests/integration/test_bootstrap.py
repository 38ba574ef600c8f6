"""scripts/bootstrap on a machine without the servers, on one it does not support, and again on
this one, where everything is in place.

The real script runs with dpkg's view of the machine emptied: dpkg-query reads an empty status
file, and apt-get install is Debian's resolver simulating against that same empty status, so
every package bootstrap asks for must exist in the archive and install on a fresh machine. The
servers' configuration goes into a temporary root. The servers running here stay as they are:
bootstrap starts only servers that are down, and reconfigures none it did not install.
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BOOTSTRAP = ROOT / "scripts" / "bootstrap"
SERVERS = ["postgresql", "mariadb-server", "rabbitmq-server"]
BUILD_PACKAGES = [
    "python3-venv", "python3-dev", "build-essential", "pkg-config", "libmariadb-dev",
    "docker-compose",
]  # fmt: skip
# What `pg_createcluster` writes into a new cluster's pg_hba.conf on Debian.
DEBIAN_PG_HBA = """\
local   all             postgres                                peer
local   all             all                                     peer
host    all             all             127.0.0.1/32            scram-sha-256
host    all             all             ::1/128                 scram-sha-256
local   replication     all                                     peer
host    replication     all             127.0.0.1/32            scram-sha-256
host    replication     all             ::1/128                 scram-sha-256
"""
UNSUPPORTED_NEEDS = [
    "Debian and Ubuntu only",
    "Python 3.11+",
    "PostgreSQL 15+",
    "MariaDB 10.11+ (or MySQL 8)",
    "RabbitMQ 3.10+",
    "127.0.0.1",
    "C compiler",
    "pkg-config",
    "docker compose up --build",
    "Full stack with docker-compose",
]


@dataclass(frozen=True)
class Machine:
    """A machine as bootstrap sees it through `env`: no packages installed, apt-get simulating,
    /etc under `system_root`. `apt_calls` logs each apt-get command line, `apt_output` holds
    the simulated install, `policy_answers` what policy-rc.d answered during it."""

    env: dict[str, str]
    system_root: Path
    apt_calls: Path
    apt_output: Path
    policy_answers: Path
    postgres_config: Path

    def bootstrap(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BOOTSTRAP)],
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )


def write_program(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


def postgres_cluster_version() -> str:
    """The version of the local cluster on port 5432, where bootstrap looks for its config."""
    listing = subprocess.run(
        ["pg_lsclusters", "-h"], capture_output=True, text=True, check=True
    ).stdout
    for line in listing.splitlines():
        version, _name, port, *_ = line.split()
        if port == "5432":
            return version
    raise AssertionError(f"no PostgreSQL cluster on port 5432 here:\n{listing}")


@pytest.fixture
def fresh_machine(tmp_path: Path) -> Machine:
    dpkg = tmp_path / "dpkg"
    dpkg.mkdir()
    (dpkg / "status").write_text("")
    shims = tmp_path / "bin"
    shims.mkdir()
    write_program(
        shims / "dpkg-query",
        f'#!/bin/sh\nexec {shutil.which("dpkg-query")} --admindir={dpkg} "$@"\n',
    )
    system_root = tmp_path / "root"
    policy = system_root / "usr" / "sbin" / "policy-rc.d"
    machine = Machine(
        env={
            **os.environ,
            "PATH": f"{shims}{os.pathsep}{os.environ['PATH']}",
            "INGEST_APT_GET": str(tmp_path / "apt-get"),
            "INGEST_SYSTEM_ROOT": str(system_root),
        },
        system_root=system_root,
        apt_calls=tmp_path / "apt-calls",
        apt_output=tmp_path / "apt-output",
        policy_answers=tmp_path / "policy-answers",
        postgres_config=system_root / "etc" / "postgresql" / postgres_cluster_version() / "main",
    )
    # update: the package lists here serve; install: simulated against the empty status.
    write_program(
        tmp_path / "apt-get",
        f"""#!/bin/sh
echo "$*" >>{machine.apt_calls}
[ "$1" = update ] && exit 0
if [ -x {policy} ]; then {policy} postgresql start; echo $? >>{machine.policy_answers}; fi
{shutil.which("apt-get")} --simulate -o Dir::State::status={dpkg}/status "$@" \
    >{machine.apt_output} 2>&1
status=$?
cat {machine.apt_output}
exit $status
""",
    )
    # What the postgresql package's cluster has in its configuration directory.
    machine.postgres_config.mkdir(parents=True)
    (machine.postgres_config / "pg_hba.conf").write_text(DEBIAN_PG_HBA)
    return machine


def config_lines(path: Path) -> list[str]:
    return [
        line.strip() for line in path.read_text().splitlines() if line.strip()[:1] not in ("", "#")
    ]


@pytest.mark.parametrize(
    "os_release",
    [
        None,  # this machine's /etc/os-release (Debian 12)
        'NAME="Linux Mint"\nID=linuxmint\nID_LIKE="ubuntu debian"\nPRETTY_NAME="Linux Mint 22"\n',
    ],
    ids=["this-machine", "ubuntu-like"],
)
def test_a_machine_without_the_servers_gets_them_installed_on_loopback_only(
    fresh_machine: Machine, tmp_path: Path, os_release: str | None
) -> None:
    env = fresh_machine.env
    if os_release is not None:
        (tmp_path / "os-release").write_text(os_release)
        env = {**env, "INGEST_OS_RELEASE": str(tmp_path / "os-release")}
    result = replace(fresh_machine, env=env).bootstrap()
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""

    wanted = [*BUILD_PACKAGES, *SERVERS]
    lines = result.stdout.splitlines()
    assert f"bootstrap: installed {' '.join(wanted)}" in lines
    assert f"bootstrap: configured {' '.join(SERVERS)} to listen on 127.0.0.1 only" in lines
    assert lines[-1].startswith("bootstrap: ready.")

    # The package lists are refreshed first; nothing of the machine's may be removed.
    calls = fresh_machine.apt_calls.read_text().splitlines()
    assert calls[0] == "update -q"
    assert calls[1:] == [f"install -y -q --no-install-recommends --no-remove {' '.join(wanted)}"]
    apt_output = fresh_machine.apt_output.read_text()
    installs = {line.split()[1] for line in apt_output.splitlines() if line.startswith("Inst ")}
    assert set(wanted) <= installs, f"apt-get would not install {set(wanted) - installs}"
    assert " 0 to remove" in apt_output

    # The packages could not start a server before its loopback-only configuration was in place.
    assert fresh_machine.policy_answers.read_text().split() == ["101"]
    assert not (fresh_machine.system_root / "usr" / "sbin" / "policy-rc.d").exists()

    postgres = fresh_machine.postgres_config
    assert config_lines(postgres / "conf.d" / "90-ingest.conf") == [
        "listen_addresses = '127.0.0.1'"
    ]
    hba = config_lines(postgres / "pg_hba.conf")
    assert hba[0] == "host all postgres 127.0.0.1/32 trust"
    assert "\n".join(hba[1:]) + "\n" == DEBIAN_PG_HBA

    mariadb = configparser.ConfigParser(allow_no_value=True)
    mariadb.read(fresh_machine.system_root / "etc/mysql/mariadb.conf.d/90-ingest.cnf")
    assert dict(mariadb["mysqld"]) == {
        "bind-address": "127.0.0.1",
        "port": "3306",
        "skip-name-resolve": None,
    }

    rabbitmq = fresh_machine.system_root / "etc" / "rabbitmq"
    assert config_lines(rabbitmq / "rabbitmq.conf") == [
        "listeners.tcp.local = 127.0.0.1:5672",
        "management.tcp.ip = 127.0.0.1",
    ]
    assert config_lines(rabbitmq / "rabbitmq-env.conf") == [
        "NODENAME=rabbit@localhost",
        "ERL_EPMD_ADDRESS=127.0.0.1",
        'export ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}"',
    ]
    assert config_lines(rabbitmq / "enabled_plugins") == ["[rabbitmq_management]."]


@pytest.mark.parametrize(
    "os_release",
    [
        'NAME="Fedora Linux"\nID=fedora\nPRETTY_NAME="Fedora Linux 40 (Workstation Edition)"\n',
        'NAME="Arch Linux"\nID=arch\nID_LIKE=""\n',
        None,  # no os-release at all, as on macOS
    ],
    ids=["fedora", "arch", "no-os-release"],
)
def test_another_system_gets_one_message_naming_what_it_needs(
    fresh_machine: Machine, tmp_path: Path, os_release: str | None
) -> None:
    path = tmp_path / "os-release"
    if os_release is not None:
        path.write_text(os_release)
    env = {**fresh_machine.env, "INGEST_OS_RELEASE": str(path)}
    result = replace(fresh_machine, env=env).bootstrap()

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("scripts/bootstrap: this is ")
    message = " ".join(result.stderr.split())
    for need in UNSUPPORTED_NEEDS:
        assert need in message, f"the message does not name {need!r}:\n{result.stderr}"
    if os_release is not None and "PRETTY_NAME" in os_release:
        assert "this is Fedora Linux 40 (Workstation Edition);" in message
    # It stopped before touching anything.
    assert not fresh_machine.apt_calls.exists()
    assert not (fresh_machine.system_root / "etc" / "rabbitmq").exists()


def test_a_second_run_on_a_ready_machine_changes_nothing() -> None:
    run = [str(BOOTSTRAP)]
    first = subprocess.run(
        run, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=900
    )
    assert first.returncode == 0, first.stdout + first.stderr
    second = subprocess.run(
        run, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300
    )
    assert second.returncode == 0, second.stdout + second.stderr
    assert second.stderr == ""
    assert second.stdout.splitlines() == [
        "bootstrap: everything was already in place.",
        "bootstrap: ready. Run .venv/bin/ingest up (service) or .venv/bin/pytest (tests).",
    ]
