"""payment-core with the payer's own app (JSAPI) and the patient's payment code (付款码), in-process:
real gRPC, the notify endpoint, the process manager and the janitor, with the fake channel and the
fake insurer on the test's clock (the fake refuses a reverse sooner than 15 s after the payment call,
as WeChat Pay's rule says). SQLite, and PostgreSQL when one answers.

JSAPI is paid by notification. A code payment is paid at once, or waits PAYING while the patient
confirms: queried on the process manager's cadence until paid, failed, or reversed once its window
has passed; after a failure or a reverse the order can be paid by another attempt, and the cash is
collected once."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import grpc
import httpx
import pytest
from medpay.events.v1 import events_pb2_grpc
from medpay.payment.v1 import payment_pb2 as pb
from medpay.payment.v1 import payment_pb2_grpc

from services.payment_core.adapters.channels import ports
from services.payment_core.adapters.channels.fake import FakeChannel
from services.payment_core.adapters.insurance_fake import FakeInsurance
from services.payment_core.bootstrap import build
from services.payment_core.config import PaymentCoreSettings
from services.payment_core.entrypoints import mapping
from services.payment_core.entrypoints.notify_http import notify_app
from services.runtime.server import build_server
from tests.service import test_payment_core as base
from tests.service.test_payment_core import Clock, Harness, details, insured, self_pay

database = base.database
CODE = "134567890123456789"
OTHER_CODE = "104567890123450000"
OPENID = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
WINDOW = timedelta(seconds=30)  # the default code payment window


@pytest.fixture
async def harness(database: str, tmp_path: Path) -> AsyncIterator[Harness]:
    """test_payment_core's harness, with the fake channel on the service's clock."""
    settings = PaymentCoreSettings(database_url=database, data_dir=tmp_path, trace_dir=tmp_path / "traces")
    clock = Clock()
    channel, insurance = FakeChannel(clock=lambda: clock().replace(microsecond=0)), FakeInsurance()
    core = build(settings, channel=channel, insurance=insurance, clock=clock)
    await core.database.migrate()
    server = build_server()
    core.register(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    transport = httpx.ASGITransport(app=notify_app(core.notifications))
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as rpc,
        httpx.AsyncClient(transport=transport, base_url="http://payment-core") as http,
    ):
        stubs = payment_pb2_grpc.PaymentServiceStub(rpc), events_pb2_grpc.EventFeedServiceStub(rpc)
        yield Harness(core, *stubs, channel, insurance, clock, http, f"127.0.0.1:{port}")
    await server.stop(None)
    await core.close()


def by_code(order_id: str, code: str = CODE) -> pb.PayPaymentOrderRequest:
    return pb.PayPaymentOrderRequest(
        request_id=uuid.uuid4().hex, order_id=order_id, channel=pb.CHANNEL_WECHAT_PAY,
        method=pb.PAY_METHOD_BARCODE, auth_code=code,
    )  # fmt: skip


def in_app(order_id: str, openid: str = OPENID) -> pb.PayPaymentOrderRequest:
    return pb.PayPaymentOrderRequest(
        request_id=uuid.uuid4().hex, order_id=order_id, channel=pb.CHANNEL_WECHAT_PAY,
        method=pb.PAY_METHOD_JSAPI, payer_openid=openid,
    )  # fmt: skip


async def created(h: Harness, request: pb.CreatePaymentOrderRequest | None = None) -> str:
    return (await h.payment.CreatePaymentOrder(request or self_pay())).order.order_id


async def stored(h: Harness, order_id: str) -> pb.PaymentOrder:
    """The order as stored, without GetPaymentOrder's own look at the channel."""
    return mapping.order_to_proto(await h.core.orders.get(order_id, look_now=False))


async def later(h: Harness, offset: timedelta) -> None:
    """The clock moves on and the janitor advances whatever is due."""
    h.clock.offset = offset
    await h.core.janitor.sweep()
    await h.settled()


# ---- JSAPI ---------------------------------------------------------------------------------------


