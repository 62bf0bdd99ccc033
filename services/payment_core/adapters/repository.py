"""Payment orders in storage: rows <-> the domain aggregate. `get(..., lock=True)` is the one named
place where an order is locked for a state change (SELECT ... FOR UPDATE on PostgreSQL; on SQLite the
runtime's BEGIN IMMEDIATE already serialises writers). Every write of an order calls `changed` with
its id (the unit of work turns that into a change signal sent after commit)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, Select, bindparam, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.payment_core.adapters import orm
from services.payment_core.adapters.line_refund_rows import line_refund_from, line_refund_values
from services.payment_core.domain.model import (
    OPEN_PAYMENT,
    Attention,
    ChargeLine,
    InsuranceSplit,
    LineRefund,
    OrderStatus,
    Payment,
    PaymentStatus,
    PosSlip,
    Refund,
    RefundKind,
    RefundStatus,
)
from services.payment_core.domain.order import NEVER, PaymentOrder
from services.runtime.clock import as_utc, utcnow
from services.runtime.errors import InvalidArgument, RefundExceedsPaid
from services.runtime.masking import scrub
from services.runtime.money import Money
from services.runtime.prepared import prepared
from services.runtime.statements import KEY, insert_into, select_by, select_in, update_by

_SPLIT = dict(zip(InsuranceSplit.field_names(), orm.SPLIT_COLUMNS, strict=True))
# The order's row UPDATE that also adds to what its payments cover (relative, under the CHECK).
_ADD_PLACED = prepared(
    update_by(orm.payment_orders, "order_id").values(
        cash_placed_fen=orm.payment_orders.c.cash_placed_fen + bindparam("placed_delta")
    )
)


# How often a plain read of an order with refunds is retried while steps keep changing it.
_CONSISTENT_READ_TRIES = 5


def _unobserved(_order_id: str) -> None:
    """No one to tell of a write."""


class ChargeLinesCache:
    """An order's charge lines, kept in this process once read or written: they never change
    after the order is created (a refused order is deleted with them, and ids are never reused),
    so every later load of the order skips their SELECT. Bounded; the oldest entries go first."""

    def __init__(self, max_orders: int = 20_000) -> None:
        self._lines: OrderedDict[str, tuple[ChargeLine, ...]] = OrderedDict()
        self._max_orders = max_orders

    def get(self, order_id: str) -> tuple[ChargeLine, ...] | None:
        return self._lines.get(order_id)

    def put(self, order_id: str, lines: tuple[ChargeLine, ...]) -> None:
        self._lines[order_id] = lines
        if len(self._lines) > self._max_orders:
            self._lines.popitem(last=False)

    def forget(self, order_id: str) -> None:
        self._lines.pop(order_id, None)


class OrderRepository:
    def __init__(
        self,
        session: AsyncSession,
        changed: Callable[[str], None] = _unobserved,
        lines: ChargeLinesCache | None = None,
    ) -> None:
        self._session = session
        self._changed = changed
        self._lines = lines or ChargeLinesCache()
        # Payments and refunds this session has seen in storage: saved by UPDATE, the rest by INSERT.
        self._stored: dict[str, dict[str, Any]] = {}

    async def add(self, order: PaymentOrder) -> None:
        await self._session.execute(insert_into(orm.payment_orders), _order_values(order, created=True))
        if order.lines:
            await self._session.execute(
                insert_into(orm.charge_lines),
                [_line_values(order.order_id, i, ln) for i, ln in enumerate(order.lines)],
            )
        self._lines.put(order.order_id, order.lines)
        await self._save_children(order)
        self._changed(order.order_id)

    async def get(self, order_id: str, lock: bool = False) -> PaymentOrder | None:
        """The order as stored. Under a lock, its row first (FOR UPDATE) and then its children:
        at READ COMMITTED a statement that waited for the lock sees the locked row as the other
        writer left it but a joined table as it was before, so the children are read after. A
        plain read takes the order with its payments in one statement (a row per payment)."""
        if lock:
            query = select_by(orm.payment_orders, "order_id", lock)
            row = (await self._session.execute(query, {KEY: order_id})).one_or_none()
            return None if row is None else (await self.hydrate([row]))[0]
        for _ in range(_CONSISTENT_READ_TRIES):
            rows = (await self._session.execute(_ORDER_WITH_PAYMENTS, {KEY: order_id})).all()
            if not rows:
                return None
            pays = [_JoinedPayment(row) for row in rows if row._mapping[_PAYMENT + "payment_id"] is not None]
            order = (await self.hydrate(rows[:1], pays))[0]
            if not (order.refunds or order.line_refunds):
                return order  # one statement: one snapshot
            # Its refunds came from a later statement, which at READ COMMITTED (and without a
            # transaction) sees a later snapshot: a step committed in between would pair the
            # order's old row with its new refunds (REFUNDING beside a refund that SUCCEEDED).
            # Every write of an order rewrites its row, so an unchanged row means a whole read.
            again = (
                await self._session.execute(select_by(orm.payment_orders, "order_id"), {KEY: order_id})
            ).one_or_none()
            if again is not None and tuple(again) == tuple(rows[0])[: len(again)]:
                return order
        return order

    async def by_his_order(self, campus_code: str, his_order_no: str) -> PaymentOrder | None:
        table = orm.payment_orders
        order_id = await self._scalar(
            select(table.c.order_id).where(
                table.c.campus_code == campus_code, table.c.his_order_no == his_order_no
            )
        )
        return await self.get(order_id) if order_id else None

    async def order_id_of_trade(self, out_trade_no: str) -> str | None:
        table = orm.payments
        return await self._scalar(select(table.c.order_id).where(table.c.out_trade_no == out_trade_no))

    async def order_id_of_refund(self, out_refund_no: str) -> str | None:
        table = orm.refunds
        return await self._scalar(select(table.c.order_id).where(table.c.out_refund_no == out_refund_no))

    async def save(self, order: PaymentOrder) -> None:
        await self.save_order_row(order, self._placed_since_read(order))
        await self._save_children(order)
        self._changed(order.order_id)

    async def save_order_row(self, order: PaymentOrder, placed_fen: int = 0) -> None:
        """Only the order's own row, for what watchers do not see (its lease, when it is due).
        `placed_fen`: how much more (or less) of the cash due the order's payments now cover,
        added to cash_placed_fen in the same statement under CHECK (<= cash_due_fen): two attempts
        that together exceed what the order owes cannot both be stored, whatever each writer saw."""
        values = {KEY: order.order_id, **_order_values(order)}
        statement = update_by(orm.payment_orders, "order_id")
        if placed_fen:
            statement, values["placed_delta"] = _ADD_PLACED, placed_fen
        try:
            await self._session.execute(statement, values)
        except IntegrityError as error:
            if placed_fen <= 0:
                raise
            raise InvalidArgument.field("amount_fen", "more than what remains to be paid") from error

    def _placed_since_read(self, order: PaymentOrder) -> int:
        """The change of what the payments cover since this session read or wrote them."""
        delta = 0
        for payment in order.payments:
            stored = self._stored.get(payment.payment_id)
            was = _covers(stored["status"], stored["excess"]) if stored else False
            now = _covers(payment.status.value, payment.excess)
            delta += payment.amount.fen * (int(now) - int(was))
        return delta

    async def reserve_refund(self, order: PaymentOrder, refund: Refund) -> None:
        """Count the refund against its payment and the order in storage. Relative updates under
        CHECK (refunded <= paid): two refunds that together exceed what was paid cannot both pass,
        whatever the application believed when it decided."""
        await self._bump_refunded(order, refund, refund.cash.fen)

    async def release_refund(self, order: PaymentOrder, refund: Refund) -> None:
        """A refund the channel refused gives its amount back to what may be refunded."""
        await self._bump_refunded(order, refund, -refund.cash.fen)

    async def delete_intent(self, order_id: str) -> None:
        """Forget an order whose creation the insurer refused before anything was owed."""
        self._lines.forget(order_id)
        await self._session.execute(delete(orm.charge_lines).where(orm.charge_lines.c.order_id == order_id))
        await self._session.execute(
            delete(orm.payment_orders).where(orm.payment_orders.c.order_id == order_id)
        )
        self._changed(order_id)

    async def hydrate(
        self, rows: Sequence[Row[Any]], pays: Sequence[Any] | None = None
    ) -> list[PaymentOrder]:
        """Whole aggregates (lines, payments, refunds) for order rows, in the rows' order; `pays`,
        their payments when the caller has read them already."""
        ids = [row.order_id for row in rows]
        lines = await self._lines_of(ids)
        # Only the orders that have them (their row counts them): most loads read no refunds.
        paying = [row.order_id for row in rows if row.payment_count]
        refunding = [row.order_id for row in rows if row.refund_count]
        if pays is None:
            pays = await self._children(orm.payments, paying, orm.payments.c.attempt_no)
        backs = await self._children(orm.refunds, refunding, orm.refunds.c.refund_no)
        by_lines = [row.order_id for row in rows if row.line_refund_count]
        taken = await self._children(orm.line_refunds, by_lines, orm.line_refunds.c.line_refund_no)
        orders = [
            _order_from(
                row,
                lines[row.order_id],
                [p for p in pays if p.order_id == row.order_id],
                [r for r in backs if r.order_id == row.order_id],
            )
            for row in rows
        ]
        for order in orders:
            order.line_refunds = [line_refund_from(t) for t in taken if t.order_id == order.order_id]
            self._stored.update({p.payment_id: _unstamped(_payment_values(p)) for p in order.payments})
            self._stored.update({r.refund_id: _unstamped(_refund_values(r)) for r in order.refunds})
            self._stored.update(
                {_line_key(t.refund_id): _unstamped(line_refund_values(t)) for t in order.line_refunds}
            )
        return orders

    async def _lines_of(self, order_ids: list[str]) -> dict[str, tuple[ChargeLine, ...]]:
        known = {order_id: self._lines.get(order_id) for order_id in order_ids}
        missing = [order_id for order_id, lines in known.items() if lines is None]
        read: dict[str, list[ChargeLine]] = {order_id: [] for order_id in missing}
        for row in await self._children(orm.charge_lines, missing, orm.charge_lines.c.line_index):
            read[row.order_id].append(_line_from(row))
        for order_id, lines in read.items():
            known[order_id] = tuple(lines)
            self._lines.put(order_id, known[order_id])  # type: ignore[arg-type]
        return {order_id: lines or () for order_id, lines in known.items()}

    async def _bump_refunded(self, order: PaymentOrder, refund: Refund, delta_fen: int) -> None:
        try:
            if refund.payment_id is not None:
                await self._session.execute(
                    update(orm.payments)
                    .where(orm.payments.c.payment_id == refund.payment_id)
                    .values(refunded_fen=orm.payments.c.refunded_fen + delta_fen)
                )
            await self._session.execute(
                update(orm.payment_orders)
                .where(orm.payment_orders.c.order_id == order.order_id)
                .values(refunded_cash_fen=orm.payment_orders.c.refunded_cash_fen + delta_fen)
            )
        except IntegrityError as error:
            raise RefundExceedsPaid(
                f"refund {refund.out_refund_no} would take more than was paid", {"order_id": order.order_id}
            ) from error
        _apply_refunded(order, refund, delta_fen)
        self._changed(order.order_id)

    async def _save_children(self, order: PaymentOrder) -> None:
        for payment in order.payments:
            await self._upsert(
                orm.payments, orm.payments.c.payment_id, payment.payment_id, _payment_values(payment)
            )
        for refund in order.refunds:
            await self._upsert(orm.refunds, orm.refunds.c.refund_id, refund.refund_id, _refund_values(refund))
        for taken in order.line_refunds:
            await self._upsert_line_refund(taken)

    async def _upsert_line_refund(self, taken: LineRefund) -> None:
        """Keyed apart from the refunds in `_stored`: the first cash refund shares its id."""
        values, key = line_refund_values(taken), _line_key(taken.refund_id)
        if self._stored.get(key) == _unstamped(values):
            return
        if key in self._stored:
            await self._session.execute(
                update_by(orm.line_refunds, "line_refund_id"), {KEY: taken.refund_id, **values}
            )
        else:
            await self._session.execute(insert_into(orm.line_refunds), values)
        self._stored[key] = _unstamped(values)

    async def _upsert(self, table: Any, key: Any, key_value: str, values: dict[str, Any]) -> None:
        """INSERT a new row, UPDATE one that changed since it was loaded or written, else nothing."""
        unstamped = _unstamped(values)
        stored = self._stored.get(key_value)
        if stored == unstamped:
            return
        if stored is not None:
            await self._session.execute(update_by(table, key.name), {KEY: key_value, **values})
        else:
            await self._session.execute(insert_into(table), values)
        self._stored[key_value] = unstamped

    async def _children(self, table: Any, order_ids: list[str], order_by: Any) -> Sequence[Row[Any]]:
        if not order_ids:
            return []
        query = select_in(table, "order_id", "order_id", order_by.name)
        return (await self._session.execute(query, {KEY: order_ids})).all()

    async def _scalar(self, query: Any) -> str | None:
        value = (await self._session.execute(query)).scalar_one_or_none()
        return str(value) if value is not None else None


def _line_key(refund_id: str) -> str:
    return f"lines:{refund_id}"


def _covers(status: str, excess: bool) -> bool:
    """Whether a payment row counts against the cash due (domain.model.Payment.covers_share)."""
    return status in _OPEN_STATUSES or (status == PaymentStatus.SUCCEEDED.value and not excess)


_OPEN_STATUSES = frozenset(status.value for status in OPEN_PAYMENT)


def _unstamped(values: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in values.items() if name != "updated_at"}


def _apply_refunded(order: PaymentOrder, refund: Refund, delta_fen: int) -> None:
    order.refunded_cash = order.refunded_cash + Money(delta_fen)
    for payment in order.payments:
        if payment.payment_id == refund.payment_id:
            payment.refunded = payment.refunded + Money(delta_fen)


# ---- rows -> domain ---------------------------------------------------------------------------------

# An order's load reads its payments in the same statement, their columns under this prefix.
_PAYMENT = "payment__"


def _order_with_payments() -> Select[Any]:
    orders, payments = orm.payment_orders, orm.payments
    return (
        select(orders, *(column.label(_PAYMENT + column.name) for column in payments.c))
        .select_from(orders.outerjoin(payments, payments.c.order_id == orders.c.order_id))
        .where(orders.c.order_id == bindparam(KEY))
        .order_by(payments.c.attempt_no)
    )


_ORDER_WITH_PAYMENTS = prepared(_order_with_payments())  # built once (services/runtime/statements.py)


class _JoinedPayment:
    """A payment's columns of a joined order row, read under their own names (as a payments row)."""

    __slots__ = ("_mapping",)

    def __init__(self, row: Row[Any]) -> None:
        self._mapping = row._mapping

    def __getattr__(self, name: str) -> Any:
        try:
            return self._mapping[_PAYMENT + name]
        except KeyError:
            raise AttributeError(name) from None


