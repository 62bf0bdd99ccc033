"""The facade and `medpay recon run` wait for a reconciliation run that the service answers while it is
still RUNNING: they poll GetReconciliationRun until it ends, within a bounded time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from concurrent import futures

import grpc
import pytest
from medpay.cli import app
from medpay.client import MedPayClient
from medpay.reconciliation.v1 import reconciliation_pb2 as pb
from medpay.reconciliation.v1 import reconciliation_pb2_grpc
from typer.testing import CliRunner


class ScriptedReconciliation(reconciliation_pb2_grpc.ReconciliationServiceServicer):
    """RunReconciliation answers RUNNING; GetReconciliationRun walks through `statuses`."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.requests: list[pb.RunReconciliationRequest] = []
        self.gets = 0

    def _run(self, status: int) -> pb.ReconciliationRun:
        ended = status != pb.RUN_STATUS_RUNNING
        return pb.ReconciliationRun(
            run_id="rcn_1", business_date="2025-03-14", status=status,  # type: ignore[arg-type]
            matched_count=3 if ended else 0, discrepancy_count=1 if ended else 0,
        )  # fmt: skip

    def RunReconciliation(self, request, context):  # type: ignore[no-untyped-def]
        self.requests.append(request)
        return pb.RunReconciliationResponse(run=self._run(pb.RUN_STATUS_RUNNING))

    def GetReconciliationRun(self, request, context):  # type: ignore[no-untyped-def]
        status = self.statuses[min(self.gets, len(self.statuses) - 1)]
        self.gets += 1
        return pb.GetReconciliationRunResponse(run=self._run(status))

    def ListDiscrepancies(self, request, context):  # type: ignore[no-untyped-def]
        found = pb.Discrepancy(discrepancy_id="dsc_1", run_id=request.run_id, out_trade_no="LONG1",
                               discrepancy_class=pb.DISCREPANCY_CLASS_CHANNEL_ONLY)  # fmt: skip
        return pb.ListDiscrepanciesResponse(discrepancies=[found])


def serve(servicer: ScriptedReconciliation) -> tuple[grpc.Server, int]:
    """A threaded server: the CLI runs its own event loop."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    reconciliation_pb2_grpc.add_ReconciliationServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


@pytest.fixture
def completing() -> Iterator[tuple[ScriptedReconciliation, int]]:
    servicer = ScriptedReconciliation([pb.RUN_STATUS_RUNNING, pb.RUN_STATUS_COMPLETED])
    server, port = serve(servicer)
    yield servicer, port
    server.stop(None)


@pytest.fixture
def never_ending() -> Iterator[tuple[ScriptedReconciliation, int]]:
    servicer = ScriptedReconciliation([pb.RUN_STATUS_RUNNING])
    server, port = serve(servicer)
    yield servicer, port
    server.stop(None)


@pytest.fixture
async def medpay(completing: tuple[ScriptedReconciliation, int]) -> AsyncIterator[MedPayClient]:
    async with MedPayClient.connect(reconciliation=f"127.0.0.1:{completing[1]}") as client:
        yield client


async def test_the_facade_polls_a_running_run_until_it_has_ended(
    medpay: MedPayClient, completing: tuple[ScriptedReconciliation, int]
) -> None:
    run = await medpay.run_reconciliation("2025-03-14")

    assert (run.run_id, run.status, run.matched_count) == ("rcn_1", pb.RUN_STATUS_COMPLETED, 3)
    assert completing[0].gets == 2
    assert completing[0].requests[0].business_date == "2025-03-14"


async def test_the_facade_answers_the_run_still_running_once_its_timeout_passed(
    never_ending: tuple[ScriptedReconciliation, int],
) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with MedPayClient.connect(reconciliation=f"127.0.0.1:{never_ending[1]}") as client:
        run = await client.run_reconciliation("2025-03-14", timeout_s=1.2)

    assert run.status == pb.RUN_STATUS_RUNNING
    assert 1.2 <= loop.time() - started < 5
    assert never_ending[0].gets >= 2


def _recon_run(monkeypatch: pytest.MonkeyPatch, port: int, *arguments: str) -> tuple[int, str]:
    monkeypatch.setenv("MEDPAY_RECONCILIATION_ADDR", f"127.0.0.1:{port}")
    monkeypatch.setenv("COLUMNS", "200")
    result = CliRunner().invoke(app, ["recon", "run", "2025-03-14", *arguments])
    return result.exit_code, result.output


def test_recon_run_waits_for_the_run_and_shows_what_it_found(
    monkeypatch: pytest.MonkeyPatch, completing: tuple[ScriptedReconciliation, int]
) -> None:
    code, output = _recon_run(monkeypatch, completing[1])

    assert code == 0, output
    assert "COMPLETED" in output and "3 matched" in output
    assert "CHANNEL_ONLY" in output


def test_recon_run_exits_1_when_the_run_is_still_running_after_its_wait(
    monkeypatch: pytest.MonkeyPatch, never_ending: tuple[ScriptedReconciliation, int]
) -> None:
    code, output = _recon_run(monkeypatch, never_ending[1], "--wait", "1")

    assert code == 1
    assert "RUNNING" in output
    assert "still running after 1s" in output and "medpay recon run 2025-03-14" in output
