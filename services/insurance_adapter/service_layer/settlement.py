"""Settlement (2207), its resolution when the answer was lost (5203), and revocation (2208).

2207 is the one message that moves the insurer's money, so its msgid is recorded before it is
sent and every later attempt reuses it: the insurer answers a repeated msgid with its first
answer, and 5203 finds the settlement a msgid created. An UNKNOWN settlement is decided only by
one of those two answers, never by a guess. The steps are decided by domain/process.py and run by
service_layer/process.py; these handlers say only what their caller asked for.
"""

from __future__ import annotations

from services.insurance_adapter.domain.process import Goal
from services.insurance_adapter.domain.settlement import Settlement
from services.insurance_adapter.service_layer.handlers import Dependencies, SettlementSteps
from services.insurance_adapter.service_layer.process import SettlementProcess


class SettlementHandlers(SettlementSteps):
    def __init__(self, deps: Dependencies) -> None:
        super().__init__(deps)
        self._process = SettlementProcess(deps)

    async def settle(self, settlement_id: str, invoice_no: str) -> Settlement:
        """Answered once decided (SETTLED, FAILED or CANCELLED, as it stands for a retry);
        otherwise an error to retry on, the settlement left where the insurer's word puts it."""
        return await self._process.advance(settlement_id, Goal.SETTLED, invoice_no=invoice_no)

    async def refresh(self, settlement_id: str) -> Settlement:
        """Ask the insurer about a settlement whose 2207 answer is outstanding (5203 by msgid),
        no more often than the query schedule allows; any other is returned as it is."""
        return await self._process.advance(settlement_id, Goal.KNOWN)

    async def revoke(self, settlement_id: str) -> Settlement:
        """2208, then REVOKED with its event; the insurer answers a repeated 2208 with the same
        revocation, so a retry after a lost answer is safe."""
        return await self._process.advance(settlement_id, Goal.REVOKED)
