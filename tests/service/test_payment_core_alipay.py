"""payment-core with two channels: a PayPaymentOrder for CHANNEL_ALIPAY goes through the Alipay
adapter (the real python-alipay-sdk) to the Alipay simulator, whose signed notification comes back
to payment-core's /notify/alipay, and the refund leaves by the same channel. WeChat Pay is
configured too (its keys exist) but never called. Simulator and notify endpoint are served by
uvicorn on loopback ports; the insurer is the fake."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
import uvicorn
from medpay.payment.v1 import payment_pb2, payment_pb2_grpc
from starlette.types import ASGIApp

from infra.local.processes import free_port
from infra.simulators.alipay.app import build_asgi_app
from infra.simulators.alipay.simulator import AlipaySimulator, SimulatorConfig
from infra.simulators.wechatpay.keys import ensure_keys as ensure_wechat_keys
from services.payment_core.adapters.insurance_fake import FakeInsurance
from services.payment_core.bootstrap import PaymentCore, build
from services.payment_core.config import ALIPAY_NOTIFY_PATH, PaymentCoreSettings
from services.payment_core.entrypoints.notify_http import notify_app
from services.runtime.server import build_server
from tests.service.test_payment_core import pay, refund, self_pay

pb = payment_pb2


@asynccontextmanager
async def serving(app: ASGIApp) -> AsyncIterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="auto"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@dataclass
class TwoChannels:
    core: PaymentCore
    payment: payment_pb2_grpc.PaymentServiceStub
    sim: httpx.AsyncClient


@pytest.fixture(params=[False, True], ids=["trade-at-precreate", "trade-on-scan"])
async def mesh(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[TwoChannels]:
    """`trade-on-scan`: as on the real gateway, a precreated trade is unknown until scanned."""
    sim_config = SimulatorConfig(
        tmp_path / "alipay_keys",
        tmp_path / "alipay_sim.sqlite3",
        time_scale=0.0001,
        trade_created_on_scan=request.param,
    )
    notify_port = free_port()
    async with serving(build_asgi_app(AlipaySimulator(sim_config))) as sim_url:
        monkeypatch.setenv("MEDPAY_ALIPAY_KEY_DIR", str(sim_config.key_dir))
        monkeypatch.setenv("MEDPAY_ALIPAY_GATEWAY_URL", f"{sim_url}/gateway.do")
        monkeypatch.setenv(
            "MEDPAY_WECHATPAY_KEY_DIR", str(ensure_wechat_keys(tmp_path / "wechat_keys").directory)
        )
        settings = PaymentCoreSettings(
            database_url=f"sqlite+aiosqlite:///{tmp_path}/payment_core.sqlite3",
            data_dir=tmp_path,
            trace_dir=tmp_path / "traces",
            payment_core_alipay=True,
            payment_core_first_query_s=0.2,  # payment-core asks before the patient has scanned
            payment_core_alipay_notify_url=f"http://127.0.0.1:{notify_port}{ALIPAY_NOTIFY_PATH}",
        )
        core = build(settings, insurance=FakeInsurance())
        await core.database.migrate()
        server = build_server()
        core.register(server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        notify_sock = socket.socket()
        notify_sock.bind(("127.0.0.1", notify_port))
        notify = uvicorn.Server(
            uvicorn.Config(notify_app(core.notifications), log_config=None, lifespan="off")
        )
        notify_task = asyncio.create_task(notify.serve(sockets=[notify_sock]))
        try:
            async with (
                grpc.aio.insecure_channel(f"127.0.0.1:{port}") as rpc,
                httpx.AsyncClient(base_url=sim_url) as sim,
            ):
                yield TwoChannels(core, payment_pb2_grpc.PaymentServiceStub(rpc), sim)
        finally:
            notify.should_exit = True
            await notify_task
            notify_sock.close()
            await server.stop(None)
            await core.close()


async def _order_reaches(
    mesh: TwoChannels, order_id: str, status: int, timeout_s: float = 10.0
) -> pb.PaymentOrder:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        await mesh.core.process.drain(5)
        order = (await mesh.payment.GetPaymentOrder(pb.GetPaymentOrderRequest(order_id=order_id))).order
        if order.status == status or asyncio.get_running_loop().time() > deadline:
            return order
        await asyncio.sleep(0.05)


async def test_an_alipay_payment_is_placed_notified_settled_and_refunded(mesh: TwoChannels) -> None:
    created = await mesh.payment.CreatePaymentOrder(self_pay())
    paying = await mesh.payment.PayPaymentOrder(pay(created.order.order_id, pb.CHANNEL_ALIPAY))
    assert paying.payment.channel == pb.CHANNEL_ALIPAY
    assert paying.payment.code_url.startswith("https://qr.alipay.com/")

    out_trade_no = paying.payment.out_trade_no
    await asyncio.sleep(0.5)  # the first query comes and goes: the order must stay payable
    await mesh.core.process.drain(5)
    waiting = (
        await mesh.payment.GetPaymentOrder(pb.GetPaymentOrderRequest(order_id=created.order.order_id))
    ).order
    assert [p.status for p in waiting.payments] == [pb.PAYMENT_STATUS_PENDING]
    assert (await mesh.sim.post("/sim/pay", json={"out_trade_no": out_trade_no})).status_code == 200
    order = await _order_reaches(mesh, created.order.order_id, pb.ORDER_STATUS_SETTLED)
    assert order.status == pb.ORDER_STATUS_SETTLED and order.cash_paid_fen == 12_500
    attempts = (await mesh.sim.get("/sim/notifications", params={"out_trade_no": out_trade_no})).json()
    assert [(a["answer"], a["acknowledged"]) for a in attempts][:1] == [("success", True)]

    await mesh.payment.RefundPaymentOrder(refund(created.order.order_id))
    refunded = await _order_reaches(mesh, created.order.order_id, pb.ORDER_STATUS_REFUNDED)
    assert refunded.status == pb.ORDER_STATUS_REFUNDED
    for _ in range(100):  # the refund went to Alipay, which notifies it to /notify/alipay
        attempts = (await mesh.sim.get("/sim/notifications", params={"out_trade_no": out_trade_no})).json()
        if any(a["out_request_no"] and a["acknowledged"] for a in attempts):
            break
        await asyncio.sleep(0.05)
    assert any(a["out_request_no"] and a["acknowledged"] for a in attempts)


async def test_a_forged_alipay_notification_is_refused(mesh: TwoChannels) -> None:
    url = mesh.core.settings.alipay_notify_url()
    async with httpx.AsyncClient() as client:
        reply = await client.post(url, content=b"notify_type=trade_status_sync&out_trade_no=x&sign=AAAA")
    assert (reply.status_code, reply.text) == (401, "fail")
