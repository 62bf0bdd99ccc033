"""An in-memory InsurancePort for tests and the laptop demo without the NHSA simulator.

Keeps the adapter's rules that payment-core relies on: a request_id replays its first answer; the
settlement life cycle PRESETTLED → SETTLED → REVOKED (or CANCELLED) is enforced; Settle on a
settlement already SETTLED, FAILED or CANCELLED answers it as it stands; the split adds up.
Its policy is deliberately plain: 甲/乙 lines are in scope and the fund pays `fund_ratio` of them; the
personal account pays what it can of the rest when asked; the patient pays the remainder in cash.
`fail_next[step]` queues errors to raise instead of answering ("presettle", "settle", "cancel", "revoke",
"represettle").
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal

from services.payment_core.adapters.insurance import InsurerSettlement, InsurerStatus, PresettleAsk
from services.payment_core.domain.model import ChargeLine, InsuranceSplit, bill_total
from services.runtime.errors import InvalidArgument, NotFound, StateConflict
from services.runtime.money import Money, total

CLASS_C = "03"
_DECIDED = frozenset({InsurerStatus.SETTLED, InsurerStatus.FAILED, InsurerStatus.CANCELLED})


@dataclass
class FakeInsurance:
    fund_ratio: Decimal = Decimal("0.70")
    balance: Money = Money(1_000)  # noqa: RUF009 - Money is frozen, so one shared default is safe
    fail_next: dict[str, list[Exception]] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)
    settlements: dict[str, InsurerSettlement] = field(default_factory=dict)
    # order_ref -> settlement_id of its latest pre-settlement (for a cancel by order_ref)
    by_order: dict[str, str] = field(default_factory=dict)
    # order_ref -> whether its bill used the personal account (a re-settlement does as it did)
    uses_account: dict[str, bool] = field(default_factory=dict)
    _answers: dict[str, InsurerSettlement] = field(default_factory=dict)
    _serial: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def presettle(self, ask: PresettleAsk) -> InsurerSettlement:
        def act() -> InsurerSettlement:
            if not ask.med_type:
                raise InvalidArgument.field("med_type", "required")
            settlement = InsurerSettlement(
                settlement_id=f"stl-{next(self._serial)}",
                status=InsurerStatus.PRESETTLED,
                insutype=ask.insutype or "310",
                setl_id="",
                split=self.split_of(ask.lines, ask.use_personal_account),
            )
            self.settlements[settlement.settlement_id] = settlement
            self.by_order[ask.order_ref] = settlement.settlement_id
            self.uses_account[ask.order_ref] = ask.use_personal_account
            return settlement

        return self._answer("presettle", ask.request_id, act)

    async def represettle(
        self, request_id: str, order_ref: str, revoked_settlement_id: str, lines: tuple[ChargeLine, ...]
    ) -> InsurerSettlement:
        def act() -> InsurerSettlement:
            revoked = self.settlements.get(revoked_settlement_id)
            if revoked is None:
                raise NotFound(f"no settlement {revoked_settlement_id}")
            if (
                revoked.status is not InsurerStatus.REVOKED
                or self.by_order.get(order_ref) != revoked_settlement_id
            ):
                raise StateConflict(f"settlement {revoked_settlement_id} is {revoked.status.value}")
            settlement = replace(
                revoked,
                settlement_id=f"stl-{next(self._serial)}",
                status=InsurerStatus.PRESETTLED,
                setl_id="",
                split=self.split_of(lines, self.uses_account.get(order_ref, False)),
            )
            self.by_order[order_ref] = settlement.settlement_id
            return self._store(settlement)

        return self._answer("represettle", request_id, act)

    async def settle(self, request_id: str, settlement_id: str) -> InsurerSettlement:
        def act() -> InsurerSettlement:
            decided = self.settlements.get(settlement_id)
            if decided is not None and decided.status in _DECIDED:
                return decided  # as the adapter does: a decided settlement answers as it stands
            current = self._move(settlement_id, {InsurerStatus.PRESETTLED}, InsurerStatus.SETTLED)
            return self._store(replace(current, setl_id=f"setl-{next(self._serial)}"))

        return self._answer("settle", request_id, act)

    async def cancel_presettlement(
        self, request_id: str, settlement_id: str, order_ref: str = ""
    ) -> InsurerSettlement:
        def act() -> InsurerSettlement:
            found = settlement_id or self.by_order.get(order_ref, "")
            return self._move(found, {InsurerStatus.PRESETTLED}, InsurerStatus.CANCELLED)

        return self._answer("cancel", request_id, act)

    async def revoke_settlement(self, request_id: str, settlement_id: str, reason: str) -> InsurerSettlement:
        return self._answer(
            "revoke",
            request_id,
            lambda: self._move(settlement_id, {InsurerStatus.SETTLED}, InsurerStatus.REVOKED),
        )

    def split_of(self, lines: tuple[ChargeLine, ...], use_personal_account: bool) -> InsuranceSplit:
        bill = bill_total(lines)
        own = total(line.line_total for line in lines if line.chrgitm_lv == CLASS_C)
        in_scope = bill - own
        fund = in_scope.times_ratio(self.fund_ratio)
        person = bill - fund
        account = min(person, self.balance) if use_personal_account else Money(0)
        return InsuranceSplit.from_fen({
            "medfee_sumamt": bill.fen, "fulamt_ownpay_amt": own.fen, "inscp_scp_amt": in_scope.fen,
            "hifp_pay": fund.fen, "fund_pay_sumamt": fund.fen, "psn_part_amt": person.fen,
            "acct_pay": account.fen, "psn_cash_pay": (person - account).fen,
            "balc": (self.balance - account).fen,
        })  # fmt: skip

    def _answer(self, step: str, request_id: str, act: Callable[[], InsurerSettlement]) -> InsurerSettlement:
        self.calls.append((step, request_id))
        queued = self.fail_next.get(step)
        if queued:
            raise queued.pop(0)
        if request_id in self._answers:
            return self._answers[request_id]
        answer = act()
        self._answers[request_id] = answer
        return answer

    def _move(
        self, settlement_id: str, allowed: set[InsurerStatus], target: InsurerStatus
    ) -> InsurerSettlement:
        current = self.settlements.get(settlement_id)
        if current is None:
            raise NotFound(f"no settlement {settlement_id}")
        if current.status not in allowed:
            raise StateConflict(f"settlement {settlement_id} is {current.status.value}")
        return self._store(replace(current, status=target))

    def _store(self, settlement: InsurerSettlement) -> InsurerSettlement:
        self.settlements[settlement.settlement_id] = settlement
        return settlement
