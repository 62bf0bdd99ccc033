"""The settlement's process manager: one pure function decides, from a settlement's state, what
the caller asked for and the clock, the single next step. The service layer's `advance` runs that
step (its intent recorded first where it has one) and asks again; nothing else decides a step.

A step is one message to the insurer with its business key (the visit number for 2201, the batch
number for 2204/2205/2206, the recorded msgid for 2207 and 5203, the setl_id for 2208), so running
it twice is never a second effect; or `Done` (answer the caller) or `Wait` (ask the insurer again
later). A settlement whose 2207 answer is outstanding is decided only by the insurer's word, asked
for on an escalating schedule, never by a guess.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.insurance_adapter.domain.settlement import (
    ACTIVE_STATUSES,
    AWAITING_INSURER,
    CANCELLABLE,
    QueryAnswer,
    Settlement,
    SettlementStatus,
    charge_batch_no,
)

S = SettlementStatus
# The pause after the n-th undecided 5203 (the last entry repeats): the insurer is asked again, not
# hammered. A Settle stops after MAX_QUERIES of them with "still unknown" for its caller to act on;
# an explicit refresh may still ask, at the slowest pace.
QUERY_BACKOFF = (
    timedelta(seconds=2),
    timedelta(seconds=10),
    timedelta(seconds=30),
    timedelta(minutes=2),
    timedelta(minutes=10),
    timedelta(minutes=30),
)
MAX_QUERIES = 8


class Goal(enum.StrEnum):
    """What the caller asked for."""

    PRESETTLED = "PRESETTLED"  # Presettle: the insurer's split is known (2206), nothing is settled
    SETTLED = "SETTLED"  # Settle: the insurer settled (2207), or its refusal is known
    KNOWN = "KNOWN"  # GetSettlement(refresh): the insurer's word on an outstanding 2207
    REVOKED = "REVOKED"  # RevokeSettlement (2208)
    CANCELLED = "CANCELLED"  # CancelPresettlement (2205)


class Outcome(enum.StrEnum):
    REACHED = "REACHED"  # the settlement stands where the goal asked
    DECIDED_OTHERWISE = "DECIDED_OTHERWISE"  # refused or cancelled for good: answered as it stands
    STILL_UNKNOWN = "STILL_UNKNOWN"  # MAX_QUERIES asked without the insurer's word: say so
    NOT_ALLOWED = "NOT_ALLOWED"  # the goal cannot be reached from this status


@dataclass(frozen=True, slots=True)
class RegisterVisit:
    """1101 then 2201: the order has no settlement yet; the registered visit opens one."""


@dataclass(frozen=True, slots=True)
class UploadFees:
    """2204 under the settlement's own batch number."""

    chrg_bchno: str


@dataclass(frozen=True, slots=True)
class Presettle:
    """2206 of the uploaded batch."""

    chrg_bchno: str


@dataclass(frozen=True, slots=True)
class SendSettlement:
    """2207. msgid "" = a new one, recorded before the message leaves; otherwise the recorded one."""

    msgid: str
    # An earlier 2207 under this msgid may have landed: if this one cannot reach the insurer, the
    # settlement goes back to UNKNOWN rather than PRESETTLED.
    after_unknown: bool


@dataclass(frozen=True, slots=True)
class QuerySettlement:
    """5203 by the msgid of the 2207 whose answer is outstanding."""

    msgid: str


@dataclass(frozen=True, slots=True)
class Revoke:
    """2208; the insurer answers a repeated one with the revocation it already booked."""

    setl_id: str


@dataclass(frozen=True, slots=True)
class CancelPresettlement:
    """2205 of the batch, then CANCELLED. `unconfirmed`: the 2204 of that batch may or may not
    have landed (its answer was lost), so the insurer refusing the 2205 means it holds nothing."""

    chrg_bchno: str
    unconfirmed: bool = False


@dataclass(frozen=True, slots=True)
class Done:
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class Wait:
    """The insurer must be asked again, not before `until`."""

    until: datetime


# The steps that are a message about an existing settlement (what `advance` runs).
InsurerStep = UploadFees | Presettle | SendSettlement | QuerySettlement | Revoke | CancelPresettlement
Step = RegisterVisit | InsurerStep | Done | Wait


def next_step(settlement: Settlement | None, goal: Goal, now: datetime) -> Step:
    """The single next step towards `goal`: the whole saga, top to bottom."""
    if settlement is None:  # no settlement for the order yet
        return RegisterVisit() if goal is Goal.PRESETTLED else Done(Outcome.NOT_ALLOWED)
    status, s = settlement.status, settlement
    if goal is Goal.PRESETTLED:  # continue from the recovery points; a later state is returned
        if status is S.VISIT_REGISTERED:
            return UploadFees(charge_batch_no(s.settlement_id))
        if status is S.FEES_UPLOADED:
            return Presettle(s.chrg_bchno)
        return Done(Outcome.REACHED if status in ACTIVE_STATUSES else Outcome.DECIDED_OTHERWISE)
    if goal is Goal.CANCELLED:
        if status is S.CANCELLED:
            return Done(Outcome.REACHED)
        if status in CANCELLABLE:
            if status is S.VISIT_REGISTERED:
                return CancelPresettlement(charge_batch_no(s.settlement_id), unconfirmed=True)
            return CancelPresettlement(s.chrg_bchno)
        return Done(Outcome.NOT_ALLOWED)
    if goal is Goal.REVOKED:
        if status is S.REVOKED:
            return Done(Outcome.REACHED)
        return Revoke(s.setl_id) if status is S.SETTLED else Done(Outcome.NOT_ALLOWED)
    if status in AWAITING_INSURER:  # Settle or refresh while the 2207 answer is outstanding
        return _towards_the_insurers_word(s, goal, now)
    if goal is Goal.KNOWN or status is S.SETTLED:
        return Done(Outcome.REACHED)
    if status in (S.FAILED, S.CANCELLED):  # a retry whose first answer was lost learns the same
        return Done(Outcome.DECIDED_OTHERWISE)
    if status is S.PRESETTLED:  # a msgid kept from an attempt that never reached the insurer is reused
        return SendSettlement(s.settle_msgid, after_unknown=False)
    return Done(Outcome.NOT_ALLOWED)  # not pre-settled yet, or revoked


def _towards_the_insurers_word(s: Settlement, goal: Goal, now: datetime) -> Step:
    if goal is Goal.SETTLED and s.last_query is QueryAnswer.NOT_FOUND:
        # Nothing booked under that msgid: the same 2207 again, which the insurer answers once.
        return SendSettlement(s.settle_msgid, after_unknown=True)
    if goal is Goal.SETTLED and s.undecided_queries >= MAX_QUERIES:
        return Done(Outcome.STILL_UNKNOWN)
    due = query_due(s)
    return QuerySettlement(s.settle_msgid) if due is None or now >= due else Wait(due)


def query_due(settlement: Settlement) -> datetime | None:
    """When the next 5203 may go; None = now (nothing asked since the last 2207)."""
    asked, at = settlement.undecided_queries, settlement.last_queried_at
    if asked == 0 or at is None:
        return None
    return at + QUERY_BACKOFF[min(asked, len(QUERY_BACKOFF)) - 1]