async def test_a_jsapi_payment_gives_signed_parameters_and_is_paid_by_notification(harness: Harness) -> None:
    order_id = await created(harness)
    paying = await harness.payment.PayPaymentOrder(in_app(order_id))
    payment, jsapi = paying.payment, paying.payment.jsapi
    assert paying.order.status == pb.ORDER_STATUS_PAYING and payment.method == pb.PAY_METHOD_JSAPI
    assert jsapi.package.startswith("prepay_id=fake-prepay-") and jsapi.sign_type == "RSA"
    assert payment.code_url == ""  # no QR code for a payment made in the payer's app
    params = ports.JsapiPayParams(
        jsapi.app_id, jsapi.time_stamp, jsapi.nonce_str, jsapi.package, jsapi.sign_type, jsapi.pay_sign
    )
    assert harness.channel.pay_sign_is_valid(params)

    again = await harness.payment.PayPaymentOrder(in_app(order_id))  # the page asks again
    assert again.payment.out_trade_no == payment.out_trade_no
    assert again.payment.jsapi.package == jsapi.package and again.payment.jsapi.nonce_str != jsapi.nonce_str

    reply = await harness.notify(*harness.channel.patient_pays(payment.out_trade_no))
    assert reply.status_code == 204
    await harness.settled()
    order = await harness.order(order_id)
    assert order.status == pb.ORDER_STATUS_SETTLED and order.cash_paid_fen == order.total_fen
    assert not order.payments[0].HasField("jsapi")  # signed only for the page that pays


@pytest.mark.parametrize(
    ("request_of", "field"),
    [
        (lambda oid: in_app(oid, openid=""), "payer_openid"),
        (lambda oid: in_app(oid, openid="o" * 129), "payer_openid"),
        (lambda oid: by_code(oid, code=""), "auth_code"),
        (lambda oid: by_code(oid, code="13456789012345678"), "auth_code"),
        (lambda oid: by_code(oid, code="284567890123456789"), "auth_code"),  # an Alipay code
        (lambda oid: pb.PayPaymentOrderRequest(
            request_id=uuid.uuid4().hex, order_id=oid, channel=pb.CHANNEL_WECHAT_PAY,
            method=pb.PAY_METHOD_NATIVE_QR, auth_code=CODE), "auth_code"),
    ],
)  # fmt: skip
async def test_a_payment_without_its_payers_credential_is_invalid_and_nothing_is_stored(
    harness: Harness, request_of: object, field: str
) -> None:
    order_id = await created(harness)
    request = request_of(order_id)  # type: ignore[operator]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.payment.PayPaymentOrder(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(caught.value) == ("FIELD_INVALID", [field])
    if request.auth_code:
        assert request.auth_code not in (caught.value.details() or "")
    order = await stored(harness, order_id)
    assert order.status == pb.ORDER_STATUS_AWAITING_PAYMENT and not order.payments
    assert harness.channel.code_payment_calls == []


# ---- code payments ---------------------------------------------------------------------------------


