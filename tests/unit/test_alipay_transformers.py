"""The Alipay adapter's edges without a network: the exhaustive status maps, yuan <-> fen, the
answer codes, notification verification (fail closed) and the GBK zip bill."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from urllib.parse import urlencode

import pytest
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from infra.simulators.alipay.bill import render_trade_bill
from infra.simulators.alipay.keys import ensure_keys
from infra.simulators.alipay.signing import AlipaySigner
from infra.simulators.alipay.store import SimRefund, SimTrade
from services.payment_core.adapters.channels.alipay import AlipayChannel, AlipayCredentials, brace_free
from services.payment_core.adapters.channels.alipay_bill import detail_text, parse_trade_bill
from services.payment_core.adapters.channels.alipay_transformers import (
    TRADE_STATES,
    checked,
    fen,
    notification_from,
    refund_from_query,
    trade_state_of,
    trade_status_from,
)
from services.payment_core.adapters.channels.ports import (
    BillTradeState,
    ChannelOutcomeUnknown,
    ChannelProtocolError,
    ChannelRejected,
    ChannelUnavailable,
    RefundStatus,
    RejectionReason,
    TradeState,
)
from services.runtime.money import Money


def test_every_trade_status_is_mapped_and_an_unknown_one_is_an_error() -> None:
    assert set(TRADE_STATES) == {"WAIT_BUYER_PAY", "TRADE_SUCCESS", "TRADE_FINISHED", "TRADE_CLOSED"}
    assert trade_state_of("TRADE_CLOSED", paid=False) is TradeState.CLOSED
    assert trade_state_of("TRADE_CLOSED", paid=True) is TradeState.REFUNDED  # 全额退款后关闭
    with pytest.raises(ChannelProtocolError):
        trade_state_of("TRADE_PENDING", paid=False)


def test_a_query_answer_becomes_a_trade_status_in_fen() -> None:
    answer = {
        "code": "10000",
        "out_trade_no": "MP1",
        "trade_no": "2026120222001000000000000001",
        "trade_status": "TRADE_SUCCESS",
        "total_amount": "125.10",
        "send_pay_date": "2026-12-02 09:30:00",
    }
    status = trade_status_from(answer)
    assert (status.state, status.amount, status.transaction_id) == (
        TradeState.PAID,
        Money(12_510),
        answer["trade_no"],
    )
    assert status.success_time == datetime(2026, 12, 2, 1, 30, tzinfo=UTC)
    unpaid = trade_status_from({**answer, "trade_status": "WAIT_BUYER_PAY", "send_pay_date": ""})
    assert (unpaid.state, unpaid.transaction_id) == (TradeState.NOT_PAID, None)


@pytest.mark.parametrize("amount", ["1.005", "12,00", "abc", 125.1])
def test_yuan_that_are_not_exact_are_refused(amount: object) -> None:
    with pytest.raises(ChannelProtocolError):
        fen({"total_amount": amount}, "total_amount")


def test_answer_codes() -> None:
    assert checked({"code": "10000"}, "query", mutating=False) == {"code": "10000"}
    with pytest.raises(ChannelRejected) as refused:
        checked({"code": "40004", "sub_code": "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL"}, "refund", mutating=True)
    assert refused.value.reason is RejectionReason.REFUND_EXCEEDS_PAID
    with pytest.raises(ChannelRejected) as unknown_sub_code:
        checked({"code": "40004", "sub_code": "ACQ.SOMETHING_NEW"}, "refund", mutating=True)
    assert unknown_sub_code.value.reason is RejectionReason.OTHER
    with pytest.raises(ChannelOutcomeUnknown):
        checked({"code": "20000", "sub_code": "isp.unknow-error"}, "refund", mutating=True)
    with pytest.raises(ChannelUnavailable):
        checked({"code": "20000"}, "query", mutating=False)
    with pytest.raises(ChannelProtocolError):
        checked({"code": "10003"}, "refund", mutating=True)  # "paying" is no answer to a refund


def test_refund_query_answers() -> None:
    base = {"code": "10000", "trade_no": "T1", "out_trade_no": "MP1"}
    with pytest.raises(ChannelRejected) as missing:
        refund_from_query(base, "RF1")
    assert missing.value.reason is RejectionReason.NOT_FOUND
    held = {**base, "out_request_no": "RF1", "refund_amount": "50.00"}
    assert refund_from_query(held, "RF1").status is RefundStatus.PROCESSING
    done = refund_from_query(
        {**held, "refund_status": "REFUND_SUCCESS", "gmt_refund_pay": "2026-12-02 10:00:00"}, "RF1"
    )
    assert (done.status, done.amount, done.refund_id) == (RefundStatus.SUCCEEDED, Money(5_000), "T1:RF1")
    with pytest.raises(ChannelProtocolError):
        refund_from_query({**held, "refund_status": "REFUND_FAIL"}, "RF1")


def test_a_refund_notification_without_this_refunds_amount_is_read_as_the_trade() -> None:
    params = {
        "notify_type": "trade_status_sync",
        "notify_id": "n1",
        "out_trade_no": "MP1",
        "trade_no": "T1",
        "trade_status": "TRADE_SUCCESS",
        "total_amount": "125.00",
        "gmt_payment": "2026-12-02 09:30:00",
        "out_biz_no": "RF1",
        "refund_fee": "50.00",
    }
    notification = notification_from(params)
    assert notification is not None and notification.trade is not None and notification.refund is None
    with_amount = notification_from({**params, "send_back_fee": "50.00"})
    assert with_amount is not None and with_amount.refund is not None
    assert (with_amount.refund.amount, with_amount.refund.out_refund_no) == (Money(5_000), "RF1")
    assert notification_from({**params, "notify_type": "batch_trans_notify"}) is None


def test_notifications_are_verified_first(tmp_path: Path) -> None:
    keys = ensure_keys(tmp_path / "keys")
    key = load_pem_private_key(keys.alipay_private_key.read_bytes(), password=None)
    signer = AlipaySigner(key)  # type: ignore[arg-type]
    channel = AlipayChannel(AlipayCredentials.from_key_dir(keys.directory), "http://127.0.0.1:9/gateway.do")
    params = {
        "notify_type": "trade_status_sync",
        "notify_id": "n1",
        "app_id": keys.app_id.read_text().strip(),
        "charset": "utf-8",
        "out_trade_no": "MP1",
        "trade_no": "T1",
        "trade_status": "TRADE_SUCCESS",
        "total_amount": "125.00",
        "gmt_payment": "2026-12-02 09:30:00",
        "subject": "门诊缴费 & 西药费=1",
    }

    def form(values: dict[str, str]) -> bytes:
        return urlencode({**values, "sign": signer.sign_notification(values), "sign_type": "RSA2"}).encode()

    parsed = channel.parse_notification({}, form(params))
    assert parsed is not None and parsed.trade is not None and parsed.trade.state is TradeState.PAID
    assert channel.parse_notification({}, form({**params, "app_id": "2021999999999999"})) is None
    assert channel.parse_notification({}, form({**params, "trade_status": "TRADE_LIMBO"})) is None
    assert channel.parse_notification({}, b"not a form") is None
    assert channel.parse_notification({}, b"\xff\xfe") is None


def _bill(refund_fen: int = 2_500) -> bytes:
    created = datetime(2026, 12, 2, 1, 0, tzinfo=UTC)
    paid = datetime(2026, 12, 2, 1, 1, tzinfo=UTC)
    trade = SimTrade(
        "MP1", "T1", "FACE_TO_FACE_PAYMENT", "门诊缴费,西药", 12_500, None, None, None, "TRADE_SUCCESS",
        "2088", "159******21", created, paid, None, None,
    )  # fmt: skip
    refund = SimRefund("MP1", "RF1", refund_fen, "退药", "REFUND_SUCCESS", paid, paid, None)
    return render_trade_bill("2088000000000156", date(2026, 12, 2), [trade], [(trade, refund)], paid)


def test_the_bill_zip_is_read_in_fen() -> None:
    payment, refund = parse_trade_bill(detail_text(_bill()))
    assert (payment.trade_state, payment.amount, payment.transaction_id, payment.out_trade_no) == (
        BillTradeState.SUCCESS,
        Money(12_500),
        "T1",
        "MP1",
    )
    assert (refund.trade_state, refund.refund_amount, refund.out_refund_no, refund.refund_id) == (
        BillTradeState.REFUND,
        Money(2_500),
        "RF1",
        "T1:RF1",
    )


def test_a_bill_that_does_not_add_up_is_refused() -> None:
    text = detail_text(_bill()).replace(
        "#交易合计：1笔，商家实收共125.00元", "#交易合计：1笔，商家实收共125.01元"
    )
    with pytest.raises(ChannelProtocolError):
        parse_trade_bill(text)
    with pytest.raises(ChannelProtocolError):
        parse_trade_bill(detail_text(_bill()).replace("退款\t", "冲正\t"))
    with pytest.raises(ChannelProtocolError):
        detail_text(b"PK not really a zip")


def test_echoed_free_text_carries_no_ascii_braces() -> None:
    assert brace_free("退药 {复诊} 2") == "退药 ｛复诊｝ 2"


def test_a_merchant_balance_too_low_is_not_now_and_a_system_error_is_unknown() -> None:
    """ACQ.SELLER_BALANCE_NOT_ENOUGH used to read as REFUND_EXCEEDS_PAID, a final refusal that left
    the patient unrefunded; nothing was done, so the same refund goes again later."""
    with pytest.raises(ChannelUnavailable):
        checked({"code": "40004", "sub_code": "ACQ.SELLER_BALANCE_NOT_ENOUGH"}, "refund", mutating=True)
    with pytest.raises(ChannelOutcomeUnknown):
        checked({"code": "40004", "sub_code": "ACQ.SYSTEM_ERROR"}, "pay_by_code", mutating=True)
