"""The business parameters of the trade_status_sync notifications the simulator sends."""

from __future__ import annotations

import json

from infra.simulators.alipay.gateway import beijing
from infra.simulators.alipay.money import yuan
from infra.simulators.alipay.notifier import Notice
from infra.simulators.alipay.store import SimRefund, SimTrade


def _trade_params(trade: SimTrade, seller_id: str) -> dict[str, str]:
    amount = yuan(trade.total_fen)
    params = {
        "trade_no": trade.trade_no,
        "out_trade_no": trade.out_trade_no,
        "buyer_id": trade.buyer_user_id,
        "buyer_logon_id": trade.buyer_logon_id,
        "seller_id": seller_id,
        "trade_status": trade.trade_status,
        "total_amount": amount,
        "receipt_amount": amount,
        "invoice_amount": amount,
        "buyer_pay_amount": amount,
        "point_amount": "0.00",
        "subject": trade.subject,
        "gmt_create": beijing(trade.gmt_create),
        "fund_bill_list": json.dumps(
            [{"amount": amount, "fundChannel": "ALIPAYACCOUNT"}], separators=(",", ":")
        ),
    }
    if trade.gmt_payment is not None:
        params["gmt_payment"] = beijing(trade.gmt_payment)
    if trade.gmt_close is not None:
        params["gmt_close"] = beijing(trade.gmt_close)
    return params


def payment_notice(trade: SimTrade, seller_id: str) -> Notice:
    """TRADE_SUCCESS: the patient paid."""
    return Notice(
        _trade_params(trade, seller_id), trade.notify_url or "", trade.out_trade_no, None, trade.traceparent
    )


def refund_notice(trade: SimTrade, refund: SimRefund, refunded_fen: int, seller_id: str) -> Notice:
    """A refund was paid out: trade_status stays TRADE_SUCCESS after a partial refund and becomes
    TRADE_CLOSED after the full amount; out_biz_no is the refund's out_request_no, refund_fee the
    trade's cumulative refunds. send_back_fee (this refund's amount) is in the refund answer; its
    presence in notifications is from secondary sources (uncertain)."""
    params = _trade_params(trade, seller_id)
    params.update(
        out_biz_no=refund.out_request_no,
        refund_fee=yuan(refunded_fen),
        send_back_fee=yuan(refund.refund_fen),
        gmt_refund=beijing(refund.gmt_refund_pay or refund.created_at),
    )
    return Notice(
        params, trade.notify_url or "", trade.out_trade_no, refund.out_request_no, refund.traceparent
    )
