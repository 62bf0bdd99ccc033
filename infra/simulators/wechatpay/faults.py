"""Fault injection, armed by tests through POST /sim/faults and consumed one firing at a time.

Request faults (place_order, query, refund, close, trade_bill):
    http_500  answer 500 SYSTEM_ERROR without doing anything;
    frequency_limited  answer 429 FREQUENCY_LIMITED without doing anything;
    timeout   do the work, then stall `delay_s` before answering (the caller times out after its
              request was applied: the classic "outcome unknown");
    lost      the request vanishes: nothing is done, the answer comes only after `delay_s`.
The patient of a code payment (operation codepay), for the next `count` new code payments: the
answer is 202 USERPAYING and, `delay_s` seconds later (simulator clock), the patient
    confirms  the payment is SUCCESS;
    cancels   it is PAYERROR;
    never     it stays USERPAYING until the merchant reverses it.
Without one, a code payment is SUCCESS in the answer itself.
Refund outcomes (operation refund), each for the next `count` refunds created (replays do not use
them up); `delay_s` is how long (wall clock) the refund stays PROCESSING, by default the
simulator's refund delay:
    processing    answer PROCESSING, then SUCCESS + REFUND.SUCCESS (also when refunds are sync);
    abnormal      answer PROCESSING, then ABNORMAL + REFUND.ABNORMAL (the money is stuck until
                  the merchant re-routes it with apply-abnormal-refund);
    closed        answer PROCESSING, then CLOSED + REFUND.CLOSED (the amount is refundable again);
    sync_success  answer SUCCESS at once, with REFUND.SUCCESS right away.
The balance switch (operation refund, mode not_enough): while armed, each new refund that passes
every rule is answered 403 NOT_ENOUGH (the merchant's available balance is too low) and nothing is
kept, so the same out_refund_no can be sent again later; one firing per refused refund, replays of
refunds that exist are answered as usual. Arm it with a large `count` to hold it on, DELETE
/sim/faults to turn it off (the merchant topped the balance up).
Notification faults (pay_notify, refund_notify):
    lost      the notification is never sent;
    duplicate it is delivered twice (same event id), as the real gateway sometimes does.
late_success_after_close (operation close or pay_notify): the next /sim/pay on a CLOSED order
succeeds anyway, as when the patient's payment raced the merchant's close.
Faults live in memory only; a restart clears them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

REQUEST_OPERATIONS = frozenset(
    {"place_order", "query", "refund", "close", "trade_bill", "codepay", "reverse"}
)
NOTIFY_OPERATIONS = frozenset({"pay_notify", "refund_notify"})
REQUEST_MODES = frozenset({"http_500", "frequency_limited", "timeout", "lost"})
CODEPAY_PATIENT_MODES = frozenset({"confirms", "cancels", "never"})
REFUND_OUTCOME_MODES = frozenset({"processing", "abnormal", "closed", "sync_success"})
NOT_ENOUGH = "not_enough"
NOTIFY_MODES = frozenset({"lost", "duplicate"})
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
    if operation == "refund":
        modes = REQUEST_MODES | REFUND_OUTCOME_MODES | {NOT_ENOUGH}
        return None if mode in modes else f"refund takes one of {sorted(modes)}"
    if operation == "codepay":
        modes = REQUEST_MODES | CODEPAY_PATIENT_MODES
        return None if mode in modes else f"codepay takes one of {sorted(modes)}"
    if operation in REQUEST_OPERATIONS:
        return None if mode in REQUEST_MODES else f"{operation} takes one of {sorted(REQUEST_MODES)}"
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

    def take(self, operations: set[str] | frozenset[str], modes: set[str] | frozenset[str]) -> Fault | None:
        """Fire the first armed fault matching one of `operations` and `modes`, if any."""
        for index, fault in enumerate(self._armed):
            if fault.operation in operations and fault.mode in modes:
                self._use(index, fault)
                return fault
        return None

    def _use(self, index: int, fault: Fault) -> None:
        if fault.remaining <= 1:
            del self._armed[index]
        else:
            self._armed[index] = replace(fault, remaining=fault.remaining - 1)
