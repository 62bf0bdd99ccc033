"""`OrderProcess.advance`: run an order's next step, as domain.process decides it, and record it.

One step is two short transactions around one outbound call:

  1. lock the order, ask `next_step`; if it is due, take the order's lease and commit (the step's
     intent — the payment or refund row with its business key — is already committed by then);
  2. make the call (no transaction is open while the channel or the insurer thinks);
  3. lock the order again, record the outcome with the events and postings it implies, release the
     lease, commit; then ask again, until the order waits, is done, or someone else holds it.

The lease (holder + expiry on the order row) is what keeps two callers — two janitors of two
replicas, a janitor and a notification — from running a step of the same order at once. A holder
that died loses it when its instance stops heart-beating (or at the latest when it expires), and
whoever comes next runs the step again with the same business key, which the partner answers as a
replay. Steps that only change the order's own record run inside the deciding transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from services.payment_core.adapters.unit_of_work import UnitOfWork
from services.payment_core.domain import process
from services.payment_core.domain.order import PaymentOrder
from services.payment_core.service_layer.dependencies import Dependencies
from services.payment_core.service_layer.effects import Snapshot, record_effects
from services.payment_core.service_layer.steps import Outcome, Record, StepInputs, StepRunners, trade_news
from services.runtime import errors
from services.runtime.clock import new_id
from services.runtime.interceptors import detached_context
from services.runtime.telemetry import ATTR_ORDER_ID, tracer

log = logging.getLogger(__name__)
# More steps than any flow has in one go (place → query → close → cancel …); a guard, not a rule.
MAX_STEPS_PER_CALL = 12
# How long a caller waiting for another replica's step looks again (a holder here wakes it at once).
_LOOK_AGAIN_S = 0.2
HolderAlive = Callable[[UnitOfWork, str], Awaitable[bool]]


async def _trust_the_expiry(uow: UnitOfWork, instance_id: str) -> bool:
    return True


@dataclass(frozen=True)
class Leases:
    """Who may run a step of an order now."""

    # This process; a lease token is "<instance_id>/<call>", so two calls of one process exclude
    # each other too.
    instance_id: str
    # Longer than any step's outbound deadline: a live holder never loses a lease mid-call.
    hold_for: timedelta = timedelta(seconds=60)
    # While a step runs elsewhere, the janitor looks again this often (to take over a dead holder's).
    recheck_after: timedelta = timedelta(seconds=5)
    holder_alive: HolderAlive = _trust_the_expiry

    def new_token(self) -> str:
        return f"{self.instance_id}/{new_id('l')[2:14]}"

    async def held_by_another(self, uow: UnitOfWork, order: PaymentOrder, now: datetime) -> bool:
        holder, until = order.lease_holder, order.lease_expires_at
        if not holder or until is None or until <= now:
            return False
        instance = holder.split("/", 1)[0]
        return instance == self.instance_id or await self.holder_alive(uow, instance)


@dataclass(frozen=True)
class _Mark:
    """What a transaction started from, to write only what it changed."""

    snapshot: Snapshot
    row: tuple[object, ...]

    @classmethod
    def of(cls, order: PaymentOrder) -> _Mark:
        row = (order.attempts, order.last_step_at, order.due_at, order.lease_holder, order.lease_expires_at,
               order.close_requested, order.attention_reason, order.close_reason)  # fmt: skip
        return cls(Snapshot.of(order), row)


@dataclass
class _Decided:
    order: PaymentOrder
    step: process.Step | None = None
    token: str = ""
    at_intent: Snapshot | None = None


# What `start` decided for an order in its caller's transaction: the step and its lease.
Started = _Decided


class OrderProcess:
    def __init__(self, deps: Dependencies, schedule: process.Schedule, leases: Leases) -> None:
        self._deps = deps
        self._schedule = schedule
        self._leases = leases
        self._runners = StepRunners(deps)
        self._tracer = tracer(__name__)
        self._tasks: set[asyncio.Task[None]] = set()
        # Orders a caller of this process waits on (advance_now), set when a step is recorded.
        self._changes: dict[str, asyncio.Event] = {}

    @property
    def schedule(self) -> process.Schedule:
        return self._schedule

    async def advance(
        self, order_id: str, caller: process.Caller | None = None, inputs: StepInputs | None = None
    ) -> PaymentOrder:
        """Run the order's due steps until it waits, is done, or another holder has it."""
        decided = await self._decide(order_id, caller)
        return await self._carry_on(order_id, decided, caller, inputs or StepInputs())

    async def start(
        self,
        uow: UnitOfWork,
        order: PaymentOrder,
        caller: process.Caller,
        before_local: Callable[[], Awaitable[None]] | None = None,
    ) -> Started:
        """In the transaction about to store `order` (new, or with a new attempt): decide its next
        step and take its lease, written with the order. `carry_on` runs it after the commit.
        `before_local` writes the order first should a local step come before (its effects are
        checked against storage)."""
        return await self._decide_in(uow, order, caller, before_local=before_local)

    async def carry_on(
        self, order_id: str, decided: Started, caller: process.Caller, inputs: StepInputs
    ) -> PaymentOrder:
        return await self._carry_on(order_id, decided, caller, inputs)

    async def _carry_on(
        self, order_id: str, decided: _Decided, caller: process.Caller | None, inputs: StepInputs
    ) -> PaymentOrder:
        for _ in range(MAX_STEPS_PER_CALL):
            if decided.step is None:
                return decided.order
            try:
                outcome = await self._run(decided, inputs)
            except BaseException:
                # Cancelled mid-call (the caller's deadline passed): hand the lease back at once so
                # the janitor asks about the outcome, instead of the order waiting out the lease.
                self._spawn(self._release(order_id, decided.token))
                raise
            decided = await self._record(order_id, decided, outcome, caller)
            if outcome.error is not None:
                raise outcome.error
        log.warning("order %s still had steps after %d; the janitor continues", order_id, MAX_STEPS_PER_CALL)
        return decided.order

    async def advance_now(
        self, order_id: str, caller: process.Caller, inputs: StepInputs, patience_s: float
    ) -> PaymentOrder:
        """`advance` for a caller that needs the step's answer (PayPaymentOrder needs its QR code):
        when another caller holds the order's lease, wait for its step to be recorded (up to
        `patience_s`) and ask again, instead of running the same step beside it."""
        deadline = asyncio.get_running_loop().time() + patience_s
        while True:
            changed = self._change_of(order_id)
            order = await self.advance(order_id, caller, inputs)
            if not self._busy_elsewhere(order) or asyncio.get_running_loop().time() >= deadline:
                return order
            with contextlib.suppress(TimeoutError):
                # A holder in this process wakes us; one in another replica is seen on the next look.
                await asyncio.wait_for(changed.wait(), timeout=min(_LOOK_AGAIN_S, deadline - _now()))

    async def record(self, order_id: str, record: Record) -> PaymentOrder:
        """Record what someone told us or asked for, then run what is due."""
        decided = await self._note(order_id, record)
        return await self._carry_on(order_id, decided, None, StepInputs())

    async def note_and_carry_on(self, order_id: str, record: Record) -> None:
        """Record what a channel told us (a repeat changes nothing) and run what it leads to in the
        background, in the caller's trace but not under its deadline: a channel wants its
        notification answered now, the 2207 it leads to may take longer."""
        decided = await self._note(order_id, record)
        if decided.step is not None:
            self._spawn(self._carry_on_logged(order_id, decided))

    async def _note(self, order_id: str, record: Record) -> _Decided:
        async with self._deps.uow() as uow:
            order = await uow.lock_order(order_id)
            at_start = _Mark.of(order)
            self._apply(order, record, since=None, counts_as_attempt=False)
            await record_effects(uow, at_start.snapshot, order)
            decided = await self._decide_after(uow, order, at_start, None, take_lease=True)
        self._changed(order_id)
        return decided

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work, context=detached_context())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _release(self, order_id: str, token: str) -> None:
        try:
            async with self._deps.uow() as uow:
                order = await uow.lock_order(order_id)
                if order.lease_holder == token:
                    order.lease_holder, order.lease_expires_at = None, None
                    order.due_at = self._deps.clock()
                    await uow.orders.save_order_row(order)
        except Exception:
            log.exception("could not hand back the lease of order %s; it expires by itself", order_id)

    async def drain(self, timeout_s: float) -> None:
        """At shutdown: let running steps finish; the janitor of the next start takes the rest."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)
        for task in list(self._tasks):
            task.cancel()

    async def _carry_on_logged(self, order_id: str, decided: _Decided) -> None:
        try:
            await self._carry_on(order_id, decided, None, StepInputs())
        except errors.MedPayError as error:
            log.info("order %s: %s (recorded; the janitor carries on)", order_id, error.message)
        except Exception:
            log.exception("advancing order %s failed; the janitor carries on", order_id)

    # ---- the two transactions --------------------------------------------------------------------

    async def _decide(self, order_id: str, caller: process.Caller | None) -> _Decided:
        async with self._deps.uow() as uow:
            order = await uow.lock_order(order_id)
            at_start = _Mark.of(order)
            decided = await self._decide_in(uow, order, caller)
            await self._save(uow, order, at_start)
        return decided

    async def _decide_in(
        self,
        uow: UnitOfWork,
        order: PaymentOrder,
        caller: process.Caller | None,
        take_lease: bool = True,
        before_local: Callable[[], Awaitable[None]] | None = None,
    ) -> _Decided:
        """Within the caller's transaction: run the local steps that are due, then either take the
        lease for the next outbound step or note when the order is due again (now, when the
        caller will not run it: it is about to report an error)."""
        for _ in range(MAX_STEPS_PER_CALL):
            now = self._deps.clock()
            step = process.next_step(order, now, self._schedule, caller)
            if isinstance(step, process.Wait | process.Done):
                order.due_at = step.until if isinstance(step, process.Wait) else None
                return _Decided(order)
            if await self._leases.held_by_another(uow, order, now):
                order.due_at = min(_far(order), now + self._leases.recheck_after)
                return _Decided(order)
            if not isinstance(step, process.LOCAL_STEPS):
                if not take_lease:
                    order.due_at = now
                    return _Decided(order)
                break
            if before_local is not None:  # a local step's effects are checked against storage
                await before_local()
                before_local = None
            before = Snapshot.of(order)
            self._apply(order, self._local(step), since=None)
            await record_effects(uow, before, order)
        token = self._leases.new_token()
        order.lease_holder, order.lease_expires_at = token, now + self._leases.hold_for
        order.due_at = now + self._leases.recheck_after
        return _Decided(order, step, token, Snapshot.of(order))

    async def _run(self, decided: _Decided, inputs: StepInputs) -> Outcome:
        assert decided.step is not None
        name = type(decided.step).__name__
        with self._tracer.start_as_current_span(
            f"order step {name}", attributes={ATTR_ORDER_ID: decided.order.order_id}
        ):
            try:
                return await self._runners.run(decided.step, decided.order, inputs)
            except errors.MedPayError as error:
                return Outcome(error=error)

    async def _record(
        self, order_id: str, decided: _Decided, outcome: Outcome, caller: process.Caller | None
    ) -> _Decided:
        """The outcome, its effects and the next decision, in one transaction."""
        async with self._deps.uow() as uow:
            if outcome.forget:
                await uow.orders.delete_intent(order_id)
                return _Decided(decided.order)
            order = await uow.lock_order(order_id)
            at_start = _Mark.of(order)
            if order.lease_holder == decided.token:
                order.lease_holder, order.lease_expires_at = None, None
            self._apply(order, outcome.record, decided.at_intent)
            await record_effects(uow, at_start.snapshot, order)
            following = await self._decide_after(uow, order, at_start, caller, outcome.error is None)
        self._changed(order_id)
        return following

    async def _decide_after(
        self,
        uow: UnitOfWork,
        order: PaymentOrder,
        at_start: _Mark,
        caller: process.Caller | None,
        take_lease: bool,
    ) -> _Decided:
        """Decide, then write what was recorded and decided in one go; what was recorded is written
        first only when a local step follows (storage checks its refund against it)."""
        written = [at_start]

        async def write_recorded() -> None:
            await self._save(uow, order, written[0])
            written[0] = _Mark.of(order)

        decided = await self._decide_in(uow, order, caller, take_lease, before_local=write_recorded)
        await self._save(uow, order, written[0])
        return decided

    def _apply(
        self, order: PaymentOrder, record: Record, since: Snapshot | None, counts_as_attempt: bool = True
    ) -> None:
        """Record a change. The schedule restarts if the order moved since `since` (the state its
        step was decided on; default: now); else the question counts as asked once more (a
        repeated notification counts as nothing)."""
        now = self._deps.clock()
        before = Snapshot.of(order)
        record(order, now)
        if Snapshot.of(order) != (since or before):
            order.moved(now)
        elif counts_as_attempt:
            order.still_waiting(now)

    async def _save(self, uow: UnitOfWork, order: PaymentOrder, at_start: _Mark) -> None:
        """Write what the transaction changed: the whole order when its payments, refunds or
        status moved (watchers are told), only its row for its clock, lease or due time."""
        now = _Mark.of(order)
        if now.snapshot != at_start.snapshot:
            await uow.orders.save(order)
        elif now.row != at_start.row:
            await uow.orders.save_order_row(order)

    def _change_of(self, order_id: str) -> asyncio.Event:
        return self._changes.setdefault(order_id, asyncio.Event())

    def _changed(self, order_id: str) -> None:
        event = self._changes.pop(order_id, None)
        if event is not None:
            event.set()

    def _busy_elsewhere(self, order: PaymentOrder) -> bool:
        until = order.lease_expires_at
        return bool(order.lease_holder) and until is not None and until > self._deps.clock()

    def _local(self, step: process.Step) -> Record:
        match step:
            case process.CloseOrder(reason):
                return lambda o, _now: o.close(reason)
            case process.GiveUp(attention, reason):
                return lambda o, _now: o.give_up(attention, reason)
            case process.RefundLateSuccess(payment_id):
                refund_id = self._deps.new_id("rfd")
                return lambda o, now: _give_back(o, refund_id, payment_id, now)
            case process.ReturnPayment(payment_id):
                refund_id = self._deps.new_id("rfd")
                return lambda o, now: _return(o, refund_id, payment_id, now)
            case process.ConsumeDeposit(out_trade_no):
                return lambda o, now: self._debit_deposit(o, out_trade_no, now)
        raise AssertionError(f"{step!r} is not a local step")

    def _debit_deposit(self, order: PaymentOrder, out_trade_no: str, now: datetime) -> None:
        """The deposit channel's word, recorded as any channel's; effects debits the balance."""
        payment = order.payment_by_trade_no(out_trade_no)
        assert payment is not None
        trade_news(self._deps.deposit.debit(out_trade_no, payment.amount, now))(order, now)


def _give_back(order: PaymentOrder, refund_id: str, payment_id: str, now: datetime) -> None:
    payment = next(p for p in order.payments if p.payment_id == payment_id)
    order.give_back(refund_id, payment, now)


def _return(order: PaymentOrder, refund_id: str, payment_id: str, now: datetime) -> None:
    payment = next(p for p in order.payments if p.payment_id == payment_id)
    order.return_payment(refund_id, payment, now)


def _now() -> float:
    return asyncio.get_running_loop().time()


def _far(order: PaymentOrder) -> datetime:
    return order.lease_expires_at or order.expires_at
