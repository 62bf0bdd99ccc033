"""RSA2 (SHA256withRSA, PKCS#1 v1.5) as the Alipay open platform uses it, on the simulator's side.

Requests: every parameter except `sign`, sorted by key, joined `k=v&...` with the values as sent
(URL-decoded), verified with the app's public key. Answers: the exact bytes of the inner
`<method>_response` JSON object, signed with the "alipay" private key. Notifications: every
parameter except `sign` and `sign_type`, sorted and joined the same way, signed with that key.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa


class SignatureRefused(Exception):
    """The request's signature is missing, malformed or wrong."""


def signing_string(params: Mapping[str, str], exclude: frozenset[str]) -> str:
    return "&".join(f"{key}={params[key]}" for key in sorted(params) if key not in exclude)


class AlipaySigner:
    def __init__(self, private_key: rsa.RSAPrivateKey) -> None:
        self._key = private_key

    def sign(self, message: bytes) -> str:
        signature = self._key.sign(message, padding.PKCS1v15(), hashes.SHA256())
        return base64.b64encode(signature).decode("ascii")

    def sign_notification(self, params: Mapping[str, str]) -> str:
        return self.sign(signing_string(params, frozenset({"sign", "sign_type"})).encode("utf-8"))


class AppVerifier:
    """Checks a request against the app's public key (RSA2 only, as the simulator's app is set up)."""

    def __init__(self, app_id: str, public_key: rsa.RSAPublicKey) -> None:
        self.app_id, self._key = app_id, public_key

    def verify(self, params: Mapping[str, str]) -> None:
        if params.get("app_id") != self.app_id:
            raise SignatureRefused("isv.invalid-app-id")
        if params.get("sign_type") != "RSA2":
            raise SignatureRefused("isv.invalid-signature-type")
        try:
            signature = base64.b64decode(params.get("sign", ""), validate=True)
        except (binascii.Error, ValueError):
            raise SignatureRefused("isv.invalid-signature") from None
        message = signing_string(params, frozenset({"sign"})).encode("utf-8")
        try:
            self._key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            raise SignatureRefused("isv.invalid-signature") from None
