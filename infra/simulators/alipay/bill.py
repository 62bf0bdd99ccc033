"""The trade bill (支付宝交易收单业务账单, bill_type "trade"): a zip of two GBK CSV files.

`…_业务明细.csv` in the common 25-column layout: four comment lines, the header, one row per
payment (交易) and per refund (退款, amounts negative, 退款批次号/请求号 = out_request_no), the end
marker and the 合计 lines. ID-like fields carry a trailing TAB before the comma, as Alipay writes
them so spreadsheet programs keep them as text. `…_业务明细(汇总).csv` is the per-store summary
(its column set is a plausible reconstruction, not a verified one). The download URL is a
one-time token kept 30 simulated seconds, as the real URL is valid for 30 s.
"""

from __future__ import annotations

import io
import secrets
import zipfile
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta

from infra.simulators.alipay.gateway import beijing
from infra.simulators.alipay.money import yuan
from infra.simulators.alipay.store import SimRefund, SimTrade

DETAIL_COLUMNS = (
    "支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,终端号,对方账户,"
    "订单金额（元）,商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,商家优惠（元）,券核销金额（元）,"
    "券名称,商家红包消费金额（元）,卡消费金额（元）,退款批次号/请求号,服务费（元）,分润（元）,备注"
)
RULE = "#-----------------------------------------业务明细列表----------------------------------------"
END_RULE = "#-----------------------------------------业务明细列表结束------------------------------------"


def _tabbed(value: str) -> str:
    return f"{value}\t"


def _csv_safe(text: str) -> str:
    # 商品名称 is free text: Alipay's export does not quote, so a comma would shift the columns.
    return text.replace(",", "，").replace("\n", " ")


def _payment_line(trade: SimTrade, paid_at: datetime) -> str:
    amount = yuan(trade.total_fen)
    cells = [
        _tabbed(trade.trade_no), _tabbed(trade.out_trade_no), _tabbed("交易"), _csv_safe(trade.subject),
        beijing(trade.gmt_create), beijing(paid_at), "", "", "", "", _tabbed(trade.buyer_logon_id),
        amount, amount, "0.00", "0.00", "0.00", "0.00", "0.00", "", "0.00", "0.00", "", "0.00", "0.00", "",
    ]  # fmt: skip
    return ",".join(cells)


def _refund_line(trade: SimTrade, refund: SimRefund, paid_at: datetime) -> str:
    amount = yuan(-refund.refund_fen)
    cells = [
        _tabbed(trade.trade_no), _tabbed(trade.out_trade_no), _tabbed("退款"), _csv_safe(trade.subject),
        beijing(refund.created_at), beijing(paid_at), "", "", "", "", _tabbed(trade.buyer_logon_id),
        amount, amount, "0.00", "0.00", "0.00", "0.00", "0.00", "", "0.00", "0.00",
        _tabbed(refund.out_request_no), "0.00", "0.00", _csv_safe(refund.reason or ""),
    ]  # fmt: skip
    return ",".join(cells)


def render_trade_bill(
    seller_id: str,
    bill_date: date,
    payments: Sequence[SimTrade],
    refunds: Sequence[tuple[SimTrade, SimRefund]],
    exported_at: datetime,
) -> bytes:
    """The zip Alipay serves for one day's trade bill."""
    lines = [_payment_line(trade, trade.gmt_payment) for trade in payments if trade.gmt_payment]
    lines += [_refund_line(t, r, r.gmt_refund_pay) for t, r in refunds if r.gmt_refund_pay]
    paid_fen = sum(trade.total_fen for trade in payments)
    refunded_fen = sum(refund.refund_fen for _, refund in refunds)
    day, net = f"{bill_date:%Y年%m月%d日}", yuan(paid_fen - refunded_fen)
    detail = [
        "#支付宝业务明细查询",
        f"#账号：[{seller_id}]",
        f"#起始日期：[{day} 00:00:00]   终止日期：[{bill_date + timedelta(days=1):%Y年%m月%d日} 00:00:00]",
        RULE,
        DETAIL_COLUMNS,
        *lines,
        END_RULE,
        f"#交易合计：{len(payments)}笔，商家实收共{yuan(paid_fen)}元，商家优惠共0.00元",
        f"#退款合计：{len(refunds)}笔，商家实收共{yuan(-refunded_fen)}元，商家优惠共0.00元",
        f"#导出时间：[{beijing(exported_at)}]",
    ]
    summary = [
        "#支付宝业务汇总查询",
        f"#账号：[{seller_id}]",
        f"#起始日期：[{day} 00:00:00]",
        "门店编号,门店名称,交易订单总笔数,退款订单总笔数,订单金额（元）,商家实收（元）,支付宝优惠（元）,商家优惠（元）,服务费（元）,分润（元）,实收净额（元）",
        f"合计,,{len(payments)},{len(refunds)},{net},{net},0.00,0.00,0.00,0.00,{net}",
        "#-----------------------------------------业务汇总列表结束------------------------------------",
    ]
    stem = f"{seller_id}_{bill_date:%Y%m%d}"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{stem}_业务明细.csv", ("\r\n".join(detail) + "\r\n").encode("gbk"))
        archive.writestr(f"{stem}_业务明细(汇总).csv", ("\r\n".join(summary) + "\r\n").encode("gbk"))
    return buffer.getvalue()


class BillDesk:
    """One-time download tokens for rendered bills, valid `valid_s` seconds."""

    def __init__(self, clock: Callable[[], datetime], valid_s: float = 30.0) -> None:
        self._clock, self._valid_s = clock, valid_s
        self._files: dict[str, tuple[bytes, datetime]] = {}

    def issue(self, content: bytes) -> str:
        token = secrets.token_urlsafe(16)
        self._files[token] = (content, self._clock())
        return token

    def fetch(self, token: str) -> bytes | None:
        entry = self._files.pop(token, None)
        if entry is None or (self._clock() - entry[1]).total_seconds() > self._valid_s:
            return None
        return entry[0]
