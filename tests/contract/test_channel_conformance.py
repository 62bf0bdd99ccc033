"""One conformance suite for every PaymentChannel: the in-memory fake, WeChat Pay and Alipay (each
real SDK against its simulator, served by uvicorn on an ephemeral loopback port, keys made in tmp).

A channel passes when a patient's whole payment life behaves the same through it: place -> query
NOT_PAID -> the patient pays -> notification verified and parsed -> query PAID -> partial refund ->
refund beyond the rest refused -> close of a paid order refused -> the day's bill lists the payment
and the refund with matching amounts. Refunds that answer PROCESSING end later, by notification and
query, as SUCCEEDED, ABNORMAL (the amount stays taken) or FAILED (the amount is refundable again).
Alipay has no refund that ends other than paid out (its refunds fail in the answer, or succeed),
and keeps a partly refunded trade TRADE_SUCCESS: the harness says so, the suite asks no more.
WeChat-only and Alipay-only checks (faults, retries, signatures) follow.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode
from zoneinfo import ZoneInfo

import httpx
import pytest
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from infra.simulators.alipay.app import build_asgi_app as build_alipay_app
from infra.simulators.alipay.simulator import AlipaySimulator
from infra.simulators.alipay.simulator import SimulatorConfig as AlipaySimConfig
from infra.simulators.wechatpay.app import build_asgi_app
from infra.simulators.wechatpay.simulator import SimulatorConfig, WechatPaySimulator
from services.payment_core.adapters.channels import deposit as deposit_channel
from services.payment_core.adapters.channels.alipay import AlipayChannel, AlipayCredentials
from services.payment_core.adapters.channels.deposit import DepositChannel
from services.payment_core.adapters.channels.fake import FakeChannel
from services.payment_core.adapters.channels.ports import (
    BillTradeState,
    ChannelOutcomeUnknown,
    ChannelRejected,
    ChannelUnavailable,
    PaymentChannel,
    RefundStatus,
    RejectionReason,
    TradeState,
    WindowChannel,
    WindowReport,
)
from services.payment_core.adapters.channels.wechatpay import WechatPayChannel, WechatPayCredentials
from services.payment_core.adapters.channels.window import window_channels
from services.runtime.money import Money

BEIJING = ZoneInfo("Asia/Shanghai")
REVERSE_NOT_BEFORE_S = 500.0  # simulated seconds: 0.5 s at the suite's time scale
Notification = tuple[Mapping[str, str], bytes]


def new_out_trade_no() -> str:
    return f"MP{uuid.uuid4().hex[:24]}"


def in_fifteen_minutes() -> datetime:
    return datetime.now(UTC) + timedelta(minutes=15)


# --- the outside world for the WeChat Pay channel -----------------------------------------------


class NotificationInbox:
    """payment-core's notify endpoint, reduced to a recorder: /notify/{out_trade_no}."""

    def __init__(self, acknowledgement: Callable[[], Response] | None = None) -> None:
        """`acknowledgement`: the answer that stops the channel's resends (WeChat: any 2xx)."""
        self._ack = acknowledgement or (lambda: JSONResponse({"code": "SUCCESS", "message": "成功"}))
        self.received: dict[str, list[Notification]] = defaultdict(list)
        self.failures_to_give: dict[str, int] = {}
        self._arrived = asyncio.Condition()

    async def endpoint(self, request: Request) -> Response:
        out_trade_no = request.path_params["out_trade_no"]
        if self.failures_to_give.get(out_trade_no, 0) > 0:
            self.failures_to_give[out_trade_no] -= 1
            return JSONResponse({"code": "FAIL", "message": "busy"}, status_code=500)
        body = await request.body()
        async with self._arrived:
            self.received[out_trade_no].append((dict(request.headers), body))
            self._arrived.notify_all()
        return self._ack()

    async def wait_for(self, out_trade_no: str, count: int = 1, timeout_s: float = 5.0) -> list[Notification]:
        async with self._arrived:
            await asyncio.wait_for(
                self._arrived.wait_for(lambda: len(self.received[out_trade_no]) >= count), timeout_s
            )
        return list(self.received[out_trade_no])

    async def wait_for_refund(
        self, key: str, channel: PaymentChannel, out_refund_no: str, timeout_s: float = 5.0
    ) -> Notification:
        """The first notification under `key` that the channel reads as this refund's."""

        def found() -> Notification | None:
            for headers, body in self.received[key]:
                parsed = channel.parse_notification(headers, body)
                if parsed is not None and parsed.refund and parsed.refund.out_refund_no == out_refund_no:
                    return headers, body
            return None

        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(lambda: found() is not None), timeout_s)
        notification = found()
        assert notification is not None
        return notification


