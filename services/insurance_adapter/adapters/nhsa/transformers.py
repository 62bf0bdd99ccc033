"""NHSA nodes <-> typed values. The only place where yuan become fen and fen become yuan.

Amounts arrive as JSON numbers parsed into Decimal (never float) or as strings, with at most two
decimals; anything else is a malformed reply. List nodes (insuinfo, idetinfo, result, setldetail)
are accepted as a single object too, as some provinces send them. Patient identifiers are kept as
`PatientIdentifier`, whose repr is masked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from services.runtime.masking import PatientIdentifier
from services.runtime.money import Money

JsonObject = dict[str, Any]


class MalformedInsurerReply(ValueError):
    """The insurer answered infcode 0 with an output this adapter cannot read."""


def to_yuan(amount: Money) -> Decimal:
    """Fen to the wire's yuan, exactly two decimals."""
    return Decimal(amount.to_yuan_str())


def from_yuan(value: Any, field: str) -> Money:
    """A wire amount (number or string, at most two decimals) as fen; floats are refused."""
    if value is None or isinstance(value, (bool, float)):
        raise MalformedInsurerReply(f"{field}: not an amount: {value!r}")
    try:
        return Money.from_yuan_str(str(value))
    except ValueError as exc:
        raise MalformedInsurerReply(f"{field}: not an amount: {value!r}") from exc


def as_list(node: Any) -> list[Mapping[str, Any]]:
    """A list node that may also arrive as one object (or be absent)."""
    if node is None:
        return []
    if isinstance(node, Mapping):
        return [node]
    if isinstance(node, list) and all(isinstance(item, Mapping) for item in node):
        return list(node)
    raise MalformedInsurerReply(f"expected a list of objects, got {type(node).__name__}")


