"""The hospital deposit (预交金) as a channel, deposit refunds and the self-pay discharge, in-process
(real gRPC, FakeChannel, SQLite and PostgreSQL).

Every test ends on the same invariants: the balance is never below zero and equals topped_up - used
- refunded, the ledger sums to zero, and the deposit liability in the ledger is the balance (once no
refund is on its way and no discharge waits for its shortfall)."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest
from medpay.common.v1 import common_pb2
from medpay.payment.v1 import payment_pb2 as pb

from services.payment_core.adapters.channels.ports import RefundStatus
from services.runtime.money import Money
from tests.service import test_payment_core as base
from tests.service.test_payment_core import Harness, details
from tests.service.test_payment_core_deposits import DEPOSIT, account, top_up

database = base.database
harness = base.harness
INPATIENT = "ZY2026001"


def from_deposit(
    order_id: str, amount_fen: int = 0, inpatient_no: str = INPATIENT
) -> pb.PayPaymentOrderRequest:
    return pb.PayPaymentOrderRequest(
        request_id=uuid.uuid4().hex, order_id=order_id, channel=pb.CHANNEL_DEPOSIT,
        method=pb.PAY_METHOD_DEPOSIT, amount_fen=amount_fen, inpatient_no=inpatient_no,
    )  # fmt: skip


def refund_deposit(amount_fen: int = 0) -> pb.RefundDepositRequest:
    return pb.RefundDepositRequest(
        request_id=uuid.uuid4().hex, inpatient_no=INPATIENT, amount_fen=amount_fen,
        reason="patient asked", operator_id="C001",
    )  # fmt: skip


def discharge(*totals: int, insured: bool = False) -> pb.SettleDischargeRequest:
    request = pb.SettleDischargeRequest(
        request_id=uuid.uuid4().hex, inpatient_no=INPATIENT, campus_code="FZ900", dept_code="0301",
        patient=common_pb2.Patient(his_patient_id="P-0001"), items=base.items(*totals),
        discharged_at="2026-12-02T10:00:00+08:00",
    )  # fmt: skip
    if insured:
        request.insurance.CopyFrom(pb.InsuranceRequest(insutype="310", med_type="21"))
    return request


async def outpatient_order(h: Harness) -> pb.PaymentOrder:
    """A self-pay bill of 12,500 fen for the deposit's patient."""
    return (await h.payment.CreatePaymentOrder(base.self_pay())).order


async def qr_top_up(h: Harness, amount_fen: int) -> pb.TopUpDepositResponse:
    paying = await h.payment.TopUpDeposit(top_up(amount_fen, pb.CHANNEL_WECHAT_PAY))
    assert (await h.notify(*h.channel.patient_pays(paying.payment.out_trade_no))).status_code == 204
    await h.settled()
    return paying


async def confirm_cash_refunds(h: Harness, refunds: list[pb.Refund]) -> None:
    for refund in refunds:
        order = await h.order(refund.order_id)
        channel = next(p.channel for p in order.payments if p.payment_id == refund.payment_id)
        if channel == pb.CHANNEL_CASH:
            await h.payment.ConfirmWindowRefund(
                pb.ConfirmWindowRefundRequest(
                    request_id=uuid.uuid4().hex, order_id=refund.order_id, refund_id=refund.refund_id,
                    operator_id="C001",
                )
            )  # fmt: skip


async def holds_together(h: Harness, settled: bool = True) -> pb.DepositAccount:
    """The invariants; `settled`: nothing on its way, so the ledger's liability is the balance."""
    deposit = await account(h)
    assert deposit.balance_fen >= 0
    assert deposit.balance_fen == deposit.topped_up_fen - deposit.used_fen - deposit.refunded_fen
    balances = await h.trial_balance()
    assert sum(b.fen for b in balances.values()) == 0
    if settled:
        assert balances.get(DEPOSIT, Money(0)) == Money(-deposit.balance_fen)
    return deposit


# ---- paying from the deposit ---------------------------------------------------------------------------


