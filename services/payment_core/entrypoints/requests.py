"""Requests -> commands (from_proto), validated. Every violation names the proto field path, and all
of them are reported at once; nothing reaches storage before this passes. Descriptions never echo a
submitted value (it could be a patient identifier)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime

from google.protobuf.message import Message
from medpay.common.v1 import common_pb2
from medpay.payment.v1 import payment_pb2

from services.payment_core.adapters.insurance import Voucher
from services.payment_core.domain.model import (
    CHANNEL_DEPOSIT,
    CHANNEL_NONE,
    METHOD_DEPOSIT,
    ChargeLine,
    OrderStatus,
    PosSlip,
    RefundedLine,
)
from services.payment_core.service_layer import commands
from services.runtime.clock import FIRST_BUSINESS_DATE, LAST_BUSINESS_DATE
from services.runtime.errors import NotOffered
from services.runtime.masking import PatientIdentifier
from services.runtime.money import Money, line_total
from services.runtime.pagination import decode_page_token
from services.runtime.validation import Violations

OFFERED_SCENES = frozenset({"REGISTRATION", "OUTPATIENT", "PHARMACY"})
MAX_ITEMS = 500
# A refund by lines names at most every line of the bill.
MAX_REFUND_LINES = MAX_ITEMS
# 100 million yuan: far above any outpatient bill, far below int64 overflow.
MAX_BILL_FEN = 10_000_000_000
CARD_CERT_TYPE = "03"
# A payment code (付款码) as each channel issues it; WeChat Pay: 18 digits starting 10-15.
PAYMENT_CODES = {
    "WECHAT_PAY": re.compile(r"^1[0-5]\d{16}$"),  # 18 digits, 10-15
    "ALIPAY": re.compile(r"^(2[5-9]|30)\d{14,22}$"),  # 16-24 digits, 25-30
}
ANY_PAYMENT_CODE = re.compile(r"^\d{16,24}$")
MAX_OPENID = 128
# A POS slip (签购单): 参考号 6-20 digits (12 on UnionPay terminals), 终端号 1-16 letters or digits
# (8 on UnionPay terminals), 批次号 1-6 digits; the card number only masked (digits and '*').
POS_REFERENCE = re.compile(r"^\d{6,20}$")
POS_TERMINAL = re.compile(r"^[A-Za-z0-9]{1,16}$")
POS_BATCH = re.compile(r"^\d{1,6}$")
MASKED_CARD = re.compile(r"^(?=.*\*)[\d*]{12,19}$")
OPERATOR_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
WINDOW = frozenset({"CASH", "POS"})
# RFC 3339 date-time: a full date and time with seconds and an offset ("Z" or ±hh:mm).
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,6})?([Zz]|[+-]\d{2}:\d{2})$")


def _enum_name(enum: object, value: int, prefix: str) -> str | None:
    try:
        return str(enum.Name(value)).removeprefix(prefix)  # type: ignore[attr-defined]
    except ValueError:
        return None


# ---- CreatePaymentOrder -----------------------------------------------------------------------------


def _bill_header(found: Violations, request: payment_pb2.CreatePaymentOrderRequest) -> str | None:
    """The bill's own fields; returns the scene name."""
    found.require_text(request.his_order_no, "his_order_no")
    scene = _enum_name(payment_pb2.Scene, request.scene, "SCENE_")
    found.require(scene not in (None, "UNSPECIFIED"), "scene", "required: one of the Scene values")
    found.require_text(request.campus_code, "campus_code", 32)
    found.require_text(request.patient.his_patient_id, "patient.his_patient_id")
    _max_lengths(found, "", request, {"dept_code": 32, "doctor_code": 32, "doctor_name": 64})
    return scene


def create_order(request: payment_pb2.CreatePaymentOrderRequest) -> commands.CreatePaymentOrder:
    found = Violations()
    scene = _bill_header(found, request)
    insured = request.HasField("insurance")
    lines = _charge_lines(found, request.items, insured)
    voucher = _voucher(found, request.patient) if insured else None
    terms = _insurance_terms(found, request.insurance) if insured else None
    found.raise_if_any()
    assert scene is not None
    if scene not in OFFERED_SCENES:
        raise NotOffered(f"scene {scene} is not offered in this release")
    return commands.CreatePaymentOrder(
        request_id=request.request_id, his_order_no=request.his_order_no.strip(), scene=scene,
        campus_code=request.campus_code.strip(), dept_code=request.dept_code,
        his_patient_id=request.patient.his_patient_id,
        masked_cert_no=voucher.cert_no.masked if voucher else "", lines=lines, voucher=voucher,
        insurance=terms, doctor_code=request.doctor_code, doctor_name=request.doctor_name,
    )  # fmt: skip


