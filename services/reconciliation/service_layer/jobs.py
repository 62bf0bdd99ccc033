"""Reconciliation runs as jobs of the reconciliation process, which survive the process.

A run is stored RUNNING first, under this process's lease (`holder`, `lease_expires_at`), then an
asyncio task executes it (at most `max_concurrent` at a time), renewing the lease every
`renew_every` while it waits for its turn and while it works. Its outcome is stored only while the
lease is still its own (a compare-and-set on holder and attempt), with its discrepancies replacing
whatever an earlier attempt stored, so an execution that lost its run can never overwrite the one
that took it over.

`sweep()` (at start-up, then every `sweep_every`) takes over RUNNING runs whose lease ran out (their
process died) and executes them again from a clean slate; an attempt that raised is tried again at
once by its own task. After `max_attempts` executions the run ends FAILED with the reason: a run is
never RUNNING forever.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from services.reconciliation.adapters.events import reconciliation_completed
from services.reconciliation.adapters.unit_of_work import UnitOfWork
from services.reconciliation.domain.model import HOLDER_STOPPED, ReconciliationRun, RunStatus
from services.reconciliation.service_layer.reconcile_day import RunOutcome
from services.runtime.clock import new_id, utcnow
from services.runtime.errors import NotFound
from services.runtime.interceptors import detached_context
from services.runtime.masking import scrub

log = logging.getLogger(__name__)
# How often a wait on a run executed by another process looks at it again.
_POLL_S = 0.2
# Abandoned runs taken over per sweep; the rest wait for the next one.
_SWEEP_BATCH = 20


@dataclass(frozen=True, slots=True)
class JobPolicy:
    holder: str
    lease: timedelta = timedelta(seconds=20)
    renew_every: timedelta = timedelta(seconds=5)
    sweep_every: timedelta = timedelta(seconds=5)
    max_attempts: int = 3
    max_concurrent: int = 2
    retry_after: timedelta = timedelta(seconds=1)
    # One execution longer than this is stopped and counted as a failed attempt (a source that
    # hangs must not keep a run RUNNING forever while its lease is dutifully renewed).
    attempt_limit: timedelta = timedelta(minutes=15)


class LeaseLost(Exception):
    """Another process holds the run now: this execution stops and stores nothing."""


class AttemptTooLong(Exception):
    """An execution ran past the policy's attempt_limit."""


