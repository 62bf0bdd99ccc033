"""Inpatient deposits (预交金): TopUpDeposit, GetDepositAccount, RefundDeposit, SettleDischarge.

A top-up is a payment order of scene INPATIENT_DEPOSIT, stored with its account and the link between
them in one transaction, then paid through PaymentOrders.pay like any order, so the process manager
runs it: cash and POS succeed at once, a QR code when the channel's notification arrives. The
account grows in the transaction that posts the order's settlement (effects._post_settlement), which
credits liability:patient_deposit: the balance and the ledger cannot disagree.

A deposit goes back (RefundDeposit, a discharge's surplus) as refunds of its top-up orders'
payments, newest top-up first (domain.deposit.plan_refund), each recorded on its order and run by
the process manager to the top-up's own channel; storage takes each from the balance as it is
recorded (effects). A discharge (self-pay) is an order of scene DISCHARGE paid from the deposit by
the process manager's ConsumeDeposit step, with the surplus refunds recorded in the same
transaction (`_SurplusRefund`). Every call here only records and asks the process manager; a retry
(same request_id, or the same stay) finds what was recorded and carries on from there.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.payment_core.adapters.unit_of_work import UnitOfWork
from services.payment_core.domain import deposit
from services.payment_core.domain.deposit import DepositAccount
from services.payment_core.domain.model import (
    CHANNEL_DEPOSIT,
    METHOD_DEPOSIT,
    ChargeLine,
    OrderStatus,
    Payment,
    PaymentStatus,
    Refund,
)
from services.payment_core.domain.order import PaymentOrder
from services.payment_core.service_layer import commands, events
from services.payment_core.service_layer.dependencies import Dependencies
from services.payment_core.service_layer.effects import Snapshot, record_effects
from services.payment_core.service_layer.handlers import PaymentOrders
from services.runtime import errors
from services.runtime.money import Money, total

DESCRIPTION = "住院预交金"
DISCHARGE_DESCRIPTION = "出院结算"
SURPLUS_REASON = "出院结算: 预交金余额退回"


@dataclass(frozen=True, slots=True)
class Discharge:
    order: PaymentOrder
    account: DepositAccount
    refunds: list[Refund]
    shortfall: Money


class Deposits:
    def __init__(self, deps: Dependencies, orders: PaymentOrders) -> None:
        self._deps = deps
        self._orders = orders

    async def top_up(self, cmd: commands.TopUpDeposit) -> tuple[PaymentOrder, Payment, DepositAccount]:
        order = self._orders.new_order(_as_order(cmd, self._deps.new_id("dep")))
        async with self._deps.uow() as uow:
            account = await uow.deposits.open(
                cmd.inpatient_no, cmd.campus_code, cmd.his_patient_id, order.created_at
            )
            if (account.campus_code, account.his_patient_id) != (cmd.campus_code, cmd.his_patient_id):
                # Not echoed: the patient id is an identifier.
                raise errors.StateConflict(
                    "the inpatient number belongs to another patient or campus",
                    {"inpatient_no": cmd.inpatient_no},
                )
            await uow.orders.add(order)
            await uow.record_event(events.order_created(order))
            await uow.deposits.link(order.order_id, cmd.inpatient_no, cmd.amount)
        paid_order, payment = await self._orders.pay(
            commands.PayPaymentOrder(
                cmd.request_id,
                order.order_id,
                cmd.channel,
                cmd.method,
                DESCRIPTION,
                cmd.amount,
                operator_id=cmd.operator_id,
                pos=cmd.pos,
            )
        )
        return paid_order, payment, await self.account(cmd.inpatient_no)

    # ---- RefundDeposit ---------------------------------------------------------------------------

    async def refund(self, cmd: commands.RefundDeposit) -> tuple[DepositAccount, list[Refund]]:
        """`cmd.amount` of the balance (zero: all of it) back to the top-ups' channels, newest
        top-up first; the parts already recorded under `cmd.request_key` count (a retry)."""
        account = await self.account(cmd.inpatient_no)
        top_ups = list(reversed(await self._top_up_orders(cmd.inpatient_no)))
        done = self._parts_of(cmd.request_key, top_ups)
        left = cmd.amount - total(r.cash for r in done) if cmd.amount.fen else account.balance
        if left.fen > 0:
            if left > account.balance:
                raise errors.DepositInsufficient(
                    f"{left.fen} fen is more than the deposit balance ({account.balance.fen} fen)",
                    {"inpatient_no": cmd.inpatient_no, "balance_fen": str(account.balance.fen)},
                )
            ours = {r.order_id for r in done}
            refundable = [
                (o.order_id, total(p.refundable for p in o.payments if p.is_kept))
                for o in top_ups
                if o.status is OrderStatus.SETTLED and o.order_id not in ours
            ]
            for order_id, part in deposit.plan_refund(refundable, left):
                refund_id = deposit.refund_id_for(cmd.request_key, order_id)
                done.append(
                    await self._orders.refund_top_up(order_id, refund_id, part, cmd.reason, cmd.operator_id)
                )
        return await self.account(cmd.inpatient_no), await self.parts(cmd.request_key, cmd.inpatient_no)

    async def parts(self, request_key: str, inpatient_no: str) -> list[Refund]:
        """The refunds recorded for one deposit refund request, newest top-up first, as they are now."""
        return self._parts_of(request_key, list(reversed(await self._top_up_orders(inpatient_no))))

    @staticmethod
    def _parts_of(request_key: str, top_ups: list[PaymentOrder]) -> list[Refund]:
        ids = {deposit.refund_id_for(request_key, o.order_id) for o in top_ups}
        return [r for o in top_ups for r in o.refunds if r.refund_id in ids]

    async def _top_up_orders(self, inpatient_no: str) -> list[PaymentOrder]:
        async with self._deps.uow(read_only=True) as uow:
            order_ids = await uow.deposits.top_up_orders(inpatient_no)
            orders = [await uow.orders.get(order_id) for order_id in order_ids]
        return [o for o in orders if o is not None]

    # ---- SettleDischarge (self-pay) --------------------------------------------------------------

    async def discharge(self, cmd: commands.SettleDischarge) -> Discharge:
        """The stay's discharge order (one per stay: a second call answers the first), paid from the
        deposit up to its balance; the surplus refunded, or the shortfall left to collect."""
        order_id = await self._discharge_order(cmd)
        order = await self._orders.get(order_id, look_now=False)
        key = deposit.discharge_refund_key(order.order_id)
        if order.status is OrderStatus.AWAITING_PAYMENT and not _paid_from_deposit(order):
            balance = (await self.account(cmd.inpatient_no)).balance
            use = min(balance, order.cash_remaining, key=lambda m: m.fen)
            if use.fen > 0:
                order, _ = await self._orders.pay_from_deposit(
                    commands.PayPaymentOrder(
                        f"{cmd.request_id}-deposit", order.order_id, CHANNEL_DEPOSIT, METHOD_DEPOSIT,
                        DISCHARGE_DESCRIPTION, use, inpatient_no=cmd.inpatient_no,
                    ),
                    _SurplusRefund(self._deps, cmd.inpatient_no, key),
                )  # fmt: skip
        if order.status is OrderStatus.SETTLED:
            # Recorded with the payment; this only finds what a top-up still on its way held back.
            await self.refund(commands.RefundDeposit(key, cmd.inpatient_no, Money(0), SURPLUS_REASON))
        # What is still unpaid (an attempt the HIS opened for it meanwhile does not pay it yet).
        shortfall = order.cash_due - order.cash_paid if order.status in _COLLECTING else Money(0)
        return Discharge(
            order, await self.account(cmd.inpatient_no), await self.parts(key, cmd.inpatient_no), shortfall
        )

    async def _discharge_order(self, cmd: commands.SettleDischarge) -> str:
        """The stay's discharge order: recorded with its link to the account in one transaction
        under the account's row lock (a concurrent discharge of the stay waits, then finds it), or
        the one recorded before. One that closed unpaid (its shortfall never collected before it
        expired: what the deposit paid went back to it) is replaced by a new one."""
        order = self._orders.new_order(_discharge_bill(cmd, self._deps.new_id("cy")))
        async with self._deps.uow() as uow:
            account = await uow.deposits.get(cmd.inpatient_no, lock=True)
            _check_owner(account, cmd.inpatient_no, cmd.campus_code, cmd.his_patient_id)
            existing = await uow.deposits.discharge_of(cmd.inpatient_no)
            if existing is not None:
                first = await uow.orders.get(existing)
                if first is None or first.status is not OrderStatus.CLOSED:
                    return existing
            await uow.orders.add(order)
            await uow.record_event(events.order_created(order))
            await uow.deposits.link_discharge(cmd.inpatient_no, order.order_id, order.created_at)
        return order.order_id

    async def account(self, inpatient_no: str) -> DepositAccount:
        async with self._deps.uow(read_only=True) as uow:
            account = await uow.deposits.get(inpatient_no)
        if account is None:
            raise errors.NotFound(
                "no deposit account for this inpatient number", {"inpatient_no": inpatient_no}
            )
        return account

    async def top_ups(self, inpatient_no: str) -> list[Payment]:
        """The account's succeeded top-up payments, oldest first."""
        async with self._deps.uow(read_only=True) as uow:
            order_ids = await uow.deposits.top_up_orders(inpatient_no)
            orders = [await uow.orders.get(order_id) for order_id in order_ids]
        return [
            payment
            for order in orders
            if order is not None
            for payment in order.payments
            if payment.status is PaymentStatus.SUCCEEDED
        ]


