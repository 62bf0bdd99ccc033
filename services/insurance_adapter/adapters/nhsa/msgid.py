"""发送方报文ID (msgid): fixmedins_code(12) + yyyyMMddHHmmss(14, Beijing) + 顺序号(4).

The insurer answers a repeated msgid with its first answer, so two messages must never share one,
not even from two replicas of the adapter in the same second. The four sequence digits are split:
the first is this process's node (give each replica its own, MEDPAY_NHSA_MSGID_NODE 0-9, and
their msgids can never meet; unset, a random one), the other three count the messages of the
second, from a random start. A process that sends more than 1,000 in one second numbers the rest
under the next second rather than wrap onto a msgid it already used.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime, timedelta

from services.insurance_adapter.adapters.nhsa.transport import BEIJING

NODES = 10
PER_SECOND = 1_000


class MsgidSequence:
    def __init__(self, fixmedins_code: str, clock: Callable[[], datetime], node: int | None = None) -> None:
        if node is not None and not 0 <= node < NODES:
            raise ValueError(f"msgid node must be 0..{NODES - 1}")
        self._prefix = fixmedins_code
        self._clock = clock
        self.node = secrets.randbelow(NODES) if node is None else node
        self._start = secrets.randbelow(PER_SECOND)
        self._second: datetime | None = None
        self._used = 0

    def next(self) -> str:
        second = self._clock().astimezone(BEIJING).replace(microsecond=0)
        if self._second is None or second > self._second:
            self._second, self._used = second, 0
        elif self._used == PER_SECOND:  # this second is spent (or the clock stepped back): go on
            self._second, self._used = self._second + timedelta(seconds=1), 0
        number = (self._start + self._used) % PER_SECOND
        self._used += 1
        return f"{self._prefix}{self._second:%Y%m%d%H%M%S}{self.node}{number:03d}"