class ReconciliationJobs:
    def __init__(
        self,
        unit_of_work: Callable[[], UnitOfWork],
        reconcile: Callable[[ReconciliationRun], Awaitable[RunOutcome]],
        policy: JobPolicy,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._uow = unit_of_work
        self._reconcile = reconcile
        self._policy = policy
        self._holder = policy.holder
        self._clock = clock
        self._slots = asyncio.Semaphore(policy.max_concurrent)
        self._tasks: dict[str, asyncio.Task[None]] = {}

    @property
    def holder(self) -> str:
        """This process, as the holder of the leases of the runs it executes."""
        return self._holder

    # ---- what RunReconciliation uses -------------------------------------------------------------

    async def start(self, business_date: date) -> ReconciliationRun:
        """The day's RUNNING run, whoever executes it; else a new run, stored and launched here."""
        for _ in range(3):  # the day's run may end between the two looks; then look again
            now = self._clock()
            new = ReconciliationRun.start(new_id("rcn"), business_date, now, self._holder, self._lease(now))
            async with self._uow() as uow:
                run = await uow.runs.add_unless_running(new)
            if run is new:
                self._launch(run)
                return run
            if run is not None:
                abandoned = run.lease_expired(self._clock()) and run.run_id not in self._tasks
                return await self._take_over(run) if abandoned else run
        raise RuntimeError(f"no run of {business_date} could be started or joined")

    async def wait(self, run_id: str, within_s: float) -> ReconciliationRun:
        """The run once it has ended, or as it stands when `within_s` have passed."""
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + within_s
        while True:
            run = await self.run_of(run_id)
            left = give_up_at - loop.time()
            if run.status is not RunStatus.RUNNING or left <= 0:
                return run
            task = self._tasks.get(run_id)
            if task is not None:
                await asyncio.wait({task}, timeout=left)
            else:
                await asyncio.sleep(min(_POLL_S, left))

    async def run_of(self, run_id: str) -> ReconciliationRun:
        async with self._uow() as uow:
            run = await uow.runs.get(run_id)
        if run is None:
            raise NotFound(f"reconciliation run {run_id} not found", {"run_id": run_id})
        return run

    # ---- what the service host runs ------------------------------------------------------------

    async def run(self) -> None:
        """Background task of the host: a sweep at start-up, then one every `sweep_every`."""
        while True:
            try:
                await self.sweep()
            except Exception:
                log.exception("reconciliation takeover sweep failed; next in %s", self._policy.sweep_every)
            await asyncio.sleep(self._policy.sweep_every.total_seconds())

    async def sweep(self) -> list[ReconciliationRun]:
        """Take over the RUNNING runs whose holder stopped renewing their lease; returns them as
        they are now (RUNNING here again, or FAILED when no attempt was left)."""
        async with self._uow() as uow:
            abandoned = await uow.runs.abandoned(self._clock(), _SWEEP_BATCH)
        return [await self._take_over(run) for run in abandoned if run.run_id not in self._tasks]

    async def stop(self) -> None:
        """At shutdown: stop this process's executions and hand their runs back, so the next
        process takes them over at once (the interrupted attempt is not counted)."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            async with self._uow() as uow:
                handed_back = await uow.runs.hand_back(self._holder, self._clock())
        except Exception:
            log.warning("runs of this process not handed back; their leases will run out", exc_info=True)
            return
        if handed_back:
            log.info("handed back %d unfinished reconciliation runs", handed_back)

    # ---- one run's executions ------------------------------------------------------------------

    def _launch(self, run: ReconciliationRun) -> None:
        # Detached: the run outlives the call that started it, and is bounded by its own lease.
        name = f"reconcile:{run.run_id}"
        task = asyncio.create_task(self._execute(run), name=name, context=detached_context())
        self._tasks[run.run_id] = task
        task.add_done_callback(functools.partial(self._forget, run.run_id))

    def _forget(self, run_id: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(run_id) is task:
            del self._tasks[run_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("reconciliation %s stopped; its lease will run out", run_id, exc_info=task.exception())

    async def _execute(self, run: ReconciliationRun | None) -> None:
        """Attempt after attempt until the run has an outcome, gives up, or is someone else's."""
        while run is not None and run.status is RunStatus.RUNNING:
            try:
                await self._attempt(run)
                return
            except LeaseLost:
                log.warning("reconciliation %s is executed by another process now", run.run_id)
                return
            except Exception as error:
                log.exception("reconciliation %s: attempt %d failed", run.run_id, run.attempts)
                run = await self._next_attempt(run, _why(error))
            if run is not None and run.status is RunStatus.RUNNING:
                await asyncio.sleep(self._policy.retry_after.total_seconds())

    async def _attempt(self, run: ReconciliationRun) -> None:
        """One execution, with the lease renewed until it is done."""
        name = f"reconcile:{run.run_id}:{run.attempts}"
        work = asyncio.create_task(self._reconcile_in_turn(run), name=name)
        try:
            kept = await self._renew_until_done(run, work)
        finally:
            if not work.done():  # stopping, or the run was lost: let it unwind before going on
                work.cancel()
                await asyncio.gather(work, return_exceptions=True)
        if not kept:
            raise LeaseLost(run.run_id)
        await work

    async def _reconcile_in_turn(self, run: ReconciliationRun) -> None:
        limit = self._policy.attempt_limit
        async with self._slots:
            try:
                async with asyncio.timeout(limit.total_seconds()):
                    outcome = await self._reconcile(run)
            except TimeoutError:
                raise AttemptTooLong(f"it took longer than {limit.total_seconds():g}s") from None
            await self._record(run, outcome)

    async def _record(self, was: ReconciliationRun, outcome: RunOutcome) -> None:
        """The outcome, its discrepancies (in place of any earlier attempt's) and, for a completed
        run, its event, in one transaction; nothing at all if the run is no longer ours."""
        run = outcome.run
        async with self._uow() as uow:
            if not await uow.runs.save_over(was, run):
                raise LeaseLost(run.run_id)
            found_at = run.finished_at or self._clock()
            await uow.discrepancies.replace_all(run.run_id, outcome.discrepancies, found_at)
            if run.status is RunStatus.COMPLETED:
                await uow.record_event(reconciliation_completed(run))
        log.info("reconciliation %s of %s %s: %d matched, %d discrepancies", run.run_id, run.business_date,
                 run.status.value, run.matched_count, run.discrepancy_count)  # fmt: skip

    async def _renew_until_done(self, run: ReconciliationRun, work: asyncio.Task[None]) -> bool:
        """False as soon as a renewal finds the run no longer held by this execution."""
        every = self._policy.renew_every.total_seconds()
        while not work.done():
            await asyncio.wait({work}, timeout=every)
            if not work.done() and not await self._renewed(run) and not await self._ended_here(run):
                return False
        return True

    async def _ended_here(self, run: ReconciliationRun) -> bool:
        """A renewal that raced this execution's own outcome being stored finds the run ended."""
        stored = await self.run_of(run.run_id)
        ours = (stored.holder, stored.attempts) == (run.holder, run.attempts)
        return ours and stored.status is not RunStatus.RUNNING

    async def _renewed(self, run: ReconciliationRun) -> bool:
        try:
            async with self._uow() as uow:
                return await uow.runs.renew(run, self._lease(self._clock()))
        except Exception:
            # A database hiccup is not a takeover: keep working; the outcome is fenced anyway.
            log.warning("lease of reconciliation %s not renewed this time", run.run_id, exc_info=True)
            return True

    async def _take_over(self, run: ReconciliationRun) -> ReconciliationRun:
        """Execute an abandoned run here, or end it FAILED when it has no attempt left."""
        taken = await self._next_attempt(run, HOLDER_STOPPED, expired_by=self._clock())
        if taken is None:  # another process was quicker, or the holder renewed after all
            return await self.run_of(run.run_id)
        if taken.status is RunStatus.RUNNING:
            log.warning("reconciliation %s of %s taken over, attempt %d: %s", run.run_id, run.business_date,
                        taken.attempts, HOLDER_STOPPED)  # fmt: skip
            self._launch(taken)
        else:
            log.error("reconciliation %s of %s: %s", run.run_id, run.business_date, taken.failure_reason)
        return taken

    async def _next_attempt(
        self, run: ReconciliationRun, why: str, expired_by: datetime | None = None
    ) -> ReconciliationRun | None:
        """The run's next attempt under this process's lease, or FAILED when none is left; None when
        the run is no longer held as `run` says (someone else has it)."""
        now = self._clock()
        if run.attempts >= self._policy.max_attempts:
            following = run.given_up(why, now)
        else:
            following = run.attempted_again(self._holder, self._lease(now), why)
        async with self._uow() as uow:
            stored = await uow.runs.save_over(run, following, expired_by)
        return following if stored else None

    def _lease(self, now: datetime) -> datetime:
        return now + self._policy.lease


def _why(error: Exception) -> str:
    """An attempt's failure as stored and shown: partner texts are free text, so scrubbed."""
    return scrub(f"{type(error).__name__}: {error}")[:500]
