"""Pre-settlement: 1101 → 2201 → 2204 → 2206, each step's result kept as a recovery point, and
its undoing (2205). A Presettle for an order that already has one continues or returns it.
The steps themselves are decided by domain/process.py and run by service_layer/process.py."""

from __future__ import annotations

from dataclasses import replace

from services.insurance_adapter.domain import commands
from services.insurance_adapter.domain.person import InsuredPerson, PatientVoucher
from services.insurance_adapter.domain.process import Goal
from services.insurance_adapter.domain.settlement import Settlement, SettlementStatus
from services.insurance_adapter.service_layer.handlers import Dependencies, SettlementSteps
from services.insurance_adapter.service_layer.ports import current_order_ref
from services.insurance_adapter.service_layer.process import SettlementProcess
from services.runtime.errors import NotFound, StateConflict


class PresettlementHandlers(SettlementSteps):
    def __init__(self, deps: Dependencies) -> None:
        super().__init__(deps)
        self._process = SettlementProcess(deps)

    async def query_person(self, voucher: PatientVoucher) -> InsuredPerson:
        return await self._insurer.query_person(voucher)

    async def presettle(self, command: commands.Presettle) -> Settlement:
        current_order_ref.set(command.order_ref)
        settlement = await self._process.open(command)
        # The bill's fingerprint matched the stored one, so it is the bill the settlement holds.
        return await self._process.advance(
            settlement.settlement_id, Goal.PRESETTLED, bill=command.bill, opened=settlement
        )

    async def represettle(self, command: commands.Represettle) -> Settlement:
        """What remains of a partly refunded bill, pre-settled again (2204 + 2206 in a new batch)
        on the revoked settlement's visit: the same person and mdtrt_id, no 1101/2201 (NHSA keeps
        the visit registered after a 2208). A repeat continues the new settlement."""
        current_order_ref.set(command.order_ref)
        revoked = await self._load(command.revoked_settlement_id)
        if revoked.order_ref != command.order_ref or revoked.status is not SettlementStatus.REVOKED:
            raise StateConflict(
                f"settlement {revoked.settlement_id} is {revoked.status} for another order or not revoked",
                {"settlement_id": revoked.settlement_id, "status": revoked.status.value},
            )
        async with self._deps.unit_of_work(read_only=True) as uow:
            bill = replace(await uow.settlements.bill_of(revoked.settlement_id), lines=command.lines)
        settlement = await self._process.reopen(command.order_ref, revoked.visit, bill)
        return await self._process.advance(
            settlement.settlement_id, Goal.PRESETTLED, bill=bill, opened=settlement
        )

    async def cancel(self, settlement_id: str) -> Settlement:
        """2205 the uploaded batch, then CANCELLED; a cancelled one is returned as it is."""
        return await self._process.advance(settlement_id, Goal.CANCELLED)

    async def cancel_for_order(self, order_ref: str) -> Settlement:
        """2205 for the active pre-settlement of an order whose caller never learnt its id."""
        async with self._deps.unit_of_work(read_only=True) as uow:
            found = await uow.settlements.active_for_order(order_ref)
        if found is None:
            raise NotFound(f"no active pre-settlement for order {order_ref}", {"order_ref": order_ref})
        return await self.cancel(found.settlement_id)
