"""The OpenAPI 3 description at /openapi.json, built from the marshmallow schemas, and /docs.

/openapi.json needs a read key, like reading an event's status. /docs and its assets do not: they
are only the Swagger UI renderer vendored by the swagger-ui-bundle package and a page that asks
for the key, then fetches the description with it. Nothing on the page leaves the machine.
"""

from __future__ import annotations

from importlib import resources
from importlib.metadata import version
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, Flask, Response, abort, current_app, send_from_directory
from marshmallow import INCLUDE, Schema, fields, validate
from swagger_ui_bundle import swagger_ui_path

from ingest.config import Settings
from ingest_api.auth import ADMIN, READ, SCOPES, WRITE, Scope, require_key
from ingest_api.schema_admin import SchemaChangeSchema
from ingest_api.schemas import EVENT_ID_PATTERN, BatchSchema, EventSchema, Rfc3339DateTime
from ingest_api.segment_schemas import (
    MAX_BATCH_MESSAGES,
    MAX_BODY_BYTES,
    MAX_MESSAGE_BYTES,
    MESSAGE_TYPES,
    SegmentBatchSchema,
    SegmentMessageSchema,
    SegmentSuccessSchema,
    SegmentTime,
)
from models.postgres import MODES

# The renderer's files /docs loads; nothing else of the vendored directory is served.
DOCS_ASSETS = frozenset({"swagger-ui-bundle.js", "swagger-ui.css"})

# Segment's SDKs send the write key as the HTTP Basic user name, with an empty password.
SEGMENT_BASIC = "segmentBasic"

# Why a valid key is refused (403): each operation names the key it needs in `security`.
WRONG_SCOPE = (
    "A valid key without this operation's scope: a write key cannot read, a read key cannot send."
)

openapi = Blueprint("openapi", __name__)


@openapi.get("/openapi.json")
def description() -> dict[str, Any]:
    require_key(current_app.extensions["ingest.settings"], READ)
    return current_app.extensions["ingest.openapi"]


@openapi.get("/docs")
def docs() -> Response:
    page = resources.files("ingest_api").joinpath("docs.html").read_text(encoding="utf-8")
    return Response(page, mimetype="text/html")


@openapi.get("/docs/<asset>")
def docs_asset(asset: str) -> Response:
    if asset not in DOCS_ASSETS:
        abort(404)
    return send_from_directory(swagger_ui_path, asset, max_age=86400)


def init_openapi(app: Flask, settings: Settings) -> None:
    app.extensions["ingest.openapi"] = build_description(settings)
    app.register_blueprint(openapi)


# What the API answers, for the description only: the views build these documents themselves.
class ViolationSchema(Schema):
    pointer = fields.String(
        required=True,
        metadata={"description": "JSON pointer of the failing value in the event: /payload/amount"},
    )
    rule = fields.String(
        required=True,
        metadata={
            "description": "The schema keyword it broke: type, required, enum, pattern, minimum, "
            "additionalProperties, ...; registered for a type without a schema, schema_version "
            "for a pinned version that is retired or missing."
        },
    )
    message = fields.String(required=True)
    schema_path = fields.String(
        required=True, metadata={"description": "JSON pointer of the rule in the schema."}
    )


SCHEMA_VERSION = fields.Integer(
    metadata={"description": "The version of its type's schema the event was checked against."}
)
SCHEMA_VIOLATIONS = fields.List(
    fields.Nested(ViolationSchema),
    metadata={"description": "Warn mode: what the event broke; it was accepted all the same."},
)


class AcceptedSchema(Schema):
    event_id = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(["accepted"]))
    schema_version = SCHEMA_VERSION
    schema_violations = SCHEMA_VIOLATIONS


class BatchItemResultSchema(Schema):
    index = fields.Integer(required=True)
    event_id = fields.String(required=True, allow_none=True)
    status = fields.String(required=True, validate=validate.OneOf(["accepted", "rejected"]))
    errors = fields.Dict(
        metadata={
            "description": "Only on a rejected event: each field, or the JSON pointer of each "
            "value that breaks its type's schema, with what is wrong."
        }
    )
    violations = fields.List(
        fields.Nested(ViolationSchema),
        metadata={"description": "An event refused by its type's schema: each rule it broke."},
    )
    schema_version = fields.Integer(allow_none=True)
    schema_violations = SCHEMA_VIOLATIONS


