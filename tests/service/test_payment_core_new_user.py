"""What a new user of payment-core ran into: each test showed the defect before its fix.
Same in-process harness as test_payment_core (real gRPC server, FakeChannel, FakeInsurance), on
SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import grpc
import pytest
from medpay.payment.v1 import payment_pb2 as pb

from services.runtime.errors import OutcomeUnknown
from tests.service import test_payment_core as base
from tests.service.test_payment_core import Harness, created_and_paying, details, insured, pay, self_pay

# The fixtures of the existing harness, shared rather than copied.
database = base.database
harness = base.harness


@pytest.mark.parametrize(
    ("wechat_success_time", "utc"),
    [
        ("2026-11-25T10:00:00+08:00", datetime(2026, 11, 25, 2, 0, tzinfo=UTC)),
        # Late in the Beijing day: kept as Beijing wall-clock time it would fall on the 26th.
        ("2026-11-25T23:30:00+08:00", datetime(2026, 11, 25, 15, 30, tzinfo=UTC)),
    ],
)
async def test_a_beijing_success_time_is_stored_as_the_utc_instant_it_names(
    harness: Harness, wechat_success_time: str, utc: datetime
) -> None:
    paying = await created_and_paying(harness, self_pay())
    at = datetime.fromisoformat(wechat_success_time)
    reply = await harness.notify(*harness.channel.patient_pays(paying.payment.out_trade_no, at=at))
    assert reply.status_code == 204
    await harness.settled()

    order = await harness.order(paying.order.order_id)
    [payment] = order.payments
    assert payment.succeeded_at.ToDatetime(tzinfo=UTC) == utc
    day = await harness.payment.ExportTransactions(pb.ExportTransactionsRequest(business_date="2026-11-25"))
    [moved] = [t for t in day.transactions if t.order_id == order.order_id]
    assert moved.occurred_at.ToDatetime(tzinfo=UTC) == utc
    next_day = await harness.payment.ExportTransactions(
        pb.ExportTransactionsRequest(business_date="2026-11-26")
    )
    assert order.order_id not in [t.order_id for t in next_day.transactions]


def _priced(request: pb.CreatePaymentOrderRequest, quantity: int, unit_price: int, line_total: int) -> None:
    item = request.items[1]
    item.quantity_ten_thousandths, item.unit_price_fen, item.line_total_fen = quantity, unit_price, line_total


@pytest.mark.parametrize("make_request", [self_pay, insured], ids=["self-pay", "insured"])
@pytest.mark.parametrize(
    ("quantity", "unit_price", "line_total"),
    [
        (10_000, 2_500, 2_501),  # 1 unit at 25.00: one fen too much
        (1_000_000, 250, 25_050),  # 100 units at 2.50, 50 fen too much
        (15_000, 333, 499),  # 1.5 × 3.33 = 4.995 rounds half-up to 5.00, not down
        (10_000, 0, 100),  # a free item cannot bill 1.00
    ],
)
async def test_a_line_total_other_than_quantity_times_unit_price_is_refused_for_every_order(
    harness: Harness,
    make_request: Callable[[], pb.CreatePaymentOrderRequest],
    quantity: int,
    unit_price: int,
    line_total: int,
) -> None:
    request = make_request()
    _priced(request, quantity, unit_price, line_total)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.payment.CreatePaymentOrder(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(caught.value) == ("FIELD_INVALID", ["items[1].line_total_fen"])
    assert harness.insurance.calls == []
    listed = await harness.payment.ListPaymentOrders(pb.ListPaymentOrdersRequest())
    assert list(listed.orders) == []


@pytest.mark.parametrize("make_request", [self_pay, insured], ids=["self-pay", "insured"])
async def test_a_line_total_rounded_half_up_to_the_fen_is_accepted_for_every_order(
    harness: Harness, make_request: Callable[[], pb.CreatePaymentOrderRequest]
) -> None:
    request = make_request()
    _priced(request, 15_000, 333, 500)  # 1.5 × 3.33 = 4.995 → 5.00
    created = await harness.payment.CreatePaymentOrder(request)
    assert created.order.total_fen == request.items[0].line_total_fen + 500


async def test_a_self_pay_order_shows_a_split_with_no_insurer_share(harness: Harness) -> None:
    created = (await harness.payment.CreatePaymentOrder(self_pay())).order
    paying = await harness.payment.PayPaymentOrder(pay(created.order_id))
    reply = await harness.notify(*harness.channel.patient_pays(paying.payment.out_trade_no))
    assert reply.status_code == 204
    await harness.settled()
    settled = await harness.order(created.order_id)

    for order in (created, settled):
        assert not order.insured and order.HasField("split")
        split, bill = order.split, order.total_fen
        # The whole bill is the patient's own cash; every fund, account and hospital share is zero.
        assert (split.medfee_sumamt_fen, split.fulamt_ownpay_amt_fen) == (bill, bill)
        assert (split.psn_part_amt_fen, split.psn_cash_pay_fen) == (bill, order.cash_due_fen)
        zero = [f"{name}_fen" for name in ("overlmt_selfpay", "preselfpay_amt", "inscp_scp_amt",
                                          "act_pay_dedc", "hifp_pay", "fund_pay_sumamt", "acct_pay",
                                          "hosp_part_amt", "balc")]  # fmt: skip
        assert [getattr(split, name) for name in zero] == [0] * len(zero)
        # The contract's identities hold as for an insured order.
        assert split.medfee_sumamt_fen == (
            split.fulamt_ownpay_amt_fen + split.overlmt_selfpay_fen + split.preselfpay_amt_fen
            + split.inscp_scp_amt_fen
        )  # fmt: skip
        assert split.psn_part_amt_fen == split.acct_pay_fen + split.psn_cash_pay_fen


async def test_an_insured_order_whose_presettlement_is_unknown_shows_no_split(harness: Harness) -> None:
    harness.insurance.fail_next["presettle"] = [OutcomeUnknown("2206 timed out")]
    request = insured()
    with pytest.raises(grpc.aio.AioRpcError):
        await harness.payment.CreatePaymentOrder(request)
    [waiting] = (await harness.payment.ListPaymentOrders(pb.ListPaymentOrdersRequest())).orders
    assert waiting.insured and not waiting.HasField("split")  # not an all-cash bill: not known yet
