"""The facade's error mapping and retries, against a tiny in-process grpc.aio PaymentService that
aborts the way the mesh's runtime does (AIP-193 rich status in the trailing metadata)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from medpay.client import MedPayClient, MedPayError, RetryPolicy
from medpay.payment.v1 import payment_pb2, payment_pb2_grpc


def _packed(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _rich(code: int, message: str, reason: str, *extra: Message) -> grpc.Status:
    info = error_details_pb2.ErrorInfo(reason=reason, domain="medpay.mesh", metadata={"order_id": "ord_1"})
    status = status_pb2.Status(code=code, message=message, details=[_packed(info), *map(_packed, extra)])
    return rpc_status.to_status(status)


async def _abort(context: grpc.aio.ServicerContext, status: grpc.Status) -> None:
    await context.abort(status.code, status.details, status.trailing_metadata)


class FlakyPaymentService(payment_pb2_grpc.PaymentServiceServicer):
    """Pay: UNAVAILABLE (OUTCOME_UNKNOWN) `unavailable_first` times, then succeeds.
    Refund: INVALID_ARGUMENT with a BadRequest. Close: FAILED_PRECONDITION. Get: plain NOT_FOUND."""

    def __init__(self) -> None:
        self.unavailable_first = 2
        self.pay_request_ids: list[str] = []
        self.close_calls = 0

    async def PayPaymentOrder(self, request, context):  # type: ignore[no-untyped-def]
        self.pay_request_ids.append(request.request_id)
        if len(self.pay_request_ids) <= self.unavailable_first:
            await _abort(context, _rich(code_pb2.UNAVAILABLE, "channel timed out", "OUTCOME_UNKNOWN"))
        payment = payment_pb2.Payment(payment_id="pay_1", order_id=request.order_id, out_trade_no="ord_1x1")
        return payment_pb2.PayPaymentOrderResponse(
            order=payment_pb2.PaymentOrder(order_id=request.order_id), payment=payment
        )

    async def RefundPaymentOrder(self, request, context):  # type: ignore[no-untyped-def]
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field="reason", description="required"),
                error_details_pb2.BadRequest.FieldViolation(field="cash_fen", description="must be >= 0"),
            ]
        )
        status = _rich(
            code_pb2.INVALID_ARGUMENT, "invalid argument: reason, cash_fen", "FIELD_INVALID", bad_request
        )
        await _abort(context, status)

    async def ClosePaymentOrder(self, request, context):  # type: ignore[no-untyped-def]
        self.close_calls += 1
        await _abort(context, _rich(code_pb2.FAILED_PRECONDITION, "order already settled", "STATE_CONFLICT"))

    async def GetPaymentOrder(self, request, context):  # type: ignore[no-untyped-def]
        await context.abort(grpc.StatusCode.NOT_FOUND, "no such order")


@pytest.fixture
async def service() -> AsyncIterator[tuple[FlakyPaymentService, str]]:
    servicer = FlakyPaymentService()
    server = grpc.aio.server()
    payment_pb2_grpc.add_PaymentServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


def _client(address: str, attempts: int = 4) -> MedPayClient:
    policy = RetryPolicy(attempts=attempts, initial_backoff_s=0.01, max_backoff_s=0.02)
    return MedPayClient.connect(payment=address, retry=policy)


async def test_unavailable_is_retried_with_the_same_request_id(
    service: tuple[FlakyPaymentService, str],
) -> None:
    servicer, address = service
    async with _client(address) as client:
        result = await client.pay("ord_1", payment_pb2.CHANNEL_WECHAT_PAY, payment_pb2.PAY_METHOD_NATIVE_QR)
    assert result.payment.out_trade_no == "ord_1x1"
    assert len(servicer.pay_request_ids) == 3
    assert len(set(servicer.pay_request_ids)) == 1
    assert len(servicer.pay_request_ids[0]) == 32  # uuid4 hex


async def test_a_given_request_id_is_sent_as_is(service: tuple[FlakyPaymentService, str]) -> None:
    servicer, address = service
    servicer.unavailable_first = 0
    async with _client(address) as client:
        await client.pay("ord_1", payment_pb2.CHANNEL_NONE, request_id="his-retry-42")
    assert servicer.pay_request_ids == ["his-retry-42"]


async def test_retries_are_bounded_and_end_in_a_rich_error(service: tuple[FlakyPaymentService, str]) -> None:
    servicer, address = service
    servicer.unavailable_first = 100
    async with _client(address, attempts=3) as client:
        with pytest.raises(MedPayError) as caught:
            await client.pay("ord_1", payment_pb2.CHANNEL_WECHAT_PAY, payment_pb2.PAY_METHOD_NATIVE_QR)
    assert len(servicer.pay_request_ids) == 3
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE
    assert caught.value.reason == "OUTCOME_UNKNOWN"
    assert caught.value.retryable


async def test_bad_request_surfaces_field_violations(service: tuple[FlakyPaymentService, str]) -> None:
    _, address = service
    async with _client(address) as client:
        with pytest.raises(MedPayError) as caught:
            await client.refund_order("ord_1", reason="")
    error = caught.value
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "FIELD_INVALID"
    assert [(v.field, v.description) for v in error.field_violations] == [
        ("reason", "required"),
        ("cash_fen", "must be >= 0"),
    ]
    assert error.metadata == {"order_id": "ord_1"}
    assert error.message == "invalid argument: reason, cash_fen"


async def test_failed_precondition_is_not_retried(service: tuple[FlakyPaymentService, str]) -> None:
    servicer, address = service
    async with _client(address) as client:
        with pytest.raises(MedPayError) as caught:
            await client.close_order("ord_1", "patient left")
    assert servicer.close_calls == 1
    assert (caught.value.code, caught.value.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "STATE_CONFLICT")
    assert not caught.value.retryable


async def test_a_status_without_details_still_maps(service: tuple[FlakyPaymentService, str]) -> None:
    _, address = service
    async with _client(address) as client:
        with pytest.raises(MedPayError) as caught:
            await client.get_order("ord_missing")
    assert caught.value.code is grpc.StatusCode.NOT_FOUND
    assert caught.value.reason == ""
    assert caught.value.field_violations == ()
    assert caught.value.message == "no such order"


async def test_an_unreachable_service_is_unavailable_after_retries() -> None:
    async with _client("127.0.0.1:1", attempts=2) as client:
        with pytest.raises(MedPayError) as caught:
            await client.get_order("ord_1")
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE


async def test_rich_errors_survive_the_tracing_interceptors(service: tuple[FlakyPaymentService, str]) -> None:
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    servicer, address = service
    policy = RetryPolicy(attempts=3, initial_backoff_s=0.01, max_backoff_s=0.02)
    async with MedPayClient.connect(
        payment=address, retry=policy, interceptors=aio_client_interceptors()
    ) as client:
        with pytest.raises(MedPayError) as caught:
            await client.refund_order("ord_1", reason="")
        result = await client.pay("ord_1", payment_pb2.CHANNEL_WECHAT_PAY, payment_pb2.PAY_METHOD_NATIVE_QR)
    assert caught.value.reason == "FIELD_INVALID"
    assert [v.field for v in caught.value.field_violations] == ["reason", "cash_fen"]
    assert result.payment.payment_id == "pay_1"
    assert len(set(servicer.pay_request_ids)) == 1