@asynccontextmanager
async def serving(app: ASGIApp) -> AsyncIterator[str]:
    """Run an ASGI app with uvicorn in this event loop on an ephemeral loopback port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on")
    server = uvicorn.Server(config)
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
class WechatWorld:
    sim_url: str
    inbox_url: str
    inbox: NotificationInbox
    key_dir: Path
    control: httpx.AsyncClient

    def channel(
        self, timeout: tuple[float, float] = (2.0, 5.0), refund_inbox: str | None = None
    ) -> WechatPayChannel:
        credentials = WechatPayCredentials.from_key_dir(self.key_dir)
        refund_notify_url = f"{self.inbox_url}/notify/{refund_inbox}" if refund_inbox else None
        return WechatPayChannel(
            credentials, self.sim_url, timeout=timeout, refund_notify_url=refund_notify_url
        )

    async def arm(self, operation: str, mode: str, count: int = 1, delay_s: float = 1.5) -> None:
        fault = {"operation": operation, "mode": mode, "count": count, "delay_s": delay_s}
        response = await self.control.post("/sim/faults", json=fault)
        assert response.status_code == 201, response.text

    async def pay(self, out_trade_no: str) -> httpx.Response:
        return await self.control.post("/sim/pay", json={"out_trade_no": out_trade_no})

    async def attempts(
        self, out_trade_no: str, until: Callable[[list[dict[str, Any]]], bool], timeout_s: float = 5.0
    ) -> list[dict[str, Any]]:
        """The simulator's delivery attempts for the order, once `until` holds for them (the sim
        records an attempt only after the answer, so the inbox can see a notification first)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            response = await self.control.get("/sim/notifications", params={"out_trade_no": out_trade_no})
            attempts: list[dict[str, Any]] = response.json()
            if until(attempts) or loop.time() > deadline:
                return attempts
            await asyncio.sleep(0.02)

    async def finish_refund(self, out_refund_no: str) -> None:
        response = await self.control.post("/sim/refunds/finish", json={"out_refund_no": out_refund_no})
        assert response.status_code == 200, response.text


@pytest.fixture(scope="session")
async def wechat_world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[WechatWorld]:
    root = tmp_path_factory.mktemp("wechatpay")
    # WeChat's own resend schedule and the real refund way (PROCESSING, then SUCCESS), on a clock
    # 1000 times faster: resends after 15 ms, 15 ms, 30 ms, ...; refunds finish after 5 ms. A code
    # payment's "no reverse sooner than 15 s" lasts 0.5 s here, long enough to be seen refused.
    config = SimulatorConfig(
        key_dir=root / "keys",
        db_path=root / "wechatpay_sim.sqlite3",
        time_scale=0.001,
        reverse_not_before_s=REVERSE_NOT_BEFORE_S,
    )
    inbox = NotificationInbox()
    receiver = Starlette(routes=[Route("/notify/{out_trade_no}", inbox.endpoint, methods=["POST"])])
    async with serving(build_asgi_app(WechatPaySimulator(config))) as sim_url, serving(receiver) as inbox_url:
        async with httpx.AsyncClient(base_url=sim_url) as control:
            yield WechatWorld(sim_url, inbox_url, inbox, config.key_dir, control)


@pytest.fixture
async def wechat(wechat_world: WechatWorld) -> AsyncIterator[WechatWorld]:
    yield wechat_world
    await wechat_world.control.delete("/sim/faults")


@dataclass
class AlipayWorld:
    sim_url: str
    inbox_url: str
    inbox: NotificationInbox
    key_dir: Path
    control: httpx.AsyncClient

    def channel(self, timeout_s: float = 5.0) -> AlipayChannel:
        credentials = AlipayCredentials.from_key_dir(self.key_dir)
        return AlipayChannel(credentials, f"{self.sim_url}/gateway.do", timeout_s)

    async def arm(self, operation: str, mode: str, delay_s: float = 1.5) -> None:
        fault = {"operation": operation, "mode": mode, "delay_s": delay_s}
        response = await self.control.post("/sim/faults", json=fault)
        assert response.status_code == 201, response.text


@pytest.fixture(scope="session")
async def alipay_world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AlipayWorld]:
    root = tmp_path_factory.mktemp("alipay")
    # Alipay's retry schedule (4m, 10m, ...) on a clock 100 000 times faster.
    config = AlipaySimConfig(key_dir=root / "keys", db_path=root / "alipay_sim.sqlite3", time_scale=0.00001)
    inbox = NotificationInbox(lambda: PlainTextResponse("success"))  # Alipay stops at "success" only
    receiver = Starlette(routes=[Route("/notify/{out_trade_no}", inbox.endpoint, methods=["POST"])])
    async with serving(build_alipay_app(AlipaySimulator(config))) as sim_url, serving(receiver) as inbox_url:
        async with httpx.AsyncClient(base_url=sim_url) as control:
            yield AlipayWorld(sim_url, inbox_url, inbox, config.key_dir, control)


@pytest.fixture
async def alipay(alipay_world: AlipayWorld) -> AsyncIterator[AlipayWorld]:
    yield alipay_world
    await alipay_world.control.delete("/sim/faults")


# --- one harness per channel --------------------------------------------------------------------


@dataclass
class Harness:
    channel: PaymentChannel
    notify_url: Callable[[str], str]
    patient_pays: Callable[[str], Awaitable[Notification]]
    # The next refund answers PROCESSING and, once `refund_ends`, reaches the given status.
    hold_next_refund: Callable[[RefundStatus], Awaitable[None]]
    # The held refund reaches its status now; returns the REFUND.* notification the channel sent.
    refund_ends: Callable[[str], Awaitable[Notification]]
    # The channel's own words and ways, where they differ from WeChat Pay's.
    refund_success_event: str = "REFUND.SUCCESS"
    state_after_partial_refund: TradeState = TradeState.REFUNDED
    refund_outcomes: frozenset[RefundStatus] = frozenset(RefundStatus)  # reachable after PROCESSING
    forgeries: Callable[[Mapping[str, str], bytes], list[Notification]] = field(
        default=lambda headers, body: _header_forgeries(headers, body)
    )


def _header_forgeries(headers: Mapping[str, str], body: bytes) -> list[Notification]:
    """The notification with its signature header reversed, and with no headers at all."""
    forged = {
        name: value[::-1] if "signature" in name.lower() and "type" not in name.lower() else value
        for name, value in headers.items()
    }
    return [(forged, body), ({}, body)]


