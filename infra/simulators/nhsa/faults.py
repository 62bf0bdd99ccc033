"""Faults armed through POST /sim/faults, consumed by the next matching transactions."""

from __future__ import annotations

import enum
from collections import defaultdict, deque
from dataclasses import dataclass


class FaultMode(enum.StrEnum):
    TIMEOUT = "timeout"  # hang, do nothing, then answer 504: the caller cannot tell
    ERROR = "error"  # answer HTTP 503 without doing anything
    REJECT = "reject"  # answer infcode -1 without doing anything
    UNKNOWN_AFTER_COMMIT = "unknown_after_commit"  # do the work, then hang past the caller's deadline


@dataclass(frozen=True, slots=True)
class Fault:
    infno: str
    mode: FaultMode
    hang_s: float | None = None


class FaultBook:
    """Armed faults per infno ("*" matches every business transaction), first armed first used."""

    def __init__(self) -> None:
        self._armed: defaultdict[str, deque[Fault]] = defaultdict(deque)

    def arm(self, fault: Fault, count: int) -> None:
        self._armed[fault.infno].extend([fault] * count)

    def take(self, infno: str) -> Fault | None:
        for key in (infno, "*"):
            if self._armed[key]:
                return self._armed[key].popleft()
        return None

    def clear(self) -> None:
        self._armed.clear()

    def pending(self) -> dict[str, int]:
        return {infno: len(queue) for infno, queue in self._armed.items() if queue}
