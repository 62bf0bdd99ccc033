"""proto <-> domain for the insurance-adapter. No decisions here, only translation."""

from __future__ import annotations

from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp
from medpay.common.v1 import common_pb2
from medpay.insurance.v1 import insurance_pb2

from services.insurance_adapter.domain import commands
from services.insurance_adapter.domain.bill import ChargeLine, OutpatientBill
from services.insurance_adapter.domain.message_log import InsurerExchange
from services.insurance_adapter.domain.person import InsuredPerson, PatientVoucher
from services.insurance_adapter.domain.settlement import Settlement, SettlementBreakdown, SettlementStatus
from services.insurance_adapter.domain.totals import TotalsStatement
from services.runtime.masking import PatientIdentifier
from services.runtime.money import Money

S = SettlementStatus
P = insurance_pb2
# The pre-settlement's recovery points are not states a caller can act on: they show as UNSPECIFIED.
_STATUS_TO_PROTO = {
    S.VISIT_REGISTERED: P.SETTLEMENT_STATUS_UNSPECIFIED,
    S.FEES_UPLOADED: P.SETTLEMENT_STATUS_UNSPECIFIED,
    S.PRESETTLED: P.SETTLEMENT_STATUS_PRESETTLED,
    S.SETTLING: P.SETTLEMENT_STATUS_UNKNOWN,
    S.UNKNOWN: P.SETTLEMENT_STATUS_UNKNOWN,
    S.SETTLED: P.SETTLEMENT_STATUS_SETTLED,
    S.FAILED: P.SETTLEMENT_STATUS_FAILED,
    S.CANCELLED: P.SETTLEMENT_STATUS_CANCELLED,
    S.REVOKED: P.SETTLEMENT_STATUS_REVOKED,
}
_IN_PROGRESS_REASON = {
    S.VISIT_REGISTERED: "pre-settlement in progress: visit registered (2201)",
    S.FEES_UPLOADED: "pre-settlement in progress: fee details uploaded (2204)",
}


def statuses_from_proto(
    status: insurance_pb2.SettlementStatus.ValueType,
) -> frozenset[SettlementStatus] | None:
    """The domain statuses a list filter means; None = no filter."""
    if status == P.SETTLEMENT_STATUS_UNSPECIFIED:
        return None
    return frozenset(domain for domain, public in _STATUS_TO_PROTO.items() if public == status)


def voucher_from_proto(voucher: common_pb2.PatientVoucher) -> PatientVoucher:
    return PatientVoucher(
        mdtrt_cert_type=voucher.mdtrt_cert_type,
        mdtrt_cert_no=PatientIdentifier(voucher.mdtrt_cert_no.strip()),
        card_sn=PatientIdentifier(voucher.card_sn.strip()) if voucher.card_sn.strip() else None,
        psn_cert_type=voucher.psn_cert_type or "01",
        psn_name=PatientIdentifier(voucher.psn_name.strip(), "name") if voucher.psn_name.strip() else None,
    )


def presettle_from_proto(request: insurance_pb2.PresettleRequest) -> commands.Presettle:
    bill = OutpatientBill(
        insutype=request.insutype,
        med_type=request.med_type,
        use_personal_account=request.use_personal_account,
        visit_no=request.visit_no,
        dept_code=request.dept_code,
        dept_name=request.dept_name,
        doctor_code=request.doctor_code,
        doctor_name=request.doctor_name,
        dise_codg=request.dise_codg,
        dise_name=request.dise_name,
        insuplc_admdvs=request.insuplc_admdvs,
        lines=tuple(_line_from_proto(item) for item in request.items),
    )
    return commands.Presettle(request.order_ref, voucher_from_proto(request.voucher), bill)


def represettle_from_proto(request: insurance_pb2.PresettleRequest) -> commands.Represettle:
    return commands.Represettle(
        order_ref=request.order_ref,
        revoked_settlement_id=request.after_revoked_settlement_id,
        lines=tuple(_line_from_proto(item) for item in request.items),
    )


