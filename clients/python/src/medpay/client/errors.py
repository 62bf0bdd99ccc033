"""What a caller of the facade catches: one exception type carrying the platform's rich status.

Every RPC failure of the mesh is a `google.rpc.Status` (AIP-193) with one `ErrorInfo` (a stable
`reason` such as "REFUND_EXCEEDS_PAID") and, for invalid input, a `BadRequest` naming the fields.
`MedPayError` unpacks both so HIS code can branch on `.reason` instead of parsing messages.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from medpay.payment.v1 import payment_pb2


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One invalid field, named by its proto path ("items[0].line_total_fen")."""

    field: str
    description: str


class MedPayError(Exception):
    """An RPC of the mesh failed. `reason` is the ErrorInfo reason ("" when the status had none,
    e.g. a deadline that expired on the client side)."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        reason: str = "",
        field_violations: tuple[FieldViolation, ...] = (),
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{code.name}: {message}" + (f" [{reason}]" if reason else ""))
        self.code = code
        self.message = message
        self.reason = reason
        self.field_violations = field_violations
        self.metadata = metadata or {}

    @property
    def retryable(self) -> bool:
        """UNAVAILABLE means nothing happened or the outcome is unknown: both are safe to retry
        with the same request_id. REQUEST_IN_PROGRESS means an earlier attempt is still running."""
        return self.code is grpc.StatusCode.UNAVAILABLE or self.reason == "REQUEST_IN_PROGRESS"


class OrderWaitError(Exception):
    """A wait on an order gave up (`wait_until_settled`, `wait_until_refunded`): the order reached
    a terminal state other than the one wanted, or time ran out. `.order` is its last known state."""

    def __init__(self, order: payment_pb2.PaymentOrder, why: str) -> None:
        status = payment_pb2.OrderStatus.Name(order.status)
        super().__init__(f"order {order.order_id} is {status}: {why}")
        self.order = order
        self.why = why


def error_from_rpc(error: grpc.aio.AioRpcError) -> MedPayError:
    """Translate a failed call, reading the rich status from its trailing metadata."""
    code = error.code()
    message = error.details() or ""
    status = _rich_status(error)
    if status is None:
        return MedPayError(code, message)
    info, violations = _unpack_details(status)
    return MedPayError(
        code,
        status.message or message,
        reason=info.reason if info else "",
        field_violations=violations,
        metadata=dict(info.metadata) if info else {},
    )


def _rich_status(error: grpc.aio.AioRpcError) -> status_pb2.Status | None:
    try:
        status: status_pb2.Status | None = rpc_status.from_call(error)
    except ValueError:
        # The status detail disagrees with the call's code or message: trust the call only.
        return None
    return status


def _unpack_details(
    status: status_pb2.Status,
) -> tuple[error_details_pb2.ErrorInfo | None, tuple[FieldViolation, ...]]:
    info: error_details_pb2.ErrorInfo | None = None
    violations: list[FieldViolation] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            violations += [FieldViolation(v.field, v.description) for v in bad_request.field_violations]
    return info, tuple(violations)
