"""The composition root of payment-core: settings → database → channel and insurer clients →
handlers → servicers and the notify endpoint → ServiceHost. `build()` returns the wired graph, so a
test can serve it itself and pass a fake channel and a fake insurer."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import grpc
from medpay.events.v1 import events_pb2, events_pb2_grpc
from medpay.payment.v1 import payment_pb2, payment_pb2_grpc

from services.payment_core.adapters.channels.alipay import build_alipay_channel
from services.payment_core.adapters.channels.fake import FakeChannel
from services.payment_core.adapters.channels.ports import PaymentChannel
from services.payment_core.adapters.channels.wechatpay import build_wechatpay_channel
from services.payment_core.adapters.insurance import InsurancePort
from services.payment_core.adapters.insurance_fake import FakeInsurance
from services.payment_core.adapters.insurance_grpc import GrpcInsurance
from services.payment_core.adapters.orm import metadata
from services.payment_core.adapters.unit_of_work import UnitOfWork, unit_of_work_factory
from services.payment_core.config import PaymentCoreSettings
from services.payment_core.domain.process import Schedule
from services.payment_core.entrypoints.grpc_servicer import PaymentServicer
from services.payment_core.entrypoints.notify_http import ChannelNotifications, NotifyServer, notify_app
from services.payment_core.service_layer.channel_bills import ChannelBills
from services.payment_core.service_layer.dependencies import DEFAULT_CHANNEL, Dependencies
from services.payment_core.service_layer.deposits import Deposits
from services.payment_core.service_layer.handlers import PaymentOrders
from services.payment_core.service_layer.janitor import Janitor, JanitorSettings
from services.payment_core.service_layer.notifications import ChannelNews
from services.payment_core.service_layer.process import Leases, OrderProcess
from services.payment_core.service_layer.shifts import CashierShifts
from services.payment_core.service_layer.watching import OrderWatch
from services.runtime.bootstrap import ServiceDatabase, command_line, serve_or_migrate, start_process
from services.runtime.clock import utcnow
from services.runtime.grpc_client import open_channel
from services.runtime.instances import ServiceInstance
from services.runtime.outbox import EventFeedServicer
from services.runtime.server import ServiceHost

SERVICE_NAME = "payment-core"
MIGRATIONS = Path(__file__).parent / "adapters" / "migrations"
_SERVICE_NAMES = (
    payment_pb2.DESCRIPTOR.services_by_name["PaymentService"].full_name,
    events_pb2.DESCRIPTOR.services_by_name["EventFeedService"].full_name,
)


@dataclass
class PaymentCore:
    """The wired service: what `serve()` runs and what tests drive."""

    settings: PaymentCoreSettings
    database: ServiceDatabase
    channel: PaymentChannel
    insurance: InsurancePort
    orders: PaymentOrders
    process: OrderProcess
    janitor: Janitor
    servicer: PaymentServicer
    event_feed: EventFeedServicer
    notifications: ChannelNotifications
    notify_server: NotifyServer
    # Clients this root opened (not the ones a caller passed in), closed at shutdown.
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def register(self, server: grpc.aio.Server) -> Sequence[str]:
        payment_pb2_grpc.add_PaymentServiceServicer_to_server(self.servicer, server)
        events_pb2_grpc.add_EventFeedServiceServicer_to_server(self.event_feed, server)
        return _SERVICE_NAMES

    def host(self) -> ServiceHost:
        return ServiceHost(
            name=SERVICE_NAME,
            address=self.settings.address(self.settings.payment_core_port),
            register=self.register,
            background=[
                self.database.outbox.run_relay,
                self.janitor.run,
                self.database.instance.run,
                self.database.listen_for_changes,
            ],
            side_servers=[(self.notify_server.start, self.notify_server.stop)],
            on_drain=[self.drain],
            on_shutdown=[self.close],
            grace_s=self.settings.shutdown_grace_s,
            max_deadline_s=self.settings.max_deadline_s,
            metrics_address=self.settings.metrics_address(SERVICE_NAME),
        )

    async def drain(self) -> None:
        """Let running steps finish under this instance's leases (the next janitor takes the rest)."""
        await self.process.drain(self.settings.shutdown_grace_s)

    async def close(self) -> None:
        await self.drain()
        for close in self.closers:
            await close()
        await self.database.close()


