"""An in-memory PaymentChannel that keeps the same rules as the real gateways, for tests and demos.

It passes the same conformance suite as WechatPayChannel. Notifications are JSON signed with an
HMAC key private to the instance, so a tampered body or signature parses to None, as with a real
channel. Test controls: `patient_pays` stands in for "the patient scans and pays";
`answer_next_refunds` makes the next refunds answer PROCESSING, ABNORMAL or FAILED (closed) instead
of SUCCEEDED, and `finish_refund` later moves a PROCESSING (or ABNORMAL, once re-routed) refund on
and returns the REFUND.* notification the channel sends. As on WeChat Pay, a FAILED refund gives its
amount back to what is refundable; an ABNORMAL one keeps it.

Code payments: a code is valid when it is shaped as WeChat Pay's (18 digits starting 10-15); it
pays at once unless `patient_needs_password` made the next ones wait PAYING, until
`patient_pays` (the patient confirms) or `patient_cancels` (FAILED). `reverse` refuses to act
sooner than REVERSE_NOT_BEFORE after the payment call, as WeChat Pay's rule says.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import re
import secrets
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from services.payment_core.adapters.channels.ports import (
    BillRow,
    BillTradeState,
    ChannelError,
    ChannelNotification,
    ChannelRefund,
    ChannelRejected,
    ChannelTradeStatus,
    JsapiPayParams,
    PaymentChannel,
    PaymentCode,
    PlacedJsapiOrder,
    PlacedOrder,
    RefundStatus,
    RejectionReason,
    TradeState,
)
from services.runtime.money import Money, total

BEIJING = ZoneInfo("Asia/Shanghai")
SIGNATURE_HEADER = "fake-signature"
PAYMENT_CODE = re.compile(r"^1[0-5]\d{16}$")
REVERSE_NOT_BEFORE = timedelta(seconds=15)
CODE, JSAPI, NATIVE = "CODE", "JSAPI", "NATIVE"
_PAID = (TradeState.PAID, TradeState.REFUNDED)
Notification = tuple[dict[str, str], bytes]
_REFUND_EVENTS = {
    RefundStatus.SUCCEEDED: "REFUND.SUCCESS",
    RefundStatus.ABNORMAL: "REFUND.ABNORMAL",
    RefundStatus.FAILED: "REFUND.CLOSED",
}
# Where a refund may go from each unfinished state (ABNORMAL -> SUCCEEDED: a person re-routed it).
_REFUND_MOVES = {
    RefundStatus.PROCESSING: frozenset({RefundStatus.SUCCEEDED, RefundStatus.ABNORMAL, RefundStatus.FAILED}),
    RefundStatus.ABNORMAL: frozenset({RefundStatus.SUCCEEDED}),
}


def _utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@dataclass(frozen=True, slots=True)
class _Order:
    out_trade_no: str
    amount: Money
    notify_url: str
    expires_at: datetime
    code_url: str
    state: TradeState = TradeState.NOT_PAID
    transaction_id: str | None = None
    success_time: datetime | None = None
    kind: str = NATIVE
    placed_at: datetime | None = None
    reversed: bool = False

    def status(self) -> ChannelTradeStatus:
        return ChannelTradeStatus(
            self.out_trade_no,
            self.state,
            self.amount,
            self.transaction_id,
            self.success_time,
            channel_state="REVOKED" if self.reversed else self.state.value,
        )


@dataclass(frozen=True, slots=True)
class _Refund:
    refund: ChannelRefund
    created_at: datetime


class FakeChannel:
    name = "fake"

    def __init__(self, clock: Callable[[], datetime] = _utc_now) -> None:
        self._orders: dict[str, _Order] = {}
        self._refunds: dict[str, _Refund] = {}
        self._clock = clock
        self._serial = itertools.count(1)
        self._secret = secrets.token_bytes(32)
        self._refund_answers: deque[RefundStatus] = deque()
        self._password_waits = 0
        self.code_payment_calls: list[str] = []  # out_trade_no of every pay_by_code, in order
        self._bill_failure: ChannelError | None = None

    async def place_jsapi_order(
        self,
        out_trade_no: str,
        amount: Money,
        description: str,
        notify_url: str,
        expires_at: datetime,
        payer_openid: str,
    ) -> PlacedJsapiOrder:
        if not payer_openid:
            raise ChannelRejected("PARAM_ERROR", "payer.openid required", RejectionReason.INVALID_REQUEST)
        placed = await self.place_order(out_trade_no, amount, description, notify_url, expires_at)
        order = self._orders[out_trade_no]
        prepay_id = "fake-prepay-" + placed.code_url.rsplit("/", 1)[-1]
        self._orders[out_trade_no] = replace(order, kind=JSAPI)
        return PlacedJsapiOrder(out_trade_no, prepay_id)

    def jsapi_pay_params(self, prepay_id: str) -> JsapiPayParams:
        time_stamp, nonce_str = str(int(self._clock().timestamp())), secrets.token_hex(16)
        package = f"prepay_id={prepay_id}"
        signed = f"fake-app\n{time_stamp}\n{nonce_str}\n{package}\n".encode()
        return JsapiPayParams("fake-app", time_stamp, nonce_str, package, "RSA", self._sign(signed))

    def pay_sign_is_valid(self, params: JsapiPayParams) -> bool:
        """What the payer's WeChat client checks before it shows the payment sheet."""
        signed = f"{params.app_id}\n{params.time_stamp}\n{params.nonce_str}\n{params.package}\n"
        return hmac.compare_digest(params.pay_sign, self._sign(signed.encode()))

    async def pay_by_code(
        self, out_trade_no: str, amount: Money, description: str, auth_code: PaymentCode
    ) -> ChannelTradeStatus:
        if not PAYMENT_CODE.fullmatch(auth_code.reveal()) or amount.fen <= 0 or not description:
            raise ChannelRejected("PARAM_ERROR", "invalid payment code", RejectionReason.INVALID_REQUEST)
        self.code_payment_calls.append(out_trade_no)
        existing = self._orders.get(out_trade_no)
        if existing is not None:
            if existing.kind != CODE or existing.amount != amount:
                raise ChannelRejected("OUT_TRADE_NO_USED", "reused", RejectionReason.INVALID_REQUEST)
            return existing.status()
        now = self._clock()
        order = _Order(out_trade_no, amount, "", now, "", TradeState.PAYING, kind=CODE, placed_at=now)
        if self._password_waits > 0:
            self._password_waits -= 1
        else:
            order = replace(
                order,
                state=TradeState.PAID,
                success_time=now,
                transaction_id=f"fake-txn-{next(self._serial)}",
            )
        self._orders[out_trade_no] = order
        return order.status()

    def patient_needs_password(self, count: int = 1) -> None:
        """Test control: the next `count` code payments answer PAYING (the patient must confirm)."""
        self._password_waits += count

    def patient_cancels(self, out_trade_no: str) -> None:
        """Test control: the patient closes the password prompt: the code payment FAILED."""
        order = self._order(out_trade_no)
        if order.state is TradeState.PAYING:
            self._orders[out_trade_no] = replace(order, state=TradeState.FAILED)

    async def reverse(self, out_trade_no: str) -> None:
        order = self._order(out_trade_no)
        if order.kind != CODE:
            raise ChannelRejected("INVALID_REQUEST", "not a code payment", RejectionReason.INVALID_REQUEST)
        if order.reversed:
            return
        assert order.placed_at is not None
        if self._clock() < order.placed_at + REVERSE_NOT_BEFORE:
            raise ChannelRejected(
                "INVALID_REQUEST",
                "reverse sooner than 15 s after the payment",
                RejectionReason.INVALID_REQUEST,
            )
        if order.state is TradeState.REFUNDED:
            raise ChannelRejected("INVALID_REQUEST", "refunded already", RejectionReason.INVALID_REQUEST)
        # Unpaid: closed; paid: the money goes back to the payer. Either way nothing is kept.
        self._orders[out_trade_no] = replace(order, state=TradeState.CLOSED, reversed=True)

    async def place_order(
        self, out_trade_no: str, amount: Money, description: str, notify_url: str, expires_at: datetime
    ) -> PlacedOrder:
        if amount.fen <= 0 or not description or expires_at.tzinfo is None:
            raise ChannelRejected("PARAM_ERROR", "bad order request", RejectionReason.INVALID_REQUEST)
        existing = self._orders.get(out_trade_no)
        if existing is None:
            existing = _Order(
                out_trade_no, amount, notify_url, expires_at, f"fake://pay/{next(self._serial)}"
            )
            self._orders[out_trade_no] = existing
        _check_replay(self._expire(existing), amount)
        return PlacedOrder(out_trade_no, existing.code_url)

    async def query(self, out_trade_no: str) -> ChannelTradeStatus:
        return self._order(out_trade_no).status()

    async def close(self, out_trade_no: str) -> None:
        order = self._order(out_trade_no)
        if order.state in _PAID:
            raise ChannelRejected("ORDERPAID", "order is paid", RejectionReason.ALREADY_PAID)
        self._orders[out_trade_no] = replace(order, state=TradeState.CLOSED)

    async def refund(
        self, out_refund_no: str, out_trade_no: str, refund_amount: Money, order_total: Money, reason: str
    ) -> ChannelRefund:
        order = self._order(out_trade_no)
        earlier = self._refunds.get(out_refund_no)
        if earlier is not None:
            return _replayed_refund(earlier.refund, out_trade_no, refund_amount)
        self._check_refundable(order, refund_amount, order_total)
        now = self._clock()
        status = self._refund_answers.popleft() if self._refund_answers else RefundStatus.SUCCEEDED
        refund = ChannelRefund(
            out_refund_no,
            out_trade_no,
            f"fake-refund-{next(self._serial)}",
            status,
            refund_amount,
            now if status is RefundStatus.SUCCEEDED else None,
            channel_status=status.value,
        )
        self._refunds[out_refund_no] = _Refund(refund, now)
        self._orders[out_trade_no] = replace(order, state=TradeState.REFUNDED)
        self._paid_again_if_nothing_refunded(out_trade_no)
        return refund

    async def query_refund(self, out_refund_no: str, out_trade_no: str = "") -> ChannelRefund:
        found = self._refunds.get(out_refund_no)
        if found is None:
            raise ChannelRejected("RESOURCE_NOT_EXISTS", "no such refund", RejectionReason.NOT_FOUND)
        return found.refund

    def answer_next_refunds(self, status: RefundStatus, count: int = 1) -> None:
        """Test control: the next `count` new refunds answer `status` (replays do not count)."""
        self._refund_answers.extend([status] * count)

    def finish_refund(
        self, out_refund_no: str, status: RefundStatus = RefundStatus.SUCCEEDED
    ) -> Notification:
        """Test control: the channel moves a PROCESSING (or ABNORMAL) refund to `status`; returns
        the REFUND.* notification (headers, body) it sends."""
        item = self._refunds[out_refund_no]
        if status not in _REFUND_MOVES.get(item.refund.status, frozenset()):
            raise ValueError(f"a {item.refund.status.value} refund cannot become {status.value}")
        success_time = self._clock() if status is RefundStatus.SUCCEEDED else None
        refund = replace(item.refund, status=status, success_time=success_time, channel_status=status.value)
        self._refunds[out_refund_no] = replace(item, refund=refund)
        self._paid_again_if_nothing_refunded(refund.out_trade_no)
        return self._signed(_refund_notification_body(refund))

    def parse_notification(self, headers: Mapping[str, str], body: bytes) -> ChannelNotification | None:
        lowered = {name.lower(): value for name, value in headers.items()}
        offered = lowered.get(SIGNATURE_HEADER, "").encode("utf-8", errors="replace")
        if not hmac.compare_digest(offered, self._sign(body).encode("ascii")):
            return None
        try:
            return _notification_from(json.loads(body))
        except (ValueError, KeyError, TypeError):
            return None

    def fail_bill_downloads(self, error: ChannelError | None) -> None:
        """Test control: every bill download raises `error` (None: bills download again)."""
        self._bill_failure = error

    async def download_trade_bill(self, bill_date: date) -> list[BillRow]:
        if self._bill_failure is not None:
            raise self._bill_failure
        payments = [
            _payment_row(order)
            for order in self._orders.values()
            if order.success_time and order.success_time.astimezone(BEIJING).date() == bill_date
        ]
        refunds = [
            self._refund_row(item)
            for item in self._refunds.values()
            if item.created_at.astimezone(BEIJING).date() == bill_date
        ]
        return sorted(payments + refunds, key=lambda row: row.trade_time)

    def patient_pays(self, out_trade_no: str, at: datetime | None = None) -> tuple[dict[str, str], bytes]:
        """Test control: the patient pays (at `at`, in whatever zone it is given, else now); returns
        the notification (headers, body) the channel sends."""
        order = self._order(out_trade_no)
        if order.state in (TradeState.NOT_PAID, TradeState.PAYING):
            order = replace(
                order,
                state=TradeState.PAID,
                success_time=at or self._clock(),
                transaction_id=f"fake-txn-{next(self._serial)}",
            )
            self._orders[out_trade_no] = order
        elif order.state not in _PAID:
            raise ChannelRejected("ORDERCLOSED", "order is closed", RejectionReason.ALREADY_CLOSED)
        return self._signed(_notification_body(order))

    def _signed(self, payload: dict[str, Any]) -> Notification:
        body = json.dumps(payload).encode("utf-8")
        return {SIGNATURE_HEADER: self._sign(body), "content-type": "application/json"}, body

    def _paid_again_if_nothing_refunded(self, out_trade_no: str) -> None:
        """A failed (closed) refund paid nothing: with no other refund the order reads PAID again."""
        if not any(self._live_refunds(out_trade_no)):
            order = self._orders[out_trade_no]
            self._orders[out_trade_no] = replace(order, state=TradeState.PAID)

    def _live_refunds(self, out_trade_no: str) -> list[ChannelRefund]:
        """The order's refunds that hold (or paid out) their amount: all but the failed ones."""
        return [
            item.refund
            for item in self._refunds.values()
            if item.refund.out_trade_no == out_trade_no and item.refund.status is not RefundStatus.FAILED
        ]

    def _order(self, out_trade_no: str) -> _Order:
        order = self._orders.get(out_trade_no)
        if order is None:
            raise ChannelRejected("ORDER_NOT_EXIST", "no such order", RejectionReason.NOT_FOUND)
        return self._expire(order)

    def _expire(self, order: _Order) -> _Order:
        if order.state == TradeState.NOT_PAID and order.expires_at <= self._clock():
            order = replace(order, state=TradeState.CLOSED)
            self._orders[order.out_trade_no] = order
        return order

    def _check_refundable(self, order: _Order, refund_amount: Money, order_total: Money) -> None:
        if order.state not in _PAID:
            raise ChannelRejected("INVALID_REQUEST", "order not paid", RejectionReason.INVALID_REQUEST)
        if order_total != order.amount or refund_amount.fen <= 0:
            raise ChannelRejected("PARAM_ERROR", "refund amounts", RejectionReason.INVALID_REQUEST)
        refunded = total(refund.amount for refund in self._live_refunds(order.out_trade_no))
        if refunded + refund_amount > order.amount:
            raise ChannelRejected(
                "INVALID_REQUEST", "refund exceeds the rest", RejectionReason.REFUND_EXCEEDS_PAID
            )

    def _refund_row(self, item: _Refund) -> BillRow:
        order = self._orders[item.refund.out_trade_no]
        return BillRow(
            item.created_at.astimezone(BEIJING),
            order.transaction_id or "",
            order.out_trade_no,
            BillTradeState.REFUND,
            Money(0),
            item.refund.refund_id,
            item.refund.out_refund_no,
            item.refund.amount,
            item.refund.status.value,
        )

    def _sign(self, body: bytes) -> str:
        return hmac.new(self._secret, body, hashlib.sha256).hexdigest()


