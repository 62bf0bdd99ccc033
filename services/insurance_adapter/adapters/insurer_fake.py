"""An in-memory `Insurer` that keeps the NHSA platform's rules, for tests and demos.

It passes the same conformance suite as NhsaInsurer (tests/contract/test_insurer_conformance.py):
the same three errors with the same metadata, a repeated registration answered with the same
visit, a 2207 answered once per msgid, a batch settled at most once, a revocation booked once as
an offsetting record, 5203 by the settling msgid, 3201 over its own books.

Its policy maths is deliberately simple (no deductible, no annual cap) but the §1.5 identities
always hold: each line is split by the grade the HIS gave it (甲类 in scope, 乙类 10 % first
self-pay, anything else 全自费), the fund pays a fixed ratio of the in-scope amount, and the
personal account (employees only) covers the rest up to its balance. It prices by the bill's own
`chrgitm_lv` rather than by the simulator's catalogue: services do not import the simulators.

`arm(infno, fault)` is the switch to make the next message fail, in the simulator's words
(POST /sim/faults): reject, error (unreachable), timeout (lost, nothing done) and
unknown_after_commit (done, then the answer lost).
"""

from __future__ import annotations

import contextlib
import enum
import itertools
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import TypeVar

from services.insurance_adapter.domain.bill import QUANTITY_SCALE, ChargeLine, OutpatientBill
from services.insurance_adapter.domain.person import VOUCHER_TYPES, InsuredPerson, PatientVoucher
from services.insurance_adapter.domain.settlement import InsuredVisit, SettlementBreakdown
from services.insurance_adapter.domain.totals import BALANCED, DayTotals
from services.insurance_adapter.service_layer.ports import InsurerSettlement, TotalsAnswer, TotalsRequest
from services.runtime import errors
from services.runtime.clock import HOSPITAL_TZ, business_date_of, utcnow
from services.runtime.masking import scrub
from services.runtime.money import Money, total

T = TypeVar("T")
ELECTRONIC_VOUCHER, SOCIAL_SECURITY_CARD = "01", "03"
CLASS_A, CLASS_B = "01", "02"  # 甲类, 乙类; anything else is paid in full by the patient
CLASS_B_FIRST_SELF_PAY = Decimal("0.10")
FUND_RATIO = {"310": Decimal("0.78"), "390": Decimal("0.50")}
PERSONAL_ACCOUNT_INSUTYPES = frozenset({"310"})
OUTPATIENT_CLEARING = "11"
NOT_BALANCED = "1"
_ZERO = Money(0)


class FakeFault(enum.StrEnum):
    REJECT = "reject"  # refused: nothing happened
    ERROR = "error"  # not reached: nothing happened
    TIMEOUT = "timeout"  # sent, nothing happened, the answer never came
    UNKNOWN_AFTER_COMMIT = "unknown_after_commit"  # done, then the answer lost


@dataclass
class _Member:
    person: InsuredPerson
    balance: Money
    ecert_token: str
    card_sn: str


@dataclass(frozen=True, slots=True)
class _Visit:
    mdtrt_id: str
    psn_no: str


@dataclass
class _Booked:
    """A settlement, or the offsetting record of its revocation (negated amounts)."""

    setl_id: str
    is_offset: bool
    psn_no: str
    mdtrt_id: str
    chrg_bchno: str
    insutype: str
    clr_optins: str
    breakdown: SettlementBreakdown
    settled_at: datetime
    revoked_by: str | None = None

    def answer(self) -> InsurerSettlement:
        refunded = self.is_offset or self.revoked_by is not None
        return InsurerSettlement(self.setl_id, self.breakdown, self.settled_at, refunded)


