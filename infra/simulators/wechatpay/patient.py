"""What a patient asked for a password did by now (code payments waiting USERPAYING)."""

from __future__ import annotations

import secrets
from dataclasses import replace
from datetime import datetime

from infra.simulators.wechatpay.store import SimOrder

CONFIRMS, CANCELS, NEVER = "confirms", "cancels", "never"


def transaction_id(now: datetime) -> str:
    return f"4200{secrets.randbelow(10**4):04d}{now:%Y%m%d}{secrets.randbelow(10**12):012d}"


def decided_by_now(order: SimOrder, now: datetime) -> SimOrder | None:
    """The order as the patient's decision left it, once its time has come; None when nothing
    changed (not waiting, still thinking, or never deciding)."""
    if order.trade_state != "USERPAYING" or order.patient_at is None or order.patient_at > now:
        return None
    if order.patient_action == CONFIRMS:
        return confirmed(order, order.patient_at)
    if order.patient_action == CANCELS:
        return replace(order, trade_state="PAYERROR", patient_action=None, patient_at=None)
    return None


def confirmed(order: SimOrder, at: datetime) -> SimOrder:
    at = at.replace(microsecond=0)
    return replace(
        order,
        trade_state="SUCCESS",
        transaction_id=transaction_id(at),
        success_time=at,
        patient_action=None,
        patient_at=None,
    )
