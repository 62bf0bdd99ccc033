"""Reconciliation runs as jobs: stored RUNNING under a lease, executed in the background, answered
RUNNING when slow, taken over when their process dies, FAILED (with the reason) when they keep
failing, and one run per day however many requests come, from however many processes. Each
"process" is a ReconciliationApp with its own server and lease holder, on one shared database."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import TypeVar

import grpc
import pytest
from medpay.events.v1 import events_pb2, events_pb2_grpc
from medpay.reconciliation.v1 import reconciliation_pb2 as pb
from medpay.reconciliation.v1 import reconciliation_pb2_grpc

from services.reconciliation.adapters.in_memory import (
    InMemoryChannelBills,
    InMemoryInsurerTotals,
    InMemoryPlatformLedger,
)
from services.reconciliation.adapters.unit_of_work import UnitOfWork
from services.reconciliation.bootstrap import ReconciliationApp, build
from services.reconciliation.config import ReconciliationSettings
from services.reconciliation.domain.model import (
    ChannelBill,
    Discrepancy,
    DiscrepancyClass,
    PlatformTransaction,
    ReconciliationRun,
    RunStatus,
)
from services.runtime.clock import utcnow
from services.runtime.server import build_server
from tests.service.test_reconciliation import CLEAN_DAY, MESSY_DAY, prepare_clean_day, prepare_messy_day

QUICK_JOBS = {
    "reconciliation_lease_s": 1.0,
    "reconciliation_lease_renew_s": 0.1,
    "reconciliation_takeover_interval_s": 0.1,
    "reconciliation_retry_after_s": 0.01,
    "reconciliation_max_attempts": 3,
}
DEAD_HOLDER = "ward-3-server:4242:deadbeef"
T = TypeVar("T")


@dataclass
class SlowBills(InMemoryChannelBills):
    """payment-core's bill export, taking until `released` is set."""

    released: asyncio.Event = field(default_factory=asyncio.Event)
    asked: int = 0

    async def trade_bills(self, business_date: date) -> list[ChannelBill]:
        self.asked += 1
        await self.released.wait()
        return await super().trade_bills(business_date)


@dataclass
class CrashingLedger(InMemoryPlatformLedger):
    """payment-core's export client with a bug: it raises (not SourceUnavailable) every time."""

    asked: int = 0

    async def transactions(self, business_date: date) -> list[PlatformTransaction]:
        self.asked += 1
        raise RuntimeError("export page could not be decoded; caller 13800138000")


@dataclass
class Sources:
    platform: InMemoryPlatformLedger = field(default_factory=InMemoryPlatformLedger)
    bills: InMemoryChannelBills = field(default_factory=SlowBills)
    insurer: InMemoryInsurerTotals = field(default_factory=InMemoryInsurerTotals)


@dataclass
class Process:
    """One reconciliation process as finance staff reach it."""

    app: ReconciliationApp
    server: grpc.aio.Server
    channel: grpc.aio.Channel
    stub: reconciliation_pb2_grpc.ReconciliationServiceAsyncStub

    async def run(self, day: date, request_id: str, deadline_s: float = 10) -> pb.ReconciliationRun:
        request = pb.RunReconciliationRequest(request_id=request_id, business_date=day.isoformat())
        return (await self.stub.RunReconciliation(request, timeout=deadline_s)).run

    async def get(self, run_id: str) -> pb.ReconciliationRun:
        request = pb.GetReconciliationRunRequest(run_id=run_id)
        return (await self.stub.GetReconciliationRun(request, timeout=5)).run

    async def ended(self, run_id: str, timeout_s: float = 10) -> pb.ReconciliationRun:
        """Poll the run as a caller does, until it is no longer RUNNING."""
        run = await until(
            lambda: self.get(run_id), lambda run: run.status != pb.RUN_STATUS_RUNNING, timeout_s
        )
        return run

    def unit_of_work(self) -> UnitOfWork:
        return UnitOfWork(self.app.db.sessions, self.app.db.outbox)


async def until(read: Callable[[], Awaitable[T]], done: Callable[[T], bool], timeout_s: float) -> T:
    """Read until `done` holds; the last value read if `timeout_s` pass first."""
    loop = asyncio.get_running_loop()
    give_up_at = loop.time() + timeout_s
    value = await read()
    while not done(value) and loop.time() < give_up_at:
        await asyncio.sleep(0.05)
        value = await read()
    return value


