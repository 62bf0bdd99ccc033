"""The settlement's process manager: next_step, for every (status, goal) and every point of the
5203 schedule. Pure, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise, product

import pytest

from services.insurance_adapter.domain.process import (
    MAX_QUERIES,
    QUERY_BACKOFF,
    CancelPresettlement,
    Done,
    Goal,
    Outcome,
    Presettle,
    QuerySettlement,
    RegisterVisit,
    Revoke,
    SendSettlement,
    Step,
    UploadFees,
    Wait,
    next_step,
    query_due,
)
from services.insurance_adapter.domain.settlement import (
    InsuredVisit,
    QueryAnswer,
    Settlement,
    SettlementBreakdown,
    SettlementStatus,
    charge_batch_no,
)
from services.runtime.errors import StateConflict
from services.runtime.masking import PatientIdentifier
from services.runtime.money import Money

S, G = SettlementStatus, Goal
NOW = datetime(2025, 3, 14, 4, 0, tzinfo=UTC)
SETTLEMENT_ID = "stl_0f3a9c2e7b1d4e5f8a6b3c2d"
BATCH = charge_batch_no(SETTLEMENT_ID)
MSGID = "H35010200901202503141200000001"  # code + time + sequence
SETL_ID = "35010020250314S000000001"

REACHED, DECIDED = Done(Outcome.REACHED), Done(Outcome.DECIDED_OTHERWISE)
NOT_ALLOWED = Done(Outcome.NOT_ALLOWED)
QUERY = QuerySettlement(MSGID)
AFTER_A_VISIT = {S.VISIT_REGISTERED, S.FEES_UPLOADED, S.PRESETTLED}

# Every (status, goal) pair, for a settlement with no 5203 asked since its last 2207.
TABLE: dict[tuple[SettlementStatus, Goal], Step] = {
    # Presettle continues from the recovery points; anything later is returned as it is.
    (S.VISIT_REGISTERED, G.PRESETTLED): UploadFees(BATCH),
    (S.FEES_UPLOADED, G.PRESETTLED): Presettle(BATCH),
    **{(status, G.PRESETTLED): REACHED for status in (S.PRESETTLED, S.SETTLING, S.UNKNOWN)},
    (S.SETTLED, G.PRESETTLED): REACHED,
    # A revoked settlement frees its order (a partly refunded bill is pre-settled anew): decided.
    **{(status, G.PRESETTLED): DECIDED for status in (S.FAILED, S.CANCELLED, S.REVOKED)},
    # Settle: 2207 under a new msgid; an outstanding one is asked about first (5203, same msgid);
    # a decided one answers as it stands.
    (S.VISIT_REGISTERED, G.SETTLED): NOT_ALLOWED,
    (S.FEES_UPLOADED, G.SETTLED): NOT_ALLOWED,
    (S.PRESETTLED, G.SETTLED): SendSettlement("", after_unknown=False),
    (S.SETTLING, G.SETTLED): QUERY,
    (S.UNKNOWN, G.SETTLED): QUERY,
    (S.SETTLED, G.SETTLED): REACHED,
    (S.FAILED, G.SETTLED): DECIDED,
    (S.CANCELLED, G.SETTLED): DECIDED,
    (S.REVOKED, G.SETTLED): NOT_ALLOWED,
    # Refresh asks only about an outstanding 2207.
    **{(status, G.KNOWN): QUERY for status in (S.SETTLING, S.UNKNOWN)},
    **{(status, G.KNOWN): REACHED for status in set(S) - {S.SETTLING, S.UNKNOWN}},
    # Revoke: 2208 of a settled one; a repeat of a revoked one answers it.
    (S.SETTLED, G.REVOKED): Revoke(SETL_ID),
    (S.REVOKED, G.REVOKED): REACHED,
    **{(status, G.REVOKED): NOT_ALLOWED for status in set(S) - {S.SETTLED, S.REVOKED}},
    # Cancel: 2205 of an uploaded batch (none before 2204); nothing once a 2207 went out.
    (S.VISIT_REGISTERED, G.CANCELLED): CancelPresettlement(BATCH, unconfirmed=True),
    (S.FEES_UPLOADED, G.CANCELLED): CancelPresettlement(BATCH),
    (S.PRESETTLED, G.CANCELLED): CancelPresettlement(BATCH),
    (S.CANCELLED, G.CANCELLED): REACHED,
    **{(status, G.CANCELLED): NOT_ALLOWED for status in set(S) - AFTER_A_VISIT - {S.CANCELLED}},
}


def a_breakdown() -> SettlementBreakdown:
    return SettlementBreakdown(
        *(Money(fen) for fen in (12_500, 0, 0, 0, 12_500, 0, 7_800, 7_800, 4_700, 1_000, 3_700, 0, 50_000))
    )


def a_settlement(status: SettlementStatus) -> Settlement:
    """A settlement walked to `status` the way the handlers walk it."""
    visit = InsuredVisit(
        "350100000000000001", "310", "11", "350100", "02", PatientIdentifier("350102198003150017"),
        "MZ20250314001", "35010020250314M000000001", True,
    )  # fmt: skip
    settlement = Settlement(SETTLEMENT_ID, "ord_1", "f" * 64, visit, created_at=NOW)
    path = {
        S.FEES_UPLOADED: lambda: settlement.record_fees_uploaded(BATCH),
        S.PRESETTLED: lambda: settlement.record_presettlement(a_breakdown(), NOW),
        S.SETTLING: lambda: settlement.begin_settlement(MSGID, "INV1"),
        S.SETTLED: lambda: settlement.record_settled(SETL_ID, a_breakdown(), NOW),
        S.REVOKED: lambda: settlement.record_revoked(NOW),
    }
    detours = {
        S.UNKNOWN: (S.SETTLING, lambda: settlement.record_outcome_unknown("2207 timed out")),
        S.FAILED: (S.SETTLING, lambda: settlement.record_refused("refused")),
        S.CANCELLED: (S.PRESETTLED, settlement.cancel),
    }
    last, detour = detours.get(status, (status, None))
    for reached, move in path.items():
        if settlement.status is last:
            break
        move()
        assert settlement.status is reached
    if detour is not None:
        detour()
    assert settlement.status is status
    return settlement


def asked(status: SettlementStatus, times: int, answer: QueryAnswer, ago: timedelta) -> Settlement:
    """An outstanding settlement about which `times` 5203s did not decide, the latest `ago`."""
    settlement = a_settlement(status)
    for _ in range(times):
        settlement.note_undecided_query(answer, "5203 did not decide", NOW - ago)
    return settlement


def test_the_table_covers_every_status_and_goal() -> None:
    assert set(TABLE) == set(product(S, G))


@pytest.mark.parametrize(("status", "goal"), sorted(TABLE))
def test_the_next_step_of_every_status_towards_every_goal(status: SettlementStatus, goal: Goal) -> None:
    assert next_step(a_settlement(status), goal, NOW) == TABLE[(status, goal)]


@pytest.mark.parametrize("goal", list(G))
def test_an_order_without_a_settlement_can_only_be_presettled(goal: Goal) -> None:
    expected = RegisterVisit() if goal is G.PRESETTLED else NOT_ALLOWED
    assert next_step(None, goal, NOW) == expected


def test_a_msgid_kept_from_an_unreached_2207_is_sent_again() -> None:
    settlement = a_settlement(S.SETTLING)
    settlement.record_not_sent("connection refused", earlier_attempt_unknown=False)
    assert settlement.status is S.PRESETTLED
    assert next_step(settlement, G.SETTLED, NOW) == SendSettlement(MSGID, after_unknown=False)


NF, NA = QueryAnswer.NOT_FOUND, QueryAnswer.NO_ANSWER
SECOND, MINUTE = timedelta(seconds=1), timedelta(minutes=1)


# (5203s that did not decide, what the latest said, how long ago, goal) → step. The pause after the
# n-th is QUERY_BACKOFF[n-1], the last repeating; a Settle gives up after MAX_QUERIES, a refresh
# does not; "nothing under that msgid" makes a Settle send the same 2207 again at once.
SCHEDULE: list[tuple[int, QueryAnswer, timedelta, Goal, Step]] = [
    (1, NF, 0 * SECOND, G.SETTLED, SendSettlement(MSGID, after_unknown=True)),
    (1, NF, 1 * SECOND, G.KNOWN, Wait(NOW + 1 * SECOND)),
    (1, NF, 2 * SECOND, G.KNOWN, QUERY),
    (1, NA, 1 * SECOND, G.SETTLED, Wait(NOW + 1 * SECOND)),
    (1, NA, 2 * SECOND, G.SETTLED, QUERY),
    (2, NA, 9 * SECOND, G.SETTLED, Wait(NOW + 1 * SECOND)),
    (2, NA, 10 * SECOND, G.KNOWN, QUERY),
    (3, NA, 29 * SECOND, G.KNOWN, Wait(NOW + 1 * SECOND)),
    (3, NA, 30 * SECOND, G.SETTLED, QUERY),
    (4, NA, 119 * SECOND, G.SETTLED, Wait(NOW + 1 * SECOND)),
    (4, NA, 2 * MINUTE, G.SETTLED, QUERY),
    (5, NA, 10 * MINUTE - SECOND, G.SETTLED, Wait(NOW + 1 * SECOND)),
    (5, NA, 10 * MINUTE, G.SETTLED, QUERY),
    (6, NA, 29 * MINUTE, G.SETTLED, Wait(NOW + 1 * MINUTE)),
    (7, NA, 30 * MINUTE, G.SETTLED, QUERY),
    (7, NF, 30 * MINUTE, G.KNOWN, QUERY),
    (MAX_QUERIES, NA, 0 * SECOND, G.SETTLED, Done(Outcome.STILL_UNKNOWN)),
    (MAX_QUERIES, NA, 24 * 60 * MINUTE, G.SETTLED, Done(Outcome.STILL_UNKNOWN)),
    (MAX_QUERIES, NA, 29 * MINUTE, G.KNOWN, Wait(NOW + 1 * MINUTE)),
    (MAX_QUERIES, NA, 30 * MINUTE, G.KNOWN, QUERY),
    (MAX_QUERIES, NF, 0 * SECOND, G.SETTLED, SendSettlement(MSGID, after_unknown=True)),
]


@pytest.mark.parametrize("status", [S.SETTLING, S.UNKNOWN])
@pytest.mark.parametrize(("times", "answer", "ago", "goal", "expected"), SCHEDULE)
def test_an_outstanding_2207_is_asked_about_on_an_escalating_schedule(
    status: SettlementStatus, times: int, answer: QueryAnswer, ago: timedelta, goal: Goal, expected: Step
) -> None:
    assert next_step(asked(status, times, answer, ago), goal, NOW) == expected


@pytest.mark.parametrize("goal", [G.PRESETTLED, G.REVOKED, G.CANCELLED])
def test_the_schedule_paces_only_settle_and_refresh(goal: Goal) -> None:
    settlement = asked(S.UNKNOWN, MAX_QUERIES, NA, 0 * SECOND)
    assert next_step(settlement, goal, NOW) == TABLE[(S.UNKNOWN, goal)]


def test_the_pauses_escalate_and_the_last_repeats() -> None:
    pauses = [query_due(asked(S.UNKNOWN, n, NA, 0 * SECOND)) for n in range(1, MAX_QUERIES + 1)]
    assert [pause - NOW for pause in pauses if pause] == [
        *QUERY_BACKOFF,
        *[QUERY_BACKOFF[-1]] * (MAX_QUERIES - len(QUERY_BACKOFF)),
    ]
    assert all(a < b for a, b in pairwise(QUERY_BACKOFF))
    assert query_due(a_settlement(S.UNKNOWN)) is None


def test_a_2207_sent_again_is_asked_about_afresh() -> None:
    settlement = asked(S.UNKNOWN, 3, NF, 5 * SECOND)
    assert settlement.begin_settlement("MSG-IGNORED", "INV2") == MSGID
    assert (settlement.undecided_queries, settlement.last_query, settlement.last_queried_at) == (
        0,
        QueryAnswer.NOT_ASKED,
        None,
    )
    assert next_step(settlement, G.SETTLED, NOW) == QUERY


def test_an_undecided_query_is_counted_and_leaves_the_settlement_where_it_is() -> None:
    settlement = a_settlement(S.SETTLING)
    settlement.note_undecided_query(NA, "5203 got no answer: timed out", NOW)
    assert settlement.status is S.SETTLING and settlement.undecided_queries == 1
    assert (settlement.last_query, settlement.last_queried_at) == (NA, NOW)
    with pytest.raises(StateConflict):  # only an outstanding 2207 is asked about
        a_settlement(S.SETTLED).note_undecided_query(NF, "late", NOW)


def test_a_refusal_names_what_cannot_be_done() -> None:
    conflict = a_settlement(S.REVOKED).conflict("settle")
    assert conflict.message == f"settlement {SETTLEMENT_ID} is REVOKED; cannot settle"
    assert conflict.metadata == {"settlement_id": SETTLEMENT_ID, "status": "REVOKED"}
