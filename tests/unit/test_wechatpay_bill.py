"""The WeChat Pay trade bill parser: backtick CSV, yuan -> fen exactly, summary cross-checked."""

from __future__ import annotations

import gzip
import hashlib
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from infra.simulators.wechatpay.bill import ALL_DETAIL_HEADER, ALL_SUMMARY_HEADER, render_all_bill
from infra.simulators.wechatpay.store import SimOrder, SimRefund
from services.payment_core.adapters.channels.ports import BillTradeState, ChannelProtocolError
from services.payment_core.adapters.channels.wechatpay import _bill_text
from services.payment_core.adapters.channels.wechatpay_bill import parse_trade_bill
from services.runtime.money import Money

BEIJING = ZoneInfo("Asia/Shanghai")

PAYMENT = (
    "`2024-03-21 13:51:31,`wx8888888888888888,`1900000109,`0,`,`4200000612202403214861322068,"
    "`MP2024032100001,`oUpF8uMuAJO_M2pxb1Q9zNjWeS6o,`NATIVE,`SUCCESS,`OTHERS,`CNY,`125.01,`0.00,`0,`0,"
    "`0.00,`0.00,`,`,`门诊缴费-西药费,`,`0.75000,`0.60%,`125.01,`0.00,`"
)
REFUND = (
    "`2024-03-21 15:02:09,`wx8888888888888888,`1900000109,`0,`,`4200000612202403214861322068,"
    "`MP2024032100001,`oUpF8uMuAJO_M2pxb1Q9zNjWeS6o,`NATIVE,`REFUND,`OTHERS,`CNY,`0.00,`0.00,"
    "`50300020240321000000000001,`RF2024032100001,`50.00,`0.00,`ORIGINAL,`SUCCESS,`门诊缴费-西药费,`,"
    "`-0.30000,`0.60%,`0.00,`50.00,`"
)


def bill(*rows: str, summary: str = "`2,`125.01,`50.00,`0.00,`0.45000,`125.01,`50.00") -> str:
    return "\r\n".join([ALL_DETAIL_HEADER, *rows, ALL_SUMMARY_HEADER, summary]) + "\r\n"


def test_payment_and_refund_rows_parse_with_exact_fen() -> None:
    payment, refund = parse_trade_bill(bill(PAYMENT, REFUND))

    assert payment.trade_time == datetime(2024, 3, 21, 13, 51, 31, tzinfo=BEIJING)
    assert payment.trade_time.astimezone(UTC).hour == 5
    assert (payment.transaction_id, payment.out_trade_no) == (
        "4200000612202403214861322068",
        "MP2024032100001",
    )
    assert (payment.trade_state, payment.amount) == (BillTradeState.SUCCESS, Money(12_501))
    assert (payment.refund_id, payment.out_refund_no, payment.refund_amount) == (None, None, Money(0))

    assert (refund.trade_state, refund.amount) == (BillTradeState.REFUND, Money(0))
    assert (refund.refund_id, refund.out_refund_no) == ("50300020240321000000000001", "RF2024032100001")
    assert (refund.refund_amount, refund.refund_status) == (Money(5_000), "SUCCESS")


@pytest.mark.parametrize(
    ("yuan", "fen"), [("0.01", 1), ("0.10", 10), ("19.99", 1_999), ("123456.78", 12_345_678)]
)
def test_yuan_become_fen_without_rounding(yuan: str, fen: int) -> None:
    row = PAYMENT.replace("`125.01", f"`{yuan}")
    summary = f"`1,`{yuan},`0.00,`0.00,`0.75000,`{yuan},`0.00"
    (parsed,) = parse_trade_bill(bill(row, summary=summary))
    assert parsed.amount == Money(fen)


def test_a_comma_inside_the_product_name_does_not_shift_columns() -> None:
    row = PAYMENT.replace("`门诊缴费-西药费", "`门诊缴费,西药费")
    (parsed,) = parse_trade_bill(bill(row, summary="`1,`125.01,`0.00,`0.00,`0.75000,`125.01,`0.00"))
    assert parsed.amount == Money(12_501)


def test_a_byte_order_mark_and_unix_line_ends_are_accepted() -> None:
    text = "\ufeff" + bill(PAYMENT, REFUND).replace("\r\n", "\n")
    assert len(parse_trade_bill(text)) == 2


def test_a_summary_that_does_not_add_up_is_refused() -> None:
    with pytest.raises(ChannelProtocolError, match="应结订单总金额"):
        parse_trade_bill(bill(PAYMENT, REFUND, summary="`2,`125.00,`50.00,`0.00,`0.45000,`125.00,`50.00"))
    with pytest.raises(ChannelProtocolError, match="rows"):
        parse_trade_bill(bill(PAYMENT, summary="`2,`125.01,`0.00,`0.00,`0.75000,`125.01,`0.00"))