def _form_forgeries(headers: Mapping[str, str], body: bytes) -> list[Notification]:
    """Alipay signs inside the form: the sign reversed, the sign left out, sign_type RSA (SHA-1)."""
    form = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    reversed_sign = [(k, v[::-1] if k == "sign" else v) for k, v in form]
    unsigned = [(k, v) for k, v in form if k != "sign"]
    weaker = [(k, "RSA" if k == "sign_type" else v) for k, v in form]
    return [(headers, urlencode(variant).encode()) for variant in (reversed_sign, unsigned, weaker)]


def fake_harness() -> Harness:
    fake = FakeChannel()
    held: dict[str, RefundStatus] = {}

    async def patient_pays(out_trade_no: str) -> Notification:
        return fake.patient_pays(out_trade_no)

    async def hold_next_refund(final: RefundStatus) -> None:
        fake.answer_next_refunds(RefundStatus.PROCESSING)
        held["next"] = final

    async def refund_ends(out_refund_no: str) -> Notification:
        return fake.finish_refund(out_refund_no, held.pop("next"))

    return Harness(
        fake,
        lambda no: f"https://his.hospital.example/notify/{no}",
        patient_pays,
        hold_next_refund,
        refund_ends,
    )


_FAULT_FOR = {
    RefundStatus.SUCCEEDED: "processing",
    RefundStatus.ABNORMAL: "abnormal",
    RefundStatus.FAILED: "closed",
}


def wechat_harness(world: WechatWorld, channel: WechatPayChannel, refund_inbox: str = "") -> Harness:
    """`refund_inbox`: the inbox key the channel's refund_notify_url points at."""

    async def patient_pays(out_trade_no: str) -> Notification:
        response = await world.pay(out_trade_no)
        assert response.status_code == 200, response.text
        return (await world.inbox.wait_for(out_trade_no))[0]

    async def hold_next_refund(final: RefundStatus) -> None:
        await world.arm("refund", _FAULT_FOR[final], delay_s=600)  # until refund_ends

    async def refund_ends(out_refund_no: str) -> Notification:
        await world.finish_refund(out_refund_no)
        return await world.inbox.wait_for_refund(refund_inbox, channel, out_refund_no)

    return Harness(
        channel, lambda no: f"{world.inbox_url}/notify/{no}", patient_pays, hold_next_refund, refund_ends
    )


def alipay_harness(world: AlipayWorld, channel: AlipayChannel) -> Harness:
    """Refund notifications go to the trade's notify_url: the inbox key is the out_trade_no."""

    async def patient_pays(out_trade_no: str) -> Notification:
        response = await world.control.post("/sim/pay", json={"out_trade_no": out_trade_no})
        assert response.status_code == 200, response.text
        return (await world.inbox.wait_for(out_trade_no))[0]

    async def hold_next_refund(final: RefundStatus) -> None:
        assert final is RefundStatus.SUCCEEDED, "an Alipay refund in progress can only pay out"
        await world.arm("refund", "processing")

    async def refund_ends(out_refund_no: str) -> Notification:
        response = await world.control.post("/sim/refunds/finish", json={"out_request_no": out_refund_no})
        assert response.status_code == 200, response.text
        out_trade_no = response.json()["out_trade_no"]
        return await world.inbox.wait_for_refund(out_trade_no, channel, out_refund_no)

    return Harness(
        channel,
        lambda no: f"{world.inbox_url}/notify/{no}",
        patient_pays,
        hold_next_refund,
        refund_ends,
        refund_success_event="trade_status_sync.refund",
        state_after_partial_refund=TradeState.PAID,  # TRADE_SUCCESS until refunded in full
        refund_outcomes=frozenset({RefundStatus.SUCCEEDED}),
        forgeries=_form_forgeries,
    )


@pytest.fixture(params=["fake", "wechatpay", "alipay"])
async def harness(
    request: pytest.FixtureRequest, wechat: WechatWorld, alipay: AlipayWorld
) -> AsyncIterator[Harness]:
    # Async fixtures cannot be looked up lazily (getfixturevalue), so every run also sees the
    # session's simulators started; only its own channel's is used.
    if request.param == "fake":
        yield fake_harness()
        return
    if request.param == "alipay":
        alipay_channel = alipay.channel()
        try:
            yield alipay_harness(alipay, alipay_channel)
        finally:
            await alipay_channel.aclose()
        return
    refund_inbox = f"refunds-{uuid.uuid4().hex[:8]}"
    channel = wechat.channel(refund_inbox=refund_inbox)
    try:
        yield wechat_harness(wechat, channel, refund_inbox)
    finally:
        await channel.aclose()


async def place(harness: Harness, amount_fen: int = 12_500) -> str:
    out_trade_no = new_out_trade_no()
    await harness.channel.place_order(
        out_trade_no,
        Money(amount_fen),
        "门诊缴费-西药费",
        harness.notify_url(out_trade_no),
        in_fifteen_minutes(),
    )
    return out_trade_no


# --- the conformance suite ----------------------------------------------------------------------


