"""Alipay's faults, through the simulator's switches, with nobody at the console: payment-core
in-process (real gRPC, its notify endpoint on a loopback port, its janitor running), the real
AlipayChannel (the unmodified python-alipay-sdk) built by bootstrap from its settings, and the
Alipay simulator served by uvicorn. The simulator's clock runs 10 000 times faster (notification
retries in milliseconds); payment-core's clock is moved by the test when an order has to expire.

Every order ends correct by itself: a precreate that timed out or answered 500 is queried, and the
order is SETTLED once the patient pays, or CLOSED when they never do; a lost payment notification
is made up by the janitor's query; a duplicate changes nothing; a late success after the close is
refunded by the late-success policy; a refund the merchant's balance cannot cover stays PENDING
and completes once the balance is topped up; a refund without an answer is queried and done once;
a crash between the precreate and its write leaves an attempt the cashier's retry shows again (the
same trade) or the expiry closes. Code payments (alipay.trade.pay): an answer that timed out is
found paid, a 500 is ended after the window and paid again, an unconfirmed one is cancelled. Each
is checked against the simulator's own books (its store, /sim/notifications)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from medpay.payment.v1 import payment_pb2 as pb
from medpay.payment.v1 import payment_pb2_grpc

from infra.simulators.alipay.app import build_asgi_app
from infra.simulators.alipay.simulator import AlipaySimulator, SimulatorConfig
from infra.simulators.alipay.store import SimRefund, SimTrade
from infra.simulators.wechatpay.keys import ensure_keys as ensure_wechat_keys
from services.payment_core.adapters.insurance_fake import FakeInsurance
from services.payment_core.bootstrap import PaymentCore, build
from services.payment_core.config import ALIPAY_NOTIFY_PATH, NOTIFY_PATH, PaymentCoreSettings
from services.payment_core.domain.ledger import LedgerTransaction
from services.payment_core.entrypoints import mapping
from services.payment_core.entrypoints.notify_http import notify_app
from services.runtime.server import build_server
from tests.service import test_payment_core as base
from tests.service.test_payment_core import entry_kinds
from tests.service.test_payment_core_wechat_refunds import Later, serving

database = base.database
S = pb.OrderStatus
ORDER_TTL = timedelta(seconds=120)  # beyond the code payment window (30 s)


@dataclass
class World:
    core: PaymentCore
    payment: payment_pb2_grpc.PaymentServiceStub
    sim: httpx.AsyncClient
    gateway: AlipaySimulator
    clock: base.Clock

    async def arm(self, operation: str, mode: str, count: int = 1, delay_s: float = 2.0) -> None:
        fault = {"operation": operation, "mode": mode, "count": count, "delay_s": delay_s}
        answer = await self.sim.post("/sim/faults", json=fault)
        assert answer.status_code == 201, answer.text

    async def faults_left(self) -> int:
        return sum(int(f["remaining"]) for f in (await self.sim.get("/sim/faults")).json())

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

    async def placed(self) -> tuple[str, pb.Payment]:
        """The order and its Alipay payment attempt, as PayPaymentOrder answered it."""
        created = await self.payment.CreatePaymentOrder(base.self_pay())
        paying = await self.payment.PayPaymentOrder(base.pay(created.order.order_id, pb.CHANNEL_ALIPAY))
        return created.order.order_id, paying.payment

    async def placed_without_an_answer(self) -> tuple[str, pb.Payment]:
        """PayPaymentOrder when the gateway's answer is lost: UNAVAILABLE (a query will decide), the
        attempt stored as UNKNOWN."""
        created = await self.payment.CreatePaymentOrder(base.self_pay())
        order_id = created.order.order_id
        with pytest.raises(grpc.aio.AioRpcError) as lost:
            await self.payment.PayPaymentOrder(base.pay(order_id, pb.CHANNEL_ALIPAY))
        assert lost.value.code() == grpc.StatusCode.UNAVAILABLE
        [attempt] = (await self.stored(order_id)).payments
        return order_id, attempt

    async def patient_pays(self, out_trade_no: str) -> None:
        paid = await self.sim.post("/sim/pay", json={"out_trade_no": out_trade_no})
        assert paid.status_code == 200, paid.text

    async def expire(self) -> None:
        """payment-core's clock past the order's lifetime: the janitor closes what is unpaid."""
        self.clock.offset = ORDER_TTL + timedelta(minutes=5)

    def trade(self, out_trade_no: str) -> SimTrade:
        trade = self.gateway.store.trade(out_trade_no)
        assert trade is not None, f"the gateway never saw {out_trade_no}"
        return trade

    def refunds(self, out_trade_no: str) -> list[SimRefund]:
        return self.gateway.store.refunds_of(out_trade_no)

    async def ledger(self, order_id: str) -> list[LedgerTransaction]:
        async with self.core.orders._deps.uow() as uow:
            return list(await uow.ledger.transactions_of(order_id))

    async def payment_notices(self, out_trade_no: str) -> list[dict[str, object]]:
        attempts = (await self.sim.get("/sim/notifications", params={"out_trade_no": out_trade_no})).json()
        return [a for a in attempts if not a["out_request_no"]]


@pytest.fixture
async def world(database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[World]:
    sim_config = SimulatorConfig(tmp_path / "alipay_keys", tmp_path / "alipay_sim.sqlite3", time_scale=0.0001)
    simulator = AlipaySimulator(sim_config)
    notify = Later()
    clock = base.Clock()
    async with (
        serving(build_asgi_app(simulator)) as sim_url,
        serving(notify, lifespan="off") as notify_base,
    ):
        # The channel registry as bootstrap builds it from its settings; Alipay's answers are waited
        # for 1 s, so the simulator's 2 s `timeout` stalls are outcome-unknown.
        monkeypatch.setenv("MEDPAY_ALIPAY_KEY_DIR", str(sim_config.key_dir))
        monkeypatch.setenv("MEDPAY_ALIPAY_GATEWAY_URL", f"{sim_url}/gateway.do")
        monkeypatch.setenv("MEDPAY_ALIPAY_TIMEOUT_S", "1.0")
        monkeypatch.setenv(
            "MEDPAY_WECHATPAY_KEY_DIR", str(ensure_wechat_keys(tmp_path / "wechat_keys").directory)
        )
        settings = PaymentCoreSettings(
            database_url=database,
            data_dir=tmp_path,
            trace_dir=tmp_path / "traces",
            payment_core_alipay=True,
            payment_core_notify_url=f"{notify_base}{NOTIFY_PATH}",
            payment_core_alipay_notify_url=f"{notify_base}{ALIPAY_NOTIFY_PATH}",
            payment_core_order_ttl_s=ORDER_TTL.total_seconds(),
            payment_core_first_query_s=0.2,
            payment_core_retry_base_s=0.05,
            payment_core_janitor_interval_s=0.05,
        )
        core = build(settings, insurance=FakeInsurance(), clock=clock)
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
                yield World(core, payment_pb2_grpc.PaymentServiceStub(rpc), sim, simulator, clock)
        finally:
            janitor.cancel()
            await asyncio.gather(janitor, return_exceptions=True)
            await core.process.drain(5)
            await server.stop(None)
            await core.close()


def settled(order: pb.PaymentOrder) -> bool:
    return order.status == S.ORDER_STATUS_SETTLED


def closed(order: pb.PaymentOrder) -> bool:
    return order.status == S.ORDER_STATUS_CLOSED


@pytest.mark.parametrize("mode", ["timeout", "http_500"])
async def test_a_precreate_without_an_answer_is_queried_and_settles_once_the_patient_pays(
    world: World, mode: str
) -> None:
    """`timeout`: the trade was made, the answer came too late. `http_500`: nothing was made. Either
    way the attempt is UNKNOWN, not failed; the janitor's query sorts it out (still unpaid, or
    never seen: closed), the cashier's retry shows a QR code and the patient pays once."""
    await world.arm("precreate", mode)
    order_id, attempt = await world.placed_without_an_answer()
    assert attempt.out_trade_no and not attempt.code_url  # no QR code to show
    assert attempt.status == pb.PAYMENT_STATUS_UNKNOWN
    if mode == "http_500":  # the gateway never saw it: the query ends the attempt
        assert world.gateway.store.trade(attempt.out_trade_no) is None
        await world.until(order_id, lambda o: o.payments[0].status == pb.PAYMENT_STATUS_CLOSED)
    else:
        assert world.trade(attempt.out_trade_no).trade_status == "WAIT_BUYER_PAY"
        await asyncio.sleep(0.5)  # queried: unpaid, so it stays open
        assert [p.status for p in (await world.stored(order_id)).payments] == [pb.PAYMENT_STATUS_UNKNOWN]

    again = await world.payment.PayPaymentOrder(base.pay(order_id, pb.CHANNEL_ALIPAY))
    assert again.payment.code_url.startswith("https://qr.alipay.com/")
    await world.patient_pays(again.payment.out_trade_no)
    done = await world.until(order_id, settled)
    assert done.cash_paid_fen == 12_500
    assert entry_kinds(await world.ledger(order_id)) == ["PAYMENT", "SETTLEMENT"]  # collected once
    at_the_gateway = [world.gateway.store.trade(p.out_trade_no) for p in done.payments]
    paid = [t for t in at_the_gateway if t is not None and t.gmt_payment is not None]
    assert [(t.out_trade_no, t.total_fen) for t in paid] == [(again.payment.out_trade_no, 12_500)]
    assert [p.status for p in done.payments if p.status == pb.PAYMENT_STATUS_SUCCEEDED] == [
        pb.PAYMENT_STATUS_SUCCEEDED
    ]


