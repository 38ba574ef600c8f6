"""Typed, frozen configuration read from the environment at start-up, never at import."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

WORKER_POOLS = ("threads", "prefork", "solo")


class ConfigError(ValueError):
    """A variable is missing or malformed; the message names it."""


@dataclass(frozen=True)
class Settings:
    broker_url: str = "amqp://guest:guest@localhost:5672//"
    postgres_url: str = "postgresql://postgres@localhost:5432/events"
    mysql_url: str | None = None
    # Write keys: may send events.
    api_keys: tuple[str, ...] = ()
    # Read keys: may read event status and the OpenAPI description; a key may be in both lists.
    read_keys: tuple[str, ...] = ()
    auth_enabled: bool = True
    flower_basic_auth: str | None = None
    max_event_bytes: int = 262_144
    max_batch_events: int = 1_000
    max_body_bytes: int = 5_242_880
    # Seconds the API waits for the broker's publisher confirm before answering 503.
    publish_timeout: float = 3.0
    publisher_pool_size: int = 8
    # Unprojected events younger than this are left to the chained projection task.
    reconcile_grace_seconds: float = 60.0
    reconcile_interval_seconds: float = 30.0
    reconcile_chunk_size: int = 500
    projection_max_retries: int = 8
    cors_origins: tuple[str, ...] = ()
    # A worker serves its task metrics on this port when set; each worker needs its own.
    worker_metrics_port: int | None = None
    # The metrics have no login: only this machine reaches them unless the address is widened.
    worker_metrics_address: str = "127.0.0.1"
    # How a worker runs its tasks: threads spend no CPU handing messages to child processes.
    worker_pool: str = "threads"
    worker_concurrency: int = 16

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        return cls(
            broker_url=env.get("BROKER_URL", cls.broker_url),
            postgres_url=env.get("POSTGRES_URL", cls.postgres_url),
            mysql_url=env.get("MYSQL_URL") or None,
            api_keys=_split(env.get("INGEST_API_KEYS", "")),
            read_keys=_split(env.get("INGEST_READ_KEYS", "")),
            auth_enabled=_auth_enabled(env.get("INGEST_AUTH", "on")),
            flower_basic_auth=env.get("FLOWER_BASIC_AUTH") or None,
            max_event_bytes=_int(env, "INGEST_MAX_EVENT_BYTES", cls.max_event_bytes),
            max_batch_events=_int(env, "INGEST_MAX_BATCH_EVENTS", cls.max_batch_events),
            max_body_bytes=_int(env, "INGEST_MAX_BODY_BYTES", cls.max_body_bytes),
            publish_timeout=_float(env, "INGEST_PUBLISH_TIMEOUT", cls.publish_timeout),
            publisher_pool_size=_int(env, "INGEST_PUBLISHER_POOL_SIZE", cls.publisher_pool_size),
            reconcile_grace_seconds=_float(
                env, "INGEST_RECONCILE_GRACE_SECONDS", cls.reconcile_grace_seconds
            ),
            reconcile_interval_seconds=_float(
                env, "INGEST_RECONCILE_INTERVAL_SECONDS", cls.reconcile_interval_seconds
            ),
            reconcile_chunk_size=_int(env, "INGEST_RECONCILE_CHUNK_SIZE", cls.reconcile_chunk_size),
            projection_max_retries=_int(
                env, "INGEST_PROJECTION_MAX_RETRIES", cls.projection_max_retries
            ),
            cors_origins=_split(env.get("INGEST_CORS_ORIGINS", "")),
            worker_metrics_port=_int(env, "INGEST_WORKER_METRICS_PORT", 0) or None,
            worker_metrics_address=env.get("INGEST_WORKER_METRICS_ADDRESS")
            or cls.worker_metrics_address,
            worker_pool=_choice(env, "INGEST_WORKER_POOL", cls.worker_pool, WORKER_POOLS),
            worker_concurrency=_int(env, "INGEST_WORKER_CONCURRENCY", cls.worker_concurrency),
        )

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)

    def check_api(self) -> None:
        """Fail fast when the API would start in an unsafe state."""
        if self.auth_enabled and not self.api_keys:
            raise ConfigError("INGEST_API_KEYS is empty: set at least one key, or INGEST_AUTH=off")

    def redacted(self) -> dict[str, object]:
        """The settings as they may be logged: no passwords, no keys."""
        values = dataclasses.asdict(self)
        for name in ("broker_url", "postgres_url", "mysql_url"):
            values[name] = redact_url(values[name])
        values["api_keys"] = f"<{len(self.api_keys)} keys>"
        values["read_keys"] = f"<{len(self.read_keys)} keys>"
        values["flower_basic_auth"] = "<set>" if self.flower_basic_auth else None
        return values


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


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(name) or default
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    return value


def _split(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _auth_enabled(value: str) -> bool:
    if value.lower() not in ("on", "off"):
        raise ConfigError(f"INGEST_AUTH must be 'on' or 'off', not {value!r}")
    return value.lower() == "on"


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, not {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name} must be positive, not {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from None
    if value < 0:
        raise ConfigError(f"{name} must not be negative, not {value}")
    return value
