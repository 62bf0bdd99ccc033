"""Request validation: every violation named by its proto field path, before anything is stored
or sent. Code values are checked for shape only: local extension codes are carried, not refused."""

from __future__ import annotations

import re
from collections.abc import Iterable

from medpay.common.v1 import common_pb2
from medpay.insurance.v1 import insurance_pb2

from services.insurance_adapter.domain.bill import billed_total
from services.insurance_adapter.domain.person import SOCIAL_SECURITY_CARD, VOUCHER_TYPES
from services.runtime.money import Money
from services.runtime.validation import Violations

_CODE = re.compile(r"^[0-9A-Za-z]{2,6}$")
_REGION = re.compile(r"^\d{6}$")
MAX_ITEMS = 500
MAX_PAGE = 200


def check_voucher(violations: Violations, voucher: common_pb2.PatientVoucher, path: str = "voucher") -> None:
    violations.require(
        voucher.mdtrt_cert_type in VOUCHER_TYPES, f"{path}.mdtrt_cert_type", "must be 01, 02 or 03"
    )
    violations.require_text(voucher.mdtrt_cert_no, f"{path}.mdtrt_cert_no", max_length=50)
    if voucher.mdtrt_cert_type == SOCIAL_SECURITY_CARD:
        violations.require_text(voucher.card_sn, f"{path}.card_sn", max_length=32)
    violations.require(len(voucher.psn_cert_type) <= 6, f"{path}.psn_cert_type", "at most 6 characters")
    violations.require(len(voucher.psn_name) <= 50, f"{path}.psn_name", "at most 50 characters")


def check_presettle(request: insurance_pb2.PresettleRequest) -> Violations:
    if request.after_revoked_settlement_id:
        return check_represettle(request)
    violations = Violations()
    violations.require_text(request.order_ref, "order_ref")
    check_voucher(violations, request.voucher)
    _optional_code(violations, request.insutype, "insutype")
    violations.require(bool(_CODE.match(request.med_type)), "med_type", "required: a 2-6 character code")
    violations.require_text(request.visit_no, "visit_no", max_length=30)
    if request.insuplc_admdvs:
        violations.require(
            bool(_REGION.match(request.insuplc_admdvs)), "insuplc_admdvs", "a 6-digit region code"
        )
    for field, value, limit in _visit_texts(request):
        violations.require(len(value) <= limit, field, f"at most {limit} characters")
    violations.require(
        0 < len(request.items) <= MAX_ITEMS, "items", f"required: 1 to {MAX_ITEMS} charge items"
    )
    for index, item in enumerate(request.items):
        check_item(violations, item, f"items[{index}]")
    _unique_line_numbers(violations, request.items)
    return violations


def check_represettle(request: insurance_pb2.PresettleRequest) -> Violations:
    """Pre-settling the rest of a revoked settlement's bill: the visit is that settlement's, so
    only the order, the settlement and the remaining lines are sent."""
    violations = Violations()
    violations.require_text(request.order_ref, "order_ref")
    violations.require_text(request.after_revoked_settlement_id, "after_revoked_settlement_id")
    violations.require(
        not request.HasField("voucher"), "voucher", "must be absent: the visit is the revoked one's"
    )
    for field, value in _visit_fields(request):
        violations.require(not value, field, "must be empty: it comes from the revoked settlement")
    violations.require(
        0 < len(request.items) <= MAX_ITEMS, "items", f"required: 1 to {MAX_ITEMS} charge items"
    )
    for index, item in enumerate(request.items):
        check_item(violations, item, f"items[{index}]")
    _unique_line_numbers(violations, request.items)
    return violations


def _visit_fields(request: insurance_pb2.PresettleRequest) -> list[tuple[str, object]]:
    names = ("insutype", "med_type", "use_personal_account", "visit_no", "insuplc_admdvs")
    return [(name, getattr(request, name)) for name in names] + [
        (field, value) for field, value, _ in _visit_texts(request)
    ]


def check_item(violations: Violations, item: common_pb2.ChargeItem, path: str) -> None:
    violations.require_text(item.hospital_code, f"{path}.hospital_code", max_length=150)
    violations.require_text(item.national_code, f"{path}.national_code", max_length=50)
    violations.require_text(item.line_no, f"{path}.line_no", max_length=30)
    violations.require(len(item.name) <= 200, f"{path}.name", "at most 200 characters")
    _optional_code(violations, item.chrgitm_lv, f"{path}.chrgitm_lv")
    _optional_code(violations, item.med_chrgitm_type, f"{path}.med_chrgitm_type")
    violations.require(item.quantity_ten_thousandths > 0, f"{path}.quantity_ten_thousandths", "must be > 0")
    violations.require(item.unit_price_fen >= 0, f"{path}.unit_price_fen", "must be >= 0")
    if item.line_total_fen <= 0:
        violations.add(f"{path}.line_total_fen", "must be > 0")
    elif item.quantity_ten_thousandths > 0 and item.unit_price_fen >= 0:
        expected = billed_total(item.quantity_ten_thousandths, Money(item.unit_price_fen))
        violations.require(
            expected.fen == item.line_total_fen,
            f"{path}.line_total_fen",
            f"must equal round(quantity × unit price) = {expected.fen} fen",
        )


def check_settlement_id(violations: Violations, settlement_id: str) -> None:
    violations.require_text(settlement_id, "settlement_id")


def check_reconcile(request: insurance_pb2.ReconcileTotalsRequest) -> Violations:
    violations = Violations()
    violations.business_date(request.business_date)
    violations.require(bool(_CODE.match(request.insutype)), "insutype", "required: a 2-6 character code")
    _optional_code(violations, request.clr_type, "clr_type")
    return violations


def _optional_code(violations: Violations, value: str, field: str) -> None:
    violations.require(not value or bool(_CODE.match(value)), field, "a 2-6 character code when given")


def _visit_texts(request: insurance_pb2.PresettleRequest) -> list[tuple[str, str, int]]:
    return [
        ("dept_code", request.dept_code, 30),
        ("dept_name", request.dept_name, 100),
        ("doctor_code", request.doctor_code, 30),
        ("doctor_name", request.doctor_name, 50),
        ("dise_codg", request.dise_codg, 30),
        ("dise_name", request.dise_name, 300),
    ]


def _unique_line_numbers(violations: Violations, items: Iterable[common_pb2.ChargeItem]) -> None:
    seen: set[str] = set()
    for index, item in enumerate(items):
        if item.line_no and item.line_no in seen:
            violations.add(f"items[{index}].line_no", "must be unique within the bill")
        seen.add(item.line_no)
