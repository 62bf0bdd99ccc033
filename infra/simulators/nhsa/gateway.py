"""The TIF gateway in front of the insurer: every call carries a signed set of x-tif-* headers.

signature = hex SHA-256 of (timestamp + paas token + nonce + timestamp), timestamp in unix seconds.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

MAX_CLOCK_SKEW_S = 300


def tif_signature(timestamp: str, paas_token: str, nonce: str) -> str:
    return hashlib.sha256(f"{timestamp}{paas_token}{nonce}{timestamp}".encode()).hexdigest()


def gateway_refusal(headers: Mapping[str, str], paas_token: str, now_s: float | None = None) -> str | None:
    """Why the gateway refuses these headers, or None when they are well signed and fresh."""
    paasid = headers.get("x-tif-paasid", "")
    timestamp = headers.get("x-tif-timestamp", "")
    nonce = headers.get("x-tif-nonce", "")
    signature = headers.get("x-tif-signature", "")
    if not (paasid and timestamp.isdigit() and nonce and signature):
        return "missing x-tif-* headers"
    if abs((time.time() if now_s is None else now_s) - int(timestamp)) > MAX_CLOCK_SKEW_S:
        return "x-tif-timestamp outside the allowed clock skew"
    if not hmac.compare_digest(signature.lower(), tif_signature(timestamp, paas_token, nonce)):
        return "bad x-tif-signature"
    return None