async def test_a_patient_payment_from_order_to_bill(harness: Harness) -> None:
    channel, out_trade_no = harness.channel, new_out_trade_no()
    notify_url = harness.notify_url(out_trade_no)
    placed = await channel.place_order(
        out_trade_no, Money(12_500), "门诊缴费-西药费", notify_url, in_fifteen_minutes()
    )
    assert placed.code_url
    replay = await channel.place_order(
        out_trade_no, Money(12_500), "门诊缴费-西药费", notify_url, in_fifteen_minutes()
    )
    assert replay.code_url == placed.code_url

    before = await channel.query(out_trade_no)
    assert (before.state, before.amount, before.transaction_id) == (TradeState.NOT_PAID, Money(12_500), None)

    headers, body = await harness.patient_pays(out_trade_no)
    notification = channel.parse_notification(headers, body)
    assert notification is not None and notification.trade is not None
    assert notification.out_trade_no == out_trade_no
    assert (notification.trade.state, notification.trade.amount) == (TradeState.PAID, Money(12_500))

    paid = await channel.query(out_trade_no)
    assert paid.state is TradeState.PAID
    assert paid.transaction_id == notification.trade.transaction_id and paid.transaction_id
    assert paid.success_time is not None and paid.success_time.tzinfo is not None

    out_refund_no = f"RF{uuid.uuid4().hex[:20]}"
    refund = await channel.refund(out_refund_no, out_trade_no, Money(5_000), Money(12_500), "患者退药")
    assert refund.status in (RefundStatus.SUCCEEDED, RefundStatus.PROCESSING)
    assert (refund.amount, refund.out_trade_no) == (Money(5_000), out_trade_no)
    again = await channel.refund(out_refund_no, out_trade_no, Money(5_000), Money(12_500), "患者退药")
    assert again.refund_id == refund.refund_id
    assert (await channel.query_refund(out_refund_no, out_trade_no)).refund_id == refund.refund_id

    with pytest.raises(ChannelRejected) as too_much:
        await channel.refund(f"RF{uuid.uuid4().hex[:20]}", out_trade_no, Money(7_501), Money(12_500), "超额")
    assert too_much.value.reason is RejectionReason.REFUND_EXCEEDS_PAID

    with pytest.raises(ChannelRejected) as paid_close:
        await channel.close(out_trade_no)
    assert paid_close.value.reason is RejectionReason.ALREADY_PAID
    assert (await channel.query(out_trade_no)).state is harness.state_after_partial_refund

    days = {paid.success_time.astimezone(BEIJING).date(), datetime.now(BEIJING).date()}
    rows = [row for day in sorted(days) for row in await channel.download_trade_bill(day)]
    mine = [row for row in rows if row.out_trade_no == out_trade_no]
    payment = [row for row in mine if row.trade_state is BillTradeState.SUCCESS]
    refunds = [row for row in mine if row.trade_state is BillTradeState.REFUND]
    assert [(row.amount, row.transaction_id) for row in payment] == [(Money(12_500), paid.transaction_id)]
    assert [(row.refund_amount, row.out_refund_no, row.refund_id) for row in refunds] == [
        (Money(5_000), out_refund_no, refund.refund_id)
    ]


async def test_a_refund_processing_at_first_succeeds_later(harness: Harness) -> None:
    channel, out_trade_no = harness.channel, await place(harness)
    await harness.patient_pays(out_trade_no)
    await harness.hold_next_refund(RefundStatus.SUCCEEDED)
    out_refund_no = f"RF{uuid.uuid4().hex[:20]}"
    answer = await channel.refund(out_refund_no, out_trade_no, Money(5_000), Money(12_500), "患者退药")
    assert (answer.status, answer.success_time, answer.amount) == (
        RefundStatus.PROCESSING,
        None,
        Money(5_000),
    )
    replay = await channel.refund(out_refund_no, out_trade_no, Money(5_000), Money(12_500), "患者退药")
    assert (replay.status, replay.refund_id) == (RefundStatus.PROCESSING, answer.refund_id)
    assert (await channel.query_refund(out_refund_no, out_trade_no)).status is RefundStatus.PROCESSING

    notification = channel.parse_notification(*await harness.refund_ends(out_refund_no))
    assert notification is not None and notification.refund is not None
    assert notification.event_type == harness.refund_success_event
    assert notification.out_trade_no == out_trade_no
    assert (notification.refund.status, notification.refund.refund_id) == (
        RefundStatus.SUCCEEDED,
        answer.refund_id,
    )
    assert notification.refund.amount == Money(5_000)
    done = await channel.query_refund(out_refund_no, out_trade_no)
    assert done.status is RefundStatus.SUCCEEDED and done.success_time is not None
    assert (await channel.query(out_trade_no)).state is harness.state_after_partial_refund


# Only the channels whose refunds can end so after answering PROCESSING: an Alipay refund in
# progress can only pay out (its protocol has no ABNORMAL or CLOSED refund), see alipay_harness.
@pytest.mark.parametrize("harness", ["fake", "wechatpay"], indirect=True)
@pytest.mark.parametrize(
    ("final", "event_type", "refundable_again"),
    [(RefundStatus.ABNORMAL, "REFUND.ABNORMAL", False), (RefundStatus.FAILED, "REFUND.CLOSED", True)],
)
async def test_a_refund_the_channel_cannot_pay_out(
    harness: Harness, final: RefundStatus, event_type: str, refundable_again: bool
) -> None:
    """ABNORMAL: the money is stuck at the bank, the refund stands (its amount stays taken) until a
    person re-routes it. FAILED (WeChat CLOSED): nothing was paid; the whole amount is refundable."""
    assert final in harness.refund_outcomes
    channel, out_trade_no = harness.channel, await place(harness)
    await harness.patient_pays(out_trade_no)
    await harness.hold_next_refund(final)
    out_refund_no = f"RF{uuid.uuid4().hex[:20]}"
    answer = await channel.refund(out_refund_no, out_trade_no, Money(12_500), Money(12_500), "退费")
    assert answer.status is RefundStatus.PROCESSING

    notification = channel.parse_notification(*await harness.refund_ends(out_refund_no))
    assert notification is not None and notification.refund is not None
    assert (notification.event_type, notification.refund.status) == (event_type, final)
    assert (await channel.query_refund(out_refund_no, out_trade_no)).status is final

    second = f"RF{uuid.uuid4().hex[:20]}"
    if refundable_again:
        assert (await channel.query(out_trade_no)).state is TradeState.PAID
        again = await channel.refund(second, out_trade_no, Money(12_500), Money(12_500), "退费")
        assert again.refund_id != answer.refund_id
        return
    with pytest.raises(ChannelRejected) as refused:
        await channel.refund(second, out_trade_no, Money(1), Money(12_500), "退费")
    assert refused.value.reason is RejectionReason.REFUND_EXCEEDS_PAID