async def test_an_order_paid_from_the_deposit_debits_the_balance_and_the_liability(harness: Harness) -> None:
    await harness.payment.TopUpDeposit(top_up(500_000))
    order = await outpatient_order(harness)

    paid = await harness.payment.PayPaymentOrder(from_deposit(order.order_id))

    assert paid.payment.status == pb.PAYMENT_STATUS_SUCCEEDED and paid.payment.channel == pb.CHANNEL_DEPOSIT
    assert paid.order.status == pb.ORDER_STATUS_SETTLED and paid.payment.amount_fen == 12_500
    deposit = await holds_together(harness)
    assert (deposit.balance_fen, deposit.used_fen) == (487_500, 12_500)
    balances = await harness.trial_balance()
    assert balances["revenue:outpatient"] == Money(-12_500)
    assert not [a for a in balances if a.endswith(":DEPOSIT")]  # no clearing account for the deposit


async def test_a_payment_the_balance_does_not_cover_is_refused_by_storage_and_stores_nothing(
    harness: Harness,
) -> None:
    await harness.payment.TopUpDeposit(top_up(10_000))
    order = await outpatient_order(harness)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.payment.PayPaymentOrder(from_deposit(order.order_id))

    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details(caught.value)[0] == "DEPOSIT_INSUFFICIENT"
    stored = await harness.order(order.order_id)
    assert stored.status == pb.ORDER_STATUS_AWAITING_PAYMENT and not stored.payments
    assert (await holds_together(harness)).balance_fen == 10_000
    # What the balance covers is paid from it, the rest in cash: two payments, one order.
    part = await harness.payment.PayPaymentOrder(from_deposit(order.order_id, 10_000))
    assert part.order.status == pb.ORDER_STATUS_AWAITING_PAYMENT and part.order.cash_paid_fen == 10_000
    rest = base.pay(order.order_id, pb.CHANNEL_CASH, pb.PAY_METHOD_CASH)
    rest.amount_fen, rest.operator_id = 2_500, "C001"
    assert (await harness.payment.PayPaymentOrder(rest)).order.status == pb.ORDER_STATUS_SETTLED
    deposit = await holds_together(harness)
    assert (deposit.balance_fen, deposit.used_fen) == (0, 10_000)


async def test_two_concurrent_payments_beyond_the_balance_exactly_one_succeeds(harness: Harness) -> None:
    await harness.payment.TopUpDeposit(top_up(20_000))
    first, second = await outpatient_order(harness), await outpatient_order(harness)

    answers = await asyncio.gather(
        harness.payment.PayPaymentOrder(from_deposit(first.order_id)),
        harness.payment.PayPaymentOrder(from_deposit(second.order_id)),
        return_exceptions=True,
    )

    paid = [a for a in answers if isinstance(a, pb.PayPaymentOrderResponse)]
    refused = [a for a in answers if isinstance(a, grpc.aio.AioRpcError)]
    assert len(paid) == 1 and len(refused) == 1, answers
    assert details(refused[0])[0] == "DEPOSIT_INSUFFICIENT"
    statuses = sorted([(await harness.order(o.order_id)).status for o in (first, second)])
    assert statuses == sorted([pb.ORDER_STATUS_SETTLED, pb.ORDER_STATUS_AWAITING_PAYMENT])
    deposit = await holds_together(harness)
    assert (deposit.balance_fen, deposit.used_fen) == (7_500, 12_500)