def _line_from_proto(item: common_pb2.ChargeItem) -> ChargeLine:
    return ChargeLine(
        line_no=item.line_no,
        hospital_code=item.hospital_code,
        national_code=item.national_code,
        name=item.name,
        chrgitm_lv=item.chrgitm_lv,
        med_chrgitm_type=item.med_chrgitm_type,
        quantity_ten_thousandths=item.quantity_ten_thousandths,
        unit_price=Money(item.unit_price_fen),
        line_total=Money(item.line_total_fen),
        dept_code=item.dept_code,
        doctor_code=item.doctor_code,
    )


def settlement_to_proto(settlement: Settlement) -> insurance_pb2.Settlement:
    visit = settlement.visit
    message = insurance_pb2.Settlement(
        settlement_id=settlement.settlement_id,
        order_ref=settlement.order_ref,
        status=_STATUS_TO_PROTO[settlement.status],
        psn_no=visit.psn_no,
        insutype=visit.insutype,
        med_type=visit.med_type,
        mdtrt_id=visit.mdtrt_id,
        chrg_bchno=settlement.chrg_bchno,
        setl_id=settlement.setl_id,
        status_reason=settlement.status_reason or _IN_PROGRESS_REASON.get(settlement.status, ""),
    )
    if settlement.breakdown is not None:
        message.breakdown.CopyFrom(breakdown_to_proto(settlement.breakdown))
    for field, moment in (
        ("presettled_at", settlement.presettled_at),
        ("settled_at", settlement.settled_at),
        ("revoked_at", settlement.revoked_at),
    ):
        if moment is not None:
            getattr(message, field).CopyFrom(timestamp(moment))
    return message


def breakdown_to_proto(breakdown: SettlementBreakdown) -> common_pb2.SettlementBreakdown:
    return common_pb2.SettlementBreakdown(
        **{f"{name}_fen": getattr(breakdown, name).fen for name in SettlementBreakdown.field_names()}
    )


def person_to_proto(person: InsuredPerson) -> insurance_pb2.InsuredPerson:
    return insurance_pb2.InsuredPerson(
        psn_no=person.psn_no,
        masked_cert_no=person.certno.masked,
        masked_name=person.psn_name.masked,
        gend=person.gend,
        age=person.age,
        enrollments=[
            insurance_pb2.InsuranceEnrollment(
                insutype=item.insutype,
                psn_type=item.psn_type,
                insuplc_admdvs=item.insuplc_admdvs,
                balance_fen=item.balance.fen,
                psn_insu_stas=item.psn_insu_stas,
            )
            for item in person.enrollments
        ],
    )


def statement_to_proto(statement: TotalsStatement) -> insurance_pb2.TotalsStatement:
    platform, insurer = statement.platform, statement.insurer
    message = insurance_pb2.TotalsStatement(
        insutype=statement.insutype,
        clr_type=statement.clr_type,
        setl_optins=statement.setl_optins,
        medfee_sumamt_fen=platform.medfee_sumamt.fen,
        fund_pay_sumamt_fen=platform.fund_pay_sumamt.fen,
        acct_pay_fen=platform.acct_pay.fen,
        settlement_count=platform.settlement_count,
        stmt_rslt=statement.stmt_rslt,
        stmt_rslt_dscr=statement.stmt_rslt_dscr,
        balanced=statement.balanced,
    )
    if insurer is not None:
        message.insurer_medfee_sumamt_fen = insurer.medfee_sumamt.fen
        message.insurer_fund_pay_sumamt_fen = insurer.fund_pay_sumamt.fen
        message.insurer_acct_pay_fen = insurer.acct_pay.fen
        message.insurer_settlement_count = insurer.settlement_count
    return message


def message_to_proto(exchange: InsurerExchange) -> insurance_pb2.InsurerMessage:
    return insurance_pb2.InsurerMessage(
        msgid=exchange.msgid,
        infno=exchange.infno,
        outcome=exchange.outcome.value,
        request_json=exchange.request_json,
        response_json=exchange.response_json,
        elapsed_ms=exchange.elapsed_ms,
        sent_at=timestamp(exchange.sent_at),
        order_ref=exchange.order_ref,
    )


def timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp
