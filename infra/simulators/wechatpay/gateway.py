"""What the WeChat Pay gateway decides: orders, payment by the patient, close, refunds, bill days.

Every method runs without an `await`, so in the simulator's single event loop each one is atomic.

Refunds follow the real lifecycle: the answer is usually PROCESSING and the refund reaches its
outcome later (SUCCESS; ABNORMAL when the patient's card cannot take the money, until the merchant
re-routes it with apply-abnormal-refund; CLOSED, which gives the amount back to what is refundable).
A `RefundPlan` says which; `finish_refund` applies the outcome when its time comes.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from infra.simulators.wechatpay.patient import confirmed, decided_by_now
from infra.simulators.wechatpay.shapes import PAID_STATES, SHANGHAI
from infra.simulators.wechatpay.store import SimOrder, SimRefund, SimStore

Clock = Callable[[], datetime]
_OUT_TRADE_NO = re.compile(r"^[0-9A-Za-z_\-*|]{6,32}$")
_OUT_REFUND_NO = re.compile(r"^[0-9A-Za-z_\-*|@]{1,64}$")
_ID_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"
_ENDED_CODE_PAYMENT = frozenset({"REVOKED", "PAYERROR"})
REFUND_OUTCOMES = frozenset({"SUCCESS", "ABNORMAL", "CLOSED"})
_REROUTE_TYPES = frozenset({"USER_BANK_CARD", "MERCHANT_BANK_CARD"})
_BANK_CARD_FIELDS = ("bank_type", "bank_account", "real_name")
# The real gateway's words for a refund beyond what remains (400 INVALID_REQUEST) and for a merchant
# balance too low to pay a refund out (403 NOT_ENOUGH: top up, then send the same refund again).
REFUND_EXCEEDS_REFUNDABLE = "申请退款金额超过订单可退金额"
BALANCE_TOO_LOW = "基本账户余额不足，请充值后重新发起"


class WechatError(Exception):
    """An API error as WeChat sends it: HTTP status plus {"code", "message"}."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


def param_error(message: str) -> WechatError:
    return WechatError(400, "PARAM_ERROR", message)


@dataclass(frozen=True, slots=True)
class Merchant:
    mchid: str
    appid: str


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class RefundPlan:
    """How a refund goes: `after_s` None is SUCCESS in the answer itself; otherwise the refund
    answers PROCESSING and reaches `outcome` `after_s` (wall-clock) seconds later."""

    outcome: str = "SUCCESS"
    after_s: float | None = None

    def __post_init__(self) -> None:
        if self.outcome not in REFUND_OUTCOMES:
            raise ValueError(f"unknown refund outcome {self.outcome!r}")
        if self.after_s is None and self.outcome != "SUCCESS":
            raise ValueError("only SUCCESS can come in the answer itself")

    @property
    def synchronous(self) -> bool:
        return self.after_s is None


SYNCHRONOUS_SUCCESS = RefundPlan()


