"""The round trips of an insured settlement stay within the budget the bench last measured.

One insured outpatient settlement, cash share paid by WeChat, goes through the real services (the
HIS driver: create → pay → the patient scans → SETTLED); the services' own counts (their /metrics)
give the SQL statements and transactions per call of each step it took (bench/budget.py), and no
step may need more than bench/budget.json allows. Counts, not times: exact on a noisy machine.

When a change makes a step cheaper, refresh the budget with `make budget`; when one makes it
dearer on purpose, refresh it and say why in the commit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from medpay.client import MedPayClient

from bench.budget import BUDGET_PATH, load_budget, overruns, per_call, steps_of
from infra.local.processes import MeshLayout, MeshProcesses
from infra.local.scrape import Reading, scrape
from infra.simulators.his_driver.morning import DriverOptions, play_morning
from tests.conftest import TEST_DATABASE, running_mesh

pytestmark = pytest.mark.integration

BACKENDS = {"postgresql": "PostgreSQL", "sqlite": "SQLite"}


@pytest.fixture(scope="module")
async def own_mesh(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[MeshProcesses]:
    """A mesh of its own: no other test's orders may add steps to the one counted here."""
    async with running_mesh(Path(tmp_path_factory.mktemp("budget-mesh"))) as processes:
        assert isinstance(processes, MeshProcesses)
        yield processes


async def quiet_reading(layout: MeshLayout, timeout_s: float = 10.0) -> Reading:
    """A reading once the steps' counts have stopped moving (work a step spawned is done)."""
    deadline = time.monotonic() + timeout_s
    previous = await scrape(layout)
    while True:
        await asyncio.sleep(0.3)
        current = await scrape(layout)
        if not steps_of(current - previous) or time.monotonic() > deadline:
            return current
        previous = current


async def settle_one(client: MedPayClient, layout: MeshLayout) -> None:
    options = DriverOptions(
        insured_share=1.0,
        use_personal_account=False,
        concurrency=1,
        wechat_sim_url=layout.http_base("wechatpay-sim"),
    )
    report = await play_morning(client, 1, 0, seed=11, options=options)
    assert report.ok, report.failures


async def test_an_insured_settlement_needs_no_more_round_trips_than_the_budget(
    own_mesh: MeshProcesses,
) -> None:
    database, budget = load_budget()
    if BACKENDS[TEST_DATABASE.backend] != database:
        pytest.skip(f"{BUDGET_PATH.name} was measured on {database}; this run is on {TEST_DATABASE.backend}")
    layout = own_mesh.layout
    async with MedPayClient.connect(
        layout.grpc_address("payment-core"),
        layout.grpc_address("insurance-adapter"),
        layout.grpc_address("reconciliation"),
        layout.grpc_address("data-aggregation"),
    ) as client:
        await settle_one(client, layout)  # first-call costs (connections, the insurer sign-in)
        before = await quiet_reading(layout)
        await settle_one(client, layout)
        steps = steps_of(await quiet_reading(layout) - before)

    measured = per_call(steps)
    # The counts are there at all: the settlement's steps in both services that keep its state.
    assert "/medpay.payment.v1.PaymentService/PayPaymentOrder" in measured.get("payment-core", {})
    assert "/medpay.insurance.v1.InsuranceService/Presettle" in measured.get("insurance-adapter", {})
    found = overruns(steps, budget)
    assert not found, (
        "a step of an insured settlement needs more round trips than bench/budget.json allows:\n  "
        + "\n  ".join(str(overrun) for overrun in found)
        + "\n(if on purpose: `make budget`, and say why in the commit)"
    )
