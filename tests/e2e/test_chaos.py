"""Chaos: payment-core and insurance-adapter killed (SIGKILL) at random moments under a bounded
load of insured and self-pay visits, paying by WeChat Pay or Alipay QR, then the platform left alone.

The HIS retries each call with the same request id, as a real one does, and then moves on. After
the last restart, with no client left, the platform must finish by itself: every order whose
patient paid reaches a final state within 60 s, an unpaid one is closed at its expiry, no order
collects more than it owes, every channel success is applied or refunded, every insurer settlement
has a platform record or is reversed, the insurer holds no pre-settlement or fee lines for an order
that is gone or unpaid, and the ledger balances. The gateway's and the insurer's own
books (the simulators') are the truth the platform is checked against. Seeded: each seed decides
the visits, who pays, and when which service dies.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
import httpx
import pytest
from medpay.insurance.v1 import insurance_pb2
from medpay.payment.v1 import payment_pb2
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from infra.local.processes import MeshProcesses
from tests.conftest import running_mesh
from tests.e2e.flows import (
    PEOPLE,
    Status,
    Stubs,
    insured_order_request,
    patient_scans,
    self_pay_order_request,
)

pytestmark = pytest.mark.e2e

ORDER_TTL_S = 20.0
SETTLE_WITHIN_S = 60.0
CLOSE_WITHIN_S = 10.0
VISITS = 20
IN_FLIGHT = 3
KILLS = 4
VICTIMS = ("payment-core", "insurance-adapter")

CHAOS_ENV = {
    "MEDPAY_PAYMENT_CORE_ORDER_TTL_S": str(ORDER_TTL_S),
    "MEDPAY_PAYMENT_CORE_JANITOR_INTERVAL_S": "0.5",
    "MEDPAY_PAYMENT_CORE_FIRST_QUERY_S": "1",
    "MEDPAY_PAYMENT_CORE_RETRY_BASE_S": "1",
    "MEDPAY_PAYMENT_CORE_STEP_LEASE_S": "8",
    "MEDPAY_PAYMENT_CORE_INSURER_DEADLINE_S": "4",
    "MEDPAY_INSTANCE_HEARTBEAT_S": "0.5",
    "MEDPAY_INSTANCE_DEAD_AFTER_S": "2",
    "MEDPAY_NHSA_TIMEOUT_S": "2",
}
# Settlement states in which the insurer holds nothing open for the order.
NOTHING_HELD = (insurance_pb2.SETTLEMENT_STATUS_CANCELLED, insurance_pb2.SETTLEMENT_STATUS_FAILED)
FINAL = {Status.ORDER_STATUS_SETTLED, Status.ORDER_STATUS_CLOSED, Status.ORDER_STATUS_REFUNDED}
# What a HIS retries (same request id): the service is down or restarting, or still busy with it.
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED}
T = TypeVar("T")


@pytest.fixture(scope="module")
async def chaos_mesh(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[MeshProcesses]:
    async with running_mesh(tmp_path_factory.mktemp("chaos-mesh"), CHAOS_ENV) as processes:
        yield processes  # type: ignore[misc]


@dataclass
class Day:
    """What the HIS saw: the bills it sent and what it could learn before moving on."""

    prefix: str
    bills: list[str] = field(default_factory=list)
    scanned: set[str] = field(default_factory=set)  # out_trade_nos the patient paid at the gateway


async def persist(call: Callable[[], Awaitable[T]], patience_s: float = 25.0) -> T | None:
    """Retry one call with its same request (and id) while the service is away; then move on."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience_s
    while True:
        try:
            return await call()
        except grpc.aio.AioRpcError as error:
            if error.code() not in RETRYABLE or loop.time() > deadline:
                return None
            await asyncio.sleep(0.3)


