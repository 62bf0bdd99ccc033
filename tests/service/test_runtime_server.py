"""The runtime's server: how handler outcomes become statuses, over a real loopback channel."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from medpay.data.v1 import data_pb2, data_pb2_grpc
from medpay.payment.v1 import payment_pb2, payment_pb2_grpc

from services.runtime.errors import InvalidArgument, NotFound
from services.runtime.interceptors import outbound_timeout
from services.runtime.server import build_server
from tests.e2e.errors import error_reason, violated_fields


class Servicer(data_pb2_grpc.DataAggregationServiceServicer):
    """GetDailySummary fails by design; GetSettlementTimes is left to the generated base."""

    async def GetDailySummary(self, request: data_pb2.GetDailySummaryRequest, context: Any) -> Any:
        if request.business_date == "bad":
            raise InvalidArgument.field("business_date", "required: a date as YYYY-MM-DD")
        raise RuntimeError("database password is hunter2 for patient 350102199001011234")

    async def GetIngestStatus(self, request: data_pb2.GetIngestStatusRequest, context: Any) -> Any:
        return data_pb2.GetIngestStatusResponse()


@contextlib.asynccontextmanager
async def serving(
    add: Callable[[Any, grpc.aio.Server], None], servicer: Any, max_deadline_s: float = 60.0
) -> AsyncIterator[grpc.aio.Channel]:
    """The runtime's server with one servicer on an ephemeral loopback port, and a channel to it."""
    server = build_server(max_deadline_s=max_deadline_s)
    add(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel
    finally:
        await server.stop(0)


@pytest.fixture
async def stub() -> AsyncIterator[data_pb2_grpc.DataAggregationServiceStub]:
    async with serving(data_pb2_grpc.add_DataAggregationServiceServicer_to_server, Servicer()) as channel:
        yield data_pb2_grpc.DataAggregationServiceStub(channel)


async def test_domain_errors_become_rich_statuses(stub: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetDailySummary(data_pb2.GetDailySummaryRequest(business_date="bad"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(caught.value) == ["business_date"]
    assert error_reason(caught.value) == "FIELD_INVALID"


async def test_unexpected_errors_are_internal_and_say_nothing(stub: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetDailySummary(data_pb2.GetDailySummaryRequest(business_date="2026-11-25"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert "hunter2" not in (caught.value.details() or "")
    assert "350102199001011234" not in (caught.value.details() or "")


async def test_an_rpc_the_service_does_not_implement_is_not_offered(stub: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetSettlementTimes(
            data_pb2.GetSettlementTimesRequest(business_date="2026-11-25"), timeout=5
        )
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert error_reason(caught.value) == "NOT_OFFERED"


async def test_nul_characters_are_refused_before_the_handler_runs(stub: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetDailySummary(data_pb2.GetDailySummaryRequest(business_date="2026\x00"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(caught.value) == ["business_date"]


async def test_a_deadline_too_short_to_start_is_refused(stub: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetIngestStatus(data_pb2.GetIngestStatusRequest(), timeout=0.005)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


class Watcher(payment_pb2_grpc.PaymentServiceServicer):
    """A server stream that fails on request, or streams two updates."""

    async def WatchPaymentOrder(self, request: payment_pb2.WatchPaymentOrderRequest, context: Any) -> Any:
        if request.order_id == "missing":
            raise NotFound("no payment order missing")
        for status in (payment_pb2.ORDER_STATUS_PAYING, payment_pb2.ORDER_STATUS_SETTLED):
            yield payment_pb2.WatchPaymentOrderResponse(
                order=payment_pb2.PaymentOrder(order_id=request.order_id, status=status)
            )


@pytest.fixture
async def watcher() -> AsyncIterator[payment_pb2_grpc.PaymentServiceStub]:
    async with serving(payment_pb2_grpc.add_PaymentServiceServicer_to_server, Watcher()) as channel:
        yield payment_pb2_grpc.PaymentServiceStub(channel)


async def test_server_streams_get_the_same_error_mapping(watcher: Any) -> None:
    seen = [
        r.order.status
        async for r in watcher.WatchPaymentOrder(payment_pb2.WatchPaymentOrderRequest(order_id="o1"))
    ]
    assert seen == [payment_pb2.ORDER_STATUS_PAYING, payment_pb2.ORDER_STATUS_SETTLED]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in watcher.WatchPaymentOrder(payment_pb2.WatchPaymentOrderRequest(order_id="missing")):
            pass
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_reason(caught.value) == "RESOURCE_NOT_FOUND"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in watcher.WatchPaymentOrder(payment_pb2.WatchPaymentOrderRequest(order_id="o\x00")):
            pass
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


class BudgetProbe(data_pb2_grpc.DataAggregationServiceServicer):
    """Records the budget an outbound call of 100 s would get inside a handler."""

    def __init__(self) -> None:
        self.budgets: list[float] = []

    async def GetIngestStatus(self, request: data_pb2.GetIngestStatusRequest, context: Any) -> Any:
        self.budgets.append(outbound_timeout(100.0))
        return data_pb2.GetIngestStatusResponse()


async def test_outbound_calls_are_clamped_to_the_callers_deadline_and_the_ceiling() -> None:
    probe = BudgetProbe()
    add = data_pb2_grpc.add_DataAggregationServiceServicer_to_server
    async with serving(add, probe, max_deadline_s=30.0) as channel:
        stub = data_pb2_grpc.DataAggregationServiceStub(channel)
        await stub.GetIngestStatus(data_pb2.GetIngestStatusRequest())  # no deadline: the ceiling
        await stub.GetIngestStatus(data_pb2.GetIngestStatusRequest(), timeout=5)  # the caller's
    no_deadline, short_deadline = probe.budgets
    assert 25 < no_deadline <= 30
    assert 0 < short_deadline <= 5


async def test_a_detached_task_keeps_the_trace_but_not_the_callers_deadline() -> None:
    import asyncio

    from services.runtime.interceptors import detached_context, inbound_time_remaining

    async def budget() -> float:
        return outbound_timeout(30.0)

    inbound_time_remaining.set(0.5)
    try:
        assert await asyncio.create_task(budget(), context=detached_context()) == 30.0
        assert await asyncio.create_task(budget()) <= 0.5  # a plain task inherits the deadline
    finally:
        inbound_time_remaining.set(None)


@contextlib.asynccontextmanager
async def serving_like_a_service() -> AsyncIterator[grpc.aio.Channel]:
    """The runtime's server with what `serve()` adds to every service: health and reflection,
    every service SERVING."""
    from services.runtime.server import add_health_and_reflection, report_serving

    server = build_server()
    data_pb2_grpc.add_DataAggregationServiceServicer_to_server(Servicer(), server)
    health_servicer, names = add_health_and_reflection(server, [DATA_SERVICE])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await report_serving(health_servicer, names)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel
    finally:
        await server.stop(0)


DATA_SERVICE = data_pb2.DESCRIPTOR.services_by_name["DataAggregationService"].full_name


@pytest.mark.parametrize("service", ["", DATA_SERVICE])
async def test_health_watch_streams_serving(service: str) -> None:
    """What a load balancer's health watch sees (Watch writes with context.write, it yields nothing)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with serving_like_a_service() as channel:
        call = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=service))
        try:
            first = await asyncio.wait_for(call.read(), timeout=5)
        finally:
            call.cancel()
    assert first.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_v1_lists_the_services_and_describes_itself() -> None:
    """A client of grpc.reflection.v1 (what current grpcurl asks first), with v1 messages."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    pool = descriptor_pool.Default()
    request_type = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("grpc.reflection.v1.ServerReflectionRequest")
    )
    response_type = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("grpc.reflection.v1.ServerReflectionResponse")
    )
    async with serving_like_a_service() as channel:
        reflect = channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=response_type.FromString,
        )
        asks = [request_type(list_services=""), request_type(file_containing_symbol=DATA_SERVICE)]
        answers = [answer async for answer in reflect(iter(asks), timeout=5)]
    listed = {service.name for service in answers[0].list_services_response.service}
    assert {DATA_SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} <= listed
    assert "grpc.reflection.v1alpha.ServerReflection" in listed
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in answers[1].file_descriptor_response.file_descriptor_proto
    ]
    assert any(f.package == "medpay.data.v1" for f in files)
