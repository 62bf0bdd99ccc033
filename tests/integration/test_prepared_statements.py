"""Statements marked prepared (services.runtime.prepared) run straight on asyncpg and must answer
exactly as SQLAlchemy's own execution does: the same rows and values (UTC moments included), the
same row counts, the same errors, inside the session's transaction, counted by the metrics hook."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import (
    CheckConstraint,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    select,
    text,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError, MultipleResultsFound
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from services.runtime.db import UtcDateTime, create_engine, session_factory
from services.runtime.prepared import (
    STATEMENT_COUNTER,
    MedPaySession,
    PreparedResult,
    prepared,
    rowcount,
)
from services.runtime.statements import KEY, insert_into, select_by, select_in, update_by
from tests import conftest

metadata = MetaData()
accounts = Table(
    "prepared_accounts",
    metadata,
    Column("account_id", String(16), primary_key=True),
    Column("owner", String(32), nullable=False),
    Column("balance_fen", Integer, nullable=False),
    Column("opened_at", UtcDateTime(), nullable=True),
    CheckConstraint("balance_fen >= 0", name="ck_prepared_balance"),
)
_ADD = prepared(
    update(accounts)
    .where(accounts.c.account_id == bindparam(KEY))
    .values(balance_fen=accounts.c.balance_fen + bindparam("delta"))
    .returning(accounts.c.balance_fen)
)
_BY_OWNER = prepared(select(accounts.c.account_id).where(accounts.c.owner == bindparam("owner")))
_TEXTUAL = prepared(text("SELECT count(*) AS n FROM prepared_accounts WHERE owner = :owner"))
_BACKEND_PID = prepared(text("SELECT pg_backend_pid() AS pid"))
BEIJING = timezone(timedelta(hours=8))


@pytest.fixture
async def engine(test_database: conftest.TestDatabase, database_url: str) -> AsyncIterator[AsyncEngine]:
    if test_database.backend != "postgresql":
        pytest.skip("the shortcut is PostgreSQL's (asyncpg); SQLite runs SQLAlchemy's own path")
    engine = create_engine(database_url, None)
    async with engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
    yield engine
    await engine.dispose()


def sessions_of(engine: AsyncEngine) -> async_sessionmaker[MedPaySession]:
    return session_factory(engine)  # type: ignore[return-value]


async def test_rows_values_and_counts_match_sqlalchemys_own(engine: AsyncEngine) -> None:
    opened = datetime(2026, 12, 3, 9, 30, tzinfo=BEIJING)
    async with sessions_of(engine)() as session, session.begin():
        inserted = await session.execute(
            insert_into(accounts),
            {"account_id": "a1", "owner": "ward 3", "balance_fen": 1200, "opened_at": opened},
        )
        assert isinstance(inserted, PreparedResult) and inserted.rowcount == 1
        await session.execute(
            insert_into(accounts), {"account_id": "a2", "owner": "ward 3", "balance_fen": 5}
        )
        row = (await session.execute(select_by(accounts, "account_id"), {KEY: "a1"})).one()
        assert (row.account_id, row.owner, row.balance_fen) == ("a1", "ward 3", 1200)
        assert row.opened_at == opened and row.opened_at.tzinfo == UTC  # as UtcDateTime reads it
        assert row._mapping["balance_fen"] == 1200 and tuple(row) == tuple(row._mapping.values())
        added = await session.execute(_ADD, {KEY: "a1", "delta": 300})
        assert added.scalar_one() == 1500
        moved = await session.execute(update_by(accounts, "account_id"), {KEY: "nobody", "balance_fen": 1})
        assert moved.rowcount == 0
        owners = await session.execute(_BY_OWNER, {"owner": "ward 3"})
        assert sorted(owners.scalars().all()) == ["a1", "a2"]
        with pytest.raises(MultipleResultsFound):
            (await session.execute(_BY_OWNER, {"owner": "ward 3"})).one_or_none()
        assert (await session.execute(select_by(accounts, "account_id"), {KEY: "zz"})).one_or_none() is None
    # SQLAlchemy's own execution (a plain session) reads what the shortcut wrote, the same way.
    async with async_sessionmaker(engine)() as plain:
        ordinary = (await plain.execute(select_by(accounts, "account_id"), {KEY: "a1"})).one()
    assert tuple(ordinary) == tuple(row._replace(balance_fen=1500))


async def test_runs_inside_the_sessions_transaction(engine: AsyncEngine) -> None:
    async with sessions_of(engine)() as session:
        async with session.begin():
            await session.execute(insert_into(accounts), {"account_id": "b1", "owner": "x", "balance_fen": 1})
            await session.rollback()
    async with sessions_of(engine)() as session, session.begin():
        assert (await session.execute(select_by(accounts, "account_id"), {KEY: "b1"})).one_or_none() is None


async def test_a_refused_write_is_sqlalchemys_integrity_error(engine: AsyncEngine) -> None:
    async with sessions_of(engine)() as session, session.begin():
        await session.execute(insert_into(accounts), {"account_id": "c1", "owner": "x", "balance_fen": 1})
    for statement, parameters in (
        (insert_into(accounts), {"account_id": "c1", "owner": "y", "balance_fen": 2}),  # duplicate key
        (_ADD, {KEY: "c1", "delta": -2}),  # below the CHECK
    ):
        async with sessions_of(engine)() as session:
            with pytest.raises(IntegrityError):
                async with session.begin():
                    await session.execute(statement, parameters)
    async with sessions_of(engine)() as session, session.begin():
        assert (await session.execute(select_by(accounts, "account_id"), {KEY: "c1"})).one().balance_fen == 1


async def test_counted_by_the_metrics_hook(engine: AsyncEngine) -> None:
    seen: list[str] = []
    setattr(engine.sync_engine.dialect, STATEMENT_COUNTER, seen.append)
    async with sessions_of(engine)() as session, session.begin():
        await session.execute(insert_into(accounts), {"account_id": "d1", "owner": "x", "balance_fen": 1})
        await session.execute(select_by(accounts, "account_id"), {KEY: "d1"})
    assert [text.split()[0] for text in seen] == ["INSERT", "SELECT"]


async def test_a_script_is_one_round_trip_and_one_transaction_of_its_own(engine: AsyncEngine) -> None:
    seen: list[str] = []
    setattr(engine.sync_engine.dialect, STATEMENT_COUNTER, seen.append)
    sessions = sessions_of(engine)
    async with sessions() as session:
        await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        status = await session.run_script(
            "INSERT INTO prepared_accounts VALUES ('s1', 'w', 1, NULL);"
            " UPDATE prepared_accounts SET balance_fen = balance_fen + 1 WHERE owner = 'w'"
        )
    assert status == "UPDATE 1" and rowcount(status) == 1 and len(seen) == 1
    # One transaction: a statement the server refuses takes the ones before it with it.
    with pytest.raises(IntegrityError):
        async with sessions() as session:
            await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
            await session.run_script(
                "INSERT INTO prepared_accounts VALUES ('s2', 'w', 1, NULL);"
                " UPDATE prepared_accounts SET balance_fen = -1 WHERE account_id = 's1'"
            )
    async with sessions() as session:
        owners = (await session.execute(select(accounts.c.account_id).order_by("account_id"))).scalars()
        assert list(owners) == ["s1"]


async def test_lists_of_rows_and_id_lists(engine: AsyncEngine) -> None:
    rows = [{"account_id": f"e{i}", "owner": "w", "balance_fen": i} for i in range(5)]
    async with sessions_of(engine)() as session, session.begin():
        many = await session.execute(insert_into(accounts), rows)  # one pipelined round trip
        assert isinstance(many, PreparedResult) and many.rowcount == 5
        # An IN list runs as one array parameter, in the order asked for.
        listed = await session.execute(
            select_in(accounts, "account_id", "balance_fen"), {KEY: ["e3", "e1", "zz", "e4"]}
        )
        assert [row.account_id for row in listed.all()] == ["e1", "e3", "e4"]
        numbered = await session.execute(_TEXTUAL, {"owner": "w"})
        assert numbered.scalar_one() == 5


async def test_sqlite_runs_sqlalchemys_own_path(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'plain.sqlite3'}", None)
    async with engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
    async with sessions_of(engine)() as session, session.begin():
        await session.execute(insert_into(accounts), {"account_id": "f1", "owner": "w", "balance_fen": 1})
        result = await session.execute(select_by(accounts, "account_id"), {KEY: "f1"})
        assert not isinstance(result, PreparedResult) and result.one().balance_fen == 1
    await engine.dispose()


async def test_a_connection_the_server_dropped_is_invalidated_and_replaced(engine: AsyncEngine) -> None:
    async with sessions_of(engine)() as session, session.begin():
        await session.execute(insert_into(accounts), {"account_id": "g1", "owner": "w", "balance_fen": 1})
    async with sessions_of(engine)() as session:
        with pytest.raises(DBAPIError) as lost:
            async with session.begin():
                pid = (await session.execute(_BACKEND_PID)).scalar_one()
                async with engine.connect() as other:
                    await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
                await session.execute(select_by(accounts, "account_id"), {KEY: "g1"})
    assert lost.value.connection_invalidated  # the interceptor answers UNAVAILABLE: retry
    async with sessions_of(engine)() as session, session.begin():
        assert (await session.execute(select_by(accounts, "account_id"), {KEY: "g1"})).one().balance_fen == 1