async def test_a_code_payment_paid_at_once_settles_and_the_code_is_never_kept(
    harness: Harness, database: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    order_id = await created(harness)
    paid = await harness.payment.PayPaymentOrder(by_code(order_id))
    assert paid.order.status == pb.ORDER_STATUS_SETTLED
    assert paid.payment.status == pb.PAYMENT_STATUS_SUCCEEDED and paid.payment.method == pb.PAY_METHOD_BARCODE
    assert paid.order.cash_paid_fen == paid.order.total_fen and paid.payment.code_url == ""
    assert harness.channel.code_payment_calls == [paid.payment.out_trade_no]

    with pytest.raises(grpc.aio.AioRpcError) as again:  # the cashier scans the code once more
        await harness.payment.PayPaymentOrder(by_code(order_id))
    assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert harness.channel.code_payment_calls == [paid.payment.out_trade_no]

    kept = (await harness.core.orders.get(order_id, look_now=False)).payments[0]
    assert kept.code_url == "13************6789"  # masked: it marks the code as sent, nothing more
    assert CODE not in caplog.text
    if database.startswith("sqlite"):
        await harness.core.close()
        files = await asyncio.to_thread(
            lambda: [f.read_bytes() for f in tmp_path.glob("payment_core.sqlite3*")]
        )
        assert files and all(CODE.encode() not in content for content in files)


async def test_an_insured_code_payment_paid_at_once_is_settled_with_the_insurer(harness: Harness) -> None:
    order_id = await created(harness, insured())
    paid = await harness.payment.PayPaymentOrder(by_code(order_id))
    await harness.settled()
    order = await harness.order(order_id)
    assert order.status == pb.ORDER_STATUS_SETTLED and order.setl_id
    assert order.cash_paid_fen == order.cash_due_fen == paid.payment.amount_fen


async def test_a_code_payment_the_patient_confirms_is_found_paid_by_a_query(harness: Harness) -> None:
    order_id = await created(harness)
    harness.channel.patient_needs_password()
    paying = await harness.payment.PayPaymentOrder(by_code(order_id))
    assert paying.order.status == pb.ORDER_STATUS_PAYING
    assert paying.payment.status == pb.PAYMENT_STATUS_PENDING
    out_trade_no = paying.payment.out_trade_no

    await later(harness, timedelta(seconds=5))  # the first query: still entering the password
    assert (await stored(harness, order_id)).status == pb.ORDER_STATUS_PAYING
    harness.channel.patient_pays(out_trade_no)  # confirmed on the phone: no notification comes
    await later(harness, timedelta(seconds=10))
    order = await stored(harness, order_id)
    assert order.status == pb.ORDER_STATUS_SETTLED and order.cash_paid_fen == order.total_fen
    assert harness.channel.code_payment_calls == [out_trade_no]  # queried, never sent again


async def test_a_code_payment_the_patient_cancels_fails_and_another_attempt_pays(harness: Harness) -> None:
    order_id = await created(harness)
    harness.channel.patient_needs_password()
    first = (await harness.payment.PayPaymentOrder(by_code(order_id))).payment
    harness.channel.patient_cancels(first.out_trade_no)
    await later(harness, timedelta(seconds=5))
    order = await stored(harness, order_id)
    assert order.status == pb.ORDER_STATUS_AWAITING_PAYMENT
    assert order.payments[0].status == pb.PAYMENT_STATUS_FAILED

    second = await harness.payment.PayPaymentOrder(by_code(order_id, OTHER_CODE))
    assert second.payment.out_trade_no != first.out_trade_no
    assert second.order.status == pb.ORDER_STATUS_SETTLED
    assert second.order.cash_paid_fen == second.order.total_fen


async def test_a_code_payment_never_confirmed_is_reversed_after_its_window_and_paid_again(
    harness: Harness,
) -> None:
    order_id = await created(harness)
    harness.channel.patient_needs_password()
    first = (await harness.payment.PayPaymentOrder(by_code(order_id))).payment

    await later(harness, WINDOW - timedelta(seconds=1))  # still waited for: only queried
    assert (await stored(harness, order_id)).status == pb.ORDER_STATUS_PAYING
    assert (await harness.channel.query(first.out_trade_no)).state is ports.TradeState.PAYING

    await later(harness, WINDOW)
    order = await stored(harness, order_id)
    assert order.status == pb.ORDER_STATUS_AWAITING_PAYMENT
    assert order.payments[0].status == pb.PAYMENT_STATUS_CLOSED
    at_channel = await harness.channel.query(first.out_trade_no)
    assert (at_channel.state, at_channel.channel_state) == (ports.TradeState.CLOSED, "REVOKED")

    second = await harness.payment.PayPaymentOrder(by_code(order_id, OTHER_CODE))
    assert second.order.status == pb.ORDER_STATUS_SETTLED
    assert second.order.cash_paid_fen == second.order.total_fen  # collected once
    assert [p.status for p in second.order.payments] == [
        pb.PAYMENT_STATUS_CLOSED,
        pb.PAYMENT_STATUS_SUCCEEDED,
    ]
    assert harness.channel.code_payment_calls == [first.out_trade_no, second.payment.out_trade_no]
    assert sum(b.fen for b in (await harness.trial_balance()).values()) == 0


async def test_a_patient_who_confirms_at_the_last_moment_is_not_reversed(harness: Harness) -> None:
    order_id = await created(harness)
    harness.channel.patient_needs_password()
    first = (await harness.payment.PayPaymentOrder(by_code(order_id))).payment
    harness.clock.offset = WINDOW - timedelta(seconds=1)
    harness.channel.patient_pays(first.out_trade_no)
    await later(harness, WINDOW)
    order = await stored(harness, order_id)
    assert order.status == pb.ORDER_STATUS_SETTLED and order.cash_paid_fen == order.total_fen
    assert (await harness.channel.query(first.out_trade_no)).state is ports.TradeState.PAID


async def test_a_code_payment_answered_late_is_not_reversed_sooner_than_15_s_after(harness: Harness) -> None:
    """The window is counted from the attempt's record; the reverse waits 15 s after the answer
    too (the fake channel refuses a reverse sooner, as WeChat Pay's rule says)."""
    order_id = await created(harness)
    harness.channel.patient_needs_password()
    original = harness.channel.pay_by_code

    async def answered_25_s_later(*args: object) -> ports.ChannelTradeStatus:
        answer = await original(*args)  # type: ignore[arg-type]
        harness.clock.offset = timedelta(seconds=25)
        return answer

    harness.channel.pay_by_code = answered_25_s_later  # type: ignore[method-assign]
    first = (await harness.payment.PayPaymentOrder(by_code(order_id))).payment
    await later(harness, WINDOW)
    assert (await stored(harness, order_id)).payments[0].status == pb.PAYMENT_STATUS_PENDING
    await later(harness, timedelta(seconds=40))
    assert (await stored(harness, order_id)).payments[0].status == pb.PAYMENT_STATUS_CLOSED
    assert (await harness.channel.query(first.out_trade_no)).channel_state == "REVOKED"


async def test_a_code_payment_whose_answer_was_lost_is_queried_never_sent_again(harness: Harness) -> None:
    order_id = await created(harness)
    original = harness.channel.pay_by_code

    async def landed_but_lost(*args: object) -> ports.ChannelTradeStatus:
        await original(*args)  # type: ignore[arg-type]
        raise ports.ChannelOutcomeUnknown("read timeout")

    harness.channel.pay_by_code = landed_but_lost  # type: ignore[method-assign]
    with pytest.raises(grpc.aio.AioRpcError):
        await harness.payment.PayPaymentOrder(by_code(order_id))
    assert (await stored(harness, order_id)).payments[0].status == pb.PAYMENT_STATUS_UNKNOWN
    again = await harness.payment.PayPaymentOrder(by_code(order_id))  # the cashier tries again
    assert again.payment.status == pb.PAYMENT_STATUS_UNKNOWN  # the same attempt, not a second debit
    await later(harness, timedelta(seconds=5))
    order = await stored(harness, order_id)
    assert order.status == pb.ORDER_STATUS_SETTLED and order.cash_paid_fen == order.total_fen
    assert len(harness.channel.code_payment_calls) == 1


async def test_a_lost_code_payment_the_channel_never_saw_is_not_closed_on_a_guess(harness: Harness) -> None:
    """Not found at the channel inside the window may still land: only the window's end (a reverse)
    ends it. Before, the first query's 'not found' closed the attempt at once."""
    order_id = await created(harness)

    async def lost(*args: object) -> ports.ChannelTradeStatus:
        raise ports.ChannelOutcomeUnknown("connection reset")

    harness.channel.pay_by_code = lost  # type: ignore[method-assign]
    with pytest.raises(grpc.aio.AioRpcError):
        await harness.payment.PayPaymentOrder(by_code(order_id))
    await later(harness, timedelta(seconds=5))
    await later(harness, timedelta(seconds=20))
    assert (await stored(harness, order_id)).payments[0].status == pb.PAYMENT_STATUS_UNKNOWN
    await later(harness, WINDOW)
    order = await stored(harness, order_id)
    assert order.status == pb.ORDER_STATUS_AWAITING_PAYMENT
    assert order.payments[0].status == pb.PAYMENT_STATUS_CLOSED
