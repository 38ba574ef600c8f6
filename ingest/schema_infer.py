"""A draft schema from events already stored: `ingest schemas infer TYPE`, for a team that starts
with data and wants a contract. Every payload it was drawn from passes it: each value's types are
all those seen, a member is required only when every object there had it, and nothing is
forbidden. Tighten it (enums, patterns, additionalProperties) before enforcing it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ingest.event_schemas import DRAFT_2020_12

# An object with more distinct members than this is a map (ids as keys): only its type is kept.
MAX_INFERRED_PROPERTIES = 200
JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string", type(None): "null"}


@dataclass
class _Shape:
    """What the values at one place of the payloads were."""

    types: set[str] = field(default_factory=set)
    objects: int = 0
    members: dict[str, _Shape] = field(default_factory=dict)
    present: dict[str, int] = field(default_factory=dict)
    items: _Shape | None = None

    def add(self, value: Any) -> None:
        if isinstance(value, dict):
            self.types.add("object")
            self.objects += 1
            for name, member in value.items():
                self.members.setdefault(name, _Shape()).add(member)
                self.present[name] = self.present.get(name, 0) + 1
        elif isinstance(value, list):
            self.types.add("array")
            for item in value:
                if self.items is None:
                    self.items = _Shape()
                self.items.add(item)
        else:
            self.types.add(JSON_TYPES[type(value)])

    def schema(self) -> dict[str, Any]:
        types = set(self.types)
        if {"integer", "number"} <= types:
            types.discard("integer")  # a number that happened to be whole
        named = sorted(types)
        schema: dict[str, Any] = {"type": named[0] if len(named) == 1 else named}
        if "object" in types and self.members and len(self.members) <= MAX_INFERRED_PROPERTIES:
            schema["properties"] = {name: shape.schema() for name, shape in self.members.items()}
            required = [name for name, count in self.present.items() if count == self.objects]
            if required:
                schema["required"] = required
        if "array" in types and self.items is not None:
            schema["items"] = self.items.schema()
        return schema


def infer_schema(payloads: Iterable[Any], title: str | None = None) -> dict[str, Any]:
    """The tightest draft that every one of `payloads` passes, as described above."""
    shape = _Shape()
    for payload in payloads:
        shape.add(payload)
    schema: dict[str, Any] = {"$schema": DRAFT_2020_12}
    if title:
        schema["title"] = title
    schema.update(shape.schema() if shape.types else {"type": "object"})
    return schema
