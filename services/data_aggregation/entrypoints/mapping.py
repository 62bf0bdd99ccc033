"""Domain -> proto for data-aggregation's answers."""

from __future__ import annotations

from medpay.data.v1 import data_pb2 as pb

from services.data_aggregation.domain.facts import FeedCursor
from services.data_aggregation.domain.percentiles import SettlementTimes
from services.data_aggregation.domain.summary import Breakdown, DailySummary


def summary_to_proto(summary: DailySummary) -> pb.DailySummary:
    settled, refunds = summary.settled, summary.refunds
    return pb.DailySummary(
        business_date=summary.business_date.isoformat(),
        settled_order_count=settled.order_count,
        billed_total_fen=settled.billed_total.fen,
        fund_fen=settled.fund.fen,
        personal_account_fen=settled.personal_account.fen,
        cash_fen=settled.cash.fen,
        refund_count=refunds.refund_count,
        refunded_total_fen=refunds.refunded_total.fen,
        refunded_fund_fen=refunds.fund.fen,
        refunded_personal_account_fen=refunds.personal_account.fen,
        refunded_cash_fen=refunds.cash.fen,
        by_scene=[breakdown_to_proto(item) for item in summary.by_scene],
        by_channel=[breakdown_to_proto(item) for item in summary.by_channel],
        by_insutype=[breakdown_to_proto(item) for item in summary.by_insutype],
        by_dept=[breakdown_to_proto(item) for item in summary.by_dept],
    )


def breakdown_to_proto(breakdown: Breakdown) -> pb.AmountBreakdown:
    return pb.AmountBreakdown(
        key=breakdown.key,
        order_count=breakdown.order_count,
        total_fen=breakdown.billed_total.fen,
        fund_fen=breakdown.fund.fen,
        personal_account_fen=breakdown.personal_account.fen,
        cash_fen=breakdown.cash.fen,
    )


def times_to_proto(times: SettlementTimes) -> pb.SettlementTimes:
    return pb.SettlementTimes(
        slice=times.slice,
        count=times.count,
        p50_ms=times.p50_ms,
        p90_ms=times.p90_ms,
        p99_ms=times.p99_ms,
        max_ms=times.max_ms,
    )


def cursor_to_proto(cursor: FeedCursor) -> pb.SourceCursor:
    return pb.SourceCursor(
        source_service=cursor.source_service, cursor=cursor.cursor, events_ingested=cursor.events_ingested
    )
