"""Alipay open-platform answers and notifications <-> the channel port's types.

Every trade_status and refund_status is mapped here, exhaustively: a value we do not know is a
ChannelProtocolError, never a guess. Yuan strings become fen exactly (Decimal, via Money) here and
nowhere else; Alipay's times are Beijing wall-clock "yyyy-MM-dd HH:mm:ss".
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from services.payment_core.adapters.channels.ports import (
    ChannelError,
    ChannelNotification,
    ChannelOutcomeUnknown,
    ChannelProtocolError,
    ChannelRefund,
    ChannelRejected,
    ChannelTradeStatus,
    ChannelUnavailable,
    RefundStatus,
    RejectionReason,
    TradeState,
)
from services.runtime.money import Money

BEIJING = ZoneInfo("Asia/Shanghai")
SUCCESS_CODE = "10000"
REFUND_SUCCESS = "REFUND_SUCCESS"
PAYMENT_EVENT = "trade_status_sync"
REFUND_EVENT = "trade_status_sync.refund"

# trade_status (统一收单). TRADE_CLOSED means either "closed unpaid" or "paid, then refunded in
# full"; which one is told by the payment time (send_pay_date / gmt_payment), see `trade_state_of`.
TRADE_STATES: Mapping[str, TradeState] = {
    "WAIT_BUYER_PAY": TradeState.NOT_PAID,  # 交易创建，等待买家付款
    "TRADE_SUCCESS": TradeState.PAID,  # 交易支付成功 (refundable; also after a partial refund)
    "TRADE_FINISHED": TradeState.PAID,  # 交易结束，不可退款: the money was collected
    "TRADE_CLOSED": TradeState.CLOSED,  # 未付款交易超时关闭，或支付完成后全额退款
}

# sub_code of a 40004 (业务处理失败) answer, in our words.
REJECTIONS: Mapping[str, RejectionReason] = {
    "ACQ.INVALID_PARAMETER": RejectionReason.INVALID_REQUEST,
    "ACQ.CONTEXT_INCONSISTENT": RejectionReason.INVALID_REQUEST,  # 交易信息被篡改: same key, other terms
    "ACQ.TRADE_STATUS_ERROR": RejectionReason.INVALID_REQUEST,  # e.g. refunding an unpaid trade
    "ACQ.TRADE_NOT_EXIST": RejectionReason.NOT_FOUND,
    "ACQ.TRADE_HAS_SUCCESS": RejectionReason.ALREADY_PAID,
    "ACQ.TRADE_HAS_CLOSE": RejectionReason.ALREADY_CLOSED,
    "ACQ.TRADE_HAS_FINISHED": RejectionReason.ALREADY_CLOSED,  # 交易已完结: no refund any more
    "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL": RejectionReason.REFUND_EXCEEDS_PAID,  # 退款金额超限
    "ACQ.REASON_TRADE_REFUND_FEE_ERR": RejectionReason.REFUND_EXCEEDS_PAID,
    "ACQ.TOTAL_FEE_EXCEED": RejectionReason.INVALID_REQUEST,
    "ACQ.ACCESS_FORBIDDEN": RejectionReason.NOT_AUTHORISED,
}
# 40001 缺少必选参数 / 40002 非法的参数 / 40006 权限不足: the request was refused before any effect.
_ARGUMENT_CODES = frozenset({"40001", "40002", "40006"})
_AUTH_SUB_CODES = ("isv.invalid-signature", "isv.invalid-app-id", "isv.insufficient", "isv.invalid-app-auth")


def trade_state_of(channel_state: str, paid: bool) -> TradeState:
    try:
        state = TRADE_STATES[channel_state]
    except KeyError:
        raise ChannelProtocolError(f"unknown Alipay trade_status {channel_state!r}") from None
    return TradeState.REFUNDED if state is TradeState.CLOSED and paid else state


def refund_status_of(answer: Mapping[str, Any]) -> RefundStatus:
    """refund_status is REFUND_SUCCESS once the money is back and absent before: a refund the
    gateway holds (out_request_no and refund_amount present) without it is still in progress."""
    status = answer.get("refund_status")
    if status is None or status == "":
        return RefundStatus.PROCESSING
    if status == REFUND_SUCCESS:
        return RefundStatus.SUCCEEDED
    raise ChannelProtocolError(f"unknown Alipay refund_status {status!r}")


def refund_id_of(trade_no: str, out_request_no: str) -> str:
    """Alipay gives a refund no id of its own: it is the trade's refund with this request number."""
    return f"{trade_no}:{out_request_no}"