async def visit(mesh: MeshProcesses, stubs: Stubs, day: Day, index: int, rng: random.Random) -> None:
    bill = f"{day.prefix}{index:03d}"
    day.bills.append(bill)
    insured = rng.random() < 0.6
    if insured:
        request = insured_order_request(PEOPLE[index % len(PEOPLE)], bill, index)
    else:
        request = self_pay_order_request(bill, index)
    created = await persist(lambda: stubs.payment.CreatePaymentOrder(request, timeout=8))
    if created is None:
        return
    by_alipay = rng.random() < 0.4
    pay = payment_pb2.PayPaymentOrderRequest(
        request_id=uuid.uuid4().hex,
        order_id=created.order.order_id,
        channel=payment_pb2.CHANNEL_ALIPAY if by_alipay else payment_pb2.CHANNEL_WECHAT_PAY,
        method=payment_pb2.PAY_METHOD_NATIVE_QR,
    )
    paid = await persist(lambda: stubs.payment.PayPaymentOrder(pay, timeout=8))
    if paid is None or not paid.payment.code_url or rng.random() < 0.2:
        return  # the patient walks away without paying
    await asyncio.sleep(rng.uniform(0.0, 1.0))
    if by_alipay:
        async with httpx.AsyncClient(timeout=10) as client:
            scanned = await client.post(
                f"{mesh.layout.http_base('alipay-sim')}/sim/pay",
                json={"out_trade_no": paid.payment.out_trade_no},
            )
        scanned.raise_for_status()
    else:
        await patient_scans(mesh, paid.payment.out_trade_no)
    day.scanned.add(paid.payment.out_trade_no)


async def killer(mesh: MeshProcesses, rng: random.Random, load: asyncio.Task[None]) -> int:
    """Kill and restart the services at seeded moments while the load runs: each of them at least
    once, then more while visits are still going."""
    kills = 0
    victims = rng.sample(VICTIMS, len(VICTIMS)) + [rng.choice(VICTIMS) for _ in range(KILLS - len(VICTIMS))]
    for victim in victims:
        await asyncio.sleep(rng.uniform(0.2, 1.2))
        if load.done() and kills >= len(VICTIMS):
            break
        mesh.stop_process(victim, signal.SIGKILL)
        await asyncio.sleep(rng.uniform(0.0, 1.0))
        mesh.start_process(victim)
        await mesh.wait_ready([victim])
        kills += 1
    return kills


async def play(mesh: MeshProcesses, stubs: Stubs, day: Day, rng: random.Random) -> None:
    gate = asyncio.Semaphore(IN_FLIGHT)
    seeds = [rng.random() for _ in range(VISITS)]

    async def one(index: int) -> None:
        async with gate:
            await visit(mesh, stubs, day, index, random.Random(seeds[index]))

    await asyncio.gather(*(one(i) for i in range(VISITS)))


# ---- the books ---------------------------------------------------------------------------------


async def platform_orders(stubs: Stubs, day: Day | None) -> list[payment_pb2.PaymentOrder]:
    """The day's orders (every order of the mesh for None)."""
    found: list[payment_pb2.PaymentOrder] = []
    token = ""
    while True:
        page = await stubs.payment.ListPaymentOrders(
            payment_pb2.ListPaymentOrdersRequest(page_size=100, page_token=token), timeout=10
        )
        found.extend(o for o in page.orders if day is None or o.his_order_no.startswith(day.prefix))
        token = page.next_page_token
        if not token:
            return found


