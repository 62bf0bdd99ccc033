"""2206 pre-settlement, 2207 settlement, 2208 revocation and 5203 settlement query (outpatient).

A settlement prices the uploaded lines of one charge batch (mdtrt_id + chrg_bchno) with the pure
policy module, then books it: a settlement row, this year's accumulators, the personal-account
balance. A revocation books an offsetting row with negated amounts and restores both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from infra.simulators.nhsa.context import Answer, Call
from infra.simulators.nhsa.persons import base_info, insured_person
from infra.simulators.nhsa.policy import (
    Accumulators,
    Member,
    PolicyError,
    SettlementSplit,
    outpatient_scheme,
    settle_outpatient,
)
from infra.simulators.nhsa.schema import AMOUNT_COLUMNS, SPLIT_AMOUNTS
from infra.simulators.nhsa.store import AnyRow
from infra.simulators.nhsa.visits import open_visit, stored_split
from infra.simulators.nhsa.wire import (
    JsonObject,
    Refusal,
    money,
    now_in_shanghai,
    optional,
    required,
    wire_time,
    yuan,
)
from services.runtime.money import Money

OUTPATIENT_CLEARING = "11"  # clr_type 门诊
CLEARING_WAY = "1"
_ECHOED_AMOUNTS = ("fulamt_ownpay_amt", "overlmt_selfpay", "preselfpay_amt", "inscp_scp_amt")
_OTHER_FUNDS = ("cvlserv_pay", "hifes_pay", "hifmi_pay", "hifob_pay", "maf_pay", "oth_pay", "acct_mulaid_pay")
_FUND_NAMES = {"310100": "职工基本医疗保险统筹基金", "390100": "城乡居民基本医疗保险基金"}


@dataclass(frozen=True, slots=True)
class PricedBatch:
    person: AnyRow
    data: Mapping[str, Any]
    split: SettlementSplit


async def presettle(call: Call) -> Answer:
    batch = await _price(call, call.data())
    record = _record(call, batch, setl_id=None)
    return Answer(_settlement_output(record, batch.person, call))


async def settle(call: Call) -> Answer:
    data = call.data()
    standing = await call.books.standing_settlement(required(data, "mdtrt_id"), required(data, "chrg_bchno"))
    if standing is not None:
        raise Refusal(f"该收费批次已结算，结算ID {standing.setl_id}")
    batch = await _price(call, data)
    _check_echoed_amounts(data, batch.split)
    record = _record(call, batch, setl_id=await call.new_id("setl_id", "S"))
    await call.books.add_settlement(**record)
    year, insutype, psn_no = _year_of(record), record["insutype"], record["psn_no"]
    before = await call.books.accumulators(psn_no, year, insutype)
    await call.books.save_accumulators(psn_no, year, insutype, batch.split.accumulators_after(before))
    await call.books.set_balance(psn_no, batch.split.balc)
    return Answer(_settlement_output(record, batch.person, call), effect=record["setl_id"])


async def revoke_settlement(call: Call) -> Answer:
    data = call.data()
    original = await call.books.settlement(required(data, "setl_id"))
    if original is None or original.kind != "settle" or original.psn_no != required(data, "psn_no"):
        raise Refusal("结算信息不存在")
    mdtrt_id = optional(data, "mdtrt_id")
    if mdtrt_id and mdtrt_id != original.mdtrt_id:
        raise Refusal("结算ID与就诊ID不匹配")
    offset = await revoke(call, original)
    person = await call.books.person(offset["psn_no"])
    return Answer(_settlement_output(offset, person, call), effect=offset["setl_id"])


async def revoke(call: Call, original: AnyRow) -> dict[str, Any]:
    """Book the offsetting record of a settlement once; a second revocation finds the first."""
    if original.revoked_by is not None:
        booked = await call.books.settlement(original.revoked_by)
        assert booked is not None
        return _as_record(booked)
    restored_fund = await _restore_accumulators(call, original)
    person = await call.books.person(original.psn_no)
    assert person is not None
    balance = Money(person.acct_balance_fen) + Money(original.acct_pay_fen)
    await call.books.set_balance(original.psn_no, balance)
    cap = outpatient_scheme(original.insutype, call.hospital_level).annual_cap
    offset = _offset_record(call, original, await call.new_id("setl_id", "S"))
    offset.update(balc_fen=balance.fen, crt_payb_lmt_amt_fen=max(cap.fen - restored_fund.fen, 0))
    await call.books.add_settlement(**offset)
    await call.books.mark_revoked(original.setl_id, offset["setl_id"])
    return offset


async def query_settlement(call: Call) -> Answer:
    """5203 by setl_id, by medins_setl_id (the creating 2207's msgid, an extension) or by mdtrt_id."""
    data = call.data()
    found = await _find_settlement(call, data)
    psn_no = optional(data, "psn_no")
    if found is None or (psn_no and found.psn_no != psn_no):
        return Answer({"setlinfo": None, "setldetail": []}, warn_msg="未查询到结算信息")
    person = await call.books.person(found.psn_no)
    return Answer(_settlement_output(_as_record(found), person, call))


async def _find_settlement(call: Call, data: Mapping[str, Any]) -> AnyRow | None:
    if setl_id := optional(data, "setl_id"):
        return await call.books.settlement(setl_id)
    if medins_setl_id := optional(data, "medins_setl_id"):
        return await call.books.settlement_by_msgid(medins_setl_id)
    if mdtrt_id := optional(data, "mdtrt_id"):
        originals = [row for row in await call.books.settlements_of_visit(mdtrt_id) if row.kind == "settle"]
        return originals[-1] if originals else None
    raise Refusal("setl_id、medins_setl_id、mdtrt_id 不能同时为空")


async def _price(call: Call, data: Mapping[str, Any]) -> PricedBatch:
    insutype = required(data, "insutype")
    person = await insured_person(call, required(data, "psn_no"), insutype)
    visit = await open_visit(call, required(data, "mdtrt_id"), person.psn_no)
    lines = await call.books.fee_lines(visit.mdtrt_id, required(data, "chrg_bchno"))
    if not lines:
        raise Refusal("该收费批次未上传费用明细")
    year = now_in_shanghai(call.now).year
    accumulated = await call.books.accumulators(person.psn_no, year, insutype)
    member = Member(insutype, person.psn_type, Money(person.acct_balance_fen), accumulated)
    try:
        scheme = outpatient_scheme(insutype, call.hospital_level)
    except PolicyError as exc:
        raise Refusal(str(exc)) from exc
    split = settle_outpatient((stored_split(line) for line in lines), member, scheme, _uses_account(data))
    if split.medfee_sumamt != money(data.get("medfee_sumamt"), "medfee_sumamt"):
        raise Refusal(f"医疗费总额与费用明细合计 {split.medfee_sumamt.to_yuan_str()} 不符")
    return PricedBatch(person, data, split)


def _uses_account(data: Mapping[str, Any]) -> bool:
    return optional(data, "acct_used_flag") == "1"


def _check_echoed_amounts(data: Mapping[str, Any], split: SettlementSplit) -> None:
    for field in _ECHOED_AMOUNTS:
        if data.get(field) not in (None, "") and money(data[field], field) != getattr(split, field):
            raise Refusal(f"{field} 与预结算结果不一致")


def _record(call: Call, batch: PricedBatch, setl_id: str | None) -> dict[str, Any]:
    data, split = batch.data, batch.split
    local_now = now_in_shanghai(call.now)
    amounts = {f"{name}_fen": getattr(split, name).fen for name in SPLIT_AMOUNTS}
    return {
        "setl_id": setl_id,
        "kind": "settle",
        "msgid": call.msgid,
        "fixmedins_code": call.fixmedins_code,
        "mdtrt_id": required(data, "mdtrt_id"),
        "chrg_bchno": required(data, "chrg_bchno"),
        "psn_no": batch.person.psn_no,
        "insutype": batch.person.insutype,
        "psn_type": batch.person.psn_type,
        "med_type": optional(data, "med_type") or "11",
        "mdtrt_cert_type": optional(data, "mdtrt_cert_type"),
        "invono": optional(data, "invono"),
        "setl_time": wire_time(call.now),
        "setl_date": f"{local_now:%Y-%m-%d}",
        "clr_optins": batch.person.insuplc_admdvs,
        "clr_type": OUTPATIENT_CLEARING,
        "clr_way": CLEARING_WAY,
        "fund_pay_type": split.fund_pay_type,
        "pool_prop_selfpay": str(split.fund_ratio),
        **amounts,
        "crt_payb_lmt_amt_fen": split.cap_remaining.fen,
        "original_setl_id": None,
        "revoked_by": None,
    }


def _offset_record(call: Call, original: AnyRow, setl_id: str) -> dict[str, Any]:
    record = _as_record(original)
    for name in AMOUNT_COLUMNS:
        record[f"{name}_fen"] = -record[f"{name}_fen"]
    local_now = now_in_shanghai(call.now)
    record.update(
        setl_id=setl_id,
        kind="revoke",
        msgid=call.msgid,
        fixmedins_code=call.fixmedins_code,
        setl_time=wire_time(call.now),
        setl_date=f"{local_now:%Y-%m-%d}",
        original_setl_id=original.setl_id,
        revoked_by=None,
    )
    return record


async def _restore_accumulators(call: Call, original: AnyRow) -> Money:
    """Give back the deductible and fund use of a revoked settlement in its own year."""
    year = int(original.setl_date[:4])
    before = await call.books.accumulators(original.psn_no, year, original.insutype)
    after = Accumulators(
        Money(max(before.deductible_paid.fen - original.act_pay_dedc_fen, 0)),
        Money(max(before.fund_paid.fen - original.hifp_pay_fen, 0)),
    )
    await call.books.save_accumulators(original.psn_no, year, original.insutype, after)
    return after.fund_paid


def _as_record(row: AnyRow) -> dict[str, Any]:
    return dict(row._asdict())


def _year_of(record: Mapping[str, Any]) -> int:
    return int(str(record["setl_date"])[:4])


def _settlement_output(record: Mapping[str, Any], person: AnyRow | None, call: Call) -> JsonObject:
    return {"setlinfo": _setlinfo(record, person, call), "setldetail": [_fund_row(record)]}


def _setlinfo(record: Mapping[str, Any], person: AnyRow | None, call: Call) -> JsonObject:
    identity = base_info(person, call.now) if person is not None else {"psn_no": record["psn_no"]}
    amounts = {name: yuan(Money(record[f"{name}_fen"])) for name in SPLIT_AMOUNTS}
    refunded = record["kind"] == "revoke" or record.get("revoked_by") is not None
    return {
        "mdtrt_id": record["mdtrt_id"],
        "setl_id": record["setl_id"],
        **identity,
        "insutype": record["insutype"],
        "psn_type": record["psn_type"],
        "cvlserv_flag": "0",
        "setl_time": record["setl_time"],
        "mdtrt_cert_type": record["mdtrt_cert_type"],
        "med_type": record["med_type"],
        **amounts,
        "pool_prop_selfpay": Decimal(record["pool_prop_selfpay"]).quantize(Decimal("0.0001")),
        **{name: Decimal("0.00") for name in _OTHER_FUNDS},
        "medins_setl_id": record["msgid"],
        "clr_optins": record["clr_optins"],
        "clr_way": record["clr_way"],
        "clr_type": record["clr_type"],
        "invono": record["invono"],
        "refd_setl_flag": "1" if refunded else "0",
        # simulator extension: the settlement a revocation offsets
        "orig_setl_id": record.get("original_setl_id"),
    }


def _fund_row(record: Mapping[str, Any]) -> JsonObject:
    fund_pay_type = record["fund_pay_type"]
    return {
        "fund_pay_type": fund_pay_type,
        "fund_pay_type_name": _FUND_NAMES.get(fund_pay_type, fund_pay_type),
        "inscp_scp_amt": yuan(Money(record["inscp_scp_amt_fen"])),
        "crt_payb_lmt_amt": yuan(Money(record["crt_payb_lmt_amt_fen"])),
        "fund_payamt": yuan(Money(record["hifp_pay_fen"])),
        "setl_proc_info": f"统筹支付比例 {record['pool_prop_selfpay']}",
    }
