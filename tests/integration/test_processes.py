"""Every service is its own process with health and reflection, and drains on SIGTERM."""

from __future__ import annotations

import signal
import uuid

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from infra.local.processes import GRPC_SERVICES, MeshProcesses
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


async def test_payment_core_drains_on_sigterm_and_comes_back(mesh: MeshProcesses) -> None:
    exit_code = mesh.stop_process("payment-core", signal.SIGTERM)
    assert exit_code == 0
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
