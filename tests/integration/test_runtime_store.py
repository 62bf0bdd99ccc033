"""The runtime's idempotency keys, service instances and outbox against the test database
(PostgreSQL in CI)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from medpay.events.v1 import events_pb2
from medpay.payment.v1 import payment_pb2
from sqlalchemy import Column, Integer, MetaData, Row, Table, delete, insert, select, update

from services.runtime.clock import as_utc, utcnow
from services.runtime.db import UtcDateTime, add_runtime_tables, create_engine, session_factory
from services.runtime.errors import RequestIdReused, RequestInProgress
from services.runtime.idempotency import STALE_CLAIM_AFTER, IdempotencyStore
from services.runtime.instances import PRUNE_AFTER, ServiceInstance
from services.runtime.outbox import _RELAY_LOCK_KEY, Outbox, new_envelope
from tests import conftest


class Store:
    """One process's runtime stores; `replica()` is another process of the same service."""

    def __init__(self, url: str) -> None:
        self.metadata = MetaData()
        add_runtime_tables(self.metadata)
        self.engine = create_engine(url, None)
        self.sessions = session_factory(self.engine)
        self.instance = ServiceInstance(self.sessions, self.metadata, "payment-core")
        self.idempotency = IdempotencyStore(self.sessions, self.metadata, self.instance)
        self.outbox = Outbox(self.sessions, self.metadata)

    def replica(self) -> tuple[ServiceInstance, IdempotencyStore]:
        instance = ServiceInstance(self.sessions, self.metadata, "payment-core")
        return instance, IdempotencyStore(self.sessions, self.metadata, instance)


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


# --- claims tied to their holder ----------------------------------------------------------------


async def _set_heartbeat(store: Store, instance: ServiceInstance, moment: datetime) -> None:
    table = store.metadata.tables["service_instances"]
    async with store.sessions.begin() as session:
        await session.execute(
            update(table).where(table.c.instance_id == instance.instance_id).values(heartbeat_at=moment)
        )


async def _claim_row(store: Store, request_id: str = "req-1") -> Row[Any]:
    keys = store.metadata.tables["idempotency_keys"]
    async with store.sessions() as session:
        return (await session.execute(select(keys).where(keys.c.request_id == request_id))).one()


async def test_a_claim_records_its_holder(store: Store) -> None:
    await store.idempotency.claim("Create", "req-1", _request())
    assert (await _claim_row(store)).holder == store.instance.instance_id


async def test_a_claim_by_a_dead_instance_is_taken_over_by_the_first_retry(store: Store) -> None:
    """The process holding the claim crashed: its heartbeat stopped a minute ago."""
    await store.instance.register()
    await store.idempotency.claim("Create", "req-1", _request())
    await _set_heartbeat(store, store.instance, utcnow() - timedelta(minutes=1))
    survivor, survivor_claims = store.replica()
    await survivor.register()
    assert await survivor_claims.claim("Create", "req-1", _request()) is None
    row = await _claim_row(store)
    assert row.holder == survivor.instance_id and row.state == "in_progress"
    response = payment_pb2.CreatePaymentOrderResponse(order=payment_pb2.PaymentOrder(order_id="ord_1"))
    await survivor_claims.complete("req-1", response)
    assert await store.idempotency.claim("Create", "req-1", _request()) is not None  # replayed


async def test_a_holder_that_only_looked_dead_cannot_release_the_claim_taken_from_it(store: Store) -> None:
    await store.idempotency.claim("Create", "req-1", _request())  # never registered: looks dead
    survivor, survivor_claims = store.replica()
    await survivor.register()
    assert await survivor_claims.claim("Create", "req-1", _request()) is None
    await store.idempotency.release("req-1")  # the first holder's handler fails after all
    assert (await _claim_row(store)).holder == survivor.instance_id
    await survivor_claims.release("req-1")
    assert await store.idempotency.claim("Create", "req-1", _request()) is None


async def test_a_claim_by_an_instance_without_a_row_is_taken_over(store: Store) -> None:
    """A holder with no row at all (its row was removed, or it never got to write one)."""
    await store.idempotency.claim("Create", "req-1", _request())  # store.instance never registered
    _, survivor_claims = store.replica()
    assert await survivor_claims.claim("Create", "req-1", _request()) is None


async def test_a_claim_by_a_live_instance_stays_in_progress(store: Store) -> None:
    await store.instance.register()
    await store.idempotency.claim("Create", "req-1", _request())
    other, other_claims = store.replica()
    await other.register()
    with pytest.raises(RequestInProgress):
        await other_claims.claim("Create", "req-1", _request())
    with pytest.raises(RequestInProgress):  # the holder itself is always alive to itself
        await store.idempotency.claim("Create", "req-1", _request())
    assert (await _claim_row(store)).holder == store.instance.instance_id


