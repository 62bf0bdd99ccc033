"""Double-entry ledger, pure. Postings are signed: a debit is positive, a credit negative, so a
transaction balances when its postings sum to zero. A transaction that does not balance cannot be
built, so it can never reach storage. Transactions are append-only: a refund posts the reversal of
the settlement rather than changing it.

Every money movement is one transaction, keyed by the business step that moved it:
  PAYMENT     a payment succeeded (order:pay-NN): the money is at its channel, received for a bill
              not yet settled: debit the channel's clearing account, credit receipts_unsettled.
              Posted for every success, an excess one included (the money did come in);
  SETTLEMENT  the order's bill is settled (order:settle): its kept cash leaves receipts_unsettled,
              the insurer's shares become receivable, the bill's total becomes revenue;
  REFUND      money given back that was never settled (a partly paid order closing, an excess, a
              compensation): debit receipts_unsettled, credit the channel's clearing account;
  REVERSAL    a refund of a settled bill (order:refund-RN): the part of the settlement it takes back.
So receipts_unsettled holds exactly the cash of bills still open (partly paid orders), a cashier's
shift reads the cash they took when they took it, and a channel's clearing account moves with
every line of the channel's own bill.

Accounts (what the hospital's finance office would call them):
  asset:channel_clearing:<CHANNEL>    money held by the channel for the hospital until it settles
                                      (CASH: the cash in the cashiers' drawers; POS: owed by the
                                      card acquirer until it settles the terminal's batch)
  asset:insurer_fund_receivable       what the insurance fund (统筹基金 and other funds) owes
  asset:personal_account_receivable   what the insurer owes from the patient's personal account
  expense:hospital_borne              the hospital's own share of the bill (医院负担)
  revenue:<scene>                     the bill's total, by scene (outpatient, registration, ...)
  liability:receipts_unsettled        money received for bills not yet settled (预收医疗款): a
                                      partly paid order's payments until it settles or gives
                                      them back
  liability:patient_deposit           inpatient deposits (预交金) held for the patients: a top-up
                                      is owed back to the patient or used for their stay, never
                                      revenue. A bill paid from the deposit (CHANNEL_DEPOSIT) debits
                                      it where another channel debits its clearing account.
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
RECEIPTS_UNSETTLED = "liability:receipts_unsettled"
DEPOSIT_SCENE = "INPATIENT_DEPOSIT"


DEPOSIT_CHANNEL = "DEPOSIT"


def channel_clearing(channel: str) -> str:
    """Where a channel's cash is debited: its clearing account; the deposit's is the liability
    itself (the hospital owes the patient less once the stay is paid from it)."""
    if channel == DEPOSIT_CHANNEL:
        return PATIENT_DEPOSIT
    return f"asset:channel_clearing:{channel}"


def revenue(scene: str) -> str:
    """Where a settled bill is credited: its scene's revenue; a deposit top-up is a liability."""
    if scene == DEPOSIT_SCENE:
        return PATIENT_DEPOSIT
    return f"revenue:{scene.lower()}"


_CREDIT_SIDE = ("revenue:", PATIENT_DEPOSIT)
_NON_CASH_SHARES = (INSURER_FUND_RECEIVABLE, PERSONAL_ACCOUNT_RECEIVABLE, HOSPITAL_BORNE)


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
    bill_total: Money
    # The cash the order keeps: its payments' money, already in receipts_unsettled.
    cash: Money
    split: InsuranceSplit | None
    campus_code: str = ""


@dataclass(frozen=True, slots=True)
class MoneyAtChannel:
    """One payment's or one unsettled refund's money at its channel, as its entry needs it."""

    order_id: str
    step: str
    channel: str
    amount: Money
    campus_code: str = ""
    # The cashier who took or handed back this money at the window (CASH, POS); "" otherwise.
    operator_id: str = ""


def payment_transaction(money: MoneyAtChannel, occurred_at: datetime) -> LedgerTransaction:
    """A payment succeeded: its money is at the channel, received for a bill not yet settled."""
    return _at_channel(money, "PAYMENT", money.amount, occurred_at)


def unsettled_refund_transaction(money: MoneyAtChannel, occurred_at: datetime) -> LedgerTransaction:
    """Money given back that no settlement counted: the mirror of (part of) its payment's entry."""
    return _at_channel(money, "REFUND", -money.amount, occurred_at)


def _at_channel(money: MoneyAtChannel, kind: str, amount: Money, occurred_at: datetime) -> LedgerTransaction:
    return LedgerTransaction(
        transfer_key=keys.transfer_key(money.order_id, money.step),
        order_id=money.order_id,
        kind=kind,
        occurred_at=occurred_at,
        postings=(
            Posting(channel_clearing(money.channel), amount, money.operator_id),
            Posting(RECEIPTS_UNSETTLED, -amount),
        ),
        campus_code=money.campus_code,
    )


def settlement_transaction(
    bill: SettledBill, occurred_at: datetime, step: str = "settle"
) -> LedgerTransaction:
    """Debit where the bill's money comes from (the cash received for it, the insurer's fund, the
    personal account, the hospital's own share); credit the bill's revenue. Zero lines are left out."""
    fund = bill.split.fund_pay_sumamt if bill.split else Money(0)
    account = bill.split.acct_pay if bill.split else Money(0)
    hospital = bill.split.hosp_part_amt if bill.split else Money(0)
    lines = [
        Posting(RECEIPTS_UNSETTLED, bill.cash),
        Posting(INSURER_FUND_RECEIVABLE, fund),
        Posting(PERSONAL_ACCOUNT_RECEIVABLE, account),
        Posting(HOSPITAL_BORNE, hospital),
        Posting(revenue(bill.scene), -bill.bill_total),
    ]
    return LedgerTransaction(
        transfer_key=keys.transfer_key(bill.order_id, step),
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
    account and, for the refund that carried the insurer's revocation, the insurer's and the
    hospital's shares; the bill's revenue is debited with the sum. Together with the order's payment
    entries, the refunds of every payment undo the settlement and the payments exactly. The
    clearing posting carries the cashier who handed the money back (`operator_id`, window refunds)."""
    # The credit of the settlement (a bill paid from the deposit also debits the deposit liability).
    revenue_posting = next(
        p for p in settled.postings if p.account.startswith(_CREDIT_SIDE) and p.amount.fen < 0
    )
    lines = [Posting(channel_clearing(channel), -cash, operator_id)]
    if with_insurance:
        others = [p for p in settled.postings if p.account in _NON_CASH_SHARES]
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
    mirror of the settlement entry that stood (`current`) and the new one, for the remaining bill
    with the insurer's new shares. The new entry takes `cash_freed` (old cash share − new) less out
    of receipts_unsettled, so the freed cash waits there, owed back, until the refunds' own entries
    (`unsettled_refund_transaction`) pay it out of the channels."""
    reversal = reversal_of(current, f"{step}-reverse", occurred_at)
    cash_settled = total(
        p.amount
        for p in current.postings
        if p.account == RECEIPTS_UNSETTLED or p.account.startswith(_CLEARING)
    )
    bill = SettledBill(
        current.order_id, scene, split.medfee_sumamt, cash_settled - cash_freed, split, current.campus_code
    )
    return reversal, settlement_transaction(bill, occurred_at, step)


_CLEARING = "asset:channel_clearing:"


def balances(postings: Iterable[Posting]) -> dict[str, Money]:
    """Balance per account (debit positive). The one function every report derives totals from."""
    result: dict[str, int] = {}
    for posting in postings:
        result[posting.account] = result.get(posting.account, 0) + posting.amount.fen
    return {account: Money(fen) for account, fen in sorted(result.items())}
