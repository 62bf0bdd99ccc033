"""Whole-flow steps the end-to-end tests share: what a HIS module does, through the contracts."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
from medpay.common.v1 import common_pb2
from medpay.data.v1 import data_pb2_grpc
from medpay.insurance.v1 import insurance_pb2_grpc
from medpay.payment.v1 import payment_pb2, payment_pb2_grpc
from medpay.reconciliation.v1 import reconciliation_pb2_grpc

from infra.local.processes import MeshProcesses
from infra.simulators.catalogue import CHARGE_CATALOGUE
from infra.simulators.population import InsuredPerson, insured_people

PEOPLE = insured_people(500)
Status = payment_pb2.OrderStatus


@dataclass
class Stubs:
    channels: list[grpc.aio.Channel]
    payment: payment_pb2_grpc.PaymentServiceStub
    insurance: insurance_pb2_grpc.InsuranceServiceStub
    reconciliation: reconciliation_pb2_grpc.ReconciliationServiceStub
    data: data_pb2_grpc.DataAggregationServiceStub

    @classmethod
    def connect(cls, mesh: MeshProcesses) -> Stubs:
        layout = mesh.layout
        names = ("payment-core", "insurance-adapter", "reconciliation", "data-aggregation")
        channels = [grpc.aio.insecure_channel(layout.grpc_address(name)) for name in names]
        return cls(
            channels,
            payment_pb2_grpc.PaymentServiceStub(channels[0]),
            insurance_pb2_grpc.InsuranceServiceStub(channels[1]),
            reconciliation_pb2_grpc.ReconciliationServiceStub(channels[2]),
            data_pb2_grpc.DataAggregationServiceStub(channels[3]),
        )

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()


def new_traceparent() -> str:
    return f"00-{uuid.uuid4().hex}-{os.urandom(8).hex()}-01"


def trace_id_of(traceparent: str) -> str:
    return traceparent.split("-")[1]


def charge_items(count: int = 3, offset: int = 0) -> list[common_pb2.ChargeItem]:
    items = []
    for n in range(count):
        entry = CHARGE_CATALOGUE[(offset + n * 7) % len(CHARGE_CATALOGUE)]
        items.append(
            common_pb2.ChargeItem(
                hospital_code=entry.medins_list_codg,
                national_code=entry.med_list_codg,
                name=entry.name,
                quantity_ten_thousandths=10_000,
                unit_price_fen=entry.unit_price_fen,
                line_total_fen=entry.unit_price_fen,
                dept_code="0301",
                doctor_code="D0301",
                line_no=str(n + 1),
            )
        )
    return items


def insured_order_request(
    person: InsuredPerson,
    his_order_no: str,
    items_offset: int = 0,
    request_id: str | None = None,
    use_personal_account: bool = False,
) -> payment_pb2.CreatePaymentOrderRequest:
    """Without the personal account the patient always owes a cash share through a channel."""
    return payment_pb2.CreatePaymentOrderRequest(
        request_id=request_id or uuid.uuid4().hex,
        his_order_no=his_order_no,
        scene=payment_pb2.SCENE_OUTPATIENT,
        campus_code="FZ900",
        dept_code="0301",
        patient=common_pb2.Patient(
            his_patient_id=f"P{person.psn_no[-8:]}",
            voucher=common_pb2.PatientVoucher(
                mdtrt_cert_type="02",
                mdtrt_cert_no=person.certno,
                psn_cert_type="01",
                psn_name=person.psn_name,
            ),
        ),
        items=charge_items(3, items_offset),
        insurance=payment_pb2.InsuranceRequest(
            insutype=person.insutype, med_type="11", use_personal_account=use_personal_account
        ),
        doctor_code="D0301",
        doctor_name="林医生",
    )


def self_pay_order_request(his_order_no: str, items_offset: int = 0) -> payment_pb2.CreatePaymentOrderRequest:
    return payment_pb2.CreatePaymentOrderRequest(
        request_id=uuid.uuid4().hex,
        his_order_no=his_order_no,
        scene=payment_pb2.SCENE_OUTPATIENT,
        campus_code="FZ900",
        dept_code="0401",
        patient=common_pb2.Patient(his_patient_id="P-SELF-1"),
        items=charge_items(2, items_offset),
    )


def metadata(traceparent: str | None) -> tuple[tuple[str, str], ...] | None:
    return (("traceparent", traceparent),) if traceparent else None


async def pay_and_settle(
    mesh: MeshProcesses, stubs: Stubs, order: payment_pb2.PaymentOrder, traceparent: str | None = None
) -> payment_pb2.PaymentOrder:
    """Pay the cash share by WeChat native QR, have the simulated patient scan, wait for SETTLED."""
    if order.cash_due_fen == 0:
        request = payment_pb2.PayPaymentOrderRequest(
            request_id=uuid.uuid4().hex, order_id=order.order_id, channel=payment_pb2.CHANNEL_NONE
        )
        await stubs.payment.PayPaymentOrder(request, timeout=30, metadata=metadata(traceparent))
        return await wait_for_status(stubs, order.order_id, Status.ORDER_STATUS_SETTLED)
    paid = await stubs.payment.PayPaymentOrder(
        payment_pb2.PayPaymentOrderRequest(
            request_id=uuid.uuid4().hex,
            order_id=order.order_id,
            channel=payment_pb2.CHANNEL_WECHAT_PAY,
            method=payment_pb2.PAY_METHOD_NATIVE_QR,
        ),
        timeout=30,
        metadata=metadata(traceparent),
    )
    assert paid.payment.code_url.startswith("weixin://")
    await patient_scans(mesh, paid.payment.out_trade_no, traceparent)
    return await wait_for_status(stubs, order.order_id, Status.ORDER_STATUS_SETTLED)


async def patient_scans(mesh: MeshProcesses, out_trade_no: str, traceparent: str | None = None) -> None:
    headers = {"traceparent": traceparent} if traceparent else {}
    async with httpx.AsyncClient(timeout=10) as client:
        reply = await client.post(
            f"{mesh.layout.http_base('wechatpay-sim')}/sim/pay",
            json={"out_trade_no": out_trade_no},
            headers=headers,
        )
        reply.raise_for_status()


async def arm_wechat_fault(mesh: MeshProcesses, operation: str, mode: str, **extra: object) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        armed = await client.post(
            f"{mesh.layout.http_base('wechatpay-sim')}/sim/faults",
            json={"operation": operation, "mode": mode, "count": 1, **extra},
        )
        armed.raise_for_status()


Attempts = list[dict[str, Any]]


async def wait_for_deliveries(
    mesh: MeshProcesses, out_trade_no: str, until: Callable[[Attempts], bool], timeout_s: float = 30.0
) -> Attempts:
    """The WeChat Pay simulator's delivery attempts of the order's notifications, once `until`
    holds for them (each attempt is recorded after payment-core's answer to it)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    url = f"{mesh.layout.http_base('wechatpay-sim')}/sim/notifications"
    async with httpx.AsyncClient(timeout=10) as client:
        while True:
            attempts: Attempts = (await client.get(url, params={"out_trade_no": out_trade_no})).json()
            if until(attempts):
                return attempts
            if loop.time() > deadline:
                raise AssertionError(f"deliveries of {out_trade_no} never got there: {attempts}")
            await asyncio.sleep(0.1)


def acknowledged(attempts: Attempts, event_type: str) -> list[int]:
    """The deliveries (1, 2 for a duplicate, ...) of `event_type` that the merchant acknowledged."""
    return sorted({a["delivery"] for a in attempts if a["event_type"] == event_type and a["acknowledged"]})


async def wait_for_status(
    stubs: Stubs, order_id: str, status: int, timeout_s: float = 30.0
) -> payment_pb2.PaymentOrder:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        reply = await stubs.payment.GetPaymentOrder(
            payment_pb2.GetPaymentOrderRequest(order_id=order_id), timeout=10
        )
        if reply.order.status == status:
            return reply.order
        if loop.time() > deadline:
            raise AssertionError(f"order {order_id} stuck in {Status.Name(reply.order.status)}")
        await asyncio.sleep(0.1)


def split_adds_up(order: payment_pb2.PaymentOrder) -> bool:
    split = order.split
    return (
        split.medfee_sumamt_fen == order.total_fen
        and split.fund_pay_sumamt_fen + split.acct_pay_fen + split.psn_cash_pay_fen == order.total_fen
        and split.psn_cash_pay_fen == order.cash_due_fen
    )
