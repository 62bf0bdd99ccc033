"""Domain events of payment-core (medpay.events.v1), built from the aggregate. Patient identifiers
never appear in them: an event carries ids, codes and amounts only."""

from __future__ import annotations

from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp
from medpay.events.v1 import events_pb2

from services.payment_core.domain.model import Payment, Refund
from services.payment_core.domain.order import PaymentOrder
from services.runtime.clock import business_date_of
from services.runtime.money import Money
from services.runtime.outbox import new_envelope

SOURCE = "payment-core"
AGGREGATE = "payment_order"


def _envelope(order: PaymentOrder, occurred_at: datetime | None = None) -> events_pb2.EventEnvelope:
    return new_envelope(SOURCE, AGGREGATE, order.order_id, occurred_at)


def _stamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def order_created(order: PaymentOrder) -> events_pb2.EventEnvelope:
    envelope = _envelope(order, order.created_at)
    envelope.payment_order_created.CopyFrom(
        events_pb2.PaymentOrderCreated(
            order_id=order.order_id,
            his_order_no=order.his_order_no,
            scene=order.scene,
            campus_code=order.campus_code,
            dept_code=order.dept_code,
            total_fen=order.total.fen,
            insured=order.insured,
            insutype=order.insutype,
        )
    )
    return envelope


def payment_succeeded(order: PaymentOrder, payment: Payment) -> events_pb2.EventEnvelope:
    envelope = _envelope(order, payment.succeeded_at)
    envelope.payment_succeeded.CopyFrom(
        events_pb2.PaymentSucceeded(
            order_id=order.order_id,
            payment_id=payment.payment_id,
            channel=payment.channel,
            amount_fen=payment.amount.fen,
            channel_transaction_id=payment.channel_transaction_id,
        )
    )
    return envelope


def order_settled(order: PaymentOrder) -> events_pb2.EventEnvelope:
    """The split adds up to the total: the hospital-borne share (医院负担, rare in outpatient care)
    rides with the fund here; the ledger keeps the two apart. An order paid through several
    channels names the first one here (the payment_succeeded events carry each channel)."""
    assert order.settled_at is not None
    cash = order.cash_kept
    account = order.split.acct_pay if order.split else Money(0)
    envelope = _envelope(order, order.settled_at)
    envelope.payment_order_settled.CopyFrom(
        events_pb2.PaymentOrderSettled(
            order_id=order.order_id,
            scene=order.scene,
            channel=order.settlement_channel,
            campus_code=order.campus_code,
            dept_code=order.dept_code,
            insutype=order.insutype,
            total_fen=order.total.fen,
            fund_fen=(order.total - account - cash).fen,
            personal_account_fen=account.fen,
            cash_fen=cash.fen,
            created_at=_stamp(order.created_at),
            settled_at=_stamp(order.settled_at),
            business_date=business_date_of(order.settled_at).isoformat(),
        )
    )
    return envelope


def order_closed(order: PaymentOrder, reason: str) -> events_pb2.EventEnvelope:
    envelope = _envelope(order)
    envelope.payment_order_closed.CopyFrom(
        events_pb2.PaymentOrderClosed(order_id=order.order_id, reason=reason)
    )
    return envelope


def refund_succeeded(order: PaymentOrder, refund: Refund, channel: str) -> events_pb2.EventEnvelope:
    assert refund.succeeded_at is not None
    envelope = _envelope(order, refund.succeeded_at)
    envelope.refund_succeeded.CopyFrom(
        events_pb2.RefundSucceeded(
            order_id=order.order_id,
            refund_id=refund.refund_id,
            channel=channel,
            cash_fen=refund.cash.fen,
            fund_fen=refund.fund.fen,
            personal_account_fen=refund.personal_account.fen,
            business_date=business_date_of(refund.succeeded_at).isoformat(),
            kind=refund.kind.value,
            reason=refund.reason,
        )
    )
    return envelope
