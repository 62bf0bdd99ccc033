"""The insurer message log rides on the adapter's own commits: an exchange is written by the next
transaction that commits (usually the step's outcome), handed back when that one rolls back, and
written by the log's own writer when nothing commits soon."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select

from services.insurance_adapter.adapters.message_log import MessageLog, MessagePage
from services.insurance_adapter.adapters.orm import insurer_messages, metadata
from services.insurance_adapter.adapters.unit_of_work import UnitOfWork
from services.insurance_adapter.domain.message_log import ExchangeOutcome, InsurerExchange
from services.runtime.clock import utcnow
from services.runtime.db import create_engine, session_factory
from services.runtime.outbox import Outbox


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[SimpleNamespace]:
    engine = create_engine(database_url, None)
    async with engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
    sessions = session_factory(engine)
    yield SimpleNamespace(sessions=sessions, outbox=Outbox(sessions, metadata))
    await engine.dispose()


def exchange(msgid: str) -> InsurerExchange:
    return InsurerExchange(msgid, "2207", ExchangeOutcome.OK, "{}", "{}", 12, utcnow(), "ord_1")


async def stored(database: SimpleNamespace) -> int:
    async with database.sessions() as session:
        return int((await session.execute(select(func.count()).select_from(insurer_messages))).scalar_one())


async def test_the_next_commit_carries_the_exchange(database: SimpleNamespace) -> None:
    log = MessageLog(database.sessions)
    await log.record(exchange("m1"))
    assert await stored(database) == 0
    async with UnitOfWork(database, log):  # type: ignore[arg-type]
        pass
    assert await stored(database) == 1


async def test_a_rolled_back_transaction_hands_the_exchange_back(database: SimpleNamespace) -> None:
    log = MessageLog(database.sessions)
    await log.record(exchange("m1"))

    async def commit_fails() -> None:
        raise RuntimeError("the connection broke at COMMIT")

    with contextlib.suppress(RuntimeError):
        async with UnitOfWork(database, log) as uow:  # type: ignore[arg-type]
            uow.session.commit = commit_fails  # type: ignore[method-assign]
    assert await stored(database) == 0
    async with UnitOfWork(database, log):  # type: ignore[arg-type]
        pass
    assert await stored(database) == 1


async def test_the_log_writes_what_no_transaction_carried(database: SimpleNamespace) -> None:
    log = MessageLog(database.sessions)
    writer = asyncio.create_task(log.run())
    try:
        await log.record(exchange("m1"))
        for _ in range(50):
            if await stored(database) == 1:
                break
            await asyncio.sleep(0.05)
        assert await stored(database) == 1
    finally:
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer


async def test_a_reader_sees_every_exchange_at_once(database: SimpleNamespace) -> None:
    log = MessageLog(database.sessions)
    await log.record(exchange("m1"))
    assert [found.msgid for _, found in await log.page(MessagePage(limit=10))] == ["m1"]
