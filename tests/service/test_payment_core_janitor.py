"""The janitor and the process manager of payment-core, in-process (real gRPC, FakeChannel,
FakeInsurance, SQLite and PostgreSQL): orders finish by themselves — lost notifications are found
within seconds, unpaid orders close at their expiry (2205 for the insured), a success after close
goes back automatically, and two janitors never run the same step of one order at once."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from medpay.payment.v1 import payment_pb2 as pb

from services.payment_core.adapters.channels import ports
from services.payment_core.adapters.channels.fake import FakeChannel
from services.payment_core.adapters.insurance import InsurerStatus
from services.payment_core.adapters.insurance_fake import FakeInsurance
from services.payment_core.bootstrap import PaymentCore, build
from services.payment_core.config import PaymentCoreSettings
from services.payment_core.entrypoints import mapping, requests
from services.runtime.money import Money
from tests.conftest import TEST_DATABASE, create_scratch_database, drop_scratch_database
from tests.service import test_payment_core as base
from tests.service.test_payment_core import Clock, Harness, created_and_paying, insured, kinds, self_pay

database = base.database
harness = base.harness
TTL = timedelta(seconds=1800)


async def stored(h: Harness, order_id: str) -> pb.PaymentOrder:
    """The order as stored, without GetPaymentOrder's own look at the channel."""
    return mapping.order_to_proto(await h.core.orders.get(order_id, look_now=False))


async def test_an_unpaid_order_is_closed_at_its_expiry(harness: Harness) -> None:
    paying = await created_and_paying(harness, self_pay())
    harness.clock.offset = timedelta(minutes=15, seconds=1)  # its QR code expired, the order not yet
    await harness.core.janitor.sweep()
    order = await stored(harness, paying.order.order_id)
    assert (
        order.status == pb.ORDER_STATUS_AWAITING_PAYMENT
        and order.payments[0].status == pb.PAYMENT_STATUS_CLOSED
    )
    channel_view = await harness.channel.query(paying.payment.out_trade_no)
    assert channel_view.state is ports.TradeState.CLOSED  # closed at the channel, after a query

    harness.clock.offset = TTL + timedelta(seconds=1)
    await harness.core.janitor.sweep()
    order = await stored(harness, paying.order.order_id)
    assert order.status == pb.ORDER_STATUS_CLOSED and order.close_reason == "expired unpaid"


async def test_an_unpaid_insured_order_is_closed_and_its_presettlement_undone(harness: Harness) -> None:
    created = await harness.payment.CreatePaymentOrder(insured())
    harness.clock.offset = TTL + timedelta(seconds=1)
    await harness.core.janitor.sweep()
    assert (await stored(harness, created.order.order_id)).status == pb.ORDER_STATUS_CLOSED
    assert harness.insurance.settlements["stl-1"].status is InsurerStatus.CANCELLED
    cancels = [c for c in harness.insurance.calls if c[0] == "cancel"]
    await harness.core.janitor.sweep()
    assert [c for c in harness.insurance.calls if c[0] == "cancel"] == cancels  # undone once


async def test_an_expiring_order_that_the_channel_shows_paid_is_completed_not_closed(
    harness: Harness,
) -> None:
    paying = await created_and_paying(harness, self_pay())
    harness.channel.patient_pays(paying.payment.out_trade_no)  # notification lost
    harness.clock.offset = TTL + timedelta(seconds=1)
    await harness.core.janitor.sweep()
    await harness.settled()
    order = await stored(harness, paying.order.order_id)
    assert order.status == pb.ORDER_STATUS_SETTLED and order.cash_paid_fen == order.cash_due_fen


async def test_a_success_after_close_is_refunded_automatically_with_an_event(harness: Harness) -> None:
    paying = await created_and_paying(harness, self_pay())
    trade_no = paying.payment.out_trade_no
    channel = harness.channel
    real_query = channel.query

    async def unpaid_at_close(out_trade_no: str) -> ports.ChannelTradeStatus:
        # The channel's close raced the patient: the query says unpaid, the close is accepted...
        return ports.ChannelTradeStatus(out_trade_no, ports.TradeState.NOT_PAID, Money(12_500))

    async def close_accepted(out_trade_no: str) -> None:
        return None

    channel.query, channel.close = unpaid_at_close, close_accepted  # type: ignore[method-assign]
    close = pb.ClosePaymentOrderRequest(
        request_id=uuid.uuid4().hex, order_id=paying.order.order_id, reason="left"
    )
    assert (await harness.payment.ClosePaymentOrder(close)).order.status == pb.ORDER_STATUS_CLOSED
    channel.query = real_query  # type: ignore[method-assign]

    # ...and the patient's payment went through after all: its notification arrives late.
    reply = await harness.notify(*channel.patient_pays(trade_no))
    assert reply.status_code == 204
    await harness.settled()

    order = await stored(harness, paying.order.order_id)
    assert order.status == pb.ORDER_STATUS_CLOSED
    (refund,) = order.refunds
    assert refund.status == pb.REFUND_STATUS_SUCCEEDED and refund.cash_fen == order.payments[0].amount_fen
    assert "PAID_AFTER_CLOSE" in refund.reason  # the audit record says why the money went back
    events = await harness.events()
    assert kinds(events, order.order_id).count("refund_succeeded") == 1
    (succeeded,) = [e for e in events if e.HasField("refund_succeeded") and e.aggregate_id == order.order_id]
    assert succeeded.refund_succeeded.kind == "EXCESS"


