"""The unit of work every service uses: one database transaction, with the service's repositories
bound to it and the outbox writing into it.

`async with uow:` begins (BEGIN IMMEDIATE on SQLite); a clean exit commits, an exception rolls
back, so a state change and the events describing it commit together or not at all. A service
subclasses it and binds its repositories in `bind()`. `read_only=True` is for transactions that
only read: on SQLite they begin deferred and wait for no writer.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

from medpay.events.v1 import events_pb2
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.runtime.db import READ_ONLY
from services.runtime.outbox import Outbox


class SqlUnitOfWork:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        outbox: Outbox | None = None,
        read_only: bool = False,
    ) -> None:
        self._sessions = sessions
        self._outbox = outbox
        self._read_only = read_only
        self._session: AsyncSession | None = None

    def bind(self, session: AsyncSession) -> None:
        """Attach the service's repositories to the transaction's session."""

    async def __aenter__(self) -> Self:
        self._session = self._sessions()
        await self._session.begin()
        if self._read_only:
            # The connection is procured with the option, so the BEGIN it emits knows it.
            await self._session.connection(execution_options={READ_ONLY: True})
        self.bind(self._session)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        session = self.session
        try:
            if kind is None:
                await session.commit()
            else:
                await session.rollback()
        finally:
            await session.close()
            self._session = None

    @property
    def session(self) -> AsyncSession:
        if self._session is None:
            raise RuntimeError("unit of work used outside `async with`")
        return self._session

    async def record_event(self, *envelopes: events_pb2.EventEnvelope) -> None:
        """Events leave through the outbox, in this transaction."""
        if self._outbox is None:
            raise RuntimeError("this unit of work has no outbox")
        for envelope in envelopes:
            await self._outbox.record_event(self.session, envelope)
