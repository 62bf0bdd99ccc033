"""Cash at the window and bank-card POS, in-process (real gRPC, FakeChannel, FakeInsurance, SQLite and
PostgreSQL): the HIS reports money already taken, the process manager records it PAID at once and
the order moves on as after a channel notification (2207 for an insured order); a POS slip reported
twice, even concurrently, is one payment; a refund to the window waits for the cashier's
confirmation; bad input is refused before anything is stored."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest
from medpay.payment.v1 import payment_pb2 as pb

from services.payment_core.entrypoints import requests
from services.runtime.money import Money
from tests.service import test_payment_core as base
from tests.service.test_payment_core import Harness, details, insured, kinds, refund, self_pay

database = base.database
harness = base.harness

CASH_DRAWER = "asset:channel_clearing:CASH"
POS_CLEARING = "asset:channel_clearing:POS"


def slip(reference_no: str = "123456789012", **fields: str) -> pb.PosSlip:
    values = {"terminal_id": "12345678", "batch_no": "000123", "masked_card_no": "622202******1234"}
    return pb.PosSlip(reference_no=reference_no, **{**values, **fields})


def cash(order_id: str, amount_fen: int, operator_id: str = "C001") -> pb.PayPaymentOrderRequest:
    return pb.PayPaymentOrderRequest(
        request_id=uuid.uuid4().hex, order_id=order_id, channel=pb.CHANNEL_CASH,
        method=pb.PAY_METHOD_CASH, amount_fen=amount_fen, operator_id=operator_id,
    )  # fmt: skip


def pos(order_id: str, amount_fen: int, card: pb.PosSlip | None = None) -> pb.PayPaymentOrderRequest:
    return pb.PayPaymentOrderRequest(
        request_id=uuid.uuid4().hex, order_id=order_id, channel=pb.CHANNEL_POS, method=pb.PAY_METHOD_POS,
        amount_fen=amount_fen, operator_id="C001", pos=card or slip(),
    )  # fmt: skip


async def created(h: Harness, request: pb.CreatePaymentOrderRequest) -> pb.PaymentOrder:
    return (await h.payment.CreatePaymentOrder(request)).order


async def balance(h: Harness, account: str) -> int:
    return (await h.trial_balance()).get(account, Money(0)).fen


async def test_a_self_pay_order_paid_in_cash_settles_at_once_and_posts_to_the_drawer(
    harness: Harness,
) -> None:
    order = await created(harness, self_pay())

    reply = await harness.payment.PayPaymentOrder(cash(order.order_id, 12_500))

    assert reply.order.status == pb.ORDER_STATUS_SETTLED and reply.order.cash_paid_fen == 12_500
    assert reply.payment.status == pb.PAYMENT_STATUS_SUCCEEDED
    assert (reply.payment.channel, reply.payment.operator_id) == (pb.CHANNEL_CASH, "C001")
    assert not reply.payment.HasField("pos") and not harness.channel._orders  # no outside party asked
    assert await balance(harness, CASH_DRAWER) == 12_500
    assert kinds(await harness.events(), order.order_id) == [
        "payment_order_created", "payment_succeeded", "payment_order_settled",
    ]  # fmt: skip


async def test_an_insured_cash_share_paid_by_pos_is_settled_with_the_insurer(harness: Harness) -> None:
    order = await created(harness, insured())
    due = order.cash_due_fen

    reply = await harness.payment.PayPaymentOrder(pos(order.order_id, due))
    await harness.settled()
    settled = await harness.order(order.order_id)

    assert settled.status == pb.ORDER_STATUS_SETTLED and settled.setl_id
    assert [c for c in harness.insurance.calls if c[0] == "settle"] == [
        ("settle", f"{order.order_id}-settle")
    ]
    [payment] = settled.payments
    assert payment.status == pb.PAYMENT_STATUS_SUCCEEDED and payment.pos == slip()
    assert payment.channel_transaction_id == "123456789012"  # the acquirer's id: the reference number
    assert reply.payment.payment_id == payment.payment_id
    assert await balance(harness, POS_CLEARING) == due
    assert sum(amount.fen for amount in (await harness.trial_balance()).values()) == 0


async def test_a_pos_slip_reported_twice_is_one_payment(harness: Harness) -> None:
    order = await created(harness, self_pay())
    first = await harness.payment.PayPaymentOrder(pos(order.order_id, 5_000))

    again = await harness.payment.PayPaymentOrder(pos(order.order_id, 5_000))  # a new request_id

    assert again.payment.payment_id == first.payment.payment_id
    current = await harness.order(order.order_id)
    assert len(current.payments) == 1 and current.cash_paid_fen == 5_000
    assert current.status == pb.ORDER_STATUS_AWAITING_PAYMENT
    # Posted once, when the money was taken (not when the order settles): receipts for an open bill.
    assert await balance(harness, POS_CLEARING) == 5_000
    assert await balance(harness, "liability:receipts_unsettled") == -5_000


async def test_a_pos_slip_reported_concurrently_is_one_payment(harness: Harness) -> None:
    order = await created(harness, self_pay())

    replies = await asyncio.gather(
        *(harness.payment.PayPaymentOrder(pos(order.order_id, 12_500)) for _ in range(4))
    )

    assert len({r.payment.payment_id for r in replies}) == 1
    assert all(r.payment.status == pb.PAYMENT_STATUS_SUCCEEDED for r in replies)
    current = await harness.order(order.order_id)
    assert len(current.payments) == 1 and current.status == pb.ORDER_STATUS_SETTLED
    assert await balance(harness, POS_CLEARING) == 12_500


async def test_one_slip_reported_concurrently_for_two_orders_pays_one_of_them(harness: Harness) -> None:
    first, second = await created(harness, self_pay()), await created(harness, self_pay())

    replies = await asyncio.gather(
        harness.payment.PayPaymentOrder(pos(first.order_id, 5_000)),
        harness.payment.PayPaymentOrder(pos(second.order_id, 5_000)),
        return_exceptions=True,
    )

    refused = [r for r in replies if isinstance(r, grpc.aio.AioRpcError)]
    assert len(refused) == 1 and details(refused[0])[0] == "STATE_CONFLICT"  # the unique index
    payments = [p for o in (first, second) for p in (await harness.order(o.order_id)).payments]
    assert len(payments) == 1


async def test_the_same_slip_with_another_amount_or_on_another_order_is_refused(harness: Harness) -> None:
    order = await created(harness, self_pay())
    await harness.payment.PayPaymentOrder(pos(order.order_id, 5_000))
    other = await created(harness, self_pay())

    for request in (pos(order.order_id, 6_000), pos(other.order_id, 5_000)):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await harness.payment.PayPaymentOrder(request)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert details(refused.value)[0] == "STATE_CONFLICT"
        assert "123456789012" in (refused.value.details() or "")

    assert len((await harness.order(order.order_id)).payments) == 1
    assert not (await harness.order(other.order_id)).payments


async def test_another_reference_on_the_same_terminal_is_another_payment(harness: Harness) -> None:
    order = await created(harness, self_pay())
    await harness.payment.PayPaymentOrder(pos(order.order_id, 5_000))

    reply = await harness.payment.PayPaymentOrder(pos(order.order_id, 7_500, slip("123456789013")))

    assert reply.order.status == pb.ORDER_STATUS_SETTLED and len(reply.order.payments) == 2


async def test_an_order_paid_part_by_wechat_and_part_in_cash(harness: Harness) -> None:
    order = await created(harness, self_pay())
    paying = base.pay(order.order_id)
    paying.amount_fen = 10_000
    await base.patient_pays(harness, await harness.payment.PayPaymentOrder(paying))

    reply = await harness.payment.PayPaymentOrder(cash(order.order_id, 2_500))

    assert reply.order.status == pb.ORDER_STATUS_SETTLED
    assert [(p.channel, p.amount_fen) for p in reply.order.payments] == [
        (pb.CHANNEL_WECHAT_PAY, 10_000), (pb.CHANNEL_CASH, 2_500),
    ]  # fmt: skip
    balances = await harness.trial_balance()
    assert balances["asset:channel_clearing:WECHAT_PAY"].fen == 10_000
    assert balances[CASH_DRAWER].fen == 2_500


async def test_cash_cannot_cover_more_than_is_due(harness: Harness) -> None:
    order = await created(harness, self_pay())
    await harness.payment.PayPaymentOrder(cash(order.order_id, 10_000))

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await harness.payment.PayPaymentOrder(cash(order.order_id, 5_000))

    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(refused.value)[1] == ["amount_fen"]
    assert len((await harness.order(order.order_id)).payments) == 1


async def test_a_cash_refund_waits_for_the_cashier_then_reverses_the_drawer(harness: Harness) -> None:
    order = await created(harness, self_pay())
    await harness.payment.PayPaymentOrder(cash(order.order_id, 12_500))

    asked = await harness.payment.RefundPaymentOrder(refund(order.order_id))

    assert asked.order.status == pb.ORDER_STATUS_REFUNDING
    assert asked.refund.status == pb.REFUND_STATUS_PROCESSING  # handed to the window
    assert await balance(harness, CASH_DRAWER) == 12_500
    confirm = pb.ConfirmWindowRefundRequest(
        request_id=uuid.uuid4().hex, order_id=order.order_id, refund_id=asked.refund.refund_id,
        operator_id="C002",
    )  # fmt: skip
    done = await harness.payment.ConfirmWindowRefund(confirm)

    assert done.order.status == pb.ORDER_STATUS_REFUNDED and done.order.refunded_cash_fen == 12_500
    assert done.refund.status == pb.REFUND_STATUS_SUCCEEDED and done.refund.operator_id == "C002"
    assert await balance(harness, CASH_DRAWER) == 0
    assert kinds(await harness.events(), order.order_id)[-1] == "refund_succeeded"
    confirm.request_id = uuid.uuid4().hex  # confirmed again: the same refund, nothing new
    again = await harness.payment.ConfirmWindowRefund(confirm)
    assert again.refund == done.refund and await balance(harness, CASH_DRAWER) == 0


async def test_a_pos_refund_is_confirmed_with_the_terminal_refund_slip(harness: Harness) -> None:
    order = await created(harness, insured())
    await harness.payment.PayPaymentOrder(pos(order.order_id, order.cash_due_fen))
    await harness.settled()
    asked = await harness.payment.RefundPaymentOrder(refund(order.order_id))
    assert asked.refund.status == pb.REFUND_STATUS_PROCESSING  # revoked (2208), then to the window
    confirm = pb.ConfirmWindowRefundRequest(
        request_id=uuid.uuid4().hex, order_id=order.order_id, refund_id=asked.refund.refund_id,
        operator_id="C001",
    )  # fmt: skip

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await harness.payment.ConfirmWindowRefund(confirm)
    assert details(refused.value)[1] == ["pos"]
    confirm.pos.CopyFrom(slip("998877665544", batch_no="000124"))
    done = await harness.payment.ConfirmWindowRefund(confirm)

    assert done.order.status == pb.ORDER_STATUS_REFUNDED
    assert done.refund.channel_refund_id == "998877665544"
    assert all(amount.fen == 0 for amount in (await harness.trial_balance()).values())


async def test_a_refund_to_wechat_cannot_be_confirmed_at_the_window(harness: Harness) -> None:
    settled = await base.settled_order(harness, self_pay())
    asked = await harness.payment.RefundPaymentOrder(refund(settled.order_id))
    confirm = pb.ConfirmWindowRefundRequest(
        request_id=uuid.uuid4().hex, order_id=settled.order_id, refund_id=asked.refund.refund_id,
        operator_id="C001",
    )  # fmt: skip

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await harness.payment.ConfirmWindowRefund(confirm)

    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda r: r.ClearField("pos"), "pos.reference_no"),
        (lambda r: setattr(r.pos, "reference_no", "12AB56789012"), "pos.reference_no"),
        (lambda r: setattr(r.pos, "reference_no", "123"), "pos.reference_no"),
        (lambda r: setattr(r.pos, "terminal_id", ""), "pos.terminal_id"),
        (lambda r: setattr(r.pos, "batch_no", "1234567"), "pos.batch_no"),
        (lambda r: setattr(r.pos, "masked_card_no", "6222021234561234"), "pos.masked_card_no"),
        (lambda r: setattr(r, "operator_id", ""), "operator_id"),
        (lambda r: setattr(r, "amount_fen", 0), "amount_fen"),
        (lambda r: setattr(r, "method", pb.PAY_METHOD_CASH), "pos"),
        (lambda r: setattr(r, "method", pb.PAY_METHOD_NATIVE_QR), "method"),
    ],
)
async def test_bad_window_input_is_refused_and_never_stored(
    harness: Harness, change: object, field: str
) -> None:
    order = await created(harness, self_pay())
    request = pos(order.order_id, 5_000)
    change(request)  # type: ignore[operator]

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await harness.payment.PayPaymentOrder(request)

    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in details(refused.value)[1]
    assert "6222021234561234" not in (refused.value.details() or "")
    assert not (await harness.order(order.order_id)).payments


async def test_closing_an_order_partly_paid_in_cash_returns_it_at_the_window(harness: Harness) -> None:
    order = await created(harness, self_pay())
    await harness.payment.PayPaymentOrder(cash(order.order_id, 5_000))
    close = pb.ClosePaymentOrderRequest(request_id=uuid.uuid4().hex, order_id=order.order_id, reason="left")

    closed = (await harness.payment.ClosePaymentOrder(close)).order

    assert closed.status == pb.ORDER_STATUS_CLOSED
    [back] = closed.refunds
    assert back.status == pb.REFUND_STATUS_PROCESSING and back.cash_fen == 5_000  # the cashier pays out
    confirm = pb.ConfirmWindowRefundRequest(
        request_id=uuid.uuid4().hex, order_id=order.order_id, refund_id=back.refund_id, operator_id="C001"
    )
    done = await harness.payment.ConfirmWindowRefund(confirm)
    assert done.refund.status == pb.REFUND_STATUS_SUCCEEDED and done.order.status == pb.ORDER_STATUS_CLOSED
    # Taken and handed back at the window, never settled: the drawer and the receipts net to zero,
    # and both movements carry the cashier.
    entries = await harness.ledger(order.order_id)
    assert [(e.kind, e.postings[0].operator_id) for e in entries] == [("PAYMENT", "C001"), ("REFUND", "C001")]
    assert all(amount.fen == 0 for amount in (await harness.trial_balance()).values())


async def test_a_report_recorded_before_a_crash_is_confirmed_by_the_janitor(harness: Harness) -> None:
    order = await created(harness, self_pay())
    # The report's first transaction committed, then the process died before its step ran.
    command = requests.pay_order(pos(order.order_id, 12_500))
    await harness.core.orders._window_attempt(command)
    assert (await harness.order(order.order_id)).payments[0].status == pb.PAYMENT_STATUS_PENDING

    await harness.core.janitor.sweep()

    swept = await harness.order(order.order_id)
    assert swept.status == pb.ORDER_STATUS_SETTLED and swept.payments[0].status == pb.PAYMENT_STATUS_SUCCEEDED
    again = await harness.payment.PayPaymentOrder(pos(order.order_id, 12_500))  # the HIS's retry
    assert again.payment.payment_id == swept.payments[0].payment_id
