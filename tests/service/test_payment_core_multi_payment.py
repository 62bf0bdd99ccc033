"""Orders paid by several payments, in-process (real gRPC, FakeChannel, FakeInsurance, SQLite and
PostgreSQL): PayPaymentOrder.amount_fen splits the cash share, the order is paid once its kept
payments sum to the cash due (the insured 2207 goes out only then), storage refuses attempts that
would cover more than is due whatever the caller believed, and closing a partly paid order gives
each payment back to its own channel before 2205."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta

import grpc
import pytest
from medpay.payment.v1 import payment_pb2 as pb

from services.payment_core.adapters.channels import ports
from services.payment_core.domain import keys
from services.payment_core.domain.order import PaymentOrder
from services.payment_core.entrypoints import mapping
from services.runtime.clock import business_date_of, utcnow
from services.runtime.errors import InsurerRejected, InvalidArgument
from tests.service import test_payment_core as base
from tests.service.test_payment_core import Harness, details, entry_kinds, insured, kinds, refund, self_pay

database = base.database
harness = base.harness


def pay(order_id: str, amount_fen: int = 0) -> pb.PayPaymentOrderRequest:
    request = base.pay(order_id)
    request.amount_fen = amount_fen
    return request


async def paid(h: Harness, order_id: str, amount_fen: int = 0) -> pb.PaymentOrder:
    """One payment of `amount_fen` (0: what remains), placed and paid by the patient."""
    paying = await h.payment.PayPaymentOrder(pay(order_id, amount_fen))
    return await base.patient_pays(h, paying)


def close(order_id: str) -> pb.ClosePaymentOrderRequest:
    return pb.ClosePaymentOrderRequest(request_id=uuid.uuid4().hex, order_id=order_id, reason="patient left")


async def test_a_self_pay_order_is_paid_by_two_payments(harness: Harness) -> None:
    created = await harness.payment.CreatePaymentOrder(self_pay())
    order_id = created.order.order_id

    first = await paid(harness, order_id, 5_000)
    assert first.status == pb.ORDER_STATUS_AWAITING_PAYMENT and first.cash_paid_fen == 5_000
    # The first part is at its channel, received for a bill not yet settled.
    assert entry_kinds(await harness.ledger(order_id)) == ["PAYMENT"]
    assert (await harness.trial_balance())["liability:receipts_unsettled"].fen == -5_000

    order = await paid(harness, order_id)  # what remains: 7,500 fen
    assert order.status == pb.ORDER_STATUS_SETTLED and order.cash_paid_fen == order.cash_due_fen == 12_500
    assert [(p.amount_fen, p.status) for p in order.payments] == [
        (5_000, pb.PAYMENT_STATUS_SUCCEEDED), (7_500, pb.PAYMENT_STATUS_SUCCEEDED),
    ]  # fmt: skip
    entries = await harness.ledger(order_id)
    assert entry_kinds(entries) == ["PAYMENT", "PAYMENT", "SETTLEMENT"]
    assert all(sum(p.amount.fen for p in entry.postings) == 0 for entry in entries)
    assert (await harness.trial_balance())["liability:receipts_unsettled"].fen == 0
    assert kinds(await harness.events(), order_id) == [
        "payment_order_created", "payment_succeeded", "payment_succeeded", "payment_order_settled",
    ]  # fmt: skip


async def test_an_insured_cash_share_paid_in_two_parts_is_settled_once_when_complete(
    harness: Harness,
) -> None:
    created = await harness.payment.CreatePaymentOrder(insured())
    order_id, due = created.order.order_id, created.order.cash_due_fen

    part = await paid(harness, order_id, due // 3)
    assert part.status == pb.ORDER_STATUS_AWAITING_PAYMENT and part.cash_paid_fen == due // 3
    assert not [c for c in harness.insurance.calls if c[0] == "settle"]

    order = await paid(harness, order_id)
    assert order.status == pb.ORDER_STATUS_SETTLED and order.cash_paid_fen == due
    assert [c for c in harness.insurance.calls if c[0] == "settle"] == [("settle", f"{order_id}-settle")]
    assert sum(amount.fen for amount in (await harness.trial_balance()).values()) == 0


async def test_more_than_what_remains_is_refused_naming_amount_fen_and_nothing_stored(
    harness: Harness,
) -> None:
    created = await harness.payment.CreatePaymentOrder(self_pay())
    order_id = created.order.order_id
    await harness.payment.PayPaymentOrder(pay(order_id, 10_000))

    for amount in (2_501, -1):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await harness.payment.PayPaymentOrder(pay(order_id, amount))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert details(caught.value) == ("FIELD_INVALID", ["amount_fen"])
    assert [p.amount_fen for p in (await harness.order(order_id)).payments] == [10_000]


async def test_two_payments_at_once_for_the_whole_remainder_one_wins(harness: Harness) -> None:
    created = await harness.payment.CreatePaymentOrder(self_pay())
    order_id = created.order.order_id
    await paid(harness, order_id, 2_500)

    outcomes = await asyncio.gather(
        *(harness.payment.PayPaymentOrder(pay(order_id, 10_000)) for _ in range(2)), return_exceptions=True
    )

    placed = [o for o in outcomes if isinstance(o, pb.PayPaymentOrderResponse)]
    refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(placed) == 1 and len(refused) == 1, outcomes
    assert details(refused[0]) == ("FIELD_INVALID", ["amount_fen"])
    order = await harness.order(order_id)
    assert [p.amount_fen for p in order.payments] == [2_500, 10_000]
    assert (await base.patient_pays(harness, placed[0])).status == pb.ORDER_STATUS_SETTLED


async def test_two_payments_at_once_that_fit_together_are_both_placed(harness: Harness) -> None:
    created = await harness.payment.CreatePaymentOrder(self_pay())
    order_id = created.order.order_id
    replies = await asyncio.gather(
        *(harness.payment.PayPaymentOrder(pay(order_id, n)) for n in (5_000, 7_500))
    )
    assert sorted(r.payment.amount_fen for r in replies) == [5_000, 7_500]
    assert all(r.payment.code_url for r in replies)
    for reply in replies:
        order = await base.patient_pays(harness, reply)
    assert order.status == pb.ORDER_STATUS_SETTLED and order.cash_paid_fen == 12_500


async def test_two_requests_for_what_remains_get_the_same_attempt(harness: Harness) -> None:
    created = await harness.payment.CreatePaymentOrder(self_pay())
    order_id = created.order.order_id
    replies = await asyncio.gather(*(harness.payment.PayPaymentOrder(pay(order_id)) for _ in range(2)))
    assert replies[0].payment.out_trade_no == replies[1].payment.out_trade_no
    assert len((await harness.order(order_id)).payments) == 1


def everything(order: PaymentOrder, payment_id: str, now: datetime, attempt_no: int) -> None:
    """Record an attempt for all that `order` (perhaps a stale copy) believes remains, numbered
    `attempt_no` so that only the cap can refuse it, not the attempt number's unique constraint."""
    attempt = order.start_payment(payment_id, "WECHAT_PAY", "NATIVE_QR", now, now + timedelta(minutes=15))
    attempt.attempt_no, attempt.out_trade_no = attempt_no, keys.out_trade_no(order.order_id, attempt_no)


