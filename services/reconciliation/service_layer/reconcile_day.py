"""One execution of a run: read the three sources of its day, match them, and say how it ended.

It writes nothing: the job runner (service_layer.jobs) stores the outcome, and only while the run is
still its own, so an execution can be repeated from a clean slate after a crash.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from services.reconciliation.domain.matching import day_totals, insured_types, reconcile_day
from services.reconciliation.domain.model import (
    ChannelBill,
    Discrepancy,
    InsurerStatement,
    PlatformTransaction,
    ReconciliationRun,
)
from services.reconciliation.service_layer.ports import (
    ChannelBillSource,
    InsurerTotalsSource,
    PlatformLedgerSource,
    SourceUnavailable,
)
from services.runtime.clock import utcnow
from services.runtime.telemetry import ATTR_RUN_ID, tracer

log = logging.getLogger(__name__)
_NOT_IN_REQUEST_ID = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """How an execution ended: the run COMPLETED with its discrepancies, or FAILED with its reason
    (a source could not be read: a fact about the day, so it is not retried)."""

    run: ReconciliationRun
    discrepancies: tuple[Discrepancy, ...] = ()


@dataclass
class _ReadSoFar:
    """What a run has read; a failed run stores the totals of exactly this."""

    platform: list[PlatformTransaction] | None = None
    bills: list[ChannelBill] | None = None
    statements: list[InsurerStatement] = field(default_factory=list)


class DayReconciler:
    def __init__(
        self,
        platform_ledger: PlatformLedgerSource,
        channel_bills: ChannelBillSource,
        insurer_totals: InsurerTotalsSource,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._platform_ledger = platform_ledger
        self._channel_bills = channel_bills
        self._insurer_totals = insurer_totals
        self._clock = clock

    async def __call__(self, run: ReconciliationRun) -> RunOutcome:
        """Reconcile the run's day to the end. Anything but SourceUnavailable propagates: the job
        runner counts it as a failed attempt and tries again."""
        with tracer(__name__).start_as_current_span("reconcile business day") as span:
            span.set_attribute(ATTR_RUN_ID, run.run_id)
            read = _ReadSoFar()
            try:
                await self._read_sources(run, read)
            except SourceUnavailable as failure:
                return self._failed(run, failure, read)
            return self._completed(run, read)

    async def _read_sources(self, run: ReconciliationRun, read: _ReadSoFar) -> None:
        day = run.business_date
        read.platform = await self._platform_ledger.transactions(day)
        read.bills = await self._channel_bills.trade_bills(day)
        for insutype in insured_types(read.platform):
            request_id = _totals_request_id(run, insutype)
            read.statements.append(await self._insurer_totals.reconcile_totals(day, insutype, request_id))

    def _completed(self, run: ReconciliationRun, read: _ReadSoFar) -> RunOutcome:
        if read.platform is None or read.bills is None:
            raise RuntimeError("a run completes only after every source was read")
        outcome = reconcile_day(read.platform, read.bills, read.statements)
        done = run.completed(outcome.matched_count, len(outcome.discrepancies), outcome.totals, self._clock())
        return RunOutcome(done, outcome.discrepancies)

    def _failed(self, run: ReconciliationRun, failure: SourceUnavailable, read: _ReadSoFar) -> RunOutcome:
        log.warning("reconciliation %s of %s failed: %s", run.run_id, run.business_date, failure)
        totals = day_totals(read.platform, read.bills or [], read.statements)
        return RunOutcome(run.failed(str(failure), totals, self._clock()))


def _totals_request_id(run: ReconciliationRun, insutype: str) -> str:
    """Derived from the run and the insurance type, so a retried 3201 (a later attempt of the same
    run included) is the same exchange."""
    return f"{run.run_id}-3201-{_NOT_IN_REQUEST_ID.sub('_', insutype)}"[:64]
