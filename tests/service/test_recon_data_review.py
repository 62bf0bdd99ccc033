"""Review findings in reconciliation: each test showed one bug before its fix. The stand-in peers
and helpers come from the service tests of the reconciliation sources."""

from __future__ import annotations

from pathlib import Path

from medpay.reconciliation.v1 import reconciliation_pb2 as pb

from services.reconciliation.adapters.in_memory import InMemoryChannelBills
from services.reconciliation.domain.model import TransactionKind
from tests.service.test_reconciliation_sources import (
    DAY,
    StandInInsurer,
    StandInPaymentCore,
    Tx,
    line,
    peers,  # noqa: F401  (the stand-in payment-core + insurer fixture)
    reconcile,
    settings_for,
    tx,
)


def _the_stand_in_days_bill() -> InMemoryChannelBills:
    bills = InMemoryChannelBills()
    bills.record(DAY, [
        line(TransactionKind.PAYMENT, "a", 12_500), line(TransactionKind.PAYMENT, "b", 2_100),
        line(TransactionKind.REFUND, "a", 12_500), line(TransactionKind.PAYMENT, "d", 3_000),
    ])  # fmt: skip
    return bills


def _with_split(row: Tx, setl_id: str) -> Tx:
    row.setl_id, row.medfee_fen, row.fund_fen, row.personal_account_fen = setl_id, 10_000, 6_300, 1_600
    return row


async def test_a_platform_row_on_a_channel_this_build_does_not_know_does_not_crash_the_run(
    tmp_path: Path,
    peers: tuple[int, StandInPaymentCore, StandInInsurer],  # noqa: F811
) -> None:
    port, payment_core, _ = peers
    newer = tx(Tx.KIND_PAYMENT, "e", 700, "PAYMENT_STATUS_SUCCEEDED")
    newer.channel = 42  # type: ignore[assignment]  # a channel added to payment.proto later (open enum)
    payment_core.rows.append(newer)

    # Before the fix: RunReconciliation answered INTERNAL and the run stayed RUNNING forever.
    run = await reconcile(settings_for(tmp_path, port), _the_stand_in_days_bill())

    assert run.status == pb.RUN_STATUS_COMPLETED
    assert run.discrepancy_count == 0  # the WeChat side is untouched by a row on another channel


async def test_a_platform_settlement_the_insurer_totals_do_not_hold_is_a_discrepancy(
    tmp_path: Path,
    peers: tuple[int, StandInPaymentCore, StandInInsurer],  # noqa: F811
) -> None:
    port, payment_core, _ = peers
    # Every 310 settlement of the day as payment-core exports it, with its insurer split.
    for row in payment_core.rows:
        if row.insutype == "310":
            _with_split(row, "S-b")
    payment_core.rows.append(
        _with_split(tx(Tx.KIND_PAYMENT, "f", 2_100, "PAYMENT_STATUS_SUCCEEDED", "310"), "S-f")
    )
    bills = _the_stand_in_days_bill()
    bills.record(DAY, [line(TransactionKind.PAYMENT, "f", 2_100)])

    # The insurer (stand-in) answers for 310: 1 settlement, medfee 100.00, fund 63.00, account 16.00.
    run = await reconcile(settings_for(tmp_path, port), bills)

    assert run.status == pb.RUN_STATUS_COMPLETED
    totals = {item.source: item for item in run.totals}
    assert totals["insurer:310"].payment_count == 1  # the insurer holds one settlement...
    # ...the platform settled two (fund 126.00) with 310 that day, and the run must say so.
    assert run.discrepancy_count >= 1
