"""The insurance port: what payment-core asks of insurance-adapter. Implementations: the gRPC client
(`insurance_grpc.GrpcInsurance`) and the in-memory fake (`insurance_fake.FakeInsurance`).

Every call carries a request_id derived from the order and the step (domain.keys), so a retry is a
replay at the adapter, never a second effect. Failures arrive as the runtime's errors:
InsurerRejected (refused for good), InsurerUnavailable (nothing happened), OutcomeUnknown (sent, not
known: decided later by a retry with the same request_id), InvalidArgument, NotFound, StateConflict.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from services.payment_core.domain.model import ChargeLine, InsuranceSplit
from services.runtime.masking import PatientIdentifier


class InsurerStatus(enum.Enum):
    """medpay.insurance.v1.SettlementStatus, without the prefix."""

    UNSPECIFIED = "UNSPECIFIED"
    PRESETTLED = "PRESETTLED"
    UNKNOWN = "UNKNOWN"
    SETTLED = "SETTLED"
    REVOKED = "REVOKED"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"


@dataclass(frozen=True, slots=True)
class Voucher:
    """The patient's voucher (就诊凭证). Passed through to the insurer, never stored: the
    identifiers are PatientIdentifier, whose str/repr is masked."""

    cert_type: str
    cert_no: PatientIdentifier
    card_sn: PatientIdentifier
    psn_cert_type: str
    psn_name: PatientIdentifier


@dataclass(frozen=True, slots=True)
class PresettleAsk:
    request_id: str
    order_ref: str
    visit_no: str
    voucher: Voucher
    insutype: str
    med_type: str
    use_personal_account: bool
    dept_code: str
    doctor_code: str
    doctor_name: str
    lines: tuple[ChargeLine, ...]
    dise_codg: str = ""
    dise_name: str = ""
    insuplc_admdvs: str = ""


@dataclass(frozen=True, slots=True)
class InsurerSettlement:
    settlement_id: str
    status: InsurerStatus
    insutype: str
    setl_id: str
    split: InsuranceSplit | None
    status_reason: str = ""


class InsurancePort(Protocol):
    async def presettle(self, ask: PresettleAsk) -> InsurerSettlement:
        """Register the visit and pre-settle the bill (1101 → 2201 → 2204 → 2206)."""
        ...

    async def settle(self, request_id: str, settlement_id: str) -> InsurerSettlement:
        """2207, once the cash share is collected."""
        ...

    async def cancel_presettlement(
        self, request_id: str, settlement_id: str, order_ref: str = ""
    ) -> InsurerSettlement:
        """2205: the order will not be paid. Without a settlement_id (the Presettle answer was
        lost), the active pre-settlement of `order_ref`; NotFound when there is none."""
        ...

    async def revoke_settlement(self, request_id: str, settlement_id: str, reason: str) -> InsurerSettlement:
        """2208: the settled order is refunded."""
        ...

    async def represettle(
        self, request_id: str, order_ref: str, revoked_settlement_id: str, lines: tuple[ChargeLine, ...]
    ) -> InsurerSettlement:
        """A refund by lines: pre-settle the remaining `lines` again on the visit of the revoked
        settlement (2204 of a new batch + 2206; no voucher needed). Settle then completes it."""
        ...
