"""The insurance settlement state machine and the day totals for 3201: pure, no I/O."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from services.insurance_adapter.domain.bill import ChargeLine, OutpatientBill, billed_total
from services.insurance_adapter.domain.message_log import masked_json
from services.insurance_adapter.domain.person import Enrollment, InsuredPerson
from services.insurance_adapter.domain.settlement import (
    InsuredVisit,
    Settlement,
    SettlementBreakdown,
    SettlementStatus,
)
from services.insurance_adapter.domain.totals import day_totals
from services.runtime.errors import StateConflict
from services.runtime.masking import PatientIdentifier
from services.runtime.money import Money

S = SettlementStatus
NOON = datetime(2025, 3, 14, 4, 0, tzinfo=UTC)
CERTNO = "350102198003150017"


def a_breakdown(medfee: int = 12_500, fund: int = 7_800, acct: int = 1_000) -> SettlementBreakdown:
    personal = medfee - fund
    return SettlementBreakdown(
        medfee_sumamt=Money(medfee),
        fulamt_ownpay_amt=Money(0),
        overlmt_selfpay=Money(0),
        preselfpay_amt=Money(0),
        inscp_scp_amt=Money(medfee),
        act_pay_dedc=Money(0),
        hifp_pay=Money(fund),
        fund_pay_sumamt=Money(fund),
        psn_part_amt=Money(personal),
        acct_pay=Money(acct),
        psn_cash_pay=Money(personal - acct),
        hosp_part_amt=Money(0),
        balc=Money(50_000),
    )


def a_settlement(status: SettlementStatus = S.VISIT_REGISTERED) -> Settlement:
    visit = InsuredVisit(
        psn_no="350100000000000001",
        insutype="310",
        med_type="11",
        insuplc_admdvs="350100",
        mdtrt_cert_type="02",
        mdtrt_cert_no=PatientIdentifier(CERTNO),
        visit_no="MZ20250314001",
        mdtrt_id="35010020250314M000000001",
        use_personal_account=True,
    )
    settlement = Settlement("stl_1", "ord_1", "f" * 64, visit, created_at=NOON)
    _walk_to(settlement, status)
    return settlement


def _walk_to(settlement: Settlement, status: SettlementStatus) -> None:
    steps: list[tuple[SettlementStatus, Callable[[], object]]] = [
        (S.FEES_UPLOADED, lambda: settlement.record_fees_uploaded("B1")),
        (S.PRESETTLED, lambda: settlement.record_presettlement(a_breakdown(), NOON)),
        (S.SETTLING, lambda: settlement.begin_settlement("MSG1", "")),
        (S.SETTLED, lambda: settlement.record_settled("SETL1", a_breakdown(), NOON)),
        (S.REVOKED, lambda: settlement.record_revoked(NOON)),
    ]
    for reached, move in steps:
        if settlement.status is status:
            return
        move()
        assert settlement.status is reached


def test_presettlement_walks_through_its_recovery_points() -> None:
    settlement = a_settlement()
    settlement.record_fees_uploaded("B20250314000001")
    assert settlement.status is S.FEES_UPLOADED and not settlement.is_presettled
    settlement.record_presettlement(a_breakdown(), NOON)
    assert settlement.status is S.PRESETTLED and settlement.is_presettled
    assert settlement.chrg_bchno == "B20250314000001" and settlement.presettled_at == NOON


def test_settling_records_the_msgid_before_sending_and_a_retry_reuses_it() -> None:
    settlement = a_settlement(S.PRESETTLED)
    assert settlement.begin_settlement("MSG-FIRST", "INV1") == "MSG-FIRST"
    settlement.record_outcome_unknown("timed out")
    assert settlement.status is S.UNKNOWN and settlement.awaits_insurer
    assert settlement.begin_settlement("MSG-SECOND", "INV2") == "MSG-FIRST"
    assert settlement.invoice_no == "INV1"


def test_an_unreached_insurer_puts_the_settlement_back_where_it_stood() -> None:
    first_try = a_settlement(S.SETTLING)
    first_try.record_not_sent("connection refused", earlier_attempt_unknown=False)
    assert first_try.status is S.PRESETTLED and first_try.settle_msgid == "MSG1"
    retry = a_settlement(S.SETTLING)
    retry.record_outcome_unknown("timed out")
    retry.begin_settlement("MSG2", "")
    retry.record_not_sent("connection refused", earlier_attempt_unknown=True)
    assert retry.status is S.UNKNOWN and retry.settle_msgid == "MSG1"


def test_settled_keeps_the_insurers_id_and_split() -> None:
    settlement = a_settlement(S.SETTLING)
    settlement.record_settled("SETL42", a_breakdown(medfee=20_000), NOON)
    assert settlement.status is S.SETTLED and settlement.setl_id == "SETL42"
    assert settlement.breakdown is not None and settlement.breakdown.medfee_sumamt == Money(20_000)
    assert settlement.status_reason == ""


def test_unknown_is_left_only_on_the_insurers_word() -> None:
    settlement = a_settlement(S.SETTLING)
    settlement.record_outcome_unknown("2207 timed out")
    settlement.note_still_unknown("5203 found nothing yet")
    assert settlement.status is S.UNKNOWN and settlement.status_reason == "5203 found nothing yet"
    with pytest.raises(StateConflict):
        settlement.cancel()
    settlement.record_settled("SETL7", a_breakdown(), NOON)
    assert settlement.status is S.SETTLED


def test_refusal_fails_the_settlement_and_scrubs_the_reason() -> None:
    settlement = a_settlement(S.SETTLING)
    settlement.record_refused(f"证件号 {CERTNO} 的人员未参保")
    assert settlement.status is S.FAILED
    assert CERTNO not in settlement.status_reason and "3501**********0017" in settlement.status_reason


@pytest.mark.parametrize("status", [S.VISIT_REGISTERED, S.FEES_UPLOADED, S.PRESETTLED])
def test_an_unsettled_presettlement_can_be_cancelled(status: SettlementStatus) -> None:
    settlement = a_settlement(status)
    settlement.cancel()
    assert settlement.status is S.CANCELLED


@pytest.mark.parametrize("status", [S.SETTLING, S.SETTLED, S.REVOKED])
def test_a_sent_or_settled_settlement_cannot_be_cancelled(status: SettlementStatus) -> None:
    with pytest.raises(StateConflict) as raised:
        a_settlement(status).cancel()
    assert raised.value.metadata["status"] == status.value


def test_only_a_settled_settlement_is_revoked() -> None:
    with pytest.raises(StateConflict):
        a_settlement(S.PRESETTLED).require_revocable()
    settlement = a_settlement(S.SETTLED)
    settlement.record_revocation_unknown("2208 timed out")
    assert settlement.status is S.SETTLED
    settlement.record_revoked(NOON)
    assert settlement.status is S.REVOKED and settlement.revoked_at == NOON
    with pytest.raises(StateConflict):
        settlement.record_revoked(NOON)


@pytest.mark.parametrize("status", [S.VISIT_REGISTERED, S.FEES_UPLOADED, S.SETTLED, S.REVOKED])
def test_settle_needs_a_presettlement(status: SettlementStatus) -> None:
    with pytest.raises(StateConflict):
        a_settlement(status).begin_settlement("MSG", "")


def test_breakdown_identities() -> None:
    assert a_breakdown().identities_hold()
    broken = a_breakdown()
    assert not SettlementBreakdown(**{**_as_dict(broken), "acct_pay": Money(1)}).identities_hold()


def _as_dict(breakdown: SettlementBreakdown) -> dict[str, Money]:
    return {name: getattr(breakdown, name) for name in SettlementBreakdown.field_names()}


def test_day_totals_add_settlements_and_subtract_revocations() -> None:
    totals = day_totals([a_breakdown(12_500, 7_800, 1_000), a_breakdown(3_000, 1_500, 0)], [a_breakdown()])
    assert totals.medfee_sumamt == Money(3_000)
    assert totals.fund_pay_sumamt == Money(1_500)
    assert totals.acct_pay == Money(0)
    assert totals.settlement_count == 1


def test_the_bill_fingerprint_is_stable_and_sees_every_change() -> None:
    line = ChargeLine(
        "1", "GH0001", "110200001000000", "挂号费", "01", "13", 10_000, Money(100), Money(100), "", ""
    )
    bill = OutpatientBill("310", "11", True, "MZ1", "", "", "", "", "", "", "", (line,))
    same = OutpatientBill("310", "11", True, "MZ1", "", "", "", "", "", "", "", (line,))
    changed = OutpatientBill("310", "11", False, "MZ1", "", "", "", "", "", "", "", (line,))
    assert bill.fingerprint() == same.fingerprint() != changed.fingerprint()
    assert bill.total == Money(100)


def test_billed_total_rounds_half_up_in_integers() -> None:
    assert billed_total(15_000, Money(333)) == Money(500)  # 1.5 × 3.33 = 4.995 → 5.00
    assert billed_total(10_000, Money(2_500)) == Money(2_500)


def test_enrollment_for_picks_the_asked_type_or_the_first() -> None:
    resident = Enrollment("390", "11", "350100", Money(0), "1")
    employee = Enrollment("310", "11", "350100", Money(5_000), "1")
    person = InsuredPerson(
        "P1", PatientIdentifier(CERTNO), PatientIdentifier("林晓", "name"), "1", 40, (resident, employee)
    )
    assert person.enrollment_for("") is resident
    assert person.enrollment_for("310") is employee
    assert person.enrollment_for("320") is None


def test_the_message_log_masks_identifiers_by_field_and_by_shape() -> None:
    text = masked_json(
        {
            "input": {"data": {"mdtrt_cert_no": CERTNO, "psn_name": "林晓明", "note": f"see {CERTNO}"}},
            "output": {"baseinfo": [{"certno": CERTNO, "tel": "13905911234"}]},
        }
    )
    assert CERTNO not in text and "林晓明" not in text and "13905911234" not in text
    assert '"psn_name":"林**"' in text
