"""payment-core's unit of work: an order's state change, its ledger postings and its events
commit together or not at all (see services.runtime.unit_of_work). Every write of an order through
`orders` touches the order's key, so its watchers (WatchPaymentOrder) wake once it commits.

An adapter: it binds the repositories to a SQLAlchemy session. The service layer names `UnitOfWork`,
`UnitOfWorkFactory` and `order_changes` from here and never touches the session."""

from __future__ import annotations

from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.payment_core.adapters.deposit_store import DepositStore
from services.payment_core.adapters.ledger_store import LedgerStore
from services.payment_core.adapters.queries import OrderQueries, WorkLists
from services.payment_core.adapters.repository import ChargeLinesCache, OrderRepository
from services.payment_core.adapters.shift_store import ShiftStore
from services.payment_core.domain.order import PaymentOrder
from services.runtime.changes import ChangeBroker, aggregate_key
from services.runtime.errors import NotFound
from services.runtime.outbox import Outbox
from services.runtime.unit_of_work import SqlUnitOfWork


def order_changes(order_id: str) -> str:
    """The key under which an order's committed changes are signalled."""
    return aggregate_key("payment_order", order_id)


class UnitOfWork(SqlUnitOfWork):
    orders: OrderRepository
    ledger: LedgerStore
    queries: OrderQueries
    work: WorkLists
    shifts: ShiftStore
    deposits: DepositStore
    # Shared by every unit of work of this process (see ChargeLinesCache).
    lines: ChargeLinesCache | None = None

    def bind(self, session: AsyncSession) -> None:
        self.orders = OrderRepository(
            session, changed=lambda order_id: self.touch(order_changes(order_id)), lines=self.lines
        )
        self.ledger = LedgerStore(session)
        self.queries = OrderQueries(session, self.orders)
        self.work = WorkLists(session)
        self.shifts = ShiftStore(session)
        self.deposits = DepositStore(session)

    async def lock_order(self, order_id: str) -> PaymentOrder:
        """The order under a row lock, for a state change; NotFound when there is none."""
        order = await self.orders.get(order_id, lock=True)
        if order is None:
            raise NotFound(f"no payment order {order_id}", {"order_id": order_id})
        return order


class UnitOfWorkFactory(Protocol):
    def __call__(self, read_only: bool = False) -> UnitOfWork: ...


def unit_of_work_factory(
    sessions: async_sessionmaker[AsyncSession], outbox: Outbox, changes: ChangeBroker | None = None
) -> UnitOfWorkFactory:
    lines = ChargeLinesCache()

    def open_unit_of_work(read_only: bool = False) -> UnitOfWork:
        uow = UnitOfWork(sessions, outbox, read_only, changes)
        uow.lines = lines
        return uow

    return open_unit_of_work
