"""The double-entry ledger in storage: append-only inserts, one transaction per transfer key."""

from __future__ import annotations

from sqlalchemy import func, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from services.payment_core.adapters import orm
from services.payment_core.domain.ledger import LedgerTransaction, Posting
from services.runtime.clock import as_utc
from services.runtime.money import Money


class LedgerStore:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def post(self, entry: LedgerTransaction) -> bool:
        """Insert a balanced transaction; False when its transfer key was posted already. One
        statement decides: the UNIQUE transfer_key (ON CONFLICT DO NOTHING), not a look first."""
        table = orm.ledger_transactions
        dialect = self._session.get_bind().dialect.name
        upsert = postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)
        result = await self._session.execute(
            upsert.values(
                transfer_key=entry.transfer_key,
                order_id=entry.order_id,
                kind=entry.kind,
                occurred_at=entry.occurred_at,
                campus_code=entry.campus_code,
            )
            .on_conflict_do_nothing(index_elements=[table.c.transfer_key])
            .returning(table.c.id)
        )
        transaction_id = result.scalar_one_or_none()
        if transaction_id is None:
            return False
        await self._session.execute(
            insert(orm.ledger_postings),
            [{"transaction_id": transaction_id, "account": p.account, "amount_fen": p.amount.fen,
              "operator_id": p.operator_id}
             for p in entry.postings],
        )  # fmt: skip
        return True

    async def find(self, transfer_key: str) -> LedgerTransaction | None:
        table = orm.ledger_transactions
        row = (
            await self._session.execute(select(table).where(table.c.transfer_key == transfer_key))
        ).one_or_none()
        if row is None:
            return None
        postings = orm.ledger_postings
        lines = (
            await self._session.execute(
                select(postings.c.account, postings.c.amount_fen, postings.c.operator_id)
                .where(postings.c.transaction_id == row.id)
                .order_by(postings.c.id)
            )
        ).all()
        return LedgerTransaction(
            transfer_key=row.transfer_key,
            order_id=row.order_id,
            kind=row.kind,
            occurred_at=as_utc(row.occurred_at),
            postings=tuple(Posting(line.account, Money(line.amount_fen), line.operator_id) for line in lines),
            campus_code=row.campus_code,
        )

    async def transactions_of(self, order_id: str) -> list[LedgerTransaction]:
        table = orm.ledger_transactions
        keys = (
            await self._session.execute(
                select(table.c.transfer_key).where(table.c.order_id == order_id).order_by(table.c.id)
            )
        ).scalars()
        found = [await self.find(key) for key in keys.all()]
        return [entry for entry in found if entry is not None]

    async def trial_balance(self) -> dict[str, Money]:
        """Balance of every account over the whole ledger (debit positive); sums to zero."""
        postings = orm.ledger_postings
        rows = (
            await self._session.execute(
                select(postings.c.account, func.sum(postings.c.amount_fen)).group_by(postings.c.account)
            )
        ).all()
        return {account: Money(int(fen)) for account, fen in sorted(rows)}
