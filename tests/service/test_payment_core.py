"""payment-core in-process: the real gRPC server on a loopback port, called through a real channel, with
the fake channel and the fake insurer. The notification endpoint is driven through its ASGI app.
Runs on SQLite, and on a scratch PostgreSQL database when one answers."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2, status_pb2
from medpay.common.v1 import common_pb2
from medpay.events.v1 import events_pb2, events_pb2_grpc
from medpay.payment.v1 import payment_pb2, payment_pb2_grpc

from services.payment_core.adapters.channels import ports
from services.payment_core.adapters.channels.fake import SIGNATURE_HEADER, FakeChannel
from services.payment_core.adapters.insurance_fake import FakeInsurance
from services.payment_core.bootstrap import PaymentCore, build
from services.payment_core.config import NOTIFY_PATH, PaymentCoreSettings
from services.payment_core.domain.ledger import LedgerTransaction
from services.payment_core.entrypoints.notify_http import notify_app
from services.runtime.clock import business_date_of, utcnow
from services.runtime.errors import InsurerRejected, OutcomeUnknown, RefundExceedsPaid
from services.runtime.money import Money
from services.runtime.server import build_server
from tests.conftest import TEST_DATABASE, create_scratch_database, drop_scratch_database

pb = payment_pb2
CERT_NO = "350102199001011234"


class Clock:
    """The service's clock, which a test may move forward (retry schedules)."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return utcnow() + self.offset


@dataclass
class Harness:
    core: PaymentCore
    payment: payment_pb2_grpc.PaymentServiceStub
    feed: events_pb2_grpc.EventFeedServiceStub
    channel: FakeChannel
    insurance: FakeInsurance
    clock: Clock
    http: httpx.AsyncClient
    address: str

    async def notify(self, headers: dict[str, str], body: bytes) -> httpx.Response:
        return await self.http.post(NOTIFY_PATH, headers=headers, content=body)

    async def settled(self) -> None:
        """Let the settlements the notifications started finish."""
        await self.core.process.drain(10)

    async def order(self, order_id: str) -> pb.PaymentOrder:
        reply = await self.payment.GetPaymentOrder(pb.GetPaymentOrderRequest(order_id=order_id))
        return reply.order

    async def events(self) -> list[events_pb2.EventEnvelope]:
        await self.core.database.outbox.assign_sequences()
        reply = await self.feed.ListEvents(events_pb2.ListEventsRequest(after_sequence=0, page_size=1000))
        return list(reply.events)

    async def ledger(self, order_id: str) -> list[LedgerTransaction]:
        async with self.core.orders._deps.uow() as uow:
            return list(await uow.ledger.transactions_of(order_id))

    async def trial_balance(self) -> dict[str, Money]:
        async with self.core.orders._deps.uow() as uow:
            return await uow.ledger.trial_balance()


def entry_kinds(entries: list[LedgerTransaction]) -> list[str]:
    """The ledger entries of an order by kind, in the order they were posted."""
    return [entry.kind for entry in entries]


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/payment_core.sqlite3"
        return
    if TEST_DATABASE.backend != "postgresql" or not TEST_DATABASE.server_url:
        pytest.skip("no PostgreSQL answers")
    url = await create_scratch_database(TEST_DATABASE.server_url)
    try:
        yield url
    finally:
        await drop_scratch_database(TEST_DATABASE.server_url, url)


@pytest.fixture
async def harness(database: str, tmp_path: Path) -> AsyncIterator[Harness]:
    settings = PaymentCoreSettings(database_url=database, data_dir=tmp_path, trace_dir=tmp_path / "traces")
    channel, insurance, clock = FakeChannel(), FakeInsurance(), Clock()
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


# ---- requests ---------------------------------------------------------------------------------------


def items(*totals: int) -> list[common_pb2.ChargeItem]:
    return [
        common_pb2.ChargeItem(
            hospital_code=f"ZC{n:04d}", national_code=f"11020000101{n:04d}", name="普通门诊诊查费",
            chrgitm_lv="01", med_chrgitm_type="02", quantity_ten_thousandths=10_000, unit_price_fen=total,
            line_total_fen=total, dept_code="0301", doctor_code="D0301", line_no=str(n + 1),
        )
        for n, total in enumerate(totals)
    ]  # fmt: skip


