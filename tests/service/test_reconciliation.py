"""reconciliation as a gRPC service: in-memory sources, a real server on a loopback port, its own
database (a SQLite file, and the test database: PostgreSQL when one answers)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from medpay.events.v1 import events_pb2, events_pb2_grpc
from medpay.reconciliation.v1 import reconciliation_pb2 as pb
from medpay.reconciliation.v1 import reconciliation_pb2_grpc

from services.reconciliation.adapters.in_memory import (
    InMemoryChannelBills,
    InMemoryInsurerTotals,
    InMemoryPlatformLedger,
)
from services.reconciliation.bootstrap import ReconciliationApp, build
from services.reconciliation.config import ReconciliationSettings
from services.reconciliation.domain.model import (
    ChannelBillLine,
    InsurerFigures,
    InsurerStatement,
    PlatformTransaction,
    TransactionKind,
)
from services.runtime.money import Money
from services.runtime.server import build_server

CLEAN_DAY = date(2025, 3, 14)
MESSY_DAY = date(2025, 3, 15)


def payment(
    out_trade_no: str, fen: int, channel: str = "WECHAT_PAY", insutype: str = ""
) -> PlatformTransaction:
    """An insured payment carries its settlement: medfee 200.00, fund 120.00, account 20.00."""
    settled = bool(insutype)
    return PlatformTransaction(
        kind=TransactionKind.PAYMENT, order_id=f"ord_{out_trade_no}", channel=channel,
        out_trade_no=out_trade_no, out_refund_no="", amount=Money(fen), status="SUCCEEDED", insutype=insutype,
        setl_id=f"S-{out_trade_no}" if settled else "", medfee=Money(20_000 if settled else 0),
        fund=Money(12_000 if settled else 0), personal_account=Money(2_000 if settled else 0),
    )  # fmt: skip


def refund(out_refund_no: str, out_trade_no: str, fen: int) -> PlatformTransaction:
    return PlatformTransaction(
        kind=TransactionKind.REFUND, order_id=f"ord_{out_trade_no}", channel="WECHAT_PAY",
        out_trade_no=out_trade_no, out_refund_no=out_refund_no, amount=Money(fen), status="SUCCEEDED",
    )  # fmt: skip


def paid_row(out_trade_no: str, fen: int) -> ChannelBillLine:
    return ChannelBillLine(
        kind=TransactionKind.PAYMENT, out_trade_no=out_trade_no, out_refund_no="",
        channel_transaction_id=f"42000{out_trade_no}", channel_refund_id="", status="SUCCEEDED",
        amount=Money(fen), traded_at="2025-03-14 10:00:00",
    )  # fmt: skip


def refund_row(out_refund_no: str, out_trade_no: str, fen: int) -> ChannelBillLine:
    return ChannelBillLine(
        kind=TransactionKind.REFUND, out_trade_no=out_trade_no, out_refund_no=out_refund_no,
        channel_transaction_id=f"42000{out_trade_no}", channel_refund_id=f"50300{out_refund_no}",
        status="SUCCEEDED", amount=Money(fen), traded_at="2025-03-14 15:00:00",
    )  # fmt: skip


def statement(insutype: str, balanced: bool) -> InsurerStatement:
    declared = InsurerFigures(Money(20_000), Money(12_000), Money(2_000), 1)  # one insured payment
    reported = None if balanced else InsurerFigures(Money(50_000), Money(30_000), Money(5_000), 2)
    return InsurerStatement(
        insutype=insutype, clr_type="11", balanced=balanced, result_code="0" if balanced else "1",
        result_text="平" if balanced else "不平", declared=declared, reported=reported,
    )  # fmt: skip


@dataclass
class Desk:
    """The reconciliation service as finance staff reach it, with the sources behind it."""

    stub: reconciliation_pb2_grpc.ReconciliationServiceAsyncStub
    feed: events_pb2_grpc.EventFeedServiceAsyncStub
    platform: InMemoryPlatformLedger
    bills: InMemoryChannelBills
    insurer: InMemoryInsurerTotals
    app: ReconciliationApp

    async def run(self, day: date, request_id: str) -> pb.ReconciliationRun:
        request = pb.RunReconciliationRequest(request_id=request_id, business_date=day.isoformat())
        return (await self.stub.RunReconciliation(request, timeout=10)).run

    async def discrepancies(self, run_id: str, **filters: object) -> list[pb.Discrepancy]:
        request = pb.ListDiscrepanciesRequest(run_id=run_id, **filters)  # type: ignore[arg-type]
        return list((await self.stub.ListDiscrepancies(request, timeout=5)).discrepancies)


@pytest.fixture(params=["sqlite-file", "test-database"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> ReconciliationSettings:
    url = None if request.param == "sqlite-file" else request.getfixturevalue("database_url")
    return ReconciliationSettings(database_url=url, data_dir=tmp_path / "data", trace_dir=tmp_path / "traces")


@pytest.fixture
async def desk(settings: ReconciliationSettings) -> AsyncIterator[Desk]:
    platform, bills, insurer = InMemoryPlatformLedger(), InMemoryChannelBills(), InMemoryInsurerTotals()
    app = build(settings, platform_ledger=platform, channel_bills=bills, insurer_totals=insurer)
    await app.db.migrate()
    server = build_server()
    app.register(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    relay = asyncio.create_task(app.db.outbox.run_relay(poll_interval_s=0.05))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stub = reconciliation_pb2_grpc.ReconciliationServiceStub(channel)
    feed = events_pb2_grpc.EventFeedServiceStub(channel)
    yield Desk(stub, feed, platform, bills, insurer, app)  # type: ignore[arg-type]
    relay.cancel()
    await asyncio.gather(relay, return_exceptions=True)
    await channel.close()
    await server.stop(None)
    await app.close()


def prepare_clean_day(desk: Desk) -> None:
    desk.platform.record(CLEAN_DAY, [
        payment("T1", 12_500), payment("T2", 3_000, insutype="310"), refund("R1", "T1", 12_500),
        payment("C1", 900, channel="CASH"),
    ])  # fmt: skip
    desk.bills.record(
        CLEAN_DAY, [paid_row("T1", 12_500), paid_row("T2", 3_000), refund_row("R1", "T1", 12_500)]
    )
    desk.insurer.prepare(CLEAN_DAY, statement("310", balanced=True))


def prepare_messy_day(desk: Desk) -> None:
    desk.platform.record(MESSY_DAY, [
        payment("OK1", 5_000),
        payment("SHORT1", 2_200),                         # platform only: 短款
        payment("AMT1", 10_000),                          # the bill says 99.00
        payment("RF1", 4_000), refund("RFR1", "RF1", 4_000),  # refunded on the platform only
        payment("DUP1", 1_500),                           # its bill row comes twice
        payment("INS1", 3_300, insutype="390"),           # 3201 for 390 is not balanced
    ])  # fmt: skip
    desk.bills.record(MESSY_DAY, [
        paid_row("OK1", 5_000), paid_row("LONG1", 8_800),  # channel only: 长款
        paid_row("AMT1", 9_900), paid_row("RF1", 4_000), paid_row("DUP1", 1_500), paid_row("DUP1", 1_500),
        paid_row("INS1", 3_300),
    ])  # fmt: skip
    desk.insurer.prepare(MESSY_DAY, statement("390", balanced=False))


async def test_a_clean_day_completes_with_no_discrepancies_and_announces_itself(desk: Desk) -> None:
    prepare_clean_day(desk)

    run = await desk.run(CLEAN_DAY, "rcn-clean-1")

    assert run.status == pb.RUN_STATUS_COMPLETED
    assert (run.business_date, run.matched_count, run.discrepancy_count) == ("2025-03-14", 3, 0)
    totals = {item.source: item for item in run.totals}
    assert list(totals) == ["platform", "platform:wechat_pay", "wechat_pay", "insurer:310"]
    assert (totals["wechat_pay"].payment_count, totals["wechat_pay"].payment_fen) == (2, 15_500)
    assert (totals["wechat_pay"].refund_count, totals["wechat_pay"].refund_fen) == (1, 12_500)
    assert totals["platform"].payment_fen == 16_400
    assert await desk.discrepancies(run.run_id) == []
    assert desk.insurer.request_ids == [f"{run.run_id}-3201-310"]
    completed = await completed_events(desk)
    assert [(event.run_id, event.discrepancy_count) for event in completed] == [(run.run_id, 0)]


async def completed_events(desk: Desk) -> list[events_pb2.ReconciliationCompleted]:
    for _ in range(100):
        page = await desk.feed.ListEvents(events_pb2.ListEventsRequest(after_sequence=0), timeout=5)
        if page.events:
            return [event.reconciliation_completed for event in page.events]
        await asyncio.sleep(0.05)
    return []


async def test_a_messy_day_finds_each_class_once_with_evidence(desk: Desk) -> None:
    prepare_messy_day(desk)

    run = await desk.run(MESSY_DAY, "rcn-messy-1")
    found = await desk.discrepancies(run.run_id)

    assert run.status == pb.RUN_STATUS_COMPLETED
    by_class = {pb.DiscrepancyClass.Name(item.discrepancy_class): item for item in found}
    assert sorted(by_class) == sorted(
        name for name in pb.DiscrepancyClass.keys() if name != "DISCREPANCY_CLASS_UNSPECIFIED"
    )
    assert (run.discrepancy_count, len(found), run.matched_count) == (6, 6, 4)
    assert by_class["DISCREPANCY_CLASS_CHANNEL_ONLY"].out_trade_no == "LONG1"
    assert by_class["DISCREPANCY_CLASS_CHANNEL_ONLY"].source_amount_fen == 8_800
    assert by_class["DISCREPANCY_CLASS_PLATFORM_ONLY"].order_id == "ord_SHORT1"
    mismatch = by_class["DISCREPANCY_CLASS_AMOUNT_MISMATCH"]
    assert (mismatch.platform_amount_fen, mismatch.source_amount_fen) == (10_000, 9_900)
    assert by_class["DISCREPANCY_CLASS_STATUS_MISMATCH"].out_refund_no == "RFR1"
    assert by_class["DISCREPANCY_CLASS_DUPLICATE"].out_trade_no == "DUP1"
    assert by_class["DISCREPANCY_CLASS_INSURER_TOTALS_MISMATCH"].source == "insurer:390"
    assert all(item.evidence and item.status == pb.DISCREPANCY_STATUS_OPEN for item in found)


async def test_discrepancies_page_and_filter_by_class(desk: Desk) -> None:
    prepare_messy_day(desk)
    run = await desk.run(MESSY_DAY, "rcn-messy-2")

    first = await desk.stub.ListDiscrepancies(pb.ListDiscrepanciesRequest(run_id=run.run_id, page_size=4))
    second = await desk.stub.ListDiscrepancies(
        pb.ListDiscrepanciesRequest(run_id=run.run_id, page_size=4, page_token=first.next_page_token)
    )
    only = await desk.discrepancies(run.run_id, discrepancy_class=pb.DISCREPANCY_CLASS_DUPLICATE)

    ids = [item.discrepancy_id for item in [*first.discrepancies, *second.discrepancies]]
    assert (len(first.discrepancies), len(second.discrepancies), second.next_page_token) == (4, 2, "")
    assert len(set(ids)) == 6
    assert [item.out_trade_no for item in only] == ["DUP1"]


async def test_an_unreadable_bill_fails_the_run_with_its_reason_and_keeps_what_was_read(desk: Desk) -> None:
    prepare_clean_day(desk)
    desk.bills.down = True

    run = await desk.run(CLEAN_DAY, "rcn-down-1")
    stored = (await desk.stub.GetReconciliationRun(pb.GetReconciliationRunRequest(run_id=run.run_id))).run

    assert stored.status == pb.RUN_STATUS_FAILED
    assert stored.failure_reason.startswith("wechat_pay: ")
    assert [item.source for item in stored.totals] == ["platform"]
    assert stored.HasField("finished_at")


async def test_an_unreachable_insurer_fails_the_run_too(desk: Desk) -> None:
    desk.platform.record(CLEAN_DAY, [payment("T2", 3_000, insutype="310")])
    desk.bills.record(CLEAN_DAY, [paid_row("T2", 3_000)])

    run = await desk.run(CLEAN_DAY, "rcn-down-2")

    assert run.status == pb.RUN_STATUS_FAILED
    assert run.failure_reason.startswith("insurer:310: ")


async def test_the_same_request_id_replays_the_run_and_a_new_one_runs_again(desk: Desk) -> None:
    prepare_clean_day(desk)

    first = await desk.run(CLEAN_DAY, "rcn-replay")
    replayed = await desk.run(CLEAN_DAY, "rcn-replay")
    again = await desk.run(CLEAN_DAY, "rcn-replay-2")
    with pytest.raises(grpc.aio.AioRpcError) as reused:
        await desk.run(MESSY_DAY, "rcn-replay")

    assert replayed == first
    assert again.run_id != first.run_id
    assert reused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    listed = await desk.stub.ListReconciliationRuns(pb.ListReconciliationRunsRequest(page_size=1))
    rest = await desk.stub.ListReconciliationRuns(
        pb.ListReconciliationRunsRequest(page_size=1, page_token=listed.next_page_token)
    )
    assert [run.run_id for run in [*listed.runs, *rest.runs]] == [again.run_id, first.run_id]
    assert rest.next_page_token == ""


@pytest.mark.parametrize("business_date", ["", "2025-13-01", "14/03/2025", "2999-01-01"])
async def test_a_bad_business_date_is_invalid_argument_and_nothing_is_stored(
    desk: Desk, business_date: str
) -> None:
    request = pb.RunReconciliationRequest(request_id="rcn-bad", business_date=business_date)

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await desk.stub.RunReconciliation(request)

    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(refused.value) == ["business_date"]
    listed = await desk.stub.ListReconciliationRuns(pb.ListReconciliationRunsRequest())
    assert list(listed.runs) == []


def violated_fields(error: grpc.aio.AioRpcError) -> list[str]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    bad_request = error_details_pb2.BadRequest()
    for detail in status.details:
        if detail.Unpack(bad_request):
            return [violation.field for violation in bad_request.field_violations]
    return []


async def test_unknown_runs_resolution_and_bad_tokens_answer_with_the_right_codes(desk: Desk) -> None:
    calls = [
        desk.stub.GetReconciliationRun(pb.GetReconciliationRunRequest(run_id="rcn_missing")),
        desk.stub.ListDiscrepancies(pb.ListDiscrepanciesRequest(run_id="rcn_missing")),
        desk.stub.ResolveDiscrepancy(pb.ResolveDiscrepancyRequest(request_id="r1", discrepancy_id="dsc_1")),
        desk.stub.ListReconciliationRuns(pb.ListReconciliationRunsRequest(page_token="not-a-token")),
        desk.stub.ListReconciliationRuns(pb.ListReconciliationRunsRequest(page_size=-1)),
    ]
    codes = []
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call
        codes.append(refused.value.code())

    assert codes == [
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.INVALID_ARGUMENT,
    ]
