"""The event reconciliation publishes through its outbox."""

from __future__ import annotations

from medpay.events.v1 import events_pb2

from services.reconciliation.domain.model import ReconciliationRun
from services.runtime.outbox import new_envelope

SERVICE_NAME = "reconciliation"


def reconciliation_completed(run: ReconciliationRun) -> events_pb2.EventEnvelope:
    envelope = new_envelope(SERVICE_NAME, "reconciliation_run", run.run_id, occurred_at=run.finished_at)
    envelope.reconciliation_completed.CopyFrom(
        events_pb2.ReconciliationCompleted(
            run_id=run.run_id,
            business_date=run.business_date.isoformat(),
            matched_count=run.matched_count,
            discrepancy_count=run.discrepancy_count,
        )
    )
    return envelope
