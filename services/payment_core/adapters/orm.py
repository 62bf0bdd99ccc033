"""payment-core's tables (SQLAlchemy Core). Invariants that must hold under any concurrency live here
as constraints: one order per HIS bill, one payment per out_trade_no, one refund per out_refund_no,
refunded <= paid per payment and per order, what the payments cover <= the cash due, one ledger
transaction per transfer key. Table names are never schema-qualified: the schema comes from the
connection's search_path."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from services.payment_core.domain.model import InsuranceSplit
from services.runtime.db import BigId, UtcDateTime, add_runtime_tables

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)
add_runtime_tables(metadata)


def _when(name: str, nullable: bool = True) -> Column[object]:
    return Column(name, UtcDateTime(), nullable=nullable)


SPLIT_COLUMNS = tuple(f"split_{name}_fen" for name in InsuranceSplit.field_names())

payment_orders = Table(
    "payment_orders",
    metadata,
    Column("order_id", String(40), primary_key=True),
    Column("create_request_id", String(64), nullable=False),
    Column("his_order_no", String(64), nullable=False),
    Column("campus_code", String(32), nullable=False),
    Column("scene", String(24), nullable=False),
    Column("dept_code", String(32), nullable=False),
    Column("his_patient_id", String(64), nullable=False),
    # Masked only: the clear certificate number goes to the insurer and is never stored.
    Column("masked_cert_no", String(64), nullable=False),
    Column("insured", Boolean, nullable=False),
    Column("insutype", String(8), nullable=False),
    Column("med_type", String(8), nullable=False),
    Column("status", String(24), nullable=False),
    Column("total_fen", BigInteger, nullable=False),
    Column("cash_due_fen", BigInteger, nullable=False),
    Column("cash_paid_fen", BigInteger, nullable=False, default=0),
    Column("refunded_cash_fen", BigInteger, nullable=False, default=0),
    # What the order's payments cover: succeeded ones it keeps and open attempts. Only ever changed
    # relatively (repository.place_cash); the CHECK below is what keeps the sum within the cash due.
    Column("cash_placed_fen", BigInteger, nullable=False, default=0),
    Column("settlement_id", String(64), nullable=False, default=""),
    Column("setl_id", String(64), nullable=False, default=""),
    *(Column(name, BigInteger, nullable=True) for name in SPLIT_COLUMNS),
    Column("attention", String(32), nullable=True),
    Column("attention_reason", String(512), nullable=False, default=""),
    Column("status_before_attention", String(24), nullable=True),
    Column("settlement_revoked", Boolean, nullable=False, default=False),
    # The process manager (domain/process.py): expiry, a requested close, 2205 done, its clock,
    # when the janitor looks next, and the lease of whoever runs a step now.
    # NULL: never expires (nothing writes it so; kept nullable for a migration without a table copy).
    _when("expires_at"),
    Column("close_requested", Boolean, nullable=False, default=False),
    Column("close_reason", String(256), nullable=False, default=""),
    Column("presettlement_cancelled", Boolean, nullable=False, default=False),
    Column("attempts", Integer, nullable=False, default=0),
    # How many payments and refunds the order has: a load skips the children it has none of.
    # Written with the order's row from the aggregate, in the transaction that adds the child.
    Column("payment_count", Integer, nullable=False, server_default="0"),
    Column("refund_count", Integer, nullable=False, server_default="0"),
    Column("line_refund_count", Integer, nullable=False, server_default="0"),
    _when("last_step_at"),
    _when("due_at"),
    Column("lease_holder", String(64), nullable=True),
    _when("lease_expires_at"),
    _when("created_at", nullable=False),
    _when("settled_at"),
    _when("updated_at", nullable=False),
    UniqueConstraint("campus_code", "his_order_no"),
    CheckConstraint("total_fen > 0", name="total_positive"),
    CheckConstraint("cash_due_fen >= 0 AND cash_due_fen <= total_fen", name="cash_due_within_total"),
    CheckConstraint("cash_paid_fen >= 0", name="cash_paid_not_negative"),
    CheckConstraint(
        "refunded_cash_fen >= 0 AND refunded_cash_fen <= cash_paid_fen", name="refunded_within_paid"
    ),
    CheckConstraint(
        "cash_placed_fen >= 0 AND cash_placed_fen <= cash_due_fen", name="cash_placed_within_due"
    ),
    Index(None, "due_at"),
    Index(None, "created_at", "order_id"),
    Index(None, "his_patient_id"),
)

charge_lines = Table(
    "charge_lines",
    metadata,
    Column("order_id", ForeignKey("payment_orders.order_id"), primary_key=True),
    Column("line_index", Integer, primary_key=True),
    Column("line_no", String(32), nullable=False),
    Column("hospital_code", String(64), nullable=False),
    Column("national_code", String(64), nullable=False),
    Column("name", String(128), nullable=False),
    Column("chrgitm_lv", String(4), nullable=False),
    Column("med_chrgitm_type", String(8), nullable=False),
    Column("quantity_ten_thousandths", BigInteger, nullable=False),
    Column("unit_price_fen", BigInteger, nullable=False),
    Column("line_total_fen", BigInteger, nullable=False),
    Column("dept_code", String(32), nullable=False),
    Column("doctor_code", String(32), nullable=False),
    CheckConstraint("line_total_fen > 0", name="line_total_positive"),
)

payments = Table(
    "payments",
    metadata,
    Column("payment_id", String(40), primary_key=True),
    Column("order_id", ForeignKey("payment_orders.order_id"), nullable=False, index=True),
    Column("attempt_no", Integer, nullable=False),
    Column("channel", String(24), nullable=False),
    Column("method", String(24), nullable=False),
    Column("amount_fen", BigInteger, nullable=False),
    # Refunds reserve against this in the same transaction as their row; the CHECK is the guard.
    Column("refunded_fen", BigInteger, nullable=False, default=0),
    Column("status", String(16), nullable=False),
    Column("out_trade_no", String(32), nullable=False, unique=True),
    Column("channel_transaction_id", String(64), nullable=False, default=""),
    Column("code_url", String(512), nullable=False, default=""),
    # A success the order must not keep (after close, or paid twice); refunded automatically.
    Column("excess", Boolean, nullable=False, default=False),
    _when("created_at", nullable=False),
    _when("expires_at"),
    _when("succeeded_at"),
    _when("updated_at", nullable=False),
    # A window payment (CASH, POS): the cashier, and the POS terminal's slip (NULL otherwise).
    Column("operator_id", String(32), nullable=False, server_default=""),
    Column("pos_terminal_id", String(16), nullable=True),
    Column("pos_batch_no", String(6), nullable=True),
    Column("pos_reference_no", String(20), nullable=True),
    Column("masked_card_no", String(19), nullable=False, server_default=""),
    UniqueConstraint("order_id", "attempt_no"),
    # One terminal transaction is one payment, whoever reports it and how often (NULLs: not POS).
    Index(None, "pos_terminal_id", "pos_batch_no", "pos_reference_no", unique=True),
    CheckConstraint("amount_fen >= 0", name="amount_not_negative"),
    CheckConstraint("refunded_fen >= 0 AND refunded_fen <= amount_fen", name="refunded_within_amount"),
    Index(None, "status", "succeeded_at"),
    Index(None, "status", "created_at"),
)

refunds = Table(
    "refunds",
    metadata,
    Column("refund_id", String(40), primary_key=True),
    Column("order_id", ForeignKey("payment_orders.order_id"), nullable=False, index=True),
    Column("payment_id", ForeignKey("payments.payment_id"), nullable=True),
    Column("refund_no", Integer, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("cash_fen", BigInteger, nullable=False),
    Column("fund_fen", BigInteger, nullable=False, default=0),
    Column("personal_account_fen", BigInteger, nullable=False, default=0),
    Column("status", String(16), nullable=False),
    Column("out_refund_no", String(32), nullable=False, unique=True),
    Column("reason", String(256), nullable=False),
    Column("channel_refund_id", String(64), nullable=False, default=""),
    # The refund the insurer's revocation (2208) was recorded on (one per revoked settlement).
    Column("revokes_settlement", Boolean, nullable=False, default=False),
    # A refund paid out at the window: the cashier who confirmed handing it over.
    Column("operator_id", String(32), nullable=False, server_default=""),
    # The operator who asked for the refund (RefundPaymentOrder); empty for the platform's own.
    Column("requested_by", String(32), nullable=False, server_default=""),
    _when("created_at", nullable=False),
    _when("succeeded_at"),
    _when("updated_at", nullable=False),
    UniqueConstraint("order_id", "refund_no"),
    CheckConstraint(
        "cash_fen >= 0 AND fund_fen >= 0 AND personal_account_fen >= 0", name="amounts_not_negative"
    ),
    Index(None, "status", "succeeded_at"),
)

# Refunds by lines of an insured order (revision 0012): what left the bill and where its
# re-settlement stands. Its cash goes back by ordinary refunds (their ids start with line_refund_id).
line_refunds = Table(
    "line_refunds",
    metadata,
    Column("line_refund_id", String(40), primary_key=True),
    Column("order_id", ForeignKey("payment_orders.order_id"), nullable=False, index=True),
    Column("line_refund_no", Integer, nullable=False),
    Column("stage", String(16), nullable=False),
    # JSON [[line_no, quantity_ten_thousandths], ...]: a handful of lines, read and written whole.
    Column("lines", Text, nullable=False),
    Column("revoked_settlement_id", String(64), nullable=False),
    Column("new_settlement_id", String(64), nullable=False, server_default=""),
    Column("expected_cash_fen", BigInteger, nullable=False),
    Column("cash_fen", BigInteger, nullable=False, server_default="0"),
    Column("reason", String(256), nullable=False),
    Column("requested_by", String(32), nullable=False, server_default=""),
    _when("created_at", nullable=False),
    _when("updated_at", nullable=False),
    UniqueConstraint("order_id", "line_refund_no"),
    CheckConstraint("cash_fen >= 0 AND expected_cash_fen >= 0", name="amounts_not_negative"),
)

# Append-only: the repository only ever inserts into the two ledger tables.
ledger_transactions = Table(
    "ledger_transactions",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("transfer_key", String(80), nullable=False, unique=True),
    Column("order_id", String(40), nullable=False, index=True),
    Column("kind", String(16), nullable=False),
    _when("occurred_at", nullable=False),
    Column("campus_code", String(32), nullable=False, server_default=""),
)

ledger_postings = Table(
    "ledger_postings",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("transaction_id", ForeignKey("ledger_transactions.id"), nullable=False, index=True),
    Column("account", String(80), nullable=False, index=True),
    # Signed: debit positive, credit negative; each transaction sums to zero (checked before insert).
    Column("amount_fen", BigInteger, nullable=False),
    # The cashier who moved this money at the window (clearing postings of CASH and POS), else "".
    Column("operator_id", String(32), nullable=False, server_default=""),
    CheckConstraint("amount_fen <> 0", name="amount_not_zero"),
    Index(None, "operator_id", "account"),
)

# A cashier's closed shifts (收费员日结), insert-only. One shift per cashier, campus and close time:
# closing again answers the stored one.
cashier_shifts = Table(
    "cashier_shifts",
    metadata,
    Column("shift_id", String(40), primary_key=True),
    Column("request_id", String(64), nullable=False),
    Column("cashier_id", String(32), nullable=False),
    Column("campus_code", String(32), nullable=False),
    _when("opened_at"),
    _when("closed_at", nullable=False),
    UniqueConstraint("cashier_id", "campus_code", "closed_at"),
)

cashier_shift_totals = Table(
    "cashier_shift_totals",
    metadata,
    Column("shift_id", ForeignKey("cashier_shifts.shift_id"), primary_key=True),
    Column("channel", String(24), primary_key=True),
    Column("payment_count", Integer, nullable=False),
    Column("collected_fen", BigInteger, nullable=False),
    Column("refund_count", Integer, nullable=False),
    Column("refunded_fen", BigInteger, nullable=False),
)

# Which ledger postings a shift counted: a posting is counted by one shift at most (the primary
# key), so two closes racing for the same money cannot both count it.
cashier_shift_postings = Table(
    "cashier_shift_postings",
    metadata,
    Column("posting_id", ForeignKey("ledger_postings.id"), primary_key=True),
    Column("shift_id", ForeignKey("cashier_shifts.shift_id"), nullable=False, index=True),
)

# Inpatient deposit accounts (预交金账户), one per 住院号. Moved only by relative UPDATEs; the CHECKs
# keep the balance equal to topped_up - used - refunded and never below zero, whatever the
# concurrency.
deposit_accounts = Table(
    "deposit_accounts",
    metadata,
    Column("inpatient_no", String(30), primary_key=True),
    Column("campus_code", String(32), nullable=False),
    Column("his_patient_id", String(64), nullable=False),
    Column("balance_fen", BigInteger, nullable=False),
    Column("topped_up_fen", BigInteger, nullable=False),
    Column("used_fen", BigInteger, nullable=False),
    Column("refunded_fen", BigInteger, nullable=False),
    _when("created_at", nullable=False),
    CheckConstraint("balance_fen >= 0", name="balance_not_negative"),
    CheckConstraint("balance_fen = topped_up_fen - used_fen - refunded_fen", name="balance_is_movements"),
)

# Which payment order carries which top-up: the account grows when that order settles.
deposit_top_ups = Table(
    "deposit_top_ups",
    metadata,
    Column("order_id", ForeignKey("payment_orders.order_id"), primary_key=True),
    Column("inpatient_no", ForeignKey("deposit_accounts.inpatient_no"), nullable=False, index=True),
    Column("amount_fen", BigInteger, nullable=False),
    # What deposit refunds took back from this top-up (to its own channel), moved relatively.
    Column("refunded_fen", BigInteger, nullable=False, server_default="0"),
    CheckConstraint("amount_fen > 0", name="amount_positive"),
    CheckConstraint("refunded_fen >= 0 AND refunded_fen <= amount_fen", name="refunded_within_top_up"),
)

# Which payment was paid from which deposit account (CHANNEL_DEPOSIT): the account is debited when
# the payment succeeds and credited back by what its refunds return, both relatively, in the
# transaction that records it.
deposit_uses = Table(
    "deposit_uses",
    metadata,
    Column("payment_id", ForeignKey("payments.payment_id"), primary_key=True),
    Column("inpatient_no", ForeignKey("deposit_accounts.inpatient_no"), nullable=False, index=True),
    Column("amount_fen", BigInteger, nullable=False),
    Column("refunded_fen", BigInteger, nullable=False, server_default="0"),
    CheckConstraint("amount_fen > 0", name="amount_positive"),
    CheckConstraint("refunded_fen >= 0 AND refunded_fen <= amount_fen", name="refunded_within_use"),
)

# One discharge settlement per stay: its order (scene DISCHARGE). The primary key answers a second
# discharge of the same stay with the first.
deposit_discharges = Table(
    "deposit_discharges",
    metadata,
    Column("inpatient_no", ForeignKey("deposit_accounts.inpatient_no"), primary_key=True),
    Column("order_id", ForeignKey("payment_orders.order_id"), nullable=False, unique=True),
    _when("created_at", nullable=False),
)
