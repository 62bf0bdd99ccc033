"""Each step's message to the insurer, and what its answer does to the settlement.

`run` sends one step's message with no transaction open and returns a `Reply`: the change to apply
to the settlement once it is locked again (guarded: another request may have moved it meanwhile),
and the failure to pass on to the caller after that change is committed. Which step to run is
never decided here (domain/process.py's `next_step` does that).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import assert_never

from services.insurance_adapter.adapters.events import revoked_event, settled_event
from services.insurance_adapter.adapters.unit_of_work import UnitOfWork
from services.insurance_adapter.domain import commands
from services.insurance_adapter.domain.bill import OutpatientBill
from services.insurance_adapter.domain.person import Enrollment, InsuredPerson
from services.insurance_adapter.domain.process import (
    CancelPresettlement,
    InsurerStep,
    Presettle,
    QuerySettlement,
    Revoke,
    SendSettlement,
    UploadFees,
)
from services.insurance_adapter.domain.settlement import (
    InsuredVisit,
    QueryAnswer,
    Settlement,
    SettlementBreakdown,
    SettlementStatus,
)
from services.insurance_adapter.service_layer.handlers import Record
from services.insurance_adapter.service_layer.ports import Insurer, InsurerSettlement
from services.runtime.errors import (
    InsurerRejected,
    InsurerUnavailable,
    InvalidArgument,
    MedPayError,
    OutcomeUnknown,
    StateConflict,
)

S = SettlementStatus
# Every way a message can fail: refused, not reached, or sent with its answer lost.
InsurerFailure = InsurerRejected | InsurerUnavailable | OutcomeUnknown
BillSource = Callable[[], Awaitable[OutpatientBill]]


@dataclass(frozen=True, slots=True)
class Reply:
    record: Record
    failure: MedPayError | None = None  # raised to the caller once `record` is committed


class InsurerSteps:
    def __init__(self, insurer: Insurer, clock: Callable[[], datetime]) -> None:
        self._insurer = insurer
        self._now = clock

    async def register_visit(self, command: commands.Presettle) -> InsuredVisit:
        """RegisterVisit: 1101 (who, under which insurance in force), then 2201 (the visit, keyed
        by the visit number, so a repeat gets the same mdtrt_id)."""
        person = await self._insurer.query_person(command.voucher)
        visit = _visit_for(person, command)
        mdtrt_id = await self._insurer.register_visit(visit, command.bill, self._now())
        return replace(visit, mdtrt_id=mdtrt_id)

    async def run(self, settlement: Settlement, step: InsurerStep, bill: BillSource) -> Reply:
        match step:
            case UploadFees(chrg_bchno):
                await self._insurer.upload_fees(settlement.visit, chrg_bchno, await bill())
                return Reply(_when(S.VISIT_REGISTERED, lambda found: found.record_fees_uploaded(chrg_bchno)))
            case Presettle(chrg_bchno):
                return await self._presettle(settlement, chrg_bchno, await bill())
            case SendSettlement():
                return await self._settle(settlement, step)
            case QuerySettlement(msgid):
                return await self._query(settlement, msgid)
            case Revoke(setl_id):
                return await self._revoke(settlement, setl_id)
            case CancelPresettlement(chrg_bchno, unconfirmed):
                try:
                    await self._insurer.revoke_fees(settlement.visit, chrg_bchno)
                except InsurerRejected:
                    if not unconfirmed:
                        raise
                    # Its 2204 never landed (or was withdrawn): no fee lines of this batch are held.
                return Reply(_record_cancelled)
            case _:
                assert_never(step)

    async def _presettle(self, settlement: Settlement, chrg_bchno: str, bill: OutpatientBill) -> Reply:
        breakdown = await self._insurer.presettle(settlement.visit, chrg_bchno, bill)
        at = self._now()
        return Reply(_when(S.FEES_UPLOADED, lambda found: found.record_presettlement(breakdown, at)))

    async def _settle(self, settlement: Settlement, step: SendSettlement) -> Reply:
        """2207 under the msgid recorded before it left: refused → FAILED; not reached → back where
        it stood; answer lost → UNKNOWN. Each is passed on to the caller after it is recorded."""
        try:
            answer = await self._insurer.settle(
                settlement.visit,
                settlement.chrg_bchno,
                _presettled(settlement),
                settlement.invoice_no,
                step.msgid,
            )
        except (InsurerRejected, InsurerUnavailable, OutcomeUnknown) as failure:
            return Reply(_while_awaiting(_failed_settlement(failure, step.after_unknown)), failure)
        return Reply(_record_settled(answer, answer.settled_at or self._now()))

    async def _query(self, settlement: Settlement, msgid: str) -> Reply:
        """5203 by msgid. Only a found settlement decides; nothing found, or no answer, is counted
        so that next_step paces the next query. Never passed on: a refused query is no refusal."""
        try:
            found = await self._insurer.find_settlement(settlement.visit.psn_no, msgid)
        except (InsurerRejected, InsurerUnavailable, OutcomeUnknown) as failure:
            return self._undecided(QueryAnswer.NO_ANSWER, f"5203 got no answer: {failure.message}")
        if found is None:
            reason = f"5203: the insurer has no settlement for msgid {msgid} (yet)"
            return self._undecided(QueryAnswer.NOT_FOUND, reason)
        return Reply(_record_settled(found, found.settled_at or self._now()))

    def _undecided(self, answer: QueryAnswer, reason: str) -> Reply:
        at = self._now()
        return Reply(_while_awaiting(lambda still: still.note_undecided_query(answer, reason, at)))

    async def _revoke(self, settlement: Settlement, setl_id: str) -> Reply:
        """2208. A lost answer leaves it SETTLED with the reason: a repeated 2208 is answered with
        the revocation already booked, so the retry decides it."""
        try:
            offset = await self._insurer.revoke_settlement(settlement.visit, setl_id)
        except OutcomeUnknown as unknown:
            reason = unknown.message
            return Reply(_when(S.SETTLED, lambda found: found.record_revocation_unknown(reason)), unknown)
        return Reply(_record_revoked(offset.settled_at or self._now()))


def _when(status: SettlementStatus, change: Callable[[Settlement], None]) -> Record:
    """Apply `change` only if the settlement still stands where the step was decided."""

    async def record(found: Settlement, _uow: UnitOfWork) -> None:
        if found.status is status:
            change(found)

    return record


def _while_awaiting(change: Callable[[Settlement], None]) -> Record:
    """Apply a note only while the 2207 answer is outstanding: a concurrent request may have
    recorded the insurer's answer in the meantime, and that answer wins."""

    async def record(found: Settlement, _uow: UnitOfWork) -> None:
        if found.awaits_insurer:
            change(found)

    return record