@pytest.fixture(params=["sqlite-file", "test-database"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> ReconciliationSettings:
    url = None if request.param == "sqlite-file" else request.getfixturevalue("database_url")
    return ReconciliationSettings(
        database_url=url, data_dir=tmp_path / "data", trace_dir=tmp_path / "traces", **QUICK_JOBS
    )  # type: ignore[arg-type]


@pytest.fixture
def sources() -> Sources:
    return Sources()


@pytest.fixture
async def processes(
    settings: ReconciliationSettings, sources: Sources
) -> AsyncIterator[Callable[..., Awaitable[Process]]]:
    """Start reconciliation processes on one database (the first one migrates it); keyword
    arguments override settings of that process."""
    started: list[Process] = []

    async def start(**overrides: object) -> Process:
        app = build(settings.model_copy(update=overrides), platform_ledger=sources.platform,
                    channel_bills=sources.bills, insurer_totals=sources.insurer)  # fmt: skip
        if not started:
            await app.db.migrate()
        server = build_server()
        app.register(server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        stub = reconciliation_pb2_grpc.ReconciliationServiceStub(channel)
        started.append(Process(app, server, channel, stub))  # type: ignore[arg-type]
        return started[-1]

    yield start
    for process in started:
        await process.channel.close()
        await process.server.stop(None)
        await process.app.close()


async def test_a_slow_run_is_answered_running_within_the_deadline_then_polled_to_completed(
    processes: Callable[..., Awaitable[Process]], sources: Sources
) -> None:
    desk = await processes()
    prepare_clean_day(sources)  # type: ignore[arg-type]

    answered = await desk.run(CLEAN_DAY, "rcn-slow-1", deadline_s=1.0)  # no DEADLINE_EXCEEDED: RUNNING
    stored = await desk.app.jobs.run_of(answered.run_id)
    renewed = await until(
        lambda: desk.app.jobs.run_of(answered.run_id),
        lambda run: (run.lease_expires_at or utcnow()) > (stored.lease_expires_at or utcnow()),
        timeout_s=5,
    )
    replayed = await desk.run(CLEAN_DAY, "rcn-slow-1", deadline_s=0.5)
    sources.bills.released.set()  # type: ignore[attr-defined]
    done = await desk.ended(answered.run_id)

    assert answered.status == pb.RUN_STATUS_RUNNING
    assert not answered.HasField("finished_at")
    assert (stored.status, stored.attempts, stored.holder) == (RunStatus.RUNNING, 1, desk.app.jobs.holder)
    assert renewed.lease_expires_at is not None and stored.lease_expires_at is not None
    assert renewed.lease_expires_at > stored.lease_expires_at
    assert (replayed.run_id, replayed.status) == (answered.run_id, pb.RUN_STATUS_RUNNING)
    assert (done.status, done.matched_count, done.discrepancy_count) == (pb.RUN_STATUS_COMPLETED, 3, 0)
    assert done.started_at == answered.started_at
    assert (await desk.run(CLEAN_DAY, "rcn-slow-1")).status == pb.RUN_STATUS_COMPLETED  # replay: as it is now


async def test_concurrent_requests_for_a_day_from_two_processes_share_one_run(
    processes: Callable[..., Awaitable[Process]], sources: Sources
) -> None:
    first, second = await processes(), await processes()
    prepare_clean_day(sources)  # type: ignore[arg-type]

    answers = await asyncio.gather(
        *(desk.run(CLEAN_DAY, f"rcn-race-{n}", deadline_s=2) for n, desk in enumerate([first, second] * 4))
    )
    nobody_abandoned = await second.app.jobs.sweep() + await first.app.jobs.sweep()
    sources.bills.released.set()  # type: ignore[attr-defined]
    done = await second.ended(answers[0].run_id)
    executions = sources.bills.asked  # type: ignore[attr-defined]
    superseding = await first.run(CLEAN_DAY, "rcn-race-after")

    assert {answer.run_id for answer in answers} == {answers[0].run_id}
    assert {answer.status for answer in answers} == {pb.RUN_STATUS_RUNNING}
    assert nobody_abandoned == []
    assert executions == 1
    assert done.status == pb.RUN_STATUS_COMPLETED
    assert superseding.run_id != done.run_id and superseding.status == pb.RUN_STATUS_COMPLETED
    listed = await first.stub.ListReconciliationRuns(pb.ListReconciliationRunsRequest(page_size=10))
    assert [run.run_id for run in listed.runs] == [superseding.run_id, done.run_id]


async def abandon_a_run(desk: Process, day: date, attempts: int = 1) -> ReconciliationRun:
    """A run its process left RUNNING when it died: lease expired, with partial findings stored."""
    long_ago = utcnow() - timedelta(minutes=10)
    dead = dataclasses.replace(
        ReconciliationRun.start(
            "rcn_died_mid_run", day, long_ago, DEAD_HOLDER, long_ago + timedelta(seconds=20)
        ),
        attempts=attempts,
    )
    partial = Discrepancy(DiscrepancyClass.CHANNEL_ONLY, "wechat_pay", "half-written by the dead process")
    async with desk.unit_of_work() as uow:
        assert await uow.runs.add_unless_running(dead) is dead
        await uow.discrepancies.replace_all(dead.run_id, (partial, partial), long_ago)
    return dead


async def test_a_run_whose_process_died_is_taken_over_and_completed_from_a_clean_slate(
    processes: Callable[..., Awaitable[Process]], sources: Sources
) -> None:
    desk = await processes()
    prepare_messy_day(sources)  # type: ignore[arg-type]
    sources.bills.released.set()  # type: ignore[attr-defined]
    dead = await abandon_a_run(desk, MESSY_DAY)

    [taken] = await desk.app.jobs.sweep()
    done = await desk.app.jobs.wait(dead.run_id, within_s=10)
    async with desk.unit_of_work() as uow:
        late_write_landed = await uow.runs.save_over(dead, dead.completed(0, 0, (), utcnow()))
    found = await desk.stub.ListDiscrepancies(pb.ListDiscrepanciesRequest(run_id=dead.run_id, page_size=50))

    assert (taken.status, taken.attempts, taken.holder) == (RunStatus.RUNNING, 2, desk.app.jobs.holder)
    assert (done.status, done.discrepancy_count, done.started_at) == (RunStatus.COMPLETED, 6, dead.started_at)
    assert len(found.discrepancies) == 6
    assert "half-written by the dead process" not in str(list(found.discrepancies))
    assert not late_write_landed  # the dead holder, were it only slow, can no longer write
    assert await completed_run_ids(desk) == [dead.run_id]


async def completed_run_ids(desk: Process) -> list[str]:
    await desk.app.db.outbox.assign_sequences()  # what the relay does after commit
    feed = events_pb2_grpc.EventFeedServiceStub(desk.channel)
    page = await feed.ListEvents(events_pb2.ListEventsRequest(after_sequence=0), timeout=5)
    return [event.reconciliation_completed.run_id for event in page.events]


async def test_a_run_that_keeps_failing_ends_failed_with_the_reason(
    processes: Callable[..., Awaitable[Process]], sources: Sources
) -> None:
    sources.platform = CrashingLedger()
    desk = await processes()

    run = await desk.run(CLEAN_DAY, "rcn-crashing-1")
    stored = await desk.app.jobs.run_of(run.run_id)

    assert run.status == pb.RUN_STATUS_FAILED
    assert run.failure_reason.startswith(
        "gave up after 3 attempts; the last one ended: RuntimeError: export page could not be decoded"
    )
    assert "13800138000" not in run.failure_reason  # free text is scrubbed before it is stored
    assert sources.platform.asked == 3
    assert run.HasField("finished_at") and stored.attempts == 3


async def test_a_run_abandoned_on_its_last_attempt_ends_failed_not_running_forever(
    processes: Callable[..., Awaitable[Process]], sources: Sources
) -> None:
    desk = await processes()
    dead = await abandon_a_run(desk, CLEAN_DAY, attempts=3)

    [given_up] = await desk.app.jobs.sweep()
    shown = await desk.get(dead.run_id)

    assert given_up.status is RunStatus.FAILED
    assert shown.status == pb.RUN_STATUS_FAILED and shown.HasField("finished_at")
    assert shown.failure_reason == (
        "gave up after 3 attempts; the last one ended: "
        "the process executing it stopped before it finished (its lease expired)"
    )
    assert sources.bills.asked == 0  # type: ignore[attr-defined]


async def test_a_stopping_process_hands_its_run_to_the_next_without_using_an_attempt(
    processes: Callable[..., Awaitable[Process]], sources: Sources
) -> None:
    stopping, next_one = await processes(), await processes()
    prepare_clean_day(sources)  # type: ignore[arg-type]
    run = await stopping.run(CLEAN_DAY, "rcn-handover-1", deadline_s=0.5)

    await stopping.app.jobs.stop()  # what SIGTERM does, after the server drained
    [taken] = await next_one.app.jobs.sweep()
    sources.bills.released.set()  # type: ignore[attr-defined]
    done = await next_one.app.jobs.wait(run.run_id, within_s=10)

    assert run.status == pb.RUN_STATUS_RUNNING
    assert (taken.run_id, taken.holder, taken.attempts) == (run.run_id, next_one.app.jobs.holder, 1)
    assert (done.status, done.attempts) == (RunStatus.COMPLETED, 1)


async def test_an_execution_that_hangs_is_stopped_and_counted_until_the_run_fails(
    processes: Callable[..., Awaitable[Process]], sources: Sources
) -> None:
    desk = await processes(reconciliation_attempt_limit_s=0.2)
    prepare_clean_day(sources)  # type: ignore[arg-type]  # the bill download never ends

    run = await desk.run(CLEAN_DAY, "rcn-hanging-1")

    assert run.status == pb.RUN_STATUS_FAILED
    assert run.failure_reason == (
        "gave up after 3 attempts; the last one ended: AttemptTooLong: it took longer than 0.2s"
    )
    assert sources.bills.asked == 3  # type: ignore[attr-defined]
