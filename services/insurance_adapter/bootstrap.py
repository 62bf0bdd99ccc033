"""The composition root of insurance-adapter: settings → database → NHSA client → handlers →
servicers → ServiceHost. `build()` returns the wired graph, so a test can serve it itself or pass
an `insurer` or a `clock` (what the settlement steps are paced by) of its own."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import grpc
from medpay.events.v1 import events_pb2, events_pb2_grpc
from medpay.insurance.v1 import insurance_pb2, insurance_pb2_grpc

from services.insurance_adapter.adapters import nhsa
from services.insurance_adapter.adapters.insurer import NhsaInsurer, exchange_recorder
from services.insurance_adapter.adapters.message_log import MessageLog
from services.insurance_adapter.adapters.orm import metadata
from services.insurance_adapter.adapters.unit_of_work import UnitOfWork
from services.insurance_adapter.config import SERVICE_NAME, InsuranceAdapterSettings
from services.insurance_adapter.entrypoints.grpc_servicer import InsuranceHandlers, InsuranceServicer
from services.insurance_adapter.service_layer.handlers import Dependencies
from services.insurance_adapter.service_layer.ports import Insurer
from services.insurance_adapter.service_layer.presettlement import PresettlementHandlers
from services.insurance_adapter.service_layer.reports import ReportHandlers
from services.insurance_adapter.service_layer.settlement import SettlementHandlers
from services.runtime.bootstrap import ServiceDatabase, command_line, run, serve_or_migrate, start_process
from services.runtime.clock import utcnow
from services.runtime.outbox import EventFeedServicer
from services.runtime.server import ServiceHost

MIGRATIONS = Path(__file__).parent / "adapters" / "migrations"
_SERVICE_NAMES = (
    insurance_pb2.DESCRIPTOR.services_by_name["InsuranceService"].full_name,
    events_pb2.DESCRIPTOR.services_by_name["EventFeedService"].full_name,
)


@dataclass
class InsuranceAdapter:
    """The wired service: what `serve()` runs and what tests drive."""

    settings: InsuranceAdapterSettings
    database: ServiceDatabase
    servicer: InsuranceServicer
    event_feed: EventFeedServicer
    client: nhsa.NhsaClient | None = None
    message_log: MessageLog | None = None

    def register(self, server: grpc.aio.Server) -> Sequence[str]:
        insurance_pb2_grpc.add_InsuranceServiceServicer_to_server(self.servicer, server)
        events_pb2_grpc.add_EventFeedServiceServicer_to_server(self.event_feed, server)
        return _SERVICE_NAMES

    def host(self) -> ServiceHost:
        return ServiceHost(
            name=SERVICE_NAME,
            address=self.settings.grpc_address,
            register=self.register,
            background=[
                self.database.outbox.run_relay,
                self.database.instance.run,
                *([self.message_log.run] if self.message_log else []),
            ],
            on_shutdown=[self.close],
            grace_s=self.settings.shutdown_grace_s,
            max_deadline_s=self.settings.max_deadline_s,
            metrics_address=self.settings.metrics_address(SERVICE_NAME),
        )

    async def close(self) -> None:
        if self.message_log is not None:
            await self.message_log.close()
        if self.client is not None:
            await self.client.aclose()
        await self.database.close()


def build(
    settings: InsuranceAdapterSettings,
    *,
    insurer: Insurer | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> InsuranceAdapter:
    database = ServiceDatabase.open(settings, SERVICE_NAME, metadata, MIGRATIONS)
    message_log = MessageLog(database.sessions)
    client = None
    if insurer is None:
        client = nhsa.NhsaClient(nhsa_client_config(settings), on_exchange=exchange_recorder(message_log))
        insurer = NhsaInsurer(client, settings.nhsa_timeout_s)
    deps = Dependencies(
        unit_of_work=lambda read_only=False: UnitOfWork(database, message_log, read_only),
        insurer=insurer,
        setl_optins=settings.nhsa_mdtrtarea_admvs,
        clock=clock,
    )
    handlers = InsuranceHandlers(
        PresettlementHandlers(deps), SettlementHandlers(deps), ReportHandlers(deps, message_log)
    )
    servicer = InsuranceServicer(handlers, database.idempotency)
    return InsuranceAdapter(
        settings, database, servicer, EventFeedServicer(database.outbox), client, message_log
    )


def nhsa_client_config(settings: InsuranceAdapterSettings) -> nhsa.NhsaClientConfig:
    return nhsa.NhsaClientConfig(
        base_url=settings.nhsa_url,
        fixmedins_code=settings.nhsa_fixmedins_code,
        fixmedins_name=settings.nhsa_fixmedins_name,
        mdtrtarea_admvs=settings.nhsa_mdtrtarea_admvs,
        paas_id=settings.nhsa_paas_id,
        paas_token=settings.nhsa_paas_token,
        opter=settings.nhsa_opter,
        opter_name=settings.nhsa_opter_name,
        timeout_s=settings.nhsa_timeout_s,
        msgid_node=settings.nhsa_msgid_node,
    )


async def main_async(command: str) -> None:
    settings = InsuranceAdapterSettings()
    start_process(SERVICE_NAME, settings)
    adapter = build(settings)
    await serve_or_migrate(command, adapter.database, adapter.host, adapter.close, settings.migrate_on_start)


def main() -> None:
    run(main_async(command_line(SERVICE_NAME)))
