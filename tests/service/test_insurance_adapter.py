"""insurance-adapter as a gRPC service against the NHSA simulator, both on loopback ports in this
process: a real grpc.aio channel in, real NHSA JSON over HTTP out, its own database (a SQLite file,
and for the main flow also the test database: PostgreSQL when one answers)."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import uvicorn
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from medpay.common.v1 import common_pb2
from medpay.events.v1 import events_pb2, events_pb2_grpc
from medpay.insurance.v1 import insurance_pb2 as pb
from medpay.insurance.v1 import insurance_pb2_grpc

from infra.simulators.catalogue import find_item
from infra.simulators.nhsa.app import build_app
from infra.simulators.nhsa.platform import NhsaPlatform, Reply
from infra.simulators.nhsa.settings import NhsaSimSettings
from infra.simulators.nhsa.store import NhsaStore
from infra.simulators.population import InsuredPerson, insured_people
from services.insurance_adapter.bootstrap import InsuranceAdapter, build
from services.insurance_adapter.config import InsuranceAdapterSettings
from services.insurance_adapter.domain.process import QUERY_BACKOFF
from services.runtime.clock import business_date_of, utcnow
from services.runtime.server import build_server

PEOPLE = insured_people(30)
EMPLOYEES = [person for person in PEOPLE if person.insutype == "310" and person.psn_type == "11"]
# Hospital code, quantity in ten-thousandths: a consultation, a 甲类 drug, 乙类 tests, a 丙类 drug and a
# consumable priced above the insurer's cap; together past the 600-yuan deductible, so the fund pays.
BILL = (
    ("ZC0001", 10_000),
    ("XY0001", 20_000),
    ("HY0006", 10_000),
    ("JC0004", 10_000),
    ("JC0002", 10_000),
    ("XY0012", 10_000),
    ("CL0001", 20_000),
)
SENT_TIMEOUT_S = 1.0  # the adapter's deadline per NHSA message
SIM_HANG_S = 1.5  # how long the simulator's unknown-outcome fault keeps the adapter waiting


class CountingPlatform(NhsaPlatform):
    """The simulator's desk, counting every envelope it is handed, by infno."""

    seen: Counter[str]

    async def answer(self, envelope: Any) -> Reply:
        self.seen[str(envelope.get("infno")) if isinstance(envelope, dict) else "?"] += 1
        return await super().answer(envelope)


class AdapterClock:
    """The adapter's clock: now, unless a test holds it still to walk the 5203 schedule."""

    def __init__(self) -> None:
        self.held: datetime | None = None

    def __call__(self) -> datetime:
        return self.held or utcnow()


@dataclass
class Mesh:
    insurance: insurance_pb2_grpc.InsuranceServiceStub
    events: events_pb2_grpc.EventFeedServiceStub
    sim: CountingPlatform
    sim_url: str
    clock: AdapterClock

    async def arm_fault(self, infno: str, mode: str) -> None:
        async with httpx.AsyncClient() as http:
            body = {"infno": infno, "mode": mode, "count": 1, "hang_s": SIM_HANG_S}
            (await http.post(f"{self.sim_url}/sim/faults", json=body)).raise_for_status()

    async def presettle(self, person: InsuredPerson, order_ref: str, request_id: str = "") -> pb.Settlement:
        request = presettle_request(person, order_ref, request_id or f"pre-{order_ref}")
        return (await self.insurance.Presettle(request)).settlement

    async def settle(self, settlement_id: str, request_id: str, invoice_no: str = "") -> pb.Settlement:
        request = pb.SettleRequest(request_id=request_id, settlement_id=settlement_id, invoice_no=invoice_no)
        return (await self.insurance.Settle(request)).settlement


