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
from services.runtime.errors import InsurerUnavailable, OutcomeUnknown
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
