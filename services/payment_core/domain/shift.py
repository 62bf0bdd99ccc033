"""A cashier's shift close-out (收费员日结), pure.

A shift belongs to one cashier (the operator id the window reports with CASH and POS payments and
refunds) at one campus. It runs from the cashier's previous close (or the beginning) to its
`closed_at`, and its figures are read from the ledger: the channel clearing postings carrying that
cashier's operator id, in transactions of that campus that occurred by `closed_at` and that no
earlier shift of the cashier has counted. Money recorded late (it occurred before a close already
made, but reached the ledger after it) is therefore counted by the cashier's next shift, never
lost and never counted twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from services.runtime.money import Money

CLEARING_PREFIX = "asset:channel_clearing:"
CASH = "CASH"


@dataclass(frozen=True, slots=True)
class ClearingPosting:
    """One posting to a channel's clearing account, as a shift reads it from the ledger."""

    posting_id: int
    account: str
    amount: Money

    @property
    def channel(self) -> str:
        return self.account.removeprefix(CLEARING_PREFIX)


@dataclass(frozen=True, slots=True)
class ChannelTotal:
    channel: str
    payment_count: int
    collected: Money
    refund_count: int
    refunded: Money


@dataclass(frozen=True, slots=True)
class CashierShift:
    shift_id: str
    cashier_id: str
    campus_code: str
    # The previous close of the same cashier at the same campus; None for the first shift.
    opened_at: datetime | None
    closed_at: datetime
    totals: tuple[ChannelTotal, ...]

    @property
    def cash_to_hand_over(self) -> Money:
        """Cash collected minus cash handed back: what the cashier's drawer owes the finance office."""
        cash = next((t for t in self.totals if t.channel == CASH), None)
        return cash.collected - cash.refunded if cash else Money(0)


def shift_totals(postings: Iterable[ClearingPosting]) -> tuple[ChannelTotal, ...]:
    """The one function a shift's figures come from. A debit to a channel's clearing account is
    money the cashier collected (one payment, the settled order's kept cash of that channel); a
    credit is money handed back (one refund). Channels in name order; a channel appears only when
    it has a posting. Non-clearing postings are not the cashier's money and are refused."""
    counts: dict[str, list[int]] = {}
    for posting in postings:
        if not posting.account.startswith(CLEARING_PREFIX):
            raise ValueError(f"posting {posting.posting_id} is not on a channel clearing account")
        line = counts.setdefault(posting.channel, [0, 0, 0, 0])
        if posting.amount.fen > 0:
            line[0] += 1
            line[1] += posting.amount.fen
        elif posting.amount.fen < 0:
            line[2] += 1
            line[3] -= posting.amount.fen
    return tuple(
        ChannelTotal(channel, paid, Money(collected), refunds, Money(refunded))
        for channel, (paid, collected, refunds, refunded) in sorted(counts.items())
    )
