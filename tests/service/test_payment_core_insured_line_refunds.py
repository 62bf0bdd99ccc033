"""Partial refunds of a settled insured order by lines, through gRPC, with the real insurance-adapter
and the NHSA simulator: payment-core (in process, FakeChannel for WeChat Pay) calls insurance-adapter
over a loopback gRPC channel, which speaks NHSA JSON to the simulator. Both services on the test
database (PostgreSQL when one answers).

What must hold after every refund by lines: the old settlement revoked at the insurer (2208) and a
new one settled (2207) for the remaining lines; the order shows the new split and setl_id; the cash
refunded is the old cash share less the new, never more than was paid; the ledger balances and the
order's revenue is the remaining bill. A crash or a failure at each step finishes by itself.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from medpay.common.v1 import common_pb2
from medpay.events.v1 import events_pb2_grpc
from medpay.payment.v1 import payment_pb2 as pb
from medpay.payment.v1 import payment_pb2_grpc

from infra.simulators.catalogue import find_item
from services.insurance_adapter.bootstrap import build as build_adapter
from services.insurance_adapter.config import InsuranceAdapterSettings
from services.payment_core.adapters.channels.fake import FakeChannel
from services.payment_core.adapters.insurance_grpc import GrpcInsurance
from services.payment_core.bootstrap import build
from services.payment_core.config import PaymentCoreSettings
from services.payment_core.entrypoints.notify_http import notify_app
from services.runtime.money import Money
from services.runtime.server import build_server
from tests.service import test_insurance_adapter as adapter_tests
from tests.service.test_insurance_adapter import EMPLOYEES, CountingPlatform, serving
from tests.service.test_payment_core import Clock, Harness, details, patient_pays, pay

nhsa_sim = adapter_tests.nhsa_sim
# A consultation, two boxes of a 甲类 drug, 乙类 tests, a 丙类 drug and a consumable over its cap.
BILL = adapter_tests.BILL
DRUG_LINE, CLASS_C_LINE = "0002", "0006"


class Mesh(Harness):
    sim_url: str
    sim: CountingPlatform


@pytest.fixture
async def mesh(
    nhsa_sim: tuple[CountingPlatform, str], database_url: str, tmp_path: Path
) -> AsyncIterator[Mesh]:
    platform, sim_url = nhsa_sim
    adapter_settings = InsuranceAdapterSettings(
        database_url=database_url, data_dir=tmp_path / "adapter", trace_dir=tmp_path / "traces",
        nhsa_base_url=sim_url, nhsa_timeout_s=adapter_tests.SENT_TIMEOUT_S,
    )  # fmt: skip
    adapter = build_adapter(adapter_settings)
    await adapter.database.migrate()
    async with serving(adapter) as insurer_channel:
        settings = PaymentCoreSettings(
            database_url=database_url, data_dir=tmp_path / "core", trace_dir=tmp_path / "traces"
        )
        channel, clock = FakeChannel(), Clock()
        insurance = GrpcInsurance(insurer_channel, deadline_s=5.0)
        core = build(settings, channel=channel, insurance=insurance, clock=clock)  # type: ignore[arg-type]
        await core.database.migrate()
        server = build_server()
        core.register(server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        transport = httpx.ASGITransport(app=notify_app(core.notifications))
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as rpc,
            httpx.AsyncClient(transport=transport, base_url="http://payment-core") as http,
        ):
            mesh = Mesh(
                core, payment_pb2_grpc.PaymentServiceStub(rpc), events_pb2_grpc.EventFeedServiceStub(rpc),
                channel, insurance, clock, http, f"127.0.0.1:{port}",  # type: ignore[arg-type]
            )  # fmt: skip
            mesh.sim_url, mesh.sim = sim_url, platform
            yield mesh
        await server.stop(None)
        await core.close()


# ---- the visit ----------------------------------------------------------------------------------------


def _item(position: int, code: str, quantity: int) -> common_pb2.ChargeItem:
    item = find_item(code)
    assert item is not None
    return common_pb2.ChargeItem(
        hospital_code=item.medins_list_codg, national_code=item.med_list_codg, name=item.name,
        chrgitm_lv=item.chrgitm_lv, med_chrgitm_type=item.med_chrgitm_type,
        quantity_ten_thousandths=quantity, unit_price_fen=item.unit_price_fen,
        line_total_fen=item.unit_price_fen * quantity // 10_000, dept_code="A03", doctor_code="D0107",
        line_no=f"{position:04d}",
    )  # fmt: skip


def insured_visit(person_index: int = 0) -> pb.CreatePaymentOrderRequest:
    person = EMPLOYEES[person_index]
    return pb.CreatePaymentOrderRequest(
        request_id=uuid.uuid4().hex, his_order_no=f"MZ{uuid.uuid4().hex[:10]}", scene=pb.SCENE_OUTPATIENT,
        campus_code="FZ900", dept_code="A03", patient=common_pb2.Patient(
            his_patient_id=f"P-{person_index}",
            voucher=common_pb2.PatientVoucher(
                mdtrt_cert_type="02", mdtrt_cert_no=person.certno, psn_name=person.psn_name
            ),
        ),
        items=[_item(position, code, quantity) for position, (code, quantity) in enumerate(BILL, 1)],
        insurance=pb.InsuranceRequest(insutype="310", med_type="11", use_personal_account=False),
    )  # fmt: skip


async def settled_visit(mesh: Mesh, person_index: int = 0) -> pb.PaymentOrder:
    created = await mesh.payment.CreatePaymentOrder(insured_visit(person_index))
    assert created.order.split.fund_pay_sumamt_fen > 0 and created.order.cash_due_fen > 0
    paying = await mesh.payment.PayPaymentOrder(pay(created.order.order_id))
    order = await patient_pays(mesh, paying)
    assert order.status == pb.ORDER_STATUS_SETTLED, order.attention_reason
    return order


def by_lines(order_id: str, *lines: tuple[str, int], cash_fen: int = 0) -> pb.RefundPaymentOrderRequest:
    return pb.RefundPaymentOrderRequest(
        request_id=uuid.uuid4().hex, order_id=order_id, reason="drug returned", operator_id="C001",
        cash_fen=cash_fen, lines=[pb.RefundLine(line_no=no, quantity_ten_thousandths=q) for no, q in lines],
    )  # fmt: skip


async def sim_settlements(mesh: Mesh) -> list[dict[str, Any]]:
    async with httpx.AsyncClient() as http:
        reply = await http.get(f"{mesh.sim_url}/sim/settlements")
    reply.raise_for_status()
    return list(reply.json())


async def arm(mesh: Mesh, infno: str, mode: str) -> None:
    async with httpx.AsyncClient() as http:
        body = {"infno": infno, "mode": mode, "count": 1, "hang_s": adapter_tests.SIM_HANG_S}
        (await http.post(f"{mesh.sim_url}/sim/faults", json=body)).raise_for_status()


async def finish_by_itself(mesh: Mesh, order_id: str) -> pb.PaymentOrder:
    """Only the janitor from here on (the clock moved on past every retry delay)."""
    await asyncio.sleep(0.1)  # a lease handed back by an interrupted step
    for seconds in (6, 20, 60, 180, 600):
        mesh.clock.offset = timedelta(seconds=seconds)
        await mesh.core.janitor.sweep()
        await mesh.core.process.drain(5)
        order = await mesh.order(order_id)
        refunds_done = all(r.status == pb.REFUND_STATUS_SUCCEEDED for r in order.refunds)
        if order.status == pb.ORDER_STATUS_SETTLED and refunds_done:
            return order
    return await mesh.order(order_id)


async def assert_re_settled(mesh: Mesh, before: pb.PaymentOrder, after: pb.PaymentOrder) -> None:
    """The money of a refund by lines, end to end."""
    assert after.status == pb.ORDER_STATUS_SETTLED, (after.status, after.attention_reason)
    [line_refund] = after.line_refunds
    assert line_refund.stage == pb.LINE_REFUND_STAGE_RESETTLED
    freed = before.cash_paid_fen - after.split.psn_cash_pay_fen
    assert freed > 0 and line_refund.cash_fen == freed
    assert sum(r.cash_fen for r in after.refunds) == freed == after.refunded_cash_fen
    assert all(r.status == pb.REFUND_STATUS_SUCCEEDED for r in after.refunds)
    assert after.refunded_cash_fen <= after.cash_paid_fen
    assert after.setl_id and after.setl_id != before.setl_id
    # the ledger: balanced, the revenue is the remaining bill, the cash held is what was kept
    balances = await mesh.trial_balance()
    assert sum(amount.fen for amount in balances.values()) == 0
    assert balances["revenue:outpatient"] == Money(-after.split.medfee_sumamt_fen)
    assert balances["asset:channel_clearing:WECHAT_PAY"] == Money(after.split.psn_cash_pay_fen)
    assert balances["asset:insurer_fund_receivable"] == Money(after.split.fund_pay_sumamt_fen)
    assert balances.get("liability:receipts_unsettled", Money(0)) == Money(0)  # nothing left owed
    # the insurer's books: the old settlement revoked by one offset, the new one standing, once each
    book = await sim_settlements(mesh)
    original = next(row for row in book if row["setl_id"] == before.setl_id)
    assert original["revoked_by"] is not None
    assert [row["setl_id"] for row in book if row["original_setl_id"] == before.setl_id] == [
        original["revoked_by"]
    ]
    standing = [row for row in book if row["kind"] == "settle" and row["revoked_by"] is None]
    assert [row["setl_id"] for row in standing] == [after.setl_id]
    assert standing[0]["psn_cash_pay_fen"] == after.split.psn_cash_pay_fen


# ---- the flows ----------------------------------------------------------------------------------------


async def test_a_returned_drug_is_refunded_by_re_settling_the_remaining_lines(mesh: Mesh) -> None:
    before = await settled_visit(mesh)
    reply = await mesh.payment.RefundPaymentOrder(by_lines(before.order_id, (CLASS_C_LINE, 0)))

    after = await mesh.order(before.order_id)
    assert reply.refund.refund_id == after.line_refunds[0].refund_id and reply.refund.requested_by == "C001"
    remaining = sum(item.line_total_fen for item in before.items if item.line_no != CLASS_C_LINE)
    assert after.split.medfee_sumamt_fen == remaining and after.total_fen == before.total_fen
    await assert_re_settled(mesh, before, after)
    assert [line.line_no for line in after.line_refunds[0].lines] == [CLASS_C_LINE]


async def test_part_of_a_line_and_then_another_line_are_refunded_one_after_the_other(mesh: Mesh) -> None:
    before = await settled_visit(mesh)
    await mesh.payment.RefundPaymentOrder(by_lines(before.order_id, (DRUG_LINE, 10_000)))
    once = await mesh.order(before.order_id)
    assert once.status == pb.ORDER_STATUS_SETTLED, once.attention_reason
    drug = next(item for item in before.items if item.line_no == DRUG_LINE)
    assert once.split.medfee_sumamt_fen == before.total_fen - drug.line_total_fen // 2

    await mesh.payment.RefundPaymentOrder(by_lines(before.order_id, (CLASS_C_LINE, 0)))
    twice = await mesh.order(before.order_id)
    assert twice.status == pb.ORDER_STATUS_SETTLED, twice.attention_reason
    assert [r.stage for r in twice.line_refunds] == [pb.LINE_REFUND_STAGE_RESETTLED] * 2
    assert twice.refunded_cash_fen == before.cash_paid_fen - twice.split.psn_cash_pay_fen
    balances = await mesh.trial_balance()
    assert sum(amount.fen for amount in balances.values()) == 0
    assert balances["revenue:outpatient"] == Money(-twice.split.medfee_sumamt_fen)
    assert balances["asset:channel_clearing:WECHAT_PAY"] == Money(twice.split.psn_cash_pay_fen)
    book = await sim_settlements(mesh)
    standing = [r["setl_id"] for r in book if r["kind"] == "settle" and r["revoked_by"] is None]
    assert standing == [twice.setl_id]

    # and then the rest in full: the standing (second) settlement is revoked, every fen goes back
    rest = pb.RefundPaymentOrderRequest(request_id=uuid.uuid4().hex, order_id=before.order_id, reason="x")
    await mesh.payment.RefundPaymentOrder(rest)
    refunded = await mesh.order(before.order_id)
    assert refunded.status == pb.ORDER_STATUS_REFUNDED, refunded.attention_reason
    assert refunded.refunded_cash_fen == refunded.cash_paid_fen
    balances = await mesh.trial_balance()
    assert all(amount.fen == 0 for amount in balances.values()), balances
    assert not [r for r in await sim_settlements(mesh) if r["kind"] == "settle" and r["revoked_by"] is None]


# Each step's outbound call lands, then the step runner dies before it records the answer.
CRASH_AFTER = ["revoke_settlement", "represettle", "settle", "refund"]


@pytest.mark.parametrize("call", CRASH_AFTER)
async def test_a_crash_after_each_step_finishes_by_itself(mesh: Mesh, call: str) -> None:
    before = await settled_visit(mesh)
    target: Any = mesh.channel if call == "refund" else mesh.insurance
    real: Callable[..., Awaitable[Any]] = getattr(target, call)

    async def landed_then_crashed(*args: Any, **kwargs: Any) -> Any:
        setattr(target, call, real)
        await real(*args, **kwargs)
        raise RuntimeError(f"payment-core died after {call}")

    setattr(target, call, landed_then_crashed)
    with pytest.raises(grpc.aio.AioRpcError):
        await mesh.payment.RefundPaymentOrder(by_lines(before.order_id, (CLASS_C_LINE, 0)))

    after = await finish_by_itself(mesh, before.order_id)
    await assert_re_settled(mesh, before, after)


@pytest.mark.parametrize("infno", ["2208", "2204", "2206", "2207"])
async def test_the_insurer_unreachable_at_each_step_is_asked_again(mesh: Mesh, infno: str) -> None:
    before = await settled_visit(mesh)
    await arm(mesh, infno, "error")
    with pytest.raises(grpc.aio.AioRpcError):
        await mesh.payment.RefundPaymentOrder(by_lines(before.order_id, (CLASS_C_LINE, 0)))
    after = await finish_by_itself(mesh, before.order_id)
    await assert_re_settled(mesh, before, after)


async def test_a_refused_revocation_changes_nothing(mesh: Mesh) -> None:
    before = await settled_visit(mesh)
    await arm(mesh, "2208", "reject")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await mesh.payment.RefundPaymentOrder(by_lines(before.order_id, (CLASS_C_LINE, 0)))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    after = await mesh.order(before.order_id)
    assert after.status == pb.ORDER_STATUS_SETTLED and after.setl_id == before.setl_id
    assert after.line_refunds[0].stage == pb.LINE_REFUND_STAGE_REFUSED and not after.refunds
    assert after.split == before.split


async def test_a_refused_re_settlement_keeps_the_money_for_a_person(mesh: Mesh) -> None:
    before = await settled_visit(mesh)
    await arm(mesh, "2206", "reject")
    with pytest.raises(grpc.aio.AioRpcError):
        await mesh.payment.RefundPaymentOrder(by_lines(before.order_id, (CLASS_C_LINE, 0)))
    after = await finish_by_itself(mesh, before.order_id)
    assert after.status == pb.ORDER_STATUS_NEEDS_ATTENTION
    assert "re-settlement of the remaining lines refused" in after.attention_reason
    assert after.line_refunds[0].stage == pb.LINE_REFUND_STAGE_NEEDS_ATTENTION
    assert not after.refunds and after.refunded_cash_fen == 0  # nothing paid out on a guess
    balances = await mesh.trial_balance()
    assert sum(amount.fen for amount in balances.values()) == 0


async def test_cash_asked_back_that_the_insurer_does_not_free_stops_for_a_person(mesh: Mesh) -> None:
    before = await settled_visit(mesh)
    await mesh.payment.RefundPaymentOrder(by_lines(before.order_id, (CLASS_C_LINE, 0), cash_fen=1))
    after = await mesh.order(before.order_id)
    assert after.status == pb.ORDER_STATUS_NEEDS_ATTENTION
    assert "not the 1 fen asked back" in after.attention_reason and not after.refunds


async def test_bad_lines_are_refused_naming_the_field(mesh: Mesh) -> None:
    before = await settled_visit(mesh)
    cases = {
        "lines[0].line_no": by_lines(before.order_id, ("9999", 0)),
        "lines[1].line_no": by_lines(before.order_id, (DRUG_LINE, 0), (DRUG_LINE, 0)),
        "lines[0].quantity_ten_thousandths": by_lines(before.order_id, (DRUG_LINE, 30_000)),
    }
    for field, request in cases.items():
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await mesh.payment.RefundPaymentOrder(request)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert details(bad.value)[1] == [field]
    partial_cash = pb.RefundPaymentOrderRequest(
        request_id=uuid.uuid4().hex, order_id=before.order_id, reason="x", operator_id="C001", cash_fen=100
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await mesh.payment.RefundPaymentOrder(partial_cash)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    after = await mesh.order(before.order_id)
    assert after.status == pb.ORDER_STATUS_SETTLED and not after.line_refunds and not after.refunds


async def test_two_refunds_by_lines_at_once_cannot_both_pass(mesh: Mesh) -> None:
    before = await settled_visit(mesh)
    results = await asyncio.gather(
        mesh.payment.RefundPaymentOrder(by_lines(before.order_id, (CLASS_C_LINE, 0))),
        mesh.payment.RefundPaymentOrder(by_lines(before.order_id, (CLASS_C_LINE, 0))),
        return_exceptions=True,
    )
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(refused) == 1 and refused[0].code() == grpc.StatusCode.FAILED_PRECONDITION
    after = await mesh.order(before.order_id)
    await assert_re_settled(mesh, before, after)
