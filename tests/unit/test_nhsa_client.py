"""NhsaClient against the NHSA simulator served by uvicorn on an ephemeral loopback port."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import uvicorn

from infra.simulators.catalogue import CatalogueItem, find_item
from infra.simulators.nhsa.app import build_app
from infra.simulators.nhsa.platform import NhsaPlatform
from infra.simulators.nhsa.settings import NhsaSimSettings
from infra.simulators.nhsa.store import NhsaStore
from infra.simulators.population import InsuredPerson, insured_people
from services.insurance_adapter.adapters.nhsa import (
    ExchangeOutcome,
    InsurerOutcomeUnknown,
    InsurerRejected,
    InsurerUnavailable,
    NhsaClient,
    NhsaClientConfig,
)
from services.insurance_adapter.adapters.nhsa.transformers import (
    FeeLine,
    SettlementBreakdown,
    SettlementRequest,
    StatementResult,
    StatementTotals,
)
from services.insurance_adapter.adapters.nhsa.transport import BEIJING
from services.runtime.masking import PatientIdentifier
from services.runtime.money import Money, total

POPULATION = 60
PEOPLE = insured_people(POPULATION)
EMPLOYEE = next(p for p in PEOPLE if p.insutype == "310" and p.account_opening_balance_fen > 100_000)
RESIDENT = next(p for p in PEOPLE if p.insutype == "390")
VISIT_ITEMS = (
    ("ZC0001", "1"),
    ("XY0001", "2"),
    ("XY0002", "1"),
    ("XY0012", "1"),
    ("CL0001", "3"),
    ("JC0003", "1"),
)


@dataclass
class Exchange:
    infno: str
    msgid: str
    outcome: ExchangeOutcome
    answered: bool


@dataclass
class Sim:
    base_url: str
    settings: NhsaSimSettings
    exchanges: list[Exchange] = field(default_factory=list)

    def client(self, token: str | None = None, timeout_s: float = 5.0) -> NhsaClient:
        return NhsaClient(self.config(token, timeout_s), on_exchange=self.record)

    def config(self, token: str | None = None, timeout_s: float = 5.0) -> NhsaClientConfig:
        return NhsaClientConfig(
            base_url=self.base_url,
            fixmedins_code="H35010200901",
            fixmedins_name="联勤保障部队第九〇〇医院",
            mdtrtarea_admvs="350100",
            paas_id="medpay-mesh",
            paas_token=token or self.settings.paas_token,
            timeout_s=timeout_s,
        )

    async def record(
        self, infno: str, msgid: str, request: str, response: str | None, outcome: ExchangeOutcome, ms: int
    ) -> None:
        assert request.startswith("{") and ms >= 0
        self.exchanges.append(Exchange(infno, msgid, outcome, response is not None))

    async def control(self, method: str, path: str, body: object = None) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.base_url) as http:
            response = await http.request(method, path, json=body)
        response.raise_for_status()
        return response


@asynccontextmanager
async def running_simulator(db: Path) -> AsyncIterator[Sim]:
    settings = NhsaSimSettings(db=db, population=POPULATION, hang_s=1.0, paas_token="test-paas-token")
    store = await NhsaStore.open(db, settings.population)
    app = build_app(NhsaPlatform(store, settings), settings)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off"))
    serving = asyncio.create_task(server.serve(sockets=[listener]))
    for _ in range(500):
        if server.started:
            break
        await asyncio.sleep(0.01)
    try:
        yield Sim(f"http://127.0.0.1:{listener.getsockname()[1]}", settings)
    finally:
        server.should_exit = True
        await serving
        listener.close()
        await store.close()


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[Sim]:
    async with running_simulator(tmp_path / "nhsa_sim.sqlite3") as running:
        yield running


@dataclass(frozen=True)
class Visit:
    person: InsuredPerson
    mdtrt_id: str
    request: SettlementRequest
    lines: tuple[FeeLine, ...]


def fee_lines(person: InsuredPerson, mdtrt_id: str, batch: str) -> tuple[FeeLine, ...]:
    return tuple(fee_line(person, mdtrt_id, batch, n, code, qty) for n, (code, qty) in enumerate(VISIT_ITEMS))


def fee_line(person: InsuredPerson, mdtrt_id: str, batch: str, n: int, code: str, qty: str) -> FeeLine:
    item = find_item(code)
    assert isinstance(item, CatalogueItem)
    return FeeLine(
        feedetl_sn=f"{batch}-{n:03d}",
        mdtrt_id=mdtrt_id,
        psn_no=person.psn_no,
        chrg_bchno=batch,
        med_list_codg=item.med_list_codg,
        medins_list_codg=item.medins_list_codg,
        det_item_fee_sumamt=Money(item.unit_price_fen * int(qty)),
        cnt=Decimal(qty),
        pric=Money(item.unit_price_fen),
        fee_ocur_time=datetime(2025, 3, 3, 9, 30),
        bilg_dept_codg="A03",
        bilg_dept_name="内科",
        bilg_dr_codg="D350100001",
        bilg_dr_name="陈医生",
    )


async def open_visit(client: NhsaClient, person: InsuredPerson, otp_no: str, batch: str = "B001") -> Visit:
    info = await client.query_person("02", PatientIdentifier(person.certno))
    assert info.psn_no == person.psn_no
    registration = await client.register_visit(
        psn_no=info.psn_no,
        insutype=person.insutype,
        insuplc_admdvs=person.insuplc_admdvs,
        mdtrt_cert_type="02",
        mdtrt_cert_no=PatientIdentifier(person.certno),
        ipt_otp_no=otp_no,
        begntime=datetime(2025, 3, 3, 9, 0),
        dept_code="A03",
        dept_name="内科",
        atddr_no="D350100001",
        dr_name="陈医生",
    )
    lines = fee_lines(person, registration.mdtrt_id, batch)
    results = await client.upload_fee_details(lines, insuplc_admdvs=person.insuplc_admdvs)
    assert [r.feedetl_sn for r in results] == [line.feedetl_sn for line in lines]
    for line, result in zip(lines, results, strict=True):
        parts = (result.fulamt_ownpay_amt, result.overlmt_amt, result.preselfpay_amt, result.inscp_scp_amt)
        assert total(parts) == line.det_item_fee_sumamt
    request = SettlementRequest(
        psn_no=person.psn_no,
        mdtrt_id=registration.mdtrt_id,
        chrg_bchno=batch,
        insutype=person.insutype,
        insuplc_admdvs=person.insuplc_admdvs,
        mdtrt_cert_type="02",
        mdtrt_cert_no=PatientIdentifier(person.certno),
        medfee_sumamt=total(line.det_item_fee_sumamt for line in lines),
    )
    return Visit(person, registration.mdtrt_id, request, lines)


def assert_adds_up(breakdown: SettlementBreakdown) -> None:
    assert breakdown.identity_violations() == []
    assert breakdown.fund_pay_sumamt == breakdown.hifp_pay


async def test_outpatient_settlement_from_sign_in_to_reconciliation(sim: Sim) -> None:
    async with sim.client() as client:
        sign_no = await client.sign_in()
        visit = await open_visit(client, EMPLOYEE, "MZ20250303001")
        pre = await client.presettle(visit.request)
        assert pre.setl_id is None and pre.medfee_sumamt == visit.request.medfee_sumamt
        assert (pre.fulamt_ownpay_amt, pre.overlmt_selfpay) == (Money(2_800), Money(150))
        assert pre.preselfpay_amt == Money(130 + 2_000)  # 头孢克洛 5 % + 胸部CT 10 %
        assert_adds_up(pre)

        msgid = client.new_msgid()
        settled = await client.settle(visit.request, pre, invono="FP0001", msgid=msgid)
        assert settled.setl_id and settled.medins_setl_id == msgid
        assert (settled.medfee_sumamt, settled.psn_cash_pay, settled.acct_pay) == (
            pre.medfee_sumamt,
            pre.psn_cash_pay,
            pre.acct_pay,
        )
        assert settled.balc == Money(EMPLOYEE.account_opening_balance_fen) - settled.acct_pay
        assert [row.fund_pay_type for row in settled.fund_payments] == ["310100"]
        assert_adds_up(settled)

        replayed = await client.settle(visit.request, pre, invono="FP0001", msgid=msgid)
        assert replayed == settled
        with pytest.raises(InsurerRejected, match="已结算"):
            await client.settle(visit.request, pre, invono="FP0001")
        assert client.sign_no == sign_no

        found = await client.query_settlement(psn_no=EMPLOYEE.psn_no, medins_setl_id=msgid)
        assert found is not None and found.setl_id == settled.setl_id and found.refd_setl_flag == "0"

        today = datetime.now(BEIJING).date()
        ours = StatementTotals(settled.medfee_sumamt, settled.fund_pay_sumamt, settled.acct_pay, 1)
        statement = await reconcile(client, today, ours)
        assert statement.balanced and statement.insurer_totals == ours
        off = await reconcile(client, today, StatementTotals(Money(1), Money(0), Money(0), 1))
        assert not off.balanced and off.insurer_totals == ours and "医疗费总额" in off.stmt_rslt_dscr

        assert settled.setl_id is not None
        revoked = await client.revoke_settlement(
            setl_id=settled.setl_id, mdtrt_id=visit.mdtrt_id, psn_no=EMPLOYEE.psn_no, insuplc_admdvs="350100"
        )
        assert revoked.medfee_sumamt == -settled.medfee_sumamt and revoked.acct_pay == -settled.acct_pay
        assert revoked.balc == Money(EMPLOYEE.account_opening_balance_fen)
        again = await client.revoke_settlement(
            setl_id=settled.setl_id, mdtrt_id=visit.mdtrt_id, psn_no=EMPLOYEE.psn_no, insuplc_admdvs="350100"
        )
        assert again.setl_id == revoked.setl_id
        after = await reconcile(client, today, StatementTotals(Money(0), Money(0), Money(0), 0))
        assert after.balanced

        person = await client.query_person("02", EMPLOYEE.certno)
        enrolment = person.enrolment("310")
        assert enrolment is not None and enrolment.balc == Money(EMPLOYEE.account_opening_balance_fen)
        assert EMPLOYEE.certno not in repr(person) and EMPLOYEE.psn_name not in repr(person)

    assert {e.outcome for e in sim.exchanges} == {ExchangeOutcome.OK, ExchangeOutcome.REJECTED}
    assert [e.infno for e in sim.exchanges][:4] == ["9001", "1101", "2201", "2204"]


async def reconcile(client: NhsaClient, day: date, ours: StatementTotals) -> StatementResult:
    """3201 over the days around `day`, so a Beijing midnight during the test changes nothing."""
    return await client.reconcile_totals(
        insutype="310",
        clr_type="11",
        setl_optins="350100",
        stmt_begndate=day - timedelta(days=1),
        stmt_enddate=day + timedelta(days=1),
        totals=ours,
    )


async def test_resident_settlement_uses_the_resident_fund_and_no_account(sim: Sim) -> None:
    async with sim.client() as client:
        visit = await open_visit(client, RESIDENT, "MZ20250303002")
        settled = await client.settle(visit.request, await client.presettle(visit.request))
    assert settled.acct_pay == Money(0) and settled.psn_cash_pay == settled.psn_part_amt
    assert [row.fund_pay_type for row in settled.fund_payments] == ["390100"]
    assert_adds_up(settled)


async def test_client_signs_in_lazily_and_again_when_the_insurer_forgets_it(sim: Sim) -> None:
    async with sim.client() as client:
        await client.query_person("02", EMPLOYEE.certno)
        first = client.sign_no
        await sim.control("POST", "/sim/sign-ins/expire")
        await client.query_person("02", EMPLOYEE.certno)
        assert client.sign_no not in (None, first)
    assert [e.infno for e in sim.exchanges] == ["9001", "1101", "1101", "9001", "1101"]
    assert sim.exchanges[2].outcome is ExchangeOutcome.REJECTED


async def test_outcome_unknown_after_commit_is_found_by_msgid_and_replayed(sim: Sim) -> None:
    async with sim.client() as client:
        visit = await open_visit(client, EMPLOYEE, "MZ20250303003")
        pre = await client.presettle(visit.request)
        await sim.control(
            "POST", "/sim/faults", {"infno": "2207", "mode": "unknown_after_commit", "count": 1}
        )
        msgid = client.new_msgid()
        with pytest.raises(InsurerOutcomeUnknown):  # only this call has the short deadline
            await client.settle(visit.request, pre, msgid=msgid, timeout_s=0.3)
        found = await client.query_settlement(psn_no=EMPLOYEE.psn_no, medins_setl_id=msgid)
        assert found is not None and found.setl_id
        resent = await client.settle(visit.request, pre, msgid=msgid)
        assert resent.setl_id == found.setl_id
    assert sim.exchanges[-3].outcome is ExchangeOutcome.UNKNOWN and not sim.exchanges[-3].answered


async def test_timeout_before_the_work_leaves_nothing_to_find_or_reverse(sim: Sim) -> None:
    async with sim.client() as client:
        visit = await open_visit(client, EMPLOYEE, "MZ20250303004")
        pre = await client.presettle(visit.request)
        await sim.control("POST", "/sim/faults", {"infno": "2207", "mode": "timeout", "count": 1})
        msgid = client.new_msgid()
        with pytest.raises(InsurerOutcomeUnknown):  # only this call has the short deadline
            await client.settle(visit.request, pre, msgid=msgid, timeout_s=0.3)
        assert await client.query_settlement(psn_no=EMPLOYEE.psn_no, medins_setl_id=msgid) is None
        with pytest.raises(InsurerRejected, match="原交易不存在"):
            await client.reverse(msgid, "2207", psn_no=EMPLOYEE.psn_no)


async def test_reversal_of_a_settlement_restores_the_account(sim: Sim) -> None:
    async with sim.client() as client:
        visit = await open_visit(client, EMPLOYEE, "MZ20250303005")
        msgid = client.new_msgid()
        settled = await client.settle(visit.request, await client.presettle(visit.request), msgid=msgid)
        await client.reverse(msgid, "2207", psn_no=EMPLOYEE.psn_no)
        await client.reverse(msgid, "2207", psn_no=EMPLOYEE.psn_no)  # twice: the same answer
        found = await client.query_settlement(psn_no=EMPLOYEE.psn_no, setl_id=settled.setl_id)
        person = await client.query_person("02", EMPLOYEE.certno)
    assert found is not None and found.refd_setl_flag == "1"
    enrolment = person.enrolment()
    assert enrolment is not None and enrolment.balc == Money(EMPLOYEE.account_opening_balance_fen)


async def test_gateway_error_is_unavailable_and_a_retry_succeeds(sim: Sim) -> None:
    async with sim.client() as client:
        await sim.control("POST", "/sim/faults", {"infno": "1101", "mode": "error", "count": 1})
        with pytest.raises(InsurerUnavailable):
            await client.query_person("02", EMPLOYEE.certno)
        assert (await client.query_person("02", EMPLOYEE.certno)).psn_no == EMPLOYEE.psn_no


async def test_wrong_paas_token_is_refused_by_the_gateway(sim: Sim) -> None:
    async with sim.client(token="not-the-token") as client:
        with pytest.raises(InsurerUnavailable, match="401"):
            await client.sign_in()


async def test_unknown_person_is_rejected(sim: Sim) -> None:
    async with sim.client() as client:
        with pytest.raises(InsurerRejected, match="未查询到"):
            await client.query_person("02", "350102199001011234")


async def test_closed_port_is_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = NhsaClientConfig(
        f"http://127.0.0.1:{port}", "H35010200901", "九〇〇医院", "350100", "id", "token"
    )
    async with NhsaClient(config) as client:
        with pytest.raises(InsurerUnavailable):
            await client.sign_in()


async def test_settlements_survive_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "nhsa_sim.sqlite3"
    async with running_simulator(db) as first, first.client() as client:
        visit = await open_visit(client, EMPLOYEE, "MZ20250303006")
        settled = await client.settle(visit.request, await client.presettle(visit.request))
    async with running_simulator(db) as second, second.client() as client:
        found = await client.query_settlement(psn_no=EMPLOYEE.psn_no, mdtrt_id=visit.mdtrt_id)
        person = await client.query_person("02", EMPLOYEE.certno)
    assert found == settled
    enrolment = person.enrolment()
    assert enrolment is not None and enrolment.balc == settled.balc