def presettle_request(person: InsuredPerson, order_ref: str, request_id: str) -> pb.PresettleRequest:
    return pb.PresettleRequest(
        request_id=request_id,
        order_ref=order_ref,
        voucher=common_pb2.PatientVoucher(
            mdtrt_cert_type="02", mdtrt_cert_no=person.certno, psn_cert_type="01", psn_name=person.psn_name
        ),
        med_type="11",
        use_personal_account=True,
        dept_code="A03",
        dept_name="内科门诊",
        doctor_code="D0107",
        doctor_name="郑医生",
        visit_no=f"MZ{order_ref[-12:]}",
        items=[charge_item(position, code, quantity) for position, (code, quantity) in enumerate(BILL, 1)],
    )


def charge_item(position: int, code: str, quantity: int) -> common_pb2.ChargeItem:
    item = find_item(code)
    assert item is not None
    return common_pb2.ChargeItem(
        hospital_code=item.medins_list_codg,
        national_code=item.med_list_codg,
        name=item.name,
        med_chrgitm_type=item.med_chrgitm_type,
        quantity_ten_thousandths=quantity,
        unit_price_fen=item.unit_price_fen,
        line_total_fen=item.unit_price_fen * quantity // 10_000,
        line_no=f"{position:04d}",
    )


def bill_total() -> int:
    return sum(charge_item(i, code, quantity).line_total_fen for i, (code, quantity) in enumerate(BILL, 1))


async def settlement_of(mesh: Mesh, settlement_id: str) -> pb.Settlement:
    request = pb.GetSettlementRequest(settlement_id=settlement_id)
    return (await mesh.insurance.GetSettlement(request)).settlement


async def msgids_sent(mesh: Mesh, order_ref: str, infno: str) -> list[str]:
    query = pb.ListInsurerMessagesRequest(page_size=50, order_ref=order_ref, infno=infno)
    return [message.msgid for message in (await mesh.insurance.ListInsurerMessages(query)).messages]


async def messages_sent(mesh: Mesh, order_ref: str) -> Counter[str]:
    """The order's 2207, 2208 and 5203 exchanges in the message log (faulted ones included), by infno."""
    query = pb.ListInsurerMessagesRequest(page_size=50, order_ref=order_ref)
    messages = (await mesh.insurance.ListInsurerMessages(query)).messages
    return Counter(message.infno for message in messages if message.infno in ("2207", "2208", "5203"))


def error_of(failure: grpc.aio.AioRpcError) -> tuple[str, list[str]]:
    """(ErrorInfo.reason, BadRequest field names) of a failed call."""
    status = rpc_status.from_call(failure)
    assert status is not None
    reason, fields = "", []
    for detail in status.details:
        info, bad_request = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
        if detail.Unpack(info):
            reason = info.reason
        elif detail.Unpack(bad_request):
            fields = [violation.field for violation in bad_request.field_violations]
    return reason, fields


def free_port() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture
async def nhsa_sim(tmp_path: Path) -> AsyncIterator[tuple[CountingPlatform, str]]:
    settings = NhsaSimSettings(db=tmp_path / "nhsa.sqlite3", population=len(PEOPLE), hang_s=SIM_HANG_S)
    store = await NhsaStore.open(tmp_path / "nhsa.sqlite3", len(PEOPLE))
    platform = CountingPlatform(store, settings)
    platform.seen = Counter()
    sock = free_port()
    config = uvicorn.Config(build_app(platform, settings), log_config=None, access_log=False, lifespan="off")
    config.timeout_graceful_shutdown = 1
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    for _ in range(500):
        if server.started:
            break
        await asyncio.sleep(0.01)
    yield platform, f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    await serving
    sock.close()
    await store.close()


@pytest.fixture(params=["sqlite-file"])
def database_choice(request: pytest.FixtureRequest) -> str | None:
    return None if request.param == "sqlite-file" else str(request.getfixturevalue("database_url"))


@pytest.fixture
async def mesh(
    nhsa_sim: tuple[CountingPlatform, str], database_choice: str | None, tmp_path: Path
) -> AsyncIterator[Mesh]:
    platform, sim_url = nhsa_sim
    settings = InsuranceAdapterSettings(
        database_url=database_choice,
        data_dir=tmp_path / "data",
        trace_dir=tmp_path / "traces",
        nhsa_base_url=sim_url,
        nhsa_timeout_s=SENT_TIMEOUT_S,
    )
    clock = AdapterClock()
    adapter = build(settings, clock=clock)
    await adapter.database.migrate()
    async with serving(adapter) as channel:
        yield Mesh(
            insurance_pb2_grpc.InsuranceServiceStub(channel),
            events_pb2_grpc.EventFeedServiceStub(channel),
            platform,
            sim_url,
            clock,
        )


