"""The demo's proof that the platform finishes its own work, through the public API only.

Two visits at the cashier window go wrong the way real ones do:

- the patient pays, but WeChat Pay's notification is lost: nobody calls payment-core again, and its
  janitor queries the channel (10 s after the QR code was placed) and settles the order;
- the cashier closes an order while the patient is paying, and the payment goes through anyway
  (it raced the close at the channel): payment-core refunds that late success to the patient by
  itself, records why, and the order is CLOSED again.

Both are waited for on WatchPaymentOrder (the facade's watch), never polled.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

import httpx
from medpay.client import MedPayClient
from medpay.client.models import ChargeLine, format_yuan
from medpay.payment.v1 import payment_pb2
from rich.console import Console
from rich.table import Table

CAMPUS, DEPT = "FZ001", "0301"
WECHAT, NATIVE_QR = payment_pb2.CHANNEL_WECHAT_PAY, payment_pb2.PAY_METHOD_NATIVE_QR
# A consultation and a blood count, self-pay (hospital codes of the simulators' catalogue).
BILL = (
    ChargeLine(hospital_code="ZC0001", national_code="110200001010000", name="普通门诊诊查费",
               unit_price_fen=2_500, chrgitm_lv="01", med_chrgitm_type="02"),
    ChargeLine(hospital_code="HY0001", national_code="250101015000000", name="血细胞分析（五分类）",
               unit_price_fen=2_000, chrgitm_lv="01", med_chrgitm_type="04"),
)  # fmt: skip


@dataclass(frozen=True)
class Recovered:
    what: str
    order: payment_pb2.PaymentOrder
    seconds: float


class RecoveryShowcase:
    def __init__(self, client: MedPayClient, wechat_sim_url: str, console: Console) -> None:
        self._client = client
        self._wechat = httpx.AsyncClient(base_url=wechat_sim_url, timeout=10.0)
        self._console = console

    async def run(self) -> list[str]:
        """Both stories; the problems found (empty when the platform finished both by itself)."""
        try:
            with self._console.status(
                "the platform finishing its own work (lost notification, late success) ..."
            ):
                recovered = [await self._lost_notification(), await self._success_after_close()]
        finally:
            await self._wechat.aclose()
        self._console.print(_table(recovered))
        return _problems(recovered)

    async def _lost_notification(self) -> Recovered:
        order = await self._new_order()
        paying = await self._client.pay(
            order.order_id, payment_pb2.CHANNEL_WECHAT_PAY, payment_pb2.PAY_METHOD_NATIVE_QR
        )
        await self._arm({"operation": "pay_notify", "mode": "lost", "count": 1})
        started = time.monotonic()
        await self._patient_pays(paying.payment.out_trade_no)
        settled = await self._client.wait_until_settled(order.order_id, timeout_s=60)
        return Recovered(
            "notification lost: found by the janitor's query", settled, time.monotonic() - started
        )

    async def _success_after_close(self) -> Recovered:
        order = await self._new_order()
        paying = await self._client.pay(
            order.order_id, payment_pb2.CHANNEL_WECHAT_PAY, payment_pb2.PAY_METHOD_NATIVE_QR
        )
        await self._client.close_order(order.order_id, "patient left the window")
        await self._arm({"operation": "close", "mode": "late_success_after_close", "count": 1})
        started = time.monotonic()
        await self._patient_pays(paying.payment.out_trade_no)
        closed = await self._until_given_back(order.order_id, paying.payment.out_trade_no)
        return Recovered("paid after the close", closed, time.monotonic() - started)

    async def _until_given_back(self, order_id: str, out_trade_no: str) -> payment_pb2.PaymentOrder:
        # The order is CLOSED (final) until the late notification lands, so the watch starts once
        # the channel has delivered it; from then on it streams the automatic refund to its end.
        await self._delivered(out_trade_no, "TRANSACTION.SUCCESS")
        last = await self._client.get_order(order_id)
        async for last in self._client.watch_order(order_id, timeout_s=60):
            if last.status == payment_pb2.ORDER_STATUS_CLOSED and _refunded(last):
                break
        return last

    async def _delivered(self, out_trade_no: str, event_type: str, timeout_s: float = 30.0) -> None:
        """Until the WeChat Pay simulator (the outside world) saw payment-core acknowledge it."""
        give_up_at = time.monotonic() + timeout_s
        while time.monotonic() < give_up_at:
            reply = await self._wechat.get("/sim/notifications", params={"out_trade_no": out_trade_no})
            if any(a["event_type"] == event_type and a["acknowledged"] for a in reply.json()):
                return
            await asyncio.sleep(0.1)

    async def _new_order(self) -> payment_pb2.PaymentOrder:
        return await self._client.create_outpatient_order(
            his_order_no=f"MZR{uuid.uuid4().hex[:12]}", his_patient_id="P-WINDOW-7", items=BILL,
            campus_code=CAMPUS, dept_code=DEPT, doctor_code="D0301",
        )  # fmt: skip

    async def _arm(self, fault: dict[str, object]) -> None:
        (await self._wechat.post("/sim/faults", json=fault)).raise_for_status()

    async def _patient_pays(self, out_trade_no: str) -> None:
        (await self._wechat.post("/sim/pay", json={"out_trade_no": out_trade_no})).raise_for_status()


def _refunded(order: payment_pb2.PaymentOrder) -> bool:
    return any(r.status == payment_pb2.REFUND_STATUS_SUCCEEDED for r in order.refunds)


def _problems(recovered: list[Recovered]) -> list[str]:
    lost, late = recovered
    problems = []
    if lost.order.status != payment_pb2.ORDER_STATUS_SETTLED:
        problems.append(f"the payment whose notification was lost ended {lost.order.status}, not SETTLED")
    if late.order.status != payment_pb2.ORDER_STATUS_CLOSED or not _refunded(late.order):
        problems.append("the success after close was not refunded automatically")
    return problems


def _table(recovered: list[Recovered]) -> Table:
    table = Table(title="The platform finishes its own work")
    for column in ("what went wrong", "ended", "cash paid", "refunded", "done by itself in"):
        table.add_column(column)
    for item in recovered:
        order = item.order
        reason = next((f" ({r.reason})" for r in order.refunds), "")
        status = payment_pb2.OrderStatus.Name(order.status).removeprefix("ORDER_STATUS_")
        paid, refunded = format_yuan(order.cash_paid_fen), format_yuan(order.refunded_cash_fen)
        table.add_row(item.what + reason, status, paid, refunded, f"{item.seconds:.1f} s")
    return table
