"""Bearer keys with scopes, compared in constant time.

Each scope has its own list of keys: a write key sends events and reads nothing, so a key
that a web page must carry (CORS) tells no one what was stored. A key in several lists has
each of their scopes.
"""

from __future__ import annotations

import base64
import binascii
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

    @property
    def article(self) -> str:
        return "an" if self.name[0] in "aeiou" else "a"


WRITE = Scope("write", "send events", "INGEST_API_KEYS", attrgetter("api_keys"))
READ = Scope(
    "read",
    "read event status and the OpenAPI description",
    "INGEST_READ_KEYS",
    attrgetter("read_keys"),
)
ADMIN = Scope(
    "admin", "read and change event schemas", "INGEST_ADMIN_KEYS", attrgetter("admin_keys")
)
# Every scope a key can have; a new scope is one more line here (and its Settings field).
SCOPES = (WRITE, READ, ADMIN)


def require_key(settings: Settings, scope: Scope) -> None:
    """Raise a 401 problem unless the request carries a configured key, a 403 one unless that
    key has `scope`."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    offered = token.strip() if scheme.lower() == "bearer" else ""
    check_key(settings, scope, offered, BEARER)


@dataclass(frozen=True)
class Challenge:
    """How a route asks for its key: the 401's wording and its WWW-Authenticate scheme."""

    how: str
    scheme: str


BEARER = Challenge(how="as 'Authorization: Bearer <key>'", scheme="Bearer")
# Segment's SDKs send the write key as the Basic user name, as a Bearer token, or in the body.
SEGMENT = Challenge(
    how="as the HTTP Basic user name (no password), as 'Authorization: Bearer <key>' "
    "or as writeKey in the body",
    scheme="Basic",
)


def check_key(settings: Settings, scope: Scope, offered: str, challenge: Challenge) -> None:
    """Raise a 401 problem unless `offered` is a configured key, a 403 one unless it has
    `scope`."""
    if not settings.auth_enabled:
        return
    offered_bytes = offered.encode()
    # Compare against every key of every scope, so the time taken says nothing about any key.
    matches = {
        candidate: [
            hmac.compare_digest(offered_bytes, key.encode()) for key in candidate.keys(settings)
        ]
        for candidate in SCOPES
    }
    held = [candidate for candidate, found in matches.items() if any(found)]
    if not offered_bytes or not held:
        raise Problem(
            401,
            f"Send a valid {scope.name} key {challenge.how}.",
            headers={"WWW-Authenticate": f'{challenge.scheme} realm="ingest"'},
        )
    if scope not in held:
        granted = " and ".join(candidate.may for candidate in SCOPES if candidate in held)
        raise Problem(
            403,
            f"This key may only {granted}. To {scope.may}, send {scope.article} {scope.name} key "
            f"(one of {scope.variable}).",
            headers={
                "WWW-Authenticate": f'Bearer realm="ingest", error="insufficient_scope", '
                f'scope="{scope.name}"'
            },
        )


def segment_header_key() -> str | None:
    """The key in the Authorization header as Segment's SDKs send it (Basic user name with an
    empty password, or Bearer); "" for a header that holds none; None without the header."""
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() == "bearer":
        return token
    if scheme.lower() != "basic":
        return ""
    try:
        user, _, password = base64.b64decode(token, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return ""
    return "" if password else user


def require_segment_key(settings: Settings, header_key: str | None, body_key: object) -> None:
    """The write key from the header or the body's writeKey; when both come, they must agree."""
    if not settings.auth_enabled:
        return
    if body_key is not None and not isinstance(body_key, str):
        raise Problem(
            401,
            "writeKey must be a string: the write key.",
            headers={"WWW-Authenticate": f'{SEGMENT.scheme} realm="ingest"'},
        )
    if header_key is not None and body_key is not None and body_key != header_key:
        raise Problem(
            401,
            "The writeKey in the body differs from the key in the Authorization header.",
            headers={"WWW-Authenticate": f'{SEGMENT.scheme} realm="ingest"'},
        )
    key = header_key if header_key is not None else body_key
    check_key(settings, WRITE, key or "", SEGMENT)