async def test_a_refund_of_a_deposit_payment_credits_the_balance_back_and_reverses_the_posting(
    harness: Harness,
) -> None:
    await harness.payment.TopUpDeposit(top_up(50_000))
    order = await outpatient_order(harness)
    await harness.payment.PayPaymentOrder(from_deposit(order.order_id))

    refunded = await harness.payment.RefundPaymentOrder(base.refund(order.order_id))

    assert refunded.refund.status == pb.REFUND_STATUS_SUCCEEDED
    assert refunded.order.status == pb.ORDER_STATUS_REFUNDED
    deposit = await holds_together(harness)
    assert (deposit.balance_fen, deposit.used_fen, deposit.refunded_fen) == (50_000, 0, 0)
    assert (await harness.trial_balance())["revenue:outpatient"] == Money(0)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"inpatient_no": ""}, "inpatient_no"),
        ({"inpatient_no": "ZY 1"}, "inpatient_no"),
        ({"method": pb.PAY_METHOD_NATIVE_QR}, "method"),
        ({"channel": pb.CHANNEL_WECHAT_PAY, "method": pb.PAY_METHOD_NATIVE_QR}, "inpatient_no"),
    ],
)
async def test_bad_deposit_payments_name_the_field_and_store_nothing(
    harness: Harness, fields: dict[str, object], field: str
) -> None:
    await harness.payment.TopUpDeposit(top_up(50_000))
    order = await outpatient_order(harness)
    request = from_deposit(order.order_id)
    for name, value in fields.items():
        setattr(request, name, value)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.payment.PayPaymentOrder(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and details(caught.value) == (
        "FIELD_INVALID", [field],
    )  # fmt: skip
    assert not (await harness.order(order.order_id)).payments
    assert (await holds_together(harness)).balance_fen == 50_000


async def test_another_patients_deposit_does_not_pay_the_order(harness: Harness) -> None:
    await harness.payment.TopUpDeposit(top_up(50_000, inpatient_no="ZY2026002", his_patient_id="P-0002"))
    order = await outpatient_order(harness)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.payment.PayPaymentOrder(from_deposit(order.order_id, inpatient_no="ZY2026002"))
    assert details(caught.value)[0] == "STATE_CONFLICT" and "P-000" not in (caught.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await harness.payment.PayPaymentOrder(from_deposit(order.order_id, inpatient_no="ZY404"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert not (await harness.order(order.order_id)).payments
    unpaid_top_up = await harness.payment.TopUpDeposit(
        top_up(10_000, pb.CHANNEL_WECHAT_PAY, inpatient_no="ZY2026002", his_patient_id="P-0002")
    )
    with pytest.raises(grpc.aio.AioRpcError) as circular:
        await harness.payment.PayPaymentOrder(from_deposit(unpaid_top_up.order_id, inpatient_no="ZY2026002"))
    assert details(circular.value)[0] == "STATE_CONFLICT"


# ---- RefundDeposit --------------------------------------------------------------------------------------


async def test_a_deposit_refund_goes_back_newest_top_up_first_each_to_its_channel(harness: Harness) -> None:
    cash = await harness.payment.TopUpDeposit(top_up(300_000))
    qr = await qr_top_up(harness, 200_000)
    harness.channel.answer_next_refunds(RefundStatus.PROCESSING)

    request = refund_deposit(250_000)
    answer = await harness.payment.RefundDeposit(request)

    assert [(r.order_id, r.cash_fen) for r in answer.refunds] == [
        (qr.order_id, 200_000),
        (cash.order_id, 50_000),
    ]
    # Taken from the balance as soon as it is recorded, though nothing has reached the patient yet.
    assert (answer.account.balance_fen, answer.account.refunded_fen) == (250_000, 250_000)
    assert await harness.payment.RefundDeposit(request) == answer  # a replay: no second refund
    await holds_together(harness, settled=False)

    await confirm_cash_refunds(harness, list(answer.refunds))
    (wechat,) = [r for r in answer.refunds if r.order_id == qr.order_id]
    harness.channel.finish_refund(wechat.out_refund_no, RefundStatus.SUCCEEDED)
    await harness.core.janitor.sweep()
    harness.clock.offset = base.timedelta(minutes=5)
    await harness.core.janitor.sweep()
    for refund in answer.refunds:
        order = await harness.order(refund.order_id)
        assert [r.status for r in order.refunds] == [pb.REFUND_STATUS_SUCCEEDED], order
    deposit = await holds_together(harness)
    assert (deposit.balance_fen, deposit.topped_up_fen, deposit.refunded_fen) == (250_000, 500_000, 250_000)
    assert (await harness.trial_balance())["asset:channel_clearing:WECHAT_PAY"] == Money(0)


async def test_a_deposit_refund_beyond_the_balance_is_refused_and_stores_nothing(harness: Harness) -> None:
    topped = await harness.payment.TopUpDeposit(top_up(30_000))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.payment.RefundDeposit(refund_deposit(30_001))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details(caught.value)[0] == "DEPOSIT_INSUFFICIENT"
    assert not (await harness.order(topped.order_id)).refunds
    assert (await holds_together(harness)).balance_fen == 30_000
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await harness.payment.RefundDeposit(refund_deposit(-1))
    assert details(bad.value) == ("FIELD_INVALID", ["amount_fen"])


async def test_a_deposit_refund_the_channel_refuses_gives_the_balance_back(harness: Harness) -> None:
    qr = await qr_top_up(harness, 80_000)
    harness.channel.answer_next_refunds(RefundStatus.FAILED)

    answer = await harness.payment.RefundDeposit(refund_deposit())

    assert [r.status for r in answer.refunds] == [pb.REFUND_STATUS_FAILED]
    deposit = await holds_together(harness)
    assert (deposit.balance_fen, deposit.refunded_fen) == (80_000, 0)
    assert (await harness.order(qr.order_id)).status == pb.ORDER_STATUS_SETTLED
    # Asked again, it goes back (the failed refund took nothing).
    again = await harness.payment.RefundDeposit(refund_deposit())
    assert [r.status for r in again.refunds] == [pb.REFUND_STATUS_SUCCEEDED]
    assert (await holds_together(harness)).balance_fen == 0


# ---- SettleDischarge (self-pay) ----------------------------------------------------------------------


async def test_a_discharge_pays_from_the_deposit_and_refunds_the_surplus_to_the_original_channels(
    harness: Harness,
) -> None:
    cash = await harness.payment.TopUpDeposit(top_up(500_000))
    qr = await qr_top_up(harness, 100_000)

    request = discharge(300_000, 150_000)
    done = await harness.payment.SettleDischarge(request)

    assert done.order.scene == pb.SCENE_DISCHARGE and done.order.status == pb.ORDER_STATUS_SETTLED
    assert [(p.channel, p.amount_fen) for p in done.order.payments] == [(pb.CHANNEL_DEPOSIT, 450_000)]
    assert done.shortfall_fen == 0
    assert [(r.order_id, r.cash_fen) for r in done.deposit_refunds] == [
        (qr.order_id, 100_000),
        (cash.order_id, 50_000),
    ]
    assert (done.account.balance_fen, done.account.used_fen, done.account.refunded_fen) == (
        0,
        450_000,
        150_000,
    )
    assert await harness.payment.SettleDischarge(request) == done  # a replay
    await confirm_cash_refunds(harness, list(done.deposit_refunds))
    deposit = await holds_together(harness)
    assert deposit.balance_fen == 0
    assert (await harness.trial_balance())["revenue:discharge"] == Money(-450_000)
    # The same stay discharged again (another request_id) answers the first, as it stands now.
    second = await harness.payment.SettleDischarge(discharge(999))
    assert second.order.order_id == done.order.order_id and second.order.total_fen == 450_000
    assert [r.refund_id for r in second.deposit_refunds] == [r.refund_id for r in done.deposit_refunds]
    assert all(r.status == pb.REFUND_STATUS_SUCCEEDED for r in second.deposit_refunds)


async def test_a_discharge_beyond_the_deposit_leaves_the_shortfall_to_collect(harness: Harness) -> None:
    await harness.payment.TopUpDeposit(top_up(100_000))

    done = await harness.payment.SettleDischarge(discharge(120_000, 30_000))

    assert done.order.status == pb.ORDER_STATUS_AWAITING_PAYMENT and done.shortfall_fen == 50_000
    assert (done.account.balance_fen, done.account.used_fen) == (0, 100_000)
    assert not done.deposit_refunds
    await holds_together(harness, settled=False)
    rest = base.pay(done.order.order_id, pb.CHANNEL_CASH, pb.PAY_METHOD_CASH)
    rest.amount_fen, rest.operator_id = done.shortfall_fen, "C001"
    assert (await harness.payment.PayPaymentOrder(rest)).order.status == pb.ORDER_STATUS_SETTLED
    await holds_together(harness)
    balances = await harness.trial_balance()
    assert (balances["revenue:discharge"], balances["asset:channel_clearing:CASH"]) == (
        Money(-150_000), Money(150_000),
    )  # fmt: skip


async def test_a_discharge_without_a_deposit_account_is_not_found_and_an_insured_one_not_offered(
    harness: Harness,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await harness.payment.SettleDischarge(discharge(10_000))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    await harness.payment.TopUpDeposit(top_up(10_000))
    with pytest.raises(grpc.aio.AioRpcError) as insured:
        await harness.payment.SettleDischarge(discharge(10_000, insured=True))
    assert (
        insured.value.code() == grpc.StatusCode.UNIMPLEMENTED and details(insured.value)[0] == "NOT_OFFERED"
    )
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await harness.payment.SettleDischarge(discharge())
    assert details(bad.value) == ("FIELD_INVALID", ["items"])
    assert (await holds_together(harness)).balance_fen == 10_000


async def test_a_discharge_whose_shortfall_was_never_collected_gives_the_deposit_back_when_it_expires(
    harness: Harness,
) -> None:
    await harness.payment.TopUpDeposit(top_up(100_000))
    first = await harness.payment.SettleDischarge(discharge(150_000))
    assert first.shortfall_fen == 50_000 and first.account.balance_fen == 0

    harness.clock.offset = base.timedelta(hours=1)  # past the order's expiry
    await harness.core.janitor.sweep()

    closed = await harness.order(first.order.order_id)
    assert closed.status == pb.ORDER_STATUS_CLOSED
    assert [r.status for r in closed.refunds] == [pb.REFUND_STATUS_SUCCEEDED]  # back into the deposit
    deposit = await holds_together(harness)
    assert (deposit.balance_fen, deposit.used_fen) == (100_000, 0)
    # The stay is discharged again: a new order (the closed one took nothing).
    again = await harness.payment.SettleDischarge(discharge(80_000))
    assert again.order.order_id != first.order.order_id and again.order.status == pb.ORDER_STATUS_SETTLED
    assert [r.cash_fen for r in again.deposit_refunds] == [20_000]
    await confirm_cash_refunds(harness, list(again.deposit_refunds))
    assert (await holds_together(harness)).balance_fen == 0


async def test_a_discharge_cut_off_after_it_was_paid_has_its_surplus_paid_out_by_the_janitor(
    harness: Harness,
) -> None:
    """The surplus refund commits with the deposit payment of the discharge, due at once; the call
    dies before it sends it: the janitor pays it out, and the HIS's retry answers the outcome."""
    qr = await qr_top_up(harness, 300_000)
    process, real = harness.core.process, harness.core.process.advance

    async def killed(*args: object, **kwargs: object) -> object:
        raise RuntimeError("payment-core was killed here")

    process.advance = killed  # type: ignore[method-assign]
    request = discharge(100_000)
    with pytest.raises(grpc.aio.AioRpcError):
        await harness.payment.SettleDischarge(request)
    process.advance = real  # type: ignore[method-assign]
    waiting = await harness.core.orders.get(qr.order_id, look_now=False)
    assert [(r.cash.fen, r.status.value) for r in waiting.refunds] == [(200_000, "PENDING")]
    assert (await account(harness)).balance_fen == 0  # out of the balance with the payment

    await harness.core.janitor.sweep()

    paid_out = await harness.order(qr.order_id)
    assert [r.status for r in paid_out.refunds] == [pb.REFUND_STATUS_SUCCEEDED]
    done = await harness.payment.SettleDischarge(request)
    assert done.order.status == pb.ORDER_STATUS_SETTLED and len(done.order.payments) == 1
    assert [(r.order_id, r.cash_fen, r.status) for r in done.deposit_refunds] == [
        (qr.order_id, 200_000, pb.REFUND_STATUS_SUCCEEDED)
    ]
    deposit = await holds_together(harness)
    assert (deposit.balance_fen, deposit.used_fen, deposit.refunded_fen) == (0, 100_000, 200_000)
