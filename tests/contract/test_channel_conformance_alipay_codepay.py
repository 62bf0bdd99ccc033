"""Alipay code payments (付款码, alipay.trade.pay with scene bar_code) through the unmodified
python-alipay-sdk against the Alipay simulator: paid at once; 10003 while the patient confirms,
then settled by a query; cancelled (撤销, the port's `reverse`) when it cannot be confirmed."""

from __future__ import annotations

import logging

import pytest

from services.payment_core.adapters.channels.ports import ChannelRejected, RejectionReason, TradeState
from services.runtime.masking import PatientIdentifier
from services.runtime.money import Money
from tests.contract.test_channel_conformance import AlipayWorld, alipay, alipay_world, new_out_trade_no

__all__ = ["alipay", "alipay_world"]  # the session's simulator, shared with the main suite's fixtures
CODE = PatientIdentifier("286543210987654321", kind="payment_code")


async def test_a_code_payment_is_paid_at_once(alipay: AlipayWorld) -> None:
    channel, out_trade_no = alipay.channel(), new_out_trade_no()
    paid = await channel.pay_by_code(out_trade_no, Money(2_350), "门诊缴费", CODE)
    assert (paid.state, paid.amount) == (TradeState.PAID, Money(2_350))
    assert paid.transaction_id and paid.success_time is not None
    assert (await channel.query(out_trade_no)).state is TradeState.PAID


async def test_a_code_payment_waits_for_the_patient_then_a_query_finds_it_paid(alipay: AlipayWorld) -> None:
    channel, out_trade_no = alipay.channel(), new_out_trade_no()
    await alipay.arm("pay", "user_paying")
    waiting = await channel.pay_by_code(out_trade_no, Money(800), "门诊缴费", CODE)
    assert waiting.state is TradeState.PAYING
    # WAIT_BUYER_PAY reads as not paid yet, for a QR trade and a code payment alike: not final.
    assert (await channel.query(out_trade_no)).state in (TradeState.PAYING, TradeState.NOT_PAID)
    confirmed = await alipay.control.post("/sim/pay", json={"out_trade_no": out_trade_no})
    assert confirmed.status_code == 200, confirmed.text
    assert (await channel.query(out_trade_no)).state is TradeState.PAID


async def test_a_code_payment_that_is_not_confirmed_is_reversed_and_takes_nothing(
    alipay: AlipayWorld,
) -> None:
    channel, out_trade_no = alipay.channel(), new_out_trade_no()
    await alipay.arm("pay", "user_paying")
    await channel.pay_by_code(out_trade_no, Money(800), "门诊缴费", CODE)
    await channel.reverse(out_trade_no)
    await channel.reverse(out_trade_no)  # again: a no-op
    assert (await channel.query(out_trade_no)).state is TradeState.CLOSED


async def test_a_code_not_shaped_as_an_alipay_code_is_refused(alipay: AlipayWorld) -> None:
    with pytest.raises(ChannelRejected) as refused:
        await alipay.channel().pay_by_code(
            new_out_trade_no(),
            Money(800),
            "门诊缴费",
            PatientIdentifier("134567890123456789", kind="payment_code"),
        )
    assert refused.value.code == "ACQ.PAYMENT_AUTH_CODE_INVALID"
    assert refused.value.reason is not RejectionReason.NOT_FOUND


async def test_the_payment_code_never_reaches_a_log_in_clear(
    alipay: AlipayWorld, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """A guard: the SDK's own DEBUG console logger prints signed requests when built verbose; with
    it silenced and never verbose, no payment-core log or stream carries the code."""
    caplog.set_level(logging.DEBUG)
    await alipay.channel().pay_by_code(new_out_trade_no(), Money(800), "门诊缴费", CODE)
    printed = capfd.readouterr()
    assert CODE.reveal() not in printed.out + printed.err
    # The simulator (the stand-in for Alipay, served in this process with an access log) sees the
    # code as the real gateway does; what payment-core's side logs must not.
    ours = [r.getMessage() for r in caplog.records if not r.name.startswith(("uvicorn", "alipay_sim"))]
    assert not any(CODE.reveal() in message for message in ours)
