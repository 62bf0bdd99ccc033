"""Read side: order lists and the day's money movements for reconciliation. Keyset pagination, so a
page never skips or repeats a row while new orders arrive."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import and_, bindparam, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from services.payment_core.adapters import orm
from services.payment_core.adapters.repository import OrderRepository
from services.payment_core.domain.order import PaymentOrder
from services.runtime.clock import as_utc, business_day_bounds
from services.runtime.money import Money
from services.runtime.prepared import prepared

PAYMENT, REFUND = 1, 2
Cursor = dict[str, Any]


@dataclass(frozen=True, slots=True)
class MoneyMovement:
    """One payment or refund of the day, with the insurance side of its order."""

    kind: int
    order_id: str
    payment_id: str
    refund_id: str
    channel: str
    out_trade_no: str
    out_refund_no: str
    channel_transaction_id: str
    amount: Money
    status: str
    occurred_at: datetime
    setl_id: str
    insutype: str
    fund: Money
    personal_account: Money
    medfee: Money

    def cursor(self) -> Cursor:
        return {"t": self.occurred_at.isoformat(), "k": self.kind, "id": self.key}

    @property
    def key(self) -> str:
        """What orders movements of one kind at one moment: the id its own keyset compares (a
        refund carries its payment's id too; its cursor must still be the refund's)."""
        return self.refund_id if self.kind == REFUND else self.payment_id


class OrderQueries:
    def __init__(self, session: AsyncSession, orders: OrderRepository) -> None:
        self._session = session
        self._orders = orders

    async def list_orders(
        self, page_size: int, cursor: Cursor | None, status: str | None, day: date | None, his_patient_id: str
    ) -> tuple[list[PaymentOrder], Cursor | None]:
        """Newest first."""
        table = orm.payment_orders
        query = (
            select(table).order_by(table.c.created_at.desc(), table.c.order_id.desc()).limit(page_size + 1)
        )
        if status:
            query = query.where(table.c.status == status)
        if day is not None:
            start, end = business_day_bounds(day)
            query = query.where(table.c.created_at >= start, table.c.created_at < end)
        if his_patient_id:
            query = query.where(table.c.his_patient_id == his_patient_id)
        if cursor:
            moment = datetime.fromisoformat(str(cursor["t"]))
            newer = and_(table.c.created_at == moment, table.c.order_id < str(cursor["id"]))
            query = query.where(or_(table.c.created_at < moment, newer))
        rows = (await self._session.execute(query)).all()
        orders = await self._orders.hydrate(rows[:page_size])
        more = len(rows) > page_size
        return orders, ({"t": orders[-1].created_at.isoformat(), "id": orders[-1].order_id} if more else None)

    async def movements_of_day(
        self, day: date, page_size: int, cursor: Cursor | None
    ) -> tuple[list[MoneyMovement], Cursor | None]:
        """Succeeded payments and refunds whose success falls on the business day (Asia/Shanghai),
        in time order."""
        bounds = business_day_bounds(day)
        found = await self._payments(bounds, cursor, page_size + 1) + await self._refunds(
            bounds, cursor, page_size + 1
        )
        found.sort(key=lambda m: (m.occurred_at, m.kind, m.key))
        page = found[:page_size]
        return page, (page[-1].cursor() if len(found) > page_size else None)

    async def _payments(
        self, bounds: tuple[datetime, datetime], cursor: Cursor | None, limit: int
    ) -> list[MoneyMovement]:
        pay, order = orm.payments, orm.payment_orders
        query = (
            select(pay, *_insurance_columns())
            .join(order, order.c.order_id == pay.c.order_id)
            .where(
                pay.c.status == "SUCCEEDED", pay.c.succeeded_at >= bounds[0], pay.c.succeeded_at < bounds[1]
            )
            .where(_after(cursor, PAYMENT, pay.c.succeeded_at, pay.c.payment_id))
            .order_by(pay.c.succeeded_at, pay.c.payment_id)
            .limit(limit)
        )
        return [_payment_movement(row) for row in (await self._session.execute(query)).all()]

    async def _refunds(
        self, bounds: tuple[datetime, datetime], cursor: Cursor | None, limit: int
    ) -> list[MoneyMovement]:
        back, pay, order = orm.refunds, orm.payments, orm.payment_orders
        query = (
            select(
                back, pay.c.channel, pay.c.out_trade_no, pay.c.channel_transaction_id, *_insurance_columns()
            )
            .join(order, order.c.order_id == back.c.order_id)
            .outerjoin(pay, pay.c.payment_id == back.c.payment_id)
            .where(
                back.c.status == "SUCCEEDED",
                back.c.succeeded_at >= bounds[0],
                back.c.succeeded_at < bounds[1],
            )
            .where(_after(cursor, REFUND, back.c.succeeded_at, back.c.refund_id))
            .order_by(back.c.succeeded_at, back.c.refund_id)
            .limit(limit)
        )
        return [_refund_movement(row) for row in (await self._session.execute(query)).all()]


class WorkLists:
    """What the janitor looks at: orders whose next step is due (see domain.process)."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def due_orders(self, now: datetime, limit: int) -> list[str]:
        """Orders whose due time has come, the longest-waiting first (an index range scan)."""
        found = await self._session.execute(_DUE_ORDERS, {"now": now, "limit": limit})
        return list(found.scalars().all())

    async def next_due(self) -> datetime | None:
        """When the next order falls due (None: nothing is waiting)."""
        order = orm.payment_orders
        query = select(order.c.due_at).where(order.c.due_at.is_not(None)).order_by(order.c.due_at).limit(1)
        found = (await self._session.execute(query)).scalar_one_or_none()
        return as_utc(found) if found is not None else None