_COLLECTING = (OrderStatus.AWAITING_PAYMENT, OrderStatus.PAYING)


class _SurplusRefund:
    """A discharge that the deposit pays in full gives the rest of the balance back in the same
    transaction: newest top-up first, each part a refund of that top-up order's payment, recorded
    as the order's intent and due at once, so its process manager pays it out to the top-up's own
    channel after the commit, or the janitor should this call die first. Nothing is left between
    the discharge and its surplus for a crash to fall into."""

    def __init__(self, deps: Dependencies, inpatient_no: str, request_key: str) -> None:
        self._deps, self._inpatient_no, self._key = deps, inpatient_no, request_key
        self._top_ups: list[PaymentOrder] = []

    async def before(self, uow: UnitOfWork) -> None:
        """The top-up orders under their row locks (in id order), newest first."""
        ids = await uow.deposits.top_up_orders(self._inpatient_no)
        locked = {order_id: await uow.lock_order(order_id) for order_id in sorted(ids)}
        self._top_ups = [locked[order_id] for order_id in reversed(ids)]

    async def after(self, uow: UnitOfWork, order: PaymentOrder) -> list[str]:
        if order.status is not OrderStatus.SETTLED:
            return []  # a shortfall: nothing is left over
        account = await uow.deposits.get(self._inpatient_no)
        assert account is not None
        refundable = [
            (o.order_id, total(p.refundable for p in o.payments if p.is_kept))
            for o in self._top_ups
            if o.status is OrderStatus.SETTLED
        ]
        # What a top-up still on its way back holds is refunded once it is back (SettleDischarge again).
        amount = min(account.balance, total(fen for _, fen in refundable), key=lambda m: m.fen)
        changed = []
        for order_id, part in deposit.plan_refund(refundable, amount) if amount.fen > 0 else []:
            top_up = next(o for o in self._top_ups if o.order_id == order_id)
            now, before = self._deps.clock(), Snapshot.of(top_up)
            top_up.begin_refund(deposit.refund_id_for(self._key, order_id), part, SURPLUS_REASON, now)
            top_up.moved(now)
            top_up.due_at = now  # its next step (PayOutRefund) is due: advanced below, or by the janitor
            await record_effects(uow, before, top_up)
            await uow.orders.save(top_up)
            changed.append(order_id)
        return changed


