"""ExportChannelBill: a channel's bill of one business day, read by that channel's adapter (the one
that collects the money, with the merchant keys only payment-core holds) and said in the platform's
words: payment or refund, a closed status, positive fen, UTC times.

A bill is read whole (the adapters check it against its own summary), then handed out page by page.
A page token names the bill by a fingerprint of its rows, so a later page read from a fresh download
(another replica, or after the snapshot left this process's small cache) is the same bill or
BILL_CHANGED, never a silent mix of two bills.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any

from services.payment_core.adapters.channels import ports
from services.payment_core.service_layer import commands
from services.payment_core.service_layer.dependencies import Dependencies
from services.runtime import errors
from services.runtime.clock import as_utc, business_day_bounds
from services.runtime.money import Money, total

# Bills held for later pages of the same export; a page asked after its bill left is re-downloaded.
SNAPSHOTS_KEPT = 8


class BillLineKind(StrEnum):
    PAYMENT = "PAYMENT"
    REFUND = "REFUND"


class BillLineStatus(StrEnum):
    SUCCEEDED = "SUCCEEDED"  # collected, or paid back: the only status that moved money
    REVOKED = "REVOKED"  # a revoked barcode payment
    PROCESSING = "PROCESSING"  # refund accepted, not paid out when the bill was made
    FAILED = "FAILED"  # refund closed without paying out
    ABNORMAL = "ABNORMAL"  # refund the channel could not pay out; a person re-routes it


# Every refund status word the adapters' bill parsers hand over (WeChat 退款状态, the fake's
# RefundStatus values, Alipay's SUCCESS), and what it means. Anything else is a protocol error.
_REFUND_STATUS = {
    "SUCCESS": BillLineStatus.SUCCEEDED,
    "SUCCEEDED": BillLineStatus.SUCCEEDED,
    "PROCESSING": BillLineStatus.PROCESSING,
    "REFUNDCLOSE": BillLineStatus.FAILED,
    "CLOSED": BillLineStatus.FAILED,
    "FAILED": BillLineStatus.FAILED,
    "ABNORMAL": BillLineStatus.ABNORMAL,
    "CHANGE": BillLineStatus.ABNORMAL,  # WeChat's bill word for 退款异常
}
_PAYMENT_STATUS = {
    ports.BillTradeState.SUCCESS: BillLineStatus.SUCCEEDED,
    ports.BillTradeState.REVOKED: BillLineStatus.REVOKED,
}


@dataclass(frozen=True, slots=True)
class BillLine:
    kind: BillLineKind
    status: BillLineStatus
    out_trade_no: str
    channel_transaction_id: str
    out_refund_no: str
    channel_refund_id: str
    amount: Money  # positive: paid, or refunded
    traded_at: datetime  # UTC
    channel_status: str  # the channel's own words, evidence only


@dataclass(frozen=True, slots=True)
class BillSummary:
    row_count: int
    payment_count: int
    payment: Money
    refund_count: int
    refund: Money


@dataclass(frozen=True, slots=True)
class BillPage:
    lines: tuple[BillLine, ...]
    summary: BillSummary
    # The next page's cursor; None on the last page.
    cursor: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class _Bill:
    lines: tuple[BillLine, ...]
    fingerprint: str
    summary: BillSummary


class ChannelBills:
    """Reads channel bills for ExportChannelBill; holds a few recent bills for their later pages."""

    def __init__(self, deps: Dependencies, published_after: timedelta = timedelta(0)) -> None:
        self._deps = deps
        self._published_after = published_after
        self._snapshots: OrderedDict[tuple[str, date, str], _Bill] = OrderedDict()

    async def export(self, cmd: commands.ExportChannelBill) -> BillPage:
        if not self._deps.offers(cmd.channel):
            raise errors.NotOffered(f"channel {cmd.channel} is not offered here", {"channel": cmd.channel})
        self._require_published(cmd.business_date)
        offset, fingerprint = _position(cmd)
        bill = await self._bill(cmd.channel, cmd.business_date, fingerprint)
        end = offset + cmd.page_size
        cursor = None
        if end < len(bill.lines):
            cursor = {"c": cmd.channel, "d": cmd.business_date.isoformat(), "f": bill.fingerprint, "o": end}
        return BillPage(bill.lines[offset:end], bill.summary, cursor)

    def _require_published(self, day: date) -> None:
        published_at = business_day_bounds(day)[0] + self._published_after
        if self._deps.clock() < published_at:
            raise errors.BillNotReady(
                f"the channels publish the bill of {day} from {published_at.isoformat()}",
                {"business_date": day.isoformat()},
            )

    async def _bill(self, channel: str, day: date, fingerprint: str | None) -> _Bill:
        if fingerprint is not None and (held := self._snapshots.get((channel, day, fingerprint))):
            return held
        bill = _read(await self._download(channel, day))
        if fingerprint is not None and bill.fingerprint != fingerprint:
            raise errors.BillChanged(f"the {channel} bill of {day} changed since the first page")
        self._keep((channel, day, bill.fingerprint), bill)
        return bill

    async def _download(self, channel: str, day: date) -> list[ports.BillRow]:
        adapter = self._deps.channel_for(channel)
        try:
            return await adapter.download_trade_bill(day)
        except ports.ChannelRejected as error:
            raise errors.ChannelRejected(
                f"the channel refused the bill: {error.code}", {"channel_code": error.code}
            ) from error
        except ports.ChannelError as error:
            # Unreachable, no trustworthy answer, or a bill that does not add up: nothing to export.
            raise errors.ChannelUnavailable(f"the {channel} bill of {day} could not be read") from error

    def _keep(self, key: tuple[str, date, str], bill: _Bill) -> None:
        self._snapshots[key] = bill
        self._snapshots.move_to_end(key)
        while len(self._snapshots) > SNAPSHOTS_KEPT:
            self._snapshots.popitem(last=False)


def _position(cmd: commands.ExportChannelBill) -> tuple[int, str | None]:
    """Where the page starts, and which bill it belongs to (None: the first page, any bill)."""
    cursor = cmd.cursor
    if cursor is None:
        return 0, None
    offset, fingerprint = cursor.get("o"), cursor.get("f")
    if not isinstance(offset, int) or offset < 0 or not isinstance(fingerprint, str):
        raise errors.InvalidArgument.field("page_token", "not a page token this service issued")
    if (cursor.get("c"), cursor.get("d")) != (cmd.channel, cmd.business_date.isoformat()):
        raise errors.InvalidArgument.field("page_token", "belongs to another channel or business_date")
    return offset, fingerprint


def _read(rows: Sequence[ports.BillRow]) -> _Bill:
    lines = tuple(bill_line(row) for row in rows)
    digest = hashlib.sha256(repr(lines).encode()).hexdigest()[:32]
    return _Bill(lines, digest, summary_of(lines))


def bill_line(row: ports.BillRow) -> BillLine:
    """One adapter bill row in the platform's words."""
    if row.trade_state is ports.BillTradeState.REFUND:
        return BillLine(
            BillLineKind.REFUND, _refund_status(row.refund_status), row.out_trade_no, row.transaction_id,
            row.out_refund_no or "", row.refund_id or "", row.asked_amount, as_utc(row.trade_time),
            f"REFUND/{row.refund_status or ''}",
        )  # fmt: skip
    return BillLine(
        BillLineKind.PAYMENT, _PAYMENT_STATUS[row.trade_state], row.out_trade_no, row.transaction_id,
        "", "", row.asked_amount, as_utc(row.trade_time), row.trade_state.value,
    )  # fmt: skip


def _refund_status(word: str | None) -> BillLineStatus:
    try:
        return _REFUND_STATUS[word or ""]
    except KeyError:
        raise errors.ChannelUnavailable("the channel's bill carries a refund status we do not know") from None


def summary_of(lines: Sequence[BillLine]) -> BillSummary:
    moved = [line for line in lines if line.status is BillLineStatus.SUCCEEDED]
    payments = [line.amount for line in moved if line.kind is BillLineKind.PAYMENT]
    refunds = [line.amount for line in moved if line.kind is BillLineKind.REFUND]
    return BillSummary(len(lines), len(payments), total(payments), len(refunds), total(refunds))
