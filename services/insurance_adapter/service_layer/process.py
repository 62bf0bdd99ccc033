"""`advance`: the one place that runs a settlement's steps towards what its caller asked for.

Each turn locks the settlement row, records the previous step's outcome, asks `next_step`, records
the new step's intent (the 2207 msgid, before the message leaves) and commits; then the step's
message goes to the insurer with no transaction open. It goes on while the next step is a message,
at most MAX_STEPS of them, and ends with the answer for the caller: the settlement, or the error
that says why not (the insurer's failure, a state conflict, or an outcome still unknown).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from services.insurance_adapter.domain import commands
from services.insurance_adapter.domain.bill import OutpatientBill
from services.insurance_adapter.domain.process import (
    MAX_QUERIES,
    Done,
    Goal,
    Outcome,
    RegisterVisit,
    SendSettlement,
    Step,
    Wait,
    next_step,
)
from services.insurance_adapter.domain.settlement import InsuredVisit, Settlement
from services.insurance_adapter.service_layer.handlers import (
    Dependencies,
    Record,
    SettlementSteps,
    annotate,
)
from services.insurance_adapter.service_layer.insurer_steps import InsurerSteps
from services.runtime.clock import new_id
from services.runtime.errors import NotFound, OutcomeUnknown, StateConflict, StorageConflict

# A Presettle is two messages (2204, 2206), a Settle at most two (5203, then 2207 again).
MAX_STEPS = 4
_ACTIONS = {
    Goal.PRESETTLED: "pre-settle",
    Goal.SETTLED: "settle",
    Goal.KNOWN: "query",
    Goal.REVOKED: "revoke",
    Goal.CANCELLED: "cancel",
}


class SettlementProcess(SettlementSteps):
    def __init__(self, deps: Dependencies) -> None:
        super().__init__(deps)
        self._steps = InsurerSteps(deps.insurer, deps.clock)

    async def open(self, command: commands.Presettle) -> Settlement:
        """The order's active settlement for this bill, or, when there is none (next_step's
        RegisterVisit), a new one: 1101 → 2201, stored with its bill as the first recovery point."""
        found = await self._active_settlement(command.order_ref, command.bill)
        if found is not None:  # advance continues it from its recovery point
            return found
        visit = await self._steps.register_visit(command)
        settlement = Settlement(
            settlement_id=new_id("stl"),
            order_ref=command.order_ref,
            bill_fingerprint=command.bill.fingerprint(),
            visit=visit,
            created_at=self._now(),
        )
        return await self._store_new(settlement, command.bill)

    async def reopen(self, order_ref: str, visit: InsuredVisit, bill: OutpatientBill) -> Settlement:
        """The order's active settlement for `bill`, or a new one on an already registered visit
        (its 2201 done: the first step is the 2204 of a new batch)."""
        found = await self._active_settlement(order_ref, bill)
        if found is not None:
            return found
        settlement = Settlement(
            settlement_id=new_id("stl"),
            order_ref=order_ref,
            bill_fingerprint=bill.fingerprint(),
            visit=visit,
            created_at=self._now(),
        )
        return await self._store_new(settlement, bill)

    async def advance(
        self,
        settlement_id: str,
        goal: Goal,
        *,
        invoice_no: str = "",
        bill: OutpatientBill | None = None,
        opened: Settlement | None = None,
    ) -> Settlement:
        """Run the settlement's steps towards `goal` while the next one is a message to send now.
        `invoice_no` goes with a first 2207; `bill` is the one the settlement was opened with, when
        the caller holds it (otherwise it is read back for a 2204/2206); `opened`, the settlement
        as this very call stored it (its first step is decided without reading it back)."""
        bills = _Bill(lambda: self._bill_of(settlement_id), bill)
        settlement, step = await self._first_turn(settlement_id, goal, invoice_no, opened)
        for _ in range(MAX_STEPS):
            if isinstance(step, Done | Wait):
                return _answer(settlement, goal, step)
            if isinstance(step, RegisterVisit):  # only for an order without a settlement
                raise StateConflict(f"settlement {settlement_id} is already registered")
            reply = await self._steps.run(settlement, step, bills.get)
            if reply.failure is not None:  # recorded, then passed on: the caller decides when to retry
                await self._change(settlement_id, reply.record)
                raise reply.failure
            settlement, step = await self._turn(settlement_id, goal, invoice_no, reply.record)
        raise OutcomeUnknown(
            f"settlement {settlement_id} is {settlement.status} after {MAX_STEPS} steps; ask again",
            {"settlement_id": settlement_id},
        )

    async def _first_turn(
        self, settlement_id: str, goal: Goal, invoice_no: str, opened: Settlement | None
    ) -> tuple[Settlement, Step]:
        """The first decision, with nothing to record yet. Only a 2207 needs its intent written
        under the lock before it leaves; any other first step is decided on a plain read (or on
        the settlement this call just stored): the lock would be released before its message
        leaves anyway, and the insurer's keys (visit number, batch, msgid) make a repeat harmless."""
        if goal is Goal.SETTLED:
            return await self._turn(settlement_id, goal, invoice_no)
        settlement = opened
        if settlement is None:
            async with self._deps.unit_of_work(read_only=True) as uow:
                settlement = await uow.settlements.get(settlement_id)
        if settlement is None:
            raise NotFound(f"settlement {settlement_id} not found", {"settlement_id": settlement_id})
        step = next_step(settlement, goal, self._now())
        if isinstance(step, SendSettlement):  # not reached for these goals; kept safe regardless
            return await self._turn(settlement_id, goal, invoice_no)
        annotate(settlement)
        return settlement, step

    async def _turn(
        self, settlement_id: str, goal: Goal, invoice_no: str, outcome: Record | None = None
    ) -> tuple[Settlement, Step]:
        """One transaction: lock, record the last outcome, decide the next step, record its intent."""
        async with self._deps.unit_of_work() as uow:
            settlement = await uow.settlements.get(settlement_id, for_update=True)
            if settlement is None:
                raise NotFound(f"settlement {settlement_id} not found", {"settlement_id": settlement_id})
            if outcome is not None:
                await outcome(settlement, uow)
            step = next_step(settlement, goal, self._now())
            if isinstance(step, SendSettlement):
                # Intent first: the msgid is committed before the 2207 leaves, and every retry reuses it.
                msgid = settlement.begin_settlement(step.msgid or self._insurer.new_msgid(), invoice_no)
                step = SendSettlement(msgid, step.after_unknown)
            if outcome is not None or isinstance(step, SendSettlement):
                await uow.settlements.save(settlement)
        annotate(settlement)
        return settlement, step

    async def _active_settlement(self, order_ref: str, bill: OutpatientBill) -> Settlement | None:
        async with self._deps.unit_of_work(read_only=True) as uow:
            found = await uow.settlements.active_for_order(order_ref)
        if found is not None and found.bill_fingerprint != bill.fingerprint():
            raise StateConflict(
                f"order {order_ref} is already pre-settled with another bill; cancel that one first",
                {"order_ref": order_ref, "settlement_id": found.settlement_id},
            )
        return found

    async def _store_new(self, settlement: Settlement, bill: OutpatientBill) -> Settlement:
        try:
            async with self._deps.unit_of_work() as uow:
                await uow.settlements.add(settlement, bill)
        except StorageConflict:
            # Another request opened this order meanwhile (the active-order index): continue that one.
            found = await self._active_settlement(settlement.order_ref, bill)
            if found is None:
                raise
            return found
        return settlement

    async def _bill_of(self, settlement_id: str) -> OutpatientBill:
        async with self._deps.unit_of_work() as uow:
            return await uow.settlements.bill_of(settlement_id)


