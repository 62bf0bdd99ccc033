"""In-memory sources for tests and demos: they answer what they were given, or fail on request."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date

from services.reconciliation.adapters.wechatpay_bill import WECHAT_PAY_CHANNEL, WECHAT_PAY_SOURCE
from services.reconciliation.domain.model import (
    PLATFORM_SOURCE,
    ChannelBill,
    ChannelBillLine,
    InsurerStatement,
    PlatformTransaction,
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
    by_day: dict[date, list[ChannelBillLine]] = field(default_factory=dict)
    down: bool = False

    def record(self, day: date, lines: Iterable[ChannelBillLine]) -> None:
        self.by_day.setdefault(day, []).extend(lines)

    async def trade_bill(self, business_date: date) -> ChannelBill:
        if self.down:
            raise SourceUnavailable(WECHAT_PAY_SOURCE, "tradebill HTTP 500: SYSTEM_ERROR")
        lines = tuple(self.by_day.get(business_date, []))
        return ChannelBill(WECHAT_PAY_SOURCE, WECHAT_PAY_CHANNEL, business_date, lines)


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