def self_pay(his_order_no: str | None = None) -> pb.CreatePaymentOrderRequest:
    return pb.CreatePaymentOrderRequest(
        request_id=uuid.uuid4().hex, his_order_no=his_order_no or f"MZ{uuid.uuid4().hex[:10]}",
        scene=pb.SCENE_OUTPATIENT, campus_code="FZ900", dept_code="0301",
        patient=common_pb2.Patient(his_patient_id="P-0001"), items=items(2_500, 10_000),
    )  # fmt: skip


def insured(his_order_no: str | None = None) -> pb.CreatePaymentOrderRequest:
    request = self_pay(his_order_no)
    request.patient.voucher.CopyFrom(
        common_pb2.PatientVoucher(mdtrt_cert_type="02", mdtrt_cert_no=CERT_NO, psn_name="林小明")
    )
    request.insurance.CopyFrom(pb.InsuranceRequest(insutype="310", med_type="11", use_personal_account=True))
    return request


def pay(
    order_id: str, channel: int = pb.CHANNEL_WECHAT_PAY, method: int = pb.PAY_METHOD_NATIVE_QR
) -> pb.PayPaymentOrderRequest:
    return pb.PayPaymentOrderRequest(
        request_id=uuid.uuid4().hex, order_id=order_id, channel=channel, method=method
    )


def refund(order_id: str) -> pb.RefundPaymentOrderRequest:
    return pb.RefundPaymentOrderRequest(
        request_id=uuid.uuid4().hex, order_id=order_id, reason="wrong prescription"
    )


def details(error: grpc.aio.AioRpcError) -> tuple[str, list[str]]:
    """(ErrorInfo.reason, BadRequest fields) of a failed call."""
    reason, fields = "", []
    for key, value in error.trailing_metadata() or ():
        if key != "grpc-status-details-bin":
            continue
        for detail in status_pb2.Status.FromString(value).details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason = info.reason
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                fields += [v.field for v in bad.field_violations]
    return reason, fields


async def created_and_paying(h: Harness, request: pb.CreatePaymentOrderRequest) -> pb.PayPaymentOrderResponse:
    created = await h.payment.CreatePaymentOrder(request)
    return await h.payment.PayPaymentOrder(pay(created.order.order_id))


async def patient_pays(h: Harness, paying: pb.PayPaymentOrderResponse) -> pb.PaymentOrder:
    """The patient scans and pays; the channel notifies; the settlement it starts runs to its end."""
    reply = await h.notify(*h.channel.patient_pays(paying.payment.out_trade_no))
    assert reply.status_code == 204
    await h.settled()
    return await h.order(paying.order.order_id)


async def settled_order(h: Harness, request: pb.CreatePaymentOrderRequest) -> pb.PaymentOrder:
    return await patient_pays(h, await created_and_paying(h, request))


def kinds(events: list[events_pb2.EventEnvelope], order_id: str) -> list[str]:
    return [e.event_type for e in events if e.aggregate_id == order_id]


# ---- the flows --------------------------------------------------------------------------------------


async def test_a_self_pay_order_is_paid_by_qr_and_settled_with_a_balanced_ledger(harness: Harness) -> None:
    paying = await created_and_paying(harness, self_pay())
    assert paying.order.status == pb.ORDER_STATUS_PAYING and paying.payment.code_url.startswith("fake://")
    assert (
        paying.payment.out_trade_no.startswith(paying.order.order_id)
        and len(paying.payment.out_trade_no) <= 32
    )

    order = await patient_pays(harness, paying)

    assert order.status == pb.ORDER_STATUS_SETTLED and order.cash_paid_fen == order.total_fen == 12_500
    entries = await harness.ledger(order.order_id)
    assert entry_kinds(entries) == ["PAYMENT", "SETTLEMENT"]
    assert all(sum(p.amount.fen for p in entry.postings) == 0 for entry in entries)
    assert sum(amount.fen for amount in (await harness.trial_balance()).values()) == 0
    assert kinds(await harness.events(), order.order_id) == [
        "payment_order_created", "payment_succeeded", "payment_order_settled",
    ]  # fmt: skip


