"""The facts the data middle platform keeps, one kind per business event it listens to."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from services.runtime.money import Money

_ONE_MS = timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True)
class SettledOrder:
    """A payment order fully settled (payment-core's PaymentOrderSettled)."""

    order_id: str
    scene: str
    channel: str
    campus_code: str
    dept_code: str
    insutype: str
    total: Money
    fund: Money
    personal_account: Money
    cash: Money
    created_at: datetime
    settled_at: datetime
    business_date: date

    @property
    def settle_ms(self) -> int:
        """Order created → order settled: the paper's headline latency."""
        return (self.settled_at - self.created_at) // _ONE_MS

    @property
    def billed_total(self) -> Money:
        """What the bill was settled for: always the sum of who paid it."""
        return self.fund + self.personal_account + self.cash


@dataclass(frozen=True, slots=True)
class OrderRefund:
    """A refund that went through (payment-core's RefundSucceeded)."""

    refund_id: str
    order_id: str
    channel: str
    cash: Money
    fund: Money
    personal_account: Money
    business_date: date


@dataclass(frozen=True, slots=True)
class InsuranceSettlementFact:
    """An insurer settlement (insurance-adapter's InsuranceSettled)."""

    settlement_id: str
    setl_id: str
    order_ref: str
    insutype: str
    med_type: str
    medfee: Money
    fund: Money
    personal_account: Money
    cash: Money


@dataclass(frozen=True, slots=True)
class InsuranceRevocation:
    """An insurer settlement revoked (2208; insurance-adapter's InsuranceSettlementRevoked)."""

    settlement_id: str


@dataclass(frozen=True, slots=True)
class ReconciliationRunFact:
    """A completed reconciliation run (reconciliation's ReconciliationCompleted)."""

    run_id: str
    business_date: date
    matched_count: int
    discrepancy_count: int


Fact = SettledOrder | OrderRefund | InsuranceSettlementFact | InsuranceRevocation | ReconciliationRunFact


@dataclass(frozen=True, slots=True)
class FeedEvent:
    """One event of a source's feed: its identity and position, and the fact it carries (None for
    events this platform does not keep, which are still ingested so the cursor can pass them)."""

    event_id: str
    sequence: int
    event_type: str
    fact: Fact | None


@dataclass(frozen=True, slots=True)
class FeedCursor:
    """Where ingest stands for one source: the last sequence taken and how many events so far."""

    source_service: str
    cursor: int
    events_ingested: int
    head_sequence: int