class serving:  # lower case: it reads as `async with serving(adapter) as channel`
    """The adapter on an ephemeral loopback port with its outbox relay; yields a client channel."""

    def __init__(self, adapter: InsuranceAdapter) -> None:
        self._adapter = adapter
        self._server = build_server()

    async def __aenter__(self) -> grpc.aio.Channel:
        self._adapter.register(self._server)
        port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()
        self._relay = asyncio.create_task(self._adapter.database.outbox.run_relay(poll_interval_s=0.05))
        self._channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        return self._channel

    async def __aexit__(self, *_exc: object) -> None:
        await self._channel.close()
        await self._server.stop(0)
        self._relay.cancel()
        await asyncio.gather(self._relay, return_exceptions=True)
        await self._adapter.close()


async def feed_events(mesh: Mesh, expected: int) -> list[events_pb2.EventEnvelope]:
    """The adapter's event feed, once the relay has sequenced at least `expected` events."""
    for _ in range(100):
        response = await mesh.events.ListEvents(events_pb2.ListEventsRequest(after_sequence=0))
        if len(response.events) >= expected:
            return list(response.events)
        await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {expected} events on the feed")


@pytest.mark.parametrize("database_choice", ["sqlite-file", "test-database"], indirect=True)
async def test_presettle_settle_revoke_with_amounts_adding_up(mesh: Mesh) -> None:
    person = EMPLOYEES[0]
    presettled = await mesh.presettle(person, "ord_flow000000001")
    split = presettled.breakdown
    assert (
        presettled.status == pb.SETTLEMENT_STATUS_PRESETTLED and presettled.mdtrt_id and presettled.chrg_bchno
    )
    assert split.medfee_sumamt_fen == bill_total()
    assert split.fund_pay_sumamt_fen > 0 and split.overlmt_selfpay_fen > 0 and split.fulamt_ownpay_amt_fen > 0
    assert split.medfee_sumamt_fen == (
        split.fulamt_ownpay_amt_fen
        + split.overlmt_selfpay_fen
        + split.preselfpay_amt_fen
        + split.inscp_scp_amt_fen
    )
    assert (
        split.psn_part_amt_fen
        == split.medfee_sumamt_fen - split.fund_pay_sumamt_fen - split.hosp_part_amt_fen
    )
    assert split.psn_part_amt_fen == split.acct_pay_fen + split.psn_cash_pay_fen
    again = await mesh.presettle(person, "ord_flow000000001", request_id="pre-again")
    assert again.settlement_id == presettled.settlement_id and again.breakdown == split

    settled = await mesh.settle(presettled.settlement_id, "settle-flow", invoice_no="INV0001")
    assert settled.status == pb.SETTLEMENT_STATUS_SETTLED and settled.setl_id
    assert settled.breakdown == split and settled.HasField("settled_at")
    # Read back, the insurer's settlement time (Beijing) is the same instant: on SQLite it used to
    # be stored as Beijing wall time and read back as UTC, 8 hours late (and off its business day).
    stored = await settlement_of(mesh, settled.settlement_id)
    assert abs(stored.settled_at.ToDatetime(tzinfo=UTC) - utcnow()) < timedelta(minutes=1)
    assert stored.settled_at == settled.settled_at

    revoke = pb.RevokeSettlementRequest(request_id="revoke-flow", settlement_id=settled.settlement_id)
    revoked = (await mesh.insurance.RevokeSettlement(revoke)).settlement
    assert revoked.status == pb.SETTLEMENT_STATUS_REVOKED and revoked.setl_id == settled.setl_id

    events = await feed_events(mesh, expected=2)
    assert [event.WhichOneof("payload") for event in events] == [
        "insurance_settled",
        "insurance_settlement_revoked",
    ]
    assert events[0].insurance_settled.setl_id == settled.setl_id
    assert events[0].insurance_settled.breakdown == split
    assert events[1].insurance_settlement_revoked.breakdown == split
    assert person.certno not in str(events) and person.psn_name not in str(events)