def _order_from(
    row: Row[Any], lines: tuple[ChargeLine, ...], pays: list[Any], backs: list[Row[Any]]
) -> PaymentOrder:
    before = row.status_before_attention
    return PaymentOrder(
        order_id=row.order_id, create_request_id=row.create_request_id, his_order_no=row.his_order_no,
        scene=row.scene, campus_code=row.campus_code, dept_code=row.dept_code,
        his_patient_id=row.his_patient_id, masked_cert_no=row.masked_cert_no,
        lines=lines, insured=row.insured, insutype=row.insutype,
        med_type=row.med_type, status=OrderStatus(row.status), total=Money(row.total_fen),
        cash_due=Money(row.cash_due_fen), created_at=as_utc(row.created_at), settlement_id=row.settlement_id,
        split=_split_from(row), setl_id=row.setl_id, settled_at=_utc(row.settled_at),
        attention=Attention(row.attention) if row.attention else None, attention_reason=row.attention_reason,
        status_before_attention=OrderStatus(before) if before else None,
        settlement_revoked=row.settlement_revoked, expires_at=_utc(row.expires_at) or NEVER,
        close_requested=row.close_requested, close_reason=row.close_reason,
        presettlement_cancelled=row.presettlement_cancelled, attempts=row.attempts,
        last_step_at=_utc(row.last_step_at), due_at=_utc(row.due_at), lease_holder=row.lease_holder,
        lease_expires_at=_utc(row.lease_expires_at),
        refunded_cash=Money(row.refunded_cash_fen), payments=[_payment_from(p) for p in pays],
        refunds=[_refund_from(r) for r in backs],
    )  # fmt: skip


