"""The simulator's refund lifecycle, as the real gateway's: the answer is PROCESSING, the refund
reaches SUCCESS, ABNORMAL or CLOSED when its time comes, the query shows where it stands, and a
REFUND.* notification (AES-GCM resource) goes to the refund's notify_url; amounts stay consistent
with the trade. The simulator's waits go through a held sleep, so no test depends on timing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra.simulators.wechatpay.app import build_asgi_app
from infra.simulators.wechatpay.keys import MCHID, WechatKeyPaths, read_text
from infra.simulators.wechatpay.simulator import SimulatorConfig, WechatPaySimulator
from services.payment_core.adapters.channels.ports import ChannelNotification, RefundStatus
from services.payment_core.adapters.channels.wechatpay import WechatPayChannel, WechatPayCredentials
from services.runtime.money import Money
from tests.unit.test_wechatpay_sim import Captured, keys, order_body, signed_headers

__all__ = ["keys"]  # the module-scoped key set fixture, shared with test_wechatpay_sim
REFUNDS = "/v3/refund/domestic/refunds"
NOTIFY_URL = "https://his.hospital.example/notify/refunds"


class HeldWaits:
    """The simulator's sleep: every wait is recorded; the long ones wait for `release`."""

    def __init__(self) -> None:
        self.waits: list[float] = []
        self._released = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if seconds > 0:
            await self._released.wait()

    def release(self) -> None:
        self._released.set()


