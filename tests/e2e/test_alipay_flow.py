"""An outpatient self-pay order paid by Alipay through the whole mesh: payment-core's Alipay adapter
(python-alipay-sdk) places the QR order at the Alipay simulator process, the simulated patient pays,
the simulator's signed form notification reaches payment-core's /notify/alipay and is acknowledged
with `success`, the order settles, and its refund leaves through Alipay too."""

from __future__ import annotations

import asyncio
import uuid

import httpx
from medpay.payment.v1 import payment_pb2

from infra.local.processes import MeshProcesses
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
