"""Values of the payment order aggregate: statuses, charge lines, the insurer's split, payments and
refunds. Pure: no grpc, sqlalchemy or opentelemetry. Channel, method and scene travel as the names of
the contract's enum values without their prefix ("WECHAT_PAY", "NATIVE_QR", "OUTPATIENT")."""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from datetime import datetime

from services.runtime.money import Money, total

CHANNEL_NONE = "NONE"
METHOD_NONE = "UNSPECIFIED"
METHOD_NATIVE_QR, METHOD_JSAPI, METHOD_BARCODE = "NATIVE_QR", "JSAPI", "BARCODE"
# Money taken at the window before the HIS reports it: cash in the drawer, a bank card on the POS.
METHOD_CASH, METHOD_POS = "CASH", "POS"
WINDOW_METHODS = frozenset({METHOD_CASH, METHOD_POS})
# Paid from the inpatient's deposit account (预交金): the platform's own book, debited in storage.
CHANNEL_DEPOSIT = METHOD_DEPOSIT = "DEPOSIT"


class OrderStatus(enum.Enum):
    # Intent recorded, pre-settlement with the insurer under way (insured orders only).
    PRESETTLING = "PRESETTLING"
    AWAITING_PAYMENT = "AWAITING_PAYMENT"
    PAYING = "PAYING"
    # Cash confirmed; the insurer settlement (2207) is the persisted recovery point.
    SETTLING = "SETTLING"
    SETTLED = "SETTLED"
    CLOSED = "CLOSED"
    REFUNDING = "REFUNDING"
    REFUNDED = "REFUNDED"
    NEEDS_ATTENTION = "NEEDS_ATTENTION"


class Attention(enum.Enum):
    """Why an order needs attention; decides who may move it on (the resumer or a person)."""

    PRESETTLE_UNKNOWN = "PRESETTLE_UNKNOWN"
    # Rows of earlier releases: 2207 outcome pending (now kept in SETTLING and retried on schedule).
    SETTLEMENT_PENDING = "SETTLEMENT_PENDING"
    # The insurer gave no final answer to 2207/5203 within the schedule's attempts: a person decides.
    SETTLEMENT_UNKNOWN = "SETTLEMENT_UNKNOWN"
    SETTLEMENT_MISMATCH = "SETTLEMENT_MISMATCH"
    AMOUNT_MISMATCH = "AMOUNT_MISMATCH"
    PAID_AFTER_CLOSE = "PAID_AFTER_CLOSE"
    DUPLICATE_PAYMENT = "DUPLICATE_PAYMENT"
    REFUND_UNKNOWN = "REFUND_UNKNOWN"
    REFUND_REFUSED = "REFUND_REFUSED"
    # The channel could not deliver the refund (WeChat ABNORMAL: card closed...): re-route by hand.
    REFUND_ABNORMAL = "REFUND_ABNORMAL"
    REVOKE_UNKNOWN = "REVOKE_UNKNOWN"
    # A closed insured order whose 2205 the insurer did not confirm within the schedule's attempts.
    PRESETTLEMENT_OPEN = "PRESETTLEMENT_OPEN"
    # A refund by lines: the re-settlement's 2206/2207 outcome stayed unknown for the schedule.
    RESETTLE_UNKNOWN = "RESETTLE_UNKNOWN"
    # A refund by lines: the insurer refused to pre-settle or settle the remaining lines again.
    RESETTLE_REFUSED = "RESETTLE_REFUSED"
    # A refund by lines: the insurer's new split does not fit (a larger cash share than was paid,
    # not the cash the HIS expected back, or a split that does not add up). Never guessed.
    RESETTLE_MISMATCH = "RESETTLE_MISMATCH"


# An order in one of these may be refunded in full: settled, or holding cash it must give back.
REFUNDABLE_ATTENTION = frozenset({Attention.PAID_AFTER_CLOSE, Attention.DUPLICATE_PAYMENT})


class PaymentStatus(enum.Enum):
    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CLOSED = "CLOSED"
    UNKNOWN = "UNKNOWN"


OPEN_PAYMENT = frozenset({PaymentStatus.PENDING, PaymentStatus.UNKNOWN})


class PaymentOutcome(enum.StrEnum):
    """What applying a channel success did."""

    DUPLICATE = "DUPLICATE"
    AMOUNT_MISMATCH = "AMOUNT_MISMATCH"
    SETTLING = "SETTLING"
    SETTLED = "SETTLED"
    # Kept, but the cash share is not complete yet (or the order is closing and gives it back).
    PART_PAID = "PART_PAID"
    NEEDS_REFUND = "NEEDS_REFUND"


