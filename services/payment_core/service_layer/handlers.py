"""Use cases of the payment order up to the cash: create (with pre-settlement), pay, close, read.

Each command records what the HIS asked for (the order row before Presettle, the payment row with
its out_trade_no before place_order, a requested close) and then calls the process manager
(`OrderProcess.advance`), which decides and runs the steps. None of them decides a step itself, so a
crash or timeout at any point leaves a record the janitor continues from, with the same business key.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime, timedelta
from typing import Protocol

from services.payment_core.adapters.channels.ports import JsapiPayParams
from services.payment_core.adapters.insurance import PresettleAsk
from services.payment_core.adapters.queries import Cursor, MoneyMovement
from services.payment_core.adapters.unit_of_work import UnitOfWork
from services.payment_core.domain import deposit, keys, process
from services.payment_core.domain.model import (
    CHANNEL_DEPOSIT,
    CHANNEL_NONE,
    METHOD_BARCODE,
    METHOD_JSAPI,
    WINDOW_METHODS,
    Attention,
    OrderStatus,
    Payment,
    Refund,
    bill_total,
)
from services.payment_core.domain.order import PaymentOrder
from services.payment_core.service_layer import commands, events
from services.payment_core.service_layer.dependencies import OFFERED_METHODS, Dependencies
from services.payment_core.service_layer.process import OrderProcess, Started
from services.payment_core.service_layer.steps import StepInputs
from services.runtime import errors
from services.runtime.money import Money

log = logging.getLogger(__name__)


class AlongWithDepositPayment(Protocol):
    """What commits in the transaction of a payment from the deposit (a discharge's surplus)."""

    async def before(self, uow: UnitOfWork) -> None:
        """Take the locks it needs, before the paid order's (one lock order everywhere)."""
        ...

    async def after(self, uow: UnitOfWork, order: PaymentOrder) -> list[str]:
        """Record what follows the payment; the ids of the orders it changed."""
        ...


_INSURANCE_FIELDS = frozenset({"insutype", "med_type", "use_personal_account", "insuplc_admdvs", "dise_codg"})


class PaymentOrders:
    """The HIS's commands: each records what was asked, then lets the process manager run it."""

    def __init__(self, deps: Dependencies, process: OrderProcess, order_ttl: timedelta) -> None:
        self._deps = deps
        self._process = process
        self._order_ttl = order_ttl

    # ---- CreatePaymentOrder ----------------------------------------------------------------------

    async def create(self, cmd: commands.CreatePaymentOrder) -> PaymentOrder:
        """One order per HIS bill: the same request resumes it, another request is refused. The
        bill's unique index finds an existing order (no look before the insert)."""
        order = self._new_order(cmd)
        voucher = process.Caller(has_voucher=True)
        try:
            async with self._deps.uow() as uow:
                # An insured order's first step (Presettle) is decided, and its lease taken, in
                # the transaction that stores it.
                started = await self._process.start(uow, order, voucher) if order.insured else None
                await uow.orders.add(order)
                if not order.insured:
                    await uow.record_event(events.order_created(order))
        except errors.StorageConflict:
            # The bill has an order: this request's own (a retry after a crash) or another's.
            existing = await self._same_bill(cmd)
            if existing is None:
                raise
            return await self._presettle(existing, cmd, first=False)
        if started is None:
            return order
        inputs = StepInputs(presettle=_presettle_ask(order, cmd), first_presettle=True)
        try:
            return await self._process.carry_on(order.order_id, started, voucher, inputs)
        except errors.MedPayError as error:
            raise _in_order_terms(error) from None

    async def _same_bill(self, cmd: commands.CreatePaymentOrder) -> PaymentOrder | None:
        # Only a look: the bill's unique index, not this read, keeps a second order out.
        async with self._deps.uow(read_only=True) as uow:
            order = await uow.orders.by_his_order(cmd.campus_code, cmd.his_order_no)
        if order is not None and order.create_request_id != cmd.request_id:
            raise errors.StateConflict(
                f"HIS bill {cmd.his_order_no} of campus {cmd.campus_code} already has order {order.order_id}",
                {"order_id": order.order_id, "his_order_no": cmd.his_order_no},
            )
        return order

    async def _presettle(
        self, order: PaymentOrder, cmd: commands.CreatePaymentOrder, first: bool
    ) -> PaymentOrder:
        """The process manager pre-settles while the order waits for it (this call has the voucher)."""
        if order.status is not OrderStatus.PRESETTLING and order.attention is not Attention.PRESETTLE_UNKNOWN:
            return order
        inputs = StepInputs(presettle=_presettle_ask(order, cmd), first_presettle=first)
        try:
            return await self._process.advance(order.order_id, process.Caller(has_voucher=True), inputs)
        except errors.MedPayError as error:
            raise _in_order_terms(error) from None

    def new_order(self, cmd: commands.CreatePaymentOrder) -> PaymentOrder:
        """A new self-pay or insured order for this bill, not stored yet (deposits store their own)."""
        return self._new_order(cmd)

    def _new_order(self, cmd: commands.CreatePaymentOrder) -> PaymentOrder:
        total = bill_total(cmd.lines)
        insured = cmd.insurance is not None
        now = self._deps.clock()
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
            created_at=now,
            expires_at=now + self._order_ttl,
            # The janitor closes it at its expiry if nothing else happens before.
            due_at=now + self._order_ttl,
        )

    # ---- PayPaymentOrder -------------------------------------------------------------------------

    async def pay(self, cmd: commands.PayPaymentOrder) -> tuple[PaymentOrder, Payment]:
        if cmd.channel == CHANNEL_NONE:
            return await self._settle_without_cash(cmd.order_id)
        if (cmd.channel, cmd.method) not in OFFERED_METHODS or not self._deps.offers(cmd.channel):
            raise errors.NotOffered(f"{cmd.channel} / {cmd.method} is not offered in this release")
        if cmd.method in WINDOW_METHODS:
            return await self._taken_at_window(cmd)
        if cmd.channel == CHANNEL_DEPOSIT:
            return await self.pay_from_deposit(cmd)
        order, payment, started = await self._attempt(cmd)
        if started is None and payment.expires_at is not None and payment.expires_at <= self._deps.clock():
            # Its QR code has expired: the process manager closes it (or finds it paid) first.
            await self._process.advance(order.order_id)
            order, payment, started = await self._attempt(cmd)
        if payment.code_url or not payment.is_open:
            return order, payment
        caller = process.Caller(placing=payment.out_trade_no)
        inputs = StepInputs(
            description=cmd.description, auth_code=cmd.auth_code, payer_openid=cmd.payer_openid
        )
        if started is not None and started.step is not None:
            # A new attempt, its placement leased in the transaction that recorded it.
            order = await self._process.carry_on(order.order_id, started, caller, inputs)
        else:
            order = await self._process.advance_now(order.order_id, caller, inputs, _PATIENCE_S)
        return order, _payment(order, payment.out_trade_no)

    async def _attempt(self, cmd: commands.PayPaymentOrder) -> tuple[PaymentOrder, Payment, Started | None]:
        """A new attempt for the amount asked (zero: what remains), recorded before the channel
        hears of it, with the process manager's next step (its placement) decided and leased in
        the same transaction; storage refuses it if the order's payments would then cover more
        than the cash due. A request for "what remains" when open attempts already cover all of it
        gets the open attempt on its channel and method (a kiosk asking again for its QR code)."""
        async with self._deps.uow() as uow:
            order = await uow.lock_order(cmd.order_id)
            current = _same_attempt(order, cmd)
            if current is not None:
                return order, current, None
            now = self._deps.clock()
            # A code payment is waited for only briefly (the patient stands at the cashier), then
            # reversed; a QR or JSAPI payment is open until the channel closes it.
            barcode = cmd.method == METHOD_BARCODE
            valid_for = self._process.schedule.code_payment_window if barcode else self._deps.qr_valid_for
            payment = order.start_payment(
                self._deps.new_id("pay"), cmd.channel, cmd.method, now, now + valid_for, cmd.amount
            )
            order.moved(now)

            async def save_first() -> None:  # a local step's effects are checked against storage
                await uow.orders.save(order)

            caller = process.Caller(placing=payment.out_trade_no)
            started = await self._process.start(uow, order, caller, before_local=save_first)
            await uow.orders.save(order)  # the attempt, its lease (and a local step's changes)
        return order, payment, started

    async def _taken_at_window(self, cmd: commands.PayPaymentOrder) -> tuple[PaymentOrder, Payment]:
        """Cash or a card already taken at the window: recorded, then confirmed PAID by the process
        manager's step, so the order moves on as when a channel notification arrives. A POS slip
        reported again (a new request_id, even concurrently) answers the payment recorded for it."""
        try:
            order, payment = await self._window_attempt(cmd)
        except errors.StorageConflict:
            # The slip's unique index: recorded by a concurrent report (found on this order now),
            # or on another order, which is refused.
            try:
                order, payment = await self._window_attempt(cmd)
            except errors.StorageConflict:
                assert cmd.pos is not None
                raise errors.StateConflict(
                    f"POS reference {cmd.pos.reference_no} (terminal {cmd.pos.terminal_id}, batch "
                    f"{cmd.pos.batch_no}) is recorded for another order",
                    {"field": "pos.reference_no"},
                ) from None
        if payment.is_open:
            caller = process.Caller(placing=payment.out_trade_no)
            order = await self._process.advance_now(order.order_id, caller, StepInputs(), _PATIENCE_S)
        return order, _payment(order, payment.out_trade_no)

    async def pay_from_deposit(
        self, cmd: commands.PayPaymentOrder, then: AlongWithDepositPayment | None = None
    ) -> tuple[PaymentOrder, Payment]:
        """Paid from the inpatient's deposit in one transaction: the attempt is recorded and linked
        to its account, the process manager's local step (ConsumeDeposit) has the deposit channel
        confirm it, and the balance is debited by a relative UPDATE under CHECK (>= 0) as the
        success is recorded. A balance that does not cover it is refused by storage
        (DepositInsufficient) and the transaction rolls back: nothing is stored. `then` records
        what must commit with the payment (a discharge's surplus refunds); the orders it changed
        are advanced after the commit (or by the janitor, should this call die first)."""
        changed: list[str] = []
        async with self._deps.uow() as uow:
            if then is not None:
                await then.before(uow)
            order = await uow.lock_order(cmd.order_id)
            if order.scene == deposit.SCENE:
                raise errors.StateConflict(
                    f"order {order.order_id} is a deposit top-up: it is not paid from the deposit",
                    {"order_id": order.order_id},
                )
            account = await uow.deposits.get(cmd.inpatient_no)
            if account is None:
                raise errors.NotFound(
                    "no deposit account for this inpatient number", {"inpatient_no": cmd.inpatient_no}
                )
            if (account.campus_code, account.his_patient_id) != (order.campus_code, order.his_patient_id):
                raise errors.StateConflict(
                    "the deposit account belongs to another patient or campus than the order",
                    {"inpatient_no": cmd.inpatient_no, "order_id": order.order_id},
                )
            now = self._deps.clock()
            payment = order.start_payment(
                self._deps.new_id("pay"), cmd.channel, cmd.method, now, now, cmd.amount
            )
            payment.expires_at = None
            order.moved(now)

            async def save_first() -> None:  # the step's debit needs the payment and its account
                await uow.orders.save(order)
                await uow.deposits.link_use(payment.payment_id, cmd.inpatient_no, payment.amount)

            caller = process.Caller(placing=payment.out_trade_no)
            started = await self._process.start(uow, order, caller, before_local=save_first)
            await uow.orders.save(order)
            if then is not None:
                changed = await then.after(uow, order)
        if started.step is not None:  # what paying it leads to (nothing outbound for self-pay)
            order = await self._process.carry_on(order.order_id, started, caller, StepInputs())
        for order_id in changed:
            with contextlib.suppress(errors.MedPayError):  # recorded: the janitor carries on
                await self._process.advance(order_id)
        return order, _payment(order, payment.out_trade_no)

    async def _window_attempt(self, cmd: commands.PayPaymentOrder) -> tuple[PaymentOrder, Payment]:
        async with self._deps.uow() as uow:
            order = await uow.lock_order(cmd.order_id)
            now, payment_id = self._deps.clock(), self._deps.new_id("pay")
            payment = order.start_window_payment(
                payment_id, cmd.channel, cmd.method, now, cmd.amount, cmd.operator_id, cmd.pos
            )
            if payment.payment_id == payment_id:  # not a slip reported before
                order.moved(now)
                # Due at once: should this request die before its step, the janitor records it.
                order.due_at = now
                await uow.orders.save(order)
        return order, payment

    def front_end_params(self, payment: Payment) -> JsapiPayParams | None:
        """What the payer's page passes to wx.requestPayment, freshly signed, for an open JSAPI
        attempt the channel has placed (None for any other payment)."""
        if payment.method != METHOD_JSAPI or not payment.is_open or not payment.code_url:
            return None
        return self._deps.channel_for(payment.channel).jsapi_pay_params(payment.code_url)

    # ---- ConfirmWindowRefund ---------------------------------------------------------------------

    async def confirm_window_refund(self, cmd: commands.ConfirmWindowRefund) -> tuple[PaymentOrder, Refund]:
        """The cashier paid a CASH or POS refund out at the window: the refund succeeds (and the
        order is REFUNDED once every refund is), recorded like a channel's refund notification."""

        def record(order: PaymentOrder, now: datetime) -> None:
            order.window_refund_handed_over(cmd.refund_id, cmd.operator_id, cmd.pos, now)

        order = await self._process.record(cmd.order_id, record)
        return order, order.refund_by_id(cmd.refund_id)

    async def _settle_without_cash(self, order_id: str) -> tuple[PaymentOrder, Payment]:
        """Insurer and personal account cover the bill: a zero payment, then the settlement."""
        payment_id = self._deps.new_id("pay")

        def record(order: PaymentOrder, now: datetime) -> None:
            order.settle_without_cash(payment_id, now)

        order = await self._process.record(order_id, record)
        payment = next(p for p in order.payments if p.payment_id == payment_id)
        return order, payment

    # ---- ClosePaymentOrder -----------------------------------------------------------------------

    async def close(self, cmd: commands.ClosePaymentOrder) -> PaymentOrder:
        """Ask for the close; the process manager closes the channel attempts (each only after a
        query shows it unpaid), then the order under its lock, then undoes the pre-settlement (2205):
        once the order is CLOSED nothing can pay it, so the 2205 cannot strand a payment."""
        async with self._deps.uow() as uow:
            order = await uow.lock_order(cmd.order_id)
            order.request_close(cmd.reason)
            await uow.orders.save_order_row(order)
        try:
            order = await self._process.advance(cmd.order_id)
        except errors.MedPayError:
            order = await self.get(cmd.order_id, look_now=False)
            if order.status is not OrderStatus.CLOSED:
                raise  # the channel could not be asked now: the janitor carries on closing
        if order.status is OrderStatus.CLOSED:
            return order
        if order.status in (OrderStatus.AWAITING_PAYMENT, OrderStatus.PAYING):
            raise errors.ChannelUnavailable(f"order {order.order_id} is closing; the platform finishes it")
        raise errors.StateConflict(f"order {order.order_id} was paid before it could be closed")

    # ---- RefundPaymentOrder ----------------------------------------------------------------------

    async def refund(self, cmd: commands.RefundPaymentOrder) -> tuple[PaymentOrder, Refund | None]:
        """Record the refund (storage reserves its amount: refunded <= paid), then the process
        manager revokes the insurer settlement (2208) if there is one and pays the cash back. A
        refund by lines is recorded first (its Refunds come once the insurer's new split says how
        much cash it frees): the answer carries the first of them, None while they are not known."""
        refund_id = self._deps.new_id("rfd")

        def record(order: PaymentOrder, now: datetime) -> None:
            if order.scene == deposit.SCENE:
                # The money is the patient's deposit: it goes back with the discharge settlement
                # (the account's refunded_fen), never as a refund of its top-up order.
                raise errors.StateConflict(
                    f"order {order.order_id} is a deposit top-up: it is not refunded on its own",
                    {"order_id": order.order_id},
                )
            if cmd.lines:
                order.begin_line_refund(refund_id, cmd.lines, cmd.cash, cmd.reason, now, cmd.operator_id)
                return
            order.begin_refund(refund_id, cmd.cash, cmd.reason, now, cmd.operator_id)

        order = await self._process.record(cmd.order_id, record)
        return order, next((r for r in order.refunds if r.refund_id == refund_id), None)

    async def refund_top_up(
        self, order_id: str, refund_id: str, cash: Money, reason: str, operator_id: str
    ) -> Refund:
        """A deposit refund's part: a refund of the top-up order's payment, recorded (storage takes
        it from the balance and from what the top-up may still give back), then run by the process
        manager to the top-up's own channel. Only Deposits calls this (RefundPaymentOrder refuses
        a top-up order)."""

        def record(order: PaymentOrder, now: datetime) -> None:
            order.begin_refund(refund_id, cash, reason, now, operator_id)

        order = await self._process.record(order_id, record)
        return order.refund_by_id(refund_id)

    # ---- reads -----------------------------------------------------------------------------------

    async def get(self, order_id: str, look_now: bool = True) -> PaymentOrder:
        """The order as stored; when someone is looking and a question to the channel or the
        insurer is (nearly) due, it is asked first, so a kiosk is not told PAYING for long."""
        async with self._deps.uow(read_only=True) as uow:
            order = await uow.orders.get(order_id)
        if order is None:
            raise errors.NotFound(f"no payment order {order_id}", {"order_id": order_id})
        if look_now and _asks_outside(order, self._deps.clock(), self._process.schedule):
            with contextlib.suppress(errors.MedPayError):
                order = await self._process.advance(order_id, process.Caller(eager=True))
        return order

    async def listing(self, query: commands.ListPaymentOrders) -> tuple[list[PaymentOrder], Cursor | None]:
        async with self._deps.uow(read_only=True) as uow:
            return await uow.queries.list_orders(
                query.page_size, query.cursor, query.status, query.business_date, query.his_patient_id
            )

    async def export(self, query: commands.ExportTransactions) -> tuple[list[MoneyMovement], Cursor | None]:
        async with self._deps.uow(read_only=True) as uow:
            return await uow.queries.movements_of_day(query.business_date, query.page_size, query.cursor)


def _same_attempt(order: PaymentOrder, cmd: commands.PayPaymentOrder) -> Payment | None:
    if cmd.amount.fen or order.cash_remaining.fen > 0:
        return None
    wanted = (cmd.channel, cmd.method)
    return next((p for p in order.open_payments() if (p.channel, p.method) == wanted), None)


def _payment(order: PaymentOrder, out_trade_no: str) -> Payment:
    payment = order.payment_by_trade_no(out_trade_no)
    if payment is None:
        raise errors.NotFound(f"no payment {out_trade_no} on {order.order_id}")
    return payment


# How long a PayPaymentOrder waits for a concurrent one placing the same attempt (for its QR code).
_PATIENCE_S = 10.0
_QUESTIONS = (
    process.QueryPayment,
    process.ReversePayment,
    process.QueryRefund,
    process.Settle,
    process.CloseAtChannel,
)


def _asks_outside(order: PaymentOrder, now: datetime, schedule: process.Schedule) -> bool:
    """A question is due and nobody is asking it already (a step holds the order's lease)."""
    if order.lease_holder and order.lease_expires_at is not None and order.lease_expires_at > now:
        return False
    step = process.next_step(order, now, schedule, process.Caller(eager=True))
    return isinstance(step, _QUESTIONS)


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