async def test_an_insured_order_is_presettled_paid_and_settled_with_a_split_that_adds_up(
    harness: Harness,
) -> None:
    created = await harness.payment.CreatePaymentOrder(insured())
    split = created.order.split
    assert created.order.status == pb.ORDER_STATUS_AWAITING_PAYMENT
    assert created.order.cash_due_fen == split.psn_cash_pay_fen > 0
    assert created.order.patient.masked_cert_no == "3501**********1234"

    order = await patient_pays(harness, await harness.payment.PayPaymentOrder(pay(created.order.order_id)))

    assert order.status == pb.ORDER_STATUS_SETTLED and order.setl_id
    assert split.fund_pay_sumamt_fen + split.acct_pay_fen + split.psn_cash_pay_fen == order.total_fen
    assert ("settle", f"{order.order_id}-settle") in harness.insurance.calls
    [settled] = [
        e.payment_order_settled for e in await harness.events() if e.HasField("payment_order_settled")
    ]
    assert settled.fund_fen + settled.personal_account_fen + settled.cash_fen == settled.total_fen
    assert settled.business_date == business_date_of(utcnow()).isoformat()
    assert CERT_NO not in str(await harness.events())


async def test_a_duplicate_notification_has_no_second_effect(harness: Harness) -> None:
    paying = await created_and_paying(harness, self_pay())
    headers, body = harness.channel.patient_pays(paying.payment.out_trade_no)

    replies = await asyncio.gather(*(harness.notify(headers, body) for _ in range(3)))
    await harness.settled()
    again = await harness.notify(headers, body)

    assert {r.status_code for r in [*replies, again]} == {204}
    order = await harness.order(paying.order.order_id)
    assert [p.status for p in order.payments] == [pb.PAYMENT_STATUS_SUCCEEDED]
    assert order.cash_paid_fen == order.cash_due_fen
    assert entry_kinds(await harness.ledger(order.order_id)) == ["PAYMENT", "SETTLEMENT"]
    assert kinds(await harness.events(), order.order_id).count("payment_succeeded") == 1


