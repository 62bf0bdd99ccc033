"""Every service is its own process with health and reflection, and drains on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import uuid
from datetime import datetime, timedelta

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from sqlalchemy import text

from infra.local.processes import GRPC_SERVICES, MeshProcesses
from services.runtime.clock import as_utc, utcnow
from services.runtime.config import MeshSettings
from services.runtime.db import create_engine
from tests.e2e.flows import Stubs, pay_and_settle, self_pay_order_request

pytestmark = pytest.mark.integration

EXPECTED_SERVICE = {
    "payment-core": "medpay.payment.v1.PaymentService",
    "insurance-adapter": "medpay.insurance.v1.InsuranceService",
    "reconciliation": "medpay.reconciliation.v1.ReconciliationService",
    "data-aggregation": "medpay.data.v1.DataAggregationService",
}


@pytest.mark.parametrize("service", GRPC_SERVICES)
async def test_health_and_reflection(mesh: MeshProcesses, service: str) -> None:
    async with grpc.aio.insecure_channel(mesh.layout.grpc_address(service)) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(
            health_pb2.HealthCheckRequest(service=EXPECTED_SERVICE[service]), timeout=5
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        async for answer in reflection.ServerReflectionInfo(iter([request]), timeout=5):
            names = {s.name for s in answer.list_services_response.service}
            assert EXPECTED_SERVICE[service] in names
        # Reflection v1 is the same protocol under its new name (what current grpcurl asks).
        reflect_v1 = channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        async for answer in reflect_v1(iter([request]), timeout=5):
            assert EXPECTED_SERVICE[service] in {s.name for s in answer.list_services_response.service}
        # What a load balancer's health watch sees.
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
        try:
            first = await asyncio.wait_for(watch.read(), timeout=5)
        finally:
            watch.cancel()
        assert first.status == health_pb2.HealthCheckResponse.SERVING


async def service_instances(mesh: MeshProcesses, service: str) -> list[tuple[str, datetime]]:
    """(service, heartbeat_at) of each instance row in the service's own database."""
    settings = MeshSettings(database_url=mesh.layout.database_url, data_dir=mesh.layout.workdir / "data")
    engine = create_engine(*settings.database_for(service))
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(text("SELECT service, heartbeat_at FROM service_instances"))
            return [(name, as_utc(heartbeat_at)) for name, heartbeat_at in rows]
    finally:
        await engine.dispose()


@pytest.mark.parametrize("service", GRPC_SERVICES)
async def test_every_service_process_keeps_its_heartbeat(mesh: MeshProcesses, service: str) -> None:
    [(name, heartbeat_at)] = await service_instances(mesh, service)
    assert name == service
    assert utcnow() - heartbeat_at < timedelta(seconds=MeshSettings().instance_dead_after_s)


async def test_payment_core_drains_on_sigterm_and_comes_back(mesh: MeshProcesses) -> None:
    exit_code = mesh.stop_process("payment-core", signal.SIGTERM)
    assert exit_code == 0
    assert await service_instances(mesh, "payment-core") == []  # retired: nothing it held waits
    mesh.start_process("payment-core")
    await mesh.wait_ready(["payment-core"])
    stubs = Stubs.connect(mesh)
    try:
        created = await stubs.payment.CreatePaymentOrder(
            self_pay_order_request(f"MZ{uuid.uuid4().hex[:10]}"), timeout=30
        )
        settled = await pay_and_settle(mesh, stubs, created.order)
        assert settled.cash_paid_fen == settled.total_fen
    finally:
        await stubs.close()