def _charge_lines(
    found: Violations, items: Sequence[common_pb2.ChargeItem], insured: bool
) -> tuple[ChargeLine, ...]:
    found.require(0 < len(items) <= MAX_ITEMS, "items", f"required: 1 to {MAX_ITEMS} charge items")
    lines = tuple(_charge_line(found, f"items[{i}]", item, i, insured) for i, item in enumerate(items))
    seen: set[str] = set()
    for i, line in enumerate(lines):
        found.require(line.line_no not in seen, f"items[{i}].line_no", "must be unique within the bill")
        seen.add(line.line_no)
    bill = sum(max(item.line_total_fen, 0) for item in items)
    found.require(bill <= MAX_BILL_FEN, "items", f"bill total must not exceed {MAX_BILL_FEN} fen")
    return lines


def _charge_line(
    found: Violations, at: str, item: common_pb2.ChargeItem, index: int, insured: bool
) -> ChargeLine:
    found.require_text(item.hospital_code, f"{at}.hospital_code")
    if insured:
        found.require_text(item.national_code, f"{at}.national_code", 64)
    _max_lengths(found, at, item, {"national_code": 64, "name": 128, "chrgitm_lv": 4, "med_chrgitm_type": 8,
                                   "dept_code": 32, "doctor_code": 32, "line_no": 32})  # fmt: skip
    found.require(item.quantity_ten_thousandths > 0, f"{at}.quantity_ten_thousandths", "must be > 0")
    found.require(item.unit_price_fen >= 0, f"{at}.unit_price_fen", "must be >= 0")
    found.require(0 < item.line_total_fen <= MAX_BILL_FEN, f"{at}.line_total_fen", "must be > 0")
    if (
        item.unit_price_fen >= 0
        and item.quantity_ten_thousandths > 0
        and 0 < item.line_total_fen <= MAX_BILL_FEN
    ):
        _require_line_total(found, at, item)
    return ChargeLine(
        line_no=item.line_no or str(index + 1), hospital_code=item.hospital_code,
        national_code=item.national_code, name=item.name, chrgitm_lv=item.chrgitm_lv,
        med_chrgitm_type=item.med_chrgitm_type, quantity_ten_thousandths=item.quantity_ten_thousandths,
        unit_price=Money(item.unit_price_fen), line_total=Money(item.line_total_fen),
        dept_code=item.dept_code, doctor_code=item.doctor_code,
    )  # fmt: skip


def _require_line_total(found: Violations, at: str, item: common_pb2.ChargeItem) -> None:
    """The same rule for a self-pay bill as the insurer applies to an insured one (no tolerance):
    quantity × unit price rounded half-up to the fen."""
    expected = line_total(item.quantity_ten_thousandths, Money(item.unit_price_fen))
    found.require(
        expected.fen == item.line_total_fen,
        f"{at}.line_total_fen",
        f"must equal quantity x unit price rounded half-up to the fen = {expected.fen} fen",
    )


def _max_lengths(found: Violations, at: str, message: Message, limits: dict[str, int]) -> None:
    for name, limit in limits.items():
        path = f"{at}.{name}" if at else name
        found.require(len(getattr(message, name)) <= limit, path, f"at most {limit} chars")


