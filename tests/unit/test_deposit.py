"""Deposits without I/O: the refund policy (newest top-up first) and the ledger of a bill paid from
the deposit."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.payment_core.domain import deposit, ledger
from services.runtime.errors import StateConflict
from services.runtime.money import Money

NOW = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)


def test_a_refund_takes_the_newest_top_up_first_and_each_at_most_what_it_may_give() -> None:
    newest_first = [("ord_3", Money(20_000)), ("ord_2", Money(0)), ("ord_1", Money(300_000))]
    assert deposit.plan_refund(newest_first, Money(50_000)) == [
        ("ord_3", Money(20_000)),
        ("ord_1", Money(30_000)),
    ]
    assert deposit.plan_refund(newest_first, Money(10_000)) == [("ord_3", Money(10_000))]


def test_a_refund_the_top_ups_cannot_cover_now_is_a_conflict() -> None:
    with pytest.raises(StateConflict):
        deposit.plan_refund([("ord_1", Money(100))], Money(101))


@given(st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=6), st.data())
def test_the_parts_sum_to_the_refund_and_never_exceed_a_top_up(
    refundable: list[int], data: st.DataObject
) -> None:
    top_ups = [(f"ord_{n}", Money(fen)) for n, fen in enumerate(refundable)]
    amount = data.draw(st.integers(min_value=1, max_value=max(sum(refundable), 1)))
    if amount > sum(refundable):
        return
    parts = deposit.plan_refund(top_ups, Money(amount))
    assert sum(part.fen for _, part in parts) == amount
    limits = dict(top_ups)
    assert all(0 < part.fen <= limits[order_id].fen for order_id, part in parts)


def test_part_ids_derive_from_the_request_and_the_top_up() -> None:
    one = deposit.refund_id_for("req-1", "ord_a")
    assert one == deposit.refund_id_for("req-1", "ord_a") and len(one) <= 40
    assert one != deposit.refund_id_for("req-1", "ord_b") != deposit.refund_id_for("req-2", "ord_a")
    assert "-" not in one  # never read as a part of another refund's decision (`<id>-<n>`)


def test_a_bill_paid_from_the_deposit_debits_the_liability_and_its_refund_credits_it_back() -> None:
    from_deposit = ledger.payment_transaction(
        ledger.MoneyAtChannel("ord_1", "pay-01", "DEPOSIT", Money(100_000)), NOW
    )
    in_cash = ledger.payment_transaction(
        ledger.MoneyAtChannel("ord_1", "pay-02", "CASH", Money(50_000), operator_id="C001"), NOW
    )
    bill = ledger.SettledBill("ord_1", "DISCHARGE", Money(150_000), Money(150_000), None)
    settled = ledger.settlement_transaction(bill, NOW)
    assert ledger.balances(from_deposit.postings + in_cash.postings + settled.postings) == {
        "asset:channel_clearing:CASH": Money(50_000),
        "liability:patient_deposit": Money(100_000),
        ledger.RECEIPTS_UNSETTLED: Money(0),
        "revenue:discharge": Money(-150_000),
    }
    back = ledger.refund_reversal(settled, "refund-R1", "DEPOSIT", Money(100_000), False, NOW)
    assert ledger.balances(back.postings) == {
        "liability:patient_deposit": Money(-100_000),
        "revenue:discharge": Money(100_000),
    }
