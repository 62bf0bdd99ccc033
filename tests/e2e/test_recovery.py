"""Crashes and unknown outcomes in the insured settlement and in a reconciliation run, through the
real mesh.

A mesh of its own with a quick janitor, a short insurer deadline and short reconciliation leases,
so that recovery happens in seconds. Invariants checked: the insurer settles once, the patient pays
once, the platform never decides an unknown outcome by guessing, and the order ends SETTLED (or its
cash refunded); a reconciliation run whose process is killed ends COMPLETED, not RUNNING forever.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from medpay.insurance.v1 import insurance_pb2
from medpay.payment.v1 import payment_pb2
from medpay.reconciliation.v1 import reconciliation_pb2

from infra.local.processes import MeshProcesses
from services.runtime.clock import business_date_of, utcnow
from tests.conftest import running_mesh
from tests.e2e.flows import PEOPLE, Status, Stubs, insured_order_request, patient_scans, wait_for_status

pytestmark = pytest.mark.e2e

QUICK_RECOVERY = {
    "MEDPAY_PAYMENT_CORE_JANITOR_INTERVAL_S": "0.5",
    "MEDPAY_PAYMENT_CORE_RETRY_BASE_S": "1",
    "MEDPAY_NHSA_TIMEOUT_S": "2",
    "MEDPAY_NHSA_SIM_HANG_S": "4",
    "MEDPAY_RECONCILIATION_ANSWER_WITHIN_S": "1",
    "MEDPAY_RECONCILIATION_LEASE_S": "2",
    "MEDPAY_RECONCILIATION_LEASE_RENEW_S": "0.5",
    "MEDPAY_RECONCILIATION_TAKEOVER_INTERVAL_S": "0.5",
}


@pytest.fixture(scope="module")
async def crash_mesh(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[MeshProcesses]:
    async with running_mesh(tmp_path_factory.mktemp("crash-mesh"), QUICK_RECOVERY) as processes:
        yield processes  # type: ignore[misc]


@pytest.fixture
async def stubs(crash_mesh: MeshProcesses) -> AsyncIterator[Stubs]:
    connected = Stubs.connect(crash_mesh)
    yield connected
    await connected.close()


async def arm_insurer_fault(mesh: MeshProcesses, infno: str, mode: str) -> None:
    async with httpx.AsyncClient(timeout=5) as client:
        reply = await client.post(
            f"{mesh.layout.http_base('nhsa-sim')}/sim/faults", json={"infno": infno, "mode": mode, "count": 1}
        )
        reply.raise_for_status()


async def create_and_pay(mesh: MeshProcesses, stubs: Stubs, person_index: int) -> payment_pb2.PaymentOrder:
    request = insured_order_request(PEOPLE[person_index], f"MZ{uuid.uuid4().hex[:12]}", person_index)
    order = (await stubs.payment.CreatePaymentOrder(request, timeout=30)).order
    pay = payment_pb2.PayPaymentOrderRequest(
        request_id=uuid.uuid4().hex,
        order_id=order.order_id,
        channel=payment_pb2.CHANNEL_WECHAT_PAY,
        method=payment_pb2.PAY_METHOD_NATIVE_QR,
    )
    paid = await stubs.payment.PayPaymentOrder(pay, timeout=30)
    await patient_scans(mesh, paid.payment.out_trade_no)
    return order


async def insurer_side(stubs: Stubs, order_id: str) -> list[insurance_pb2.Settlement]:
    listing = await stubs.insurance.ListSettlements(
        insurance_pb2.ListSettlementsRequest(page_size=100), timeout=10
    )
    return [s for s in listing.settlements if s.order_ref == order_id]


async def test_payment_core_killed_while_the_insurer_settles_resumes_to_one_settlement(
    crash_mesh: MeshProcesses, stubs: Stubs
) -> None:
    # The insurer commits the 2207 and then hangs: payment-core dies while it waits.
    await arm_insurer_fault(crash_mesh, "2207", "unknown_after_commit")
    order = await create_and_pay(crash_mesh, stubs, 20)
    await wait_for_status(stubs, order.order_id, Status.ORDER_STATUS_SETTLING, timeout_s=10)
    crash_mesh.stop_process("payment-core", signal.SIGKILL)
    crash_mesh.start_process("payment-core")
    await crash_mesh.wait_ready(["payment-core"])

    settled = await wait_for_status(stubs, order.order_id, Status.ORDER_STATUS_SETTLED, timeout_s=40)
    [settlement] = await insurer_side(stubs, order.order_id)
    assert settlement.status == insurance_pb2.SETTLEMENT_STATUS_SETTLED
    assert settlement.setl_id == settled.setl_id
    assert settled.cash_paid_fen == settled.cash_due_fen
    assert len([p for p in settled.payments if p.status == payment_pb2.PAYMENT_STATUS_SUCCEEDED]) == 1


async def test_an_unknown_insurer_outcome_is_queried_not_guessed(
    crash_mesh: MeshProcesses, stubs: Stubs
) -> None:
    await arm_insurer_fault(crash_mesh, "2207", "unknown_after_commit")
    order = await create_and_pay(crash_mesh, stubs, 21)
    seen: set[int] = set()
    for _ in range(200):
        current = await stubs.payment.GetPaymentOrder(
            payment_pb2.GetPaymentOrderRequest(order_id=order.order_id)
        )
        seen.add(current.order.status)
        if current.order.status == Status.ORDER_STATUS_SETTLED:
            break
        assert current.order.status not in (Status.ORDER_STATUS_REFUNDED, Status.ORDER_STATUS_CLOSED)
        await asyncio.sleep(0.1)
    assert current.order.status == Status.ORDER_STATUS_SETTLED
    [settlement] = await insurer_side(stubs, order.order_id)
    assert settlement.setl_id == current.order.setl_id
    messages = await stubs.insurance.ListInsurerMessages(
        insurance_pb2.ListInsurerMessagesRequest(page_size=50, order_ref=order.order_id), timeout=10
    )
    outcomes = {(m.infno, m.outcome) for m in messages.messages}
    assert ("2207", "UNKNOWN") in outcomes and ("5203", "OK") in outcomes
    assert len({m.msgid for m in messages.messages if m.infno == "2207"}) == 1  # retried under one msgid


async def test_an_insurer_refusal_after_payment_refunds_the_cash(
    crash_mesh: MeshProcesses, stubs: Stubs
) -> None:
    await arm_insurer_fault(crash_mesh, "2207", "reject")
    order = await create_and_pay(crash_mesh, stubs, 22)
    for _ in range(100):
        current = (
            await stubs.payment.GetPaymentOrder(payment_pb2.GetPaymentOrderRequest(order_id=order.order_id))
        ).order
        if current.refunds and all(r.status == payment_pb2.REFUND_STATUS_SUCCEEDED for r in current.refunds):
            break
        await asyncio.sleep(0.1)
    assert current.status != Status.ORDER_STATUS_SETTLED
    assert sum(r.cash_fen for r in current.refunds) == current.cash_paid_fen > 0
    assert current.refunded_cash_fen == current.cash_paid_fen
    [settlement] = await insurer_side(stubs, order.order_id)
    assert settlement.status == insurance_pb2.SETTLEMENT_STATUS_FAILED


async def wechat_faults(mesh: MeshProcesses, fault: dict[str, object] | None = None) -> list[object]:
    """Arm one fault on the WeChat Pay simulator (when given); the faults still armed."""
    async with httpx.AsyncClient(timeout=5) as client:
        base = f"{mesh.layout.http_base('wechatpay-sim')}/sim/faults"
        reply = await (client.post(base, json=fault) if fault else client.get(base))
        reply.raise_for_status()
        armed: list[object] = reply.json()
        return armed


async def until_reconciled(
    stubs: Stubs, run_id: str, timeout_s: float
) -> reconciliation_pb2.ReconciliationRun:
    request = reconciliation_pb2.GetReconciliationRunRequest(run_id=run_id)
    for _ in range(int(timeout_s / 0.25)):
        run = (await stubs.reconciliation.GetReconciliationRun(request, timeout=5)).run
        if run.status != reconciliation_pb2.RUN_STATUS_RUNNING:
            return run
        await asyncio.sleep(0.25)
    return run


async def test_reconciliation_killed_mid_run_is_taken_over_and_completes(
    crash_mesh: MeshProcesses, stubs: Stubs
) -> None:
    # The trade bill download stalls 30 s (longer than the run waits for it): the run is mid-way
    # when its process is killed, and the restarted process must finish it.
    await wechat_faults(crash_mesh, {"operation": "trade_bill", "mode": "timeout", "count": 1, "delay_s": 30})
    yesterday = (business_date_of(utcnow()) - timedelta(days=1)).isoformat()
    request = reconciliation_pb2.RunReconciliationRequest(
        request_id=uuid.uuid4().hex, business_date=yesterday
    )
    started = (await stubs.reconciliation.RunReconciliation(request, timeout=10)).run
    for _ in range(100):  # until the run is inside the stalled download
        if not await wechat_faults(crash_mesh):
            break
        await asyncio.sleep(0.1)
    assert await wechat_faults(crash_mesh) == []
    crash_mesh.stop_process("reconciliation", signal.SIGKILL)
    crash_mesh.start_process("reconciliation")
    await crash_mesh.wait_ready(["reconciliation"])

    done = await until_reconciled(stubs, started.run_id, timeout_s=30)
    replayed = (await stubs.reconciliation.RunReconciliation(request, timeout=10)).run

    assert started.status == reconciliation_pb2.RUN_STATUS_RUNNING
    assert done.status == reconciliation_pb2.RUN_STATUS_COMPLETED, done.failure_reason
    assert (done.run_id, done.business_date, done.started_at) == (
        started.run_id,
        yesterday,
        started.started_at,
    )
    assert (replayed.run_id, replayed.status) == (started.run_id, reconciliation_pb2.RUN_STATUS_COMPLETED)
