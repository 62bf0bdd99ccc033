"""3201 对总账: the platform's own totals for one business day and insurance type.

A settlement counts (+) on the day it was settled; a revocation counts (−) on the day it was
revoked, even when the settlement itself belongs to an earlier day — the insurer books its
offsetting record on the revocation's date, so both sides sum the same rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

from services.insurance_adapter.domain.settlement import SettlementBreakdown
from services.runtime.money import Money, total

BALANCED = "0"


@dataclass(frozen=True, slots=True)
class DayTotals:
    medfee_sumamt: Money
    fund_pay_sumamt: Money
    acct_pay: Money
    settlement_count: int


def day_totals(settled: Iterable[SettlementBreakdown], revoked: Iterable[SettlementBreakdown]) -> DayTotals:
    """Settled rows add, revocation rows subtract, in amounts and in count (the insurer's rule)."""
    plus, minus = list(settled), list(revoked)
    return DayTotals(
        medfee_sumamt=_net(plus, minus, "medfee_sumamt"),
        fund_pay_sumamt=_net(plus, minus, "fund_pay_sumamt"),
        acct_pay=_net(plus, minus, "acct_pay"),
        settlement_count=len(plus) - len(minus),
    )


def _net(plus: list[SettlementBreakdown], minus: list[SettlementBreakdown], name: str) -> Money:
    return total(getattr(item, name) for item in plus) - total(getattr(item, name) for item in minus)


@dataclass(frozen=True, slots=True)
class TotalsStatement:
    """What the platform sent for a day and what the insurer answered."""

    statement_id: str
    business_date: date
    insutype: str
    clr_type: str
    setl_optins: str
    platform: DayTotals
    stmt_rslt: str
    stmt_rslt_dscr: str
    insurer: DayTotals | None = None

    @property
    def balanced(self) -> bool:
        return self.stmt_rslt == BALANCED
