"""The composition root of data-aggregation: settings -> database -> feeds -> ingestor + queries ->
servicer -> host. `build()` takes fake feeds, so tests wire the same graph without a network."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from medpay.data.v1 import data_pb2, data_pb2_grpc

from services.data_aggregation.adapters.event_feed import GrpcEventFeed
from services.data_aggregation.adapters.orm import metadata
from services.data_aggregation.adapters.unit_of_work import UnitOfWork
from services.data_aggregation.config import SERVICE_NAME, DataAggregationSettings
from services.data_aggregation.entrypoints.grpc_servicer import DataAggregationServicer
from services.data_aggregation.service_layer.handlers import AggregationQueries
from services.data_aggregation.service_layer.ingest import FeedIngestor
from services.data_aggregation.service_layer.ports import EventFeedSource
from services.runtime.bootstrap import ServiceDatabase, command_line, run, serve_or_migrate, start_process
from services.runtime.grpc_client import open_channel
from services.runtime.server import ServiceHost

MIGRATIONS = Path(__file__).resolve().parent / "adapters" / "migrations"


@dataclass
class DataAggregationApp:
    """The wired service: what `serve()` runs and what tests drive."""

    settings: DataAggregationSettings
    db: ServiceDatabase
    ingestor: FeedIngestor
    queries: AggregationQueries
    servicer: DataAggregationServicer
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    def register(self, server: grpc.aio.Server) -> Sequence[str]:
        data_pb2_grpc.add_DataAggregationServiceServicer_to_server(self.servicer, server)
        return [data_pb2.DESCRIPTOR.services_by_name["DataAggregationService"].full_name]

    def host(self) -> ServiceHost:
        return ServiceHost(
            name=SERVICE_NAME,
            address=self.settings.grpc_address,
            register=self.register,
            background=[self.ingestor.follow_feeds, self.db.instance.run],
            on_shutdown=[self.close],
            grace_s=self.settings.shutdown_grace_s,
            max_deadline_s=self.settings.max_deadline_s,
            metrics_address=self.settings.metrics_address(SERVICE_NAME),
        )

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()
        await self.db.close()


def build(
    settings: DataAggregationSettings, *, feeds: Sequence[EventFeedSource] | None = None
) -> DataAggregationApp:
    """Wire the service; without `feeds`, it follows payment-core, insurance-adapter and
    reconciliation over gRPC."""
    db = ServiceDatabase.open(settings, SERVICE_NAME, metadata, MIGRATIONS)
    channels: list[grpc.aio.Channel] = []
    if feeds is None:
        feeds = []
        for source_service, address in settings.feed_addresses().items():
            channels.append(open_channel(address))
            feeds.append(GrpcEventFeed(source_service, channels[-1], settings.default_deadline_s))

    def unit_of_work() -> UnitOfWork:
        return UnitOfWork(db.sessions)

    ingestor = FeedIngestor(
        unit_of_work,
        feeds,
        page_size=settings.data_aggregation_page_size,
        poll_interval_s=settings.data_aggregation_poll_interval_s,
        max_backoff_s=settings.data_aggregation_max_backoff_s,
        feed_wait_s=settings.data_aggregation_feed_wait_s,
        linger_s=settings.data_aggregation_feed_linger_s,
    )
    queries = AggregationQueries(unit_of_work, [feed.source_service for feed in feeds])
    return DataAggregationApp(settings, db, ingestor, queries, DataAggregationServicer(queries), channels)


async def run_service(command: str, settings: DataAggregationSettings) -> None:
    start_process(SERVICE_NAME, settings)
    app = build(settings)
    await serve_or_migrate(command, app.db, app.host, app.close, settings.migrate_on_start)


def main() -> None:
    command = command_line(SERVICE_NAME)
    run(run_service(command, DataAggregationSettings()))
