"""The runtime's idempotency keys and outbox against the test database (PostgreSQL in CI)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from medpay.events.v1 import events_pb2
from medpay.payment.v1 import payment_pb2
from sqlalchemy import Column, Integer, MetaData, Table, select

from services.runtime.db import UtcDateTime, add_runtime_tables, create_engine, session_factory
from services.runtime.errors import RequestIdReused, RequestInProgress
from services.runtime.idempotency import IdempotencyStore
from services.runtime.outbox import Outbox, new_envelope


class Store:
    def __init__(self, url: str) -> None:
        self.metadata = MetaData()
        add_runtime_tables(self.metadata)
        self.engine = create_engine(url, None)
        self.sessions = session_factory(self.engine)
        self.idempotency = IdempotencyStore(self.sessions, self.metadata)
        self.outbox = Outbox(self.sessions, self.metadata)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    store = Store(database_url)
    async with store.engine.begin() as connection:
        await connection.run_sync(store.metadata.create_all)
    yield store
    await store.engine.dispose()


def _request(total_hint: str = "a") -> payment_pb2.CreatePaymentOrderRequest:
    return payment_pb2.CreatePaymentOrderRequest(request_id="req-1", his_order_no=f"HIS-{total_hint}")


async def test_same_request_replays_the_stored_response(store: Store) -> None:
    assert await store.idempotency.claim("Create", "req-1", _request()) is None
    response = payment_pb2.CreatePaymentOrderResponse(order=payment_pb2.PaymentOrder(order_id="ord_1"))
    await store.idempotency.complete("req-1", response)
    stored = await store.idempotency.claim("Create", "req-1", _request())
    assert stored is not None
    assert payment_pb2.CreatePaymentOrderResponse.FromString(stored).order.order_id == "ord_1"


async def test_same_id_with_a_different_request_is_refused(store: Store) -> None:
    await store.idempotency.claim("Create", "req-1", _request("a"))
    with pytest.raises(RequestIdReused):
        await store.idempotency.claim("Create", "req-1", _request("b"))
    with pytest.raises(RequestIdReused):
        await store.idempotency.claim("Refund", "req-1", _request("a"))


async def test_concurrent_claims_let_exactly_one_through(store: Store) -> None:
    outcomes = await asyncio.gather(
        *(store.idempotency.claim("Create", "req-1", _request()) for _ in range(8)), return_exceptions=True
    )
    winners = [o for o in outcomes if o is None]
    assert len(winners) == 1
    assert all(isinstance(o, RequestInProgress) for o in outcomes if o is not None)


async def test_a_released_claim_can_be_retried(store: Store) -> None:
    await store.idempotency.claim("Create", "req-1", _request())
    await store.idempotency.release("req-1")
    assert await store.idempotency.claim("Create", "req-1", _request()) is None


def _event(order_id: str) -> events_pb2.EventEnvelope:
    envelope = new_envelope("payment-core", "payment_order", order_id)
    envelope.payment_order_closed.CopyFrom(events_pb2.PaymentOrderClosed(order_id=order_id, reason="test"))
    return envelope


async def test_rolled_back_events_never_reach_the_feed(store: Store) -> None:
    async with store.sessions.begin() as session:
        await store.outbox.record_event(session, _event("ord_kept"))
    with pytest.raises(RuntimeError):
        async with store.sessions.begin() as session:
            await store.outbox.record_event(session, _event("ord_lost"))
            raise RuntimeError("the state change failed")
    await store.outbox.assign_sequences()
    events, head = await store.outbox.events_after(0, 100)
    assert [e.aggregate_id for e in events] == ["ord_kept"]
    assert head == 1 and events[0].sequence == 1


async def test_concurrent_writers_get_a_gap_free_feed(store: Store) -> None:
    async def write(i: int) -> None:
        async with store.sessions.begin() as session:
            await store.outbox.record_event(session, _event(f"ord_{i}"))

    await asyncio.gather(*(write(i) for i in range(30)))
    await asyncio.gather(store.outbox.assign_sequences(), store.outbox.assign_sequences())
    first, _ = await store.outbox.events_after(0, 10)
    rest, head = await store.outbox.events_after(first[-1].sequence, 100)
    sequences = [e.sequence for e in first + rest]
    assert sequences == list(range(1, 31)) and head == 30
    assert len({e.event_id for e in first + rest}) == 30


async def test_a_reader_does_not_wait_for_a_writer(database_url: str) -> None:
    """On SQLite a read-only unit of work begins deferred: it reads while a writer holds the lock
    (on PostgreSQL readers never wait anyway)."""
    from services.runtime.unit_of_work import SqlUnitOfWork

    store = Store(database_url)
    async with store.engine.begin() as connection:
        await connection.run_sync(store.metadata.create_all)
    try:
        async with SqlUnitOfWork(store.sessions, store.outbox) as writer:
            await writer.record_event(_event("ord_pending"))
            async with SqlUnitOfWork(store.sessions, read_only=True) as reader:
                result = await asyncio.wait_for(
                    reader.session.execute(store.metadata.tables["outbox_events"].select()), timeout=5
                )
                assert result.all() == []  # the writer has not committed
    finally:
        await store.engine.dispose()


@pytest.fixture(params=["sqlite", "test-database"])
def either_backend(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/times.sqlite3"
    return str(request.getfixturevalue("database_url"))


async def test_a_time_in_another_zone_is_stored_and_read_back_as_utc(either_backend: str) -> None:
    """WeChat Pay's success_time comes as +08:00; SQLite keeps no offset, so it must be UTC when
    written, and every backend reads it back as the same aware UTC instant."""
    metadata = MetaData()
    moments = Table("moments", metadata, Column("id", Integer, primary_key=True), Column("at", UtcDateTime()))
    engine = create_engine(either_backend, None)
    beijing = datetime.fromisoformat("2026-11-25T10:00:00+08:00")
    try:
        async with engine.begin() as connection:
            await connection.run_sync(metadata.create_all)
            await connection.execute(moments.insert().values(id=1, at=beijing))
        async with engine.connect() as connection:
            stored = (await connection.execute(select(moments.c.at))).scalar_one()
            # The same instant as a bound, in UTC: a half-open day query finds it.
            utc = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)
            found = await connection.execute(
                select(moments.c.id).where(moments.c.at >= utc, moments.c.at < utc + timedelta(seconds=1))
            )
            assert found.scalars().all() == [1]
    finally:
        await engine.dispose()
    assert stored == utc and stored.tzinfo is not None and stored.utcoffset() == timedelta(0)
