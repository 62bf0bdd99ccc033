"""What the entrypoints ask of the service layer: validated, typed, free of protobuf."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from services.payment_core.adapters.insurance import Voucher
from services.payment_core.domain.model import ChargeLine, PosSlip, RefundedLine
from services.runtime.masking import PatientIdentifier
from services.runtime.money import Money


@dataclass(frozen=True, slots=True)
class InsuranceTerms:
    insutype: str
    med_type: str
    use_personal_account: bool
    insuplc_admdvs: str
    dise_codg: str
    dise_name: str


@dataclass(frozen=True, slots=True)
class CreatePaymentOrder:
    request_id: str
    his_order_no: str
    scene: str
    campus_code: str
    dept_code: str
    his_patient_id: str
    masked_cert_no: str
    lines: tuple[ChargeLine, ...]
    # Both present for an insured order, both None for self-pay.
    voucher: Voucher | None
    insurance: InsuranceTerms | None
    doctor_code: str
    doctor_name: str


@dataclass(frozen=True, slots=True)
class PayPaymentOrder:
    request_id: str
    order_id: str
    channel: str
    method: str
    description: str
    # What this payment collects; zero = what remains of the cash share.
    amount: Money = Money(0)  # noqa: RUF009 - Money is frozen, so one shared default is safe
    # BARCODE: the patient's payment code (a bearer credential: masked repr, never stored).
    auth_code: PatientIdentifier | None = None
    # JSAPI: the payer's openid.
    payer_openid: str = ""
    # CASH, POS: the cashier who took the money; POS: the terminal's slip.
    operator_id: str = ""
    pos: PosSlip | None = None
    # DEPOSIT: the 住院号 of the account that pays.
    inpatient_no: str = ""


@dataclass(frozen=True, slots=True)
class ClosePaymentOrder:
    request_id: str
    order_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class RefundPaymentOrder:
    request_id: str
    order_id: str
    # Zero = everything still refundable.
    cash: Money
    reason: str
    operator_id: str = ""
    # A refund by lines of an insured order (empty: by cash alone).
    lines: tuple[RefundedLine, ...] = ()


@dataclass(frozen=True, slots=True)
class ConfirmWindowRefund:
    request_id: str
    order_id: str
    refund_id: str
    operator_id: str
    # A refund to POS: the slip of the terminal's 退货.
    pos: PosSlip | None


@dataclass(frozen=True, slots=True)
class ListPaymentOrders:
    page_size: int
    cursor: dict[str, Any] | None
    status: str | None
    business_date: date | None
    his_patient_id: str


@dataclass(frozen=True, slots=True)
class ExportTransactions:
    business_date: date
    page_size: int
    cursor: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class ExportChannelBill:
    # The payment standard's channel name: "WECHAT_PAY", "ALIPAY".
    channel: str
    business_date: date
    page_size: int
    cursor: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class CloseCashierShift:
    request_id: str
    cashier_id: str
    campus_code: str
    # Aware UTC; not yet checked against the clock or the previous close (the handler does).
    closed_at: datetime


@dataclass(frozen=True, slots=True)
class TopUpDeposit:
    request_id: str
    inpatient_no: str
    campus_code: str
    his_patient_id: str
    amount: Money
    channel: str
    method: str
    operator_id: str = ""
    pos: PosSlip | None = None


@dataclass(frozen=True, slots=True)
class RefundDeposit:
    # The idempotency key of the parts (a RefundDeposit's request_id, or the discharge's order).
    request_key: str
    inpatient_no: str
    # Zero = the whole balance.
    amount: Money
    reason: str
    operator_id: str = ""


@dataclass(frozen=True, slots=True)
class SettleDischarge:
    request_id: str
    inpatient_no: str
    campus_code: str
    dept_code: str
    his_patient_id: str
    lines: tuple[ChargeLine, ...]
    discharged_at: datetime
