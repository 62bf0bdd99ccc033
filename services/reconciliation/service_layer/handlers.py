"""The business steps of reconciliation: run a day, and read runs and their discrepancies."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime

from services.reconciliation.adapters.events import reconciliation_completed
from services.reconciliation.domain.matching import day_totals, insured_types, reconcile_day
from services.reconciliation.domain.model import (
    ChannelBill,
    DiscrepancyClass,
    InsurerStatement,
    PlatformTransaction,
    ReconciliationRun,
    RecordedDiscrepancy,
)
from services.reconciliation.service_layer.ports import (
    ChannelBillSource,
    InsurerTotalsSource,
    PlatformLedgerSource,
    SourceUnavailable,
)
from services.reconciliation.service_layer.unit_of_work import UnitOfWork
from services.runtime.clock import new_id, utcnow
from services.runtime.errors import NotFound
from services.runtime.telemetry import ATTR_RUN_ID, tracer

log = logging.getLogger(__name__)
_NOT_IN_REQUEST_ID = re.compile(r"[^A-Za-z0-9_-]")


@dataclass
class _ReadSoFar:
    """What a run has read; a failed run stores the totals of exactly this."""

    platform: list[PlatformTransaction] | None = None
    bill: ChannelBill | None = None
    statements: list[InsurerStatement] = field(default_factory=list)


class ReconciliationHandlers:
    def __init__(
        self,
        unit_of_work: Callable[[], UnitOfWork],
        platform_ledger: PlatformLedgerSource,
        channel_bill: ChannelBillSource,
        insurer_totals: InsurerTotalsSource,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._uow = unit_of_work
        self._platform_ledger = platform_ledger
        self._channel_bill = channel_bill
        self._insurer_totals = insurer_totals
        self._clock = clock

    async def run_reconciliation(self, business_date: date) -> ReconciliationRun:
        """Reconcile one day to the end. The RUNNING row is committed first so a run that dies
        half-way is still visible; a source that cannot be read fails the run, with the reason."""
        run = ReconciliationRun.start(new_id("rcn"), business_date, self._clock())
        with tracer(__name__).start_as_current_span("reconcile business day") as span:
            span.set_attribute(ATTR_RUN_ID, run.run_id)
            async with self._uow() as uow:
                await uow.runs.add(run)
            read = _ReadSoFar()
            try:
                await self._read_sources(run, read)
            except SourceUnavailable as failure:
                return await self._fail(run, failure, read)
            return await self._complete(run, read)

    async def _read_sources(self, run: ReconciliationRun, read: _ReadSoFar) -> None:
        day = run.business_date
        read.platform = await self._platform_ledger.transactions(day)
        read.bill = await self._channel_bill.trade_bill(day)
        for insutype in insured_types(read.platform):
            request_id = _totals_request_id(run, insutype)
            read.statements.append(await self._insurer_totals.reconcile_totals(day, insutype, request_id))

    async def _complete(self, run: ReconciliationRun, read: _ReadSoFar) -> ReconciliationRun:
        if read.platform is None or read.bill is None:
            raise RuntimeError("a run completes only after every source was read")
        outcome = reconcile_day(read.platform, read.bill, read.statements)
        now = self._clock()
        done = run.completed(outcome.matched_count, len(outcome.discrepancies), outcome.totals, now)
        async with self._uow() as uow:
            await uow.runs.save(done)
            await uow.discrepancies.add_all(run.run_id, outcome.discrepancies, now)
            await uow.record_event(reconciliation_completed(done))
        log.info("reconciliation %s of %s: %d matched, %d discrepancies", run.run_id, run.business_date,
                 done.matched_count, done.discrepancy_count)  # fmt: skip
        return done

    async def _fail(
        self, run: ReconciliationRun, failure: SourceUnavailable, read: _ReadSoFar
    ) -> ReconciliationRun:
        log.warning("reconciliation %s of %s failed: %s", run.run_id, run.business_date, failure)
        totals = day_totals(read.platform, read.bill, read.statements)
        failed = run.failed(str(failure), totals, self._clock())
        async with self._uow() as uow:
            await uow.runs.save(failed)
        return failed

    async def reconciliation_run(self, run_id: str) -> ReconciliationRun:
        async with self._uow() as uow:
            run = await uow.runs.get(run_id)
        if run is None:
            raise NotFound(f"reconciliation run {run_id} not found", {"run_id": run_id})
        return run

    async def reconciliation_runs(
        self, limit: int, after: tuple[datetime, str] | None, business_date: date | None
    ) -> list[ReconciliationRun]:
        async with self._uow() as uow:
            return await uow.runs.newest_first(limit, after, business_date)

    async def discrepancies(
        self, run_id: str, limit: int, after_ordinal: int, discrepancy_class: DiscrepancyClass | None
    ) -> list[RecordedDiscrepancy]:
        async with self._uow() as uow:
            if await uow.runs.get(run_id) is None:
                raise NotFound(f"reconciliation run {run_id} not found", {"run_id": run_id})
            return await uow.discrepancies.of_run(run_id, limit, after_ordinal, discrepancy_class)


def _totals_request_id(run: ReconciliationRun, insutype: str) -> str:
    """Derived from the run and the insurance type, so a retried 3201 is the same exchange."""
    return f"{run.run_id}-3201-{_NOT_IN_REQUEST_ID.sub('_', insutype)}"[:64]
