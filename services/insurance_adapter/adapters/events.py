"""Domain events of the insurance-adapter as the standard's envelopes (medpay.events.v1)."""

from __future__ import annotations

from medpay.events.v1 import events_pb2

from services.insurance_adapter.domain.settlement import Settlement
from services.insurance_adapter.entrypoints.mapping import breakdown_to_proto
from services.runtime.outbox import new_envelope

SOURCE_SERVICE = "insurance-adapter"
AGGREGATE_TYPE = "insurance_settlement"


def settled_event(settlement: Settlement) -> events_pb2.EventEnvelope:
    """InsuranceSettled: the insurer's split of a settled bill (no patient identifier in it)."""
    envelope = new_envelope(SOURCE_SERVICE, AGGREGATE_TYPE, settlement.settlement_id, settlement.settled_at)
    payload = envelope.insurance_settled
    payload.settlement_id = settlement.settlement_id
    payload.setl_id = settlement.setl_id
    payload.order_ref = settlement.order_ref
    payload.insutype = settlement.visit.insutype
    payload.med_type = settlement.visit.med_type
    if settlement.breakdown is not None:
        payload.breakdown.CopyFrom(breakdown_to_proto(settlement.breakdown))
    return envelope


def revoked_event(settlement: Settlement) -> events_pb2.EventEnvelope:
    """InsuranceSettlementRevoked, carrying the (positive) split that was revoked."""
    envelope = new_envelope(SOURCE_SERVICE, AGGREGATE_TYPE, settlement.settlement_id, settlement.revoked_at)
    payload = envelope.insurance_settlement_revoked
    payload.settlement_id = settlement.settlement_id
    payload.setl_id = settlement.setl_id
    payload.order_ref = settlement.order_ref
    if settlement.breakdown is not None:
        payload.breakdown.CopyFrom(breakdown_to_proto(settlement.breakdown))
    return envelope