def checked(answer: Mapping[str, Any], operation: str, mutating: bool) -> Mapping[str, Any]:
    """The verified inner answer if its code is 10000; else the matching port error."""
    code = str(answer.get("code", ""))
    if code == SUCCESS_CODE:
        return answer
    sub_code, sub_msg = str(answer.get("sub_code", "")), str(answer.get("sub_msg", answer.get("msg", "")))
    if code == "40004" and sub_code == "ACQ.SELLER_BALANCE_NOT_ENOUGH":
        # Not a refusal: the merchant's balance is short; nothing was done, and the same request
        # (same key) goes again later. A patient's refund is never dropped for it.
        raise ChannelUnavailable(f"Alipay {operation}: {sub_code} {sub_msg}")
    if code == "40004" and sub_code == "ACQ.SYSTEM_ERROR":  # the gateway's own error: may have happened
        raise lost_answer(f"Alipay {operation}: {sub_code} {sub_msg}", mutating)
    if code == "40004":
        raise ChannelRejected(sub_code, sub_msg, REJECTIONS.get(sub_code, RejectionReason.OTHER))
    if code in _ARGUMENT_CODES:
        reason = (
            RejectionReason.NOT_AUTHORISED
            if sub_code.startswith(_AUTH_SUB_CODES)
            else RejectionReason.INVALID_REQUEST
        )
        raise ChannelRejected(sub_code or code, sub_msg, reason)
    if code == "20000":  # 服务不可用 (isp.unknow-error): the effect may or may not exist
        raise lost_answer(f"Alipay {operation}: {code} {sub_code} {sub_msg}", mutating)
    raise ChannelProtocolError(f"Alipay {operation} answered code {code!r}")


def lost_answer(message: str, mutating: bool) -> ChannelError:
    return ChannelOutcomeUnknown(message) if mutating else ChannelUnavailable(message)


def trade_status_from(body: Mapping[str, Any], paid_at_key: str = "send_pay_date") -> ChannelTradeStatus:
    """A query answer (paid at send_pay_date) or a notification (paid at gmt_payment)."""
    channel_state = text(body, "trade_status")
    success_time = time_of(body.get(paid_at_key))
    return ChannelTradeStatus(
        out_trade_no=text(body, "out_trade_no"),
        state=trade_state_of(channel_state, paid=success_time is not None),
        amount=fen(body, "total_amount"),
        transaction_id=(str(body.get("trade_no") or "") or None) if success_time else None,
        success_time=success_time,
        channel_state=channel_state,
    )


def refund_from_query(answer: Mapping[str, Any], out_refund_no: str) -> ChannelRefund:
    if not answer.get("out_request_no") or "refund_amount" not in answer:
        # Alipay answers 10000 without the refund for a request number it never saw.
        raise ChannelRejected("REFUND_NOT_EXIST", "退款请求不存在", RejectionReason.NOT_FOUND)
    if answer["out_request_no"] != out_refund_no:
        raise ChannelProtocolError("Alipay answered for another out_request_no")
    status = refund_status_of(answer)
    return ChannelRefund(
        out_refund_no=out_refund_no,
        out_trade_no=text(answer, "out_trade_no"),
        refund_id=refund_id_of(text(answer, "trade_no"), out_refund_no),
        status=status,
        amount=fen(answer, "refund_amount"),
        success_time=time_of(answer.get("gmt_refund_pay")) if status is RefundStatus.SUCCEEDED else None,
        channel_status=str(answer.get("refund_status") or ""),
    )


def notification_from(params: Mapping[str, str]) -> ChannelNotification | None:
    """A verified trade_status_sync -> our notification. A refund's carries out_biz_no (its
    out_request_no) and send_back_fee (this refund's amount; refund_fee is the trade's total so
    far); without send_back_fee it is read as the trade's new state, and the refund's outcome
    comes from query_refund. With a coupon on the order send_back_fee is below the refunded
    amount, so this refund would read short by the coupon's share (the simulator has no
    coupons; real coupon-paid orders are not handled here yet)."""
    if params.get("notify_type") != PAYMENT_EVENT:
        return None
    event_id = text(params, "notify_id")
    out_request_no, amount = params.get("out_biz_no"), params.get("send_back_fee")
    if out_request_no and params.get("refund_fee") and amount:
        refund = ChannelRefund(
            out_refund_no=out_request_no,
            out_trade_no=text(params, "out_trade_no"),
            refund_id=refund_id_of(text(params, "trade_no"), out_request_no),
            status=RefundStatus.SUCCEEDED,  # Alipay notifies a refund once the money is back
            amount=fen(params, "send_back_fee"),
            success_time=time_of(params.get("gmt_refund")),
            channel_status=REFUND_SUCCESS,
        )
        return ChannelNotification(event_id, REFUND_EVENT, refund=refund)
    return ChannelNotification(event_id, PAYMENT_EVENT, trade=trade_status_from(params, "gmt_payment"))


def text(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise ChannelProtocolError(f"Alipay answer lacks {key!r}")
    return value


def fen(body: Mapping[str, Any], key: str) -> Money:
    value = body.get(key)
    if not isinstance(value, str):  # Alipay sends amounts as yuan strings; a JSON number is suspect
        raise ChannelProtocolError(f"Alipay answer lacks {key!r} in yuan")
    try:
        return Money.from_yuan_str(value)
    except ValueError as exc:
        raise ChannelProtocolError(f"Alipay {key}: {exc}") from None


def time_of(value: object) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.strptime(str(value), "%Y-%m-%d %H:%M:%S").replace(tzinfo=BEIJING)
    except ValueError:
        raise ChannelProtocolError(f"Alipay time {value!r} is not yyyy-MM-dd HH:mm:ss") from None
