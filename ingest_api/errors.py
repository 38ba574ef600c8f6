"""Every error leaves the API as one RFC 9457 problem+json shape."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from flask import Flask, Response, g, json
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

logger = logging.getLogger(__name__)

PROBLEM_TYPE_BASE = "https://ingest.dev/problems/"


class Problem(Exception):
    """An error with its HTTP status, a human detail and, where it helps, per-field errors."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        errors: Any = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}
        self.extra = extra


def problem_response(problem: Problem) -> Response:
    phrase = HTTPStatus(problem.status).phrase
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + phrase.lower().replace(" ", "-"),
        "title": phrase,
        "status": problem.status,
        "detail": problem.detail,
        **problem.extra,
    }
    if problem.errors is not None:
        body["errors"] = problem.errors
    request_id = g.get("request_id")
    if request_id:
        body["request_id"] = request_id
    response = Response(
        json.dumps(body), status=problem.status, mimetype="application/problem+json"
    )
    response.headers.update(problem.headers)
    return response


def register_error_handlers(app: Flask) -> None:
    max_body_bytes = app.extensions["ingest.settings"].max_body_bytes

    @app.errorhandler(Problem)
    def _problem(problem: Problem) -> Response:
        return problem_response(problem)

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(error: RequestEntityTooLarge) -> Response:
        return problem_response(
            Problem(
                413,
                f"The request body is over the limit of {max_body_bytes} bytes.",
                limit="INGEST_MAX_BODY_BYTES",
                limit_value=max_body_bytes,
            )
        )

    @app.errorhandler(HTTPException)
    def _http(error: HTTPException) -> Response:
        problem = Problem(error.code or 500, error.description or "")
        response = problem_response(problem)
        if error.code == 405 and error.valid_methods:
            response.headers["Allow"] = ", ".join(error.valid_methods)
        return response

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        logger.exception("Unhandled error")
        return problem_response(Problem(500, "An unexpected error occurred; it has been logged."))
