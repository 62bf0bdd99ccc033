"""An outpatient self-pay order paid by Alipay through the whole mesh: payment-core's Alipay adapter
(python-alipay-sdk) places the QR order at the Alipay simulator process, the simulated patient pays,
the simulator's signed form notification reaches payment-core's /notify/alipay and is acknowledged
with `success`, the order settles, and its refund leaves through Alipay too."""

from __future__ import annotations

import asyncio
import uuid

import httpx
from medpay.payment.v1 import payment_pb2
from medpay.reconciliation.v1 import reconciliation_pb2

from infra.local.processes import MeshProcesses
from services.runtime.clock import business_date_of, utcnow
from tests.e2e.flows import Stubs, self_pay_order_request, wait_for_status

Status = payment_pb2.OrderStatus


async def _alipay_deliveries(mesh: MeshProcesses, out_trade_no: str, refund: bool) -> list[dict[str, object]]:
    url = f"{mesh.layout.http_base('alipay-sim')}/sim/notifications"
    async with httpx.AsyncClient(timeout=10) as client:
        for _ in range(300):
            attempts: list[dict[str, object]] = (
                await client.get(url, params={"out_trade_no": out_trade_no})
            ).json()
            wanted = [a for a in attempts if bool(a["out_request_no"]) is refund and a["acknowledged"]]
            if wanted:
                return wanted
            await asyncio.sleep(0.1)
    raise AssertionError(f"no acknowledged Alipay notification for {out_trade_no}: {attempts}")


async def _paid_by_alipay(
    mesh: MeshProcesses, stubs: Stubs, items: int
) -> tuple[payment_pb2.PaymentOrder, str]:
    """A self-pay order paid by Alipay QR through the simulator; the settled order and out_trade_no."""
    his_no = f"MZ{uuid.uuid4().hex[:12].upper()}"
    created = await stubs.payment.CreatePaymentOrder(self_pay_order_request(his_no, items), timeout=30)
    paying = await stubs.payment.PayPaymentOrder(
        payment_pb2.PayPaymentOrderRequest(
            request_id=uuid.uuid4().hex, order_id=created.order.order_id,
            channel=payment_pb2.CHANNEL_ALIPAY, method=payment_pb2.PAY_METHOD_NATIVE_QR,
        ),
        timeout=30,
    )  # fmt: skip
    out_trade_no = paying.payment.out_trade_no
    async with httpx.AsyncClient(timeout=10) as client:
        scanned = await client.post(
            f"{mesh.layout.http_base('alipay-sim')}/sim/pay", json={"out_trade_no": out_trade_no}
        )
        scanned.raise_for_status()
    return await wait_for_status(stubs, created.order.order_id, Status.ORDER_STATUS_SETTLED), out_trade_no


async def test_an_alipay_payment_is_in_its_bill_and_reconciled(mesh: MeshProcesses, stubs: Stubs) -> None:
    """The Alipay simulator's zipped GBK bill, read by payment-core's Alipay adapter and exported
    through ExportChannelBill, is what reconciliation matches the platform's Alipay payments against."""
    settled, out_trade_no = await _paid_by_alipay(mesh, stubs, 4)
    today = business_date_of(utcnow()).isoformat()

    bill = await stubs.payment.ExportChannelBill(
        payment_pb2.ExportChannelBillRequest(channel=payment_pb2.CHANNEL_ALIPAY, business_date=today),
        timeout=30,
    )
    [row] = [row for row in bill.rows if row.out_trade_no == out_trade_no]
    assert (row.kind, row.status) == (
        payment_pb2.ChannelBillRow.KIND_PAYMENT,
        payment_pb2.ChannelBillRow.STATUS_SUCCEEDED,
    )
    assert row.amount_fen == settled.cash_paid_fen > 0 and row.channel_transaction_id
    assert bill.summary.payment_count >= 1 and bill.summary.payment_fen >= row.amount_fen

    run = (
        await stubs.reconciliation.RunReconciliation(
            reconciliation_pb2.RunReconciliationRequest(request_id=uuid.uuid4().hex, business_date=today),
            timeout=60,
        )
    ).run
    assert run.status == reconciliation_pb2.RUN_STATUS_COMPLETED, run.failure_reason
    totals = {item.source: item for item in run.totals}
    assert totals["alipay"].payment_count == bill.summary.payment_count
    found = await stubs.reconciliation.ListDiscrepancies(
        reconciliation_pb2.ListDiscrepanciesRequest(run_id=run.run_id, page_size=100), timeout=10
    )
    assert out_trade_no not in {item.out_trade_no for item in found.discrepancies}


async def test_a_self_pay_order_paid_and_refunded_by_alipay(mesh: MeshProcesses, stubs: Stubs) -> None:
    his_no = f"MZ{uuid.uuid4().hex[:12].upper()}"
    created = await stubs.payment.CreatePaymentOrder(self_pay_order_request(his_no, 7), timeout=30)
    paying = await stubs.payment.PayPaymentOrder(
        payment_pb2.PayPaymentOrderRequest(
            request_id=uuid.uuid4().hex,
            order_id=created.order.order_id,
            channel=payment_pb2.CHANNEL_ALIPAY,
            method=payment_pb2.PAY_METHOD_NATIVE_QR,
        ),
        timeout=30,
    )
    assert paying.payment.code_url.startswith("https://qr.alipay.com/")
    out_trade_no = paying.payment.out_trade_no
    async with httpx.AsyncClient(timeout=10) as client:
        scanned = await client.post(
            f"{mesh.layout.http_base('alipay-sim')}/sim/pay", json={"out_trade_no": out_trade_no}
        )
        scanned.raise_for_status()
    settled = await wait_for_status(stubs, created.order.order_id, Status.ORDER_STATUS_SETTLED)
    assert settled.cash_paid_fen == settled.total_fen > 0
    [payment] = [p for p in settled.payments if p.out_trade_no == out_trade_no]
    assert payment.channel == payment_pb2.CHANNEL_ALIPAY
    assert await _alipay_deliveries(mesh, out_trade_no, refund=False)

    await stubs.payment.RefundPaymentOrder(
        payment_pb2.RefundPaymentOrderRequest(
            request_id=uuid.uuid4().hex, order_id=created.order.order_id, reason="退号"
        ),
        timeout=30,
    )
    await wait_for_status(stubs, created.order.order_id, Status.ORDER_STATUS_REFUNDED)
    assert await _alipay_deliveries(mesh, out_trade_no, refund=True)
