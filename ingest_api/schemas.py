"""Marshmallow schemas for what clients send and what the API answers."""

from __future__ import annotations

import calendar
import re
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar

import orjson
from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    pre_load,
    validate,
    validates_schema,
)

EVENT_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:(?P<second>\d{2})(\.\d{1,9})?"
    r"(?P<offset>[Zz]|[+-]\d{2}:\d{2})?$"
)
# What both stores hold of a payload (MySQL 8's limits too, beside MariaDB's):
# MariaDB's JSON check (json_valid) refuses more than 31 levels of objects and arrays.
MAX_PAYLOAD_DEPTH = 31
# MySQL 8 holds an integer past 64 bits as a double, and refuses one past a double's range.
MAX_PAYLOAD_INTEGER = int(sys.float_info.max)
# MySQL 8's binary JSON keeps a key's length in 16 bits.
MAX_PAYLOAD_KEY_BYTES = 65_535
# The payload as PostgreSQL writes it out (every number in full: 5e-324 takes 326 characters)
# goes to MySQL in one statement, escaped to at most twice its size: a quarter of MariaDB's
# default max_allowed_packet (16 MiB) leaves room for that and the other columns.
MAX_STORED_PAYLOAD_BYTES = 4 * 1024 * 1024
# A key this long or shorter has at most MAX_PAYLOAD_KEY_BYTES bytes in UTF-8, uncounted.
SHORT_KEY_CHARS = MAX_PAYLOAD_KEY_BYTES // 4
# A payload this short in compact JSON holds no key over MAX_PAYLOAD_KEY_BYTES, and stays under
# MAX_STORED_PAYLOAD_BYTES as PostgreSQL writes it out: a space per : and , at most doubles
# it, and each double (3 or more characters) grows to at most 330 digits, about 110 times.
PLAIN_PAYLOAD_BYTES = min(MAX_PAYLOAD_KEY_BYTES, MAX_STORED_PAYLOAD_BYTES // 128)
# Unknown fields named one by one in `errors`; past these, the rest are only counted.
MAX_NAMED_UNKNOWN_FIELDS = 10
# A schema version a client pins: the registry numbers them from 1 in an integer column.
MAX_SCHEMA_VERSION = 2**31 - 1


def _zulu(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


# The occurred_at both stores hold, in UTC: MySQL's DATETIME starts at the year 1000 and ends
# with 9999 (PostgreSQL holds more), and the bounds are what the 422 error names.
OCCURRED_AT_MIN = datetime(1000, 1, 1, tzinfo=UTC)
OCCURRED_AT_MAX = datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
# For the OpenAPI description, which cannot say "in UTC": what every time in range starts with.
# The local date is at most a day off UTC's, so 0999-12-31 with an offset may still be in range.
OCCURRED_AT_PATTERN = r"^(?:[1-9][0-9]{3}-|0999-12-31T)"
OCCURRED_AT_ERRORS = {
    "invalid": "Not a valid RFC 3339 time, like 2026-01-31T12:00:00Z.",
    "naive": "The time has no offset: add Z or +hh:mm.",
    "range": f"The time is out of range: in UTC it must be from {_zulu(OCCURRED_AT_MIN)} to "
    f"{_zulu(OCCURRED_AT_MAX)}, the times both PostgreSQL and MySQL hold.",
    "leap_second": "A leap second (:60) exists only at 23:59:60 UTC on the last day of a month.",
}


class OccurredAtError(ValueError):
    """Why a value is not an occurred_at; `key` picks its message from OCCURRED_AT_ERRORS."""

    def __init__(self, key: str) -> None:
        super().__init__(OCCURRED_AT_ERRORS[key])
        self.key = key


def parse_occurred_at(value: Any) -> datetime:
    """An RFC 3339 time with an offset, as an aware UTC datetime within the stores' range.

    A leap second (23:59:60 UTC at a month's end) is taken as the next second, as PostgreSQL
    takes it: Python and both databases have no 60th second to hold it.
    """
    match = RFC3339.match(value) if isinstance(value, str) else None
    if match is None:
        raise OccurredAtError("invalid")
    if match["offset"] is None:
        raise OccurredAtError("naive")
    text = value.upper()
    leap = match["second"] == "60"
    if leap:  # parsed as :59, then moved one second on
        text = text[: match.start("second")] + "59" + text[match.end("second") :]
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise OccurredAtError("invalid") from None
    try:
        moment = moment.astimezone(UTC)
    except OverflowError:
        raise OccurredAtError("range") from None
    if leap:
        last_day = calendar.monthrange(moment.year, moment.month)[1]
        if (moment.day, moment.hour, moment.minute) != (last_day, 23, 59):
            raise OccurredAtError("leap_second")
        try:
            moment += timedelta(seconds=1)
        except OverflowError:
            raise OccurredAtError("range") from None
    if not OCCURRED_AT_MIN <= moment <= OCCURRED_AT_MAX:
        raise OccurredAtError("range")
    return moment


class Rfc3339DateTime(fields.Field):
    """An occurred_at (see parse_occurred_at), loaded as an aware UTC datetime."""

    default_error_messages: ClassVar[dict[str, str]] = OCCURRED_AT_ERRORS

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        try:
            return parse_occurred_at(value)
        except OccurredAtError as exc:
            raise self.make_error(exc.key) from None


class WholeNumber(fields.Integer):
    """A JSON integer, never `true` or `false` (a bool is an int in Python)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, bool):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


class FullMatch(validate.Regexp):
    """Regexp over the whole value: with re.match, `$` also matches before a final newline."""

    def __call__(self, value: str) -> str:
        if self.regex.fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value


EVENT_ID = FullMatch(
    EVENT_ID_PATTERN, error="Use only letters, digits and . _ : - (1 to 128 of them)."
)


def is_event_id(value: str) -> bool:
    return EVENT_ID.regex.fullmatch(value) is not None


def reject_nul(value: str) -> None:
    if "\x00" in value:
        raise ValidationError("NUL characters are not allowed.")


DEPTH_ERROR = (
    f"Nested deeper than {MAX_PAYLOAD_DEPTH} levels of objects and arrays (the payload is the "
    "first), the most MySQL holds."
)


def check_payload(payload: dict[str, Any]) -> None:
    """What both PostgreSQL's jsonb and MySQL's JSON hold: no NUL character (jsonb), bounded
    depth, integers, keys and size (MySQL). A short, shallow payload passes on its compact
    JSON alone; any other is walked value by value."""
    try:
        text = orjson.dumps(payload)
    except TypeError:  # an integer past 64 bits, which orjson refuses: measured one by one
        walk_payload(payload, compact=None)
    else:
        if not is_plainly_within_limits(text):
            walk_payload(payload, compact=len(text))


def walk_payload(payload: dict[str, Any], compact: int | None) -> None:
    """check_payload's rules, value by value, without recursion. Measures the payload as
    PostgreSQL will write it out on the way: orjson's compact text (`compact` bytes, None if
    orjson refused it; strings escaped alike), plus the space PostgreSQL puts after each : and
    ,, plus every double written out in full."""
    stored_bytes = compact or 0
    stack: list[tuple[Any, int]] = [(payload, 1)]
    while stack:
        value, depth = stack.pop()
        kind = type(value)
        if kind is dict:
            if depth > MAX_PAYLOAD_DEPTH:
                raise ValidationError(DEPTH_ERROR)
            for key, item in value.items():
                if "\x00" in key:
                    raise ValidationError("NUL characters are not allowed in keys.")
                if len(key) > SHORT_KEY_CHARS and len(key.encode()) > MAX_PAYLOAD_KEY_BYTES:
                    raise ValidationError(
                        f"A key is {len(key.encode())} bytes long, over the limit of "
                        f"{MAX_PAYLOAD_KEY_BYTES} bytes (in UTF-8) that MySQL holds."
                    )
                stack.append((item, depth + 1))
            # {"key": value, ...}: orjson writes the : and , alone, PostgreSQL ": " and ", "
            stored_bytes += 2 * len(value) - 1 if value else 0
            if compact is None:
                stored_bytes += sum(len(orjson.dumps(key)) + 2 for key in value) + 1 if value else 2
        elif kind is list:
            if depth > MAX_PAYLOAD_DEPTH:
                raise ValidationError(DEPTH_ERROR)
            stack.extend((item, depth + 1) for item in value)
            stored_bytes += len(value) - 1 if value else 0
            if compact is None:
                stored_bytes += len(value) + 1 if value else 2
        elif kind is str:
            if "\x00" in value:
                raise ValidationError("NUL characters are not allowed in strings.")
            if compact is None:
                stored_bytes += len(orjson.dumps(value))
        elif kind is int:
            if not -MAX_PAYLOAD_INTEGER <= value <= MAX_PAYLOAD_INTEGER:
                raise ValidationError(
                    f"An integer of {len(str(abs(value)))} digits is out of range: integers must "
                    f"be within a double's range (at most {sys.float_info.max:.17g} in size), "
                    "which MySQL holds."
                )
            if compact is None:
                stored_bytes += len(str(value))
        elif kind is float:
            written = len(orjson.dumps(value))
            stored_bytes += stored_number_bytes(value) - (0 if compact is None else written)
        elif compact is None:  # true, false, null
            stored_bytes += 5 if value is False else 4
    if stored_bytes > MAX_STORED_PAYLOAD_BYTES:
        raise ValidationError(
            f"The payload is {stored_bytes} bytes as PostgreSQL stores it (every number written "
            f"out in full, a space after each : and ,), over the limit of "
            f"{MAX_STORED_PAYLOAD_BYTES} bytes that goes to MySQL in one statement."
        )


def is_plainly_within_limits(text: bytes) -> bool:
    """Whether a payload's compact JSON, as orjson wrote it (so every integer within 64 bits),
    is short, has no more `{` and `[` than the depth limit and no escaped NUL: then no rule of
    check_payload can fail and the walk is skipped. Brackets or `\\u0000` inside strings only
    send a payload on to the walk."""
    return (
        len(text) <= PLAIN_PAYLOAD_BYTES
        and text.count(b"{") + text.count(b"[") <= MAX_PAYLOAD_DEPTH
        and b"\\u0000" not in text
    )


def stored_number_bytes(value: float) -> int:
    """Characters of a double as PostgreSQL's jsonb writes it: in full, never with an exponent
    (1e300 is 301 digits), and -0.0 as 0.0."""
    text = orjson.dumps(value)
    if b"e" in text:
        text = format(Decimal(text.decode()), "f").encode()
    return len(text.lstrip(b"-")) + (value < 0)


class StrictSchema(Schema):
    """Unknown fields are errors. A body of thousands of keys gets a few of them named and the
    rest counted, not an answer several times its size."""

    class Meta:
        unknown = RAISE

    @pre_load
    def _few_unknown_fields(self, data: Any, **kwargs: Any) -> Any:
        if not isinstance(data, dict) or len(data) <= len(self.fields) + MAX_NAMED_UNKNOWN_FIELDS:
            return data  # marshmallow names each unknown field itself
        unknown = [key for key in data if key not in self.fields]
        named = unknown[:MAX_NAMED_UNKNOWN_FIELDS]
        raise ValidationError(
            {
                **{key: ["Unknown field."] for key in named},
                "_schema": [f"{len(unknown)} unknown fields; {len(named)} of them are named."],
            }
        )


class EventSchema(StrictSchema):
    event_id = fields.String(
        required=True,
        validate=[
            validate.Length(min=1, max=128),
            EVENT_ID,
        ],
        metadata={
            "description": "Idempotency key chosen by the client.",
            "example": "order-42:created",
        },
    )
    event_type = fields.String(
        required=True,
        validate=[validate.Length(min=1, max=128), reject_nul],
        metadata={"example": "order.created"},
    )
    occurred_at = Rfc3339DateTime(
        required=True,
        metadata={
            "description": "RFC 3339 with an offset; stored in UTC, from "
            "1000-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z (what MySQL's DATETIME holds). "
            "A leap second, 23:59:60 UTC at a month's end, is stored as the next second.",
            "pattern": OCCURRED_AT_PATTERN,
            "example": "2026-11-27T10:00:00+01:00",
        },
    )
    source = fields.String(
        load_default=None,
        allow_none=True,
        validate=[validate.Length(max=128), reject_nul],
        metadata={"example": "shop-backend"},
    )
    payload = fields.Dict(
        required=True,
        # JSON object keys are strings already; check_payload looks inside them.
        validate=check_payload,
        metadata={
            "description": "A JSON object both PostgreSQL and MySQL hold: no NUL character, at "
            f"most {MAX_PAYLOAD_DEPTH} levels of objects and arrays, integers within a double's "
            f"range, keys up to {MAX_PAYLOAD_KEY_BYTES} bytes, at most "
            f"{MAX_STORED_PAYLOAD_BYTES} bytes as PostgreSQL writes it out.",
            "example": {"order_id": 42},
        },
    )
    schema_version = WholeNumber(
        strict=True,
        validate=validate.Range(min=1, max=MAX_SCHEMA_VERSION),
        metadata={
            "description": "Check the payload against this version of its type's schema "
            "instead of the newest active one (see /v1/schemas).",
            "example": 2,
        },
    )


class BatchSchema(StrictSchema):
    """Only the envelope: each event is validated on its own, so one bad event spoils nothing."""

    batch = fields.List(fields.Raw(), required=True)

    @validates_schema
    def _not_empty(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not data["batch"]:
            raise ValidationError("The batch holds no event.", "batch")
