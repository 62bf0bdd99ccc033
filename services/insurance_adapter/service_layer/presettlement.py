"""Pre-settlement: 1101 → 2201 → 2204 → 2206, each step's result kept as a recovery point, and
its undoing (2205). A Presettle for an order that already has one continues or returns it."""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy.exc import IntegrityError

from services.insurance_adapter.domain import commands
from services.insurance_adapter.domain.bill import OutpatientBill
from services.insurance_adapter.domain.person import Enrollment, InsuredPerson, PatientVoucher
from services.insurance_adapter.domain.settlement import (
    InsuredVisit,
    Settlement,
    SettlementStatus,
    charge_batch_no,
)
from services.insurance_adapter.service_layer.handlers import SettlementSteps, Step
from services.insurance_adapter.service_layer.ports import current_order_ref
from services.insurance_adapter.service_layer.unit_of_work import UnitOfWork
from services.runtime.clock import new_id
from services.runtime.errors import InsurerRejected, InvalidArgument, NotFound, StateConflict

S = SettlementStatus


class PresettlementHandlers(SettlementSteps):
    async def query_person(self, voucher: PatientVoucher) -> InsuredPerson:
        return await self._insurer.query_person(voucher)

    async def presettle(self, command: commands.Presettle) -> Settlement:
        current_order_ref.set(command.order_ref)
        settlement = await self._active_settlement(command)
        bill = command.bill
        if settlement is None:
            settlement = await self._register_visit(command)
        elif not settlement.is_presettled:
            async with self._deps.unit_of_work() as uow:
                bill = await uow.settlements.bill_of(settlement.settlement_id)
        return await self._continue(settlement, bill)

    async def cancel(self, settlement_id: str) -> Settlement:
        """2205 the uploaded batch, then CANCELLED; a cancelled one is returned as it is."""
        settlement = await self._load(settlement_id)
        if settlement.status is S.CANCELLED:
            return settlement
        settlement.require_cancellable()
        if settlement.status is not S.VISIT_REGISTERED:
            await self._insurer.revoke_fees(settlement.visit, settlement.chrg_bchno)
        cancelled, _ = await self._change(settlement_id, _cancel)
        return cancelled

    async def cancel_for_order(self, order_ref: str) -> Settlement:
        """2205 for the active pre-settlement of an order whose caller never learnt its id."""
        async with self._deps.unit_of_work() as uow:
            found = await uow.settlements.active_for_order(order_ref)
        if found is None:
            raise NotFound(f"no active pre-settlement for order {order_ref}", {"order_ref": order_ref})
        return await self.cancel(found.settlement_id)

    async def _active_settlement(self, command: commands.Presettle) -> Settlement | None:
        async with self._deps.unit_of_work() as uow:
            found = await uow.settlements.active_for_order(command.order_ref)
        if found is not None and found.bill_fingerprint != command.bill.fingerprint():
            raise StateConflict(
                f"order {command.order_ref} is already pre-settled with another bill; cancel that one first",
                {"order_ref": command.order_ref, "settlement_id": found.settlement_id},
            )
        return found

    async def _register_visit(self, command: commands.Presettle) -> Settlement:
        """1101 then 2201; the first recovery point is the registered visit with its mdtrt_id."""
        person = await self._insurer.query_person(command.voucher)
        visit = _visit_for(person, command)
        mdtrt_id = await self._insurer.register_visit(visit, command.bill, self._now())
        settlement = Settlement(
            settlement_id=new_id("stl"),
            order_ref=command.order_ref,
            bill_fingerprint=command.bill.fingerprint(),
            visit=replace(visit, mdtrt_id=mdtrt_id),
            created_at=self._now(),
        )
        return await self._store_new(settlement, command)

    async def _store_new(self, settlement: Settlement, command: commands.Presettle) -> Settlement:
        try:
            async with self._deps.unit_of_work() as uow:
                await uow.settlements.add(settlement, command.bill)
        except IntegrityError:
            # Another request opened this order meanwhile (the active-order index): continue that one.
            found = await self._active_settlement(command)
            if found is None:
                raise
            return found
        return settlement

    async def _continue(self, settlement: Settlement, bill: OutpatientBill) -> Settlement:
        if settlement.status is S.VISIT_REGISTERED:
            settlement = await self._upload_fees(settlement, bill)
        if settlement.status is S.FEES_UPLOADED:
            settlement = await self._presettle(settlement, bill)
        return settlement

    async def _upload_fees(self, settlement: Settlement, bill: OutpatientBill) -> Settlement:
        """2204; the second recovery point is the uploaded batch number."""
        chrg_bchno = charge_batch_no(settlement.settlement_id)
        await self._insurer.upload_fees(settlement.visit, chrg_bchno, bill)

        async def uploaded(found: Settlement, _uow: UnitOfWork) -> None:
            found.record_fees_uploaded(chrg_bchno)

        return await self._advance(settlement, S.VISIT_REGISTERED, uploaded)

    async def _presettle(self, settlement: Settlement, bill: OutpatientBill) -> Settlement:
        """2206; the last recovery point is the split itself."""
        breakdown = await self._insurer.presettle(settlement.visit, settlement.chrg_bchno, bill)
        presettled_at = self._now()

        async def presettled(found: Settlement, _uow: UnitOfWork) -> None:
            found.record_presettlement(breakdown, presettled_at)

        return await self._advance(settlement, S.FEES_UPLOADED, presettled)

    async def _advance(self, settlement: Settlement, expected: SettlementStatus, step: Step) -> Settlement:
        """Apply a step unless another request already took the settlement past it."""

        async def guarded(found: Settlement, uow: UnitOfWork) -> None:
            if found.status is expected:
                await step(found, uow)

        advanced, _ = await self._change(settlement.settlement_id, guarded)
        return advanced


async def _cancel(settlement: Settlement, _uow: UnitOfWork) -> None:
    settlement.cancel()


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