async def test_two_attempts_open_side_by_side_are_each_asked_about_in_turn(harness: Harness) -> None:
    created = await harness.payment.CreatePaymentOrder(self_pay())
    order_id = created.order.order_id
    first = await harness.payment.PayPaymentOrder(pay(order_id, 5_000))
    second = await harness.payment.PayPaymentOrder(pay(order_id))
    assert second.order.status == pb.ORDER_STATUS_PAYING and second.payment.amount_fen == 7_500
    harness.channel.patient_pays(second.payment.out_trade_no)  # its notification is lost

    asked: list[str] = []
    real_query = harness.channel.query

    async def counted(out_trade_no: str) -> ports.ChannelTradeStatus:
        asked.append(out_trade_no)
        return await real_query(out_trade_no)

    harness.channel.query = counted  # type: ignore[method-assign]
    for seconds in (11, 30):
        harness.clock.offset = timedelta(seconds=seconds)
        await harness.core.janitor.sweep()

    assert asked == [first.payment.out_trade_no, second.payment.out_trade_no]
    order = await stored(harness, order_id)
    assert order.status == pb.ORDER_STATUS_PAYING and order.cash_paid_fen == 7_500
    assert (await base.patient_pays(harness, first)).status == pb.ORDER_STATUS_SETTLED


async def test_storage_refuses_an_attempt_beyond_the_cash_due_whatever_the_caller_believed(
    harness: Harness,
) -> None:
    created = await harness.payment.CreatePaymentOrder(self_pay())
    order_id = created.order.order_id
    async with harness.core.orders._deps.uow(read_only=True) as uow:
        stale = await uow.orders.get(order_id)
    assert stale is not None
    await harness.payment.PayPaymentOrder(pay(order_id))  # the whole 12,500 fen is now being collected

    everything(stale, "pay_stale", harness.clock(), attempt_no=2)
    with pytest.raises(InvalidArgument) as refused:
        async with harness.core.orders._deps.uow() as uow:
            await uow.orders.save(stale)
    assert [v.field for v in refused.value.violations] == ["amount_fen"]
    assert len((await harness.order(order_id)).payments) == 1


