"""The WeChat Pay trade bill (交易账单, bill_type=ALL) read into a ChannelBill.

Layout (pay.weixin.qq.com format-trade): a detail header row, one row per transaction, a summary
header row, one summary row. Comma-separated; every data field is prefixed with a backtick so Excel
keeps long numbers as text. Amounts are yuan with two decimals (手续费 with five); they become fen
here, exactly, and nowhere else. The summary is checked against the rows before anything is matched:
a bill that does not add up is not evidence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation

from services.reconciliation.domain.model import ChannelBill, ChannelBillLine, TransactionKind
from services.runtime.money import Money, total

WECHAT_PAY_SOURCE = "wechat_pay"
WECHAT_PAY_CHANNEL = "WECHAT_PAY"

DETAIL_COLUMNS = (
    "交易时间", "公众账号ID", "商户号", "特约商户号", "设备号", "微信订单号", "商户订单号", "用户标识",
    "交易类型", "交易状态", "付款银行", "货币种类", "应结订单金额", "代金券金额", "微信退款单号",
    "商户退款单号", "退款金额", "充值券退款金额", "退款类型", "退款状态", "商品名称", "商户数据包",
    "手续费", "费率", "订单金额", "申请退款金额", "费率备注",
)  # fmt: skip
SUMMARY_COLUMNS = (
    "总交易单数", "应结订单总金额", "退款总金额", "充值券退款总金额", "手续费总金额", "订单总金额",
    "申请退款总金额",
)  # fmt: skip
# Each summary money total and the detail column it sums.
_SUMMED_IN_FEN = {
    "应结订单总金额": "应结订单金额",
    "退款总金额": "退款金额",
    "充值券退款总金额": "充值券退款金额",
    "订单总金额": "订单金额",
    "申请退款总金额": "申请退款金额",
}
_FIELD_SEPARATOR = ",`"


class BillFormatError(ValueError):
    """Not a trade bill in the ALL layout, or its summary does not agree with its rows."""


@dataclass(frozen=True, slots=True)
class _Sections:
    detail_header: str
    rows: list[str]
    summary_header: str
    summary_row: str


def parse_trade_bill(text: str, business_date: date) -> ChannelBill:
    sections = _sections(text)
    _require_header(sections.detail_header, DETAIL_COLUMNS, "detail")
    _require_header(sections.summary_header, SUMMARY_COLUMNS, "summary")
    rows = [_fields(row, DETAIL_COLUMNS, f"row {number}") for number, row in enumerate(sections.rows, 2)]
    summary = _fields(sections.summary_row, SUMMARY_COLUMNS, "summary row")
    verify_summary(rows, summary)
    lines = tuple(_bill_line(row, f"row {number}") for number, row in enumerate(rows, 2))
    return ChannelBill(WECHAT_PAY_SOURCE, WECHAT_PAY_CHANNEL, business_date, lines)


def _sections(text: str) -> _Sections:
    lines = [line for line in text.lstrip("\ufeff").splitlines() if line.strip()]
    starts = [index for index, line in enumerate(lines) if line.split(",", 1)[0].strip() == "总交易单数"]
    if not lines or len(starts) != 1 or starts[0] != len(lines) - 2:
        raise BillFormatError("expected detail header, rows, summary header and one summary row")
    at = starts[0]
    return _Sections(lines[0], lines[1:at], lines[at], lines[at + 1])


def _require_header(line: str, expected: Sequence[str], which: str) -> None:
    names = tuple(name.strip() for name in line.split(","))
    if names != tuple(expected):
        raise BillFormatError(f"{which} header is not the ALL layout: {','.join(names)[:200]}")


def _fields(row: str, columns: Sequence[str], where: str) -> dict[str, str]:
    # Split on ",`" rather than "," so a comma inside 商品名称 cannot shift the columns.
    if not row.startswith("`"):
        raise BillFormatError(f"{where}: data fields must start with a backtick")
    values = [value.strip() for value in row[1:].split(_FIELD_SEPARATOR)]
    if len(values) != len(columns):
        raise BillFormatError(f"{where}: {len(values)} fields, the header has {len(columns)}")
    return dict(zip(columns, values, strict=True))


def _bill_line(row: dict[str, str], where: str) -> ChannelBillLine:
    trade_state = row["交易状态"]
    if trade_state not in ("SUCCESS", "REFUND", "REVOKED"):
        raise BillFormatError(f"{where}: unknown 交易状态 {trade_state!r}")
    refund = trade_state == "REFUND"
    return ChannelBillLine(
        kind=TransactionKind.REFUND if refund else TransactionKind.PAYMENT,
        out_trade_no=row["商户订单号"],
        out_refund_no=row["商户退款单号"] if refund else "",
        channel_transaction_id=row["微信订单号"],
        channel_refund_id=row["微信退款单号"] if refund else "",
        status=row["退款状态"] if refund else trade_state,
        # The amount the platform asked for: 订单金额 for a payment, 申请退款金额 for a refund.
        amount=yuan_to_money(row["申请退款金额" if refund else "订单金额"], where),
        traded_at=row["交易时间"],
    )


def verify_summary(rows: Sequence[dict[str, str]], summary: dict[str, str]) -> None:
    """The summary row must be exactly the sums of the detail rows, column by column."""
    if summary["总交易单数"] != str(len(rows)):
        raise BillFormatError(f"summary says {summary['总交易单数']} transactions, the bill has {len(rows)}")
    for summary_column, detail_column in _SUMMED_IN_FEN.items():
        stated = yuan_to_money(summary[summary_column], f"summary {summary_column}")
        summed = total(yuan_to_money(row[detail_column], detail_column) for row in rows)
        if stated != summed:
            raise BillFormatError(f"summary {summary_column} {stated} but the rows add up to {summed}")
    fees = sum((_decimal(row["手续费"], "手续费") for row in rows), Decimal(0))
    if _decimal(summary["手续费总金额"], "手续费总金额") != fees:
        raise BillFormatError(f"summary 手续费总金额 {summary['手续费总金额']} but the rows add up to {fees}")


def yuan_to_money(text: str, where: str) -> Money:
    """A bill amount in yuan ("12.50"); an empty field ("`") means zero."""
    try:
        return Money.from_yuan_str(text) if text else Money.zero()
    except ValueError as error:
        raise BillFormatError(f"{where}: not a yuan amount with two decimals: {text!r}") from error


def _decimal(text: str, where: str) -> Decimal:
    # Fees carry five decimals, finer than a fen: they are checked as exact decimals, never as fen.
    try:
        value = Decimal(text) if text else Decimal(0)
    except InvalidOperation as error:
        raise BillFormatError(f"{where}: not a number: {text!r}") from error
    if not value.is_finite():
        raise BillFormatError(f"{where}: not a number: {text!r}")
    return value
