"""Bearer keys with scopes, compared in constant time.

Each scope has its own list of keys: a write key sends events and reads nothing, so a key
that a web page must carry (CORS) tells no one what was stored. A key in several lists has
each of their scopes.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter

from flask import request

from ingest.config import Settings
from ingest_api.errors import Problem


@dataclass(frozen=True)
class Scope:
    name: str
    may: str  # what its keys may do, as an answer tells the client
    variable: str  # the variable that lists its keys
    keys: Callable[[Settings], tuple[str, ...]]


WRITE = Scope("write", "send events", "INGEST_API_KEYS", attrgetter("api_keys"))
READ = Scope(
    "read",
    "read event status and the OpenAPI description",
    "INGEST_READ_KEYS",
    attrgetter("read_keys"),
)
# Every scope a key can have; a new scope is one more line here (and its Settings field).
SCOPES = (WRITE, READ)


def require_key(settings: Settings, scope: Scope) -> None:
    """Raise a 401 problem unless the request carries a configured key, a 403 one unless that
    key has `scope`."""
    if not settings.auth_enabled:
        return
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    offered = token.strip().encode()
    # Compare against every key of every scope, so the time taken says nothing about any key.
    matches = {
        candidate: [hmac.compare_digest(offered, key.encode()) for key in candidate.keys(settings)]
        for candidate in SCOPES
    }
    held = [candidate for candidate, found in matches.items() if any(found)]
    if scheme.lower() != "bearer" or not offered or not held:
        raise Problem(
            401,
            f"Send a valid {scope.name} key as 'Authorization: Bearer <key>'.",
            headers={"WWW-Authenticate": 'Bearer realm="ingest"'},
        )
    if scope not in held:
        granted = " and ".join(candidate.may for candidate in SCOPES if candidate in held)
        raise Problem(
            403,
            f"This key may only {granted}. To {scope.may}, send a {scope.name} key "
            f"(one of {scope.variable}).",
            headers={
                "WWW-Authenticate": f'Bearer realm="ingest", error="insufficient_scope", '
                f'scope="{scope.name}"'
            },
        )