async def test_a_replayed_request_id_has_no_second_effect(harness: Harness) -> None:
    request = insured()
    first, second = await asyncio.gather(
        harness.payment.CreatePaymentOrder(request), harness.payment.CreatePaymentOrder(request),
        return_exceptions=True,
    )  # fmt: skip
    winners = [r for r in (first, second) if isinstance(r, pb.CreatePaymentOrderResponse)]
    replay = await harness.payment.CreatePaymentOrder(request)
    assert winners and all(w.order.order_id == replay.order.order_id for w in winners)
    assert [c for c in harness.insurance.calls if c[0] == "presettle"] == [
        ("presettle", f"{replay.order.order_id}-presettle")
    ]
    payment = pay(replay.order.order_id)
    assert await harness.payment.PayPaymentOrder(payment) == await harness.payment.PayPaymentOrder(payment)

    another = insured(request.his_order_no)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.payment.CreatePaymentOrder(another)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details(caught.value)[0] == "STATE_CONFLICT"

    request.his_order_no = "MZ-another"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.payment.CreatePaymentOrder(request)
    assert details(caught.value)[0] == "REQUEST_ID_REUSED"


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda r: r.ClearField("items"), "items"),
        (lambda r: setattr(r.items[0], "line_total_fen", -5), "items[0].line_total_fen"),
        (lambda r: setattr(r.items[1], "line_total_fen", 9_000), "items[1].line_total_fen"),
        (lambda r: setattr(r.patient.voucher, "mdtrt_cert_no", ""), "patient.voucher.mdtrt_cert_no"),
        (lambda r: r.patient.ClearField("voucher"), "patient.voucher"),
        (lambda r: setattr(r.insurance, "med_type", ""), "insurance.med_type"),
        (lambda r: setattr(r, "his_order_no", ""), "his_order_no"),
        (lambda r: setattr(r, "scene", pb.SCENE_UNSPECIFIED), "scene"),
        (lambda r: setattr(r, "request_id", "no spaces allowed"), "request_id"),
    ],
)
async def test_invalid_input_is_refused_with_the_field_named_and_nothing_stored(
    harness: Harness, mutate: Callable[[pb.CreatePaymentOrderRequest], None], field: str
) -> None:
    request = insured()
    mutate(request)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.payment.CreatePaymentOrder(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(caught.value) == ("FIELD_INVALID", [field])
    assert CERT_NO not in (caught.value.details() or "")
    listing = await harness.payment.ListPaymentOrders(pb.ListPaymentOrdersRequest())
    assert not listing.orders and not harness.insurance.calls


async def test_concurrent_refunds_cannot_both_pass(harness: Harness) -> None:
    order = await settled_order(harness, self_pay())

    outcomes = await asyncio.gather(
        *(harness.payment.RefundPaymentOrder(refund(order.order_id)) for _ in range(2)),
        return_exceptions=True,
    )

    passed = [o for o in outcomes if isinstance(o, pb.RefundPaymentOrderResponse)]
    refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(passed) == 1 and len(refused) == 1, outcomes
    assert refused[0].code() == grpc.StatusCode.FAILED_PRECONDITION
    after = await harness.order(order.order_id)
    assert after.status == pb.ORDER_STATUS_REFUNDED and after.refunded_cash_fen == after.cash_paid_fen
    assert sum(amount.fen for amount in (await harness.trial_balance()).values()) == 0


async def test_storage_refuses_a_refund_beyond_what_was_paid_whatever_the_caller_believed(
    harness: Harness,
) -> None:
    order = await settled_order(harness, self_pay())
    await harness.payment.RefundPaymentOrder(refund(order.order_id))
    async with harness.core.orders._deps.uow() as uow:
        stale = await uow.orders.get(order.order_id)
        assert stale is not None
        with pytest.raises(RefundExceedsPaid):
            await uow.orders.reserve_refund(stale, stale.refunds[0])


async def test_a_tampered_notification_is_refused_and_changes_nothing(harness: Harness) -> None:
    paying = await created_and_paying(harness, self_pay())
    headers, body = harness.channel.patient_pays(paying.payment.out_trade_no)

    tampered_body = await harness.notify(headers, body.replace(b"12500", b"12501"))
    forged = await harness.notify({**headers, SIGNATURE_HEADER: "0" * 64}, body)
    unsigned = await harness.notify({"content-type": "application/json"}, body)

    assert [r.status_code for r in (tampered_body, forged, unsigned)] == [401, 401, 401]
    order = await harness.order(paying.order.order_id)
    assert order.status == pb.ORDER_STATUS_PAYING and order.cash_paid_fen == 0


# ---- neighbours of the flows ------------------------------------------------------------------------


async def test_an_unknown_presettlement_is_resumed_by_the_same_request(harness: Harness) -> None:
    harness.insurance.fail_next["presettle"] = [OutcomeUnknown("2206 timed out")]
    request = insured()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.payment.CreatePaymentOrder(request)
    assert (
        caught.value.code() == grpc.StatusCode.UNAVAILABLE and details(caught.value)[0] == "OUTCOME_UNKNOWN"
    )

    created = await harness.payment.CreatePaymentOrder(request)

    assert created.order.status == pb.ORDER_STATUS_AWAITING_PAYMENT and created.order.split.medfee_sumamt_fen
    presettles = {c for c in harness.insurance.calls if c[0] == "presettle"}
    assert presettles == {("presettle", f"{created.order.order_id}-presettle")}


async def test_an_insurer_refusal_at_creation_stores_nothing(harness: Harness) -> None:
    harness.insurance.fail_next["presettle"] = [InsurerRejected("not insured")]
    request = insured()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.payment.CreatePaymentOrder(request)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details(caught.value)[0] == "INSURER_REJECTED"
    assert not (await harness.payment.ListPaymentOrders(pb.ListPaymentOrdersRequest())).orders
    request.request_id = uuid.uuid4().hex  # the HIS may send the same bill again
    assert (
        await harness.payment.CreatePaymentOrder(request)
    ).order.status == pb.ORDER_STATUS_AWAITING_PAYMENT


async def test_a_lost_notification_is_found_by_the_janitor_within_seconds(harness: Harness) -> None:
    paying = await created_and_paying(harness, self_pay())
    harness.channel.patient_pays(paying.payment.out_trade_no)  # the notification never arrives

    await harness.core.janitor.sweep()
    assert (await harness.order(paying.order.order_id)).status == pb.ORDER_STATUS_PAYING

    harness.clock.offset = timedelta(seconds=11)  # the first query is due 10 s after placement
    await harness.core.janitor.sweep()
    async with harness.core.orders._deps.uow() as uow:
        stored = await uow.orders.get(paying.order.order_id)
    assert stored is not None and stored.status.value == "SETTLED"
    assert entry_kinds(await harness.ledger(stored.order_id)) == ["PAYMENT", "SETTLEMENT"]


async def test_a_kiosk_looking_at_a_paid_order_is_not_told_paying_for_long(harness: Harness) -> None:
    paying = await created_and_paying(harness, self_pay())
    harness.channel.patient_pays(paying.payment.out_trade_no)  # the notification never arrives
    harness.clock.offset = timedelta(seconds=3)  # before the janitor's first query
    order = await harness.order(paying.order.order_id)
    assert order.status == pb.ORDER_STATUS_SETTLED


async def test_a_notified_amount_that_differs_is_never_applied(harness: Harness) -> None:
    paying = await created_and_paying(harness, self_pay())
    trade = ports.ChannelTradeStatus(
        paying.payment.out_trade_no, ports.TradeState.PAID, Money(1), "4200009", utcnow(), "SUCCESS"
    )
    await harness.core.notifications._news.apply(
        ports.ChannelNotification("evt-1", "TRANSACTION.SUCCESS", trade)
    )
    order = await harness.order(paying.order.order_id)
    assert order.status == pb.ORDER_STATUS_NEEDS_ATTENTION and "not applied" in order.attention_reason
    assert order.cash_paid_fen == 0 and not await harness.ledger(order.order_id)


async def test_an_unknown_settlement_outcome_is_resumed_with_the_same_request_id(harness: Harness) -> None:
    harness.insurance.fail_next["settle"] = [OutcomeUnknown("2207 timed out")]
    order = await settled_order(harness, insured())
    # Not guessed: the order stays SETTLING, with the reason, until the insurer's word comes.
    assert order.status == pb.ORDER_STATUS_SETTLING and "OUTCOME_UNKNOWN" in order.attention_reason

    harness.clock.offset = timedelta(seconds=8)
    await harness.core.janitor.sweep()

    order = await harness.order(order.order_id)
    assert order.status == pb.ORDER_STATUS_SETTLED and not order.attention_reason
    settles = [c for c in harness.insurance.calls if c[0] == "settle"]
    assert settles == [("settle", f"{order.order_id}-settle")] * 2


async def test_an_insurer_refusal_gives_the_cash_back(harness: Harness) -> None:
    harness.insurance.fail_next["settle"] = [InsurerRejected("personal account frozen")]
    order = await settled_order(harness, insured())
    assert order.status == pb.ORDER_STATUS_REFUNDED and "frozen" in order.attention_reason
    assert order.refunded_cash_fen == order.cash_paid_fen > 0
    # The cash came in and went back; nothing was ever settled.
    assert entry_kinds(await harness.ledger(order.order_id)) == ["PAYMENT", "REFUND"]
    assert (await harness.trial_balance())["liability:receipts_unsettled"] == Money(0)


async def test_an_insured_refund_revokes_the_settlement_and_reverses_the_ledger(harness: Harness) -> None:
    order = await settled_order(harness, insured())
    refunded = await harness.payment.RefundPaymentOrder(refund(order.order_id))
    assert refunded.refund.status == pb.REFUND_STATUS_SUCCEEDED
    assert refunded.refund.fund_fen == order.split.fund_pay_sumamt_fen
    assert refunded.refund.cash_fen == order.cash_paid_fen
    assert ("revoke", f"{order.order_id}-revoke1") in harness.insurance.calls
    assert entry_kinds(await harness.ledger(order.order_id)) == ["PAYMENT", "SETTLEMENT", "REVERSAL"]
    assert all(amount.fen == 0 for amount in (await harness.trial_balance()).values())
    assert "refund_succeeded" in kinds(await harness.events(), order.order_id)


async def test_a_zero_cash_share_settles_at_once_without_a_channel(harness: Harness) -> None:
    harness.insurance.fund_ratio = harness.insurance.fund_ratio.__class__("1")
    created = await harness.payment.CreatePaymentOrder(insured())
    assert created.order.cash_due_fen == 0
    paid = await harness.payment.PayPaymentOrder(
        pay(created.order.order_id, pb.CHANNEL_NONE, pb.PAY_METHOD_UNSPECIFIED)
    )
    assert paid.order.status == pb.ORDER_STATUS_SETTLED and paid.payment.channel == pb.CHANNEL_NONE


async def test_closing_an_unpaid_insured_order_undoes_the_presettlement(harness: Harness) -> None:
    paying = await created_and_paying(harness, insured())
    close = pb.ClosePaymentOrderRequest(
        request_id=uuid.uuid4().hex, order_id=paying.order.order_id, reason="left"
    )
    closed = await harness.payment.ClosePaymentOrder(close)
    assert closed.order.status == pb.ORDER_STATUS_CLOSED
    assert [p.status for p in closed.order.payments] == [pb.PAYMENT_STATUS_CLOSED]
    assert ("cancel", f"{paying.order.order_id}-cancel") in harness.insurance.calls


async def test_the_days_transactions_carry_channel_keys_and_the_insurance_side(harness: Harness) -> None:
    insured_order = await settled_order(harness, insured())
    self_paid = await settled_order(harness, self_pay())
    await harness.payment.RefundPaymentOrder(refund(self_paid.order_id))
    today = business_date_of(utcnow()).isoformat()

    first = await harness.payment.ExportTransactions(
        pb.ExportTransactionsRequest(business_date=today, page_size=2)
    )
    rest = await harness.payment.ExportTransactions(
        pb.ExportTransactionsRequest(business_date=today, page_size=2, page_token=first.next_page_token)
    )

    moves = [*first.transactions, *rest.transactions]
    assert first.next_page_token and not rest.next_page_token and len(moves) == 3
    [insured_move] = [m for m in moves if m.order_id == insured_order.order_id]
    assert insured_move.setl_id == insured_order.setl_id and insured_move.fund_fen > 0
    [back] = [m for m in moves if m.kind == pb.Transaction.KIND_REFUND]
    assert back.out_refund_no and back.out_trade_no and back.amount_fen == self_paid.cash_paid_fen


async def test_orders_are_listed_newest_first_page_by_page(harness: Harness) -> None:
    made = [(await harness.payment.CreatePaymentOrder(self_pay())).order.order_id for _ in range(3)]
    first = await harness.payment.ListPaymentOrders(pb.ListPaymentOrdersRequest(page_size=2))
    rest = await harness.payment.ListPaymentOrders(
        pb.ListPaymentOrdersRequest(page_token=first.next_page_token)
    )
    assert [o.order_id for o in [*first.orders, *rest.orders]] == made[::-1]


async def test_what_is_not_offered_says_so(harness: Harness) -> None:
    created = await harness.payment.CreatePaymentOrder(self_pay())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.payment.PayPaymentOrder(pay(created.order.order_id, pb.CHANNEL_ALIPAY))
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED and details(caught.value)[0] == "NOT_OFFERED"
