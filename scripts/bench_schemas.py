"""What checking an event against its JSON Schema costs, per validator library.

Run: `.venv/bin/python scripts/bench_schemas.py [--events 5000] [--repeats 5]`. It makes the
benchmark's own events (scripts/loadgen.py), the native ones and the Segment `track` messages,
compiles ORDER_SCHEMA once per library and prints the CPU time per event of each: valid events
(the common case: one yes/no), and events that break four rules (every violation collected, as
a 422 or a warn-mode record needs them). The candidates are jsonschema-rs (Rust, the one
ingest uses: ingest.event_schemas), jsonschema (pure Python, draft 2020-12) and fastjsonschema
(Python code generated from the schema; drafts 4 to 7 only, and its `pattern` runs on
Python's backtracking `re`), when it is installed.

scripts/benchmark.py registers ORDER_SCHEMA, enforced, for every event type it sends (unless
run with --no-schemas).
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from importlib.metadata import version
from typing import Any

from loadgen import EVENT_TYPES, make_event, segment_message

from ingest.event_schemas import compile_schema
from models.schema_registry import add_version

# An order as scripts/loadgen.py makes it: every field required, nothing else allowed.
ORDER = {
    "type": "object",
    "required": ["order_id", "customer", "items", "total", "currency", "session"],
    "additionalProperties": False,
    "properties": {
        "order_id": {"type": "string", "pattern": "^ord-[0-9]{8}$"},
        "customer": {
            "type": "object",
            "required": ["id", "email", "country"],
            "additionalProperties": False,
            "properties": {
                "id": {"type": "integer", "minimum": 0},
                "email": {"type": "string", "format": "email"},
                "country": {"enum": ["DE", "FR", "NL", "PL", "ES", "IT", "SE"]},
            },
        },
        "items": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["sku", "name", "qty", "unit_price"],
                "additionalProperties": False,
                "properties": {
                    "sku": {"type": "string", "pattern": "^SKU-[0-9]{5}$"},
                    "name": {"type": "string", "maxLength": 100},
                    "qty": {"type": "integer", "minimum": 1},
                    "unit_price": {"type": "number", "exclusiveMinimum": 0},
                },
            },
        },
        "total": {"type": "number", "minimum": 0},
        "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
        "session": {
            "type": "object",
            "required": ["id"],
            "properties": {
                "id": {"type": "string"},
                "user_agent": {"type": "string"},
                "referrer": {"type": "string", "format": "uri"},
            },
        },
    },
}
# The payload of a native event is an order; a Segment track message carries it in
# `properties` (the benchmark sends the same event types both ways).
ORDER_SCHEMA: dict[str, Any] = {
    "$defs": {"order": ORDER},
    "if": {"required": ["type"]},
    "then": {
        "required": ["type", "event", "properties"],
        "properties": {"type": {"const": "track"}, "properties": {"$ref": "#/$defs/order"}},
    },
    "else": {"$ref": "#/$defs/order"},
}
# fastjsonschema reads draft 7, where $defs is spelled definitions.
ORDER_SCHEMA_DRAFT_7 = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "definitions": {"order": ORDER},
    **{key: value for key, value in ORDER_SCHEMA.items() if key != "$defs"},
}
ORDER_SCHEMA_DRAFT_7["then"] = copy.deepcopy(ORDER_SCHEMA["then"])
ORDER_SCHEMA_DRAFT_7["then"]["properties"]["properties"] = {"$ref": "#/definitions/order"}
ORDER_SCHEMA_DRAFT_7["else"] = {"$ref": "#/definitions/order"}


def enforce_order_schema(postgres_url: str) -> None:
    """Register ORDER_SCHEMA, enforced, for every event type the benchmark sends."""
    for event_type in EVENT_TYPES:
        add_version(postgres_url, event_type, ORDER_SCHEMA, "scripts/benchmark.py", "enforce")


def broken(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload with four rules broken: a type, a required field, an enum, a pattern."""
    payload = copy.deepcopy(payload)
    payload["total"] = str(payload["total"])
    del payload["currency"]
    payload["customer"]["country"] = "XX"
    payload["items"][0]["sku"] = "sku-1"
    return payload


def payloads(count: int) -> tuple[list[Any], list[Any]]:
    """Valid payloads, half native and half Segment messages, and the same ones broken."""
    rng = random.Random("bench-schemas")
    events = [make_event("bench", index, rng) for index in range(count)]
    valid = [
        segment_message(event) if index % 2 else event["payload"]
        for index, event in enumerate(events)
    ]
    invalid = [
        {**message, "properties": broken(message["properties"])}
        if "type" in message
        else broken(message)
        for message in valid
    ]
    return valid, invalid


def per_event_us(check: Callable[[Any], Any], items: Sequence[Any], repeats: int) -> list[float]:
    """CPU microseconds per item, one figure per repeat."""
    figures = []
    for _ in range(repeats):
        started = time.process_time()
        for item in items:
            check(item)
        figures.append((time.process_time() - started) / len(items) * 1e6)
    return figures


def candidates() -> dict[str, tuple[Callable[[Any], bool], Callable[[Any], int]]]:
    """Each library's (is it valid?, how many violations?) for ORDER_SCHEMA, compiled once."""
    import jsonschema

    compiled = compile_schema(ORDER_SCHEMA)
    found = {
        f"jsonschema-rs {version('jsonschema-rs')} (Rust; ingest's)": (
            compiled.validator.is_valid,
            lambda payload: len(compiled.violations(payload)),
        )
    }
    python = jsonschema.Draft202012Validator(
        ORDER_SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    found[f"jsonschema {version('jsonschema')} (pure Python)"] = (
        python.is_valid,
        lambda payload: len(list(python.iter_errors(payload))),
    )
    try:
        import fastjsonschema
    except ImportError:
        return found
    generated = fastjsonschema.compile(ORDER_SCHEMA_DRAFT_7)

    def fast_valid(payload: Any) -> bool:
        try:
            generated(payload)
        except fastjsonschema.JsonSchemaValueException:
            return False
        return True

    # It stops at the first violation: it cannot report all of them.
    found[f"fastjsonschema {version('fastjsonschema')} (generated Python, draft 7)"] = (
        fast_valid,
        lambda payload: 0 if fast_valid(payload) else 1,
    )
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5_000)
    parser.add_argument("--repeats", type=int, default=5)
    options = parser.parse_args(argv)
    valid, invalid = payloads(options.events)
    print(
        f"{options.events} payloads of scripts/loadgen.py (event types {', '.join(EVENT_TYPES)}),"
        f" half native, half Segment track messages; CPU us per event, median of "
        f"{options.repeats} (min-max)\n"
    )
    print("| library | valid event | event breaking 4 rules, all violations |")
    print("|---|---:|---:|")
    for name, (is_valid, count_violations) in candidates().items():
        assert all(is_valid(payload) for payload in valid), name
        assert not any(is_valid(payload) for payload in invalid), name
        cells = []
        for check, items in ((is_valid, valid), (count_violations, invalid)):
            figures = per_event_us(check, items, options.repeats)
            cells.append(
                f"{statistics.median(figures):.1f} ({min(figures):.1f}-{max(figures):.1f})"
            )
        print(f"| {name} | {cells[0]} | {cells[1]} |")
    print(f"\nPython {sys.version.split()[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
