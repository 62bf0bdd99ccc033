"""The two sources payment-core answers for, over its public PaymentService (gRPC, paged):
PlatformLedgerSource over ExportTransactions, ChannelBillSource over ExportChannelBill.

Reconciliation holds no merchant key and speaks no channel protocol: payment-core downloads and
reads each channel's bill with the same adapter that collects the money, and says it in the
platform's data standard. This module only pages through it and checks the pages add up.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, date

import grpc
from google.rpc import error_details_pb2, status_pb2
from medpay.payment.v1 import payment_pb2, payment_pb2_grpc

from services.reconciliation.domain.matching import entry_totals
from services.reconciliation.domain.model import (
    PLATFORM_SOURCE,
    ChannelBill,
    ChannelBillLine,
    PlatformTransaction,
    TransactionKind,
    bill_source,
)
from services.reconciliation.service_layer.ports import SourceUnavailable
from services.runtime.interceptors import outbound_timeout
from services.runtime.money import Money

log = logging.getLogger(__name__)
# The channels whose bills a run asks payment-core for, by default: every channel with a bill.
BILLED_CHANNELS = ("WECHAT_PAY", "ALIPAY")
_BILL_KINDS = {
    payment_pb2.ChannelBillRow.KIND_PAYMENT: TransactionKind.PAYMENT,
    payment_pb2.ChannelBillRow.KIND_REFUND: TransactionKind.REFUND,
}

_KINDS = {
    payment_pb2.Transaction.KIND_PAYMENT: TransactionKind.PAYMENT,
    payment_pb2.Transaction.KIND_REFUND: TransactionKind.REFUND,
}
_STATUS_PREFIXES = ("PAYMENT_STATUS_", "REFUND_STATUS_")


class PaymentCoreLedger:
    def __init__(self, channel: grpc.aio.Channel, page_size: int, deadline_s: float) -> None:
        self._stub = payment_pb2_grpc.PaymentServiceStub(channel)
        self._page_size = page_size
        self._deadline_s = deadline_s

    async def transactions(self, business_date: date) -> list[PlatformTransaction]:
        found: list[PlatformTransaction] = []
        page_token = ""
        while True:
            page = await self._page(business_date, page_token)
            found += [platform_transaction(row) for row in page.transactions]
            page_token = page.next_page_token
            if not page_token:
                return found

    async def _page(self, business_date: date, page_token: str) -> payment_pb2.ExportTransactionsResponse:
        request = payment_pb2.ExportTransactionsRequest(
            business_date=business_date.isoformat(), page_size=self._page_size, page_token=page_token
        )
        try:
            page: payment_pb2.ExportTransactionsResponse = await self._stub.ExportTransactions(
                request, timeout=outbound_timeout(self._deadline_s)
            )
        except grpc.aio.AioRpcError as error:
            reason = f"payment-core ExportTransactions {error.code().name}: {error.details()}"
            raise SourceUnavailable(PLATFORM_SOURCE, reason) from error
        return page


def platform_transaction(row: payment_pb2.Transaction) -> PlatformTransaction:
    kind = _KINDS.get(row.kind)
    if kind is None:
        raise SourceUnavailable(PLATFORM_SOURCE, f"transaction of unknown kind {row.kind} on {row.order_id}")
    return PlatformTransaction(
        kind=kind,
        order_id=row.order_id,
        channel=_channel_name(row.channel),
        out_trade_no=row.out_trade_no,
        out_refund_no=row.out_refund_no,
        amount=Money(row.amount_fen),
        status=_plain_status(row.status),
        insutype=row.insutype,
        setl_id=row.setl_id,
        medfee=Money(row.medfee_fen),
        fund=Money(row.fund_fen),
        personal_account=Money(row.personal_account_fen),
    )


def _channel_name(number: int) -> str:
    """A channel added to the contract after this build still reads (it matches no bill here)."""
    try:
        return payment_pb2.Channel.Name(number).removeprefix("CHANNEL_")  # type: ignore[arg-type]
    except ValueError:
        return f"UNKNOWN_{number}"


def _plain_status(status: str) -> str:
    """ "PAYMENT_STATUS_SUCCEEDED" and "SUCCEEDED" both read as "SUCCEEDED"."""
    for prefix in _STATUS_PREFIXES:
        status = status.removeprefix(prefix)
    return status


class PaymentCoreChannelBills:
    """Every configured channel's bill of a day, through payment-core's ExportChannelBill. A channel
    payment-core answers NOT_OFFERED for is one it does not collect through here: no bill to read."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        page_size: int,
        deadline_s: float,
        channels: Sequence[str] = BILLED_CHANNELS,
    ) -> None:
        self._stub = payment_pb2_grpc.PaymentServiceStub(channel)
        self._page_size = page_size
        self._deadline_s = deadline_s
        self._channels = tuple(channels)

    async def trade_bills(self, business_date: date) -> list[ChannelBill]:
        bills = [await self.trade_bill(channel, business_date) for channel in self._channels]
        return [bill for bill in bills if bill is not None]

    async def trade_bill(self, channel: str, business_date: date) -> ChannelBill | None:
        """The channel's whole bill of the day; None when payment-core does not offer the channel."""
        source = bill_source(channel)
        lines: list[ChannelBillLine] = []
        page_token = ""
        while True:
            page = await self._page(channel, business_date, page_token)
            if page is None:
                return None
            lines += [bill_line(row, source) for row in page.rows]
            page_token = page.next_page_token
            if not page_token:
                break
        bill = ChannelBill(source, channel, business_date, tuple(lines))
        _check_against_summary(bill, page.summary)
        return bill

    async def _page(
        self, channel: str, business_date: date, page_token: str
    ) -> payment_pb2.ExportChannelBillResponse | None:
        request = payment_pb2.ExportChannelBillRequest(
            channel=payment_pb2.Channel.Value(f"CHANNEL_{channel}"), business_date=business_date.isoformat(),
            page_size=self._page_size, page_token=page_token,
        )  # fmt: skip
        try:
            page: payment_pb2.ExportChannelBillResponse = await self._stub.ExportChannelBill(
                request, timeout=outbound_timeout(self._deadline_s)
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.UNIMPLEMENTED and _reason(error) == "NOT_OFFERED":
                log.info("payment-core does not offer %s: no %s bill to reconcile", channel, channel)
                return None
            reason = f"payment-core ExportChannelBill {error.code().name}: {error.details()}"
            raise SourceUnavailable(bill_source(channel), reason) from error
        return page


def bill_line(row: payment_pb2.ChannelBillRow, source: str) -> ChannelBillLine:
    kind = _BILL_KINDS.get(row.kind)
    if kind is None or row.amount_fen < 0:
        found = f"bill row of kind {row.kind}, {row.amount_fen} fen on {row.out_trade_no}"
        raise SourceUnavailable(source, found)
    return ChannelBillLine(
        kind=kind,
        out_trade_no=row.out_trade_no,
        out_refund_no=row.out_refund_no,
        channel_transaction_id=row.channel_transaction_id,
        channel_refund_id=row.channel_refund_id,
        status=_status_name(row.status),
        amount=Money(row.amount_fen),
        traded_at=row.traded_at.ToDatetime(UTC).isoformat() if row.HasField("traded_at") else "",
    )


def _status_name(number: payment_pb2.ChannelBillRow.Status.ValueType) -> str:
    """A status added to the contract after this build reads as moving no money."""
    try:
        return str(payment_pb2.ChannelBillRow.Status.Name(number)).removeprefix("STATUS_")
    except ValueError:
        return f"UNKNOWN_{number}"


def _check_against_summary(bill: ChannelBill, summary: payment_pb2.ChannelBillSummary) -> None:
    """The pages must add up to the whole bill's totals, or a page went missing (or came twice)."""
    got = entry_totals(bill.source, bill.lines)
    said = [summary.row_count, summary.payment_count, summary.payment_fen]
    said += [summary.refund_count, summary.refund_fen]
    have = [len(bill.lines), got.payment_count, got.payment.fen, got.refund_count, got.refund.fen]
    if said != have:
        raise SourceUnavailable(bill.source, f"the bill's pages add up to {have}, its summary says {said}")


def _reason(error: grpc.aio.AioRpcError) -> str:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            for detail in status_pb2.Status.FromString(value).details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return str(info.reason)
    return ""
