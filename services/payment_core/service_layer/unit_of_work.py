"""Unit of work: one database transaction with the repositories and the outbox bound to it.

`async with uow_factory() as uow:` begins (BEGIN IMMEDIATE on SQLite), commits on a clean exit and
rolls back on an exception, so a state change, its ledger postings and its events commit together
or not at all.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType

from medpay.events.v1 import events_pb2
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.payment_core.adapters.ledger_store import LedgerStore
from services.payment_core.adapters.queries import OrderQueries, WorkLists
from services.payment_core.adapters.repository import OrderRepository
from services.payment_core.domain.order import PaymentOrder
from services.runtime.errors import NotFound
from services.runtime.outbox import Outbox


class UnitOfWork:
    orders: OrderRepository
    ledger: LedgerStore
    queries: OrderQueries
    work: WorkLists

    def __init__(self, sessions: async_sessionmaker[AsyncSession], outbox: Outbox) -> None:
        self._sessions = sessions
        self._outbox = outbox
        self._session: AsyncSession | None = None

    async def __aenter__(self) -> UnitOfWork:
        self._session = self._sessions()
        await self._session.begin()
        self.orders = OrderRepository(self._session)
        self.ledger = LedgerStore(self._session)
        self.queries = OrderQueries(self._session, self.orders)
        self.work = WorkLists(self._session)
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

    async def lock_order(self, order_id: str) -> PaymentOrder:
        """The order under a row lock, for a state change; NotFound when there is none."""
        order = await self.orders.get(order_id, lock=True)
        if order is None:
            raise NotFound(f"no payment order {order_id}", {"order_id": order_id})
        return order

    async def record(self, *envelopes: events_pb2.EventEnvelope) -> None:
        """Events leave through the outbox, in this transaction."""
        for envelope in envelopes:
            await self._outbox.record_event(self._require_session(), envelope)

    def _require_session(self) -> AsyncSession:
        if self._session is None:
            raise RuntimeError("unit of work used outside `async with`")
        return self._session


UnitOfWorkFactory = Callable[[], UnitOfWork]


def unit_of_work_factory(sessions: async_sessionmaker[AsyncSession], outbox: Outbox) -> UnitOfWorkFactory:
    return lambda: UnitOfWork(sessions, outbox)
