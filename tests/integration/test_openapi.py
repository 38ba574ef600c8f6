"""/openapi.json describes exactly the app's routes, and real exchanges validate against it."""

from __future__ import annotations

import gzip
import json
import re
from html.parser import HTMLParser
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from openapi_core import Config, OpenAPI
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest, WerkzeugOpenAPIResponse
from werkzeug.test import EnvironBuilder, TestResponse

from ingest.config import Settings
from ingest_api.app import close_app, create_app
from testlib.api import AUTH, READ_AUTH, event
from testlib.data import stored_ids
from testlib.wait import wait_until


@pytest.fixture(scope="module")
def description(app: Flask) -> dict[str, Any]:
    response = app.test_client().get("/openapi.json", headers=READ_AUTH)
    assert response.status_code == 200
    return response.json


@pytest.fixture(scope="module")
def openapi(description: dict[str, Any]) -> OpenAPI:
    # Problem details are JSON too; openapi-core only knows application/json by itself.
    config = Config(extra_media_type_deserializers={"application/problem+json": json.loads})
    return OpenAPI.from_dict(description, config=config)  # checks the description itself first


def exchange(
    client: FlaskClient, openapi: OpenAPI, method: str, path: str, *, valid: bool = True, **kw: Any
) -> TestResponse:
    """Send a request and check the answer against the description; check the request too
    unless it is meant to break the contract."""
    request = WerkzeugOpenAPIRequest(EnvironBuilder(path, method=method, **kw).get_request())
    response = client.open(path, method=method, **kw)
    if valid:
        openapi.validate_request(request)
    response.get_data()  # read once and kept, so the file behind an asset can be closed
    response.close()
    openapi.validate_response(request, WerkzeugOpenAPIResponse(response))
    return response


