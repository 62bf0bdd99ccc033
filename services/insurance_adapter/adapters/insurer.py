"""The `Insurer` port over NhsaClient: domain values in, NHSA transformers out, and the client's
three failure kinds turned into the mesh's errors (scrubbed: an err_msg may quote an ID number)."""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TypeVar

from services.insurance_adapter.adapters import nhsa
from services.insurance_adapter.adapters.message_log import MessageLog
from services.insurance_adapter.adapters.nhsa.transformers import (
    FeeLine,
    PersonInfo,
    SettlementRequest,
    StatementTotals,
)
from services.insurance_adapter.adapters.nhsa.transformers import SettlementBreakdown as NhsaBreakdown
from services.insurance_adapter.domain.bill import OutpatientBill
from services.insurance_adapter.domain.message_log import ExchangeOutcome, InsurerExchange, masked_json
from services.insurance_adapter.domain.person import Enrollment, InsuredPerson, PatientVoucher
from services.insurance_adapter.domain.settlement import InsuredVisit, SettlementBreakdown
from services.insurance_adapter.domain.totals import DayTotals
from services.insurance_adapter.service_layer.ports import InsurerSettlement, TotalsAnswer, TotalsRequest
from services.runtime import errors
from services.runtime.clock import HOSPITAL_TZ, utcnow
from services.runtime.interceptors import outbound_timeout
from services.runtime.masking import scrub
from services.runtime.money import Money

T = TypeVar("T")
_BREAKDOWN = SettlementBreakdown.field_names()
REFUNDED = "1"  # refd_setl_flag


