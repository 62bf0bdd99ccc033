"""reconciliation's reader of the WeChat Pay trade bill (ALL layout): rows, fen, and the summary check."""

from __future__ import annotations

import gzip
import hashlib
from datetime import date

import pytest

from services.reconciliation.adapters.wechatpay_bill import BillFormatError, parse_trade_bill
from services.reconciliation.adapters.wechatpay_client import _checked_text
from services.reconciliation.domain.model import TransactionKind
from services.reconciliation.service_layer.ports import SourceUnavailable
from services.runtime.money import Money

DAY = date(2025, 3, 14)
DETAIL_HEADER = (
    "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,"
    "付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,"
    "退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注"
)
SUMMARY_HEADER = (
    "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额"
)
OPENID = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"


def row(*fields: str) -> str:
    return ",".join("`" + field for field in fields)


def paid(
    when: str, transaction_id: str, out_trade_no: str, yuan: str, fee: str, name: str = "门诊缴费"
) -> str:
    return row(
        when, "wx8888888888888888", "1900000109", "0", "", transaction_id, out_trade_no, OPENID, "NATIVE",
        "SUCCESS", "OTHERS", "CNY", yuan, "0.00", "0", "0", "0.00", "0.00", "", "", name, "", fee, "0.60%",
        yuan, "0.00", "",
    )  # fmt: skip


def refunded(
    when: str, transaction_id: str, out_trade_no: str, out_refund_no: str, yuan: str, fee: str
) -> str:
    return row(
        when, "wx8888888888888888", "1900000109", "0", "", transaction_id, out_trade_no, OPENID, "NATIVE",
        "REFUND", "OTHERS", "CNY", "0.00", "0.00", "50300020252025031400000001", out_refund_no, yuan, "0.00",
        "ORIGINAL", "SUCCESS", "门诊缴费", "", fee, "0.60%", "0.00", yuan, "",
    )  # fmt: skip


ROWS = [
    paid("2025-03-14 09:12:31", "4200002531202503141111111111", "ord_a1", "125.00", "0.75000"),
    paid("2025-03-14 09:30:02", "4200002531202503142222222222", "ord_b2", "0.01", "0.00000", "挂号费,内科"),
    refunded("2025-03-14 15:40:10", "4200002531202503141111111111", "ord_a1", "rf_a1", "125.00", "-0.75000"),
    paid("2025-03-14 16:01:59", "4200002531202503143333333333", "ord_c3", "12345.67", "74.07402"),
]
SUMMARY = row("4", "12470.68", "125.00", "0.00", "74.07402", "12470.68", "125.00")


def bill(rows: list[str] = ROWS, summary: str = SUMMARY) -> str:
    return "\r\n".join([DETAIL_HEADER, *rows, SUMMARY_HEADER, summary]) + "\r\n"


def test_every_row_becomes_a_line_with_its_channel_keys_and_exact_fen() -> None:
    parsed = parse_trade_bill(bill(), DAY)

    assert (parsed.source, parsed.channel, parsed.business_date) == ("wechat_pay", "WECHAT_PAY", DAY)
    payments = [line for line in parsed.lines if line.kind is TransactionKind.PAYMENT]
    assert [(line.out_trade_no, line.amount, line.status) for line in payments] == [
        ("ord_a1", Money(12_500), "SUCCESS"),
        ("ord_b2", Money(1), "SUCCESS"),
        ("ord_c3", Money(1_234_567), "SUCCESS"),
    ]
    assert payments[0].channel_transaction_id == "4200002531202503141111111111"
    assert payments[0].traded_at == "2025-03-14 09:12:31"


def test_a_refund_row_is_keyed_by_out_refund_no_and_takes_the_refund_status_and_amount() -> None:
    (refund,) = [line for line in parse_trade_bill(bill(), DAY).lines if line.kind is TransactionKind.REFUND]

    assert (refund.out_refund_no, refund.out_trade_no, refund.channel_key) == ("rf_a1", "ord_a1", "rf_a1")
    assert (refund.status, refund.amount) == ("SUCCESS", Money(12_500))
    assert refund.channel_refund_id == "50300020252025031400000001"


def test_a_comma_inside_the_product_name_does_not_shift_the_columns() -> None:
    line = parse_trade_bill(bill(), DAY).lines[1]

    assert (line.out_trade_no, line.amount) == ("ord_b2", Money(1))


def test_the_payer_openid_is_not_carried_into_the_lines() -> None:
    assert OPENID not in repr(parse_trade_bill(bill(), DAY))


def test_a_day_without_rows_is_an_empty_bill() -> None:
    empty = bill([], row("0", "0.00", "0.00", "0.00", "0.00000", "0.00", "0.00"))

    assert parse_trade_bill("\ufeff" + empty, DAY).lines == ()


@pytest.mark.parametrize(
    ("summary", "complaint"),
    [
        (row("5", "12470.68", "125.00", "0.00", "74.07402", "12470.68", "125.00"), "transactions"),
        (row("4", "12470.69", "125.00", "0.00", "74.07402", "12470.68", "125.00"), "应结订单总金额"),
        (row("4", "12470.68", "124.00", "0.00", "74.07402", "12470.68", "125.00"), "退款总金额"),
        (row("4", "12470.68", "125.00", "0.00", "74.07403", "12470.68", "125.00"), "手续费总金额"),
        (row("4", "12470.68", "125.00", "0.00", "74.07402", "12470.68", "0.00"), "申请退款总金额"),
    ],
)
def test_a_summary_that_does_not_add_up_is_refused(summary: str, complaint: str) -> None:
    with pytest.raises(BillFormatError, match=complaint):
        parse_trade_bill(bill(summary=summary), DAY)


def test_an_amount_finer_than_a_fen_is_refused_not_rounded() -> None:
    rows = [paid("2025-03-14 09:12:31", "4200", "ord_a1", "0.015", "0.00000")]
    summary = row("1", "0.015", "0.00", "0.00", "0.00000", "0.015", "0.00")

    with pytest.raises(BillFormatError, match="two decimals"):
        parse_trade_bill(bill(rows, summary), DAY)


@pytest.mark.parametrize(
    "text",
    [
        "",
        DETAIL_HEADER + "\r\n" + ROWS[0],
        bill().replace("交易时间,", "交易日期,", 1),
        bill().replace(ROWS[0], ROWS[0].replace(",`NATIVE", "")),
        bill().replace(ROWS[0], ROWS[0].lstrip("`")),
        bill().replace(",`SUCCESS,", ",`CLOSED,", 1),
    ],
    ids=["empty", "no-summary", "other-header", "short-row", "no-backtick", "unknown-state"],
)
def test_a_file_not_in_the_all_layout_is_refused(text: str) -> None:
    with pytest.raises(BillFormatError):
        parse_trade_bill(text, DAY)


def test_the_downloaded_file_is_unzipped_and_checked_against_the_announced_sha1() -> None:
    raw = bill().encode("utf-8")
    announced = {"hash_type": "SHA1", "hash_value": hashlib.sha1(raw).hexdigest().upper()}

    assert _checked_text(gzip.compress(raw), announced) == bill()
    assert _checked_text(raw, announced) == bill()
    with pytest.raises(SourceUnavailable, match="SHA1"):
        _checked_text(raw + b" ", announced)