@pytest.mark.parametrize("database_choice", ["sqlite-file", "test-database"], indirect=True)
async def test_the_insurers_beijing_setl_time_is_stored_as_the_utc_instant_it_names(mesh: Mesh) -> None:
    # 2207 answers setl_time as Beijing wall-clock time; kept as if it were UTC it is 8 hours ahead.
    before = utcnow().replace(microsecond=0)
    presettled = await mesh.presettle(EMPLOYEES[6], "ord_setltime00001")
    await mesh.settle(presettled.settlement_id, "settle-setltime")
    get = pb.GetSettlementRequest(settlement_id=presettled.settlement_id)
    stored = (await mesh.insurance.GetSettlement(get)).settlement
    assert before <= stored.settled_at.ToDatetime(tzinfo=UTC) <= utcnow()


async def test_a_replayed_request_id_answers_the_same_and_the_insurer_sees_one_2207(mesh: Mesh) -> None:
    presettled = await mesh.presettle(EMPLOYEES[1], "ord_replay0000001")
    first = await mesh.settle(presettled.settlement_id, "settle-replay", invoice_no="INV0002")
    replayed = await mesh.settle(presettled.settlement_id, "settle-replay", invoice_no="INV0002")
    assert replayed == first and first.status == pb.SETTLEMENT_STATUS_SETTLED
    assert mesh.sim.seen["2207"] == 1

    with pytest.raises(grpc.aio.AioRpcError) as reused:
        await mesh.settle(presettled.settlement_id, "settle-replay", invoice_no="INV-OTHER")
    assert reused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_of(reused.value)[0] == "REQUEST_ID_REUSED"
    assert mesh.sim.seen["2207"] == 1


async def test_an_invalid_voucher_names_the_field_and_stores_nothing(mesh: Mesh) -> None:
    request = presettle_request(EMPLOYEES[2], "ord_invalid000001", "pre-invalid")
    request.voucher.mdtrt_cert_no = ""
    request.items[1].line_total_fen += 1
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await mesh.insurance.Presettle(request)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    reason, fields = error_of(refused.value)
    assert reason == "FIELD_INVALID"
    assert fields == ["voucher.mdtrt_cert_no", "items[1].line_total_fen"]
    listed = await mesh.insurance.ListSettlements(pb.ListSettlementsRequest())
    assert list(listed.settlements) == [] and sum(mesh.sim.seen.values()) == 0

    # Nothing was kept, not even the request_id: the corrected request may reuse it.
    fixed = presettle_request(EMPLOYEES[2], "ord_invalid000001", "pre-invalid")
    assert (await mesh.insurance.Presettle(fixed)).settlement.status == pb.SETTLEMENT_STATUS_PRESETTLED


async def test_a_lost_2207_answer_is_unknown_until_5203_finds_the_same_settlement(mesh: Mesh) -> None:
    presettled = await mesh.presettle(EMPLOYEES[3], "ord_unknown000001")
    await mesh.arm_fault("2207", "unknown_after_commit")
    with pytest.raises(grpc.aio.AioRpcError) as lost:
        await mesh.settle(presettled.settlement_id, "settle-unknown")
    assert lost.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_of(lost.value)[0] == "OUTCOME_UNKNOWN"
    get = pb.GetSettlementRequest(settlement_id=presettled.settlement_id)
    assert (await mesh.insurance.GetSettlement(get)).settlement.status == pb.SETTLEMENT_STATUS_UNKNOWN

    get.refresh = True
    resolved = (await mesh.insurance.GetSettlement(get)).settlement
    assert resolved.status == pb.SETTLEMENT_STATUS_SETTLED and resolved.setl_id
    assert mesh.sim.seen["5203"] == 1
    retried = await mesh.settle(presettled.settlement_id, "settle-unknown")
    assert retried.setl_id == resolved.setl_id and mesh.sim.seen["2207"] == 1
    events = await feed_events(mesh, expected=1)
    assert [event.insurance_settled.setl_id for event in events] == [resolved.setl_id]


