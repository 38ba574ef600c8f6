"""SQLAlchemy 2 models for both databases, their engines and sessions."""

from models.contracts import EventContract, EventSchemaVersion, SchemaRegistryGeneration
from models.engines import dispose_engines, engine_for, session_scope
from models.mysql import EventProjection, ProjectionBase
from models.postgres import Base, Event, ProjectionCheckpoint

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
