"""The WeChat Pay simulator's own rules: keys, request signatures, idempotency, expiry, refunds,
persistence, signed + encrypted notifications that carry the order's trace, and WeChat's resend
schedule (no network: the app runs on httpx's ASGI transport and notifications go to a mock
transport). The refund lifecycle has its own module, test_wechatpay_sim_refunds."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from wechatpayv3.utils import build_authorization, load_private_key

from infra.simulators.delivery import HttpxPost
from infra.simulators.wechatpay.app import build_asgi_app
from infra.simulators.wechatpay.faults import FaultBook, validate
from infra.simulators.wechatpay.gateway import SYNCHRONOUS_SUCCESS, Merchant, SimulatedGateway, WechatError
from infra.simulators.wechatpay.keys import APPID, MCHID, WechatKeyPaths, ensure_keys, read_text
from infra.simulators.wechatpay.notifier import RESEND_INTERVALS_S, Notice, Notifier, delivery_schedule
from infra.simulators.wechatpay.signing import (
    MerchantVerifier,
    PlatformSigner,
    SignatureRefused,
    encrypt_resource,
)
from infra.simulators.wechatpay.simulator import SimulatorConfig, WechatPaySimulator
from infra.simulators.wechatpay.store import SimStore
from services.payment_core.adapters.channels.ports import TradeState
from services.payment_core.adapters.channels.wechatpay import WechatPayChannel, WechatPayCredentials
from services.runtime.money import Money

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> WechatKeyPaths:
    return ensure_keys(tmp_path_factory.mktemp("keys"))


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2024, 3, 21, 5, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def order_body(out_trade_no: str, total_fen: int = 12_500, **extra: object) -> dict[str, object]:
    return {
        "appid": APPID,
        "mchid": MCHID,
        "description": "门诊缴费-西药费",
        "out_trade_no": out_trade_no,
        "notify_url": "https://his.hospital.example/notify",
        "amount": {"total": total_fen, "currency": "CNY"},
        **extra,
    }


def refund_body(out_refund_no: str, refund_fen: int, total_fen: int = 12_500) -> dict[str, object]:
    amount = {"refund": refund_fen, "total": total_fen, "currency": "CNY"}
    return {"out_trade_no": "MP0000000001", "out_refund_no": out_refund_no, "amount": amount}


def paid_gateway(clock: Clock | None = None) -> SimulatedGateway:
    gateway = SimulatedGateway(SimStore(Path(":memory:")), Merchant(MCHID, APPID), clock or Clock())
    gateway.place_order("NATIVE", order_body("MP0000000001"), None)
    gateway.patient_pays("MP0000000001", lambda: False)
    return gateway


def test_keys_are_made_once_even_by_racing_processes(tmp_path: Path) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(ensure_keys, [tmp_path / "keys"] * 4))
    paths = results[0]
    assert all(result == paths for result in results) and paths.is_complete()
    merchant = serialization.load_pem_private_key(paths.merchant_private_key.read_bytes(), password=None)
    public = merchant.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert public == paths.merchant_public_key.read_bytes()
    assert len(read_text(paths.apiv3_key)) == 32 and read_text(paths.public_key_id).startswith(
        "PUB_KEY_ID_0114"
    )
    assert (paths.merchant_private_key.stat().st_mode & 0o777) == 0o600
    before = paths.apiv3_key.read_text()
    assert ensure_keys(tmp_path / "keys").apiv3_key.read_text() == before


def test_the_verifier_accepts_what_the_sdk_signs_and_nothing_else(keys: WechatKeyPaths) -> None:
    public = serialization.load_pem_public_key(keys.merchant_public_key.read_bytes())
    verifier = MerchantVerifier(MCHID, public)  # type: ignore[arg-type]
    private = load_private_key(keys.merchant_private_key.read_text())
    body = json.dumps(order_body("MP0000000001"))
    path = "/v3/pay/transactions/native"
    authorization = build_authorization(path, "POST", MCHID, "SERIAL", private, data=body)

    verifier.verify("POST", path, body.encode(), authorization)
    for method, target, sent in [
        ("POST", path, body.encode() + b" "),
        ("POST", path + "?x=1", body.encode()),
        ("GET", path, body.encode()),
    ]:
        with pytest.raises(SignatureRefused):
            verifier.verify(method, target, sent, authorization)
    with pytest.raises(SignatureRefused):
        verifier.verify("POST", path, body.encode(), authorization.replace(f'mchid="{MCHID}"', 'mchid="1"'))
    stale = authorization.replace(f'timestamp="{int(time.time())}"', f'timestamp="{int(time.time()) - 600}"')
    with pytest.raises(SignatureRefused):
        verifier.verify("POST", path, body.encode(), stale)


def test_the_verifier_refuses_a_request_signed_under_another_serial_no(keys: WechatKeyPaths) -> None:
    public = serialization.load_pem_public_key(keys.merchant_public_key.read_bytes())
    verifier = MerchantVerifier(MCHID, public, "SERIAL")  # type: ignore[arg-type]
    private = load_private_key(keys.merchant_private_key.read_text())
    path = "/v3/pay/transactions/out-trade-no/MP0000000001?mchid=" + MCHID
    verifier.verify("GET", path, b"", build_authorization(path, "GET", MCHID, "SERIAL", private))
    with pytest.raises(SignatureRefused, match="serial_no"):
        verifier.verify("GET", path, b"", build_authorization(path, "GET", MCHID, "OTHER", private))


def test_the_same_out_trade_no_replays_and_other_key_parameters_are_refused() -> None:
    gateway = SimulatedGateway(SimStore(Path(":memory:")), Merchant(MCHID, APPID), Clock())
    first = gateway.place_order("NATIVE", order_body("MP0000000002"), None)
    replay = gateway.place_order("NATIVE", order_body("MP0000000002"), None)
    assert (replay.code_url, replay.prepay_id) == (first.code_url, first.prepay_id)
    for changed in (
        order_body("MP0000000002", total_fen=12_600),
        {**order_body("MP0000000002"), "description": "门诊缴费-检查费"},
    ):
        with pytest.raises(WechatError) as refused:
            gateway.place_order("NATIVE", changed, None)
        assert (refused.value.status, refused.value.code) == (403, "OUT_TRADE_NO_USED")
    with pytest.raises(WechatError) as other_type:
        gateway.place_order("JSAPI", order_body("MP0000000002", payer={"openid": "oUpF8u"}), None)
    assert other_type.value.code == "OUT_TRADE_NO_USED"
    with pytest.raises(WechatError, match="PARAM_ERROR"):
        gateway.place_order("NATIVE", order_body("MP0000000003", total_fen=0), None)
    with pytest.raises(WechatError, match="PARAM_ERROR"):
        gateway.place_order("NATIVE", order_body("bad no!"), None)


def test_an_order_past_time_expire_reads_closed_and_cannot_be_paid() -> None:
    clock = Clock()
    gateway = SimulatedGateway(SimStore(Path(":memory:")), Merchant(MCHID, APPID), clock)
    expire = (clock.now + timedelta(minutes=15)).isoformat()
    gateway.place_order("NATIVE", order_body("MP0000000004", time_expire=expire), None)
    clock.now += timedelta(minutes=16)
    assert gateway.order("MP0000000004").trade_state == "CLOSED"
    with pytest.raises(WechatError, match="ORDERCLOSED"):
        gateway.patient_pays("MP0000000004", lambda: False)
    paid, newly = gateway.patient_pays("MP0000000004", lambda: True)  # late success after close
    assert (paid.trade_state, newly) == ("SUCCESS", True)


def test_refunds_are_idempotent_and_bounded_by_the_paid_total() -> None:
    gateway = paid_gateway()
    first, _, created = gateway.refund(refund_body("RF1", 5_000), None, lambda: SYNCHRONOUS_SUCCESS)
    replay, _, created_again = gateway.refund(refund_body("RF1", 5_000), None, lambda: SYNCHRONOUS_SUCCESS)
    assert (created, created_again, replay.refund_id) == (True, False, first.refund_id)
    with pytest.raises(WechatError, match="INVALID_REQUEST"):
        gateway.refund(refund_body("RF1", 4_000), None, lambda: SYNCHRONOUS_SUCCESS)
    with pytest.raises(WechatError, match="PARAM_ERROR"):
        gateway.refund(refund_body("RF2", 1_000, total_fen=99_999), None, lambda: SYNCHRONOUS_SUCCESS)
    with pytest.raises(WechatError) as too_much:  # the real gateway's answer: not NOT_ENOUGH
        gateway.refund(refund_body("RF3", 7_501), None, lambda: SYNCHRONOUS_SUCCESS)
    assert (too_much.value.status, too_much.value.code) == (400, "INVALID_REQUEST")
    assert too_much.value.message == "申请退款金额超过订单可退金额"
    gateway.refund(refund_body("RF4", 7_500), None, lambda: SYNCHRONOUS_SUCCESS)
    assert gateway.order("MP0000000001").trade_state == "REFUND"


@pytest.mark.parametrize("key", ["out_trade_no", "transaction_id"])
def test_a_refund_of_an_order_the_gateway_never_saw_is_resource_not_exists(key: str) -> None:
    gateway = paid_gateway()
    amount = {"refund": 1, "total": 12_500, "currency": "CNY"}
    body = {key: "MP9999999999", "out_refund_no": "RF1", "amount": amount}
    with pytest.raises(WechatError) as missing:
        gateway.refund(body, None, lambda: SYNCHRONOUS_SUCCESS)
    assert (missing.value.status, missing.value.code) == (404, "RESOURCE_NOT_EXISTS")
    with pytest.raises(WechatError, match="ORDER_NOT_EXIST"):  # the order query keeps its own code
        gateway.order("MP9999999999")


def test_state_survives_a_restart(tmp_path: Path) -> None:
    store = SimStore(tmp_path / "sim.sqlite3")
    SimulatedGateway(store, Merchant(MCHID, APPID), Clock()).place_order(
        "NATIVE", order_body("MP0000000005"), None
    )
    store.close()
    reopened = SimulatedGateway(SimStore(tmp_path / "sim.sqlite3"), Merchant(MCHID, APPID), Clock())
    assert reopened.order("MP0000000005").total_fen == 12_500


@pytest.mark.parametrize(
    ("operation", "mode", "allowed"),
    [
        ("place_order", "timeout", True),
        ("trade_bill", "timeout", True),
        ("pay_notify", "duplicate", True),
        ("close", "late_success_after_close", True),
        ("refund", "duplicate", False),
        ("pay_notify", "http_500", False),
        ("pay", "lost", False),
        ("refund", "processing", True),
        ("refund", "abnormal", True),
        ("refund", "closed", True),
        ("refund", "sync_success", True),
        ("refund", "not_enough", True),
        ("query", "frequency_limited", True),
        ("place_order", "not_enough", False),
        ("query", "abnormal", False),
        ("refund_notify", "closed", False),
    ],
)
def test_fault_combinations(operation: str, mode: str, allowed: bool) -> None:
    assert (validate(operation, mode, 1, 1.0) is None) is allowed


class Captured:
    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(200, json={"code": "SUCCESS", "message": "成功"})


@pytest.fixture
async def sim(keys: WechatKeyPaths, tmp_path: Path) -> AsyncIterator[tuple[WechatPaySimulator, Captured]]:
    captured = Captured()
    config = SimulatorConfig(
        keys.directory, tmp_path / "sim.sqlite3", notify_transport=httpx.MockTransport(captured)
    )
    simulator = WechatPaySimulator(config)
    await simulator.start()
    try:
        yield simulator, captured
    finally:
        await simulator.stop()


def signed_headers(keys: WechatKeyPaths, method: str, path: str, body: str = "") -> dict[str, str]:
    private = load_private_key(keys.merchant_private_key.read_text())
    serial = read_text(keys.merchant_serial_no)
    authorization = build_authorization(path, method, MCHID, serial, private, data=body or None)
    return {"Authorization": authorization, "Content-Type": "application/json", "traceparent": TRACEPARENT}


async def test_a_payment_notification_is_signed_encrypted_and_continues_the_trace(
    sim: tuple[WechatPaySimulator, Captured], keys: WechatKeyPaths
) -> None:
    simulator, captured = sim
    transport = httpx.ASGITransport(app=build_asgi_app(simulator))
    async with httpx.AsyncClient(transport=transport, base_url="http://wechatpay.sim") as client:
        body = json.dumps(order_body("MP0000000006"))
        headers = signed_headers(keys, "POST", "/v3/pay/transactions/native", body)
        placed = await client.post("/v3/pay/transactions/native", content=body, headers=headers)
        assert placed.status_code == 200 and placed.json()["code_url"].startswith("weixin://wxpay/bizpayurl")
        assert placed.headers["Wechatpay-Signature-Type"] == "WECHATPAY2-SHA256-RSA2048"
        assert (await client.post("/sim/pay", json={"out_trade_no": "MP0000000006"})).status_code == 200
    await simulator.notifier.settle()

    (delivery,) = captured.requests
    assert delivery.headers["traceparent"].split("-")[1] == TRACEPARENT.split("-")[1]
    envelope = json.loads(delivery.content)
    assert (envelope["event_type"], envelope["resource"]["algorithm"]) == (
        "TRANSACTION.SUCCESS",
        "AEAD_AES_256_GCM",
    )
    assert "MP0000000006" not in delivery.content.decode()  # the resource travels encrypted
    channel = WechatPayChannel(WechatPayCredentials.from_key_dir(keys.directory), "http://wechatpay.sim")
    notification = channel.parse_notification(dict(delivery.headers), delivery.content)
    assert notification is not None and notification.trade is not None
    assert (notification.trade.state, notification.trade.amount) == (TradeState.PAID, Money(12_500))


@pytest.mark.parametrize(
    ("apiv3_key", "accepted"), [(None, True), ("0123456789abcdef0123456789abcdef", False)]
)
def test_a_notification_decrypts_only_with_the_merchants_apiv3_key(
    keys: WechatKeyPaths, apiv3_key: str | None, accepted: bool
) -> None:
    platform_key = serialization.load_pem_private_key(keys.platform_private_key.read_bytes(), password=None)
    signer = PlatformSigner(platform_key, read_text(keys.public_key_id))  # type: ignore[arg-type]
    resource = {"out_trade_no": "MP0000000007", "trade_state": "SUCCESS", "amount": {"total": 100}}
    sealed = encrypt_resource(apiv3_key or read_text(keys.apiv3_key), json.dumps(resource), "transaction")
    envelope = {
        "id": "EV-1",
        "event_type": "TRANSACTION.SUCCESS",
        "resource_type": "encrypt-resource",
        "resource": sealed,
    }
    body = json.dumps(envelope).encode()
    channel = WechatPayChannel(WechatPayCredentials.from_key_dir(keys.directory), "http://wechatpay.sim")
    assert (channel.parse_notification(signer.headers_for(body), body) is not None) is accepted


# --- WeChat's resend schedule ------------------------------------------------------------------


def test_the_resend_schedule_is_wechats_24h4m_and_scales() -> None:
    minute, hour = 60, 3600
    assert delivery_schedule() == (
        0, 15, 15, 30, 3 * minute, 10 * minute, 20 * minute, 30 * minute, 30 * minute, 30 * minute,
        hour, 3 * hour, 3 * hour, 3 * hour, 6 * hour, 6 * hour,
    )  # fmt: skip
    assert sum(RESEND_INTERVALS_S) == 24 * hour + 4 * minute
    assert delivery_schedule(0.01)[:4] == pytest.approx((0.0, 0.15, 0.15, 0.3))
    with pytest.raises(ValueError):
        delivery_schedule(0)
    config = SimulatorConfig(Path("keys"), Path("sim.sqlite3"), time_scale=0.01)
    assert config.delivery_schedule() == delivery_schedule(0.01)


class InstantWaits:
    """The notifier's sleep in tests: records every wait and returns at once."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


