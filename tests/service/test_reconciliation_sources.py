"""reconciliation's gRPC sources against stand-in payment-core and insurance-adapter servers: paging
through ExportTransactions, 3201 per insurance type with a derived request_id, and a dead peer
turning into a FAILED run rather than an error."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import grpc
import pytest
from medpay.insurance.v1 import insurance_pb2, insurance_pb2_grpc
from medpay.payment.v1 import payment_pb2, payment_pb2_grpc
from medpay.reconciliation.v1 import reconciliation_pb2 as pb
from medpay.reconciliation.v1 import reconciliation_pb2_grpc

from services.reconciliation.adapters.in_memory import InMemoryChannelBills
from services.reconciliation.bootstrap import build
from services.reconciliation.config import ReconciliationSettings
from services.reconciliation.domain.model import ChannelBillLine, TransactionKind
from services.runtime.money import Money
from services.runtime.server import build_server

DAY = date(2025, 3, 14)
Tx = payment_pb2.Transaction


@dataclass
class StandInPaymentCore(payment_pb2_grpc.PaymentServiceServicer):
    """ExportTransactions of a fixed day, two rows per page."""

    rows: list[payment_pb2.Transaction]
    asked: list[tuple[str, str]] = field(default_factory=list)

    async def ExportTransactions(self, request: Any, context: Any) -> payment_pb2.ExportTransactionsResponse:
        self.asked.append((request.business_date, request.page_token))
        start = int(request.page_token or 0)
        following = str(start + 2) if start + 2 < len(self.rows) else ""
        return payment_pb2.ExportTransactionsResponse(
            transactions=self.rows[start : start + 2], next_page_token=following
        )


@dataclass
class StandInInsurer(insurance_pb2_grpc.InsuranceServiceServicer):
    requests: list[insurance_pb2.ReconcileTotalsRequest] = field(default_factory=list)

    async def ReconcileTotals(self, request: Any, context: Any) -> insurance_pb2.ReconcileTotalsResponse:
        self.requests.append(request)
        statement = insurance_pb2.TotalsStatement(
            insutype=request.insutype, clr_type=request.clr_type, medfee_sumamt_fen=10_000,
            fund_pay_sumamt_fen=6_300, acct_pay_fen=1_600, settlement_count=1, stmt_rslt="0", balanced=True,
        )  # fmt: skip
        return insurance_pb2.ReconcileTotalsResponse(statement=statement)


def tx(kind: Any, key: str, fen: int, status: str, insutype: str = "") -> payment_pb2.Transaction:
    """An exported row; an insured payment carries the split the stand-in insurer reports."""
    refund = kind == Tx.KIND_REFUND
    row = Tx(
        kind=kind, order_id=f"ord_{key}", channel=payment_pb2.CHANNEL_WECHAT_PAY,
        out_trade_no=f"pay_{key}", out_refund_no=f"rf_{key}" if refund else "", amount_fen=fen, status=status,
        insutype=insutype,
    )  # fmt: skip
    if insutype and not refund:
        row.setl_id, row.medfee_fen, row.fund_fen, row.personal_account_fen = f"S-{key}", 10_000, 6_300, 1_600
    return row


def line(kind: TransactionKind, key: str, fen: int) -> ChannelBillLine:
    refund = kind is TransactionKind.REFUND
    return ChannelBillLine(
        kind=kind, out_trade_no=f"pay_{key}", out_refund_no=f"rf_{key}" if refund else "",
        channel_transaction_id="4200", channel_refund_id="", status="SUCCEEDED", amount=Money(fen),
        traded_at="2025-03-14 10:00:00",
    )  # fmt: skip


@pytest.fixture
async def peers() -> AsyncIterator[tuple[int, StandInPaymentCore, StandInInsurer]]:
    """Both stand-ins on one loopback port (the mesh would put them on two)."""
    payment_core = StandInPaymentCore([
        tx(Tx.KIND_PAYMENT, "a", 12_500, "PAYMENT_STATUS_SUCCEEDED"),
        tx(Tx.KIND_PAYMENT, "b", 2_100, "PAYMENT_STATUS_SUCCEEDED", insutype="310"),
        tx(Tx.KIND_REFUND, "a", 12_500, "REFUND_STATUS_SUCCEEDED"),
        tx(Tx.KIND_PAYMENT, "c", 800, "PAYMENT_STATUS_CLOSED"),
        tx(Tx.KIND_PAYMENT, "d", 3_000, "PAYMENT_STATUS_SUCCEEDED", insutype="390"),
    ])  # fmt: skip
    insurer = StandInInsurer()
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    payment_pb2_grpc.add_PaymentServiceServicer_to_server(payment_core, server)
    insurance_pb2_grpc.add_InsuranceServiceServicer_to_server(insurer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield port, payment_core, insurer
    await server.stop(None)


async def reconcile(settings: ReconciliationSettings, bills: InMemoryChannelBills) -> pb.ReconciliationRun:
    app = build(settings, channel_bills=bills)
    await app.db.migrate()
    server = build_server()
    app.register(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = reconciliation_pb2_grpc.ReconciliationServiceStub(channel)
            request = pb.RunReconciliationRequest(request_id="rcn-grpc-1", business_date=DAY.isoformat())
            return (await stub.RunReconciliation(request, timeout=10)).run  # type: ignore[no-any-return]
    finally:
        await server.stop(None)
        await app.close()


def settings_for(tmp_path: Path, port: int) -> ReconciliationSettings:
    return ReconciliationSettings(
        database_url=None, data_dir=tmp_path / "data", trace_dir=tmp_path / "traces",
        payment_core_port=port, insurance_adapter_port=port, reconciliation_export_page_size=2,
    )  # fmt: skip


async def test_pages_of_the_platform_and_3201_per_insurance_type_reconcile_cleanly(
    tmp_path: Path, peers: tuple[int, StandInPaymentCore, StandInInsurer]
) -> None:
    port, payment_core, insurer = peers
    bills = InMemoryChannelBills()
    bills.record(DAY, [
        line(TransactionKind.PAYMENT, "a", 12_500), line(TransactionKind.PAYMENT, "b", 2_100),
        line(TransactionKind.REFUND, "a", 12_500), line(TransactionKind.PAYMENT, "d", 3_000),
    ])  # fmt: skip

    run = await reconcile(settings_for(tmp_path, port), bills)

    assert (run.status, run.matched_count, run.discrepancy_count) == (pb.RUN_STATUS_COMPLETED, 4, 0)
    assert payment_core.asked == [("2025-03-14", ""), ("2025-03-14", "2"), ("2025-03-14", "4")]
    assert [(request.insutype, request.clr_type) for request in insurer.requests] == [
        ("310", "11"),
        ("390", "11"),
    ]
    assert [request.request_id for request in insurer.requests] == [
        f"{run.run_id}-3201-310",
        f"{run.run_id}-3201-390",
    ]
    insurer_totals = [item for item in run.totals if item.source.startswith("insurer:")]
    assert [(item.source, item.payment_fen) for item in insurer_totals] == [
        ("insurer:310", 7_900),
        ("insurer:390", 7_900),
    ]


async def test_a_dead_payment_core_fails_the_run_with_the_reason(tmp_path: Path) -> None:
    server = grpc.aio.server()
    port = server.add_insecure_port("127.0.0.1:0")  # bound, then gone: nobody answers there
    await server.start()
    await server.stop(None)

    run = await reconcile(settings_for(tmp_path, port), InMemoryChannelBills())

    assert run.status == pb.RUN_STATUS_FAILED
    assert run.failure_reason.startswith("platform: payment-core ExportTransactions UNAVAILABLE")
    assert list(run.totals) == []
