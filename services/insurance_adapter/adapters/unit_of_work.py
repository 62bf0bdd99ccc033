"""One database transaction of the insurance-adapter, with its repositories and the outbox. An
adapter (it binds the repositories to a SQLAlchemy session); the service layer names the type only.
No handler keeps a unit of work open while it talks to the insurer. Each commit also carries the
insurer exchanges logged since the last one (see adapters.message_log)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.insurance_adapter.adapters.message_log import MessageLog
from services.insurance_adapter.adapters.repository import SettlementRepository, StatementRepository
from services.runtime.bootstrap import ServiceDatabase
from services.runtime.unit_of_work import SqlUnitOfWork


class UnitOfWork(SqlUnitOfWork):
    settlements: SettlementRepository
    statements: StatementRepository

    def __init__(
        self, database: ServiceDatabase, message_log: MessageLog | None = None, read_only: bool = False
    ) -> None:
        super().__init__(database.sessions, database.outbox, read_only=read_only)
        # A reader carries no exchanges: it writes nothing (on PostgreSQL it is not even a transaction).
        self._message_log = None if read_only else message_log
        self._carried: list[dict[str, Any]] = []

    async def before_commit(self, session: AsyncSession) -> None:
        if self._message_log is not None:
            self._carried = await self._message_log.carry(session)

    def not_committed(self) -> None:
        if self._message_log is not None:
            self._message_log.put_back(self._carried)
        self._carried = []

    def bind(self, session: AsyncSession) -> None:
        self.settlements = SettlementRepository(session)
        self.statements = StatementRepository(session)
