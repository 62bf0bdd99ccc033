"""1101 人员信息获取: the insured person behind a voucher, with their insurance and balance."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from infra.simulators.nhsa.context import Answer, Call
from infra.simulators.nhsa.store import AnyRow
from infra.simulators.nhsa.wire import Refusal, now_in_shanghai, optional, required, yuan
from services.runtime.money import Money

VOUCHER_TYPES = ("01", "02", "03")


async def query_person(call: Call) -> Answer:
    data = call.data()
    cert_type = required(data, "mdtrt_cert_type")
    if cert_type not in VOUCHER_TYPES:
        raise Refusal(f"就诊凭证类型 {cert_type} 不支持")
    person = await call.books.person_by_voucher(cert_type, required(data, "mdtrt_cert_no"))
    if person is None:
        raise Refusal("未查询到该人员的参保信息")
    if cert_type == "03" and optional(data, "card_sn") != person.card_sn:
        raise Refusal("社会保障卡识别码不正确")
    psn_name = optional(data, "psn_name")
    if psn_name and psn_name != person.psn_name:
        raise Refusal("人员姓名与证件信息不符")
    output = {"baseinfo": base_info(person, call.now), "insuinfo": [_insurance(person)], "idetinfo": []}
    return Answer(output)


async def insured_person(call: Call, psn_no: str, insutype: str) -> AnyRow:
    """The person, refused unless they are enrolled in this insurance type."""
    person = await call.books.person(psn_no)
    if person is None:
        raise Refusal(f"人员编号 {psn_no} 不存在")
    if person.insutype != insutype:
        raise Refusal(f"该人员未参加险种 {insutype}")
    return person


def base_info(person: AnyRow, now: datetime) -> dict[str, Any]:
    return {
        "psn_no": person.psn_no,
        "psn_cert_type": person.psn_cert_type,
        "certno": person.certno,
        "psn_name": person.psn_name,
        "gend": person.gend,
        "naty": person.naty,
        "brdy": person.brdy.isoformat(),
        "age": age_on(person.brdy, now_in_shanghai(now).date()),
    }


def age_on(birthday: date, day: date) -> Decimal:
    years = day.year - birthday.year - ((day.month, day.day) < (birthday.month, birthday.day))
    return Decimal(years).quantize(Decimal("0.1"))


def _insurance(person: AnyRow) -> dict[str, Any]:
    return {
        "balc": yuan(Money(person.acct_balance_fen)),
        "insutype": person.insutype,
        "psn_type": person.psn_type,
        "psn_insu_stas": "1",  # 正常参保
        "psn_insu_date": person.psn_insu_date.isoformat(),
        "paus_insu_date": None,
        "cvlserv_flag": "0",
        "insuplc_admdvs": person.insuplc_admdvs,
        "emp_name": person.emp_name,
    }