class BatchResultSchema(Schema):
    accepted = fields.Integer(required=True)
    rejected = fields.Integer(required=True)
    results = fields.List(
        fields.Nested(BatchItemResultSchema),
        required=True,
        metadata={"description": "One result per event, in the order sent."},
    )


class RefusalSchema(Schema):
    error_code = fields.Integer(
        required=True,
        allow_none=True,
        metadata={"description": "MySQL's error code, e.g. 4025 (json_valid) or 1153 (too large)."},
    )
    error_message = fields.String(required=True, metadata={"description": "MySQL's message."})
    refused_at = fields.DateTime(
        required=True, metadata={"description": "When MySQL last refused it."}
    )


class EventStatusSchema(Schema):
    event_id = fields.String(required=True)
    event_type = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(["stored", "projected"]))
    received_at = fields.DateTime(required=True)
    stored_at = fields.DateTime(required=True)
    projection = fields.String(
        required=True,
        validate=validate.OneOf(["done", "pending", "refused", "off", "unknown"]),
        metadata={
            "description": "Whether MySQL holds the event: off when the projection is off, "
            "unknown when MySQL could not be read, refused when MySQL refused it for good "
            "(`refusal` says why; the other events go on without it)."
        },
    )
    projected_at = fields.DateTime(
        required=True, allow_none=True, metadata={"description": "When MySQL last took it."}
    )
    refusal = fields.Nested(
        RefusalSchema,
        required=True,
        allow_none=True,
        metadata={"description": "Why MySQL refused the event; null unless it did."},
    )
    conflict = fields.Boolean(
        required=True,
        metadata={"description": "The same event_id later arrived with another payload."},
    )
    conflict_at = fields.DateTime(required=True, allow_none=True)
    schema_version = fields.Integer(
        required=True,
        allow_none=True,
        metadata={"description": "The schema version it was checked against; null: unchecked."},
    )
    schema_violations = fields.List(
        fields.Nested(ViolationSchema),
        required=True,
        allow_none=True,
        metadata={"description": "What it broke of that schema (warn mode); null: nothing."},
    )


class ProblemSchema(Schema):
    """RFC 9457 problem details; extension members are allowed."""

    class Meta:
        unknown = INCLUDE

    type = fields.String(required=True)
    title = fields.String(required=True)
    status = fields.Integer(required=True)
    detail = fields.String(required=True)
    request_id = fields.String()
    errors = fields.Raw(metadata={"description": "Each field with what is wrong."})
    limit = fields.String(metadata={"description": "The variable that sets the limit."})
    limit_value = fields.Integer()
    results = fields.List(
        fields.Nested(BatchItemResultSchema),
        metadata={"description": "A batch with no valid event: why each one was rejected."},
    )
    violations = fields.List(
        fields.Nested(ViolationSchema),
        metadata={"description": "An event refused by its type's schema: each rule it broke."},
    )
    schema_version = fields.Integer(allow_none=True)


class SchemaVersionSchema(Schema):
    event_type = fields.String(required=True)
    version = fields.Integer(required=True)
    status = fields.String(required=True, validate=validate.OneOf(["active", "retired"]))
    schema_sha256 = fields.String(required=True)
    created_at = fields.DateTime(required=True)
    created_by = fields.String(
        required=True, metadata={"description": "INGEST_ADMIN_KEYS #n, or the CLI's user."}
    )
    retired_at = fields.DateTime(required=True, allow_none=True)
    retired_by = fields.String(required=True, allow_none=True)
    schema = fields.Raw(required=True, metadata={"description": "The JSON Schema."})


