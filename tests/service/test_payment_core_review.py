"""Money-safety review of payment-core: each test showed a real bug before its fix.
Same in-process harness as test_payment_core (real gRPC server, FakeChannel, FakeInsurance)."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import timedelta

import grpc
import pytest
from medpay.payment.v1 import payment_pb2 as pb

from services.payment_core.adapters.insurance import InsurerSettlement, InsurerStatus
from services.runtime.errors import InsurerRejected, InsurerUnavailable, OutcomeUnknown
from tests.service import test_payment_core as base
from tests.service.test_payment_core import Harness, insured, pay, settled_order

# The fixtures of the existing harness, shared rather than copied.
database = base.database
harness = base.harness


async def test_a_refused_settlement_whose_answer_was_lost_is_still_compensated(harness: Harness) -> None:
    insurer = harness.insurance
    real_settle = insurer.settle

    async def refused_but_reply_lost(request_id: str, settlement_id: str) -> InsurerSettlement:
        # insurance-adapter got the insurer's refusal and recorded the settlement FAILED
        # (SettlementHandlers._send_settlement -> record_refused); its reply to payment-core was lost
        # (deadline exceeded -> GrpcInsurance maps it to OutcomeUnknown).
        insurer.settle = real_settle  # type: ignore[method-assign]
        insurer.settlements[settlement_id] = replace(
            insurer.settlements[settlement_id], status=InsurerStatus.FAILED
        )
        raise OutcomeUnknown("insurance-adapter did not answer in time")

    insurer.settle = refused_but_reply_lost  # type: ignore[method-assign]
    order = await settled_order(harness, insured())
    assert order.status == pb.ORDER_STATUS_SETTLING and order.cash_paid_fen > 0

    # The resumer retries with the same request_id: the adapter now answers STATE_CONFLICT
    # ("settlement ... is FAILED; it cannot become SETTLING"), which payment-core keeps as pending.
    for hours in (1, 3, 24):
        harness.clock.offset = timedelta(hours=hours)
        await harness.core.janitor.sweep()

    order = await harness.order(order.order_id)
    assert order.status == pb.ORDER_STATUS_REFUNDED, (order.status, order.attention_reason)
    assert order.refunded_cash_fen == order.cash_paid_fen


async def test_close_undoes_the_presettlement_only_once_nothing_can_pay_the_order(harness: Harness) -> None:
    """The 2205 used to go out before the order was closed, so a kiosk could start a QR payment on
    an order whose pre-settlement was already cancelled (and its 2207 could never succeed)."""
    created = await harness.payment.CreatePaymentOrder(insured())
    order_id = created.order.order_id
    insurer = harness.insurance
    real_cancel = insurer.cancel_presettlement
    seen_at_2205: list[object] = []

    async def cancel_while_a_kiosk_tries_to_pay(
        request_id: str, settlement_id: str, order_ref: str = ""
    ) -> InsurerSettlement:
        seen_at_2205.append((await harness.order(order_id)).status)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await harness.payment.PayPaymentOrder(pay(order_id))
        seen_at_2205.append(refused.value.code())
        return await real_cancel(request_id, settlement_id)

    insurer.cancel_presettlement = cancel_while_a_kiosk_tries_to_pay  # type: ignore[method-assign]
    close = pb.ClosePaymentOrderRequest(request_id=uuid.uuid4().hex, order_id=order_id, reason="left")
    closed = await harness.payment.ClosePaymentOrder(close)
    assert closed.order.status == pb.ORDER_STATUS_CLOSED
    assert seen_at_2205 == [pb.ORDER_STATUS_CLOSED, grpc.StatusCode.FAILED_PRECONDITION]
    assert insurer.settlements["stl-1"].status is InsurerStatus.CANCELLED


async def test_a_failed_2205_is_retried_by_the_janitor(harness: Harness) -> None:
    created = await harness.payment.CreatePaymentOrder(insured())
    harness.insurance.fail_next["cancel"] = [InsurerUnavailable("insurer down")]
    close = pb.ClosePaymentOrderRequest(
        request_id=uuid.uuid4().hex, order_id=created.order.order_id, reason="x"
    )
    closed = await harness.payment.ClosePaymentOrder(close)
    assert closed.order.status == pb.ORDER_STATUS_CLOSED  # nothing can pay it
    assert harness.insurance.settlements["stl-1"].status is InsurerStatus.PRESETTLED

    harness.clock.offset = timedelta(seconds=10)
    await harness.core.janitor.sweep()
    assert harness.insurance.settlements["stl-1"].status is InsurerStatus.CANCELLED


def _presettled_but_reply_lost(harness: Harness, failure: Exception | None = None) -> None:
    """insurance-adapter sent 2201/2204 (and the insurer holds the pre-settlement), then was killed
    before it answered: payment-core's first CreatePaymentOrder sees UNAVAILABLE."""
    insurer = harness.insurance
    real_presettle = insurer.presettle

    async def presettled_then_lost(ask):  # type: ignore[no-untyped-def]
        insurer.presettle = real_presettle  # type: ignore[method-assign]
        await real_presettle(ask)
        raise failure or InsurerUnavailable("insurance-adapter unreachable: connection reset")

    insurer.presettle = presettled_then_lost  # type: ignore[method-assign]