async def test_reconcile_totals_balances_after_the_days_settlements(mesh: Mesh) -> None:
    person = EMPLOYEES[4]
    kept = await mesh.presettle(person, "ord_totals0000001")
    revoked = await mesh.presettle(person, "ord_totals0000002")
    kept = await mesh.settle(kept.settlement_id, "settle-totals-1")
    await mesh.settle(revoked.settlement_id, "settle-totals-2")
    revoke = pb.RevokeSettlementRequest(request_id="revoke-totals", settlement_id=revoked.settlement_id)
    await mesh.insurance.RevokeSettlement(revoke)

    today = business_date_of(utcnow()).isoformat()
    request = pb.ReconcileTotalsRequest(request_id="totals-310", business_date=today, insutype="310")
    statement = (await mesh.insurance.ReconcileTotals(request)).statement
    assert statement.balanced and statement.stmt_rslt == "0"
    assert statement.medfee_sumamt_fen == kept.breakdown.medfee_sumamt_fen
    assert statement.fund_pay_sumamt_fen == kept.breakdown.fund_pay_sumamt_fen
    assert statement.acct_pay_fen == kept.breakdown.acct_pay_fen
    assert statement.settlement_count == 1  # two settled, one revoked
    assert statement.insurer_medfee_sumamt_fen == statement.medfee_sumamt_fen
    assert statement.insurer_settlement_count == 1


async def test_the_message_log_keeps_every_exchange_without_clear_identifiers(mesh: Mesh) -> None:
    person = EMPLOYEES[5]
    presettled = await mesh.presettle(person, "ord_msglog0000001")
    await mesh.settle(presettled.settlement_id, "settle-msglog")
    query = pb.ListInsurerMessagesRequest(page_size=2, order_ref="ord_msglog0000001")
    messages: list[pb.InsurerMessage] = []
    while True:
        page = await mesh.insurance.ListInsurerMessages(query)
        messages += page.messages
        if not page.next_page_token:
            break
        query.page_token = page.next_page_token
    assert sorted(message.infno for message in messages) == ["1101", "2201", "2204", "2206", "2207", "9001"]
    assert all(message.outcome == "OK" and message.msgid for message in messages)
    logged = "".join(message.request_json + message.response_json for message in messages)
    assert person.certno not in logged and person.psn_name not in logged
    assert person.certno[:4] + "*" * 10 + person.certno[-4:] in logged


async def test_a_refused_2207_fails_and_an_unreachable_one_can_be_retried(mesh: Mesh) -> None:
    unreached = await mesh.presettle(EMPLOYEES[6], "ord_unreached0001")
    await mesh.arm_fault("2207", "error")
    with pytest.raises(grpc.aio.AioRpcError) as down:
        await mesh.settle(unreached.settlement_id, "settle-unreached")
    assert (down.value.code(), error_of(down.value)[0]) == (
        grpc.StatusCode.UNAVAILABLE,
        "INSURER_UNAVAILABLE",
    )
    get = pb.GetSettlementRequest(settlement_id=unreached.settlement_id)
    assert (await mesh.insurance.GetSettlement(get)).settlement.status == pb.SETTLEMENT_STATUS_PRESETTLED
    assert (
        await mesh.settle(unreached.settlement_id, "settle-unreached")
    ).status == pb.SETTLEMENT_STATUS_SETTLED

    refused = await mesh.presettle(EMPLOYEES[7], "ord_refused000001")
    await mesh.arm_fault("2207", "reject")
    with pytest.raises(grpc.aio.AioRpcError) as rejected:
        await mesh.settle(refused.settlement_id, "settle-refused")
    assert error_of(rejected.value)[0] == "INSURER_REJECTED"
    failed = (
        await mesh.insurance.GetSettlement(pb.GetSettlementRequest(settlement_id=refused.settlement_id))
    ).settlement
    assert failed.status == pb.SETTLEMENT_STATUS_FAILED and "模拟故障" in failed.status_reason
    # A caller whose answer was lost retries: it learns the refusal (FAILED) and can compensate,
    # instead of a STATE_CONFLICT that would leave it waiting for a settlement that never comes.
    sent_2207 = mesh.sim.seen["2207"]
    retried = await mesh.settle(refused.settlement_id, "settle-refused-retry")
    assert retried.status == pb.SETTLEMENT_STATUS_FAILED
    assert mesh.sim.seen["2207"] == sent_2207  # nothing sent again


