"""The payment-channel port: what payment-core may ask of any channel (WeChat Pay, Alipay, the fake).

Every implementation passes `tests/contract/test_channel_conformance.py`. Money crosses this port
only as `Money` (integer fen); channel units (WeChat fen, Alipay and bill yuan) stay inside the
adapter. Channel statuses arrive here only through each adapter's exhaustive mapping into the
closed enums below; a status an adapter does not know is an error, never a guess.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Protocol

from services.runtime.masking import PatientIdentifier
from services.runtime.money import Money

# A payment code (付款码) is a bearer credential: it travels as a PatientIdentifier(kind=
# "payment_code"), whose str/repr is masked, and only the adapter's request body reveals it.
PaymentCode = PatientIdentifier


class TradeState(StrEnum):
    NOT_PAID = "NOT_PAID"  # order open, the patient has not paid
    PAYING = "PAYING"  # the patient is paying (barcode: entering a password; accepted, debit pending)
    PAID = "PAID"  # money collected
    CLOSED = "CLOSED"  # closed or revoked: no money was taken, none will be
    REFUNDED = "REFUNDED"  # paid, then refunded in part or in full
    FAILED = "FAILED"  # the payment attempt failed for good


class RefundStatus(StrEnum):
    """A channel refund's state. PROCESSING is the usual first answer; the final word comes later
    by notification or `query_refund`."""

    PROCESSING = "PROCESSING"  # accepted, money not yet back with the patient
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"  # closed without paying out: the amount is refundable again
    # The channel could not pay the patient (e.g. the bank card is closed or frozen): the money sits
    # with the channel and the refund still exists. Not final and not FAILED: never issue it again
    # (that would pay twice once it is re-routed); a person must re-route it (WeChat Pay:
    # apply-abnormal-refund, or the merchant platform), after which it goes PROCESSING -> SUCCEEDED.
    # Payment-core flags the order for a person instead of waiting as if PROCESSING.
    ABNORMAL = "ABNORMAL"


class RejectionReason(StrEnum):
    """Why a channel refused a request, in our words (the channel's own code rides along)."""

    INVALID_REQUEST = "INVALID_REQUEST"  # bad parameters, or a key reused with other parameters
    NOT_FOUND = "NOT_FOUND"  # the channel never saw this order (or refund)
    ALREADY_PAID = "ALREADY_PAID"
    ALREADY_CLOSED = "ALREADY_CLOSED"
    REFUND_EXCEEDS_PAID = "REFUND_EXCEEDS_PAID"
    NOT_AUTHORISED = "NOT_AUTHORISED"  # signature, credentials or permissions
    OTHER = "OTHER"


class ChannelError(Exception):
    """Base of every error a channel adapter raises."""


class ChannelRejected(ChannelError):
    """The channel answered and said no; nothing happened. Retrying the same request is pointless."""

    def __init__(self, code: str, message: str, reason: RejectionReason = RejectionReason.OTHER) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.reason = code, message, reason


class ChannelUnavailable(ChannelError):
    """The request did not take effect (not sent, refused before processing, or a read that failed).
    Safe to retry with the same business key."""


class ChannelOutcomeUnknown(ChannelError):
    """A mutating request was sent but no trustworthy answer came back (timeout, dropped
    connection, 5xx, unverifiable response). The effect may have happened: query, never guess."""


class ChannelProtocolError(ChannelError):
    """The channel answered something we cannot interpret (an unknown status, a bill that does
    not add up or does not match its hash). Keep the outcome unknown and alert."""


@dataclass(frozen=True, slots=True)
class PlacedOrder:
    out_trade_no: str
    code_url: str  # what the kiosk or cashier screen renders as a QR code


@dataclass(frozen=True, slots=True)
class PlacedJsapiOrder:
    out_trade_no: str
    prepay_id: str  # what the payer's page pays with, through `jsapi_pay_params`


@dataclass(frozen=True, slots=True)
class JsapiPayParams:
    """The arguments of wx.requestPayment, signed with the merchant key (signType RSA)."""

    app_id: str
    time_stamp: str
    nonce_str: str
    package: str  # "prepay_id=..."
    sign_type: str
    pay_sign: str


@dataclass(frozen=True, slots=True)
class ChannelTradeStatus:
    out_trade_no: str
    state: TradeState
    amount: Money  # the order total
    transaction_id: str | None = None  # the channel's own id, once paid
    success_time: datetime | None = None  # tz-aware
    channel_state: str = ""  # the channel's raw status, for audit


@dataclass(frozen=True, slots=True)
class ChannelRefund:
    out_refund_no: str
    out_trade_no: str
    refund_id: str
    status: RefundStatus
    amount: Money
    success_time: datetime | None = None
    channel_status: str = ""


@dataclass(frozen=True, slots=True)
class ChannelNotification:
    """A verified, decrypted channel callback; exactly one of `trade` / `refund` is set."""

    event_id: str
    event_type: str
    trade: ChannelTradeStatus | None = None
    refund: ChannelRefund | None = None

    @property
    def out_trade_no(self) -> str:
        if self.trade is not None:
            return self.trade.out_trade_no
        if self.refund is not None:
            return self.refund.out_trade_no
        raise ValueError("notification carries neither a trade nor a refund")


class BillTradeState(StrEnum):
    SUCCESS = "SUCCESS"  # income
    REFUND = "REFUND"  # refund expense
    REVOKED = "REVOKED"  # revoked barcode payment


@dataclass(frozen=True, slots=True)
class BillRow:
    """One detail line of a channel's day bill, amounts in fen."""

    trade_time: datetime  # tz-aware; pay time, or refund initiation time for refund lines
    transaction_id: str
    out_trade_no: str
    trade_state: BillTradeState
    amount: Money  # 应结订单金额 (0 on refund lines)
    refund_id: str | None = None
    out_refund_no: str | None = None
    refund_amount: Money = field(default_factory=Money.zero)
    refund_status: str | None = None
    # What the platform asked for, when the bill says it apart from the settled amounts above (WeChat
    # 订单金额 and 申请退款金额: a voucher makes 应结订单金额 / 退款金额 smaller). None: the same.
    order_amount: Money | None = None
    requested_refund_amount: Money | None = None

    @property
    def asked_amount(self) -> Money:
        """The amount the merchant asked for: the order total, or the refund applied for."""
        if self.trade_state is BillTradeState.REFUND:
            asked = self.requested_refund_amount
            return self.refund_amount if asked is None else asked
        return self.amount if self.order_amount is None else self.order_amount


class PaymentChannel(Protocol):
    """One outside payment channel. Every mutating call carries a business key (out_trade_no,
    out_refund_no) and is idempotent on it: repeating a call never has a second effect."""

    name: str

    async def place_order(
        self, out_trade_no: str, amount: Money, description: str, notify_url: str, expires_at: datetime
    ) -> PlacedOrder:
        """Open an order the patient pays by scanning; replaying the same key returns the same order.
        The same key with another amount is ChannelRejected(INVALID_REQUEST)."""
        ...

    async def place_jsapi_order(
        self,
        out_trade_no: str,
        amount: Money,
        description: str,
        notify_url: str,
        expires_at: datetime,
        payer_openid: str,
    ) -> PlacedJsapiOrder:
        """Open an order the payer pays inside the channel's app (WeChat JSAPI: a mini-program or
        official-account page); the same replay rules as `place_order`."""
        ...

    def jsapi_pay_params(self, prepay_id: str) -> JsapiPayParams:
        """Sign a fresh set of front-end parameters for a placed JSAPI order (no outbound call)."""
        ...

    async def pay_by_code(
        self, out_trade_no: str, amount: Money, description: str, auth_code: PaymentCode
    ) -> ChannelTradeStatus:
        """The cashier scanned the patient's payment code: collect now. The answer is PAID, or
        PAYING while the patient confirms on the phone (then `query` until final, or `reverse`),
        or FAILED. A refused code is ChannelRejected (nothing was taken). Sent once per
        out_trade_no: an unknown outcome is settled by `query`, never by paying again."""
        ...

    async def reverse(self, out_trade_no: str) -> None:
        """Cancel a code payment whatever its state (撤销): unpaid it is closed, paid it is given
        back to the payer; reversing again is a no-op. Only for code payments, and never sooner
        than the channel allows after the payment call (WeChat Pay: 15 s)."""
        ...

    async def query(self, out_trade_no: str) -> ChannelTradeStatus:
        """The channel's current view; ChannelRejected(NOT_FOUND) if it never saw the order."""
        ...

    async def close(self, out_trade_no: str) -> None:
        """Close an unpaid order; closing it again is a no-op. A paid order is
        ChannelRejected(ALREADY_PAID) (refund it instead); an order the channel never saw is
        ChannelRejected(NOT_FOUND), left for the caller to judge (a lost place_order may still land)."""
        ...

    async def refund(
        self, out_refund_no: str, out_trade_no: str, refund_amount: Money, order_total: Money, reason: str
    ) -> ChannelRefund:
        """Refund part of a paid order; replays return the first refund as it stands now. The answer
        is often PROCESSING: the outcome follows by notification (to the channel's refund notify URL)
        or `query_refund`. Refunding more than what remains (refunds not FAILED count against the
        order) is ChannelRejected(REFUND_EXCEEDS_PAID)."""
        ...

    async def query_refund(self, out_refund_no: str, out_trade_no: str) -> ChannelRefund:
        """The refund as the channel sees it now; ChannelRejected(NOT_FOUND) if it never saw it.
        `out_trade_no` is the refunded order's: Alipay keeps refund numbers unique per trade and
        finds a refund only with it; WeChat Pay finds it by out_refund_no alone."""
        ...

    def parse_notification(self, headers: Mapping[str, str], body: bytes) -> ChannelNotification | None:
        """Verify and decode a callback. None when it cannot be trusted (fail closed): a bad or
        missing signature, a body that does not decrypt, an event we do not know."""
        ...

    async def download_trade_bill(self, bill_date: date) -> list[BillRow]:
        """Every detail line of the channel's bill for one business day (empty when no trade)."""
        ...


@dataclass(frozen=True, slots=True)
class WindowReport:
    """What the HIS reports of money taken at the window (cash, a bank card on the POS)."""

    operator_id: str
    taken_at: datetime  # tz-aware
    pos_reference_no: str = ""  # POS: the terminal's 参考号, the acquirer's id of the transaction


class WindowChannel(PaymentChannel, Protocol):
    """A channel whose money is taken at the hospital's window before the platform hears of it: the
    report is the record. Refunds are paid out by a cashier, so they stay PROCESSING until the HIS
    confirms them (ConfirmWindowRefund); there is nothing to place, query, close or download."""

    async def record_taken(
        self, out_trade_no: str, amount: Money, report: WindowReport
    ) -> ChannelTradeStatus:
        """PAID for `amount` as reported; a report the channel cannot take (no POS reference) is
        ChannelRejected(INVALID_REQUEST)."""
        ...


# ---- requests every adapter checks before its SDK sees them -------------------------------------------
# An SDK raises bare exceptions for a missing field, and an SDK exception must only ever mean "a bad
# answer" to the adapter: a request that cannot be right is refused here first, as a ValueError.


def check_order_request(
    out_trade_no: str, amount: Money, description: str, expires_at: datetime, max_description: int
) -> None:
    if not out_trade_no:
        raise ValueError("out_trade_no is required")
    if amount.fen <= 0:
        raise ValueError("an order needs a positive amount")
    if not description or len(description) > max_description:
        raise ValueError(f"description must be 1-{max_description} characters")
    if expires_at.tzinfo is None:
        raise ValueError("expires_at must be timezone-aware")


def check_refund_request(out_refund_no: str, out_trade_no: str, refund: Money, order_total: Money) -> None:
    if not out_refund_no or not out_trade_no:
        raise ValueError("out_refund_no and out_trade_no are required")
    if refund.fen <= 0 or order_total.fen <= 0:
        raise ValueError("refund amount and order total must be positive")
