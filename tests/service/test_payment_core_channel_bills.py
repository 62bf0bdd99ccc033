"""ExportChannelBill in-process: payment-core's real gRPC server on a loopback port, the fake channel
behind it. The bill is the channel's, read by its adapter and said in the platform's words, page by
page, with the whole bill's totals on every page."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from medpay.payment.v1 import payment_pb2, payment_pb2_grpc

from services.payment_core.adapters.channels import ports
from services.payment_core.adapters.channels.fake import FakeChannel
from services.payment_core.adapters.insurance_fake import FakeInsurance
from services.payment_core.bootstrap import PaymentCore, build
from services.payment_core.config import PaymentCoreSettings
from services.runtime.clock import business_date_of, utcnow
from services.runtime.money import Money
from services.runtime.server import build_server
from tests.e2e.errors import error_reason, violated_fields

pb = payment_pb2
Row = pb.ChannelBillRow


@dataclass
class Harness:
    core: PaymentCore
    payment: payment_pb2_grpc.PaymentServiceStub
    channel: FakeChannel

    async def paid(self, fen: int, at: datetime | None = None) -> str:
        out_trade_no = f"MP{uuid.uuid4().hex[:20]}"
        expires = utcnow() + timedelta(minutes=15)
        await self.channel.place_order(out_trade_no, Money(fen), "门诊缴费", "http://notify", expires)
        self.channel.patient_pays(out_trade_no, at)
        return out_trade_no

    async def export(
        self, day: str, page_size: int = 0, page_token: str = "", channel: int = 1
    ) -> pb.ExportChannelBillResponse:
        request = pb.ExportChannelBillRequest(
            channel=channel, business_date=day, page_size=page_size, page_token=page_token
        )
        reply: pb.ExportChannelBillResponse = await self.payment.ExportChannelBill(request, timeout=10)
        return reply


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    settings = PaymentCoreSettings(
        database_url=f"sqlite+aiosqlite:///{tmp_path}/payment_core.sqlite3", data_dir=tmp_path,
        trace_dir=tmp_path / "traces",
    )  # fmt: skip
    channel = FakeChannel()
    core = build(settings, channel=channel, insurance=FakeInsurance())
    await core.database.migrate()
    server = build_server()
    core.register(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as rpc:
        yield Harness(core, payment_pb2_grpc.PaymentServiceStub(rpc), channel)
    await server.stop(None)
    await core.close()


def today() -> str:
    return business_date_of(utcnow()).isoformat()


async def test_the_bill_comes_in_the_platforms_words_with_its_totals(harness: Harness) -> None:
    at = datetime.now(UTC).replace(microsecond=0)
    paid = await harness.paid(12_500, at)
    refunded = await harness.paid(3_000, at)
    await harness.channel.refund("RF" + refunded, refunded, Money(1_000), Money(3_000), "退费")
    reply = await harness.export(today())
    by_key = {(row.kind, row.out_refund_no or row.out_trade_no): row for row in reply.rows}
    payment = by_key[(Row.KIND_PAYMENT, paid)]
    assert (payment.status, payment.amount_fen, payment.traded_at.ToDatetime(UTC)) == (
        Row.STATUS_SUCCEEDED, 12_500, at,
    )  # fmt: skip
    assert payment.channel_transaction_id.startswith("fake-txn-")
    refund = by_key[(Row.KIND_REFUND, "RF" + refunded)]
    assert (refund.status, refund.amount_fen, refund.out_trade_no) == (Row.STATUS_SUCCEEDED, 1_000, refunded)
    assert refund.channel_refund_id
    summary = reply.summary
    assert (summary.row_count, summary.payment_count, summary.payment_fen) == (3, 2, 15_500)
    assert (summary.refund_count, summary.refund_fen) == (1, 1_000)
    assert reply.next_page_token == ""


async def test_a_refund_still_processing_is_billed_but_moved_no_money(harness: Harness) -> None:
    out_trade_no = await harness.paid(5_000)
    harness.channel.answer_next_refunds(ports.RefundStatus.PROCESSING)
    await harness.channel.refund("RF" + out_trade_no, out_trade_no, Money(5_000), Money(5_000), "退费")
    reply = await harness.export(today())
    (refund,) = [row for row in reply.rows if row.kind == Row.KIND_REFUND]
    assert refund.status == Row.STATUS_PROCESSING
    assert (reply.summary.refund_count, reply.summary.refund_fen) == (0, 0)


async def test_pages_cover_the_bill_once_each(harness: Harness) -> None:
    keys = {await harness.paid(100 + n) for n in range(5)}
    seen: list[str] = []
    token = ""
    while True:
        reply = await harness.export(today(), page_size=2, page_token=token)
        assert len(reply.rows) <= 2 and reply.summary.row_count == 5
        seen += [row.out_trade_no for row in reply.rows]
        token = reply.next_page_token
        if not token:
            break
    assert sorted(seen) == sorted(keys)


async def test_a_bill_that_changed_between_pages_is_refused_not_mixed(harness: Harness) -> None:
    for n in range(3):
        await harness.paid(100 + n)
    first = await harness.export(today(), page_size=2)
    harness.core.servicer._channel_bills._snapshots.clear()  # as if another replica served page 2
    await harness.paid(999)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.export(today(), page_size=2, page_token=first.next_page_token)
    assert (caught.value.code(), error_reason(caught.value)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "BILL_CHANGED",
    )


async def test_a_page_token_of_another_day_is_invalid_argument(harness: Harness) -> None:
    for n in range(3):
        await harness.paid(100 + n)
    first = await harness.export(today(), page_size=2)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.export("2020-01-01", page_size=2, page_token=first.next_page_token)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(caught.value) == ["page_token"]


async def test_a_day_without_trade_is_an_empty_bill(harness: Harness) -> None:
    reply = await harness.export("2020-01-01")
    assert list(reply.rows) == [] and reply.summary.row_count == 0


@pytest.mark.parametrize(
    ("request_fields", "fields"),
    [
        ({"channel": pb.CHANNEL_UNSPECIFIED, "business_date": "2026-12-01"}, ["channel"]),
        ({"channel": pb.CHANNEL_CASH, "business_date": "2026-12-01"}, ["channel"]),
        ({"channel": 99, "business_date": "2026-12-01"}, ["channel"]),
        ({"channel": pb.CHANNEL_WECHAT_PAY, "business_date": "2026-13-01"}, ["business_date"]),
        ({"channel": pb.CHANNEL_WECHAT_PAY, "business_date": ""}, ["business_date"]),
        ({"channel": pb.CHANNEL_WECHAT_PAY, "business_date": "2026-12-01", "page_size": 1001}, ["page_size"]),
        (
            {"channel": pb.CHANNEL_WECHAT_PAY, "business_date": "2026-12-01", "page_token": "%%"},
            ["page_token"],
        ),
        ({"business_date": "1999-12-31"}, ["channel", "business_date"]),
    ],
)
async def test_bad_input_is_invalid_argument_naming_the_field(
    harness: Harness, request_fields: dict[str, object], fields: list[str]
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.payment.ExportChannelBill(pb.ExportChannelBillRequest(**request_fields), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(caught.value) == fields


async def test_a_channel_not_offered_here_is_unimplemented(harness: Harness) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.export(today(), channel=pb.CHANNEL_ALIPAY)
    assert (caught.value.code(), error_reason(caught.value)) == (grpc.StatusCode.UNIMPLEMENTED, "NOT_OFFERED")


async def test_a_day_still_to_come_has_no_bill_yet(harness: Harness) -> None:
    tomorrow = (business_date_of(utcnow()) + timedelta(days=1)).isoformat()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.export(tomorrow)
    assert (caught.value.code(), error_reason(caught.value)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "BILL_NOT_READY",
    )


@pytest.mark.parametrize(
    "failure",
    [ports.ChannelUnavailable("connect refused"), ports.ChannelProtocolError("summary does not add up")],
)
async def test_a_channel_that_cannot_give_its_bill_is_unavailable(
    harness: Harness, failure: ports.ChannelError
) -> None:
    harness.channel.fail_bill_downloads(failure)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.export(today())
    assert (caught.value.code(), error_reason(caught.value)) == (
        grpc.StatusCode.UNAVAILABLE,
        "CHANNEL_UNAVAILABLE",
    )