async def test_a_cancelled_presettlement_frees_its_order_and_lists_page_by_page(mesh: Mesh) -> None:
    first = await mesh.presettle(EMPLOYEES[8], "ord_cancel0000001")
    cancel = pb.CancelPresettlementRequest(request_id="cancel-1", settlement_id=first.settlement_id)
    assert (
        await mesh.insurance.CancelPresettlement(cancel)
    ).settlement.status == pb.SETTLEMENT_STATUS_CANCELLED
    assert mesh.sim.seen["2205"] == 1
    second = await mesh.presettle(EMPLOYEES[8], "ord_cancel0000001", request_id="pre-after-cancel")
    assert second.settlement_id != first.settlement_id and second.status == pb.SETTLEMENT_STATUS_PRESETTLED
    await mesh.presettle(EMPLOYEES[9], "ord_cancel0000002")
    other_bill = presettle_request(EMPLOYEES[9], "ord_cancel0000002", "pre-other-bill")
    del other_bill.items[-1]
    with pytest.raises(grpc.aio.AioRpcError) as conflict:
        await mesh.insurance.Presettle(other_bill)
    assert error_of(conflict.value)[0] == "STATE_CONFLICT"

    query = pb.ListSettlementsRequest(page_size=2)
    seen: list[str] = []
    while True:
        page = await mesh.insurance.ListSettlements(query)
        seen += [settlement.settlement_id for settlement in page.settlements]
        if not page.next_page_token:
            break
        query.page_token = page.next_page_token
    assert len(seen) == len(set(seen)) == 3 and seen[-1] == first.settlement_id
    cancelled = await mesh.insurance.ListSettlements(
        pb.ListSettlementsRequest(status=pb.SETTLEMENT_STATUS_CANCELLED)
    )
    assert [settlement.settlement_id for settlement in cancelled.settlements] == [first.settlement_id]
    with pytest.raises(grpc.aio.AioRpcError) as bad_token:
        await mesh.insurance.ListSettlements(pb.ListSettlementsRequest(page_token="not-a-token"))
    assert error_of(bad_token.value) == ("FIELD_INVALID", ["page_token"])


async def test_a_refused_5203_is_no_refusal_and_the_next_one_waits_its_turn(mesh: Mesh) -> None:
    order_ref = "ord_query00000001"
    settlement_id = (await mesh.presettle(EMPLOYEES[10], order_ref)).settlement_id
    await mesh.arm_fault("2207", "timeout")  # sent, never booked, its answer never comes
    with pytest.raises(grpc.aio.AioRpcError) as lost:
        await mesh.settle(settlement_id, "settle-query")
    assert error_of(lost.value)[0] == "OUTCOME_UNKNOWN"

    mesh.clock.held = utcnow()
    await mesh.arm_fault("5203", "reject")
    with pytest.raises(grpc.aio.AioRpcError) as asked:
        await mesh.settle(settlement_id, "settle-query")
    # The insurer refused the query, not the settlement: INSURER_REJECTED would make payment-core
    # refund the patient's cash for a settlement the insurer may have booked.
    assert (asked.value.code(), error_of(asked.value)[0]) == (grpc.StatusCode.UNAVAILABLE, "OUTCOME_UNKNOWN")
    assert (await settlement_of(mesh, settlement_id)).status == pb.SETTLEMENT_STATUS_UNKNOWN
    assert await messages_sent(mesh, order_ref) == {"2207": 1, "5203": 1}

    with pytest.raises(grpc.aio.AioRpcError) as early:  # before its pause is over, nobody is asked
        await mesh.settle(settlement_id, "settle-query")
    assert error_of(early.value)[0] == "OUTCOME_UNKNOWN" and "ask again after" in str(early.value.details())
    assert await messages_sent(mesh, order_ref) == {"2207": 1, "5203": 1}

    mesh.clock.held += QUERY_BACKOFF[0]
    settled = await mesh.settle(settlement_id, "settle-query")
    assert settled.status == pb.SETTLEMENT_STATUS_SETTLED and settled.setl_id
    # 5203 found nothing under the msgid, so the same 2207 went again: one msgid, settled once.
    assert await messages_sent(mesh, order_ref) == {"2207": 2, "5203": 2}
    assert len(set(await msgids_sent(mesh, order_ref, "2207"))) == 1