class Answers:
    """A merchant endpoint that answers from a script (a status, or None for no answer), then 500."""

    def __init__(self, *script: int | None) -> None:
        self.script = list(script)
        self.requests: list[httpx.Request] = []
        self.reached = asyncio.Event()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.reached.set()
        status = self.script.pop(0) if self.script else 500
        if status is None:
            raise httpx.ReadTimeout("no answer within 5 s", request=request)
        return httpx.Response(status)


def notice(out_trade_no: str = "MP0000000009") -> Notice:
    resource = {"out_trade_no": out_trade_no, "trade_state": "SUCCESS"}
    return Notice(
        "TRANSACTION.SUCCESS", "支付成功", "transaction", resource, "https://his/n", out_trade_no, None, None
    )


async def notifier_for(
    keys: WechatKeyPaths, answers: Answers, waits: InstantWaits, store: SimStore
) -> Notifier:
    platform_key = serialization.load_pem_private_key(keys.platform_private_key.read_bytes(), password=None)
    signer = PlatformSigner(platform_key, read_text(keys.public_key_id))  # type: ignore[arg-type]
    post = HttpxPost(httpx.MockTransport(answers))
    return Notifier(post, signer, read_text(keys.apiv3_key), store, FaultBook(), Clock(), sleep=waits)


