"""The double-entry ledger in storage: append-only inserts, one transaction per transfer key."""

from __future__ import annotations

from sqlalchemy import func, insert, select, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from services.payment_core.adapters import orm
from services.payment_core.domain.ledger import LedgerTransaction, Posting
from services.runtime.clock import as_utc
from services.runtime.money import Money
from services.runtime.prepared import prepared

# PostgreSQL: a turn's transactions and their postings in one statement, the same text for any
# number of them (arrays unnested), so it is prepared once (runtime.prepared). The transaction rows
# first (a key posted already is skipped: ON CONFLICT DO NOTHING), then the postings of the rows
# inserted now, in the order given. A data-modifying CTE runs whether or not the outer query reads it.
_POST_ON_POSTGRES = prepared(
    text(
        """
        WITH inserted AS (
            INSERT INTO ledger_transactions (transfer_key, order_id, kind, occurred_at, campus_code)
            SELECT * FROM unnest(
                CAST(:transfer_keys AS varchar[]), CAST(:order_ids AS varchar[]),
                CAST(:kinds AS varchar[]), CAST(:occurred_ats AS timestamptz[]),
                CAST(:campus_codes AS varchar[])
            )
            ON CONFLICT (transfer_key) DO NOTHING
            RETURNING id, transfer_key
        ), posted AS (
            INSERT INTO ledger_postings (transaction_id, account, amount_fen, operator_id)
            SELECT inserted.id, given.account, given.amount_fen, given.operator_id
            FROM unnest(
                CAST(:line_keys AS varchar[]), CAST(:accounts AS varchar[]),
                CAST(:amounts AS bigint[]), CAST(:operators AS varchar[])
            ) WITH ORDINALITY AS given(transfer_key, account, amount_fen, operator_id, position)
            JOIN inserted ON inserted.transfer_key = given.transfer_key
            ORDER BY given.position
            RETURNING transaction_id
        )
        SELECT transfer_key FROM inserted
        """
    )
)


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
        keys, accounts, amounts, operators = (list(column) for column in zip(*lines, strict=True))
        result = await self._session.execute(
            _POST_ON_POSTGRES,
            {
                "transfer_keys": [row["transfer_key"] for row in rows],
                "order_ids": [row["order_id"] for row in rows],
                "kinds": [row["kind"] for row in rows],
                "occurred_ats": [row["occurred_at"] for row in rows],
                "campus_codes": [row["campus_code"] for row in rows],
                "line_keys": keys,
                "accounts": accounts,
                "amounts": amounts,
                "operators": operators,
            },
        )
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
