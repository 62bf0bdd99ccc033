"""The double-entry ledger in storage: append-only inserts, one transaction per transfer key."""

from __future__ import annotations

from sqlalchemy import BigInteger, String, column, func, insert, select, values
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
        """Insert a balanced transaction; False when its transfer key was posted already."""
        return entry.transfer_key in await self.post_all([entry])

    async def post_all(self, entries: list[LedgerTransaction]) -> set[str]:
        """Insert balanced transactions; answers the transfer keys posted now. A key posted already
        is left alone: the UNIQUE transfer_key decides (ON CONFLICT DO NOTHING), not a look first.
        PostgreSQL takes the transactions and their postings in one statement (two CTEs: the
        transaction rows, then the postings of the rows inserted); SQLite in two."""
        if not entries:
            return set()
        table = orm.ledger_transactions
        rows = [
            {"transfer_key": e.transfer_key, "order_id": e.order_id, "kind": e.kind,
             "occurred_at": e.occurred_at, "campus_code": e.campus_code}
            for e in entries
        ]  # fmt: skip
        lines = [
            (e.transfer_key, p.account, p.amount.fen, p.operator_id) for e in entries for p in e.postings
        ]
        if self._session.get_bind().dialect.name == "postgresql":
            return await self._post_in_one_statement(rows, lines)
        result = await self._session.execute(
            sqlite.insert(table)
            .values(rows)
            .on_conflict_do_nothing(index_elements=[table.c.transfer_key])
            .returning(table.c.id, table.c.transfer_key)
        )
        posted = {key: transaction_id for transaction_id, key in result.all()}
        if posted:
            await self._session.execute(
                insert(orm.ledger_postings),
                [{"transaction_id": posted[key], "account": account, "amount_fen": fen,
                  "operator_id": operator}
                 for key, account, fen, operator in lines if key in posted],
            )  # fmt: skip
        return set(posted)

    async def _post_in_one_statement(
        self, rows: list[dict[str, object]], lines: list[tuple[str, str, int, str]]
    ) -> set[str]:
        table, postings = orm.ledger_transactions, orm.ledger_postings
        inserted = (
            postgresql.insert(table)
            .values(rows)
            .on_conflict_do_nothing(index_elements=[table.c.transfer_key])
            .returning(table.c.id, table.c.transfer_key)
            .cte("inserted")
        )
        given = values(
            column("transfer_key", String), column("account", String),
            column("amount_fen", BigInteger), column("operator_id", String), name="given",
        ).data(lines)  # fmt: skip
        new_postings = select(inserted.c.id, given.c.account, given.c.amount_fen, given.c.operator_id).join(
            given, given.c.transfer_key == inserted.c.transfer_key
        )
        # A data-modifying CTE runs whether or not the outer query reads it.
        posted = (
            insert(postings)
            .from_select(["transaction_id", "account", "amount_fen", "operator_id"], new_postings)
            .returning(postings.c.transaction_id)
            .cte("posted")
        )
        result = await self._session.execute(select(inserted.c.transfer_key).add_cte(posted))
        return set(result.scalars().all())

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
