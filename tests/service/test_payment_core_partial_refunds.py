"""Partial and multiple refunds of a settled self-pay order, through the gRPC service with the
in-process harness (FakeChannel): the split across payments (largest refundable first), the order
REFUNDED only once everything paid is back, the amounts refused before anything is stored, the
database's refunded <= paid under concurrent refunds, and the ledger after each refund."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest
from medpay.payment.v1 import payment_pb2 as pb

from services.payment_core.domain.model import RefundStatus
from services.runtime.errors import RefundExceedsPaid
from services.runtime.money import Money
from tests.service import test_payment_core as base
from tests.service.test_payment_core import Harness, details, insured, self_pay, settled_order
from tests.service.test_payment_core_multi_payment import paid

database = base.database
harness = base.harness

CLEARING = "asset:channel_clearing:"


def partial(order_id: str, cash_fen: int, operator_id: str = "op-0301") -> pb.RefundPaymentOrderRequest:
    return pb.RefundPaymentOrderRequest(
        request_id=uuid.uuid4().hex, order_id=order_id, cash_fen=cash_fen,
        reason="one drug returned unopened", operator_id=operator_id,
    )  # fmt: skip


async def assert_ledger_nets_to_what_is_kept(h: Harness, order: pb.PaymentOrder) -> None:
    """Every entry balanced, one reversal per succeeded refund (its own transfer key), and the order's
    clearing and revenue totals equal to paid - refunded."""
    entries = await h.ledger(order.order_id)
    for entry in entries:
        assert sum(p.amount.fen for p in entry.postings) == 0  # type: ignore[attr-defined]
    keys = [e.transfer_key for e in entries]  # type: ignore[attr-defined]
    assert len(keys) == len(set(keys))
    succeeded = [r for r in order.refunds if r.status == pb.REFUND_STATUS_SUCCEEDED]
    assert [e.kind for e in entries].count("REVERSAL") == len(succeeded)  # type: ignore[attr-defined]
    postings = [p for e in entries for p in e.postings]  # type: ignore[attr-defined]
    kept = order.cash_paid_fen - order.refunded_cash_fen
    assert sum(p.amount.fen for p in postings if p.account.startswith(CLEARING)) == kept
    assert sum(p.amount.fen for p in postings if p.account.startswith("revenue:")) == -kept
    assert sum(amount.fen for amount in (await h.trial_balance()).values()) == 0


async def test_a_self_pay_order_refunded_in_three_parts_then_in_full(harness: Harness) -> None:
    order = await settled_order(harness, self_pay())  # 12,500 fen
    order_id = order.order_id

    for n, cash in enumerate((1_000, 2_500, 4_000), start=1):
        reply = await harness.payment.RefundPaymentOrder(partial(order_id, cash))
        assert reply.refund.cash_fen == cash and reply.refund.requested_by == "op-0301"
        after = await harness.order(order_id)
        assert after.status == pb.ORDER_STATUS_SETTLED, n
        assert after.refunded_cash_fen == sum((1_000, 2_500, 4_000)[:n])
        assert [r.status for r in after.refunds] == [pb.REFUND_STATUS_SUCCEEDED] * n
        await assert_ledger_nets_to_what_is_kept(harness, after)

    last = await harness.payment.RefundPaymentOrder(base.refund(order_id))

    after = await harness.order(order_id)
    assert last.refund.cash_fen == 5_000 and after.status == pb.ORDER_STATUS_REFUNDED
    assert after.refunded_cash_fen == after.cash_paid_fen == 12_500
    assert len({r.out_refund_no for r in after.refunds}) == 4
    assert [r.reason for r in after.refunds][:3] == ["one drug returned unopened"] * 3
    await assert_ledger_nets_to_what_is_kept(harness, after)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.payment.RefundPaymentOrder(base.refund(order_id))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details(caught.value)[0] == "STATE_CONFLICT"


async def test_a_partial_refund_of_a_two_payment_order_takes_the_larger_payment_first(
    harness: Harness,
) -> None:
    created = await harness.payment.CreatePaymentOrder(self_pay())
    order_id = created.order.order_id
    await paid(harness, order_id, 4_000)
    settled = await paid(harness, order_id)  # 8,500 fen
    small, large = settled.payments

    await harness.payment.RefundPaymentOrder(partial(order_id, 9_000))

    after = await harness.order(order_id)
    assert [(r.payment_id, r.cash_fen) for r in after.refunds] == [
        (large.payment_id, 8_500), (small.payment_id, 500),
    ]  # fmt: skip
    assert after.status == pb.ORDER_STATUS_SETTLED and after.refunded_cash_fen == 9_000
    await assert_ledger_nets_to_what_is_kept(harness, after)

    await harness.payment.RefundPaymentOrder(partial(order_id, 3_500))  # all of what is left

    after = await harness.order(order_id)
    assert [(r.payment_id, r.cash_fen) for r in after.refunds][2:] == [(small.payment_id, 3_500)]
    assert after.status == pb.ORDER_STATUS_REFUNDED and after.refunded_cash_fen == 12_500
    await assert_ledger_nets_to_what_is_kept(harness, after)


@pytest.mark.parametrize(
    ("cash_fen", "operator_id", "code", "reason", "fields"),
    [
        (-1, "op-0301", grpc.StatusCode.INVALID_ARGUMENT, "FIELD_INVALID", ["cash_fen"]),
        (500, "", grpc.StatusCode.INVALID_ARGUMENT, "FIELD_INVALID", ["operator_id"]),
        (12_501, "op-0301", grpc.StatusCode.FAILED_PRECONDITION, "REFUND_EXCEEDS_PAID", []),
    ],
)
async def test_a_bad_amount_is_refused_and_nothing_stored(
    harness: Harness, cash_fen: int, operator_id: str, code: grpc.StatusCode, reason: str, fields: list[str]
) -> None:
    order = await settled_order(harness, self_pay())

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.payment.RefundPaymentOrder(partial(order.order_id, cash_fen, operator_id))

    assert caught.value.code() == code and details(caught.value) == (reason, fields)
    after = await harness.order(order.order_id)
    assert after.status == pb.ORDER_STATUS_SETTLED and not after.refunds and after.refunded_cash_fen == 0


async def test_more_than_what_is_left_after_a_partial_refund_is_refused(harness: Harness) -> None:
    order = await settled_order(harness, self_pay())
    await harness.payment.RefundPaymentOrder(partial(order.order_id, 10_000))

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.payment.RefundPaymentOrder(partial(order.order_id, 2_501))

    assert details(caught.value)[0] == "REFUND_EXCEEDS_PAID" and "2500 fen" in (caught.value.details() or "")
    after = await harness.order(order.order_id)
    assert len(after.refunds) == 1 and after.refunded_cash_fen == 10_000


async def test_a_partial_refund_of_an_insured_order_is_refused_the_full_one_works(harness: Harness) -> None:
    order = await settled_order(harness, insured())

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.payment.RefundPaymentOrder(partial(order.order_id, 100))

    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details(caught.value)[0] == "STATE_CONFLICT" and "insured" in (caught.value.details() or "")
    assert not (await harness.order(order.order_id)).refunds
    assert not [c for c in harness.insurance.calls if c[0] == "revoke"]
    await harness.payment.RefundPaymentOrder(base.refund(order.order_id))
    after = await harness.order(order.order_id)
    assert after.status == pb.ORDER_STATUS_REFUNDED and after.refunded_cash_fen == after.cash_paid_fen


async def test_two_partial_refunds_at_once_that_exceed_what_is_refundable_one_is_refused(
    harness: Harness,
) -> None:
    order = await settled_order(harness, self_pay())

    outcomes = await asyncio.gather(
        *(harness.payment.RefundPaymentOrder(partial(order.order_id, 7_000)) for _ in range(2)),
        return_exceptions=True,
    )

    passed = [o for o in outcomes if isinstance(o, pb.RefundPaymentOrderResponse)]
    refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(passed) == 1 and len(refused) == 1, outcomes
    assert refused[0].code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details(refused[0])[0] in ("STATE_CONFLICT", "REFUND_EXCEEDS_PAID")
    after = await harness.order(order.order_id)
    assert after.refunded_cash_fen == 7_000 and [r.cash_fen for r in after.refunds] == [7_000]
    await assert_ledger_nets_to_what_is_kept(harness, after)


async def test_two_writers_that_both_saw_everything_refundable_cannot_both_store_a_partial_refund(
    harness: Harness, database: str
) -> None:
    """Without the order's lock (as a bug or another code path would), on PostgreSQL: both read the
    settled order, both record a partial refund of 7,000 fen; the CHECKs let exactly one commit."""
    if not database.startswith("postgresql"):
        pytest.skip("SQLite serialises writers before they read (BEGIN IMMEDIATE)")
    order = await settled_order(harness, self_pay())
    both_read = asyncio.Barrier(2)

    async def record_partial(refund_id: str) -> None:
        async with harness.core.orders._deps.uow() as uow:
            stale = await uow.orders.get(order.order_id)
            assert stale is not None
            await both_read.wait()
            refund = stale.begin_refund(refund_id, Money(7_000), "x", harness.clock(), "op-0301")
            # each writer numbers its refund apart, so only the amount can collide
            refund.refund_no, refund.out_refund_no = (1, "RA") if refund_id == "rfd_a" else (2, "RB")
            await uow.orders.reserve_refund(stale, refund)
            await uow.orders.save(stale)

    outcomes = await asyncio.gather(record_partial("rfd_a"), record_partial("rfd_b"), return_exceptions=True)

    assert sorted(type(o).__name__ for o in outcomes) == ["NoneType", "RefundExceedsPaid"], outcomes
    async with harness.core.orders._deps.uow(read_only=True) as uow:
        stored = await uow.orders.get(order.order_id)
    assert stored is not None and stored.refunded_cash == Money(7_000)
    assert [(r.cash, r.status) for r in stored.refunds] == [(Money(7_000), RefundStatus.PENDING)]


async def test_storage_refuses_a_partial_refund_beyond_what_a_payment_has_left(harness: Harness) -> None:
    """On both databases: an order that believes nothing was refunded yet cannot reserve more than
    the payment has left (per payment and per order CHECKs)."""
    order = await settled_order(harness, self_pay())
    async with harness.core.orders._deps.uow(read_only=True) as uow:
        stale = await uow.orders.get(order.order_id)
    assert stale is not None
    await harness.payment.RefundPaymentOrder(partial(order.order_id, 10_000))

    refund = stale.begin_refund("rfd_stale", Money(5_000), "x", harness.clock(), "op-0301")
    refund.refund_no, refund.out_refund_no = 9, "RSTALE"
    with pytest.raises(RefundExceedsPaid):
        async with harness.core.orders._deps.uow() as uow:
            await uow.orders.reserve_refund(stale, refund)
    after = await harness.order(order.order_id)
    assert after.refunded_cash_fen == 10_000 and len(after.refunds) == 1


async def test_a_partial_refund_across_wechat_and_cash_waits_for_the_cashier_one_refund_at_a_time(
    harness: Harness,
) -> None:
    created = await harness.payment.CreatePaymentOrder(self_pay())
    order_id = created.order.order_id
    await paid(harness, order_id, 4_000)  # WeChat Pay
    at_window = pb.PayPaymentOrderRequest(
        request_id=uuid.uuid4().hex, order_id=order_id, channel=pb.CHANNEL_CASH,
        method=pb.PAY_METHOD_CASH, amount_fen=8_500, operator_id="C001",
    )  # fmt: skip
    await harness.payment.PayPaymentOrder(at_window)

    asked = await harness.payment.RefundPaymentOrder(partial(order_id, 9_000))

    assert asked.order.status == pb.ORDER_STATUS_REFUNDING
    cash_back, wechat_back = asked.order.refunds
    assert (cash_back.cash_fen, cash_back.status) == (8_500, pb.REFUND_STATUS_PROCESSING)
    assert (wechat_back.cash_fen, wechat_back.status) == (500, pb.REFUND_STATUS_SUCCEEDED)
    with pytest.raises(grpc.aio.AioRpcError) as caught:  # one refund at a time
        await harness.payment.RefundPaymentOrder(partial(order_id, 100))
    assert details(caught.value)[0] == "STATE_CONFLICT"
    confirm = pb.ConfirmWindowRefundRequest(
        request_id=uuid.uuid4().hex, order_id=order_id, refund_id=cash_back.refund_id, operator_id="C002"
    )
    done = await harness.payment.ConfirmWindowRefund(confirm)

    assert done.order.status == pb.ORDER_STATUS_SETTLED and done.order.refunded_cash_fen == 9_000
    assert (done.refund.requested_by, done.refund.operator_id) == ("op-0301", "C002")
    assert (await harness.trial_balance()).get(CLEARING + "CASH", Money(0)).fen == 0
    await assert_ledger_nets_to_what_is_kept(harness, await harness.order(order_id))
