"""Refunds the WeChat Pay gateway cannot take now, through the real pieces: payment-core in-process
(real gRPC, its notify endpoint on a loopback port, its janitor running), the real WechatPayChannel
(the unmodified wechatpayv3 SDK) and the WeChat Pay simulator served by uvicorn.

403 NOT_ENOUGH (the merchant's balance is too low), 429 FREQUENCY_LIMITED and 500 SYSTEM_ERROR do
not refuse the refund: it stays PENDING, is sent again with the same out_refund_no, and completes
by itself once the gateway takes it; the order ends REFUNDED with refunded == paid, once. Refused
credentials (401 SIGN_ERROR) flag the order for a person without dropping the refund."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import uvicorn
from medpay.payment.v1 import payment_pb2 as pb
from medpay.payment.v1 import payment_pb2_grpc
from starlette.types import ASGIApp, Receive, Scope, Send

from infra.simulators.wechatpay.app import build_asgi_app
from infra.simulators.wechatpay.simulator import SimulatorConfig, WechatPaySimulator
from services.payment_core.adapters.channels import ports
from services.payment_core.adapters.channels.wechatpay import WechatPayChannel, WechatPayCredentials
from services.payment_core.adapters.insurance_fake import FakeInsurance
from services.payment_core.bootstrap import PaymentCore, build
from services.payment_core.config import NOTIFY_PATH, PaymentCoreSettings
from services.payment_core.domain.model import Attention, RefundStatus
from services.payment_core.entrypoints import mapping
from services.payment_core.entrypoints.notify_http import notify_app
from services.runtime.server import build_server
from tests.service import test_payment_core as base

database = base.database
harness = base.harness
S = pb.OrderStatus


@asynccontextmanager
async def serving(app: ASGIApp, lifespan: str = "on") -> AsyncIterator[str]:
    """An ASGI app under uvicorn in this event loop, on an ephemeral loopback port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan=lifespan))
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


class Later:
    """An ASGI app given after its server started (payment-core needs its notify URL to be built)."""

    def __init__(self) -> None:
        self.app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.app is not None, "payment-core is not built yet"
        await self.app(scope, receive, send)


@dataclass
class World:
    core: PaymentCore
    payment: payment_pb2_grpc.PaymentServiceStub
    sim: httpx.AsyncClient

    async def arm(self, mode: str, count: int) -> None:
        fault = {"operation": "refund", "mode": mode, "count": count}
        assert (await self.sim.post("/sim/faults", json=fault)).status_code == 201

    async def faults_left(self) -> int:
        return sum(int(f["remaining"]) for f in (await self.sim.get("/sim/faults")).json())

    async def refused(self, times: int, of: int, timeout_s: float = 10.0) -> None:
        """Until `times` firings of the `of` armed have answered refunds."""
        for _ in range(int(timeout_s / 0.05)):
            if await self.faults_left() <= of - times:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"the gateway was not asked {times} times")

    async def stored(self, order_id: str) -> pb.PaymentOrder:
        return mapping.order_to_proto(await self.core.orders.get(order_id, look_now=False))

    async def until(
        self, order_id: str, done: Callable[[pb.PaymentOrder], bool], timeout_s: float = 15.0
    ) -> pb.PaymentOrder:
        """The order as stored once `done` holds for it (the janitor and notifications move it)."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not done(order := await self.stored(order_id)):
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"order never got there: {order}")
            await asyncio.sleep(0.05)
        return order

    async def settled_order(self) -> pb.PaymentOrder:
        created = await self.payment.CreatePaymentOrder(base.self_pay())
        paying = await self.payment.PayPaymentOrder(base.pay(created.order.order_id))
        paid = await self.sim.post("/sim/pay", json={"out_trade_no": paying.payment.out_trade_no})
        assert paid.status_code == 200, paid.text
        return await self.until(created.order.order_id, lambda o: o.status == S.ORDER_STATUS_SETTLED)

    async def gateway_book(self, out_trade_no: str) -> dict[str, Any]:
        """The simulator's own record of the trade and its refunds."""
        books = (await self.sim.get("/sim/transactions")).json()
        (trade,) = [t for t in books if t["out_trade_no"] == out_trade_no]
        return dict(trade)


