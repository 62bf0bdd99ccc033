"""The business steps of reconciliation: run a day (as a job, see service_layer.jobs), and read runs
and their discrepancies."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime

from services.reconciliation.adapters.unit_of_work import UnitOfWork
from services.reconciliation.domain.model import DiscrepancyClass, ReconciliationRun, RecordedDiscrepancy
from services.reconciliation.service_layer.jobs import ReconciliationJobs
from services.runtime.errors import NotFound


class ReconciliationHandlers:
    def __init__(self, unit_of_work: Callable[[], UnitOfWork], jobs: ReconciliationJobs) -> None:
        self._uow = unit_of_work
        self._jobs = jobs

    async def start_reconciliation(self, business_date: date) -> ReconciliationRun:
        """The day's RUNNING run if it has one (one run per day at a time), else a new run, stored
        RUNNING before its execution starts in the background."""
        return await self._jobs.start(business_date)

    async def await_run(self, run_id: str, within_s: float) -> ReconciliationRun:
        """The run once it has ended (COMPLETED or FAILED), or still RUNNING after `within_s`."""
        return await self._jobs.wait(run_id, within_s)

    async def reconciliation_run(self, run_id: str) -> ReconciliationRun:
        return await self._jobs.run_of(run_id)

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
