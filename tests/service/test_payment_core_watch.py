"""WatchPaymentOrder in-process: the order's changes are pushed as they commit, over a real gRPC
channel, on SQLite and on PostgreSQL (where a second instance's commits arrive through NOTIFY).
Same harness as test_payment_core (real gRPC server, FakeChannel, FakeInsurance)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path

import grpc
import httpx
import pytest
from medpay.client import MedPayClient, OrderWaitError
from medpay.payment.v1 import payment_pb2 as pb
from medpay.payment.v1 import payment_pb2_grpc

from services.payment_core.adapters.unit_of_work import order_changes
from services.payment_core.bootstrap import PaymentCore, build
from services.payment_core.config import NOTIFY_PATH, PaymentCoreSettings
from services.payment_core.entrypoints.notify_http import notify_app
from services.runtime.changes import ChangeBroker
from services.runtime.errors import OutcomeUnknown
from tests.service import test_payment_core as base
from tests.service.test_payment_core import (
    Harness,
    created_and_paying,
    details,
    insured,
    patient_pays,
    self_pay,
    settled_order,
)

# The fixtures of the existing harness, shared rather than copied.
database = base.database
harness = base.harness
WAIT_S = 15.0


class Watcher:
    """One WatchPaymentOrder call, read message by message."""

    def __init__(
        self, stub: payment_pb2_grpc.PaymentServiceStub, order_id: str, timeout_s: float = 30
    ) -> None:
        self.call = stub.WatchPaymentOrder(pb.WatchPaymentOrderRequest(order_id=order_id), timeout=timeout_s)

    async def next(self) -> pb.PaymentOrder | None:
        """The next order sent, or None when the stream has ended."""
        async with asyncio.timeout(WAIT_S):
            message = await self.call.read()
        return None if message is grpc.aio.EOF else message.order

    async def until(self, status: int) -> list[pb.PaymentOrder]:
        """Orders sent up to and including the first in `status`."""
        seen: list[pb.PaymentOrder] = []
        while not seen or seen[-1].status != status:
            order = await self.next()
            assert order is not None, f"stream ended before {pb.OrderStatus.Name(status)}: {statuses(seen)}"
            seen.append(order)
        return seen

    async def rest(self) -> list[pb.PaymentOrder]:
        """Every order still to come, until the stream ends."""
        seen = []
        while (order := await self.next()) is not None:
            seen.append(order)
        return seen


def statuses(orders: list[pb.PaymentOrder]) -> list[str]:
    """Statuses in order, a repeat (same status, other payments) shown once."""
    names = [pb.OrderStatus.Name(order.status).removeprefix("ORDER_STATUS_") for order in orders]
    return [name for n, name in enumerate(names) if n == 0 or names[n - 1] != name]


def broker(h: Harness) -> ChangeBroker:
    return h.core.database.changes


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT_S):
        # State owned by the server side, with no event to await: looked at until the deadline.
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_a_watcher_sees_each_step_of_a_payment_and_the_stream_ends_when_settled(
    harness: Harness,
) -> None:
    created = await harness.payment.CreatePaymentOrder(self_pay())
    order_id = created.order.order_id
    watcher = Watcher(harness.payment, order_id)
    assert statuses(await watcher.until(pb.ORDER_STATUS_AWAITING_PAYMENT)) == ["AWAITING_PAYMENT"]

    paying = await harness.payment.PayPaymentOrder(base.pay(order_id))
    shown = await watcher.until(pb.ORDER_STATUS_PAYING)
    assert shown[-1].payments[0].status == pb.PAYMENT_STATUS_PENDING
    await patient_pays(harness, paying)

    settled = await watcher.until(pb.ORDER_STATUS_SETTLED)
    assert settled[-1].cash_paid_fen == settled[-1].total_fen == 12_500
    assert settled[-1] == await harness.order(order_id)
    assert await watcher.next() is None and await watcher.call.code() == grpc.StatusCode.OK
    await until(lambda: broker(harness).subscribers() == 0)


async def test_a_signal_that_changed_nothing_sends_nothing(harness: Harness) -> None:
    created = await harness.payment.CreatePaymentOrder(self_pay())
    order_id = created.order.order_id
    watcher = Watcher(harness.payment, order_id)
    assert (await watcher.next()).status == pb.ORDER_STATUS_AWAITING_PAYMENT  # type: ignore[union-attr]

    broker(harness).publish(order_changes(order_id))  # a wake-up with no change behind it
    await harness.payment.PayPaymentOrder(base.pay(order_id))

    following = await watcher.next()
    assert following is not None and following.status == pb.ORDER_STATUS_PAYING


async def test_watching_a_settled_order_sends_it_once_and_ends(harness: Harness) -> None:
    order = await settled_order(harness, self_pay())
    watcher = Watcher(harness.payment, order.order_id)
    assert await watcher.rest() == [order]


async def test_an_unknown_settlement_keeps_the_stream_open_until_the_insurer_answers(
    harness: Harness,
) -> None:
    harness.insurance.fail_next["settle"] = [OutcomeUnknown("2207 timed out")]
    paying = await created_and_paying(harness, insured())
    watcher = Watcher(harness.payment, paying.order.order_id)
    await patient_pays(harness, paying)
    await watcher.until(pb.ORDER_STATUS_SETTLING)

    harness.clock.offset = timedelta(seconds=8)
    await harness.core.janitor.sweep()  # the insurer is asked again (same request_id) and settles

    assert statuses(await watcher.rest())[-1] == "SETTLED"


async def test_a_bad_or_unknown_order_id_is_refused(harness: Harness) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await Watcher(harness.payment, "").next()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(caught.value) == ("FIELD_INVALID", ["order_id"])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await Watcher(harness.payment, "ord_no_such_order").next()
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert details(caught.value)[0] == "RESOURCE_NOT_FOUND"
    assert broker(harness).subscribers() == 0


async def test_the_callers_deadline_ends_the_watch_and_frees_it(harness: Harness) -> None:
    created = await harness.payment.CreatePaymentOrder(self_pay())
    watcher = Watcher(harness.payment, created.order.order_id, timeout_s=0.5)
    assert (await watcher.next()).status == pb.ORDER_STATUS_AWAITING_PAYMENT  # type: ignore[union-attr]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await watcher.next()
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await until(lambda: broker(harness).subscribers() == 0)


async def test_two_hundred_watchers_of_one_order_all_see_it_settle(harness: Harness) -> None:
    paying = await created_and_paying(harness, self_pay())
    order_id = paying.order.order_id
    watchers = [Watcher(harness.payment, order_id) for _ in range(200)]
    firsts = await asyncio.gather(*(watcher.next() for watcher in watchers))
    assert {order.status for order in firsts if order is not None} == {pb.ORDER_STATUS_PAYING}
    assert broker(harness).subscribers(order_changes(order_id)) == 200  # each subscribed before its first

    await patient_pays(harness, paying)

    endings = await asyncio.gather(*(watcher.rest() for watcher in watchers))
    assert all(ending and ending[-1].status == pb.ORDER_STATUS_SETTLED for ending in endings)
    codes = await asyncio.gather(*(watcher.call.code() for watcher in watchers))
    assert set(codes) == {grpc.StatusCode.OK}
    await until(lambda: broker(harness).subscribers() == 0)


@contextlib.asynccontextmanager
async def second_instance(h: Harness, database: str, tmp_path: Path) -> AsyncIterator[PaymentCore]:
    """Another payment-core on the same database, sharing the fakes (as replicas share partners)."""
    settings = PaymentCoreSettings(database_url=database, data_dir=tmp_path, trace_dir=tmp_path / "traces")
    other = build(settings, channel=h.channel, insurance=h.insurance, clock=h.clock)
    try:
        yield other
    finally:
        await other.close()


@contextlib.asynccontextmanager
async def listening(core: PaymentCore) -> AsyncIterator[None]:
    assert core.database.listener is not None
    task = asyncio.create_task(core.database.listen_for_changes())
    try:
        await asyncio.wait_for(core.database.listener.connected.wait(), WAIT_S)
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_commit_on_another_instance_wakes_a_watcher_here(
    harness: Harness, database: str, tmp_path: Path
) -> None:
    if not database.startswith("postgresql"):
        pytest.skip("replicas share a PostgreSQL database; SQLite is one process")
    paying = await created_and_paying(harness, self_pay())
    async with listening(harness.core), second_instance(harness, database, tmp_path) as other:
        watcher = Watcher(harness.payment, paying.order.order_id)
        await watcher.until(pb.ORDER_STATUS_PAYING)

        # The channel's notification reaches the other instance, which settles the order there.
        transport = httpx.ASGITransport(app=notify_app(other.notifications))
        async with httpx.AsyncClient(transport=transport, base_url="http://payment-core-2") as http:
            reply = await http.post(NOTIFY_PATH, headers=(notice := harness.channel.patient_pays(
                paying.payment.out_trade_no))[0], content=notice[1])  # fmt: skip
        assert reply.status_code == 204
        await other.process.drain(10)

        assert statuses(await watcher.rest())[-1] == "SETTLED"


async def test_the_facade_waits_for_settlement_on_the_stream(harness: Harness) -> None:
    paying = await created_and_paying(harness, self_pay())
    order_id = paying.order.order_id
    async with MedPayClient.connect(payment=harness.address) as medpay:
        waiting = asyncio.create_task(medpay.wait_until_settled(order_id, timeout_s=WAIT_S))
        await until(lambda: broker(harness).subscribers(order_changes(order_id)) == 1)
        await patient_pays(harness, paying)
        settled = await waiting
    assert settled.status == pb.ORDER_STATUS_SETTLED and settled.cash_paid_fen == settled.total_fen


async def test_the_facade_follows_an_order_as_it_changes(harness: Harness) -> None:
    paying = await created_and_paying(harness, self_pay())
    async with MedPayClient.connect(payment=harness.address) as medpay:
        states = medpay.watch_order(paying.order.order_id, timeout_s=WAIT_S)
        first = await anext(states)
        await patient_pays(harness, paying)
        rest = [order async for order in states]
    assert first.status == pb.ORDER_STATUS_PAYING
    assert statuses(rest)[-1] == "SETTLED" and rest[-1] == await harness.order(paying.order.order_id)


async def test_the_facade_gives_up_on_a_closed_order_and_on_time(harness: Harness) -> None:
    paying = await created_and_paying(harness, self_pay())
    order_id = paying.order.order_id
    async with MedPayClient.connect(payment=harness.address) as medpay:
        with pytest.raises(OrderWaitError, match=r"after 0\.3s") as late:
            await medpay.wait_until_settled(order_id, timeout_s=0.3)
        await medpay.close_order(order_id, "patient left")
        with pytest.raises(OrderWaitError, match="will not become") as closed:
            await medpay.wait_until_settled(order_id, timeout_s=WAIT_S)
    assert late.value.order.status == pb.ORDER_STATUS_PAYING
    assert closed.value.order.status == pb.ORDER_STATUS_CLOSED