@pytest.mark.parametrize("mode", ["timeout", "http_500"])
async def test_a_precreate_without_an_answer_the_patient_never_pays_ends_closed(
    world: World, mode: str
) -> None:
    await world.arm("precreate", mode)
    order_id, attempt = await world.placed_without_an_answer()
    await asyncio.sleep(0.3)

    await world.expire()
    done = await world.until(order_id, closed)
    assert done.cash_paid_fen == 0 and not await world.ledger(order_id)
    assert [p.status for p in done.payments] == [pb.PAYMENT_STATUS_CLOSED]
    trade = world.gateway.store.trade(attempt.out_trade_no)
    if mode == "timeout":  # the trade the lost answer made is closed at the gateway too
        assert trade is not None and trade.trade_status == "TRADE_CLOSED" and trade.gmt_payment is None
    else:
        assert trade is None


async def test_a_lost_payment_notification_is_made_up_by_the_janitors_query(world: World) -> None:
    await world.arm("pay_notify", "lost")
    order_id, attempt = await world.placed()
    out_trade_no = attempt.out_trade_no
    await world.patient_pays(out_trade_no)

    done = await world.until(order_id, settled)
    assert done.cash_paid_fen == 12_500
    assert await world.faults_left() == 0 and await world.payment_notices(out_trade_no) == []  # never sent
    assert world.trade(out_trade_no).trade_status == "TRADE_SUCCESS"
    assert entry_kinds(await world.ledger(order_id)) == ["PAYMENT", "SETTLEMENT"]