async def test_an_unacknowledged_notification_is_resent_on_the_schedule_then_given_up(
    keys: WechatKeyPaths,
) -> None:
    answers, waits, store = Answers(), InstantWaits(), SimStore(Path(":memory:"))
    notifier = await notifier_for(keys, answers, waits, store)
    notifier.send(notice(), "pay_notify")
    await asyncio.wait_for(notifier.settle(), timeout=5)

    attempts = store.deliveries("MP0000000009")
    assert waits.waits == list(delivery_schedule())  # the whole schedule, and nothing after it
    assert [a.attempt for a in attempts] == list(range(1, 17))
    assert {(a.delivery, a.status_code, a.acknowledged) for a in attempts} == {(1, 500, False)}
    assert len({a.event_id for a in attempts}) == 1 and len(answers.requests) == 16


async def test_a_notification_is_resent_until_acknowledged_and_no_answer_counts_as_a_failure(
    keys: WechatKeyPaths,
) -> None:
    answers, waits, store = Answers(503, None, 204), InstantWaits(), SimStore(Path(":memory:"))
    notifier = await notifier_for(keys, answers, waits, store)
    notifier.send(notice(), "pay_notify")
    await asyncio.wait_for(notifier.settle(), timeout=5)

    attempts = store.deliveries("MP0000000009")
    assert [(a.attempt, a.status_code, a.acknowledged) for a in attempts] == [
        (1, 503, False),
        (2, None, False),
        (3, 204, True),
    ]
    assert attempts[1].error is not None and "ReadTimeout" in attempts[1].error
    assert waits.waits == [0.0, 15.0, 15.0]


