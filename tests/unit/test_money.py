from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.runtime.money import Money, total


def test_yuan_strings_convert_exactly_both_ways() -> None:
    assert Money.from_yuan_str("12.30") == Money(1230)
    assert Money.from_yuan_str("-0.05") == Money(-5)
    assert Money.from_yuan_str("7") == Money(700)
    assert Money(1230).to_yuan_str() == "12.30"
    assert Money(-5).to_yuan_str() == "-0.05"


@pytest.mark.parametrize("text", ["1.234", "abc", "", "NaN", "Infinity"])
def test_finer_than_a_fen_or_not_a_number_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        Money.from_yuan_str(text)


def test_floats_and_bools_are_not_money() -> None:
    with pytest.raises(TypeError):
        Money(12.3)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Money(True)


def test_arithmetic_and_sum_stay_in_fen() -> None:
    assert Money(1000) + Money(5) - Money(3) == Money(1002)
    assert total([Money(1), Money(2), Money(3)]) == Money(6)
    assert total([]) == Money.zero()


def test_policy_ratio_rounds_half_up_to_the_fen() -> None:
    assert Money(12345).times_ratio(Decimal("0.78")) == Money(9629)  # 9629.1
    assert Money(250).times_ratio(Decimal("0.5")) == Money(125)
    assert Money(1).times_ratio(Decimal("0.5")) == Money(1)  # 0.5 rounds up


@given(st.integers(min_value=-(10**12), max_value=10**12))
def test_yuan_round_trip_is_lossless(fen: int) -> None:
    assert Money.from_yuan_str(Money(fen).to_yuan_str()) == Money(fen)
