"""Double-entry ledger, pure. Postings are signed: a debit is positive, a credit negative, so a
transaction balances when its postings sum to zero. A transaction that does not balance cannot be
built, so it can never reach storage. Transactions are append-only: a refund posts the reversal of
the settlement rather than changing it.

Accounts (what the hospital's finance office would call them):
  asset:channel_clearing:<CHANNEL>    cash held by the channel for the hospital until it settles
                                      (CASH: the cash in the cashiers' drawers; POS: owed by the
                                      card acquirer until it settles the terminal's batch)
  asset:insurer_fund_receivable       what the insurance fund (统筹基金 and other funds) owes
  asset:personal_account_receivable   what the insurer owes from the patient's personal account
  expense:hospital_borne              the hospital's own share of the bill (医院负担)
  revenue:<scene>                     the bill's total, by scene (outpatient, registration, ...)
  liability:patient_deposit           inpatient deposits (预交金) held for the patients: a top-up
                                      is owed back to the patient or used for their stay, never
                                      revenue
  liability:refunds_payable           cash a re-settlement (a refund by lines of an insured order)
                                      owes back to the patient until its refunds are paid out
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from services.payment_core.domain import keys
from services.payment_core.domain.model import InsuranceSplit
from services.runtime.money import Money, total

INSURER_FUND_RECEIVABLE = "asset:insurer_fund_receivable"
PERSONAL_ACCOUNT_RECEIVABLE = "asset:personal_account_receivable"
HOSPITAL_BORNE = "expense:hospital_borne"
PATIENT_DEPOSIT = "liability:patient_deposit"
REFUNDS_PAYABLE = "liability:refunds_payable"
DEPOSIT_SCENE = "INPATIENT_DEPOSIT"


def channel_clearing(channel: str) -> str:
    return f"asset:channel_clearing:{channel}"


def revenue(scene: str) -> str:
    """Where a settled bill is credited: its scene's revenue; a deposit top-up is a liability."""
    if scene == DEPOSIT_SCENE:
        return PATIENT_DEPOSIT
    return f"revenue:{scene.lower()}"


_CREDIT_SIDE = ("revenue:", PATIENT_DEPOSIT)


class UnbalancedTransaction(ValueError):
    """Σ postings ≠ 0: refused before anything is stored."""


@dataclass(frozen=True, slots=True)
class Posting:
    account: str
    # Positive = debit, negative = credit.
    amount: Money
    # On a channel clearing posting: the cashier who took or handed back this money at the window
    # (CASH, POS), so a shift's totals are read from the ledger itself; "" for money no one handled.
    operator_id: str = ""


@dataclass(frozen=True, slots=True)
class LedgerTransaction:
    transfer_key: str
    order_id: str
    kind: str
    occurred_at: datetime
    postings: tuple[Posting, ...]
    # The order's campus: a cashier's shift is per campus.
    campus_code: str = ""

    def __post_init__(self) -> None:
        if not self.postings:
            raise UnbalancedTransaction(f"{self.transfer_key}: a transaction needs postings")
        imbalance = total(p.amount for p in self.postings)
        if imbalance.fen != 0:
            raise UnbalancedTransaction(f"{self.transfer_key}: postings sum to {imbalance.fen} fen, not 0")


@dataclass(frozen=True, slots=True)
class SettledBill:
    """What the settlement entry needs to know about a settled order."""

    order_id: str
    scene: str
    channel: str
    bill_total: Money
    cash: Money
    split: InsuranceSplit | None
    # An order paid by several payments: the cash per channel, summing to `cash` (empty: all of it
    # came through `channel`). Each channel's clearing account is debited with its own part.
    cash_by_channel: tuple[tuple[str, Money], ...] = ()
    campus_code: str = ""
    # The cashier who took each window channel's cash (CASH, POS); other channels have none.
    operators: tuple[tuple[str, str], ...] = ()

    def cash_postings(self) -> list[Posting]:
        parts = self.cash_by_channel or ((self.channel, self.cash),)
        if total(amount for _, amount in parts) != self.cash:
            raise UnbalancedTransaction(f"{self.order_id}: the cash per channel does not sum to the cash")
        operators = dict(self.operators)
        return [
            Posting(channel_clearing(channel), amount, operators.get(channel, ""))
            for channel, amount in parts
        ]


def settlement_transaction(bill: SettledBill, occurred_at: datetime) -> LedgerTransaction:
    """Debit where the money comes from (channel cash, insurer fund, personal account, the hospital's
    own share); credit the bill's revenue. Zero lines are left out."""
    fund = bill.split.fund_pay_sumamt if bill.split else Money(0)
    account = bill.split.acct_pay if bill.split else Money(0)
    hospital = bill.split.hosp_part_amt if bill.split else Money(0)
    lines = [
        *bill.cash_postings(),
        Posting(INSURER_FUND_RECEIVABLE, fund),
        Posting(PERSONAL_ACCOUNT_RECEIVABLE, account),
        Posting(HOSPITAL_BORNE, hospital),
        Posting(revenue(bill.scene), -bill.bill_total),
    ]
    return LedgerTransaction(
        transfer_key=keys.transfer_key(bill.order_id, "settle"),
        order_id=bill.order_id,
        kind="SETTLEMENT",
        occurred_at=occurred_at,
        postings=tuple(p for p in lines if p.amount.fen != 0),
        campus_code=bill.campus_code,
    )


