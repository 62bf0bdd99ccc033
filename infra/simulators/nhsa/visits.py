"""2201/2202 outpatient registration and 2204/2205 fee-detail upload and revocation."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from infra.simulators.catalogue import CatalogueItem, find_item
from infra.simulators.nhsa.context import Answer, Call
from infra.simulators.nhsa.persons import insured_person
from infra.simulators.nhsa.policy import OUT_OF_CATALOGUE, ItemRule, LineSplit, PolicyError, split_line
from infra.simulators.nhsa.store import AnyRow
from infra.simulators.nhsa.wire import (
    JsonObject,
    Refusal,
    as_list,
    decimal,
    money,
    optional,
    required,
    wire_time,
    yuan,
)
from services.runtime.money import Money

ALL_UNSETTLED = "0000"
_ONE_FEN_IN_YUAN = Decimal("0.01")


async def register_visit(call: Call) -> Answer:
    data = call.data()
    psn_no, ipt_otp_no = required(data, "psn_no"), required(data, "ipt_otp_no")
    insutype = required(data, "insutype")
    await insured_person(call, psn_no, insutype)
    existing = await call.books.visit_by_outpatient_no(psn_no, ipt_otp_no)
    if existing is not None:  # a registration retried under a new msgid: the same visit
        if existing.status != "registered":
            raise Refusal(f"门诊号 {ipt_otp_no} 的挂号已撤销")
        return Answer(_visit_output(existing.mdtrt_id, psn_no, ipt_otp_no), effect=existing.mdtrt_id)
    mdtrt_id = await call.new_id("mdtrt_id", "M")
    await call.books.add_visit(
        mdtrt_id=mdtrt_id,
        psn_no=psn_no,
        insutype=insutype,
        ipt_otp_no=ipt_otp_no,
        begntime=optional(data, "begntime") or wire_time(call.now),
        mdtrt_cert_type=optional(data, "mdtrt_cert_type"),
        dept_code=optional(data, "dept_code"),
        status="registered",
    )
    return Answer(_visit_output(mdtrt_id, psn_no, ipt_otp_no), effect=mdtrt_id)


async def cancel_registration(call: Call) -> Answer:
    data = call.data()
    visit = await open_visit(call, required(data, "mdtrt_id"), required(data, "psn_no"))
    await cancel_visit(call, visit)
    return Answer({}, effect=visit.mdtrt_id)


async def cancel_visit(call: Call, visit: AnyRow) -> None:
    settlements = await call.books.settlements_of_visit(visit.mdtrt_id)
    if any(row.kind == "settle" and row.revoked_by is None for row in settlements):
        raise Refusal("该就诊已结算，请先撤销结算")
    batches = {line.chrg_bchno for line in await call.books.fee_lines(visit.mdtrt_id)}
    await call.books.delete_fee_lines(visit.mdtrt_id, sorted(batches))
    await call.books.set_visit_status(visit.mdtrt_id, "cancelled")


async def open_visit(call: Call, mdtrt_id: str, psn_no: str) -> AnyRow:
    """A registered (not cancelled) visit of this person."""
    visit = await call.books.visit(mdtrt_id)
    if visit is None or visit.psn_no != psn_no:
        raise Refusal(f"就诊ID {mdtrt_id} 不存在")
    if visit.status != "registered":
        raise Refusal(f"就诊ID {mdtrt_id} 已撤销挂号")
    return visit


async def upload_fee_details(call: Call) -> Answer:
    lines = as_list(call.input_node("feedetail"))
    if not lines:
        raise Refusal("feedetail 不能为空")
    results = [await _accept_fee_line(call, line) for line in lines]
    uploaded = [(line["mdtrt_id"], line["feedetl_sn"]) for line in lines]
    return Answer({"result": results}, effect=json.dumps(uploaded))


async def revoke_fee_details(call: Call) -> Answer:
    data = call.data()
    visit = await open_visit(call, required(data, "mdtrt_id"), required(data, "psn_no"))
    chrg_bchno = required(data, "chrg_bchno")
    batches = {line.chrg_bchno for line in await call.books.fee_lines(visit.mdtrt_id)}
    if chrg_bchno != ALL_UNSETTLED:
        if chrg_bchno not in batches:
            raise Refusal(f"收费批次 {chrg_bchno} 无可撤销的费用明细")
        await _refuse_if_settled(call, visit.mdtrt_id, chrg_bchno)
        batches = {chrg_bchno}
    unsettled = [batch for batch in sorted(batches) if not await _is_settled(call, visit.mdtrt_id, batch)]
    await call.books.delete_fee_lines(visit.mdtrt_id, unsettled)
    return Answer({}, effect=json.dumps(unsettled))


async def delete_uploaded_lines(call: Call, uploaded: list[tuple[str, str]]) -> None:
    """Undo one 2204 message (2601 reversal), refused when any of its lines has been settled."""
    for mdtrt_id, feedetl_sn in uploaded:
        line = await call.books.fee_line(mdtrt_id, feedetl_sn)
        if line is not None:
            await _refuse_if_settled(call, mdtrt_id, line.chrg_bchno)
            await call.books.delete_fee_lines_by_sn(mdtrt_id, [feedetl_sn])


def stored_split(line: AnyRow) -> LineSplit:
    return LineSplit(
        Money(line.amount_fen),
        Money(line.fulamt_ownpay_fen),
        Money(line.overlmt_fen),
        Money(line.preselfpay_fen),
        Money(line.inscp_scp_fen),
    )


async def _accept_fee_line(call: Call, line: JsonObject) -> JsonObject:
    visit = await open_visit(call, required(line, "mdtrt_id"), required(line, "psn_no"))
    feedetl_sn, chrg_bchno = required(line, "feedetl_sn"), required(line, "chrg_bchno")
    amount, cnt, pric = _checked_amounts(line, feedetl_sn)
    await _refuse_if_settled(call, visit.mdtrt_id, chrg_bchno)
    item = find_item(optional(line, "med_list_codg")) or find_item(optional(line, "medins_list_codg"))
    rule = _rule_of(item)
    try:
        split = split_line(amount, cnt, rule)
    except PolicyError as exc:
        raise Refusal(str(exc)) from exc
    known = await call.books.fee_line(visit.mdtrt_id, feedetl_sn)
    if known is not None:  # the same line sent again: the same answer; a different line: refused
        if (known.amount_fen, known.chrg_bchno) != (amount.fen, chrg_bchno):
            raise Refusal(f"费用明细流水号 {feedetl_sn} 重复")
        return _fee_result(known, stored_split(known))
    await call.books.add_fee_line(**_line_values(call, line, item, rule, split, (cnt, pric)))
    stored = await call.books.fee_line(visit.mdtrt_id, feedetl_sn)
    assert stored is not None
    return _fee_result(stored, split)


def _checked_amounts(line: JsonObject, feedetl_sn: str) -> tuple[Money, Decimal, Decimal]:
    amount = money(line.get("det_item_fee_sumamt"), "det_item_fee_sumamt")
    cnt, pric = decimal(line.get("cnt"), "cnt"), decimal(line.get("pric"), "pric")
    if amount.is_negative() or cnt <= 0 or pric < 0:
        raise Refusal(f"费用明细 {feedetl_sn} 金额、数量或单价不合法")
    if abs(cnt * pric - Decimal(amount.to_yuan_str())) > _ONE_FEN_IN_YUAN:
        raise Refusal(f"费用明细 {feedetl_sn} 明细总额与单价×数量不符")
    return amount, cnt, pric


def _rule_of(item: CatalogueItem | None) -> ItemRule:
    if item is None:
        return OUT_OF_CATALOGUE
    cap = Money(item.price_cap_fen) if item.price_cap_fen is not None else None
    return ItemRule(item.chrgitm_lv, item.selfpay_prop, cap)


def _line_values(
    call: Call,
    line: JsonObject,
    item: CatalogueItem | None,
    rule: ItemRule,
    split: LineSplit,
    cnt_pric: tuple[Decimal, Decimal],
) -> dict[str, Any]:
    return {
        "mdtrt_id": required(line, "mdtrt_id"),
        "feedetl_sn": required(line, "feedetl_sn"),
        "chrg_bchno": required(line, "chrg_bchno"),
        "msgid": call.msgid,
        "med_list_codg": optional(line, "med_list_codg"),
        "medins_list_codg": optional(line, "medins_list_codg"),
        "cnt": str(cnt_pric[0]),
        "pric": str(cnt_pric[1]),
        "amount_fen": split.amount.fen,
        "chrgitm_lv": rule.chrgitm_lv,
        "med_chrgitm_type": item.med_chrgitm_type if item is not None else "14",
        "selfpay_prop": str(rule.selfpay_prop),
        "price_cap_fen": rule.price_cap.fen if rule.price_cap is not None else None,
        "fulamt_ownpay_fen": split.fulamt_ownpay_amt.fen,
        "overlmt_fen": split.overlmt_amt.fen,
        "preselfpay_fen": split.preselfpay_amt.fen,
        "inscp_scp_fen": split.inscp_scp_amt.fen,
    }


def _fee_result(line: AnyRow, split: LineSplit) -> JsonObject:
    in_catalogue = find_item(line.med_list_codg) or find_item(line.medins_list_codg)
    return {
        "feedetl_sn": line.feedetl_sn,
        "det_item_fee_sumamt": yuan(split.amount),
        "cnt": Decimal(line.cnt),
        "pric": Decimal(line.pric),
        "pric_uplmt_amt": yuan(Money(line.price_cap_fen or 0)),
        "selfpay_prop": Decimal(line.selfpay_prop).quantize(Decimal("0.0001")),
        "fulamt_ownpay_amt": yuan(split.fulamt_ownpay_amt),
        "overlmt_amt": yuan(split.overlmt_amt),
        "preselfpay_amt": yuan(split.preselfpay_amt),
        "inscp_scp_amt": yuan(split.inscp_scp_amt),
        "chrgitm_lv": line.chrgitm_lv,
        "med_chrgitm_type": line.med_chrgitm_type,
        "bas_medn_flag": "0",
        "hi_nego_drug_flag": "0",
        "chld_medc_flag": "0",
        "list_sp_item_flag": "0",
        "lmt_used_flag": "0",
        "drt_reim_flag": "0",
        "memo": "" if in_catalogue else "目录外项目，全自费",
    }


async def _is_settled(call: Call, mdtrt_id: str, chrg_bchno: str) -> bool:
    return await call.books.standing_settlement(mdtrt_id, chrg_bchno) is not None


async def _refuse_if_settled(call: Call, mdtrt_id: str, chrg_bchno: str) -> None:
    if await _is_settled(call, mdtrt_id, chrg_bchno):
        raise Refusal(f"收费批次 {chrg_bchno} 已结算，请先撤销结算")


def _visit_output(mdtrt_id: str, psn_no: str, ipt_otp_no: str) -> JsonObject:
    return {"data": {"mdtrt_id": mdtrt_id, "psn_no": psn_no, "ipt_otp_no": ipt_otp_no}}
