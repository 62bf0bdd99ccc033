"""Domain errors every service raises; mapped to rich gRPC statuses in exactly one place
(`services.runtime.interceptors`). Pure: no grpc import here, so domain code can raise them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class MedPayError(Exception):
    """Base of every error a caller may see. `reason` is an ErrorReason name (without prefix)."""

    status_name = "INTERNAL"
    reason = "ERROR_REASON_UNSPECIFIED"

    def __init__(self, message: str, metadata: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.metadata = metadata or {}


class InvalidArgument(MedPayError):
    status_name = "INVALID_ARGUMENT"
    reason = "FIELD_INVALID"

    def __init__(self, violations: list[FieldViolation]) -> None:
        fields = ", ".join(v.field for v in violations)
        super().__init__(f"invalid argument: {fields}", {"fields": fields})
        self.violations = violations

    @classmethod
    def field(cls, field: str, description: str) -> InvalidArgument:
        return cls([FieldViolation(field, description)])


class NotFound(MedPayError):
    status_name = "NOT_FOUND"
    reason = "RESOURCE_NOT_FOUND"


class StateConflict(MedPayError):
    status_name = "FAILED_PRECONDITION"
    reason = "STATE_CONFLICT"


class RequestIdReused(MedPayError):
    status_name = "FAILED_PRECONDITION"
    reason = "REQUEST_ID_REUSED"


class RequestInProgress(MedPayError):
    status_name = "ABORTED"
    reason = "REQUEST_IN_PROGRESS"


class RefundExceedsPaid(MedPayError):
    status_name = "FAILED_PRECONDITION"
    reason = "REFUND_EXCEEDS_PAID"


class InsurerRejected(MedPayError):
    status_name = "FAILED_PRECONDITION"
    reason = "INSURER_REJECTED"


class InsurerUnavailable(MedPayError):
    status_name = "UNAVAILABLE"
    reason = "INSURER_UNAVAILABLE"


class ChannelRejected(MedPayError):
    status_name = "FAILED_PRECONDITION"
    reason = "CHANNEL_REJECTED"


class ChannelUnavailable(MedPayError):
    status_name = "UNAVAILABLE"
    reason = "CHANNEL_UNAVAILABLE"


class DatabaseUnavailable(MedPayError):
    """The connection to the service's database was lost mid-transaction (rolled back): retry."""

    status_name = "UNAVAILABLE"
    reason = "DATABASE_UNAVAILABLE"


class OutcomeUnknown(MedPayError):
    """An outbound call was sent and its outcome is not known. Never guessed: a query decides."""

    status_name = "UNAVAILABLE"
    reason = "OUTCOME_UNKNOWN"


class NotOffered(MedPayError):
    status_name = "UNIMPLEMENTED"
    reason = "NOT_OFFERED"


class BillNotReady(MedPayError):
    """A channel has no bill for the day yet (the day has not ended, or it is still being made)."""

    status_name = "FAILED_PRECONDITION"
    reason = "BILL_NOT_READY"


class BillChanged(MedPayError):
    """A bill read page by page changed between two pages: start again from the first."""

    status_name = "FAILED_PRECONDITION"
    reason = "BILL_CHANGED"


class DepositInsufficient(MedPayError):
    """An inpatient deposit account holds less than a payment or a refund takes: storage refused to
    go below zero (nothing was stored)."""

    status_name = "FAILED_PRECONDITION"
    reason = "DEPOSIT_INSUFFICIENT"


class StorageConflict(Exception):
    """A write the database refused by a constraint it keeps (a UNIQUE index: another transaction
    stored the same thing first). Raised by the unit of work in place of the driver's error, so the
    service layer can decide (look again, answer what was stored) without knowing the database
    library. Not a MedPayError: one nobody handles is a fault of ours, not the caller's."""
