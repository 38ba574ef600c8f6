"""CORS: browsers on the listed origins may send events, never read; a preflight needs no key."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from ingest.config import Settings
from ingest_api.app import close_app, create_app
from testlib.api import AUTH, READ_AUTH, event

SHOP = "https://shop.example"


@pytest.fixture(scope="module")
def cors_app(settings: Settings) -> Iterator[Flask]:
    app = create_app(settings.replace(cors_origins=(SHOP, "http://localhost:3000")))
    yield app
    close_app(app)


@pytest.fixture
def browser(cors_app: Flask) -> FlaskClient:
    return cors_app.test_client()


def preflight(
    client: FlaskClient, origin: str, path: str = "/v1/events", method: str = "POST"
) -> dict[str, str]:
    response = client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization, content-type, content-encoding",
        },
    )
    assert response.status_code == 204  # answered without a key
    return dict(response.headers)


def test_a_listed_origin_gets_a_preflight_answer_without_a_key(browser: FlaskClient) -> None:
    headers = preflight(browser, SHOP)

    assert headers["Access-Control-Allow-Origin"] == SHOP
    allowed = {name.strip().lower() for name in headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type", "content-encoding", "x-request-id"} <= allowed
    assert "POST" in headers["Access-Control-Allow-Methods"]
    assert int(headers["Access-Control-Max-Age"]) > 0
    assert "Origin" in headers["Vary"]
    batch = preflight(browser, "http://localhost:3000", "/v1/batch")
    assert batch["Access-Control-Allow-Origin"] == "http://localhost:3000"


def test_an_origin_not_listed_gets_no_cors_headers(browser: FlaskClient) -> None:
    headers = preflight(browser, "https://evil.example")
    assert not [name for name in headers if name.startswith("Access-Control-")]

    response = browser.post(
        "/v1/events", json=event("c-0"), headers={"Origin": "https://evil.example"}
    )
    assert response.status_code == 401
    assert "Access-Control-Allow-Origin" not in response.headers


def test_actual_responses_let_the_browser_read_them_and_the_request_id(
    browser: FlaskClient, clean: Settings
) -> None:
    accepted = browser.post("/v1/events", json=event("c-1"), headers={**AUTH, "Origin": SHOP})
    refused = browser.post("/v1/events", json=event("c-2"), headers={"Origin": SHOP})

    assert accepted.status_code == 202
    assert refused.status_code == 401  # the key is still needed for the request itself
    for response in (accepted, refused):
        assert response.headers["Access-Control-Allow-Origin"] == SHOP
        exposed = response.headers["Access-Control-Expose-Headers"]
        assert "X-Request-ID" in exposed
        assert "Origin" in response.headers["Vary"]


def test_a_page_may_not_read_so_its_public_key_reveals_nothing(
    browser: FlaskClient, clean: Settings
) -> None:
    """A key in a web page is public. Reads get no CORS, so a page cannot read even with a read
    key, and the write key a page carries is refused on every read."""
    for path in ("/v1/events/never-sent", "/openapi.json"):
        headers = preflight(browser, SHOP, path, method="GET")
        assert not [name for name in headers if name.startswith("Access-Control-")], path
        for key, status in ((READ_AUTH, 200 if path == "/openapi.json" else 404), (AUTH, 403)):
            response = browser.get(path, headers={**key, "Origin": SHOP})
            assert response.status_code == status, path
            assert "Access-Control-Allow-Origin" not in response.headers, path
    # Sending from the page still works, and is granted POST only.
    assert preflight(browser, SHOP)["Access-Control-Allow-Methods"] == "POST"


def test_without_configured_origins_there_is_no_cors(client: FlaskClient) -> None:
    response = client.options(
        "/v1/events", headers={"Origin": SHOP, "Access-Control-Request-Method": "POST"}
    )
    assert "Access-Control-Allow-Origin" not in response.headers
    answer = client.post("/v1/events", json=event("c-3"), headers={"Origin": SHOP})
    assert answer.status_code == 401
    assert "Access-Control-Allow-Origin" not in answer.headers


def test_a_preflight_for_an_unknown_path_is_404(browser: FlaskClient) -> None:
    response = browser.options(
        "/v2/nothing", headers={"Origin": SHOP, "Access-Control-Request-Method": "POST"}
    )
    assert response.status_code == 404
