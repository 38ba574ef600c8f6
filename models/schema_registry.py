"""The schema registry (PostgreSQL tables of models/postgres.py): versions of a JSON Schema per
event type, added and retired, each type's mode, and the whole registry compiled for checking.

A type's mode says what a broken event gets: `off` (not checked), `warn` (accepted, with what it
broke recorded beside it) or `enforce` (refused, 422). A type without an active version gets the
deployment's default mode (INGEST_SCHEMA_DEFAULT_MODE): `off` lets it through unchecked, `warn`
and `enforce` treat "no schema" as the violation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

from sqlalchemy import text

from ingest.canonical import compact_json
from ingest.event_schemas import CompiledSchema, SchemaRefused, Violation, compile_schema
from models import engine_for
from models.engines import execute
from models.postgres import MODES

logger = logging.getLogger(__name__)

OFF, WARN, ENFORCE = MODES
# The mode a type gets with its first version, unless one is named.
FIRST_MODE = WARN
# A reload reads the whole registry; this bounds it, so a slow database holds no thread long.
STATEMENT_TIMEOUT_MS = 5000

# One change per type at a time: version numbers are taken in order.
LOCK_TYPE = "SELECT pg_advisory_xact_lock(hashtextextended('ingest.schemas:' || :event_type, 0))"
NEWEST = """
SELECT version, schema_sha256, retired_at IS NOT NULL AS retired FROM event_schemas
WHERE event_type = :event_type ORDER BY version DESC LIMIT 1
"""
INSERT_VERSION = """
INSERT INTO event_schemas (event_type, version, schema, schema_sha256, created_by)
VALUES (:event_type, :version, CAST(:schema AS jsonb), :schema_sha256, :by)
"""
SET_MODE = """
INSERT INTO event_contracts (event_type, mode, updated_by) VALUES (:event_type, :mode, :by)
ON CONFLICT (event_type) DO UPDATE SET mode = excluded.mode, updated_at = now(),
    updated_by = excluded.updated_by
WHERE event_contracts.mode <> excluded.mode
"""
KEEP_MODE = """
INSERT INTO event_contracts (event_type, mode, updated_by) VALUES (:event_type, :mode, :by)
ON CONFLICT (event_type) DO NOTHING
"""
RETIRE = """
UPDATE event_schemas SET retired_at = now(), retired_by = :by
WHERE event_type = :event_type AND version = :version AND retired_at IS NULL
"""
VERSION_COLUMNS = """
event_type, version, schema, schema_sha256, created_at, created_by, retired_at, retired_by
"""
TYPE_VERSIONS = f"""
SELECT {VERSION_COLUMNS} FROM event_schemas WHERE event_type = :event_type ORDER BY version
"""
TYPE_MODE = (
    "SELECT mode, updated_at, updated_by FROM event_contracts WHERE event_type = :event_type"
)
LIST_TYPES = """
SELECT c.event_type, c.mode, count(s.version) AS versions,
       max(s.version) FILTER (WHERE s.retired_at IS NULL) AS newest_active,
       greatest(c.updated_at, max(s.created_at), max(s.retired_at)) AS changed_at
FROM event_contracts c JOIN event_schemas s USING (event_type)
GROUP BY c.event_type, c.mode, c.updated_at ORDER BY c.event_type
"""
GENERATION = "SELECT generation FROM schema_registry_generation"
# The newest events of a type, by when they happened (the index on event_type, occurred_at).
SAMPLE = """
SELECT payload FROM events WHERE event_type = %s ORDER BY occurred_at DESC LIMIT %s
"""
ACTIVE_VERSIONS = """
SELECT s.event_type, s.version, s.schema_sha256, s.retired_at IS NOT NULL AS retired,
       CASE WHEN s.retired_at IS NULL THEN s.schema END AS schema, c.mode
FROM event_schemas s JOIN event_contracts c USING (event_type)
"""


class RegistryError(LookupError):
    """A type or version that is not in the registry, or a change it does not allow."""


@dataclass(frozen=True)
class SchemaVersion:
    event_type: str
    version: int
    schema: Any
    schema_sha256: str
    created_at: datetime
    created_by: str
    retired_at: datetime | None
    retired_by: str | None

    def as_dict(self, with_schema: bool = True) -> dict[str, Any]:
        answer = {
            "event_type": self.event_type,
            "version": self.version,
            "status": "retired" if self.retired_at else "active",
            "schema_sha256": self.schema_sha256,
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
            "retired_at": self.retired_at.isoformat() if self.retired_at else None,
            "retired_by": self.retired_by,
        }
        if with_schema:
            answer["schema"] = self.schema
        return answer


@dataclass(frozen=True)
class TypeSchemas:
    """An event type's mode and every version of its schema, oldest first."""

    event_type: str
    mode: str
    mode_updated_at: datetime
    mode_updated_by: str
    versions: list[SchemaVersion]

    @property
    def newest_active(self) -> int | None:
        active = [v.version for v in self.versions if v.retired_at is None]
        return max(active, default=None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "event_type": self.event_type,
            "mode": self.mode,
            "mode_updated_at": self.mode_updated_at.isoformat(),
            "mode_updated_by": self.mode_updated_by,
            "newest_active_version": self.newest_active,
            "versions": [version.as_dict() for version in self.versions],
        }


