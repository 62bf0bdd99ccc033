"""One transaction of reconciliation's database, with its repositories and the outbox. An adapter
(it binds the repositories to a SQLAlchemy session); the service layer names the type only."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from services.reconciliation.adapters.repository import DiscrepancyRepository, RunRepository
from services.runtime.unit_of_work import SqlUnitOfWork


class UnitOfWork(SqlUnitOfWork):
    runs: RunRepository
    discrepancies: DiscrepancyRepository

    def bind(self, session: AsyncSession) -> None:
        self.runs = RunRepository(session)
        self.discrepancies = DiscrepancyRepository(session)