async def test_a_first_presettlement_lost_mid_way_is_undone_before_the_order_is_forgotten(
    harness: Harness,
) -> None:
    """payment-core used to delete the order at once, leaving the insurer's pre-settlement (and its
    fee lines) open for an order that no longer existed."""
    _presettled_but_reply_lost(harness)
    with pytest.raises(grpc.aio.AioRpcError) as lost:
        await harness.payment.CreatePaymentOrder(insured("HIS-LOST-1"))
    assert lost.value.code() == grpc.StatusCode.UNAVAILABLE
    assert [s.status for s in harness.insurance.settlements.values()] == [InsurerStatus.CANCELLED]

    # The HIS retries with the same request: a fresh order, pre-settled once more, nothing left over.
    again = await harness.payment.CreatePaymentOrder(insured("HIS-LOST-1"))
    assert again.order.status == pb.ORDER_STATUS_AWAITING_PAYMENT
    statuses = sorted(s.status.value for s in harness.insurance.settlements.values())
    assert statuses == ["CANCELLED", "PRESETTLED"]


async def test_an_order_whose_presettlement_cannot_be_undone_is_kept_for_the_retry_or_its_expiry(
    harness: Harness,
) -> None:
    _presettled_but_reply_lost(harness)
    harness.insurance.fail_next["cancel"] = [InsurerUnavailable("insurance-adapter unreachable")]
    request = insured("HIS-LOST-2")
    with pytest.raises(grpc.aio.AioRpcError) as lost:
        await harness.payment.CreatePaymentOrder(request)
    assert lost.value.code() == grpc.StatusCode.UNAVAILABLE
    listed = await harness.payment.ListPaymentOrders(pb.ListPaymentOrdersRequest(page_size=10))
    assert [o.status for o in listed.orders] == [pb.ORDER_STATUS_PRESETTLING]
    assert harness.insurance.settlements["stl-1"].status is InsurerStatus.PRESETTLED

    # Nobody comes back: at its expiry the janitor closes the order and undoes the pre-settlement.
    harness.clock.offset = timedelta(hours=3)
    for _ in range(3):
        await harness.core.janitor.sweep()
    order = await harness.order(listed.orders[0].order_id)
    assert order.status == pb.ORDER_STATUS_CLOSED
    assert harness.insurance.settlements["stl-1"].status is InsurerStatus.CANCELLED


async def test_a_presettlement_refused_after_its_fees_were_uploaded_is_undone(harness: Harness) -> None:
    """A refused 2206 leaves the visit's fee lines at the insurer; the order used to be dropped."""
    _presettled_but_reply_lost(harness, InsurerRejected("2206: 模拟故障"))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await harness.payment.CreatePaymentOrder(insured("HIS-REFUSED-1"))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert [s.status for s in harness.insurance.settlements.values()] == [InsurerStatus.CANCELLED]
    listed = await harness.payment.ListPaymentOrders(pb.ListPaymentOrdersRequest(page_size=10))
    assert list(listed.orders) == []


@pytest.mark.parametrize(
    "out_trade_no",
    [
        "ord_0123456789abcdef01234567_01",  # our shape, an order that does not exist
        "HIS-KIOSK-20261202-0001",  # another system's order on the same merchant account
        "{attempt_99}",  # an existing order, an attempt it never placed (filled in below)
    ],
)
async def test_a_success_no_order_knows_is_acknowledged_and_applied_nowhere(
    harness: Harness, out_trade_no: str
) -> None:
    """The notification names its order by the key (no lookup by out_trade_no); money that no
    order or attempt of ours placed is left to reconciliation, never applied."""
    paying = await harness.payment.PayPaymentOrder(
        pay((await harness.payment.CreatePaymentOrder(base.self_pay())).order.order_id)
    )
    if out_trade_no == "{attempt_99}":
        out_trade_no = f"{paying.order.order_id}_99"
    channel = harness.channel
    channel._orders[out_trade_no] = replace(
        channel._order(paying.payment.out_trade_no), out_trade_no=out_trade_no
    )
    reply = await harness.notify(*channel.patient_pays(out_trade_no))
    assert reply.status_code == 204
    await harness.settled()
    order = await harness.order(paying.order.order_id)
    assert order.status == pb.ORDER_STATUS_PAYING and order.cash_paid_fen == 0


async def test_a_transfer_key_posts_once_whatever_asks_twice(harness: Harness) -> None:
    """The ledger's UNIQUE transfer key decides in the insert itself (no look first)."""
    from services.payment_core.domain import ledger
    from services.payment_core.domain.model import InsuranceSplit
    from services.runtime.money import Money

    bill = ledger.SettledBill(
        order_id="ord_0123456789abcdef01234567", scene="OUTPATIENT", bill_total=Money(12_500),
        cash=Money(12_500), split=InsuranceSplit.from_fen({}),
    )  # fmt: skip
    entry = ledger.settlement_transaction(bill, base.utcnow())
    async with harness.core.orders._deps.uow() as uow:
        assert await uow.ledger.post(entry) is True
        assert await uow.ledger.post(entry) is False
    assert len(await harness.ledger(bill.order_id)) == 1
    assert sum(fen.fen for fen in (await harness.trial_balance()).values()) == 0