def _split_from(row: Row[Any]) -> InsuranceSplit | None:
    mapping = row._mapping
    if mapping[orm.SPLIT_COLUMNS[0]] is None:
        return None
    return InsuranceSplit.from_fen({name: mapping[column] for name, column in _SPLIT.items()})


def _line_from(row: Row[Any]) -> ChargeLine:
    return ChargeLine(
        line_no=row.line_no,
        hospital_code=row.hospital_code,
        national_code=row.national_code,
        name=row.name,
        chrgitm_lv=row.chrgitm_lv,
        med_chrgitm_type=row.med_chrgitm_type,
        quantity_ten_thousandths=row.quantity_ten_thousandths,
        unit_price=Money(row.unit_price_fen),
        line_total=Money(row.line_total_fen),
        dept_code=row.dept_code,
        doctor_code=row.doctor_code,
    )


def _payment_from(row: Any) -> Payment:
    """From a payments row, or a payment's columns of an order's joined row (_JoinedPayment)."""
    return Payment(
        payment_id=row.payment_id,
        order_id=row.order_id,
        attempt_no=row.attempt_no,
        channel=row.channel,
        method=row.method,
        amount=Money(row.amount_fen),
        status=PaymentStatus(row.status),
        out_trade_no=row.out_trade_no,
        created_at=as_utc(row.created_at),
        expires_at=_utc(row.expires_at),
        channel_transaction_id=row.channel_transaction_id,
        code_url=row.code_url,
        succeeded_at=_utc(row.succeeded_at),
        excess=row.excess,
        refunded=Money(row.refunded_fen),
        operator_id=row.operator_id,
        pos=PosSlip(row.pos_reference_no, row.pos_terminal_id, row.pos_batch_no, row.masked_card_no)
        if row.pos_reference_no
        else None,
    )


