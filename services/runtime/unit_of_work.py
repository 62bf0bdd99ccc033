"""The unit of work every service uses: one database transaction, with the service's repositories
bound to it and the outbox writing into it.

`async with uow:` begins (BEGIN IMMEDIATE on SQLite); a clean exit commits, an exception rolls
back, so a state change and the events describing it commit together or not at all. A write the
database refuses by a constraint comes out as `errors.StorageConflict`, not as the driver's error. A service
subclasses it and binds its repositories in `bind()`. `read_only=True` is for transactions that
only read: on SQLite they begin deferred and wait for no writer.

`touch(key)` marks an aggregate changed by the transaction (see services.runtime.changes): on
PostgreSQL it is sent with NOTIFY inside the transaction (delivered to other replicas only if it
commits), and after the commit, never after a rollback, it is published to this process's broker.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

from medpay.events.v1 import events_pb2
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.runtime.changes import ChangeBroker
from services.runtime.db import AUTOCOMMIT, READ_ONLY, sessions_on_postgres
from services.runtime.errors import StorageConflict
from services.runtime.outbox import Outbox
from services.runtime.prepared import prepared

_NOTIFY = prepared(text("SELECT pg_notify(:channel, :payload)"))


class SqlUnitOfWork:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        outbox: Outbox | None = None,
        read_only: bool = False,
        changes: ChangeBroker | None = None,
    ) -> None:
        self._sessions = sessions
        self._outbox = outbox
        self._read_only = read_only
        self._changes = changes
        self._session: AsyncSession | None = None
        self._touched: set[str] = set()
        self._recorded_events = False
        self._autocommit_reads = read_only and sessions_on_postgres(sessions)

    def bind(self, session: AsyncSession) -> None:
        """Attach the service's repositories to the transaction's session."""

    async def __aenter__(self) -> Self:
        self._session = self._sessions()
        await self._session.begin()
        if self._read_only:
            # The connection is procured with the option, so the BEGIN it emits knows it (SQLite:
            # a deferred BEGIN, one snapshot for every read). PostgreSQL emits none (AUTOCOMMIT).
            options = {READ_ONLY: True, **(AUTOCOMMIT if self._autocommit_reads else {})}
            await self._session.connection(execution_options=options)
        self.bind(self._session)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        session, committed = self.session, False
        try:
            if kind is None:
                await self._notify_replicas(session)
                await self.before_commit(session)
                await session.commit()
                committed = True
            else:
                await session.rollback()
        except IntegrityError as refused:  # refused at commit
            raise StorageConflict(str(refused.orig)) from refused
        finally:
            if not committed:
                self.not_committed()
            await session.close()
            self._session = None
            touched, self._touched = self._touched, set()
            recorded, self._recorded_events = self._recorded_events, False
        if committed and recorded and self._outbox is not None:
            self._outbox.committed()
        if committed and self._changes is not None:
            for key in sorted(touched):
                self._changes.publish(key)
        if isinstance(error, IntegrityError):
            # Refused by a statement of the transaction (rolled back above): named for the caller.
            raise StorageConflict(str(error.orig)) from error

    async def before_commit(self, session: AsyncSession) -> None:
        """A service's last writes into a transaction that is about to commit."""

    def not_committed(self) -> None:
        """The transaction rolled back (or its commit failed)."""

    @property
    def session(self) -> AsyncSession:
        if self._session is None:
            raise RuntimeError("unit of work used outside `async with`")
        return self._session

    def touch(self, key: str) -> None:
        """Mark `key` changed by this transaction: its watchers are woken once it commits."""
        if self._session is None:
            raise RuntimeError("unit of work used outside `async with`")
        self._touched.add(key)

    async def _notify_replicas(self, session: AsyncSession) -> None:
        # PostgreSQL queues a NOTIFY with the transaction and delivers it only on commit.
        if self._changes is None or self._changes.channel is None:
            return
        for key in sorted(self._touched):
            await session.execute(
                _NOTIFY, {"channel": self._changes.channel, "payload": self._changes.notification(key)}
            )

    async def record_event(self, *envelopes: events_pb2.EventEnvelope) -> None:
        """Events leave through the outbox, in this transaction."""
        if self._outbox is None:
            raise RuntimeError("this unit of work has no outbox")
        for envelope in envelopes:
            await self._outbox.record_event(self.session, envelope)
        self._recorded_events = True
