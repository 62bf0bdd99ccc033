"""From confirmed cash to a settled order: apply a channel's payment (notification or query), then
complete the insurer settlement (2207) with SETTLING as the persisted recovery point.

A payment is applied under the order's row lock, once: a duplicate notification finds it SUCCEEDED
and changes nothing. The settlement runs after that commit, as a task started from the caller's
context (so it continues the caller's trace); the resumer picks up whatever a crash left in SETTLING.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from services.payment_core.adapters.channels import ports
from services.payment_core.adapters.insurance import InsurerSettlement, InsurerStatus
from services.payment_core.domain import keys, ledger
from services.payment_core.domain.model import ChannelPaymentSeen, Payment, PaymentOutcome, PaymentStatus
from services.payment_core.domain.order import PaymentOrder
from services.payment_core.service_layer import events
from services.payment_core.service_layer.channel_errors import as_runtime_error
from services.payment_core.service_layer.dependencies import Dependencies
from services.payment_core.service_layer.refunds import Refunds
from services.payment_core.service_layer.unit_of_work import UnitOfWork
from services.runtime import errors
from services.runtime.interceptors import detached_context
from services.runtime.money import Money
from services.runtime.telemetry import ATTR_ORDER_ID, tracer

log = logging.getLogger(__name__)
_PAID = frozenset({ports.TradeState.PAID, ports.TradeState.REFUNDED})
_ENDED = {ports.TradeState.CLOSED: PaymentStatus.CLOSED, ports.TradeState.FAILED: PaymentStatus.FAILED}


class Settlements:
    def __init__(self, deps: Dependencies, refunds: Refunds) -> None:
        self._deps = deps
        self._refunds = refunds
        self._inflight: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._tracer = tracer(__name__)

    # ---- applying the channel's word -------------------------------------------------------------

    async def apply_notification(self, notification: ports.ChannelNotification) -> None:
        """A verified channel callback: a trade result or a refund result."""
        if notification.refund is not None:
            await self._refunds.apply_channel_refund(notification.refund)
        elif notification.trade is not None:
            await self.apply_trade(notification.trade)

    async def apply_trade(self, trade: ports.ChannelTradeStatus) -> None:
        if trade.state in _PAID:
            await self.apply_payment(_seen(trade, self._deps.clock()))
        elif trade.state in _ENDED:
            await self._end_attempt(trade.out_trade_no, _ENDED[trade.state])

    async def apply_payment(self, seen: ChannelPaymentSeen) -> PaymentOrder | None:
        """Record the cash once; settle at once (self-pay) or hand over to the insurer settlement."""
        async with self._deps.uow() as uow:
            order_id = await uow.orders.order_id_of_trade(seen.out_trade_no)
            if order_id is None:
                # Money we cannot place: reconciliation reports it as channel-only (长款).
                log.error("channel reports payment %s that no order knows", seen.out_trade_no)
                return None
            order = await uow.lock_order(order_id)
            outcome = order.record_channel_success(seen, self._deps.clock())
            if outcome is PaymentOutcome.DUPLICATE:
                return order
            await uow.orders.save(order)
            await self._record_cash(uow, order, seen.out_trade_no, outcome)
        if outcome is PaymentOutcome.SETTLING:
            self.start_settling(order.order_id)
        return order

    async def _record_cash(
        self, uow: UnitOfWork, order: PaymentOrder, out_trade_no: str, outcome: PaymentOutcome
    ) -> None:
        if outcome is PaymentOutcome.AMOUNT_MISMATCH:
            log.warning("payment %s not applied: %s", out_trade_no, order.attention_reason)
            return
        payment = order.payment_by_trade_no(out_trade_no)
        assert payment is not None
        await uow.record_event(events.payment_succeeded(order, payment))
        if outcome is PaymentOutcome.SETTLED:
            await self._post_settlement(uow, order)

    async def check_with_channel(self, out_trade_no: str, close_unpaid: bool) -> None:
        """Ask the channel about an attempt we have not heard of (lost notification, expired QR)."""
        try:
            status = await self._deps.channel.query(out_trade_no)
            if status.state in _PAID or status.state in _ENDED:
                await self.apply_trade(status)
            elif close_unpaid and status.state is ports.TradeState.NOT_PAID:
                await self._deps.channel.close(out_trade_no)
                await self._end_attempt(out_trade_no, PaymentStatus.CLOSED)
        except ports.ChannelRejected as error:
            # The channel never saw it (the placement was lost): nothing to collect on this attempt.
            if error.reason is not ports.RejectionReason.NOT_FOUND:
                raise as_runtime_error(error) from None
            if close_unpaid:
                await self._end_attempt(out_trade_no, PaymentStatus.CLOSED)
        except ports.ChannelError as error:
            raise as_runtime_error(error) from None

    async def _end_attempt(self, out_trade_no: str, status: PaymentStatus) -> None:
        async with self._deps.uow() as uow:
            order_id = await uow.orders.order_id_of_trade(out_trade_no)
            if order_id is None:
                return
            order = await uow.lock_order(order_id)
            payment = order.payment_by_trade_no(out_trade_no)
            if payment is not None and payment.is_open:
                order.payment_ended(payment, status)
                await uow.orders.save(order)

    # ---- zero cash share -------------------------------------------------------------------------

    async def settle_without_cash(self, order_id: str) -> tuple[PaymentOrder, Payment]:
        async with self._deps.uow() as uow:
            order = await uow.lock_order(order_id)
            payment = order.settle_without_cash(self._deps.new_id("pay"), self._deps.clock())
            await uow.orders.save(order)
            await uow.record_event(events.payment_succeeded(order, payment))
        order = await self.settle(order_id)
        settled = order.payment_by_trade_no(payment.out_trade_no)
        return order, settled or payment

    # ---- the insurer settlement (2207) -----------------------------------------------------------

    def start_settling(self, order_id: str) -> None:
        """Settle in the background. The task copies the current context, so it stays in the
        trace of the notification (or request) that started it, but not that request's deadline."""
        task = asyncio.create_task(
            self._settle_logged(order_id), name=f"settle:{order_id}", context=detached_context()
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, timeout_s: float) -> None:
        """At shutdown: let running settlements finish; SETTLING is persisted for the rest."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)
        for task in list(self._tasks):
            task.cancel()

    async def _settle_logged(self, order_id: str) -> None:
        try:
            await self.settle(order_id)
        except Exception:
            log.exception("settlement of %s failed; the resumer will take it up", order_id)

    async def settle(self, order_id: str) -> PaymentOrder:
        """Complete the insurer settlement of an order waiting for it; a no-op otherwise. One run
        per order at a time in this process; across processes the request_id makes it a replay."""
        if order_id in self._inflight:
            return await self._load(order_id)
        self._inflight.add(order_id)
        try:
            with self._tracer.start_as_current_span(
                "settle payment order", attributes={ATTR_ORDER_ID: order_id}
            ):
                return await self._settle(order_id)
        finally:
            self._inflight.discard(order_id)

    async def _settle(self, order_id: str) -> PaymentOrder:
        order = await self._load(order_id)
        if not order.awaits_settlement:
            return order
        if not order.insured:
            return await self._confirm(order_id, None)
        try:
            answer = await self._deps.insurance.settle(
                keys.insurer_request_id(order_id, "settle"), order.settlement_id
            )
        except errors.InsurerRejected as error:
            return await self._compensate(order_id, error.message)
        except errors.MedPayError as error:
            # Unknown, unreachable or unexpected: keep it for the resumer; never guess.
            return await self._pending(order_id, f"{error.reason}: {error.message}")
        if answer.status is InsurerStatus.SETTLED:
            return await self._confirm(order_id, answer)
        if answer.status in (InsurerStatus.FAILED, InsurerStatus.CANCELLED):
            # The insurer will never settle this one: give the patient's cash back.
            return await self._compensate(
                order_id, answer.status_reason or f"settlement {answer.status.value}"
            )
        return await self._pending(order_id, f"insurer settlement is {answer.status.value}")

    async def _confirm(self, order_id: str, answer: InsurerSettlement | None) -> PaymentOrder:
        async with self._deps.uow() as uow:
            order = await uow.lock_order(order_id)
            if not order.awaits_settlement:
                return order
            setl_id, split = (answer.setl_id, answer.split) if answer else ("", None)
            settled = order.settlement_confirmed(setl_id, split, self._deps.clock())
            await uow.orders.save(order)
            if settled:
                await self._post_settlement(uow, order)
        return order

    async def _pending(self, order_id: str, reason: str) -> PaymentOrder:
        async with self._deps.uow() as uow:
            order = await uow.lock_order(order_id)
            if order.awaits_settlement:
                order.settlement_pending(reason, self._deps.clock())
                await uow.orders.save(order)
        log.warning("settlement of %s pending: %s", order_id, reason)
        return order

    async def _compensate(self, order_id: str, reason: str) -> PaymentOrder:
        """2207 refused for good: the cash goes back through the channel it came from."""
        async with self._deps.uow() as uow:
            order = await uow.lock_order(order_id)
            if not order.awaits_settlement:
                return order
            refund = order.settlement_refused(self._deps.new_id("rfd"), reason, self._deps.clock())
            await uow.orders.save(order)
            if refund is not None:
                await uow.orders.reserve_refund(order, refund)
            else:
                await uow.record_event(events.order_closed(order, order.attention_reason))
        log.warning("insurer refused settlement of %s; compensating", order_id)
        if refund is None:
            return order
        order, _ = await self._refunds.carry_on(order_id, refund.refund_id)
        return order

    async def _post_settlement(self, uow: UnitOfWork, order: PaymentOrder) -> None:
        """Ledger postings and the settled event, in the transaction that settles the order."""
        assert order.settled_at is not None
        bill = ledger.SettledBill(
            order_id=order.order_id,
            scene=order.scene,
            channel=order.settlement_channel,
            bill_total=order.total,
            cash=order.cash_paid - order.refunded_cash,
            split=order.split,
        )
        await uow.ledger.post(ledger.settlement_transaction(bill, order.settled_at))
        await uow.record_event(events.order_settled(order))

    async def _load(self, order_id: str) -> PaymentOrder:
        async with self._deps.uow() as uow:
            order = await uow.orders.get(order_id)
        if order is None:
            raise errors.NotFound(f"no payment order {order_id}", {"order_id": order_id})
        return order


def _seen(trade: ports.ChannelTradeStatus, now: datetime) -> ChannelPaymentSeen:
    return ChannelPaymentSeen(
        trade.out_trade_no, trade.transaction_id or "", Money(trade.amount.fen), trade.success_time or now
    )
