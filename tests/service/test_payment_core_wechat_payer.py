"""JSAPI and code payments through the real pieces: payment-core in-process (real gRPC, its notify
endpoint on a loopback port, its janitor running), the real WechatPayChannel (the unmodified
wechatpayv3 SDK) and the WeChat Pay simulator under uvicorn, whose clock runs 1000 times faster
(its 15 s reverse rule lasts 15 ms) while payment-core's clock is moved by the test."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from medpay.payment.v1 import payment_pb2 as pb
from medpay.payment.v1 import payment_pb2_grpc

from infra.simulators.wechatpay.app import build_asgi_app
from infra.simulators.wechatpay.simulator import SimulatorConfig, WechatPaySimulator
from services.payment_core.adapters.channels.wechatpay import WechatPayChannel, WechatPayCredentials
from services.payment_core.adapters.insurance_fake import FakeInsurance
from services.payment_core.bootstrap import PaymentCore, build
from services.payment_core.config import NOTIFY_PATH, PaymentCoreSettings
from services.payment_core.entrypoints import mapping
from services.payment_core.entrypoints.notify_http import notify_app
from services.runtime.server import build_server
from tests.service import test_payment_core as base
from tests.service.test_payment_core_wechat_refunds import Later, serving

database = base.database
S = pb.OrderStatus
CODE, OTHER_CODE = "134567890123456789", "104567890123450000"


@dataclass
class World:
    core: PaymentCore
    payment: payment_pb2_grpc.PaymentServiceStub
    sim: httpx.AsyncClient
    clock: base.Clock
    merchant_key: rsa.RSAPublicKey

    async def stored(self, order_id: str) -> pb.PaymentOrder:
        return mapping.order_to_proto(await self.core.orders.get(order_id, look_now=False))

    async def until(
        self, order_id: str, done: Callable[[pb.PaymentOrder], bool], timeout_s: float = 10.0
    ) -> pb.PaymentOrder:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not done(order := await self.stored(order_id)):
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"order never got there: {order}")
            await asyncio.sleep(0.05)
        return order

    async def gateway_state(self, out_trade_no: str) -> str:
        books: list[dict[str, Any]] = (await self.sim.get("/sim/transactions")).json()
        return str(next(t["trade_state"] for t in books if t["out_trade_no"] == out_trade_no))

    async def created(self) -> str:
        return (await self.payment.CreatePaymentOrder(base.self_pay())).order.order_id


def pay(order_id: str, method: int, **payer: str) -> pb.PayPaymentOrderRequest:
    return pb.PayPaymentOrderRequest(
        request_id=uuid.uuid4().hex, order_id=order_id, channel=pb.CHANNEL_WECHAT_PAY, method=method, **payer
    )


@pytest.fixture
async def world(database: str, tmp_path: Path) -> AsyncIterator[World]:
    config = SimulatorConfig(key_dir=tmp_path / "keys", db_path=tmp_path / "sim.sqlite3", time_scale=0.001)
    notify, clock = Later(), base.Clock()
    async with (
        serving(build_asgi_app(WechatPaySimulator(config))) as sim_url,
        serving(notify, lifespan="off") as notify_base,
    ):
        settings = PaymentCoreSettings(
            database_url=database, data_dir=tmp_path, trace_dir=tmp_path / "traces",
            payment_core_notify_url=f"{notify_base}{NOTIFY_PATH}", payment_core_janitor_interval_s=0.05,
        )  # fmt: skip
        channel = WechatPayChannel(WechatPayCredentials.from_key_dir(config.key_dir), sim_url, (2.0, 5.0))
        core = build(settings, channel=channel, insurance=FakeInsurance(), clock=clock)
        await core.database.migrate()
        notify.app = notify_app(core.notifications)
        server = build_server()
        core.register(server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        janitor = asyncio.create_task(core.janitor.run())
        key = serialization.load_pem_public_key((config.key_dir / "merchant_public_key.pem").read_bytes())
        assert isinstance(key, rsa.RSAPublicKey)
        try:
            async with (
                grpc.aio.insecure_channel(f"127.0.0.1:{port}") as rpc,
                httpx.AsyncClient(base_url=sim_url) as sim,
            ):
                yield World(core, payment_pb2_grpc.PaymentServiceStub(rpc), sim, clock, key)
        finally:
            janitor.cancel()
            await asyncio.gather(janitor, return_exceptions=True)
            await core.process.drain(5)
            await server.stop(None)
            await channel.aclose()
            await core.close()


async def test_a_jsapi_payment_is_signed_for_wx_request_payment_and_settles_by_notification(
    world: World,
) -> None:
    order_id = await world.created()
    paying = await world.payment.PayPaymentOrder(pay(order_id, pb.PAY_METHOD_JSAPI, payer_openid="oUpF8uX"))
    jsapi = paying.payment.jsapi
    assert jsapi.package.startswith("prepay_id=wx") and jsapi.sign_type == "RSA"
    signed = f"{jsapi.app_id}\n{jsapi.time_stamp}\n{jsapi.nonce_str}\n{jsapi.package}\n".encode()
    world.merchant_key.verify(base64.b64decode(jsapi.pay_sign), signed, padding.PKCS1v15(), hashes.SHA256())

    paid = await world.sim.post("/sim/pay", json={"out_trade_no": paying.payment.out_trade_no})
    assert paid.status_code == 200, paid.text
    order = await world.until(order_id, lambda o: o.status == S.ORDER_STATUS_SETTLED)
    assert order.cash_paid_fen == order.total_fen


async def test_a_code_payment_paid_at_once_settles_in_the_answer(world: World) -> None:
    order_id = await world.created()
    paid = await world.payment.PayPaymentOrder(pay(order_id, pb.PAY_METHOD_BARCODE, auth_code=CODE))
    assert paid.order.status == S.ORDER_STATUS_SETTLED and paid.order.cash_paid_fen == paid.order.total_fen
    assert paid.payment.channel_transaction_id.startswith("4200")


async def test_a_code_payment_confirmed_later_is_found_by_a_query(world: World) -> None:
    order_id = await world.created()
    armed = {"operation": "codepay", "mode": "confirms", "delay_s": 1.0}
    assert (await world.sim.post("/sim/faults", json=armed)).status_code == 201
    paying = await world.payment.PayPaymentOrder(pay(order_id, pb.PAY_METHOD_BARCODE, auth_code=CODE))
    assert paying.order.status == S.ORDER_STATUS_PAYING  # 202 USERPAYING
    await asyncio.sleep(1.1)  # the patient entered the password
    world.clock.offset = timedelta(seconds=5)  # the next query is due
    order = await world.until(order_id, lambda o: o.status == S.ORDER_STATUS_SETTLED)
    assert order.cash_paid_fen == order.total_fen


async def test_a_code_payment_never_confirmed_is_reversed_at_the_gateway_and_paid_again(world: World) -> None:
    order_id = await world.created()
    armed = {"operation": "codepay", "mode": "never", "delay_s": 0}
    assert (await world.sim.post("/sim/faults", json=armed)).status_code == 201
    first = await world.payment.PayPaymentOrder(pay(order_id, pb.PAY_METHOD_BARCODE, auth_code=CODE))
    assert first.order.status == S.ORDER_STATUS_PAYING

    world.clock.offset = timedelta(seconds=31)  # the window has passed
    order = await world.until(order_id, lambda o: o.status == S.ORDER_STATUS_AWAITING_PAYMENT)
    assert order.payments[0].status == pb.PAYMENT_STATUS_CLOSED
    assert await world.gateway_state(first.payment.out_trade_no) == "REVOKED"

    second = await world.payment.PayPaymentOrder(pay(order_id, pb.PAY_METHOD_BARCODE, auth_code=OTHER_CODE))
    assert second.order.status == S.ORDER_STATUS_SETTLED
    assert second.order.cash_paid_fen == second.order.total_fen
    assert await world.gateway_state(second.payment.out_trade_no) == "SUCCESS"