async def test_stopping_the_simulator_stops_the_resends(keys: WechatKeyPaths, tmp_path: Path) -> None:
    answers = Answers()  # never acknowledges: the next resend would come 15 s later
    config = SimulatorConfig(
        keys.directory, tmp_path / "sim.sqlite3", notify_transport=httpx.MockTransport(answers)
    )
    simulator = WechatPaySimulator(config)
    await simulator.start()
    notifier = simulator.notifier
    transport = httpx.ASGITransport(app=build_asgi_app(simulator))
    async with httpx.AsyncClient(transport=transport, base_url="http://wechatpay.sim") as client:
        body = json.dumps(order_body("MP0000000010"))
        headers = signed_headers(keys, "POST", "/v3/pay/transactions/native", body)
        assert (await client.post("/v3/pay/transactions/native", content=body, headers=headers)).is_success
        assert (await client.post("/sim/pay", json={"out_trade_no": "MP0000000010"})).is_success
    await asyncio.wait_for(answers.reached.wait(), timeout=5)
    assert notifier.in_flight == 1  # waiting for its first resend

    await asyncio.wait_for(simulator.stop(), timeout=2)
    assert notifier.in_flight == 0 and len(answers.requests) == 1
    notifier.send(notice(), "pay_notify")  # a stopped simulator sends nothing more
    assert notifier.in_flight == 0