def _check_replay(order: _Order, amount: Money) -> None:
    if order.amount != amount:
        raise ChannelRejected(
            "INVALID_REQUEST", "out_trade_no reused with another amount", RejectionReason.INVALID_REQUEST
        )
    if order.state in _PAID:
        raise ChannelRejected("ORDERPAID", "order is paid", RejectionReason.ALREADY_PAID)
    if order.state == TradeState.CLOSED:
        raise ChannelRejected("ORDERCLOSED", "order is closed", RejectionReason.ALREADY_CLOSED)


def _replayed_refund(refund: ChannelRefund, out_trade_no: str, amount: Money) -> ChannelRefund:
    if refund.out_trade_no != out_trade_no or refund.amount != amount:
        raise ChannelRejected(
            "INVALID_REQUEST", "out_refund_no reused with other parameters", RejectionReason.INVALID_REQUEST
        )
    return refund


def _payment_row(order: _Order) -> BillRow:
    assert order.success_time is not None
    return BillRow(
        order.success_time.astimezone(BEIJING),
        order.transaction_id or "",
        order.out_trade_no,
        BillTradeState.REVOKED if order.reversed else BillTradeState.SUCCESS,
        order.amount,
    )


def _notification_body(order: _Order) -> dict[str, Any]:
    return {
        "id": f"fake-event-{order.out_trade_no}",
        "event_type": "TRANSACTION.SUCCESS",
        "trade": {
            "out_trade_no": order.out_trade_no,
            "state": order.state.value,
            "amount_fen": order.amount.fen,
            "transaction_id": order.transaction_id,
            "success_time": order.success_time.isoformat() if order.success_time else None,
        },
    }


