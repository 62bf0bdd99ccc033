"""The double-entry ledger of payment-core, without I/O."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.payment_core.domain import ledger
from services.payment_core.domain.model import InsuranceSplit
from services.runtime.money import Money

NOW = datetime(2025, 3, 3, 10, 0, tzinfo=UTC)


def bill(cash: int, total: int, split: InsuranceSplit | None = None) -> ledger.SettledBill:
    return ledger.SettledBill("ord_1", "OUTPATIENT", Money(total), Money(cash), split)


def paid(channel: str, fen: int, step: str = "pay-01") -> ledger.LedgerTransaction:
    return ledger.payment_transaction(ledger.MoneyAtChannel("ord_1", step, channel, Money(fen)), NOW)


def insured_split(fund: int, account: int, cash: int, hospital: int = 0) -> InsuranceSplit:
    total = fund + account + cash + hospital
    return InsuranceSplit.from_fen({
        "medfee_sumamt": total, "fund_pay_sumamt": fund, "hifp_pay": fund, "acct_pay": account,
        "psn_cash_pay": cash, "psn_part_amt": account + cash, "hosp_part_amt": hospital,
    })  # fmt: skip


def test_a_payment_is_at_its_channel_and_received_until_its_bill_settles() -> None:
    entry = paid("WECHAT_PAY", 12_500)
    assert (entry.transfer_key, entry.kind) == ("ord_1:pay-01", "PAYMENT")
    assert ledger.balances(entry.postings) == {
        "asset:channel_clearing:WECHAT_PAY": Money(12_500),
        ledger.RECEIPTS_UNSETTLED: Money(-12_500),
    }


def test_a_self_pay_settlement_turns_the_receipts_into_revenue() -> None:
    entry = ledger.settlement_transaction(bill(12_500, 12_500), NOW)
    assert entry.transfer_key == "ord_1:settle"
    assert ledger.balances(entry.postings) == {
        ledger.RECEIPTS_UNSETTLED: Money(12_500),
        "revenue:outpatient": Money(-12_500),
    }
    assert ledger.balances(paid("WECHAT_PAY", 12_500).postings + entry.postings) == {
        "asset:channel_clearing:WECHAT_PAY": Money(12_500),
        ledger.RECEIPTS_UNSETTLED: Money(0),
        "revenue:outpatient": Money(-12_500),
    }


def test_money_given_back_unsettled_mirrors_its_payment() -> None:
    money = ledger.MoneyAtChannel("ord_1", "refund-R1", "ALIPAY", Money(5_000), "FZ900", "C001")
    back = ledger.unsettled_refund_transaction(money, NOW)
    assert (back.transfer_key, back.kind, back.campus_code) == ("ord_1:refund-R1", "REFUND", "FZ900")
    together = paid("ALIPAY", 5_000).postings + back.postings
    assert all(amount == Money(0) for amount in ledger.balances(together).values())


def test_an_insured_settlement_debits_every_payer_of_the_bill() -> None:
    entry = ledger.settlement_transaction(bill(1_750, 13_000, insured_split(8_750, 2_000, 1_750, 500)), NOW)
    assert ledger.balances(entry.postings) == {
        ledger.RECEIPTS_UNSETTLED: Money(1_750),
        ledger.HOSPITAL_BORNE: Money(500),
        ledger.INSURER_FUND_RECEIVABLE: Money(8_750),
        ledger.PERSONAL_ACCOUNT_RECEIVABLE: Money(2_000),
        "revenue:outpatient": Money(-13_000),
    }


def test_zero_lines_are_left_out() -> None:
    entry = ledger.settlement_transaction(bill(0, 10_000, insured_split(10_000, 0, 0)), NOW)
    assert {p.account for p in entry.postings} == {ledger.INSURER_FUND_RECEIVABLE, "revenue:outpatient"}


def test_an_unbalanced_transaction_cannot_be_built() -> None:
    with pytest.raises(ledger.UnbalancedTransaction):
        ledger.settlement_transaction(bill(12_000, 12_500), NOW)
    with pytest.raises(ledger.UnbalancedTransaction):
        ledger.LedgerTransaction("k", "ord_1", "SETTLEMENT", NOW, ())


def test_a_reversal_mirrors_the_entry_and_nets_every_account_to_zero() -> None:
    entry = ledger.settlement_transaction(bill(1_750, 12_500, insured_split(8_750, 2_000, 1_750)), NOW)
    reversal = ledger.reversal_of(entry, "refund-R1", NOW)
    assert reversal.transfer_key == "ord_1:refund-R1" and reversal.kind == "REVERSAL"
    assert all(amount == Money(0) for amount in ledger.balances(entry.postings + reversal.postings).values())


@given(
    fund=st.integers(0, 10**9), account=st.integers(0, 10**9),
    cash=st.integers(0, 10**9), hospital=st.integers(0, 10**6),
)  # fmt: skip
def test_any_split_that_adds_up_posts_a_balanced_entry(
    fund: int, account: int, cash: int, hospital: int
) -> None:
    total = fund + account + cash + hospital
    if total == 0:
        return
    entry = ledger.settlement_transaction(
        bill(cash, total, insured_split(fund, account, cash, hospital)), NOW
    )
    assert sum(p.amount.fen for p in entry.postings) == 0
    assert all(p.amount.fen != 0 for p in entry.postings)


def test_the_refunds_of_each_payment_together_undo_the_payments_and_the_settlement() -> None:
    entry = ledger.settlement_transaction(bill(1_750, 13_000, insured_split(8_750, 2_000, 1_750, 500)), NOW)
    first = ledger.refund_reversal(entry, "refund-R1", "WECHAT_PAY", Money(750), True, NOW)
    second = ledger.refund_reversal(entry, "refund-R2", "ALIPAY", Money(1_000), False, NOW)
    assert ledger.balances(second.postings) == {
        ledger.channel_clearing("ALIPAY"): Money(-1_000), "revenue:outpatient": Money(1_000),
    }  # fmt: skip
    together = (
        paid("WECHAT_PAY", 750).postings + paid("ALIPAY", 1_000, "pay-02").postings
        + entry.postings + first.postings + second.postings
    )  # fmt: skip
    assert all(amount == Money(0) for amount in ledger.balances(together).values())


@given(
    st.lists(
        st.tuples(st.integers(1, 5_000), st.integers(0, 100), st.integers(0, 100)), min_size=1, max_size=4
    )
)
def test_refunds_by_lines_keep_the_books_on_the_remaining_bill(steps: list[tuple[int, int, int]]) -> None:
    """Any sequence of re-settlements (a removed amount, the share of it the fund and the account
    carried, in %), each paid out, then a full refund: balanced at every point, revenue the bill
    that remains, the cash held what was kept, nothing left owed; every account zero at the end."""
    fund, account, cash = 8_000, 1_000, 6_000
    current = ledger.settlement_transaction(bill(cash, 15_000, insured_split(fund, account, cash)), NOW)
    postings = [*paid("WECHAT_PAY", cash).postings, *current.postings]
    for n, (removed, fund_pct, account_pct) in enumerate(steps, start=1):
        less_fund = min(fund, removed * fund_pct // 100)
        less_account = min(account, (removed - less_fund) * account_pct // 100)
        freed = min(cash, removed - less_fund - less_account)
        fund, account, cash = fund - less_fund, account - less_account, cash - freed
        split = insured_split(fund, account, cash)
        reversal, settled = ledger.resettlement(
            current, split, "OUTPATIENT", Money(freed), f"resettle{n}", NOW
        )
        postings += [*reversal.postings, *settled.postings]
        books = ledger.balances(postings)
        assert books.get(ledger.RECEIPTS_UNSETTLED, Money(0)).fen == -freed  # owed back until paid out
        if freed:
            money = ledger.MoneyAtChannel("ord_1", f"refund-R{n}", "WECHAT_PAY", Money(freed))
            postings += ledger.unsettled_refund_transaction(money, NOW).postings
        books = ledger.balances(postings)
        assert sum(amount.fen for amount in books.values()) == 0
        assert books["revenue:outpatient"] == -split.medfee_sumamt
        assert books["asset:channel_clearing:WECHAT_PAY"].fen == cash
        assert books.get(ledger.RECEIPTS_UNSETTLED, Money(0)).fen == 0
        assert books.get(ledger.INSURER_FUND_RECEIVABLE, Money(0)).fen == fund
        current = settled
    last = ledger.refund_reversal(current, "refund-R99", "WECHAT_PAY", Money(cash), True, NOW)
    assert all(amount.fen == 0 for amount in ledger.balances([*postings, *last.postings]).values())