async def test_a_refresh_that_finds_nothing_waits_and_settle_sends_the_same_2207_again(mesh: Mesh) -> None:
    order_ref = "ord_refresh000001"
    settlement_id = (await mesh.presettle(EMPLOYEES[11], order_ref)).settlement_id
    await mesh.arm_fault("2207", "timeout")
    with pytest.raises(grpc.aio.AioRpcError):
        await mesh.settle(settlement_id, "settle-refresh")

    mesh.clock.held = utcnow()
    refresh = pb.GetSettlementRequest(settlement_id=settlement_id, refresh=True)
    for _ in range(2):  # the second refresh, before the pause is over, does not ask again
        refreshed = (await mesh.insurance.GetSettlement(refresh)).settlement
        assert refreshed.status == pb.SETTLEMENT_STATUS_UNKNOWN and "5203" in refreshed.status_reason
        assert await messages_sent(mesh, order_ref) == {"2207": 1, "5203": 1}

    settled = await mesh.settle(settlement_id, "settle-refresh")
    assert settled.status == pb.SETTLEMENT_STATUS_SETTLED
    assert await messages_sent(mesh, order_ref) == {"2207": 2, "5203": 1}
    assert len(set(await msgids_sent(mesh, order_ref, "2207"))) == 1
    events = await feed_events(mesh, expected=1)
    assert [event.insurance_settled.setl_id for event in events] == [settled.setl_id]


async def test_a_lost_2208_answer_leaves_it_settled_and_the_retry_revokes_it_once(mesh: Mesh) -> None:
    order_ref = "ord_revoke0000001"
    presettled = await mesh.presettle(EMPLOYEES[12], order_ref)
    settled = await mesh.settle(presettled.settlement_id, "settle-revoke")
    await mesh.arm_fault("2208", "unknown_after_commit")
    revoke = pb.RevokeSettlementRequest(request_id="revoke-lost", settlement_id=settled.settlement_id)
    with pytest.raises(grpc.aio.AioRpcError) as lost:
        await mesh.insurance.RevokeSettlement(revoke)
    assert error_of(lost.value)[0] == "OUTCOME_UNKNOWN"
    still = await settlement_of(mesh, settled.settlement_id)
    assert still.status == pb.SETTLEMENT_STATUS_SETTLED and "2208" in still.status_reason

    revoked = (await mesh.insurance.RevokeSettlement(revoke)).settlement
    assert revoked.status == pb.SETTLEMENT_STATUS_REVOKED and revoked.setl_id == settled.setl_id
    assert (await messages_sent(mesh, order_ref))["2208"] == 2
    events = await feed_events(mesh, expected=2)
    assert [event.WhichOneof("payload") for event in events] == [
        "insurance_settled",
        "insurance_settlement_revoked",
    ]


async def fee_lines_held(mesh: Mesh, mdtrt_id: str) -> int:
    async with mesh.sim._store.books() as books:
        return len(await books.fee_lines(mdtrt_id))


