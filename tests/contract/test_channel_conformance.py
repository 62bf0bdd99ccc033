"""One conformance suite for every PaymentChannel: the in-memory fake and WeChat Pay (the real SDK
against the simulator, served by uvicorn on an ephemeral loopback port, keys made in tmp).

A channel passes when a patient's whole payment life behaves the same through it: place -> query
NOT_PAID -> the patient pays -> notification verified and parsed -> query PAID -> partial refund ->
refund beyond the rest refused -> close of a paid order refused -> the day's bill lists the payment
and the refund with matching amounts. WeChat-only checks (faults, retries, decryption) follow.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from infra.simulators.wechatpay.app import build_asgi_app
from infra.simulators.wechatpay.simulator import SimulatorConfig, WechatPaySimulator
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
)
from services.payment_core.adapters.channels.wechatpay import WechatPayChannel, WechatPayCredentials
from services.runtime.money import Money

BEIJING = ZoneInfo("Asia/Shanghai")
Notification = tuple[Mapping[str, str], bytes]


def new_out_trade_no() -> str:
    return f"MP{uuid.uuid4().hex[:24]}"


def in_fifteen_minutes() -> datetime:
    return datetime.now(UTC) + timedelta(minutes=15)


# --- the outside world for the WeChat Pay channel -----------------------------------------------


class NotificationInbox:
    """payment-core's notify endpoint, reduced to a recorder: /notify/{out_trade_no}."""

    def __init__(self) -> None:
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
        return JSONResponse({"code": "SUCCESS", "message": "成功"})

    async def wait_for(self, out_trade_no: str, count: int = 1, timeout_s: float = 5.0) -> list[Notification]:
        async with self._arrived:
            await asyncio.wait_for(
                self._arrived.wait_for(lambda: len(self.received[out_trade_no]) >= count), timeout_s
            )
        return list(self.received[out_trade_no])


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

    def channel(self, timeout: tuple[float, float] = (2.0, 5.0)) -> WechatPayChannel:
        credentials = WechatPayCredentials.from_key_dir(self.key_dir)
        return WechatPayChannel(credentials, self.sim_url, timeout=timeout)

    async def arm(self, operation: str, mode: str, count: int = 1, delay_s: float = 1.5) -> None:
        fault = {"operation": operation, "mode": mode, "count": count, "delay_s": delay_s}
        response = await self.control.post("/sim/faults", json=fault)
        assert response.status_code == 201, response.text

    async def pay(self, out_trade_no: str) -> httpx.Response:
        return await self.control.post("/sim/pay", json={"out_trade_no": out_trade_no})