class NhsaInsurer:
    """One region's insurance platform, reached through the NHSA JSON interface."""

    def __init__(self, client: nhsa.NhsaClient, timeout_s: float) -> None:
        self._client = client
        self._timeout_s = timeout_s

    def new_msgid(self) -> str:
        return self._client.new_msgid()

    async def query_person(self, voucher: PatientVoucher) -> InsuredPerson:
        card_sn = voucher.card_sn.reveal() if voucher.card_sn else None
        info = await _call(
            self._client.query_person(
                voucher.mdtrt_cert_type,
                voucher.mdtrt_cert_no,
                card_sn,
                psn_cert_type=voucher.psn_cert_type,
                timeout_s=self._timeout(),
            )
        )
        return _person(info)

    async def register_visit(self, visit: InsuredVisit, bill: OutpatientBill, at: datetime) -> str:
        registration = await _call(
            self._client.register_visit(
                psn_no=visit.psn_no,
                insutype=visit.insutype,
                insuplc_admdvs=visit.insuplc_admdvs,
                mdtrt_cert_type=visit.mdtrt_cert_type,
                mdtrt_cert_no=visit.mdtrt_cert_no,
                ipt_otp_no=visit.visit_no,
                begntime=at.astimezone(HOSPITAL_TZ),
                dept_code=bill.dept_code,
                dept_name=bill.dept_name,
                atddr_no=bill.doctor_code,
                dr_name=bill.doctor_name,
                timeout_s=self._timeout(),
            )
        )
        return registration.mdtrt_id

    async def upload_fees(self, visit: InsuredVisit, chrg_bchno: str, bill: OutpatientBill) -> None:
        lines = _fee_lines(visit, chrg_bchno, bill, utcnow().astimezone(HOSPITAL_TZ))
        await _call(
            self._client.upload_fee_details(
                lines, insuplc_admdvs=visit.insuplc_admdvs, timeout_s=self._timeout()
            )
        )

    async def revoke_fees(self, visit: InsuredVisit, chrg_bchno: str) -> None:
        await _call(
            self._client.revoke_fee_details(
                mdtrt_id=visit.mdtrt_id,
                psn_no=visit.psn_no,
                insuplc_admdvs=visit.insuplc_admdvs,
                chrg_bchno=chrg_bchno,
                timeout_s=self._timeout(),
            )
        )

    async def presettle(
        self, visit: InsuredVisit, chrg_bchno: str, bill: OutpatientBill
    ) -> SettlementBreakdown:
        request = _settlement_request(visit, chrg_bchno, bill.total)
        return _breakdown(await _call(self._client.presettle(request, timeout_s=self._timeout())))

    async def settle(
        self,
        visit: InsuredVisit,
        chrg_bchno: str,
        presettled: SettlementBreakdown,
        invoice_no: str,
        msgid: str,
    ) -> InsurerSettlement:
        request = _settlement_request(visit, chrg_bchno, presettled.medfee_sumamt)
        booked = await _call(
            self._client.settle(
                request,
                _nhsa_breakdown(presettled),
                invono=invoice_no,
                msgid=msgid,
                timeout_s=self._timeout(),
            )
        )
        return _settlement(booked)

    async def revoke_settlement(self, visit: InsuredVisit, setl_id: str) -> InsurerSettlement:
        offset = await _call(
            self._client.revoke_settlement(
                setl_id=setl_id,
                mdtrt_id=visit.mdtrt_id,
                psn_no=visit.psn_no,
                insuplc_admdvs=visit.insuplc_admdvs,
                timeout_s=self._timeout(),
            )
        )
        return _settlement(offset)

    async def find_settlement(self, psn_no: str, msgid: str) -> InsurerSettlement | None:
        found = await _call(
            self._client.query_settlement(psn_no=psn_no, medins_setl_id=msgid, timeout_s=self._timeout())
        )
        return _settlement(found) if found is not None else None

    async def reconcile_totals(self, request: TotalsRequest) -> TotalsAnswer:
        ours = request.totals
        totals = StatementTotals(
            ours.medfee_sumamt, ours.fund_pay_sumamt, ours.acct_pay, ours.settlement_count
        )
        result = await _call(
            self._client.reconcile_totals(
                insutype=request.insutype,
                clr_type=request.clr_type,
                setl_optins=request.setl_optins,
                stmt_begndate=request.business_date,
                stmt_enddate=request.business_date,
                totals=totals,
                timeout_s=self._timeout(),
            )
        )
        theirs = result.insurer_totals
        insurer = (
            DayTotals(theirs.medfee_sumamt, theirs.fund_pay_sumamt, theirs.acct_pay, theirs.setl_cnt)
            if theirs is not None
            else None
        )
        return TotalsAnswer(result.stmt_rslt, scrub(result.stmt_rslt_dscr), insurer)

    def _timeout(self) -> float:
        """The configured deadline, clamped to what our own caller has left."""
        return outbound_timeout(self._timeout_s)


async def _call(pending: Awaitable[T]) -> T:
    try:
        return await pending
    except nhsa.InsurerRejected as refused:
        detail = scrub(refused.err_msg)
        raise errors.InsurerRejected(
            f"the insurer refused {refused.infno}: {detail}", {"infno": refused.infno, "err_msg": detail}
        ) from refused
    except nhsa.InsurerUnavailable as unreachable:
        raise errors.InsurerUnavailable(
            f"the insurer could not be reached for {unreachable.infno}: {scrub(unreachable.detail)}",
            {"infno": unreachable.infno},
        ) from unreachable
    except nhsa.InsurerOutcomeUnknown as lost:
        raise errors.OutcomeUnknown(
            f"{lost.infno} was sent but its outcome is unknown: {scrub(lost.detail)}",
            {"infno": lost.infno, "msgid": lost.msgid},
        ) from lost


def exchange_recorder(log: MessageLog) -> nhsa.ExchangeRecorder:
    """The client's on_exchange: mask, then file the exchange in the message log."""

    async def record(
        infno: str,
        msgid: str,
        request_json: str,
        response_json: str | None,
        outcome: nhsa.ExchangeOutcome,
        elapsed_ms: int,
    ) -> None:
        sent_at = utcnow() - timedelta(milliseconds=elapsed_ms)
        exchange = InsurerExchange(
            msgid=msgid,
            infno=infno,
            outcome=ExchangeOutcome(outcome.value),
            request_json=masked_json(request_json),
            response_json=masked_json(response_json),
            elapsed_ms=elapsed_ms,
            sent_at=sent_at,
        )
        await log.record(exchange)

    return record


