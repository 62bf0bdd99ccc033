"""The grpc.aio server every service runs: health, reflection, OpenTelemetry, error mapping,
deadlines, counted calls and their /metrics, background tasks, and a graceful shutdown on SIGTERM
(NOT_SERVING → drain → stop)."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters

from services.runtime.interceptors import ErrorAndDeadlineInterceptor
from services.runtime.metrics import serve_metrics
from services.runtime.reflection import enable_reflection

log = logging.getLogger("medpay.server")


@dataclass
class ServiceHost:
    """What a service's composition root hands to `serve()`."""

    name: str
    address: str
    # Adds the servicers to the server; returns the full names of the services added.
    register: Callable[[grpc.aio.Server], Sequence[str]]
    background: list[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=list)
    # Extra servers sharing the loop (the channel notification HTTP endpoint): start, stop.
    side_servers: list[tuple[Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]]] = field(
        default_factory=list
    )
    on_shutdown: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Run once the server has stopped taking calls but while the background tasks (the instance's
    # heartbeat among them) still run: work begun by this instance finishes under its live leases.
    on_drain: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    grace_s: float = 5.0
    # Ceiling on any call's budget for outbound work (MEDPAY_MAX_DEADLINE_S).
    max_deadline_s: float = 60.0
    # Where Prometheus scrapes this process's counts (MeshSettings.metrics_address); None: nowhere.
    metrics_address: str | None = None


def build_server(max_deadline_s: float = 60.0) -> grpc.aio.Server:
    return grpc.aio.server(
        interceptors=[
            aio_server_interceptor(filter_=filters.negate(filters.health_check())),
            ErrorAndDeadlineInterceptor(max_deadline_s),
        ],
        options=[("grpc.so_reuseport", 0), ("grpc.max_concurrent_streams", 1000)],
    )


def add_health_and_reflection(
    server: grpc.aio.Server, service_names: Sequence[str]
) -> tuple[health.aio.HealthServicer, list[str]]:
    """grpc.health.v1 and reflection (v1 and v1alpha) beside the service's own servicers; returns
    the health servicer and every service the server now offers."""
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
    return health_servicer, enable_reflection([*service_names, health_name], server)


async def report_serving(health_servicer: health.aio.HealthServicer, service_names: Sequence[str]) -> None:
    """SERVING for each service and for the server as a whole (the empty name)."""
    for service_name in [*service_names, ""]:
        await health_servicer.set(service_name, health_pb2.HealthCheckResponse.SERVING)


async def serve(host: ServiceHost) -> None:
    server = build_server(host.max_deadline_s)
    health_servicer, names = add_health_and_reflection(server, host.register(server))
    if server.add_insecure_port(host.address) == 0:
        raise RuntimeError(f"{host.name}: cannot bind {host.address}")
    await server.start()
    stop_metrics = serve_metrics(host.metrics_address) if host.metrics_address else None
    for start, _ in host.side_servers:
        await start()
    tasks = [
        asyncio.create_task(job(), name=f"{host.name}:{getattr(job, '__name__', 'background')}")
        for job in host.background
    ]
    await report_serving(health_servicer, names)
    log.info("%s serving on %s", host.name, host.address)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()

    log.info("%s shutting down: NOT_SERVING, draining for up to %.1fs", host.name, host.grace_s)
    await health_servicer.enter_graceful_shutdown()
    for _, stop_side in host.side_servers:
        await stop_side()
    await server.stop(host.grace_s)
    for drain in host.on_drain:
        await drain()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for hook in host.on_shutdown:
        await hook()
    if stop_metrics is not None:
        await asyncio.to_thread(stop_metrics)
    log.info("%s stopped", host.name)
