"""One conformance suite for every Insurer: the in-memory FakeInsurer and NhsaInsurer (the real
NhsaClient, configured as bootstrap wires it, against the NHSA simulator served by uvicorn in this
event loop on an ephemeral loopback port, its SQLite in tmp_path).

An insurer passes when what the insurance-adapter's handlers rely on holds through it: 1101 finds
the person behind a voucher; 2201 → 2204 → 2206 gives a split whose identities hold; 2207 books
that split under a setl_id, once per msgid and once per batch; 2208 books the offsetting record,
once; a lost 2207 answer raises OutcomeUnknown and 5203 by its msgid then decides it (a message
that never took effect is found by nobody); a refusal is InsurerRejected, an unreachable insurer
InsurerUnavailable, and neither leaves a trace; 3201 balances exactly with the platform's own
totals. Faults are injected in the simulator's words (POST /sim/faults) on both.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import pytest
import uvicorn

from infra.simulators.catalogue import find_item
from infra.simulators.nhsa.app import build_app
from infra.simulators.nhsa.platform import NhsaPlatform
from infra.simulators.nhsa.settings import NhsaSimSettings
from infra.simulators.nhsa.store import NhsaStore
from infra.simulators.population import InsuredPerson as PopulationPerson
from infra.simulators.population import insured_people
from services.insurance_adapter.adapters import nhsa
from services.insurance_adapter.adapters.insurer import NhsaInsurer
from services.insurance_adapter.adapters.insurer_fake import FakeFault, FakeInsurer
from services.insurance_adapter.bootstrap import nhsa_client_config
from services.insurance_adapter.config import InsuranceAdapterSettings
from services.insurance_adapter.domain.bill import ChargeLine, OutpatientBill, billed_total
from services.insurance_adapter.domain.person import Enrollment, InsuredPerson, PatientVoucher
from services.insurance_adapter.domain.settlement import InsuredVisit, SettlementBreakdown
from services.insurance_adapter.domain.totals import DayTotals, day_totals
from services.insurance_adapter.service_layer.ports import Insurer, InsurerSettlement, TotalsRequest
from services.runtime.clock import business_date_of, utcnow
from services.runtime.errors import InsurerRejected, InsurerUnavailable, OutcomeUnknown
from services.runtime.masking import PatientIdentifier
from services.runtime.money import Money

PEOPLE = insured_people(30)
# An employee in service with money in the personal account: the split uses every part.
EMPLOYEE = next(
    p
    for p in PEOPLE
    if p.insutype == "310" and p.psn_type == "11" and p.account_opening_balance_fen >= 50_000
)
RESIDENT = next(p for p in PEOPLE if p.insutype == "390")
# Hospital code, quantity in ten-thousandths: 甲类, 乙类 and 丙类 lines, past the employee
# deductible of the simulator's policy so that its fund pays too.
BILL = (
    ("ZC0001", 10_000),
    ("XY0001", 20_000),
    ("HY0006", 10_000),
    ("JC0004", 10_000),
    ("JC0002", 10_000),
    ("XY0012", 10_000),
    ("CL0001", 20_000),
)
SETL_OPTINS = "350100"
SENT_TIMEOUT_S = 0.5  # the adapter's deadline per NHSA message
SIM_HANG_S = 0.7  # how long a timeout / unknown_after_commit fault keeps the adapter waiting


# --- one harness per insurer --------------------------------------------------------------------


@dataclass
class Harness:
    insurer: Insurer
    # (infno, mode) in the simulator's vocabulary: reject | error | timeout | unknown_after_commit
    inject: Callable[[str, str], Awaitable[None]]


def fake_harness() -> Harness:
    fake = FakeInsurer()
    for person in PEOPLE:
        fake.enrol(as_insured_person(person), ecert_token=person.ecert_token, card_sn=person.card_sn)

    async def inject(infno: str, mode: str) -> None:
        fake.arm(infno, FakeFault(mode))

    return Harness(fake, inject)


@asynccontextmanager
async def nhsa_harness(tmp_path: Path) -> AsyncIterator[Harness]:
    db = tmp_path / "nhsa_sim.sqlite3"
    sim_settings = NhsaSimSettings(db=db, population=len(PEOPLE), hang_s=SIM_HANG_S)
    store = await NhsaStore.open(db, sim_settings.population)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        build_app(NhsaPlatform(store, sim_settings), sim_settings),
        log_config=None,
        access_log=False,
        lifespan="off",
    )
    config.timeout_graceful_shutdown = 1
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[listener]))
    while not server.started:
        if serving.done():
            serving.result()
        await asyncio.sleep(0.01)
    sim_url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    settings = InsuranceAdapterSettings(
        nhsa_base_url=sim_url,
        nhsa_timeout_s=SENT_TIMEOUT_S,
        data_dir=tmp_path / "data",
        trace_dir=tmp_path / "traces",
    )
    client = nhsa.NhsaClient(nhsa_client_config(settings))
    control = httpx.AsyncClient(base_url=sim_url)

    async def inject(infno: str, mode: str) -> None:
        fault = {"infno": infno, "mode": mode, "count": 1, "hang_s": SIM_HANG_S}
        (await control.post("/sim/faults", json=fault)).raise_for_status()

    try:
        yield Harness(NhsaInsurer(client, settings.nhsa_timeout_s), inject)
    finally:
        await control.aclose()
        await client.aclose()
        server.should_exit = True
        await serving
        listener.close()
        await store.close()


@pytest.fixture(params=["fake", "nhsa"])
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    if request.param == "fake":
        yield fake_harness()
        return
    async with nhsa_harness(tmp_path) as running:
        yield running


# --- what a test says about the world -----------------------------------------------------------


def as_insured_person(person: PopulationPerson) -> InsuredPerson:
    enrollment = Enrollment(
        person.insutype,
        person.psn_type,
        person.insuplc_admdvs,
        Money(person.account_opening_balance_fen),
        "1",
    )
    return InsuredPerson(
        psn_no=person.psn_no,
        certno=PatientIdentifier(person.certno),
        psn_name=PatientIdentifier(person.psn_name, kind="name"),
        gend=person.gend,
        age=person.age,
        enrollments=(enrollment,),
    )


def id_card(person: PopulationPerson) -> PatientVoucher:
    return PatientVoucher("02", PatientIdentifier(person.certno))


def charge_line(position: int, code: str, quantity: int) -> ChargeLine:
    item = find_item(code)
    assert item is not None
    price = Money(item.unit_price_fen)
    return ChargeLine(
        line_no=f"{position:04d}",
        hospital_code=item.medins_list_codg,
        national_code=item.med_list_codg,
        name=item.name,
        chrgitm_lv=item.chrgitm_lv,
        med_chrgitm_type=item.med_chrgitm_type,
        quantity_ten_thousandths=quantity,
        unit_price=price,
        line_total=billed_total(quantity, price),
        dept_code="A03",
        doctor_code="D0107",
    )


def a_bill(
    person: PopulationPerson, visit_no: str, items: tuple[tuple[str, int], ...] = BILL
) -> OutpatientBill:
    return OutpatientBill(
        insutype=person.insutype,
        med_type="11",
        use_personal_account=True,
        visit_no=visit_no,
        dept_code="A03",
        dept_name="内科门诊",
        doctor_code="D0107",
        doctor_name="郑医生",
        dise_codg="",
        dise_name="",
        insuplc_admdvs="",
        lines=tuple(charge_line(n, code, quantity) for n, (code, quantity) in enumerate(items, 1)),
    )


def new_visit_no() -> str:
    return f"MZ{uuid.uuid4().hex[:12]}"


def new_batch() -> str:
    return f"B{uuid.uuid4().hex[:24]}"


@dataclass(frozen=True)
class Presettled:
    visit: InsuredVisit
    chrg_bchno: str
    bill: OutpatientBill
    split: SettlementBreakdown


async def visit_of(insurer: Insurer, person: PopulationPerson, bill: OutpatientBill) -> InsuredVisit:
    """1101 then 2201, as the presettlement handler does."""
    voucher = id_card(person)
    found = await insurer.query_person(voucher)
    enrollment = found.enrollment_for(bill.insutype)
    assert enrollment is not None
    visit = InsuredVisit(
        psn_no=found.psn_no,
        insutype=enrollment.insutype,
        med_type=bill.med_type,
        insuplc_admdvs=enrollment.insuplc_admdvs,
        mdtrt_cert_type=voucher.mdtrt_cert_type,
        mdtrt_cert_no=voucher.mdtrt_cert_no,
        visit_no=bill.visit_no,
        mdtrt_id="",
        use_personal_account=bill.use_personal_account,
    )
    return replace(visit, mdtrt_id=await insurer.register_visit(visit, bill, utcnow()))


async def presettle(
    insurer: Insurer, person: PopulationPerson = EMPLOYEE, bill: OutpatientBill | None = None
) -> Presettled:
    bill = bill or a_bill(person, new_visit_no())
    visit = await visit_of(insurer, person, bill)
    chrg_bchno = new_batch()
    await insurer.upload_fees(visit, chrg_bchno, bill)
    return Presettled(visit, chrg_bchno, bill, await insurer.presettle(visit, chrg_bchno, bill))


async def settle(insurer: Insurer, done: Presettled, msgid: str) -> InsurerSettlement:
    return await insurer.settle(done.visit, done.chrg_bchno, done.split, "INV0001", msgid)


def negated(breakdown: SettlementBreakdown) -> dict[str, Money]:
    return {name: -getattr(breakdown, name) for name in SettlementBreakdown.field_names() if name != "balc"}


def amounts(breakdown: SettlementBreakdown) -> dict[str, Money]:
    return {name: getattr(breakdown, name) for name in SettlementBreakdown.field_names() if name != "balc"}


# --- the conformance suite ----------------------------------------------------------------------


async def test_1101_finds_the_person_behind_a_voucher(harness: Harness) -> None:
    insurer = harness.insurer
    found = await insurer.query_person(id_card(EMPLOYEE))
    assert (found.psn_no, found.certno, found.psn_name) == (
        EMPLOYEE.psn_no,
        PatientIdentifier(EMPLOYEE.certno),
        PatientIdentifier(EMPLOYEE.psn_name, kind="name"),
    )
    assert EMPLOYEE.certno not in repr(found) and EMPLOYEE.psn_name not in repr(found)
    enrollment = found.enrollment_for("310")
    assert enrollment is not None and enrollment.is_active
    assert (enrollment.balance, enrollment.insuplc_admdvs) == (
        Money(EMPLOYEE.account_opening_balance_fen),
        SETL_OPTINS,
    )
    by_e_voucher = await insurer.query_person(PatientVoucher("01", PatientIdentifier(RESIDENT.ecert_token)))
    assert by_e_voucher.psn_no == RESIDENT.psn_no
    card, chip = PatientIdentifier(EMPLOYEE.certno), PatientIdentifier(EMPLOYEE.card_sn)
    assert (await insurer.query_person(PatientVoucher("03", card, card_sn=chip))).psn_no == EMPLOYEE.psn_no
    with pytest.raises(InsurerRejected):  # a social-security card is read with its chip serial
        await insurer.query_person(PatientVoucher("03", card, card_sn=PatientIdentifier("0" * 24)))

    stranger = "350102199001011237"
    with pytest.raises(InsurerRejected) as unknown:
        await insurer.query_person(PatientVoucher("02", PatientIdentifier(stranger)))
    assert stranger not in str(unknown.value) and unknown.value.metadata["infno"] == "1101"


async def test_2201_and_2204_answer_a_repeat_with_the_same_visit_and_batch(harness: Harness) -> None:
    insurer, bill = harness.insurer, a_bill(EMPLOYEE, new_visit_no())
    visit = await visit_of(insurer, EMPLOYEE, bill)
    assert visit.mdtrt_id
    assert (await visit_of(insurer, EMPLOYEE, bill)).mdtrt_id == visit.mdtrt_id
    chrg_bchno = new_batch()
    await insurer.upload_fees(visit, chrg_bchno, bill)
    await insurer.upload_fees(visit, chrg_bchno, bill)  # a lost 2204 answer, sent again
    assert (await insurer.presettle(visit, chrg_bchno, bill)).medfee_sumamt == bill.total


@pytest.mark.parametrize("person", [EMPLOYEE, RESIDENT], ids=["employee", "resident"])
async def test_2206_splits_the_bill_so_that_the_identities_hold(
    harness: Harness, person: PopulationPerson
) -> None:
    done = await presettle(harness.insurer, person)
    split = done.split
    assert split.identities_hold(), split
    assert split.medfee_sumamt == done.bill.total
    assert split.fulamt_ownpay_amt > Money(0) and split.preselfpay_amt > Money(0)
    assert Money(0) < split.fund_pay_sumamt < split.inscp_scp_amt
    if person is EMPLOYEE:
        assert split.acct_pay > Money(0)
        assert split.balc == Money(person.account_opening_balance_fen) - split.acct_pay
    else:
        assert split.acct_pay == Money(0) and split.psn_cash_pay == split.psn_part_amt
    # 2206 books nothing: asking again gives the same split.
    assert await harness.insurer.presettle(done.visit, done.chrg_bchno, done.bill) == split


async def test_2207_books_the_split_once_per_msgid_and_once_per_batch(harness: Harness) -> None:
    insurer = harness.insurer
    done = await presettle(insurer)
    msgid = insurer.new_msgid()
    settled = await settle(insurer, done, msgid)
    assert settled.setl_id and not settled.refunded
    assert settled.breakdown == done.split
    assert settled.settled_at is not None and settled.settled_at.tzinfo is not None

    replay = await settle(insurer, done, msgid)
    assert (replay.setl_id, replay.breakdown) == (settled.setl_id, settled.breakdown)
    with pytest.raises(InsurerRejected) as twice:  # the same batch under a new msgid
        await settle(insurer, done, insurer.new_msgid())
    assert twice.value.metadata["infno"] == "2207"

    found = await insurer.find_settlement(done.visit.psn_no, msgid)
    assert found is not None and (found.setl_id, found.breakdown) == (settled.setl_id, settled.breakdown)
    assert await insurer.find_settlement(done.visit.psn_no, insurer.new_msgid()) is None
    person = await insurer.query_person(id_card(EMPLOYEE))
    assert person.enrollments[0].balance == settled.breakdown.balc


async def test_2208_books_the_offsetting_record_once(harness: Harness) -> None:
    insurer = harness.insurer
    done = await presettle(insurer)
    msgid = insurer.new_msgid()
    settled = await settle(insurer, done, msgid)

    offset = await insurer.revoke_settlement(done.visit, settled.setl_id)
    assert offset.refunded and offset.setl_id and offset.setl_id != settled.setl_id
    assert amounts(offset.breakdown) == negated(settled.breakdown)
    assert offset.breakdown.identities_hold()
    assert offset.breakdown.balc == Money(EMPLOYEE.account_opening_balance_fen)
    again = await insurer.revoke_settlement(done.visit, settled.setl_id)
    assert (again.setl_id, again.breakdown) == (offset.setl_id, offset.breakdown)

    found = await insurer.find_settlement(done.visit.psn_no, msgid)
    assert found is not None and found.setl_id == settled.setl_id and found.refunded
    person = await insurer.query_person(id_card(EMPLOYEE))
    assert person.enrollments[0].balance == Money(EMPLOYEE.account_opening_balance_fen)
    with pytest.raises(InsurerRejected):
        await insurer.revoke_settlement(done.visit, "350100" + "20250101" + "S999999999")


async def test_a_lost_2207_answer_is_unknown_until_5203_by_its_msgid_decides(harness: Harness) -> None:
    insurer = harness.insurer
    landed, lost = await presettle(insurer), await presettle(insurer)

    landed_msgid = insurer.new_msgid()
    await harness.inject("2207", "unknown_after_commit")
    with pytest.raises(OutcomeUnknown) as unknown:
        await settle(insurer, landed, landed_msgid)
    assert unknown.value.metadata == {"infno": "2207", "msgid": landed_msgid}
    found = await insurer.find_settlement(landed.visit.psn_no, landed_msgid)
    assert found is not None and found.setl_id and found.breakdown == landed.split
    assert (await settle(insurer, landed, landed_msgid)).setl_id == found.setl_id

    lost_msgid = insurer.new_msgid()
    await harness.inject("2207", "timeout")  # sent, never booked, answer never came
    with pytest.raises(OutcomeUnknown):
        await settle(insurer, lost, lost_msgid)
    assert await insurer.find_settlement(lost.visit.psn_no, lost_msgid) is None
    assert (await settle(insurer, lost, lost_msgid)).setl_id not in ("", found.setl_id)


@pytest.mark.parametrize(
    ("mode", "error"),
    [("reject", InsurerRejected), ("error", InsurerUnavailable)],
    ids=["refused", "unreached"],
)
async def test_a_refused_or_unreached_2207_leaves_no_trace(
    harness: Harness, mode: str, error: type[Exception]
) -> None:
    insurer = harness.insurer
    done = await presettle(insurer)
    msgid = insurer.new_msgid()
    await harness.inject("2207", mode)
    with pytest.raises(error) as failed:
        await settle(insurer, done, msgid)
    assert isinstance(failed.value, InsurerRejected | InsurerUnavailable)
    assert failed.value.metadata["infno"] == "2207"
    assert await insurer.find_settlement(done.visit.psn_no, msgid) is None
    retried = await settle(insurer, done, msgid)  # nothing happened: the same msgid may go again
    assert retried.setl_id and retried.breakdown == done.split


async def test_3201_balances_with_the_platforms_own_totals_only(harness: Harness) -> None:
    insurer = harness.insurer
    kept, revoked = await presettle(insurer), await presettle(insurer)
    kept_setl = await settle(insurer, kept, insurer.new_msgid())
    revoked_setl = await settle(insurer, revoked, insurer.new_msgid())
    await insurer.revoke_settlement(revoked.visit, revoked_setl.setl_id)
    assert kept_setl.settled_at is not None

    ours = day_totals([kept_setl.breakdown, revoked_setl.breakdown], [revoked_setl.breakdown])
    assert ours.settlement_count == 1 and ours.medfee_sumamt == kept_setl.breakdown.medfee_sumamt
    day = business_date_of(kept_setl.settled_at)
    balanced = await insurer.reconcile_totals(TotalsRequest(day, "310", "11", SETL_OPTINS, ours))
    assert balanced.stmt_rslt == "0"
    assert balanced.insurer in (None, ours)

    wrong = replace(ours, medfee_sumamt=ours.medfee_sumamt + Money(1))
    unbalanced = await insurer.reconcile_totals(TotalsRequest(day, "310", "11", SETL_OPTINS, wrong))
    assert unbalanced.stmt_rslt != "0" and unbalanced.stmt_rslt_dscr
    assert unbalanced.insurer in (None, ours)
    miscounted = replace(ours, settlement_count=2)
    assert (
        await insurer.reconcile_totals(TotalsRequest(day, "310", "11", SETL_OPTINS, miscounted))
    ).stmt_rslt != "0"

    nothing = DayTotals(Money(0), Money(0), Money(0), 0)
    quiet_day = TotalsRequest(day.replace(year=day.year - 1), "310", "11", SETL_OPTINS, nothing)
    assert (await insurer.reconcile_totals(quiet_day)).stmt_rslt == "0"


async def test_2205_withdraws_an_unsettled_batch_only(harness: Harness) -> None:
    insurer = harness.insurer
    withdrawn, settled = await presettle(insurer), await presettle(insurer)
    await insurer.revoke_fees(withdrawn.visit, withdrawn.chrg_bchno)
    with pytest.raises(InsurerRejected):  # nothing left to price
        await insurer.presettle(withdrawn.visit, withdrawn.chrg_bchno, withdrawn.bill)

    await settle(insurer, settled, insurer.new_msgid())
    with pytest.raises(InsurerRejected):
        await insurer.revoke_fees(settled.visit, settled.chrg_bchno)


async def test_a_second_batch_of_the_same_visit_is_priced_on_its_own(harness: Harness) -> None:
    """A Presettle retried after a refused 2207 (FAILED frees the order) registers the same visit
    again (2201 answers the same mdtrt_id) and uploads the same bill, line numbers 0001.., under a
    new batch, while the refused batch is still uploaded."""
    insurer = harness.insurer
    first = await presettle(insurer)
    again = await presettle(insurer, bill=first.bill)
    assert again.visit.mdtrt_id == first.visit.mdtrt_id and again.chrg_bchno != first.chrg_bchno
    assert again.split == first.split
