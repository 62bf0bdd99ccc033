"""The window channels: cash in the cashier's drawer (CASH) and a bank card on the POS terminal (POS).

The money is taken at the window before the HIS reports it, so there is no outside party to ask:
the HIS's report is the record. `record_taken` answers PAID at once from the report; a refund is
handed to the window (PROCESSING) and ends when the cashier confirms paying it out
(ConfirmWindowRefund). What a window channel cannot know it refuses with a ChannelRejected saying
so (placing, querying, closing, reversing, a day bill), never a guessed answer: a query answered
"not found" would let the process manager take a payment as never made.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime

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
    WindowReport,
)
from services.runtime.money import Money

CASH, POS = "CASH", "POS"
_AT_WINDOW = "AT_WINDOW"  # the code of every refusal: the window, not a channel, holds the money


class WindowChannel:
    """One window channel (CASH or POS); stateless, in-process."""

    def __init__(self, name: str) -> None:
        if name not in (CASH, POS):
            raise ValueError(f"not a window channel: {name}")
        self.name = name

    async def record_taken(
        self, out_trade_no: str, amount: Money, report: WindowReport
    ) -> ChannelTradeStatus:
        if amount.fen <= 0:
            raise ChannelRejected(_AT_WINDOW, "money taken at the window is a positive amount",
                                  RejectionReason.INVALID_REQUEST)  # fmt: skip
        if self.name == POS and not report.pos_reference_no:
            raise ChannelRejected(_AT_WINDOW, "a POS payment needs the terminal's reference number",
                                  RejectionReason.INVALID_REQUEST)  # fmt: skip
        return ChannelTradeStatus(
            out_trade_no=out_trade_no,
            state=TradeState.PAID,
            amount=amount,
            # POS: the acquirer knows the transaction by its reference number; cash has no such id.
            transaction_id=report.pos_reference_no,
            success_time=report.taken_at,
            channel_state="TAKEN_AT_WINDOW",
        )

    async def refund(
        self, out_refund_no: str, out_trade_no: str, refund_amount: Money, order_total: Money, reason: str
    ) -> ChannelRefund:
        """Handed to the window: a cashier pays it out (cash, or a 退货 on the terminal) and the HIS
        confirms it; until then it is PROCESSING."""
        if refund_amount.fen <= 0 or refund_amount > order_total:
            raise ChannelRejected(_AT_WINDOW, "refund amount outside what was taken",
                                  RejectionReason.REFUND_EXCEEDS_PAID)  # fmt: skip
        return ChannelRefund(
            out_refund_no, out_trade_no, "", RefundStatus.PROCESSING, refund_amount,
            channel_status="AWAITING_CASHIER",
        )  # fmt: skip

    async def query_refund(self, out_refund_no: str, out_trade_no: str) -> ChannelRefund:
        """Nothing to ask: until the cashier's confirmation is recorded the refund is still at the
        window (the platform records the confirmation itself, not through this adapter)."""
        return ChannelRefund(
            out_refund_no, out_trade_no, "", RefundStatus.PROCESSING, Money(0),
            channel_status="AWAITING_CASHIER",
        )  # fmt: skip

    async def query(self, out_trade_no: str) -> ChannelTradeStatus:
        raise self._refused("has no channel to query: the HIS's report is the record")

    async def close(self, out_trade_no: str) -> None:
        raise ChannelRejected(_AT_WINDOW, f"{self.name} taken at the window is refunded, never closed",
                              RejectionReason.ALREADY_PAID)  # fmt: skip

    async def place_order(
        self, out_trade_no: str, amount: Money, description: str, notify_url: str, expires_at: datetime
    ) -> PlacedOrder:
        raise self._refused("is reported once taken (record_taken), not placed")

    async def place_jsapi_order(
        self,
        out_trade_no: str,
        amount: Money,
        description: str,
        notify_url: str,
        expires_at: datetime,
        payer_openid: str,
    ) -> PlacedJsapiOrder:
        raise self._refused("is reported once taken (record_taken), not placed")

    def jsapi_pay_params(self, prepay_id: str) -> JsapiPayParams:
        raise self._refused("has no front-end parameters")

    async def pay_by_code(
        self, out_trade_no: str, amount: Money, description: str, auth_code: PaymentCode
    ) -> ChannelTradeStatus:
        raise self._refused("takes no payment code")

    async def reverse(self, out_trade_no: str) -> None:
        raise self._refused("cannot be reversed: refund it at the window")

    def parse_notification(self, headers: Mapping[str, str], body: bytes) -> ChannelNotification | None:
        return None  # no callbacks: nothing to trust

    async def download_trade_bill(self, bill_date: date) -> list[BillRow]:
        raise self._refused("has no channel bill: the cashier's shift close-out is its statement")

    def _refused(self, what: str) -> ChannelRejected:
        return ChannelRejected(_AT_WINDOW, f"{self.name} {what}", RejectionReason.INVALID_REQUEST)


def window_channels() -> dict[str, WindowChannel]:
    return {CASH: WindowChannel(CASH), POS: WindowChannel(POS)}
