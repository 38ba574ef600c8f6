"""Marshmallow schemas of Segment's HTTP tracking API, as /segment/v1/... reads it.

Segment's messages carry many more fields than these (properties, traits, name, channel...):
each one is kept as sent, in the stored event's payload. Only what the mapping onto an ingest
event needs, and Segment's own per-type rules, are checked here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from marshmallow import (
    EXCLUDE,
    INCLUDE,
    Schema,
    ValidationError,
    fields,
    validate,
    validates_schema,
)

MESSAGE_TYPES = ("track", "identify", "page", "screen", "group", "alias")
# Segment's own limits: 32 KB per message as compact JSON, 2,500 messages per batch.
MAX_MESSAGE_BYTES = 32 * 1024
MAX_BATCH_MESSAGES = 2500
# rudder-sdk-python fills a batch up to 4 MiB of messages, then adds one more; an accepted
# message is at most 32 KB, and the envelope is small.
MAX_BODY_BYTES = 4 * 1024 * 1024 + 64 * 1024
# Fields a message of each type must have, besides userId or anonymousId.
REQUIRED_BY_TYPE = {"track": ("event",), "group": ("groupId",), "alias": ("previousId", "userId")}


class SegmentTime(fields.Field):
    """An ISO 8601 time; one without a zone is UTC, as Segment reads it."""

    default_error_messages: ClassVar[dict[str, str]] = {
        "invalid": "Not an ISO 8601 time, like 2026-01-31T12:00:00.000Z."
    }

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        try:
            moment = datetime.fromisoformat(value)
        except (TypeError, ValueError):
            raise self.make_error("invalid") from None
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _present(value: Any) -> bool:
    """Segment counts a null, and an empty string, as absent."""
    return value is not None and value != ""


class SegmentMessageSchema(Schema):
    """One call: track, identify, page, screen, group or alias."""

    class Meta:
        unknown = INCLUDE

    type = fields.String(required=True, validate=validate.OneOf(MESSAGE_TYPES))
    messageId = fields.String(
        allow_none=True,
        metadata={
            "description": "Becomes the event_id (a derived id when it has characters outside "
            "[A-Za-z0-9._:-] or is longer than 128); the same messageId twice is stored once. "
            "Without one the server makes an id, and a resent message is stored again."
        },
    )
    userId = fields.Raw(allow_none=True, metadata={"description": "userId or anonymousId."})
    anonymousId = fields.Raw(allow_none=True)
    event = fields.String(
        allow_none=True, metadata={"description": "track: the event_type (1 to 128 characters)."}
    )
    groupId = fields.Raw(allow_none=True, metadata={"description": "group: required."})
    previousId = fields.Raw(allow_none=True, metadata={"description": "alias: required."})
    timestamp = SegmentTime(
        allow_none=True,
        metadata={
            "description": "When it happened (ISO 8601, UTC without a zone); corrected for "
            "the client's clock by receivedAt - (sentAt - timestamp) when sentAt is given.",
            "format": "date-time",
        },
    )
    sentAt = SegmentTime(allow_none=True, metadata={"format": "date-time"})
    context = fields.Dict(
        allow_none=True,
        metadata={"description": "context.library.name becomes the event's source."},
    )
    integrations = fields.Dict(allow_none=True)

    @validates_schema
    def _segment_rules(self, data: dict[str, Any], **kwargs: Any) -> None:
        errors: dict[str, list[str]] = {}
        if not (_present(data.get("userId")) or _present(data.get("anonymousId"))):
            errors["userId"] = ["Send userId or anonymousId (a null counts as absent)."]
        for name in REQUIRED_BY_TYPE.get(data.get("type", ""), ()):
            if not _present(data.get(name)):
                errors[name] = [f"A {data['type']} call needs {name}."]
        if errors:
            raise ValidationError(errors)


class SegmentBatchSchema(Schema):
    """/segment/v1/batch and /segment/v1/import: the envelope; each message is checked alone."""

    class Meta:
        unknown = EXCLUDE

    batch = fields.List(
        fields.Raw(),
        required=True,
        metadata={
            "description": f"At most {MAX_BATCH_MESSAGES} messages; an invalid one is kept "
            "for `ingest segment rejects` and the others are accepted."
        },
    )
    sentAt = SegmentTime(allow_none=True, metadata={"format": "date-time"})
    writeKey = fields.String(
        allow_none=True,
        metadata={"description": "An ingest write key, if no Authorization header carries it."},
    )
    context = fields.Dict(
        allow_none=True, metadata={"description": "Merged under each message's own context."}
    )
    integrations = fields.Dict(
        allow_none=True,
        metadata={"description": "Merged under each message's own integrations."},
    )


class SegmentSuccessSchema(Schema):
    success = fields.Boolean(required=True, validate=validate.Equal(True))