async def test_the_same_out_trade_no_with_another_amount_is_refused(harness: Harness) -> None:
    out_trade_no = await place(harness, 12_500)
    with pytest.raises(ChannelRejected) as refused:
        await harness.channel.place_order(
            out_trade_no,
            Money(12_600),
            "门诊缴费-西药费",
            harness.notify_url(out_trade_no),
            in_fifteen_minutes(),
        )
    assert refused.value.reason is RejectionReason.INVALID_REQUEST


async def test_an_order_the_channel_never_saw_is_not_found(harness: Harness) -> None:
    with pytest.raises(ChannelRejected) as missing:
        await harness.channel.query(new_out_trade_no())
    assert missing.value.reason is RejectionReason.NOT_FOUND


async def test_a_closed_order_stays_closed(harness: Harness) -> None:
    out_trade_no = await place(harness)
    await harness.channel.close(out_trade_no)
    await harness.channel.close(out_trade_no)  # closing twice is a no-op
    assert (await harness.channel.query(out_trade_no)).state is TradeState.CLOSED
    with pytest.raises(ChannelRejected) as reopened:
        await harness.channel.place_order(
            out_trade_no,
            Money(12_500),
            "门诊缴费-西药费",
            harness.notify_url(out_trade_no),
            in_fifteen_minutes(),
        )
    assert reopened.value.reason is RejectionReason.ALREADY_CLOSED


async def test_an_unpaid_order_cannot_be_refunded(harness: Harness) -> None:
    out_trade_no = await place(harness)
    with pytest.raises(ChannelRejected) as refused:
        await harness.channel.refund(f"RF{uuid.uuid4().hex[:20]}", out_trade_no, Money(1), Money(12_500), "")
    assert refused.value.reason is RejectionReason.INVALID_REQUEST


async def test_a_tampered_notification_parses_to_none(harness: Harness) -> None:
    out_trade_no = await place(harness)
    headers, body = await harness.patient_pays(out_trade_no)
    assert harness.channel.parse_notification(headers, body) is not None

    flipped = body[:-2] + bytes([body[-2] ^ 0x01]) + body[-1:]
    assert harness.channel.parse_notification(headers, flipped) is None
    for forged_headers, forged_body in harness.forgeries(headers, body):
        assert harness.channel.parse_notification(forged_headers, forged_body) is None


async def test_a_day_without_trade_has_an_empty_bill(harness: Harness) -> None:
    assert await harness.channel.download_trade_bill(date(2001, 1, 1)) == []


# --- WeChat Pay only: the unhappy wire -----------------------------------------------------------


async def test_wechat_timeout_after_the_order_landed_is_outcome_unknown(wechat: WechatWorld) -> None:
    impatient, channel = wechat.channel(timeout=(1.0, 0.3)), wechat.channel()
    landed, refused = new_out_trade_no(), new_out_trade_no()
    try:
        await wechat.arm("place_order", "timeout", delay_s=1.0)
        with pytest.raises(ChannelOutcomeUnknown):
            await impatient.place_order(
                landed, Money(100), "挂号费", "https://h.example/n", in_fifteen_minutes()
            )
        assert (await channel.query(landed)).state is TradeState.NOT_PAID  # it did land

        await wechat.arm("place_order", "http_500")
        with pytest.raises(ChannelOutcomeUnknown):
            await channel.place_order(
                refused, Money(100), "挂号费", "https://h.example/n", in_fifteen_minutes()
            )
        with pytest.raises(ChannelRejected):  # this 500 applied nothing
            await channel.query(refused)
    finally:
        await impatient.aclose()
        await channel.aclose()


async def test_wechat_answers_signed_by_another_key_are_not_trusted(wechat: WechatWorld) -> None:
    genuine = WechatPayCredentials.from_key_dir(wechat.key_dir)
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    pem = other_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    fooled = WechatPayChannel(replace(genuine, platform_public_key=pem.decode()), wechat.sim_url)
    out_trade_no = new_out_trade_no()
    try:
        with pytest.raises(ChannelOutcomeUnknown):
            await fooled.place_order(
                out_trade_no, Money(100), "挂号费", "https://h.example/n", in_fifteen_minutes()
            )
        with pytest.raises(ChannelUnavailable):
            await fooled.query(out_trade_no)
    finally:
        await fooled.aclose()


@pytest.mark.parametrize("sync", [False, True])
async def test_wechat_refund_notification(wechat: WechatWorld, sync: bool) -> None:
    """By default the refund answers PROCESSING and its REFUND.SUCCESS follows on its own; the
    sync_success switch makes it SUCCESS in the answer, still notified."""
    inbox_key = f"refunds-{uuid.uuid4().hex[:8]}"
    channel = wechat.channel(refund_inbox=inbox_key)
    try:
        harness = wechat_harness(wechat, channel, inbox_key)
        out_trade_no = await place(harness)
        await harness.patient_pays(out_trade_no)
        if sync:
            await wechat.arm("refund", "sync_success")
        refund = await channel.refund(
            "RF" + uuid.uuid4().hex[:20], out_trade_no, Money(2_000), Money(12_500), "退号"
        )
        assert refund.status is (RefundStatus.SUCCEEDED if sync else RefundStatus.PROCESSING)
        ((headers, body),) = await wechat.inbox.wait_for(inbox_key)
        notification = channel.parse_notification(headers, body)
        assert notification is not None and notification.refund is not None
        assert notification.event_type == "REFUND.SUCCESS"
        assert (notification.refund.refund_id, notification.refund.amount) == (refund.refund_id, Money(2_000))
        assert notification.refund.status is RefundStatus.SUCCEEDED
    finally:
        await channel.aclose()


