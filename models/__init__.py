"""SQLAlchemy 2 models for both databases, their engines and sessions."""

from models.engines import dispose_engines, engine_for, session_scope
from models.mysql import EventProjection, ProjectionBase
from models.postgres import (
    Base,
    Event,
    EventContract,
    EventSchemaVersion,
    ProjectionCheckpoint,
    SchemaRegistryGeneration,
)

__all__ = [
    "Base",
    "Event",
    "EventContract",
    "EventProjection",
    "EventSchemaVersion",
    "ProjectionBase",
    "ProjectionCheckpoint",
    "SchemaRegistryGeneration",
    "dispose_engines",
    "engine_for",
    "session_scope",
]