async def test_retries_racing_for_a_dead_holders_claim_let_one_through(store: Store) -> None:
    await store.idempotency.claim("Create", "req-1", _request())  # its holder has no row: dead
    replicas = [store.replica() for _ in range(3)]
    for instance, _ in replicas:
        await instance.register()
    retries = [claims.claim("Create", "req-1", _request()) for _, claims in replicas for _ in range(2)]
    outcomes = await asyncio.gather(*retries, return_exceptions=True)
    assert len([o for o in outcomes if o is None]) == 1
    assert all(isinstance(o, RequestInProgress) for o in outcomes if o is not None)


async def test_a_claim_without_a_holder_waits_for_the_stale_fallback(store: Store) -> None:
    """Claims written before holders were recorded (NULL) are only taken over once stale."""
    keys = store.metadata.tables["idempotency_keys"]
    await store.idempotency.claim("Create", "req-1", _request())
    async with store.sessions.begin() as session:
        await session.execute(update(keys).values(holder=None))
    _, other_claims = store.replica()
    with pytest.raises(RequestInProgress):
        await other_claims.claim("Create", "req-1", _request())
    async with store.sessions.begin() as session:
        await session.execute(
            update(keys).values(updated_at=utcnow() - STALE_CLAIM_AFTER - timedelta(seconds=1))
        )
    assert await other_claims.claim("Create", "req-1", _request()) is None


# --- service instances ---------------------------------------------------------------------------


async def test_liveness_follows_the_heartbeat(store: Store) -> None:
    other, _ = store.replica()
    async with store.sessions() as session:
        assert await store.instance.is_alive(session, store.instance.instance_id)  # no row, still itself
        assert not await store.instance.is_alive(session, other.instance_id)  # no row
        assert not await store.instance.is_alive(session, None)
    await other.register()
    async with store.sessions() as session:
        assert await store.instance.is_alive(session, other.instance_id)
    await _set_heartbeat(store, other, utcnow() - other.dead_after - timedelta(seconds=1))
    async with store.sessions() as session:
        assert not await store.instance.is_alive(session, other.instance_id)


async def test_the_alive_clause_selects_rows_by_their_holders_liveness(store: Store) -> None:
    keys = store.metadata.tables["idempotency_keys"]
    live, _ = store.replica()
    dead, _ = store.replica()
    for instance in (live, dead):
        await instance.register()
    await _set_heartbeat(store, dead, utcnow() - timedelta(minutes=1))
    holders = {"mine": store.instance.instance_id, "live": live.instance_id, "dead": dead.instance_id,
               "gone": "ins_gone", "none": None}  # fmt: skip
    async with store.sessions.begin() as session:
        for request_id, holder in holders.items():
            await session.execute(
                insert(keys).values(request_id=request_id, method="m", request_hash="h", state="in_progress",
                                    created_at=utcnow(), updated_at=utcnow(), holder=holder)
            )  # fmt: skip
    async with store.sessions() as session:
        alive = store.instance.alive_clause(keys.c.holder)
        held = set((await session.execute(select(keys.c.request_id).where(alive))).scalars())
        free = set((await session.execute(select(keys.c.request_id).where(~alive))).scalars())
    assert held == {"mine", "live"}
    assert free == {"dead", "gone", "none"}


async def _heartbeat_of(store: Store, instance: ServiceInstance) -> datetime | None:
    table = store.metadata.tables["service_instances"]
    async with store.sessions() as session:
        found = await session.execute(
            select(table.c.heartbeat_at).where(table.c.instance_id == instance.instance_id)
        )
        moment = found.scalar_one_or_none()
    return None if moment is None else as_utc(moment)


async def _until(condition: Callable[[], Awaitable[bool]], tries: int = 500) -> None:
    """Poll the database (there is no event to await across processes), a bounded number of times."""
    for _ in range(tries):
        if await condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition did not come true")


async def test_the_heartbeat_keeps_the_row_fresh_and_removes_it_on_cancel(store: Store) -> None:
    instance = ServiceInstance(
        store.sessions, store.metadata, "payment-core", heartbeat_s=0.05, dead_after_s=1
    )
    table = store.metadata.tables["service_instances"]
    task = asyncio.create_task(instance.run())
    try:
        await _until(lambda: _registered(store, instance))
        first = await _heartbeat_of(store, instance)
        assert first is not None

        async def refreshed() -> bool:
            moment = await _heartbeat_of(store, instance)
            return moment is not None and moment > first

        await _until(refreshed)
        async with store.sessions.begin() as session:  # someone removes the row: it comes back
            await session.execute(delete(table).where(table.c.instance_id == instance.instance_id))
        await _until(lambda: _registered(store, instance))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert await _heartbeat_of(store, instance) is None
    async with store.sessions() as session:
        assert not await store.instance.is_alive(session, instance.instance_id)


async def _registered(store: Store, instance: ServiceInstance) -> bool:
    return await _heartbeat_of(store, instance) is not None


async def test_registering_prunes_instances_dead_for_long(store: Store) -> None:
    ancient, _ = store.replica()
    await ancient.register()
    await _set_heartbeat(store, ancient, utcnow() - PRUNE_AFTER - timedelta(minutes=1))
    await store.instance.register()
    assert await _heartbeat_of(store, ancient) is None
    assert await _heartbeat_of(store, store.instance) is not None


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