class _Bill:
    """The settlement's bill, read back at most once and only if a step needs it."""

    def __init__(self, read: Callable[[], Awaitable[OutpatientBill]], known: OutpatientBill | None) -> None:
        self._read, self._bill = read, known

    async def get(self) -> OutpatientBill:
        if self._bill is None:
            self._bill = await self._read()
        return self._bill


def _answer(settlement: Settlement, goal: Goal, step: Done | Wait) -> Settlement:
    """The caller's answer. A Settle is answered only once decided; until then it gets an error to
    retry on (its response is stored under its request_id and replayed, so it must be final)."""
    if isinstance(step, Wait):
        if goal is not Goal.SETTLED:
            return settlement  # a refresh answers as it stands until the insurer may be asked again
        until = step.until.isoformat(timespec="seconds")
        raise _not_known(settlement, f"not known yet; ask again after {until}", {"retry_after": until})
    if step.outcome is Outcome.NOT_ALLOWED:
        raise settlement.conflict(_ACTIONS[goal])
    if step.outcome is Outcome.STILL_UNKNOWN:
        # Settle's retries end here; GetSettlement(refresh) still asks, at the slowest pace.
        raise _not_known(
            settlement, f"still unknown after {MAX_QUERIES} queries", {"queries": str(MAX_QUERIES)}
        )
    return settlement


def _not_known(settlement: Settlement, what: str, metadata: dict[str, str]) -> OutcomeUnknown:
    return OutcomeUnknown(
        f"settlement {settlement.settlement_id}: the insurer's answer to its 2207 is {what} "
        f"({settlement.status_reason})",
        {"settlement_id": settlement.settlement_id, **metadata},
    )
