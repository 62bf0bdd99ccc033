"""One database transaction of the insurance-adapter, with its repositories and the outbox.
No handler keeps a unit of work open while it talks to the insurer."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from services.insurance_adapter.adapters.repository import SettlementRepository, StatementRepository
from services.runtime.bootstrap import ServiceDatabase
from services.runtime.unit_of_work import SqlUnitOfWork


class UnitOfWork(SqlUnitOfWork):
    settlements: SettlementRepository
    statements: StatementRepository

    def __init__(self, database: ServiceDatabase) -> None:
        super().__init__(database.sessions, database.outbox)

    def bind(self, session: AsyncSession) -> None:
        self.settlements = SettlementRepository(session)
        self.statements = StatementRepository(session)
