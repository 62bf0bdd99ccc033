"""The finance questions data-aggregation answers from its fact store."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date

from services.data_aggregation.adapters.unit_of_work import UnitOfWork
from services.data_aggregation.domain.facts import FeedCursor
from services.data_aggregation.domain.percentiles import SettlementTimes, settlement_time_slices
from services.data_aggregation.domain.summary import DailySummary, summarize


class AggregationQueries:
    def __init__(self, unit_of_work: Callable[[], UnitOfWork], source_services: Sequence[str]) -> None:
        self._uow = unit_of_work
        self._source_services = list(source_services)

    async def daily_summary(self, business_date: date) -> DailySummary:
        async with self._uow() as uow:
            groups = await uow.facts.order_groups(business_date)
            refunds = await uow.facts.refund_totals(business_date)
        return summarize(business_date, groups, refunds)

    async def settlement_times(self, business_date: date) -> list[SettlementTimes]:
        async with self._uow() as uow:
            samples = await uow.facts.settlement_samples(business_date)
        return settlement_time_slices(samples)

    async def ingest_status(self) -> list[FeedCursor]:
        """Every configured source (at zero until its first page), then any others on record."""
        async with self._uow() as uow:
            stored = {cursor.source_service: cursor for cursor in await uow.cursors.all()}
        status = [stored.pop(name, FeedCursor(name, 0, 0, 0)) for name in self._source_services]
        return status + [stored[name] for name in sorted(stored)]
