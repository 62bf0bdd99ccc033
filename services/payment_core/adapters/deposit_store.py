"""Deposit accounts in storage. The balance moves only by relative UPDATEs (never read, changed and
written back), under CHECK balance_fen >= 0: storage never holds a negative deposit."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from services.payment_core.adapters import orm
from services.payment_core.domain.deposit import DepositAccount
from services.runtime.money import Money


class DepositStore:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def open(
        self, inpatient_no: str, campus_code: str, his_patient_id: str, now: datetime
    ) -> DepositAccount:
        """The account, created empty on the first top-up (one statement decides: the primary key)."""
        table = orm.deposit_accounts
        dialect = self._session.get_bind().dialect.name
        upsert = postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)
        await self._session.execute(
            upsert.values(
                inpatient_no=inpatient_no, campus_code=campus_code, his_patient_id=his_patient_id,
                balance_fen=0, topped_up_fen=0, used_fen=0, refunded_fen=0, created_at=now,
            ).on_conflict_do_nothing(index_elements=[table.c.inpatient_no])
        )  # fmt: skip
        account = await self.get(inpatient_no)
        assert account is not None
        return account

    async def link(self, order_id: str, inpatient_no: str, amount: Money) -> None:
        await self._session.execute(
            insert(orm.deposit_top_ups).values(
                order_id=order_id, inpatient_no=inpatient_no, amount_fen=amount.fen
            )
        )

    async def credit_top_up(self, order_id: str) -> bool:
        """The top-up carried by this order has been paid: its account grows by its amount. False
        when the order carries no top-up."""
        top_ups = orm.deposit_top_ups
        row = (
            await self._session.execute(
                select(top_ups.c.inpatient_no, top_ups.c.amount_fen).where(top_ups.c.order_id == order_id)
            )
        ).one_or_none()
        if row is None:
            return False
        table = orm.deposit_accounts
        await self._session.execute(
            update(table)
            .where(table.c.inpatient_no == row.inpatient_no)
            .values(
                balance_fen=table.c.balance_fen + row.amount_fen,
                topped_up_fen=table.c.topped_up_fen + row.amount_fen,
            )
        )
        return True

    async def get(self, inpatient_no: str) -> DepositAccount | None:
        table = orm.deposit_accounts
        row = (
            await self._session.execute(select(table).where(table.c.inpatient_no == inpatient_no))
        ).one_or_none()
        if row is None:
            return None
        return DepositAccount(
            inpatient_no=row.inpatient_no, campus_code=row.campus_code, his_patient_id=row.his_patient_id,
            balance=Money(row.balance_fen), topped_up=Money(row.topped_up_fen), used=Money(row.used_fen),
            refunded=Money(row.refunded_fen),
        )  # fmt: skip

    async def top_up_orders(self, inpatient_no: str) -> list[str]:
        """The orders carrying the account's top-ups, oldest first (paid or not)."""
        top_ups = orm.deposit_top_ups
        orders = orm.payment_orders
        rows = await self._session.execute(
            select(top_ups.c.order_id)
            .join(orders, orders.c.order_id == top_ups.c.order_id)
            .where(top_ups.c.inpatient_no == inpatient_no)
            .order_by(orders.c.created_at, top_ups.c.order_id)
        )
        return list(rows.scalars())
