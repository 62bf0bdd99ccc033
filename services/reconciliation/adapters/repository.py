"""Runs, their source totals and their discrepancies: rows <-> domain objects."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import and_, delete, insert, or_, select, update
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


class RunRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, run: ReconciliationRun) -> None:
        await self._session.execute(insert(reconciliation_runs).values(**_run_row(run)))
        await self._save_totals(run)

    async def save(self, run: ReconciliationRun) -> None:
        """Store a run's outcome (completed or failed) over its RUNNING row."""
        table = reconciliation_runs
        await self._session.execute(update(table).where(table.c.run_id == run.run_id).values(**_run_row(run)))
        await self._save_totals(run)

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

    async def add_all(self, run_id: str, findings: tuple[Discrepancy, ...], found_at: datetime) -> None:
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
    }


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
