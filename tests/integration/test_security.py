"""Who may call what, which secrets each process needs, and clients that stall mid-request.

Every route of the app but the probes (/healthz, /readyz, /metrics) and the static docs page
answers 401 without a valid key, and 403 to a valid key of the wrong scope: /v1/schemas needs
an admin key, other reads (GET, HEAD) a read key, everything else a write key. The routes are
read from the app's url_map, so a new one is covered as soon as it exists.
The API and `ingest up` refuse to start without their secrets, no secret has a default in the
code, and a client that stops sending, or trickles its headers, is cut at the server's deadline
without holding anyone up.

Covered elsewhere and not repeated here: `ingest serve` and `ingest flower` refusing to start
without INGEST_API_KEYS or FLOWER_BASIC_AUTH (test_cli.py), Flower answering 401 without its
login (test_flower.py), docker-compose.yml and .env.example holding no secret and compose
refusing to run without each one (test_compose.py), each malformed Authorization header
(test_api_input.py), and requests generated from the OpenAPI description, with and without a
key (test_fuzz_openapi.py).
"""

from __future__ import annotations

import ast
import base64
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from flask.testing import FlaskClient
from swagger_ui_bundle import swagger_ui_path
from werkzeug.routing import Rule

from ingest.config import ConfigError, Settings
from ingest.config_docs import CONFIGURATION_PAGE
from ingest_api.app import close_app, create_app
from testlib.api import (
    ADMIN_AUTH,
    API_KEY,
    AUTH,
    READ_AUTH,
    READ_KEY,
    event,
    queued_messages,
    unconsumed_api,
)
from testlib.processes import ROOT, VENV_BIN, HttpService, service_env
from testlib.servers import isolated_vhost
from testlib.wait import free_port

# Probes that monitoring calls without credentials; they hold no event data.
PROBES = frozenset({"/healthz", "/readyz", "/metrics"})
# Swagger UI's page and its two vendored files: the same bytes for every deployment. A browser
# cannot send a bearer key when it opens a page; the page asks for the key and sends it to
# /openapi.json, which needs it like every other route.
STATIC_DOCS = frozenset({"/docs", "/docs/<asset>"})
# A value for each variable in a route's URL: a route with a new variable must add one here.
URL_VALUES = {
    "event_id": "order-1",
    "asset": "swagger-ui.css",
    "event_type": "order.paid",
    "version": "1",
}
# The key of each scope, and the variable that lists such keys.
SCOPE_KEYS = {"write": AUTH, "read": READ_AUTH, "admin": ADMIN_AUTH}
SCOPE_VARIABLES = {
    "write": "INGEST_API_KEYS",
    "read": "INGEST_READ_KEYS",
    "admin": "INGEST_ADMIN_KEYS",
}
WRONG_KEYS = [
    None,
    "Bearer not-the-key",
    f"Basic {base64.b64encode(f'{API_KEY}:'.encode()).decode()}",  # the key, in another scheme
    API_KEY,  # the key, without a scheme
]
# Segment's routes take the write key as the Basic user name: these are wrong there.
SEGMENT_WRONG_KEYS = [
    None,
    "Bearer not-the-key",
    f"Basic {base64.b64encode(b'not-the-key:').decode()}",
    f"Basic {base64.b64encode(f'{API_KEY}:a-password'.encode()).decode()}",
    API_KEY,
]
JSON = {"Content-Type": "application/json"}
PREFLIGHT = {
    "Origin": "https://shop.example",
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type",
}
# All that an answer to OPTIONS without a key may carry: the route's methods and CORS grants.
OPTIONS_HEADERS = {
    "allow",
    "content-type",
    "content-length",
    "x-request-id",
    "vary",
    "access-control-allow-origin",
    "access-control-allow-methods",
    "access-control-allow-headers",
    "access-control-max-age",
}


@pytest.fixture(scope="module")
def walled(settings: Settings) -> Iterator[FlaskClient]:
    """The API on a vhost of its own that no worker consumes: whatever it accepts stays queued."""
    with unconsumed_api(settings, "security") as client:
        yield client


