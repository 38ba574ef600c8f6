"""Data contracts without a server: the bounds a schema must keep before it is compiled, what a
violation says (JSON pointer and rule), each mode's verdict, and inferred drafts that every
payload they came from passes."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from ingest.event_schemas import (
    MAX_APPLICATIONS,
    MAX_SCHEMA_BYTES,
    MAX_VIOLATIONS,
    SchemaRefused,
    compile_schema,
)
from ingest.schema_infer import infer_schema
from models.schema_registry import Contract, Registry
from testlib.schemas import GOOD, ORDER


def branching(levels: int) -> dict[str, Any]:
    """A small schema whose every level applies the next one twice: 2**levels checks."""
    defs: dict[str, Any] = {
        f"l{n}": {"anyOf": [{"$ref": f"#/$defs/l{n + 1}"}, {"$ref": f"#/$defs/l{n + 1}"}]}
        for n in range(levels)
    }
    defs[f"l{levels}"] = {"type": "string"}
    return {"$defs": defs, "$ref": "#/$defs/l0"}


def nested(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = {"not": {"not": schema}}
    return schema


HOSTILE = {
    "huge": ({"enum": list(range(60_000))}, f"over the limit of {MAX_SCHEMA_BYTES}"),
    "deeply nested": (nested(5_000), "nested deeper than 64 levels"),
    "a $ref to itself": ({"$ref": "#"}, "a loop that never ends"),
    "a $ref cycle": (
        {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"},
        "a loop that never ends",
    ),
    "$refs that branch into $refs": (branching(30), f"over the limit of {MAX_APPLICATIONS}"),
    "recursion through members twice per level": (
        {
            "$defs": {
                "n": {
                    "properties": {"a": {"$ref": "#/$defs/n"}},
                    "patternProperties": {"^a$": {"$ref": "#/$defs/n"}},
                }
            },
            "$ref": "#/$defs/n",
        },
        f"over the limit of {MAX_APPLICATIONS}",
    ),
    "a remote $ref": ({"$ref": "https://example.com/order.json"}, "leaves the schema"),
    "a file $ref": ({"$ref": "file:///etc/passwd"}, "leaves the schema"),
    "a $ref to nothing": ({"$ref": "#/$defs/missing"}, "names nothing"),
    "$dynamicRef": ({"$dynamicRef": "#node"}, "$dynamicRef is not supported"),
    "an embedded $id": ({"properties": {"a": {"$id": "https://x/y"}}}, "only at the root"),
    "another draft": (
        {"$schema": "http://json-schema.org/draft-07/schema#"},
        "ingest checks draft 2020-12",
    ),
    "lookahead": ({"pattern": "^(?=a)a"}, "linear time: no lookaround or backreferences"),
    "a backreference": ({"pattern": "^(a)\\1$"}, "linear time: no lookaround or backreferences"),
    "format regex": ({"format": "regex"}, "compile text from events"),
    "not a schema": ({"type": "strin"}, "Not a valid draft 2020-12 schema at /type"),
    "a list": ([{"type": "object"}], "A schema is a JSON object"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_or_broken_schema_is_refused_with_why(name: str) -> None:
    schema, why = HOSTILE[name]
    started = time.monotonic()
    with pytest.raises(SchemaRefused, match=re.escape(why)):
        compile_schema(schema)
    assert time.monotonic() - started < 2


def test_a_backtracking_regex_runs_in_linear_time() -> None:
    """^(a+)+$ takes Python's re exponential time on 'aaa...!'; the Rust engine does not
    backtrack."""
    compiled = compile_schema({"properties": {"s": {"type": "string", "pattern": "^(a+)+$"}}})
    started = time.monotonic()
    violations = compiled.violations({"s": "a" * 200_000 + "!"})
    assert time.monotonic() - started < 0.5
    assert [(v.pointer, v.rule) for v in violations] == [("/payload/s", "pattern")]


def test_recursive_schemas_that_descend_into_the_event_are_fine() -> None:
    tree = {
        "$defs": {
            "node": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "children": {"$ref": "#/$defs/list"}},
            },
            "list": {"type": "array", "items": {"$ref": "#/$defs/node"}},
        },
        "$ref": "#/$defs/node",
    }
    compiled = compile_schema(tree)
    deep: dict[str, Any] = {"name": "leaf"}
    for _ in range(14):
        deep = {"name": "n", "children": [deep, {"name": 7}]}
    assert len(compiled.violations(deep)) == 14


CASES = [
    ("type", {"amount": "12"}, [("/payload/amount", "type")]),
    ("required", {"currency": None}, [("/payload/currency", "required")]),
    ("enum", {"currency": "GBP"}, [("/payload/currency", "enum")]),
    ("pattern", {"coupon": "save10"}, [("/payload/coupon", "pattern")]),
    ("minimum", {"amount": -1}, [("/payload/amount", "minimum")]),
    ("maximum", {"amount": 1e6}, [("/payload/amount", "maximum")]),
    ("additionalProperties", {"extra": 1, "a/b~c": 2}, [
        ("/payload/extra", "additionalProperties"),
        ("/payload/a~1b~0c", "additionalProperties"),
    ]),
    ("nested arrays", {"lines": [{"sku": "A", "qty": 1, "tags": ["ok", "much-too-long"]},
                                 {"sku": "B", "qty": 0}]}, [
        ("/payload/lines/0/tags/1", "maxLength"),
        ("/payload/lines/1/qty", "minimum"),
    ]),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "change", "expected"), CASES, ids=[c[0] for c in CASES])
def test_each_violation_names_the_json_pointer_and_the_rule(
    kind: str, change: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    payload = {**GOOD, **change}
    payload = {key: value for key, value in payload.items() if value is not None}
    found = compile_schema(ORDER).violations(payload)
    assert sorted((v.pointer, v.rule) for v in found) == sorted(expected)
    assert all(v.message and v.schema_path.startswith("/") for v in found)


def test_violations_are_capped_and_long_values_cut() -> None:
    compiled = compile_schema({"additionalProperties": {"type": "string", "maxLength": 1}})
    found = compiled.violations({f"k{n}": "x" * 10_000 for n in range(100)})
    assert len(found) == MAX_VIOLATIONS
    assert all(len(v.message) <= 300 for v in found)


def registry(mode: str, default_mode: str = "off") -> Registry:
    versions = {1: compile_schema({"required": ["amount"]}), 2: compile_schema(ORDER), 3: None}
    return Registry(1, default_mode, {"order.paid": Contract(mode, versions)})


def test_each_mode_and_each_pin_gives_its_verdict() -> None:
    bad = {"amount": 1}
    assert registry("off").check("order.paid", bad) is None
    warn = registry("warn").check("order.paid", bad)
    assert warn is not None and not warn.refuses
    assert warn.recorded() == {
        "schema_version": 2,
        "schema_violations": [
            {
                "pointer": "/payload/currency",
                "rule": "required",
                "message": '"currency" is a required property',
                "schema_path": "/required",
            }
        ],
    }
    enforce = registry("enforce")
    refused = enforce.check("order.paid", bad)
    assert refused is not None and refused.refuses
    assert refused.errors() == {
        "/payload/currency": ['required: "currency" is a required property']
    }
    pinned = enforce.check("order.paid", bad, pinned=1)
    assert pinned is not None and pinned.recorded() == {"schema_version": 1}
    for version, why in ((3, "is retired"), (9, "does not exist")):
        wrong = enforce.check("order.paid", GOOD, pinned=version)
        assert wrong is not None and wrong.refuses and wrong.version is None
        assert [(v.pointer, v.rule) for v in wrong.violations] == [
            ("/schema_version", "schema_version")
        ]
        assert why in wrong.violations[0].message


@pytest.mark.parametrize("default_mode", ["off", "warn", "enforce"])
def test_a_type_without_a_schema_gets_the_default_mode(default_mode: str) -> None:
    verdict = registry("enforce", default_mode).check("page.view", {})
    if default_mode == "off":
        assert verdict is None
        return
    assert verdict is not None and verdict.mode == default_mode
    assert [(v.pointer, v.rule) for v in verdict.violations] == [("/event_type", "registered")]


def test_an_inferred_draft_takes_every_payload_it_came_from() -> None:
    payloads = [
        {"amount": 12, "currency": "EUR", "lines": [{"sku": "A", "qty": 1}], "note": None},
        {"amount": 7.5, "currency": "USD", "lines": [], "coupon": "SAVE-10"},
        {"amount": 3, "currency": "EUR", "lines": [{"sku": "B", "qty": 2, "tags": ["x"]}]},
        {"amount": 1, "currency": "EUR", "lines": [{"sku": "C", "qty": 1}], "note": "gift"},
    ]
    draft = infer_schema(payloads, title="order.paid")
    compiled = compile_schema(draft)
    assert [compiled.violations(payload) for payload in payloads] == [[]] * len(payloads)
    assert draft["title"] == "order.paid"
    assert draft["required"] == ["amount", "currency", "lines"]
    assert draft["properties"]["amount"]["type"] == "number"
    assert draft["properties"]["note"]["type"] == ["null", "string"]
    assert draft["properties"]["lines"]["items"]["required"] == ["sku", "qty"]
    # It is a contract, not a copy: a payload without a required field breaks it.
    assert [v.rule for v in compiled.violations({"currency": "EUR", "lines": []})] == ["required"]
