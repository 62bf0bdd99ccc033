"""Use cases of the payment order up to the cash: create (with pre-settlement), pay, close, read.

Each outbound call is preceded by a committed intent (the order row before Presettle, the payment
row with its out_trade_no before place_order), so a crash or timeout at any point leaves a record a
retry or the resumer continues from, with the same business key.
"""

from __future__ import annotations

import logging

from sqlalchemy.exc import IntegrityError

from services.payment_core.adapters.channels import ports
from services.payment_core.adapters.insurance import InsurerSettlement, PresettleAsk
from services.payment_core.adapters.queries import Cursor, MoneyMovement
from services.payment_core.domain import keys
from services.payment_core.domain.model import (
    CHANNEL_NONE,
    Attention,
    OrderStatus,
    Payment,
    PaymentStatus,
    bill_total,
)
from services.payment_core.domain.order import PaymentOrder
from services.payment_core.service_layer import commands, events
from services.payment_core.service_layer.channel_errors import as_runtime_error
from services.payment_core.service_layer.dependencies import OFFERED_METHODS, Dependencies
from services.payment_core.service_layer.settlement import Settlements
from services.runtime import errors
from services.runtime.money import Money

log = logging.getLogger(__name__)
_INSURANCE_FIELDS = frozenset({"insutype", "med_type", "use_personal_account", "insuplc_admdvs", "dise_codg"})