async def test_wechat_queries_that_fail_are_unavailable(wechat: WechatWorld) -> None:
    channel = wechat.channel(timeout=(1.0, 0.3))
    try:
        out_trade_no = await place(wechat_harness(wechat, channel))
        await wechat.arm("query", "http_500")
        with pytest.raises(ChannelUnavailable):
            await channel.query(out_trade_no)
        await wechat.arm("query", "lost", delay_s=1.0)
        with pytest.raises(ChannelUnavailable):
            await channel.query(out_trade_no)
        assert (await channel.query(out_trade_no)).state is TradeState.NOT_PAID
    finally:
        await channel.aclose()


async def test_wechat_unreachable_gateway_is_unavailable(wechat: WechatWorld) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    credentials = WechatPayCredentials.from_key_dir(wechat.key_dir)
    channel = WechatPayChannel(credentials, f"http://127.0.0.1:{dead_port}", timeout=(0.5, 0.5))
    try:
        with pytest.raises(ChannelUnavailable):
            await channel.place_order(
                new_out_trade_no(), Money(100), "挂号费", "https://h.example/n", in_fifteen_minutes()
            )
    finally:
        await channel.aclose()


async def test_wechat_late_success_after_close(wechat: WechatWorld) -> None:
    channel = wechat.channel()
    try:
        out_trade_no = await place(wechat_harness(wechat, channel))
        await channel.close(out_trade_no)
        assert (await wechat.pay(out_trade_no)).status_code == 409
        await wechat.arm("close", "late_success_after_close")
        assert (await wechat.pay(out_trade_no)).status_code == 200
        assert (await channel.query(out_trade_no)).state is TradeState.PAID
    finally:
        await channel.aclose()


async def test_wechat_notifications_retry_and_duplicate(wechat: WechatWorld) -> None:
    channel = wechat.channel()
    try:
        harness = wechat_harness(wechat, channel)
        retried = await place(harness)
        wechat.inbox.failures_to_give[retried] = 2
        await harness.patient_pays(retried)
        attempts = await wechat.attempts(retried, until=lambda found: len(found) >= 3)
        assert [(a["attempt"], a["status_code"], a["acknowledged"]) for a in attempts] == [
            (1, 500, False),
            (2, 500, False),
            (3, 200, True),
        ]

        doubled = await place(harness)
        await wechat.arm("pay_notify", "duplicate")
        assert (await wechat.pay(doubled)).status_code == 200
        first, second = await wechat.inbox.wait_for(doubled, count=2)
        one, two = channel.parse_notification(*first), channel.parse_notification(*second)
        assert one is not None and two is not None and one.event_id == two.event_id
        attempts = await wechat.attempts(doubled, until=lambda found: len(found) >= 2)
        assert [(a["delivery"], a["acknowledged"]) for a in attempts] == [(1, True), (2, True)]

        lost = await place(harness)
        await wechat.arm("pay_notify", "lost")
        assert (await wechat.pay(lost)).status_code == 200
        assert (await channel.query(lost)).state is TradeState.PAID  # the janitor's query still sees it
        assert wechat.inbox.received[lost] == []
    finally:
        await channel.aclose()


async def test_wechat_refusals_map_to_the_channel_errors_through_the_sdk(wechat: WechatWorld) -> None:
    """What the real v3 gateway answers, through the unmodified SDK: a signature under another
    serial_no is NOT_AUTHORISED; OUT_TRADE_NO_USED is INVALID_REQUEST; a refund beyond what remains
    (400 INVALID_REQUEST) is REFUND_EXCEEDS_PAID; a refund of an order never seen is NOT_FOUND;
    NOT_ENOUGH (403) and FREQUENCY_LIMITED (429) are "not now" (ChannelUnavailable) and the same
    out_refund_no passes later; a refund's 500 SYSTEM_ERROR is an unknown outcome."""
    genuine = WechatPayCredentials.from_key_dir(wechat.key_dir)
    channel = wechat.channel()
    wrong_serial = WechatPayChannel(replace(genuine, merchant_serial_no="0BADSERIAL"), wechat.sim_url)
    try:
        out_trade_no = await place(wechat_harness(wechat, channel))
        with pytest.raises(ChannelRejected) as unsigned:
            await wrong_serial.query(out_trade_no)
        assert (unsigned.value.code, unsigned.value.reason) == ("SIGN_ERROR", RejectionReason.NOT_AUTHORISED)
        with pytest.raises(ChannelRejected) as reused:
            await channel.place_order(
                out_trade_no, Money(12_600), "门诊缴费-西药费", "https://h.example/n", in_fifteen_minutes()
            )
        assert (reused.value.code, reused.value.reason) == (
            "OUT_TRADE_NO_USED",
            RejectionReason.INVALID_REQUEST,
        )
        assert (await wechat.pay(out_trade_no)).status_code == 200

        with pytest.raises(ChannelRejected) as too_much:
            await channel.refund("RF" + uuid.uuid4().hex[:20], out_trade_no, Money(12_501), Money(12_500), "")
        assert (too_much.value.code, too_much.value.reason) == (
            "INVALID_REQUEST",
            RejectionReason.REFUND_EXCEEDS_PAID,
        )
        with pytest.raises(ChannelRejected) as never_seen:
            await channel.refund("RF" + uuid.uuid4().hex[:20], new_out_trade_no(), Money(1), Money(1), "")
        assert (never_seen.value.code, never_seen.value.reason) == (
            "RESOURCE_NOT_EXISTS",
            RejectionReason.NOT_FOUND,
        )

        out_refund_no = "RF" + uuid.uuid4().hex[:20]
        for mode, error, code in [
            ("not_enough", ChannelUnavailable, "NOT_ENOUGH"),
            ("frequency_limited", ChannelUnavailable, "FREQUENCY_LIMITED"),
            ("http_500", ChannelOutcomeUnknown, "SYSTEM_ERROR"),
        ]:
            await wechat.arm("refund", mode)
            with pytest.raises(error, match=code):
                await channel.refund(out_refund_no, out_trade_no, Money(5_000), Money(12_500), "退费")
            with pytest.raises(ChannelRejected):  # none of them left a refund behind
                await channel.query_refund(out_refund_no)
        later = await channel.refund(out_refund_no, out_trade_no, Money(5_000), Money(12_500), "退费")
        assert later.amount == Money(5_000)
    finally:
        await wrong_serial.aclose()
        await channel.aclose()