class SimulatedGateway:
    def __init__(self, store: SimStore, merchant: Merchant, clock: Clock = utc_now) -> None:
        self._store, self._merchant, self._clock = store, merchant, clock

    def place_order(self, trade_type: str, body: Mapping[str, object], traceparent: str | None) -> SimOrder:
        """Same out_trade_no with the same key parameters replays the order (the same prepay
        answer); with another amount, trade type or description it is 403 OUT_TRADE_NO_USED."""
        order = self._new_order(trade_type, body, traceparent)
        existing = self._store.order(order.out_trade_no)
        if existing is None:
            self._store.add_order(order)
            return order
        return _replayed(self._expired(existing), order)

    def order(self, out_trade_no: str) -> SimOrder:
        found = self._store.order(out_trade_no)
        if found is None:
            raise WechatError(404, "ORDER_NOT_EXIST", "订单不存在")
        return self._expired(found)

    def order_by_transaction_id(self, transaction_id: str) -> SimOrder:
        found = self._store.order_by_transaction_id(transaction_id)
        if found is None:
            raise WechatError(404, "ORDER_NOT_EXIST", "订单不存在")
        return found

    def close(self, out_trade_no: str, body: Mapping[str, object]) -> None:
        self._check_mchid(body.get("mchid"))
        order = self.order(out_trade_no)
        if order.trade_state in PAID_STATES:
            raise WechatError(400, "ORDERPAID", "订单已支付，不能关闭")
        if order.trade_state == "NOTPAY":
            self._store.replace_order(replace(order, trade_state="CLOSED"))

    def patient_pays(
        self, out_trade_no: str, wins_race_with_close: Callable[[], bool]
    ) -> tuple[SimOrder, bool]:
        """The patient scans and pays. Returns the order and whether this call made it paid."""
        order = self.order(out_trade_no)
        if order.trade_state in PAID_STATES:
            return order, False
        if order.trade_state in _ENDED_CODE_PAYMENT or (
            order.trade_state == "CLOSED" and not wins_race_with_close()
        ):
            raise WechatError(409, "ORDERCLOSED", "订单已关闭")
        if order.trade_state == "USERPAYING":  # the patient enters the password now
            paid = confirmed(order, self._now())
            self._store.replace_order(paid)
            return paid, True
        paid = replace(
            order, trade_state="SUCCESS", transaction_id=self._transaction_id(), success_time=self._now()
        )
        self._store.replace_order(paid)
        return paid, True

    def refund(
        self, body: Mapping[str, object], traceparent: str | None, plan_for_new: Callable[[], RefundPlan]
    ) -> tuple[SimRefund, SimOrder, bool]:
        """Refund part or all of a paid order; a replay answers the first refund as it stands now.
        `plan_for_new` is asked only when a refund is really created, after every rule passed; it
        may refuse it (403 NOT_ENOUGH: the merchant's balance is too low), then nothing is kept."""
        out_refund_no = _text(body, "out_refund_no", _OUT_REFUND_NO)
        refund_fen, total_fen = _refund_amounts(body)
        order = self._refunded_order(body)
        existing = self._store.refund(out_refund_no)
        if existing is not None:
            return _replayed_refund(existing, order, refund_fen), order, False
        _check_refundable(order, total_fen, refund_fen, self._store.refunds_of(order.out_trade_no))
        refund = self._new_refund(out_refund_no, order, refund_fen, body, traceparent, plan_for_new())
        self._store.add_refund(refund)
        self._store.replace_order(replace(order, trade_state="REFUND"))
        return refund, order, True

    def refund_record(self, out_refund_no: str) -> tuple[SimRefund, SimOrder]:
        found = self._store.refund(out_refund_no)
        if found is None:
            raise WechatError(404, "RESOURCE_NOT_EXISTS", "退款单不存在")
        return found, self.order(found.out_trade_no)

    def finish_refund(self, out_refund_no: str) -> tuple[SimRefund, SimOrder] | None:
        """A PROCESSING refund reaches its planned outcome; None when there is nothing to finish."""
        refund = self._store.refund(out_refund_no)
        if refund is None or refund.status != "PROCESSING" or refund.outcome is None:
            return None
        success_time = self._now() if refund.outcome == "SUCCESS" else None
        finished = replace(
            refund, status=refund.outcome, success_time=success_time, outcome=None, outcome_at=None
        )
        self._store.replace_refund(finished)
        order = self.order(refund.out_trade_no)
        if finished.status == "CLOSED":
            order = self._paid_again_if_nothing_refunded(order)
        return finished, order

    def refunds_in_flight(self) -> list[SimRefund]:
        return self._store.refunds_in_flight()

    def reroute_abnormal_refund(
        self, refund_id: str, body: Mapping[str, object], plan: RefundPlan
    ) -> tuple[SimRefund, SimOrder]:
        """POST .../refunds/{refund_id}/apply-abnormal-refund: an ABNORMAL refund goes out again,
        to another bank card (the patient's or the merchant's), and is PROCESSING once more."""
        refund = self._store.refund_by_id(refund_id)
        if refund is None or body.get("out_refund_no") != refund.out_refund_no:
            raise WechatError(404, "RESOURCE_NOT_EXISTS", "退款单不存在")
        _check_reroute(body)
        if refund.status != "ABNORMAL":
            raise WechatError(400, "INVALID_REQUEST", "退款单状态不是退款异常，不能发起异常退款")
        rerouted = replace(refund, **self._planned(plan))
        self._store.replace_refund(rerouted)
        return rerouted, self.order(refund.out_trade_no)

    def bill_day(self, bill_date: date) -> tuple[list[SimOrder], list[tuple[SimRefund, SimOrder]]]:
        """Payments that succeeded and refunds initiated on one Beijing-time calendar day."""
        start = datetime(bill_date.year, bill_date.month, bill_date.day, tzinfo=SHANGHAI)
        end = start + timedelta(days=1)
        payments = self._store.orders_paid_between(start, end)
        refunds = self._store.refunds_created_between(start, end)
        return payments, [(refund, self.order(refund.out_trade_no)) for refund in refunds]

    def _new_order(self, trade_type: str, body: Mapping[str, object], traceparent: str | None) -> SimOrder:
        self._check_mchid(body.get("mchid"))
        if body.get("appid") != self._merchant.appid:
            raise param_error("appid 与商户号未绑定")
        if trade_type == "JSAPI" and not isinstance(body.get("payer"), dict):
            raise param_error("JSAPI 下单需要 payer.openid")
        return SimOrder(
            out_trade_no=_text(body, "out_trade_no", _OUT_TRADE_NO),
            mchid=self._merchant.mchid,
            appid=self._merchant.appid,
            trade_type=trade_type,
            description=_description(body),
            attach=_optional_text(body, "attach"),
            total_fen=_order_total(body),
            notify_url=_notify_url(body, required=True) or "",
            time_expire=_time_expire(body),
            code_url=f"weixin://wxpay/bizpayurl?pr={_random_id(7)}",
            prepay_id=f"wx{self._now():%Y%m%d%H%M%S}{_random_id(18)}",
            trade_state="NOTPAY",
            transaction_id=None,
            success_time=None,
            payer_openid=_openid(body),
            created_at=self._now(),
            traceparent=traceparent,
        )

    def _new_refund(
        self,
        out_refund_no: str,
        order: SimOrder,
        refund_fen: int,
        body: Mapping[str, object],
        traceparent: str | None,
        plan: RefundPlan,
    ) -> SimRefund:
        now = self._now()
        return SimRefund(
            out_refund_no=out_refund_no,
            refund_id=f"50300{now:%Y%m%d}{secrets.randbelow(10**16):016d}",
            out_trade_no=order.out_trade_no,
            refund_fen=refund_fen,
            reason=_optional_text(body, "reason"),
            notify_url=_notify_url(body, required=False),
            created_at=now,
            traceparent=traceparent,
            **self._planned(plan),
        )

    def _planned(self, plan: RefundPlan) -> dict[str, Any]:
        """The status fields of a refund that follows `plan` from now."""
        if plan.after_s is None:
            return {"status": "SUCCESS", "success_time": self._now(), "outcome": None, "outcome_at": None}
        due = self._clock().astimezone(UTC) + timedelta(seconds=plan.after_s)
        return {"status": "PROCESSING", "success_time": None, "outcome": plan.outcome, "outcome_at": due}

    def _paid_again_if_nothing_refunded(self, order: SimOrder) -> SimOrder:
        """A closed refund paid nothing out: when it was the order's only refund, the trade reads
        SUCCESS again (and its whole amount is refundable, see `_check_refundable`)."""
        live = [r for r in self._store.refunds_of(order.out_trade_no) if r.status != "CLOSED"]
        if live or order.trade_state != "REFUND":
            return order
        paid = replace(order, trade_state="SUCCESS")
        self._store.replace_order(paid)
        return paid

    def _refunded_order(self, body: Mapping[str, object]) -> SimOrder:
        """The order a refund is for; the refund API says RESOURCE_NOT_EXISTS (not the order
        query's ORDER_NOT_EXIST) when the gateway never saw it."""
        transaction_id = body.get("transaction_id")
        out_trade_no = body.get("out_trade_no")
        if isinstance(transaction_id, str) and transaction_id:
            found = self._store.order_by_transaction_id(transaction_id)
        elif isinstance(out_trade_no, str) and out_trade_no:
            found = self._store.order(out_trade_no)
        else:
            raise param_error("transaction_id 与 out_trade_no 必须二选一")
        if found is None:
            raise WechatError(404, "RESOURCE_NOT_EXISTS", "订单不存在")
        return self._expired(found)

    def _expired(self, order: SimOrder) -> SimOrder:
        """An unpaid order past time_expire reads as CLOSED, as the real gateway closes it; a code
        payment reads as its patient decided once the decision's time has come."""
        decided = decided_by_now(order, self._now())
        if decided is not None:
            self._store.replace_order(decided)
            return decided
        if order.trade_state == "NOTPAY" and order.time_expire and order.time_expire <= self._now():
            closed = replace(order, trade_state="CLOSED")
            self._store.replace_order(closed)
            return closed
        return order

    def _check_mchid(self, mchid: object) -> None:
        if mchid != self._merchant.mchid:
            raise param_error("mchid 与请求签名的商户号不一致")

    def _transaction_id(self) -> str:
        return f"4200{secrets.randbelow(10**4):04d}{self._now():%Y%m%d}{secrets.randbelow(10**12):012d}"

    def _now(self) -> datetime:
        return self._clock().astimezone(UTC).replace(microsecond=0)


