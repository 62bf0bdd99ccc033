"""Nearest-rank settlement-time percentiles and the slices GetSettlementTimes answers with."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.data_aggregation.domain.percentiles import (
    SettlementSample,
    SettlementTimes,
    nearest_rank,
    settlement_time_slices,
    settlement_times,
)


def test_nearest_rank_takes_the_value_at_rank_ceil_p_n() -> None:
    ten = list(range(10, 110, 10))  # 10, 20, ..., 100

    assert [nearest_rank(ten, p) for p in (1, 10, 11, 50, 90, 91, 99, 100)] == [
        10,
        10,
        20,
        50,
        90,
        100,
        100,
        100,
    ]


def test_nearest_rank_of_the_textbook_example() -> None:
    # The classic worked example: 15, 20, 35, 40, 50 -> p30 = 20, p40 = 20, p50 = 35, p100 = 50.
    values = [15, 20, 35, 40, 50]

    assert [nearest_rank(values, p) for p in (5, 30, 40, 50, 100)] == [15, 20, 20, 35, 50]


def test_one_value_is_every_percentile() -> None:
    assert settlement_times("all", [840]) == SettlementTimes("all", 1, 840, 840, 840, 840)


def test_a_hundred_values_put_p99_on_the_99th() -> None:
    times = settlement_times("all", reversed(range(1, 101)))

    assert (times.count, times.p50_ms, times.p90_ms, times.p99_ms, times.max_ms) == (100, 50, 90, 99, 100)


def test_an_empty_slice_is_zeros() -> None:
    assert settlement_times("OUTPATIENT", []) == SettlementTimes("OUTPATIENT", 0, 0, 0, 0, 0)


@pytest.mark.parametrize("percent", [0, -5, 101])
def test_a_percent_outside_0_to_100_is_refused(percent: int) -> None:
    with pytest.raises(ValueError, match="percent"):
        nearest_rank([1, 2, 3], percent)


def test_no_values_have_no_percentile() -> None:
    with pytest.raises(ValueError, match="no values"):
        nearest_rank([], 50)


@given(
    st.lists(st.integers(min_value=0, max_value=10**9), min_size=1), st.integers(min_value=1, max_value=100)
)
def test_the_percentile_is_a_seen_value_with_enough_values_at_or_below_it(
    values: list[int], percent: int
) -> None:
    ordered = sorted(values)
    found = nearest_rank(ordered, percent)

    at_or_below = sum(1 for value in ordered if value <= found)
    below = sum(1 for value in ordered if value < found)
    assert found in values
    assert at_or_below >= math.ceil(percent * len(values) / 100)
    assert below < math.ceil(percent * len(values) / 100)


def test_slices_come_all_first_then_scenes_then_channels() -> None:
    samples = [
        SettlementSample("OUTPATIENT", "WECHAT_PAY", 900),
        SettlementSample("OUTPATIENT", "CASH", 300),
        SettlementSample("PHARMACY", "WECHAT_PAY", 1_500),
        SettlementSample("OUTPATIENT", "WECHAT_PAY", 600),
    ]

    slices = settlement_time_slices(samples)

    assert [(item.slice, item.count) for item in slices] == [
        ("all", 4), ("OUTPATIENT", 3), ("PHARMACY", 1), ("CASH", 1), ("WECHAT_PAY", 3),
    ]  # fmt: skip
    assert (slices[0].p50_ms, slices[0].p90_ms, slices[0].max_ms) == (600, 1_500, 1_500)
    assert (slices[-1].p50_ms, slices[-1].p99_ms) == (900, 1_500)


def test_a_day_without_orders_still_answers_all() -> None:
    assert settlement_time_slices([]) == [SettlementTimes("all", 0, 0, 0, 0, 0)]