async def test_a_duplicate_payment_notification_changes_nothing(world: World) -> None:
    await world.arm("pay_notify", "duplicate")
    order_id, attempt = await world.placed()
    out_trade_no = attempt.out_trade_no
    await world.patient_pays(out_trade_no)

    await world.until(order_id, settled)
    for _ in range(100):  # both copies delivered and acknowledged
        notices = await world.payment_notices(out_trade_no)
        if sum(1 for n in notices if n["acknowledged"]) >= 2:
            break
        await asyncio.sleep(0.05)
    assert len({n["notify_id"] for n in notices}) == 1
    assert sum(1 for n in notices if n["acknowledged"]) >= 2
    await world.core.process.drain(5)
    done = await world.stored(order_id)
    assert done.status == S.ORDER_STATUS_SETTLED and done.cash_paid_fen == 12_500
    assert [p.status for p in done.payments] == [pb.PAYMENT_STATUS_SUCCEEDED]
    assert entry_kinds(await world.ledger(order_id)) == [
        "PAYMENT",
        "SETTLEMENT",
    ]  # one settlement in the ledger
    assert world.refunds(out_trade_no) == []


async def test_a_late_success_after_the_close_is_refunded_at_the_gateway(world: World) -> None:
    """The patient's payment raced the close: the gateway took the money after payment-core closed
    the order. The late-success policy refunds it, without a person, and the gateway's books show
    the money back."""
    await world.arm("close", "late_success_after_close")
    order_id, attempt = await world.placed()
    out_trade_no = attempt.out_trade_no
    await world.until(order_id, lambda o: o.payments[0].status == pb.PAYMENT_STATUS_PENDING)
    await world.expire()
    await world.until(order_id, closed)

    await world.patient_pays(out_trade_no)  # succeeds on the closed trade
    assert world.trade(out_trade_no).gmt_payment is not None

    def refunded_at_the_gateway() -> bool:
        return [(r.refund_fen, r.status) for r in world.refunds(out_trade_no)] == [(12_500, "REFUND_SUCCESS")]

    for _ in range(300):
        if refunded_at_the_gateway():
            break
        await asyncio.sleep(0.05)
    assert refunded_at_the_gateway(), world.refunds(out_trade_no)
    done = await world.until(
        order_id, lambda o: bool(o.refunds) and o.refunds[0].status == pb.REFUND_STATUS_SUCCEEDED
    )
    assert done.status == S.ORDER_STATUS_CLOSED, done  # stays closed, no person needed
    assert done.cash_paid_fen == done.refunded_cash_fen == 12_500  # what came in late went back
    assert [r.out_refund_no for r in done.refunds] == [world.refunds(out_trade_no)[0].out_request_no]