def _refund_from(row: Row[Any]) -> Refund:
    return Refund(
        refund_id=row.refund_id,
        order_id=row.order_id,
        payment_id=row.payment_id,
        refund_no=row.refund_no,
        kind=RefundKind(row.kind),
        cash=Money(row.cash_fen),
        fund=Money(row.fund_fen),
        personal_account=Money(row.personal_account_fen),
        status=RefundStatus(row.status),
        out_refund_no=row.out_refund_no,
        reason=row.reason,
        created_at=as_utc(row.created_at),
        channel_refund_id=row.channel_refund_id,
        succeeded_at=_utc(row.succeeded_at),
        revokes_settlement=row.revokes_settlement,
        operator_id=row.operator_id,
        requested_by=row.requested_by,
    )


def _utc(moment: datetime | None) -> datetime | None:
    return as_utc(moment) if moment is not None else None


# ---- domain -> rows (refunded amounts are never written from here: see reserve_refund) -------------


def _order_values(order: PaymentOrder, created: bool = False) -> dict[str, Any]:
    values: dict[str, Any] = {
        "status": order.status.value,
        "insutype": order.insutype,
        "cash_due_fen": order.cash_due.fen,
        "cash_paid_fen": order.cash_paid.fen,
        "settlement_id": order.settlement_id,
        "setl_id": order.setl_id,
        "attention": order.attention.value if order.attention else None,
        # Reasons carry partners' free text: scrubbed of anything shaped like a patient identifier.
        "attention_reason": scrub(order.attention_reason)[:512],
        "status_before_attention": order.status_before_attention.value
        if order.status_before_attention
        else None,
        "settlement_revoked": order.settlement_revoked,
        "close_requested": order.close_requested,
        "close_reason": scrub(order.close_reason)[:256],
        "presettlement_cancelled": order.presettlement_cancelled,
        "attempts": order.attempts,
        "payment_count": len(order.payments),
        "refund_count": len(order.refunds),
        "line_refund_count": len(order.line_refunds),
        "last_step_at": order.last_step_at,
        "due_at": order.due_at,
        "lease_holder": order.lease_holder,
        "lease_expires_at": order.lease_expires_at,
        "settled_at": order.settled_at,
        "updated_at": utcnow(),
        **{column: None for column in orm.SPLIT_COLUMNS},
    }
    if order.split is not None:
        values.update({_SPLIT[name]: fen for name, fen in order.split.as_fen().items()})
    if created:
        values.update(_identity_values(order))
    return values


