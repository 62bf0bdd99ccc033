"""What callers ask of the insurance-adapter, already validated and in the domain's terms."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from services.insurance_adapter.domain.bill import ChargeLine, OutpatientBill
from services.insurance_adapter.domain.person import PatientVoucher
from services.insurance_adapter.domain.settlement import SettlementStatus

OUTPATIENT_CLEARING = "11"  # clr_type 门诊


@dataclass(frozen=True, slots=True)
class Presettle:
    order_ref: str
    voucher: PatientVoucher
    bill: OutpatientBill


@dataclass(frozen=True, slots=True)
class Represettle:
    """Pre-settle again the remaining lines of a bill whose settlement was revoked (a partial
    refund): same person, same visit (mdtrt_id), a new batch."""

    order_ref: str
    revoked_settlement_id: str
    lines: tuple[ChargeLine, ...]


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