@pytest.fixture
async def world(database: str, tmp_path: Path) -> AsyncIterator[World]:
    # The simulator's refunds take 5 ms (its clock 1000 times faster); payment-core retries after
    # 0.05 s, doubling, and its janitor looks every 0.05 s.
    config = SimulatorConfig(key_dir=tmp_path / "keys", db_path=tmp_path / "sim.sqlite3", time_scale=0.001)
    notify = Later()
    async with (
        serving(build_asgi_app(WechatPaySimulator(config))) as sim_url,
        serving(notify, lifespan="off") as notify_base,
    ):
        settings = PaymentCoreSettings(
            database_url=database,
            data_dir=tmp_path,
            trace_dir=tmp_path / "traces",
            payment_core_notify_url=f"{notify_base}{NOTIFY_PATH}",
            payment_core_retry_base_s=0.05,
            payment_core_janitor_interval_s=0.05,
        )
        channel = WechatPayChannel(
            WechatPayCredentials.from_key_dir(config.key_dir),
            sim_url,
            timeout=(2.0, 5.0),
            refund_notify_url=settings.notify_url(),
        )
        core = build(settings, channel=channel, insurance=FakeInsurance())
        await core.database.migrate()
        notify.app = notify_app(core.notifications)
        server = build_server()
        core.register(server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        janitor = asyncio.create_task(core.janitor.run())
        try:
            async with (
                grpc.aio.insecure_channel(f"127.0.0.1:{port}") as rpc,
                httpx.AsyncClient(base_url=sim_url) as sim,
            ):
                yield World(core, payment_pb2_grpc.PaymentServiceStub(rpc), sim)
        finally:
            janitor.cancel()
            await asyncio.gather(janitor, return_exceptions=True)
            await core.process.drain(5)
            await server.stop(None)
            await channel.aclose()
            await core.close()


async def test_a_refund_under_not_enough_stays_pending_and_completes_once_the_balance_is_topped_up(
    world: World,
) -> None:
    order = await world.settled_order()
    await world.arm("not_enough", count=1000)  # the merchant's balance is too low until turned off

    answered = await world.payment.RefundPaymentOrder(base.refund(order.order_id))
    assert answered.order.status == S.ORDER_STATUS_REFUNDING  # not a refusal: back to SETTLED
    assert answered.refund.status == pb.REFUND_STATUS_PENDING
    await world.refused(times=3, of=1000)  # the janitor sent it again, twice more: still too low
    waiting = await world.stored(order.order_id)
    assert waiting.status == S.ORDER_STATUS_REFUNDING
    assert [r.status for r in waiting.refunds] == [pb.REFUND_STATUS_PENDING]
    assert "NOT_ENOUGH" in waiting.attention_reason  # why it waits, for whoever looks
    [payment] = order.payments
    assert (await world.gateway_book(payment.out_trade_no))["refunds"] == []  # nothing issued

    assert (await world.sim.delete("/sim/faults")).status_code == 204  # the balance is topped up
    done = await world.until(order.order_id, lambda o: o.status == S.ORDER_STATUS_REFUNDED)
    [refund] = done.refunds
    assert (
        refund.status == pb.REFUND_STATUS_SUCCEEDED and refund.out_refund_no == answered.refund.out_refund_no
    )
    assert done.refunded_cash_fen == refund.cash_fen == done.cash_paid_fen > 0
    book = await world.gateway_book(payment.out_trade_no)
    assert [(r["out_refund_no"], r["refund_fen"], r["status"]) for r in book["refunds"]] == [
        (refund.out_refund_no, done.cash_paid_fen, "SUCCESS")
    ]  # one refund at the gateway, of what was paid


@pytest.mark.parametrize("mode", ["frequency_limited", "http_500"])
async def test_a_refund_answered_429_or_500_is_sent_again_and_completes(world: World, mode: str) -> None:
    """429 FREQUENCY_LIMITED did nothing; a 500 SYSTEM_ERROR may have (not here): either way the
    same out_refund_no goes again, and the refund completes without a person."""
    order = await world.settled_order()
    await world.arm(mode, count=2)

    answered = await world.payment.RefundPaymentOrder(base.refund(order.order_id))
    assert answered.refund.status == pb.REFUND_STATUS_PENDING
    done = await world.until(order.order_id, lambda o: o.status == S.ORDER_STATUS_REFUNDED)
    assert await world.faults_left() == 0  # both refused attempts were made
    [refund] = done.refunds
    assert refund.status == pb.REFUND_STATUS_SUCCEEDED
    assert done.refunded_cash_fen == done.cash_paid_fen
    [payment] = order.payments
    book = await world.gateway_book(payment.out_trade_no)
    assert [r["refund_fen"] for r in book["refunds"]] == [done.cash_paid_fen]


async def test_refused_credentials_flag_the_order_and_keep_the_refund_owed(harness: base.Harness) -> None:
    """401 SIGN_ERROR: our signature or certificate serial is wrong, so the refund was not issued.
    It is not taken for the patient's refusal (FAILED, back to SETTLED): the order goes to a person
    (REFUND_REFUSED), the refund stays PENDING on the schedule, and completes once the credentials
    are fixed."""
    order = await base.settled_order(harness, base.self_pay())
    real_refund, refused = harness.channel.refund, []

    async def sign_error(*args: Any) -> ports.ChannelRefund:
        refused.append(args[0])
        raise ports.ChannelRejected("SIGN_ERROR", "签名错误", ports.RejectionReason.NOT_AUTHORISED)

    harness.channel.refund = sign_error  # type: ignore[method-assign]
    answered = await harness.payment.RefundPaymentOrder(base.refund(order.order_id))
    assert answered.refund.status == pb.REFUND_STATUS_PENDING
    assert answered.order.status == pb.ORDER_STATUS_NEEDS_ATTENTION
    assert "SIGN_ERROR" in answered.order.attention_reason
    flagged = await harness.core.orders.get(order.order_id, look_now=False)
    assert flagged.attention is Attention.REFUND_REFUSED
    assert [r.status for r in flagged.refunds] == [RefundStatus.PENDING]
    # Sent once more right after the order moved to a person, then only on the schedule.
    assert len(refused) <= 2
    sent = len(refused)
    await harness.core.janitor.sweep()
    assert len(refused) == sent

    harness.channel.refund = real_refund  # type: ignore[method-assign]  # the key was fixed
    harness.clock.offset = timedelta(minutes=5)
    await harness.core.janitor.sweep()
    done = await harness.order(order.order_id)
    assert done.status == pb.ORDER_STATUS_REFUNDED and done.refunded_cash_fen == done.cash_paid_fen
    assert len(set(refused)) == 1 and refused[0] == done.refunds[0].out_refund_no


async def test_a_refund_whose_answer_was_unreadable_and_that_never_landed_is_sent_again(
    harness: base.Harness,
) -> None:
    """An unreadable answer leaves the refund UNKNOWN (flagged); when the channel's refund query
    then says it never saw it, it goes again with the same out_refund_no instead of being asked
    about until a person gives up."""
    order = await base.settled_order(harness, base.self_pay())
    real_refund = harness.channel.refund

    async def unreadable(*_: Any) -> ports.ChannelRefund:
        raise ports.ChannelProtocolError("an answer we cannot read")

    harness.channel.refund = unreadable  # type: ignore[method-assign]
    answered = await harness.payment.RefundPaymentOrder(base.refund(order.order_id))
    assert answered.refund.status == pb.REFUND_STATUS_UNKNOWN
    harness.channel.refund = real_refund  # type: ignore[method-assign]

    for minutes in (1, 2, 3):  # the query (it never landed), then the refund sent again
        harness.clock.offset = timedelta(minutes=minutes)
        await harness.core.janitor.sweep()
    done = await harness.order(order.order_id)
    assert done.status == pb.ORDER_STATUS_REFUNDED and done.refunded_cash_fen == done.cash_paid_fen
    assert [r.out_refund_no for r in done.refunds] == [answered.refund.out_refund_no]
