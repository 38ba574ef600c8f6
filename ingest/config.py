"""Typed, frozen configuration read from the environment at start-up, never at import.

Each field of Settings declares, once, the variable it is read from, its default, what it means
and how its text is read. `.env.example` and the table of docs/configuration.md are generated from
these declarations (ingest/config_docs.py), and a test holds the committed files to them.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

WORKER_POOLS = ("threads", "prefork", "solo")
# The key under which each field's metadata holds its Setting.
SETTING = "setting"

# Reads a variable's text, never empty, into the field's value: (variable, text) -> value.
Parse = Callable[[str, str], Any]


class ConfigError(ValueError):
    """A variable is missing or malformed; the message names it."""


def redact_url(url: str | None) -> str | None:
    if not url:
        return url
    # BROKER_URL may list several cluster nodes: "amqp://u:p@mq1//;amqp://u:p@mq2//".
    return ";".join(_redact_one_url(part) for part in url.split(";"))


def _redact_one_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _count_keys(keys: tuple[str, ...]) -> str:
    return f"<{len(keys)} keys>"


def _set_or_unset(value: str | None) -> str | None:
    return "<set>" if value else None


def _text(name: str, raw: str) -> str:
    return raw


def _split(name: str, raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _on_off(name: str, raw: str) -> bool:
    if raw.lower() not in ("on", "off"):
        raise ConfigError(f"{name} must be 'on' or 'off', not {raw!r}")
    return raw.lower() == "on"


def _positive_int(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, not {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name} must be positive, not {value}")
    return value


def _seconds(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from None
    if value < 0:
        raise ConfigError(f"{name} must not be negative, not {value}")
    return value


def _one_of(*choices: str) -> Parse:
    def parse(name: str, raw: str) -> str:
        if raw not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)}, not {raw!r}")
        return raw

    return parse


@dataclass(frozen=True)
class Setting:
    """How one field of Settings is read from the environment, documented and logged."""

    variable: str
    doc: str
    parse: Parse
    # What .env.example sets it to, when that is not the default (this machine's servers).
    example: str | None
    # How the value may be logged; None: as it is.
    redact: Callable[[Any], object] | None


def setting(
    variable: str,
    default: object,
    doc: str,
    parse: Parse = _text,
    *,
    example: str | None = None,
    redact: Callable[[Any], object] | None = None,
) -> Any:
    """A field of Settings read from `variable`; unset or empty means `default`."""
    return dataclasses.field(
        default=default, metadata={SETTING: Setting(variable, doc, parse, example, redact)}
    )


@dataclass(frozen=True)
class Settings:
    """Every setting of every process, each one field: `setting(VARIABLE, default, meaning,
    parse)`, the meaning one line of Markdown, and `redact=` for a secret. After adding or
    changing one, run `.venv/bin/python scripts/write_config_docs.py`."""

    broker_url: str = setting(
        "BROKER_URL",
        "amqp://guest:guest@localhost:5672//",
        "RabbitMQ; the nodes of a cluster separated by `;`",
        # .env.example keeps this default: the code may hold one URL with a password, guest's.
        redact=redact_url,
    )
    postgres_url: str = setting(
        "POSTGRES_URL",
        "postgresql://postgres@localhost:5432/events",
        "PostgreSQL, the source of truth, required",
        example="postgresql://postgres@127.0.0.1:5432/events",
        redact=redact_url,
    )
    mysql_url: str | None = setting(
        "MYSQL_URL",
        None,
        "MySQL or MariaDB projection; unset = projection off, the rest works",
        example="mysql://root@127.0.0.1:3306/events",
        redact=redact_url,
    )
    api_keys: tuple[str, ...] = setting(
        "INGEST_API_KEYS",
        (),
        "Comma-separated write keys: they send events and read nothing; the API refuses to "
        "start without one unless `INGEST_AUTH=off`",
        _split,
        redact=_count_keys,
    )
    read_keys: tuple[str, ...] = setting(
        "INGEST_READ_KEYS",
        (),
        "Comma-separated read keys: `GET /v1/events/<id>` and `/openapi.json`, nothing else; "
        "unset = nobody reads ([Security](security.md))",
        _split,
        redact=_count_keys,
    )
    admin_keys: tuple[str, ...] = setting(
        "INGEST_ADMIN_KEYS",
        (),
        "Comma-separated admin keys: they read and change event schemas (`/v1/schemas`), "
        "nothing else; unset = schemas are changed with `ingest schemas` only",
        _split,
        redact=_count_keys,
    )
    schema_default_mode: str = setting(
        "INGEST_SCHEMA_DEFAULT_MODE",
        "off",
        "What an event of a type with no active schema gets: `off` (accepted unchecked), `warn` "
        "(accepted, the missing schema recorded) or `enforce` (`422`) ([Data contracts]"
        "(data-contracts.md))",
        _one_of("off", "warn", "enforce"),
    )
    schema_reload_seconds: float = setting(
        "INGEST_SCHEMA_RELOAD_SECONDS",
        2.0,
        "Seconds between two looks of each API process for a changed schema registry",
        _seconds,
    )
    auth_enabled: bool = setting(
        "INGEST_AUTH",
        True,
        "Whether requests need a key: `off` accepts them without one (for a private network only)",
        _on_off,
    )
    flower_basic_auth: str | None = setting(
        "FLOWER_BASIC_AUTH",
        None,
        "`user:password`, the login Flower asks for",
        redact=_set_or_unset,
    )
    max_event_bytes: int = setting(
        "INGEST_MAX_EVENT_BYTES", 262_144, "Largest event, as compact JSON", _positive_int
    )
    max_batch_events: int = setting(
        "INGEST_MAX_BATCH_EVENTS", 1_000, "Most events in one `/v1/batch`", _positive_int
    )
    max_body_bytes: int = setting(
        "INGEST_MAX_BODY_BYTES",
        5_242_880,
        "Largest request body, after decompression",
        _positive_int,
    )
    publish_timeout: float = setting(
        "INGEST_PUBLISH_TIMEOUT",
        3.0,
        "Seconds the API waits for the broker's confirm before answering `503`",
        _seconds,
    )
    publisher_pool_size: int = setting(
        "INGEST_PUBLISHER_POOL_SIZE",
        8,
        "Idle broker connections kept per API process",
        _positive_int,
    )
    reconcile_grace_seconds: float = setting(
        "INGEST_RECONCILE_GRACE_SECONDS",
        60.0,
        "Seconds an event may stay unprojected before the reconciler projects it; younger ones "
        "are left to the chained task",
        _seconds,
    )
    reconcile_interval_seconds: float = setting(
        "INGEST_RECONCILE_INTERVAL_SECONDS",
        30.0,
        "Seconds between two runs of the reconciler (celery beat)",
        _seconds,
    )
    reconcile_chunk_size: int = setting(
        "INGEST_RECONCILE_CHUNK_SIZE", 500, "Events per reconciler chunk", _positive_int
    )
    projection_max_retries: int = setting(
        "INGEST_PROJECTION_MAX_RETRIES",
        8,
        "Projection retries (exponential backoff with jitter) before the reconciler takes over",
        _positive_int,
    )
    cors_origins: tuple[str, ...] = setting(
        "INGEST_CORS_ORIGINS",
        (),
        "Comma-separated browser origins allowed to send events (CORS; `*`: any); unset = none; "
        "reads get no CORS",
        _split,
    )
    worker_metrics_port: int | None = setting(
        "INGEST_WORKER_METRICS_PORT",
        None,
        "Port on which a worker serves its task metrics for Prometheus; unset = none (one port "
        "per worker)",
        _positive_int,
    )
    worker_metrics_address: str = setting(
        "INGEST_WORKER_METRICS_ADDRESS",
        "127.0.0.1",
        "Address those metrics listen on; they have no login, so widen it (`0.0.0.0`) only "
        "where the network keeps others out",
    )
    worker_pool: str = setting(
        "INGEST_WORKER_POOL",
        "threads",
        "Celery pool of each worker: `threads` (one process), `prefork` (child processes) "
        "or `solo`",
        _one_of(*WORKER_POOLS),
    )
    worker_concurrency: int = setting(
        "INGEST_WORKER_CONCURRENCY",
        16,
        "Threads per worker (a persist task waits up to 20 ms for its projection's publish, "
        "holding its thread, not a CPU); with `prefork`, set about one process per CPU; `-c` on "
        "the command line wins",
        _positive_int,
    )
    projector_concurrency: int = setting(
        "INGEST_PROJECTOR_CONCURRENCY",
        4,
        "Threads of the projection worker as `ingest projector` and `ingest up` start it, in "
        "place of INGEST_WORKER_CONCURRENCY: its tasks wait on the databases, and more of them "
        "at once cost both databases and the worker CPU and memory for no more events per "
        "second; `-c` on the command line wins",
        _positive_int,
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values = {}
        for field, declared in declared_settings():
            raw = env.get(declared.variable, "")
            if raw != "":
                values[field.name] = declared.parse(declared.variable, raw)
        return cls(**values)

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)

    def check_api(self) -> None:
        """Fail fast when the API would start in an unsafe state."""
        if self.auth_enabled and not self.api_keys:
            raise ConfigError("INGEST_API_KEYS is empty: set at least one key, or INGEST_AUTH=off")

    def redacted(self) -> dict[str, object]:
        """The settings as they may be logged: no passwords, no keys."""
        values: dict[str, object] = {}
        for field, declared in declared_settings():
            value = getattr(self, field.name)
            values[field.name] = declared.redact(value) if declared.redact else value
        return values


def declared_settings() -> Iterator[tuple[dataclasses.Field[Any], Setting]]:
    """Each field of Settings with its declaration, in the order they are declared."""
    for field in dataclasses.fields(Settings):
        yield field, field.metadata[SETTING]
