"""The Fuzhou outpatient policy maths of the NHSA simulator: worked examples and properties."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infra.simulators.nhsa.policy import (
    OUT_OF_CATALOGUE,
    Accumulators,
    ItemRule,
    LineSplit,
    Member,
    PolicyError,
    SettlementSplit,
    outpatient_scheme,
    settle_outpatient,
    split_line,
)
from services.runtime.money import Money

CLASS_A = ItemRule("01")
CLASS_B_5 = ItemRule("02", Decimal("0.05"))
CLASS_C = ItemRule("03", Decimal(1))
SYRINGE_CAPPED = ItemRule("01", price_cap=Money(200))


def yuan(text: str) -> Money:
    return Money.from_yuan_str(text)


def a_visit() -> list[LineSplit]:
    """200 甲 + 100 乙 (5 %) + 30 丙 + 3 infusion sets at 2.50 against a 2.00 cap."""
    return [
        split_line(yuan("200.00"), Decimal(1), CLASS_A),
        split_line(yuan("100.00"), Decimal(1), CLASS_B_5),
        split_line(yuan("30.00"), Decimal(1), CLASS_C),
        split_line(yuan("7.50"), Decimal(3), SYRINGE_CAPPED),
    ]


def employee(
    balance: str = "0.00", deductible_paid: str = "0.00", fund_paid: str = "0.00", psn_type: str = "11"
) -> Member:
    return Member("310", psn_type, yuan(balance), Accumulators(yuan(deductible_paid), yuan(fund_paid)))


def resident(fund_paid: str = "0.00") -> Member:
    return Member("390", "11", Money(0), Accumulators(Money(0), yuan(fund_paid)))


def settle(member: Member, use_account: bool = True) -> SettlementSplit:
    return settle_outpatient(a_visit(), member, outpatient_scheme(member.insutype), use_account)


def assert_identities(split: SettlementSplit) -> None:
    parts = split.fulamt_ownpay_amt + split.overlmt_selfpay + split.preselfpay_amt + split.inscp_scp_amt
    assert parts == split.medfee_sumamt
    assert split.fund_pay_sumamt == split.hifp_pay
    assert split.psn_part_amt == split.medfee_sumamt - split.fund_pay_sumamt - split.hosp_part_amt
    assert split.psn_part_amt == split.acct_pay + split.psn_cash_pay


# lines


def test_class_c_line_is_paid_in_full_by_the_patient() -> None:
    assert split_line(yuan("28.00"), Decimal(1), CLASS_C) == LineSplit(
        yuan("28.00"), yuan("28.00"), Money(0), Money(0), Money(0)
    )


def test_item_outside_the_catalogue_is_paid_in_full_by_the_patient() -> None:
    assert split_line(yuan("5.00"), Decimal(2), OUT_OF_CATALOGUE).fulamt_ownpay_amt == yuan("5.00")


def test_class_b_first_self_pay_share_is_rounded_half_up_per_line() -> None:
    line = split_line(Money(333), Decimal(1), CLASS_B_5)  # 3.33 × 5 % = 0.1665
    assert (line.preselfpay_amt, line.inscp_scp_amt) == (Money(17), Money(316))


def test_price_above_the_cap_is_over_limit_self_pay() -> None:
    line = split_line(yuan("7.50"), Decimal(3), SYRINGE_CAPPED)
    assert (line.overlmt_amt, line.inscp_scp_amt) == (yuan("1.50"), yuan("6.00"))


def test_over_limit_is_taken_before_the_class_b_share() -> None:
    splint = ItemRule("02", Decimal("0.05"), price_cap=yuan("200.00"))
    line = split_line(yuan("250.00"), Decimal(1), splint)
    assert (line.overlmt_amt, line.preselfpay_amt, line.inscp_scp_amt) == (
        yuan("50.00"),
        yuan("10.00"),
        yuan("190.00"),
    )


def test_negative_line_is_refused() -> None:
    with pytest.raises(PolicyError):
        split_line(Money(-1), Decimal(1), CLASS_A)


# employees (310), level-3 hospital: 600 deductible, 78 % / 83 %, 30,000 cap


def test_employee_first_visit_of_the_year_goes_entirely_to_the_deductible() -> None:
    split = settle(employee(balance="100.00"))
    assert split.medfee_sumamt == yuan("337.50")
    assert (split.fulamt_ownpay_amt, split.overlmt_selfpay) == (yuan("30.00"), yuan("1.50"))
    assert (split.preselfpay_amt, split.inscp_scp_amt) == (yuan("5.00"), yuan("301.00"))
    assert (split.act_pay_dedc, split.hifp_pay) == (yuan("301.00"), Money(0))
    # the personal account is bounded by its balance
    assert (split.acct_pay, split.psn_cash_pay, split.balc) == (yuan("100.00"), yuan("237.50"), Money(0))
    assert split.fund_pay_type == "310100"
    assert_identities(split)


def test_employee_crossing_the_deductible_pays_78_percent_above_it() -> None:
    split = settle(employee(balance="5000.00", deductible_paid="500.00"))
    assert split.act_pay_dedc == yuan("100.00")
    assert split.hifp_pay == yuan("156.78")  # (301.00 − 100.00) × 78 %
    assert split.psn_part_amt == yuan("180.72")
    assert (split.acct_pay, split.psn_cash_pay, split.balc) == (yuan("180.72"), Money(0), yuan("4819.28"))
    assert_identities(split)


def test_retired_employee_gets_83_percent() -> None:
    split = settle(employee(deductible_paid="600.00", psn_type="12"))
    assert split.fund_ratio == Decimal("0.83")
    assert split.hifp_pay == yuan("249.83")  # 301.00 × 83 %
    assert_identities(split)


def test_employee_fund_stops_at_the_annual_cap() -> None:
    split = settle(employee(deductible_paid="600.00", fund_paid="29990.00"))
    assert split.cap_remaining == yuan("10.00")
    assert split.hifp_pay == yuan("10.00")
    assert split.psn_part_amt == yuan("327.50")
    assert_identities(split)


def test_employee_past_the_cap_gets_nothing_more() -> None:
    split = settle(employee(deductible_paid="600.00", fund_paid="30000.00"))
    assert (split.hifp_pay, split.cap_remaining) == (Money(0), Money(0))


def test_employee_without_account_use_pays_cash() -> None:
    split = settle(employee(balance="1000.00"), use_account=False)
    assert (split.acct_pay, split.balc) == (Money(0), yuan("1000.00"))
    assert split.psn_cash_pay == split.psn_part_amt


def test_accumulators_advance_by_the_deductible_and_fund_used() -> None:
    before = Accumulators(yuan("500.00"), yuan("10.00"))
    split = settle(employee(deductible_paid="500.00", fund_paid="10.00"))
    assert split.accumulators_after(before) == Accumulators(yuan("600.00"), yuan("166.78"))


# residents (390): no deductible, 50 %, 800 cap, no personal account


def test_resident_pays_half_of_the_in_scope_amount_and_has_no_account() -> None:
    split = settle(resident())
    assert (split.act_pay_dedc, split.hifp_pay) == (Money(0), yuan("150.50"))
    assert (split.acct_pay, split.psn_cash_pay) == (Money(0), yuan("187.00"))
    assert split.fund_pay_type == "390100"
    assert_identities(split)


def test_resident_fund_stops_at_800_a_year() -> None:
    split = settle(resident(fund_paid="790.00"))
    assert split.hifp_pay == yuan("10.00")
    assert_identities(split)


def test_half_fen_rounds_up() -> None:
    split = settle_outpatient(
        [split_line(Money(3), Decimal(1), CLASS_A)], resident(), outpatient_scheme("390"), False
    )
    assert split.hifp_pay == Money(2)  # 0.03 × 50 % = 0.015 → 0.02


def test_lower_level_hospitals_pay_more_to_employees() -> None:
    assert outpatient_scheme("310", hospital_level=1).ratio_in_service == Decimal("0.88")
    assert outpatient_scheme("310", hospital_level=2).ratio_retired == Decimal("0.88")


def test_unknown_insurance_type_is_refused() -> None:
    with pytest.raises(PolicyError):
        outpatient_scheme("320")


# properties

rules = st.builds(
    ItemRule,
    chrgitm_lv=st.sampled_from(["01", "02", "03"]),
    selfpay_prop=st.sampled_from([Decimal(0), Decimal("0.05"), Decimal("0.10"), Decimal("0.2")]),
    price_cap=st.one_of(st.none(), st.integers(0, 100_000).map(Money)),
)
lines = st.builds(
    split_line,
    amount=st.integers(0, 5_000_000).map(Money),
    quantity=st.decimals(min_value=Decimal("0.0001"), max_value=Decimal(50), places=4),
    rule=rules,
)
members = st.builds(
    Member,
    insutype=st.sampled_from(["310", "390"]),
    psn_type=st.sampled_from(["11", "12"]),
    account_balance=st.integers(0, 2_000_000).map(Money),
    accumulators=st.builds(
        Accumulators, st.integers(0, 100_000).map(Money), st.integers(0, 4_000_000).map(Money)
    ),
)


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(lines, max_size=12), member=members, use_account=st.booleans(), level=st.integers(1, 3))
def test_identities_hold_and_nothing_is_negative(
    parts: list[LineSplit], member: Member, use_account: bool, level: int
) -> None:
    for line in parts:
        assert (
            line.amount
            == line.fulamt_ownpay_amt + line.overlmt_amt + line.preselfpay_amt + line.inscp_scp_amt
        )
    scheme = outpatient_scheme(member.insutype, level)
    split = settle_outpatient(parts, member, scheme, use_account)
    assert_identities(split)
    amounts = [
        getattr(split, name) for name in SettlementSplit.__dataclass_fields__ if name not in ("fund_ratio",)
    ]
    assert all(not value.is_negative() for value in amounts if isinstance(value, Money))
    assert split.hifp_pay <= split.cap_remaining
    assert split.hifp_pay <= split.inscp_scp_amt - split.act_pay_dedc
    assert member.accumulators.deductible_paid + split.act_pay_dedc <= max(
        scheme.deductible, member.accumulators.deductible_paid
    )
    assert split.acct_pay <= member.account_balance
    assert split.balc == member.account_balance - split.acct_pay
    if not (use_account and scheme.personal_account):
        assert split.acct_pay == Money(0)
