"""The nouns of a reconciliation run, in the finance office's words.

Three sources speak about one business day: the platform (what payment-core recorded), the channels'
trade bills (what WeChat Pay and Alipay say moved) and the insurer (its 3201 totals per insurance
type). A run compares them and keeps every disagreement as a discrepancy with evidence.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime
from enum import StrEnum

from services.runtime.money import Money

PLATFORM_SOURCE = "platform"
# Why an execution ended when all we know is that its holder stopped renewing the lease.
HOLDER_STOPPED = "the process executing it stopped before it finished (its lease expired)"
# Money is frozen, so one shared zero is a safe dataclass default.
NO_MONEY = Money(0)


class TransactionKind(StrEnum):
    PAYMENT = "PAYMENT"
    REFUND = "REFUND"


class RunStatus(StrEnum):
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


class DiscrepancyStatus(StrEnum):
    OPEN = "OPEN"
    RESOLVED = "RESOLVED"


class DiscrepancyClass(StrEnum):
    # 长款: the channel holds money the platform has no record of.
    CHANNEL_ONLY = "CHANNEL_ONLY"
    # 短款: the platform records money the channel's bill does not show.
    PLATFORM_ONLY = "PLATFORM_ONLY"
    AMOUNT_MISMATCH = "AMOUNT_MISMATCH"
    # Both sides know the transaction but disagree on its outcome (e.g. refunded on one side only).
    STATUS_MISMATCH = "STATUS_MISMATCH"
    DUPLICATE = "DUPLICATE"
    INSURER_TOTALS_MISMATCH = "INSURER_TOTALS_MISMATCH"


@dataclass(frozen=True, slots=True)
class PlatformTransaction:
    """One cash movement as payment-core recorded it (a row of its ExportTransactions)."""

    kind: TransactionKind
    order_id: str
    # Channel name as the payment standard spells it: "WECHAT_PAY", "ALIPAY", "CASH"...
    channel: str
    out_trade_no: str
    out_refund_no: str
    amount: Money
    # Status name without its prefix: "SUCCEEDED", "PENDING", "UNKNOWN", "FAILED", "CLOSED".
    status: str
    insutype: str = ""
    setl_id: str = ""
    # The insurance side of the order (its split for a payment, the revoked amounts for a refund).
    medfee: Money = Money(0)  # noqa: RUF009 - Money is frozen, so one shared default is safe
    fund: Money = Money(0)  # noqa: RUF009
    personal_account: Money = Money(0)  # noqa: RUF009

    @property
    def moved_money(self) -> bool:
        return self.status == "SUCCEEDED"

    @property
    def moved_insurance(self) -> bool:
        """A settled insurer settlement (payment) or its revocation (refund) of this day."""
        if not (self.moved_money and self.insutype and self.setl_id):
            return False
        revoked_amounts = (self.medfee.fen, self.fund.fen, self.personal_account.fen)
        return self.kind is TransactionKind.PAYMENT or any(revoked_amounts)

    @property
    def channel_key(self) -> str:
        """Payments are known to the channel by out_trade_no, refunds by out_refund_no."""
        return self.out_refund_no if self.kind is TransactionKind.REFUND else self.out_trade_no


def bill_source(channel: str) -> str:
    """The source name of a channel's bill: "wechat_pay" for WECHAT_PAY, "alipay" for ALIPAY."""
    return channel.lower()


@dataclass(frozen=True, slots=True)
class ChannelBillLine:
    """One detail row of a channel's trade bill, as payment-core's ExportChannelBill says it."""

    kind: TransactionKind
    out_trade_no: str
    out_refund_no: str
    channel_transaction_id: str
    channel_refund_id: str
    # ChannelBillRow.Status without its prefix: SUCCEEDED (collected or paid back), REVOKED,
    # PROCESSING, FAILED, ABNORMAL.
    status: str
    amount: Money
    # When it happened, ISO 8601 in UTC: evidence only.
    traded_at: str

    @property
    def moved_money(self) -> bool:
        return self.status == "SUCCEEDED"

    @property
    def channel_key(self) -> str:
        return self.out_refund_no if self.kind is TransactionKind.REFUND else self.out_trade_no


@dataclass(frozen=True, slots=True)
class ChannelBill:
    """A channel's bill for one day: which platform channel it covers, and its rows."""

    source: str
    channel: str
    business_date: date
    lines: tuple[ChannelBillLine, ...]


