"""The Alipay trade bill (bill_type "trade"): a zip holding `…_业务明细.csv` (GBK) and its summary.

Layout of the detail file: comment lines starting with `#`, the header (the line starting with
支付宝交易号), data rows until the `…业务明细列表结束` marker, then `#交易合计：N笔，商家实收共X元…`
(and `#退款合计…`). ID-like fields carry a trailing TAB. 业务类型 交易 is a payment, 退款 a refund
(amounts negative, 退款批次号/请求号 = our out_request_no). Columns are found by header name; yuan
become fen exactly; the 交易合计 line must agree with the payment rows, or the bill is refused.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Mapping
from datetime import datetime

from services.payment_core.adapters.channels.alipay_transformers import BEIJING, refund_id_of
from services.payment_core.adapters.channels.ports import BillRow, BillTradeState, ChannelProtocolError
from services.runtime.money import Money, total

DETAIL_SUFFIX = "_业务明细.csv"
HEADER_START = "支付宝交易号"
END_MARK = "业务明细列表结束"
REQUIRED_COLUMNS = (
    "支付宝交易号",
    "商户订单号",
    "业务类型",
    "完成时间",
    "订单金额（元）",
    "退款批次号/请求号",
)
_PAYMENT_TOTAL = re.compile(r"#交易合计：(\d+)笔，商家实收共(-?[\d.]+)元")
_KINDS = {"交易": BillTradeState.SUCCESS, "退款": BillTradeState.REFUND}


def detail_text(archive_bytes: bytes) -> str:
    """The detail CSV of the downloaded zip, decoded from GBK."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(archive_bytes))
        names = [name for name in archive.namelist() if name.endswith(DETAIL_SUFFIX)]
        if len(names) != 1:
            raise ChannelProtocolError(f"Alipay bill zip holds {len(names)} detail files")
        return archive.read(names[0]).decode("gbk")
    except (zipfile.BadZipFile, UnicodeDecodeError) as exc:
        raise ChannelProtocolError(f"Alipay bill is not a zip of GBK CSVs: {exc}") from None


def parse_trade_bill(text: str) -> list[BillRow]:
    lines = [line for line in text.lstrip("\ufeff").splitlines() if line.strip()]
    start = next((i for i, line in enumerate(lines) if line.startswith(HEADER_START)), None)
    end = next((i for i, line in enumerate(lines) if line.startswith("#") and END_MARK in line), None)
    if start is None or end is None or end < start:
        raise ChannelProtocolError("Alipay bill has no detail header or no end marker")
    header = [cell.strip() for cell in lines[start].split(",")]
    missing = [column for column in REQUIRED_COLUMNS if column not in header]
    if missing:
        raise ChannelProtocolError(f"Alipay bill header lacks {missing}")
    rows = [_bill_row(_named(header, line)) for line in lines[start + 1 : end]]
    _check_payment_total(rows, lines[end + 1 :])
    return rows


def _named(header: list[str], line: str) -> dict[str, str]:
    cells = line.split(",")
    if len(cells) != len(header):
        raise ChannelProtocolError(f"Alipay bill row has {len(cells)} fields, header has {len(header)}")
    return dict(zip(header, (cell.strip() for cell in cells), strict=True))  # strip drops the TABs


def _bill_row(fields: Mapping[str, str]) -> BillRow:
    try:
        kind = _KINDS[fields["业务类型"]]
    except KeyError:
        raise ChannelProtocolError(f"unknown Alipay bill 业务类型 {fields['业务类型']!r}") from None
    amount = _fen(fields["订单金额（元）"])
    if kind is BillTradeState.SUCCESS:
        return BillRow(_time(fields["完成时间"]), fields["支付宝交易号"], fields["商户订单号"], kind, amount)
    out_request_no = fields["退款批次号/请求号"]
    return BillRow(
        trade_time=_time(fields["完成时间"]),
        transaction_id=fields["支付宝交易号"],
        out_trade_no=fields["商户订单号"],
        trade_state=kind,
        amount=Money.zero(),
        refund_id=refund_id_of(fields["支付宝交易号"], out_request_no),
        out_refund_no=out_request_no,
        refund_amount=-amount,  # refund lines carry negative yuan
        refund_status="SUCCESS",  # Alipay bills only refunds that paid out
    )


def _check_payment_total(rows: list[BillRow], tail: list[str]) -> None:
    found = next((m for m in map(_PAYMENT_TOTAL.match, tail) if m), None)
    if found is None:
        raise ChannelProtocolError("Alipay bill has no 交易合计 line")
    payments = [row for row in rows if row.trade_state is BillTradeState.SUCCESS]
    count, received = int(found.group(1)), _fen(found.group(2))
    if count != len(payments) or received != total(row.amount for row in payments):
        raise ChannelProtocolError(f"Alipay bill 交易合计 {count}/{received} disagrees with its rows")


def _fen(yuan: str) -> Money:
    try:
        return Money.from_yuan_str(yuan)
    except ValueError as exc:
        raise ChannelProtocolError(str(exc)) from None


def _time(text: str) -> datetime:
    try:
        return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=BEIJING)
    except ValueError:
        raise ChannelProtocolError(f"Alipay bill time {text!r} is not yyyy-MM-dd HH:mm:ss") from None
