"""Fault injection, armed through POST /sim/faults and used up one firing at a time (the WeChat Pay
simulator's switches, on Alipay's methods).

Request faults (precreate, pay, query, close, cancel, refund, refund_query, bill):
    http_500  answer HTTP 500 without doing anything;
    timeout   do the work, then stall `delay_s` before answering (the outcome-unknown case);
    lost      nothing is done; the 500 comes only after `delay_s`.
Outcome faults:
    pay / user_paying     the next bar-code payment answers 10003 (等待用户付款) and stays
                          WAIT_BUYER_PAY until /sim/pay (the patient confirms on the phone);
    refund / processing   the next new refund answers fund_change N and stays without
                          refund_status until /sim/refunds/finish;
    refund / not_enough   the next new refund answers 40004 ACQ.SELLER_BALANCE_NOT_ENOUGH (the
                          merchant's balance is too low) and is not made; arm a large count and
                          DELETE /sim/faults when the balance is topped up.
Notification faults (pay_notify, refund_notify): lost (never sent), duplicate (sent twice, same
notify_id), late (held `delay_s` before the first try).
late_success_after_close (close or pay_notify): the next /sim/pay on a closed trade succeeds, as
when the patient's payment raced the merchant's close.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

REQUEST_OPERATIONS = frozenset(
    {"precreate", "pay", "query", "close", "cancel", "refund", "refund_query", "bill"}
)
NOTIFY_OPERATIONS = frozenset({"pay_notify", "refund_notify"})
REQUEST_MODES = frozenset({"http_500", "timeout", "lost"})
OUTCOME_MODES = {"pay": frozenset({"user_paying"}), "refund": frozenset({"processing", "not_enough"})}
NOTIFY_MODES = frozenset({"lost", "duplicate", "late"})
LATE_SUCCESS = "late_success_after_close"
DEFAULT_DELAY_S = 5.0


@dataclass(frozen=True, slots=True)
class Fault:
    operation: str
    mode: str
    remaining: int
    delay_s: float = DEFAULT_DELAY_S


def validate(operation: str, mode: str, count: int, delay_s: float) -> str | None:
    """Why this fault cannot be armed, or None when it can."""
    if count < 1 or delay_s < 0:
        return "count must be >= 1 and delay_s >= 0"
    if mode == LATE_SUCCESS:
        return None if operation in {"close", "pay_notify"} else "late_success_after_close needs close"
    if operation in REQUEST_OPERATIONS:
        modes = REQUEST_MODES | OUTCOME_MODES.get(operation, frozenset())
        return None if mode in modes else f"{operation} takes one of {sorted(modes)}"
    if operation in NOTIFY_OPERATIONS:
        return None if mode in NOTIFY_MODES else f"{operation} takes one of {sorted(NOTIFY_MODES)}"
    return f"unknown operation {operation!r}"


class FaultBook:
    def __init__(self) -> None:
        self._armed: list[Fault] = []

    def arm(self, fault: Fault) -> None:
        self._armed.append(fault)

    def clear(self) -> None:
        self._armed.clear()

    def armed(self) -> list[Fault]:
        return list(self._armed)

    def peek(self, operations: set[str] | frozenset[str], modes: set[str] | frozenset[str]) -> bool:
        return any(fault.operation in operations and fault.mode in modes for fault in self._armed)

    def take(self, operations: set[str] | frozenset[str], modes: set[str] | frozenset[str]) -> Fault | None:
        """Fire the first armed fault matching one of `operations` and `modes`, if any."""
        for index, fault in enumerate(self._armed):
            if fault.operation in operations and fault.mode in modes:
                if fault.remaining <= 1:
                    del self._armed[index]
                else:
                    self._armed[index] = replace(fault, remaining=fault.remaining - 1)
                return fault
        return None
