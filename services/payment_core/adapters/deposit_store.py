"""Deposit accounts in storage. The balance moves only by relative UPDATEs (never read, changed and
written back), under CHECK balance_fen >= 0: storage never holds a negative deposit. A movement the
balance does not cover is refused by the CHECK and raised as DepositInsufficient (the transaction
is then rolled back: nothing of the step is stored)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.payment_core.adapters import orm
from services.payment_core.domain.deposit import DepositAccount
from services.runtime.errors import DepositInsufficient
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

    async def get(self, inpatient_no: str, lock: bool = False) -> DepositAccount | None:
        """The account; `lock`: under its row lock (PostgreSQL; SQLite writers are serial anyway)."""
        table = orm.deposit_accounts
        query = select(table).where(table.c.inpatient_no == inpatient_no)
        row = (await self._session.execute(query.with_for_update() if lock else query)).one_or_none()
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

    # ---- paying from the deposit (CHANNEL_DEPOSIT) ---------------------------------------------------

    async def link_use(self, payment_id: str, inpatient_no: str, amount: Money) -> None:
        """The payment `payment_id` is to be paid from this account (recorded with the attempt)."""
        await self._session.execute(
            insert(orm.deposit_uses).values(
                payment_id=payment_id, inpatient_no=inpatient_no, amount_fen=amount.fen
            )
        )

    async def debit_use(self, payment_id: str) -> None:
        """The payment from the deposit succeeded: the balance goes down by its amount, refused by
        storage (DepositInsufficient) when it does not cover it."""
        uses = orm.deposit_uses
        row = (
            await self._session.execute(
                select(uses.c.inpatient_no, uses.c.amount_fen).where(uses.c.payment_id == payment_id)
            )
        ).one()
        await self._move(
            row.inpatient_no, -row.amount_fen, used_fen=orm.deposit_accounts.c.used_fen + row.amount_fen
        )

    async def credit_back_use(self, payment_id: str, amount: Money) -> None:
        """A refund of a payment from the deposit succeeded: the balance is given `amount` back
        (never more than the payment took: CHECK refunded_within_use)."""
        uses = orm.deposit_uses
        row = (
            await self._session.execute(
                update(uses)
                .where(uses.c.payment_id == payment_id)
                .values(refunded_fen=uses.c.refunded_fen + amount.fen)
                .returning(uses.c.inpatient_no)
            )
        ).one()
        await self._move(row.inpatient_no, amount.fen, used_fen=orm.deposit_accounts.c.used_fen - amount.fen)

    # ---- giving the deposit back (refunds of top-ups) -----------------------------------------------

    async def reserve_top_up_refund(self, order_id: str, amount: Money) -> None:
        """A refund of the top-up carried by `order_id` is recorded: taken from the balance now
        (DepositInsufficient below zero) and counted against the top-up (never more than it was)."""
        await self._refund_top_up(order_id, amount.fen)

    async def release_top_up_refund(self, order_id: str, amount: Money) -> None:
        """The refund failed for good: the balance has its amount back."""
        await self._refund_top_up(order_id, -amount.fen)

    async def _refund_top_up(self, order_id: str, fen: int) -> None:
        top_ups = orm.deposit_top_ups
        try:
            row = (
                await self._session.execute(
                    update(top_ups)
                    .where(top_ups.c.order_id == order_id)
                    .values(refunded_fen=top_ups.c.refunded_fen + fen)
                    .returning(top_ups.c.inpatient_no)
                )
            ).one()
        except IntegrityError as error:
            raise DepositInsufficient(
                "the refund is more than what the top-up brought in", {"order_id": order_id}
            ) from error
        await self._move(row.inpatient_no, -fen, refunded_fen=orm.deposit_accounts.c.refunded_fen + fen)

    async def _move(self, inpatient_no: str, balance_delta: int, **counter: Any) -> None:
        table = orm.deposit_accounts
        try:
            await self._session.execute(
                update(table)
                .where(table.c.inpatient_no == inpatient_no)
                .values(balance_fen=table.c.balance_fen + balance_delta, **counter)
            )
        except IntegrityError as error:
            raise DepositInsufficient(
                f"the deposit balance does not cover {-balance_delta} fen", {"inpatient_no": inpatient_no}
            ) from error

    async def top_up_refunded(self, order_id: str) -> Money:
        top_ups = orm.deposit_top_ups
        fen = await self._session.scalar(select(top_ups.c.refunded_fen).where(top_ups.c.order_id == order_id))
        return Money(fen or 0)

    # ---- the discharge ------------------------------------------------------------------------------

    async def link_discharge(self, inpatient_no: str, order_id: str, now: datetime) -> None:
        """The stay's discharge order (the primary key: one per stay), or the one replacing a
        discharge order that closed unpaid (the caller holds the account's row lock)."""
        table = orm.deposit_discharges
        replaced = await self._session.execute(
            update(table)
            .where(table.c.inpatient_no == inpatient_no)
            .values(order_id=order_id, created_at=now)
        )
        if not replaced.rowcount:  # type: ignore[attr-defined]
            await self._session.execute(
                insert(table).values(inpatient_no=inpatient_no, order_id=order_id, created_at=now)
            )

    async def discharge_of(self, inpatient_no: str) -> str | None:
        table = orm.deposit_discharges
        found = await self._session.scalar(
            select(table.c.order_id).where(table.c.inpatient_no == inpatient_no)
        )
        return str(found) if found is not None else None
