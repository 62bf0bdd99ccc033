"""A cashier's shift figures, derived from ledger postings without I/O; and the ledger postings
that carry the cashier and the campus a shift reads."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.payment_core.domain import ledger
from services.payment_core.domain.shift import CashierShift, ChannelTotal, ClearingPosting, shift_totals
from services.runtime.money import Money

NOW = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
CASH, POS = "asset:channel_clearing:CASH", "asset:channel_clearing:POS"


def posting(posting_id: int, account: str, fen: int) -> ClearingPosting:
    return ClearingPosting(posting_id, account, Money(fen))


def test_payments_and_refunds_are_counted_and_summed_per_channel() -> None:
    totals = shift_totals([
        posting(1, CASH, 12_500), posting(2, POS, 30_000), posting(3, CASH, 2_000), posting(4, CASH, -12_500),
    ])  # fmt: skip

    assert totals == (
        ChannelTotal("CASH", 2, Money(14_500), 1, Money(12_500)),
        ChannelTotal("POS", 1, Money(30_000), 0, Money(0)),
    )


def test_a_shift_without_money_has_no_totals_and_nothing_to_hand_over() -> None:
    shift = CashierShift("shift_1", "C001", "FZ900", None, NOW, shift_totals([]))
    assert shift.totals == () and shift.cash_to_hand_over == Money(0)


def test_cash_to_hand_over_is_cash_collected_less_cash_refunded() -> None:
    totals = shift_totals([posting(1, CASH, 12_500), posting(2, POS, 30_000), posting(3, CASH, -2_500)])
    shift = CashierShift("shift_1", "C001", "FZ900", None, NOW, totals)
    assert shift.cash_to_hand_over == Money(10_000)  # POS money is the acquirer's, not the drawer's


def test_a_posting_that_is_not_a_channels_clearing_is_refused() -> None:
    with pytest.raises(ValueError, match="clearing"):
        shift_totals([posting(1, "revenue:outpatient", -12_500)])


movements = st.lists(
    st.tuples(st.sampled_from([CASH, POS]), st.integers(1, 10**9), st.booleans()), max_size=40
)


@given(movements)
def test_the_totals_account_for_every_posting_whatever_their_order(
    drawn: list[tuple[str, int, bool]],
) -> None:
    postings = [posting(i, account, -fen if back else fen) for i, (account, fen, back) in enumerate(drawn)]

    totals = shift_totals(postings)

    assert totals == shift_totals(reversed(postings))
    assert sum(t.payment_count + t.refund_count for t in totals) == len(postings)
    for line in totals:
        mine = [p.amount.fen for p in postings if p.channel == line.channel]
        assert line.collected.fen - line.refunded.fen == sum(mine)  # the clearing balance it moved
        assert line.payment_count == sum(1 for fen in mine if fen > 0)
    shift = CashierShift("shift_1", "C001", "FZ900", None, NOW, totals)
    assert shift.cash_to_hand_over.fen == sum(p.amount.fen for p in postings if p.account == CASH)


def test_a_window_payment_and_its_refund_carry_the_cashiers_and_the_campus() -> None:
    """The cash a cashier takes is posted when it is taken (its PAYMENT entry, the cashier on the
    clearing posting); the settlement then moves it from receipts to revenue, touching no drawer."""
    taken = ledger.payment_transaction(
        ledger.MoneyAtChannel("ord_1", "pay-01", "CASH", Money(12_500), "FZ900", "C001"), NOW
    )
    bill = ledger.SettledBill("ord_1", "OUTPATIENT", Money(12_500), Money(12_500), None, campus_code="FZ900")
    settled = ledger.settlement_transaction(bill, NOW)
    back = ledger.refund_reversal(settled, "refund-R1", "CASH", Money(12_500), True, NOW, operator_id="C002")

    assert taken.campus_code == settled.campus_code == back.campus_code == "FZ900"
    assert [(p.account, p.amount.fen, p.operator_id) for p in taken.postings] == [
        (CASH, 12_500, "C001"), (ledger.RECEIPTS_UNSETTLED, -12_500, ""),
    ]  # fmt: skip
    assert all(not p.account.startswith("asset:channel_clearing:") for p in settled.postings)
    assert [(p.account, p.amount.fen, p.operator_id) for p in back.postings] == [
        (CASH, -12_500, "C002"), ("revenue:outpatient", 12_500, ""),
    ]  # fmt: skip