@dataclass(frozen=True, slots=True)
class InsurerFigures:
    medfee: Money
    fund: Money
    personal_account: Money
    settlement_count: int


@dataclass(frozen=True, slots=True)
class InsurerStatement:
    """The insurer's answer to one 3201 (医药机构费用结算对总账) for one insurance type."""

    insutype: str
    clr_type: str
    balanced: bool
    # stmt_rslt / stmt_rslt_dscr as the insurer sent them.
    result_code: str
    result_text: str
    # What the platform declared, and what the insurer holds when it reports it (else None).
    declared: InsurerFigures
    reported: InsurerFigures | None

    @property
    def source(self) -> str:
        return f"insurer:{self.insutype}"


@dataclass(frozen=True, slots=True)
class SourceTotals:
    """Money that moved on one source for the day: succeeded payments and refunds."""

    source: str
    payment_count: int
    payment: Money
    refund_count: int
    refund: Money


@dataclass(frozen=True, slots=True)
class Discrepancy:
    """One thing the sources disagree on, with what each side says."""

    discrepancy_class: DiscrepancyClass
    source: str
    evidence: str
    out_trade_no: str = ""
    out_refund_no: str = ""
    order_id: str = ""
    platform_amount: Money = NO_MONEY
    source_amount: Money = NO_MONEY


@dataclass(frozen=True, slots=True)
class RecordedDiscrepancy:
    """A discrepancy as stored with its run."""

    discrepancy_id: str
    run_id: str
    # Position within the run (the matcher's order); pages follow it.
    ordinal: int
    status: DiscrepancyStatus
    found_at: datetime
    finding: Discrepancy


@dataclass(frozen=True, slots=True)
class ReconciliationRun:
    """One reconciliation of one business day. A RUNNING run is a job: `holder` (a process) executes
    it while `lease_expires_at` lies ahead, renewing it as it works; a run whose lease ran out was
    abandoned (its process died) and is started again from a clean slate, `attempts` times at most."""

    run_id: str
    business_date: date
    status: RunStatus
    started_at: datetime
    finished_at: datetime | None = None
    matched_count: int = 0
    discrepancy_count: int = 0
    totals: tuple[SourceTotals, ...] = ()
    failure_reason: str = ""
    holder: str = ""
    lease_expires_at: datetime | None = None
    # Executions started so far (the first one included).
    attempts: int = 0
    # Why the previous execution ended without an outcome.
    last_error: str = ""

    @classmethod
    def start(
        cls, run_id: str, business_date: date, now: datetime, holder: str, lease_until: datetime
    ) -> ReconciliationRun:
        return cls(
            run_id=run_id, business_date=business_date, status=RunStatus.RUNNING, started_at=now,
            holder=holder, lease_expires_at=lease_until, attempts=1,
        )  # fmt: skip

    def lease_expired(self, now: datetime) -> bool:
        if self.status is not RunStatus.RUNNING:
            return False
        return self.lease_expires_at is None or self.lease_expires_at <= now

    def attempted_again(self, holder: str, lease_until: datetime, why_last_ended: str) -> ReconciliationRun:
        """The next execution, by `holder`, after the previous one ended without an outcome."""
        return replace(
            self, holder=holder, lease_expires_at=lease_until, attempts=self.attempts + 1,
            last_error=why_last_ended,
        )  # fmt: skip

    def given_up(self, why_last_ended: str, now: datetime) -> ReconciliationRun:
        """No attempt left: the run ends FAILED and says why, instead of staying RUNNING forever."""
        reason = f"gave up after {self.attempts} attempts; the last one ended: {why_last_ended}"
        return replace(
            self, status=RunStatus.FAILED, finished_at=now, failure_reason=reason, last_error=why_last_ended
        )

    def completed(
        self, matched_count: int, discrepancy_count: int, totals: tuple[SourceTotals, ...], now: datetime
    ) -> ReconciliationRun:
        return replace(
            self,
            status=RunStatus.COMPLETED,
            finished_at=now,
            matched_count=matched_count,
            discrepancy_count=discrepancy_count,
            totals=totals,
        )

    def failed(self, reason: str, totals: tuple[SourceTotals, ...], now: datetime) -> ReconciliationRun:
        """A source could not be read: keep the totals of what was read, and say which source failed."""
        return replace(self, status=RunStatus.FAILED, finished_at=now, totals=totals, failure_reason=reason)