def _node(output: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    node = output.get(name)
    if isinstance(node, list) and len(node) == 1:
        node = node[0]
    if not isinstance(node, Mapping):
        raise MalformedInsurerReply(f"output node {name} missing")
    return node


def _text(node: Mapping[str, Any], field: str) -> str:
    value = node.get(field)
    return "" if value is None else str(value)


def _ratio(node: Mapping[str, Any], field: str) -> Decimal | None:
    value = node.get(field)
    if value in (None, "") or isinstance(value, (bool, float)):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation as exc:
        raise MalformedInsurerReply(f"{field}: not a number: {value!r}") from exc


def _amount(node: Mapping[str, Any], *names: str) -> Money:
    """The first of `names` present (aliases: 5203 says psn_pay / cash_payamt); absent is zero."""
    for name in names:
        if node.get(name) not in (None, ""):
            return from_yuan(node[name], name)
    return Money(0)


# 1101


@dataclass(frozen=True, slots=True)
class Enrolment:
    """One insuinfo row: an insurance the person holds."""

    insutype: str
    psn_type: str
    balc: Money
    psn_insu_stas: str
    insuplc_admdvs: str
    cvlserv_flag: str
    emp_name: str


@dataclass(frozen=True, slots=True)
class SpecialIdentity:
    """One idetinfo row (e.g. 低保, 优抚)."""

    psn_idet_type: str
    psn_type_lv: str
    begntime: str
    endtime: str


@dataclass(frozen=True, slots=True)
class PersonInfo:
    psn_no: str
    psn_cert_type: str
    certno: PatientIdentifier
    psn_name: PatientIdentifier
    gend: str
    naty: str
    brdy: str
    age: Decimal | None
    enrolments: tuple[Enrolment, ...]
    identities: tuple[SpecialIdentity, ...]

    def enrolment(self, insutype: str = "") -> Enrolment | None:
        """The enrolment of this insurance type, or the first one when no type is asked for."""
        return next((item for item in self.enrolments if not insutype or item.insutype == insutype), None)

    @classmethod
    def from_output(cls, output: Mapping[str, Any]) -> PersonInfo:
        base = _node(output, "baseinfo")
        if not _text(base, "psn_no"):
            raise MalformedInsurerReply("baseinfo.psn_no missing")
        return cls(
            psn_no=_text(base, "psn_no"),
            psn_cert_type=_text(base, "psn_cert_type"),
            certno=PatientIdentifier(_text(base, "certno")),
            psn_name=PatientIdentifier(_text(base, "psn_name"), kind="name"),
            gend=_text(base, "gend"),
            naty=_text(base, "naty"),
            brdy=_text(base, "brdy"),
            age=_ratio(base, "age"),
            enrolments=tuple(_enrolment(row) for row in as_list(output.get("insuinfo"))),
            identities=tuple(_identity(row) for row in as_list(output.get("idetinfo"))),
        )


def _enrolment(row: Mapping[str, Any]) -> Enrolment:
    return Enrolment(
        insutype=_text(row, "insutype"),
        psn_type=_text(row, "psn_type"),
        balc=_amount(row, "balc"),
        psn_insu_stas=_text(row, "psn_insu_stas"),
        insuplc_admdvs=_text(row, "insuplc_admdvs"),
        cvlserv_flag=_text(row, "cvlserv_flag"),
        emp_name=_text(row, "emp_name"),
    )


def _identity(row: Mapping[str, Any]) -> SpecialIdentity:
    fields = ("psn_idet_type", "psn_type_lv", "begntime", "endtime")
    return SpecialIdentity(*(_text(row, name) for name in fields))


# 2201


@dataclass(frozen=True, slots=True)
class VisitRegistration:
    """The insurer's registration of an outpatient visit: mdtrt_id names it from now on."""

    mdtrt_id: str
    psn_no: str
    ipt_otp_no: str

    @classmethod
    def from_output(cls, output: Mapping[str, Any]) -> VisitRegistration:
        data = _node(output, "data")
        if not _text(data, "mdtrt_id"):
            raise MalformedInsurerReply("data.mdtrt_id missing")
        return cls(_text(data, "mdtrt_id"), _text(data, "psn_no"), _text(data, "ipt_otp_no"))


# 2204


@dataclass(frozen=True, slots=True)
class FeeLine:
    """One charge line of a visit as uploaded (feedetail). Amounts in fen, quantity exact."""

    feedetl_sn: str
    mdtrt_id: str
    psn_no: str
    chrg_bchno: str
    med_list_codg: str
    medins_list_codg: str
    det_item_fee_sumamt: Money
    cnt: Decimal
    pric: Money
    fee_ocur_time: datetime
    bilg_dept_codg: str
    bilg_dept_name: str
    bilg_dr_codg: str
    bilg_dr_name: str
    rxno: str = ""
    rx_circ_flag: str = "0"
    dise_codg: str = ""
    hosp_appr_flag: str = "1"

    def to_input(self) -> JsonObject:
        return {
            "feedetl_sn": self.feedetl_sn,
            "mdtrt_id": self.mdtrt_id,
            "psn_no": self.psn_no,
            "chrg_bchno": self.chrg_bchno,
            "dise_codg": self.dise_codg,
            "rxno": self.rxno,
            "rx_circ_flag": self.rx_circ_flag,
            "fee_ocur_time": self.fee_ocur_time.strftime("%Y-%m-%d %H:%M:%S"),
            "med_list_codg": self.med_list_codg,
            "medins_list_codg": self.medins_list_codg,
            "det_item_fee_sumamt": to_yuan(self.det_item_fee_sumamt),
            "cnt": self.cnt,
            "pric": to_yuan(self.pric),
            "bilg_dept_codg": self.bilg_dept_codg,
            "bilg_dept_name": self.bilg_dept_name,
            "bilg_dr_codg": self.bilg_dr_codg,
            "bilg_dr_name": self.bilg_dr_name,
            "hosp_appr_flag": self.hosp_appr_flag,
        }


@dataclass(frozen=True, slots=True)
class FeeLineResult:
    """The insurer's verdict on one uploaded line (result)."""

    feedetl_sn: str
    det_item_fee_sumamt: Money
    chrgitm_lv: str
    med_chrgitm_type: str
    selfpay_prop: Decimal | None
    pric_uplmt_amt: Money
    fulamt_ownpay_amt: Money
    overlmt_amt: Money
    preselfpay_amt: Money
    inscp_scp_amt: Money
    memo: str

    @classmethod
    def from_node(cls, row: Mapping[str, Any]) -> FeeLineResult:
        return cls(
            feedetl_sn=_text(row, "feedetl_sn"),
            det_item_fee_sumamt=_amount(row, "det_item_fee_sumamt"),
            chrgitm_lv=_text(row, "chrgitm_lv"),
            med_chrgitm_type=_text(row, "med_chrgitm_type"),
            selfpay_prop=_ratio(row, "selfpay_prop"),
            pric_uplmt_amt=_amount(row, "pric_uplmt_amt"),
            fulamt_ownpay_amt=_amount(row, "fulamt_ownpay_amt"),
            overlmt_amt=_amount(row, "overlmt_amt"),
            preselfpay_amt=_amount(row, "preselfpay_amt"),
            inscp_scp_amt=_amount(row, "inscp_scp_amt"),
            memo=_text(row, "memo"),
        )


def fee_results_from_output(output: Mapping[str, Any]) -> tuple[FeeLineResult, ...]:
    return tuple(FeeLineResult.from_node(row) for row in as_list(output.get("result")))


# 3201


@dataclass(frozen=True, slots=True)
class StatementTotals:
    """One side's totals for a 3201 group: settlements count +, revocations −."""

    medfee_sumamt: Money
    fund_pay_sumamt: Money
    acct_pay: Money
    setl_cnt: int


@dataclass(frozen=True, slots=True)
class StatementResult:
    setl_optins: str
    stmt_rslt: str
    stmt_rslt_dscr: str
    insurer_totals: StatementTotals | None  # the simulator's insu_* extension; None elsewhere

    @property
    def balanced(self) -> bool:
        return self.stmt_rslt in ("0", "000000")

    @classmethod
    def from_output(cls, output: Mapping[str, Any]) -> StatementResult:
        node = _node(output, "stmtinfo")
        if not _text(node, "stmt_rslt"):
            raise MalformedInsurerReply("stmtinfo.stmt_rslt missing")
        return cls(
            _text(node, "setl_optins"),
            _text(node, "stmt_rslt"),
            _text(node, "stmt_rslt_dscr"),
            _insurer_totals(node),
        )


def _insurer_totals(node: Mapping[str, Any]) -> StatementTotals | None:
    if node.get("insu_medfee_sumamt") is None:
        return None
    count = node.get("insu_setl_cnt")
    return StatementTotals(
        _amount(node, "insu_medfee_sumamt"),
        _amount(node, "insu_fund_pay_sumamt"),
        _amount(node, "insu_acct_pay"),
        int(str(count)) if count is not None else 0,
    )


def statement_input(
    insutype: str, clr_type: str, setl_optins: str, period: tuple[date, date], totals: StatementTotals
) -> JsonObject:
    return {
        "data": {
            "insutype": insutype,
            "clr_type": clr_type,
            "setl_optins": setl_optins,
            "stmt_begndate": period[0].isoformat(),
            "stmt_enddate": period[1].isoformat(),
            "medfee_sumamt": to_yuan(totals.medfee_sumamt),
            "fund_pay_sumamt": to_yuan(totals.fund_pay_sumamt),
            "acct_pay": to_yuan(totals.acct_pay),
            "fixmedins_setl_cnt": totals.setl_cnt,
        }
    }


# 2206 / 2207 / 2208 / 5203

_BREAKDOWN_AMOUNTS: dict[str, tuple[str, ...]] = {
    "medfee_sumamt": ("medfee_sumamt",),
    "fulamt_ownpay_amt": ("fulamt_ownpay_amt",),
    "overlmt_selfpay": ("overlmt_selfpay",),
    "preselfpay_amt": ("preselfpay_amt",),
    "inscp_scp_amt": ("inscp_scp_amt",),
    "act_pay_dedc": ("act_pay_dedc",),
    "hifp_pay": ("hifp_pay",),
    "fund_pay_sumamt": ("fund_pay_sumamt",),
    "psn_part_amt": ("psn_part_amt", "psn_pay"),
    "acct_pay": ("acct_pay",),
    "psn_cash_pay": ("psn_cash_pay", "cash_payamt", "pdn_cash_pay"),
    "hosp_part_amt": ("hosp_part_amt",),
    "balc": ("balc",),
}
_REQUIRED_AMOUNTS = ("medfee_sumamt", "fund_pay_sumamt", "psn_cash_pay")


@dataclass(frozen=True, slots=True)
class SettlementRequest:
    """What 2206 and 2207 both say about the batch being settled."""

    psn_no: str
    mdtrt_id: str
    chrg_bchno: str
    insutype: str
    insuplc_admdvs: str
    mdtrt_cert_type: str
    mdtrt_cert_no: PatientIdentifier
    medfee_sumamt: Money
    med_type: str = "11"
    acct_used_flag: bool = True
    psn_setlway: str = "01"

    def presettle_input(self) -> JsonObject:
        return {"data": self._data()}

    def settle_input(self, presettlement: SettlementBreakdown, invono: str) -> JsonObject:
        """2207 echoes the four policy parts the pre-settlement returned."""
        return {
            "data": {
                **self._data(),
                "invono": invono,
                "fulamt_ownpay_amt": to_yuan(presettlement.fulamt_ownpay_amt),
                "overlmt_selfpay": to_yuan(presettlement.overlmt_selfpay),
                "preselfpay_amt": to_yuan(presettlement.preselfpay_amt),
                "inscp_scp_amt": to_yuan(presettlement.inscp_scp_amt),
            }
        }

    def _data(self) -> JsonObject:
        return {
            "psn_no": self.psn_no,
            "mdtrt_cert_type": self.mdtrt_cert_type,
            "mdtrt_cert_no": self.mdtrt_cert_no.reveal(),
            "med_type": self.med_type,
            "medfee_sumamt": to_yuan(self.medfee_sumamt),
            "psn_setlway": self.psn_setlway,
            "mdtrt_id": self.mdtrt_id,
            "chrg_bchno": self.chrg_bchno,
            "insutype": self.insutype,
            "acct_used_flag": "1" if self.acct_used_flag else "0",
        }


@dataclass(frozen=True, slots=True)
class FundPayment:
    """One setldetail row: what one fund paid."""

    fund_pay_type: str
    fund_pay_type_name: str
    fund_payamt: Money
    inscp_scp_amt: Money
    crt_payb_lmt_amt: Money


@dataclass(frozen=True, slots=True)
class SettlementBreakdown:
    """setlinfo in fen. A revocation (2208) carries the offsetting, negated amounts."""

    medfee_sumamt: Money
    fulamt_ownpay_amt: Money
    overlmt_selfpay: Money
    preselfpay_amt: Money
    inscp_scp_amt: Money
    act_pay_dedc: Money
    hifp_pay: Money
    fund_pay_sumamt: Money
    psn_part_amt: Money
    acct_pay: Money
    psn_cash_pay: Money
    hosp_part_amt: Money
    balc: Money
    setl_id: str | None = None
    mdtrt_id: str = ""
    medins_setl_id: str = ""  # the msgid of the 2207 that created it
    setl_time: str = ""
    refd_setl_flag: str = ""
    pool_prop_selfpay: Decimal | None = None
    fund_payments: tuple[FundPayment, ...] = ()

    def identity_violations(self) -> list[str]:
        """The §1.5 identities that do not hold (empty when the insurer's numbers add up)."""
        parts = self.fulamt_ownpay_amt + self.overlmt_selfpay + self.preselfpay_amt + self.inscp_scp_amt
        checks = (
            ("medfee_sumamt = fulamt + overlmt + preselfpay + inscp", parts == self.medfee_sumamt),
            (
                "psn_part_amt = medfee_sumamt - fund_pay_sumamt - hosp_part_amt",
                self.psn_part_amt == self.medfee_sumamt - self.fund_pay_sumamt - self.hosp_part_amt,
            ),
            (
                "psn_part_amt = acct_pay + psn_cash_pay",
                self.psn_part_amt == self.acct_pay + self.psn_cash_pay,
            ),
        )
        return [name for name, holds in checks if not holds]

    @classmethod
    def from_output(cls, output: Mapping[str, Any]) -> SettlementBreakdown:
        info = _node(output, "setlinfo")
        missing = [
            name for name in _REQUIRED_AMOUNTS if all(info.get(a) is None for a in _BREAKDOWN_AMOUNTS[name])
        ]
        if missing:
            raise MalformedInsurerReply(f"setlinfo lacks {', '.join(missing)}")
        amounts = {name: _amount(info, *aliases) for name, aliases in _BREAKDOWN_AMOUNTS.items()}
        return cls(
            **amounts,
            setl_id=_text(info, "setl_id") or None,
            mdtrt_id=_text(info, "mdtrt_id"),
            medins_setl_id=_text(info, "medins_setl_id"),
            setl_time=_text(info, "setl_time"),
            refd_setl_flag=_text(info, "refd_setl_flag"),
            pool_prop_selfpay=_ratio(info, "pool_prop_selfpay"),
            fund_payments=tuple(_fund_payment(row) for row in as_list(output.get("setldetail"))),
        )


def settlement_or_none(output: Mapping[str, Any]) -> SettlementBreakdown | None:
    """5203: an empty setlinfo means the insurer has no such settlement."""
    info = output.get("setlinfo")
    if info is None or info == {} or info == []:
        return None
    return SettlementBreakdown.from_output(output)


def _fund_payment(row: Mapping[str, Any]) -> FundPayment:
    return FundPayment(
        fund_pay_type=_text(row, "fund_pay_type"),
        fund_pay_type_name=_text(row, "fund_pay_type_name"),
        fund_payamt=_amount(row, "fund_payamt"),
        inscp_scp_amt=_amount(row, "inscp_scp_amt"),
        crt_payb_lmt_amt=_amount(row, "crt_payb_lmt_amt"),
    )