async def test_a_2204_whose_answer_was_lost_is_withdrawn_when_the_order_is_cancelled(mesh: Mesh) -> None:
    """The 2205 used to be skipped for a settlement still VISIT_REGISTERED, so fee lines whose 2204
    landed with its answer lost stayed at the insurer for an order nobody would pay."""
    order_ref = "ord_lost2204000001"
    await mesh.arm_fault("2204", "unknown_after_commit")
    with pytest.raises(grpc.aio.AioRpcError):
        await mesh.presettle(EMPLOYEES[10], order_ref)
    listed = await mesh.insurance.ListSettlements(pb.ListSettlementsRequest(page_size=10))
    [settlement] = [s for s in listed.settlements if s.order_ref == order_ref]
    assert "visit registered" in settlement.status_reason  # 2204's answer never came back
    assert await fee_lines_held(mesh, settlement.mdtrt_id) == len(BILL)

    cancel = pb.CancelPresettlementRequest(request_id="cancel-lost-2204", order_ref=order_ref)
    cancelled = (await mesh.insurance.CancelPresettlement(cancel)).settlement
    assert cancelled.status == pb.SETTLEMENT_STATUS_CANCELLED
    assert await fee_lines_held(mesh, settlement.mdtrt_id) == 0


async def test_a_2204_that_never_landed_cancels_with_the_insurer_holding_nothing(mesh: Mesh) -> None:
    order_ref = "ord_lost2204000002"
    await mesh.arm_fault("2204", "error")
    with pytest.raises(grpc.aio.AioRpcError):
        await mesh.presettle(EMPLOYEES[11], order_ref)
    cancel = pb.CancelPresettlementRequest(request_id="cancel-unsent-2204", order_ref=order_ref)
    cancelled = (await mesh.insurance.CancelPresettlement(cancel)).settlement
    assert cancelled.status == pb.SETTLEMENT_STATUS_CANCELLED
    assert mesh.sim.seen["2205"] == 1  # asked, refused (nothing held), and taken as nothing held


async def test_the_rest_of_a_revoked_bill_is_pre_settled_again_on_the_same_visit(mesh: Mesh) -> None:
    person = EMPLOYEES[0]
    presettled = await mesh.presettle(person, "ord_rest000000001")
    settled = await mesh.settle(presettled.settlement_id, "settle-rest")
    remaining = list(presettle_request(person, "x", "x").items)[:-1]

    def again(request_id: str, **fields: Any) -> pb.PresettleRequest:
        return pb.PresettleRequest(
            request_id=request_id, order_ref="ord_rest000000001",
            after_revoked_settlement_id=settled.settlement_id, items=remaining, **fields,
        )  # fmt: skip

    with pytest.raises(grpc.aio.AioRpcError) as not_revoked:
        await mesh.insurance.Presettle(again("rest-too-early"))
    assert error_of(not_revoked.value)[0] == "STATE_CONFLICT"
    with pytest.raises(grpc.aio.AioRpcError) as with_visit:
        await mesh.insurance.Presettle(again("rest-bad", med_type="11", voucher=common_pb2.PatientVoucher()))
    assert error_of(with_visit.value) == ("FIELD_INVALID", ["voucher", "med_type"])

    revoke = pb.RevokeSettlementRequest(request_id="revoke-rest", settlement_id=settled.settlement_id)
    await mesh.insurance.RevokeSettlement(revoke)
    first = (await mesh.insurance.Presettle(again("rest-1"))).settlement
    replayed = (await mesh.insurance.Presettle(again("rest-1"))).settlement
    assert first.status == pb.SETTLEMENT_STATUS_PRESETTLED and replayed == first
    assert first.settlement_id != settled.settlement_id and first.mdtrt_id == settled.mdtrt_id
    assert first.chrg_bchno != settled.chrg_bchno
    assert first.breakdown.medfee_sumamt_fen == sum(item.line_total_fen for item in remaining)
    assert mesh.sim.seen["2201"] == 1  # the visit registered once; 2204 + 2206 for the rest
    resettled = await mesh.settle(first.settlement_id, "settle-rest-2")
    assert resettled.status == pb.SETTLEMENT_STATUS_SETTLED and resettled.setl_id != settled.setl_id
