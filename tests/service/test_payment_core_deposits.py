"""Inpatient deposits (预交金) in-process (real gRPC, FakeChannel, SQLite and PostgreSQL): a top-up is a
payment order of scene INPATIENT_DEPOSIT paid through a channel; the balance grows once its payment
succeeded (at once in cash, on the notification for a QR code) and the ledger credits the patient
deposit liability, never revenue; bad input stores nothing; a replayed request is one top-up."""

from __future__ import annotations

import uuid

import grpc
import pytest
from medpay.payment.v1 import payment_pb2 as pb

from services.runtime.money import Money
from tests.service import test_payment_core as base
from tests.service.test_payment_core import Harness, details

database = base.database
harness = base.harness

DEPOSIT = "liability:patient_deposit"
CASH_DRAWER = "asset:channel_clearing:CASH"
WECHAT = "asset:channel_clearing:WECHAT_PAY"


def top_up(amount_fen: int, channel: int = pb.CHANNEL_CASH, **fields: object) -> pb.TopUpDepositRequest:
    cash = channel == pb.CHANNEL_CASH
    values: dict[str, object] = {
        "request_id": uuid.uuid4().hex, "inpatient_no": "ZY2026001", "amount_fen": amount_fen,
        "channel": channel, "method": pb.PAY_METHOD_CASH if cash else pb.PAY_METHOD_NATIVE_QR,
        "campus_code": "FZ900", "his_patient_id": "P-0001", "operator_id": "C001" if cash else "",
    }  # fmt: skip
    return pb.TopUpDepositRequest(**{**values, **fields})  # type: ignore[arg-type]


async def account(h: Harness, inpatient_no: str = "ZY2026001") -> pb.DepositAccount:
    return (await h.payment.GetDepositAccount(pb.GetDepositAccountRequest(inpatient_no=inpatient_no))).account


async def test_a_cash_and_a_qr_top_up_add_up_and_are_a_liability_not_revenue(harness: Harness) -> None:
    in_cash = await harness.payment.TopUpDeposit(top_up(500_000))
    assert in_cash.payment.status == pb.PAYMENT_STATUS_SUCCEEDED and in_cash.balance_fen == 500_000

    by_qr = await harness.payment.TopUpDeposit(top_up(200_000, pb.CHANNEL_WECHAT_PAY))
    assert by_qr.payment.code_url and by_qr.balance_fen == 500_000  # not paid yet: not counted
    reply = await harness.notify(*harness.channel.patient_pays(by_qr.payment.out_trade_no))
    assert reply.status_code == 204
    await harness.settled()

    deposit = await account(harness)
    assert (deposit.balance_fen, deposit.topped_up_fen, deposit.used_fen, deposit.refunded_fen) == (
        700_000, 700_000, 0, 0,
    )  # fmt: skip
    assert [p.amount_fen for p in deposit.top_ups] == [500_000, 200_000]
    assert all(p.status == pb.PAYMENT_STATUS_SUCCEEDED for p in deposit.top_ups)
    order = await harness.order(by_qr.order_id)
    assert order.scene == pb.SCENE_INPATIENT_DEPOSIT and order.status == pb.ORDER_STATUS_SETTLED
    balances = await harness.trial_balance()
    assert sum(b.fen for b in balances.values()) == 0
    assert balances[DEPOSIT] == Money(-700_000)  # a credit: owed to the patient
    assert (balances[CASH_DRAWER], balances[WECHAT]) == (Money(500_000), Money(200_000))
    assert not [account for account in balances if account.startswith("revenue:")]


async def test_a_qr_top_up_never_paid_leaves_the_balance_unchanged(harness: Harness) -> None:
    await harness.payment.TopUpDeposit(top_up(300_000))
    unpaid = await harness.payment.TopUpDeposit(top_up(100_000, pb.CHANNEL_WECHAT_PAY))
    await harness.settled()

    deposit = await account(harness)
    assert (deposit.balance_fen, deposit.topped_up_fen) == (300_000, 300_000)
    assert [p.amount_fen for p in deposit.top_ups] == [300_000]
    assert (await harness.order(unpaid.order_id)).status == pb.ORDER_STATUS_PAYING
    assert (await harness.trial_balance())[DEPOSIT] == Money(-300_000)


