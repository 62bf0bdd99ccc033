"""The resumer: a background task that continues whatever a crash, a lost notification or an unknown
outcome left open. It starts with the process (so orders left in SETTLING are resumed at startup)
and sweeps on an interval. Every step it takes reuses the step's business key, so it can only
finish what was started, never start it twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from datetime import timedelta

from services.payment_core.adapters.channels.ports import ChannelError
from services.payment_core.service_layer.dependencies import Dependencies
from services.payment_core.service_layer.refunds import Refunds
from services.payment_core.service_layer.settlement import Settlements
from services.runtime.errors import MedPayError

log = logging.getLogger(__name__)


class Resumer:
    def __init__(
        self,
        deps: Dependencies,
        settlements: Settlements,
        refunds: Refunds,
        interval: timedelta = timedelta(seconds=15),
        quiet_for: timedelta = timedelta(seconds=30),
    ) -> None:
        self._deps = deps
        self._settlements = settlements
        self._refunds = refunds
        self._interval = interval
        self._quiet_for = quiet_for

    async def run(self) -> None:
        """Background task of the service host."""
        while True:
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("resumer sweep failed; next sweep in %s", self._interval)
            await asyncio.sleep(self._interval.total_seconds())

    async def sweep(self) -> None:
        now = self._deps.clock()
        quiet_since = now - self._quiet_for
        async with self._deps.uow() as uow:
            settlements = await uow.work.settlements_due(now, quiet_since)
            refunds = await uow.work.open_refunds(quiet_since)
            payments = await uow.work.quiet_payments(now, quiet_since)
        for order_id in settlements:
            await self._attempt(f"settle {order_id}", self._settlements.settle(order_id))
        for order_id, refund_id in refunds:
            await self._attempt(f"refund {refund_id}", self._refunds.carry_on(order_id, refund_id))
        for out_trade_no, expires_at in payments:
            expired = expires_at is not None and expires_at <= now
            check = self._settlements.check_with_channel(out_trade_no, close_unpaid=expired)
            await self._attempt(f"payment {out_trade_no}", check)

    async def _attempt(self, what: str, step: Awaitable[object]) -> None:
        # One stuck item must not stop the sweep; it is tried again on the next one.
        try:
            await step
        except (MedPayError, ChannelError) as error:
            log.warning("resumer: %s still open: %s", what, error)
