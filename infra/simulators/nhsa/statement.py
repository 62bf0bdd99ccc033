"""3201 医药机构费用结算对总账: the hospital's totals against the insurer's own records.

The insurer sums its settlements of the group (insutype, clr_type, setl_optins = clearing
institution) whose Beijing settlement date falls in [stmt_begndate, stmt_enddate]: a settlement
counts +1 with its amounts, a revocation's offsetting record −1 with its (negated) amounts.

Simulator extension: besides stmt_rslt/stmt_rslt_dscr, `stmtinfo` carries the insurer's own totals
as insu_medfee_sumamt, insu_fund_pay_sumamt, insu_acct_pay and insu_setl_cnt, so a caller can
show the difference without a 3202 round.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from infra.simulators.nhsa.context import Answer, Call
from infra.simulators.nhsa.store import AnyRow
from infra.simulators.nhsa.wire import JsonObject, Refusal, money, required, yuan
from services.runtime.money import Money, total

BALANCED, NOT_BALANCED = "0", "1"


@dataclass(frozen=True, slots=True)
class Totals:
    medfee_sumamt: Money
    fund_pay_sumamt: Money
    acct_pay: Money
    setl_cnt: int


async def reconcile_totals(call: Call) -> Answer:
    data = call.data()
    first_day, last_day = _day(data, "stmt_begndate"), _day(data, "stmt_enddate")
    if last_day < first_day:
        raise Refusal("对账结束日期早于开始日期")
    setl_optins = required(data, "setl_optins")
    rows = await call.books.settlements_between(
        required(data, "insutype"), required(data, "clr_type"), setl_optins, first_day, last_day
    )
    ours = _insurer_totals([row for row in rows if row.fixmedins_code == call.fixmedins_code])
    theirs = Totals(
        money(data.get("medfee_sumamt"), "medfee_sumamt"),
        money(data.get("fund_pay_sumamt"), "fund_pay_sumamt"),
        money(data.get("acct_pay"), "acct_pay"),
        _count(data.get("fixmedins_setl_cnt")),
    )
    return Answer({"stmtinfo": _statement(setl_optins, ours, theirs)})


def _insurer_totals(rows: Sequence[AnyRow]) -> Totals:
    return Totals(
        total(Money(row.medfee_sumamt_fen) for row in rows),
        total(Money(row.fund_pay_sumamt_fen) for row in rows),
        total(Money(row.acct_pay_fen) for row in rows),
        sum(1 if row.kind == "settle" else -1 for row in rows),
    )


def _statement(setl_optins: str, insurer: Totals, hospital: Totals) -> JsonObject:
    differences = [
        f"{label}: 医药机构 {_show(mine)} / 医保 {_show(theirs)}"
        for label, mine, theirs in (
            ("医疗费总额", hospital.medfee_sumamt, insurer.medfee_sumamt),
            ("基金支付总额", hospital.fund_pay_sumamt, insurer.fund_pay_sumamt),
            ("个人账户支出", hospital.acct_pay, insurer.acct_pay),
            ("结算笔数", hospital.setl_cnt, insurer.setl_cnt),
        )
        if mine != theirs
    ]
    return {
        "setl_optins": setl_optins,
        "stmt_rslt": NOT_BALANCED if differences else BALANCED,
        "stmt_rslt_dscr": "对账不平；" + "；".join(differences) if differences else "对账平",
        "insu_medfee_sumamt": yuan(insurer.medfee_sumamt),
        "insu_fund_pay_sumamt": yuan(insurer.fund_pay_sumamt),
        "insu_acct_pay": yuan(insurer.acct_pay),
        "insu_setl_cnt": insurer.setl_cnt,
    }


def _show(value: Money | int) -> str:
    return value.to_yuan_str() if isinstance(value, Money) else str(value)


def _day(data: JsonObject, field: str) -> str:
    text = required(data, field)[:10]
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError as exc:
        raise Refusal(f"{field} 日期格式错误") from exc


def _count(value: object) -> int:
    text = "" if value is None else str(value)
    if not text.lstrip("-").isdigit():
        raise Refusal("fixmedins_setl_cnt 格式错误")
    return int(text)
