"""Settings.from_env: each kind of value is read, and refused with the variable's name."""

from __future__ import annotations

import pytest

from ingest.config import ConfigError, Settings, redact_url


def test_values_are_read_by_their_kind() -> None:
    settings = Settings.from_env(
        {
            "BROKER_URL": "amqp://u:p@mq1//;amqp://u:p@mq2//",
            "MYSQL_URL": "mysql://root@127.0.0.1:3306/events",
            "INGEST_CORS_ORIGINS": " https://a.example, ,https://b.example ",
            "INGEST_AUTH": "OFF",
            "INGEST_MAX_BATCH_EVENTS": "20",
            "INGEST_PUBLISH_TIMEOUT": "0.5",
            "INGEST_WORKER_METRICS_PORT": "9101",
            "INGEST_WORKER_POOL": "prefork",
        }
    )
    assert settings.broker_url == "amqp://u:p@mq1//;amqp://u:p@mq2//"
    assert settings.mysql_url == "mysql://root@127.0.0.1:3306/events"
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert settings.auth_enabled is False
    assert settings.max_batch_events == 20
    assert settings.publish_timeout == 0.5
    assert settings.worker_metrics_port == 9101
    assert settings.worker_pool == "prefork"
    # Unset and empty both mean the default.
    assert Settings.from_env({}) == Settings()
    assert Settings.from_env({"MYSQL_URL": "", "INGEST_WORKER_POOL": ""}) == Settings()
    assert Settings().mysql_url is None and Settings().worker_metrics_port is None


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("INGEST_AUTH", "no", "INGEST_AUTH must be 'on' or 'off', not 'no'"),
        (
            "INGEST_MAX_BATCH_EVENTS",
            "many",
            "INGEST_MAX_BATCH_EVENTS must be an integer, not 'many'",
        ),
        ("INGEST_MAX_EVENT_BYTES", "0", "INGEST_MAX_EVENT_BYTES must be positive, not 0"),
        ("INGEST_WORKER_METRICS_PORT", "0", "INGEST_WORKER_METRICS_PORT must be positive, not 0"),
        ("INGEST_PUBLISH_TIMEOUT", "soon", "INGEST_PUBLISH_TIMEOUT must be a number, not 'soon'"),
        (
            "INGEST_RECONCILE_GRACE_SECONDS",
            "-1",
            "INGEST_RECONCILE_GRACE_SECONDS must not be negative, not -1.0",
        ),
        (
            "INGEST_WORKER_POOL",
            "eventlet",
            "INGEST_WORKER_POOL must be one of threads, prefork, solo, not 'eventlet'",
        ),
    ],
)
def test_a_malformed_value_is_refused_with_its_variable(
    variable: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({variable: value})
    assert str(refused.value) == message


def test_redacted_hides_passwords_keys_and_the_flower_login() -> None:
    settings = Settings.from_env(
        {
            "BROKER_URL": "amqp://ingest:broker-secret@mq1//;amqp://ingest:broker-secret@mq2//",
            "POSTGRES_URL": "postgresql://ingest:pg-secret@db/events",
            "MYSQL_URL": "mysql://ingest:my-secret@db/events",
            "INGEST_API_KEYS": "write-secret",
            "INGEST_READ_KEYS": "read-secret-1,read-secret-2",
            "FLOWER_BASIC_AUTH": "admin:flower-secret",
        }
    )
    shown = settings.redacted()
    assert "secret" not in repr(shown)
    assert shown["broker_url"] == "amqp://ingest:***@mq1//;amqp://ingest:***@mq2//"
    assert shown["postgres_url"] == "postgresql://ingest:***@db/events"
    assert shown["api_keys"] == "<1 keys>"
    assert shown["read_keys"] == "<2 keys>"
    assert shown["flower_basic_auth"] == "<set>"
    assert Settings().redacted()["flower_basic_auth"] is None
    # Everything else as it is.
    assert shown["max_event_bytes"] == settings.max_event_bytes
    assert set(shown) == set(Settings.__dataclass_fields__)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("amqp://guest:guest@localhost:5672//", "amqp://guest:***@localhost:5672//"),
        # The user and the password alike: only the password goes.
        ("amqp://ingest:ingest@mq//", "amqp://ingest:***@mq//"),
        ("mysql://u:p%40ss:w@db/events", "mysql://u:***@db/events"),
        ("amqp://u:@mq//", "amqp://u:***@mq//"),
        (
            "postgresql://u:secret@[::1]:5432/events?sslmode=require",
            "postgresql://u:***@[::1]:5432/events?sslmode=require",
        ),
        ("amqp://u:s1@mq1//;amqp://mq2//", "amqp://u:***@mq1//;amqp://mq2//"),
        ("postgresql://postgres@127.0.0.1/events", "postgresql://postgres@127.0.0.1/events"),
        ("", ""),
        (None, None),
    ],
)
def test_redact_url_hides_the_password_and_nothing_else(url: str | None, shown: str | None) -> None:
    assert redact_url(url) == shown


def test_the_api_refuses_to_start_without_a_key_unless_auth_is_off() -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({}).check_api()
    assert str(refused.value) == (
        "INGEST_API_KEYS is empty: set at least one key, or INGEST_AUTH=off"
    )
    Settings.from_env({"INGEST_AUTH": "off"}).check_api()
    Settings.from_env({"INGEST_API_KEYS": "k"}).check_api()