def _replayed(existing: SimOrder, requested: SimOrder) -> SimOrder:
    if _key_parameters(existing) != _key_parameters(requested):
        raise WechatError(403, "OUT_TRADE_NO_USED", "商户订单号重复")
    if existing.trade_state in PAID_STATES:
        raise WechatError(400, "ORDERPAID", "该订单已支付")
    if existing.trade_state == "CLOSED":
        raise WechatError(400, "ORDERCLOSED", "该订单已关闭")
    return existing


def _key_parameters(order: SimOrder) -> tuple[object, ...]:
    """What a replay of an order must repeat to be the same order."""
    return order.total_fen, order.trade_type, order.description


def _replayed_refund(existing: SimRefund, order: SimOrder, refund_fen: int) -> SimRefund:
    if existing.refund_fen != refund_fen or existing.out_trade_no != order.out_trade_no:
        raise WechatError(400, "INVALID_REQUEST", "商户退款单号重复，且与原退款参数不一致")
    return existing


def _check_refundable(order: SimOrder, total_fen: int, refund_fen: int, earlier: list[SimRefund]) -> None:
    if order.trade_state not in PAID_STATES:
        raise WechatError(400, "INVALID_REQUEST", "订单未支付，不能退款")
    if total_fen != order.total_fen:
        raise param_error("amount.total 与原订单金额不一致")
    refunded = sum(refund.refund_fen for refund in earlier if refund.status != "CLOSED")
    if refunded + refund_fen > order.total_fen:
        raise WechatError(400, "INVALID_REQUEST", REFUND_EXCEEDS_REFUNDABLE)


