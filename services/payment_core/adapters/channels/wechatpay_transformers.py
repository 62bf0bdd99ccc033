"""WeChat Pay v3 JSON <-> the channel port's types. Every WeChat status is mapped here, exhaustively."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from services.payment_core.adapters.channels.ports import (
    ChannelNotification,
    ChannelOutcomeUnknown,
    ChannelProtocolError,
    ChannelRefund,
    ChannelRejected,
    ChannelTradeStatus,
    RefundStatus,
    RejectionReason,
    TradeState,
)
from services.runtime.money import Money

# trade_state, as documented by WeChat Pay. NOTPAY, USERPAYING and ACCEPT are intermediate.
TRADE_STATES: Mapping[str, TradeState] = {
    "SUCCESS": TradeState.PAID,
    "REFUND": TradeState.REFUNDED,  # 转入退款: at least one refund was made on a paid order
    "NOTPAY": TradeState.NOT_PAID,
    "CLOSED": TradeState.CLOSED,
    "REVOKED": TradeState.CLOSED,  # 已撤销 (barcode): cancelled, the patient keeps the money
    "USERPAYING": TradeState.PAYING,  # 用户支付中 (barcode: waiting for the password)
    "PAYERROR": TradeState.FAILED,  # 支付失败 (barcode)
    "ACCEPT": TradeState.PAYING,  # 已接收，等待扣款
}

REFUND_STATUSES: Mapping[str, RefundStatus] = {
    "SUCCESS": RefundStatus.SUCCEEDED,
    "PROCESSING": RefundStatus.PROCESSING,
    # ABNORMAL (退款异常): the money could not reach the patient's card and waits for a person to
    # re-route it (apply-abnormal-refund). Not FAILED: the refund still exists and must not be
    # re-issued. Not PROCESSING either: nothing happens until someone acts.
    "ABNORMAL": RefundStatus.ABNORMAL,
    "CLOSED": RefundStatus.FAILED,  # 退款关闭: nothing was paid out
}

# The refund notifications WeChat Pay sends, and the status each one must carry.
REFUND_EVENTS: Mapping[str, str] = {
    "REFUND.SUCCESS": "SUCCESS",
    "REFUND.ABNORMAL": "ABNORMAL",
    "REFUND.CLOSED": "CLOSED",
}

REJECTIONS: Mapping[str, RejectionReason] = {
    "PARAM_ERROR": RejectionReason.INVALID_REQUEST,
    "INVALID_REQUEST": RejectionReason.INVALID_REQUEST,
    # 403: the out_trade_no was placed before with other parameters (another amount).
    "OUT_TRADE_NO_USED": RejectionReason.INVALID_REQUEST,
    "ORDER_NOT_EXIST": RejectionReason.NOT_FOUND,
    "RESOURCE_NOT_EXISTS": RejectionReason.NOT_FOUND,
    "ORDERPAID": RejectionReason.ALREADY_PAID,
    "ORDERCLOSED": RejectionReason.ALREADY_CLOSED,
    # 401 SIGN_ERROR: our signature, merchant serial_no or key is wrong. Sending again cannot help.
    "SIGN_ERROR": RejectionReason.NOT_AUTHORISED,
    "NO_AUTH": RejectionReason.NOT_AUTHORISED,
    "MCH_NOT_EXISTS": RejectionReason.NOT_AUTHORISED,
}

# Answers that refuse a request only for now: nothing was done, and the same request (same
# out_trade_no / out_refund_no) may pass later. Not rejections: the adapter says ChannelUnavailable.
NOT_NOW: Mapping[str, str] = {
    # 403 NOT_ENOUGH: the merchant's available balance is too low to pay the refund out. The refund
    # itself is not refused; it goes through once the balance is topped up.
    "NOT_ENOUGH": "the merchant's balance is too low to refund",
    # 429 FREQUENCY_LIMITED: too many requests.
    "FREQUENCY_LIMITED": "rate limited",
}

# A refund beyond what remains is 400 INVALID_REQUEST like any broken rule; only its message tells
# it apart ("申请退款金额超过订单可退金额", or the order is refunded in full already).
_REFUND_EXCEEDS_MESSAGES = ("可退金额", "全额退款")


def trade_state_of(channel_state: str) -> TradeState:
    try:
        return TRADE_STATES[channel_state]
    except KeyError:
        raise ChannelProtocolError(f"unknown WeChat Pay trade_state {channel_state!r}") from None


def refund_status_of(channel_status: str) -> RefundStatus:
    try:
        return REFUND_STATUSES[channel_status]
    except KeyError:
        raise ChannelProtocolError(f"unknown WeChat Pay refund status {channel_status!r}") from None


def rejection_reason_of(code: str, message: str = "") -> RejectionReason:
    if code == "INVALID_REQUEST" and any(words in message for words in _REFUND_EXCEEDS_MESSAGES):
        return RejectionReason.REFUND_EXCEEDS_PAID
    return REJECTIONS.get(code, RejectionReason.OTHER)


def trade_status_from(body: Mapping[str, Any]) -> ChannelTradeStatus:
    """A query answer, or the decrypted TRANSACTION.* resource (same shape)."""
    channel_state = _text(body, "trade_state")
    return ChannelTradeStatus(
        out_trade_no=_text(body, "out_trade_no"),
        state=trade_state_of(channel_state),
        amount=_fen(body, "total"),
        transaction_id=body.get("transaction_id") or None,
        success_time=_time(body.get("success_time")),
        channel_state=channel_state,
    )


def code_payment_from(
    http_status: int, body: Mapping[str, Any], out_trade_no: str, amount: Money
) -> ChannelTradeStatus:
    """The codepay answer: the transaction (200, SUCCESS at once) or 202 USERPAYING (the patient
    confirms with a password on the phone; query until final)."""
    if body.get("code") == "USERPAYING" or (http_status == 202 and "trade_state" not in body):
        if body.get("code") not in (None, "USERPAYING"):
            raise ChannelProtocolError(f"WeChat Pay codepay answered {http_status} {body.get('code')!r}")
        return ChannelTradeStatus(out_trade_no, TradeState.PAYING, amount, channel_state="USERPAYING")
    status = trade_status_from(body)
    if status.out_trade_no != out_trade_no:
        raise ChannelProtocolError("WeChat Pay codepay answered for another out_trade_no")
    return status


# Error codes of a code payment that do not say the payment failed, whatever HTTP status carries
# them (v2 付款码 error table; the v3 one names USERPAYING too): the patient is still confirming, or
# the bank's answer is not known yet. Both are settled by a query, never taken as a refusal.
CODEPAY_STILL_PAYING = frozenset({"USERPAYING"})
CODEPAY_OUTCOME_UNKNOWN = frozenset({"BANKERROR", "SYSTEMERROR"})


def code_payment_refused(refused: ChannelRejected, out_trade_no: str, amount: Money) -> ChannelTradeStatus:
    """A non-2xx codepay answer: PAYING for USERPAYING, an unknown outcome for a bank or system
    error, else the refusal itself (nothing was taken)."""
    if refused.code in CODEPAY_STILL_PAYING:
        return ChannelTradeStatus(out_trade_no, TradeState.PAYING, amount, channel_state=refused.code)
    if refused.code in CODEPAY_OUTCOME_UNKNOWN:
        raise ChannelOutcomeUnknown(f"WeChat Pay codepay {refused.code}: query for the outcome") from refused
    raise refused


def refund_from(body: Mapping[str, Any], status_field: str = "status") -> ChannelRefund:
    """A refund answer (`status`) or the decrypted REFUND.* resource (`refund_status`)."""
    channel_status = _text(body, status_field)
    return ChannelRefund(
        out_refund_no=_text(body, "out_refund_no"),
        out_trade_no=_text(body, "out_trade_no"),
        refund_id=_text(body, "refund_id"),
        status=refund_status_of(channel_status),
        amount=_fen(body, "refund"),
        success_time=_time(body.get("success_time")),
        channel_status=channel_status,
    )


def notification_from(callback: Mapping[str, Any]) -> ChannelNotification | None:
    """The SDK's verified callback dict (resource already decrypted) -> our notification."""
    event_type = str(callback.get("event_type", ""))
    resource = callback.get("resource")
    if not isinstance(resource, Mapping):
        return None
    event_id = str(callback.get("id", ""))
    if event_type.startswith("TRANSACTION."):
        return ChannelNotification(event_id, event_type, trade=trade_status_from(resource))
    if event_type in REFUND_EVENTS:
        return _refund_notification(event_id, event_type, resource)
    return None


def _refund_notification(event_id: str, event_type: str, resource: Mapping[str, Any]) -> ChannelNotification:
    refund = refund_from(resource, "refund_status")
    if refund.channel_status != REFUND_EVENTS[event_type]:
        raise ChannelProtocolError(f"{event_type} carries refund_status {refund.channel_status!r}")
    return ChannelNotification(event_id, event_type, refund=refund)


def _text(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise ChannelProtocolError(f"WeChat Pay answer lacks {key!r}")
    return value


def _fen(body: Mapping[str, Any], key: str) -> Money:
    amount = body.get("amount")
    value = amount.get(key) if isinstance(amount, Mapping) else None
    if not isinstance(value, int) or isinstance(value, bool):
        raise ChannelProtocolError(f"WeChat Pay answer lacks amount.{key} in fen")
    return Money(value)


def _time(value: object) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        raise ChannelProtocolError(f"WeChat Pay time {value!r} is not RFC 3339") from None
    if moment.tzinfo is None:
        raise ChannelProtocolError(f"WeChat Pay time {value!r} has no offset")
    return moment
