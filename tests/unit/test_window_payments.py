"""Cash and POS at the window, without I/O: what PayPaymentOrder accepts (every refusal names its
field), the order's rule that a POS slip reported again is the payment already recorded, the
cashier's confirmation of a refund, and the window channel adapter's answers."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from medpay.payment.v1 import payment_pb2 as pb

from services.payment_core.adapters.channels import ports
from services.payment_core.adapters.channels.window import WindowChannel
from services.payment_core.domain.model import PaymentStatus, PosSlip, RefundStatus
from services.payment_core.entrypoints import requests
from services.runtime.errors import InvalidArgument, NotFound, StateConflict
from services.runtime.money import Money
from tests.unit.test_order_process import T0, awaiting, window_recorded, window_refund_at_the_cashier

SLIP = PosSlip("123456789012", "12345678", "000123", "622202******1234")


def pos_request(**changes: object) -> pb.PayPaymentOrderRequest:
    request = pb.PayPaymentOrderRequest(
        request_id="r1", order_id="ord_1", channel=pb.CHANNEL_POS, method=pb.PAY_METHOD_POS,
        amount_fen=5_000, operator_id="C001",
        pos=pb.PosSlip(reference_no="123456789012", terminal_id="12345678", batch_no="000123",
                       masked_card_no="622202******1234"),
    )  # fmt: skip
    for name, value in changes.items():
        setattr(request, name, value)
    return request


def refused_fields(request: pb.PayPaymentOrderRequest) -> list[str]:
    with pytest.raises(InvalidArgument) as caught:
        requests.pay_order(request)
    return [v.field for v in caught.value.violations]


def test_a_pos_report_becomes_a_command_with_its_slip_and_operator() -> None:
    command = requests.pay_order(pos_request())
    assert (command.channel, command.method, command.amount) == ("POS", "POS", Money(5_000))
    assert (command.operator_id, command.pos) == ("C001", SLIP)


def test_cash_needs_an_amount_and_an_operator_and_takes_no_slip() -> None:
    request = pos_request(channel=pb.CHANNEL_CASH, method=pb.PAY_METHOD_CASH, amount_fen=0, operator_id="")
    assert refused_fields(request) == ["amount_fen", "operator_id", "pos"]
    request.ClearField("pos")
    request.amount_fen, request.operator_id = 100, "C001"
    assert requests.pay_order(request).pos is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("reference_no", ""), ("reference_no", "12345"), ("reference_no", "1" * 21),
        ("reference_no", "12345678901A"), ("terminal_id", ""), ("terminal_id", "1234-678"),
        ("batch_no", "1234567"), ("batch_no", "12a"), ("masked_card_no", "6222021234561234"),
        ("masked_card_no", "62**"),
    ],
)  # fmt: skip
def test_a_bad_slip_is_refused_naming_its_field(field: str, value: str) -> None:
    request = pos_request()
    setattr(request.pos, field, value)
    assert refused_fields(request) == [f"pos.{field}"]


def test_a_slip_on_another_method_or_a_pos_without_one_is_refused() -> None:
    assert refused_fields(pos_request(channel=pb.CHANNEL_WECHAT_PAY, method=pb.PAY_METHOD_NATIVE_QR)) == [
        "pos"
    ]
    # An operator id is optional for the other methods, but well formed when given.
    qr = pos_request(channel=pb.CHANNEL_WECHAT_PAY, method=pb.PAY_METHOD_NATIVE_QR, operator_id="C 1")
    qr.ClearField("pos")
    assert refused_fields(qr) == ["operator_id"]
    request = pos_request()
    request.ClearField("pos")
    assert refused_fields(request) == ["pos.reference_no"]
    assert refused_fields(pos_request(method=pb.PAY_METHOD_CASH)) == ["method", "pos"]


def test_the_same_slip_again_is_the_payment_already_recorded() -> None:
    order = awaiting()
    first = order.start_window_payment("pay_1", "POS", "POS", T0, Money(5_000), "C001", SLIP)
    again = order.start_window_payment("pay_2", "POS", "POS", T0, Money(5_000), "C002", SLIP)
    assert again is first and len(order.payments) == 1
    with pytest.raises(StateConflict) as conflict:
        order.start_window_payment("pay_3", "POS", "POS", T0, Money(6_000), "C001", SLIP)
    assert "123456789012" in conflict.value.message and conflict.value.metadata["field"] == "pos.reference_no"


def test_a_cashier_confirms_a_cash_refund_once() -> None:
    order = window_refund_at_the_cashier()
    refund = order.window_refund_handed_over("rfd_1", "C002", None, T0)
    assert (refund.status, refund.operator_id) == (RefundStatus.SUCCEEDED, "C002")
    assert order.window_refund_handed_over("rfd_1", "C003", None, T0).operator_id == "C002"  # a replay
    with pytest.raises(NotFound):
        order.window_refund_handed_over("rfd_9", "C002", None, T0)


def test_a_cash_refund_takes_no_slip_and_is_confirmed_only_once_at_the_window() -> None:
    order = window_refund_at_the_cashier()
    with pytest.raises(InvalidArgument):
        order.window_refund_handed_over("rfd_1", "C002", SLIP, T0)
    order = window_recorded()
    order.begin_refund("rfd_1", Money(0), "drug returned", T0)  # not handed to the window yet
    with pytest.raises(StateConflict):
        order.window_refund_handed_over("rfd_1", "C002", None, T0)
    assert order.payments[0].status is PaymentStatus.SUCCEEDED


async def test_the_window_channel_answers_from_the_report_and_refuses_what_it_cannot_know() -> None:
    pos, taken = WindowChannel("POS"), datetime(2026, 12, 2, 9, tzinfo=UTC)
    paid = await pos.record_taken("t1", Money(5_000), ports.WindowReport("C001", taken, "123456789012"))
    assert (paid.state, paid.amount, paid.transaction_id, paid.success_time) == (
        ports.TradeState.PAID, Money(5_000), "123456789012", taken,
    )  # fmt: skip
    with pytest.raises(ports.ChannelRejected):
        await pos.record_taken("t1", Money(5_000), ports.WindowReport("C001", taken))  # no reference
    refund = await pos.refund("r1", "t1", Money(5_000), Money(5_000), "returned")
    assert refund.status is ports.RefundStatus.PROCESSING
    assert (await pos.query_refund("r1", "t1")).status is ports.RefundStatus.PROCESSING
    for call in (pos.query("t1"), pos.close("t1"), pos.reverse("t1"), pos.download_trade_bill(T0.date())):
        with pytest.raises(ports.ChannelRejected) as refused:
            await call
        assert refused.value.reason is not ports.RejectionReason.NOT_FOUND  # never "it never happened"
    assert pos.parse_notification({}, b"{}") is None