async def test_a_batch_larger_than_one_pass_is_numbered_in_commit_order_without_gaps(store: Store) -> None:
    assert not await store.outbox.anything_to_sequence()
    async with store.sessions.begin() as session:
        for i in range(501):
            await store.outbox.record_event(session, _event(f"ord_{i:03d}"))
    assert await store.outbox.anything_to_sequence()
    assert await store.outbox.assign_sequences() == 500
    assert await store.outbox.assign_sequences() == 1
    assert not await store.outbox.anything_to_sequence()
    first, _ = await store.outbox.events_after(0, 500)
    rest, head = await store.outbox.events_after(500, 500)
    events = first + rest
    assert [e.sequence for e in events] == list(range(1, 502)) and head == 501
    assert [e.aggregate_id for e in events] == [f"ord_{i:03d}" for i in range(501)]


async def test_a_relay_pass_waiting_for_another_numbers_after_what_that_one_numbered(
    store: Store, test_database: conftest.TestDatabase
) -> None:
    """The pass takes the relay's lock and then reads the head: one that waited for the lock
    continues the numbers the holder committed (a snapshot from before the wait would reuse them)."""
    if test_database.backend != "postgresql":
        pytest.skip("the advisory lock is PostgreSQL's; on SQLite the writer lock serialises passes")
    for i in range(3):
        async with store.sessions.begin() as session:
            await store.outbox.record_event(session, _event(f"ord_{i}"))
    holder = await asyncpg.connect(store.engine.url.set(drivername="postgresql").render_as_string(False))
    try:
        holding = holder.transaction()
        await holding.start()
        await holder.execute(f"SELECT pg_advisory_xact_lock({_RELAY_LOCK_KEY})")
        await holder.execute("UPDATE outbox_events SET sequence = id")  # the holder's pass: 1, 2, 3
        waiting = asyncio.create_task(store.outbox.assign_sequences())
        await asyncio.sleep(0.2)
        assert not waiting.done()
        async with store.sessions.begin() as session:
            await store.outbox.record_event(session, _event("ord_late"))
        await holding.commit()
        assert await asyncio.wait_for(waiting, 10) == 1
    finally:
        await holder.close()
    events, head = await store.outbox.events_after(0, 100)
    assert [(e.aggregate_id, e.sequence) for e in events] == [
        ("ord_0", 1), ("ord_1", 2), ("ord_2", 3), ("ord_late", 4)
    ]  # fmt: skip
    assert head == 4


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


def test_a_dead_after_no_longer_than_the_heartbeat_is_refused_at_boot(store: Store) -> None:
    from pydantic import ValidationError

    from services.runtime.config import MeshSettings

    with pytest.raises(ValidationError, match="MEDPAY_INSTANCE_DEAD_AFTER_S"):
        MeshSettings(instance_heartbeat_s=5, instance_dead_after_s=5)
    with pytest.raises(ValueError, match="dead_after_s"):
        ServiceInstance(store.sessions, store.metadata, "payment-core", heartbeat_s=2, dead_after_s=1)


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


async def test_the_relay_sequences_an_event_as_soon_as_it_commits_not_at_its_next_look(store: Store) -> None:
    """The relay is woken by the commit (an idle relay looks only every few seconds): woken at
    the insert instead, it would run before the commit, find nothing, and sleep past it."""
    from services.runtime.unit_of_work import SqlUnitOfWork

    relay = asyncio.create_task(store.outbox.run_relay(poll_interval_s=60))
    try:
        await asyncio.sleep(0.2)  # the relay's first look, with nothing to do
        async with SqlUnitOfWork(store.sessions, store.outbox) as uow:
            await uow.record_event(_event("ord_prompt"))
            await asyncio.sleep(0.3)  # the transaction stays open a while before it commits
        for _ in range(50):
            events, head = await store.outbox.events_after(0, 10)
            if events:
                break
            await asyncio.sleep(0.05)
        assert [e.aggregate_id for e in events] == ["ord_prompt"] and head == 1
    finally:
        relay.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await relay


async def test_a_write_refused_by_a_unique_index_comes_out_named_and_rolled_back(store: Store) -> None:
    """The service layer catches StorageConflict, never the driver's IntegrityError; the unit of work
    rolls the whole transaction back first."""
    from services.runtime.errors import StorageConflict
    from services.runtime.unit_of_work import SqlUnitOfWork

    table = Table("uow_probe", store.metadata, Column("id", Integer, primary_key=True), Column("n", Integer))
    async with store.engine.begin() as connection:
        await connection.run_sync(table.create)
    async with SqlUnitOfWork(store.sessions) as uow:
        await uow.session.execute(insert(table).values(id=1, n=1))
    with pytest.raises(StorageConflict):
        async with SqlUnitOfWork(store.sessions) as uow:
            await uow.session.execute(insert(table).values(id=2, n=2))
            await uow.session.execute(insert(table).values(id=1, n=3))
    async with store.engine.connect() as connection:
        assert (await connection.execute(select(table.c.id))).scalars().all() == [1]