async def gateway_book(mesh: MeshProcesses) -> dict[str, dict[str, Any]]:
    """Both channels' own books, in WeChat Pay's words (Alipay's trade and refund states mapped)."""
    async with httpx.AsyncClient(timeout=10) as client:
        wechat = await client.get(f"{mesh.layout.http_base('wechatpay-sim')}/sim/transactions")
        alipay = await client.get(f"{mesh.layout.http_base('alipay-sim')}/sim/transactions")
    wechat.raise_for_status()
    alipay.raise_for_status()
    book = {t["out_trade_no"]: t for t in wechat.json()}
    for trade in alipay.json():
        refunds = [
            {
                "refund_fen": r["refund_fen"],
                "status": "SUCCESS" if r["status"] == "REFUND_SUCCESS" else r["status"],
            }
            for r in trade["refunds"]
        ]
        # A trade closed after its payment was refunded in full had been paid (TRADE_CLOSED with refunds).
        paid = trade["trade_status"] in ("TRADE_SUCCESS", "TRADE_FINISHED") or (
            trade["trade_status"] == "TRADE_CLOSED" and refunds
        )
        book[trade["out_trade_no"]] = {
            "trade_state": "SUCCESS" if paid else trade["trade_status"],
            "total_fen": trade["total_fen"],
            "refunds": refunds,
        }
    return book


async def insurer_book(mesh: MeshProcesses) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(timeout=10) as client:
        reply = await client.get(f"{mesh.layout.http_base('nhsa-sim')}/sim/settlements")
    reply.raise_for_status()
    rows: list[dict[str, Any]] = reply.json()
    return rows


async def fee_batches_held(mesh: MeshProcesses) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(timeout=10) as client:
        reply = await client.get(f"{mesh.layout.http_base('nhsa-sim')}/sim/fee-batches")
    reply.raise_for_status()
    rows: list[dict[str, Any]] = reply.json()
    return rows


async def adapter_settlements(stubs: Stubs) -> list[insurance_pb2.Settlement]:
    found: list[insurance_pb2.Settlement] = []
    token = ""
    while True:
        page = await stubs.insurance.ListSettlements(
            insurance_pb2.ListSettlementsRequest(page_size=100, page_token=token), timeout=10
        )
        found.extend(page.settlements)
        token = page.next_page_token
        if not token:
            return found


OPEN_SETTLEMENT = (
    insurance_pb2.SETTLEMENT_STATUS_UNSPECIFIED,  # still on its way to pre-settled
    insurance_pb2.SETTLEMENT_STATUS_PRESETTLED,
    insurance_pb2.SETTLEMENT_STATUS_UNKNOWN,
)


def presettlements_left_open(closed: set[str], adapter: list[insurance_pb2.Settlement]) -> list[str]:
    """The closed orders whose pre-settlement the adapter still holds open."""
    return [s.order_ref for s in adapter if s.order_ref in closed and s.status in OPEN_SETTLEMENT]


def settlements_unrecorded(
    insurer: list[dict[str, Any]], adapter: list[insurance_pb2.Settlement]
) -> list[str]:
    """Settlements standing at the insurer (booked, not reversed) that the adapter has no record of."""
    recorded = {s.setl_id for s in adapter if s.setl_id}
    return [
        b["setl_id"]
        for b in insurer
        if b["kind"] == "settle" and not b["revoked_by"] and b["setl_id"] not in recorded
    ]


async def ledger_imbalances(mesh: MeshProcesses) -> list[tuple[str, int]]:
    """Ledger transactions whose postings do not sum to zero (payment-core's own books)."""
    url = mesh.layout.database_url
    if url:
        engine = create_async_engine(url, connect_args={"server_settings": {"search_path": "payment_core"}})
    else:
        engine = create_async_engine(
            f"sqlite+aiosqlite:///{mesh.layout.workdir / 'data' / 'payment_core.sqlite3'}"
        )
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                text(
                    "SELECT t.transfer_key, SUM(p.amount_fen) FROM ledger_transactions t"
                    " JOIN ledger_postings p ON p.transaction_id = t.id"
                    " GROUP BY t.transfer_key HAVING SUM(p.amount_fen) <> 0"
                )
            )
            return [(str(key), int(total)) for key, total in rows]
    finally:
        await engine.dispose()


