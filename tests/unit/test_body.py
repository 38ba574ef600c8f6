"""Reading a request body (ingest_api/body.py): the content type, gzip within the size limit,
and JSON as RFC 8259 has it, each refusal naming what is wrong."""

from __future__ import annotations

import gzip
from typing import Any

import pytest
from flask import Flask

from ingest_api.body import json_body, parse_json
from ingest_api.errors import Problem

LIMIT = 1_000


def read(
    data: bytes,
    content_type: str | None = "application/json",
    encoding: str | None = None,
    limit: int = LIMIT,
) -> Any:
    """json_body() of a POST with this body and these headers."""
    headers = {"Content-Encoding": encoding} if encoding else {}
    request = Flask(__name__).test_request_context(
        "/", method="POST", data=data, content_type=content_type, headers=headers
    )
    with request:
        return json_body(limit)


def refusal(call: Any, *args: Any, **kwargs: Any) -> Problem:
    with pytest.raises(Problem) as refused:
        call(*args, **kwargs)
    return refused.value


def test_a_json_body_is_read_plain_or_gzipped() -> None:
    assert read(b'{"a": [1, "x"]}') == {"a": [1, "x"]}
    assert read(b'{"a": 1}', "application/json; charset=UTF-8") == {"a": 1}
    assert read(gzip.compress(b'{"a": 1}'), encoding="gzip") == {"a": 1}
    assert read(gzip.compress(b'{"a": 1}'), encoding=" GZIP ") == {"a": 1}
    assert read(b'{"a": 1}', encoding="identity") == {"a": 1}


@pytest.mark.parametrize(
    ("content_type", "detail"),
    [
        ("text/plain", "Content-Type must be application/json, not 'text/plain'."),
        (None, "Content-Type must be application/json, not 'missing'."),
        (
            "application/json; charset=latin-1",
            "The JSON body must be UTF-8, not charset='latin-1'.",
        ),
    ],
)
def test_another_content_type_or_charset_is_a_415(content_type: str | None, detail: str) -> None:
    problem = refusal(read, b"{}", content_type)
    assert (problem.status, problem.detail) == (415, detail)


def test_another_content_encoding_is_a_415() -> None:
    problem = refusal(read, b"{}", encoding="br")
    assert (problem.status, problem.detail) == (
        415,
        "Content-Encoding 'br' is not supported; use gzip or none.",
    )


def test_gzip_inflates_up_to_the_limit_and_no_further() -> None:
    at_limit = b'"' + b"x" * (LIMIT - 2) + b'"'
    assert read(gzip.compress(at_limit), encoding="gzip") == "x" * (LIMIT - 2)

    problem = refusal(read, gzip.compress(at_limit + b" "), encoding="gzip")
    assert problem.status == 413
    assert problem.detail == f"The body is over the limit of {LIMIT} bytes after decompression."
    assert problem.extra == {"limit": "INGEST_MAX_BODY_BYTES", "limit_value": LIMIT}


def test_a_gzip_bomb_is_a_413() -> None:
    bomb = gzip.compress(b"[" + b"0," * 5_000_000 + b"0]", compresslevel=9)
    assert len(bomb) < 20_000  # 10 MB of JSON
    assert refusal(read, bomb, encoding="gzip").status == 413


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b'{"a": 1}', "The body is not valid gzip: Error -3 while decompressing data: "),
        (gzip.compress(b'{"a": 1}')[:-4], "The body is not valid gzip: the stream is truncated."),
        (
            gzip.compress(b'{"a": 1}') + gzip.compress(b'{"b": 2}'),
            "The body is not valid gzip: 28 bytes follow the end of the stream; send one gzip "
            "member.",
        ),
    ],
    ids=["not gzip", "truncated", "two members"],
)
def test_a_broken_gzip_stream_is_a_400(body: bytes, detail: str) -> None:
    problem = refusal(read, body, encoding="gzip")
    assert problem.status == 400
    assert problem.detail.startswith(detail)


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        (b"NaN", "NaN is not a JSON number"),
        (b"[-Infinity]", "-Infinity is not a JSON number"),
        (b"[1e400]", "the number 1e400 is too large"),
        (b"[" * 100_000 + b"]" * 100_000, "it is nested too deeply"),
        (b'{"a": "\\ud800"}', "a \\u escape is a lone UTF-16 surrogate (\\ud800 to \\udfff)"),
        (b'{"a": 1} x', "Extra data at line 1 column 10"),
        (b"{'a': 1}", "Expecting property name enclosed in double quotes at line 1 column 2"),
        (b"1" * 5_000, "a number has more than 4300 digits"),
    ],
    ids=["NaN", "infinity", "overflow", "deep", "lone surrogate", "trailing", "quotes", "digits"],
)
def test_what_json_does_not_allow_is_a_400_that_says_why(raw: bytes, detail: str) -> None:
    problem = refusal(parse_json, raw)
    assert problem.status == 400
    assert problem.detail.startswith(f"The body is not valid JSON: {detail}"), problem.detail


def test_bytes_that_are_not_utf8_are_a_400_naming_the_first() -> None:
    problem = refusal(parse_json, b'{"a": "caf\xe9"}')
    assert (problem.status, problem.detail) == (400, "The body is not valid UTF-8 (byte 10).")


def test_what_json_allows_is_read_exactly() -> None:
    # Past 64 bits an integer stays exact, not a float.
    assert parse_json(str(2**70).encode()) == 2**70
    assert parse_json(b'[-1.5e3, 0, -0, true, null, ""]') == [-1500.0, 0, 0, True, None, ""]
    # A surrogate pair is one character.
    assert parse_json(b'"\\ud83d\\ude00"') == "\N{GRINNING FACE}"
    assert parse_json('"caf\u00e9"'.encode()) == "caf\u00e9"
