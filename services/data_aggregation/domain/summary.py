"""The day's roll-up for finance: settled orders and refunds, in total and by dimension.

Storage hands over pre-grouped sums (one group per scene × channel × insutype × department); the
roll-up here adds them up per dimension. The billed total is always derived as fund + personal
account + cash, never read from anywhere, so the identity holds by construction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date

from services.runtime.money import Money, total

# Self-pay orders carry no insurance type; finance reads them as their own line.
SELF_PAY = "SELF_PAY"
UNSPECIFIED = "UNSPECIFIED"


@dataclass(frozen=True, slots=True)
class OrderGroup:
    """Settled orders of one day sharing scene, channel, insurance type and department."""

    scene: str
    channel: str
    insutype: str
    dept_code: str
    order_count: int
    fund: Money
    personal_account: Money
    cash: Money


@dataclass(frozen=True, slots=True)
class Breakdown:
    key: str
    order_count: int
    fund: Money
    personal_account: Money
    cash: Money

    @property
    def billed_total(self) -> Money:
        return self.fund + self.personal_account + self.cash


@dataclass(frozen=True, slots=True)
class RefundTotals:
    refund_count: int
    cash: Money
    fund: Money
    personal_account: Money

    @property
    def refunded_total(self) -> Money:
        return self.cash + self.fund + self.personal_account


@dataclass(frozen=True, slots=True)
class DailySummary:
    business_date: date
    settled: Breakdown
    refunds: RefundTotals
    by_scene: tuple[Breakdown, ...]
    by_channel: tuple[Breakdown, ...]
    by_insutype: tuple[Breakdown, ...]
    by_dept: tuple[Breakdown, ...]


def summarize(business_date: date, groups: Sequence[OrderGroup], refunds: RefundTotals) -> DailySummary:
    return DailySummary(
        business_date=business_date,
        settled=_add_up("all", groups),
        refunds=refunds,
        by_scene=_broken_down(groups, lambda group: group.scene or UNSPECIFIED),
        by_channel=_broken_down(groups, lambda group: group.channel or UNSPECIFIED),
        by_insutype=_broken_down(groups, lambda group: group.insutype or SELF_PAY),
        by_dept=_broken_down(groups, lambda group: group.dept_code or UNSPECIFIED),
    )


def _broken_down(groups: Sequence[OrderGroup], key_of: Callable[[OrderGroup], str]) -> tuple[Breakdown, ...]:
    by_key: dict[str, list[OrderGroup]] = {}
    for group in groups:
        by_key.setdefault(key_of(group), []).append(group)
    return tuple(_add_up(key, by_key[key]) for key in sorted(by_key))


def _add_up(key: str, groups: Sequence[OrderGroup]) -> Breakdown:
    return Breakdown(
        key=key,
        order_count=sum(group.order_count for group in groups),
        fund=total(group.fund for group in groups),
        personal_account=total(group.personal_account for group in groups),
        cash=total(group.cash for group in groups),
    )
