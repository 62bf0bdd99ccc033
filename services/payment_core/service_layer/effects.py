"""What a change of an order means for the rest of the platform, derived in one place from the
change itself: events to the outbox, postings to the ledger, refund amounts reserved or released in
storage, and the deposit account moved (a payment from the deposit debits it when it succeeds, its
refund credits it back when that succeeds; a refund of a top-up takes its amount from the balance
when it is recorded and gives it back if it fails). Every transaction that changes an order ends
with `record_effects(before, order)`, so no step has to remember which event or posting it owes,
and none can post one twice (the transfer keys and the snapshot make a repeat a no-op).
"""

from __future__ import annotations

from dataclasses import dataclass

from services.payment_core.adapters.unit_of_work import UnitOfWork
from services.payment_core.domain import deposit, keys, ledger
from services.payment_core.domain.model import (
    CHANNEL_DEPOSIT,
    CHANNEL_NONE,
    LineRefund,
    LineRefundStage,
    OrderStatus,
    Payment,
    PaymentStatus,
    Refund,
    RefundKind,
    RefundStatus,
)
from services.payment_core.domain.order import PaymentOrder
from services.payment_core.service_layer import events

S = OrderStatus


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The parts of an order whose change has effects, and by which progress is judged."""

    status: OrderStatus
    attention: str
    payments: tuple[tuple[str, PaymentStatus, bool], ...]
    refunds: tuple[tuple[str, RefundStatus], ...]
    flags: tuple[bool, bool, bool, str]
    line_refunds: tuple[tuple[str, LineRefundStage], ...] = ()

    @classmethod
    def of(cls, order: PaymentOrder) -> Snapshot:
        return cls(
            status=order.status,
            attention=order.attention.value if order.attention else "",
            payments=tuple((p.payment_id, p.status, bool(p.code_url)) for p in order.payments),
            refunds=tuple((r.refund_id, r.status) for r in order.refunds),
            flags=(
                order.settlement_revoked,
                order.presettlement_cancelled,
                order.close_requested,
                order.setl_id,
            ),
            line_refunds=tuple((r.refund_id, r.stage) for r in order.line_refunds),
        )

    def line_refund_stage(self, refund_id: str) -> LineRefundStage | None:
        return next((stage for rid, stage in self.line_refunds if rid == refund_id), None)

    def payment_status(self, payment_id: str) -> PaymentStatus | None:
        return next((status for pid, status, _ in self.payments if pid == payment_id), None)

    def refund_status(self, refund_id: str) -> RefundStatus | None:
        return next((status for rid, status in self.refunds if rid == refund_id), None)


async def record_effects(uow: UnitOfWork, before: Snapshot, order: PaymentOrder) -> None:
    """Events, postings and reservations owed by the change from `before` to `order`. The turn's
    ledger entries are posted together (one round trip for the transactions, one for the postings)."""
    await _refund_reservations(uow, before, order)
    if before.status is S.PRESETTLING and order.status is S.AWAITING_PAYMENT:
        await uow.record_event(events.order_created(order))
    entries: list[ledger.LedgerTransaction] = []
    for payment in order.payments:
        if _became(payment.status, before.payment_status(payment.payment_id), PaymentStatus.SUCCEEDED):
            if payment.from_deposit:
                # In the transaction that records the success: storage refuses a negative balance.
                await uow.deposits.debit_use(payment.payment_id)
            await uow.record_event(events.payment_succeeded(order, payment))
            if payment.amount.fen:  # a zero cash share "succeeds" with no money moved
                entries.append(_payment_entry(order, payment))
    for line_refund in order.line_refunds:
        resettled = LineRefundStage.RESETTLED
        if _became(line_refund.stage, before.line_refund_stage(line_refund.refund_id), resettled):
            entries += await _resettlement_entries(uow, order, line_refund)
    settled = (
        await _settlement_entry(uow, order, after_refund=before.status is S.REFUNDING)
        if order.status is S.SETTLED and before.status is not S.SETTLED
        else None
    )
    if settled is not None:
        entries.append(settled)
    for refund in order.refunds:
        if _became(refund.status, before.refund_status(refund.refund_id), RefundStatus.SUCCEEDED):
            if _channel_of(order, refund) == CHANNEL_DEPOSIT and refund.payment_id and refund.cash.fen:
                await uow.deposits.credit_back_use(refund.payment_id, refund.cash)
            entries.append(await _refund_entry(uow, order, refund))
    posted = await uow.ledger.post_all(entries) if entries else set()
    if settled is not None and settled.transfer_key in posted:
        if order.scene == deposit.SCENE:
            # Once, with the settlement entry (its transfer key): the deposit grows by the top-up.
            await uow.deposits.credit_top_up(order.order_id)
        await uow.record_event(events.order_settled(order))
    for refund in order.refunds:
        if _became(refund.status, before.refund_status(refund.refund_id), RefundStatus.SUCCEEDED):
            await uow.record_event(events.refund_succeeded(order, refund, _channel_of(order, refund)))
    if order.status is S.CLOSED and before.status is not S.CLOSED:
        await uow.record_event(events.order_closed(order, order.close_reason or order.attention_reason))


def _became(now: object, was: object, target: object) -> bool:
    return now is target and was is not target


async def _refund_reservations(uow: UnitOfWork, before: Snapshot, order: PaymentOrder) -> None:
    """A new refund takes its amount from what may be refunded; a failed one gives it back. Storage
    refuses refunded > paid (RefundExceedsPaid), whatever the order believed when it decided."""
    for refund in order.refunds:
        was = before.refund_status(refund.refund_id)
        top_up = order.scene == deposit.SCENE and refund.cash.fen > 0
        if was is None:
            await uow.orders.reserve_refund(order, refund)
            if top_up:  # the deposit goes back: out of the balance now (never below zero)
                await uow.deposits.reserve_top_up_refund(order.order_id, refund.cash)
        elif refund.status is RefundStatus.FAILED and was is not RefundStatus.FAILED:
            await uow.orders.release_refund(order, refund)
            if top_up:
                await uow.deposits.release_top_up_refund(order.order_id, refund.cash)


def _payment_entry(order: PaymentOrder, payment: Payment) -> ledger.LedgerTransaction:
    money = ledger.MoneyAtChannel(
        order.order_id, f"pay-{payment.attempt_no:02d}", payment.channel, payment.amount,
        order.campus_code, payment.operator_id,
    )  # fmt: skip
    assert payment.succeeded_at is not None
    return ledger.payment_transaction(money, payment.succeeded_at)


async def _settlement_entry(
    uow: UnitOfWork, order: PaymentOrder, after_refund: bool = False
) -> ledger.LedgerTransaction | None:
    """Once per order: an order back in SETTLED after a refused or a partial refund was posted when
    it settled (and its kept cash is now net of the partial refund: never posted again). An order
    that gave an excess back before it settled (also from REFUNDING) is posted now."""
    assert order.settled_at is not None
    if after_refund and await uow.ledger.find(keys.transfer_key(order.order_id, "settle")) is not None:
        return None
    bill = ledger.SettledBill(
        order_id=order.order_id,
        scene=order.scene,
        bill_total=order.total,
        cash=order.cash_kept,
        split=order.split,
        campus_code=order.campus_code,
    )
    return ledger.settlement_transaction(bill, order.settled_at)


async def _resettlement_entries(
    uow: UnitOfWork, order: PaymentOrder, line_refund: LineRefund
) -> tuple[ledger.LedgerTransaction, ledger.LedgerTransaction]:
    """A refund by lines settled again: the entry that stood is reversed and the new one posted;
    the freed cash waits in receipts_unsettled until its refunds pay it out."""
    step = f"resettle{line_refund.line_refund_no}"
    standing = [
        r for r in order.line_refunds if r.stage is LineRefundStage.RESETTLED and r is not line_refund
    ]
    current_step = f"resettle{standing[-1].line_refund_no}" if standing else "settle"
    current = await uow.ledger.find(keys.transfer_key(order.order_id, current_step))
    assert current is not None and order.split is not None
    now = order.last_step_at or order.created_at
    return ledger.resettlement(current, order.split, order.scene, line_refund.cash, step, now)


async def _refund_entry(uow: UnitOfWork, order: PaymentOrder, refund: Refund) -> ledger.LedgerTransaction:
    """A requested refund of a settled order reverses (its part of) the settlement entry that
    stands; any other refund, and one paying out the cash a refund by lines freed (its
    re-settlement already took it off the revenue), gives back money no settlement counts, out of
    receipts_unsettled."""
    assert refund.succeeded_at is not None
    channel = _channel_of(order, refund)
    step = f"refund-R{refund.refund_no}"
    settled = (
        await uow.ledger.find(keys.transfer_key(order.order_id, order.settlement_step))
        if refund.kind is RefundKind.REQUESTED and not order.is_line_refund(refund)
        else None
    )
    if settled is not None:
        return ledger.refund_reversal(
            settled, step, channel, refund.cash, with_insurance=refund.revokes_settlement,
            occurred_at=refund.succeeded_at, operator_id=refund.operator_id,
        )  # fmt: skip
    money = ledger.MoneyAtChannel(
        order.order_id, step, channel, refund.cash, order.campus_code, refund.operator_id
    )
    return ledger.unsettled_refund_transaction(money, refund.succeeded_at)


def _channel_of(order: PaymentOrder, refund: Refund) -> str:
    return next((p.channel for p in order.payments if p.payment_id == refund.payment_id), CHANNEL_NONE)
