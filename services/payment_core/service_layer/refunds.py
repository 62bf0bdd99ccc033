"""Refunds: the hospital's full refund of a settled order, the compensation of a refused settlement,
and the return of cash an order should not hold (paid after close, paid twice).

The refund row and its amount are committed first (storage refuses refunded > paid); then, for a
settled insured order, the insurer settlement is revoked (2208); then the cash goes back through the
channel with an out_refund_no derived from the order. `carry_on` resumes from whatever step storage
records, so the resumer and a retry continue the same refund instead of starting another.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from services.payment_core.adapters.channels import ports
from services.payment_core.domain import keys, ledger
from services.payment_core.domain.model import CHANNEL_NONE, Refund, RefundKind, RefundStatus
from services.payment_core.domain.order import PaymentOrder
from services.payment_core.service_layer import commands, events
from services.payment_core.service_layer.channel_errors import as_runtime_error
from services.payment_core.service_layer.dependencies import Dependencies
from services.payment_core.service_layer.unit_of_work import UnitOfWork
from services.runtime import errors

log = logging.getLogger(__name__)
_OPEN = frozenset({RefundStatus.PENDING, RefundStatus.UNKNOWN})
_Change = Callable[[PaymentOrder, Refund], None]


class Refunds:
    def __init__(self, deps: Dependencies) -> None:
        self._deps = deps

    async def refund(self, cmd: commands.RefundPaymentOrder) -> tuple[PaymentOrder, Refund]:
        """RefundPaymentOrder: full refunds only in this release."""
        async with self._deps.uow() as uow:
            order = await uow.lock_order(cmd.order_id)
            refund = order.begin_refund(self._deps.new_id("rfd"), cmd.cash, cmd.reason, self._deps.clock())
            await uow.orders.save(order)
            await uow.orders.reserve_refund(order, refund)
        return await self.carry_on(order.order_id, refund.refund_id)

    async def carry_on(self, order_id: str, refund_id: str) -> tuple[PaymentOrder, Refund]:
        """Continue an open refund from the step storage records: revoke if still needed, pay out."""
        order, refund = await self._load(order_id, refund_id)
        if refund.status not in _OPEN:
            return order, refund
        if _needs_revoke(order, refund):
            await self._revoke(order, refund)
        return await self._pay_out(order_id, refund_id)

    async def apply_channel_refund(self, result: ports.ChannelRefund) -> None:
        """The channel's word on a refund (answer, query or notification); idempotent."""
        async with self._deps.uow() as uow:
            order_id = await uow.orders.order_id_of_refund(result.out_refund_no)
        if order_id is None:
            log.error("channel reports refund %s that no order knows", result.out_refund_no)
            return
        order = await self._order(order_id)
        refund = next(r for r in order.refunds if r.out_refund_no == result.out_refund_no)
        if result.status is ports.RefundStatus.SUCCEEDED:
            await self._succeeded(order_id, refund.refund_id, result.refund_id)
        elif result.status is ports.RefundStatus.FAILED:
            await self._give_up(order_id, refund.refund_id, f"channel status {result.channel_status}")

    async def _revoke(self, order: PaymentOrder, refund: Refund) -> None:
        request_id = keys.insurer_request_id(order.order_id, f"revoke{refund.refund_no}")
        try:
            await self._deps.insurance.revoke_settlement(request_id, order.settlement_id, refund.reason)
        except errors.OutcomeUnknown as error:
            reason = error.message
            await self._change(order.order_id, refund.refund_id, lambda o, _: o.revoke_unknown(reason))
            raise
        except errors.MedPayError as error:
            await self._give_up(order.order_id, refund.refund_id, error.message)
            raise
        await self._change(order.order_id, refund.refund_id, lambda o, r: o.settlement_revoked_for(r))

    async def _pay_out(self, order_id: str, refund_id: str) -> tuple[PaymentOrder, Refund]:
        order, refund = await self._load(order_id, refund_id)
        payment = next((p for p in order.payments if p.payment_id == refund.payment_id), None)
        if refund.cash.fen == 0 or payment is None or payment.channel == CHANNEL_NONE:
            return await self._succeeded(order_id, refund_id, "")
        try:
            answer = await self._deps.channel.refund(
                refund.out_refund_no, payment.out_trade_no, refund.cash, payment.amount, refund.reason
            )
        except ports.ChannelRejected as error:
            await self._give_up(order_id, refund_id, f"{error.code}: {error.message}")
            raise as_runtime_error(error) from None
        except ports.ChannelUnavailable:
            # Nothing happened; the resumer sends it again with the same out_refund_no.
            return order, refund
        except ports.ChannelError as error:
            reason = str(error)
            await self._change(order_id, refund_id, lambda o, r: o.refund_unknown(r, reason))
            return await self._load(order_id, refund_id)
        await self.apply_channel_refund(answer)
        return await self._load(order_id, refund_id)

    async def _succeeded(
        self, order_id: str, refund_id: str, channel_refund_id: str
    ) -> tuple[PaymentOrder, Refund]:
        async with self._deps.uow() as uow:
            order = await uow.lock_order(order_id)
            refund = order.refund_by_id(refund_id)
            if order.refund_succeeded(refund, channel_refund_id, self._deps.clock()):
                await uow.orders.save(order)
                await self._post_refund(uow, order, refund)
        return order, refund

    async def _post_refund(self, uow: UnitOfWork, order: PaymentOrder, refund: Refund) -> None:
        """A refund of a settled order reverses its settlement entry; other refunds gave back cash
        that was never posted as revenue."""
        assert refund.succeeded_at is not None
        settled = await uow.ledger.find(keys.transfer_key(order.order_id, "settle"))
        if refund.kind is RefundKind.REQUESTED and settled is not None:
            reversal = ledger.reversal_of(settled, f"refund-R{refund.refund_no}", refund.succeeded_at)
            await uow.ledger.post(reversal)
        channel = next((p.channel for p in order.payments if p.payment_id == refund.payment_id), CHANNEL_NONE)
        await uow.record_event(events.refund_succeeded(order, refund, channel))

    async def _give_up(self, order_id: str, refund_id: str, reason: str) -> None:
        """The refund will not happen: its amount becomes refundable again."""
        async with self._deps.uow() as uow:
            order = await uow.lock_order(order_id)
            refund = order.refund_by_id(refund_id)
            if refund.status in _OPEN:
                order.refund_failed(refund, reason)
                await uow.orders.save(order)
                await uow.orders.release_refund(order, refund)

    async def _change(self, order_id: str, refund_id: str, change: _Change) -> None:
        async with self._deps.uow() as uow:
            order = await uow.lock_order(order_id)
            change(order, order.refund_by_id(refund_id))
            await uow.orders.save(order)

    async def _load(self, order_id: str, refund_id: str) -> tuple[PaymentOrder, Refund]:
        order = await self._order(order_id)
        return order, order.refund_by_id(refund_id)

    async def _order(self, order_id: str) -> PaymentOrder:
        async with self._deps.uow() as uow:
            order = await uow.orders.get(order_id)
        if order is None:
            raise errors.NotFound(f"no payment order {order_id}", {"order_id": order_id})
        return order


def _needs_revoke(order: PaymentOrder, refund: Refund) -> bool:
    return refund.kind is RefundKind.REQUESTED and bool(order.setl_id) and not order.settlement_revoked
