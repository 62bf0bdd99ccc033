"""The WeChat Pay trade bill (交易账单): backtick CSV, yuan with two decimals, Beijing time.

Layout: a detail header, detail rows, a summary header (starting 总交易单数) and a summary row.
Every data field is prefixed with a backtick, so a row is split on ",`" rather than on bare
commas (a 商品名称 may contain a comma). Columns are found by their header names, which makes the
ALL, SUCCESS and REFUND layouts (and legacy extra columns) parse alike. Yuan become fen exactly;
the summary must agree with the rows, or the bill is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from zoneinfo import ZoneInfo

from services.payment_core.adapters.channels.ports import BillRow, BillTradeState, ChannelProtocolError
from services.runtime.money import Money, total

BEIJING = ZoneInfo("Asia/Shanghai")
SUMMARY_HEADER_START = "总交易单数"
REQUIRED_COLUMNS = ("交易时间", "微信订单号", "商户订单号", "交易状态", "应结订单金额")
_NO_REFUND = {"", "0"}


def parse_trade_bill(text: str) -> list[BillRow]:
    """Every detail row of the bill, checked against its summary line."""
    lines = [line for line in text.lstrip("\ufeff").splitlines() if line.strip()]
    summary_at = _summary_index(lines)
    header = lines[0].split(",")
    missing = [column for column in REQUIRED_COLUMNS if column not in header]
    if missing:
        raise ChannelProtocolError(f"trade bill header lacks {missing}")
    rows = [_bill_row(_named(header, line)) for line in lines[1:summary_at]]
    _check_summary(rows, _named(lines[summary_at].split(","), lines[summary_at + 1]))
    return rows


def _summary_index(lines: list[str]) -> int:
    for index, line in enumerate(lines):
        if line.startswith(SUMMARY_HEADER_START):
            if index == 0 or index + 1 >= len(lines):
                break
            return index
    raise ChannelProtocolError("trade bill has no detail header or no summary")


def _named(header: list[str], line: str) -> dict[str, str]:
    if not line.startswith("`"):
        raise ChannelProtocolError("trade bill data row does not start with a backtick")
    fields = line[1:].split(",`")
    if len(fields) != len(header):
        raise ChannelProtocolError(f"trade bill row has {len(fields)} fields, header has {len(header)}")
    return dict(zip(header, (field.strip() for field in fields), strict=True))


def _bill_row(fields: Mapping[str, str]) -> BillRow:
    return BillRow(
        trade_time=_beijing_time(fields["交易时间"]),
        transaction_id=fields["微信订单号"],
        out_trade_no=fields["商户订单号"],
        trade_state=_trade_state(fields["交易状态"]),
        amount=_fen(fields["应结订单金额"]),
        refund_id=_refund_ref(fields.get("微信退款单号", "")),
        out_refund_no=_refund_ref(fields.get("商户退款单号", "")),
        refund_amount=_fen(fields.get("退款金额") or "0.00"),
        refund_status=fields.get("退款状态") or None,
        order_amount=_optional_fen(fields.get("订单金额")),
        requested_refund_amount=_optional_fen(fields.get("申请退款金额")),
    )


def _check_summary(rows: list[BillRow], summary: Mapping[str, str]) -> None:
    expected_count = summary.get(SUMMARY_HEADER_START, "")
    if not expected_count.isdigit() or int(expected_count) != len(rows):
        raise ChannelProtocolError(f"trade bill says {expected_count} rows, has {len(rows)}")
    checks = (
        ("应结订单总金额", total(row.amount for row in rows)),
        ("退款总金额", total(row.refund_amount for row in rows)),
        ("订单总金额", total(_or_zero(row.order_amount) for row in rows)),
        ("申请退款总金额", total(_or_zero(row.requested_refund_amount) for row in rows)),
    )
    for column, computed in checks:
        if column in summary and _fen(summary[column]) != computed:
            raise ChannelProtocolError(f"trade bill {column} {summary[column]} != rows' {computed}")


def _trade_state(text: str) -> BillTradeState:
    try:
        return BillTradeState(text)
    except ValueError:
        raise ChannelProtocolError(f"unknown trade bill 交易状态 {text!r}") from None


def _fen(yuan: str) -> Money:
    try:
        return Money.from_yuan_str(yuan)
    except ValueError as exc:
        raise ChannelProtocolError(str(exc)) from None


def _or_zero(amount: Money | None) -> Money:
    return Money.zero() if amount is None else amount


def _optional_fen(yuan: str | None) -> Money | None:
    """A column legacy layouts may lack (None); an empty field is zero."""
    return None if yuan is None else _fen(yuan or "0.00")


def _beijing_time(text: str) -> datetime:
    try:
        return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=BEIJING)
    except ValueError:
        raise ChannelProtocolError(f"trade bill time {text!r} is not yyyy-MM-dd HH:mm:ss") from None


def _refund_ref(text: str) -> str | None:
    return None if text in _NO_REFUND else text
