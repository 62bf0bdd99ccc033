"""Garbage in, a clear answer out: random and hostile field values sent to every unary RPC of the
four services never produce UNKNOWN or INTERNAL, and INVALID_ARGUMENT always names a field.
Seeded, bounded, loopback only."""

from __future__ import annotations

import random
import uuid
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from medpay.data.v1 import data_pb2
from medpay.events.v1 import events_pb2
from medpay.insurance.v1 import insurance_pb2
from medpay.payment.v1 import payment_pb2
from medpay.reconciliation.v1 import reconciliation_pb2

from infra.local.processes import MeshProcesses
from tests.e2e.errors import error_reason, violated_fields

pytestmark = pytest.mark.e2e

SERVICES = {
    "payment-core": [
        payment_pb2.DESCRIPTOR.services_by_name["PaymentService"],
        events_pb2.DESCRIPTOR.services_by_name["EventFeedService"],
    ],
    "insurance-adapter": [insurance_pb2.DESCRIPTOR.services_by_name["InsuranceService"]],
    "reconciliation": [reconciliation_pb2.DESCRIPTOR.services_by_name["ReconciliationService"]],
    "data-aggregation": [data_pb2.DESCRIPTOR.services_by_name["DataAggregationService"]],
}
HOSTILE_TEXT = [
    "",
    " ",
    "x" * 300,
    "🙂🙂",
    "'; DROP TABLE payment_orders; --",
    "2026-13-45",
    "0001-01-01",
    "9999-12-31",
    "-1",
    "\x00",
    "350102199001011234",
]
HOSTILE_INT = [0, -1, 1, 12_500, 2**62, -(2**62)]
ATTEMPTS_PER_RPC = 20
# Real dates the platform does not answer for (it serves 2000-01-01..2099-12-31).
OUT_OF_RANGE_DAYS = ["0001-01-01", "1999-12-31", "2100-01-01", "9999-12-31"]


def _value(field: FieldDescriptor, rng: random.Random, depth: int) -> Any:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return _fill(GetMessageClass(field.message_type)(), rng, depth + 1)
    if field.type == FieldDescriptor.TYPE_STRING:
        return rng.choice([*HOSTILE_TEXT, f"{rng.getrandbits(96):024x}"])
    if field.type == FieldDescriptor.TYPE_BYTES:
        return rng.randbytes(rng.choice([0, 3, 64]))
    if field.type == FieldDescriptor.TYPE_BOOL:
        return rng.random() < 0.5
    if field.type == FieldDescriptor.TYPE_ENUM:
        return rng.choice([v.number for v in field.enum_type.values] + [99])
    if field.type in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32):
        return rng.choice([0, -1, 1, 50, 2**31 - 1])
    return rng.choice(HOSTILE_INT)


def _fill(message: Message, rng: random.Random, depth: int = 0) -> Message:
    for field in message.DESCRIPTOR.fields:
        if depth > 3 or rng.random() < 0.3 or field.containing_oneof is not None:
            continue
        if field.is_repeated:
            for _ in range(rng.randint(0, 3)):
                value = _value(field, rng, depth)
                if field.type == FieldDescriptor.TYPE_MESSAGE:
                    getattr(message, field.name).add().CopyFrom(value)
                else:
                    getattr(message, field.name).append(value)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            getattr(message, field.name).CopyFrom(_value(field, rng, depth))
        else:
            setattr(message, field.name, _value(field, rng, depth))
    return message


def _unary_methods() -> list[tuple[str, ServiceDescriptor, str]]:
    cases = []
    for service_name, descriptors in SERVICES.items():
        for descriptor in descriptors:
            for method in descriptor.methods:
                if not method.server_streaming and not method.client_streaming:
                    cases.append((service_name, descriptor, method.name))
    return cases


