"""One transaction of reconciliation's database, with its repositories and the outbox."""

from __future__ import annotations

from types import TracebackType

from medpay.events.v1 import events_pb2
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.reconciliation.adapters.repository import DiscrepancyRepository, RunRepository
from services.runtime.outbox import Outbox


class UnitOfWork:
    """`async with uow:` opens a transaction; it commits on a clean exit and rolls back otherwise.
    Events recorded inside commit with the state change or not at all."""

    runs: RunRepository
    discrepancies: DiscrepancyRepository

    def __init__(self, sessions: async_sessionmaker[AsyncSession], outbox: Outbox) -> None:
        self._sessions = sessions
        self._outbox = outbox
        self._session: AsyncSession | None = None

    async def __aenter__(self) -> UnitOfWork:
        self._session = self._sessions()
        await self._session.begin()
        self.runs = RunRepository(self._session)
        self.discrepancies = DiscrepancyRepository(self._session)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        session = self._require_session()
        try:
            if kind is None:
                await session.commit()
            else:
                await session.rollback()
        finally:
            await session.close()
            self._session = None

    async def record_event(self, envelope: events_pb2.EventEnvelope) -> None:
        await self._outbox.record_event(self._require_session(), envelope)

    def _require_session(self) -> AsyncSession:
        if self._session is None:
            raise RuntimeError("unit of work used outside `async with`")
        return self._session