class PaymentOrders:
    def __init__(self, deps: Dependencies, settlements: Settlements) -> None:
        self._deps = deps
        self._settlements = settlements

    # ---- CreatePaymentOrder ----------------------------------------------------------------------

    async def create(self, cmd: commands.CreatePaymentOrder) -> PaymentOrder:
        """One order per HIS bill: the same request resumes it, another request is refused."""
        existing = await self._same_bill(cmd)
        if existing is not None:
            return await self._resume_creation(existing, cmd)
        order = self._new_order(cmd)
        try:
            async with self._deps.uow() as uow:
                await uow.orders.add(order)
                if not order.insured:
                    await uow.record_event(events.order_created(order))
        except IntegrityError:
            # The same bill was created by a concurrent request a moment ago.
            existing = await self._same_bill(cmd)
            if existing is None:
                raise
            return await self._resume_creation(existing, cmd)
        return await self._presettle(order, cmd, first_attempt=True) if order.insured else order

    async def _same_bill(self, cmd: commands.CreatePaymentOrder) -> PaymentOrder | None:
        async with self._deps.uow() as uow:
            order = await uow.orders.by_his_order(cmd.campus_code, cmd.his_order_no)
        if order is not None and order.create_request_id != cmd.request_id:
            raise errors.StateConflict(
                f"HIS bill {cmd.his_order_no} of campus {cmd.campus_code} already has order {order.order_id}",
                {"order_id": order.order_id, "his_order_no": cmd.his_order_no},
            )
        return order

    async def _resume_creation(self, order: PaymentOrder, cmd: commands.CreatePaymentOrder) -> PaymentOrder:
        if order.status is OrderStatus.PRESETTLING or order.attention is Attention.PRESETTLE_UNKNOWN:
            return await self._presettle(order, cmd, first_attempt=False)
        return order

    def _new_order(self, cmd: commands.CreatePaymentOrder) -> PaymentOrder:
        total = bill_total(cmd.lines)
        insured = cmd.insurance is not None
        return PaymentOrder(
            order_id=self._deps.new_id("ord"),
            create_request_id=cmd.request_id,
            his_order_no=cmd.his_order_no,
            scene=cmd.scene,
            campus_code=cmd.campus_code,
            dept_code=cmd.dept_code,
            his_patient_id=cmd.his_patient_id,
            masked_cert_no=cmd.masked_cert_no,
            lines=cmd.lines,
            insured=insured,
            insutype=cmd.insurance.insutype if cmd.insurance else "",
            med_type=cmd.insurance.med_type if cmd.insurance else "",
            status=OrderStatus.PRESETTLING if insured else OrderStatus.AWAITING_PAYMENT,
            total=total,
            cash_due=Money(0) if insured else total,
            created_at=self._deps.clock(),
        )

    async def _presettle(
        self, order: PaymentOrder, cmd: commands.CreatePaymentOrder, first_attempt: bool
    ) -> PaymentOrder:
        try:
            answer = await self._deps.insurance.presettle(_presettle_ask(order, cmd))
        except (
            errors.InsurerRejected,
            errors.InvalidArgument,
            errors.StateConflict,
            errors.NotFound,
        ) as error:
            await self._forget(order.order_id)
            raise _in_order_terms(error) from None
        except errors.InsurerUnavailable:
            # Nothing happened at the insurer; only a first attempt can be forgotten safely.
            if first_attempt:
                await self._forget(order.order_id)
            raise
        except errors.OutcomeUnknown as error:
            await self._presettlement_unknown(order.order_id, error.message)
            raise
        return await self._accept(order, answer)

    async def _accept(self, order: PaymentOrder, answer: InsurerSettlement) -> PaymentOrder:
        problems = answer.split.problems(order.total) if answer.split else ["no split in the answer"]
        if problems:
            await self._cancel_presettlement(order.order_id, answer.settlement_id)
            await self._forget(order.order_id)
            raise errors.InsurerRejected("the insurer's split does not add up: " + "; ".join(problems))
        assert answer.split is not None
        async with self._deps.uow() as uow:
            current = await uow.lock_order(order.order_id)
            if current.status is OrderStatus.PRESETTLING or current.attention is Attention.PRESETTLE_UNKNOWN:
                current.accept_presettlement(answer.settlement_id, answer.split, answer.insutype)
                await uow.orders.save(current)
                await uow.record_event(events.order_created(current))
        return current

    async def _cancel_presettlement(self, order_id: str, settlement_id: str) -> None:
        request_id = keys.insurer_request_id(order_id, "cancel")
        await self._deps.insurance.cancel_presettlement(request_id, settlement_id)

    async def _forget(self, order_id: str) -> None:
        async with self._deps.uow() as uow:
            await uow.orders.delete_intent(order_id)

    async def _presettlement_unknown(self, order_id: str, reason: str) -> None:
        async with self._deps.uow() as uow:
            order = await uow.lock_order(order_id)
            if order.status is OrderStatus.PRESETTLING:
                order.presettlement_unknown(reason)
                await uow.orders.save(order)

    # ---- PayPaymentOrder -------------------------------------------------------------------------

    async def pay(self, cmd: commands.PayPaymentOrder) -> tuple[PaymentOrder, Payment]:
        if cmd.channel == CHANNEL_NONE:
            return await self._settlements.settle_without_cash(cmd.order_id)
        if (cmd.channel, cmd.method) not in OFFERED_METHODS:
            raise errors.NotOffered(f"{cmd.channel} / {cmd.method} is not offered in this release")
        order, payment = await self._attempt(cmd)
        if payment.is_open and payment.expires_at and payment.expires_at <= self._deps.clock():
            await self._settlements.check_with_channel(payment.out_trade_no, close_unpaid=True)
            order, payment = await self._attempt(cmd)
        if payment.status is PaymentStatus.PENDING and payment.code_url:
            return order, payment
        return await self._place(order, payment, cmd.description)

    async def _attempt(self, cmd: commands.PayPaymentOrder) -> tuple[PaymentOrder, Payment]:
        """The open attempt on this channel, or a new one recorded before the channel hears of it."""
        async with self._deps.uow() as uow:
            order = await uow.lock_order(cmd.order_id)
            current = order.open_payment()
            if current is not None:
                if (current.channel, current.method) != (cmd.channel, cmd.method):
                    raise errors.StateConflict(
                        f"a {current.channel} payment is in progress on {order.order_id}"
                    )
                return order, current
            now = self._deps.clock()
            payment = order.start_payment(
                self._deps.new_id("pay"), cmd.channel, cmd.method, now, now + self._deps.qr_valid_for
            )
            await uow.orders.save(order)
        return order, payment

    async def _place(
        self, order: PaymentOrder, payment: Payment, description: str
    ) -> tuple[PaymentOrder, Payment]:
        assert payment.expires_at is not None
        text = description or f"{order.campus_code} 门诊缴费"
        try:
            placed = await self._deps.channel.place_order(
                payment.out_trade_no, payment.amount, text, self._deps.notify_url, payment.expires_at
            )
        except ports.ChannelRejected as error:
            await self._end_attempt(order.order_id, payment.out_trade_no, PaymentStatus.FAILED)
            raise as_runtime_error(error) from None
        except (ports.ChannelOutcomeUnknown, ports.ChannelProtocolError) as error:
            await self._attempt_unknown(order.order_id, payment.out_trade_no)
            raise as_runtime_error(error) from None
        except ports.ChannelError as error:
            # Unavailable: nothing happened; the attempt stays open and a retry reuses its out_trade_no.
            raise as_runtime_error(error) from None
        return await self._placed(order.order_id, payment.out_trade_no, placed.code_url)

    async def _placed(self, order_id: str, out_trade_no: str, code_url: str) -> tuple[PaymentOrder, Payment]:
        async with self._deps.uow() as uow:
            order = await uow.lock_order(order_id)
            payment = _payment(order, out_trade_no)
            if payment.is_open:
                order.payment_placed(payment, code_url)
                await uow.orders.save(order)
        return order, payment

    async def _end_attempt(self, order_id: str, out_trade_no: str, status: PaymentStatus) -> None:
        async with self._deps.uow() as uow:
            order = await uow.lock_order(order_id)
            order.payment_ended(_payment(order, out_trade_no), status)
            await uow.orders.save(order)

    async def _attempt_unknown(self, order_id: str, out_trade_no: str) -> None:
        async with self._deps.uow() as uow:
            order = await uow.lock_order(order_id)
            payment = _payment(order, out_trade_no)
            if payment.is_open:
                order.payment_unknown(payment)
                await uow.orders.save(order)

    # ---- ClosePaymentOrder -----------------------------------------------------------------------

    async def close(self, cmd: commands.ClosePaymentOrder) -> PaymentOrder:
        """Close the channel attempts, close the order under its lock, and only then undo the
        pre-settlement: once the order is CLOSED nothing can pay it, so the 2205 cannot strand a
        payment. A failed 2205 is retried by closing again (a CLOSED order only re-sends it)."""
        order = await self.get(cmd.order_id)
        if order.status is not OrderStatus.CLOSED:
            order.ensure_closable()
            closed = [await self._close_at_channel(p) for p in order.payments if p.is_open]
            order = await self._close_locked(cmd, closed)
        if order.insured and order.settlement_id:
            await self._cancel_presettlement(order.order_id, order.settlement_id)
        return order

    async def _close_locked(
        self, cmd: commands.ClosePaymentOrder, closed_at_channel: list[str]
    ) -> PaymentOrder:
        async with self._deps.uow() as uow:
            order = await uow.lock_order(cmd.order_id)
            if any(p.is_open and p.out_trade_no not in closed_at_channel for p in order.payments):
                raise errors.StateConflict(f"a payment started on {order.order_id} while closing; retry")
            order.close()
            await uow.orders.save(order)
            await uow.record_event(events.order_closed(order, cmd.reason))
        return order

    async def _close_at_channel(self, payment: Payment) -> str:
        try:
            await self._deps.channel.close(payment.out_trade_no)
        except ports.ChannelRejected as error:
            if error.reason is ports.RejectionReason.ALREADY_PAID:
                await self._settlements.check_with_channel(payment.out_trade_no, close_unpaid=False)
                raise errors.StateConflict(
                    f"{payment.out_trade_no} was paid before it could be closed"
                ) from None
            if error.reason not in (ports.RejectionReason.NOT_FOUND, ports.RejectionReason.ALREADY_CLOSED):
                raise as_runtime_error(error) from None
        except ports.ChannelError as error:
            raise as_runtime_error(error) from None
        return payment.out_trade_no

    # ---- reads -----------------------------------------------------------------------------------

    async def get(self, order_id: str) -> PaymentOrder:
        async with self._deps.uow(read_only=True) as uow:
            order = await uow.orders.get(order_id)
        if order is None:
            raise errors.NotFound(f"no payment order {order_id}", {"order_id": order_id})
        return order

    async def listing(self, query: commands.ListPaymentOrders) -> tuple[list[PaymentOrder], Cursor | None]:
        async with self._deps.uow(read_only=True) as uow:
            return await uow.queries.list_orders(
                query.page_size, query.cursor, query.status, query.business_date, query.his_patient_id
            )

    async def export(self, query: commands.ExportTransactions) -> tuple[list[MoneyMovement], Cursor | None]:
        async with self._deps.uow(read_only=True) as uow:
            return await uow.queries.movements_of_day(query.business_date, query.page_size, query.cursor)