@pytest.mark.parametrize(
    ("broken", "complaint"),
    [
        (PAYMENT.replace("`SUCCESS", "`PENDING"), "交易状态"),
        (PAYMENT.replace("`125.01,`0.00,`0", "`125.015,`0.00,`0", 1), "two decimals"),
        (PAYMENT.replace("`2024-03-21 13:51:31", "`2024/03/21 13:51"), "time"),
        (PAYMENT.replace(",`0.60%", ""), "fields"),
        (PAYMENT[1:], "backtick"),
    ],
)
def test_malformed_rows_are_refused(broken: str, complaint: str) -> None:
    with pytest.raises(ChannelProtocolError, match=complaint):
        parse_trade_bill(bill(broken, summary="`1,`125.01,`0.00,`0.00,`0.75000,`125.01,`0.00"))


def test_a_bill_without_summary_is_refused() -> None:
    with pytest.raises(ChannelProtocolError):
        parse_trade_bill(ALL_DETAIL_HEADER + "\r\n" + PAYMENT + "\r\n")


def test_what_the_simulator_renders_parses_back_to_the_same_amounts() -> None:
    paid_at = datetime(2024, 3, 21, 16, 30, 5, tzinfo=UTC)  # 00:30 next day in Beijing
    order = SimOrder(
        out_trade_no="MP2024032200001",
        mchid="1900000109",
        appid="wx8888888888888888",
        trade_type="NATIVE",
        description="住院预交金, 第1次",
        attach=None,
        total_fen=300_000,
        notify_url="https://h.example/n",
        time_expire=None,
        code_url="weixin://wxpay/bizpayurl?pr=abc",
        prepay_id=None,
        trade_state="REFUND",
        transaction_id="4200000001202403220000000001",
        success_time=paid_at,
        payer_openid="oUpF8u123",
        created_at=paid_at,
        traceparent=None,
    )
    refund = SimRefund(
        out_refund_no="RF1",
        refund_id="503000001",
        out_trade_no=order.out_trade_no,
        refund_fen=12_345,
        reason=None,
        notify_url=None,
        status="SUCCESS",
        created_at=paid_at,
        success_time=paid_at,
        traceparent=None,
    )

    payment_row, refund_row = parse_trade_bill(render_all_bill([order], [(refund, order)]))

    assert payment_row.trade_time == datetime(2024, 3, 22, 0, 30, 5, tzinfo=BEIJING)
    assert (payment_row.amount, refund_row.refund_amount) == (Money(300_000), Money(12_345))
    assert refund_row.out_refund_no == "RF1" and refund_row.transaction_id == order.transaction_id


# Cases carried over from reconciliation's own WeChat bill reader, removed when reconciliation began
# reading every bill through payment-core's ExportChannelBill.


def test_the_payer_openid_is_not_carried_into_the_rows() -> None:
    assert "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o" not in repr(parse_trade_bill(bill(PAYMENT, REFUND)))


def test_a_day_without_rows_is_an_empty_bill() -> None:
    assert parse_trade_bill("\ufeff" + bill(summary="`0,`0.00,`0.00,`0.00,`0.00000,`0.00,`0.00")) == []


@pytest.mark.parametrize(
    "text",
    ["", bill(PAYMENT, REFUND).replace("交易时间,", "交易日期,", 1)],
    ids=["empty", "other-header"],
)
def test_a_file_not_in_the_trade_bill_layout_is_refused(text: str) -> None:
    with pytest.raises(ChannelProtocolError):
        parse_trade_bill(text)


def test_the_downloaded_file_is_unzipped_and_checked_against_the_announced_sha1() -> None:
    raw = bill(PAYMENT, REFUND).encode("utf-8")
    sha1 = hashlib.sha1(raw).hexdigest().upper()
    assert _bill_text(gzip.compress(raw), sha1) == raw.decode("utf-8")
    assert _bill_text(raw, sha1) == raw.decode("utf-8")
    with pytest.raises(ChannelProtocolError, match="SHA1"):
        _bill_text(raw + b" ", sha1)


def test_a_voucher_payment_is_exported_at_what_the_platform_asked_for() -> None:
    """应结订单金额 is what settles after a 代金券; 订单金额 is the order total the platform sent, and
    what reconciliation compares with (as its own reader did before)."""
    row = PAYMENT.replace("`125.01,`0.00,`0,`0", "`120.01,`5.00,`0,`0", 1)
    (parsed,) = parse_trade_bill(bill(row, summary="`1,`120.01,`0.00,`0.00,`0.75000,`125.01,`0.00"))
    assert (parsed.amount, parsed.order_amount, parsed.asked_amount) == (
        Money(12_001),
        Money(12_501),
        Money(12_501),
    )


@pytest.mark.parametrize(
    ("summary", "complaint"),
    [
        ("`2,`125.01,`50.00,`0.00,`0.45000,`125.00,`50.00", "订单总金额"),
        ("`2,`125.01,`50.00,`0.00,`0.45000,`125.01,`0.00", "申请退款总金额"),
    ],
)
def test_the_order_and_applied_refund_totals_must_add_up_too(summary: str, complaint: str) -> None:
    with pytest.raises(ChannelProtocolError, match=complaint):
        parse_trade_bill(bill(PAYMENT, REFUND, summary=summary))
