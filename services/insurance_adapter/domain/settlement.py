"""One insurance settlement's life, as a pure state machine.

    VISIT_REGISTERED ─► FEES_UPLOADED ─► PRESETTLED ◄─► SETTLING ─┬─► SETTLED ─► REVOKED
           │                  │               │                   ├─► FAILED
           └──────────────────┴───────────────┴─► CANCELLED       └─► UNKNOWN ─► SETTLING / SETTLED / FAILED

The first two states are the pre-settlement's recovery points (2201 done, 2204 done): a repeated
Presettle continues from them. SETTLING is the recorded intent of a 2207 (its msgid is known before
the message leaves); callers see it as UNKNOWN because that is what it is until the answer arrives.
Nothing leaves SETTLING/UNKNOWN except on the insurer's word: its 2207 answer, a 5203 query, or a
refused connection (which proves only that this attempt never arrived). Which step comes next, and
when, is domain/process.py's `next_step`; this module only keeps the transitions honest.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from datetime import datetime

from services.runtime.errors import StateConflict
from services.runtime.masking import PatientIdentifier, scrub
from services.runtime.money import Money


class SettlementStatus(enum.StrEnum):
    VISIT_REGISTERED = "VISIT_REGISTERED"
    FEES_UPLOADED = "FEES_UPLOADED"
    PRESETTLED = "PRESETTLED"
    SETTLING = "SETTLING"
    UNKNOWN = "UNKNOWN"
    SETTLED = "SETTLED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    REVOKED = "REVOKED"


S = SettlementStatus
_NEXT: dict[SettlementStatus, frozenset[SettlementStatus]] = {
    S.VISIT_REGISTERED: frozenset({S.FEES_UPLOADED, S.CANCELLED}),
    S.FEES_UPLOADED: frozenset({S.PRESETTLED, S.CANCELLED}),
    S.PRESETTLED: frozenset({S.SETTLING, S.CANCELLED}),
    # SETTLING → SETTLING: a retry re-sends the same msgid, which the insurer answers only once.
    S.SETTLING: frozenset({S.SETTLING, S.SETTLED, S.FAILED, S.UNKNOWN, S.PRESETTLED}),
    S.UNKNOWN: frozenset({S.SETTLING, S.SETTLED, S.FAILED}),
    S.SETTLED: frozenset({S.REVOKED}),
}
# A settlement in one of these holds its order_ref: a new Presettle for the order continues it.
# A revoked one frees it: what remains of a partly refunded bill is pre-settled again (revision 0005).
ACTIVE_STATUSES = frozenset(set(S) - {S.CANCELLED, S.FAILED, S.REVOKED})
PRESETTLEMENT_STAGES = frozenset({S.VISIT_REGISTERED, S.FEES_UPLOADED})
AWAITING_INSURER = frozenset({S.SETTLING, S.UNKNOWN})
CANCELLABLE = frozenset({S.VISIT_REGISTERED, S.FEES_UPLOADED, S.PRESETTLED})
_REASON_LENGTH = 200


class QueryAnswer(enum.StrEnum):
    """What the latest 5203 since the last 2207 said, when it did not decide the settlement."""

    NOT_ASKED = ""
    NOT_FOUND = "NOT_FOUND"  # the insurer has no settlement under the msgid (yet)
    NO_ANSWER = "NO_ANSWER"  # the query itself failed: nothing was learned


def charge_batch_no(settlement_id: str) -> str:
    """收费批次号 chrg_bchno, fixed by the settlement: a re-sent 2204 lands in the same batch."""
    return "B" + settlement_id.rsplit("_", 1)[-1][:29]


@dataclass(frozen=True, slots=True)
class SettlementBreakdown:
    """The insurer's split of a bill (setlinfo), in fen. The insurer's numbers are stored as given:
    they are the record of what was settled, so they are never refused after the fact."""

    medfee_sumamt: Money
    fulamt_ownpay_amt: Money
    overlmt_selfpay: Money
    preselfpay_amt: Money
    inscp_scp_amt: Money
    act_pay_dedc: Money
    hifp_pay: Money
    fund_pay_sumamt: Money
    psn_part_amt: Money
    acct_pay: Money
    psn_cash_pay: Money
    hosp_part_amt: Money
    balc: Money

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(item.name for item in fields(cls))

    def identities_hold(self) -> bool:
        """The two identities the standard promises (common.proto SettlementBreakdown)."""
        parts = self.fulamt_ownpay_amt + self.overlmt_selfpay + self.preselfpay_amt + self.inscp_scp_amt
        personal = self.medfee_sumamt - self.fund_pay_sumamt - self.hosp_part_amt
        return (
            parts == self.medfee_sumamt and personal == self.psn_part_amt == self.acct_pay + self.psn_cash_pay
        )


@dataclass(frozen=True, slots=True)
class InsuredVisit:
    """Who is settling and under which insurance: what 2201 registered and 2206/2207 need again."""

    psn_no: str
    insutype: str
    med_type: str
    insuplc_admdvs: str
    mdtrt_cert_type: str
    mdtrt_cert_no: PatientIdentifier
    visit_no: str
    mdtrt_id: str
    use_personal_account: bool


@dataclass
class Settlement:
    settlement_id: str
    order_ref: str
    # Hash of the bill (items, types, visit number): a Presettle for the same order with another
    # bill is a conflict, not a silent replay of the first one.
    bill_fingerprint: str
    visit: InsuredVisit
    created_at: datetime
    status: SettlementStatus = S.VISIT_REGISTERED
    chrg_bchno: str = ""
    breakdown: SettlementBreakdown | None = None
    setl_id: str = ""
    settle_msgid: str = ""
    invoice_no: str = ""
    status_reason: str = ""
    presettled_at: datetime | None = None
    settled_at: datetime | None = None
    revoked_at: datetime | None = None
    # The 5203 queries since the last 2207 left that did not decide it: they pace the next one.
    undecided_queries: int = 0
    last_query: QueryAnswer = QueryAnswer.NOT_ASKED
    last_queried_at: datetime | None = None

    def record_fees_uploaded(self, chrg_bchno: str) -> None:
        self._move(S.FEES_UPLOADED)
        self.chrg_bchno = chrg_bchno

    def record_presettlement(self, breakdown: SettlementBreakdown, at: datetime) -> None:
        self._move(S.PRESETTLED)
        self.breakdown = breakdown
        self.presettled_at = at

    def begin_settlement(self, new_msgid: str, invoice_no: str) -> str:
        """Record the intent to send 2207 and return the msgid to send it with: a retry reuses the
        msgid already recorded, so the insurer can never settle the bill twice."""
        self._move(S.SETTLING)
        if not self.settle_msgid:
            self.settle_msgid = new_msgid
            self.invoice_no = invoice_no
        self.status_reason = "2207 sent; awaiting the insurer's answer"
        # Earlier 5203 answers were about earlier attempts: this one is asked about afresh.
        self.undecided_queries, self.last_query, self.last_queried_at = 0, QueryAnswer.NOT_ASKED, None
        return self.settle_msgid

    def record_settled(self, setl_id: str, breakdown: SettlementBreakdown, at: datetime) -> None:
        self._move(S.SETTLED)
        self.setl_id = setl_id
        self.breakdown = breakdown
        self.settled_at = at
        self.status_reason = ""

    def record_refused(self, reason: str) -> None:
        self._move(S.FAILED)
        self.status_reason = _reason(reason)

    def record_outcome_unknown(self, reason: str) -> None:
        self._move(S.UNKNOWN)
        self.status_reason = _reason(reason)

    def record_not_sent(self, reason: str, earlier_attempt_unknown: bool) -> None:
        """The insurer was not reached: this attempt changed nothing there. The settlement goes
        back to where it stood, keeping its msgid (an earlier attempt may still have landed)."""
        self._move(S.UNKNOWN if earlier_attempt_unknown else S.PRESETTLED)
        self.status_reason = _reason(reason)

    def note_still_unknown(self, reason: str) -> None:
        """A query did not decide it: the settlement stays where it is, with the latest reason."""
        self._require(AWAITING_INSURER, "note an unresolved outcome")
        self.status_reason = _reason(reason)

    def note_undecided_query(self, answer: QueryAnswer, reason: str, at: datetime) -> None:
        """A 5203 that found nothing or got no answer: counted, so the next one can wait longer."""
        self.note_still_unknown(reason)
        self.undecided_queries += 1
        self.last_query = answer
        self.last_queried_at = at

    def require_cancellable(self) -> None:
        self._require(CANCELLABLE, "cancel")

    def cancel(self) -> None:
        self._move(S.CANCELLED)
        self.status_reason = ""

    def require_revocable(self) -> None:
        self._require(frozenset({S.SETTLED}), "revoke")

    def record_revoked(self, at: datetime) -> None:
        self._move(S.REVOKED)
        self.revoked_at = at
        self.status_reason = ""

    def record_revocation_unknown(self, reason: str) -> None:
        """2208 sent, answer lost: still SETTLED. The insurer answers a repeated 2208 with the
        revocation it already booked, so a retry is safe and decides it."""
        self._require(frozenset({S.SETTLED}), "note an unknown revocation")
        self.status_reason = _reason(reason)

    @property
    def is_presettled(self) -> bool:
        return self.status not in PRESETTLEMENT_STAGES

    @property
    def awaits_insurer(self) -> bool:
        return self.status in AWAITING_INSURER

    def _move(self, target: SettlementStatus) -> None:
        if target not in _NEXT.get(self.status, frozenset()):
            raise StateConflict(
                f"settlement {self.settlement_id} is {self.status}; it cannot become {target}",
                {"settlement_id": self.settlement_id, "status": self.status.value},
            )
        self.status = target

    def conflict(self, action: str) -> StateConflict:
        """The conflict to raise when `action` is asked of the settlement as it stands."""
        return StateConflict(
            f"settlement {self.settlement_id} is {self.status}; cannot {action}",
            {"settlement_id": self.settlement_id, "status": self.status.value},
        )

    def _require(self, allowed: frozenset[SettlementStatus], action: str) -> None:
        if self.status not in allowed:
            raise self.conflict(action)


def _reason(text: str) -> str:
    """The insurer's err_msg may quote a certificate number: scrub it, keep it short."""
    return scrub(text)[:_REASON_LENGTH]
