"""Runs, their source totals and their discrepancies: rows <-> domain objects.

Every write to a RUNNING run is a compare-and-set on its lease (`save_over`, `renew`): it lands only
while the row is still RUNNING under the holder and attempt the writer read, so an execution that
lost its run to another process cannot overwrite what its successor writes.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, Update, and_, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.reconciliation.adapters.orm import discrepancies, reconciliation_runs, run_source_totals
from services.reconciliation.domain.model import (
    Discrepancy,
    DiscrepancyClass,
    DiscrepancyStatus,
    ReconciliationRun,
    RecordedDiscrepancy,
    RunStatus,
    SourceTotals,
)
from services.runtime.clock import as_utc, new_id
from services.runtime.money import Money

_RUNNING = reconciliation_runs.c.status == RunStatus.RUNNING.value


class RunRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add_unless_running(self, run: ReconciliationRun) -> ReconciliationRun | None:
        """Store a new RUNNING run, unless its day already has one (the partial unique index decides
        between concurrent requests): then answer that one, or None if it ended meanwhile."""
        running = await self.running_on(run.business_date)
        if running is not None:
            return running
        try:
            async with self._session.begin_nested():
                await self._session.execute(insert(reconciliation_runs).values(**_run_row(run)))
        except IntegrityError:
            return await self.running_on(run.business_date)
        return run

    async def running_on(self, business_date: date) -> ReconciliationRun | None:
        table = reconciliation_runs
        query = select(table).where(table.c.business_date == business_date, _RUNNING)
        row = (await self._session.execute(query)).one_or_none()
        return None if row is None else (await self._with_totals([row]))[0]

    async def abandoned(self, now: datetime, limit: int) -> list[ReconciliationRun]:
        """RUNNING runs whose lease ran out: their holder stopped renewing it (it died)."""
        table = reconciliation_runs
        query = select(table).where(_RUNNING, _lease_ran_out(now)).order_by(table.c.started_at)
        return await self._with_totals(list((await self._session.execute(query.limit(limit))).all()))

    async def save_over(
        self, was: ReconciliationRun, run: ReconciliationRun, expired_by: datetime | None = None
    ) -> bool:
        """Store `run` if the row is still RUNNING under `was`'s holder and attempt (and, for a
        takeover, its lease ran out by `expired_by`). False when someone else holds it now."""
        condition = _still_held(was)
        if expired_by is not None:
            condition = and_(condition, _lease_ran_out(expired_by))
        statement = update(reconciliation_runs).where(condition).values(**_run_row(run))
        if await self._rows_changed(statement) != 1:
            return False
        await self._save_totals(run)
        return True

    async def renew(self, run: ReconciliationRun, lease_until: datetime) -> bool:
        """Extend the lease of a run this holder is executing; False when it is no longer its own."""
        statement = update(reconciliation_runs).where(_still_held(run)).values(lease_expires_at=lease_until)
        return await self._rows_changed(statement) == 1

    async def hand_back(self, holder: str, now: datetime) -> int:
        """At shutdown: every run `holder` is executing gets an expired lease, so the next process
        takes it over at once, and the interrupted attempt is not counted against the run."""
        table = reconciliation_runs
        statement = (
            update(table)
            .where(table.c.holder == holder, _RUNNING)
            .values(lease_expires_at=now, attempts=table.c.attempts - 1)
        )
        return await self._rows_changed(statement)

    async def _rows_changed(self, statement: Update) -> int:
        result = cast("CursorResult[Any]", await self._session.execute(statement))
        return result.rowcount

    async def _save_totals(self, run: ReconciliationRun) -> None:
        table = run_source_totals
        await self._session.execute(delete(table).where(table.c.run_id == run.run_id))
        if run.totals:
            await self._session.execute(
                insert(table), [_totals_row(run.run_id, n, totals) for n, totals in enumerate(run.totals)]
            )

    async def get(self, run_id: str) -> ReconciliationRun | None:
        table = reconciliation_runs
        row = (await self._session.execute(select(table).where(table.c.run_id == run_id))).one_or_none()
        if row is None:
            return None
        return (await self._with_totals([row]))[0]

    async def newest_first(
        self, limit: int, after: tuple[datetime, str] | None, business_date: date | None
    ) -> list[ReconciliationRun]:
        """Keyset page: runs older than `after` (started_at, run_id), optionally of one day."""
        table = reconciliation_runs
        query = select(table).order_by(table.c.started_at.desc(), table.c.run_id.desc()).limit(limit)
        if business_date is not None:
            query = query.where(table.c.business_date == business_date)
        if after is not None:
            started_at, run_id = after
            same_moment_older_id = and_(table.c.started_at == started_at, table.c.run_id < run_id)
            query = query.where(or_(table.c.started_at < started_at, same_moment_older_id))
        return await self._with_totals(list((await self._session.execute(query)).all()))

    async def _with_totals(self, rows: list[Any]) -> list[ReconciliationRun]:
        table = run_source_totals
        run_ids = [row.run_id for row in rows]
        totals_rows = (
            await self._session.execute(
                select(table).where(table.c.run_id.in_(run_ids)).order_by(table.c.run_id, table.c.position)
            )
        ).all()
        totals: dict[str, list[SourceTotals]] = {}
        for totals_row in totals_rows:
            totals.setdefault(totals_row.run_id, []).append(_source_totals(totals_row))
        return [_run(row, tuple(totals.get(row.run_id, ()))) for row in rows]


class DiscrepancyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def replace_all(self, run_id: str, findings: tuple[Discrepancy, ...], found_at: datetime) -> None:
        """A run's findings, in place of whatever an earlier attempt of the same run stored."""
        await self._session.execute(delete(discrepancies).where(discrepancies.c.run_id == run_id))
        if findings:
            rows = [_discrepancy_row(run_id, ordinal, f, found_at) for ordinal, f in enumerate(findings, 1)]
            await self._session.execute(insert(discrepancies), rows)

    async def of_run(
        self, run_id: str, limit: int, after_ordinal: int, discrepancy_class: DiscrepancyClass | None
    ) -> list[RecordedDiscrepancy]:
        table = discrepancies
        query = (
            select(table)
            .where(table.c.run_id == run_id, table.c.ordinal > after_ordinal)
            .order_by(table.c.ordinal)
            .limit(limit)
        )
        if discrepancy_class is not None:
            query = query.where(table.c.discrepancy_class == discrepancy_class.value)
        return [_recorded(row) for row in (await self._session.execute(query)).all()]


