"""The janitor: the loop that advances orders whose next step is due.

It does not decide anything. `next_step` (domain.process) says when an order must be looked at
again — a pending payment's first query, an unknown outcome's next retry on the escalating schedule,
an order's expiry — and the process manager stores that as the order's `due_at`. The janitor reads
the due orders from an index, the oldest first, and advances each, a bounded number at a time. Two
janitors (two replicas) may pick the same order: the order's lease lets only one run its step.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from datetime import timedelta

from services.payment_core.service_layer.dependencies import Dependencies
from services.payment_core.service_layer.process import OrderProcess
from services.runtime.errors import MedPayError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JanitorSettings:
    # How often it looks for due orders when the last look found fewer than a batch.
    interval: timedelta = timedelta(seconds=1)
    # Orders advanced at once (each holds at most one outbound call).
    concurrency: int = 8
    batch: int = 100


class Janitor:
    def __init__(self, deps: Dependencies, process: OrderProcess, settings: JanitorSettings) -> None:
        self._deps = deps
        self._process = process
        self._settings = settings
        self._slots = asyncio.Semaphore(settings.concurrency)

    async def run(self) -> None:
        """Background task of the service host."""
        while True:
            try:
                found = await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("janitor sweep failed; trying again")
                found = 0
            if found < self._settings.batch:
                await asyncio.sleep(self._pause())

    async def sweep(self) -> int:
        """Advance every order due now; returns how many were due."""
        async with self._deps.uow(read_only=True) as uow:
            due = await uow.work.due_orders(self._deps.clock(), self._settings.batch)
        await asyncio.gather(*(self._advance(order_id) for order_id in due))
        return len(due)

    async def _advance(self, order_id: str) -> None:
        async with self._slots:
            try:
                await self._process.advance(order_id)
            except MedPayError as error:
                # Recorded on the order; it is due again on its schedule.
                log.info("janitor: order %s: %s", order_id, error.message)
            except Exception:
                log.exception("janitor: advancing order %s failed", order_id)

    def _pause(self) -> float:
        # Spread the replicas' looks so they do not query in step.
        seconds = self._settings.interval.total_seconds()
        return seconds * random.uniform(0.8, 1.2)
