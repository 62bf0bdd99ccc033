"""Opaque page tokens (AIP-158): base64 of a small JSON cursor; a bad token is the caller's error."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from services.runtime.errors import InvalidArgument


def encode_page_token(cursor: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(cursor, separators=(",", ":")).encode()).decode()


def decode_page_token(token: str, field: str = "page_token") -> dict[str, Any] | None:
    if not token:
        return None
    try:
        cursor = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument.field(field, "not a page token this service issued") from exc
    if not isinstance(cursor, dict):
        raise InvalidArgument.field(field, "not a page token this service issued")
    return cursor