class FakeInsurer:
    """One region's insurance platform, in memory. `enrol` the people it knows first."""

    def __init__(
        self,
        *,
        fixmedins_code: str = "H35010200901",
        admdvs: str = "350100",
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._fixmedins_code = fixmedins_code
        self._admdvs = admdvs
        self._clock = clock
        self._serial = itertools.count(1)
        self._members: dict[str, _Member] = {}
        self._visits: dict[tuple[str, str], _Visit] = {}  # (psn_no, visit_no)
        self._visits_by_id: dict[str, _Visit] = {}
        self._batches: dict[tuple[str, str], dict[str, ChargeLine]] = {}  # (mdtrt_id, chrg_bchno)
        self._books: dict[str, _Booked] = {}  # setl_id, settlements and offsets alike
        self._settled_by_msgid: dict[str, str] = {}  # 2207 msgid → setl_id
        self._answers: dict[str, InsurerSettlement] = {}  # 2207 msgid → its first answer
        self._faults: defaultdict[str, deque[FakeFault]] = defaultdict(deque)

    # test controls

    def enrol(self, person: InsuredPerson, *, ecert_token: str = "", card_sn: str = "") -> None:
        """Know this person (their first enrollment's balance is their personal account)."""
        balance = person.enrollments[0].balance if person.enrollments else _ZERO
        self._members[person.psn_no] = _Member(person, balance, ecert_token, card_sn)

    def arm(self, infno: str, fault: FakeFault, count: int = 1) -> None:
        """Make the next `count` messages of `infno` ("*": any) fail this way."""
        self._faults[infno].extend([fault] * count)

    # the port

    def new_msgid(self) -> str:
        now = self._clock().astimezone(HOSPITAL_TZ)
        return f"{self._fixmedins_code}{now:%Y%m%d%H%M%S}{next(self._serial) % 10_000:04d}"

    async def query_person(self, voucher: PatientVoucher) -> InsuredPerson:
        return self._transact("1101", lambda: self._person_of(voucher))

    async def register_visit(self, visit: InsuredVisit, bill: OutpatientBill, at: datetime) -> str:
        return self._transact("2201", lambda: self._register(visit))

    async def upload_fees(self, visit: InsuredVisit, chrg_bchno: str, bill: OutpatientBill) -> None:
        self._transact("2204", lambda: self._upload(visit, chrg_bchno, bill.lines))

    async def revoke_fees(self, visit: InsuredVisit, chrg_bchno: str) -> None:
        self._transact("2205", lambda: self._withdraw(visit, chrg_bchno))

    async def presettle(
        self, visit: InsuredVisit, chrg_bchno: str, bill: OutpatientBill
    ) -> SettlementBreakdown:
        return self._transact("2206", lambda: self._price(visit, chrg_bchno, bill.total))

    async def settle(
        self,
        visit: InsuredVisit,
        chrg_bchno: str,
        presettled: SettlementBreakdown,
        invoice_no: str,
        msgid: str,
    ) -> InsurerSettlement:
        return self._transact("2207", lambda: self._settle(visit, chrg_bchno, presettled, msgid), msgid)

    async def revoke_settlement(self, visit: InsuredVisit, setl_id: str) -> InsurerSettlement:
        return self._transact("2208", lambda: self._revoke(visit, setl_id))

    async def find_settlement(self, psn_no: str, msgid: str) -> InsurerSettlement | None:
        return self._transact("5203", lambda: self._find(psn_no, msgid))

    async def reconcile_totals(self, request: TotalsRequest) -> TotalsAnswer:
        return self._transact("3201", lambda: self._statement(request))

    # one message: the armed fault first, as the simulator's desk does

    def _transact(self, infno: str, work: Callable[[], T], msgid: str = "") -> T:
        fault = self._take_fault(infno)
        if fault is None:
            return work()
        if fault is FakeFault.REJECT:
            raise _refused(infno, "模拟故障：医保平台业务处理失败")
        if fault is FakeFault.ERROR:
            raise errors.InsurerUnavailable(
                f"the insurer could not be reached for {infno}: refused by the gateway: HTTP 503",
                {"infno": infno},
            )
        if fault is FakeFault.UNKNOWN_AFTER_COMMIT:
            with contextlib.suppress(errors.InsurerRejected):
                work()  # done (or refused) at the insurer; the answer is what gets lost
        raise errors.OutcomeUnknown(
            f"{infno} was sent but its outcome is unknown: sent, no answer: ReadTimeout",
            {"infno": infno, "msgid": msgid or self.new_msgid()},
        )

    def _take_fault(self, infno: str) -> FakeFault | None:
        for key in (infno, "*"):
            if self._faults[key]:
                return self._faults[key].popleft()
        return None

    # 1101, 2201, 2204, 2205

    def _person_of(self, voucher: PatientVoucher) -> InsuredPerson:
        if voucher.mdtrt_cert_type not in VOUCHER_TYPES:
            raise _refused("1101", f"就诊凭证类型 {voucher.mdtrt_cert_type} 不支持")
        number = voucher.mdtrt_cert_no.reveal()
        member = next((m for m in self._members.values() if _holds(m, voucher.mdtrt_cert_type, number)), None)
        if member is None:
            raise _refused("1101", "未查询到该人员的参保信息")
        card_sn = voucher.card_sn.reveal() if voucher.card_sn else ""
        if voucher.mdtrt_cert_type == SOCIAL_SECURITY_CARD and card_sn != member.card_sn:
            raise _refused("1101", "社会保障卡识别码不正确")
        enrollments = tuple(replace(item, balance=member.balance) for item in member.person.enrollments)
        return replace(member.person, enrollments=enrollments)

    def _register(self, visit: InsuredVisit) -> str:
        self._member(visit, "2201")
        known = self._visits.get((visit.psn_no, visit.visit_no))
        if known is not None:  # a registration retried: the same visit
            return known.mdtrt_id
        registered = _Visit(self._new_id("M"), visit.psn_no)
        self._visits[(visit.psn_no, visit.visit_no)] = registered
        self._visits_by_id[registered.mdtrt_id] = registered
        return registered.mdtrt_id

    def _upload(self, visit: InsuredVisit, chrg_bchno: str, lines: Iterable[ChargeLine]) -> None:
        self._open_visit(visit, "2204")
        lines = list(lines)
        if not lines:
            raise _refused("2204", "feedetail 不能为空")
        self._refuse_if_settled(visit.mdtrt_id, chrg_bchno, "2204")
        batch = self._batches.get((visit.mdtrt_id, chrg_bchno), {})
        for line in lines:
            _check_line(line)
            known = batch.get(line.line_no)
            if known is not None and known.line_total != line.line_total:
                raise _refused("2204", f"费用明细流水号 {line.line_no} 重复")
        self._batches[(visit.mdtrt_id, chrg_bchno)] = batch | {line.line_no: line for line in lines}

    def _withdraw(self, visit: InsuredVisit, chrg_bchno: str) -> None:
        self._open_visit(visit, "2205")
        if (visit.mdtrt_id, chrg_bchno) not in self._batches:
            raise _refused("2205", f"收费批次 {chrg_bchno} 无可撤销的费用明细")
        self._refuse_if_settled(visit.mdtrt_id, chrg_bchno, "2205")
        del self._batches[(visit.mdtrt_id, chrg_bchno)]

    # 2206, 2207, 2208, 5203

    def _price(
        self, visit: InsuredVisit, chrg_bchno: str, medfee: Money, infno: str = "2206"
    ) -> SettlementBreakdown:
        member = self._member(visit, infno)
        self._open_visit(visit, infno)
        lines = self._batches.get((visit.mdtrt_id, chrg_bchno))
        if not lines:
            raise _refused(infno, "该收费批次未上传费用明细")
        ratio = FUND_RATIO.get(visit.insutype)
        if ratio is None:
            raise _refused(infno, f"不支持的险种类型 {visit.insutype}")
        account = visit.use_personal_account and visit.insutype in PERSONAL_ACCOUNT_INSUTYPES
        split = outpatient_split(lines.values(), ratio, member.balance if account else _ZERO)
        if split.medfee_sumamt != medfee:
            raise _refused(infno, f"医疗费总额与费用明细合计 {split.medfee_sumamt.to_yuan_str()} 不符")
        return replace(split, balc=member.balance - split.acct_pay)

    def _settle(
        self, visit: InsuredVisit, chrg_bchno: str, presettled: SettlementBreakdown, msgid: str
    ) -> InsurerSettlement:
        if msgid in self._answers:  # the insurer answers a msgid once
            return self._answers[msgid]
        standing = self._standing(visit.mdtrt_id, chrg_bchno)
        if standing is not None:
            raise _refused("2207", f"该收费批次已结算，结算ID {standing.setl_id}")
        split = self._price(visit, chrg_bchno, presettled.medfee_sumamt, "2207")
        for name in ("fulamt_ownpay_amt", "overlmt_selfpay", "preselfpay_amt", "inscp_scp_amt"):
            if getattr(split, name) != getattr(presettled, name):
                raise _refused("2207", f"{name} 与预结算结果不一致")
        member = self._member(visit, "2207")
        booked = self._book(visit, chrg_bchno, split, member, is_offset=False)
        member.balance = split.balc
        self._settled_by_msgid[msgid] = booked.setl_id
        self._answers[msgid] = booked.answer()
        return self._answers[msgid]

    def _revoke(self, visit: InsuredVisit, setl_id: str) -> InsurerSettlement:
        original = self._books.get(setl_id)
        if original is None or original.is_offset or original.psn_no != visit.psn_no:
            raise _refused("2208", "结算信息不存在")
        if visit.mdtrt_id and visit.mdtrt_id != original.mdtrt_id:
            raise _refused("2208", "结算ID与就诊ID不匹配")
        if original.revoked_by is not None:  # revoked once: the same offsetting record
            return self._books[original.revoked_by].answer()
        member = self._member(visit, "2208")
        member.balance += original.breakdown.acct_pay
        negated = SettlementBreakdown(
            **{name: -getattr(original.breakdown, name) for name in SettlementBreakdown.field_names()}
        )
        offset = self._book(visit, original.chrg_bchno, replace(negated, balc=member.balance), member, True)
        original.revoked_by = offset.setl_id
        return offset.answer()

    def _find(self, psn_no: str, msgid: str) -> InsurerSettlement | None:
        setl_id = self._settled_by_msgid.get(msgid)
        found = self._books.get(setl_id) if setl_id else None
        return found.answer() if found is not None and found.psn_no == psn_no else None

    # 3201

    def _statement(self, request: TotalsRequest) -> TotalsAnswer:
        rows = [
            row
            for row in self._books.values()
            if (row.insutype, row.clr_optins) == (request.insutype, request.setl_optins)
            and request.clr_type == OUTPATIENT_CLEARING
            and business_date_of(row.settled_at) == request.business_date
        ]
        ours = DayTotals(
            total(row.breakdown.medfee_sumamt for row in rows),
            total(row.breakdown.fund_pay_sumamt for row in rows),
            total(row.breakdown.acct_pay for row in rows),
            sum(-1 if row.is_offset else 1 for row in rows),
        )
        differences = _differences(request.totals, ours)
        if not differences:
            return TotalsAnswer(BALANCED, "对账平", ours)
        return TotalsAnswer(NOT_BALANCED, "对账不平；" + "；".join(differences), ours)

    # the books

    def _member(self, visit: InsuredVisit, infno: str) -> _Member:
        member = self._members.get(visit.psn_no)
        if member is None:
            raise _refused(infno, "人员编号不存在")
        if all(item.insutype != visit.insutype for item in member.person.enrollments):
            raise _refused(infno, f"该人员未参加险种 {visit.insutype}")
        return member

    def _open_visit(self, visit: InsuredVisit, infno: str) -> None:
        registered = self._visits_by_id.get(visit.mdtrt_id)
        if registered is None or registered.psn_no != visit.psn_no:
            raise _refused(infno, f"就诊ID {visit.mdtrt_id} 不存在")

    def _standing(self, mdtrt_id: str, chrg_bchno: str) -> _Booked | None:
        """The settlement of this batch that is not revoked, if any."""
        for row in self._books.values():
            if (row.mdtrt_id, row.chrg_bchno, row.is_offset, row.revoked_by) == (
                mdtrt_id,
                chrg_bchno,
                False,
                None,
            ):
                return row
        return None

    def _refuse_if_settled(self, mdtrt_id: str, chrg_bchno: str, infno: str) -> None:
        if self._standing(mdtrt_id, chrg_bchno) is not None:
            raise _refused(infno, f"收费批次 {chrg_bchno} 已结算，请先撤销结算")

    def _book(
        self,
        visit: InsuredVisit,
        chrg_bchno: str,
        breakdown: SettlementBreakdown,
        member: _Member,
        is_offset: bool,
    ) -> _Booked:
        enrollment = member.person.enrollment_for(visit.insutype)
        clr_optins = enrollment.insuplc_admdvs if enrollment is not None else self._admdvs
        settled_at = self._clock().astimezone(HOSPITAL_TZ).replace(microsecond=0)
        booked = _Booked(
            self._new_id("S"),
            is_offset,
            visit.psn_no,
            visit.mdtrt_id,
            chrg_bchno,
            visit.insutype,
            clr_optins,
            breakdown,
            settled_at,
        )
        self._books[booked.setl_id] = booked
        return booked

    def _new_id(self, marker: str) -> str:
        """region(6) + Beijing date(8) + marker(1) + sequence(9), as the platform numbers things."""
        return f"{self._admdvs}{self._clock().astimezone(HOSPITAL_TZ):%Y%m%d}{marker}{next(self._serial):09d}"


def outpatient_split(lines: Iterable[ChargeLine], fund_ratio: Decimal, balance: Money) -> SettlementBreakdown:
    """The fake's policy: per-line grade split, fund = ratio × in-scope, account up to `balance`.
    `balc` is left at `balance`; the caller knows whether the account was the member's."""
    fulamt, preselfpay, inscp = _ZERO, _ZERO, _ZERO
    for line in lines:
        if line.chrgitm_lv == CLASS_A:
            inscp += line.line_total
        elif line.chrgitm_lv == CLASS_B:
            first = line.line_total.times_ratio(CLASS_B_FIRST_SELF_PAY)
            preselfpay, inscp = preselfpay + first, inscp + line.line_total - first
        else:
            fulamt += line.line_total
    medfee = fulamt + preselfpay + inscp
    fund = inscp.times_ratio(fund_ratio)
    personal = medfee - fund
    acct_pay = min(max(balance, _ZERO), personal)
    return SettlementBreakdown(
        medfee_sumamt=medfee,
        fulamt_ownpay_amt=fulamt,
        overlmt_selfpay=_ZERO,
        preselfpay_amt=preselfpay,
        inscp_scp_amt=inscp,
        act_pay_dedc=_ZERO,
        hifp_pay=fund,
        fund_pay_sumamt=fund,
        psn_part_amt=personal,
        acct_pay=acct_pay,
        psn_cash_pay=personal - acct_pay,
        hosp_part_amt=_ZERO,
        balc=balance,
    )


def _holds(member: _Member, cert_type: str, number: str) -> bool:
    if cert_type == ELECTRONIC_VOUCHER:
        return bool(member.ecert_token) and member.ecert_token == number
    return member.person.certno.reveal() == number


def _check_line(line: ChargeLine) -> None:
    """Amounts not negative, and the line total within one fen of quantity × unit price."""
    billed = line.quantity_ten_thousandths * line.unit_price.fen
    if line.line_total.is_negative() or line.quantity_ten_thousandths <= 0 or line.unit_price.is_negative():
        raise _refused("2204", f"费用明细 {line.line_no} 金额、数量或单价不合法")
    if abs(billed - line.line_total.fen * QUANTITY_SCALE) > QUANTITY_SCALE:
        raise _refused("2204", f"费用明细 {line.line_no} 明细总额与单价×数量不符")


def _differences(platform: DayTotals, insurer: DayTotals) -> list[str]:
    return [
        f"{label}: 医药机构 {mine} / 医保 {theirs}"
        for label, mine, theirs in (
            ("医疗费总额", platform.medfee_sumamt, insurer.medfee_sumamt),
            ("基金支付总额", platform.fund_pay_sumamt, insurer.fund_pay_sumamt),
            ("个人账户支出", platform.acct_pay, insurer.acct_pay),
            ("结算笔数", platform.settlement_count, insurer.settlement_count),
        )
        if mine != theirs
    ]


def _refused(infno: str, err_msg: str) -> errors.InsurerRejected:
    """The same error, message and metadata as NhsaInsurer gives for an infcode -1."""
    detail = scrub(err_msg)
    return errors.InsurerRejected(
        f"the insurer refused {infno}: {detail}", {"infno": infno, "err_msg": detail}
    )