@dataclass(frozen=True)
class TypeSummary:
    event_type: str
    mode: str
    versions: int
    newest_active: int | None
    changed_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "event_type": self.event_type,
            "mode": self.mode,
            "versions": self.versions,
            "newest_active_version": self.newest_active,
            "changed_at": self.changed_at.isoformat(),
        }


def add_version(
    url: str, event_type: str, document: Any, by: str, mode: str | None = None
) -> tuple[SchemaVersion, bool]:
    """Add `document` as the next version of `event_type`'s schema, and set the type's mode
    when `mode` is given (a new type starts in FIRST_MODE). The same schema as the newest
    version, still active, adds nothing. Returns the version and whether it is new; raises
    SchemaRefused for a schema ingest will not compile."""
    compiled = compile_schema(document)
    with engine_for(url).begin() as connection:
        connection.execute(text(LOCK_TYPE), {"event_type": event_type})
        newest = connection.execute(text(NEWEST), {"event_type": event_type}).first()
        added = not (newest and newest.schema_sha256 == compiled.sha256 and not newest.retired)
        version = newest.version + 1 if newest and added else (newest.version if newest else 1)
        if added:
            connection.execute(
                text(INSERT_VERSION),
                {
                    "event_type": event_type,
                    "version": version,
                    "schema": compact_json(document),
                    "schema_sha256": compiled.sha256,
                    "by": by,
                },
            )
        connection.execute(
            text(SET_MODE if mode else KEEP_MODE),
            {"event_type": event_type, "mode": mode or FIRST_MODE, "by": by},
        )
    found = schema_version(url, event_type, version)
    assert found is not None
    return found, added


def set_mode(url: str, event_type: str, mode: str, by: str) -> None:
    """Set how `event_type` is enforced; it needs a schema first."""
    if mode not in MODES:
        raise RegistryError(f"The mode must be one of {', '.join(MODES)}, not {mode!r}.")
    with engine_for(url).begin() as connection:
        connection.execute(text(LOCK_TYPE), {"event_type": event_type})
        if connection.execute(text(NEWEST), {"event_type": event_type}).first() is None:
            raise RegistryError(f"{event_type!r} has no schema: add one first.")
        connection.execute(text(SET_MODE), {"event_type": event_type, "mode": mode, "by": by})


def retire_version(url: str, event_type: str, version: int, by: str) -> SchemaVersion:
    """Retire a version: it checks no event from now on; pinning it is a violation. Retiring a
    retired version changes nothing."""
    with engine_for(url).begin() as connection:
        connection.execute(text(RETIRE), {"event_type": event_type, "version": version, "by": by})
    found = schema_version(url, event_type, version)
    if found is None:
        raise RegistryError(f"{event_type!r} has no schema version {version}.")
    return found


def type_schemas(url: str, event_type: str) -> TypeSchemas | None:
    with engine_for(url).connect() as connection:
        mode = connection.execute(text(TYPE_MODE), {"event_type": event_type}).first()
        rows = connection.execute(text(TYPE_VERSIONS), {"event_type": event_type}).all()
    if mode is None or not rows:
        return None
    return TypeSchemas(event_type, *mode, [SchemaVersion(*row) for row in rows])


def schema_version(url: str, event_type: str, version: int) -> SchemaVersion | None:
    found = type_schemas(url, event_type)
    versions = {item.version: item for item in found.versions} if found else {}
    return versions.get(version)


def list_types(url: str) -> list[TypeSummary]:
    with engine_for(url).connect() as connection:
        return [TypeSummary(*row) for row in connection.execute(text(LIST_TYPES))]


def stored_payloads(url: str, event_type: str, sample: int) -> list[Any]:
    """The payloads of the newest `sample` events of `event_type` (by occurred_at), from which
    `ingest schemas infer` drafts a schema."""
    return [row.payload for row in execute(url, SAMPLE, (event_type, sample))]


