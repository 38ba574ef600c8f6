"""`ingest schemas`: add, list, show, mode, retire and check against the run's PostgreSQL, and
check offline against a schema file with no database at all."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from ingest.config import Settings
from testlib.commands import invoke

ORDER = {
    "type": "object",
    "required": ["amount", "currency"],
    "properties": {"amount": {"type": "number", "minimum": 0}, "currency": {"enum": ["EUR"]}},
}
SAMPLES = [
    {"event_id": "e-1", "event_type": "order.paid", "payload": {"amount": 1, "currency": "EUR"}},
    {"amount": -1, "currency": "EUR"},
    {"event_id": "e-3", "payload": {"amount": "1"}},
]


def written(path: Path, document: object) -> str:
    path.write_text(json.dumps(document))
    return str(path)


def samples(path: Path, lines: list[object], extra: str = "") -> str:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines) + extra)
    return str(path)


def test_add_list_show_mode_retire(settings: Settings, tmp_path: Path) -> None:
    order = f"order.paid.{uuid.uuid4().hex[:8]}"
    schema = written(tmp_path / "order.json", ORDER)

    added = invoke(settings, "schemas", "add", order, schema, "--by", "alice")
    assert added.exit_code == 0, added.output
    assert added.output == f"{order} version 1 added (mode warn).\n"
    again = invoke(settings, "schemas", "add", order, schema)
    assert "version 1 is already the newest active version" in again.output
    looping = invoke(settings, "schemas", "add", order, written(tmp_path / "l.json", {"$ref": "#"}))
    assert looping.exit_code == 1
    assert "Schema refused" in looping.output and "loop" in looping.output

    listed = invoke(settings, "schemas", "list")
    assert f"{order}  mode warn, 1 version(s), newest active 1" in listed.output
    shown = json.loads(invoke(settings, "schemas", "show", order).output)
    assert shown["versions"][0]["created_by"] == "alice"
    assert json.loads(invoke(settings, "schemas", "show", order, "1").output) == ORDER
    assert invoke(settings, "schemas", "show", order, "9").exit_code == 1

    assert invoke(settings, "schemas", "mode", order, "enforce").exit_code == 0
    assert json.loads(invoke(settings, "schemas", "show", order).output)["mode"] == "enforce"
    unknown = invoke(settings, "schemas", "mode", f"{order}.nothing", "warn")
    assert unknown.exit_code == 1 and "add one first" in unknown.output

    retired = invoke(settings, "schemas", "retire", order, "1")
    assert retired.exit_code == 0 and "retired" in retired.output
    assert "newest active none (all retired)" in invoke(settings, "schemas", "list").output
    assert invoke(settings, "schemas", "retire", order, "2").exit_code == 1


def test_check_names_each_failing_line_and_exits_1(settings: Settings, tmp_path: Path) -> None:
    order = f"order.paid.{uuid.uuid4().hex[:8]}"
    assert (
        invoke(settings, "schemas", "add", order, written(tmp_path / "o.json", ORDER)).exit_code
        == 0
    )
    file = samples(tmp_path / "events.jsonl", SAMPLES, extra="not json\n")

    checked = invoke(settings, "schemas", "check", order, file)
    assert checked.exit_code == 1
    assert checked.output.splitlines() == [
        "line 2: /amount: minimum: -1 is less than the minimum of 0",
        'line 3: /payload/currency: required: "currency" is a required property',
        'line 3: /payload/amount: type: "1" is not of type "number"',
        "line 4: not JSON: invalid literal, expected 'null': line 1 column 1 (char 0)",
        f"1 of 4 event(s) pass version 1 of {order} (active).",
    ]
    good = samples(tmp_path / "good.jsonl", SAMPLES[:1])
    assert invoke(settings, "schemas", "check", order, good).exit_code == 0


def test_check_against_a_schema_file_needs_no_database(settings: Settings, tmp_path: Path) -> None:
    nowhere = settings.replace(postgres_url="postgresql://nobody@127.0.0.1:1/none")
    schema = written(tmp_path / "order.json", ORDER)
    file = samples(tmp_path / "events.jsonl", SAMPLES)
    checked = invoke(nowhere, "schemas", "check", "order.paid", file, "--schema", schema)
    assert checked.exit_code == 1
    assert checked.output.splitlines()[-1] == f"1 of 3 event(s) pass {schema}."
    hostile = written(tmp_path / "hostile.json", {"pattern": "(?<=a)b"})
    refused = invoke(nowhere, "schemas", "check", "order.paid", file, "--schema", hostile)
    assert refused.exit_code == 1 and "no lookaround" in refused.output
