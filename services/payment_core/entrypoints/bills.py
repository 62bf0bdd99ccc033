"""ExportChannelBill's proto edge: the request validated into a command (every violation named at
once), a bill page said as the response."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp
from medpay.payment.v1 import payment_pb2

from services.payment_core.service_layer import commands
from services.payment_core.service_layer.channel_bills import (
    BillLine,
    BillLineKind,
    BillLineStatus,
    BillPage,
    BillSummary,
)
from services.runtime.pagination import decode_page_token, encode_page_token
from services.runtime.validation import Violations

# The channels that publish a trade bill; any other (CASH, POS, DEPOSIT, NONE) has none to export.
BILLED_CHANNELS = frozenset({"WECHAT_PAY", "ALIPAY", "UNIONPAY"})
_KIND = {
    BillLineKind.PAYMENT: payment_pb2.ChannelBillRow.KIND_PAYMENT,
    BillLineKind.REFUND: payment_pb2.ChannelBillRow.KIND_REFUND,
}
_STATUS = {
    BillLineStatus.SUCCEEDED: payment_pb2.ChannelBillRow.STATUS_SUCCEEDED,
    BillLineStatus.REVOKED: payment_pb2.ChannelBillRow.STATUS_REVOKED,
    BillLineStatus.PROCESSING: payment_pb2.ChannelBillRow.STATUS_PROCESSING,
    BillLineStatus.FAILED: payment_pb2.ChannelBillRow.STATUS_FAILED,
    BillLineStatus.ABNORMAL: payment_pb2.ChannelBillRow.STATUS_ABNORMAL,
}


def export_channel_bill(request: payment_pb2.ExportChannelBillRequest) -> commands.ExportChannelBill:
    found = Violations()
    channel = _channel_name(request.channel)
    found.require(
        channel in BILLED_CHANNELS, "channel", "required: a channel with a bill (WECHAT_PAY, ALIPAY)"
    )
    day = found.business_date(request.business_date)
    page_size = found.page_size(request.page_size, default=500, maximum=1000)
    found.raise_if_any()
    assert day is not None
    return commands.ExportChannelBill(str(channel), day, page_size, decode_page_token(request.page_token))


def _channel_name(number: payment_pb2.Channel.ValueType) -> str | None:
    try:
        return str(payment_pb2.Channel.Name(number)).removeprefix("CHANNEL_")
    except ValueError:
        return None


def page_to_proto(page: BillPage) -> payment_pb2.ExportChannelBillResponse:
    return payment_pb2.ExportChannelBillResponse(
        rows=[row_to_proto(line) for line in page.lines],
        next_page_token=encode_page_token(page.cursor) if page.cursor else "",
        summary=summary_to_proto(page.summary),
    )


def row_to_proto(line: BillLine) -> payment_pb2.ChannelBillRow:
    traded_at = Timestamp()
    traded_at.FromDatetime(line.traded_at)
    return payment_pb2.ChannelBillRow(
        kind=_KIND[line.kind], status=_STATUS[line.status], out_trade_no=line.out_trade_no,
        channel_transaction_id=line.channel_transaction_id, out_refund_no=line.out_refund_no,
        channel_refund_id=line.channel_refund_id, amount_fen=line.amount.fen, traded_at=traded_at,
        channel_status=line.channel_status,
    )  # fmt: skip


def summary_to_proto(summary: BillSummary) -> payment_pb2.ChannelBillSummary:
    return payment_pb2.ChannelBillSummary(
        row_count=summary.row_count, payment_count=summary.payment_count, payment_fen=summary.payment.fen,
        refund_count=summary.refund_count, refund_fen=summary.refund.fen,
    )  # fmt: skip