@pytest.mark.parametrize(
    ("service", "descriptor", "method"), _unary_methods(), ids=lambda v: getattr(v, "name", v)
)
async def test_hostile_requests_get_a_clear_status(
    mesh: MeshProcesses, service: str, descriptor: ServiceDescriptor, method: str
) -> None:
    rng = random.Random(f"{descriptor.full_name}/{method}")
    rpc = descriptor.methods_by_name[method]
    request_class = GetMessageClass(rpc.input_type)
    response_class = GetMessageClass(rpc.output_type)
    async with grpc.aio.insecure_channel(mesh.layout.grpc_address(service)) as channel:
        call = channel.unary_unary(
            f"/{descriptor.full_name}/{method}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_class.FromString,
        )
        for _ in range(ATTEMPTS_PER_RPC):
            request = _fill(request_class(), rng)
            try:
                await call(request, timeout=30)
            except grpc.aio.AioRpcError as error:
                assert error.code() not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL), (
                    f"{method}: {error.code()} {error.details()} for {request}"
                )
                if error.code() == grpc.StatusCode.INVALID_ARGUMENT:
                    assert violated_fields(error), (
                        f"{method}: INVALID_ARGUMENT without a field: {error.details()}"
                    )
                assert "350102199001011234" not in (error.details() or "")


def _methods_taking_a_business_date() -> list[tuple[str, ServiceDescriptor, str]]:
    return [
        (service, descriptor, method)
        for service, descriptor, method in _unary_methods()
        if "business_date" in descriptor.methods_by_name[method].input_type.fields_by_name
    ]


@pytest.mark.parametrize(
    ("service", "descriptor", "method"),
    _methods_taking_a_business_date(),
    ids=lambda v: getattr(v, "name", v),
)
async def test_a_business_date_out_of_range_is_invalid_argument_naming_it(
    mesh: MeshProcesses, service: str, descriptor: ServiceDescriptor, method: str
) -> None:
    rpc = descriptor.methods_by_name[method]
    request_class = GetMessageClass(rpc.input_type)
    async with grpc.aio.insecure_channel(mesh.layout.grpc_address(service)) as channel:
        call = channel.unary_unary(
            f"/{descriptor.full_name}/{method}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=GetMessageClass(rpc.output_type).FromString,
        )
        for day in OUT_OF_RANGE_DAYS:
            request = request_class(business_date=day)
            if "request_id" in rpc.input_type.fields_by_name:
                request.request_id = uuid.uuid4().hex
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call(request, timeout=30)
            if caught.value.code() == grpc.StatusCode.UNIMPLEMENTED:
                assert error_reason(caught.value) == "NOT_OFFERED"
                pytest.skip(f"{method} is not offered yet")
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (
                f"{method}({day}): {caught.value.code()} {caught.value.details()}"
            )
            assert "business_date" in violated_fields(caught.value), f"{method}({day})"


# CloseCashierShift is offered: a malformed closed_at, one without its offset, or one far in the
# future is INVALID_ARGUMENT naming the field, never UNIMPLEMENTED/NOT_OFFERED.
BAD_MOMENTS = ["", "2026-12-02", "2026-12-02 18:00:00", "2026-13-45T18:00:00Z", "2099-12-31T00:00:00Z"]


async def test_a_shift_close_with_a_bad_closed_at_is_invalid_argument_naming_it(mesh: MeshProcesses) -> None:
    async with grpc.aio.insecure_channel(mesh.layout.grpc_address("payment-core")) as channel:
        call = channel.unary_unary(
            "/medpay.payment.v1.PaymentService/CloseCashierShift",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=payment_pb2.CloseCashierShiftResponse.FromString,
        )
        for moment in BAD_MOMENTS:
            request = payment_pb2.CloseCashierShiftRequest(
                request_id=uuid.uuid4().hex, cashier_id="C001", campus_code="FZ900", closed_at=moment
            )
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call(request, timeout=30)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (
                f"{moment!r}: {caught.value.code()} {caught.value.details()}"
            )
            assert violated_fields(caught.value) == ["closed_at"], repr(moment)