def _voucher(found: Violations, patient: common_pb2.Patient) -> Voucher | None:
    at = "patient.voucher"
    if not patient.HasField("voucher"):
        found.add(at, "required for an insured order")
        return None
    voucher = patient.voucher
    found.require_text(voucher.mdtrt_cert_type, f"{at}.mdtrt_cert_type", 3)
    found.require_text(voucher.mdtrt_cert_no, f"{at}.mdtrt_cert_no", 64)
    if voucher.mdtrt_cert_type == CARD_CERT_TYPE:
        found.require_text(voucher.card_sn, f"{at}.card_sn", 64)
    _max_lengths(found, at, voucher, {"card_sn": 64, "psn_cert_type": 3, "psn_name": 64})
    return Voucher(
        cert_type=voucher.mdtrt_cert_type,
        cert_no=PatientIdentifier(voucher.mdtrt_cert_no),
        card_sn=PatientIdentifier(voucher.card_sn),
        psn_cert_type=voucher.psn_cert_type or "01",
        psn_name=PatientIdentifier(voucher.psn_name, kind="name"),
    )


def _insurance_terms(found: Violations, insurance: payment_pb2.InsuranceRequest) -> commands.InsuranceTerms:
    found.require_text(insurance.med_type, "insurance.med_type", 8)
    _max_lengths(found, "insurance", insurance,
                 {"insutype": 8, "insuplc_admdvs": 12, "dise_codg": 32, "dise_name": 128})  # fmt: skip
    return commands.InsuranceTerms(
        insutype=insurance.insutype, med_type=insurance.med_type,
        use_personal_account=insurance.use_personal_account, insuplc_admdvs=insurance.insuplc_admdvs,
        dise_codg=insurance.dise_codg, dise_name=insurance.dise_name,
    )  # fmt: skip


# ---- the other RPCs ---------------------------------------------------------------------------------


def pay_order(request: payment_pb2.PayPaymentOrderRequest) -> commands.PayPaymentOrder:
    found = Violations()
    found.require_text(request.order_id, "order_id", 40)
    channel = _enum_name(payment_pb2.Channel, request.channel, "CHANNEL_")
    found.require(channel not in (None, "UNSPECIFIED"), "channel", "required: one of the Channel values")
    method = _enum_name(payment_pb2.PayMethod, request.method, "PAY_METHOD_")
    needs_method = channel != CHANNEL_NONE
    found.require(method is not None and (method != "UNSPECIFIED" or not needs_method), "method", "required")
    found.require(len(request.description) <= 127, "description", "at most 127 chars")
    found.require(0 <= request.amount_fen <= MAX_BILL_FEN, "amount_fen", "must be >= 0 (0 = what remains)")
    found.require(
        request.amount_fen <= 0 or channel != CHANNEL_NONE, "amount_fen", "must be 0 with CHANNEL_NONE"
    )
    _payer(found, request, str(channel), str(method))
    slip = _at_window(found, request, str(channel), str(method))
    _from_deposit(found, request, str(channel), str(method))
    found.raise_if_any()
    code = PatientIdentifier(request.auth_code, kind="payment_code") if request.auth_code else None
    return commands.PayPaymentOrder(
        request.request_id, request.order_id, str(channel), str(method), request.description.strip(),
        Money(request.amount_fen), auth_code=code, payer_openid=request.payer_openid,
        operator_id=request.operator_id, pos=slip, inpatient_no=request.inpatient_no,
    )  # fmt: skip


def _from_deposit(
    found: Violations, request: payment_pb2.PayPaymentOrderRequest, channel: str, method: str
) -> None:
    """CHANNEL_DEPOSIT is paid by PAY_METHOD_DEPOSIT from the account its inpatient_no names."""
    deposit = channel == CHANNEL_DEPOSIT or method == METHOD_DEPOSIT
    if deposit:
        found.require(channel == method, "method", "CHANNEL_DEPOSIT is paid by PAY_METHOD_DEPOSIT")
        _inpatient_no(found, request.inpatient_no)
    else:
        found.require(not request.inpatient_no, "inpatient_no", "only for CHANNEL_DEPOSIT")


def _at_window(
    found: Violations, request: payment_pb2.PayPaymentOrderRequest, channel: str, method: str
) -> PosSlip | None:
    """Money taken at the window (CASH, POS): how much is known (no "what remains"), and who took
    it; a POS payment carries its terminal slip, nothing else does."""
    window = method in WINDOW or channel in WINDOW
    if window:
        found.require(channel == method, "method", f"CHANNEL_{channel} is paid by PAY_METHOD_{channel}")
        found.require(request.amount_fen > 0, "amount_fen", "required for money taken at the window: > 0")
    operator = request.operator_id
    if window or operator:
        found.require(bool(OPERATOR_ID.fullmatch(operator)), "operator_id",
                      "required for CASH and POS: 1 to 32 of [A-Za-z0-9_-]")  # fmt: skip
    if method != "POS":
        found.require(not request.HasField("pos"), "pos", "only for PAY_METHOD_POS")
        return None
    if not request.HasField("pos"):
        found.add("pos.reference_no", "required for PAY_METHOD_POS: the terminal's reference number")
        return None
    return pos_slip(found, request.pos)


