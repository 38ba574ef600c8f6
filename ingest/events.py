"""Temporary: tasks/persist.py and tasks/projection.py import these names from here until they
import them from ingest.canonical and ingest.contract; then this module goes."""

from ingest.canonical import compact_json
from ingest.contract import event_ids_of, events_repr

__all__ = ["compact_json", "event_ids_of", "events_repr"]
