"""The rules of the simulated Alipay acquiring gateway (统一收单), one method per API.

Each method takes the decoded biz_content and returns the inner `<method>_response` object, or
raises AlipayError, which the HTTP layer renders as the same object with code 40004 (业务失败) and
the real sub_code (ACQ.TRADE_NOT_EXIST, ACQ.TRADE_HAS_CLOSE, ...). Everything is synchronous:
between two awaits of the event loop each call is atomic.

By default alipay.trade.precreate records the trade at once (WAIT_BUYER_PAY), a simplification. The
real gateway creates it only when the patient scans the QR code, and until then answers query,
close and refund with ACQ.TRADE_NOT_EXIST: `trade_created_on_scan` does that (the trade is kept
aside until /sim/pay), so a merchant can be tested against the real behaviour.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from infra.simulators.alipay.money import MAX_FEN, MIN_FEN, fen_of, yuan
from infra.simulators.alipay.store import SimRefund, SimStore, SimTrade

BEIJING = ZoneInfo("Asia/Shanghai")
Clock = Callable[[], datetime]
Biz = dict[str, Any]
SUCCESS = {"code": "10000", "msg": "Success"}
PAYING = {"code": "10003", "msg": " order success pay inprocess"}
REFUND_SUCCESS, REFUND_PROCESSING = "REFUND_SUCCESS", "PROCESSING"
_PAID = frozenset({"TRADE_SUCCESS", "TRADE_FINISHED"})


def utc_now() -> datetime:
    return datetime.now(UTC)


def beijing(moment: datetime) -> str:
    return moment.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S")


class AlipayError(Exception):
    def __init__(
        self, sub_code: str, sub_msg: str, code: str = "40004", msg: str = "Business Failed"
    ) -> None:
        super().__init__(f"{sub_code}: {sub_msg}")
        self.code, self.msg, self.sub_code, self.sub_msg = code, msg, sub_code, sub_msg

    def answer(self) -> dict[str, str]:
        return {"code": self.code, "msg": self.msg, "sub_code": self.sub_code, "sub_msg": self.sub_msg}


def invalid(sub_msg: str) -> AlipayError:
    return AlipayError("ACQ.INVALID_PARAMETER", sub_msg)


def missing(name: str) -> AlipayError:
    return AlipayError("isv.missing-required-arguments", f"缺少必选参数{name}", "40002", "Invalid Arguments")


@dataclass(frozen=True, slots=True)
class Effect:
    """What the HTTP layer sends after answering: notifications of trades that changed."""

    paid: SimTrade | None = None
    refunded: tuple[SimTrade, SimRefund] | None = None


class SimulatedGateway:
    def __init__(self, store: SimStore, clock: Clock = utc_now, trade_created_on_scan: bool = False) -> None:
        self._store, self._clock = store, clock
        self._created_on_scan = trade_created_on_scan

    # --- alipay.trade.precreate / alipay.trade.pay ------------------------------------------------

    def precreate(self, biz: Biz, notify_url: str | None, traceparent: str | None) -> Biz:
        out_trade_no, total_fen, subject = _order_fields(biz)
        existing = self._store.trade(out_trade_no)
        if existing is not None:
            _check_replay(existing, total_fen)
            return {**SUCCESS, "out_trade_no": out_trade_no, "qr_code": existing.qr_code}
        trade = self._new_trade(
            out_trade_no, total_fen, subject, "FACE_TO_FACE_PAYMENT", notify_url, traceparent
        )
        trade = replace(
            trade, time_expire=_time_expire(biz), qr_code=f"https://qr.alipay.com/bax{secrets.token_hex(10)}"
        )
        self._store.add_trade(trade)
        if self._created_on_scan:
            self._store.hold_unscanned(out_trade_no)
        return {**SUCCESS, "out_trade_no": out_trade_no, "qr_code": trade.qr_code}

    def pay(
        self, biz: Biz, notify_url: str | None, traceparent: str | None, user_paying: bool
    ) -> tuple[Biz, Effect]:
        """Bar code (付款码): paid at once, or 10003 while the patient confirms on the phone."""
        out_trade_no, total_fen, subject = _order_fields(biz)
        if biz.get("scene") not in ("bar_code", "wave_code"):
            raise invalid("scene 只能为 bar_code 或 wave_code")
        auth_code = str(biz.get("auth_code") or "")
        if not (
            auth_code.isdigit()
            and 16 <= len(auth_code) <= 24
            and auth_code[:2] in {"25", "26", "27", "28", "29", "30"}
        ):
            raise AlipayError(
                "ACQ.PAYMENT_AUTH_CODE_INVALID", "支付失败，获取顾客账户信息失败，请顾客刷新付款码后重新收款"
            )
        existing = self._store.trade(out_trade_no)
        if existing is not None:
            _check_replay(existing, total_fen)
            return self._pay_answer(existing), Effect()
        trade = self._new_trade(out_trade_no, total_fen, subject, "BAR_CODE", notify_url, traceparent)
        if not user_paying:
            trade = replace(trade, trade_status="TRADE_SUCCESS", gmt_payment=self._clock())
        self._store.add_trade(trade)
        return self._pay_answer(trade), Effect(paid=trade if not user_paying else None)

    def _pay_answer(self, trade: SimTrade) -> Biz:
        if trade.trade_status == "WAIT_BUYER_PAY":
            return {**PAYING, **_trade_ids(trade), "total_amount": yuan(trade.total_fen)}
        return {**SUCCESS, **_paid_fields(trade), "gmt_payment": beijing(_paid_at(trade))}

    def _new_trade(
        self,
        out_trade_no: str,
        total_fen: int,
        subject: str,
        product: str,
        notify_url: str | None,
        traceparent: str | None,
    ) -> SimTrade:
        now = self._clock()
        trade_no = f"{now.astimezone(BEIJING):%Y%m%d}22001{secrets.randbelow(10**15):015d}"
        return SimTrade(
            out_trade_no, trade_no, product, subject, total_fen, notify_url, None, None, "WAIT_BUYER_PAY",
            f"2088{secrets.randbelow(10**12):012d}", "159******21", now, None, None, traceparent,
        )  # fmt: skip

    # --- query / close / cancel ------------------------------------------------------------------

    def query(self, biz: Biz) -> Biz:
        trade = self._expire_if_due(self._trade_of(biz))
        answer: Biz = {**SUCCESS, **_trade_ids(trade), "trade_status": trade.trade_status}
        answer["total_amount"] = yuan(trade.total_fen)
        if trade.gmt_payment is not None:
            answer.update(_paid_fields(trade))
            answer["send_pay_date"] = beijing(trade.gmt_payment)
        return answer

    def close(self, biz: Biz) -> Biz:
        trade = self._expire_if_due(self._trade_of(biz))
        if trade.trade_status != "WAIT_BUYER_PAY":
            raise AlipayError("ACQ.TRADE_STATUS_ERROR", "交易状态不合法")
        self._store.replace_trade(replace(trade, trade_status="TRADE_CLOSED", gmt_close=self._clock()))
        return {**SUCCESS, **_trade_ids(trade)}

    def cancel(self, biz: Biz) -> Biz:
        """撤销: an unpaid trade is closed, a paid one refunded in full; retry_flag N either way."""
        trade = self._trade_of(biz)
        answer = {**SUCCESS, **_trade_ids(trade), "retry_flag": "N"}
        if trade.trade_status == "TRADE_CLOSED" and trade.gmt_payment is None:
            return {**answer, "action": "close"}
        if trade.trade_status == "WAIT_BUYER_PAY":
            self._store.replace_trade(replace(trade, trade_status="TRADE_CLOSED", gmt_close=self._clock()))
            return {**answer, "action": "close"}
        if trade.trade_status != "TRADE_SUCCESS" or self._store.refunds_of(trade.out_trade_no):
            raise AlipayError("ACQ.TRADE_STATUS_ERROR", "交易状态不合法")
        now = self._clock()
        refund = SimRefund(
            trade.out_trade_no, trade.out_trade_no, trade.total_fen, "撤销", REFUND_SUCCESS, now, now, None
        )
        self._store.add_refund(refund)
        self._store.replace_trade(replace(trade, trade_status="TRADE_CLOSED", gmt_close=now))
        return {**answer, "action": "refund", "gmt_refund_pay": beijing(now)}

    # --- refunds -----------------------------------------------------------------------------------

    def refund(self, biz: Biz, traceparent: str | None, processing: bool) -> tuple[Biz, Effect]:
        """Partial refunds keyed by out_request_no (default: the out_trade_no, i.e. one refund);
        a replay moves no money again and answers fund_change N."""
        trade = self._trade_of(biz)
        refund_fen = fen_of(biz.get("refund_amount"))
        if refund_fen is None or refund_fen < MIN_FEN:
            raise invalid("refund_amount 不合法")
        out_request_no = str(biz.get("out_request_no") or trade.out_trade_no)
        existing = self._store.refund(trade.out_trade_no, out_request_no)
        if existing is not None:
            if existing.refund_fen != refund_fen:
                raise invalid("同一退款请求号的退款金额不一致")
            return self._refund_answer(trade, existing, fund_change=False), Effect()
        self._check_refundable(trade, refund_fen)
        now = self._clock()
        status, paid_at = (REFUND_PROCESSING, None) if processing else (REFUND_SUCCESS, now)
        refund = SimRefund(
            trade.out_trade_no,
            out_request_no,
            refund_fen,
            _text(biz, "refund_reason"),
            status,
            now,
            paid_at,
            traceparent,
        )
        self._store.add_refund(refund)
        trade = self._close_when_refunded_in_full(trade)
        effect = Effect() if processing else Effect(refunded=(trade, refund))
        return self._refund_answer(trade, refund, fund_change=not processing), effect

    def _check_refundable(self, trade: SimTrade, refund_fen: int) -> None:
        if trade.trade_status == "WAIT_BUYER_PAY":
            raise AlipayError("ACQ.TRADE_STATUS_ERROR", "交易状态不合法")
        if trade.trade_status == "TRADE_FINISHED":
            raise AlipayError("ACQ.TRADE_HAS_FINISHED", "交易已完结")
        if trade.trade_status == "TRADE_CLOSED" and trade.gmt_payment is None:
            raise AlipayError("ACQ.TRADE_HAS_CLOSE", "交易已经关闭")
        if refund_fen > trade.total_fen - self._refunded_fen(trade):
            raise AlipayError("ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", "退款金额超限")

    def _refunded_fen(self, trade: SimTrade) -> int:
        return sum(refund.refund_fen for refund in self._store.refunds_of(trade.out_trade_no))

    def _close_when_refunded_in_full(self, trade: SimTrade) -> SimTrade:
        if self._refunded_fen(trade) < trade.total_fen:
            return trade
        closed = replace(trade, trade_status="TRADE_CLOSED", gmt_close=self._clock())  # 全额退款后关闭
        self._store.replace_trade(closed)
        return closed

    def _refund_answer(self, trade: SimTrade, refund: SimRefund, fund_change: bool) -> Biz:
        answer: Biz = {**SUCCESS, **_trade_ids(trade), "buyer_logon_id": trade.buyer_logon_id}
        answer.update(buyer_user_id=trade.buyer_user_id, fund_change="Y" if fund_change else "N")
        answer["refund_fee"] = yuan(self._refunded_fen(trade))
        answer["send_back_fee"] = yuan(refund.refund_fen if fund_change else 0)
        if refund.gmt_refund_pay is not None:
            answer["gmt_refund_pay"] = beijing(refund.gmt_refund_pay)
        return answer

    def refund_query(self, biz: Biz) -> Biz:
        """refund_status REFUND_SUCCESS once the money is back; absent while it is not (and for a
        request number the gateway never saw, which then also lacks out_request_no/refund_amount)."""
        trade = self._trade_of(biz)
        answer: Biz = {**SUCCESS, **_trade_ids(trade)}
        out_request_no = biz.get("out_request_no")
        if not out_request_no:
            raise missing("out_request_no")
        refund = self._store.refund(trade.out_trade_no, str(out_request_no))
        if refund is None:
            return answer
        answer.update(out_request_no=refund.out_request_no, total_amount=yuan(trade.total_fen))
        answer["refund_amount"] = yuan(refund.refund_fen)
        if refund.reason:
            answer["refund_reason"] = refund.reason
        if refund.status == REFUND_SUCCESS:
            answer["refund_status"] = REFUND_SUCCESS
            if "gmt_refund_pay" in (biz.get("query_options") or []) and refund.gmt_refund_pay is not None:
                answer["gmt_refund_pay"] = beijing(refund.gmt_refund_pay)
        return answer

    def finish_refund(self, out_trade_no: str, out_request_no: str) -> tuple[SimTrade, SimRefund] | None:
        """Test control: a PROCESSING refund is paid out now."""
        if not out_trade_no:  # convenience: the one refund in progress with this request number
            waiting = self._store.refunds_in_progress(out_request_no)
            out_trade_no = waiting[0].out_trade_no if len(waiting) == 1 else ""
        trade, refund = self._store.trade(out_trade_no), self._store.refund(out_trade_no, out_request_no)
        if trade is None or refund is None or refund.status != REFUND_PROCESSING:
            return None
        refund = replace(refund, status=REFUND_SUCCESS, gmt_refund_pay=self._clock())
        self._store.replace_refund(refund)
        return trade, refund

    # --- the patient, and the bill -----------------------------------------------------------------

    def patient_pays(self, out_trade_no: str, late_success: bool) -> tuple[SimTrade, bool]:
        """The patient scans and pays (or confirms a bar-code payment). (trade, newly paid)."""
        trade = self._store.trade(out_trade_no)
        if trade is None:
            raise AlipayError("ACQ.TRADE_NOT_EXIST", "交易不存在")
        if trade.trade_status in _PAID:
            return trade, False
        if trade.trade_status == "TRADE_CLOSED" and not late_success:
            raise AlipayError("ACQ.TRADE_HAS_CLOSE", "交易已经关闭")
        paid = replace(trade, trade_status="TRADE_SUCCESS", gmt_payment=self._clock(), gmt_close=None)
        self._store.replace_trade(paid)
        self._store.scanned(out_trade_no)
        return paid, True

    def bill_day(self, day_start: datetime) -> tuple[list[SimTrade], list[tuple[SimTrade, SimRefund]]]:
        end = day_start + timedelta(days=1)
        payments = self._store.trades_paid_between(day_start, end)
        refunds = []
        for refund in self._store.refunds_paid_between(day_start, end):
            trade = self._store.trade(refund.out_trade_no)
            if trade is not None:
                refunds.append((trade, refund))
        return payments, refunds

    def _trade_of(self, biz: Biz) -> SimTrade:
        trade_no, out_trade_no = biz.get("trade_no"), biz.get("out_trade_no")
        if not trade_no and not out_trade_no:
            raise missing("out_trade_no")
        trade = (
            self._store.trade_by_trade_no(str(trade_no)) if trade_no else self._store.trade(str(out_trade_no))
        )
        if trade is None or self._store.is_unscanned(trade.out_trade_no):
            raise AlipayError("ACQ.TRADE_NOT_EXIST", "交易不存在")
        return trade

    def _expire_if_due(self, trade: SimTrade) -> SimTrade:
        """未付款交易超时关闭: an unpaid trade past its time_expire is closed when next looked at."""
        if (
            trade.trade_status != "WAIT_BUYER_PAY"
            or trade.time_expire is None
            or self._clock() < trade.time_expire
        ):
            return trade
        closed = replace(trade, trade_status="TRADE_CLOSED", gmt_close=trade.time_expire)
        self._store.replace_trade(closed)
        return closed


def _order_fields(biz: Biz) -> tuple[str, int, str]:
    out_trade_no = str(biz.get("out_trade_no") or "")
    if not out_trade_no:
        raise missing("out_trade_no")
    if len(out_trade_no) > 64 or not all(c.isalnum() or c == "_" for c in out_trade_no):
        raise invalid("out_trade_no 长度不超过64位，只能包含字母、数字、下划线")
    total_fen = fen_of(biz.get("total_amount"))
    if total_fen is None or not MIN_FEN <= total_fen <= MAX_FEN:
        raise invalid("total_amount 取值范围[0.01,100000000]，精确到小数点后两位")
    subject = _text(biz, "subject")
    if not subject or len(subject) > 256:
        raise missing("subject") if not subject else invalid("subject 长度不超过256")
    return out_trade_no, total_fen, subject


def _check_replay(existing: SimTrade, total_fen: int) -> None:
    if existing.trade_status in _PAID:
        raise AlipayError("ACQ.TRADE_HAS_SUCCESS", "交易已被支付")
    if existing.trade_status == "TRADE_CLOSED":
        raise AlipayError("ACQ.TRADE_HAS_CLOSE", "交易已经关闭")
    if existing.total_fen != total_fen:
        raise AlipayError("ACQ.CONTEXT_INCONSISTENT", "交易信息被篡改")


def _time_expire(biz: Biz) -> datetime | None:
    text = biz.get("time_expire")
    if not text:
        return None
    try:
        return datetime.strptime(str(text), "%Y-%m-%d %H:%M:%S").replace(tzinfo=BEIJING)
    except ValueError:
        raise invalid("time_expire 格式为 yyyy-MM-dd HH:mm:ss") from None


def _text(biz: Biz, key: str) -> str:
    value = biz.get(key)
    return "" if value is None else str(value)


def _trade_ids(trade: SimTrade) -> Biz:
    return {"trade_no": trade.trade_no, "out_trade_no": trade.out_trade_no}


def _paid_at(trade: SimTrade) -> datetime:
    if trade.gmt_payment is None:
        raise RuntimeError("trade not paid")
    return trade.gmt_payment


def _paid_fields(trade: SimTrade) -> Biz:
    amount = yuan(trade.total_fen)
    return {
        **_trade_ids(trade),
        "buyer_logon_id": trade.buyer_logon_id,
        "buyer_user_id": trade.buyer_user_id,
        "total_amount": amount,
        "receipt_amount": amount,
        "buyer_pay_amount": amount,
        "invoice_amount": amount,
        "point_amount": "0.00",
        "fund_bill_list": [{"amount": amount, "fund_channel": "ALIPAYACCOUNT"}],
    }
