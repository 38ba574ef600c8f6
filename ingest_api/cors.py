"""CORS for browser senders from the origins in INGEST_CORS_ORIGINS (`*` allows any).

A preflight (OPTIONS with Access-Control-Request-Method) is answered here, before the key is
checked: browsers never send credentials on a preflight. Origins not listed get no CORS
headers, so their browser refuses to send. Browsers may only send: a key in a web page is
public, so it must be a write key, and reads (event status, the description) get no CORS.
"""

from __future__ import annotations

from flask import Flask, Response, request

ALLOWED_HEADERS = "Authorization, Content-Type, Content-Encoding, X-Request-ID"
EXPOSED_HEADERS = "X-Request-ID, Retry-After"
# The methods a browser page may use: sending events, never reading.
BROWSER_METHODS = frozenset({"POST"})
# Seconds a browser may cache a preflight answer (Chromium caps it at 7200).
MAX_AGE = "7200"


def init_cors(app: Flask, origins: tuple[str, ...]) -> None:
    if not origins:
        return
    allowed = frozenset(origins)

    def allowed_origin() -> str | None:
        origin = request.headers.get("Origin")
        if origin is None:
            return None
        if "*" in allowed:
            return "*"
        return origin if origin in allowed else None

    @app.before_request
    def _preflight() -> Response | None:
        if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
            return None
        if request.url_rule is None:
            return None  # an unknown path stays a 404
        response = Response(status=204)
        origin = allowed_origin()
        methods = sorted((request.url_rule.methods or set()) & BROWSER_METHODS)
        if origin is not None and methods:
            response.headers.update(
                {
                    "Access-Control-Allow-Origin": origin,
                    "Access-Control-Allow-Methods": ", ".join(methods),
                    "Access-Control-Allow-Headers": ALLOWED_HEADERS,
                    "Access-Control-Max-Age": MAX_AGE,
                }
            )
        return response

    @app.after_request
    def _actual(response: Response) -> Response:
        response.vary.add("Origin")
        origin = allowed_origin()
        if (
            origin is not None
            and request.method in BROWSER_METHODS
            and "Access-Control-Allow-Origin" not in response.headers
        ):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
        return response