class EventTypeSchemasSchema(Schema):
    event_type = fields.String(required=True)
    mode = fields.String(required=True, validate=validate.OneOf(MODES))
    mode_updated_at = fields.DateTime(required=True)
    mode_updated_by = fields.String(required=True)
    newest_active_version = fields.Integer(
        required=True,
        allow_none=True,
        metadata={"description": "The version that checks events that pin none."},
    )
    versions = fields.List(fields.Nested(SchemaVersionSchema), required=True)


class EventTypeSummarySchema(Schema):
    event_type = fields.String(required=True)
    mode = fields.String(required=True, validate=validate.OneOf(MODES))
    versions = fields.Integer(required=True)
    newest_active_version = fields.Integer(required=True, allow_none=True)
    changed_at = fields.DateTime(required=True)


class EventTypeListSchema(Schema):
    event_types = fields.List(fields.Nested(EventTypeSummarySchema), required=True)


class HealthSchema(Schema):
    status = fields.String(required=True, validate=validate.OneOf(["ok"]))


class ReadinessSchema(Schema):
    status = fields.String(required=True, validate=validate.OneOf(["ready", "unavailable"]))
    checks = fields.Dict(
        keys=fields.String(),
        values=fields.String(validate=validate.OneOf(["ok", "down"])),
        required=True,
    )


def build_description(settings: Settings) -> dict[str, Any]:
    plugin = MarshmallowPlugin()
    spec = APISpec(
        title="ingest",
        version=version("ingest"),
        openapi_version="3.0.3",
        plugins=[plugin],
        info={
            "description": "Event ingestion with guaranteed delivery: a 202 means RabbitMQ "
            "confirmed a persistent copy of the event. Errors are RFC 9457 problem+json."
        },
    )
    plugin.map_to_openapi_type(Rfc3339DateTime, "string", "date-time")
    plugin.map_to_openapi_type(SegmentTime, "string", "date-time")
    for name, schema in (
        ("Event", EventSchema),
        ("Batch", BatchSchema),
        ("Accepted", AcceptedSchema),
        ("BatchItemResult", BatchItemResultSchema),
        ("BatchResult", BatchResultSchema),
        ("EventStatus", EventStatusSchema),
        ("Problem", ProblemSchema),
        ("Health", HealthSchema),
        ("Readiness", ReadinessSchema),
        ("SegmentBatch", SegmentBatchSchema),
        ("SegmentMessage", SegmentMessageSchema),
        ("SegmentSuccess", SegmentSuccessSchema),
        ("SchemaChange", SchemaChangeSchema),
        ("SchemaVersion", SchemaVersionSchema),
        ("EventTypeSchemas", EventTypeSchemasSchema),
        ("EventTypeList", EventTypeListSchema),
    ):
        spec.components.schema(name, schema=schema)
    for scope in SCOPES:
        spec.components.security_scheme(
            security_scheme(scope),
            {
                "type": "http",
                "scheme": "bearer",
                "description": f"A {scope.name} key, from {scope.variable}: may {scope.may}.",
            },
        )
    spec.components.security_scheme(
        SEGMENT_BASIC,
        {
            "type": "http",
            "scheme": "basic",
            "description": "Segment's SDKs: a write key (INGEST_API_KEYS) as the user name, "
            "with an empty password. /segment routes also take it as writeKey in the body.",
        },
    )
    spec.components.header(
        "RequestId",
        {
            "description": "Your X-Request-ID, or a generated one; it is in every log line.",
            "schema": {"type": "string"},
        },
    )
    spec.components.header(
        "RetryAfter",
        {"description": "Seconds to wait before sending again.", "schema": {"type": "integer"}},
    )
    for path, operations in _paths(settings).items():
        spec.path(path=path, operations=operations)
    description = spec.to_dict()
    # Each batch item is checked on its own, so the schema takes any item; the contract is Event.
    batch = description["components"]["schemas"]["Batch"]["properties"]["batch"]
    batch.update(
        items={"$ref": "#/components/schemas/Event"},
        minItems=1,
        maxItems=settings.max_batch_events,
        description=f"1 to INGEST_MAX_BATCH_EVENTS ({settings.max_batch_events}) events; "
        "valid events are accepted even when others are rejected.",
    )
    segment_batch = description["components"]["schemas"]["SegmentBatch"]["properties"]["batch"]
    segment_batch.update(
        items={"$ref": "#/components/schemas/SegmentMessage"}, maxItems=MAX_BATCH_MESSAGES
    )
    description["security"] = [{security_scheme(WRITE): []}]
    return description