@pytest.fixture(scope="module")
def walled_cors(walled: FlaskClient) -> Iterator[FlaskClient]:
    """The same API with CORS on for every origin, publishing to the same vhost."""
    own: Settings = walled.application.extensions["ingest.settings"]
    app = create_app(own.replace(cors_origins=("*",)))
    yield app.test_client()
    close_app(app)


def url_of(rule: Rule) -> str:
    unknown = rule.arguments - URL_VALUES.keys()
    assert not unknown, f"{rule.rule}: add a value for {sorted(unknown)} to URL_VALUES"
    built = rule.build({name: URL_VALUES[name] for name in rule.arguments}, append_unknown=False)
    assert built is not None, rule.rule
    return built[1]


def scope_of(rule: Rule, method: str) -> str:
    """The scope a route needs: schemas an admin key, reads a read key, the rest a write key."""
    if rule.rule.startswith("/v1/schemas"):
        return "admin"
    return "read" if method in ("GET", "HEAD") else "write"


def key_for(rule: Rule, method: str) -> dict[str, str]:
    return SCOPE_KEYS[scope_of(rule, method)]


def keyed_routes(client: FlaskClient) -> list[tuple[Rule, str]]:
    """Every route and method that must need the key; OPTIONS has its own test."""
    return [
        (rule, method)
        for rule in client.application.url_map.iter_rules()
        if rule.rule not in PROBES | STATIC_DOCS
        for method in sorted((rule.methods or set()) - {"OPTIONS"})
    ]


def test_every_route_but_the_probes_and_docs_answers_401_without_a_valid_key(
    walled: FlaskClient,
) -> None:
    routes = keyed_routes(walled)
    assert {rule.rule for rule, _ in routes} >= {
        "/v1/events",
        "/v1/batch",
        "/v1/events/<event_id>",
        "/openapi.json",
    }
    # A valid event: with the key, a POST of it would be accepted and published.
    accepted_with_key = json.dumps(event("security-1")).encode()
    for rule, method in routes:
        url = url_of(rule)
        segment = rule.rule.startswith("/segment/")
        for authorization in SEGMENT_WRONG_KEYS if segment else WRONG_KEYS:
            headers = {**JSON, **({"Authorization": authorization} if authorization else {})}
            response = walled.open(url, method=method, data=accepted_with_key, headers=headers)

            context = f"{method} {url} with Authorization {authorization!r}"
            assert response.status_code == 401, context
            assert response.mimetype == "application/problem+json", context
            scheme = "Basic" if segment else "Bearer"
            assert response.headers["WWW-Authenticate"] == f'{scheme} realm="ingest"', context
            if method != "HEAD":  # an answer to HEAD has no body
                assert response.json["status"] == 401, context
    assert queued_messages(walled) == 0, "a request without a valid key was published"

    # The key is what was missing: with it, each request gets past the check (a malformed
    # body, so that nothing is published).
    for rule, method in routes:
        headers = {**JSON, **key_for(rule, method)}
        response = walled.open(url_of(rule), method=method, data=b"{", headers=headers)
        assert response.status_code not in (401, 403), f"{method} {rule.rule}"


def test_a_write_key_reads_nothing_and_a_read_key_sends_nothing(walled: FlaskClient) -> None:
    """Every way, on every keyed route: each other scope's valid key (write, read, admin) gets
    a 403 that names the key needed, and nothing is published."""
    accepted_with_key = json.dumps(event("security-scope")).encode()
    refused_reads = refused_schema_changes = 0
    for rule, method in keyed_routes(walled):
        needed = scope_of(rule, method)
        url = url_of(rule)
        for scope, wrong in SCOPE_KEYS.items():
            if scope == needed:
                continue
            response = walled.open(
                url, method=method, data=accepted_with_key, headers={**JSON, **wrong}
            )

            context = f"{method} {url} with the {scope} key"
            assert response.status_code == 403, context
            assert response.mimetype == "application/problem+json", context
            assert response.headers["WWW-Authenticate"] == (
                f'Bearer realm="ingest", error="insufficient_scope", scope="{needed}"'
            ), context
            if method != "HEAD":
                assert SCOPE_VARIABLES[needed] in response.json["detail"], context
            refused_reads += needed == "read"
            refused_schema_changes += needed == "admin" and method in ("PUT", "DELETE")
    assert refused_reads >= 4  # GET and HEAD of the event status and of /openapi.json
    assert refused_schema_changes >= 4  # PUT a schema, DELETE a version: write and read keys
    assert queued_messages(walled) == 0, "a read or admin key's request was published"