def _person(info: PersonInfo) -> InsuredPerson:
    return InsuredPerson(
        psn_no=info.psn_no,
        certno=info.certno,
        psn_name=info.psn_name,
        gend=info.gend,
        age=int(info.age) if info.age is not None else 0,
        enrollments=tuple(
            Enrollment(item.insutype, item.psn_type, item.insuplc_admdvs, item.balc, item.psn_insu_stas)
            for item in info.enrolments
        ),
    )


def fee_detail_sn(chrg_bchno: str, position: int) -> str:
    """费用明细流水号 feedetl_sn. The insurer keys fee lines by visit (mdtrt_id), and a visit can get
    a second batch (a new pre-settlement after a refused 2207), so the number is made from the batch
    and the line's position, never from the HIS line number alone (≤ 30 chars)."""
    return f"{chrg_bchno[-20:]}-{position:04d}"


def _fee_lines(visit: InsuredVisit, chrg_bchno: str, bill: OutpatientBill, at: datetime) -> list[FeeLine]:
    return [
        FeeLine(
            feedetl_sn=fee_detail_sn(chrg_bchno, position),
            mdtrt_id=visit.mdtrt_id,
            psn_no=visit.psn_no,
            chrg_bchno=chrg_bchno,
            med_list_codg=line.national_code,
            medins_list_codg=line.hospital_code,
            det_item_fee_sumamt=line.line_total,
            cnt=Decimal(line.quantity_ten_thousandths).scaleb(-4),  # ten-thousandths → NHSA cnt (16,4)
            pric=line.unit_price,
            fee_ocur_time=at,
            bilg_dept_codg=line.dept_code or bill.dept_code,
            bilg_dept_name=bill.dept_name,
            bilg_dr_codg=line.doctor_code or bill.doctor_code,
            bilg_dr_name=bill.doctor_name,
            dise_codg=bill.dise_codg,
        )
        for position, line in enumerate(bill.lines, start=1)
    ]


def _settlement_request(visit: InsuredVisit, chrg_bchno: str, medfee: Money) -> SettlementRequest:
    return SettlementRequest(
        psn_no=visit.psn_no,
        mdtrt_id=visit.mdtrt_id,
        chrg_bchno=chrg_bchno,
        insutype=visit.insutype,
        insuplc_admdvs=visit.insuplc_admdvs,
        mdtrt_cert_type=visit.mdtrt_cert_type,
        mdtrt_cert_no=visit.mdtrt_cert_no,
        medfee_sumamt=medfee,
        med_type=visit.med_type,
        acct_used_flag=visit.use_personal_account,
    )


def _breakdown(answer: NhsaBreakdown) -> SettlementBreakdown:
    return SettlementBreakdown(**{name: getattr(answer, name) for name in _BREAKDOWN})


def _nhsa_breakdown(breakdown: SettlementBreakdown) -> NhsaBreakdown:
    return NhsaBreakdown(**{name: getattr(breakdown, name) for name in _BREAKDOWN})


def _settlement(answer: NhsaBreakdown) -> InsurerSettlement:
    return InsurerSettlement(
        setl_id=answer.setl_id or "",
        breakdown=_breakdown(answer),
        settled_at=_beijing_time(answer.setl_time),
        refunded=answer.refd_setl_flag == REFUNDED,
    )


def _beijing_time(text: str) -> datetime | None:
    """setl_time is 'yyyy-MM-dd HH:mm:ss' in Beijing time; absent or unreadable → None."""
    try:
        return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=HOSPITAL_TZ)
    except ValueError:
        return None
