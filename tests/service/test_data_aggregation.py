"""data-aggregation as a gRPC service: in-memory event feeds (with replays, duplicates and outages),
a real server on a loopback port, its own database (a SQLite file, and the test database)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from medpay.common.v1 import common_pb2
from medpay.data.v1 import data_pb2 as pb
from medpay.data.v1 import data_pb2_grpc
from medpay.events.v1 import events_pb2
from sqlalchemy import func, select

from services.data_aggregation.adapters.in_memory import InMemoryEventFeed
from services.data_aggregation.adapters.orm import insurance_settlements, reconciliation_runs
from services.data_aggregation.bootstrap import DataAggregationApp, build
from services.data_aggregation.config import DataAggregationSettings
from services.data_aggregation.service_layer.ingest import CursorMoved
from services.runtime.outbox import new_envelope
from services.runtime.server import build_server

DAY = "2025-03-14"
MORNING = datetime(2025, 3, 14, 1, 30, tzinfo=UTC)  # 09:30 in Shanghai


def stamp(moment: datetime) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(moment)
    return value


def order_settled(
    order_id: str, *, cash: int, fund: int = 0, acct: int = 0, scene: str = "OUTPATIENT",
    channel: str = "WECHAT_PAY", insutype: str = "", dept: str = "0301", settle_ms: int = 1_000,
) -> events_pb2.EventEnvelope:  # fmt: skip
    envelope = new_envelope("payment-core", "payment_order", order_id)
    envelope.payment_order_settled.CopyFrom(
        events_pb2.PaymentOrderSettled(
            order_id=order_id, scene=scene, channel=channel, campus_code="FZ01", dept_code=dept,
            insutype=insutype, total_fen=cash + fund + acct, fund_fen=fund, personal_account_fen=acct,
            cash_fen=cash, created_at=stamp(MORNING),
            settled_at=stamp(MORNING + timedelta(milliseconds=settle_ms)), business_date=DAY,
        )
    )  # fmt: skip
    return envelope


def order_created(order_id: str) -> events_pb2.EventEnvelope:
    envelope = new_envelope("payment-core", "payment_order", order_id)
    envelope.payment_order_created.CopyFrom(events_pb2.PaymentOrderCreated(order_id=order_id, total_fen=1))
    return envelope


def refund_succeeded(refund_id: str, order_id: str, *, cash: int, fund: int = 0, acct: int = 0) -> (
    events_pb2.EventEnvelope
):  # fmt: skip
    envelope = new_envelope("payment-core", "payment_order", order_id)
    envelope.refund_succeeded.CopyFrom(
        events_pb2.RefundSucceeded(
            order_id=order_id, refund_id=refund_id, channel="WECHAT_PAY", cash_fen=cash, fund_fen=fund,
            personal_account_fen=acct, business_date=DAY,
        )
    )  # fmt: skip
    return envelope


@dataclass
class Aggregator:
    stub: data_pb2_grpc.DataAggregationServiceAsyncStub
    app: DataAggregationApp
    payments: InMemoryEventFeed
    insurance: InMemoryEventFeed
    reconciliation: InMemoryEventFeed

    async def summary(self) -> pb.DailySummary:
        return (await self.stub.GetDailySummary(pb.GetDailySummaryRequest(business_date=DAY))).summary

    async def cursors(self) -> dict[str, pb.SourceCursor]:
        status = await self.stub.GetIngestStatus(pb.GetIngestStatusRequest())
        return {source.source_service: source for source in status.sources}


@pytest.fixture(params=["sqlite-file", "test-database"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> DataAggregationSettings:
    url = None if request.param == "sqlite-file" else request.getfixturevalue("database_url")
    # Pages of 3 so a morning spans several pages; a fast poll so background tests stay short.
    return DataAggregationSettings(
        database_url=url, data_dir=tmp_path / "data", trace_dir=tmp_path / "traces",
        data_aggregation_page_size=3, data_aggregation_poll_interval_s=0.02,
        data_aggregation_max_backoff_s=0.1,
    )  # fmt: skip


@pytest.fixture
def feeds() -> tuple[InMemoryEventFeed, InMemoryEventFeed, InMemoryEventFeed]:
    return (
        InMemoryEventFeed("payment-core"),
        InMemoryEventFeed("insurance-adapter"),
        InMemoryEventFeed("reconciliation"),
    )


@asynccontextmanager
async def running(
    settings: DataAggregationSettings, feeds: tuple[InMemoryEventFeed, InMemoryEventFeed, InMemoryEventFeed]
) -> AsyncIterator[Aggregator]:
    """One life of the aggregator process: build, migrate, serve; close at the end."""
    app = build(settings, feeds=feeds)
    await app.db.migrate()
    server = build_server()
    app.register(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Aggregator(data_pb2_grpc.DataAggregationServiceStub(channel), app, *feeds)  # type: ignore[arg-type]
    finally:
        await channel.close()
        await server.stop(None)
        await app.close()


def publish_a_morning(payments: InMemoryEventFeed) -> None:
    """Four settled orders, one created-only order, one refund."""
    payments.publish(order_settled("ord_1", cash=12_500, settle_ms=800))
    payments.publish(order_created("ord_9"))
    payments.publish(order_settled("ord_2", cash=3_000, dept="0402", settle_ms=1_200))
    payments.publish(order_settled(
        "ord_3", cash=2_100, fund=6_300, acct=1_600, insutype="310", dept="0402", settle_ms=2_500,
    ))  # fmt: skip
    payments.publish(order_settled("ord_4", cash=900, scene="PHARMACY", channel="CASH", settle_ms=300))
    payments.publish(refund_succeeded("rf_1", "ord_2", cash=3_000))


async def test_a_replayed_page_and_a_duplicate_event_count_once_and_the_summary_adds_up(
    settings: DataAggregationSettings, feeds: tuple[InMemoryEventFeed, ...]
) -> None:
    async with running(settings, feeds) as aggregator:  # type: ignore[arg-type]
        payments = aggregator.payments
        publish_a_morning(payments)
        first_settled = payments.envelopes[0]
        await aggregator.app.ingestor.ingest_page(payments)
        payments.replays_pending = 1  # the next read serves the first page again
        payments.publish(first_settled)  # the same event delivered a second time, at a new position
        await aggregator.app.ingestor.catch_up(payments)
        await aggregator.app.ingestor.catch_up(payments)

        summary = await aggregator.summary()
        cursors = await aggregator.cursors()

    assert (summary.settled_order_count, summary.billed_total_fen) == (4, 26_400)
    assert (summary.fund_fen, summary.personal_account_fen, summary.cash_fen) == (6_300, 1_600, 18_500)
    assert summary.billed_total_fen == summary.fund_fen + summary.personal_account_fen + summary.cash_fen
    assert (summary.refund_count, summary.refunded_total_fen, summary.refunded_cash_fen) == (1, 3_000, 3_000)
    for breakdown in (summary.by_scene, summary.by_channel, summary.by_insutype, summary.by_dept):
        assert sum(item.total_fen for item in breakdown) == summary.billed_total_fen
        assert sum(item.order_count for item in breakdown) == summary.settled_order_count
        assert all(
            item.total_fen == item.fund_fen + item.personal_account_fen + item.cash_fen for item in breakdown
        )
    assert [(item.key, item.total_fen) for item in summary.by_insutype] == [
        ("310", 10_000),
        ("SELF_PAY", 16_400),
    ]
    assert [(item.key, item.order_count) for item in summary.by_scene] == [("OUTPATIENT", 3), ("PHARMACY", 1)]
    assert (cursors["payment-core"].cursor, cursors["payment-core"].events_ingested) == (7, 6)
    # The replayed read asked after 3 and was served from the start: it moved nothing.
    assert payments.asked_after == [0, 3, 3, 6, 7]


async def test_deposit_top_ups_and_their_refunds_are_not_bills(
    settings: DataAggregationSettings, feeds: tuple[InMemoryEventFeed, ...]
) -> None:
    """A top-up is money held for the inpatient; the discharge bill paid from it is the bill."""
    async with running(settings, feeds) as aggregator:  # type: ignore[arg-type]
        payments = aggregator.payments
        payments.publish(order_settled("dep_1", cash=500_000, scene="INPATIENT_DEPOSIT", channel="CASH"))
        payments.publish(order_settled("ord_5", cash=450_000, scene="DISCHARGE", channel="DEPOSIT"))
        payments.publish(refund_succeeded("rf_9", "dep_1", cash=50_000))  # the surplus goes back
        payments.publish(refund_succeeded("rf_8", "ord_5", cash=1_000))  # a refund of the bill
        await aggregator.app.ingestor.catch_up(payments)
        summary = await aggregator.summary()

    assert (summary.settled_order_count, summary.billed_total_fen) == (1, 450_000)
    assert [item.key for item in summary.by_scene] == ["DISCHARGE"]
    assert (summary.refund_count, summary.refunded_cash_fen) == (1, 1_000)


async def test_settlement_times_come_overall_then_by_scene_and_channel(
    settings: DataAggregationSettings, feeds: tuple[InMemoryEventFeed, ...]
) -> None:
    async with running(settings, feeds) as aggregator:  # type: ignore[arg-type]
        publish_a_morning(aggregator.payments)
        await aggregator.app.ingestor.catch_up(aggregator.payments)

        answer = await aggregator.stub.GetSettlementTimes(pb.GetSettlementTimesRequest(business_date=DAY))

    slices = {item.slice: item for item in answer.slices}
    assert [item.slice for item in answer.slices] == ["all", "OUTPATIENT", "PHARMACY", "CASH", "WECHAT_PAY"]
    assert (slices["all"].count, slices["all"].p50_ms, slices["all"].p90_ms, slices["all"].max_ms) == (
        4, 800, 2_500, 2_500,
    )  # fmt: skip
    assert (slices["WECHAT_PAY"].count, slices["WECHAT_PAY"].p50_ms) == (3, 1_200)


async def test_the_cursor_survives_a_restart_over_the_same_database(
    settings: DataAggregationSettings, feeds: tuple[InMemoryEventFeed, ...]
) -> None:
    payments = feeds[0]
    publish_a_morning(payments)
    async with running(settings, feeds) as first_life:  # type: ignore[arg-type]
        await first_life.app.ingestor.ingest_page(payments)
        before = (await first_life.cursors())["payment-core"]

    async with running(settings, feeds) as second_life:  # type: ignore[arg-type]
        after_restart = (await second_life.cursors())["payment-core"]
        payments.asked_after.clear()
        await second_life.app.ingestor.catch_up(payments)
        summary = await second_life.summary()
        final = (await second_life.cursors())["payment-core"]

    assert (before.cursor, before.events_ingested) == (3, 3)
    assert (after_restart.cursor, after_restart.events_ingested) == (3, 3)
    assert payments.asked_after[0] == 3
    assert (final.cursor, final.events_ingested) == (6, 6)
    assert (summary.settled_order_count, summary.billed_total_fen, summary.refund_count) == (4, 26_400, 1)


async def test_a_source_that_is_down_does_not_hold_up_the_others(
    settings: DataAggregationSettings, feeds: tuple[InMemoryEventFeed, ...]
) -> None:
    payments, insurance, reconciliation = feeds
    payments.down = True
    publish_a_morning(payments)
    insurance.publish(insurance_settled("set_1"))
    reconciliation.publish(reconciliation_completed("rcn_1"))
    async with running(settings, feeds) as aggregator:  # type: ignore[arg-type]
        following = asyncio.create_task(aggregator.app.ingestor.follow_feeds())
        try:
            await eventually(aggregator, lambda cursors: cursors["reconciliation"].cursor == 1)
            assert (await aggregator.cursors())["payment-core"].cursor == 0
            payments.down = False
            await eventually(aggregator, lambda cursors: cursors["payment-core"].cursor == 6)
        finally:
            following.cancel()
            await asyncio.gather(following, return_exceptions=True)
        assert (await aggregator.summary()).settled_order_count == 4
        assert len([ask for ask in payments.asked_after if ask == 0]) >= 2  # retried while down


async def eventually(aggregator: Aggregator, condition: Callable[[dict[str, pb.SourceCursor]], bool]) -> None:
    for _ in range(200):
        if condition(await aggregator.cursors()):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"never happened; cursors: {await aggregator.cursors()}")


def insurance_settled(settlement_id: str) -> events_pb2.EventEnvelope:
    envelope = new_envelope("insurance-adapter", "insurance_settlement", settlement_id)
    breakdown = common_pb2.SettlementBreakdown(
        medfee_sumamt_fen=10_000, fund_pay_sumamt_fen=6_300, acct_pay_fen=1_600, psn_cash_pay_fen=2_100
    )
    envelope.insurance_settled.CopyFrom(
        events_pb2.InsuranceSettled(
            settlement_id=settlement_id, setl_id="S1", order_ref="ord_3", insutype="310", med_type="11",
            breakdown=breakdown,
        )
    )  # fmt: skip
    return envelope


def reconciliation_completed(run_id: str) -> events_pb2.EventEnvelope:
    envelope = new_envelope("reconciliation", "reconciliation_run", run_id)
    envelope.reconciliation_completed.CopyFrom(
        events_pb2.ReconciliationCompleted(
            run_id=run_id, business_date=DAY, matched_count=5, discrepancy_count=1
        )
    )
    return envelope


async def test_insurance_settlements_revocations_and_runs_are_kept_once(
    settings: DataAggregationSettings, feeds: tuple[InMemoryEventFeed, ...]
) -> None:
    _, insurance, reconciliation = feeds
    insurance.publish(insurance_settled("set_1"))
    revoked = new_envelope("insurance-adapter", "insurance_settlement", "set_1")
    revoked.insurance_settlement_revoked.CopyFrom(
        events_pb2.InsuranceSettlementRevoked(settlement_id="set_1")
    )
    insurance.publish(revoked)
    reconciliation.publish(reconciliation_completed("rcn_1"))
    reconciliation.publish(reconciliation_completed("rcn_1"))  # a new event about the same run
    async with running(settings, feeds) as aggregator:  # type: ignore[arg-type]
        for feed in (insurance, reconciliation):
            await aggregator.app.ingestor.catch_up(feed)
        async with aggregator.app.db.sessions() as session:
            settlements = (await session.execute(select(insurance_settlements))).all()
            runs = await session.scalar(select(func.count()).select_from(reconciliation_runs))
        cursors = await aggregator.cursors()

    assert [(row.settlement_id, row.fund_fen, row.revoked) for row in settlements] == [("set_1", 6_300, True)]
    assert runs == 1
    assert (cursors["reconciliation"].cursor, cursors["reconciliation"].events_ingested) == (2, 2)


@pytest.mark.parametrize("business_date", ["", "2025-02-30", "yesterday"])
async def test_a_bad_business_date_is_invalid_argument(
    settings: DataAggregationSettings, feeds: tuple[InMemoryEventFeed, ...], business_date: str
) -> None:
    async with running(settings, feeds) as aggregator:  # type: ignore[arg-type]
        calls = [
            aggregator.stub.GetDailySummary(pb.GetDailySummaryRequest(business_date=business_date)),
            aggregator.stub.GetSettlementTimes(pb.GetSettlementTimesRequest(business_date=business_date)),
        ]
        for call in calls:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "business_date" in (refused.value.details() or "")


async def test_a_quiet_day_answers_zeros_and_every_source_is_listed(
    settings: DataAggregationSettings, feeds: tuple[InMemoryEventFeed, ...]
) -> None:
    async with running(settings, feeds) as aggregator:  # type: ignore[arg-type]
        summary = await aggregator.summary()
        cursors = await aggregator.cursors()

    assert (summary.business_date, summary.settled_order_count, summary.billed_total_fen) == (DAY, 0, 0)
    assert list(summary.by_scene) == []
    assert list(cursors) == ["payment-core", "insurance-adapter", "reconciliation"]
    assert all(cursor.cursor == 0 for cursor in cursors.values())


async def test_two_replicas_over_one_database_ingest_each_event_once(
    settings: DataAggregationSettings, feeds: tuple[InMemoryEventFeed, ...]
) -> None:
    """Each follower remembers where its own commit left the cursor; when the other replica moved
    it meanwhile, its next move fails (compare-and-set) and it reads the cursor afresh."""
    payments = feeds[0]
    publish_a_morning(payments)
    async with running(settings, feeds) as first, running(settings, feeds) as second:  # type: ignore[arg-type]
        await first.app.ingestor.ingest_page(payments)  # events 1..3 (pages of 3 here)
        await second.app.ingestor.catch_up(payments)  # takes over from where the first left it
        payments.publish(order_settled("ord_5", cash=500, settle_ms=100))
        payments.asked_after.clear()
        with pytest.raises(CursorMoved):  # its remembered position is stale
            await first.app.ingestor.ingest_page(payments)
        await first.app.ingestor.catch_up(payments)  # read afresh, then the new event
        cursor = (await first.cursors())["payment-core"]
        summary = await first.summary()
    assert (cursor.cursor, cursor.events_ingested) == (7, 7)
    assert summary.settled_order_count == 5
