"""The payment order aggregate (统一支付订单) and its state machine.

Every change of status goes through `_move`, which checks it against `TRANSITIONS`; a refused move
is a StateConflict. The aggregate decides; the service layer loads it under a row lock, calls one
method and saves it in the same transaction, so each decision sees the latest committed state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from services.payment_core.domain import keys
from services.payment_core.domain.line_refunds import checked_lines, remaining_lines
from services.payment_core.domain.model import (
    CHANNEL_NONE,
    METHOD_NONE,
    METHOD_POS,
    REFUNDABLE_ATTENTION,
    Attention,
    ChannelPaymentSeen,
    ChargeLine,
    InsuranceSplit,
    LineRefund,
    LineRefundStage,
    OrderStatus,
    Payment,
    PaymentOutcome,
    PaymentStatus,
    PosSlip,
    Refund,
    RefundedLine,
    RefundKind,
    RefundStatus,
)
from services.runtime.errors import InvalidArgument, NotFound, RefundExceedsPaid, StateConflict
from services.runtime.money import Money, total

S = OrderStatus
NEVER = datetime.max.replace(tzinfo=UTC)
TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    S.PRESETTLING: frozenset({S.AWAITING_PAYMENT, S.CLOSED, S.NEEDS_ATTENTION}),
    S.AWAITING_PAYMENT: frozenset({S.PAYING, S.SETTLING, S.CLOSED, S.NEEDS_ATTENTION}),
    S.PAYING: frozenset({S.PAYING, S.AWAITING_PAYMENT, S.SETTLING, S.SETTLED, S.CLOSED, S.NEEDS_ATTENTION}),
    S.SETTLING: frozenset({S.SETTLED, S.REFUNDING, S.CLOSED, S.NEEDS_ATTENTION}),
    S.SETTLED: frozenset({S.REFUNDING, S.NEEDS_ATTENTION}),
    S.CLOSED: frozenset({S.NEEDS_ATTENTION}),
    S.REFUNDING: frozenset({S.REFUNDED, S.SETTLED, S.CLOSED, S.SETTLING, S.NEEDS_ATTENTION}),
    S.REFUNDED: frozenset({S.NEEDS_ATTENTION}),
    S.NEEDS_ATTENTION: frozenset(set(S) - {S.PRESETTLING}),
}


@dataclass(slots=True)
class PaymentOrder:
    """One HIS bill and everything that moved money for it."""

    order_id: str
    create_request_id: str
    his_order_no: str
    scene: str
    campus_code: str
    dept_code: str
    his_patient_id: str
    masked_cert_no: str
    lines: tuple[ChargeLine, ...]
    insured: bool
    insutype: str
    med_type: str
    status: OrderStatus
    total: Money
    cash_due: Money
    created_at: datetime
    settlement_id: str = ""
    split: InsuranceSplit | None = None
    setl_id: str = ""
    settled_at: datetime | None = None
    attention: Attention | None = None
    attention_reason: str = ""
    # The status to return to once an attention that does not change the money is resolved.
    status_before_attention: OrderStatus | None = None
    settlement_revoked: bool = False
    # After this the order is closed if unpaid (the process manager's expiry step).
    expires_at: datetime = NEVER
    # ClosePaymentOrder was asked: the process manager closes the attempts, then the order.
    close_requested: bool = False
    close_reason: str = ""
    # 2205 done (or nothing left to undo at the insurer) for a closed insured order.
    presettlement_cancelled: bool = False
    # The process manager's clock: inconclusive answers to the current question, and when the
    # order last moved or was last asked about (see domain.process.Schedule).
    attempts: int = 0
    last_step_at: datetime | None = None
    # When the janitor should look at the order next (what next_step said; None: nothing to do).
    due_at: datetime | None = None
    # Who is running a step of the order now, and until when at most (see service_layer.process).
    lease_holder: str | None = None
    lease_expires_at: datetime | None = None
    # Maintained by storage (refunded_cash_fen <= cash_paid_fen); read-only here.
    refunded_cash: Money = Money(0)  # noqa: RUF009 - Money is frozen, so one shared default is safe
    payments: list[Payment] = field(default_factory=list)
    refunds: list[Refund] = field(default_factory=list)
    # Refunds by lines of an insured order, oldest first (see domain.line_refunds).
    line_refunds: list[LineRefund] = field(default_factory=list)

    # ---- reading -------------------------------------------------------------------------------

    @property
    def cash_paid(self) -> Money:
        """Every success, kept or not (an excess one is refunded): what refunds are bounded by."""
        return total(p.amount for p in self.payments if p.status is PaymentStatus.SUCCEEDED)

    @property
    def cash_kept(self) -> Money:
        """The successes that count towards the cash share, net of what went back."""
        return total(p.amount - p.refunded for p in self.payments if p.is_kept)

    @property
    def cash_remaining(self) -> Money:
        """What no payment covers yet: cash due minus the kept successes and the open attempts."""
        return self.cash_due - total(p.amount for p in self.payments if p.covers_share)

    @property
    def awaits_settlement(self) -> bool:
        pending = self.status is S.NEEDS_ATTENTION and self.attention is Attention.SETTLEMENT_PENDING
        return self.status is S.SETTLING or pending

    @property
    def settlement_channel(self) -> str:
        """The channel that collected the (first part of the) cash (NONE for a zero share)."""
        paid = [p for p in self.payments if p.is_kept]
        return paid[0].channel if paid else CHANNEL_NONE

    @property
    def step_since(self) -> datetime:
        """When the order last moved or was last asked about (the schedule counts from here)."""
        return self.last_step_at or self.created_at

    def open_payment(self) -> Payment | None:
        return next((p for p in self.payments if p.is_open), None)

    def open_payments(self) -> list[Payment]:
        return [p for p in self.payments if p.is_open]

    def is_ending(self, now: datetime) -> bool:
        """Closing was asked for, or the order expired: no new attempt, the open ones are closed."""
        return self.close_requested or now >= self.expires_at

    def payments_to_return(self) -> list[Payment]:
        """Kept payments of a closing order that no RETURN refund has taken yet."""
        returned = {r.payment_id for r in self.refunds if r.kind is RefundKind.RETURN}
        kept = [p for p in self.payments if p.is_kept and p.refundable.fen > 0]
        return [p for p in kept if p.payment_id not in returned]

    @property
    def returning(self) -> bool:
        """Giving back what a closing order was partly paid (then it closes, whatever comes in)."""
        return any(r.kind is RefundKind.RETURN for r in self.refunds)

    def payment_by_trade_no(self, out_trade_no: str) -> Payment | None:
        return next((p for p in self.payments if p.out_trade_no == out_trade_no), None)

    def refund_by_id(self, refund_id: str) -> Refund:
        return next(r for r in self.refunds if r.refund_id == refund_id)

    # ---- creation and pre-settlement -----------------------------------------------------------

    def accept_presettlement(self, settlement_id: str, split: InsuranceSplit, insutype: str) -> None:
        """The insurer's split is known: the cash share is what the patient owes."""
        problems = split.problems(self.total)
        if problems:
            raise SplitDoesNotAddUp("the insurer's split does not add up: " + "; ".join(problems))
        self._move(S.AWAITING_PAYMENT)
        self.settlement_id, self.split, self.insutype = settlement_id, split, insutype or self.insutype
        self.cash_due = split.psn_cash_pay
        self._clear_attention()

    def presettlement_unknown(self, reason: str) -> None:
        self._flag(Attention.PRESETTLE_UNKNOWN, reason)

    # ---- collecting the cash share -------------------------------------------------------------

    def start_payment(
        self,
        payment_id: str,
        channel: str,
        method: str,
        now: datetime,
        expires_at: datetime,
        amount: Money = Money(0),  # Money is frozen, so one shared default is safe
    ) -> Payment:
        """A new attempt on a channel for `amount` of the cash share (zero: what remains); the
        caller records it before the channel hears of it. Attempts may be open side by side as
        long as together with the kept successes they do not exceed the cash due (storage checks
        the same sum, whatever this instance believed)."""
        self._require({S.AWAITING_PAYMENT, S.PAYING}, "start a payment")
        if self.is_ending(now) or self.returning:
            raise StateConflict(f"order {self.order_id} is closing: it can no longer be paid")
        if self.cash_due.fen <= 0:
            raise StateConflict(f"order {self.order_id} has no cash share: pay with CHANNEL_NONE")
        remaining = self.cash_remaining
        if amount.fen == 0 and remaining.fen <= 0:
            raise StateConflict(
                f"order {self.order_id} already has payments in progress for all of its cash share",
                {"order_id": self.order_id},
            )
        if amount > remaining:
            raise InvalidArgument.field(
                "amount_fen", f"more than what remains to be paid ({remaining.fen} fen)"
            )
        payment = self._new_payment(payment_id, channel, method, amount if amount.fen else remaining, now)
        payment.expires_at = expires_at
        self._move(S.PAYING)
        return payment

    def start_window_payment(
        self, payment_id: str, channel: str, method: str, now: datetime, amount: Money,
        operator_id: str, pos: PosSlip | None,
    ) -> Payment:  # fmt: skip
        """Money already taken at the window (cash, POS), recorded for exactly `amount`; the process
        manager confirms it PAID at once. The same POS slip reported again is the payment already
        recorded (storage's unique index guards the slip across orders); with another amount it is
        refused, never a second payment."""
        if pos is not None:
            same = next((p for p in self.payments if p.pos is not None and p.pos.key == pos.key), None)
            if same is not None:
                if same.amount != amount:
                    raise StateConflict(
                        f"POS reference {pos.reference_no} (terminal {pos.terminal_id}, batch "
                        f"{pos.batch_no}) is recorded for {same.amount.fen} fen, not {amount.fen}",
                        {"field": "pos.reference_no", "payment_id": same.payment_id},
                    )
                return same
        payment = self.start_payment(payment_id, channel, method, now, now, amount)
        payment.expires_at, payment.operator_id, payment.pos = None, operator_id, pos
        return payment

    def settle_without_cash(self, payment_id: str, now: datetime) -> Payment:
        """Insurer and personal account cover the bill: record a zero payment and settle."""
        self._require({S.AWAITING_PAYMENT}, "settle without cash")
        if self.cash_due.fen != 0:
            raise StateConflict(f"order {self.order_id} owes {self.cash_due.fen} fen in cash")
        payment = self._new_payment(payment_id, CHANNEL_NONE, METHOD_NONE, Money(0), now)
        payment.status, payment.succeeded_at = PaymentStatus.SUCCEEDED, now
        self._after_cash_collected(now)
        return payment

    def payment_placed(self, payment: Payment, code_url: str) -> None:
        payment.status, payment.code_url = PaymentStatus.PENDING, code_url

    def code_payment_sent(self, payment: Payment, masked_code: str, reverse_from: datetime) -> None:
        """A code payment went to the channel (its answer may be lost): it is never sent again, and
        not reversed before `reverse_from`."""
        payment.code_url = masked_code
        if payment.expires_at is None or payment.expires_at < reverse_from:
            payment.expires_at = reverse_from

    def payment_unknown(self, payment: Payment) -> None:
        payment.status = PaymentStatus.UNKNOWN

    def payment_ended(self, payment: Payment, status: PaymentStatus) -> None:
        """The channel refused or closed an attempt: no money moved; the order waits again."""
        if not payment.is_open:
            return
        payment.status = status
        if self.status is S.PAYING and self.open_payment() is None:
            self._move(S.AWAITING_PAYMENT)

    def record_channel_success(self, seen: ChannelPaymentSeen, now: datetime) -> PaymentOutcome:
        """Apply a channel's word that an attempt was paid. Idempotent: a repeat changes nothing.
        A different amount is never applied; money on a closed or paid order is kept and flagged."""
        payment = self.payment_by_trade_no(seen.out_trade_no)
        if payment is None:
            raise StateConflict(f"no payment {seen.out_trade_no} on order {self.order_id}")
        if payment.status is PaymentStatus.SUCCEEDED:
            return PaymentOutcome.DUPLICATE
        if seen.amount != payment.amount:
            payment.status = PaymentStatus.UNKNOWN
            self._flag(Attention.AMOUNT_MISMATCH, _mismatch(seen, payment))
            return PaymentOutcome.AMOUNT_MISMATCH
        # An open attempt's share is held for it; an ended one's was given up and must still fit.
        fits = payment.is_open or payment.amount <= self.cash_remaining
        payment.status, payment.succeeded_at = PaymentStatus.SUCCEEDED, seen.success_time
        payment.channel_transaction_id = seen.transaction_id
        if fits and self._collecting():
            return self._part_collected(now)
        late = Attention.PAID_AFTER_CLOSE if self.status is S.CLOSED else Attention.DUPLICATE_PAYMENT
        payment.excess = True
        paid = f"{payment.out_trade_no} paid {payment.amount.fen} fen"
        self._flag(late, f"{paid} after the order was {self._kept()}")
        return PaymentOutcome.NEEDS_REFUND

    # ---- settlement ----------------------------------------------------------------------------

    def settlement_confirmed(self, setl_id: str, split: InsuranceSplit | None, now: datetime) -> bool:
        """The insurer settled (2207). False (and flagged) when its final split contradicts the
        cash already collected: that is for a person to decide, never guessed."""
        if not self.awaits_settlement:
            raise StateConflict(f"order {self.order_id} is not waiting for a settlement")
        final = split or self.split
        net_cash = self.cash_kept
        if final is not None and (final.psn_cash_pay != net_cash or final.problems(self.total)):
            self._flag(
                Attention.SETTLEMENT_MISMATCH, f"settlement {setl_id} split differs from the cash paid"
            )
            return False
        self.split, self.setl_id = final, setl_id
        self._settle(now)
        return True

    # ---- the process manager's clock ----------------------------------------------------------

    def moved(self, now: datetime) -> None:
        """The order changed: the next question to an outside party starts a fresh schedule."""
        self.attempts, self.last_step_at = 0, now

    def still_waiting(self, now: datetime) -> None:
        """An outside party gave no final answer: ask again later, on the escalating schedule."""
        self.attempts += 1
        self.last_step_at = now

    def note(self, reason: str) -> None:
        """Why the order is still waiting (shown with it), without changing where it stands."""
        self.attention_reason = reason

    def give_up(self, attention: Attention, reason: str) -> None:
        """The schedule's attempts are spent: a person decides (never a guess)."""
        self._flag(attention, reason)

    def settlement_refused(self, refund_id: str, reason: str, now: datetime) -> Refund | None:
        """The insurer refused 2207 for good: compensate by giving the cash back, every succeeded
        payment to its own channel (one COMPENSATION refund each; the first is returned)."""
        if not self.awaits_settlement:
            raise StateConflict(f"order {self.order_id} is not waiting for a settlement")
        self._clear_attention()
        self.attention_reason = f"insurer refused the settlement: {reason}"
        paid = [p for p in self.payments if p.is_kept and p.refundable.fen > 0]
        if not paid:
            self._move(S.CLOSED)
            return None
        refunds = self._refund_each(refund_id, paid, RefundKind.COMPENSATION, reason, now)
        self._move(S.REFUNDING)
        return refunds[0]

    # ---- closing -------------------------------------------------------------------------------

    def request_close(self, reason: str) -> None:
        """ClosePaymentOrder: the process manager closes the attempts at the channel, then the order."""
        if self.status is S.CLOSED or self.close_requested:
            return
        self._require({S.AWAITING_PAYMENT, S.PAYING}, "close")
        self.close_requested, self.close_reason = True, reason

    def close(self, reason: str) -> None:
        """Close an order that will not be paid; its channel attempts are closed already."""
        creating = self.status is S.NEEDS_ATTENTION and self.attention is Attention.PRESETTLE_UNKNOWN
        if not creating:
            self._require({S.PRESETTLING, S.AWAITING_PAYMENT, S.PAYING}, "close")
        self._clear_attention()
        for payment in self.payments:
            if payment.is_open:
                payment.status = PaymentStatus.CLOSED
        self.close_reason = self.close_reason or reason
        self._move(S.CLOSED)

    def presettlement_undone(self) -> None:
        self.presettlement_cancelled = True

    # ---- refunds -------------------------------------------------------------------------------

    def begin_refund(
        self, refund_id: str, requested: Money, reason: str, now: datetime, requested_by: str = ""
    ) -> Refund:
        """Refund of a settled order, in full (`requested` zero, or everything still refundable) or
        in part, or return of cash an order should not hold. One refund (batch) at a time: the order
        is REFUNDING until it is done, then SETTLED again, or REFUNDED once everything paid is back.

        A partial refund goes back to the original channels by the split policy of `split_refund`
        (largest refundable payment first). An insured order is refunded in part by its lines only
        (`begin_line_refund`): a cash amount alone cannot say what the insurer should re-settle."""
        if requested.fen < 0:
            raise InvalidArgument.field("cash_fen", "must be >= 0 (0 = refund in full)")
        excess = self.status is S.NEEDS_ATTENTION and self.attention in REFUNDABLE_ATTENTION
        if self.status is not S.SETTLED and not excess:
            raise StateConflict(
                f"order {self.order_id} is {self.status.value}: nothing to refund",
                {"order_id": self.order_id, "status": self.status.value},
            )
        # A settled order paid by several payments: each goes back to its own channel. (A zero cash
        # share, or an excess: the one payment concerned, as before.)
        paid = [] if excess else [p for p in self.payments if p.is_kept and p.refundable.fen > 0]
        single = self._refundable_payment()
        paid = paid or ([single] if single is not None else [])
        refundable = total(p.refundable for p in paid)
        if requested > refundable:
            raise RefundExceedsPaid(
                f"cash_fen {requested.fen} is more than what remains refundable ({refundable.fen} fen)",
                {"order_id": self.order_id, "field": "cash_fen", "refundable_fen": str(refundable.fen)},
            )
        kind = RefundKind.EXCESS if excess else RefundKind.REQUESTED
        if requested.fen in (0, refundable.fen):
            made = (
                self._refund_each(refund_id, paid, kind, reason, now)
                if paid
                else [self._new_refund(refund_id, None, kind, reason, now)]
            )
        else:
            if excess or self.insured:
                raise StateConflict(
                    f"order {self.order_id}: only a full refund (cash_fen = 0) is offered for "
                    + (
                        "insured orders without lines (a partial one names its lines)"
                        if self.insured
                        else "an order holding an excess payment"
                    )
                    + " in this release",
                    {"order_id": self.order_id, "field": "cash_fen"},
                )
            parts = split_refund(paid, requested)
            ids = [refund_id, *(f"{refund_id}-{n}" for n in range(2, len(parts) + 1))]
            made = [
                self._new_refund(i, p, kind, reason, now, cash)
                for i, (p, cash) in zip(ids, parts, strict=True)
            ]
        for r in made:
            r.requested_by = requested_by
        refund = made[0]
        self._move(S.REFUNDING)
        return refund

    # ---- refunds by lines of an insured order (2208 → 2204/2206 → 2207 → cash back) ---------------

    @property
    def line_refund(self) -> LineRefund | None:
        """The refund by lines under way (or stopped for a person), if any."""
        last = self.line_refunds[-1] if self.line_refunds else None
        ended = (LineRefundStage.RESETTLED, LineRefundStage.REFUSED)
        return last if last is not None and last.stage not in ended else None

    def billed_lines(self) -> tuple[ChargeLine, ...]:
        """The bill as it stands: the order's lines less what refunds by lines took off."""
        return remaining_lines(self.lines, self.line_refunds)

    @property
    def settlement_step(self) -> str:
        """The ledger step of the settlement entry that stands ("settle", or the last re-settlement)."""
        done = [r for r in self.line_refunds if r.stage is LineRefundStage.RESETTLED]
        return f"resettle{done[-1].line_refund_no}" if done else "settle"

    def is_line_refund(self, refund: Refund) -> bool:
        """Whether `refund` pays out cash a re-settlement freed (its ids are the decision's)."""
        decision = _decision_of(refund.refund_id)
        return any(r.refund_id == decision for r in self.line_refunds)

    def begin_line_refund(
        self, refund_id: str, lines: tuple[RefundedLine, ...], expected: Money, reason: str,
        now: datetime, requested_by: str,
    ) -> Refund | None:  # fmt: skip
        """A partial refund of a settled insured order by its lines: recorded REVOKING (the order
        REFUNDING), then the process manager revokes, re-settles what remains and refunds the cash
        difference. Every line named in full is a full refund (returned then)."""
        if not self.insured:
            raise InvalidArgument.field(
                "lines", "only for an insured order (refund a self-pay one by cash_fen)"
            )
        self._require({S.SETTLED}, "refund by lines")
        billed = self.billed_lines()
        taken = checked_lines(lines, billed)
        refundable = total(p.refundable for p in self.payments if p.is_kept)
        if expected > refundable:
            raise RefundExceedsPaid(
                f"cash_fen {expected.fen} is more than what remains refundable ({refundable.fen} fen)",
                {"order_id": self.order_id, "field": "cash_fen", "refundable_fen": str(refundable.fen)},
            )
        refund = LineRefund(
            refund_id=refund_id, order_id=self.order_id, line_refund_no=len(self.line_refunds) + 1,
            lines=taken, stage=LineRefundStage.REVOKING, revoked_settlement_id=self.settlement_id,
            reason=reason, created_at=now, expected_cash=expected, requested_by=requested_by,
        )  # fmt: skip
        if not remaining_lines(billed, [refund]):
            return self.begin_refund(refund_id, expected, reason, now, requested_by)
        self.line_refunds.append(refund)
        self._move(S.REFUNDING)
        return None

    def line_refund_revoked(self) -> None:
        """2208 done: the whole settlement is revoked; what remains is pre-settled next."""
        refund = self._line_refund_at(LineRefundStage.REVOKING)
        refund.stage, self.settlement_revoked = LineRefundStage.PRESETTLING, True
        self._resume_refunding()

    def line_refund_not_revoked(self, reason: str) -> None:
        """The insurer refused the 2208: nothing changed, the order is settled as it was."""
        refund = self._line_refund_at(LineRefundStage.REVOKING)
        refund.stage = LineRefundStage.REFUSED
        self._clear_attention()
        self.attention_reason = f"refund by lines refused by the insurer (2208): {reason}"
        self._move(S.SETTLED)

    def line_refund_presettled(self, settlement_id: str, split: InsuranceSplit) -> None:
        """2206 of the remaining lines: the cash it frees is what was paid less the new cash
        share. A split that does not add up, a larger cash share, or not the cash the HIS expected
        back is for a person (the old settlement is revoked, the new one not settled)."""
        refund = self._line_refund_at(LineRefundStage.PRESETTLING)
        refund.new_settlement_id = settlement_id
        self._resume_refunding()
        remaining = total(line.line_total for line in self.billed_lines())
        problems = split.problems(remaining)
        freed = self.cash_kept - split.psn_cash_pay
        if problems or freed.is_negative():
            why = "; ".join(problems) or (
                f"new cash share {split.psn_cash_pay.fen} fen is more than the {self.cash_kept.fen} fen paid"
            )
            return self._line_refund_mismatch(refund, why)
        if refund.expected_cash.fen and refund.expected_cash != freed:
            why = f"the new split frees {freed.fen} fen, not the {refund.expected_cash.fen} fen asked back"
            return self._line_refund_mismatch(refund, why)
        refund.cash, refund.stage = freed, LineRefundStage.SETTLING

    def line_refund_settled(self, setl_id: str, split: InsuranceSplit | None, now: datetime) -> None:
        """2207 of the remaining lines: the new settlement stands (the ledger reverses the old entry
        and posts the new one), and the freed cash goes back to the original channels, largest
        refundable first, one Refund each (none when nothing was freed: SETTLED at once)."""
        refund = self._line_refund_at(LineRefundStage.SETTLING)
        self._resume_refunding()
        final = split or self.split
        if final is None or final.psn_cash_pay != self.cash_kept - refund.cash:
            return self._line_refund_mismatch(
                refund, f"settlement {setl_id} split differs from its pre-settlement"
            )
        self.settlement_id, self.setl_id, self.split = refund.new_settlement_id, setl_id, final
        self.settlement_revoked, refund.stage = False, LineRefundStage.RESETTLED
        self._clear_attention()
        if refund.cash.fen == 0:
            self._move(S.SETTLED)
            return
        kept = [p for p in self.payments if p.is_kept and p.refundable.fen > 0]
        parts = split_refund(kept, refund.cash)
        ids = [refund.refund_id, *(f"{refund.refund_id}-{n}" for n in range(2, len(parts) + 1))]
        for refund_id, (payment, cash) in zip(ids, parts, strict=True):
            made = self._new_refund(refund_id, payment, RefundKind.REQUESTED, refund.reason, now, cash)
            made.requested_by = refund.requested_by

    def line_refund_refused(self, reason: str) -> None:
        """The insurer refused to pre-settle or settle the remaining lines: the old settlement is
        revoked and no new one stands, so a person decides; no cash goes back by guess (the amount
        owed depends on what the insurer will pay)."""
        refund = self.line_refund
        assert refund is not None
        refund.stage = LineRefundStage.NEEDS_ATTENTION
        self._flag(Attention.RESETTLE_REFUSED, f"re-settlement of the remaining lines refused: {reason}")

    def _resume_refunding(self) -> None:
        """The insurer answered after a person was asked (its schedule spent): carry on."""
        if self.status is S.NEEDS_ATTENTION and self.attention in _INSURER_SILENT:
            self._clear_attention()
            self._move(S.REFUNDING)

    def _line_refund_mismatch(self, refund: LineRefund, why: str) -> None:
        refund.stage = LineRefundStage.NEEDS_ATTENTION
        self._flag(Attention.RESETTLE_MISMATCH, f"refund by lines {refund.refund_id} stopped: {why}")

    def _line_refund_at(self, stage: LineRefundStage) -> LineRefund:
        refund = self.line_refund
        if refund is None or refund.stage is not stage:
            raise StateConflict(f"order {self.order_id} has no refund by lines {stage.value.lower()}")
        return refund

    def return_payment(self, refund_id: str, payment: Payment, now: datetime) -> Refund:
        """A closing order gives back a payment it was partly paid by, to the payment's channel;
        its status does not move (the process manager closes it once no attempt is open)."""
        reason = f"order closing before it was paid in full: {self.close_reason or 'expired'}"
        return self._new_refund(refund_id, payment, RefundKind.RETURN, reason, now)

    def give_back(self, refund_id: str, payment: Payment, now: datetime) -> Refund:
        """A success the order must not keep goes back to its channel, recorded as an EXCESS refund
        (the audit record: which payment, how much, why)."""
        reason = f"{self.attention.value if self.attention else 'EXCESS'}: refunded automatically"
        refund = self._new_refund(refund_id, payment, RefundKind.EXCESS, reason, now)
        self._move(S.REFUNDING)
        return refund

    def refund_processing(self, refund: Refund, channel_refund_id: str) -> None:
        if refund.status in (RefundStatus.PENDING, RefundStatus.UNKNOWN):
            refund.status = RefundStatus.PROCESSING
            refund.channel_refund_id = channel_refund_id or refund.channel_refund_id

    def window_refund_handed_over(
        self, refund_id: str, operator_id: str, pos: PosSlip | None, now: datetime
    ) -> Refund:
        """The cashier confirms a refund to CASH or POS was paid out (cash from the drawer, a 退货 on
        the terminal, whose reference becomes the refund's channel id). A repeat is a replay."""
        refund = next((r for r in self.refunds if r.refund_id == refund_id), None)
        if refund is None:
            raise NotFound(f"no refund {refund_id} on order {self.order_id}", {"refund_id": refund_id})
        payment = next((p for p in self.payments if p.payment_id == refund.payment_id), None)
        if payment is None or not payment.at_window:
            raise StateConflict(f"refund {refund_id} is not paid out at the window", {"refund_id": refund_id})
        if refund.status is RefundStatus.SUCCEEDED:
            return refund
        if payment.method == METHOD_POS and pos is None:
            raise InvalidArgument.field("pos", "required for a refund to POS: the 退货 slip")
        if payment.method != METHOD_POS and pos is not None:
            raise InvalidArgument.field("pos", "only for a refund to POS")
        if refund.status is not RefundStatus.PROCESSING:
            raise StateConflict(
                f"refund {refund_id} is {refund.status.value}: not handed to the window yet",
                {"refund_id": refund_id},
            )
        refund.operator_id = operator_id
        self.refund_succeeded(refund, pos.reference_no if pos else "", now)
        return refund

    def refund_abnormal(self, refund: Refund, channel_refund_id: str) -> None:
        """The channel accepted the refund but could not deliver it: never re-issued, a person
        re-routes it (its amount stays reserved)."""
        refund.status = RefundStatus.ABNORMAL
        refund.channel_refund_id = channel_refund_id or refund.channel_refund_id
        self._flag(Attention.REFUND_ABNORMAL, f"refund {refund.out_refund_no} could not reach the patient")

    def settlement_revoked_for(self, refund: Refund) -> None:
        refund.fund = self.split.fund_pay_sumamt if self.split else Money(0)
        refund.personal_account = self.split.acct_pay if self.split else Money(0)
        refund.revokes_settlement = True
        self.settlement_revoked = True

    def refund_succeeded(self, refund: Refund, channel_refund_id: str, now: datetime) -> bool:
        """True when this call completed the refund (False for a repeat)."""
        if refund.status is RefundStatus.SUCCEEDED:
            return False
        refund.status, refund.succeeded_at = RefundStatus.SUCCEEDED, now
        refund.channel_refund_id = channel_refund_id or refund.channel_refund_id
        if refund.kind is RefundKind.EXCESS:
            self._restore()
            self._flag_excess_left()
            return True
        if refund.kind is RefundKind.RETURN:
            if self.attention in _REFUND_TROUBLE and self._all_back(self._of_kind(RefundKind.RETURN)):
                self._restore()  # the flagged return came through after all
            return True
        if not self._all_back(self._batch_of(refund)):
            # The other payments are still on their way back, or one did not go back (its flag
            # stays): the order is REFUNDED only once every payment's refund succeeded.
            return True
        # A compensation keeps its reason on the order: finance must see why cash went back.
        reason = self.attention_reason if refund.kind is RefundKind.COMPENSATION else ""
        self._clear_attention()
        self.attention_reason = reason
        # A refund by lines leaves the remaining lines settled, whatever cash is left.
        left = self._left_to_refund().fen > 0 or self.is_line_refund(refund)
        partly = refund.kind is RefundKind.REQUESTED and left
        # A partial refund: the order is still settled for what was not refunded.
        self._move(S.SETTLED if partly else S.REFUNDED)
        return True

    def refund_failed(self, refund: Refund, reason: str) -> None:
        """The channel (or the insurer) will not do it; storage releases the amount. Only a plain
        requested refund with nothing revoked goes back to SETTLED; anything else is for a person."""
        refund.status = RefundStatus.FAILED
        alone = all(r.status is RefundStatus.FAILED for r in self._batch_of(refund))
        # A refund by lines is owed after its re-settlement: a refusal is a person's, never dropped.
        plain = not self.settlement_revoked and not self.is_line_refund(refund)
        if refund.kind is RefundKind.REQUESTED and plain and alone:
            self._clear_attention()
            self._move(S.SETTLED)
            return
        self._flag(Attention.REFUND_REFUSED, f"refund {refund.out_refund_no} refused: {reason}")

    def refund_unknown(self, refund: Refund, reason: str) -> None:
        refund.status = RefundStatus.UNKNOWN
        self._flag(Attention.REFUND_UNKNOWN, f"refund {refund.out_refund_no}: {reason}")

    def refund_not_sent(self, refund: Refund, reason: str) -> None:
        """The channel refused who we are (signature, certificate serial, key): nothing was done
        there and the refund is still owed. It stays PENDING, sent again with its out_refund_no on
        the schedule, and a person is asked to fix the credentials meanwhile."""
        self._flag(Attention.REFUND_REFUSED, f"refund {refund.out_refund_no} not sent: {reason}")

    def refund_not_at_channel(self, refund: Refund) -> None:
        """A refund whose outcome was unknown is unknown to the channel too: it never landed, so it
        is sent again (PENDING, the same out_refund_no)."""
        if refund.status is RefundStatus.UNKNOWN:
            refund.status = RefundStatus.PENDING

    def revoke_unknown(self, reason: str) -> None:
        self._flag(Attention.REVOKE_UNKNOWN, reason)

    # ---- internals -----------------------------------------------------------------------------

    def _collecting(self) -> bool:
        """Still collecting its cash share (directly, or beneath an excess being given back)."""
        collecting = (S.AWAITING_PAYMENT, S.PAYING)
        giving_back = self.status in (S.NEEDS_ATTENTION, S.REFUNDING)
        beneath = giving_back and self.status_before_attention in collecting
        return self.status in collecting or beneath

    def _part_collected(self, now: datetime) -> PaymentOutcome:
        """A success the order keeps: paid once the kept successes reach the cash due, unless the
        order is already giving back what it was partly paid (closing)."""
        if self.cash_kept != self.cash_due or self.returning:
            if self.status is S.PAYING and self.open_payment() is None:
                self._move(S.AWAITING_PAYMENT)
            return PaymentOutcome.PART_PAID
        if self.status not in (S.AWAITING_PAYMENT, S.PAYING):
            # An excess is being given back first; the order is paid once that is done (_restore).
            self.status_before_attention = S.SETTLING if self.insured else S.SETTLED
            self.settled_at = None if self.insured else now
            return PaymentOutcome.SETTLING if self.insured else PaymentOutcome.SETTLED
        return self._after_cash_collected(now)

    def _flag_excess_left(self) -> None:
        """Another success the order must not keep came in while one was being given back: it is
        flagged again, so the process manager gives it back too (else the flag, cleared by the first
        refund, would leave its money with the order)."""
        given_back = {r.payment_id for r in self.refunds if r.kind is RefundKind.EXCESS}
        left = next((p for p in self.payments if p.is_excess and p.payment_id not in given_back), None)
        if left is not None:
            late = Attention.PAID_AFTER_CLOSE if self.status is S.CLOSED else Attention.DUPLICATE_PAYMENT
            self._flag(
                late, f"{left.out_trade_no} paid {left.amount.fen} fen after the order was {self._kept()}"
            )

    def _left_to_refund(self) -> Money:
        """What the kept payments took that no succeeded refund has given back yet."""
        kept = {p.payment_id: p.amount for p in self.payments if p.is_kept}
        back = total(
            r.cash for r in self.refunds if r.status is RefundStatus.SUCCEEDED and r.payment_id in kept
        )
        return total(kept.values()) - back

    def _of_kind(self, kind: RefundKind) -> list[Refund]:
        return [r for r in self.refunds if r.kind is kind]

    def _batch_of(self, refund: Refund) -> list[Refund]:
        """The refunds made together with `refund` (one per payment, by one decision: the first
        takes the decision's refund id, the others `<id>-<n>`, see `_refund_each`)."""
        decision = _decision_of(refund.refund_id)
        return [
            r
            for r in self._of_kind(refund.kind)
            if r.created_at == refund.created_at and _decision_of(r.refund_id) == decision
        ]

    @staticmethod
    def _all_back(refunds: list[Refund]) -> bool:
        return all(r.status is RefundStatus.SUCCEEDED for r in refunds)

    def _refund_each(
        self, refund_id: str, paid: list[Payment], kind: RefundKind, reason: str, now: datetime
    ) -> list[Refund]:
        """One refund per payment; the first takes `refund_id`, the others derived ids."""
        ids = [refund_id, *(f"{refund_id}-{n}" for n in range(2, len(paid) + 1))]
        return [self._new_refund(i, p, kind, reason, now) for i, p in zip(ids, paid, strict=True)]

    def _after_cash_collected(self, now: datetime) -> PaymentOutcome:
        if self.insured:
            self._move(S.SETTLING)
            return PaymentOutcome.SETTLING
        self._settle(now)
        return PaymentOutcome.SETTLED

    def _settle(self, now: datetime) -> None:
        self._move(S.SETTLED)
        self.settled_at = now
        self._clear_attention()

    def _refundable_payment(self) -> Payment | None:
        paid = [p for p in self.payments if p.status is PaymentStatus.SUCCEEDED and p.amount > p.refunded]
        if paid:
            return paid[-1]
        return next((p for p in self.payments if p.status is PaymentStatus.SUCCEEDED), None)

    def _new_payment(
        self, payment_id: str, channel: str, method: str, amount: Money, now: datetime
    ) -> Payment:
        attempt_no = len(self.payments) + 1
        payment = Payment(
            payment_id=payment_id,
            order_id=self.order_id,
            attempt_no=attempt_no,
            channel=channel,
            method=method,
            amount=amount,
            status=PaymentStatus.PENDING,
            out_trade_no=keys.out_trade_no(self.order_id, attempt_no),
            created_at=now,
        )
        self.payments.append(payment)
        return payment

    def _new_refund(
        self,
        refund_id: str,
        payment: Payment | None,
        kind: RefundKind,
        reason: str,
        now: datetime,
        cash: Money | None = None,
    ) -> Refund:
        """A refund of `cash` (None: everything the payment has left) to the payment's channel."""
        refund_no = len(self.refunds) + 1
        if cash is None:
            cash = payment.amount - payment.refunded if payment else Money(0)
        refund = Refund(
            refund_id=refund_id,
            order_id=self.order_id,
            payment_id=payment.payment_id if payment else None,
            refund_no=refund_no,
            kind=kind,
            cash=cash,
            fund=Money(0),
            personal_account=Money(0),
            status=RefundStatus.PENDING,
            out_refund_no=keys.out_refund_no(self.order_id, refund_no),
            reason=reason,
            created_at=now,
        )
        self.refunds.append(refund)
        return refund

    def _kept(self) -> str:
        return "closed" if self.status is S.CLOSED else "paid"

    def _flag(self, attention: Attention, reason: str) -> None:
        # Keep the first status left behind: an excess refund must return the order to it.
        if self.status is not S.NEEDS_ATTENTION and self.status_before_attention is None:
            self.status_before_attention = self.status
        self._move(S.NEEDS_ATTENTION)
        self.attention, self.attention_reason = attention, reason

    def _restore(self) -> None:
        """Back to where the order was before an excess payment was flagged (now refunded)."""
        self._move(self.status_before_attention or S.CLOSED)
        self._clear_attention()

    def _clear_attention(self) -> None:
        self.attention, self.attention_reason, self.status_before_attention = None, "", None

    def _require(self, allowed: set[OrderStatus], action: str) -> None:
        if self.status not in allowed:
            raise StateConflict(
                f"cannot {action}: order {self.order_id} is {self.status.value}",
                {"order_id": self.order_id, "status": self.status.value},
            )

    def _move(self, target: OrderStatus) -> None:
        if target is not self.status and target not in TRANSITIONS[self.status]:
            raise StateConflict(
                f"order {self.order_id} cannot go from {self.status.value} to {target.value}",
                {"order_id": self.order_id, "status": self.status.value},
            )
        self.status = target


