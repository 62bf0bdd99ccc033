"""Domain <-> proto for reconciliation. Exhaustive maps: a new enum member fails here, loudly."""

from __future__ import annotations

from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp
from medpay.reconciliation.v1 import reconciliation_pb2 as pb

from services.reconciliation.domain.model import (
    DiscrepancyClass,
    DiscrepancyStatus,
    ReconciliationRun,
    RecordedDiscrepancy,
    RunStatus,
    SourceTotals,
)

_RUN_STATUS = {
    RunStatus.RUNNING: pb.RUN_STATUS_RUNNING,
    RunStatus.COMPLETED: pb.RUN_STATUS_COMPLETED,
    RunStatus.FAILED: pb.RUN_STATUS_FAILED,
}
_CLASS = {
    DiscrepancyClass.CHANNEL_ONLY: pb.DISCREPANCY_CLASS_CHANNEL_ONLY,
    DiscrepancyClass.PLATFORM_ONLY: pb.DISCREPANCY_CLASS_PLATFORM_ONLY,
    DiscrepancyClass.AMOUNT_MISMATCH: pb.DISCREPANCY_CLASS_AMOUNT_MISMATCH,
    DiscrepancyClass.STATUS_MISMATCH: pb.DISCREPANCY_CLASS_STATUS_MISMATCH,
    DiscrepancyClass.DUPLICATE: pb.DISCREPANCY_CLASS_DUPLICATE,
    DiscrepancyClass.INSURER_TOTALS_MISMATCH: pb.DISCREPANCY_CLASS_INSURER_TOTALS_MISMATCH,
}
_CLASS_FROM_PROTO = {value: member for member, value in _CLASS.items()}
_DISCREPANCY_STATUS = {
    DiscrepancyStatus.OPEN: pb.DISCREPANCY_STATUS_OPEN,
    DiscrepancyStatus.RESOLVED: pb.DISCREPANCY_STATUS_RESOLVED,
}


def timestamp(moment: datetime | None) -> Timestamp | None:
    if moment is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def run_to_proto(run: ReconciliationRun) -> pb.ReconciliationRun:
    return pb.ReconciliationRun(
        run_id=run.run_id,
        business_date=run.business_date.isoformat(),
        status=_RUN_STATUS[run.status],
        matched_count=run.matched_count,
        discrepancy_count=run.discrepancy_count,
        totals=[totals_to_proto(totals) for totals in run.totals],
        started_at=timestamp(run.started_at),
        finished_at=timestamp(run.finished_at),
        failure_reason=run.failure_reason,
    )


def totals_to_proto(totals: SourceTotals) -> pb.SourceTotals:
    return pb.SourceTotals(
        source=totals.source,
        payment_count=totals.payment_count,
        payment_fen=totals.payment.fen,
        refund_count=totals.refund_count,
        refund_fen=totals.refund.fen,
    )


def discrepancy_to_proto(recorded: RecordedDiscrepancy) -> pb.Discrepancy:
    finding = recorded.finding
    return pb.Discrepancy(
        discrepancy_id=recorded.discrepancy_id,
        run_id=recorded.run_id,
        discrepancy_class=_CLASS[finding.discrepancy_class],
        status=_DISCREPANCY_STATUS[recorded.status],
        source=finding.source,
        out_trade_no=finding.out_trade_no,
        out_refund_no=finding.out_refund_no,
        order_id=finding.order_id,
        platform_amount_fen=finding.platform_amount.fen,
        source_amount_fen=finding.source_amount.fen,
        evidence=finding.evidence,
        found_at=timestamp(recorded.found_at),
    )


def class_from_proto(value: pb.DiscrepancyClass.ValueType) -> DiscrepancyClass | None:
    """UNSPECIFIED means "every class"; an unknown number is the caller's mistake (KeyError)."""
    if value == pb.DISCREPANCY_CLASS_UNSPECIFIED:
        return None
    return _CLASS_FROM_PROTO[value]
