"""In-memory sources for tests and demos: they answer what they were given, or fail on request."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date

from services.reconciliation.domain.model import (
    PLATFORM_SOURCE,
    ChannelBill,
    ChannelBillLine,
    InsurerStatement,
    PlatformTransaction,
    bill_source,
)
from services.reconciliation.service_layer.ports import SourceUnavailable


@dataclass
class InMemoryPlatformLedger:
    by_day: dict[date, list[PlatformTransaction]] = field(default_factory=dict)
    down: bool = False

    def record(self, day: date, transactions: Iterable[PlatformTransaction]) -> None:
        self.by_day.setdefault(day, []).extend(transactions)

    async def transactions(self, business_date: date) -> list[PlatformTransaction]:
        if self.down:
            raise SourceUnavailable(PLATFORM_SOURCE, "payment-core ExportTransactions UNAVAILABLE: down")
        return list(self.by_day.get(business_date, []))


@dataclass
class InMemoryChannelBills:
    """Bills by channel and day. A channel offers a bill once something was recorded for it (any
    day); WECHAT_PAY always does. `down` fails every read, as payment-core's UNAVAILABLE would."""

    by_day: dict[tuple[str, date], list[ChannelBillLine]] = field(default_factory=dict)
    offered: set[str] = field(default_factory=lambda: {"WECHAT_PAY"})
    down: bool = False

    def record(self, day: date, lines: Iterable[ChannelBillLine], channel: str = "WECHAT_PAY") -> None:
        self.offered.add(channel)
        self.by_day.setdefault((channel, day), []).extend(lines)

    async def trade_bills(self, business_date: date) -> list[ChannelBill]:
        channels = sorted(self.offered, key=_wechat_first)
        return [await self.trade_bill(channel, business_date) for channel in channels]

    async def trade_bill(self, channel: str, business_date: date) -> ChannelBill:
        if self.down:
            reason = "payment-core ExportChannelBill UNAVAILABLE: the channel could not be reached"
            raise SourceUnavailable(bill_source(channel), reason)
        lines = tuple(self.by_day.get((channel, business_date), []))
        return ChannelBill(bill_source(channel), channel, business_date, lines)


def _wechat_first(channel: str) -> tuple[bool, str]:
    return channel != "WECHAT_PAY", channel


@dataclass
class InMemoryInsurerTotals:
    """Answers 3201 from prepared statements; an insutype without one is an insurer failure."""

    statements: dict[tuple[date, str], InsurerStatement] = field(default_factory=dict)
    request_ids: list[str] = field(default_factory=list)

    def prepare(self, day: date, statement: InsurerStatement) -> None:
        self.statements[(day, statement.insutype)] = statement

    async def reconcile_totals(self, business_date: date, insutype: str, request_id: str) -> InsurerStatement:
        self.request_ids.append(request_id)
        statement = self.statements.get((business_date, insutype))
        if statement is None:
            raise SourceUnavailable(f"insurer:{insutype}", "insurance-adapter ReconcileTotals UNAVAILABLE")
        return statement