def pos_slip(found: Violations, slip: payment_pb2.PosSlip, at: str = "pos") -> PosSlip:
    found.require(bool(POS_REFERENCE.fullmatch(slip.reference_no)), f"{at}.reference_no",
                  "required: the terminal's reference number (参考号), 6 to 20 digits")  # fmt: skip
    found.require(bool(POS_TERMINAL.fullmatch(slip.terminal_id)), f"{at}.terminal_id",
                  "required: the terminal id (终端号), 1 to 16 letters or digits")  # fmt: skip
    found.require(bool(POS_BATCH.fullmatch(slip.batch_no)), f"{at}.batch_no",
                  "required: the batch number (批次号), 1 to 6 digits")  # fmt: skip
    found.require(not slip.masked_card_no or bool(MASKED_CARD.fullmatch(slip.masked_card_no)),
                  f"{at}.masked_card_no", "12 to 19 digits and '*', masked (at least one '*')")  # fmt: skip
    return PosSlip(slip.reference_no, slip.terminal_id, slip.batch_no, slip.masked_card_no)


def confirm_window_refund(request: payment_pb2.ConfirmWindowRefundRequest) -> commands.ConfirmWindowRefund:
    found = Violations()
    found.require_text(request.order_id, "order_id", 40)
    found.require_text(request.refund_id, "refund_id", 40)
    found.require(bool(OPERATOR_ID.fullmatch(request.operator_id)), "operator_id",
                  "required: 1 to 32 of [A-Za-z0-9_-]")  # fmt: skip
    slip = pos_slip(found, request.pos) if request.HasField("pos") else None
    found.raise_if_any()
    return commands.ConfirmWindowRefund(
        request.request_id, request.order_id, request.refund_id, request.operator_id, slip
    )


def _payer(found: Violations, request: payment_pb2.PayPaymentOrderRequest, channel: str, method: str) -> None:
    """The payer's credential each method needs, and none it does not (never echoed back)."""
    if method == "BARCODE":
        shape = PAYMENT_CODES.get(channel, ANY_PAYMENT_CODE)
        found.require(bool(shape.fullmatch(request.auth_code)), "auth_code",
                      "required for PAY_METHOD_BARCODE: the payment code as scanned (WeChat Pay: 18 "
                      "digits starting 10-15; Alipay: 16-24 digits starting 25-30)")  # fmt: skip
    else:
        found.require(not request.auth_code, "auth_code", "only for PAY_METHOD_BARCODE")
    if method == "JSAPI":
        openid = request.payer_openid
        found.require(0 < len(openid) <= MAX_OPENID and openid == openid.strip(), "payer_openid",
                      f"required for PAY_METHOD_JSAPI: 1 to {MAX_OPENID} chars")  # fmt: skip
    else:
        found.require(not request.payer_openid, "payer_openid", "only for PAY_METHOD_JSAPI")


def close_order(request: payment_pb2.ClosePaymentOrderRequest) -> commands.ClosePaymentOrder:
    found = Violations()
    found.require_text(request.order_id, "order_id", 40)
    found.require(len(request.reason) <= 256, "reason", "at most 256 chars")
    found.raise_if_any()
    return commands.ClosePaymentOrder(
        request.request_id, request.order_id, request.reason or "closed by the HIS"
    )