def gateway_net(order: payment_pb2.PaymentOrder, gateway: dict[str, dict[str, Any]]) -> tuple[int, int]:
    """(collected, refunded) at the gateway for the order's payments."""
    collected = refunded = 0
    for payment in order.payments:
        seen = gateway.get(payment.out_trade_no)
        if seen is None:
            continue
        if seen["trade_state"] in ("SUCCESS", "REFUND"):
            collected += seen["total_fen"]
        refunded += sum(r["refund_fen"] for r in seen["refunds"] if r["status"] == "SUCCESS")
    return collected, refunded


async def until_final(
    mesh: MeshProcesses,
    stubs: Stubs,
    day: Day,
    within_s: float,
    finished_after: dict[str, float],
    finished_at: dict[str, float],
) -> list[payment_pb2.PaymentOrder]:
    """The day's orders once all are final (or at the deadline); `finished_after` gets how many
    seconds after the start each one was first seen final, `finished_at` the wall-clock time."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + within_s
    while True:
        orders = await platform_orders(stubs, day)
        for order in orders:
            if order.status in FINAL and order.order_id not in finished_after:
                finished_after[order.order_id] = loop.time() - started
                finished_at[order.order_id] = time.time()
        gateway = await gateway_book(mesh)
        refunds_open = any(
            r["status"] == "PROCESSING"
            for o in orders
            for p in o.payments
            for r in gateway.get(p.out_trade_no, {}).get("refunds", [])
        )
        if all(o.status in FINAL for o in orders) and not refunds_open:
            # An order's last steps at the insurer can follow its final status: undoing a closed
            # order's pre-settlement (2205), and resolving a settlement (2207) whose answer a kill
            # of the adapter lost (recorded once queried, or reversed). After a kill they come on
            # the retry schedule: wait for them too, within the same deadline.
            closed = {o.order_id for o in orders if o.status == Status.ORDER_STATUS_CLOSED}
            adapter = await adapter_settlements(stubs)
            if not presettlements_left_open(closed, adapter) and not settlements_unrecorded(
                await insurer_book(mesh), adapter
            ):
                return orders
        if loop.time() > deadline:
            return orders
        await asyncio.sleep(0.5)


# ---- the test ----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [11, 23, 37])
async def test_killed_services_leave_every_order_finished_and_every_fen_accounted_for(
    chaos_mesh: MeshProcesses, seed: int
) -> None:
    rng = random.Random(seed)
    day = Day(prefix=f"CH{seed}{uuid.uuid4().hex[:4].upper()}")
    stubs = Stubs.connect(chaos_mesh)
    try:
        load = asyncio.create_task(play(chaos_mesh, stubs, day, rng))
        kills = await killer(chaos_mesh, random.Random(seed * 7919), load)
        await load
    finally:
        await stubs.close()
    assert kills >= len(VICTIMS)

    # The HIS is gone. Every order must finish by itself: paid ones within 60 s, unpaid ones at
    # their expiry (plus the janitor's close steps).
    stubs = Stubs.connect(chaos_mesh)
    try:
        finished_after: dict[str, float] = {}
        finished_at: dict[str, float] = {}
        watch_from = time.time()
        orders = await until_final(
            chaos_mesh, stubs, day, SETTLE_WITHIN_S + ORDER_TTL_S, finished_after, finished_at
        )
        gateway = await gateway_book(chaos_mesh)
        insurer = await insurer_book(chaos_mesh)
        adapter = await adapter_settlements(stubs)
        every_order = {o.order_id for o in await platform_orders(stubs, None)}
        held = await fee_batches_held(chaos_mesh)
    finally:
        await stubs.close()

    assert orders, "no order was created at all"
    outcome = sorted(Status.Name(o.status) for o in orders)
    print(f"seed {seed}: {kills} kills, {len(day.scanned)} paid, orders {outcome}")  # in -s / failure output
    stuck = {o.order_id: (Status.Name(o.status), o.attention_reason) for o in orders if o.status not in FINAL}
    assert not stuck, f"orders not finished: {stuck}"

    late = {
        o.order_id: round(finished_after[o.order_id], 1)
        for o in orders
        if any(p.out_trade_no in day.scanned for p in o.payments)
        and finished_after[o.order_id] > SETTLE_WITHIN_S
    }
    assert not late, f"paid orders that took longer than {SETTLE_WITHIN_S} s to finish: {late}"
    # An unpaid order is closed by the janitor soon after its expiry (or after the watch began,
    # for one that expired while payment-core was down), not whenever someone next looks.
    slow_close = {
        o.order_id: round(finished_at[o.order_id] - max(o.expires_at.ToSeconds(), watch_from), 1)
        for o in orders
        if o.status == Status.ORDER_STATUS_CLOSED
        and finished_at[o.order_id] > max(o.expires_at.ToSeconds(), watch_from) + CLOSE_WITHIN_S
    }
    assert not slow_close, f"unpaid orders closed more than {CLOSE_WITHIN_S} s after expiry: {slow_close}"

    ours = {p.out_trade_no for o in orders for p in o.payments}
    for order in orders:
        collected, refunded = gateway_net(order, gateway)
        net = collected - refunded
        # No order collects more than it owes; what it kept is exactly what its state says.
        assert net <= order.cash_due_fen, order
        if order.status == Status.ORDER_STATUS_SETTLED:
            assert net == order.cash_due_fen == order.cash_paid_fen - order.refunded_cash_fen, order
        else:
            assert net == 0, (
                f"{Status.Name(order.status)} order {order.order_id} kept {net} fen at the gateway"
            )
        assert order.refunded_cash_fen <= order.cash_paid_fen

    # Every channel success is one of the platform's payments (applied, or refunded above).
    for out_trade_no in day.scanned:
        assert gateway[out_trade_no]["trade_state"] in ("SUCCESS", "REFUND")
        assert out_trade_no in ours

    # Every settlement booked at the insurer is the platform's (same setl_id), or reversed; one of
    # this day's stands for a SETTLED order, and a SETTLED order's settlement stands.
    by_id = {o.order_id: o for o in orders}
    adapter_by_setl = {s.setl_id: s for s in adapter if s.setl_id}
    standing = {b["setl_id"] for b in insurer if b["kind"] == "settle" and not b["revoked_by"]}
    for setl_id in standing:
        record = adapter_by_setl.get(setl_id)
        assert record is not None, f"insurer settlement {setl_id} has no platform record"
        order = by_id.get(record.order_ref)
        if order is not None:
            assert order.status == Status.ORDER_STATUS_SETTLED and order.setl_id == setl_id, order
    for order in orders:
        if order.status == Status.ORDER_STATUS_SETTLED and order.insured:
            assert order.setl_id in standing, order.order_id

    # Unpaid insured orders leave no pre-settlement open at the insurer.
    closed = {o.order_id for o in orders if o.status == Status.ORDER_STATUS_CLOSED}
    left_open = presettlements_left_open(closed, adapter)
    assert not left_open, f"pre-settlements left open for closed orders: {left_open}"

    # Nothing is held at the insurer for an order that is gone or never settled: a pre-settlement
    # of an order payment-core no longer knows (its creation failed) is cancelled, and every batch
    # of fee lines (2204) the insurer still holds is one that settled.
    orphans = [
        (s.order_ref, insurance_pb2.SettlementStatus.Name(s.status), s.status_reason)
        for s in adapter
        if s.order_ref not in every_order and s.status not in NOTHING_HELD
    ]
    assert not orphans, f"pre-settlements open for orders payment-core does not have: {orphans}"
    settled_batches = {(b["mdtrt_id"], b["chrg_bchno"]) for b in insurer if b["kind"] == "settle"}
    leftover = [b for b in held if (b["mdtrt_id"], b["chrg_bchno"]) not in settled_batches]
    assert not leftover, f"fee lines the insurer holds for no settlement: {leftover}"

    assert await ledger_imbalances(chaos_mesh) == []
