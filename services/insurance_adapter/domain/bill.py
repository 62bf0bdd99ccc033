"""The HIS bill an insured settlement prices: its charge lines and the visit it belongs to."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from services.runtime.money import Money, line_total

# ChargeItem.quantity_ten_thousandths per unit (NHSA cnt is 16,4).
QUANTITY_SCALE = 10_000


@dataclass(frozen=True, slots=True)
class ChargeLine:
    line_no: str
    hospital_code: str
    national_code: str
    name: str
    chrgitm_lv: str
    med_chrgitm_type: str
    quantity_ten_thousandths: int
    unit_price: Money
    line_total: Money
    dept_code: str
    doctor_code: str


def billed_total(quantity_ten_thousandths: int, unit_price: Money) -> Money:
    """round(quantity × unit price) half-up, in integers: what the HIS must have billed (the
    platform's one rule, which payment-core applies to every order too)."""
    return line_total(quantity_ten_thousandths, unit_price)


@dataclass(frozen=True, slots=True)
class OutpatientBill:
    """Everything of a Presettle request except who the patient is."""

    insutype: str
    med_type: str
    use_personal_account: bool
    visit_no: str
    dept_code: str
    dept_name: str
    doctor_code: str
    doctor_name: str
    dise_codg: str
    dise_name: str
    insuplc_admdvs: str
    lines: tuple[ChargeLine, ...]

    @property
    def total(self) -> Money:
        return Money(sum(line.line_total.fen for line in self.lines))

    def fingerprint(self) -> str:
        """Stable hash of the bill; it carries no patient identifier."""
        plain = json.dumps(asdict(self), sort_keys=True, default=str, ensure_ascii=False)
        return hashlib.sha256(plain.encode()).hexdigest()
