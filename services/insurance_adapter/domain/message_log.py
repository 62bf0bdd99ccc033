"""The log of every message exchanged with the insurer, as it may be stored and shown: patient
identifiers masked by field name first, then any ID- or phone-shaped text scrubbed anywhere."""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from services.runtime.masking import mask_certificate, mask_name, mask_phone, scrub


class ExchangeOutcome(enum.StrEnum):
    OK = "OK"
    REJECTED = "REJECTED"
    UNAVAILABLE = "UNAVAILABLE"
    UNKNOWN = "UNKNOWN"


@dataclass(frozen=True, slots=True)
class InsurerExchange:
    msgid: str
    infno: str
    outcome: ExchangeOutcome
    request_json: str
    response_json: str
    elapsed_ms: int
    sent_at: datetime
    order_ref: str = ""


# NHSA field names that carry a patient identifier, and how each is masked.
_MASKERS: dict[str, Callable[[str], str]] = {
    "certno": mask_certificate,
    "mdtrt_cert_no": mask_certificate,
    "card_sn": mask_certificate,
    "psn_name": mask_name,
    "coner_name": mask_name,
    "tel": mask_phone,
}


def masked(node: Any) -> Any:
    """A copy of a JSON-like payload with every identifier field masked."""
    if isinstance(node, Mapping):
        return {key: _masked_field(str(key), value) for key, value in node.items()}
    if isinstance(node, (list, tuple)):
        return [masked(item) for item in node]
    return node


def _masked_field(key: str, value: Any) -> Any:
    masker = _MASKERS.get(key)
    if masker is not None and isinstance(value, str):
        return masker(value)
    return masked(value)


def masked_json(payload: Any) -> str:
    """The payload as stored text: masked fields, exact decimals, scrubbed free text. JSON text is
    parsed first so its identifier fields can be masked by name; other text is only scrubbed."""
    if payload is None:
        return ""
    if isinstance(payload, (str, bytes)):
        try:
            payload = json.loads(payload, parse_float=Decimal)
        except ValueError:
            return scrub(payload.decode(errors="replace") if isinstance(payload, bytes) else payload)
    return scrub(json.dumps(masked(payload), ensure_ascii=False, default=_plain, separators=(",", ":")))


def _plain(value: Any) -> str:
    return str(value) if isinstance(value, (Decimal, datetime)) else repr(value)
