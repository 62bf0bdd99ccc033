"""What a morning at the outpatient cashier produced: per-visit outcomes, refunds, totals in fen."""

from __future__ import annotations

from dataclasses import dataclass, field

from medpay.client import format_yuan
from rich.markup import escape
from rich.table import Table


@dataclass(frozen=True, slots=True)
class Failure:
    his_order_no: str
    step: str  # "create", "pay", "scan", "settle", "refund", "refund-confirm"
    error: str
    trace_id: str


@dataclass(frozen=True, slots=True)
class VisitOutcome:
    """One visit. Amounts are the settled order's split; all zero when the visit failed."""

    his_order_no: str
    dept_name: str
    insured: bool
    trace_id: str
    order_id: str = ""
    settled: bool = False
    total_fen: int = 0
    fund_fen: int = 0
    personal_account_fen: int = 0
    cash_fen: int = 0
    elapsed_ms: float = 0.0
    failure: Failure | None = None


@dataclass(frozen=True, slots=True)
class RefundOutcome:
    his_order_no: str
    order_id: str
    trace_id: str
    refunded: bool = False
    cash_fen: int = 0
    fund_fen: int = 0
    personal_account_fen: int = 0
    failure: Failure | None = None
    # The refunds the request became: one per payment of an order paid by several.
    refund_count: int = 0


@dataclass(frozen=True, slots=True)
class Totals:
    count: int = 0
    billed_fen: int = 0
    fund_fen: int = 0
    personal_account_fen: int = 0
    cash_fen: int = 0

    @property
    def adds_up(self) -> bool:
        return self.billed_fen == self.fund_fen + self.personal_account_fen + self.cash_fen


@dataclass
class MorningReport:
    visits: list[VisitOutcome] = field(default_factory=list)
    refunds: list[RefundOutcome] = field(default_factory=list)

    @property
    def settled(self) -> list[VisitOutcome]:
        return [visit for visit in self.visits if visit.settled]

    @property
    def failures(self) -> list[Failure]:
        outcomes: list[VisitOutcome | RefundOutcome] = [*self.visits, *self.refunds]
        return [outcome.failure for outcome in outcomes if outcome.failure is not None]

    @property
    def ok(self) -> bool:
        return not self.failures and self.settled_totals.adds_up

    @property
    def settled_totals(self) -> Totals:
        settled = self.settled
        return Totals(
            count=len(settled),
            billed_fen=sum(visit.total_fen for visit in settled),
            fund_fen=sum(visit.fund_fen for visit in settled),
            personal_account_fen=sum(visit.personal_account_fen for visit in settled),
            cash_fen=sum(visit.cash_fen for visit in settled),
        )

    @property
    def refunded_totals(self) -> Totals:
        done = [refund for refund in self.refunds if refund.refunded]
        fund = sum(refund.fund_fen for refund in done)
        account = sum(refund.personal_account_fen for refund in done)
        cash = sum(refund.cash_fen for refund in done)
        return Totals(sum(refund.refund_count for refund in done), fund + account + cash, fund, account, cash)

    @property
    def trace_ids(self) -> dict[str, str]:
        """HIS bill number -> the trace id of its visit."""
        return {visit.his_order_no: visit.trace_id for visit in self.visits}

    def insured_settled_trace(self) -> str | None:
        """The trace of one insured settlement (the demo prints it), preferably one whose cash share
        went through a channel, so it crosses every process; None when no insured visit settled."""
        insured = [visit for visit in self.settled if visit.insured]
        with_cash = [visit for visit in insured if visit.cash_fen > 0]
        return next((visit.trace_id for visit in [*with_cash, *insured]), None)


def report_table(report: MorningReport) -> Table:
    table = Table(title=f"HIS morning: {len(report.visits)} visits, {len(report.failures)} failures")
    for column in ("", "count", "billed", "fund", "personal account", "cash"):
        table.add_column(column, justify="left" if not column else "right")
    insured = sum(1 for visit in report.settled if visit.insured)
    for label, totals in (
        (f"settled ({insured} insured)", report.settled_totals),
        ("refunded", report.refunded_totals),
    ):
        table.add_row(
            label,
            str(totals.count),
            *map(
                format_yuan,
                (totals.billed_fen, totals.fund_fen, totals.personal_account_fen, totals.cash_fen),
            ),
        )
    return table


def failures_table(failures: list[Failure]) -> Table:
    table = Table(title="Failures")
    for column in ("HIS bill", "step", "error", "trace"):
        table.add_column(column)
    for failure in failures:
        table.add_row(failure.his_order_no, failure.step, escape(failure.error), failure.trace_id)
    return table