def _failed_settlement(failure: InsurerFailure, after_unknown: bool) -> Callable[[Settlement], None]:
    reason = failure.message
    if isinstance(failure, InsurerRejected):
        return lambda found: found.record_refused(reason)
    if isinstance(failure, InsurerUnavailable):
        return lambda found: found.record_not_sent(reason, after_unknown)
    return lambda found: found.record_outcome_unknown(reason)


def _record_settled(answer: InsurerSettlement, settled_at: datetime) -> Record:
    async def record(found: Settlement, uow: UnitOfWork) -> None:
        if found.status in (S.SETTLED, S.REVOKED):
            return  # a concurrent request recorded the same answer first
        found.record_settled(answer.setl_id, answer.breakdown, settled_at)
        await uow.record_event(settled_event(found))
        if answer.refunded:  # settled and since revoked (e.g. reversed by 2601): record both
            found.record_revoked(settled_at)
            await uow.record_event(revoked_event(found))

    return record


def _record_revoked(revoked_at: datetime) -> Record:
    async def record(found: Settlement, uow: UnitOfWork) -> None:
        if found.status is S.REVOKED:
            return
        found.record_revoked(revoked_at)
        await uow.record_event(revoked_event(found))

    return record


async def _record_cancelled(found: Settlement, _uow: UnitOfWork) -> None:
    if found.status is not S.CANCELLED:  # raises if it moved on to a 2207 meanwhile
        found.cancel()


def _presettled(settlement: Settlement) -> SettlementBreakdown:
    if settlement.breakdown is None:
        raise StateConflict(f"settlement {settlement.settlement_id} has no pre-settlement split")
    return settlement.breakdown


def _visit_for(person: InsuredPerson, command: commands.Presettle) -> InsuredVisit:
    bill = command.bill
    enrollment = _enrollment(person, bill.insutype)
    return InsuredVisit(
        psn_no=person.psn_no,
        insutype=enrollment.insutype,
        med_type=bill.med_type,
        insuplc_admdvs=bill.insuplc_admdvs or enrollment.insuplc_admdvs,
        mdtrt_cert_type=command.voucher.mdtrt_cert_type,
        mdtrt_cert_no=command.voucher.mdtrt_cert_no,
        visit_no=bill.visit_no,
        mdtrt_id="",
        use_personal_account=bill.use_personal_account,
    )


def _enrollment(person: InsuredPerson, insutype: str) -> Enrollment:
    enrollment = person.enrollment_for(insutype)
    if enrollment is None:
        held = ", ".join(item.insutype for item in person.enrollments) or "none"
        raise InvalidArgument.field("insutype", f"the insured person holds no such insurance (holds {held})")
    if not enrollment.is_active:
        raise InsurerRejected(
            f"insurance {enrollment.insutype} is not in force (psn_insu_stas {enrollment.psn_insu_stas})",
            {"insutype": enrollment.insutype},
        )
    return enrollment
