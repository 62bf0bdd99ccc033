"""Outpatient policy maths of the Fuzhou medical-insurance fund (admdvs 350100). Pure: no I/O.

Parameters follow the reference notes (§6): employees (310) have a 600-yuan annual outpatient
deductible, a level-dependent fund ratio (level 3: 78 % in service, 83 % retired) and a
30,000-yuan annual outpatient cap, and may spend their personal account; residents (390) have no
deductible, 50 % and an 800-yuan annual cap, and no personal account. The waiver of the deductible
for national essential drugs is not modelled.

The order of a settlement, all in fen:
1. each line splits into 全自费 (丙类 and items outside the catalogue), 超限价 (price above the
   insurer's cap), 先行自付 (乙类 share, rounded half-up per line) and 符合政策范围 (the rest);
2. the remaining annual deductible is taken from the in-scope amount (`act_pay_dedc`);
3. the fund pays ratio × (in-scope − deductible), rounded half-up, bounded by the remaining cap;
4. the patient owes everything else; the personal account covers it up to its balance.
So that, exactly: medfee = fulamt + overlmt + preselfpay + inscp; fund_pay_sumamt = hifp_pay;
psn_part = medfee − fund − hosp_part; psn_part = acct_pay + psn_cash_pay.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

from services.runtime.money import Money, total

CLASS_A, CLASS_B, CLASS_C = "01", "02", "03"
RETIRED_PSN_TYPE = "12"


class PolicyError(ValueError):
    """The request cannot be priced under any scheme (unknown insurance type, negative amount)."""


@dataclass(frozen=True, slots=True)
class ItemRule:
    """What the insurer's catalogue says about one charge item."""

    chrgitm_lv: str
    selfpay_prop: Decimal = Decimal(0)
    price_cap: Money | None = None


OUT_OF_CATALOGUE = ItemRule(chrgitm_lv=CLASS_C, selfpay_prop=Decimal(1))


@dataclass(frozen=True, slots=True)
class LineSplit:
    """One fee line split into the four policy parts (2204 `result`)."""

    amount: Money
    fulamt_ownpay_amt: Money
    overlmt_amt: Money
    preselfpay_amt: Money
    inscp_scp_amt: Money


@dataclass(frozen=True, slots=True)
class OutpatientScheme:
    insutype: str
    fund_pay_type: str
    deductible: Money
    ratio_in_service: Decimal
    ratio_retired: Decimal
    annual_cap: Money
    personal_account: bool

    def ratio_for(self, psn_type: str) -> Decimal:
        return self.ratio_retired if psn_type == RETIRED_PSN_TYPE else self.ratio_in_service


@dataclass(frozen=True, slots=True)
class Accumulators:
    """This year's outpatient totals for one person and insurance type (5206 `cuminfo`)."""

    deductible_paid: Money = field(default_factory=Money.zero)
    fund_paid: Money = field(default_factory=Money.zero)


@dataclass(frozen=True, slots=True)
class Member:
    insutype: str
    psn_type: str
    account_balance: Money
    accumulators: Accumulators


@dataclass(frozen=True, slots=True)
class SettlementSplit:
    """The amounts of one outpatient settlement (2206/2207 `setlinfo`), in fen."""

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
    fund_ratio: Decimal
    cap_remaining: Money  # 本次可支付限额 before this settlement (setldetail.crt_payb_lmt_amt)
    fund_pay_type: str

    def accumulators_after(self, before: Accumulators) -> Accumulators:
        return Accumulators(before.deductible_paid + self.act_pay_dedc, before.fund_paid + self.hifp_pay)


_ZERO = Money(0)
# Fuzhou employee outpatient ratio by hospital level: (in service, retired).
_EMPLOYEE_RATIOS = {1: ("0.88", "0.93"), 2: ("0.83", "0.88"), 3: ("0.78", "0.83")}


def outpatient_scheme(insutype: str, hospital_level: int = 3) -> OutpatientScheme:
    """Fuzhou outpatient pooling for an insurance type at a hospital of the given level (1–3)."""
    if insutype == "310":
        in_service, retired = _EMPLOYEE_RATIOS[max(1, min(hospital_level, 3))]
        return OutpatientScheme(
            "310", "310100", Money(60_000), Decimal(in_service), Decimal(retired), Money(3_000_000), True
        )
    if insutype == "390":
        return OutpatientScheme(
            "390", "390100", _ZERO, Decimal("0.50"), Decimal("0.50"), Money(80_000), False
        )
    raise PolicyError(f"不支持的险种类型 {insutype}")


def split_line(amount: Money, quantity: Decimal, rule: ItemRule) -> LineSplit:
    """Split one fee line by its grade, the insurer's price cap and the 乙类 first self-pay share."""
    if amount.is_negative() or quantity < 0:
        raise PolicyError("费用明细金额和数量不能为负")
    if rule.chrgitm_lv not in (CLASS_A, CLASS_B):
        return LineSplit(amount, amount, _ZERO, _ZERO, _ZERO)
    overlmt = _over_price_cap(amount, quantity, rule.price_cap)
    allowed = amount - overlmt
    preselfpay = allowed.times_ratio(rule.selfpay_prop) if rule.chrgitm_lv == CLASS_B else _ZERO
    return LineSplit(amount, _ZERO, overlmt, preselfpay, allowed - preselfpay)


def settle_outpatient(
    lines: Iterable[LineSplit], member: Member, scheme: OutpatientScheme, use_account: bool
) -> SettlementSplit:
    """Price one outpatient settlement against the member's accumulators and balance."""
    parts = list(lines)
    inscp = total(line.inscp_scp_amt for line in parts)
    medfee = total(line.amount for line in parts)
    deductible_left = _floor_zero(scheme.deductible - member.accumulators.deductible_paid)
    act_pay_dedc = min(inscp, deductible_left)
    cap_remaining = _floor_zero(scheme.annual_cap - member.accumulators.fund_paid)
    ratio = scheme.ratio_for(member.psn_type)
    hifp_pay = min((inscp - act_pay_dedc).times_ratio(ratio), cap_remaining)
    psn_part = medfee - hifp_pay
    balance = member.account_balance if scheme.personal_account and use_account else _ZERO
    acct_pay = min(_floor_zero(balance), psn_part)
    return SettlementSplit(
        medfee_sumamt=medfee,
        fulamt_ownpay_amt=total(line.fulamt_ownpay_amt for line in parts),
        overlmt_selfpay=total(line.overlmt_amt for line in parts),
        preselfpay_amt=total(line.preselfpay_amt for line in parts),
        inscp_scp_amt=inscp,
        act_pay_dedc=act_pay_dedc,
        hifp_pay=hifp_pay,
        fund_pay_sumamt=hifp_pay,
        psn_part_amt=psn_part,
        acct_pay=acct_pay,
        psn_cash_pay=psn_part - acct_pay,
        hosp_part_amt=_ZERO,
        balc=member.account_balance - acct_pay,
        fund_ratio=ratio,
        cap_remaining=cap_remaining,
        fund_pay_type=scheme.fund_pay_type,
    )


def _over_price_cap(amount: Money, quantity: Decimal, price_cap: Money | None) -> Money:
    if price_cap is None:
        return _ZERO
    allowed_fen = (Decimal(price_cap.fen) * quantity).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    return _floor_zero(amount - Money(int(allowed_fen)))


def _floor_zero(amount: Money) -> Money:
    return amount if amount.fen > 0 else _ZERO
