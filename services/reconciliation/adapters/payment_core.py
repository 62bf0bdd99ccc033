"""PlatformLedgerSource over payment-core's PaymentService.ExportTransactions (gRPC, paged)."""

from __future__ import annotations

from datetime import date

import grpc
from medpay.payment.v1 import payment_pb2, payment_pb2_grpc

from services.reconciliation.domain.model import PLATFORM_SOURCE, PlatformTransaction, TransactionKind
from services.reconciliation.service_layer.ports import SourceUnavailable
from services.runtime.interceptors import outbound_timeout
from services.runtime.money import Money

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
