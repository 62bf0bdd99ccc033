"""Closed cashier shifts in storage, insert-only, and the ledger postings a shift reads."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Row, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.payment_core.adapters import orm
from services.payment_core.domain.shift import CLEARING_PREFIX, CashierShift, ChannelTotal, ClearingPosting
from services.runtime.clock import as_utc
from services.runtime.money import Money


class ShiftStore:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def at(self, cashier_id: str, campus_code: str, closed_at: datetime) -> CashierShift | None:
        """The cashier's shift closed at exactly `closed_at`, if it was closed already."""
        table = orm.cashier_shifts
        row = (
            await self._session.execute(
                select(table).where(
                    table.c.cashier_id == cashier_id,
                    table.c.campus_code == campus_code,
                    table.c.closed_at == closed_at,
                )
            )
        ).one_or_none()
        return await self._shift(row) if row else None

    async def latest(self, cashier_id: str, campus_code: str) -> CashierShift | None:
        """The cashier's last close at this campus (None before the first)."""
        table = orm.cashier_shifts
        row = (
            await self._session.execute(
                select(table)
                .where(table.c.cashier_id == cashier_id, table.c.campus_code == campus_code)
                .order_by(table.c.closed_at.desc())
                .limit(1)
            )
        ).one_or_none()
        return await self._shift(row) if row else None

    async def uncounted(self, cashier_id: str, campus_code: str, until: datetime) -> list[ClearingPosting]:
        """The cashier's clearing postings at this campus that occurred by `until` and that no shift
        has counted yet (late ones of an earlier period included)."""
        postings, transactions = orm.ledger_postings, orm.ledger_transactions
        counted = select(orm.cashier_shift_postings.c.posting_id)
        rows = (
            await self._session.execute(
                select(postings.c.id, postings.c.account, postings.c.amount_fen)
                .join(transactions, transactions.c.id == postings.c.transaction_id)
                .where(
                    postings.c.operator_id == cashier_id,
                    postings.c.account.startswith(CLEARING_PREFIX),
                    transactions.c.campus_code == campus_code,
                    transactions.c.occurred_at <= until,
                    postings.c.id.not_in(counted),
                )
                .order_by(postings.c.id)
            )
        ).all()
        return [ClearingPosting(row.id, row.account, Money(row.amount_fen)) for row in rows]

    async def add(self, shift: CashierShift, request_id: str, counted: Sequence[ClearingPosting]) -> None:
        """Store the shift, its totals and the postings it counted. IntegrityError when the same
        close, or a close counting one of the same postings, was stored first."""
        await self._session.execute(
            insert(orm.cashier_shifts).values(
                shift_id=shift.shift_id, request_id=request_id, cashier_id=shift.cashier_id,
                campus_code=shift.campus_code, opened_at=shift.opened_at, closed_at=shift.closed_at,
            )
        )  # fmt: skip
        if shift.totals:
            await self._session.execute(
                insert(orm.cashier_shift_totals),
                [{"shift_id": shift.shift_id, "channel": t.channel, "payment_count": t.payment_count,
                  "collected_fen": t.collected.fen, "refund_count": t.refund_count,
                  "refunded_fen": t.refunded.fen} for t in shift.totals],
            )  # fmt: skip
        if counted:
            await self._session.execute(
                insert(orm.cashier_shift_postings),
                [{"posting_id": p.posting_id, "shift_id": shift.shift_id} for p in counted],
            )

    async def _shift(self, row: Row[tuple[object, ...]]) -> CashierShift:
        totals = orm.cashier_shift_totals
        lines = (
            await self._session.execute(
                select(totals).where(totals.c.shift_id == row.shift_id).order_by(totals.c.channel)
            )
        ).all()
        return CashierShift(
            shift_id=row.shift_id,
            cashier_id=row.cashier_id,
            campus_code=row.campus_code,
            opened_at=as_utc(row.opened_at) if row.opened_at else None,
            closed_at=as_utc(row.closed_at),
            totals=tuple(
                ChannelTotal(
                    line.channel,
                    line.payment_count,
                    Money(line.collected_fen),
                    line.refund_count,
                    Money(line.refunded_fen),
                )
                for line in lines
            ),
        )