def refund_order(request: payment_pb2.RefundPaymentOrderRequest) -> commands.RefundPaymentOrder:
    found = Violations()
    found.require_text(request.order_id, "order_id", 40)
    found.require(request.cash_fen >= 0, "cash_fen", "must be >= 0 (0 = refund in full)")
    found.require_text(request.reason, "reason", 256)
    found.require(len(request.operator_id) <= 32, "operator_id", "at most 32 chars")
    partial = request.cash_fen > 0 or bool(request.lines)
    found.require(
        not partial or bool(request.operator_id.strip()),
        "operator_id",
        "required for a partial refund (cash_fen > 0, or lines)",
    )
    found.require(len(request.lines) <= MAX_REFUND_LINES, "lines", f"at most {MAX_REFUND_LINES}")
    for index, line in enumerate(request.lines):
        found.require_text(line.line_no, f"lines[{index}].line_no", 30)
        found.require(
            line.quantity_ten_thousandths >= 0,
            f"lines[{index}].quantity_ten_thousandths",
            "must be >= 0 (0 = all)",
        )
    found.raise_if_any()
    lines = tuple(RefundedLine(line.line_no, line.quantity_ten_thousandths) for line in request.lines)
    return commands.RefundPaymentOrder(
        request.request_id, request.order_id, Money(request.cash_fen), request.reason,
        request.operator_id.strip(), lines,
    )  # fmt: skip


def order_id(request: payment_pb2.GetPaymentOrderRequest | payment_pb2.WatchPaymentOrderRequest) -> str:
    found = Violations()
    found.require_text(request.order_id, "order_id", 40)
    found.raise_if_any()
    return str(request.order_id)


def list_orders(request: payment_pb2.ListPaymentOrdersRequest) -> commands.ListPaymentOrders:
    found = Violations()
    page_size = found.page_size(request.page_size, default=50, maximum=500)
    status = _enum_name(payment_pb2.OrderStatus, request.status, "ORDER_STATUS_")
    found.require(status is not None, "status", "not an OrderStatus value")
    day = found.business_date(request.business_date) if request.business_date else None
    found.require(len(request.his_patient_id) <= 64, "his_patient_id", "at most 64 chars")
    found.raise_if_any()
    wanted = OrderStatus(status).value if status and status != "UNSPECIFIED" else None
    cursor = decode_page_token(request.page_token)
    return commands.ListPaymentOrders(page_size, cursor, wanted, day, request.his_patient_id)


def export_transactions(request: payment_pb2.ExportTransactionsRequest) -> commands.ExportTransactions:
    found = Violations()
    day = found.business_date(request.business_date)
    page_size = found.page_size(request.page_size, default=500, maximum=1000)
    found.raise_if_any()
    assert day is not None
    return commands.ExportTransactions(day, page_size, decode_page_token(request.page_token))


def close_cashier_shift(request: payment_pb2.CloseCashierShiftRequest) -> commands.CloseCashierShift:
    found = Violations()
    found.require(bool(OPERATOR_ID.fullmatch(request.cashier_id)), "cashier_id",
                  "required: 1 to 32 of [A-Za-z0-9_-]")  # fmt: skip
    found.require_text(request.campus_code, "campus_code", 32)
    closed_at = rfc3339(found, request.closed_at, "closed_at")
    found.raise_if_any()
    assert closed_at is not None
    return commands.CloseCashierShift(
        request.request_id, request.cashier_id, request.campus_code.strip(), closed_at
    )


def rfc3339(found: Violations, value: str, field: str) -> datetime | None:
    """An RFC 3339 date-time with its offset, as an aware UTC datetime, within the platform's years."""
    moment = None
    if RFC3339.fullmatch(value):
        try:
            moment = datetime.fromisoformat(value.upper()).astimezone(UTC)
        except (ValueError, OverflowError):
            moment = None
    if moment is None:
        found.add(field, "required: an RFC 3339 date-time with offset, e.g. 2026-12-02T18:00:00+08:00")
    elif not FIRST_BUSINESS_DATE <= moment.date() <= LAST_BUSINESS_DATE:
        found.add(field, f"must be between {FIRST_BUSINESS_DATE} and {LAST_BUSINESS_DATE}")
        moment = None
    return moment


# ---- Deposits ---------------------------------------------------------------------------------------

INPATIENT_NO = re.compile(r"^[A-Za-z0-9_-]{1,30}$")
# 1,000,000 yuan: far above any inpatient deposit a cashier would take in one go.
MAX_TOP_UP_FEN = 100_000_000
# (channel, method) a top-up is taken through: at the window, or a QR code the patient scans.
TOP_UP_METHODS = frozenset(
    {("CASH", "CASH"), ("POS", "POS"), ("WECHAT_PAY", "NATIVE_QR"), ("ALIPAY", "NATIVE_QR")}
)


