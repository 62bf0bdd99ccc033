"""One transaction of data-aggregation's database, with its repositories."""

from __future__ import annotations

from types import TracebackType

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.data_aggregation.adapters.repository import CursorRepository, FactRepository, IngestedEvents


class UnitOfWork:
    """`async with uow:` opens a transaction; it commits on a clean exit and rolls back otherwise,
    so a page's facts, its event ids and the cursor move together or not at all."""

    cursors: CursorRepository
    events: IngestedEvents
    facts: FactRepository

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._session: AsyncSession | None = None

    async def __aenter__(self) -> UnitOfWork:
        self._session = self._sessions()
        await self._session.begin()
        self.cursors = CursorRepository(self._session)
        self.events = IngestedEvents(self._session)
        self.facts = FactRepository(self._session)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._session is None:
            raise RuntimeError("unit of work used outside `async with`")
        try:
            if kind is None:
                await self._session.commit()
            else:
                await self._session.rollback()
        finally:
            await self._session.close()
            self._session = None