class RefundStatus(enum.Enum):
    # Recorded (its amount reserved), not yet accepted by the channel.
    PENDING = "PENDING"
    # Accepted by the channel; the money is on its way back (a notification or a query ends it).
    PROCESSING = "PROCESSING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    UNKNOWN = "UNKNOWN"
    # The channel took it but could not deliver it; never re-issued, a person re-routes it.
    ABNORMAL = "ABNORMAL"


OPEN_REFUND = frozenset({RefundStatus.PENDING, RefundStatus.PROCESSING, RefundStatus.UNKNOWN})


class RefundKind(enum.Enum):
    # Asked for by the hospital (RefundPaymentOrder).
    REQUESTED = "REQUESTED"
    # Compensation: the insurer refused the settlement for good, so the cash goes back.
    COMPENSATION = "COMPENSATION"
    # Cash an order should not hold (paid after close, paid twice): given back, nothing revoked.
    EXCESS = "EXCESS"
    # A payment of an order that closes (asked, or expired) before it was paid in full: each
    # succeeded payment goes back to its own channel; the order's status does not move for it.
    RETURN = "RETURN"


@dataclass(frozen=True, slots=True)
class ChargeLine:
    """One line of the HIS bill, as carried to the insurer (money in fen)."""

    line_no: str
    hospital_code: str
    national_code: str
    name: str
    chrgitm_lv: str
    med_chrgitm_type: str
    quantity_ten_thousandths: int
    unit_price: Money
    line_total: Money
    dept_code: str
    doctor_code: str


def bill_total(lines: tuple[ChargeLine, ...] | list[ChargeLine]) -> Money:
    return total(line.line_total for line in lines)


@dataclass(frozen=True, slots=True)
class InsuranceSplit:
    """The insurer's split of a bill (setlinfo), every amount in fen."""

    medfee_sumamt: Money
    fulamt_ownpay_amt: Money
    overlmt_selfpay: Money
    preselfpay_amt: Money
    inscp_scp_amt: Money
    act_pay_dedc: Money
    hifp_pay: Money
    fund_pay_sumamt: Money
    psn_part_amt: Money
    acct_pay: Money
    psn_cash_pay: Money
    hosp_part_amt: Money
    balc: Money

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(item.name for item in fields(cls))

    @classmethod
    def from_fen(cls, amounts: dict[str, int]) -> InsuranceSplit:
        return cls(**{name: Money(amounts.get(name, 0)) for name in cls.field_names()})

    def as_fen(self) -> dict[str, int]:
        return {name: getattr(self, name).fen for name in self.field_names()}

    def problems(self, bill: Money) -> list[str]:
        """The identities the split must satisfy against the bill; empty when it adds up."""
        found = []
        if self.medfee_sumamt != bill:
            found.append(f"medfee_sumamt {self.medfee_sumamt.fen} != bill total {bill.fen}")
        covered = self.fund_pay_sumamt + self.acct_pay + self.psn_cash_pay + self.hosp_part_amt
        if covered != self.medfee_sumamt:
            found.append(f"fund + account + cash + hospital {covered.fen} != medfee {self.medfee_sumamt.fen}")
        if self.psn_part_amt != self.acct_pay + self.psn_cash_pay:
            found.append("psn_part_amt != acct_pay + psn_cash_pay")
        if any(getattr(self, name).is_negative() for name in self.field_names()):
            found.append("negative amount in the split")
        return found


@dataclass(frozen=True, slots=True)
class ChannelPaymentSeen:
    """What a channel says happened to one of our payment attempts (notification or query)."""

    out_trade_no: str
    transaction_id: str
    amount: Money
    success_time: datetime


@dataclass(frozen=True, slots=True)
class PosSlip:
    """A bank-card POS terminal's slip (签购单): (terminal_id, batch_no, reference_no) is one
    terminal transaction, unique in storage."""

    reference_no: str  # 参考号
    terminal_id: str  # 终端号
    batch_no: str  # 批次号
    masked_card_no: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.terminal_id, self.batch_no, self.reference_no)