@pytest.fixture(scope="session")
async def wechat_world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[WechatWorld]:
    root = tmp_path_factory.mktemp("wechatpay")
    config = SimulatorConfig(
        key_dir=root / "keys", db_path=root / "wechatpay_sim.sqlite3", notify_delays=(0.0, 0.05, 0.1, 0.2)
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


# --- one harness per channel --------------------------------------------------------------------


@dataclass
class Harness:
    channel: PaymentChannel
    notify_url: Callable[[str], str]
    patient_pays: Callable[[str], Awaitable[Notification]]


def fake_harness() -> Harness:
    fake = FakeChannel()

    async def patient_pays(out_trade_no: str) -> Notification:
        return fake.patient_pays(out_trade_no)

    return Harness(fake, lambda no: f"https://his.hospital.example/notify/{no}", patient_pays)


def wechat_harness(world: WechatWorld, channel: WechatPayChannel) -> Harness:
    async def patient_pays(out_trade_no: str) -> Notification:
        response = await world.pay(out_trade_no)
        assert response.status_code == 200, response.text
        return (await world.inbox.wait_for(out_trade_no))[0]

    return Harness(channel, lambda no: f"{world.inbox_url}/notify/{no}", patient_pays)


@pytest.fixture(params=["fake", "wechatpay"])
async def harness(request: pytest.FixtureRequest, wechat: WechatWorld) -> AsyncIterator[Harness]:
    # Async fixtures cannot be looked up lazily (getfixturevalue), so the fake's runs also see the
    # session's simulator started; they do not use it.
    if request.param == "fake":
        yield fake_harness()
        return
    channel = wechat.channel()
    try:
        yield wechat_harness(wechat, channel)
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
    assert (await channel.query_refund(out_refund_no)).refund_id == refund.refund_id

    with pytest.raises(ChannelRejected) as too_much:
        await channel.refund(f"RF{uuid.uuid4().hex[:20]}", out_trade_no, Money(7_501), Money(12_500), "超额")
    assert too_much.value.reason is RejectionReason.REFUND_EXCEEDS_PAID

    with pytest.raises(ChannelRejected) as paid_close:
        await channel.close(out_trade_no)
    assert paid_close.value.reason is RejectionReason.ALREADY_PAID
    assert (await channel.query(out_trade_no)).state is TradeState.REFUNDED

    days = {paid.success_time.astimezone(BEIJING).date(), datetime.now(BEIJING).date()}
    rows = [row for day in sorted(days) for row in await channel.download_trade_bill(day)]
    mine = [row for row in rows if row.out_trade_no == out_trade_no]
    payment = [row for row in mine if row.trade_state is BillTradeState.SUCCESS]
    refunds = [row for row in mine if row.trade_state is BillTradeState.REFUND]
    assert [(row.amount, row.transaction_id) for row in payment] == [(Money(12_500), paid.transaction_id)]
    assert [(row.refund_amount, row.out_refund_no, row.refund_id) for row in refunds] == [
        (Money(5_000), out_refund_no, refund.refund_id)
    ]


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
    forged = {
        name: value[::-1] if "signature" in name.lower() and "type" not in name.lower() else value
        for name, value in headers.items()
    }
    assert harness.channel.parse_notification(forged, body) is None
    assert harness.channel.parse_notification({}, body) is None


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


async def test_wechat_refund_notification(wechat: WechatWorld) -> None:
    inbox_key = f"refunds-{uuid.uuid4().hex[:8]}"
    credentials = WechatPayCredentials.from_key_dir(wechat.key_dir)
    channel = WechatPayChannel(
        credentials, wechat.sim_url, refund_notify_url=f"{wechat.inbox_url}/notify/{inbox_key}"
    )
    try:
        harness = wechat_harness(wechat, channel)
        out_trade_no = await place(harness)
        await harness.patient_pays(out_trade_no)
        refund = await channel.refund(
            "RF" + uuid.uuid4().hex[:20], out_trade_no, Money(2_000), Money(12_500), "退号"
        )
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
        attempts = (await wechat.control.get("/sim/notifications", params={"out_trade_no": retried})).json()
        assert [attempt["status_code"] for attempt in attempts] == [500, 500, 200]

        doubled = await place(harness)
        await wechat.arm("pay_notify", "duplicate")
        assert (await wechat.pay(doubled)).status_code == 200
        first, second = await wechat.inbox.wait_for(doubled, count=2)
        one, two = channel.parse_notification(*first), channel.parse_notification(*second)
        assert one is not None and two is not None and one.event_id == two.event_id

        lost = await place(harness)
        await wechat.arm("pay_notify", "lost")
        assert (await wechat.pay(lost)).status_code == 200
        assert (await channel.query(lost)).state is TradeState.PAID  # the janitor's query still sees it
        assert wechat.inbox.received[lost] == []
    finally:
        await channel.aclose()


async def test_wechat_refuses_unsigned_requests(wechat: WechatWorld) -> None:
    response = await wechat.control.get("/v3/pay/transactions/out-trade-no/MP123456?mchid=1900000109")
    assert response.status_code == 401
    assert response.json()["code"] == "SIGN_ERROR"
