"""CloseCashierShift (收费员日结): the cashier's shift totals, read from the ledger and stored, so
closing the same shift again answers the same figures."""

from __future__ import annotations

from datetime import timedelta

from services.payment_core.domain.shift import CashierShift, shift_totals
from services.payment_core.service_layer import commands
from services.payment_core.service_layer.dependencies import Dependencies
from services.runtime import errors

# How far a window's clock may run ahead of ours: a close "now" from the cashier's terminal.
CLOCK_SKEW = timedelta(minutes=2)
# A close that lost a race to another close of the same cashier is tried again this many times.
_ATTEMPTS = 3


class CashierShifts:
    def __init__(self, deps: Dependencies) -> None:
        self._deps = deps

    async def close(self, cmd: commands.CloseCashierShift) -> CashierShift:
        """The shift from the cashier's previous close (or the beginning) to `closed_at`. A close at
        a time already closed answers the stored shift; a close before the last one is refused."""
        if cmd.closed_at > self._deps.clock() + CLOCK_SKEW:
            raise errors.InvalidArgument.field("closed_at", "must not be in the future")
        for _ in range(_ATTEMPTS - 1):
            try:
                return await self._close_once(cmd)
            except errors.StorageConflict:
                continue  # another close of this cashier committed first: look again
        return await self._close_once(cmd)

    async def _close_once(self, cmd: commands.CloseCashierShift) -> CashierShift:
        async with self._deps.uow() as uow:
            stored = await uow.shifts.at(cmd.cashier_id, cmd.campus_code, cmd.closed_at)
            if stored is not None:
                return stored
            previous = await uow.shifts.latest(cmd.cashier_id, cmd.campus_code)
            if previous is not None and previous.closed_at == cmd.closed_at:
                # The same close, committed by a concurrent request between the two reads (each
                # statement reads what is committed when it starts, at READ COMMITTED).
                return previous
            if previous is not None and cmd.closed_at <= previous.closed_at:
                raise errors.InvalidArgument.field(
                    "closed_at", "must be after the cashier's previous close at this campus"
                )
            counted = await uow.shifts.uncounted(cmd.cashier_id, cmd.campus_code, cmd.closed_at)
            shift = CashierShift(
                shift_id=self._deps.new_id("shift"),
                cashier_id=cmd.cashier_id,
                campus_code=cmd.campus_code,
                opened_at=previous.closed_at if previous else None,
                closed_at=cmd.closed_at,
                totals=shift_totals(counted),
            )
            await uow.shifts.add(shift, cmd.request_id, counted)
        return shift