async def test_two_writers_that_both_saw_the_whole_remainder_cannot_both_store_it(
    harness: Harness, database: str
) -> None:
    """Without the order's lock (as a bug or another code path would), on PostgreSQL: both read the
    order, both record an attempt for all of it; the CHECK lets exactly one commit."""
    if not database.startswith("postgresql"):
        pytest.skip("SQLite serialises writers before they read (BEGIN IMMEDIATE)")
    created = await harness.payment.CreatePaymentOrder(self_pay())
    order_id = created.order.order_id
    both_read = asyncio.Barrier(2)

    async def record_everything(payment_id: str, attempt_no: int) -> None:
        async with harness.core.orders._deps.uow() as uow:
            order = await uow.orders.get(order_id)
            assert order is not None
            await both_read.wait()
            everything(order, payment_id, harness.clock(), attempt_no)
            await uow.orders.save(order)

    outcomes = await asyncio.gather(
        record_everything("pay_a", 1), record_everything("pay_b", 2), return_exceptions=True
    )

    assert sorted(type(o).__name__ for o in outcomes) == ["InvalidArgument", "NoneType"], outcomes
    assert [p.amount_fen for p in (await harness.order(order_id)).payments] == [12_500]


async def test_a_partly_paid_order_closed_gives_the_payment_back(harness: Harness) -> None:
    created = await harness.payment.CreatePaymentOrder(self_pay())
    order_id = created.order.order_id
    await paid(harness, order_id, 5_000)

    closed = (await harness.payment.ClosePaymentOrder(close(order_id))).order

    assert closed.status == pb.ORDER_STATUS_CLOSED
    [back] = closed.refunds
    assert back.cash_fen == 5_000 and back.status == pb.REFUND_STATUS_SUCCEEDED
    assert back.payment_id == closed.payments[0].payment_id
    assert closed.refunded_cash_fen == closed.cash_paid_fen == 5_000
    # In and out again, never settled: the channel and the receipts are back to zero.
    assert entry_kinds(await harness.ledger(order_id)) == ["PAYMENT", "REFUND"]
    assert all(amount.fen == 0 for amount in (await harness.trial_balance()).values())
    assert kinds(await harness.events(), order_id)[-2:] == ["refund_succeeded", "payment_order_closed"]


async def test_a_partly_paid_insured_order_closed_refunds_first_then_undoes_the_presettlement(
    harness: Harness,
) -> None:
    created = await harness.payment.CreatePaymentOrder(insured())
    order_id = created.order.order_id
    await paid(harness, order_id, 500)

    closed = (await harness.payment.ClosePaymentOrder(close(order_id))).order

    assert closed.status == pb.ORDER_STATUS_CLOSED and closed.refunds[0].status == pb.REFUND_STATUS_SUCCEEDED
    assert ("cancel", f"{order_id}-cancel") in harness.insurance.calls
    assert not [c for c in harness.insurance.calls if c[0] == "settle"]


async def test_an_unknown_attempt_holds_up_neither_the_return_of_the_paid_one_nor_is_guessed(
    harness: Harness,
) -> None:
    created = await harness.payment.CreatePaymentOrder(self_pay())
    order_id = created.order.order_id
    await paid(harness, order_id, 5_000)
    channel = harness.channel
    real_place, real_query = channel.place_order, channel.query

    async def no_answer(*_args: object) -> ports.PlacedOrder:
        raise ports.ChannelOutcomeUnknown("timeout")

    async def unreachable(out_trade_no: str) -> ports.ChannelTradeStatus:
        raise ports.ChannelUnavailable("connect timeout")

    channel.place_order, channel.query = no_answer, unreachable  # type: ignore[method-assign,assignment]
    with pytest.raises(grpc.aio.AioRpcError):
        await harness.payment.PayPaymentOrder(pay(order_id))
    with pytest.raises(grpc.aio.AioRpcError) as closing:
        await harness.payment.ClosePaymentOrder(close(order_id))
    assert closing.value.code() == grpc.StatusCode.UNAVAILABLE  # the platform finishes the close

    order = await stored(harness, order_id)
    assert [p.status for p in order.payments] == [pb.PAYMENT_STATUS_SUCCEEDED, pb.PAYMENT_STATUS_UNKNOWN]
    assert [r.status for r in order.refunds] == [pb.REFUND_STATUS_SUCCEEDED]  # returned all the same

    channel.place_order, channel.query = real_place, real_query  # type: ignore[method-assign]
    harness.clock.offset = timedelta(minutes=1)
    await harness.core.janitor.sweep()
    order = await stored(harness, order_id)
    assert order.status == pb.ORDER_STATUS_CLOSED
    assert order.payments[1].status == pb.PAYMENT_STATUS_CLOSED  # the channel never saw it: a query said so