def _payment(order: PaymentOrder, out_trade_no: str) -> Payment:
    payment = order.payment_by_trade_no(out_trade_no)
    if payment is None:
        raise errors.NotFound(f"no payment {out_trade_no} on {order.order_id}")
    return payment


def _presettle_ask(order: PaymentOrder, cmd: commands.CreatePaymentOrder) -> PresettleAsk:
    assert cmd.voucher is not None and cmd.insurance is not None
    terms = cmd.insurance
    return PresettleAsk(
        request_id=keys.insurer_request_id(order.order_id, "presettle"),
        order_ref=order.order_id,
        # The contract has no separate visit number yet: the HIS bill number stands for it.
        visit_no=order.his_order_no,
        voucher=cmd.voucher,
        insutype=terms.insutype,
        med_type=terms.med_type,
        use_personal_account=terms.use_personal_account,
        dept_code=order.dept_code,
        doctor_code=cmd.doctor_code,
        doctor_name=cmd.doctor_name,
        lines=order.lines,
        dise_codg=terms.dise_codg,
        dise_name=terms.dise_name,
        insuplc_admdvs=terms.insuplc_admdvs,
    )


def _in_order_terms(error: errors.MedPayError) -> errors.MedPayError:
    """Field paths of the insurer's contract, renamed to this contract's (voucher → patient.voucher)."""
    if not isinstance(error, errors.InvalidArgument):
        return error
    return errors.InvalidArgument(
        [errors.FieldViolation(_order_field(v.field), v.description) for v in error.violations]
    )


def _order_field(field: str) -> str:
    if field.startswith("voucher"):
        return f"patient.{field}"
    if field.split(".")[0] in _INSURANCE_FIELDS:
        return f"insurance.{field}"
    return field
