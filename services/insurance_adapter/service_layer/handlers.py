"""What every insurance-adapter handler shares: its dependencies, and loading and locking settlements.

The shared rule: no unit of work stays open while a message is with the insurer. A step is decided
(and its intent recorded) in one transaction, the message goes out, and its outcome is recorded in
a fresh transaction that locks the settlement row again and re-checks its state (another request
may have moved it meanwhile). service_layer/process.py is the one place that runs those steps.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from opentelemetry import trace

from services.insurance_adapter.adapters.unit_of_work import UnitOfWork
from services.insurance_adapter.domain.settlement import Settlement
from services.insurance_adapter.service_layer.ports import Insurer, current_order_ref
from services.runtime.clock import utcnow
from services.runtime.errors import NotFound
from services.runtime.telemetry import ATTR_ORDER_ID, ATTR_SETL_ID

T = TypeVar("T")
# What an outcome does to a settlement locked inside a unit of work (and the events it records).
Record = Callable[[Settlement, UnitOfWork], Awaitable[None]]
SOURCE_SERVICE = "insurance-adapter"


@dataclass
class Dependencies:
    """What every handler works with; `bootstrap.build()` fills it, tests may pass fakes."""

    # unit_of_work(read_only=True) for what only reads.
    unit_of_work: Callable[..., UnitOfWork]
    insurer: Insurer
    # 清算经办机构 for 3201 when the settlements' own 参保地 is not asked for (the local region).
    setl_optins: str
    clock: Callable[[], datetime] = utcnow


class SettlementSteps:
    """Loading, locking and annotating settlements: what every handler class shares."""

    def __init__(self, deps: Dependencies) -> None:
        self._deps = deps
        self._insurer = deps.insurer

    def _now(self) -> datetime:
        return self._deps.clock()

    async def _load(self, settlement_id: str) -> Settlement:
        async with self._deps.unit_of_work(read_only=True) as uow:
            settlement = await uow.settlements.get(settlement_id)
        if settlement is None:
            raise NotFound(f"settlement {settlement_id} not found", {"settlement_id": settlement_id})
        annotate(settlement)
        return settlement

    async def _change(
        self, settlement_id: str, change: Callable[[Settlement, UnitOfWork], Awaitable[T]]
    ) -> tuple[Settlement, T]:
        """Lock the settlement, apply `change`, save it, commit: one state transition."""
        async with self._deps.unit_of_work() as uow:
            settlement = await uow.settlements.get(settlement_id, for_update=True)
            if settlement is None:
                raise NotFound(f"settlement {settlement_id} not found", {"settlement_id": settlement_id})
            result = await change(settlement, uow)
            await uow.settlements.save(settlement)
        annotate(settlement)
        return settlement, result


def annotate(settlement: Settlement) -> None:
    """Tag the server span and the message log with the order; never a patient identifier."""
    current_order_ref.set(settlement.order_ref)
    span = trace.get_current_span()
    span.set_attribute(ATTR_ORDER_ID, settlement.order_ref)
    if settlement.setl_id:
        span.set_attribute(ATTR_SETL_ID, settlement.setl_id)