@dataclass
class World:
    sim: WechatPaySimulator
    http: httpx.AsyncClient
    keys: WechatKeyPaths
    captured: Captured
    waits: HeldWaits

    async def call(self, method: str, path: str, body: dict[str, object] | None = None) -> httpx.Response:
        text = json.dumps(body) if body is not None else ""
        headers = signed_headers(self.keys, method, path, text)
        return await self.http.request(method, path, content=text or None, headers=headers)

    async def paid_order(self, out_trade_no: str, total_fen: int = 12_500) -> None:
        placed = await self.call("POST", "/v3/pay/transactions/native", order_body(out_trade_no, total_fen))
        assert placed.status_code == 200, placed.text
        assert (await self.http.post("/sim/pay", json={"out_trade_no": out_trade_no})).status_code == 200

    async def refund(
        self, out_trade_no: str, out_refund_no: str, fen: int, total: int = 12_500
    ) -> httpx.Response:
        amount = {"refund": fen, "total": total, "currency": "CNY"}
        body = {"out_trade_no": out_trade_no, "out_refund_no": out_refund_no, "amount": amount}
        return await self.call("POST", REFUNDS, {**body, "notify_url": NOTIFY_URL})

    async def refund_now(self, out_refund_no: str) -> dict[str, object]:
        response = await self.call("GET", f"{REFUNDS}/{out_refund_no}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def trade_state(self, out_trade_no: str) -> str:
        path = f"/v3/pay/transactions/out-trade-no/{out_trade_no}?mchid={MCHID}"
        return str((await self.call("GET", path)).json()["trade_state"])

    async def settled(self) -> None:
        """Every refund in flight finished (waits released) and every notification delivered."""
        self.waits.release()
        await asyncio.wait_for(self.sim.refund_desk.settle(), timeout=5)
        await asyncio.wait_for(self.sim.notifier.settle(), timeout=5)

    def refund_notifications(self) -> list[ChannelNotification]:
        channel = WechatPayChannel(
            WechatPayCredentials.from_key_dir(self.keys.directory), "http://wechatpay.sim"
        )
        parsed = [
            channel.parse_notification(dict(request.headers), request.content)
            for request in self.captured.requests
            if str(request.url) == NOTIFY_URL
        ]
        assert all(notification is not None for notification in parsed)
        return [notification for notification in parsed if notification is not None]


@asynccontextmanager
async def running(keys: WechatKeyPaths, db_path: Path, **config: Any) -> AsyncIterator[World]:
    captured, waits = Captured(), HeldWaits()
    simulator = WechatPaySimulator(
        SimulatorConfig(
            keys.directory, db_path, notify_transport=httpx.MockTransport(captured), sleep=waits, **config
        )
    )
    await simulator.start()
    transport = httpx.ASGITransport(app=build_asgi_app(simulator))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://wechatpay.sim") as http:
            yield World(simulator, http, keys, captured, waits)
    finally:
        await simulator.stop()


@pytest.fixture
async def world(keys: WechatKeyPaths, tmp_path: Path) -> AsyncIterator[World]:
    async with running(keys, tmp_path / "sim.sqlite3", refund_delay_s=5.0, time_scale=0.5) as started:
        yield started


async def arm(world: World, mode: str, **extra: object) -> None:
    response = await world.http.post("/sim/faults", json={"operation": "refund", "mode": mode, **extra})
    assert response.status_code == 201, response.text


# --- the lifecycle ------------------------------------------------------------------------------


async def test_a_refund_answers_processing_and_succeeds_later_with_a_notification(world: World) -> None:
    await world.paid_order("MP0000000101")
    answer = await world.refund("MP0000000101", "RF101", 5_000)
    assert answer.status_code == 200
    assert (answer.json()["status"], "success_time" in answer.json()) == ("PROCESSING", False)
    assert (await world.refund_now("RF101"))["status"] == "PROCESSING"
    replay = await world.refund("MP0000000101", "RF101", 5_000)
    assert (replay.json()["status"], replay.json()["refund_id"]) == ("PROCESSING", answer.json()["refund_id"])
    assert world.refund_notifications() == []

    await world.settled()
    assert pytest.approx(2.5, abs=0.5) in world.waits.waits  # refund_delay_s 5 on time scale 0.5
    now = await world.refund_now("RF101")
    assert now["status"] == "SUCCESS" and now["success_time"]
    (notification,) = world.refund_notifications()
    assert notification.event_type == "REFUND.SUCCESS" and notification.refund is not None
    assert (notification.refund.status, notification.refund.amount) == (RefundStatus.SUCCEEDED, Money(5_000))
    assert notification.refund.refund_id == answer.json()["refund_id"]
    assert await world.trade_state("MP0000000101") == "REFUND"


@pytest.mark.parametrize(
    ("mode", "status", "event_type", "port_status"),
    [
        ("abnormal", "ABNORMAL", "REFUND.ABNORMAL", RefundStatus.ABNORMAL),
        ("closed", "CLOSED", "REFUND.CLOSED", RefundStatus.FAILED),
        ("processing", "SUCCESS", "REFUND.SUCCESS", RefundStatus.SUCCEEDED),
    ],
)
async def test_an_armed_outcome_ends_the_next_refund_and_notifies_it(
    world: World, mode: str, status: str, event_type: str, port_status: RefundStatus
) -> None:
    await world.paid_order("MP0000000102")
    await arm(world, mode, delay_s=30)
    answer = await world.refund("MP0000000102", "RF102", 12_500)
    assert answer.json()["status"] == "PROCESSING"
    await world.settled()
    assert pytest.approx(30, abs=1) in world.waits.waits

    assert (await world.refund_now("RF102"))["status"] == status
    (notification,) = world.refund_notifications()
    assert notification.event_type == event_type and notification.refund is not None
    assert (notification.refund.status, notification.refund.out_refund_no) == (port_status, "RF102")
    assert (await world.http.get("/sim/faults")).json() == []  # used up by one refund


async def test_a_closed_refund_gives_its_amount_back_and_an_abnormal_one_keeps_it(world: World) -> None:
    await world.paid_order("MP0000000103")
    await arm(world, "closed")
    await world.refund("MP0000000103", "RF103-1", 12_500)
    await world.settled()
    assert await world.trade_state("MP0000000103") == "SUCCESS"  # nothing was refunded after all

    await arm(world, "abnormal")
    again = await world.refund("MP0000000103", "RF103-2", 12_500)  # the whole amount is refundable again
    assert again.status_code == 200 and again.json()["status"] == "PROCESSING"
    await world.settled()
    assert (await world.refund_now("RF103-2"))["status"] == "ABNORMAL"
    stuck = await world.refund("MP0000000103", "RF103-3", 1)  # the money is at the bank, not refundable
    assert (stuck.status_code, stuck.json()["code"]) == (400, "INVALID_REQUEST")
    assert await world.trade_state("MP0000000103") == "REFUND"


async def test_an_abnormal_refund_rerouted_by_a_person_succeeds(world: World) -> None:
    await world.paid_order("MP0000000104")
    await arm(world, "abnormal")
    refund_id = (await world.refund("MP0000000104", "RF104", 3_000)).json()["refund_id"]
    path = f"{REFUNDS}/{refund_id}/apply-abnormal-refund"
    await world.settled()

    refused = await world.call("POST", path, {"out_refund_no": "RF104", "type": "USER_BANK_CARD"})
    assert (refused.status_code, refused.json()["code"]) == (400, "PARAM_ERROR")  # which card?
    rerouted = await world.call("POST", path, {"out_refund_no": "RF104", "type": "MERCHANT_BANK_CARD"})
    assert (rerouted.status_code, rerouted.json()["status"]) == (200, "PROCESSING")
    await world.settled()
    assert (await world.refund_now("RF104"))["status"] == "SUCCESS"
    assert [n.event_type for n in world.refund_notifications()] == ["REFUND.ABNORMAL", "REFUND.SUCCESS"]
    again = await world.call("POST", path, {"out_refund_no": "RF104", "type": "MERCHANT_BANK_CARD"})
    assert (again.status_code, again.json()["code"]) == (400, "INVALID_REQUEST")  # not abnormal any more


async def test_sync_refunds_succeed_in_the_answer(keys: WechatKeyPaths, tmp_path: Path) -> None:
    async with running(keys, tmp_path / "sim.sqlite3", refund_mode="sync") as world:
        await world.paid_order("MP0000000105")
        answer = await world.refund("MP0000000105", "RF105", 1_000)
        assert answer.json()["status"] == "SUCCESS" and answer.json()["success_time"]
        await arm(world, "processing")  # per refund, a test can still ask for the real way
        assert (await world.refund("MP0000000105", "RF105-2", 1_000)).json()["status"] == "PROCESSING"
        await world.settled()
        assert [n.refund.status for n in world.refund_notifications() if n.refund] == [
            RefundStatus.SUCCEEDED
        ] * 2


async def test_the_sync_success_switch_answers_success_once(world: World) -> None:
    await world.paid_order("MP0000000106")
    await arm(world, "sync_success")
    assert (await world.refund("MP0000000106", "RF106-1", 1_000)).json()["status"] == "SUCCESS"
    assert (await world.refund("MP0000000106", "RF106-2", 1_000)).json()["status"] == "PROCESSING"


async def test_a_test_can_finish_a_refund_at_once(world: World) -> None:
    await world.paid_order("MP0000000107")
    await arm(world, "closed", delay_s=3600)
    await world.refund("MP0000000107", "RF107", 1_000)
    finished = await world.http.post("/sim/refunds/finish", json={"out_refund_no": "RF107"})
    assert (finished.status_code, finished.json()["status"]) == (200, "CLOSED")
    again = await world.http.post("/sim/refunds/finish", json={"out_refund_no": "RF107"})
    assert again.status_code == 409
    unknown = await world.http.post("/sim/refunds/finish", json={"out_refund_no": "RF-NONE"})
    assert unknown.status_code == 404
    await asyncio.wait_for(world.sim.notifier.settle(), timeout=5)
    assert [n.event_type for n in world.refund_notifications()] == ["REFUND.CLOSED"]
    attempts = (await world.http.get("/sim/notifications", params={"out_trade_no": "MP0000000107"})).json()
    refund_attempts = [a for a in attempts if a["out_refund_no"] == "RF107"]
    assert [(a["event_type"], a["delivery"], a["attempt"], a["acknowledged"]) for a in refund_attempts] == [
        ("REFUND.CLOSED", 1, 1, True)
    ]


async def test_refunds_in_flight_survive_a_restart(keys: WechatKeyPaths, tmp_path: Path) -> None:
    db_path = tmp_path / "sim.sqlite3"
    async with running(keys, db_path) as before:
        await before.paid_order("MP0000000108")
        await arm(before, "abnormal", delay_s=60)
        assert (await before.refund("MP0000000108", "RF108", 2_000)).json()["status"] == "PROCESSING"
    async with running(keys, db_path) as after:
        await after.settled()
        assert any(0 < wait <= 60 for wait in after.waits.waits)  # the time left, not a new delay
        assert (await after.refund_now("RF108"))["status"] == "ABNORMAL"
        assert [n.event_type for n in after.refund_notifications()] == ["REFUND.ABNORMAL"]


# --- what the real gateway answers when the request itself is wrong --------------------------------


async def test_a_wrong_serial_no_is_401_sign_error_in_wechats_body(world: World) -> None:
    path = f"/v3/pay/transactions/out-trade-no/MP0000000110?mchid={MCHID}"
    headers = signed_headers(world.keys, "GET", path)
    serial = read_text(world.keys.merchant_serial_no)
    headers["Authorization"] = headers["Authorization"].replace(f'serial_no="{serial}"', 'serial_no="0BAD"')
    refused = await world.http.get(path, headers=headers)
    assert refused.status_code == 401
    body = refused.json()
    assert body["code"] == "SIGN_ERROR" and isinstance(body["message"], str) and body["message"]
    assert refused.headers["Wechatpay-Signature-Type"] == "WECHATPAY2-SHA256-RSA2048"  # signed too


async def test_the_same_out_trade_no_with_another_amount_is_403_out_trade_no_used(world: World) -> None:
    first = await world.call("POST", "/v3/pay/transactions/native", order_body("MP0000000111"))
    again = await world.call("POST", "/v3/pay/transactions/native", order_body("MP0000000111"))
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json() == first.json()  # the same prepay answer (code_url)
    other = await world.call("POST", "/v3/pay/transactions/native", order_body("MP0000000111", 12_600))
    assert (other.status_code, other.json()["code"]) == (403, "OUT_TRADE_NO_USED")


async def test_refunds_beyond_the_paid_total_or_of_unknown_orders(world: World) -> None:
    await world.paid_order("MP0000000112")
    assert (await world.refund("MP0000000112", "RF112-1", 10_000)).status_code == 200
    first = await world.refund_now("RF112-1")
    too_much = await world.refund("MP0000000112", "RF112-2", 2_501)
    assert (too_much.status_code, too_much.json()["code"]) == (400, "INVALID_REQUEST")
    replay = await world.refund("MP0000000112", "RF112-1", 10_000)
    assert (replay.status_code, replay.json()["refund_id"]) == (200, first["refund_id"])
    unknown = await world.refund("MP0000000199", "RF199", 100)
    assert (unknown.status_code, unknown.json()["code"]) == (404, "RESOURCE_NOT_EXISTS")


# --- the merchant's balance ------------------------------------------------------------------------


async def test_the_balance_switch_refuses_new_refunds_with_not_enough_until_turned_off(world: World) -> None:
    await world.paid_order("MP0000000113")
    accepted = await world.refund("MP0000000113", "RF113-1", 2_000)
    await arm(world, "not_enough", count=100)

    refused = await world.refund("MP0000000113", "RF113-2", 3_000)
    assert (refused.status_code, refused.json()["code"]) == (403, "NOT_ENOUGH")
    assert (await world.refund("MP0000000113", "RF113-2", 3_000)).status_code == 403  # still low
    missing = await world.call("GET", f"{REFUNDS}/RF113-2")
    assert (missing.status_code, missing.json()["code"]) == (404, "RESOURCE_NOT_EXISTS")  # nothing kept
    replay = await world.refund("MP0000000113", "RF113-1", 2_000)  # an existing refund is answered
    assert (replay.status_code, replay.json()["refund_id"]) == (200, accepted.json()["refund_id"])
    too_much = await world.refund("MP0000000113", "RF113-3", 12_000)  # the rules come first
    assert too_much.json()["code"] == "INVALID_REQUEST"

    assert (await world.http.delete("/sim/faults")).status_code == 204  # the balance was topped up
    later = await world.refund("MP0000000113", "RF113-2", 3_000)
    assert (later.status_code, later.json()["status"]) == (200, "PROCESSING")
    await world.settled()
    assert (await world.refund_now("RF113-2"))["status"] == "SUCCESS"