_INSURER_SILENT = frozenset({Attention.REVOKE_UNKNOWN, Attention.RESETTLE_UNKNOWN})
_REFUND_TROUBLE = frozenset({Attention.REFUND_UNKNOWN, Attention.REFUND_REFUSED, Attention.REFUND_ABNORMAL})


def _decision_of(refund_id: str) -> str:
    """The id of the decision a refund was made by (`rfd_x-2` -> `rfd_x`)."""
    head, _, tail = refund_id.rpartition("-")
    return head if head and tail.isdigit() else refund_id


def split_refund(payments: list[Payment], cash: Money) -> list[tuple[Payment, Money]]:
    """The split policy of a partial refund: it goes back to the payment with the most left to
    refund first (on a tie, the most recent one), then the next, each part never more than that
    payment's own remaining refundable amount. Fewest refunds, each to an original channel."""
    order = sorted(payments, key=lambda p: (p.refundable.fen, p.attempt_no), reverse=True)
    parts: list[tuple[Payment, Money]] = []
    left = cash.fen
    for payment in order:
        if left <= 0:
            break
        part = min(left, payment.refundable.fen)
        if part > 0:
            parts.append((payment, Money(part)))
            left -= part
    if left > 0:
        raise RefundExceedsPaid(f"{cash.fen} fen is more than the payments have left to refund")
    return parts


class SplitDoesNotAddUp(StateConflict):
    """The insurer's split contradicts the bill; the pre-settlement must not be used."""


def _mismatch(seen: ChannelPaymentSeen, payment: Payment) -> str:
    return (
        f"channel reports {seen.amount.fen} fen for {payment.out_trade_no}, "
        f"payment is {payment.amount.fen} fen; not applied"
    )