def build(
    settings: PaymentCoreSettings,
    *,
    channel: PaymentChannel | None = None,
    insurance: InsurancePort | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> PaymentCore:
    database = ServiceDatabase.open(settings, SERVICE_NAME, metadata, MIGRATIONS)
    closers: list[Callable[[], Awaitable[None]]] = []
    # A channel given by the caller (tests) serves WECHAT_PAY alone; else every configured channel.
    channels = {} if channel is not None else _channels(settings, closers)
    channel = channel or channels[DEFAULT_CHANNEL]
    insurance = insurance or _insurance(settings, closers)
    deps = Dependencies(
        uow=unit_of_work_factory(database.sessions, database.outbox, database.changes), channel=channel,
        insurance=insurance, notify_url=settings.notify_url(),
        qr_valid_for=_seconds(settings.payment_core_qr_valid_s), clock=clock, channels=channels,
        notify_urls={DEFAULT_CHANNEL: settings.notify_url(), "ALIPAY": settings.alipay_notify_url()},
    )  # fmt: skip
    process = OrderProcess(deps, _schedule(settings), _leases(settings, database.instance))
    orders = PaymentOrders(deps, process, _seconds(settings.payment_core_order_ttl_s))
    janitor = Janitor(deps, process, JanitorSettings(
        interval=_seconds(settings.payment_core_janitor_interval_s),
        concurrency=settings.payment_core_janitor_concurrency,
    ))  # fmt: skip
    notifications = ChannelNotifications(channel, ChannelNews(deps, process), alipay=channels.get("ALIPAY"))
    bind = settings.payment_core_notify_bind or settings.host
    return PaymentCore(
        settings=settings, database=database, channel=channel, insurance=insurance, orders=orders,
        process=process, janitor=janitor,
        servicer=PaymentServicer(
            orders, OrderWatch(orders, database.changes), database.idempotency,
            ChannelBills(deps, _seconds(settings.payment_core_bill_published_after_s)),
            CashierShifts(deps), Deposits(deps, orders),
        ),
        event_feed=EventFeedServicer(database.outbox), notifications=notifications,
        notify_server=NotifyServer(notify_app(notifications), bind, settings.payment_core_notify_port),
        closers=closers,
    )  # fmt: skip


def _seconds(value: float) -> timedelta:
    return timedelta(seconds=value)


def _schedule(settings: PaymentCoreSettings) -> Schedule:
    schedule = Schedule.escalating(
        first_payment_query=_seconds(settings.payment_core_first_query_s),
        base=_seconds(settings.payment_core_retry_base_s),
        max_attempts=settings.payment_core_max_attempts,
    )
    return dataclasses.replace(
        schedule,
        code_payment_query=_seconds(settings.payment_core_code_payment_query_s),
        code_payment_window=_seconds(settings.payment_core_code_payment_window_s),
    )


def _leases(settings: PaymentCoreSettings, instance: ServiceInstance) -> Leases:
    async def alive(uow: UnitOfWork, holder: str) -> bool:
        return await instance.is_alive(uow.session, holder)

    return Leases(
        instance_id=instance.instance_id,
        hold_for=_seconds(settings.payment_core_step_lease_s),
        holder_alive=alive,
    )


def _channels(
    settings: PaymentCoreSettings, closers: list[Callable[[], Awaitable[None]]]
) -> dict[str, PaymentChannel]:
    """The channel registry, keyed by the payment standard's channel name."""
    if settings.payment_core_channel == "fake":
        fakes: dict[str, PaymentChannel] = {DEFAULT_CHANNEL: FakeChannel()}
        if settings.payment_core_alipay:
            fakes["ALIPAY"] = FakeChannel()
        return fakes
    wechatpay = build_wechatpay_channel(settings, notify_url=settings.notify_url())
    closers.append(wechatpay.aclose)
    channels: dict[str, PaymentChannel] = {DEFAULT_CHANNEL: wechatpay}
    if settings.payment_core_alipay:
        alipay = build_alipay_channel(settings)
        closers.append(alipay.aclose)
        channels["ALIPAY"] = alipay
    return channels


def _insurance(settings: PaymentCoreSettings, closers: list[Callable[[], Awaitable[None]]]) -> InsurancePort:
    if settings.payment_core_insurance == "fake":
        return FakeInsurance()
    target = settings.address(settings.insurance_adapter_port)
    client = GrpcInsurance(open_channel(target), settings.payment_core_insurer_deadline_s)
    closers.append(client.close)
    return client


async def main() -> None:
    command = command_line(SERVICE_NAME)
    settings = PaymentCoreSettings()
    start_process(SERVICE_NAME, settings)
    service = build(settings)
    await serve_or_migrate(command, service.database, service.host, service.close, settings.migrate_on_start)
