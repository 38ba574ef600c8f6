"""Bearer write keys, compared in constant time."""

from __future__ import annotations

import hmac

from flask import request

from ingest.config import Settings
from ingest_api.errors import Problem


def require_key(settings: Settings) -> None:
    """Raise a 401 problem unless the request carries one of the configured keys."""
    if not settings.auth_enabled:
        return
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    offered = token.strip().encode()
    # Compare against every key so the time taken does not say which one came close.
    matches = [hmac.compare_digest(offered, key.encode()) for key in settings.api_keys]
    if scheme.lower() != "bearer" or not offered or not any(matches):
        raise Problem(
            401,
            "Send a valid write key as 'Authorization: Bearer <key>'.",
            headers={"WWW-Authenticate": 'Bearer realm="ingest"'},
        )