@pytest.fixture
async def two_replicas(tmp_path: Path) -> AsyncIterator[tuple[PaymentCore, PaymentCore, FakeChannel]]:
    """Two payment-core instances on one PostgreSQL database, sharing the channel and the insurer."""
    if TEST_DATABASE.backend != "postgresql" or not TEST_DATABASE.server_url:
        pytest.skip("replicas share a PostgreSQL database")
    url = await create_scratch_database(TEST_DATABASE.server_url)
    channel, insurance, clock = FakeChannel(), FakeInsurance(), Clock()
    cores = []
    for n in range(2):
        settings = PaymentCoreSettings(database_url=url, data_dir=tmp_path / str(n), trace_dir=tmp_path / "t")
        core = build(settings, channel=channel, insurance=insurance, clock=clock)
        await core.database.migrate()
        await core.database.instance.register()
        cores.append(core)
    try:
        yield cores[0], cores[1], channel
    finally:
        for core in cores:
            await core.close()
        await drop_scratch_database(TEST_DATABASE.server_url, url)


async def test_two_janitors_never_run_the_same_step_of_one_order_at_once(
    two_replicas: tuple[PaymentCore, PaymentCore, FakeChannel],
) -> None:
    first, second, channel = two_replicas
    in_flight: Counter[str] = Counter()
    most: Counter[str] = Counter()
    asked: Counter[str] = Counter()
    real_query = channel.query

    async def slow_query(out_trade_no: str) -> ports.ChannelTradeStatus:
        in_flight[out_trade_no] += 1
        most[out_trade_no] = max(most[out_trade_no], in_flight[out_trade_no])
        asked[out_trade_no] += 1
        await asyncio.sleep(0.2)
        in_flight[out_trade_no] -= 1
        return await real_query(out_trade_no)

    channel.query = slow_query  # type: ignore[method-assign]
    trade_nos = []
    for _ in range(6):
        order = await first.orders.create(requests.create_order(self_pay()))
        _, payment = await first.orders.pay(requests.pay_order(base.pay(order.order_id)))
        trade_nos.append(payment.out_trade_no)
    clock = first.orders._deps.clock
    assert isinstance(clock, Clock)
    clock.offset = timedelta(seconds=11)  # every payment's first query is due

    await asyncio.gather(*(core.janitor.sweep() for core in (first, second, first, second)))
    assert set(asked) == set(trade_nos)
    assert all(most[t] == 1 for t in trade_nos), most  # never two queries of one order at once
    assert all(asked[t] == 1 for t in trade_nos), asked  # and each due query asked once


async def test_a_call_cancelled_mid_step_hands_the_orders_lease_back(harness: Harness) -> None:
    """A PayPaymentOrder whose caller gives up while the channel thinks must not leave the order
    leased (nothing could advance it until the lease ran out): the lease goes back at once."""
    created = await harness.payment.CreatePaymentOrder(self_pay())

    given_up = asyncio.Event()

    async def channel_hangs(*_: object) -> ports.PlacedOrder:
        try:
            await asyncio.sleep(30)
        finally:
            given_up.set()  # the server cancelled the call at its deadline
        raise AssertionError("never answered")

    harness.channel.place_order = channel_hangs  # type: ignore[method-assign]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.payment.PayPaymentOrder(base.pay(created.order.order_id), timeout=1.0)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await asyncio.wait_for(given_up.wait(), timeout=10)
    await harness.core.process.drain(5)  # the hand-back runs detached from the cancelled call

    order = await harness.core.orders.get(created.order.order_id, look_now=False)
    assert order.lease_holder is None and order.due_at is not None
    assert order.due_at <= harness.core.orders._deps.clock()  # the janitor asks about it next