def registry_generation(url: str) -> int:
    return execute(url, GENERATION)[0].generation


@dataclass(frozen=True)
class Verdict:
    """What a type's contract says of one event: under which mode, against which version (None
    when none was checked), and what the event broke."""

    mode: str
    version: int | None
    violations: list[Violation]

    @property
    def refuses(self) -> bool:
        return self.mode == ENFORCE and bool(self.violations)

    def recorded(self) -> dict[str, Any]:
        """What is stored with an accepted event, and said in its answer: the version it was
        checked against, and what it broke (warn mode); a field with nothing to say is left out."""
        recorded: dict[str, Any] = {}
        if self.version is not None:
            recorded["schema_version"] = self.version
        if self.violations:
            recorded["schema_violations"] = [v.as_dict() for v in self.violations]
        return recorded

    def errors(self) -> dict[str, list[str]]:
        """Each failing value's JSON pointer with the rules it broke, as a 422's `errors`."""
        errors: dict[str, list[str]] = {}
        for violation in self.violations:
            errors.setdefault(violation.pointer, []).append(
                f"{violation.rule}: {violation.message}"
            )
        return errors


@dataclass(frozen=True)
class Contract:
    """One event type's mode and compiled versions (None for a retired one)."""

    mode: str
    versions: dict[int, CompiledSchema | None]

    @cached_property  # every event of the type asks; the versions never change
    def newest(self) -> int | None:
        return max((n for n, schema in self.versions.items() if schema is not None), default=None)


@dataclass(frozen=True)
class Registry:
    """The whole registry as read at one `generation`, compiled: checks events in any thread."""

    generation: int
    default_mode: str
    contracts: dict[str, Contract] = field(default_factory=dict)

    def check(self, event_type: str, payload: Any, pinned: int | None = None) -> Verdict | None:
        """The verdict on an event, or None when its type is not checked at all."""
        contract = self.contracts.get(event_type)
        newest = contract.newest if contract else None
        if contract is None or newest is None:
            if self.default_mode == OFF:
                return None
            missing = Violation(
                "/event_type",
                "registered",
                f"No active schema is registered for the event type {event_type!r} "
                f"(INGEST_SCHEMA_DEFAULT_MODE is {self.default_mode}).",
            )
            return Verdict(self.default_mode, None, [missing])
        if contract.mode == OFF:
            return None
        version = newest if pinned is None else pinned
        schema = contract.versions.get(version)
        if schema is None:
            why = "is retired" if version in contract.versions else "does not exist"
            wrong = Violation(
                "/schema_version",
                "schema_version",
                f"Version {version} of the schema of {event_type!r} {why}; the newest active "
                f"version is {newest}.",
            )
            return Verdict(contract.mode, None, [wrong])
        return Verdict(contract.mode, version, schema.violations(payload))


def load_registry(url: str, default_mode: str, previous: Registry | None = None) -> Registry:
    """The registry as it is now, compiled; versions compiled for `previous` are reused."""
    with engine_for(url).connect() as connection:
        connection = connection.execution_options(isolation_level="REPEATABLE READ")
        with connection.begin():
            connection.execute(text(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}"))
            generation = connection.execute(text(GENERATION)).scalar_one()
            rows = connection.execute(text(ACTIVE_VERSIONS)).all()
    compiled: dict[tuple[str, int], CompiledSchema] = {}
    if previous is not None:
        for event_type, contract in previous.contracts.items():
            for version, schema in contract.versions.items():
                if schema is not None:
                    compiled[(event_type, version)] = schema
    modes: dict[str, str] = {}
    versions: dict[str, dict[int, CompiledSchema | None]] = {}
    for row in rows:
        modes[row.event_type] = row.mode
        schema = None
        if not row.retired:
            schema = compiled.get((row.event_type, row.version))
            if schema is None or schema.sha256 != row.schema_sha256:
                schema = _compile_stored(row.event_type, row.version, row.schema)
        versions.setdefault(row.event_type, {})[row.version] = schema
    contracts = {name: Contract(modes[name], found) for name, found in versions.items()}
    return Registry(generation, default_mode, contracts)


def _compile_stored(event_type: str, version: int, document: Any) -> CompiledSchema | None:
    """A stored version, compiled; one that no longer compiles (written by hand, say) checks
    nothing and is logged, rather than failing every event of its type."""
    try:
        return compile_schema(document)
    except SchemaRefused as exc:
        logger.error(
            "Version %s of the schema of %r does not compile and checks nothing: %s",
            version,
            event_type,
            exc,
        )
        return None