def _paid_from_deposit(order: PaymentOrder) -> bool:
    return any(p.from_deposit and p.covers_share for p in order.payments)


def _check_owner(account: DepositAccount | None, inpatient_no: str, campus_code: str, patient: str) -> None:
    if account is None:
        raise errors.NotFound("no deposit account for this inpatient number", {"inpatient_no": inpatient_no})
    if (account.campus_code, account.his_patient_id) != (campus_code, patient):
        # Not echoed: the patient id is an identifier.
        raise errors.StateConflict(
            "the inpatient number belongs to another patient or campus", {"inpatient_no": inpatient_no}
        )


def _discharge_bill(cmd: commands.SettleDischarge, bill_no: str) -> commands.CreatePaymentOrder:
    """The discharge as a self-pay bill of the stay's items, its own number (the HIS has none)."""
    return commands.CreatePaymentOrder(
        request_id=cmd.request_id, his_order_no=bill_no,
        scene=deposit.DISCHARGE_SCENE, campus_code=cmd.campus_code, dept_code=cmd.dept_code,
        his_patient_id=cmd.his_patient_id, masked_cert_no="", lines=cmd.lines, voucher=None,
        insurance=None, doctor_code="", doctor_name="",
    )  # fmt: skip


def _as_order(cmd: commands.TopUpDeposit, his_order_no: str) -> commands.CreatePaymentOrder:
    """The top-up as a self-pay bill of one line, its own number (deposits have no HIS bill)."""
    line = ChargeLine(
        line_no="1", hospital_code="DEPOSIT", national_code="", name=DESCRIPTION, chrgitm_lv="",
        med_chrgitm_type="", quantity_ten_thousandths=10_000, unit_price=cmd.amount,
        line_total=cmd.amount, dept_code="", doctor_code="",
    )  # fmt: skip
    return commands.CreatePaymentOrder(
        request_id=cmd.request_id, his_order_no=his_order_no, scene=deposit.SCENE,
        campus_code=cmd.campus_code, dept_code="", his_patient_id=cmd.his_patient_id, masked_cert_no="",
        lines=(line,), voucher=None, insurance=None, doctor_code="", doctor_name="",
    )  # fmt: skip