def _run_row(run: ReconciliationRun) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "business_date": run.business_date,
        "status": run.status.value,
        "matched_count": run.matched_count,
        "discrepancy_count": run.discrepancy_count,
        "failure_reason": run.failure_reason,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "holder": run.holder,
        "lease_expires_at": run.lease_expires_at,
        "attempts": run.attempts,
        "last_error": run.last_error,
    }


def _still_held(run: ReconciliationRun) -> ColumnElement[bool]:
    table = reconciliation_runs
    return and_(
        table.c.run_id == run.run_id, _RUNNING, table.c.holder == run.holder, table.c.attempts == run.attempts
    )


def _lease_ran_out(by: datetime) -> ColumnElement[bool]:
    lease = reconciliation_runs.c.lease_expires_at
    return or_(lease.is_(None), lease <= by)


def _run(row: Any, totals: tuple[SourceTotals, ...]) -> ReconciliationRun:
    return ReconciliationRun(
        run_id=row.run_id,
        business_date=row.business_date,
        status=RunStatus(row.status),
        started_at=as_utc(row.started_at),
        finished_at=as_utc(row.finished_at) if row.finished_at is not None else None,
        matched_count=row.matched_count,
        discrepancy_count=row.discrepancy_count,
        totals=totals,
        failure_reason=row.failure_reason,
        holder=row.holder,
        lease_expires_at=as_utc(row.lease_expires_at) if row.lease_expires_at is not None else None,
        attempts=row.attempts,
        last_error=row.last_error,
    )


def _totals_row(run_id: str, position: int, totals: SourceTotals) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "position": position,
        "source": totals.source,
        "payment_count": totals.payment_count,
        "payment_fen": totals.payment.fen,
        "refund_count": totals.refund_count,
        "refund_fen": totals.refund.fen,
    }


def _source_totals(row: Any) -> SourceTotals:
    return SourceTotals(
        source=row.source,
        payment_count=row.payment_count,
        payment=Money(row.payment_fen),
        refund_count=row.refund_count,
        refund=Money(row.refund_fen),
    )


def _discrepancy_row(run_id: str, ordinal: int, finding: Discrepancy, found_at: datetime) -> dict[str, Any]:
    return {
        "discrepancy_id": new_id("dsc"),
        "run_id": run_id,
        "ordinal": ordinal,
        "discrepancy_class": finding.discrepancy_class.value,
        "status": DiscrepancyStatus.OPEN.value,
        "source": finding.source,
        "out_trade_no": finding.out_trade_no,
        "out_refund_no": finding.out_refund_no,
        "order_id": finding.order_id,
        "platform_amount_fen": finding.platform_amount.fen,
        "source_amount_fen": finding.source_amount.fen,
        "evidence": finding.evidence,
        "found_at": found_at,
    }


def _recorded(row: Any) -> RecordedDiscrepancy:
    finding = Discrepancy(
        discrepancy_class=DiscrepancyClass(row.discrepancy_class),
        source=row.source,
        evidence=row.evidence,
        out_trade_no=row.out_trade_no,
        out_refund_no=row.out_refund_no,
        order_id=row.order_id,
        platform_amount=Money(row.platform_amount_fen),
        source_amount=Money(row.source_amount_fen),
    )
    return RecordedDiscrepancy(
        discrepancy_id=row.discrepancy_id,
        run_id=row.run_id,
        ordinal=row.ordinal,
        status=DiscrepancyStatus(row.status),
        found_at=as_utc(row.found_at),
        finding=finding,
    )