def security_scheme(scope: Scope) -> str:
    return f"{scope.name}Key"


def _paths(settings: Settings) -> dict[str, dict[str, Any]]:
    body_limits = (
        f"Limits: INGEST_MAX_BODY_BYTES ({settings.max_body_bytes}) after decompression, "
        f"INGEST_MAX_EVENT_BYTES ({settings.max_event_bytes}) per event as compact JSON."
    )
    post_parameters = [
        _request_id_parameter(),
        {
            "in": "header",
            "name": "Content-Encoding",
            "schema": {"type": "string", "enum": ["gzip", "identity"]},
            "description": "gzip bodies are accepted.",
        },
    ]
    unpublished = {
        "400": _problem("Malformed JSON, invalid UTF-8 or a broken gzip body."),
        "401": _problem("Missing or wrong key."),
        "403": _problem(WRONG_SCOPE),
        "408": _problem("The body stopped arriving for longer than the server's timeout."),
        "413": _problem("Over a size limit; `limit` and `limit_value` name it."),
        "415": _problem("A content type other than application/json, or an unknown encoding."),
        "503": _problem(
            "The broker did not confirm in time; nothing was accepted, send again.",
            retry_after=True,
        ),
    }
    return {
        "/v1/events": {
            "post": {
                "tags": ["events"],
                "summary": "Send one event",
                "description": body_limits,
                "parameters": post_parameters,
                "requestBody": _json_body("Event"),
                "responses": {
                    "202": _json("Accepted: the broker confirmed a persistent copy.", "Accepted"),
                    **unpublished,
                    "422": _problem("The event is not valid; `errors` says why, per field."),
                },
            }
        },
        "/v1/batch": {
            "post": {
                "tags": ["events"],
                "summary": "Send a batch of events",
                "description": body_limits,
                "parameters": post_parameters,
                "requestBody": _json_body("Batch"),
                "responses": {
                    "202": _json(
                        "The valid events were accepted; one result per event, in order.",
                        "BatchResult",
                    ),
                    **unpublished,
                    "422": _problem(
                        "No event in the batch is valid (`results` says why), or the envelope "
                        "is not valid."
                    ),
                },
            }
        },
        "/v1/events/{event_id}": {
            "get": {
                "tags": ["events"],
                "summary": "What PostgreSQL holds for an event",
                "security": [{security_scheme(READ): []}],
                "parameters": [
                    {
                        "in": "path",
                        "name": "event_id",
                        "required": True,
                        "schema": {"type": "string", "pattern": EVENT_ID_PATTERN},
                    },
                    _request_id_parameter(),
                ],
                "responses": {
                    "200": _json("The event's state.", "EventStatus"),
                    "401": _problem("Missing or wrong key."),
                    "403": _problem(WRONG_SCOPE),
                    "404": _problem("Not (yet) stored."),
                },
            }
        },
        **_segment_paths(unpublished),
        **_schema_paths(),
        "/healthz": {
            "get": {
                "tags": ["operations"],
                "summary": "Liveness, without I/O",
                "security": [],
                "responses": {"200": _json("Alive.", "Health")},
            }
        },
        "/readyz": {
            "get": {
                "tags": ["operations"],
                "summary": "Readiness: PostgreSQL and the broker answer",
                "security": [],
                "responses": {
                    "200": _json("Ready.", "Readiness"),
                    "503": _json("A dependency is down; `checks` says which.", "Readiness"),
                },
            }
        },
        "/metrics": {
            "get": {
                "tags": ["operations"],
                "summary": "Prometheus metrics",
                "security": [],
                "responses": {"200": _text("Prometheus text exposition format.", "text/plain")},
            }
        },
        "/openapi.json": {
            "get": {
                "tags": ["operations"],
                "summary": "This description",
                "security": [{security_scheme(READ): []}],
                "responses": {
                    "200": {
                        "description": "The OpenAPI 3 description.",
                        "headers": _headers(),
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    "401": _problem("Missing or wrong key."),
                    "403": _problem(WRONG_SCOPE),
                },
            }
        },
        "/docs": {
            "get": {
                "tags": ["operations"],
                "summary": "This description, rendered; the page asks for a key",
                "security": [],
                "responses": {"200": _text("The documentation page.", "text/html")},
            }
        },
        "/docs/{asset}": {
            "get": {
                "tags": ["operations"],
                "summary": "The documentation page's script and style sheet",
                "security": [],
                "parameters": [
                    {
                        "in": "path",
                        "name": "asset",
                        "required": True,
                        "schema": {"type": "string", "enum": sorted(DOCS_ASSETS)},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "The file.",
                        "headers": _headers(),
                        "content": {
                            "text/javascript": {"schema": {"type": "string", "format": "binary"}},
                            "text/css": {"schema": {"type": "string", "format": "binary"}},
                        },
                    },
                    "404": _problem("No such file."),
                },
            }
        },
    }


def _segment_paths(unpublished: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Segment's HTTP tracking API: each path also answers with a trailing slash, never with a
    redirect. Errors are problems with Segment's `code` and `message` added."""
    limits = (
        f"Segment's limits: {MAX_MESSAGE_BYTES} bytes per message as compact JSON, "
        f"{MAX_BATCH_MESSAGES} messages per batch, {MAX_BODY_BYTES} bytes per body after "
        "decompression. Answers 200 only once the broker confirmed every accepted message."
    )
    security = [{security_scheme(WRITE): []}, {SEGMENT_BASIC: []}]
    answers = {key: value for key, value in unpublished.items() if key not in ("400", "408")}
    success = _json("Accepted: the broker confirmed every valid message.", "SegmentSuccess")
    batch_operation = {
        "tags": ["segment"],
        "security": security,
        "description": f"{limits} An invalid message does not fail the batch: it is kept for "
        "`ingest segment rejects` and the others are accepted.",
        "parameters": _segment_parameters(),
        "requestBody": _json_body("SegmentBatch"),
        "responses": {
            "200": success,
            "400": _problem("Malformed JSON or gzip, or a batch that is not a list."),
            **answers,
        },
    }
    paths = {
        "/segment/v1/batch": {"post": {**batch_operation, "summary": "Segment batch"}},
        "/segment/v1/import": {
            "post": {**batch_operation, "summary": "Segment import (the same as batch)"}
        },
    }
    for call in MESSAGE_TYPES:
        paths[f"/segment/v1/{call}"] = {
            "post": {
                "tags": ["segment"],
                "summary": f"Segment {call} call",
                "security": security,
                "description": f"{limits} The message's type is {call}.",
                "parameters": _segment_parameters(),
                "requestBody": _json_body("SegmentMessage"),
                "responses": {
                    "200": success,
                    "400": _problem("Malformed JSON or gzip, or an invalid message (`errors`)."),
                    **answers,
                },
            }
        }
    return paths


def _schema_paths() -> dict[str, dict[str, Any]]:
    """The schema registry: every operation needs an admin key (INGEST_ADMIN_KEYS)."""
    security = [{security_scheme(ADMIN): []}]
    keyed = {
        "401": _problem("Missing or wrong key."),
        "403": _problem("A valid key that is not an admin key: only those change schemas."),
    }
    event_type = {
        "in": "path",
        "name": "event_type",
        "required": True,
        "schema": {"type": "string", "minLength": 1, "maxLength": 128},
    }
    version = {
        "in": "path",
        "name": "version",
        "required": True,
        "schema": {"type": "integer", "minimum": 0},
    }
    return {
        "/v1/schemas": {
            "get": {
                "tags": ["schemas"],
                "summary": "Every event type with a schema, its mode and newest active version",
                "security": security,
                "parameters": [_request_id_parameter()],
                "responses": {"200": _json("The event types.", "EventTypeList"), **keyed},
            }
        },
        "/v1/schemas/{event_type}": {
            "get": {
                "tags": ["schemas"],
                "summary": "An event type's mode and every version of its schema",
                "security": security,
                "parameters": [event_type, _request_id_parameter()],
                "responses": {
                    "200": _json("The type's schemas, oldest first.", "EventTypeSchemas"),
                    **keyed,
                    "404": _problem("No schema is registered for this event type."),
                },
            },
            "put": {
                "tags": ["schemas"],
                "summary": "Add a version of the type's schema, set its mode, or both",
                "description": "Takes effect in every API process within "
                "INGEST_SCHEMA_RELOAD_SECONDS, without a restart. A schema is refused (422) "
                "when it is not draft 2020-12, over 262144 bytes, nested over 64 levels, refers "
                "outside itself, loops through $ref, could apply over 1,000 subschemas to one "
                "value, or has a regular expression with lookaround or backreferences.",
                "security": security,
                "parameters": [event_type, _request_id_parameter()],
                "requestBody": _json_body("SchemaChange"),
                "responses": {
                    "200": _json("Nothing new to add, or the mode changed.", "EventTypeSchemas"),
                    "201": _json("A version was added.", "EventTypeSchemas"),
                    "400": _problem("Malformed JSON."),
                    **keyed,
                    "404": _problem("A mode for a type that has no schema yet."),
                    "408": _problem("The body stopped arriving for longer than the timeout."),
                    "413": _problem("Over INGEST_MAX_BODY_BYTES."),
                    "415": _problem("A content type other than application/json."),
                    "422": _problem("The change or the schema is not valid; `detail` says why."),
                },
            },
        },
        "/v1/schemas/{event_type}/versions/{version}": {
            "get": {
                "tags": ["schemas"],
                "summary": "One version of the type's schema",
                "security": security,
                "parameters": [event_type, version, _request_id_parameter()],
                "responses": {
                    "200": _json("The version.", "SchemaVersion"),
                    **keyed,
                    "404": _problem("No such version."),
                },
            },
            "delete": {
                "tags": ["schemas"],
                "summary": "Retire a version: it checks no event from now on; it is kept",
                "security": security,
                "parameters": [event_type, version, _request_id_parameter()],
                "responses": {
                    "200": _json("The retired version.", "SchemaVersion"),
                    **keyed,
                    "404": _problem("No such version."),
                },
            },
        },
    }


def _segment_parameters() -> list[dict[str, Any]]:
    return [
        _request_id_parameter(),
        {
            "in": "header",
            "name": "Content-Encoding",
            "schema": {"type": "string", "enum": ["gzip", "identity"]},
            "description": "gzip bodies are accepted.",
        },
        {
            "in": "header",
            "name": "X-Retry-Count",
            "schema": {"type": "integer", "minimum": 0},
            "description": "Sent by the SDKs on a retry; counted per library in the metrics.",
        },
    ]


def _request_id_parameter() -> dict[str, Any]:
    return {
        "in": "header",
        "name": "X-Request-ID",
        "schema": {"type": "string", "pattern": r"^[A-Za-z0-9._:-]{1,128}$"},
        "description": "Echoed back and carried into the tasks' logs; generated when absent.",
    }


def _headers(retry_after: bool = False) -> dict[str, Any]:
    headers = {"X-Request-ID": {"$ref": "#/components/headers/RequestId"}}
    if retry_after:
        headers["Retry-After"] = {"$ref": "#/components/headers/RetryAfter"}
    return headers


def _json(description: str, schema: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": _headers(),
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


def _json_body(schema: str) -> dict[str, Any]:
    return {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


def _problem(description: str, retry_after: bool = False) -> dict[str, Any]:
    return {
        "description": description,
        "headers": _headers(retry_after),
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        },
    }


def _text(description: str, media_type: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": _headers(),
        "content": {media_type: {"schema": {"type": "string"}}},
    }
