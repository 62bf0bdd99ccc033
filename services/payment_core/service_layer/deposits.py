"""Inpatient deposits (预交金): TopUpDeposit and GetDepositAccount.

A top-up is a payment order of scene INPATIENT_DEPOSIT, stored with its account and the link between
them in one transaction, then paid through PaymentOrders.pay like any order, so the process manager
runs it: cash and POS succeed at once, a QR code when the channel's notification arrives. The
account grows in the transaction that posts the order's settlement (effects._post_settlement), which
credits liability:patient_deposit: the balance and the ledger cannot disagree.
"""

from __future__ import annotations

from services.payment_core.domain import deposit
from services.payment_core.domain.deposit import DepositAccount
from services.payment_core.domain.model import ChargeLine, Payment, PaymentStatus
from services.payment_core.domain.order import PaymentOrder
from services.payment_core.service_layer import commands, events
from services.payment_core.service_layer.dependencies import Dependencies
from services.payment_core.service_layer.handlers import PaymentOrders
from services.runtime import errors

DESCRIPTION = "住院预交金"


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
