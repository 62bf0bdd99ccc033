"""Checks over everything the other end-to-end tests did to the shared mesh (this module sorts
after them): no patient's ID number or name in clear in any log, span or event, and a ledger in
which every transaction, and the whole, balances. The module settles one insured bill of its own
first, so that it checks something when it runs alone too."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from medpay.events.v1 import events_pb2, events_pb2_grpc
from sqlalchemy import text

from infra.local.processes import MeshProcesses
from services.runtime.config import MeshSettings
from services.runtime.db import create_engine
from tests.e2e.flows import PEOPLE, Stubs, insured_order_request, pay_and_settle

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("a_day_of_its_own")]


@pytest.fixture(scope="module")
async def a_day_of_its_own(mesh: MeshProcesses, stubs: Stubs) -> AsyncIterator[None]:
    """An insured settlement whose patient's name and ID number must then appear nowhere."""
    request = insured_order_request(PEOPLE[0], f"MZ{uuid.uuid4().hex[:12].upper()}")
    created = await stubs.payment.CreatePaymentOrder(request, timeout=30)
    await pay_and_settle(mesh, stubs, created.order)
    yield


def _leaks(text: str) -> list[str]:
    found = [person.certno for person in PEOPLE if person.certno in text]
    return found + [
        person.psn_name for person in PEOPLE if len(person.psn_name) > 1 and person.psn_name in text
    ]


def test_logs_and_spans_hold_no_patient_identifier(mesh: MeshProcesses) -> None:
    files = [*(mesh.layout.workdir / "logs").glob("*.log"), *(mesh.layout.workdir / "traces").glob("*.jsonl")]
    assert files
    for path in files:
        assert _leaks(path.read_text(encoding="utf-8", errors="replace")) == [], path.name


@pytest.mark.parametrize("service", ["payment-core", "insurance-adapter"])
async def test_events_hold_no_patient_identifier(mesh: MeshProcesses, service: str) -> None:
    async with grpc.aio.insecure_channel(mesh.layout.grpc_address(service)) as channel:
        feed = events_pb2_grpc.EventFeedServiceStub(channel)
        reply = await feed.ListEvents(
            events_pb2.ListEventsRequest(after_sequence=0, page_size=1000), timeout=10
        )
    assert reply.events
    assert _leaks(str(list(reply.events))) == []


async def test_the_ledger_balances_per_transaction_and_in_total(mesh: MeshProcesses) -> None:
    settings = MeshSettings(database_url=mesh.layout.database_url, data_dir=mesh.layout.workdir / "data")
    engine = create_engine(*settings.database_for("payment-core"))
    try:
        async with engine.connect() as connection:
            unbalanced = (
                await connection.execute(
                    text(
                        "SELECT transaction_id FROM ledger_postings"
                        " GROUP BY transaction_id HAVING SUM(amount_fen) <> 0"
                    )
                )
            ).all()
            postings, total = (
                await connection.execute(
                    text("SELECT COUNT(*), COALESCE(SUM(amount_fen), 0) FROM ledger_postings")
                )
            ).one()
            settled_orders = (
                await connection.execute(
                    text("SELECT COUNT(*) FROM payment_orders WHERE status IN ('SETTLED', 'REFUNDED')")
                )
            ).scalar_one()
    finally:
        await engine.dispose()
    assert unbalanced == []
    assert total == 0
    assert postings >= 2 * settled_orders > 0