def test_read_keys_come_from_their_own_variable_and_are_never_shown() -> None:
    settings = Settings.from_env({"INGEST_API_KEYS": "w-1", "INGEST_READ_KEYS": " r-1, ,r-2 "})
    assert settings.api_keys == ("w-1",)
    assert settings.read_keys == ("r-1", "r-2")
    shown = repr(settings.redacted())
    assert "<2 keys>" in shown
    assert not [key for key in ("w-1", "r-1", "r-2") if key in shown]


def test_a_key_in_both_lists_may_send_and_read(settings: Settings) -> None:
    both = settings.replace(read_keys=(*settings.read_keys, API_KEY))
    app = create_app(both)
    try:
        client = app.test_client()
        assert client.get("/openapi.json", headers=AUTH).status_code == 200
        assert client.get("/v1/events/order-1", headers=AUTH).status_code == 404
        assert client.post("/v1/events", data=b"{", headers={**JSON, **AUTH}).status_code == 400
    finally:
        close_app(app)


def test_options_without_a_key_reveals_only_the_methods_and_accepts_nothing(
    walled: FlaskClient, walled_cors: FlaskClient
) -> None:
    """A browser sends no credentials on a CORS preflight, so an OPTIONS may be answered without
    a key: Flask answers it for each route, the CORS hook for a preflight. Such an answer holds
    no body, names only the route's methods and grants, and nothing sent with it is accepted."""
    answered_without_key = 0
    for client in (walled, walled_cors):
        for rule in client.application.url_map.iter_rules():
            for headers in ({}, PREFLIGHT):
                response = client.options(
                    url_of(rule),
                    data=json.dumps(event("security-options")),
                    headers={**JSON, **headers},
                )
                context = f"OPTIONS {rule.rule} with {headers}"
                if response.status_code == 401:
                    continue  # refused like any other method: nothing to check
                answered_without_key += 1
                assert response.status_code in (200, 204), context
                assert response.get_data() == b"", context
                assert {name.lower() for name, _ in response.headers.items()} <= OPTIONS_HEADERS
                for name in ("Allow", "Access-Control-Allow-Methods"):
                    methods = {m.strip() for m in response.headers.get(name, "").split(",")}
                    assert methods - {""} <= (rule.methods or set()), context
    assert answered_without_key > 0  # the exception exists, so the checks above ran
    assert queued_messages(walled) == 0, "an OPTIONS request was published"


def test_the_probes_answer_without_a_key_and_reveal_no_secret(walled: FlaskClient) -> None:
    own: Settings = walled.application.extensions["ingest.settings"]
    secrets = [API_KEY, READ_KEY, own.broker_url, own.postgres_url, own.mysql_url, "guest:guest"]
    for path in sorted(PROBES):
        response = walled.get(path)
        assert response.status_code == 200, path
        text = response.get_data(as_text=True)
        for secret in secrets:
            assert secret and secret not in text, f"{path} shows {secret}"


def test_the_docs_need_no_key_because_they_are_the_same_static_files_everywhere(
    walled: FlaskClient,
) -> None:
    page = walled.get("/docs")
    assert page.status_code == 200
    assert page.get_data() == resources.files("ingest_api").joinpath("docs.html").read_bytes()
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        with walled.get(f"/docs/{asset}") as response:
            assert response.status_code == 200
            assert response.get_data() == (Path(swagger_ui_path) / asset).read_bytes()
    # Nothing else of the vendored directory, and nothing outside it.
    for name in ("index.html", "swagger-ui.js.map", "../openapi.json", "..%2F..%2Fconfig.py"):
        with walled.get(f"/docs/{name}") as response:
            assert response.status_code == 404, name