async def test_a_refund_the_merchants_balance_cannot_cover_waits_and_completes_once_topped_up(
    world: World,
) -> None:
    order_id, attempt = await world.placed()
    out_trade_no = attempt.out_trade_no
    await world.patient_pays(out_trade_no)
    await world.until(order_id, settled)
    await world.arm("refund", "not_enough", count=1000)  # too low until the fault is cleared

    answered = await world.payment.RefundPaymentOrder(base.refund(order_id))
    assert answered.order.status == S.ORDER_STATUS_REFUNDING
    assert answered.refund.status == pb.REFUND_STATUS_PENDING
    for _ in range(200):  # sent again by the janitor, twice more: still too low
        if await world.faults_left() <= 997:
            break
        await asyncio.sleep(0.05)
    assert await world.faults_left() <= 997
    waiting = await world.stored(order_id)
    assert waiting.status == S.ORDER_STATUS_REFUNDING
    assert [r.status for r in waiting.refunds] == [pb.REFUND_STATUS_PENDING]
    assert "SELLER_BALANCE_NOT_ENOUGH" in waiting.attention_reason
    assert world.refunds(out_trade_no) == []  # nothing issued

    assert (await world.sim.delete("/sim/faults")).status_code == 204  # the balance is topped up
    done = await world.until(order_id, lambda o: o.status == S.ORDER_STATUS_REFUNDED)
    [refund] = done.refunds
    assert refund.status == pb.REFUND_STATUS_SUCCEEDED
    assert refund.out_refund_no == answered.refund.out_refund_no
    assert done.refunded_cash_fen == done.cash_paid_fen == 12_500
    assert [(r.out_request_no, r.refund_fen, r.status) for r in world.refunds(out_trade_no)] == [
        (refund.out_refund_no, 12_500, "REFUND_SUCCESS")
    ]  # one refund at the gateway, of what was paid
    assert world.trade(out_trade_no).trade_status == "TRADE_CLOSED"


# --- Alipay code payment (alipay.trade.pay): the patient shows their payment code -------------------

ALIPAY_CODE, OTHER_ALIPAY_CODE = "286412345678901234", "286498765432109876"


def by_code(order_id: str, code: str = ALIPAY_CODE) -> pb.PayPaymentOrderRequest:
    return pb.PayPaymentOrderRequest(
        request_id=uuid.uuid4().hex, order_id=order_id, channel=pb.CHANNEL_ALIPAY,
        method=pb.PAY_METHOD_BARCODE, auth_code=code,
    )  # fmt: skip