def test_every_route_is_described_and_nothing_else(app: Flask, description: dict) -> None:
    routes = {
        (re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
    }
    described = {
        (path, method) for path, operations in description["paths"].items() for method in operations
    }
    assert described == routes


def test_the_description_comes_from_the_marshmallow_schemas(
    description: dict, settings: Settings
) -> None:
    schemas = description["components"]["schemas"]
    event_schema = schemas["Event"]
    assert set(event_schema["required"]) == {"event_id", "event_type", "occurred_at", "payload"}
    assert event_schema["additionalProperties"] is False
    assert event_schema["properties"]["event_id"]["maxLength"] == 128
    assert event_schema["properties"]["occurred_at"]["format"] == "date-time"
    assert event_schema["properties"]["source"]["nullable"] is True
    batch = schemas["Batch"]["properties"]["batch"]
    assert batch["items"] == {"$ref": "#/components/schemas/Event"}
    assert batch["maxItems"] == settings.max_batch_events
    schemes = description["components"]["securitySchemes"]
    assert {name: (s["type"], s["scheme"]) for name, s in schemes.items()} == {
        "writeKey": ("http", "bearer"),
        "readKey": ("http", "bearer"),
        "adminKey": ("http", "bearer"),
        "segmentBasic": ("http", "basic"),
    }
    assert "INGEST_API_KEYS" in schemes["writeKey"]["description"]
    assert "INGEST_READ_KEYS" in schemes["readKey"]["description"]
    assert "INGEST_ADMIN_KEYS" in schemes["adminKey"]["description"]
    for path, operations in description["paths"].items():
        if path.startswith("/v1/schemas"):
            for operation in operations.values():
                assert operation["security"] == [{"adminKey": []}], path
                assert "403" in operation["responses"], path
    # Sending needs a write key, reading a read key; each answers 403 to the other one.
    assert description["security"] == [{"writeKey": []}]
    for path in ("/v1/events/{event_id}", "/openapi.json"):
        assert description["paths"][path]["get"]["security"] == [{"readKey": []}]
        assert "403" in description["paths"][path]["get"]["responses"]
    post_event = description["paths"]["/v1/events"]["post"]
    assert set(post_event["responses"]) == {
        "202", "400", "401", "403", "408", "413", "415", "422", "503",
    }  # fmt: skip
    problem = post_event["responses"]["503"]
    assert "application/problem+json" in problem["content"]
    assert "Retry-After" in problem["headers"]
    open_paths = {
        path
        for path, operations in description["paths"].items()
        if operations["get" if "get" in operations else "post"].get("security") == []
    }
    assert open_paths == {"/healthz", "/readyz", "/metrics", "/docs", "/docs/{asset}"}


def test_real_exchanges_match_the_description(
    client: FlaskClient, openapi: OpenAPI, pipeline: Settings
) -> None:
    def call(method: str, path: str, status: int, valid: bool = True, **kw: Any) -> TestResponse:
        response = exchange(client, openapi, method, path, valid=valid, **kw)
        assert response.status_code == status, response.get_data(as_text=True)
        return response

    call("POST", "/v1/events", 202, json=event("o-1"), headers=AUTH)
    call("POST", "/v1/batch", 202, json={"batch": [event("o-2"), event("o-3")]}, headers=AUTH)
    # A batch with one bad event breaks the contract, yet its answer follows the description.
    partial = {"batch": [event("o-4"), {**event("o-5"), "occurred_at": "now"}]}
    answer = call("POST", "/v1/batch", 202, json=partial, headers=AUTH, valid=False)
    assert [r["status"] for r in answer.json["results"]] == ["accepted", "rejected"]
    accepted = {"o-1", "o-2", "o-3", "o-4"}
    wait_until(lambda: stored_ids(pipeline) >= accepted, what=f"{sorted(accepted)} stored")
    assert stored_ids(pipeline) == accepted  # and nothing else: o-5 was rejected
    call("GET", "/v1/events/o-1", 200, headers=READ_AUTH)
    call("GET", "/healthz", 200)
    call("GET", "/readyz", 200)
    call("GET", "/metrics", 200)
    call("GET", "/openapi.json", 200, headers=READ_AUTH)
    call("GET", "/docs", 200)
    call("GET", "/docs/swagger-ui.css", 200)
    call("GET", "/docs/swagger-ui-bundle.js", 200)
    gzipped = gzip.compress(json.dumps(event("o-6")).encode())
    response = client.post(
        "/v1/events",
        data=gzipped,
        headers={**AUTH, "Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert response.status_code == 202


def test_error_answers_match_the_description(
    client: FlaskClient, openapi: OpenAPI, settings: Settings, clean: Settings
) -> None:
    def refused(status: int, method: str, path: str, **kw: Any) -> dict:
        response = exchange(client, openapi, method, path, valid=False, **kw)
        assert response.status_code == status, response.get_data(as_text=True)
        assert response.mimetype == "application/problem+json"
        return response.json

    json_type = {**AUTH, "Content-Type": "application/json"}
    refused(400, "POST", "/v1/events", data=b'{"event_id": ', headers=json_type)
    refused(401, "POST", "/v1/events", json=event("e-1"))
    refused(401, "GET", "/openapi.json")
    refused(403, "GET", "/openapi.json", headers=AUTH)
    refused(403, "GET", "/v1/events/never-sent", headers=AUTH)
    refused(403, "POST", "/v1/events", json=event("e-0"), headers=READ_AUTH)
    big = event("e-2", payload={"blob": "x" * settings.max_event_bytes})
    assert refused(413, "POST", "/v1/events", json=big, headers=AUTH)["limit_value"] == (
        settings.max_event_bytes
    )
    refused(415, "POST", "/v1/events", data=b"{}", headers={**AUTH, "Content-Type": "text/plain"})
    refused(422, "POST", "/v1/events", json={**event("e-3"), "extra": 1}, headers=AUTH)
    problem = refused(422, "POST", "/v1/batch", json={"batch": [{"event_id": "x"}]}, headers=AUTH)
    assert problem["results"][0]["status"] == "rejected"
    refused(404, "GET", "/v1/events/never-sent", headers=READ_AUTH)
    refused(404, "GET", "/docs/index.html")


def test_an_unconfirmed_publish_matches_the_description(
    settings: Settings, openapi: OpenAPI
) -> None:
    app = create_app(settings.replace(broker_url="amqp://guest:guest@127.0.0.1:1//"))
    try:
        response = exchange(
            app.test_client(), openapi, "POST", "/v1/events", json=event("u-1"), headers=AUTH
        )
    finally:
        close_app(app)
    assert response.status_code == 503
    assert response.headers["Retry-After"]


class Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


def test_docs_load_nothing_from_outside_and_need_no_key_but_the_description_does(
    client: FlaskClient,
) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    parser = Assets()
    parser.feed(html)
    assert parser.urls, "the page loads its renderer"
    for url in parser.urls:
        assert not re.match(r"^([a-z]+:)?//", url), f"{url} would leave the machine"
        if url.startswith("data:"):
            continue  # inline
        with client.get(f"/{url}") as asset:
            assert asset.status_code == 200
    assert 'fetch("openapi.json"' in html
    assert "validatorUrl: null" in html  # Swagger UI's default validator is a public site
    assert client.get("/openapi.json").status_code == 401