def _identity_values(order: PaymentOrder) -> dict[str, Any]:
    """Columns fixed at creation."""
    return {
        "order_id": order.order_id,
        "create_request_id": order.create_request_id,
        "his_order_no": order.his_order_no,
        "campus_code": order.campus_code,
        "scene": order.scene,
        "dept_code": order.dept_code,
        "his_patient_id": order.his_patient_id,
        "masked_cert_no": order.masked_cert_no,
        "insured": order.insured,
        "med_type": order.med_type,
        "total_fen": order.total.fen,
        "refunded_cash_fen": 0,
        "cash_placed_fen": 0,
        "created_at": order.created_at,
        "expires_at": order.expires_at,
    }


def _line_values(order_id: str, index: int, line: ChargeLine) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "line_index": index,
        "line_no": line.line_no,
        "hospital_code": line.hospital_code,
        "national_code": line.national_code,
        "name": line.name,
        "chrgitm_lv": line.chrgitm_lv,
        "med_chrgitm_type": line.med_chrgitm_type,
        "quantity_ten_thousandths": line.quantity_ten_thousandths,
        "unit_price_fen": line.unit_price.fen,
        "line_total_fen": line.line_total.fen,
        "dept_code": line.dept_code,
        "doctor_code": line.doctor_code,
    }


