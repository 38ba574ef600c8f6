"""Marshmallow schemas for what clients send and what the API answers."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, ClassVar

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
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?(?P<offset>[Zz]|[+-]\d{2}:\d{2})?$"
)
# Deeper payloads are almost always a mistake or an attack, and cost every reader.
MAX_PAYLOAD_DEPTH = 32
# Unknown fields named one by one in `errors`; past these, the rest are only counted.
MAX_NAMED_UNKNOWN_FIELDS = 10


class Rfc3339DateTime(fields.Field):
    """An RFC 3339 time with an offset, loaded as an aware UTC datetime."""

    default_error_messages: ClassVar[dict[str, str]] = {
        "invalid": "Not a valid RFC 3339 time, like 2026-01-31T12:00:00Z.",
        "naive": "The time has no offset: add Z or +hh:mm.",
        "range": "The time is out of range: in UTC it must fall within the years 1 to 9999.",
    }

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        match = RFC3339.match(value) if isinstance(value, str) else None
        if match is None:
            raise self.make_error("invalid")
        if match["offset"] is None:
            raise self.make_error("naive")
        try:
            moment = datetime.fromisoformat(value.upper())
        except ValueError:
            raise self.make_error("invalid") from None
        try:
            return moment.astimezone(UTC)
        except OverflowError:
            raise self.make_error("range") from None


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


def check_payload(payload: dict[str, Any]) -> None:
    """PostgreSQL's jsonb holds no NUL character; depth is bounded. Walks without recursion."""
    stack: list[tuple[Any, int]] = [(payload, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_PAYLOAD_DEPTH:
            raise ValidationError(f"Nested deeper than {MAX_PAYLOAD_DEPTH} levels.")
        if isinstance(value, dict):
            for key, item in value.items():
                if "\x00" in key:
                    raise ValidationError("NUL characters are not allowed in keys.")
                stack.append((item, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, str) and "\x00" in value:
            raise ValidationError("NUL characters are not allowed in strings.")


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
            "description": "RFC 3339 with an offset; stored in UTC.",
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
        metadata={"description": "Any JSON object.", "example": {"order_id": 42}},
    )


class BatchSchema(StrictSchema):
    """Only the envelope: each event is validated on its own, so one bad event spoils nothing."""

    batch = fields.List(fields.Raw(), required=True)

    @validates_schema
    def _not_empty(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not data["batch"]:
            raise ValidationError("The batch holds no event.", "batch")
