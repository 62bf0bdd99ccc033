"""Facts, ingested event ids and feed cursors: rows <-> domain objects.

Every insert of an identity (an event id, an order, a refund...) is "insert unless present" with
RETURNING, so a repeat is detected by the database itself, not by a read before the write.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Insert, Table, bindparam, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from services.data_aggregation.adapters.orm import (
    feed_cursors,
    ingested_events,
    insurance_settlements,
    order_refunds,
    reconciliation_runs,
    settled_orders,
)
from services.data_aggregation.domain.facts import (
    Fact,
    FeedCursor,
    FeedEvent,
    InsuranceRevocation,
    InsuranceSettlementFact,
    OrderRefund,
    ReconciliationRunFact,
    SettledOrder,
)
from services.data_aggregation.domain.percentiles import SettlementSample
from services.data_aggregation.domain.summary import OrderGroup, RefundTotals
from services.runtime.money import Money
from services.runtime.prepared import prepared


async def insert_if_absent(session: AsyncSession, table: Table, values: dict[str, Any]) -> bool:
    """True when the row was inserted, False when its key was already there."""
    statement = _insert_unless_present(session.get_bind().dialect.name, table)
    return (await session.execute(statement, values)).first() is not None


async def insert_absent(session: AsyncSession, table: Table, rows: Sequence[dict[str, Any]]) -> set[Any]:
    """Insert those of `rows` whose key is not there yet, in one statement; the keys inserted."""
    if not rows:
        return set()
    statement = _insert_unless_present(session.get_bind().dialect.name, table)
    return set((await session.execute(statement, list(rows))).scalars())


@functools.cache
def _insert_unless_present(dialect_name: str, table: Table) -> Insert:
    """Built once per table (see services/runtime/statements.py); the values travel as parameters,
    so SQLAlchemy does not walk a new statement on every insert."""
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    key = next(iter(table.primary_key.columns))
    statement: Insert = dialect.insert(table).on_conflict_do_nothing().returning(key)
    return prepared(statement)


@dataclass(frozen=True, slots=True)
class CursorStep:
    source_service: str
    from_sequence: int
    to_sequence: int
    new_events: int
    head_sequence: int


# A page's cursor move, only from where the page started (built once: runtime.prepared).
_ADVANCE_CURSOR = prepared(
    update(feed_cursors)
    .where(
        feed_cursors.c.source_service == bindparam("source"),
        feed_cursors.c.cursor == bindparam("from_sequence"),
    )
    .values(
        cursor=bindparam("to_sequence"),
        events_ingested=feed_cursors.c.events_ingested + bindparam("new_events"),
        head_sequence=bindparam("head_sequence"),
        updated_at=bindparam("now"),
    )
    .returning(feed_cursors.c.source_service)
)


class CursorRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def ensure(self, source_service: str, now: datetime) -> None:
        row = {"source_service": source_service, "cursor": 0, "events_ingested": 0, "head_sequence": 0}
        await insert_if_absent(self._session, feed_cursors, {**row, "updated_at": now})

    async def position(self, source_service: str) -> int:
        table = feed_cursors
        found = await self._session.scalar(
            select(table.c.cursor).where(table.c.source_service == source_service)
        )
        return int(found or 0)

    async def advance(self, step: CursorStep, now: datetime) -> bool:
        """Move the cursor only if it still stands where this page started (no other replica took
        the page meanwhile); False means someone did, and the caller's transaction must not commit."""
        result = await self._session.execute(
            _ADVANCE_CURSOR,
            {
                "source": step.source_service,
                "from_sequence": step.from_sequence,
                "to_sequence": step.to_sequence,
                "new_events": step.new_events,
                "head_sequence": step.head_sequence,
                "now": now,
            },
        )
        return result.first() is not None

    async def all(self) -> list[FeedCursor]:
        rows = (
            await self._session.execute(select(feed_cursors).order_by(feed_cursors.c.source_service))
        ).all()
        return [
            FeedCursor(row.source_service, row.cursor, row.events_ingested, row.head_sequence) for row in rows
        ]


class IngestedEvents:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def claim(self, source_service: str, events: Sequence[FeedEvent], now: datetime) -> set[str]:
        """The ids of `events` seen for the first time, from any source, at any position (one
        statement for the page)."""
        rows = [
            {
                "event_id": event.event_id,
                "source_service": source_service,
                "sequence": event.sequence,
                "event_type": event.event_type,
                "ingested_at": now,
            }
            for event in events
        ]
        return await insert_absent(self._session, ingested_events, rows)


# An inpatient's deposit top-up is money held for the patient (a liability), not a settled bill:
# neither it nor the deposit refunds that give it back count in the day's bills and refunds (the
# bill paid from the deposit at discharge does).
DEPOSIT_SCENE = "INPATIENT_DEPOSIT"


class FactRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, fact: Fact) -> bool:
        """Keep a fact; False when its business key is already kept (or nothing to revoke)."""
        if isinstance(fact, InsuranceRevocation):
            return await self._revoke(fact)
        table, row = _fact_row(fact)
        return await insert_if_absent(self._session, table, row)

    async def _revoke(self, revocation: InsuranceRevocation) -> bool:
        table = insurance_settlements
        result = await self._session.execute(
            update(table)
            .where(table.c.settlement_id == revocation.settlement_id, table.c.revoked.is_(False))
            .values(revoked=True)
            .returning(table.c.settlement_id)
        )
        return result.first() is not None

    async def order_groups(self, business_date: date) -> list[OrderGroup]:
        t = settled_orders
        dimensions = (t.c.scene, t.c.channel, t.c.insutype, t.c.dept_code)
        query = (
            select(*dimensions, func.count(), *(func.sum(column) for column in _SPLIT_COLUMNS))
            .where(t.c.business_date == business_date, t.c.scene != DEPOSIT_SCENE)
            .group_by(*dimensions)
        )
        rows = (await self._session.execute(query)).all()
        return [_order_group(row) for row in rows]

    async def refund_totals(self, business_date: date) -> RefundTotals:
        t = order_refunds
        sums = (
            func.coalesce(func.sum(column), 0)
            for column in (t.c.cash_fen, t.c.fund_fen, t.c.personal_account_fen)
        )
        top_ups = select(settled_orders.c.order_id).where(settled_orders.c.scene == DEPOSIT_SCENE)
        row = (
            await self._session.execute(
                select(func.count(), *sums).where(
                    t.c.business_date == business_date, t.c.order_id.not_in(top_ups)
                )
            )
        ).one()
        return RefundTotals(int(row[0]), Money(int(row[1])), Money(int(row[2])), Money(int(row[3])))

    async def settlement_samples(self, business_date: date) -> list[SettlementSample]:
        t = settled_orders
        query = select(t.c.scene, t.c.channel, t.c.settle_ms).where(t.c.business_date == business_date)
        return [
            SettlementSample(row[0], row[1], int(row[2]))
            for row in (await self._session.execute(query)).all()
        ]


_SPLIT_COLUMNS = (settled_orders.c.fund_fen, settled_orders.c.personal_account_fen, settled_orders.c.cash_fen)


def _order_group(row: Any) -> OrderGroup:
    # SUM of BIGINT is NUMERIC on PostgreSQL (Decimal) and INTEGER on SQLite: int() either way.
    scene, channel, insutype, dept_code, count, fund, personal_account, cash = row
    return OrderGroup(
        scene, channel, insutype, dept_code, int(count), Money(int(fund)), Money(int(personal_account)),
        Money(int(cash)),
    )  # fmt: skip


def _fact_row(fact: Fact) -> tuple[Table, dict[str, Any]]:
    if isinstance(fact, SettledOrder):
        return settled_orders, _settled_order_row(fact)
    if isinstance(fact, OrderRefund):
        return order_refunds, _refund_row(fact)
    if isinstance(fact, InsuranceSettlementFact):
        return insurance_settlements, _settlement_row(fact)
    if isinstance(fact, ReconciliationRunFact):
        return reconciliation_runs, _run_row(fact)
    raise TypeError(f"no table keeps {type(fact).__name__}")


def _settled_order_row(order: SettledOrder) -> dict[str, Any]:
    return {
        "order_id": order.order_id, "scene": order.scene, "channel": order.channel,
        "campus_code": order.campus_code, "dept_code": order.dept_code, "insutype": order.insutype,
        "total_fen": order.total.fen, "fund_fen": order.fund.fen,
        "personal_account_fen": order.personal_account.fen, "cash_fen": order.cash.fen,
        "created_at": order.created_at, "settled_at": order.settled_at, "settle_ms": order.settle_ms,
        "business_date": order.business_date,
    }  # fmt: skip


def _refund_row(refund: OrderRefund) -> dict[str, Any]:
    return {
        "refund_id": refund.refund_id, "order_id": refund.order_id, "channel": refund.channel,
        "cash_fen": refund.cash.fen, "fund_fen": refund.fund.fen,
        "personal_account_fen": refund.personal_account.fen, "business_date": refund.business_date,
    }  # fmt: skip


def _settlement_row(settlement: InsuranceSettlementFact) -> dict[str, Any]:
    return {
        "settlement_id": settlement.settlement_id, "setl_id": settlement.setl_id,
        "order_ref": settlement.order_ref, "insutype": settlement.insutype, "med_type": settlement.med_type,
        "medfee_fen": settlement.medfee.fen, "fund_fen": settlement.fund.fen,
        "personal_account_fen": settlement.personal_account.fen, "cash_fen": settlement.cash.fen,
        "revoked": False,
    }  # fmt: skip


def _run_row(run: ReconciliationRunFact) -> dict[str, Any]:
    return {
        "run_id": run.run_id, "business_date": run.business_date, "matched_count": run.matched_count,
        "discrepancy_count": run.discrepancy_count,
    }  # fmt: skip
