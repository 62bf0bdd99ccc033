"""A discharge whose surplus refund the channel could not take at first, through the real pieces:
payment-core in-process with its janitor running, the real WechatPayChannel (wechatpayv3) and the
WeChat Pay simulator with its fault switch. The refund stays PENDING, is sent again on the schedule
with the same out_refund_no, and completes by itself; the deposit adds up all along."""

from __future__ import annotations

from medpay.payment.v1 import payment_pb2 as pb

from services.runtime.money import Money
from tests.service import test_payment_core as base
from tests.service.test_payment_core_deposit_channel import discharge
from tests.service.test_payment_core_deposits import DEPOSIT, top_up
from tests.service.test_payment_core_wechat_refunds import World, world

database = base.database
__all__ = ["database", "world"]
S = pb.OrderStatus


async def test_a_discharge_whose_surplus_refund_failed_at_the_channel_finishes_on_the_schedule(
    world: World,
) -> None:
    paying = await world.payment.TopUpDeposit(top_up(200_000, pb.CHANNEL_WECHAT_PAY))
    paid = await world.sim.post("/sim/pay", json={"out_trade_no": paying.payment.out_trade_no})
    assert paid.status_code == 200, paid.text
    await world.until(paying.order_id, lambda o: o.status == S.ORDER_STATUS_SETTLED)
    await world.arm("http_500", count=2)  # the gateway fails the first two refund calls

    done = await world.payment.SettleDischarge(discharge(150_000))

    assert done.order.status == S.ORDER_STATUS_SETTLED and done.shortfall_fen == 0
    [surplus] = done.deposit_refunds
    assert (surplus.order_id, surplus.cash_fen) == (paying.order_id, 50_000)
    assert surplus.status == pb.REFUND_STATUS_PENDING  # not issued yet: sent again later
    assert done.account.balance_fen == 0 and done.account.refunded_fen == 50_000

    top_up_order = await world.until(
        paying.order_id, lambda o: [r.status for r in o.refunds] == [pb.REFUND_STATUS_SUCCEEDED]
    )
    assert await world.faults_left() == 0  # both failed calls were made, then the one that landed
    assert top_up_order.status == S.ORDER_STATUS_SETTLED  # what the stay used is kept
    book = await world.gateway_book(paying.payment.out_trade_no)
    assert [(r["out_refund_no"], r["refund_fen"]) for r in book["refunds"]] == [
        (top_up_order.refunds[0].out_refund_no, 50_000)
    ]  # one refund at the gateway
    again = await world.payment.SettleDischarge(discharge(150_000))
    assert [r.status for r in again.deposit_refunds] == [pb.REFUND_STATUS_SUCCEEDED]
    deposit = again.account
    assert (deposit.balance_fen, deposit.used_fen, deposit.refunded_fen) == (0, 150_000, 50_000)
    async with world.core.orders._deps.uow() as uow:
        balances = await uow.ledger.trial_balance()
    assert sum(b.fen for b in balances.values()) == 0
    assert balances[DEPOSIT] == Money(0) and balances["revenue:discharge"] == Money(-150_000)
    assert balances["asset:channel_clearing:WECHAT_PAY"] == Money(150_000)