async def test_a_replayed_top_up_is_one_top_up(harness: Harness) -> None:
    request = top_up(80_000)
    first = await harness.payment.TopUpDeposit(request)
    again = await harness.payment.TopUpDeposit(request)

    assert again == first
    deposit = await account(harness)
    assert deposit.balance_fen == 80_000 and len(deposit.top_ups) == 1
    listing = await harness.payment.ListPaymentOrders(pb.ListPaymentOrdersRequest())
    assert len(listing.orders) == 1


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"inpatient_no": ""}, "inpatient_no"),
        ({"inpatient_no": "ZY 2026/001"}, "inpatient_no"),
        ({"inpatient_no": "Z" * 31}, "inpatient_no"),
        ({"amount_fen": 0}, "amount_fen"),
        ({"amount_fen": -1}, "amount_fen"),
        ({"amount_fen": 100_000_001}, "amount_fen"),
        ({"campus_code": ""}, "campus_code"),
        ({"his_patient_id": ""}, "his_patient_id"),
        ({"channel": pb.CHANNEL_UNSPECIFIED}, "channel"),
        ({"method": pb.PAY_METHOD_UNSPECIFIED}, "method"),
        ({"operator_id": ""}, "operator_id"),
        ({"method": pb.PAY_METHOD_NATIVE_QR}, "method"),
    ],
)
async def test_bad_input_names_the_field_and_stores_nothing(
    harness: Harness, fields: dict[str, object], field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.payment.TopUpDeposit(top_up(**{"amount_fen": 10_000, **fields}))  # type: ignore[arg-type]

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(caught.value) == ("FIELD_INVALID", [field])
    assert "P-0001" not in (caught.value.details() or "")
    assert not (await harness.payment.ListPaymentOrders(pb.ListPaymentOrdersRequest())).orders
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await account(harness)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_method_not_offered_for_top_ups_says_so_and_stores_nothing(harness: Harness) -> None:
    request = top_up(10_000, pb.CHANNEL_WECHAT_PAY, method=pb.PAY_METHOD_JSAPI)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.payment.TopUpDeposit(request)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED and details(caught.value)[0] == "NOT_OFFERED"
    assert not (await harness.payment.ListPaymentOrders(pb.ListPaymentOrdersRequest())).orders


async def test_an_inpatient_number_of_another_patient_is_refused(harness: Harness) -> None:
    await harness.payment.TopUpDeposit(top_up(10_000))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.payment.TopUpDeposit(top_up(10_000, his_patient_id="P-0002"))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "P-0002" not in (caught.value.details() or "")
    assert (await account(harness)).balance_fen == 10_000


async def test_an_unknown_account_is_not_found_and_a_bad_number_is_invalid(harness: Harness) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await account(harness, "ZY404")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await account(harness, "")
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT and details(bad.value) == (
        "FIELD_INVALID", ["inpatient_no"],
    )  # fmt: skip


async def test_a_top_up_order_is_not_refunded_on_its_own(harness: Harness) -> None:
    topped = await harness.payment.TopUpDeposit(top_up(50_000))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.payment.RefundPaymentOrder(base.refund(topped.order_id))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details(caught.value)[0] == "STATE_CONFLICT"
    assert (await account(harness)).balance_fen == 50_000
    assert (await harness.trial_balance())[DEPOSIT] == Money(-50_000)
    assert (await harness.order(topped.order_id)).status == pb.ORDER_STATUS_SETTLED


async def test_a_cash_top_up_is_in_the_cashiers_drawer_at_the_shift_close(harness: Harness) -> None:
    await harness.payment.TopUpDeposit(top_up(300_000, operator_id="C007"))

    shift = await harness.payment.CloseCashierShift(
        pb.CloseCashierShiftRequest(
            request_id=uuid.uuid4().hex,
            cashier_id="C007",
            campus_code="FZ900",
            closed_at=harness.clock().isoformat(),
        )
    )
    assert shift.cash_to_hand_over_fen == 300_000
