"""WECHATPAY2-SHA256-RSA2048 as the real gateway speaks it, plus AEAD_AES_256_GCM resources.

Requests: `Authorization: WECHATPAY2-SHA256-RSA2048 mchid="..",nonce_str="..",signature="..",
timestamp="..",serial_no=".."`, signature = RSA-SHA256(PKCS#1 v1.5) over
`METHOD\\nPATH?QUERY\\nTIMESTAMP\\nNONCE\\nBODY\\n` with the merchant private key.
Responses and notifications: `Wechatpay-Signature` over `TIMESTAMP\\nNONCE\\nBODY\\n` with the
platform private key, `Wechatpay-Serial` = the public key id.
"""

from __future__ import annotations

import base64
import re
import secrets
import string
import time
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SIGNATURE_TYPE = "WECHATPAY2-SHA256-RSA2048"
# The real gateway refuses requests whose timestamp is more than five minutes off.
MAX_CLOCK_SKEW_S = 300
_AUTH_FIELD = re.compile(r'(\w+)="([^"]*)"')
_NONCE_ALPHABET = string.ascii_uppercase + string.digits


class SignatureRefused(Exception):
    """The request's Authorization header does not prove it came from the merchant."""


@dataclass(frozen=True, slots=True)
class MerchantVerifier:
    mchid: str
    merchant_public_key: rsa.RSAPublicKey
    # The serial number of the merchant's API certificate; when set, `serial_no` in the header must
    # name it (the real gateway answers 401 SIGN_ERROR for a request signed under another serial).
    merchant_serial_no: str | None = None

    def verify(self, method: str, target: str, body: bytes, authorization: str | None) -> None:
        """Raise SignatureRefused unless `authorization` signs exactly this request."""
        fields = _parse_authorization(authorization)
        if fields.get("mchid") != self.mchid:
            raise SignatureRefused("mchid in Authorization does not match the merchant")
        if self.merchant_serial_no is not None and fields.get("serial_no") != self.merchant_serial_no:
            raise SignatureRefused("serial_no is not the merchant's API certificate")
        _check_timestamp(fields.get("timestamp", ""))
        message = "\n".join((method, target, fields["timestamp"], fields.get("nonce_str", ""), ""))
        signed = message.encode("utf-8") + body + b"\n"
        try:
            signature = base64.b64decode(fields.get("signature", ""), validate=True)
            self.merchant_public_key.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
        except (InvalidSignature, ValueError) as exc:
            raise SignatureRefused("signature does not verify") from exc


def _parse_authorization(authorization: str | None) -> dict[str, str]:
    scheme, _, credentials = (authorization or "").partition(" ")
    if scheme != SIGNATURE_TYPE:
        raise SignatureRefused(f"Authorization scheme must be {SIGNATURE_TYPE}")
    return dict(_AUTH_FIELD.findall(credentials))


def _check_timestamp(timestamp: str) -> None:
    if not timestamp.isdigit() or abs(int(timestamp) - time.time()) > MAX_CLOCK_SKEW_S:
        raise SignatureRefused("timestamp missing or more than five minutes off")


@dataclass(frozen=True, slots=True)
class PlatformSigner:
    platform_private_key: rsa.RSAPrivateKey
    public_key_id: str

    def headers_for(self, body: bytes) -> dict[str, str]:
        """The Wechatpay-* headers the SDK checks on every 2xx response and every notification."""
        timestamp, nonce = str(int(time.time())), new_nonce(32)
        signed = f"{timestamp}\n{nonce}\n".encode() + body + b"\n"
        signature = self.platform_private_key.sign(signed, padding.PKCS1v15(), hashes.SHA256())
        return {
            "Wechatpay-Timestamp": timestamp,
            "Wechatpay-Nonce": nonce,
            "Wechatpay-Signature": base64.b64encode(signature).decode("ascii"),
            "Wechatpay-Serial": self.public_key_id,
            "Wechatpay-Signature-Type": SIGNATURE_TYPE,
        }


def encrypt_resource(apiv3_key: str, plaintext: str, original_type: str) -> dict[str, str]:
    """AEAD_AES_256_GCM with the APIv3 key; ciphertext = base64(ct || 16-byte tag). As on the real
    gateway, the associated data is the original type ("transaction", "refund")."""
    associated_data = original_type
    nonce = new_nonce(12)
    sealed = AESGCM(apiv3_key.encode("utf-8")).encrypt(
        nonce.encode("utf-8"), plaintext.encode("utf-8"), associated_data.encode("utf-8")
    )
    return {
        "original_type": original_type,
        "algorithm": "AEAD_AES_256_GCM",
        "ciphertext": base64.b64encode(sealed).decode("ascii"),
        "associated_data": associated_data,
        "nonce": nonce,
    }


def new_nonce(length: int) -> str:
    return "".join(secrets.choice(_NONCE_ALPHABET) for _ in range(length))
