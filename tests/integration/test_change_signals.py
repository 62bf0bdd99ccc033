"""Change signals from the unit of work (services.runtime.changes) against the test database: a
touched key is published after commit and never after a rollback; on PostgreSQL it also goes out
with NOTIFY on commit only, and the listener brings other replicas' commits into the broker."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.runtime.changes import ChangeBroker, ChangeListener, listener_dsn, notify_channel
from services.runtime.db import create_engine, is_postgres, session_factory
from services.runtime.unit_of_work import SqlUnitOfWork

CHANNEL = notify_channel("payment-core")
KEY = "payment_order:ord_1"


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, None)
    yield engine
    await engine.dispose()


def broker_for(engine: AsyncEngine) -> ChangeBroker:
    return ChangeBroker(CHANNEL if is_postgres(engine) else None)


async def test_a_touched_key_is_published_after_commit_only(engine: AsyncEngine) -> None:
    broker = broker_for(engine)
    async with broker.subscribe(KEY) as subscription:
        async with SqlUnitOfWork(session_factory(engine), changes=broker) as uow:
            uow.touch(KEY)
            uow.touch(KEY)
            assert not await subscription.changed(timeout_s=0)  # not before the commit
        assert await subscription.changed(timeout_s=0)
        assert not await subscription.changed(timeout_s=0)  # one transaction, one signal


async def test_a_rolled_back_touch_is_never_published(engine: AsyncEngine) -> None:
    broker = broker_for(engine)
    async with broker.subscribe(KEY) as subscription:
        with pytest.raises(RuntimeError):
            async with SqlUnitOfWork(session_factory(engine), changes=broker) as uow:
                uow.touch(KEY)
                raise RuntimeError("the state change failed")
        async with SqlUnitOfWork(session_factory(engine), changes=broker):
            pass  # a later transaction that touched nothing publishes nothing either
        assert not await subscription.changed(timeout_s=0)


async def test_touch_outside_a_transaction_is_refused(engine: AsyncEngine) -> None:
    with pytest.raises(RuntimeError):
        SqlUnitOfWork(session_factory(engine), changes=broker_for(engine)).touch(KEY)


@contextlib.asynccontextmanager
async def listening(engine: AsyncEngine) -> AsyncIterator[asyncio.Queue[str]]:
    """A plain LISTEN connection on the channel; yields the payloads it receives."""
    received: asyncio.Queue[str] = asyncio.Queue()
    connection = await asyncpg.connect(listener_dsn(engine))
    await connection.add_listener(CHANNEL, lambda _c, _pid, _ch, payload: received.put_nowait(payload))
    try:
        yield received
    finally:
        await connection.close()


def postgres_only(engine: AsyncEngine) -> None:
    if not is_postgres(engine):
        pytest.skip("NOTIFY is PostgreSQL's")


async def test_notify_goes_out_with_the_commit_and_not_with_a_rollback(engine: AsyncEngine) -> None:
    postgres_only(engine)
    broker = broker_for(engine)
    async with listening(engine) as received:
        with pytest.raises(RuntimeError):
            async with SqlUnitOfWork(session_factory(engine), changes=broker) as uow:
                uow.touch("payment_order:ord_lost")
                raise RuntimeError("rolled back")
        async with SqlUnitOfWork(session_factory(engine), changes=broker) as uow:
            uow.touch(KEY)
        payload = await asyncio.wait_for(received.get(), 5)
        assert payload == broker.notification(KEY)
        assert received.empty()


@contextlib.asynccontextmanager
async def running(listener: ChangeListener) -> AsyncIterator[None]:
    task = asyncio.create_task(listener.run())
    try:
        await asyncio.wait_for(listener.connected.wait(), 10)
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        # State owned by the server side, with no event to await: looked at until the deadline.
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_another_replicas_commit_wakes_a_watcher_here(engine: AsyncEngine) -> None:
    postgres_only(engine)
    here, there = broker_for(engine), broker_for(engine)
    listener = ChangeListener(here, listener_dsn(engine), "medpay test changes")
    async with running(listener), here.subscribe(KEY) as subscription:
        await subscription.changed(timeout_s=0)  # the wake-up every (re)connect gives
        async with SqlUnitOfWork(session_factory(engine), changes=there) as uow:
            uow.touch(KEY)
        assert await subscription.changed(timeout_s=5)


async def test_the_listener_reconnects_and_wakes_watchers_for_what_it_missed(engine: AsyncEngine) -> None:
    postgres_only(engine)
    here, there = broker_for(engine), broker_for(engine)
    listener = ChangeListener(here, listener_dsn(engine), "medpay test changes")
    async with running(listener), here.subscribe(KEY) as subscription:
        await subscription.changed(timeout_s=0)
        first_pid = listener.backend_pid
        admin = await asyncpg.connect(listener_dsn(engine))
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", first_pid)
        finally:
            await admin.close()
        await until(lambda: not listener.connected.is_set())
        async with SqlUnitOfWork(session_factory(engine), changes=there) as uow:
            uow.touch(KEY)  # sent while no one listens: lost
        assert await subscription.changed(timeout_s=10)
        await asyncio.wait_for(listener.connected.wait(), 10)
        assert listener.backend_pid != first_pid
