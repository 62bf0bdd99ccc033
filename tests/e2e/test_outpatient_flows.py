"""End-to-end: the insured outpatient settlement and its neighbours, through the real mesh
(every service and simulator its own process, PostgreSQL when reachable)."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import httpx
import pytest
from medpay.data.v1 import data_pb2
from medpay.insurance.v1 import insurance_pb2
from medpay.payment.v1 import payment_pb2
from medpay.reconciliation.v1 import reconciliation_pb2

from infra.local.processes import MeshProcesses
from services.runtime.clock import business_date_of, utcnow
from tests.e2e.errors import error_reason, violated_fields
from tests.e2e.flows import (
    PEOPLE,
    Status,
    Stubs,
    acknowledged,
    arm_wechat_fault,
    insured_order_request,
    patient_scans,
    pay_and_settle,
    self_pay_order_request,
    split_adds_up,
    wait_for_deliveries,
    wait_for_status,
)

pytestmark = pytest.mark.e2e


def _his_no() -> str:
    return f"MZ{uuid.uuid4().hex[:12].upper()}"


async def test_insured_outpatient_settlement(mesh: MeshProcesses, stubs: Stubs) -> None:
    person = PEOPLE[0]
    request = insured_order_request(person, _his_no(), use_personal_account=True)
    created = await stubs.payment.CreatePaymentOrder(request, timeout=30)
    order = created.order
    assert order.insured and order.status == Status.ORDER_STATUS_AWAITING_PAYMENT
    assert split_adds_up(order), order.split
    assert person.certno not in str(order) and person.psn_name not in str(order)

    settled = await pay_and_settle(mesh, stubs, order)
    assert settled.setl_id and split_adds_up(settled)
    assert settled.cash_paid_fen == settled.cash_due_fen
    listing = await stubs.insurance.ListSettlements(
        insurance_pb2.ListSettlementsRequest(page_size=100), timeout=10
    )
    [insurer_side] = [s for s in listing.settlements if s.order_ref == order.order_id]
    assert insurer_side.status == insurance_pb2.SETTLEMENT_STATUS_SETTLED
    assert insurer_side.setl_id == settled.setl_id
    assert insurer_side.breakdown.fund_pay_sumamt_fen == settled.split.fund_pay_sumamt_fen


async def test_self_pay_settles_and_refunds_in_full_once(mesh: MeshProcesses, stubs: Stubs) -> None:
    created = await stubs.payment.CreatePaymentOrder(self_pay_order_request(_his_no()), timeout=30)
    assert created.order.cash_due_fen == created.order.total_fen > 0
    settled = await pay_and_settle(mesh, stubs, created.order)
    refund = payment_pb2.RefundPaymentOrderRequest(
        request_id=uuid.uuid4().hex, order_id=settled.order_id, reason="patient left before the test"
    )
    refunded = await stubs.payment.RefundPaymentOrder(refund, timeout=30)
    assert refunded.refund.cash_fen == settled.cash_paid_fen
    again = payment_pb2.RefundPaymentOrderRequest(
        request_id=uuid.uuid4().hex, order_id=settled.order_id, reason="x"
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stubs.payment.RefundPaymentOrder(again, timeout=30)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_insured_refund_revokes_the_insurer_settlement(mesh: MeshProcesses, stubs: Stubs) -> None:
    created = await stubs.payment.CreatePaymentOrder(
        insured_order_request(PEOPLE[1], _his_no(), 5), timeout=30
    )
    settled = await pay_and_settle(mesh, stubs, created.order)
    refund = payment_pb2.RefundPaymentOrderRequest(
        request_id=uuid.uuid4().hex, order_id=settled.order_id, reason="wrong prescription"
    )
    refunded = await stubs.payment.RefundPaymentOrder(refund, timeout=30)
    assert refunded.order.status == Status.ORDER_STATUS_REFUNDED
    assert refunded.refund.cash_fen == settled.cash_paid_fen
    assert refunded.refund.fund_fen == settled.split.fund_pay_sumamt_fen
    listing = await stubs.insurance.ListSettlements(
        insurance_pb2.ListSettlementsRequest(page_size=100), timeout=10
    )
    [insurer_side] = [s for s in listing.settlements if s.order_ref == settled.order_id]
    assert insurer_side.status == insurance_pb2.SETTLEMENT_STATUS_REVOKED


async def test_an_insured_line_refund_re_settles_the_rest_through_the_mesh(
    mesh: MeshProcesses, stubs: Stubs
) -> None:
    created = await stubs.payment.CreatePaymentOrder(
        insured_order_request(PEOPLE[2], _his_no(), 4), timeout=30
    )
    settled = await pay_and_settle(mesh, stubs, created.order)
    gone = settled.items[-1]
    refund = payment_pb2.RefundPaymentOrderRequest(
        request_id=uuid.uuid4().hex, order_id=settled.order_id, reason="test cancelled", operator_id="C001",
        lines=[payment_pb2.RefundLine(line_no=gone.line_no)],
    )  # fmt: skip
    await stubs.payment.RefundPaymentOrder(refund, timeout=30)
    order = await wait_for_status(stubs, settled.order_id, Status.ORDER_STATUS_SETTLED)
    assert [r.stage for r in order.line_refunds] == [payment_pb2.LINE_REFUND_STAGE_RESETTLED]
    split = order.split
    assert split.medfee_sumamt_fen == settled.total_fen - gone.line_total_fen
    assert split.fund_pay_sumamt_fen + split.acct_pay_fen + split.psn_cash_pay_fen == split.medfee_sumamt_fen
    assert order.refunded_cash_fen == settled.cash_paid_fen - order.split.psn_cash_pay_fen
    assert order.refunded_cash_fen <= order.cash_paid_fen and order.setl_id != settled.setl_id
    listing = await stubs.insurance.ListSettlements(
        insurance_pb2.ListSettlementsRequest(page_size=100), timeout=10
    )
    mine = {s.setl_id: s.status for s in listing.settlements if s.order_ref == settled.order_id}
    assert mine == {
        settled.setl_id: insurance_pb2.SETTLEMENT_STATUS_REVOKED,
        order.setl_id: insurance_pb2.SETTLEMENT_STATUS_SETTLED,
    }


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda r: r.ClearField("items"), "items"),
        (lambda r: setattr(r.items[0], "line_total_fen", -5), "items[0].line_total_fen"),
        (lambda r: setattr(r.patient.voucher, "mdtrt_cert_no", ""), "patient.voucher.mdtrt_cert_no"),
        (lambda r: setattr(r, "his_order_no", ""), "his_order_no"),
        (lambda r: setattr(r, "request_id", "no spaces allowed"), "request_id"),
    ],
)
async def test_invalid_input_is_refused_with_the_field_named_and_nothing_stored(
    stubs: Stubs, mutate: object, field: str
) -> None:
    before = await stubs.payment.ListPaymentOrders(
        payment_pb2.ListPaymentOrdersRequest(page_size=500), timeout=10
    )
    request = insured_order_request(PEOPLE[2], _his_no())
    mutate(request)  # type: ignore[operator]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stubs.payment.CreatePaymentOrder(request, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in violated_fields(caught.value)
    assert PEOPLE[2].certno not in (caught.value.details() or "")
    after = await stubs.payment.ListPaymentOrders(
        payment_pb2.ListPaymentOrdersRequest(page_size=500), timeout=10
    )
    assert len(after.orders) == len(before.orders)


async def test_a_replayed_request_id_has_no_second_effect(mesh: MeshProcesses, stubs: Stubs) -> None:
    request = insured_order_request(PEOPLE[3], _his_no(), 2)
    first, second = await asyncio.gather(
        stubs.payment.CreatePaymentOrder(request, timeout=30),
        stubs.payment.CreatePaymentOrder(request, timeout=30),
        return_exceptions=True,
    )
    winners = [r for r in (first, second) if isinstance(r, payment_pb2.CreatePaymentOrderResponse)]
    assert winners, (first, second)
    replay = await stubs.payment.CreatePaymentOrder(request, timeout=30)
    assert all(w.order.order_id == replay.order.order_id for w in winners)
    messages = await stubs.insurance.ListInsurerMessages(
        insurance_pb2.ListInsurerMessagesRequest(
            page_size=100, infno="2206", order_ref=replay.order.order_id
        ),
        timeout=10,
    )
    assert len(messages.messages) == 1

    pay = payment_pb2.PayPaymentOrderRequest(
        request_id=uuid.uuid4().hex,
        order_id=replay.order.order_id,
        channel=payment_pb2.CHANNEL_WECHAT_PAY,
        method=payment_pb2.PAY_METHOD_NATIVE_QR,
    )
    paid_once = await stubs.payment.PayPaymentOrder(pay, timeout=30)
    paid_twice = await stubs.payment.PayPaymentOrder(pay, timeout=30)
    assert paid_once == paid_twice


async def test_a_reused_request_id_with_another_request_is_refused(stubs: Stubs) -> None:
    request = self_pay_order_request(_his_no())
    await stubs.payment.CreatePaymentOrder(request, timeout=30)
    request.his_order_no = _his_no()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stubs.payment.CreatePaymentOrder(request, timeout=30)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(caught.value) == "REQUEST_ID_REUSED"


async def test_a_duplicate_channel_notification_collects_once(mesh: MeshProcesses, stubs: Stubs) -> None:
    await arm_wechat_fault(mesh, "pay_notify", "duplicate")
    created = await stubs.payment.CreatePaymentOrder(
        insured_order_request(PEOPLE[4], _his_no(), 9), timeout=30
    )
    settled = await pay_and_settle(mesh, stubs, created.order)
    [payment] = settled.payments
    # payment-core answers a notification only once it has applied it: when the simulator has its
    # acknowledgement of the second delivery, the duplicate has been through payment-core.
    await wait_for_deliveries(
        mesh, payment.out_trade_no, lambda attempts: acknowledged(attempts, "TRANSACTION.SUCCESS") == [1, 2]
    )
    again = await stubs.payment.GetPaymentOrder(payment_pb2.GetPaymentOrderRequest(order_id=settled.order_id))
    succeeded = [p for p in again.order.payments if p.status == payment_pb2.PAYMENT_STATUS_SUCCEEDED]
    assert len(succeeded) == 1
    assert again.order.cash_paid_fen == again.order.cash_due_fen
    assert again.order.status == Status.ORDER_STATUS_SETTLED


async def test_a_refund_the_channel_finishes_later_completes_by_its_notification(
    mesh: MeshProcesses, stubs: Stubs
) -> None:
    """The real gateway's way: the refund answers PROCESSING; its REFUND.SUCCESS, sent to the
    notify_url payment-core gave with the refund, completes it (before the janitor's first query)."""
    created = await stubs.payment.CreatePaymentOrder(self_pay_order_request(_his_no(), 4), timeout=30)
    settled = await pay_and_settle(mesh, stubs, created.order)
    await arm_wechat_fault(mesh, "refund", "processing", delay_s=0.5)
    refund = payment_pb2.RefundPaymentOrderRequest(
        request_id=uuid.uuid4().hex, order_id=settled.order_id, reason="patient left before the test"
    )
    answered = await stubs.payment.RefundPaymentOrder(refund, timeout=30)
    assert answered.order.status == Status.ORDER_STATUS_REFUNDING
    assert answered.refund.status == payment_pb2.REFUND_STATUS_PROCESSING

    refunded = await wait_for_status(stubs, settled.order_id, Status.ORDER_STATUS_REFUNDED, timeout_s=20)
    [done] = refunded.refunds
    assert (done.status, done.cash_fen) == (payment_pb2.REFUND_STATUS_SUCCEEDED, settled.cash_paid_fen)
    [payment] = settled.payments
    attempts = await wait_for_deliveries(
        mesh, payment.out_trade_no, lambda found: acknowledged(found, "REFUND.SUCCESS") == [1]
    )
    assert {a["out_refund_no"] for a in attempts if a["event_type"] == "REFUND.SUCCESS"} == {
        done.out_refund_no
    }


async def test_the_data_platform_sees_every_settlement_once(mesh: MeshProcesses, stubs: Stubs) -> None:
    created = await stubs.payment.CreatePaymentOrder(
        insured_order_request(PEOPLE[5], _his_no(), 11), timeout=30
    )
    await pay_and_settle(mesh, stubs, created.order)
    today = business_date_of(utcnow()).isoformat()
    listing = await stubs.payment.ListPaymentOrders(
        payment_pb2.ListPaymentOrdersRequest(page_size=500, business_date=today), timeout=10
    )
    settled = [
        o for o in listing.orders if o.status in (Status.ORDER_STATUS_SETTLED, Status.ORDER_STATUS_REFUNDED)
    ]
    for _ in range(100):
        summary = (
            await stubs.data.GetDailySummary(data_pb2.GetDailySummaryRequest(business_date=today))
        ).summary
        if summary.settled_order_count >= len(settled):
            break
        await asyncio.sleep(0.1)
    assert summary.settled_order_count == len(settled)
    assert summary.billed_total_fen == sum(o.total_fen for o in settled)
    assert summary.billed_total_fen == summary.fund_fen + summary.personal_account_fen + summary.cash_fen
    times = await stubs.data.GetSettlementTimes(data_pb2.GetSettlementTimesRequest(business_date=today))
    overall = times.slices[0]
    assert overall.slice == "all" and overall.count == len(settled)
    assert 0 < overall.p50_ms <= overall.p90_ms <= overall.p99_ms <= overall.max_ms


async def test_reconciliation_finds_the_payment_whose_notification_was_lost(
    mesh: MeshProcesses, stubs: Stubs
) -> None:
    """The patient paid but the channel's notification never arrived (长款 until a query): the
    day's reconciliation must find exactly that payment and nothing else."""
    async with httpx.AsyncClient(timeout=10) as client:
        armed = await client.post(
            f"{mesh.layout.http_base('wechatpay-sim')}/sim/faults",
            json={"operation": "pay_notify", "mode": "lost", "count": 1},
        )
        armed.raise_for_status()
    created = await stubs.payment.CreatePaymentOrder(self_pay_order_request(_his_no(), 3), timeout=30)
    paid = await stubs.payment.PayPaymentOrder(
        payment_pb2.PayPaymentOrderRequest(
            request_id=uuid.uuid4().hex,
            order_id=created.order.order_id,
            channel=payment_pb2.CHANNEL_WECHAT_PAY,
            method=payment_pb2.PAY_METHOD_NATIVE_QR,
        ),
        timeout=30,
    )
    await patient_scans(mesh, paid.payment.out_trade_no)

    today = business_date_of(utcnow()).isoformat()
    run = (
        await stubs.reconciliation.RunReconciliation(
            reconciliation_pb2.RunReconciliationRequest(request_id=uuid.uuid4().hex, business_date=today),
            timeout=60,
        )
    ).run
    assert run.status == reconciliation_pb2.RUN_STATUS_COMPLETED, run.failure_reason
    found = await stubs.reconciliation.ListDiscrepancies(
        reconciliation_pb2.ListDiscrepanciesRequest(run_id=run.run_id, page_size=100), timeout=10
    )
    assert [d.out_trade_no for d in found.discrepancies] == [paid.payment.out_trade_no], [
        d.evidence for d in found.discrepancies
    ]
    [lost] = found.discrepancies
    assert lost.discrepancy_class in (
        reconciliation_pb2.DISCREPANCY_CLASS_CHANNEL_ONLY,
        reconciliation_pb2.DISCREPANCY_CLASS_STATUS_MISMATCH,
    )
    assert lost.source_amount_fen == created.order.total_fen
    assert run.matched_count > 0


async def test_two_cashiers_paying_one_order_at_once_get_one_payment(stubs: Stubs) -> None:
    """Concurrent PayPaymentOrder calls (different request_ids) share the one open attempt: one
    out_trade_no, one QR code, so the patient cannot be charged twice."""
    created = await stubs.payment.CreatePaymentOrder(self_pay_order_request(_his_no(), 6), timeout=30)

    def pay() -> payment_pb2.PayPaymentOrderRequest:
        return payment_pb2.PayPaymentOrderRequest(
            request_id=uuid.uuid4().hex,
            order_id=created.order.order_id,
            channel=payment_pb2.CHANNEL_WECHAT_PAY,
            method=payment_pb2.PAY_METHOD_NATIVE_QR,
        )

    outcomes = await asyncio.gather(*(stubs.payment.PayPaymentOrder(pay(), timeout=30) for _ in range(4)))
    assert len({o.payment.out_trade_no for o in outcomes}) == 1
    assert len({o.payment.code_url for o in outcomes}) == 1
    current = await stubs.payment.GetPaymentOrder(
        payment_pb2.GetPaymentOrderRequest(order_id=created.order.order_id)
    )
    assert len(current.order.payments) == 1


async def test_an_insured_share_paid_by_two_wechat_payments_settles_once_and_refunds_both(
    mesh: MeshProcesses, stubs: Stubs
) -> None:
    created = await stubs.payment.CreatePaymentOrder(
        insured_order_request(PEOPLE[2], _his_no(), 7), timeout=30
    )
    order = created.order
    assert order.cash_due_fen >= 2

    def pay(amount_fen: int) -> payment_pb2.PayPaymentOrderRequest:
        return payment_pb2.PayPaymentOrderRequest(
            request_id=uuid.uuid4().hex, order_id=order.order_id, channel=payment_pb2.CHANNEL_WECHAT_PAY,
            method=payment_pb2.PAY_METHOD_NATIVE_QR, amount_fen=amount_fen,
        )  # fmt: skip

    first = await stubs.payment.PayPaymentOrder(pay(order.cash_due_fen // 2), timeout=30)
    await patient_scans(mesh, first.payment.out_trade_no)
    partly = await wait_for_status(stubs, order.order_id, Status.ORDER_STATUS_AWAITING_PAYMENT)
    assert partly.cash_paid_fen == order.cash_due_fen // 2 and not partly.setl_id
    second = await stubs.payment.PayPaymentOrder(pay(0), timeout=30)
    assert second.payment.amount_fen == order.cash_due_fen - order.cash_due_fen // 2
    await patient_scans(mesh, second.payment.out_trade_no)
    settled = await wait_for_status(stubs, order.order_id, Status.ORDER_STATUS_SETTLED)
    assert settled.cash_paid_fen == settled.cash_due_fen and split_adds_up(settled)

    refund = payment_pb2.RefundPaymentOrderRequest(
        request_id=uuid.uuid4().hex, order_id=order.order_id, reason="wrong prescription"
    )
    await stubs.payment.RefundPaymentOrder(refund, timeout=30)
    refunded = await wait_for_status(stubs, order.order_id, Status.ORDER_STATUS_REFUNDED)
    assert sorted(r.payment_id for r in refunded.refunds) == sorted(p.payment_id for p in refunded.payments)
    assert refunded.refunded_cash_fen == refunded.cash_paid_fen
    listing = await stubs.insurance.ListSettlements(
        insurance_pb2.ListSettlementsRequest(page_size=100), timeout=10
    )
    [insurer_side] = [s for s in listing.settlements if s.order_ref == order.order_id]
    assert insurer_side.status == insurance_pb2.SETTLEMENT_STATUS_REVOKED