async def test_a_code_payment_whose_answer_timed_out_is_found_paid_by_the_query(world: World) -> None:
    """alipay.trade.pay took the money, its answer came too late: UNKNOWN, then the query finds it
    paid; the patient is charged once."""
    await world.arm("pay", "timeout")
    order_id = (await world.payment.CreatePaymentOrder(base.self_pay())).order.order_id
    with pytest.raises(grpc.aio.AioRpcError) as lost:
        await world.payment.PayPaymentOrder(by_code(order_id))
    assert lost.value.code() == grpc.StatusCode.UNAVAILABLE
    [attempt] = (await world.stored(order_id)).payments
    assert attempt.status == pb.PAYMENT_STATUS_UNKNOWN
    assert world.trade(attempt.out_trade_no).trade_status == "TRADE_SUCCESS"

    world.clock.offset = timedelta(seconds=6)  # the code payment's query is due
    done = await world.until(order_id, settled)
    assert done.cash_paid_fen == world.trade(attempt.out_trade_no).total_fen == 12_500
    assert [p.status for p in done.payments] == [pb.PAYMENT_STATUS_SUCCEEDED]
    assert entry_kinds(await world.ledger(order_id)) == ["PAYMENT", "SETTLEMENT"]


async def test_a_code_payment_answered_500_is_closed_and_paid_again_once(world: World) -> None:
    """The 500 came before anything was done: the query does not find it, the attempt is ended
    after the code payment's window and the patient's next code pays the order, once."""
    await world.arm("pay", "http_500")
    order_id = (await world.payment.CreatePaymentOrder(base.self_pay())).order.order_id
    with pytest.raises(grpc.aio.AioRpcError) as lost:
        await world.payment.PayPaymentOrder(by_code(order_id))
    assert lost.value.code() == grpc.StatusCode.UNAVAILABLE
    [attempt] = (await world.stored(order_id)).payments
    assert world.gateway.store.trade(attempt.out_trade_no) is None

    # It may still land while the code payment's window is open: it is ended (cancelled) after it.
    world.clock.offset = timedelta(seconds=31)
    order = await world.until(order_id, lambda o: o.status == S.ORDER_STATUS_AWAITING_PAYMENT)
    assert [p.status for p in order.payments] == [pb.PAYMENT_STATUS_CLOSED]
    again = await world.payment.PayPaymentOrder(by_code(order_id, OTHER_ALIPAY_CODE))
    assert again.order.status == S.ORDER_STATUS_SETTLED and again.order.cash_paid_fen == 12_500
    assert world.trade(again.payment.out_trade_no).trade_status == "TRADE_SUCCESS"
    assert world.gateway.store.trade(attempt.out_trade_no) is None  # nothing collected on the first
    assert entry_kinds(await world.ledger(order_id)) == ["PAYMENT", "SETTLEMENT"]


async def test_a_code_payment_never_confirmed_is_cancelled_at_the_gateway(world: World) -> None:
    """10003 (the patient must confirm on the phone) and they never do: after the window the
    attempt is cancelled at the gateway, and the order can be paid again."""
    await world.arm("pay", "user_paying")
    order_id = (await world.payment.CreatePaymentOrder(base.self_pay())).order.order_id
    first = await world.payment.PayPaymentOrder(by_code(order_id))
    assert first.order.status == S.ORDER_STATUS_PAYING
    assert world.trade(first.payment.out_trade_no).trade_status == "WAIT_BUYER_PAY"

    world.clock.offset = timedelta(seconds=31)  # the window has passed
    order = await world.until(order_id, lambda o: o.status == S.ORDER_STATUS_AWAITING_PAYMENT)
    assert [p.status for p in order.payments] == [pb.PAYMENT_STATUS_CLOSED]
    cancelled = world.trade(first.payment.out_trade_no)
    assert cancelled.trade_status == "TRADE_CLOSED" and cancelled.gmt_payment is None
    assert (
        await world.sim.post("/sim/pay", json={"out_trade_no": first.payment.out_trade_no})
    ).status_code == 409


class Crash(Exception):
    """payment-core dying right after the channel answered: nothing after the call is written."""


