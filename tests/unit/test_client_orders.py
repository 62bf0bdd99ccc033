"""What the facade sends for an order, and how it waits for one, against an in-process servicer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from medpay.client import ChargeLine, InsuredVisit, MedPayClient, OrderWaitError, Voucher
from medpay.payment.v1 import payment_pb2, payment_pb2_grpc

S = payment_pb2


class ScriptedPaymentService(payment_pb2_grpc.PaymentServiceServicer):
    """Records CreatePaymentOrder requests; GetPaymentOrder walks through `statuses`;
    WatchPaymentOrder streams them (repeating none), then ends, or stays open after the last one
    when `keep_open`. `unavailable` failures are answered first, one per watch."""

    def __init__(self) -> None:
        self.created: list[payment_pb2.CreatePaymentOrderRequest] = []
        self.paid: list[payment_pb2.PayPaymentOrderRequest] = []
        self.confirmed: list[payment_pb2.ConfirmWindowRefundRequest] = []
        self.statuses: list[int] = []
        self.gets = 0
        self.watches = 0
        self.keep_open = False
        self.unavailable = 0
        self.refunds: list[list[payment_pb2.Refund]] = []  # per streamed state, when set

    async def CreatePaymentOrder(self, request, context):  # type: ignore[no-untyped-def]
        self.created.append(request)
        total = sum(item.line_total_fen for item in request.items)
        order = S.PaymentOrder(order_id="ord_1", total_fen=total, status=S.ORDER_STATUS_AWAITING_PAYMENT)
        return S.CreatePaymentOrderResponse(order=order)

    async def PayPaymentOrder(self, request, context):  # type: ignore[no-untyped-def]
        self.paid.append(request)
        jsapi = S.JsapiPayParams(package="prepay_id=wx1", sign_type="RSA")
        return S.PayPaymentOrderResponse(payment=S.Payment(method=request.method, jsapi=jsapi))

    async def ConfirmWindowRefund(self, request, context):  # type: ignore[no-untyped-def]
        self.confirmed.append(request)
        refund = S.Refund(refund_id=request.refund_id, operator_id=request.operator_id)
        return S.ConfirmWindowRefundResponse(refund=refund)

    async def GetPaymentOrder(self, request, context):  # type: ignore[no-untyped-def]
        status = self.statuses[min(self.gets, len(self.statuses) - 1)]
        self.gets += 1
        return S.GetPaymentOrderResponse(order=S.PaymentOrder(order_id=request.order_id, status=status))

    async def WatchPaymentOrder(self, request, context):  # type: ignore[no-untyped-def]
        self.watches += 1
        if self.unavailable:
            self.unavailable -= 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "replica going away")
        for n, status in enumerate(self.statuses):
            refunds = self.refunds[n] if n < len(self.refunds) else []
            order = S.PaymentOrder(order_id=request.order_id, status=status, refunds=refunds)
            yield S.WatchPaymentOrderResponse(order=order)
        if self.keep_open:
            await asyncio.Event().wait()  # until the caller's deadline cancels the call


@pytest.fixture
async def client() -> AsyncIterator[tuple[ScriptedPaymentService, MedPayClient]]:
    servicer = ScriptedPaymentService()
    server = grpc.aio.server()
    payment_pb2_grpc.add_PaymentServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with MedPayClient.connect(payment=f"127.0.0.1:{port}") as medpay:
            yield servicer, medpay
    finally:
        await server.stop(None)


async def test_an_insured_order_carries_voucher_items_and_insurance(
    client: tuple[ScriptedPaymentService, MedPayClient],
) -> None:
    servicer, medpay = client
    items = [
        ChargeLine(
            "ZC0001", "110200001010000", "普通门诊诊查费", 2_500, chrgitm_lv="01", med_chrgitm_type="02"
        ),
        ChargeLine("XY0001", "XJ01CAA040A001010101445", "阿莫西林胶囊", 1_250, quantity=2, dept_code="A07"),
    ]
    visit = InsuredVisit(Voucher("02", "350102198805123411", "林志强"), insutype="310")
    order = await medpay.create_outpatient_order(
        his_order_no="MZ0001",
        his_patient_id="HIS0000001",
        items=items,
        campus_code="FZ01",
        dept_code="A03",
        doctor_code="D0301",
        doctor_name="陈医生",
        insurance=visit,
    )
    assert order.total_fen == 5_000
    sent = servicer.created[0]
    assert len(sent.request_id) == 32
    assert sent.scene == S.SCENE_OUTPATIENT
    assert [(i.line_no, i.dept_code, i.doctor_code) for i in sent.items] == [
        ("1", "A03", "D0301"),
        ("2", "A07", "D0301"),
    ]
    assert sent.patient.voucher.mdtrt_cert_type == "02"
    assert (sent.insurance.med_type, sent.insurance.insutype) == ("11", "310")
    assert sent.insurance.use_personal_account


async def test_a_self_pay_order_has_no_insurance_part(
    client: tuple[ScriptedPaymentService, MedPayClient],
) -> None:
    servicer, medpay = client
    items = [ChargeLine("GH0001", "110200001000000", "普通门诊挂号费", 100)]
    await medpay.create_outpatient_order(
        his_order_no="MZ0002", his_patient_id="HSP0000001", items=items, campus_code="FZ01", dept_code="A03"
    )
    sent = servicer.created[0]
    assert not sent.HasField("insurance")
    assert not sent.patient.HasField("voucher")


async def test_wait_until_settled_follows_the_stream_through_paying(
    client: tuple[ScriptedPaymentService, MedPayClient],
) -> None:
    servicer, medpay = client
    servicer.statuses = [S.ORDER_STATUS_PAYING, S.ORDER_STATUS_SETTLING, S.ORDER_STATUS_SETTLED]
    order = await medpay.wait_until_settled("ord_1", timeout_s=5)
    assert order.status == S.ORDER_STATUS_SETTLED
    assert (servicer.watches, servicer.gets) == (1, 0)


async def test_a_watch_cut_off_unavailable_is_opened_again(
    client: tuple[ScriptedPaymentService, MedPayClient],
) -> None:
    servicer, medpay = client
    servicer.statuses = [S.ORDER_STATUS_PAYING, S.ORDER_STATUS_SETTLED]
    servicer.unavailable = 2
    order = await medpay.wait_until_settled("ord_1", timeout_s=5)
    assert order.status == S.ORDER_STATUS_SETTLED and servicer.watches == 3


async def test_watch_order_yields_each_state_once_and_ends_with_the_stream(
    client: tuple[ScriptedPaymentService, MedPayClient],
) -> None:
    servicer, medpay = client
    servicer.statuses = [S.ORDER_STATUS_AWAITING_PAYMENT, S.ORDER_STATUS_PAYING, S.ORDER_STATUS_SETTLED]
    seen = [order.status async for order in medpay.watch_order("ord_1", timeout_s=5)]
    assert seen == servicer.statuses


async def test_wait_until_refunded_gives_up_when_the_refund_ends_settled(
    client: tuple[ScriptedPaymentService, MedPayClient],
) -> None:
    servicer, medpay = client
    servicer.statuses = [S.ORDER_STATUS_REFUNDING, S.ORDER_STATUS_SETTLED]
    with pytest.raises(OrderWaitError, match="will not become ORDER_STATUS_REFUNDED") as caught:
        await medpay.wait_until_refunded("ord_1", timeout_s=5)
    assert caught.value.order.status == S.ORDER_STATUS_SETTLED


async def test_wait_until_settled_gives_up_on_a_closed_order(
    client: tuple[ScriptedPaymentService, MedPayClient],
) -> None:
    servicer, medpay = client
    servicer.statuses = [S.ORDER_STATUS_PAYING, S.ORDER_STATUS_CLOSED]
    with pytest.raises(OrderWaitError) as caught:
        await medpay.wait_until_settled("ord_1", timeout_s=5)
    assert caught.value.order.status == S.ORDER_STATUS_CLOSED


async def test_wait_until_settled_times_out_with_the_last_state(
    client: tuple[ScriptedPaymentService, MedPayClient],
) -> None:
    servicer, medpay = client
    servicer.statuses = [S.ORDER_STATUS_PAYING, S.ORDER_STATUS_NEEDS_ATTENTION]
    servicer.keep_open = True  # NEEDS_ATTENTION does not end the stream
    with pytest.raises(OrderWaitError, match="NEEDS_ATTENTION") as caught:
        await medpay.wait_until_settled("ord_1", timeout_s=0.3)
    assert caught.value.order.status == S.ORDER_STATUS_NEEDS_ATTENTION
    assert (servicer.watches, servicer.gets) == (1, 0)


async def test_a_code_payment_and_a_jsapi_payment_carry_the_payers_credential(
    client: tuple[ScriptedPaymentService, MedPayClient],
) -> None:
    servicer, medpay = client
    await medpay.pay("ord_1", S.CHANNEL_WECHAT_PAY, S.PAY_METHOD_BARCODE, auth_code="134567890123456789")
    paid = await medpay.pay("ord_1", S.CHANNEL_WECHAT_PAY, S.PAY_METHOD_JSAPI, payer_openid="oUpF8u1")
    code, jsapi = servicer.paid
    assert (code.auth_code, code.payer_openid) == ("134567890123456789", "")
    assert (jsapi.auth_code, jsapi.payer_openid) == ("", "oUpF8u1")
    assert paid.payment.jsapi.package == "prepay_id=wx1"


async def test_a_pos_report_and_its_refund_confirmation_carry_the_slip_and_the_cashier(
    client: tuple[ScriptedPaymentService, MedPayClient],
) -> None:
    servicer, medpay = client
    slip = S.PosSlip(reference_no="123456789012", terminal_id="12345678", batch_no="000123")
    await medpay.pay("ord_1", S.CHANNEL_POS, S.PAY_METHOD_POS, amount_fen=5_000, operator_id="C001", pos=slip)
    done = await medpay.confirm_window_refund("ord_1", "rfd_1", "C002", pos=slip)
    [reported], [confirmed] = servicer.paid, servicer.confirmed
    assert (reported.pos, reported.operator_id, reported.amount_fen) == (slip, "C001", 5_000)
    assert (confirmed.refund_id, confirmed.pos, done.refund.operator_id) == ("rfd_1", slip, "C002")


async def test_wait_until_refund_final_waits_for_that_refund_not_the_order_status(
    client: tuple[ScriptedPaymentService, MedPayClient],
) -> None:
    servicer, medpay = client
    servicer.statuses = [S.ORDER_STATUS_REFUNDING, S.ORDER_STATUS_SETTLED]
    servicer.refunds = [
        [S.Refund(refund_id="rf_1", status=S.REFUND_STATUS_PROCESSING)],
        [S.Refund(refund_id="rf_1", status=S.REFUND_STATUS_SUCCEEDED, cash_fen=300)],
    ]
    order = await medpay.wait_until_refund_final("ord_1", "rf_1", timeout_s=5)
    assert order.status == S.ORDER_STATUS_SETTLED and order.refunds[0].cash_fen == 300


async def test_wait_until_refund_final_waits_for_every_part_a_split_refund_became(
    client: tuple[ScriptedPaymentService, MedPayClient],
) -> None:
    """A refund of an order paid by two payments is two refunds (rf_1, rf_1-2): the wait covers both."""
    servicer, medpay = client
    servicer.statuses = [S.ORDER_STATUS_REFUNDING, S.ORDER_STATUS_REFUNDING, S.ORDER_STATUS_REFUNDED]
    first_done = S.Refund(refund_id="rf_1", status=S.REFUND_STATUS_SUCCEEDED, cash_fen=6900)
    servicer.refunds = [
        [S.Refund(refund_id="rf_1", status=S.REFUND_STATUS_PROCESSING),
         S.Refund(refund_id="rf_1-2", status=S.REFUND_STATUS_PROCESSING)],
        [first_done, S.Refund(refund_id="rf_1-2", status=S.REFUND_STATUS_PROCESSING)],
        [first_done, S.Refund(refund_id="rf_1-2", status=S.REFUND_STATUS_SUCCEEDED, cash_fen=6900)],
    ]  # fmt: skip
    order = await medpay.wait_until_refund_final("ord_1", "rf_1", timeout_s=5)
    assert order.status == S.ORDER_STATUS_REFUNDED
    assert sum(refund.cash_fen for refund in order.refunds) == 13_800
