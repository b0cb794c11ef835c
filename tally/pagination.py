"""AIP-style page tokens: opaque, signed, and rejected when tampered with."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from typing import Any

from tally.errors import InvalidInput, Violation

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000

# A tampered token must not be able to steer a query; the secret only needs to be stable
# across replicas of one deployment.
_SECRET = os.environ.get("TALLY_PAGE_TOKEN_SECRET", "tally-page-token-v1").encode()


def page_size(requested: int, field: str = "page_size") -> int:
    """Clamp a requested page size: 0 means the default; negative is invalid."""
    if requested < 0:
        raise InvalidInput("page_size must not be negative", violations=[Violation(field, "must be >= 0")])
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_page_token(state: dict[str, Any], *, kind: str) -> str:
    """An opaque token carrying ``state`` (JSON-serialisable) for listing ``kind``."""
    body = json.dumps({"k": kind, "s": state}, separators=(",", ":"), sort_keys=True).encode()
    mac = hmac.new(_SECRET, body, hashlib.sha256).digest()[:12]
    return base64.urlsafe_b64encode(mac + body).decode().rstrip("=")


def decode_page_token(token: str, *, kind: str, field: str = "page_token") -> dict[str, Any] | None:
    """The state in ``token``, None for an empty token; INVALID_ARGUMENT if tampered or foreign."""
    if not token:
        return None
    invalid = InvalidInput(
        "invalid page token", violations=[Violation(field, "not a page token issued for this list", "INVALID_PAGE_TOKEN")]
    )
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (ValueError, TypeError):
        raise invalid from None
    mac, body = raw[:12], raw[12:]
    if len(mac) != 12 or not hmac.compare_digest(mac, hmac.new(_SECRET, body, hashlib.sha256).digest()[:12]):
        raise invalid
    try:
        decoded = json.loads(body)
    except ValueError:
        raise invalid from None
    if decoded.get("k") != kind:
        raise invalid
    return decoded["s"]
