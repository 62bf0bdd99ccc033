"""data-aggregation's gRPC reader of an event feed, against a real EventFeedService (the runtime's,
over an outbox) and against a peer that is gone."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import grpc
import pytest
from medpay.events.v1 import events_pb2, events_pb2_grpc
from sqlalchemy import MetaData

from services.data_aggregation.adapters.event_feed import GrpcEventFeed
from services.data_aggregation.domain.facts import ReconciliationRunFact
from services.data_aggregation.service_layer.ports import FeedUnavailable
from services.runtime.db import add_runtime_tables, create_engine, session_factory
from services.runtime.outbox import EventFeedServicer, Outbox, new_envelope


async def test_the_feed_is_read_in_order_and_mapped_to_facts(tmp_path: Path) -> None:
    metadata = MetaData()
    add_runtime_tables(metadata)
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/feed.sqlite3", None)
    async with engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
    sessions = session_factory(engine)
    outbox = Outbox(sessions, metadata)
    for number in (1, 2):
        envelope = new_envelope("reconciliation", "reconciliation_run", f"rcn_{number}")
        envelope.reconciliation_completed.CopyFrom(
            events_pb2.ReconciliationCompleted(
                run_id=f"rcn_{number}", business_date="2025-03-14", matched_count=9
            )
        )
        async with sessions.begin() as session:
            await outbox.record_event(session, envelope)
    await outbox.assign_sequences()
    server = grpc.aio.server()
    events_pb2_grpc.add_EventFeedServiceServicer_to_server(EventFeedServicer(outbox), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            feed = GrpcEventFeed("reconciliation", channel, deadline_s=5)
            first = await feed.events_after(0, 1)
            rest = await feed.events_after(1, 10)
    finally:
        await server.stop(None)
        await engine.dispose()

    assert (first.head_sequence, [event.sequence for event in first.events]) == (2, [1])
    assert [event.sequence for event in rest.events] == [2]
    (event,) = rest.events
    assert event.event_type == "reconciliation_completed"
    assert event.fact == ReconciliationRunFact("rcn_2", date(2025, 3, 14), 9, 0)


async def test_a_peer_that_is_gone_is_feed_unavailable() -> None:
    server = grpc.aio.server()
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await server.stop(None)

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        with pytest.raises(FeedUnavailable, match="payment-core: ListEvents UNAVAILABLE"):
            await GrpcEventFeed("payment-core", channel, deadline_s=2).events_after(0, 10)


async def test_a_caught_up_reader_is_answered_when_the_next_event_is_sequenced(tmp_path: Path) -> None:
    """The long poll: no sleeping and asking again; the reader is woken by the relay's pass."""
    import asyncio
    import time

    from services.runtime.server import build_server

    metadata = MetaData()
    add_runtime_tables(metadata)
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/feed.sqlite3", None)
    async with engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
    sessions = session_factory(engine)
    outbox = Outbox(sessions, metadata)
    server = build_server()  # the runtime's, with its error mapping
    events_pb2_grpc.add_EventFeedServiceServicer_to_server(EventFeedServicer(outbox), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()

    async def publish_later() -> None:
        await asyncio.sleep(0.3)
        envelope = new_envelope("reconciliation", "reconciliation_run", "rcn_1")
        envelope.reconciliation_completed.CopyFrom(
            events_pb2.ReconciliationCompleted(run_id="rcn_1", business_date="2025-03-14")
        )
        async with sessions.begin() as session:
            await outbox.record_event(session, envelope)
        await outbox.assign_sequences()

    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            feed = GrpcEventFeed("reconciliation", channel, deadline_s=5)
            started = time.monotonic()
            waited = await feed.events_after(0, 10, wait_s=0.2)  # nothing comes: empty at the end
            assert waited.events == () and 0.15 < time.monotonic() - started < 2
            started = time.monotonic()
            publisher = asyncio.create_task(publish_later())
            page = await feed.events_after(0, 10, wait_s=20)
            await publisher
            assert [event.sequence for event in page.events] == [1]
            assert time.monotonic() - started < 5  # woken by the pass, not by the 20 s wait
            stub = events_pb2_grpc.EventFeedServiceStub(channel)
            for wait_ms in (-1, 30_001):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.ListEvents(events_pb2.ListEventsRequest(wait_ms=wait_ms), timeout=5)
                assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert "wait_ms" in (refused.value.details() or "")
    finally:
        await server.stop(None)
        await engine.dispose()
