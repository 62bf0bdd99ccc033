"""CloseCashierShift (收费员日结), in-process (real gRPC, SQLite and PostgreSQL): a cashier's cash and
POS takings and window refunds, read from the ledger, per channel and with the cash to hand over;
closing again answers the same figures; another cashier's money and money after the close are not
in the shift; money recorded late for a closed period goes into the next shift."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import grpc
import pytest
from medpay.payment.v1 import payment_pb2 as pb

from tests.service import test_payment_core as base
from tests.service.test_payment_core import Harness, details, refund, self_pay
from tests.service.test_payment_core_window import cash, created, pos, slip

database = base.database
harness = base.harness

FIVE_MINUTES = timedelta(minutes=5)


def cashier() -> str:
    return f"C-{uuid.uuid4().hex[:8]}"


def close(
    h: Harness, cashier_id: str, campus_code: str = "FZ900", at: str | None = None
) -> pb.CloseCashierShiftRequest:
    return pb.CloseCashierShiftRequest(
        request_id=uuid.uuid4().hex, cashier_id=cashier_id, campus_code=campus_code,
        closed_at=at or h.clock().isoformat(),
    )  # fmt: skip


def totals(reply: pb.CloseCashierShiftResponse) -> dict[int, tuple[int, int, int, int]]:
    return {
        t.channel: (t.payment_count, t.collected_fen, t.refund_count, t.refunded_fen) for t in reply.totals
    }


async def paid_in_cash(h: Harness, operator_id: str, amount_fen: int = 12_500) -> pb.PaymentOrder:
    """A self-pay bill of `amount_fen`, paid in full in cash: the order settles, the ledger posts."""
    bill = self_pay()
    del bill.items[:]
    bill.items.extend(base.items(amount_fen))
    order = await created(h, bill)
    await h.payment.PayPaymentOrder(cash(order.order_id, amount_fen, operator_id))
    return order


async def paid_by_pos(h: Harness, operator_id: str, reference_no: str) -> None:
    order = await created(h, self_pay())
    request = pos(order.order_id, 12_500, slip(reference_no))
    request.operator_id = operator_id
    await h.payment.PayPaymentOrder(request)


async def cash_refunded(h: Harness, order: pb.PaymentOrder, operator_id: str) -> None:
    asked = await h.payment.RefundPaymentOrder(refund(order.order_id))
    await h.payment.ConfirmWindowRefund(
        pb.ConfirmWindowRefundRequest(
            request_id=uuid.uuid4().hex,
            order_id=order.order_id,
            refund_id=asked.refund.refund_id,
            operator_id=operator_id,
        )
    )


async def test_a_shift_counts_what_the_cashier_took_and_handed_back(harness: Harness) -> None:
    me, other = cashier(), cashier()
    first = await paid_in_cash(harness, me)
    await paid_in_cash(harness, me, 2_000)
    await paid_by_pos(harness, me, "100000000001")
    await cash_refunded(harness, first, me)
    await paid_in_cash(harness, other, 99_900)  # another cashier's drawer
    request = close(harness, me)

    reply = await harness.payment.CloseCashierShift(request)

    assert reply.cashier_id == me and reply.shift_id
    assert totals(reply) == {
        pb.CHANNEL_CASH: (2, 14_500, 1, 12_500),
        pb.CHANNEL_POS: (1, 12_500, 0, 0),
    }
    assert reply.cash_to_hand_over_fen == 2_000
    assert await harness.payment.CloseCashierShift(request) == reply  # the same request, replayed
    request.request_id = uuid.uuid4().hex
    assert await harness.payment.CloseCashierShift(request) == reply  # the same close, asked again
    theirs = await harness.payment.CloseCashierShift(close(harness, other))
    assert totals(theirs) == {pb.CHANNEL_CASH: (1, 99_900, 0, 0)}
    assert theirs.cash_to_hand_over_fen == 99_900


async def test_money_after_the_close_and_money_recorded_late_go_into_the_next_shift(
    harness: Harness,
) -> None:
    me = cashier()
    await paid_in_cash(harness, me, 1_000)
    first = await harness.payment.CloseCashierShift(close(harness, me))
    await paid_in_cash(harness, me, 2_000)  # after the close
    harness.clock.offset = -FIVE_MINUTES
    await paid_in_cash(harness, me, 4_000)  # occurred before the first close, recorded after it
    harness.clock.offset = FIVE_MINUTES

    second = await harness.payment.CloseCashierShift(close(harness, me))

    assert totals(first) == {pb.CHANNEL_CASH: (1, 1_000, 0, 0)}
    assert second.shift_id != first.shift_id
    assert totals(second) == {pb.CHANNEL_CASH: (2, 6_000, 0, 0)}
    assert second.cash_to_hand_over_fen == 6_000


async def test_the_same_close_asked_concurrently_is_one_shift(harness: Harness) -> None:
    me = cashier()
    await paid_in_cash(harness, me, 3_000)
    at = harness.clock().isoformat()

    replies = await asyncio.gather(
        *(harness.payment.CloseCashierShift(close(harness, me, at=at)) for _ in range(4))
    )

    assert len({reply.shift_id for reply in replies}) == 1
    assert all(totals(reply) == {pb.CHANNEL_CASH: (1, 3_000, 0, 0)} for reply in replies)


async def test_a_shift_is_per_campus_and_an_empty_shift_has_nothing_to_hand_over(harness: Harness) -> None:
    me = cashier()
    await paid_in_cash(harness, me)

    elsewhere = await harness.payment.CloseCashierShift(close(harness, me, campus_code="XM100"))

    assert list(elsewhere.totals) == [] and elsewhere.cash_to_hand_over_fen == 0


async def test_a_close_in_the_future_or_before_the_previous_one_is_refused(harness: Harness) -> None:
    me = cashier()
    await harness.payment.CloseCashierShift(close(harness, me))
    earlier = (harness.clock() - FIVE_MINUTES).isoformat()
    later = (harness.clock() + timedelta(hours=1)).isoformat()

    for at in (earlier, later):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await harness.payment.CloseCashierShift(close(harness, me, at=at))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert details(refused.value)[1] == ["closed_at"]


@pytest.mark.parametrize(
    ("cashier_id", "campus_code", "closed_at", "field"),
    [
        ("", "FZ900", "2026-12-02T18:00:00+08:00", "cashier_id"),
        ("C 001", "FZ900", "2026-12-02T18:00:00+08:00", "cashier_id"),
        ("C" * 33, "FZ900", "2026-12-02T18:00:00+08:00", "cashier_id"),
        ("C001", " ", "2026-12-02T18:00:00+08:00", "campus_code"),
        ("C001", "FZ900", "", "closed_at"),
        ("C001", "FZ900", "2026-12-02 18:00:00", "closed_at"),  # no offset
        ("C001", "FZ900", "2026-12-02", "closed_at"),
        ("C001", "FZ900", "2026-13-45T18:00:00Z", "closed_at"),
        ("C001", "FZ900", "1999-12-31T18:00:00Z", "closed_at"),
    ],
)
async def test_bad_close_input_is_invalid_argument_naming_the_field(
    harness: Harness, cashier_id: str, campus_code: str, closed_at: str, field: str
) -> None:
    request = pb.CloseCashierShiftRequest(
        request_id=uuid.uuid4().hex, cashier_id=cashier_id, campus_code=campus_code, closed_at=closed_at
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await harness.payment.CloseCashierShift(request)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(refused.value)[1] == [field]
