"""Data contracts: a JSON Schema (draft 2020-12) checked against each event's payload.

A schema is compiled once per version by jsonschema-rs (Rust; `scripts/bench_schemas.py`
measured it against the pure-Python `jsonschema`). A schema comes from an administrator, but
one careless or hostile schema must not hang the API's threads, so before it is compiled it is
held to bounds: its size, its nesting, references only within itself, no `$ref` loop that never
moves into the event, and at most MAX_APPLICATIONS subschemas applied to any one value of an
event (a small schema of `$ref`s can otherwise cost 2^30 checks per event). Its regular
expressions run on Rust's `regex` engine, which takes linear time: `^(a+)+$` cannot backtrack.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import jsonschema_rs

from ingest.canonical import compact_json

logger = logging.getLogger(__name__)

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
# The largest schema document, as compact JSON: as large as the largest event by default.
MAX_SCHEMA_BYTES = 262_144
# Levels of objects and arrays in a schema document; real schemas use a dozen or so.
MAX_SCHEMA_DEPTH = 64
# Subschemas that may apply to one value of an event (the payload, or any value inside it).
MAX_APPLICATIONS = 1_000
# An event's payload is at most this many levels deep (ingest_api.schemas.MAX_PAYLOAD_DEPTH).
MAX_EVENT_DEPTH = 31
# Violations reported per event; an event that breaks more says so in the last one.
MAX_VIOLATIONS = 20
# Characters of a violation's message: a message may quote the value, which may be long.
MAX_MESSAGE_CHARS = 300

# Keywords whose value is one subschema applied to the same value as the schema itself.
IN_PLACE_ONE = ("not", "if", "then", "else")
# ... a list of such subschemas, and a map of them.
IN_PLACE_LIST = ("allOf", "anyOf", "oneOf")
IN_PLACE_MAP = ("dependentSchemas",)
# Keywords whose subschemas apply to the members of an object, and to the items of an array.
MEMBER_ONE = ("additionalProperties", "unevaluatedProperties")
MEMBER_MAP = ("patternProperties",)
ITEM_ONE = ("items", "contains", "unevaluatedItems")
# Subschemas only reached through a $ref, or never applied (contentSchema is an annotation).
CONTAINERS = ("$defs", "definitions")
NOT_APPLIED = ("contentSchema",)
# Values that are data, not schemas: never walked.
DATA = frozenset({"const", "enum", "default", "examples"})
# Keywords that would make references resolve against other documents or at run time.
REFUSED_KEYWORDS = {
    "$dynamicRef": "$dynamicRef is not supported; use $ref to a schema under $defs",
    "$recursiveRef": "$recursiveRef is not supported; use $ref to a schema under $defs",
}
# A validation keyword names the rule a value broke.
RULES = frozenset(
    {
        "type", "enum", "const", "multipleOf", "maximum", "exclusiveMaximum", "minimum",
        "exclusiveMinimum", "maxLength", "minLength", "pattern", "maxItems", "minItems",
        "uniqueItems", "maxContains", "minContains", "maxProperties", "minProperties",
        "required", "dependentRequired", "additionalProperties", "unevaluatedProperties",
        "unevaluatedItems", "propertyNames", "contains", "items", "prefixItems", "not",
        "anyOf", "oneOf", "allOf", "format", "contentEncoding", "contentMediaType",
    }
)  # fmt: skip


class SchemaRefused(ValueError):
    """A schema that ingest will not compile; the message says why and where."""


@dataclass(frozen=True)
class Violation:
    """One rule an event broke: where (a JSON pointer into the event), which rule, and why."""

    pointer: str
    rule: str
    message: str
    schema_path: str = ""

    def as_dict(self) -> dict[str, str]:
        return {
            "pointer": self.pointer,
            "rule": self.rule,
            "message": self.message,
            "schema_path": self.schema_path,
        }


@dataclass(frozen=True)
class CompiledSchema:
    """A schema that passed the bounds, compiled: checks payloads, in any thread."""

    document: Any
    sha256: str
    validator: Any = field(repr=False)

    def violations(self, payload: Any, at: str = "/payload") -> list[Violation]:
        """What `payload` breaks, at most MAX_VIOLATIONS; pointers start with `at`."""
        if self.validator.is_valid(payload):
            return []
        found = list(
            itertools.islice(_violations(self.validator.iter_errors(payload), at), MAX_VIOLATIONS)
        )
        return found or [Violation(at, "schema", "The value is not valid under the schema.")]


def schema_sha256(document: Any) -> str:
    """SHA-256 of the schema as compact JSON with sorted keys: the same schema, the same hash."""
    return hashlib.sha256(canonical_json(document).encode()).hexdigest()


def canonical_json(document: Any) -> str:
    return compact_json(_sorted(document))


def compile_schema(document: Any) -> CompiledSchema:
    """The schema compiled for checking payloads, or SchemaRefused saying what is wrong."""
    check_bounds(document)
    try:
        validator = jsonschema_rs.Draft202012Validator(
            document,
            validate_formats=True,
            # Rust's regex crate: linear time, no lookaround or backreferences.
            pattern_options=jsonschema_rs.RegexOptions(),
            # No reference leaves the document (check_bounds refuses them first).
            offline=True,
        )
    except jsonschema_rs.ValidationError as exc:
        where = json_pointer(exc.instance_path)
        raise SchemaRefused(
            f"Not a valid draft 2020-12 schema at {where or '/'}: {_first_line(exc.message)}"
            + (
                " (ingest's regular expressions take linear time: no lookaround or backreferences)"
                if "regex" in exc.message
                else ""
            )
        ) from None
    except (ValueError, jsonschema_rs.ReferencingError) as exc:
        raise SchemaRefused(f"The schema cannot be compiled: {_first_line(str(exc))}") from None
    return CompiledSchema(document, schema_sha256(document), validator)


def check_bounds(document: Any) -> None:
    """Raise SchemaRefused unless the schema is within every bound this module names."""
    if not isinstance(document, (dict, bool)):
        raise SchemaRefused("A schema is a JSON object (or true or false).")
    _check_depth(document)  # first: the rest walks the document recursively
    size = len(canonical_json(document).encode())
    if size > MAX_SCHEMA_BYTES:
        raise SchemaRefused(
            f"The schema is {size} bytes as compact JSON, over the limit of {MAX_SCHEMA_BYTES}."
        )
    if isinstance(document, dict):
        declared = document.get("$schema", DRAFT_2020_12)
        if not isinstance(declared, str) or declared.rstrip("#") != DRAFT_2020_12:
            raise SchemaRefused(
                f"$schema must be {DRAFT_2020_12} (or left out): ingest checks draft 2020-12."
            )
    graph = SchemaGraph(document)
    applications = graph.most_applications()
    if applications > MAX_APPLICATIONS:
        raise SchemaRefused(
            f"{applications if applications <= 10 * MAX_APPLICATIONS else 'Over 10,000'} "
            f"subschemas could apply to one value of an event, over the limit of "
            f"{MAX_APPLICATIONS}: $refs that branch into $refs multiply the work per event. "
            "Share fewer branches, or make the schema shallower."
        )


def json_pointer(path: list[str | int] | tuple[str | int, ...]) -> str:
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


def _violations(errors: Iterator[Any], at: str) -> Iterator[Violation]:
    for error in errors:
        pointer = at + json_pointer(error.instance_path)
        schema_path = json_pointer(error.schema_path)
        last = error.schema_path[-1] if error.schema_path else None
        rule = last if isinstance(last, str) and last in RULES else error.kind.name
        message = error.message
        if len(message) > MAX_MESSAGE_CHARS:
            message = message[: MAX_MESSAGE_CHARS - 3] + "..."
        kind = error.kind
        # Point at the member itself: the one missing, or each one not allowed.
        if isinstance(kind, jsonschema_rs.ValidationErrorKind.Required):
            yield Violation(pointer + json_pointer([kind.property]), rule, message, schema_path)
        elif isinstance(
            kind,
            (
                jsonschema_rs.ValidationErrorKind.AdditionalProperties,
                jsonschema_rs.ValidationErrorKind.UnevaluatedProperties,
            ),
        ):
            for name in kind.unexpected:
                yield Violation(
                    pointer + json_pointer([name]),
                    rule,
                    f"{name!r} is not allowed here ({rule} of the schema).",
                    schema_path,
                )
        else:
            yield Violation(pointer, rule, message, schema_path)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _sorted(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted(item) for item in value]
    return value


def _check_depth(document: Any) -> None:
    """Walk without recursion: a schema 10,000 levels deep must be refused, not crash."""
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > MAX_SCHEMA_DEPTH:
                raise SchemaRefused(
                    f"The schema is nested deeper than {MAX_SCHEMA_DEPTH} levels of objects and "
                    "arrays."
                )
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, depth + 1) for child in children)


@dataclass
class _Node:
    """A subschema: what it applies to the same value, to members and to items."""

    in_place: list[str] = field(default_factory=list)
    properties: list[str] = field(default_factory=list)
    member: list[str] = field(default_factory=list)
    property_names: list[str] = field(default_factory=list)
    prefix_items: list[str] = field(default_factory=list)
    item: list[str] = field(default_factory=list)
    # unevaluated* looks at what the in-place subschemas evaluated: counted twice.
    revisits: bool = False


class SchemaGraph:
    """The schema's subschemas by JSON pointer, with the references resolved, so that the work
    per event can be bounded before anything runs."""

    def __init__(self, document: Any) -> None:
        self.document = document
        self.anchors: dict[str, str] = {}
        self.nodes: dict[str, _Node] = {}
        self._walk()

    def most_applications(self) -> int:
        """The most subschema applications on any one value of an event, at any depth, capped
        just past 10 * MAX_APPLICATIONS. A $ref loop that never moves into the event refuses
        the schema."""
        order = self._in_place_order()
        cap = 10 * MAX_APPLICATIONS + 1
        previous: dict[str, int] = {}
        most = 0
        for depth in range(MAX_EVENT_DEPTH + 1):
            current: dict[str, int] = {}
            for pointer in order:
                node = self.nodes[pointer]
                inside = sum(current[child] for child in node.in_place)
                if node.revisits:
                    inside *= 2
                if depth == 0:
                    total = 1 + inside
                else:
                    below = max(
                        self._largest(node.properties, previous)
                        + self._sum(node.member, previous)
                        + (self._sum(node.property_names, previous) if depth == 1 else 0),
                        self._largest(node.prefix_items, previous) + self._sum(node.item, previous),
                    )
                    total = inside + below
                current[pointer] = min(total, cap)
            most = max(most, current[""])
            previous = current
        return most

    @staticmethod
    def _largest(pointers: list[str], counts: dict[str, int]) -> int:
        return max((counts[pointer] for pointer in pointers), default=0)

    @staticmethod
    def _sum(pointers: list[str], counts: dict[str, int]) -> int:
        return sum(counts[pointer] for pointer in pointers)

    def _in_place_order(self) -> list[str]:
        """The subschemas with each one after those it applies in place; a cycle is refused."""
        order: list[str] = []
        state: dict[str, int] = {}  # 1: on the current path, 2: done
        for start in self.nodes:
            if state.get(start):
                continue
            stack: list[tuple[str, Iterator[str]]] = [(start, iter(self.nodes[start].in_place))]
            state[start] = 1
            while stack:
                pointer, children = stack[-1]
                child = next(children, None)
                if child is None:
                    stack.pop()
                    state[pointer] = 2
                    order.append(pointer)
                elif state.get(child) == 1:
                    raise SchemaRefused(
                        f"The subschema at {child or '/'} applies itself to the same value again "
                        "through $ref, without moving into the event: a loop that never ends."
                    )
                elif not state.get(child):
                    state[child] = 1
                    stack.append((child, iter(self.nodes[child].in_place)))
        return order

    def _walk(self) -> None:
        """Every subschema reachable from the root, from a container such as $defs, or from a
        $ref (which may name a place inside a keyword ingest does not know)."""
        pending: list[tuple[str, Any]] = [("", self.document)]
        references: list[tuple[str, str]] = []  # (where, $ref value)
        while pending:
            while pending:
                pointer, schema = pending.pop()
                if pointer not in self.nodes:
                    self._add_node(pointer, schema, pending, references)
            for pointer, reference in references:
                target, value = self._resolve(pointer, reference)
                self.nodes[pointer].in_place.append(target)
                if target not in self.nodes:
                    pending.append((target, value))
            references = []

    def _add_node(
        self,
        pointer: str,
        schema: Any,
        pending: list[tuple[str, Any]],
        references: list[tuple[str, str]],
    ) -> None:
        node = self.nodes[pointer] = _Node()
        if not isinstance(schema, dict):
            if not isinstance(schema, bool):
                raise SchemaRefused(f"{pointer or '/'} must be a schema (an object or a bool).")
            return

        def add(target: list[str], keyword: str, key: str | int | None = None) -> None:
            value = schema[keyword] if key is None else schema[keyword][key]
            location = pointer + json_pointer([keyword] if key is None else [keyword, key])
            target.append(location)
            pending.append((location, value))

        for keyword, message in REFUSED_KEYWORDS.items():
            if keyword in schema:
                raise SchemaRefused(f"{message} (at {pointer}/{keyword}).")
        if pointer and ("$id" in schema or "$schema" in schema):
            raise SchemaRefused(
                f"$id and $schema are allowed only at the root of the schema (found at "
                f"{pointer}): put shared parts under $defs."
            )
        if schema.get("format") == "regex":
            raise SchemaRefused(
                f"format: regex is not checked per event (at {pointer}/format): it would "
                "compile text from events as regular expressions."
            )
        if isinstance(schema.get("$anchor"), str):
            self.anchors[schema["$anchor"]] = pointer
        if isinstance(schema.get("$ref"), str):
            references.append((pointer, schema["$ref"]))
        for keyword in IN_PLACE_ONE:
            if keyword in schema:
                add(node.in_place, keyword)
        for keyword in IN_PLACE_LIST:
            for index in range(len(_list(schema.get(keyword)))):
                add(node.in_place, keyword, index)
        for keyword in IN_PLACE_MAP:
            for name in _map(schema.get(keyword)):
                add(node.in_place, keyword, name)
        for name in _map(schema.get("properties")):
            add(node.properties, "properties", name)
        for keyword in MEMBER_MAP:
            for name in _map(schema.get(keyword)):
                add(node.member, keyword, name)
        for keyword in MEMBER_ONE:
            if keyword in schema:
                add(node.member, keyword)
        if "propertyNames" in schema:
            add(node.property_names, "propertyNames")
        for index in range(len(_list(schema.get("prefixItems")))):
            add(node.prefix_items, "prefixItems", index)
        for keyword in ITEM_ONE:
            if keyword in schema:
                add(node.item, keyword)
        node.revisits = "unevaluatedProperties" in schema or "unevaluatedItems" in schema
        unapplied: list[str] = []
        for keyword in CONTAINERS:
            for name in _map(schema.get(keyword)):
                add(unapplied, keyword, name)
        for keyword in NOT_APPLIED:
            if keyword in schema:
                add(unapplied, keyword)

    def _resolve(self, where: str, reference: str) -> tuple[str, Any]:
        """The JSON pointer a local $ref names and the schema there, or SchemaRefused."""
        if not reference.startswith("#"):
            raise SchemaRefused(
                f"$ref {reference!r} (at {where or '/'}) leaves the schema: only references "
                "within it are allowed, like #/$defs/address. Copy what it names under $defs."
            )
        fragment = unquote(reference[1:])
        if fragment and not fragment.startswith("/"):
            if fragment not in self.anchors:
                raise SchemaRefused(f"$ref {reference!r} (at {where or '/'}) names no $anchor.")
            fragment = self.anchors[fragment]
        value: Any = self.document
        for part in fragment.split("/")[1:]:
            key = part.replace("~1", "/").replace("~0", "~")
            if isinstance(value, dict) and key in value:
                value = value[key]
            elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
                value = value[int(key)]
            else:
                raise SchemaRefused(f"$ref {reference!r} (at {where or '/'}) names nothing.")
        if not isinstance(value, (dict, bool)):
            raise SchemaRefused(f"$ref {reference!r} (at {where or '/'}) names no schema.")
        return fragment, value


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _map(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
