"""The facade's own small types: what a HIS module hands in, and results with two parts.

Orders, runs and summaries come back as the generated protobuf messages (already typed); these
dataclasses exist only where the contract's shape is awkward to build or to return by hand.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

from medpay.common.v1 import common_pb2
from medpay.payment.v1 import payment_pb2

# ChargeItem.quantity_ten_thousandths per unit (NHSA cnt is 16,4).
QUANTITY_SCALE = 10_000

PAYMENT_ADDR = "127.0.0.1:50051"
INSURANCE_ADDR = "127.0.0.1:50052"
RECONCILIATION_ADDR = "127.0.0.1:50053"
DATA_ADDR = "127.0.0.1:50054"
_ENV_ADDRESSES = {
    "payment": ("MEDPAY_PAYMENT_CORE_ADDR", PAYMENT_ADDR),
    "insurance": ("MEDPAY_INSURANCE_ADAPTER_ADDR", INSURANCE_ADDR),
    "reconciliation": ("MEDPAY_RECONCILIATION_ADDR", RECONCILIATION_ADDR),
    "data": ("MEDPAY_DATA_AGGREGATION_ADDR", DATA_ADDR),
}


@dataclass(frozen=True, slots=True)
class Addresses:
    """Where the four services listen (host:port)."""

    payment: str = PAYMENT_ADDR
    insurance: str = INSURANCE_ADDR
    reconciliation: str = RECONCILIATION_ADDR
    data: str = DATA_ADDR

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Addresses:
        """MEDPAY_PAYMENT_CORE_ADDR, MEDPAY_INSURANCE_ADAPTER_ADDR, MEDPAY_RECONCILIATION_ADDR,
        MEDPAY_DATA_AGGREGATION_ADDR; loopback ports 50051-50054 when unset."""
        env = os.environ if environ is None else environ
        found = {name: env.get(variable, default) for name, (variable, default) in _ENV_ADDRESSES.items()}
        return cls(**found)

    def by_service(self) -> dict[str, str]:
        """Service name (as in logs and traces) -> address."""
        return {
            "payment-core": self.payment,
            "insurance-adapter": self.insurance,
            "reconciliation": self.reconciliation,
            "data-aggregation": self.data,
        }


@dataclass(frozen=True, slots=True)
class ChargeLine:
    """One line of a HIS bill. Quantity is an int or a Decimal (never a float); the line total is
    quantity x unit price rounded half-up to the fen, as the HIS bills it."""

    hospital_code: str
    national_code: str
    name: str
    unit_price_fen: int
    quantity: Decimal | int = 1
    chrgitm_lv: str = ""
    med_chrgitm_type: str = ""
    dept_code: str = ""
    doctor_code: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.quantity, float) or isinstance(self.unit_price_fen, float):
            raise TypeError("quantities and prices are never floats")
        if (Decimal(self.quantity) * QUANTITY_SCALE) % 1:
            raise ValueError(f"quantity {self.quantity} has more than 4 decimal places")

    @property
    def line_total_fen(self) -> int:
        exact = Decimal(self.quantity) * self.unit_price_fen
        return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))

    def to_proto(self, line_no: str) -> common_pb2.ChargeItem:
        return common_pb2.ChargeItem(
            hospital_code=self.hospital_code,
            national_code=self.national_code,
            name=self.name,
            chrgitm_lv=self.chrgitm_lv,
            med_chrgitm_type=self.med_chrgitm_type,
            quantity_ten_thousandths=int(Decimal(self.quantity) * QUANTITY_SCALE),
            unit_price_fen=self.unit_price_fen,
            line_total_fen=self.line_total_fen,
            dept_code=self.dept_code,
            doctor_code=self.doctor_code,
            line_no=line_no,
        )


@dataclass(frozen=True, slots=True)
class Voucher:
    """The patient's 就诊凭证. The certificate number and name stay out of repr (and so out of
    logs and tracebacks); they leave this process only inside the request to payment-core."""

    mdtrt_cert_type: str
    mdtrt_cert_no: str = field(repr=False)
    psn_name: str = field(default="", repr=False)
    card_sn: str = field(default="", repr=False)
    psn_cert_type: str = "01"

    def to_proto(self) -> common_pb2.PatientVoucher:
        return common_pb2.PatientVoucher(
            mdtrt_cert_type=self.mdtrt_cert_type,
            mdtrt_cert_no=self.mdtrt_cert_no,
            card_sn=self.card_sn,
            psn_cert_type=self.psn_cert_type,
            psn_name=self.psn_name,
        )


@dataclass(frozen=True, slots=True)
class InsuredVisit:
    """Settle this bill with insurance: who the patient is and how the visit is classed."""

    voucher: Voucher
    med_type: str = "11"  # 普通门诊
    insutype: str = ""  # empty: the first insurance type the insurer reports (1101)
    use_personal_account: bool = True
    insuplc_admdvs: str = ""
    dise_codg: str = ""
    dise_name: str = ""

    def to_proto(self) -> payment_pb2.InsuranceRequest:
        return payment_pb2.InsuranceRequest(
            insutype=self.insutype,
            med_type=self.med_type,
            use_personal_account=self.use_personal_account,
            insuplc_admdvs=self.insuplc_admdvs,
            dise_codg=self.dise_codg,
            dise_name=self.dise_name,
        )


@dataclass(frozen=True, slots=True)
class PayResult:
    order: payment_pb2.PaymentOrder
    payment: payment_pb2.Payment


@dataclass(frozen=True, slots=True)
class RefundResult:
    order: payment_pb2.PaymentOrder
    refund: payment_pb2.Refund


def format_yuan(fen: int) -> str:
    """Display only: 123456 -> "1,234.56". Exact integer arithmetic, never a float."""
    sign = "-" if fen < 0 else ""
    yuan, cents = divmod(abs(fen), 100)
    return f"{sign}{yuan:,}.{cents:02d}"
