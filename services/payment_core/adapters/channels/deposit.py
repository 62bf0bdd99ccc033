"""The hospital deposit (预交金) as a channel: money the inpatient has already paid in (top-ups),
held by the hospital as a liability, paid out of the account's balance.

There is no outside party: the platform's own book is the channel, and the book is storage. So the
channel confirms at once (`debit` answers PAID, `refund` SUCCEEDED), and what makes that true is the
transaction that records the answer: it debits (or credits back) the account by a relative UPDATE
under CHECK (balance_fen >= 0) in the same commit (service_layer.effects). A balance that does not
cover the payment is refused by storage (DepositInsufficient), and the whole step with it, whatever
this process believed. What the deposit cannot do it refuses with a ChannelRejected saying so
(placing a QR code, a payment code, closing, reversing, a day bill), never a guessed answer.

Status map (exhaustive, fail closed): the book knows two states of a payment from the deposit,
debited (PAID) or not stored at all (nothing to ask: `query` refuses, it never says "not found",
which the process manager would take as never made); and of a refund, credited back (SUCCEEDED).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from enum import StrEnum

from services.payment_core.adapters.channels.ports import (
    BillRow,
    ChannelNotification,
    ChannelRefund,
    ChannelRejected,
    ChannelTradeStatus,
    JsapiPayParams,
    PaymentCode,
    PlacedJsapiOrder,
    PlacedOrder,
    RefundStatus,
    RejectionReason,
    TradeState,
)
from services.runtime.money import Money

DEPOSIT = "DEPOSIT"
_CODE = "DEPOSIT_BOOK"


class BookState(StrEnum):
    """What the deposit book records of a movement (the channel's own statuses)."""

    DEBITED = "DEBITED"  # a payment taken from the balance
    CREDITED_BACK = "CREDITED_BACK"  # a refund of such a payment, back in the balance


_TRADE_STATES: Mapping[BookState, TradeState] = {BookState.DEBITED: TradeState.PAID}
_REFUND_STATES: Mapping[BookState, RefundStatus] = {BookState.CREDITED_BACK: RefundStatus.SUCCEEDED}


def trade_state(state: str) -> TradeState:
    """The book's state in the port's words; anything else is refused (never guessed)."""
    try:
        return _TRADE_STATES[BookState(state)]
    except (ValueError, KeyError):
        raise ChannelRejected(_CODE, f"not a payment state of the deposit book: {state!r}") from None


def refund_status(state: str) -> RefundStatus:
    try:
        return _REFUND_STATES[BookState(state)]
    except (ValueError, KeyError):
        raise ChannelRejected(_CODE, f"not a refund state of the deposit book: {state!r}") from None


class DepositChannel:
    """The deposit channel; stateless, in-process (the balance lives in payment-core's storage)."""

    name = DEPOSIT

    def debit(self, out_trade_no: str, amount: Money, at: datetime) -> ChannelTradeStatus:
        """PAID for `amount`: recorded in the transaction that debits the balance (synchronous: it
        is run inside that transaction, as a local step of the process manager)."""
        if amount.fen <= 0:
            raise ChannelRejected(_CODE, "a payment from the deposit is a positive amount",
                                  RejectionReason.INVALID_REQUEST)  # fmt: skip
        return ChannelTradeStatus(
            out_trade_no=out_trade_no, state=trade_state(BookState.DEBITED), amount=amount,
            transaction_id="", success_time=at, channel_state=BookState.DEBITED.value,
        )  # fmt: skip

    async def refund(
        self, out_refund_no: str, out_trade_no: str, refund_amount: Money, order_total: Money, reason: str
    ) -> ChannelRefund:
        """Back into the balance: SUCCEEDED, credited in the transaction that records it."""
        if refund_amount.fen <= 0 or refund_amount > order_total:
            raise ChannelRejected(_CODE, "refund amount outside what was paid from the deposit",
                                  RejectionReason.REFUND_EXCEEDS_PAID)  # fmt: skip
        return self._credited(out_refund_no, out_trade_no, refund_amount)

    async def query_refund(self, out_refund_no: str, out_trade_no: str) -> ChannelRefund:
        """The book pays a refund back as soon as it is recorded: the same answer as `refund` (the
        amount is the refund's own, which the process manager already holds)."""
        return self._credited(out_refund_no, out_trade_no, Money(0))

    def _credited(self, out_refund_no: str, out_trade_no: str, amount: Money) -> ChannelRefund:
        state = BookState.CREDITED_BACK
        return ChannelRefund(
            out_refund_no, out_trade_no, "", refund_status(state), amount, channel_status=state.value
        )

    async def query(self, out_trade_no: str) -> ChannelTradeStatus:
        raise self._refused(
            "has nothing to query: a payment from the deposit is stored debited or not at all"
        )

    async def close(self, out_trade_no: str) -> None:
        raise ChannelRejected(_CODE, "a payment from the deposit is refunded, never closed",
                              RejectionReason.ALREADY_PAID)  # fmt: skip

    async def place_order(
        self, out_trade_no: str, amount: Money, description: str, notify_url: str, expires_at: datetime
    ) -> PlacedOrder:
        raise self._refused("is debited, not placed")

    async def place_jsapi_order(
        self,
        out_trade_no: str,
        amount: Money,
        description: str,
        notify_url: str,
        expires_at: datetime,
        payer_openid: str,
    ) -> PlacedJsapiOrder:
        raise self._refused("is debited, not placed")

    def jsapi_pay_params(self, prepay_id: str) -> JsapiPayParams:
        raise self._refused("has no front-end parameters")

    async def pay_by_code(
        self, out_trade_no: str, amount: Money, description: str, auth_code: PaymentCode
    ) -> ChannelTradeStatus:
        raise self._refused("takes no payment code")

    async def reverse(self, out_trade_no: str) -> None:
        raise self._refused("cannot be reversed: refund it")

    def parse_notification(self, headers: Mapping[str, str], body: bytes) -> ChannelNotification | None:
        return None  # no callbacks: nothing to trust

    async def download_trade_bill(self, bill_date: date) -> list[BillRow]:
        raise self._refused("has no channel bill: the ledger's liability:patient_deposit is its statement")

    def _refused(self, what: str) -> ChannelRejected:
        return ChannelRejected(_CODE, f"the deposit {what}", RejectionReason.INVALID_REQUEST)