@dataclass(slots=True)
class Payment:
    """One attempt to collect the cash share on one channel."""

    payment_id: str
    order_id: str
    attempt_no: int
    channel: str
    method: str
    amount: Money
    status: PaymentStatus
    out_trade_no: str
    created_at: datetime
    # NATIVE_QR / JSAPI: when the channel closes the unpaid attempt. BARCODE: when the patient's
    # confirmation is no longer waited for and the attempt is reversed (never sooner than the
    # channel allows after the payment call).
    expires_at: datetime | None = None
    channel_transaction_id: str = ""
    # The channel's handle of the attempt, set once the channel heard of it: the QR URL
    # (NATIVE_QR), the prepay_id (JSAPI), the masked payment code (BARCODE; never the code itself).
    code_url: str = ""
    succeeded_at: datetime | None = None
    # A success the order must not keep (it arrived after close, or the order was already paid).
    excess: bool = False
    # Maintained by storage (refunded_fen <= amount_fen); read-only in the domain.
    refunded: Money = Money(0)  # noqa: RUF009 - Money is frozen, so one shared default is safe
    # A window payment (CASH, POS): the cashier who took the money, and the POS terminal's slip.
    operator_id: str = ""
    pos: PosSlip | None = None

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_PAYMENT

    @property
    def at_window(self) -> bool:
        """Taken at the window before it was reported: nothing to place, query or close."""
        return self.method in WINDOW_METHODS

    @property
    def from_deposit(self) -> bool:
        """Paid from the inpatient's deposit: confirmed by the debit of its balance in storage."""
        return self.channel == CHANNEL_DEPOSIT

    @property
    def is_excess(self) -> bool:
        return self.excess and self.status is PaymentStatus.SUCCEEDED

    @property
    def is_kept(self) -> bool:
        """Succeeded and counted towards the order's cash share."""
        return self.status is PaymentStatus.SUCCEEDED and not self.excess

    @property
    def covers_share(self) -> bool:
        """Counts against the cash due: kept, or still open (it may yet be paid). Storage keeps the
        sum of these in payment_orders.cash_placed_fen under CHECK (<= cash_due_fen)."""
        return self.is_kept or self.is_open

    @property
    def refundable(self) -> Money:
        return self.amount - self.refunded if self.status is PaymentStatus.SUCCEEDED else Money(0)


@dataclass(slots=True)
class Refund:
    refund_id: str
    order_id: str
    payment_id: str | None
    refund_no: int
    kind: RefundKind
    cash: Money
    fund: Money
    personal_account: Money
    status: RefundStatus
    out_refund_no: str
    reason: str
    created_at: datetime
    channel_refund_id: str = ""
    succeeded_at: datetime | None = None
    # The refund the insurer's revocation (2208) was recorded on: it takes back the insurer's shares
    # with its cash (the other refunds of an order paid by several payments take back only theirs).
    revokes_settlement: bool = False
    # A refund paid out at the window (CASH, POS): the cashier who confirmed handing it over.
    operator_id: str = ""
    # The operator who asked for the refund (RefundPaymentOrder.operator_id); empty for the refunds
    # the platform makes itself (excess, return, compensation) and for callers that sent none.
    requested_by: str = ""

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_REFUND


class LineRefundStage(enum.Enum):
    """Where a refund by lines of an insured order stands (its steps: domain.process)."""

    REVOKING = "REVOKING"  # 2208 of the whole settlement
    PRESETTLING = "PRESETTLING"  # 2204 + 2206 of the remaining lines
    SETTLING = "SETTLING"  # 2207 of the new pre-settlement
    RESETTLED = "RESETTLED"  # settled again; the cash difference goes back by ordinary refunds
    REFUSED = "REFUSED"  # the insurer refused the 2208: nothing changed, the order is SETTLED again
    NEEDS_ATTENTION = "NEEDS_ATTENTION"  # stopped for a person (the order's attention says why)


IN_PROGRESS_LINE_REFUND = frozenset(
    {LineRefundStage.REVOKING, LineRefundStage.PRESETTLING, LineRefundStage.SETTLING}
)


@dataclass(frozen=True, slots=True)
class RefundedLine:
    """A charge line, or part of one, a refund takes off the bill (quantity 0: all that remains)."""

    line_no: str
    quantity_ten_thousandths: int


@dataclass(slots=True)
class LineRefund:
    """A partial refund of a settled insured order by lines: the whole settlement is revoked (2208),
    the remaining lines pre-settled and settled again, and the cash difference (old cash share −
    new) refunded by ordinary refunds with this `refund_id` (and `<refund_id>-<n>`)."""

    refund_id: str
    order_id: str
    line_refund_no: int
    lines: tuple[RefundedLine, ...]
    stage: LineRefundStage
    revoked_settlement_id: str
    reason: str
    created_at: datetime
    # The cash the HIS expects back (0: whatever the new split frees).
    expected_cash: Money = Money(0)  # noqa: RUF009 - Money is frozen, so one shared default is safe
    requested_by: str = ""
    new_settlement_id: str = ""
    # Old cash share − new, once the new pre-settlement is known.
    cash: Money = Money(0)  # noqa: RUF009 - Money is frozen, so one shared default is safe

    @property
    def in_progress(self) -> bool:
        return self.stage in IN_PROGRESS_LINE_REFUND
