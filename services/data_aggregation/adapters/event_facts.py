"""Event envelopes (medpay.events.v1) -> the facts this platform keeps. Exhaustive over the payload
cases it uses; every other case is ingested without a fact so the cursor can move past it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import TypeAlias

from google.protobuf.timestamp_pb2 import Timestamp
from medpay.common.v1 import common_pb2
from medpay.events.v1 import events_pb2

from services.data_aggregation.domain.facts import (
    Fact,
    FeedEvent,
    InsuranceRevocation,
    InsuranceSettlementFact,
    OrderRefund,
    ReconciliationRunFact,
    SettledOrder,
)
from services.runtime.clock import business_date_of
from services.runtime.money import Money

log = logging.getLogger(__name__)
Envelope: TypeAlias = events_pb2.EventEnvelope


def feed_event(source_service: str, envelope: Envelope) -> FeedEvent:
    # An envelope without an id cannot be deduplicated by id; its feed position stands in.
    event_id = envelope.event_id or f"{source_service}#{envelope.sequence}"
    case = envelope.WhichOneof("payload") or ""
    return FeedEvent(event_id, envelope.sequence, envelope.event_type or case, fact_of(envelope))


def fact_of(envelope: Envelope) -> Fact | None:
    reader = _READERS.get(envelope.WhichOneof("payload") or "")
    return reader(envelope) if reader is not None else None


def _settled_order(envelope: Envelope) -> Fact | None:
    settled = envelope.payment_order_settled
    if not (settled.HasField("created_at") and settled.HasField("settled_at")):
        log.warning(
            "PaymentOrderSettled %s of order %s has no times; not kept", envelope.event_id, settled.order_id
        )
        return None
    settled_at = _moment(settled.settled_at)
    return SettledOrder(
        order_id=settled.order_id, scene=settled.scene, channel=settled.channel,
        campus_code=settled.campus_code, dept_code=settled.dept_code, insutype=settled.insutype,
        total=Money(settled.total_fen), fund=Money(settled.fund_fen),
        personal_account=Money(settled.personal_account_fen), cash=Money(settled.cash_fen),
        created_at=_moment(settled.created_at), settled_at=settled_at,
        business_date=_day(settled.business_date) or business_date_of(settled_at),
    )  # fmt: skip


def _refund(envelope: Envelope) -> Fact:
    refund = envelope.refund_succeeded
    return OrderRefund(
        refund_id=refund.refund_id, order_id=refund.order_id, channel=refund.channel,
        cash=Money(refund.cash_fen), fund=Money(refund.fund_fen),
        personal_account=Money(refund.personal_account_fen),
        business_date=_day(refund.business_date) or business_date_of(_moment(envelope.occurred_at)),
    )  # fmt: skip


def _insurance_settled(envelope: Envelope) -> Fact:
    settled = envelope.insurance_settled
    split: common_pb2.SettlementBreakdown = settled.breakdown
    return InsuranceSettlementFact(
        settlement_id=settled.settlement_id, setl_id=settled.setl_id, order_ref=settled.order_ref,
        insutype=settled.insutype, med_type=settled.med_type, medfee=Money(split.medfee_sumamt_fen),
        fund=Money(split.fund_pay_sumamt_fen), personal_account=Money(split.acct_pay_fen),
        cash=Money(split.psn_cash_pay_fen),
    )  # fmt: skip


def _insurance_revoked(envelope: Envelope) -> Fact:
    return InsuranceRevocation(settlement_id=envelope.insurance_settlement_revoked.settlement_id)


def _reconciliation_completed(envelope: Envelope) -> Fact | None:
    completed = envelope.reconciliation_completed
    day = _day(completed.business_date)
    if day is None:
        log.warning("ReconciliationCompleted %s has no business date; not kept", envelope.event_id)
        return None
    return ReconciliationRunFact(completed.run_id, day, completed.matched_count, completed.discrepancy_count)


_READERS: dict[str, Callable[[Envelope], Fact | None]] = {
    "payment_order_settled": _settled_order,
    "refund_succeeded": _refund,
    "insurance_settled": _insurance_settled,
    "insurance_settlement_revoked": _insurance_revoked,
    "reconciliation_completed": _reconciliation_completed,
}


def _moment(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


def _day(text: str) -> date | None:
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None
