"""The `medpay` CLI against in-process services (a threaded grpc server, since the CLI runs its own
event loop): what it shows, what it never shows, and its exit codes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2_grpc
from grpc_status import rpc_status
from medpay.cli import app
from medpay.common.v1 import common_pb2
from medpay.data.v1 import data_pb2, data_pb2_grpc
from medpay.payment.v1 import payment_pb2, payment_pb2_grpc
from typer.testing import CliRunner

CERTNO = "350102198805123411"
NAME = "林志强"


def _order() -> payment_pb2.PaymentOrder:
    voucher = common_pb2.PatientVoucher(mdtrt_cert_type="02", mdtrt_cert_no=CERTNO, psn_name=NAME)
    item = common_pb2.ChargeItem(
        line_no="1", hospital_code="YP0002", name="当归（饮片）", quantity_ten_thousandths=15_000,
        unit_price_fen=350, line_total_fen=525,
    )  # fmt: skip
    return payment_pb2.PaymentOrder(
        order_id="ord_1",
        his_order_no="MZ0001",
        status=payment_pb2.ORDER_STATUS_SETTLED,
        patient=common_pb2.Patient(
            his_patient_id="HIS0000007", voucher=voucher, masked_cert_no="3501**********3411"
        ),
        items=[item],
        total_fen=1_250,
        insured=True,
        insutype="310",
        split=common_pb2.SettlementBreakdown(fund_pay_sumamt_fen=700, acct_pay_fen=300),
        cash_due_fen=250,
        cash_paid_fen=250,
    )


class Payments(payment_pb2_grpc.PaymentServiceServicer):
    def GetPaymentOrder(self, request, context):  # type: ignore[no-untyped-def]
        return payment_pb2.GetPaymentOrderResponse(order=_order())

    def WatchPaymentOrder(self, request, context):  # type: ignore[no-untyped-def]
        """ord_1 goes from awaiting payment to settled; any other order stays PAYING."""
        order = _order()
        steps = [payment_pb2.ORDER_STATUS_AWAITING_PAYMENT, payment_pb2.ORDER_STATUS_PAYING]
        for status in steps if request.order_id == "ord_1" else steps[1:]:
            order.status = status
            yield payment_pb2.WatchPaymentOrderResponse(order=order)
        if request.order_id == "ord_1":
            yield payment_pb2.WatchPaymentOrderResponse(order=_order())
            return
        ended = threading.Event()
        context.add_callback(ended.set)  # the caller's deadline ends the call
        ended.wait(10)

    def RefundPaymentOrder(self, request, context):  # type: ignore[no-untyped-def]
        violation = error_details_pb2.BadRequest.FieldViolation(
            field="reason", description="required [audit]"
        )
        details = [any_pb2.Any(), any_pb2.Any()]
        details[0].Pack(error_details_pb2.ErrorInfo(reason="FIELD_INVALID", domain="medpay.mesh"))
        details[1].Pack(error_details_pb2.BadRequest(field_violations=[violation]))
        status = status_pb2.Status(
            code=code_pb2.INVALID_ARGUMENT, message="invalid argument: reason", details=details
        )
        context.abort_with_status(rpc_status.to_status(status))

    def CloseCashierShift(self, request, context):  # type: ignore[no-untyped-def]
        """Echoes what it was asked in the shift id, so a test sees what the CLI sent."""
        cash = payment_pb2.ShiftChannelTotal(
            channel=payment_pb2.CHANNEL_CASH, payment_count=2, collected_fen=14_500,
            refund_count=1, refunded_fen=12_500,
        )  # fmt: skip
        pos = payment_pb2.ShiftChannelTotal(
            channel=payment_pb2.CHANNEL_POS, payment_count=1, collected_fen=30_000
        )
        return payment_pb2.CloseCashierShiftResponse(
            shift_id=f"{request.campus_code}@{request.closed_at}", cashier_id=request.cashier_id,
            totals=[cash, pos], cash_to_hand_over_fen=2_000,
        )  # fmt: skip


class Data(data_pb2_grpc.DataAggregationServiceServicer):
    def GetDailySummary(self, request, context):  # type: ignore[no-untyped-def]
        summary = data_pb2.DailySummary(
            business_date=request.business_date, settled_order_count=2, billed_total_fen=10_000,
            fund_fen=6_000, personal_account_fen=1_000, cash_fen=3_000,
        )  # fmt: skip
        return data_pb2.GetDailySummaryResponse(summary=summary)

    def GetSettlementTimes(self, request, context):  # type: ignore[no-untyped-def]
        all_orders = data_pb2.SettlementTimes(slice="all", count=2, p50_ms=840, p90_ms=1_200, p99_ms=1_900)
        return data_pb2.GetSettlementTimesResponse(slices=[all_orders])


@pytest.fixture
def mesh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    payment_pb2_grpc.add_PaymentServiceServicer_to_server(Payments(), server)
    data_pb2_grpc.add_DataAggregationServiceServicer_to_server(Data(), server)
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    for variable in (
        "MEDPAY_PAYMENT_CORE_ADDR",
        "MEDPAY_DATA_AGGREGATION_ADDR",
        "MEDPAY_INSURANCE_ADAPTER_ADDR",
    ):
        monkeypatch.setenv(variable, f"127.0.0.1:{port}")
    monkeypatch.setenv("MEDPAY_RECONCILIATION_ADDR", "127.0.0.1:1")  # nobody there
    monkeypatch.setenv("COLUMNS", "200")
    yield
    server.stop(None)


def _run(*arguments: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(arguments))
    return result.exit_code, result.output


def test_order_get_shows_yuan_and_never_the_patient_in_clear(mesh: None) -> None:
    code, output = _run("order", "get", "ord_1")
    assert code == 0, output
    assert "MZ0001" in output and "SETTLED" in output
    assert "12.50" in output and "7.00" in output and "3.00" in output and "2.50" in output
    assert "3501**********3411" in output and "1.5" in output
    assert CERTNO not in output and NAME not in output


def test_order_watch_prints_each_change_until_settled(mesh: None) -> None:
    code, output = _run("order", "watch", "ord_1")
    assert code == 0, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert [line.split()[1] for line in lines] == ["AWAITING_PAYMENT", "PAYING", "SETTLED"]
    assert "cash 2.50 of 2.50" in lines[-1]
    assert CERTNO not in output and NAME not in output


def test_order_watch_exits_1_when_the_order_is_not_final_in_time(mesh: None) -> None:
    code, output = _run("order", "watch", "ord_slow", "--timeout", "0.5")
    assert code == 1
    assert "PAYING" in output and "still PAYING after 0.5s" in output


def test_a_refused_refund_exits_1_with_the_field_named(mesh: None) -> None:
    code, output = _run("order", "refund", "ord_1", "--reason", "")
    assert code == 1
    assert "INVALID_ARGUMENT FIELD_INVALID" in output
    assert "reason: required [audit]" in output


def test_summary_prints_the_check(mesh: None) -> None:
    code, output = _run("summary", "2025-01-01")
    assert code == 0, output
    assert "60.00 + personal account 10.00 + cash 30.00 = 100.00" in output
    assert "adds up" in output


def test_times_and_bad_dates(mesh: None) -> None:
    code, output = _run("times", "today")
    assert code == 0 and "840" in output and "1900" in output
    code, _ = _run("times", "2025-13-01")
    assert code == 2


def test_health_exits_1_when_a_service_is_down(mesh: None) -> None:
    code, output = _run("health")
    assert code == 1
    assert output.count("SERVING") == 3
    assert "reconciliation" in output and "UNREACHABLE" in output


def test_shift_close_prints_the_totals_and_the_cash_to_hand_over(mesh: None) -> None:
    code, output = _run("shift", "close", "C001", "--campus", "FZ900", "--at", "2026-12-02T18:00:00+08:00")
    assert code == 0, output
    assert "FZ900@2026-12-02T18:00:00+08:00" in output and "C001" in output
    assert "CASH" in output and "145.00" in output and "125.00" in output and "300.00" in output
    assert "cash to hand over: 20.00" in output