async def test_a_partly_paid_order_expires_and_its_payment_goes_back(harness: Harness) -> None:
    created = await harness.payment.CreatePaymentOrder(self_pay())
    order_id = created.order.order_id
    await paid(harness, order_id, 5_000)

    harness.clock.offset = timedelta(seconds=harness.core.settings.payment_core_order_ttl_s + 1)
    await harness.core.janitor.sweep()

    order = await stored(harness, order_id)
    assert order.status == pb.ORDER_STATUS_CLOSED and order.close_reason == "expired unpaid"
    assert [(r.cash_fen, r.status) for r in order.refunds] == [(5_000, pb.REFUND_STATUS_SUCCEEDED)]


async def test_a_refused_settlement_refunds_every_payment(harness: Harness) -> None:
    harness.insurance.fail_next["settle"] = [InsurerRejected("personal account frozen")]
    created = await harness.payment.CreatePaymentOrder(insured())
    order_id = created.order.order_id
    await paid(harness, order_id, 500)

    order = await paid(harness, order_id)

    assert order.status == pb.ORDER_STATUS_REFUNDED and "frozen" in order.attention_reason
    assert [(r.payment_id, r.status) for r in order.refunds] == [
        (p.payment_id, pb.REFUND_STATUS_SUCCEEDED) for p in order.payments
    ]
    assert order.refunded_cash_fen == order.cash_paid_fen == created.order.cash_due_fen


async def test_a_refund_of_a_two_payment_insured_order_revokes_once_and_reverses_the_ledger(
    harness: Harness,
) -> None:
    created = await harness.payment.CreatePaymentOrder(insured())
    order_id = created.order.order_id
    await paid(harness, order_id, 500)
    settled = await paid(harness, order_id)

    refunded = await harness.payment.RefundPaymentOrder(refund(order_id))

    order = await harness.order(order_id)
    assert (
        order.status == pb.ORDER_STATUS_REFUNDED
        and refunded.refund.fund_fen == settled.split.fund_pay_sumamt_fen
    )
    assert [r.cash_fen for r in order.refunds] == [500, settled.cash_due_fen - 500]
    assert [c for c in harness.insurance.calls if c[0] == "revoke"] == [("revoke", f"{order_id}-revoke1")]
    assert entry_kinds(await harness.ledger(order_id)) == [
        "PAYMENT",
        "PAYMENT",
        "SETTLEMENT",
        "REVERSAL",
        "REVERSAL",
    ]
    assert all(amount.fen == 0 for amount in (await harness.trial_balance()).values())
    today = business_date_of(utcnow()).isoformat()
    export = await harness.payment.ExportTransactions(pb.ExportTransactionsRequest(business_date=today))
    backs = [
        m for m in export.transactions if m.order_id == order_id and m.kind == pb.Transaction.KIND_REFUND
    ]
    # only the refund the 2208 was recorded on takes the insurer's side back (reconciliation nets it once)
    assert sorted((m.amount_fen, m.medfee_fen) for m in backs) == sorted(
        [(500, order.total_fen), (order.cash_due_fen - 500, 0)]
    )


async def stored(h: Harness, order_id: str) -> pb.PaymentOrder:
    """The order as stored, without GetPaymentOrder's own look at the channel."""
    return mapping.order_to_proto(await h.core.orders.get(order_id, look_now=False))


async def test_the_day_export_pages_one_movement_at_a_time_each_once(harness: Harness) -> None:
    """Refunds of one order paid by two payments: one page at a time, every movement comes once
    and the export ends (a refund's cursor once took its payment's id and the page never moved)."""
    created = await harness.payment.CreatePaymentOrder(self_pay())
    order_id = created.order.order_id
    await paid(harness, order_id, 500)
    await paid(harness, order_id)
    await harness.payment.RefundPaymentOrder(refund(order_id))
    today = business_date_of(utcnow()).isoformat()
    whole = await harness.payment.ExportTransactions(pb.ExportTransactionsRequest(business_date=today))

    seen, token = [], ""
    for _ in range(len(whole.transactions) + 2):  # bounded: a cursor that does not move fails
        page = await harness.payment.ExportTransactions(
            pb.ExportTransactionsRequest(business_date=today, page_size=1, page_token=token)
        )
        seen += [(m.kind, m.out_trade_no, m.out_refund_no) for m in page.transactions]
        token = page.next_page_token
        if not token:
            break
    assert not token, "the export did not end"
    assert sorted(seen) == sorted((m.kind, m.out_trade_no, m.out_refund_no) for m in whole.transactions)
    assert len([m for m in seen if m[2]]) == 2
