"""JSON as every process reads and writes it: exactly as the standard library would, only faster."""

from __future__ import annotations

import json

import pytest

from ingest.canonical import compact_json, compact_json_size, loads_json

SAME_AS_THE_STANDARD_LIBRARY = [
    b'{"amount": 12.5, "ids": ["a", "b"], "nested": [{"n": [1, 2, 3]}]}',
    b"123456789012345678901234567890",
    b'{"big": 18446744073709551616, "small": -9223372036854775809}',
    b'[1.5, {"deep": [123456789012345678901234]}]',
    b'[12345678901234567890.5, "18446744073709551616"]',
    b'{"text": "\\u00e9\\ud83d\\ude00", "n": 18446744073709551615}',
    b"[NaN, 123456789012345678901234]",
    b'["a task message whose events travel as one string", "[{\\"n\\":123456789012345678901}]"]',
]


@pytest.mark.parametrize("text", SAME_AS_THE_STANDARD_LIBRARY)
def test_json_reads_as_the_standard_library_reads_it(text: bytes) -> None:
    expected = repr(json.loads(text))  # repr: NaN != NaN, and 1 == 1.0
    assert repr(loads_json(text)) == expected
    assert repr(loads_json(text.decode())) == expected


def test_an_integer_past_64_bits_stays_an_integer_beside_floats() -> None:
    value = loads_json(b'{"amount": 0.5, "id": 123456789012345678901234567890}')
    assert value["id"] == 123456789012345678901234567890
    assert type(value["id"]) is int


@pytest.mark.parametrize("text", [b"[1, 2", b"{'a': 1}", b'{"n": 123456789012345678901234'])
def test_text_that_is_not_json_raises(text: bytes) -> None:
    with pytest.raises(ValueError):
        loads_json(text)


@pytest.mark.parametrize(
    "value",
    [{"é": "ü" * 10, "n": [1, 2.5, None]}, {"big": 2**70}, ["plain"], {}],
)
def test_the_size_is_that_of_the_compact_text_in_utf8(value: object) -> None:
    assert compact_json_size(value) == len(compact_json(value).encode())
