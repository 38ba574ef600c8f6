"""Reading a request body: content type, gzip within the size limit, strict JSON."""

from __future__ import annotations

import json
import math
import re
import sys
import zlib
from typing import Any

import orjson
from flask import request
from werkzeug.exceptions import ClientDisconnected

from ingest.canonical import may_hold_long_integers
from ingest_api.errors import Problem

# Only a body with such an escape can hold a lone surrogate, so only it is checked for one.
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def json_body(max_body_bytes: int) -> Any:
    """The request's JSON document, or a 400/413/415 problem that says what is wrong."""
    mimetype = request.mimetype
    if mimetype != "application/json":
        raise Problem(415, f"Content-Type must be application/json, not {mimetype or 'missing'!r}.")
    charset = request.mimetype_params.get("charset", "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise Problem(415, f"The JSON body must be UTF-8, not charset={charset!r}.")
    # Flask's MAX_CONTENT_LENGTH has already turned away a body over the limit on the wire.
    try:
        raw = request.get_data(cache=False)
    except ClientDisconnected as exc:
        # werkzeug raises this from within the failed read: that read's error is the context.
        if not isinstance(exc.__context__, (BlockingIOError, TimeoutError)):
            raise
        # The body's deadline (ingest_api.rsgi) ran out before the whole body arrived.
        raise Problem(
            408,
            f"The body stopped arriving before its Content-Length of {request.content_length} "
            "bytes; send it again, whole.",
        ) from None
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding == "gzip":
        raw = _gunzip_limited(raw, max_body_bytes)
    elif encoding not in ("identity", ""):
        raise Problem(415, f"Content-Encoding {encoding!r} is not supported; use gzip or none.")
    return parse_json(raw)


def _gunzip_limited(data: bytes, limit: int) -> bytes:
    """Inflate at most `limit` bytes, so a gzip bomb costs no more than a plain large body."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        inflated = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise Problem(400, f"The body is not valid gzip: {exc}.") from None
    if len(inflated) > limit:
        raise Problem(
            413,
            f"The body is over the limit of {limit} bytes after decompression.",
            limit="INGEST_MAX_BODY_BYTES",
            limit_value=limit,
        )
    if not inflater.eof:
        raise Problem(400, "The body is not valid gzip: the stream is truncated.")
    # Bytes after the stream (another gzip member, or garbage) would otherwise vanish unread.
    if inflater.unused_data:
        raise Problem(
            400,
            f"The body is not valid gzip: {len(inflater.unused_data)} bytes follow the end of "
            "the stream; send one gzip member.",
        )
    return inflated


def parse_json(raw: bytes) -> Any:
    # orjson accepts a subset of what the checks below accept, and reads it alike, but for
    # integers past 64 bits, which it turns into floats: a body with such digits skips it.
    if not may_hold_long_integers(raw):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # the checks below say what is wrong
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Problem(400, f"The body is not valid UTF-8 (byte {exc.start}).") from None
    try:
        document = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise Problem(
            400, f"The body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}."
        ) from None
    except RecursionError:
        raise Problem(400, "The body is not valid JSON: it is nested too deeply.") from None
    except NotJson as exc:
        raise Problem(400, f"The body is not valid JSON: {exc}.") from None
    except ValueError:  # the only other ValueError: an integer too long to convert
        raise Problem(
            400,
            "The body is not valid JSON: a number has more than "
            f"{sys.get_int_max_str_digits()} digits.",
        ) from None
    if SURROGATE_ESCAPE.search(text) and _holds_lone_surrogate(document):
        raise Problem(
            400,
            "The body is not valid JSON: a \\u escape is a lone UTF-16 surrogate "
            "(\\ud800 to \\udfff), which is no Unicode character.",
        )
    return document


class NotJson(ValueError):
    """A token that Python's json module accepts but JSON (RFC 8259) does not."""


def _reject_constant(name: str) -> None:
    raise NotJson(f"{name} is not a JSON number")


def _finite_float(token: str) -> float:
    value = float(token)
    # 1e400 parses as infinity, which no database column and no JSON encoder can hold.
    if math.isinf(value):
        raise NotJson(f"the number {token[:32]} is too large")
    return value


def _holds_lone_surrogate(document: Any) -> bool:
    """A pair of surrogate escapes decodes to one character; a lone one stays unencodable."""
    try:
        json.dumps(document, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