def _check_reroute(body: Mapping[str, object]) -> None:
    kind = body.get("type")
    if kind not in _REROUTE_TYPES:
        raise param_error(f"type 只能为 {'/'.join(sorted(_REROUTE_TYPES))}")
    if kind == "USER_BANK_CARD" and not all(_optional_text(body, name) for name in _BANK_CARD_FIELDS):
        raise param_error("退款至用户银行卡需要 bank_type、bank_account、real_name")


def _text(body: Mapping[str, object], name: str, pattern: re.Pattern[str]) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise param_error(f"{name} 格式错误")
    return value


def _optional_text(body: Mapping[str, object], name: str) -> str | None:
    value = body.get(name)
    return value if isinstance(value, str) and value else None


def _description(body: Mapping[str, object]) -> str:
    value = body.get("description")
    if not isinstance(value, str) or not value or len(value) > 127:
        raise param_error("description 必填，且不超过127个字符")
    return value


def _notify_url(body: Mapping[str, object], required: bool) -> str | None:
    # The real gateway demands https; the simulator also takes http on loopback (no TLS here).
    value = body.get("notify_url")
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.startswith(("https://", "http://")) or "?" in value:
        raise param_error("notify_url 必须为不带参数的 http(s) 地址")
    return value


def _order_total(body: Mapping[str, object]) -> int:
    amount = body.get("amount")
    _check_currency(amount, default="CNY")
    return _fen(amount, "total")


def _refund_amounts(body: Mapping[str, object]) -> tuple[int, int]:
    amount = body.get("amount")
    _check_currency(amount, default=None)
    return _fen(amount, "refund"), _fen(amount, "total")


def _fen(amount: object, key: str) -> int:
    value = amount.get(key) if isinstance(amount, dict) else None
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise param_error(f"amount.{key} 必须为正整数（分）")
    return value


def _check_currency(amount: object, default: str | None) -> None:
    currency = amount.get("currency", default) if isinstance(amount, dict) else None
    if currency != "CNY":
        raise param_error("amount.currency 必须为 CNY")


def _time_expire(body: Mapping[str, object]) -> datetime | None:
    value = body.get("time_expire")
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError as exc:
        raise param_error("time_expire 必须为 RFC3339 时间") from exc
    if moment.tzinfo is None:
        raise param_error("time_expire 必须带时区")
    return moment


def _openid(body: Mapping[str, object]) -> str:
    payer = body.get("payer")
    openid = payer.get("openid") if isinstance(payer, dict) else None
    return openid if isinstance(openid, str) and openid else f"oUpF8u{_random_id(22)}"


def _random_id(length: int) -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))
