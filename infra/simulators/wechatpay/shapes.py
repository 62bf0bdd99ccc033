"""The JSON shapes of WeChat Pay API v3 answers and notification resources, built from sim rows."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from infra.simulators.wechatpay.store import SimOrder, SimRefund

SHANGHAI = ZoneInfo("Asia/Shanghai")
PAID_STATES = frozenset({"SUCCESS", "REFUND"})
_STATE_DESCRIPTIONS = {
    "SUCCESS": "支付成功",
    "REFUND": "转入退款",
    "NOTPAY": "未支付",
    "CLOSED": "已关闭",
    "USERPAYING": "用户支付中",
    "REVOKED": "已撤销",
    "PAYERROR": "支付失败",
}


def rfc3339(moment: datetime) -> str:
    """WeChat writes times in Beijing time with the offset: 2018-06-08T10:34:56+08:00."""
    return moment.astimezone(SHANGHAI).isoformat(timespec="seconds")


def placed_json(order: SimOrder) -> dict[str, object]:
    if order.trade_type == "NATIVE":
        return {"code_url": order.code_url}
    return {"prepay_id": order.prepay_id}


def transaction_json(order: SimOrder) -> dict[str, object]:
    """GET /v3/pay/transactions/... answer; also the decrypted TRANSACTION.SUCCESS resource."""
    body: dict[str, object] = {
        "appid": order.appid,
        "mchid": order.mchid,
        "out_trade_no": order.out_trade_no,
        "trade_type": order.trade_type,
        "trade_state": order.trade_state,
        "trade_state_desc": _STATE_DESCRIPTIONS.get(order.trade_state, order.trade_state),
        "attach": order.attach or "",
        "amount": {"total": order.total_fen, "currency": "CNY", "payer_currency": "CNY"},
    }
    if order.trade_state in PAID_STATES and order.success_time is not None:
        body.update(
            transaction_id=order.transaction_id,
            bank_type="OTHERS",
            success_time=rfc3339(order.success_time),
            payer={"openid": order.payer_openid},
            amount={
                "total": order.total_fen,
                "payer_total": order.total_fen,
                "currency": "CNY",
                "payer_currency": "CNY",
            },
        )
    return body


def refund_json(refund: SimRefund, order: SimOrder) -> dict[str, object]:
    """POST/GET /v3/refund/domestic/refunds answer."""
    body: dict[str, object] = {
        "refund_id": refund.refund_id,
        "out_refund_no": refund.out_refund_no,
        "transaction_id": order.transaction_id,
        "out_trade_no": order.out_trade_no,
        "channel": "ORIGINAL",
        "user_received_account": "支付用户零钱",
        "create_time": rfc3339(refund.created_at),
        "status": refund.status,
        "funds_account": "AVAILABLE",
        "amount": _refund_amount(refund, order),
        "promotion_detail": [],
    }
    if refund.success_time is not None:
        body["success_time"] = rfc3339(refund.success_time)
    return body


def refund_notice_json(refund: SimRefund, order: SimOrder) -> dict[str, object]:
    """The decrypted resource of a REFUND.SUCCESS, REFUND.ABNORMAL or REFUND.CLOSED notification."""
    body: dict[str, object] = {
        "mchid": order.mchid,
        "out_trade_no": order.out_trade_no,
        "transaction_id": order.transaction_id,
        "out_refund_no": refund.out_refund_no,
        "refund_id": refund.refund_id,
        "refund_status": refund.status,
        "user_received_account": "支付用户零钱",
        "amount": {
            "total": order.total_fen,
            "refund": refund.refund_fen,
            "payer_total": order.total_fen,
            "payer_refund": refund.refund_fen,
        },
    }
    if refund.success_time is not None:
        body["success_time"] = rfc3339(refund.success_time)
    return body


def _refund_amount(refund: SimRefund, order: SimOrder) -> dict[str, object]:
    return {
        "total": order.total_fen,
        "refund": refund.refund_fen,
        "payer_total": order.total_fen,
        "payer_refund": refund.refund_fen,
        "settlement_total": order.total_fen,
        "settlement_refund": refund.refund_fen,
        "discount_refund": 0,
        "refund_fee": 0,
        "currency": "CNY",
    }
