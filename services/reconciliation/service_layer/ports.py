"""The three sources a run reads, as ports: gRPC adapters over payment-core and insurance-adapter in
production, in-memory fakes in tests (services.reconciliation.adapters.in_memory)."""

from __future__ import annotations

from datetime import date
from typing import Protocol

from services.reconciliation.domain.model import ChannelBill, InsurerStatement, PlatformTransaction
from services.runtime.masking import scrub


class SourceUnavailable(Exception):
    """A source could not be read: down, refused, or it sent something that cannot be trusted (a
    bill whose summary does not add up). The run fails with this reason; reconciliation itself
    answers normally, because the failure is a fact about the day, not about the request."""

    def __init__(self, source: str, reason: str) -> None:
        # Partner error texts are free text; scrub them before they are stored or logged.
        self.source = source
        self.reason = scrub(reason)
        super().__init__(f"{source}: {self.reason}")


class PlatformLedgerSource(Protocol):
    async def transactions(self, business_date: date) -> list[PlatformTransaction]:
        """Every cash movement the platform recorded for the day (payments and refunds, any status).
        Raises SourceUnavailable."""
        ...


class ChannelBillSource(Protocol):
    async def trade_bills(self, business_date: date) -> list[ChannelBill]:
        """The trade bill of the day of every channel payment-core collects through (WeChat Pay,
        Alipay), every row, checked against the bill's totals. Raises SourceUnavailable."""
        ...


class InsurerTotalsSource(Protocol):
    async def reconcile_totals(self, business_date: date, insutype: str, request_id: str) -> InsurerStatement:
        """Run 3201 for one insurance type; request_id makes a retry the same exchange.
        Raises SourceUnavailable."""
        ...
