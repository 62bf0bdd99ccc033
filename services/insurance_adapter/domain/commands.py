"""What callers ask of the insurance-adapter, already validated and in the domain's terms."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from services.insurance_adapter.domain.bill import OutpatientBill
from services.insurance_adapter.domain.person import PatientVoucher
from services.insurance_adapter.domain.settlement import SettlementStatus

OUTPATIENT_CLEARING = "11"  # clr_type 门诊


@dataclass(frozen=True, slots=True)
class Presettle:
    order_ref: str
    voucher: PatientVoucher
    bill: OutpatientBill


@dataclass(frozen=True, slots=True)
class ReconcileTotals:
    business_date: date
    insutype: str
    clr_type: str = OUTPATIENT_CLEARING


@dataclass(frozen=True, slots=True)
class ListSettlements:
    limit: int
    page_token: str = ""
    business_date: date | None = None
    statuses: frozenset[SettlementStatus] | None = None


@dataclass(frozen=True, slots=True)
class ListInsurerMessages:
    limit: int
    page_token: str = ""
    infno: str = ""
    order_ref: str = ""
