"""Inpatient deposits (预交金), pure: an account per 住院号 and the money it holds. A top-up is a
payment order of scene INPATIENT_DEPOSIT; the account grows when that order settles (its payment
succeeded), and the ledger credits liability:patient_deposit, never revenue."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from services.runtime.errors import StateConflict
from services.runtime.money import Money

SCENE = "INPATIENT_DEPOSIT"


@dataclass(frozen=True, slots=True)
class DepositAccount:
    inpatient_no: str
    campus_code: str
    his_patient_id: str
    balance: Money
    topped_up: Money
    used: Money
    refunded: Money


DISCHARGE_SCENE = "DISCHARGE"


def discharge_refund_key(order_id: str) -> str:
    """The key of the surplus refund a discharge makes (its parts' ids derive from it)."""
    return f"discharge:{order_id}"


def refund_id_for(request_key: str, top_up_order_id: str) -> str:
    """The id of a deposit refund's part on one top-up: derived from the request, so a retry
    after a crash finds the parts already recorded instead of making them again."""
    digest = hashlib.blake2b(f"{request_key}:{top_up_order_id}".encode(), digest_size=12).hexdigest()
    return f"rfd_{digest}"


def plan_refund(
    refundable_newest_first: Sequence[tuple[str, Money]], amount: Money
) -> list[tuple[str, Money]]:
    """The refund policy: newest top-up first, each top-up giving back at most what it still may
    (its amount less what was refunded of it), so the fewest and most recent payments go back.
    StateConflict when the top-ups that may be refunded now do not cover `amount` (part of the
    deposit is on its way back by an earlier refund)."""
    parts: list[tuple[str, Money]] = []
    left = amount.fen
    for order_id, refundable in refundable_newest_first:
        if left <= 0:
            break
        part = min(left, refundable.fen)
        if part > 0:
            parts.append((order_id, Money(part)))
            left -= part
    if left > 0:
        raise StateConflict(
            f"{left} fen of the deposit cannot be refunded now: a refund of its top-ups is still on its way",
            {"refund_fen": str(amount.fen)},
        )
    return parts
