"""The trade bill (交易账单, bill_type=ALL) in WeChat's backtick CSV layout, and its download tokens.

Layout: detail header, one row per payment (交易状态 SUCCESS, dated at pay success) and per refund
(REFUND, dated at refund initiation), summary header, summary row. Every data field starts with a
backtick; amounts are yuan with two decimals, 手续费 has five; times are Beijing time. A refunded
order keeps its SUCCESS row; a code payment reversed after it was paid reads REVOKED (its money
went back to the payer; its amounts are kept as paid: how WeChat totals such a row is not known
here). Backticks and line breaks are removed from free text (商品名称,
商户数据包) so a row stays one line.
"""

from __future__ import annotations

import gzip
import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from infra.simulators.wechatpay.shapes import SHANGHAI
from infra.simulators.wechatpay.store import SimOrder, SimRefund
from services.runtime.money import Money

ALL_DETAIL_HEADER = (
    "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,"
    "付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,"
    "退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注"
)
ALL_SUMMARY_HEADER = (
    "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额"
)
FEE_RATE = Decimal("0.006")
FEE_RATE_TEXT = "0.60%"
DOWNLOAD_VALID_S = 300.0


@dataclass(frozen=True, slots=True)
class _Line:
    fields: list[str]
    settled_fen: int
    refund_fen: int
    fee_fen: int
    order_fen: int
    requested_refund_fen: int


def render_all_bill(payments: list[SimOrder], refunds: list[tuple[SimRefund, SimOrder]]) -> str:
    lines = [_payment_line(order) for order in payments]
    lines += [_refund_line(refund, order) for refund, order in refunds]
    lines.sort(key=lambda line: line.fields[0])
    rows = [ALL_DETAIL_HEADER, *(_backticked(line.fields) for line in lines)]
    rows += [ALL_SUMMARY_HEADER, _backticked(_summary(lines))]
    return "\r\n".join(rows) + "\r\n"


def _payment_line(order: SimOrder) -> _Line:
    fee = _fee_fen(order.total_fen)
    fields = [
        *_common(order, order.success_time),
        "REVOKED" if order.trade_state == "REVOKED" else "SUCCESS",
        "OTHERS",
        "CNY",
        _yuan(order.total_fen),
        "0.00",
        "0",
        "0",
        "0.00",
        "0.00",
        "",
        "",
        _free_text(order.description),
        _free_text(order.attach),
        _fee_text(fee),
        FEE_RATE_TEXT,
        _yuan(order.total_fen),
        "0.00",
        "",
    ]
    return _Line(fields, order.total_fen, 0, fee, order.total_fen, 0)


def _refund_line(refund: SimRefund, order: SimOrder) -> _Line:
    fee = -_fee_fen(refund.refund_fen)
    fields = [
        *_common(order, refund.created_at),
        "REFUND",
        "OTHERS",
        "CNY",
        "0.00",
        "0.00",
        refund.refund_id,
        refund.out_refund_no,
        _yuan(refund.refund_fen),
        "0.00",
        "ORIGINAL",
        refund.status,
        _free_text(order.description),
        _free_text(order.attach),
        _fee_text(fee),
        FEE_RATE_TEXT,
        "0.00",
        _yuan(refund.refund_fen),
        "",
    ]
    return _Line(fields, 0, refund.refund_fen, fee, 0, refund.refund_fen)


def _common(order: SimOrder, moment: datetime | None) -> list[str]:
    if moment is None:
        raise ValueError(f"order {order.out_trade_no} has no time to put in a bill")
    when = moment.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")
    return [
        when,
        order.appid,
        order.mchid,
        "0",
        "",
        order.transaction_id or "",
        order.out_trade_no,
        order.payer_openid,
        order.trade_type,
    ]


def _summary(lines: list[_Line]) -> list[str]:
    return [
        str(len(lines)),
        _yuan(sum(line.settled_fen for line in lines)),
        _yuan(sum(line.refund_fen for line in lines)),
        "0.00",
        _fee_text(sum(line.fee_fen for line in lines)),
        _yuan(sum(line.order_fen for line in lines)),
        _yuan(sum(line.requested_refund_fen for line in lines)),
    ]


def _backticked(fields: list[str]) -> str:
    return ",".join("`" + field for field in fields)


def _free_text(text: str | None) -> str:
    return (text or "").replace("`", "").replace("\r", " ").replace("\n", " ")


def _yuan(fen: int) -> str:
    return Money(fen).to_yuan_str()


def _fee_fen(fen: int) -> int:
    return int((Decimal(fen) * FEE_RATE).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _fee_text(fen: int) -> str:
    return f"{Decimal(fen) / 100:.5f}"


@dataclass(frozen=True, slots=True)
class _Download:
    content: bytes
    expires_at: float


class BillDesk:
    """Issues short-lived download tokens for rendered bills, as /v3/bill/tradebill does."""

    def __init__(self) -> None:
        self._downloads: dict[str, _Download] = {}

    def issue(self, text: str, tar_type: str | None) -> tuple[str, str]:
        """(token, sha1 of the uncompressed file)."""
        raw = text.encode("utf-8")
        content = gzip.compress(raw) if tar_type == "GZIP" else raw
        self._forget_expired()
        token = secrets.token_urlsafe(24)
        self._downloads[token] = _Download(content, time.monotonic() + DOWNLOAD_VALID_S)
        return token, hashlib.sha1(raw).hexdigest()

    def fetch(self, token: str) -> bytes | None:
        self._forget_expired()
        download = self._downloads.get(token)
        return None if download is None else download.content

    def _forget_expired(self) -> None:
        now = time.monotonic()
        for token in [token for token, item in self._downloads.items() if item.expires_at < now]:
            del self._downloads[token]