@pytest.mark.parametrize(
    "environ",
    [{}, {"INGEST_API_KEYS": ""}, {"INGEST_API_KEYS": " , "}, {"INGEST_AUTH": "on"}],
    ids=["unset", "empty", "blank-items", "auth-on"],
)
def test_the_api_refuses_to_start_without_a_key(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="INGEST_API_KEYS is empty"):
        create_app(Settings.from_env(environ))


def test_with_auth_off_the_api_starts_without_a_key_and_asks_for_none(settings: Settings) -> None:
    assert Settings.from_env({"INGEST_AUTH": "off"}).auth_enabled is False
    with pytest.raises(ConfigError, match="INGEST_AUTH must be 'on' or 'off'"):
        Settings.from_env({"INGEST_AUTH": "no"})

    app = create_app(settings.replace(api_keys=(), auth_enabled=False))
    try:
        client = app.test_client()
        assert client.get("/openapi.json").status_code == 200
        assert client.get("/v1/events/order-1").status_code == 404
    finally:
        close_app(app)


def test_the_server_command_refuses_to_serve_the_api_without_a_key(settings: Settings) -> None:
    """docker-compose.yml and the image run `python -m ingest_api.server`, not `ingest serve`."""
    command = [
        str(VENV_BIN / "python"), "-m", "ingest_api.server",
        "--port", str(free_port()), "--workers", "1",
    ]  # fmt: skip
    result = subprocess.run(
        command,
        cwd=ROOT,
        env=service_env(settings, INGEST_API_KEYS=""),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "INGEST_API_KEYS is empty" in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        ({"INGEST_API_KEYS": ""}, "INGEST_API_KEYS is empty"),
        ({"FLOWER_BASIC_AUTH": ""}, "FLOWER_BASIC_AUTH must be user:password"),
    ],
)
def test_ingest_up_starts_nothing_without_each_secret(
    settings: Settings, tmp_path: Path, missing: dict[str, str], message: str
) -> None:
    env = service_env(settings, **{"FLOWER_BASIC_AUTH": "admin:flower-test-password", **missing})
    result = subprocess.run(
        [str(VENV_BIN / "ingest"), "up", "--workers", "1"],
        cwd=tmp_path,  # no .env here
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert message in result.stderr
    assert "API on http" not in result.stdout  # it stopped before starting anything


# --- No secret has a default in the code -------------------------------------------------------

CODE = ("ingest", "ingest_api", "tasks", "models")
SECRET_NAME = re.compile(
    r"(?i)(passw(or)?d|secret|token|(api|read|admin)_?keys?|basic_auth|credential)"
)


def documented_default(variable: str) -> str:
    """A variable's default in the table of docs/configuration.md."""
    for line in (ROOT / CONFIGURATION_PAGE).read_text().splitlines():
        cells = [cell.strip().strip("`") for cell in line.strip("|").split("|")]
        if len(cells) >= 2 and cells[0] == variable:
            return cells[1]
    raise AssertionError(f"{variable} is not in the table of {CONFIGURATION_PAGE}")


def literal_strings(node: ast.AST | None) -> list[str]:
    """The non-empty string constants that a default value is made of."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value:
        return [node.value]
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return [text for item in node.elts for text in literal_strings(item)]
    return []


def named_defaults(tree: ast.AST) -> Iterator[tuple[int, str, ast.AST | None]]:
    """(line, name, value) for each value given to a name: assignments, fields, parameter
    defaults, keyword arguments, dict entries, and the default of an environment lookup."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name | ast.Attribute):
                    yield node.lineno, ast.unparse(target), node.value
        elif isinstance(node, ast.AnnAssign):
            yield node.lineno, ast.unparse(node.target), node.value
        elif isinstance(node, ast.arguments):
            positional = [*node.posonlyargs, *node.args]
            with_default = positional[len(positional) - len(node.defaults) :]
            pairs = [
                *zip(with_default, node.defaults, strict=True),
                *zip(node.kwonlyargs, node.kw_defaults, strict=True),
            ]
            for arg, default in pairs:
                yield arg.lineno, arg.arg, default
        elif isinstance(node, ast.Call):
            for keyword in node.keywords:
                if keyword.arg:
                    yield node.lineno, keyword.arg, keyword.value
            # env.get("NAME", default), os.getenv("NAME", default), environ.setdefault(...)
            if len(node.args) > 1 and isinstance(node.args[0], ast.Constant):
                yield node.lineno, str(node.args[0].value), node.args[1]
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and isinstance(key.value, str):
                    yield node.lineno, key.value, value


def test_no_secret_has_a_default_in_the_code() -> None:
    # RabbitMQ's guest account, which RabbitMQ accepts from localhost only: the documented
    # local default, and the one URL with a password the code may hold.
    broker_default = documented_default("BROKER_URL")
    assert urlsplit(broker_default).password == "guest"
    assert urlsplit(broker_default).hostname == "localhost"
    found: list[str] = []
    credentialed_urls: set[tuple[str, str]] = set()
    for path in sorted(p for folder in CODE for p in (ROOT / folder).rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        where = path.relative_to(ROOT)
        for line, name, value in named_defaults(tree):
            if value is not None and SECRET_NAME.search(name) and literal_strings(value):
                found.append(f"{where}:{line}: {name} = {ast.unparse(value)}")
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                with suppress(ValueError):
                    if "://" in node.value and urlsplit(node.value).password is not None:
                        credentialed_urls.add((str(where), node.value))
    assert found == []
    assert credentialed_urls == {("ingest/config.py", broker_default)}

    defaults = Settings.from_env({})
    assert defaults.api_keys == ()
    assert defaults.read_keys == ()
    assert defaults.flower_basic_auth is None
    assert defaults.auth_enabled is True  # on unless someone turns it off
    assert defaults.broker_url == broker_default


def test_the_image_sets_no_secret() -> None:
    """The Dockerfile's ENV and ARG lines; compose and .env.example are in test_compose.py."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    for line in text.splitlines():
        words = line.split()
        if words and words[0].upper() in ("ENV", "ARG"):
            names = [re.split(r"[=\s]", word, maxsplit=1)[0] for word in words[1:] if "=" in word]
            assert not [name for name in names if SECRET_NAME.search(name)], line


# --- Clients that stall mid-request ------------------------------------------------------------

# The server's deadline for this test, in seconds, on the request head and again on the body
# (`--http1-header-read-timeout`, 30 s by default).
TIMEOUT = 5
# More than the 16 app threads of the one worker: a stalled body must hold none of them.
STALLED_BODIES = 20
STALLED_HEADERS = 4
TRICKLING = 100
TRICKLE_PAUSE = 0.5  # each read brings bytes: only a deadline on the whole head cuts these


def serve_command(port: int) -> list[str]:
    return [
        str(VENV_BIN / "ingest"), "serve", "--bind", f"127.0.0.1:{port}",
        "--workers", "1", "--http1-header-read-timeout", str(TIMEOUT * 1000),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def served(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`ingest serve` as a user runs it, one worker, this test's deadline, publishing to a vhost
    of its own that no worker consumes."""
    cwd = tmp_path_factory.mktemp("serve")  # no .env here
    with isolated_vhost(settings.broker_url, f"ingest-test-{os.getpid()}-served") as broker_url:
        server = HttpService(
            "ingest serve",
            serve_command,
            service_env(settings, BROKER_URL=broker_url),
            cwd / "serve.log",
            cwd=cwd,
        )
        try:
            yield server.url
            server.process.send_signal(signal.SIGTERM)
            assert server.process.wait(timeout=30) == 0, server.output()  # a graceful stop
        finally:
            server.stop()


def stalled(url: str, start: bytes) -> socket.socket:
    """A connection that sends the start of a request, then nothing."""
    address = urlsplit(url)
    connection = socket.create_connection((address.hostname, address.port), timeout=5)
    connection.sendall(start)
    return connection


def until_closed(connection: socket.socket, deadline: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when it closed it."""
    received = b""
    with connection:
        while True:
            connection.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                chunk = connection.recv(65536)
            except ConnectionResetError:
                chunk = b""
            except TimeoutError:
                raise AssertionError(f"still open at the deadline, after {received!r}") from None
            if not chunk:
                return received, time.monotonic()
            received += chunk


def half_an_event() -> bytes:
    """A request for one event whose body stops halfway."""
    body = json.dumps(event("stalled-1")).encode()
    return (
        b"POST /v1/events HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {API_KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body[: len(body) // 2]
    )


def slowest_answer_until(url: str, until: float) -> float:
    """/healthz and an accepted POST, again and again until `until`: the slowest pair's time."""
    slowest, answered = 0.0, 0
    while time.monotonic() < until:
        started = time.monotonic()
        assert requests.get(f"{url}/healthz", timeout=10).status_code == 200
        posted = requests.post(
            f"{url}/v1/events", json=event(f"served-{answered}"), headers=AUTH, timeout=10
        )
        assert posted.status_code == 202, posted.text
        slowest = max(slowest, time.monotonic() - started)
        answered += 1
    assert answered >= 5
    return slowest


def test_a_stalled_client_is_cut_after_the_timeout_and_holds_up_no_one(served: str) -> None:
    url = served
    half_headers = b"POST /v1/events HTTP/1.1\r\nHost: api\r\nContent-Le"
    bodies = [stalled(url, half_an_event()) for _ in range(STALLED_BODIES)]
    headers = [stalled(url, half_headers) for _ in range(STALLED_HEADERS)]
    sent = time.monotonic()

    # Meanwhile, with all stalled clients on the one worker, others are served at once.
    slowest = slowest_answer_until(url, sent + TIMEOUT - 1)
    assert slowest < 1, f"a request took {slowest:.1f}s while clients stalled"

    # Then each stalled connection is cut: not before the timeout, not long after it.
    deadline = sent + TIMEOUT + 10
    for connection in bodies:
        answer, closed = until_closed(connection, deadline)
        head, _, problem = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408"), answer
        assert json.loads(problem)["detail"].startswith("The body stopped arriving")
        assert TIMEOUT - 0.5 < closed - sent < TIMEOUT + 10
    for connection in headers:
        answer, closed = until_closed(connection, deadline)
        assert answer == b""  # no request to answer yet
        assert TIMEOUT - 0.5 < closed - sent < TIMEOUT + 10
    # The threads are free again: the worker still answers.
    assert requests.get(f"{url}/healthz", timeout=10).status_code == 200


def test_clients_trickling_headers_are_cut_at_the_head_deadline(served: str) -> None:
    """Issue 9: a header line every half second from 100 connections, each read bringing bytes.
    A per-read timeout never fires; the deadline on the whole head does."""
    trickling = [
        stalled(served, b"GET /healthz HTTP/1.1\r\nHost: api\r\n") for _ in range(TRICKLING)
    ]
    sent = time.monotonic()
    stop = threading.Event()
    cut: set[int] = set()

    def trickle() -> None:
        while not stop.wait(TRICKLE_PAUSE):
            for index, connection in enumerate(trickling):
                if index not in cut:
                    try:
                        connection.sendall(b"X-Slow: 1\r\n")
                    except OSError:  # cut by the server: the point of the test
                        cut.add(index)

    trickler = threading.Thread(target=trickle, daemon=True)
    trickler.start()
    try:
        slowest = slowest_answer_until(served, sent + TIMEOUT - 1)
        assert slowest < 1, f"a request took {slowest:.1f}s while {TRICKLING} clients trickled"
        deadline = sent + TIMEOUT + 10
        for connection in trickling:
            answer, closed = until_closed(connection, deadline)
            assert answer == b"", answer  # the head never completed: nothing to answer
            assert TIMEOUT - 0.5 < closed - sent < TIMEOUT + 10
    finally:
        stop.set()
        trickler.join()
    assert requests.get(f"{served}/healthz", timeout=10).status_code == 200