def _inpatient_no(found: Violations, inpatient_no: str) -> None:
    found.require(bool(INPATIENT_NO.fullmatch(inpatient_no)), "inpatient_no",
                  "required: the 住院号, 1 to 30 of [A-Za-z0-9_-]")  # fmt: skip


def top_up_deposit(request: payment_pb2.TopUpDepositRequest) -> commands.TopUpDeposit:
    found = Violations()
    _inpatient_no(found, request.inpatient_no)
    found.require(0 < request.amount_fen <= MAX_TOP_UP_FEN, "amount_fen",
                  f"required: 1 to {MAX_TOP_UP_FEN} fen")  # fmt: skip
    found.require_text(request.campus_code, "campus_code", 32)
    found.require_text(request.his_patient_id, "his_patient_id", 64)
    channel = _enum_name(payment_pb2.Channel, request.channel, "CHANNEL_")
    found.require(channel not in (None, "UNSPECIFIED", CHANNEL_NONE), "channel",
                  "required: CHANNEL_CASH, CHANNEL_POS, CHANNEL_WECHAT_PAY or CHANNEL_ALIPAY")  # fmt: skip
    method = _enum_name(payment_pb2.PayMethod, request.method, "PAY_METHOD_")
    # At the window the method must be the channel's own, which _at_window says.
    found.require(method not in (None, "UNSPECIFIED") or channel in WINDOW, "method", "required")
    # The window's rules (cashier, slip) are the same as for paying an order; the amount was checked
    # above (always > 0 for a top-up), so it is not reported twice.
    as_payment = payment_pb2.PayPaymentOrderRequest(amount_fen=1, operator_id=request.operator_id)
    if request.HasField("pos"):
        as_payment.pos.CopyFrom(request.pos)
    slip = _at_window(found, as_payment, str(channel), str(method))
    found.raise_if_any()
    if (channel, method) not in TOP_UP_METHODS:
        raise NotOffered(f"a deposit top-up through {channel} / {method} is not offered in this release")
    return commands.TopUpDeposit(
        request.request_id, request.inpatient_no, request.campus_code, request.his_patient_id,
        Money(request.amount_fen), str(channel), str(method), operator_id=request.operator_id, pos=slip,
    )  # fmt: skip


def deposit_account(request: payment_pb2.GetDepositAccountRequest) -> str:
    found = Violations()
    _inpatient_no(found, request.inpatient_no)
    found.raise_if_any()
    return str(request.inpatient_no)


def refund_deposit(request: payment_pb2.RefundDepositRequest) -> commands.RefundDeposit:
    found = Violations()
    _inpatient_no(found, request.inpatient_no)
    found.require(
        0 <= request.amount_fen <= MAX_BILL_FEN, "amount_fen", "must be >= 0 (0 = all of the balance)"
    )
    found.require_text(request.reason, "reason", 256)
    found.require(len(request.operator_id) <= 32, "operator_id", "at most 32 chars")
    found.raise_if_any()
    return commands.RefundDeposit(
        request.request_id, request.inpatient_no, Money(request.amount_fen), request.reason.strip(),
        request.operator_id.strip(),
    )  # fmt: skip


def settle_discharge(request: payment_pb2.SettleDischargeRequest) -> commands.SettleDischarge:
    found = Violations()
    _inpatient_no(found, request.inpatient_no)
    found.require_text(request.campus_code, "campus_code", 32)
    found.require_text(request.patient.his_patient_id, "patient.his_patient_id", 64)
    found.require(len(request.dept_code) <= 32, "dept_code", "at most 32 chars")
    insured = request.HasField("insurance")
    lines = _charge_lines(found, request.items, insured)
    discharged_at = rfc3339(found, request.discharged_at, "discharged_at")
    found.raise_if_any()
    if insured:
        raise NotOffered("the insured discharge (2401/2301/2303/2304) is not offered in this release")
    assert discharged_at is not None
    return commands.SettleDischarge(
        request.request_id, request.inpatient_no, request.campus_code.strip(), request.dept_code,
        request.patient.his_patient_id, lines, discharged_at,
    )  # fmt: skip
