"""WeChat Pay statuses map exhaustively into our closed enums; anything else is an error, not a guess."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from services.payment_core.adapters.channels.ports import (
    ChannelOutcomeUnknown,
    ChannelProtocolError,
    ChannelRejected,
    RefundStatus,
    RejectionReason,
    TradeState,
)
from services.payment_core.adapters.channels.wechatpay_transformers import (
    NOT_NOW,
    REFUND_STATUSES,
    REJECTIONS,
    TRADE_STATES,
    code_payment_from,
    code_payment_refused,
    notification_from,
    refund_from,
    refund_status_of,
    rejection_reason_of,
    trade_state_of,
    trade_status_from,
)
from services.runtime.money import Money

DOCUMENTED_TRADE_STATES = {
    "SUCCESS",
    "REFUND",
    "NOTPAY",
    "CLOSED",
    "REVOKED",
    "USERPAYING",
    "PAYERROR",
    "ACCEPT",
}


def test_every_documented_trade_state_is_mapped_and_nothing_else() -> None:
    assert set(TRADE_STATES) == DOCUMENTED_TRADE_STATES


@pytest.mark.parametrize(
    ("trade_state", "ours"),
    [
        ("SUCCESS", TradeState.PAID),
        ("REFUND", TradeState.REFUNDED),
        ("NOTPAY", TradeState.NOT_PAID),
        ("CLOSED", TradeState.CLOSED),
        ("REVOKED", TradeState.CLOSED),
        ("USERPAYING", TradeState.PAYING),
        ("PAYERROR", TradeState.FAILED),
        ("ACCEPT", TradeState.PAYING),
    ],
)
def test_trade_state_mapping(trade_state: str, ours: TradeState) -> None:
    assert trade_state_of(trade_state) is ours


@pytest.mark.parametrize("unknown", ["", "success", "PAYING", "FINISHED"])
def test_an_unknown_trade_state_is_a_protocol_error(unknown: str) -> None:
    with pytest.raises(ChannelProtocolError):
        trade_state_of(unknown)


def test_refund_statuses_never_turn_an_abnormal_refund_into_a_failed_one() -> None:
    assert set(REFUND_STATUSES) == {"SUCCESS", "PROCESSING", "ABNORMAL", "CLOSED"}
    assert refund_status_of("SUCCESS") is RefundStatus.SUCCEEDED
    # Stuck at the bank: not FAILED (must not be re-issued), not PROCESSING (a person must act).
    assert refund_status_of("ABNORMAL") is RefundStatus.ABNORMAL
    assert refund_status_of("CLOSED") is RefundStatus.FAILED
    with pytest.raises(ChannelProtocolError):
        refund_status_of("DONE")


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("ORDERPAID", RejectionReason.ALREADY_PAID),
        ("ORDERCLOSED", RejectionReason.ALREADY_CLOSED),
        ("ORDER_NOT_EXIST", RejectionReason.NOT_FOUND),
        ("RESOURCE_NOT_EXISTS", RejectionReason.NOT_FOUND),
        ("OUT_TRADE_NO_USED", RejectionReason.INVALID_REQUEST),
        ("PARAM_ERROR", RejectionReason.INVALID_REQUEST),
        ("INVALID_REQUEST", RejectionReason.INVALID_REQUEST),
        ("SIGN_ERROR", RejectionReason.NOT_AUTHORISED),
        ("SOMETHING_NEW", RejectionReason.OTHER),
    ],
)
def test_rejection_codes(code: str, reason: RejectionReason) -> None:
    assert rejection_reason_of(code) is reason


def test_a_refund_beyond_what_remains_is_told_apart_by_the_gateways_message() -> None:
    assert rejection_reason_of("INVALID_REQUEST", "申请退款金额超过订单可退金额") is (
        RejectionReason.REFUND_EXCEEDS_PAID
    )
    assert rejection_reason_of("INVALID_REQUEST", "订单已全额退款") is RejectionReason.REFUND_EXCEEDS_PAID
    assert rejection_reason_of("INVALID_REQUEST", "订单未支付，不能退款") is RejectionReason.INVALID_REQUEST


def test_a_merchant_balance_too_low_is_not_a_rejection() -> None:
    """403 NOT_ENOUGH means "not now" (top the balance up, send the same refund again), never "no"."""
    assert "NOT_ENOUGH" not in REJECTIONS and "FREQUENCY_LIMITED" not in REJECTIONS
    assert set(NOT_NOW) == {"NOT_ENOUGH", "FREQUENCY_LIMITED"}


def test_a_paid_query_answer_becomes_a_trade_status() -> None:
    answer = {
        "appid": "wx8888888888888888",
        "mchid": "1900000109",
        "out_trade_no": "MP2024032100001",
        "transaction_id": "4200000612202403214861322068",
        "trade_type": "NATIVE",
        "trade_state": "SUCCESS",
        "trade_state_desc": "支付成功",
        "bank_type": "OTHERS",
        "success_time": "2024-03-21T13:51:31+08:00",
        "payer": {"openid": "oUpF8u"},
        "amount": {"total": 12_501, "payer_total": 12_501, "currency": "CNY"},
    }
    status = trade_status_from(answer)
    assert (status.state, status.amount, status.channel_state) == (TradeState.PAID, Money(12_501), "SUCCESS")
    assert status.success_time == datetime(2024, 3, 21, 13, 51, 31, tzinfo=timezone(timedelta(hours=8)))


def test_an_unpaid_answer_has_no_transaction_id_and_a_missing_total_is_refused() -> None:
    unpaid = {"out_trade_no": "MP1", "trade_state": "NOTPAY", "amount": {"total": 100, "currency": "CNY"}}
    assert trade_status_from(unpaid).transaction_id is None
    with pytest.raises(ChannelProtocolError):
        trade_status_from({"out_trade_no": "MP1", "trade_state": "NOTPAY", "amount": {"total": "1.00"}})


def test_refund_answers_and_refund_notifications() -> None:
    answer = {
        "refund_id": "50300",
        "out_refund_no": "RF1",
        "out_trade_no": "MP1",
        "status": "PROCESSING",
        "amount": {"total": 12_500, "refund": 5_000, "currency": "CNY"},
    }
    assert refund_from(answer).status is RefundStatus.PROCESSING
    callback = {
        "id": "EV-1",
        "event_type": "REFUND.SUCCESS",
        "resource": {**answer, "refund_status": "SUCCESS", "success_time": "2024-03-21T15:02:09+08:00"},
    }
    notification = notification_from(callback)
    assert notification is not None and notification.refund is not None
    assert (notification.refund.status, notification.out_trade_no) == (RefundStatus.SUCCEEDED, "MP1")


@pytest.mark.parametrize(
    ("event_type", "refund_status", "ours"),
    [
        ("REFUND.SUCCESS", "SUCCESS", RefundStatus.SUCCEEDED),
        ("REFUND.ABNORMAL", "ABNORMAL", RefundStatus.ABNORMAL),
        ("REFUND.CLOSED", "CLOSED", RefundStatus.FAILED),
    ],
)
def test_each_refund_notification_carries_its_status(
    event_type: str, refund_status: str, ours: RefundStatus
) -> None:
    resource = {
        "refund_id": "50300",
        "out_refund_no": "RF1",
        "out_trade_no": "MP1",
        "refund_status": refund_status,
        "amount": {"total": 12_500, "refund": 5_000, "payer_total": 12_500, "payer_refund": 5_000},
    }
    notification = notification_from({"id": "EV-3", "event_type": event_type, "resource": resource})
    assert notification is not None and notification.refund is not None
    assert (notification.event_type, notification.refund.status) == (event_type, ours)


def test_a_refund_notification_whose_status_contradicts_its_event_is_refused() -> None:
    resource = {
        "refund_id": "50300",
        "out_refund_no": "RF1",
        "out_trade_no": "MP1",
        "refund_status": "ABNORMAL",
        "amount": {"total": 12_500, "refund": 5_000},
    }
    with pytest.raises(ChannelProtocolError):
        notification_from({"id": "EV-4", "event_type": "REFUND.SUCCESS", "resource": resource})


def test_an_unknown_event_type_is_not_a_notification() -> None:
    assert notification_from({"id": "EV-2", "event_type": "COUPON.USE", "resource": {}}) is None
    unknown_refund_event = {"id": "EV-5", "event_type": "REFUND.SOMETHING", "resource": {}}
    assert notification_from(unknown_refund_event) is None


def test_a_code_payment_answer_is_paid_userpaying_or_an_error() -> None:
    paid = code_payment_from(
        200,
        {"out_trade_no": "MP1", "trade_state": "SUCCESS", "transaction_id": "4200001",
         "success_time": "2024-03-21T13:00:00+08:00", "amount": {"total": 12_500}},
        "MP1",
        Money(12_500),
    )  # fmt: skip
    assert (paid.state, paid.transaction_id) == (TradeState.PAID, "4200001")
    waiting = code_payment_from(202, {"code": "USERPAYING", "message": "用户支付中"}, "MP1", Money(12_500))
    assert (waiting.state, waiting.channel_state, waiting.amount) == (
        TradeState.PAYING,
        "USERPAYING",
        Money(12_500),
    )
    with pytest.raises(ChannelProtocolError):
        code_payment_from(202, {"code": "SOMETHING_ELSE"}, "MP1", Money(12_500))
    with pytest.raises(ChannelProtocolError):  # an answer about another order is not ours
        code_payment_from(200, {"out_trade_no": "MP2", "trade_state": "SUCCESS", "amount": {"total": 1}},
                          "MP1", Money(1))  # fmt: skip


def test_a_refused_code_payment_is_a_refusal_unless_it_says_the_patient_is_still_paying() -> None:
    """USERPAYING or a bank error under a 4xx must not end the attempt: the patient may still pay."""
    still = code_payment_refused(ChannelRejected("USERPAYING", "需要用户输入密码"), "MP1", Money(1))
    assert (still.state, still.channel_state) == (TradeState.PAYING, "USERPAYING")
    with pytest.raises(ChannelOutcomeUnknown):
        code_payment_refused(ChannelRejected("BANKERROR", "银行系统异常"), "MP1", Money(1))
    refused = ChannelRejected("PARAM_ERROR", "付款码无效", RejectionReason.INVALID_REQUEST)
    with pytest.raises(ChannelRejected) as kept:
        code_payment_refused(refused, "MP1", Money(1))
    assert kept.value is refused