def _payment_values(payment: Payment) -> dict[str, Any]:
    return {
        "payment_id": payment.payment_id,
        "order_id": payment.order_id,
        "attempt_no": payment.attempt_no,
        "channel": payment.channel,
        "method": payment.method,
        "amount_fen": payment.amount.fen,
        "status": payment.status.value,
        "out_trade_no": payment.out_trade_no,
        "channel_transaction_id": payment.channel_transaction_id,
        "code_url": payment.code_url,
        "excess": payment.excess,
        "created_at": payment.created_at,
        "expires_at": payment.expires_at,
        "succeeded_at": payment.succeeded_at,
        "updated_at": utcnow(),
        "operator_id": payment.operator_id,
        "pos_terminal_id": payment.pos.terminal_id if payment.pos else None,
        "pos_batch_no": payment.pos.batch_no if payment.pos else None,
        "pos_reference_no": payment.pos.reference_no if payment.pos else None,
        "masked_card_no": payment.pos.masked_card_no if payment.pos else "",
    }


def _refund_values(refund: Refund) -> dict[str, Any]:
    return {
        "refund_id": refund.refund_id,
        "order_id": refund.order_id,
        "payment_id": refund.payment_id,
        "refund_no": refund.refund_no,
        "kind": refund.kind.value,
        "cash_fen": refund.cash.fen,
        "fund_fen": refund.fund.fen,
        "personal_account_fen": refund.personal_account.fen,
        "status": refund.status.value,
        "out_refund_no": refund.out_refund_no,
        "reason": scrub(refund.reason)[:256],
        "channel_refund_id": refund.channel_refund_id,
        "revokes_settlement": refund.revokes_settlement,
        "operator_id": refund.operator_id,
        "requested_by": refund.requested_by,
        "created_at": refund.created_at,
        "succeeded_at": refund.succeeded_at,
        "updated_at": utcnow(),
    }
