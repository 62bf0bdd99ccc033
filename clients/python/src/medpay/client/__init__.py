"""The typed facade HIS modules use: `MedPayClient` and the few types around it."""

from medpay.client.calls import Deadlines, RetryPolicy
from medpay.client.errors import FieldViolation, MedPayError, OrderWaitError
from medpay.client.facade import MedPayClient, new_request_id
from medpay.client.models import (
    Addresses,
    ChargeLine,
    InsuredVisit,
    PayResult,
    RefundResult,
    Voucher,
    format_yuan,
)

__all__ = [
    "Addresses",
    "ChargeLine",
    "Deadlines",
    "FieldViolation",
    "InsuredVisit",
    "MedPayClient",
    "MedPayError",
    "OrderWaitError",
    "PayResult",
    "RefundResult",
    "RetryPolicy",
    "Voucher",
    "format_yuan",
    "new_request_id",
]