async def test_wechat_refuses_unsigned_requests(wechat: WechatWorld) -> None:
    response = await wechat.control.get("/v3/pay/transactions/out-trade-no/MP123456?mchid=1900000109")
    assert response.status_code == 401
    assert response.json()["code"] == "SIGN_ERROR"


# --- Alipay only: the unhappy wire ----------------------------------------------------------------


async def test_alipay_timeout_after_the_order_landed_is_outcome_unknown(alipay: AlipayWorld) -> None:
    impatient, channel = alipay.channel(timeout_s=0.3), alipay.channel()
    landed, refused = new_out_trade_no(), new_out_trade_no()
    await alipay.arm("precreate", "timeout", delay_s=1.0)
    with pytest.raises(ChannelOutcomeUnknown):
        await impatient.place_order(landed, Money(100), "挂号费", "https://h.example/n", in_fifteen_minutes())
    assert (await channel.query(landed)).state is TradeState.NOT_PAID  # it did land

    await alipay.arm("precreate", "http_500")
    with pytest.raises(ChannelOutcomeUnknown):
        await channel.place_order(refused, Money(100), "挂号费", "https://h.example/n", in_fifteen_minutes())
    with pytest.raises(ChannelRejected) as missing:  # this 500 applied nothing
        await channel.query(refused)
    assert missing.value.reason is RejectionReason.NOT_FOUND


async def test_alipay_answers_signed_by_another_key_are_not_trusted(alipay: AlipayWorld) -> None:
    genuine = AlipayCredentials.from_key_dir(alipay.key_dir)
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    pem = other_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    fooled = AlipayChannel(replace(genuine, alipay_public_key=pem.decode()), f"{alipay.sim_url}/gateway.do")
    out_trade_no = new_out_trade_no()
    with pytest.raises(ChannelOutcomeUnknown):
        await fooled.place_order(
            out_trade_no, Money(100), "挂号费", "https://h.example/n", in_fifteen_minutes()
        )
    with pytest.raises(ChannelUnavailable):
        await fooled.query(out_trade_no)


async def test_alipay_requests_signed_by_another_app_key_are_refused(alipay: AlipayWorld) -> None:
    genuine = AlipayCredentials.from_key_dir(alipay.key_dir)
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = other_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    impostor = AlipayChannel(replace(genuine, app_private_key=pem.decode()), f"{alipay.sim_url}/gateway.do")
    with pytest.raises(ChannelRejected) as refused:
        await impostor.query(new_out_trade_no())
    assert (refused.value.code, refused.value.reason) == (
        "isv.invalid-signature",
        RejectionReason.NOT_AUTHORISED,
    )


async def test_alipay_queries_that_fail_are_unavailable(alipay: AlipayWorld) -> None:
    channel = alipay.channel(timeout_s=0.3)
    out_trade_no = await place(alipay_harness(alipay, channel))
    await alipay.arm("query", "http_500")
    with pytest.raises(ChannelUnavailable):
        await channel.query(out_trade_no)
    await alipay.arm("query", "lost", delay_s=1.0)
    with pytest.raises(ChannelUnavailable):
        await channel.query(out_trade_no)
    assert (await channel.query(out_trade_no)).state is TradeState.NOT_PAID


async def test_alipay_unreachable_gateway_is_unavailable(alipay: AlipayWorld) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    credentials = AlipayCredentials.from_key_dir(alipay.key_dir)
    channel = AlipayChannel(credentials, f"http://127.0.0.1:{dead_port}/gateway.do", timeout_s=0.5)
    with pytest.raises(ChannelUnavailable):
        await channel.place_order(
            new_out_trade_no(), Money(100), "挂号费", "https://h.example/n", in_fifteen_minutes()
        )


async def test_alipay_late_success_after_close(alipay: AlipayWorld) -> None:
    channel = alipay.channel()
    out_trade_no = await place(alipay_harness(alipay, channel))
    await channel.close(out_trade_no)
    assert (await alipay.control.post("/sim/pay", json={"out_trade_no": out_trade_no})).status_code == 409
    await alipay.arm("close", "late_success_after_close")
    assert (await alipay.control.post("/sim/pay", json={"out_trade_no": out_trade_no})).status_code == 200
    assert (await channel.query(out_trade_no)).state is TradeState.PAID


