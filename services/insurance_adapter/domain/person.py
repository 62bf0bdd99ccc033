"""The insured person as the insurer describes them (1101), and the voucher that identifies them."""

from __future__ import annotations

from dataclasses import dataclass

from services.runtime.masking import PatientIdentifier
from services.runtime.money import Money

ELECTRONIC_VOUCHER, RESIDENT_ID_CARD, SOCIAL_SECURITY_CARD = "01", "02", "03"
VOUCHER_TYPES = frozenset({ELECTRONIC_VOUCHER, RESIDENT_ID_CARD, SOCIAL_SECURITY_CARD})
ENROLLED = "1"  # psn_insu_stas 正常参保


@dataclass(frozen=True, slots=True)
class PatientVoucher:
    """就诊凭证. The number, card serial and name are masked whenever printed."""

    mdtrt_cert_type: str
    mdtrt_cert_no: PatientIdentifier
    card_sn: PatientIdentifier | None = None
    psn_cert_type: str = "01"
    psn_name: PatientIdentifier | None = None


@dataclass(frozen=True, slots=True)
class Enrollment:
    insutype: str
    psn_type: str
    insuplc_admdvs: str
    balance: Money
    psn_insu_stas: str

    @property
    def is_active(self) -> bool:
        return self.psn_insu_stas == ENROLLED


@dataclass(frozen=True, slots=True)
class InsuredPerson:
    psn_no: str
    certno: PatientIdentifier
    psn_name: PatientIdentifier
    gend: str
    age: int
    enrollments: tuple[Enrollment, ...]

    def enrollment_for(self, insutype: str) -> Enrollment | None:
        """The enrollment to settle under: the asked-for insurance type, or the first one held."""
        for enrollment in self.enrollments:
            if not insutype or enrollment.insutype == insutype:
                return enrollment
        return None
