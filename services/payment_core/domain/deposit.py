"""Inpatient deposits (预交金), pure: an account per 住院号 and the money it holds. A top-up is a
payment order of scene INPATIENT_DEPOSIT; the account grows when that order settles (its payment
succeeded), and the ledger credits liability:patient_deposit, never revenue."""

from __future__ import annotations

from dataclasses import dataclass

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
