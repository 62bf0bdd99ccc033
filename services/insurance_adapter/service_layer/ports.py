"""What the handlers need from the outside world, as Protocols in the domain's own words.

`Insurer` is one insurance platform (one region's NHSA interface). Its methods raise only
services.runtime.errors: InsurerRejected (refused; nothing happened), InsurerUnavailable (could not
be reached; nothing happened), OutcomeUnknown (sent, answer lost: it may have happened).
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from datetime import date, datetime
from typing import Protocol

from services.insurance_adapter.domain.bill import OutpatientBill
from services.insurance_adapter.domain.person import InsuredPerson, PatientVoucher
from services.insurance_adapter.domain.settlement import InsuredVisit, SettlementBreakdown
from services.insurance_adapter.domain.totals import DayTotals

# The order the current request works for, so the message log can file each exchange under it.
current_order_ref: contextvars.ContextVar[str] = contextvars.ContextVar("current_order_ref", default="")


@dataclass(frozen=True, slots=True)
class InsurerSettlement:
    """A settlement (or the offsetting record of a revocation) as the insurer booked it."""

    setl_id: str
    breakdown: SettlementBreakdown
    # The insurer's settlement time, so the platform counts it on the insurer's business day.
    settled_at: datetime | None
    # refd_setl_flag: the settlement has been revoked (or is itself a revocation).
    refunded: bool = False


@dataclass(frozen=True, slots=True)
class TotalsRequest:
    business_date: date
    insutype: str
    clr_type: str
    setl_optins: str
    totals: DayTotals


@dataclass(frozen=True, slots=True)
class TotalsAnswer:
    stmt_rslt: str
    stmt_rslt_dscr: str
    # The insurer's own totals, when its answer carries them.
    insurer: DayTotals | None


class Insurer(Protocol):
    def new_msgid(self) -> str:
        """A fresh message id (NHSA msgid), to be recorded before the message it names is sent."""
        ...

    async def query_person(self, voucher: PatientVoucher) -> InsuredPerson:
        """1101."""
        ...

    async def register_visit(self, visit: InsuredVisit, bill: OutpatientBill, at: datetime) -> str:
        """2201; returns mdtrt_id. The insurer answers a repeated registration with the same visit."""
        ...

    async def upload_fees(self, visit: InsuredVisit, chrg_bchno: str, bill: OutpatientBill) -> None:
        """2204. Re-sending the same lines under the same batch gets the same answer."""
        ...

    async def revoke_fees(self, visit: InsuredVisit, chrg_bchno: str) -> None:
        """2205."""
        ...

    async def presettle(
        self, visit: InsuredVisit, chrg_bchno: str, bill: OutpatientBill
    ) -> SettlementBreakdown:
        """2206: the split of the uploaded batch, settling nothing."""
        ...

    async def settle(
        self,
        visit: InsuredVisit,
        chrg_bchno: str,
        presettled: SettlementBreakdown,
        invoice_no: str,
        msgid: str,
    ) -> InsurerSettlement:
        """2207 under the given msgid; the insurer answers a repeated msgid with its first answer."""
        ...

    async def revoke_settlement(self, visit: InsuredVisit, setl_id: str) -> InsurerSettlement:
        """2208; the insurer answers a repeated revocation with the one it already booked."""
        ...

    async def find_settlement(self, psn_no: str, msgid: str) -> InsurerSettlement | None:
        """5203 by the msgid of the 2207 that would have created it; None when there is none."""
        ...

    async def reconcile_totals(self, request: TotalsRequest) -> TotalsAnswer:
        """3201."""
        ...