async def crashed_after_precreate(world: World, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """An order whose precreate the gateway answered while payment-core died before writing the
    answer down: (order_id, out_trade_no)."""
    alipay = world.core.orders._deps.channels["ALIPAY"]
    real_place_order, crashed = alipay.place_order, []

    async def answered_then_crash(*args: Any, **kwargs: Any) -> Any:
        answer = await real_place_order(*args, **kwargs)
        if not crashed:
            crashed.append(answer)
            raise Crash("payment-core died before writing the answer")
        return answer

    monkeypatch.setattr(alipay, "place_order", answered_then_crash)
    order_id = (await world.payment.CreatePaymentOrder(base.self_pay())).order.order_id
    with pytest.raises(grpc.aio.AioRpcError):
        await world.payment.PayPaymentOrder(base.pay(order_id, pb.CHANNEL_ALIPAY))
    assert len(crashed) == 1
    [attempt] = (await world.stored(order_id)).payments
    assert not attempt.code_url  # the answer was never written
    assert world.trade(attempt.out_trade_no).trade_status == "WAIT_BUYER_PAY"  # but the trade exists
    return order_id, attempt.out_trade_no


async def test_a_crash_between_the_precreate_and_its_write_then_the_cashiers_retry_settles_once(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The retry sends the same out_trade_no, which Alipay answers with the same trade: one QR
    code, one payment."""
    order_id, out_trade_no = await crashed_after_precreate(world, monkeypatch)
    await asyncio.sleep(0.5)  # the janitor queries meanwhile: unpaid, left open

    retry = await world.payment.PayPaymentOrder(base.pay(order_id, pb.CHANNEL_ALIPAY))
    assert retry.payment.out_trade_no == out_trade_no
    assert retry.payment.code_url == world.trade(out_trade_no).qr_code
    await world.patient_pays(out_trade_no)
    done = await world.until(order_id, settled)
    assert done.cash_paid_fen == 12_500 and entry_kinds(await world.ledger(order_id)) == [
        "PAYMENT",
        "SETTLEMENT",
    ]
    assert [p.out_trade_no for p in done.payments] == [out_trade_no]


async def test_a_crash_between_the_precreate_and_its_write_with_nobody_paying_ends_closed(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    order_id, out_trade_no = await crashed_after_precreate(world, monkeypatch)

    await world.expire()
    done = await world.until(order_id, closed)
    assert [p.status for p in done.payments] == [pb.PAYMENT_STATUS_CLOSED]
    assert done.cash_paid_fen == 0 and not await world.ledger(order_id)
    trade = world.trade(out_trade_no)
    assert trade.trade_status == "TRADE_CLOSED" and trade.gmt_payment is None  # closed there too


async def test_a_late_payment_notification_finds_the_order_settled_and_changes_nothing(world: World) -> None:
    await world.arm("pay_notify", "late", delay_s=2.0)
    order_id, attempt = await world.placed()
    out_trade_no = attempt.out_trade_no
    await world.patient_pays(out_trade_no)

    await world.until(order_id, settled)  # by the janitor's query, before the notification
    assert [n for n in await world.payment_notices(out_trade_no) if n["acknowledged"]] == []
    for _ in range(100):
        if any(n["acknowledged"] for n in await world.payment_notices(out_trade_no)):
            break
        await asyncio.sleep(0.05)
    assert any(n["acknowledged"] for n in await world.payment_notices(out_trade_no))
    await world.core.process.drain(5)
    done = await world.stored(order_id)
    assert done.status == S.ORDER_STATUS_SETTLED and done.cash_paid_fen == 12_500
    assert entry_kinds(await world.ledger(order_id)) == ["PAYMENT", "SETTLEMENT"]


@pytest.mark.parametrize("mode", ["timeout", "http_500"])
async def test_a_refund_without_an_answer_is_queried_and_refunded_once(world: World, mode: str) -> None:
    """`timeout`: refunded, the answer lost; `http_500`: not done. The query tells which; the refund
    completes by itself, with one refund at the gateway."""
    order_id, attempt = await world.placed()
    await world.patient_pays(attempt.out_trade_no)
    await world.until(order_id, settled)
    await world.arm("refund", mode)

    await world.payment.RefundPaymentOrder(base.refund(order_id))
    world.clock.offset = timedelta(minutes=1)  # the refund's query and retries are due
    done = await world.until(order_id, lambda o: o.status == S.ORDER_STATUS_REFUNDED)
    [refund] = done.refunds
    assert refund.status == pb.REFUND_STATUS_SUCCEEDED and done.refunded_cash_fen == 12_500
    assert [(r.out_request_no, r.refund_fen, r.status) for r in world.refunds(attempt.out_trade_no)] == [
        (refund.out_refund_no, 12_500, "REFUND_SUCCESS")
    ]