def _refund_notification_body(refund: ChannelRefund) -> dict[str, Any]:
    return {
        "id": f"fake-event-{refund.out_refund_no}-{refund.status.value}",
        "event_type": _REFUND_EVENTS[refund.status],
        "refund": {
            "out_refund_no": refund.out_refund_no,
            "out_trade_no": refund.out_trade_no,
            "refund_id": refund.refund_id,
            "status": refund.status.value,
            "amount_fen": refund.amount.fen,
            "success_time": refund.success_time.isoformat() if refund.success_time else None,
        },
    }


def _notification_from(body: Mapping[str, Any]) -> ChannelNotification:
    if "refund" in body:
        refund = _refund_from(body["refund"])
        return ChannelNotification(str(body["id"]), str(body["event_type"]), refund=refund)
    trade = body["trade"]
    success_time = datetime.fromisoformat(trade["success_time"]) if trade["success_time"] else None
    status = ChannelTradeStatus(
        trade["out_trade_no"],
        TradeState(trade["state"]),
        Money(trade["amount_fen"]),
        trade["transaction_id"],
        success_time,
        channel_state=trade["state"],
    )
    return ChannelNotification(str(body["id"]), str(body["event_type"]), trade=status)


def _refund_from(item: Mapping[str, Any]) -> ChannelRefund:
    success_time = datetime.fromisoformat(item["success_time"]) if item["success_time"] else None
    return ChannelRefund(
        item["out_refund_no"],
        item["out_trade_no"],
        item["refund_id"],
        RefundStatus(item["status"]),
        Money(item["amount_fen"]),
        success_time,
        channel_status=item["status"],
    )


def _conforms_to_the_port(channel: FakeChannel) -> PaymentChannel:
    return channel  # mypy proves FakeChannel implements PaymentChannel
