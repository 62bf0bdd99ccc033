"""The conformance suite, continued: the payment shapes where the payer acts in their own app —
JSAPI (the payer's mini-program / official-account page pays a prepay_id with signed front-end
parameters) and code payments (付款码: the cashier scans the patient's code; paid at once, or
PAYING while the patient confirms, then paid, failed, or reversed no sooner than the channel allows).

The same harness shape for the in-memory fake and for WeChat Pay (the real SDK against the
simulator, whose clock runs 1000 times faster: its 15 s reverse rule lasts 15 ms)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from services.payment_core.adapters.channels import fake as fake_channel
from services.payment_core.adapters.channels.ports import (
    ChannelRejected,
    JsapiPayParams,
    PaymentChannel,
    RejectionReason,
    TradeState,
)
from services.runtime.masking import PatientIdentifier
from services.runtime.money import Money
from tests.contract.test_channel_conformance import (
    REVERSE_NOT_BEFORE_S,
    WechatWorld,
    in_fifteen_minutes,
    new_out_trade_no,
    wechat,
    wechat_world,
)

__all__ = ["wechat", "wechat_world"]  # the session's simulator, shared with the main suite's fixtures
CODE = PatientIdentifier("134567890123456789", kind="payment_code")
OPENID = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"


@dataclass
class PayerHarness:
    channel: PaymentChannel
    notify_url: Callable[[str], str]
    # The patient pays a JSAPI order in their app; returns the channel's notification.
    pays_in_app: Callable[[str], Awaitable[tuple[dict[str, str], bytes]]]
    # The next code payment asks the patient for a password (PAYING until they act).
    next_code_waits: Callable[[], Awaitable[None]]
    patient_confirms: Callable[[str], Awaitable[None]]
    patient_cancels: Callable[[str], Awaitable[None]]
    # Time passes beyond the channel's "no reverse sooner than" rule (WeChat Pay: 15 s).
    reverse_allowed: Callable[[], Awaitable[None]]
    pay_sign_is_valid: Callable[[JsapiPayParams], bool]


class Clock:
    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC).replace(microsecond=0) + self.offset


def fake_harness() -> PayerHarness:
    clock = Clock()
    fake = fake_channel.FakeChannel(clock=clock)

    async def pays_in_app(out_trade_no: str) -> tuple[dict[str, str], bytes]:
        return fake.patient_pays(out_trade_no)

    async def next_code_waits() -> None:
        fake.patient_needs_password()

    async def confirms(out_trade_no: str) -> None:
        fake.patient_pays(out_trade_no)

    async def cancels(out_trade_no: str) -> None:
        fake.patient_cancels(out_trade_no)

    async def reverse_allowed() -> None:
        clock.offset += fake_channel.REVERSE_NOT_BEFORE

    return PayerHarness(
        fake, lambda no: f"https://his.hospital.example/notify/{no}", pays_in_app, next_code_waits,
        confirms, cancels, reverse_allowed, fake.pay_sign_is_valid,
    )  # fmt: skip


def wechat_harness(world: WechatWorld) -> PayerHarness:
    channel = world.channel()
    merchant_key = serialization.load_pem_public_key((world.key_dir / "merchant_public_key.pem").read_bytes())
    assert isinstance(merchant_key, rsa.RSAPublicKey)

    async def pays_in_app(out_trade_no: str) -> tuple[dict[str, str], bytes]:
        response = await world.pay(out_trade_no)
        assert response.status_code == 200, response.text
        headers, body = (await world.inbox.wait_for(out_trade_no))[0]
        return dict(headers), body

    async def next_code_waits() -> None:
        await world.arm("codepay", "never", delay_s=0)

    async def confirms(out_trade_no: str) -> None:
        response = await world.pay(out_trade_no)
        assert response.status_code == 200, response.text

    async def cancels(out_trade_no: str) -> None:
        response = await world.control.post("/sim/codepay/cancel", json={"out_trade_no": out_trade_no})
        assert response.status_code == 200, response.text

    async def reverse_allowed() -> None:
        await asyncio.sleep(REVERSE_NOT_BEFORE_S * 0.001 + 0.05)  # the simulator's clock is 1000x

    def pay_sign_is_valid(params: JsapiPayParams) -> bool:
        """What the WeChat client checks: RSA-SHA256 by the merchant key over the four lines."""
        signed = f"{params.app_id}\n{params.time_stamp}\n{params.nonce_str}\n{params.package}\n"
        try:
            merchant_key.verify(
                base64.b64decode(params.pay_sign), signed.encode(), padding.PKCS1v15(), hashes.SHA256()
            )
        except (InvalidSignature, ValueError):
            return False
        return True

    return PayerHarness(
        channel, lambda no: f"{world.inbox_url}/notify/{no}", pays_in_app, next_code_waits, confirms,
        cancels, reverse_allowed, pay_sign_is_valid,
    )  # fmt: skip


@pytest.fixture(params=["fake", "wechatpay"])
async def harness(request: pytest.FixtureRequest, wechat: WechatWorld) -> AsyncIterator[PayerHarness]:
    if request.param == "fake":
        yield fake_harness()
        return
    payer = wechat_harness(wechat)
    try:
        yield payer
    finally:
        await payer.channel.aclose()  # type: ignore[attr-defined]


# ---- JSAPI -----------------------------------------------------------------------------------------


async def test_a_jsapi_order_is_paid_in_the_payers_app_with_signed_parameters(harness: PayerHarness) -> None:
    channel, out_trade_no = harness.channel, new_out_trade_no()
    notify_url = harness.notify_url(out_trade_no)
    placed = await channel.place_jsapi_order(
        out_trade_no, Money(12_500), "门诊缴费-西药费", notify_url, in_fifteen_minutes(), OPENID
    )
    assert placed.prepay_id
    replay = await channel.place_jsapi_order(
        out_trade_no, Money(12_500), "门诊缴费-西药费", notify_url, in_fifteen_minutes(), OPENID
    )
    assert replay.prepay_id == placed.prepay_id

    params = channel.jsapi_pay_params(placed.prepay_id)
    assert (params.package, params.sign_type) == (f"prepay_id={placed.prepay_id}", "RSA")
    assert params.app_id and params.time_stamp.isdigit() and 0 < len(params.nonce_str) <= 32
    assert harness.pay_sign_is_valid(params)
    for forged in (f"prepay_id={placed.prepay_id}x", "prepay_id=another"):
        assert not harness.pay_sign_is_valid(replace(params, package=forged))
    assert channel.jsapi_pay_params(placed.prepay_id).nonce_str != params.nonce_str

    assert (await channel.query(out_trade_no)).state is TradeState.NOT_PAID
    notification = channel.parse_notification(*await harness.pays_in_app(out_trade_no))
    assert notification is not None and notification.trade is not None
    assert (notification.trade.state, notification.trade.amount) == (TradeState.PAID, Money(12_500))
    assert (await channel.query(out_trade_no)).state is TradeState.PAID


# ---- code payments -----------------------------------------------------------------------------------


async def pay_by_code(harness: PayerHarness, out_trade_no: str, code: PatientIdentifier = CODE) -> TradeState:
    status = await harness.channel.pay_by_code(out_trade_no, Money(12_500), "门诊缴费-西药费", code)
    assert (status.out_trade_no, status.amount) == (out_trade_no, Money(12_500))
    return status.state


async def test_a_code_payment_is_paid_at_once_and_a_replay_takes_nothing_more(harness: PayerHarness) -> None:
    channel, out_trade_no = harness.channel, new_out_trade_no()
    answer = await channel.pay_by_code(out_trade_no, Money(12_500), "门诊缴费-西药费", CODE)
    assert answer.state is TradeState.PAID and answer.transaction_id and answer.success_time is not None
    replay = await channel.pay_by_code(out_trade_no, Money(12_500), "门诊缴费-西药费", CODE)
    assert (replay.state, replay.transaction_id) == (TradeState.PAID, answer.transaction_id)
    paid = await channel.query(out_trade_no)
    assert (paid.state, paid.transaction_id) == (TradeState.PAID, answer.transaction_id)


async def test_a_code_payment_waits_for_the_patient_then_is_paid(harness: PayerHarness) -> None:
    out_trade_no = new_out_trade_no()
    await harness.next_code_waits()
    assert await pay_by_code(harness, out_trade_no) is TradeState.PAYING
    assert (await harness.channel.query(out_trade_no)).state is TradeState.PAYING
    await harness.patient_confirms(out_trade_no)
    paid = await harness.channel.query(out_trade_no)
    assert paid.state is TradeState.PAID and paid.transaction_id


async def test_a_code_payment_the_patient_cancels_fails(harness: PayerHarness) -> None:
    out_trade_no = new_out_trade_no()
    await harness.next_code_waits()
    assert await pay_by_code(harness, out_trade_no) is TradeState.PAYING
    await harness.patient_cancels(out_trade_no)
    assert (await harness.channel.query(out_trade_no)).state is TradeState.FAILED


async def test_a_code_payment_is_reversed_only_once_the_channel_allows_it(harness: PayerHarness) -> None:
    channel, out_trade_no = harness.channel, new_out_trade_no()
    await harness.next_code_waits()
    assert await pay_by_code(harness, out_trade_no) is TradeState.PAYING
    with pytest.raises(ChannelRejected) as too_soon:
        await channel.reverse(out_trade_no)
    assert too_soon.value.reason is RejectionReason.INVALID_REQUEST
    assert (await channel.query(out_trade_no)).state is TradeState.PAYING

    await harness.reverse_allowed()
    await channel.reverse(out_trade_no)
    await channel.reverse(out_trade_no)  # again: nothing more
    reversed_ = await channel.query(out_trade_no)
    assert (reversed_.state, reversed_.channel_state) == (TradeState.CLOSED, "REVOKED")


async def test_reversing_a_paid_code_payment_gives_the_money_back(harness: PayerHarness) -> None:
    channel, out_trade_no = harness.channel, new_out_trade_no()
    assert await pay_by_code(harness, out_trade_no) is TradeState.PAID
    await harness.reverse_allowed()
    await channel.reverse(out_trade_no)
    assert (await channel.query(out_trade_no)).state is TradeState.CLOSED


@pytest.mark.parametrize("code", ["13456789012345678", "284567890123456789", "164567890123456789"])
async def test_a_code_not_shaped_as_a_payment_code_is_refused_and_nothing_kept(
    harness: PayerHarness, code: str
) -> None:
    out_trade_no = new_out_trade_no()
    with pytest.raises(ChannelRejected) as refused:
        await pay_by_code(harness, out_trade_no, PatientIdentifier(code, kind="payment_code"))
    assert refused.value.reason is RejectionReason.INVALID_REQUEST
    assert code not in str(refused.value)
    with pytest.raises(ChannelRejected) as missing:
        await harness.channel.query(out_trade_no)
    assert missing.value.reason is RejectionReason.NOT_FOUND


async def test_only_a_code_payment_is_reversed(harness: PayerHarness) -> None:
    out_trade_no = new_out_trade_no()
    await harness.channel.place_order(
        out_trade_no, Money(12_500), "门诊缴费-西药费", harness.notify_url(out_trade_no), in_fifteen_minutes()
    )
    await harness.reverse_allowed()
    with pytest.raises(ChannelRejected) as refused:
        await harness.channel.reverse(out_trade_no)
    assert refused.value.reason is RejectionReason.INVALID_REQUEST
