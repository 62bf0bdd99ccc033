"""The ledger in storage: a turn's transactions and postings in one statement on PostgreSQL (two on
SQLite), a transfer key posted once whatever repeats it, postings kept in the order given."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from services.payment_core.adapters import orm
from services.payment_core.adapters.ledger_store import LedgerStore
from services.payment_core.domain.ledger import LedgerTransaction, Posting
from services.runtime.db import create_engine, session_factory
from services.runtime.money import Money

AT = datetime(2026, 12, 3, 6, 0, tzinfo=UTC)


def entry(key: str, fen: int, operator: str = "") -> LedgerTransaction:
    return LedgerTransaction(
        transfer_key=key,
        order_id=key.split(":")[0],
        kind="PAYMENT",
        occurred_at=AT,
        postings=(
            Posting("asset:channel_clearing:CASH", Money(fen), operator),
            Posting("liability:receipts_unsettled", Money(-fen)),
        ),
        campus_code="C1",
    )


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[object]:
    engine = create_engine(database_url, None)
    async with engine.begin() as connection:
        await connection.run_sync(orm.metadata.create_all)
    yield session_factory(engine)
    await engine.dispose()


async def post(sessions: object, entries: list[LedgerTransaction]) -> set[str]:
    async with sessions() as session, session.begin():  # type: ignore[operator]
        assert isinstance(session, AsyncSession)
        return await LedgerStore(session).post_all(entries)


async def test_each_key_is_posted_once_with_its_postings_in_order(sessions: object) -> None:
    assert await post(sessions, [entry("o1:pay-01", 500, "C001"), entry("o2:pay-01", 700)]) == {
        "o1:pay-01",
        "o2:pay-01",
    }
    # A repeat of a posted key beside a new one: only the new one is posted.
    assert await post(sessions, [entry("o1:pay-01", 999), entry("o3:pay-01", 300)]) == {"o3:pay-01"}
    async with sessions() as session, session.begin():  # type: ignore[operator]
        store = LedgerStore(session)
        first = await store.find("o1:pay-01")
        assert first == entry("o1:pay-01", 500, "C001")
        balance = await store.trial_balance()
    assert balance == {
        "asset:channel_clearing:CASH": Money(1500),
        "liability:receipts_unsettled": Money(-1500),
    }