# The janitor's look for due orders, every few seconds for ever: built once (runtime.prepared).
_DUE_ORDERS = prepared(
    select(orm.payment_orders.c.order_id)
    .where(orm.payment_orders.c.due_at.is_not(None), orm.payment_orders.c.due_at <= bindparam("now"))
    .order_by(orm.payment_orders.c.due_at)
    .limit(bindparam("limit"))
)


def _insurance_columns() -> list[Any]:
    order = orm.payment_orders
    return [
        order.c.setl_id,
        order.c.insutype,
        order.c.insured,
        order.c.split_fund_pay_sumamt_fen,
        order.c.split_acct_pay_fen,
        order.c.split_medfee_sumamt_fen,
    ]


def _after(cursor: Cursor | None, kind: int, moment: Any, key: Any) -> Any:
    """Rows of one stream that sort after the cursor in (time, kind, id) order."""
    if not cursor:
        return true()
    at, cursor_kind, cursor_id = datetime.fromisoformat(str(cursor["t"])), int(cursor["k"]), str(cursor["id"])
    if kind > cursor_kind:
        return moment >= at
    if kind < cursor_kind:
        return moment > at
    return or_(moment > at, and_(moment == at, key > cursor_id))


def _payment_movement(row: Any) -> MoneyMovement:
    return MoneyMovement(
        kind=PAYMENT, order_id=row.order_id, payment_id=row.payment_id, refund_id="", channel=row.channel,
        out_trade_no=row.out_trade_no, out_refund_no="", channel_transaction_id=row.channel_transaction_id,
        amount=Money(row.amount_fen), status="PAYMENT_STATUS_SUCCEEDED", occurred_at=as_utc(row.succeeded_at),
        setl_id=row.setl_id, insutype=row.insutype if row.insured else "",
        fund=Money(row.split_fund_pay_sumamt_fen or 0), personal_account=Money(row.split_acct_pay_fen or 0),
        medfee=Money(row.split_medfee_sumamt_fen or 0),
    )  # fmt: skip


def _refund_movement(row: Any) -> MoneyMovement:
    # The refund a revocation of the settlement (2208) was recorded on carries the settlement's
    # medfee, even when fund and account paid nothing, so reconciliation nets it the way 3201 does.
    # The other refunds of an order paid by several payments, compensation, excess and returns
    # revoke nothing.
    revoked = bool(row.revokes_settlement and row.insured and row.setl_id)
    return MoneyMovement(
        kind=REFUND, order_id=row.order_id, payment_id=row.payment_id or "", refund_id=row.refund_id,
        channel=row.channel or "NONE", out_trade_no=row.out_trade_no or "", out_refund_no=row.out_refund_no,
        channel_transaction_id=row.channel_transaction_id or "", amount=Money(row.cash_fen),
        status="REFUND_STATUS_SUCCEEDED", occurred_at=as_utc(row.succeeded_at), setl_id=row.setl_id,
        insutype=row.insutype if row.insured else "", fund=Money(row.fund_fen),
        personal_account=Money(row.personal_account_fen),
        medfee=Money(row.split_medfee_sumamt_fen or 0) if revoked else Money(0),
    )  # fmt: skip
