"""A verified channel notification: the channel's word is recorded on its order at once (so the
channel is answered quickly and a duplicate changes nothing), then the process manager takes the
order on in the background (the insurer settlement a payment leads to may take longer)."""

from __future__ import annotations

import logging

from services.payment_core.adapters.channels import ports
from services.payment_core.domain import keys
from services.payment_core.service_layer.dependencies import Dependencies
from services.payment_core.service_layer.process import OrderProcess
from services.payment_core.service_layer.steps import Record, refund_answered, trade_news
from services.runtime import errors

log = logging.getLogger(__name__)


class ChannelNews:
    def __init__(self, deps: Dependencies, process: OrderProcess) -> None:
        self._deps = deps
        self._process = process

    async def apply(self, notification: ports.ChannelNotification) -> None:
        """A trade result or a refund result; money no order knows is left to reconciliation (长款)."""
        if notification.refund is not None:
            refund = notification.refund
            order_id = keys.order_of(refund.out_refund_no)
            if order_id is None:  # not a key of ours: perhaps a refund number of an older scheme
                async with self._deps.uow(read_only=True) as uow:
                    order_id = await uow.orders.order_id_of_refund(refund.out_refund_no)
            await self._record(order_id, refund_answered(refund), f"refund {refund.out_refund_no}")
        elif notification.trade is not None:
            trade = notification.trade
            # The key names its order (no lookup); the order ignores a payment it does not have.
            order_id = keys.order_of(trade.out_trade_no)
            if order_id is None:
                async with self._deps.uow(read_only=True) as uow:
                    order_id = await uow.orders.order_id_of_trade(trade.out_trade_no)
            await self._record(order_id, trade_news(trade), f"payment {trade.out_trade_no}")

    async def _record(self, order_id: str | None, record: Record, what: str) -> None:
        if order_id is None:
            log.error("channel reports %s that no order knows", what)
            return
        try:
            await self._process.note_and_carry_on(order_id, record)
        except errors.NotFound:
            log.error("channel reports %s that no order knows", what)
