"""A plain read of an order (GetPaymentOrder, the HIS's Watch) is never torn: without a lock or a
transaction, the order's row and its refunds come from two statements, and a step committed between
them once paired the order's old row (REFUNDING) with its new refund (SUCCEEDED)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.payment_core.adapters import orm
from services.payment_core.adapters.repository import OrderRepository
from services.payment_core.domain.model import OrderStatus, RefundStatus
from services.runtime.db import AUTOCOMMIT, create_engine, session_factory
from services.runtime.money import Money
from tests.unit.test_payment_order import NOW, ORDER_ID, settled_self_pay


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, None)
    async with engine.begin() as connection:
        await connection.run_sync(orm.metadata.create_all)
    yield engine
    await engine.dispose()


async def test_a_step_committed_mid_read_is_not_torn(engine: AsyncEngine) -> None:
    sessions = session_factory(engine)
    order = settled_self_pay()
    refund = order.begin_refund("rfd_1", Money(0), "patient asked", NOW)
    async with sessions.begin() as session:
        repository = OrderRepository(session)
        await repository.add(order)
        await repository.reserve_refund(order, refund)
    assert order.status is OrderStatus.REFUNDING

    async def the_refund_succeeds() -> None:
        async with sessions.begin() as session:
            repository = OrderRepository(session)
            stored = await repository.get(ORDER_ID, lock=True)
            assert stored is not None
            stored.refund_succeeded(stored.refunds[0], "50300001", NOW)
            await repository.save(stored)

    async with sessions.begin() as session:
        if engine.dialect.name == "postgresql":
            await session.connection(execution_options=AUTOCOMMIT)  # as the services read
        reader = OrderRepository(session)
        hydrate, interrupted = reader.hydrate, []

        async def hydrate_while_a_step_commits(rows: Any, pays: Any = None) -> Any:
            if not interrupted:  # between the order's row and its refunds
                interrupted.append(True)
                await the_refund_succeeds()
            return await hydrate(rows, pays)

        reader.hydrate = hydrate_while_a_step_commits  # type: ignore[method-assign]
        if engine.dialect.name != "postgresql":
            pytest.skip("SQLite: a read runs in one snapshot, and its writer waits for it")
        seen = await reader.get(ORDER_ID)
    assert seen is not None and interrupted
    assert seen.refunds[0].status is RefundStatus.SUCCEEDED
    assert seen.status is OrderStatus.REFUNDED  # the row as the step left it, not the old one