def reversal_of(original: LedgerTransaction, step: str, occurred_at: datetime) -> LedgerTransaction:
    """The mirror image of a transaction: every posting with its sign flipped."""
    return LedgerTransaction(
        transfer_key=keys.transfer_key(original.order_id, step),
        order_id=original.order_id,
        kind="REVERSAL",
        occurred_at=occurred_at,
        postings=tuple(Posting(p.account, -p.amount, p.operator_id) for p in original.postings),
        campus_code=original.campus_code,
    )


def refund_reversal(
    settled: LedgerTransaction,
    step: str,
    channel: str,
    cash: Money,
    with_insurance: bool,
    occurred_at: datetime,
    operator_id: str = "",
) -> LedgerTransaction:
    """The part of a settlement one refund takes back: its cash from its own channel's clearing
    account and, for the refund that carried the insurer's revocation, every non-cash share; the
    bill's revenue is debited with the sum. An order paid by one payment gets the mirror image of
    its settlement; one paid by several gets one such entry per payment, together the mirror. The
    clearing posting carries the cashier who handed the money back (`operator_id`, window refunds)."""
    revenue_posting = next(p for p in settled.postings if p.account.startswith(_CREDIT_SIDE))
    lines = [Posting(channel_clearing(channel), -cash, operator_id)]
    if with_insurance:
        # Refunds payable is cash owed back, not an insurer share: its own refunds pay it out.
        cash_side = ("asset:channel_clearing:", REFUNDS_PAYABLE, *_CREDIT_SIDE)
        others = [p for p in settled.postings if not p.account.startswith(cash_side)]
        lines += [Posting(p.account, -p.amount) for p in others]
    lines.append(Posting(revenue_posting.account, -total(p.amount for p in lines)))
    return LedgerTransaction(
        transfer_key=keys.transfer_key(settled.order_id, step),
        order_id=settled.order_id,
        kind="REVERSAL",
        occurred_at=occurred_at,
        postings=tuple(p for p in lines if p.amount.fen != 0),
        campus_code=settled.campus_code,
    )


def resettlement(
    current: LedgerTransaction,
    split: InsuranceSplit,
    scene: str,
    cash_freed: Money,
    step: str,
    occurred_at: datetime,
) -> tuple[LedgerTransaction, LedgerTransaction]:
    """A refund by lines of an insured order, once the remaining lines are settled again: the
    mirror of the settlement entry that stood (`current`) and the new one. The new entry keeps the
    cash where it is (the same clearing postings: the money is still at the channels), takes the
    insurer's new shares and the remaining bill's revenue, and owes `cash_freed` (old cash share −
    new) to the patient as refunds payable, which the refunds' own entries (`payable_paid_out`)
    then pay out of the channels. No cashier moved money here: no posting carries an operator."""
    reversal = reversal_of(current, f"{step}-reverse", occurred_at)
    reversal = _without_operators(reversal)
    held = [Posting(p.account, p.amount) for p in current.postings if p.account.startswith(_CLEARING)]
    payable = total(p.amount for p in current.postings if p.account == REFUNDS_PAYABLE) - cash_freed
    lines = [
        *held,
        Posting(REFUNDS_PAYABLE, payable),
        Posting(INSURER_FUND_RECEIVABLE, split.fund_pay_sumamt),
        Posting(PERSONAL_ACCOUNT_RECEIVABLE, split.acct_pay),
        Posting(HOSPITAL_BORNE, split.hosp_part_amt),
        Posting(revenue(scene), -split.medfee_sumamt),
    ]
    settled = LedgerTransaction(
        transfer_key=keys.transfer_key(current.order_id, step),
        order_id=current.order_id,
        kind="SETTLEMENT",
        occurred_at=occurred_at,
        postings=tuple(p for p in lines if p.amount.fen != 0),
        campus_code=current.campus_code,
    )
    return reversal, settled


def payable_paid_out(
    settled: LedgerTransaction,
    step: str,
    channel: str,
    cash: Money,
    occurred_at: datetime,
    operator_id: str = "",
) -> LedgerTransaction:
    """A refund of cash a re-settlement freed: out of the channel's clearing account, off the
    refunds payable (the revenue was already reduced by the re-settlement)."""
    return LedgerTransaction(
        transfer_key=keys.transfer_key(settled.order_id, step),
        order_id=settled.order_id,
        kind="REFUND",
        occurred_at=occurred_at,
        postings=(Posting(REFUNDS_PAYABLE, cash), Posting(channel_clearing(channel), -cash, operator_id)),
        campus_code=settled.campus_code,
    )


_CLEARING = "asset:channel_clearing:"


def _without_operators(transaction: LedgerTransaction) -> LedgerTransaction:
    postings = tuple(Posting(p.account, p.amount) for p in transaction.postings)
    return LedgerTransaction(
        transaction.transfer_key, transaction.order_id, transaction.kind, transaction.occurred_at,
        postings, transaction.campus_code,
    )  # fmt: skip


def balances(postings: Iterable[Posting]) -> dict[str, Money]:
    """Balance per account (debit positive). The one function every report derives totals from."""
    result: dict[str, int] = {}
    for posting in postings:
        result[posting.account] = result.get(posting.account, 0) + posting.amount.fen
    return {account: Money(fen) for account, fen in sorted(result.items())}
