"""Settlement-time distributions: nearest-rank percentiles of created → settled, in milliseconds.

Nearest rank (not interpolation) so every figure is a latency some patient actually saw: the p-th
percentile of n sorted values is the value at rank ceil(p/100 · n).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

ALL_ORDERS = "all"


@dataclass(frozen=True, slots=True)
class SettlementSample:
    scene: str
    channel: str
    settle_ms: int


@dataclass(frozen=True, slots=True)
class SettlementTimes:
    slice: str
    count: int
    p50_ms: int
    p90_ms: int
    p99_ms: int
    max_ms: int


def nearest_rank(sorted_values: Sequence[int], percent: int) -> int:
    """The smallest value with at least `percent`% of the values at or below it."""
    if not 0 < percent <= 100:
        raise ValueError(f"percent must be in (0, 100], got {percent}")
    if not sorted_values:
        raise ValueError("no values")
    rank = -(-percent * len(sorted_values) // 100)
    return sorted_values[rank - 1]


def settlement_times(slice_name: str, durations_ms: Iterable[int]) -> SettlementTimes:
    """One slice's figures; an empty slice is all zeros with count 0."""
    ordered = sorted(durations_ms)
    if not ordered:
        return SettlementTimes(slice_name, 0, 0, 0, 0, 0)
    return SettlementTimes(
        slice=slice_name,
        count=len(ordered),
        p50_ms=nearest_rank(ordered, 50),
        p90_ms=nearest_rank(ordered, 90),
        p99_ms=nearest_rank(ordered, 99),
        max_ms=ordered[-1],
    )


def settlement_time_slices(samples: Sequence[SettlementSample]) -> list[SettlementTimes]:
    """ "all" first, then one slice per scene, then one per channel (each in name order)."""
    slices = [settlement_times(ALL_ORDERS, (sample.settle_ms for sample in samples))]
    slices += _sliced_by(samples, lambda sample: sample.scene)
    slices += _sliced_by(samples, lambda sample: sample.channel)
    return slices


def _sliced_by(
    samples: Sequence[SettlementSample], name_of: Callable[[SettlementSample], str]
) -> list[SettlementTimes]:
    groups: dict[str, list[int]] = {}
    for sample in samples:
        groups.setdefault(name_of(sample), []).append(sample.settle_ms)
    return [settlement_times(name, groups[name]) for name in sorted(groups)]
