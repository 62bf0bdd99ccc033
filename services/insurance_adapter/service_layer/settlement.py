"""Settlement (2207), its resolution when the answer was lost (5203), and revocation (2208).

2207 is the one message that moves the insurer's money, so its msgid is recorded before it is
sent and every later attempt reuses it: the insurer answers a repeated msgid with its first
answer, and 5203 finds the settlement a msgid created. An UNKNOWN settlement is decided only by
one of those two answers, never by a guess.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

from services.insurance_adapter.adapters.events import revoked_event, settled_event
from services.insurance_adapter.domain.settlement import Settlement, SettlementBreakdown, SettlementStatus
from services.insurance_adapter.service_layer.handlers import SettlementSteps, Step
from services.insurance_adapter.service_layer.ports import InsurerSettlement
from services.insurance_adapter.service_layer.unit_of_work import UnitOfWork
from services.runtime.errors import InsurerRejected, InsurerUnavailable, OutcomeUnknown, StateConflict

S = SettlementStatus


class SettlementHandlers(SettlementSteps):
    async def settle(self, settlement_id: str, invoice_no: str) -> Settlement:
        settlement = await self._load(settlement_id)
        if settlement.status in (S.SETTLED, S.FAILED, S.CANCELLED):
            # Already decided: a retry (its first answer lost) gets the same outcome, so a caller
            # can compensate a refusal instead of waiting for a settlement that will never come.
            return settlement
        if settlement.awaits_insurer:
            settlement = await self._resolve(settlement)
            if settlement.status is S.SETTLED:
                return settlement
        return await self._send_settlement(settlement, invoice_no)

    async def refresh(self, settlement_id: str) -> Settlement:
        """Ask the insurer about a settlement whose 2207 answer is outstanding (5203 by msgid)."""
        settlement = await self._load(settlement_id)
        return await self._resolve(settlement) if settlement.awaits_insurer else settlement

    async def revoke(self, settlement_id: str) -> Settlement:
        """2208, then REVOKED with its event; the insurer answers a repeated 2208 with the same
        revocation, so a retry after a lost answer is safe."""
        settlement = await self._load(settlement_id)
        if settlement.status is S.REVOKED:
            return settlement
        settlement.require_revocable()
        try:
            offset = await self._insurer.revoke_settlement(settlement.visit, settlement.setl_id)
        except OutcomeUnknown as unknown:
            reason = unknown.message
            await self._note(settlement_id, lambda found: found.record_revocation_unknown(reason))
            raise
        revoked, _ = await self._change(settlement_id, _record_revoked(offset.settled_at or self._now()))
        return revoked

    async def _send_settlement(self, settlement: Settlement, invoice_no: str) -> Settlement:
        earlier_unknown = settlement.awaits_insurer
        intent = _record_intent(self._insurer.new_msgid(), invoice_no)
        settlement, msgid = await self._change(settlement.settlement_id, intent)
        if msgid is None:
            return settlement  # another request settled it meanwhile
        try:
            answer = await self._insurer.settle(
                settlement.visit, settlement.chrg_bchno, _presettled(settlement), settlement.invoice_no, msgid
            )
        except (InsurerRejected, InsurerUnavailable, OutcomeUnknown) as failure:
            await self._note(
                settlement.settlement_id, _while_awaiting(_failure_step(failure, earlier_unknown))
            )
            raise
        return await self._record_answer(settlement.settlement_id, answer)

    async def _resolve(self, settlement: Settlement) -> Settlement:
        found = await self._insurer.find_settlement(settlement.visit.psn_no, settlement.settle_msgid)
        if found is None:
            reason = f"5203: the insurer has no settlement for msgid {settlement.settle_msgid} (yet)"
            await self._note(
                settlement.settlement_id, _while_awaiting(lambda still: still.note_still_unknown(reason))
            )
            return await self._load(settlement.settlement_id)
        return await self._record_answer(settlement.settlement_id, found)

    async def _record_answer(self, settlement_id: str, answer: InsurerSettlement) -> Settlement:
        settled, _ = await self._change(
            settlement_id, _record_settled(answer, answer.settled_at or self._now())
        )
        return settled

    async def _note(self, settlement_id: str, change: Callable[[Settlement], None]) -> None:
        """A transition that emits nothing: only the settlement row changes."""

        async def apply(found: Settlement, _uow: UnitOfWork) -> None:
            change(found)

        await self._change(settlement_id, apply)


def _record_intent(
    new_msgid: str, invoice_no: str
) -> Callable[[Settlement, UnitOfWork], Awaitable[str | None]]:
    """Intent first: the msgid is committed before the 2207 leaves. None = already settled."""

    async def step(found: Settlement, _uow: UnitOfWork) -> str | None:
        if found.status is S.SETTLED:
            return None
        return found.begin_settlement(new_msgid, invoice_no)

    return step


def _record_settled(answer: InsurerSettlement, settled_at: datetime) -> Step:
    async def step(found: Settlement, uow: UnitOfWork) -> None:
        if found.status in (S.SETTLED, S.REVOKED):
            return  # a concurrent request recorded the same answer first
        found.record_settled(answer.setl_id, answer.breakdown, settled_at)
        await uow.record_event(settled_event(found))
        if answer.refunded:  # settled and since revoked (e.g. reversed by 2601): record both
            found.record_revoked(settled_at)
            await uow.record_event(revoked_event(found))

    return step


def _record_revoked(revoked_at: datetime) -> Step:
    async def step(found: Settlement, uow: UnitOfWork) -> None:
        if found.status is S.REVOKED:
            return
        found.record_revoked(revoked_at)
        await uow.record_event(revoked_event(found))

    return step


def _failure_step(
    failure: InsurerRejected | InsurerUnavailable | OutcomeUnknown, earlier_unknown: bool
) -> Callable[[Settlement], None]:
    """What a failed 2207 means: refused → FAILED; not reached → back where it stood; lost → UNKNOWN."""
    reason = failure.message
    if isinstance(failure, InsurerRejected):
        return lambda found: found.record_refused(reason)
    if isinstance(failure, InsurerUnavailable):
        return lambda found: found.record_not_sent(reason, earlier_unknown)
    return lambda found: found.record_outcome_unknown(reason)


def _while_awaiting(change: Callable[[Settlement], None]) -> Callable[[Settlement], None]:
    """Apply a note only while the 2207 answer is outstanding: a concurrent request may have
    recorded the insurer's answer in the meantime, and that answer wins."""

    def guarded(found: Settlement) -> None:
        if found.awaits_insurer:
            change(found)

    return guarded


def _presettled(settlement: Settlement) -> SettlementBreakdown:
    if settlement.breakdown is None:
        raise StateConflict(f"settlement {settlement.settlement_id} has no pre-settlement split")
    return settlement.breakdown