async def test_alipay_notifications_retry_duplicate_and_get_lost(alipay: AlipayWorld) -> None:
    channel = alipay.channel()
    harness = alipay_harness(alipay, channel)
    retried = await place(harness)
    alipay.inbox.failures_to_give[retried] = 2
    await harness.patient_pays(retried)
    attempts: list[dict[str, Any]] = []
    for _ in range(200):
        attempts = (await alipay.control.get("/sim/notifications", params={"out_trade_no": retried})).json()
        if len(attempts) >= 3:
            break
        await asyncio.sleep(0.02)
    assert [(a["attempt"], a["status_code"], a["acknowledged"]) for a in attempts] == [
        (1, 500, False),
        (2, 500, False),
        (3, 200, True),
    ]

    doubled = await place(harness)
    await alipay.arm("pay_notify", "duplicate")
    assert (await alipay.control.post("/sim/pay", json={"out_trade_no": doubled})).status_code == 200
    first, second = await alipay.inbox.wait_for(doubled, count=2)
    one, two = channel.parse_notification(*first), channel.parse_notification(*second)
    assert one is not None and two is not None and one.event_id == two.event_id

    lost = await place(harness)
    await alipay.arm("pay_notify", "lost")
    assert (await alipay.control.post("/sim/pay", json={"out_trade_no": lost})).status_code == 200
    assert (await channel.query(lost)).state is TradeState.PAID  # the janitor's query still sees it
    assert alipay.inbox.received[lost] == []


async def test_alipay_full_refund_reads_as_refunded(alipay: AlipayWorld) -> None:
    channel = alipay.channel()
    harness = alipay_harness(alipay, channel)
    out_trade_no = await place(harness)
    await harness.patient_pays(out_trade_no)
    out_refund_no = "RF" + uuid.uuid4().hex[:20]
    refund = await channel.refund(out_refund_no, out_trade_no, Money(12_500), Money(12_500), "退费 全额}")
    assert (refund.status, refund.amount) == (RefundStatus.SUCCEEDED, Money(12_500))
    # The reason comes back in the refund query: braces in it must not break the SDK's verification.
    assert (await channel.query_refund(out_refund_no, out_trade_no)).status is RefundStatus.SUCCEEDED
    status = await channel.query(out_trade_no)
    assert (status.state, status.channel_state) == (TradeState.REFUNDED, "TRADE_CLOSED")


# ---- the window channels (CASH, POS) --------------------------------------------------------------
# Money taken at the hospital's window has no outside party: of the port's promises, those that
# apply are checked here (a replay is the same answer, a paid one is never closed, a refund beyond
# what was taken is refused, a callback is never trusted); the rest refuse, never "not found".


@pytest.mark.parametrize("name", ["CASH", "POS"])
async def test_a_window_channel_keeps_the_port_promises_that_apply(name: str) -> None:
    channel: WindowChannel = window_channels()[name]
    trade = f"ord_{uuid.uuid4().hex[:24]}_01"
    report = WindowReport("C001", datetime.now(UTC), "123456789012" if name == "POS" else "")
    first = await channel.record_taken(trade, Money(12_500), report)
    assert first.state is TradeState.PAID and first.amount == Money(12_500)
    assert await channel.record_taken(trade, Money(12_500), report) == first  # a replay
    with pytest.raises(ChannelRejected) as closing:
        await channel.close(trade)
    assert closing.value.reason is RejectionReason.ALREADY_PAID
    with pytest.raises(ChannelRejected) as beyond:
        await channel.refund(f"{trade}R1", trade, Money(12_501), Money(12_500), "returned")
    assert beyond.value.reason is RejectionReason.REFUND_EXCEEDS_PAID
    refund = await channel.refund(f"{trade}R1", trade, Money(2_500), Money(12_500), "returned")
    assert refund.status is RefundStatus.PROCESSING  # a cashier pays it out, the HIS confirms
    assert channel.parse_notification({}, b'{"id": "forged"}') is None
    with pytest.raises(ChannelRejected) as query:
        await channel.query(trade)
    assert query.value.reason is not RejectionReason.NOT_FOUND


# ---- the hospital deposit (预交金) ---------------------------------------------------------------------
# The deposit's book is payment-core's own storage: the channel confirms at once (the transaction
# that records its answer moves the balance); of the port's promises, those that apply are checked.


async def test_the_deposit_channel_keeps_the_port_promises_that_apply() -> None:
    channel = DepositChannel()
    trade = f"ord_{uuid.uuid4().hex[:24]}_01"
    paid = channel.debit(trade, Money(12_500), datetime.now(UTC))
    assert (paid.state, paid.amount) == (TradeState.PAID, Money(12_500))
    with pytest.raises(ChannelRejected) as closing:
        await channel.close(trade)
    assert closing.value.reason is RejectionReason.ALREADY_PAID
    with pytest.raises(ChannelRejected) as beyond:
        await channel.refund(f"{trade}R1", trade, Money(12_501), Money(12_500), "returned")
    assert beyond.value.reason is RejectionReason.REFUND_EXCEEDS_PAID
    refund = await channel.refund(f"{trade}R1", trade, Money(2_500), Money(12_500), "returned")
    assert (refund.status, refund.amount) == (RefundStatus.SUCCEEDED, Money(2_500))
    assert (await channel.query_refund(f"{trade}R1", trade)).status is RefundStatus.SUCCEEDED
    assert channel.parse_notification({}, b'{"id": "forged"}') is None
    with pytest.raises(ChannelRejected) as query:
        await channel.query(trade)
    assert query.value.reason is not RejectionReason.NOT_FOUND
    with pytest.raises(ChannelRejected):
        channel.debit(trade, Money(0), datetime.now(UTC))


def test_the_deposit_status_map_is_exhaustive_and_fails_closed() -> None:
    assert {deposit_channel.trade_state(s) for s in ("DEBITED",)} == {TradeState.PAID}
    assert deposit_channel.refund_status("CREDITED_BACK") is RefundStatus.SUCCEEDED
    for unknown in ("", "debited", "REVERSED", "CREDITED_BACK"):
        with pytest.raises(ChannelRejected):
            deposit_channel.trade_state(unknown)
    with pytest.raises(ChannelRejected):
        deposit_channel.refund_status("DEBITED")
