"""One database transaction of the insurance-adapter, with its repositories and the outbox.

`async with uow:` begins; leaving the block commits, or rolls back on an exception. Events recorded
through `record_event` commit (or vanish) with the state change they describe. No handler keeps a
unit of work open while it talks to the insurer.
"""

from __future__ import annotations

from types import TracebackType

from medpay.events.v1 import events_pb2
from sqlalchemy.ext.asyncio import AsyncSession

from services.insurance_adapter.adapters.repository import SettlementRepository, StatementRepository
from services.runtime.bootstrap import ServiceDatabase


class UnitOfWork:
    settlements: SettlementRepository
    statements: StatementRepository

    def __init__(self, database: ServiceDatabase) -> None:
        self._database = database
        self._session: AsyncSession | None = None

    async def __aenter__(self) -> UnitOfWork:
        self._session = self._database.sessions()
        await self._session.begin()
        self.settlements = SettlementRepository(self._session)
        self.statements = StatementRepository(self._session)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        session = self._require_session()
        try:
            if exc_type is None:
                await session.commit()
            else:
                await session.rollback()
        finally:
            await session.close()
            self._session = None

    async def record_event(self, envelope: events_pb2.EventEnvelope) -> None:
        await self._database.outbox.record_event(self._require_session(), envelope)

    def _require_session(self) -> AsyncSession:
        if self._session is None:
            raise RuntimeError("unit of work used outside `async with`")
        return self._session
