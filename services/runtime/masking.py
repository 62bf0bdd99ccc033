"""Patient identifiers are masked at the edge: they never reach a log, span, event or error in clear."""

from __future__ import annotations

import re

_ID_NUMBER = re.compile(r"(?<!\d)(\d{6})\d{8}(\d{3}[\dXx])(?!\d)")
_PHONE = re.compile(r"(?<!\d)(1[3-9]\d)\d{4}(\d{4})(?!\d)")


def mask_certificate(number: str) -> str:
    """Keep the first 4 and last 4 characters of an ID-card / social-security number."""
    if len(number) <= 8:
        return "*" * len(number)
    return number[:4] + "*" * (len(number) - 8) + number[-4:]


def mask_name(name: str) -> str:
    """Keep the family name (first character) only: 张三丰 -> 张**."""
    if not name:
        return ""
    return name[0] + "*" * (len(name) - 1)


def mask_phone(phone: str) -> str:
    if len(phone) < 7:
        return "*" * len(phone)
    return phone[:3] + "*" * (len(phone) - 7) + phone[-4:]


def mask_payment_code(code: str) -> str:
    """A payment code (付款码) is a bearer credential: keep only its first 2 digits (which say the
    channel) and its last 4 (what the cashier's receipt shows)."""
    if len(code) <= 8:
        return "*" * len(code)
    return code[:2] + "*" * (len(code) - 6) + code[-4:]


def scrub(text: str) -> str:
    """Defence in depth for free text (logs, error details): mask anything shaped like an
    18-digit resident ID number or a mainland mobile number."""
    text = _ID_NUMBER.sub(lambda m: m.group(1)[:4] + "**********" + m.group(2), text)
    return _PHONE.sub(lambda m: m.group(1) + "****" + m.group(2), text)


class PatientIdentifier:
    """A sensitive value whose str/repr is masked; `reveal()` is the only way to the clear text,
    used only where the value leaves for the insurer."""

    __slots__ = ("_masked", "_value")

    def __init__(self, value: str, kind: str = "certificate") -> None:
        self._value = value
        masker = {
            "certificate": mask_certificate,
            "name": mask_name,
            "phone": mask_phone,
            "payment_code": mask_payment_code,
        }[kind]
        self._masked = masker(value)

    def reveal(self) -> str:
        return self._value

    @property
    def masked(self) -> str:
        return self._masked

    def __repr__(self) -> str:
        return f"PatientIdentifier({self._masked!r})"

    def __str__(self) -> str:
        return self._masked

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PatientIdentifier) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)
