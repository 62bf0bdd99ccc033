"""The composition root of reconciliation: settings -> database -> sources -> handlers -> servicers
-> host. `build()` takes fakes for the three sources, so tests wire the same graph without a network."""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import grpc
from medpay.events.v1 import events_pb2, events_pb2_grpc
from medpay.reconciliation.v1 import reconciliation_pb2, reconciliation_pb2_grpc

from services.reconciliation.adapters.insurance_adapter import InsuranceAdapterTotals
from services.reconciliation.adapters.orm import metadata
from services.reconciliation.adapters.payment_core import PaymentCoreChannelBills, PaymentCoreLedger
from services.reconciliation.adapters.unit_of_work import UnitOfWork
from services.reconciliation.config import SERVICE_NAME, ReconciliationSettings
from services.reconciliation.entrypoints.grpc_servicer import ReconciliationServicer
from services.reconciliation.service_layer.handlers import ReconciliationHandlers
from services.reconciliation.service_layer.jobs import JobPolicy, ReconciliationJobs
from services.reconciliation.service_layer.ports import (
    ChannelBillSource,
    InsurerTotalsSource,
    PlatformLedgerSource,
)
from services.reconciliation.service_layer.reconcile_day import DayReconciler
from services.runtime.bootstrap import ServiceDatabase, command_line, run, serve_or_migrate, start_process
from services.runtime.clock import utcnow
from services.runtime.grpc_client import open_channel
from services.runtime.outbox import EventFeedServicer
from services.runtime.server import ServiceHost

MIGRATIONS = Path(__file__).resolve().parent / "adapters" / "migrations"


@dataclass
class ReconciliationApp:
    """The wired service: what `serve()` runs and what tests drive."""

    settings: ReconciliationSettings
    db: ServiceDatabase
    jobs: ReconciliationJobs
    handlers: ReconciliationHandlers
    servicer: ReconciliationServicer
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    def register(self, server: grpc.aio.Server) -> Sequence[str]:
        reconciliation_pb2_grpc.add_ReconciliationServiceServicer_to_server(self.servicer, server)
        events_pb2_grpc.add_EventFeedServiceServicer_to_server(EventFeedServicer(self.db.outbox), server)
        return [
            reconciliation_pb2.DESCRIPTOR.services_by_name["ReconciliationService"].full_name,
            events_pb2.DESCRIPTOR.services_by_name["EventFeedService"].full_name,
        ]

    def host(self) -> ServiceHost:
        return ServiceHost(
            name=SERVICE_NAME,
            address=self.settings.grpc_address,
            register=self.register,
            background=[self.db.outbox.run_relay, self.db.instance.run, self.jobs.run],
            on_shutdown=[self.close],
            grace_s=self.settings.shutdown_grace_s,
            max_deadline_s=self.settings.max_deadline_s,
            metrics_address=self.settings.metrics_address(SERVICE_NAME),
        )

    async def close(self) -> None:
        await self.jobs.stop()
        for channel in self.channels:
            await channel.close()
        await self.db.close()


def build(
    settings: ReconciliationSettings,
    *,
    platform_ledger: PlatformLedgerSource | None = None,
    channel_bills: ChannelBillSource | None = None,
    insurer_totals: InsurerTotalsSource | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> ReconciliationApp:
    """Wire the service; every source left out is the real one: payment-core (its ledger, and the
    channel bills it reads with its own channel adapters) and insurance-adapter."""
    db = ServiceDatabase.open(settings, SERVICE_NAME, metadata, MIGRATIONS)
    channels: list[grpc.aio.Channel] = []
    page_size, deadline_s = settings.reconciliation_export_page_size, settings.default_deadline_s
    if platform_ledger is None or channel_bills is None:
        channels.append(open_channel(settings.address(settings.payment_core_port)))
        payment_core = channels[-1]
        if platform_ledger is None:
            platform_ledger = PaymentCoreLedger(payment_core, page_size, deadline_s)
        if channel_bills is None:
            bill_channels = settings.reconciliation_bill_channels
            channel_bills = PaymentCoreChannelBills(payment_core, page_size, deadline_s, bill_channels)
    if insurer_totals is None:
        channels.append(open_channel(settings.address(settings.insurance_adapter_port)))
        clr_type = settings.reconciliation_clr_type
        insurer_totals = InsuranceAdapterTotals(channels[-1], clr_type, settings.default_deadline_s)

    def unit_of_work() -> UnitOfWork:
        return UnitOfWork(db.sessions, db.outbox)

    reconcile = DayReconciler(platform_ledger, channel_bills, insurer_totals, clock)
    jobs = ReconciliationJobs(unit_of_work, reconcile, job_policy(settings), clock)
    handlers = ReconciliationHandlers(unit_of_work, jobs)
    servicer = ReconciliationServicer(handlers, db.idempotency, settings.reconciliation_answer_within_s)
    return ReconciliationApp(settings, db, jobs, handlers, servicer, channels)


def job_policy(settings: ReconciliationSettings) -> JobPolicy:
    return JobPolicy(
        holder=process_holder(),
        lease=timedelta(seconds=settings.reconciliation_lease_s),
        renew_every=timedelta(seconds=settings.reconciliation_lease_renew_s),
        sweep_every=timedelta(seconds=settings.reconciliation_takeover_interval_s),
        max_attempts=settings.reconciliation_max_attempts,
        max_concurrent=settings.reconciliation_max_concurrent_runs,
        retry_after=timedelta(seconds=settings.reconciliation_retry_after_s),
        attempt_limit=timedelta(seconds=settings.reconciliation_attempt_limit_s),
    )


def process_holder() -> str:
    """This process as the holder of run leases: host and pid, plus a random part, because a pid is
    reused by a later process (which must not mistake a dead one's runs for its own)."""
    return f"{socket.gethostname()[:50]}:{os.getpid()}:{secrets.token_hex(4)}"


async def run_service(command: str, settings: ReconciliationSettings) -> None:
    start_process(SERVICE_NAME, settings)
    app = build(settings)
    await serve_or_migrate(command, app.db, app.host, app.close, settings.migrate_on_start)


def main() -> None:
    command = command_line(SERVICE_NAME)
    run(run_service(command, ReconciliationSettings()))
