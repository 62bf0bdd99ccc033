"""One transaction of data-aggregation's database, with its repositories: a page's facts, its event
ids and the cursor move together or not at all. An adapter (it binds the repositories to a SQLAlchemy
session); the service layer names the type only."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from services.data_aggregation.adapters.repository import CursorRepository, FactRepository, IngestedEvents
from services.runtime.unit_of_work import SqlUnitOfWork


class UnitOfWork(SqlUnitOfWork):
    cursors: CursorRepository
    events: IngestedEvents
    facts: FactRepository

    def bind(self, session: AsyncSession) -> None:
        self.cursors = CursorRepository(session)
        self.events = IngestedEvents(session)
        self.facts = FactRepository(session)
